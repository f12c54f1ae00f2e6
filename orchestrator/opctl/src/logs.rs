//! `opctl logs`: the last lines each replica of an operator's components wrote, under a
//! `==> component-index <==` header per replica.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::args::Logs;
use crate::client::OrchestratorClient;
use crate::console::Console;

pub async fn run(logs: Logs, client: &OrchestratorClient, console: &Console) -> Result<()> {
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
    fn each_replica_gets_a_header_then_its_lines() {
        let replicas = [
            json!({"component": "c", "replica": 0, "lines": ["a", "b"]}),
            json!({"component": "c", "replica": 1, "lines": []}),
        ];
        assert_eq!(text(&replicas), "==> c-0 <==\na\nb\n==> c-1 <==\n");
    }
}
