//! `opctl apply`: parse the file locally, send it as it is, report each document's outcome.

use anyhow::Result;

use crate::args::Apply;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::manifest_file::{self, label, workspace_marker};

pub async fn run(apply: Apply, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("🛠 apply...");
    let file = manifest_file::read(&apply.file)?;
    let applied = client.apply(file.text, apply.workspace.as_deref()).await?;
    for entry in &applied {
        console.info(&format!(
            "🔧 applying{} {}...{}",
            workspace_marker(entry.workspace.as_deref()),
            label(&entry.name, Some(&entry.version), &entry.kind),
            entry.outcome
        ));
    }
    console.info("🛠 apply...complete");
    Ok(())
}
