//! `opctl apply`: parse the file locally, warn about what parses but is unwise (`lint`), then
//! send it as it is and report each document's outcome; with `-l`, stop before sending.

use anyhow::Result;
use operator_contract::api::Outcome;

use crate::args::Apply;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::lint;
use crate::manifest_file::{self, label, workspace_marker};

pub async fn run(apply: Apply, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("🛠 apply...");
    let file = manifest_file::read(&apply.file)?;
    let warnings = lint::credential_warnings(&file.manifests);
    for warning in &warnings {
        let manifest = &file.manifests[warning.document - 1];
        console.warn(&format!(
            "⚠ document {} ({}): {} {}",
            warning.document,
            label(
                &manifest.name,
                Some(&manifest.version),
                &manifest.kind.to_string()
            ),
            warning.path,
            warning.message
        ));
    }
    if apply.lint {
        for manifest in &file.manifests {
            console.info(&format!(
                "🔧 linting {}...valid",
                label(
                    &manifest.name,
                    Some(&manifest.version),
                    &manifest.kind.to_string()
                )
            ));
        }
        console.info(&format!(
            "🛠 apply...lint complete: {} document(s), {} warning(s), nothing applied",
            file.manifests.len(),
            warnings.len()
        ));
        return Ok(());
    }
    let applied = client
        .apply(file.text, apply.workspace.as_deref(), apply.dry_run)
        .await?;
    let marker = if apply.dry_run { " (dry run)" } else { "" };
    for entry in &applied {
        // A dry run says which generation the apply would make.
        let generation = match entry.outcome {
            Outcome::Created | Outcome::Updated if apply.dry_run => {
                format!(", generation {}", entry.generation)
            }
            _ => String::new(),
        };
        console.info(&format!(
            "🔧 applying{} {}...{}{generation}{marker}",
            workspace_marker(entry.workspace.as_deref()),
            label(&entry.name, Some(&entry.version), &entry.kind),
            entry.outcome
        ));
    }
    if apply.dry_run {
        console.info("🛠 apply...dry run complete, nothing stored");
    } else {
        console.info("🛠 apply...complete");
    }
    Ok(())
}
