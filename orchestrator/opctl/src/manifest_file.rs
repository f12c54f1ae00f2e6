//! Reading a manifest file (or standard input for `-`) and parsing it locally, so that a bad
//! manifest is refused with its document, attribute path and reason before anything is sent.

use std::io::Read;

use anyhow::{Context, Result};
use operator_contract::manifest::BatchDocument;
use operator_contract::Manifest;

/// A manifest text as read, with every document parsed.
pub struct ManifestFile {
    pub manifests: Vec<Manifest>,
}

/// A batch text as read, with each document parsed on its own.
pub struct BatchFile {
    pub text: String,
    pub documents: Vec<BatchDocument>,
}

/// Reads `path` (`-` for standard input) and parses every document of it.
pub fn read(path: &str) -> Result<ManifestFile> {
    let text = read_text(path)?;
    let manifests = Manifest::parse_all(&text)
        .with_context(|| format!("invalid manifest in {}", shown_name(path)))?;
    Ok(ManifestFile { manifests })
}

/// Reads `path` as a batch: only what spoils the whole text refuses it here; a bad document
/// is kept, with its reason, for the orchestrator to answer among the others.
pub fn read_batch(path: &str) -> Result<BatchFile> {
    let text = read_text(path)?;
    let documents = Manifest::parse_batch(&text)
        .with_context(|| format!("invalid manifest in {}", shown_name(path)))?;
    Ok(BatchFile { text, documents })
}

fn read_text(path: &str) -> Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the manifest from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
    }
}

fn shown_name(path: &str) -> &str {
    if path == "-" {
        "standard input"
    } else {
        path
    }
}

/// How a manifest is named in log lines: `name:version:type`.
pub fn label(name: &str, version: Option<&str>, kind: &str) -> String {
    match version {
        Some(version) => format!("{name}:{version}:{kind}"),
        None => format!("{name}:{kind}"),
    }
}

/// The `(workspace)` marker after a verb in log lines, empty for operators.
pub fn workspace_marker(workspace: Option<&str>) -> String {
    workspace.map(|ws| format!("({ws})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_manifest_names_the_file_document_path_and_reason() {
        let dir = std::env::temp_dir().join(format!("opctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "name: r1\nversion: v1\ntype: resource\nresource: {operator: op, type: t, spec: {}}\n---\nname: Bad Name\nversion: v1\ntype: resource\nresource: {operator: op, type: t, spec: {}}\n").expect("write");
        let shown = path.display().to_string();
        let error = read(&shown).err().expect("refused");
        let line = format!("{error:#}");
        assert!(
            line.starts_with(&format!("invalid manifest in {shown}: document 2: name: ")),
            "{line}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn labels_read_like_dataos_ctl() {
        assert_eq!(
            label("pipeline-run-1", Some("v1alpha"), "resource"),
            "pipeline-run-1:v1alpha:resource"
        );
        assert_eq!(workspace_marker(Some("public")), "(public)");
        assert_eq!(workspace_marker(None), "");
    }
}
