//! `opctl logs`: the last lines each replica of an operator's components wrote, under a
//! `==> component-index <==` header per replica; with `-f`, then each new line as it is
//! written, under a header again whenever the replica changes (as `tail -f` of several files).

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::args::Logs;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::watch::Changes;

pub async fn run(logs: Logs, client: &OrchestratorClient, console: &Console) -> Result<()> {
    if logs.follow {
        return follow(logs, client, console).await;
    }
    let answer = client
        .logs(
            &logs.name,
            logs.component.as_deref(),
            logs.replica,
            logs.tail,
        )
        .await?;
    let replicas = answer
        .get("replicas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if replicas.is_empty() {
        console.info(&format!("no replica of {} matches", logs.name));
        return Ok(());
    }
    std::io::stdout().write_all(text(&replicas).as_bytes())?;
    Ok(())
}

/// Prints the tail, then each line as it comes, until interrupted or the stream ends.
async fn follow(logs: Logs, client: &OrchestratorClient, console: &Console) -> Result<()> {
    let response = client
        .follow_logs(
            &logs.name,
            logs.component.as_deref(),
            logs.replica,
            logs.tail,
        )
        .await?;
    let mut lines = Changes::of(response, client);
    console.info(&format!(
        "following the logs of {} (Ctrl-C ends)",
        logs.name
    ));
    let mut printer = FollowPrinter::default();
    let mut stdout = std::io::stdout();
    loop {
        let event = lines.next().await?;
        stdout.write_all(printer.text(&event).as_bytes())?;
        stdout.flush()?;
    }
}

/// The text of followed lines: a header whenever the replica changes, then the line.
#[derive(Default)]
struct FollowPrinter {
    last: Option<(String, u64)>,
}

impl FollowPrinter {
    fn text(&mut self, event: &Value) -> String {
        let line = event["line"].as_str().unwrap_or_default();
        let component = event["component"].as_str().unwrap_or_default();
        if component.is_empty() {
            // The orchestrator's own word (lines skipped), under no replica.
            return format!("{line}\n");
        }
        let source = (
            component.to_string(),
            event["replica"].as_u64().unwrap_or_default(),
        );
        let mut text = String::new();
        if self.last.as_ref() != Some(&source) {
            text.push_str(&format!("==> {}-{} <==\n", source.0, source.1));
            self.last = Some(source);
        }
        text.push_str(line);
        text.push('\n');
        text
    }
}

/// Each replica's lines under its header.
fn text(replicas: &[Value]) -> String {
    let mut out = String::new();
    for replica in replicas {
        let component = replica["component"].as_str().unwrap_or_default();
        let index = replica["replica"].as_u64().unwrap_or_default();
        out.push_str(&format!("==> {component}-{index} <==\n"));
        for line in replica["lines"].as_array().into_iter().flatten() {
            out.push_str(line.as_str().unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn followed_lines_get_a_header_only_when_the_replica_changes() {
        let mut printer = FollowPrinter::default();
        let line = |c: &str, r: u64, l: &str| json!({"type": "line", "component": c, "replica": r, "line": l});
        let text: String = [
            line("c", 0, "a"),
            line("c", 0, "b"),
            line("c", 1, "x"),
            line("", 0, "[orchestrator] 3 lines skipped"),
            line("c", 1, "y"),
            line("c", 0, "d"),
        ]
        .iter()
        .map(|e| printer.text(e))
        .collect();
        assert_eq!(
            text,
            "==> c-0 <==\na\nb\n==> c-1 <==\nx\n[orchestrator] 3 lines skipped\ny\n==> c-0 <==\nd\n"
        );
    }

    #[test]
    fn each_replica_gets_a_header_then_its_lines() {
        let replicas = [
            json!({"component": "c", "replica": 0, "lines": ["a", "b"]}),
            json!({"component": "c", "replica": 1, "lines": []}),
        ];
        assert_eq!(text(&replicas), "==> c-0 <==\na\nb\n==> c-1 <==\n");
    }
}
