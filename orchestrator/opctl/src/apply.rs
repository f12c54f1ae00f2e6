//! `opctl apply`: parse the file locally, warn about what parses but is unwise (`lint`), then
//! send it as one batch and report each document's outcome, applied or refused; with `-l`,
//! stop before sending. A refused document does not stop the others; the exit code says that
//! one was refused.

use anyhow::{bail, Result};
use operator_contract::api::{DocumentAnswer, Outcome};
use operator_contract::Manifest;

use crate::args::Apply;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::lint;
use crate::manifest_file::{self, label, workspace_marker};

pub async fn run(apply: Apply, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("🛠 apply...");
    let file = manifest_file::read_batch(&apply.file)?;
    // The documents that read as manifests, with their place in the file.
    let (places, manifests): (Vec<usize>, Vec<Manifest>) = file
        .documents
        .iter()
        .filter_map(|d| d.manifest.as_ref().ok().map(|m| (d.document, m.clone())))
        .unzip();
    let warnings = lint::credential_warnings(&manifests);
    for warning in &warnings {
        let manifest = &manifests[warning.document - 1];
        console.warn(&format!(
            "⚠ document {} ({}): {} {}",
            places[warning.document - 1],
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
        let mut invalid = 0;
        for document in &file.documents {
            match &document.manifest {
                Ok(manifest) => console.info(&format!(
                    "🔧 linting {}...valid",
                    label(
                        &manifest.name,
                        Some(&manifest.version),
                        &manifest.kind.to_string()
                    )
                )),
                Err(e) => {
                    invalid += 1;
                    console.error(
                        &format!(
                            "invalid manifest in {}: document {}: {e}",
                            apply.file, document.document
                        ),
                        &[],
                    );
                }
            }
        }
        if invalid > 0 {
            bail!(
                "{invalid} of {} document(s) invalid, nothing applied",
                file.documents.len()
            );
        }
        console.info(&format!(
            "🛠 apply...lint complete: {} document(s), {} warning(s), nothing applied",
            file.documents.len(),
            warnings.len()
        ));
        return Ok(());
    }
    let total = file.documents.len();
    let answer = client
        .apply_batch(file.text, apply.workspace.as_deref(), apply.dry_run)
        .await?;
    let marker = if apply.dry_run { " (dry run)" } else { "" };
    for document in &answer.documents {
        report(document, total, apply.dry_run, marker, console);
    }
    if answer.failed > 0 && answer.failed == answer.documents.len() {
        bail!("nothing applied: every document was refused");
    }
    if answer.failed > 0 {
        let what = if apply.dry_run {
            "would be applied"
        } else {
            "were applied"
        };
        bail!(
            "{} of {} document(s) refused; the other {} {what}",
            answer.failed,
            answer.documents.len(),
            answer.documents.len() - answer.failed
        );
    }
    if apply.dry_run {
        console.info("🛠 apply...dry run complete, nothing stored");
    } else {
        console.info("🛠 apply...complete");
    }
    Ok(())
}

/// One line for one document: what applying it did, or why it was refused.
fn report(document: &DocumentAnswer, total: usize, dry_run: bool, marker: &str, console: &Console) {
    if let Some(entry) = &document.applied {
        // A dry run says which generation the apply would make.
        let generation = match entry.outcome {
            Outcome::Created | Outcome::Updated if dry_run => {
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
        return;
    }
    let Some(error) = &document.error else {
        return;
    };
    let which = match (&document.name, &document.kind) {
        (Some(name), Some(kind)) => format!("{kind} {name}: "),
        (Some(name), None) => format!("{name}: "),
        _ => String::new(),
    };
    // A file of one document reads as before: the reason alone, without its place.
    let place = if total > 1 {
        format!("document {}: ", document.document)
    } else {
        String::new()
    };
    console.error(&format!("{place}{which}{}", error.error), &error.details);
}
