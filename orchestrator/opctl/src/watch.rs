//! Following changes: the stream of JSON lines the orchestrator sends for a watch, read line
//! by line, and `opctl get --watch`, which prints the list then a row per change.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use operator_contract::ManifestKind;
use serde_json::Value;

use crate::args::{Get, OutputFormat};
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::output::{self, RecordSummary};

/// How long a stream may stay silent: the server sends a heartbeat every 5 s.
const SILENCE: Duration = Duration::from_secs(20);

/// An open stream of changes.
pub struct Changes {
    response: reqwest::Response,
    buffer: Vec<u8>,
    server: String,
}

impl Changes {
    /// Opens the stream of one type's changes, one workspace's or one entity's.
    pub async fn open(
        client: &OrchestratorClient,
        kind: ManifestKind,
        workspace: Option<&str>,
        name: Option<&str>,
        all_owners: bool,
    ) -> Result<Self> {
        let response = client.open_watch(kind, workspace, name, all_owners).await?;
        Ok(Self::of(response, client))
    }

    /// Reads a stream of JSON lines already opened.
    pub fn of(response: reqwest::Response, client: &OrchestratorClient) -> Self {
        Self {
            response,
            buffer: Vec::new(),
            server: client.server_shown().to_string(),
        }
    }

    /// The next event (`added`, `modified`, `deleted` or `synced`); heartbeats are read and
    /// skipped. An error when the stream ends, fails or stays silent too long: a watch never
    /// hangs on a server that went away.
    pub async fn next(&mut self) -> Result<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line)
                    .context("the orchestrator sent a watch line that is not JSON")?;
                match event.get("type").and_then(Value::as_str) {
                    Some("heartbeat") => continue,
                    Some("error") => bail!(
                        "the watch ended on the orchestrator's side: {}",
                        event["error"].as_str().unwrap_or("no reason given")
                    ),
                    _ => return Ok(event),
                }
            }
            let chunk = tokio::time::timeout(SILENCE, self.response.chunk())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the orchestrator at {} sent nothing for {} s; the watch is given up",
                        self.server,
                        SILENCE.as_secs()
                    )
                })?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the orchestrator at {} ended the watch abruptly (it stopped, or the connection broke: {e}); run the command again",
                        self.server
                    )
                })?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => bail!(
                    "the orchestrator at {} ended the watch (it stopped or restarted); run the command again",
                    self.server
                ),
            }
        }
    }
}

/// `opctl get --watch`: the list as `get` prints it, then a row (or a JSON line) per change,
/// until interrupted or the stream breaks.
pub async fn run_get(get: &Get, client: &OrchestratorClient, console: &Console) -> Result<()> {
    let workspace = get.workspace();
    let mut changes = Changes::open(
        client,
        get.kind,
        workspace,
        get.name.as_deref(),
        get.all_owners,
    )
    .await?;
    let format = get.output_format();
    let mut stdout = std::io::stdout();
    let mut current = Vec::new();
    loop {
        let event = changes.next().await?;
        match event["type"].as_str() {
            Some("synced") => break,
            _ if format != OutputFormat::Table => {
                stdout.write_all(event_text(&event, format)?.as_bytes())?;
            }
            _ => current.push(output::single_item(&event["item"])?),
        }
    }
    if format == OutputFormat::Table {
        if current.is_empty() {
            console.info(&crate::get::nothing_found(get));
        }
        let text = output::table_text(&current);
        stdout.write_all(text.as_bytes())?;
    }
    console.info("🔍 get...watching for changes (Ctrl-C ends)");
    stdout.flush()?;
    loop {
        let event = changes.next().await?;
        let text = match format {
            OutputFormat::Table => output::row_text(&change_row(&event)?),
            other => event_text(&event, other)?,
        };
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
}

/// The row a change prints: the record now, or a deleted one's name with status `deleted`.
fn change_row(event: &Value) -> Result<RecordSummary> {
    if event["type"] == "deleted" {
        return Ok(RecordSummary {
            name: event["name"].as_str().unwrap_or_default().to_string(),
            workspace: event["workspace"].as_str().map(str::to_string),
            status: Some("deleted".into()),
            ..RecordSummary::default()
        });
    }
    output::single_item(&event["item"])
}

/// One event as a compact JSON line, or a YAML document.
fn event_text(event: &Value, format: OutputFormat) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string(event)? + "\n",
        OutputFormat::Name => change_row(event)?.qualified_name() + "\n",
        _ => format!("---\n{}", output::document_text(event, OutputFormat::Yaml)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deleted_entity_prints_as_a_row_with_status_deleted() {
        let row = change_row(&json!({"type": "deleted", "workspace": "public", "name": "r1"}))
            .expect("row");
        assert_eq!(row.name, "r1");
        assert_eq!(row.status.as_deref(), Some("deleted"));
        assert_eq!(row.workspace.as_deref(), Some("public"));
    }
}
