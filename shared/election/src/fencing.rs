//! Writes fenced on the server. A new leader writes the key [`FENCE_KEY`] of each bucket it
//! will write ([`write_fence`]), and every write of its term carries the fence key's sequence
//! ([`fenced_write`]): JetStream refuses the write once a later leader has written the fence,
//! so a deposed leader (paused, partitioned, slow) cannot overwrite its successor's state.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use operator_contract::election::{
    EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER, EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER,
    FENCE_KEY, TERM_HEADER,
};
use operator_contract::subject::kv_subject;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Term;

/// The header that makes a KV message a deletion or a purge, and its values.
const KV_OPERATION_HEADER: &str = "KV-Operation";
const KV_OPERATION_DELETE: &str = "DEL";
const KV_OPERATION_PURGE: &str = "PURGE";
/// A purge replaces every earlier message of the key.
const ROLLUP_HEADER: &str = "Nats-Rollup";
const ROLLUP_SUBJECT: &str = "sub";

/// The fence a leader's writes to one bucket carry: its term and the fence key's sequence it
/// wrote there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFence {
    pub term: Term,
    pub sequence: u64,
}

/// The value of the fence key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FenceRecord {
    term: Term,
    replica: String,
    written_at: DateTime<Utc>,
}

/// Why a fenced write (or the fence itself) was not written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FencedWriteError {
    /// A later leader has written the fence: this writer no longer leads.
    #[error("fenced: {reason}")]
    Fenced { reason: String },
    /// JetStream did not answer or refused for another reason; the write may be retried.
    #[error("write failed: {reason}")]
    Unavailable { reason: String },
}

/// What a fenced write does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedOperation {
    /// Store this value.
    Put(Bytes),
    /// Mark the key deleted (its history stays).
    Delete,
    /// Remove the key and its history.
    Purge,
}

/// Writes the fence of `term` in `kv`: refused when the fence already holds this term or a later
/// one, or when another leader wrote it meanwhile. Returns the fence's new sequence.
pub async fn write_fence(
    kv: &kv::Store,
    term: Term,
    replica: &str,
) -> Result<u64, FencedWriteError> {
    let unavailable = |e: &dyn std::fmt::Display| FencedWriteError::Unavailable {
        reason: e.to_string(),
    };
    let current = kv.entry(FENCE_KEY).await.map_err(|e| unavailable(&e))?;
    let expected = match &current {
        None => 0,
        Some(entry) => {
            if entry.operation == kv::Operation::Put {
                if let Ok(prior) = serde_json::from_slice::<FenceRecord>(&entry.value) {
                    if prior.term >= term {
                        return Err(FencedWriteError::Fenced {
                            reason: format!(
                                "the store is fenced by term {} of {}, not below this term {term}",
                                prior.term, prior.replica
                            ),
                        });
                    }
                }
            }
            entry.revision
        }
    };
    let record = FenceRecord {
        term,
        replica: replica.to_string(),
        written_at: Utc::now(),
    };
    let value = serde_json::to_vec(&record).map_err(|e| unavailable(&e))?;
    match kv.update(FENCE_KEY, value.into(), expected).await {
        Ok(sequence) => Ok(sequence),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            Err(FencedWriteError::Fenced {
                reason: "another leader wrote the fence first".into(),
            })
        }
        Err(e) => Err(unavailable(&e)),
    }
}

/// How long a fenced write waits, at most, for the other writes checked against the same fence
/// to leave a replicated stream's leader (see [`fenced_write`]).
const CONTENDED_FOR_AT_MOST: Duration = Duration::from_secs(5);
/// The first pause before a contended write is sent again; it doubles up to the next.
const CONTENDED_FIRST_PAUSE: Duration = Duration::from_millis(1);
const CONTENDED_LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// Writes `operation` under `key` of `kv`, accepted by JetStream only while the bucket's fence
/// key is still at `fence.sequence`. Returns the write's sequence (the key's new revision).
///
/// A replicated stream's leader checks an expected last subject sequence for one message at a
/// time per subject checked: while one write checked against the fence is being replicated,
/// another is refused with error 10164 ("wrong last sequence", without a number), though the
/// fence has not moved. Every fenced write of a bucket is checked against the same fence key, so
/// concurrent ones contend: such a write is sent again after a short pause, for at most
/// [`CONTENDED_FOR_AT_MOST`]. A moved fence is answered with 10071 and a number, and refused.
pub async fn fenced_write(
    js: &jetstream::Context,
    kv: &kv::Store,
    key: &str,
    operation: FencedOperation,
    fence: WriteFence,
) -> Result<u64, FencedWriteError> {
    let deadline = tokio::time::Instant::now() + CONTENDED_FOR_AT_MOST;
    let mut pause = CONTENDED_FIRST_PAUSE;
    loop {
        let error = match publish_fenced(js, kv, key, &operation, fence).await {
            Ok(sequence) => return Ok(sequence),
            Err(error) => error,
        };
        if error.kind() == PublishErrorKind::WrongLastSequence {
            return Err(FencedWriteError::Fenced {
                reason: format!("a newer leader fenced the store ({error})"),
            });
        }
        if !contended(&error) || tokio::time::Instant::now() + pause > deadline {
            return Err(FencedWriteError::Unavailable {
                reason: error.to_string(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(CONTENDED_LONGEST_PAUSE);
    }
}

/// One attempt of [`fenced_write`].
async fn publish_fenced(
    js: &jetstream::Context,
    kv: &kv::Store,
    key: &str,
    operation: &FencedOperation,
    fence: WriteFence,
) -> Result<u64, PublishError> {
    let prefix = kv.put_prefix.as_deref().unwrap_or(&kv.prefix);
    let mut headers = HeaderMap::new();
    headers.insert(
        EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER,
        fence.sequence.to_string().as_str(),
    );
    headers.insert(
        EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER,
        kv_subject(&kv.prefix, FENCE_KEY).as_str(),
    );
    headers.insert(TERM_HEADER, fence.term.to_string().as_str());
    let payload = match operation {
        FencedOperation::Put(value) => value.clone(),
        FencedOperation::Delete => {
            headers.insert(KV_OPERATION_HEADER, KV_OPERATION_DELETE);
            Bytes::new()
        }
        FencedOperation::Purge => {
            headers.insert(KV_OPERATION_HEADER, KV_OPERATION_PURGE);
            headers.insert(ROLLUP_HEADER, ROLLUP_SUBJECT);
            Bytes::new()
        }
    };
    let ack = js
        .publish_with_headers(kv_subject(prefix, key), headers, payload)
        .await?;
    Ok(ack.await?.sequence)
}

/// True for error 10164: the check against the fence could not be made while another write
/// checked against it was in flight (the client reports it only as `Other`).
fn contended(error: &PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| {
            e.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        })
}
