//! `opctl diff`: each manifest of a file against the one stored, as a unified diff of their
//! YAML; the exit code says whether anything differs (kubectl's codes: 0 none, 1 some, more
//! for an error).

use std::io::Write;

use anyhow::{Context, Result};
use operator_contract::{Manifest, ManifestKind};
use similar::TextDiff;

use crate::args::Diff;
use crate::client::{is_not_found, OrchestratorClient};
use crate::console::Console;
use crate::manifest_file::{self, label};

/// Prints the differences; `true` when some manifest differs from what is stored.
pub async fn run(diff: Diff, client: &OrchestratorClient, console: &Console) -> Result<bool> {
    let file = manifest_file::read(&diff.file)?;
    let mut out = String::new();
    for manifest in &file.manifests {
        let workspace = manifest.effective_workspace(diff.workspace.as_deref());
        let stored = match client
            .record(manifest.kind, workspace.as_deref(), &manifest.name, false)
            .await
        {
            Ok(view) => Some(stored_manifest(&view)?),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e),
        };
        let shown = as_applied(manifest, stored.as_ref());
        let (old, new) = (
            stored.as_ref().map(yaml).transpose()?.unwrap_or_default(),
            yaml(&shown)?,
        );
        let path = match &workspace {
            Some(ws) => format!("{}/{ws}/{}", manifest.kind, manifest.name),
            None => format!("{}/{}", manifest.kind, manifest.name),
        };
        let old_header = if stored.is_some() {
            format!("stored/{path}")
        } else {
            "/dev/null".to_string()
        };
        out += &unified(&old, &new, &old_header, &format!("{}/{path}", diff.file));
    }
    let differs = !out.is_empty();
    if !differs {
        console.info(&format!(
            "no difference: {} document(s) match what is stored",
            file.manifests.len()
        ));
    } else {
        let labels: Vec<String> = file
            .manifests
            .iter()
            .map(|m| label(&m.name, Some(&m.version), &m.kind.to_string()))
            .collect();
        tracing::debug!(documents = ?labels, "differences found");
    }
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(differs)
}

/// The manifest of a record answer (secret values are redacted there).
fn stored_manifest(view: &serde_json::Value) -> Result<Manifest> {
    let manifest = view
        .get("manifest")
        .cloned()
        .context("the orchestrator's record answer has no manifest")?;
    serde_json::from_value(manifest).context("the orchestrator's stored manifest is malformed")
}

/// The file's manifest as the server would store it: the first owner kept (as an apply keeps
/// it), secret values redacted like the stored one's, so only what an apply changes shows.
fn as_applied(manifest: &Manifest, stored: Option<&Manifest>) -> Manifest {
    let mut shown = manifest.clone();
    if let Some(owner) = stored.and_then(|s| s.owner.clone()) {
        shown.owner = Some(owner);
    }
    if shown.kind == ManifestKind::Secret {
        shown.secret = shown.secret.as_ref().map(|s| s.redacted());
    }
    shown
}

fn yaml(manifest: &Manifest) -> Result<String> {
    serde_norway::to_string(manifest).context("cannot write a manifest as YAML")
}

/// A unified diff with three lines of context; empty when the texts are equal.
fn unified(old: &str, new: &str, old_header: &str, new_header: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_header, new_header)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_give_no_diff_and_a_change_gives_its_lines() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
        let text = unified("a\nb\n", "a\nc\n", "stored/r", "file/r");
        assert!(text.starts_with("--- stored/r\n+++ file/r\n"), "{text}");
        assert!(text.contains("\n-b\n+c\n"), "{text}");
    }

    #[test]
    fn the_stored_owner_is_kept_and_secret_values_are_redacted() {
        let text = "name: s\nversion: v1\ntype: secret\nsecret: {type: key-value-properties, acl: rw, data: {k: v}}\n";
        let file = Manifest::parse_all(text).expect("parses").remove(0);
        let mut stored = file.clone();
        stored.owner = Some("alice".into());
        stored.secret = stored.secret.as_ref().map(|s| s.redacted());
        let shown = as_applied(&file, Some(&stored));
        assert_eq!(shown.owner.as_deref(), Some("alice"));
        assert_eq!(yaml(&shown).expect("yaml"), yaml(&stored).expect("yaml"));
        assert!(!yaml(&shown).expect("yaml").contains("k: v"));
    }
}
