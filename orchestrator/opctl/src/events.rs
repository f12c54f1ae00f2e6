//! `opctl events`: a resource's history (TIME, TYPE, REASON, MESSAGE), oldest first; with
//! `--watch`, then each new event as it is kept. `get -d` shows the latest few.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::args::{Events, OutputFormat};
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::output;
use crate::table;
use crate::watch::Changes;

const HEADERS: [&str; 4] = ["TIME", "TYPE", "REASON", "MESSAGE"];
/// How many of the latest events `get -d` shows.
pub const LATEST: usize = 5;

pub async fn run(events: Events, client: &OrchestratorClient, console: &Console) -> Result<()> {
    let workspace = events.workspace();
    let format = events.output.unwrap_or(OutputFormat::Table);
    let mut stdout = std::io::stdout();
    if !events.watch {
        let answer = client.events(workspace, &events.name).await?;
        let text = match format {
            OutputFormat::Table | OutputFormat::Name => {
                let items = items(&answer)?;
                if items.is_empty() {
                    console.info(&format!(
                        "no events for resource {workspace}/{}",
                        events.name
                    ));
                    return Ok(());
                }
                table_text(&items)
            }
            other => output::document_text(&answer, other)?,
        };
        stdout.write_all(text.as_bytes())?;
        return Ok(());
    }
    let response = client.open_events(workspace, &events.name).await?;
    let mut changes = Changes::of(response, client);
    let mut printed_header = false;
    loop {
        let event = changes.next().await?;
        if event["type"] == "synced" {
            console.info("🕘 events...following (Ctrl-C ends)");
            continue;
        }
        let text = match format {
            OutputFormat::Json => serde_json::to_string(&event["item"])? + "\n",
            OutputFormat::Yaml => format!(
                "---\n{}",
                output::document_text(&event["item"], OutputFormat::Yaml)?
            ),
            _ => {
                let text = table_text(std::slice::from_ref(&event["item"]));
                let mut lines = text.lines().skip(if printed_header { 1 } else { 0 });
                printed_header = true;
                lines.by_ref().map(|l| format!("{l}\n")).collect()
            }
        };
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
}

/// The events of an answer (`{"items": [...]}`).
pub fn items(answer: &Value) -> Result<Vec<Value>> {
    answer
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .context("the orchestrator's events answer has no `items`")
}

/// The events as a table.
pub fn table_text(events: &[Value]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let time = e["time"].as_str().unwrap_or_default();
            // Seconds are enough to read; the JSON keeps the rest.
            let time = time.split('.').next().unwrap_or(time).trim_end_matches('Z');
            vec![
                time.to_string(),
                e["type"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table::render(&HEADERS, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_print_as_time_type_reason_message() {
        let text = table_text(&[
            json!({"time": "2026-12-06T03:34:43.006182553Z", "type": "Warning",
            "reason": "ReconcileFailed", "message": "disk full", "generation": 1}),
        ]);
        assert_eq!(
            text.lines().nth(1),
            Some("  2026-12-06T03:34:43 | Warning | ReconcileFailed | disk full")
        );
    }
}
