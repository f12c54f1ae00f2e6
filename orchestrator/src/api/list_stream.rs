//! A list as JSON lines (`?stream=true`): one record a line, sorted by workspace then name,
//! read (a sleeping resource's stored bytes) and serialized a page at a time as the client
//! reads, so the first lines leave at once and a big list is never held as one JSON text.

use actix_web::HttpResponse;
use bytes::Bytes;
use futures::StreamExt;
use operator_contract::api::RecordView;

use crate::runtime::Listed;

/// Records serialized into one chunk of the answer.
const RECORDS_PER_CHUNK: usize = 256;

/// The records (sorted) that `shown` keeps, as a streamed answer of JSON lines.
pub(super) fn json_lines(
    items: Vec<Listed>,
    shown: impl Fn(&RecordView) -> bool + 'static,
) -> HttpResponse {
    let chunks = futures::stream::iter(items)
        .chunks(RECORDS_PER_CHUNK)
        .map(move |records| {
            let mut chunk = Vec::with_capacity(records.len() * 512);
            for record in records.into_iter().filter_map(Listed::view) {
                if shown(&record) {
                    serde_json::to_writer(&mut chunk, &record)?;
                    chunk.push(b'\n');
                }
            }
            Ok::<_, serde_json::Error>(Bytes::from(chunk))
        });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(chunks)
}
