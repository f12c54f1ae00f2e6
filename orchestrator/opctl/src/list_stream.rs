//! `opctl get` of a whole type: the list read as JSON lines and printed as it arrives, a page
//! of table rows (or one record of JSON or YAML) at a time, so the first lines show before the
//! last record has left the orchestrator, and a big list is never held whole.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::args::{Get, OutputFormat};
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::output::{self, RecordSummary, TablePages};

/// Table rows printed at once: the columns' widths are taken from the first page.
const ROWS_PER_PAGE: usize = 256;

/// The records of a list answer of JSON lines, read as they arrive.
struct RecordLines {
    response: reqwest::Response,
    buffer: Vec<u8>,
    ended: bool,
}

impl RecordLines {
    /// The next record, or `None` once the answer has ended.
    async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line)
                    .map(Some)
                    .context("the orchestrator sent a list line that is not JSON");
            }
            if self.ended {
                if self.buffer.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buffer);
                return serde_json::from_slice(&rest)
                    .map(Some)
                    .context("the orchestrator sent a list line that is not JSON");
            }
            match self
                .response
                .chunk()
                .await
                .context("the list's answer broke off")?
            {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => self.ended = true,
            }
        }
    }

    /// Up to `count` records; fewer only at the end.
    async fn page(&mut self, count: usize) -> Result<Vec<Value>> {
        let mut page = Vec::new();
        while page.len() < count {
            match self.next().await? {
                Some(record) => page.push(record),
                None => break,
            }
        }
        Ok(page)
    }
}

/// Prints the list `get` asks for as it arrives; says so when it is empty.
pub async fn print(get: &Get, client: &OrchestratorClient, console: &Console) -> Result<()> {
    let response = client
        .open_list(get.kind, get.workspace(), get.all_owners)
        .await?;
    let mut records = RecordLines {
        response,
        buffer: Vec::new(),
        ended: false,
    };
    let mut stdout = std::io::stdout().lock();
    let format = get.output_format();
    let mut count = 0;
    match format {
        OutputFormat::Table | OutputFormat::Name => {
            let mut table = TablePages::default();
            loop {
                let page = records.page(ROWS_PER_PAGE).await?;
                if page.is_empty() {
                    break;
                }
                count += page.len();
                let summaries: Vec<RecordSummary> = page
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()
                    .context("the orchestrator's list answer has malformed items")?;
                let text = match format {
                    OutputFormat::Name => output::names_text(&summaries),
                    _ => table.page(&summaries),
                };
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            if count == 0 && format == OutputFormat::Table {
                console.info(&crate::get::nothing_found(get));
            }
        }
        OutputFormat::Json | OutputFormat::Yaml => {
            while let Some(record) = records.next().await? {
                stdout
                    .write_all(output::list_item_text(&record, format, count == 0)?.as_bytes())?;
                count += 1;
            }
            stdout.write_all(output::list_end_text(format, count == 0).as_bytes())?;
        }
    }
    stdout.flush()?;
    console.info("🔍 get...complete");
    Ok(())
}
