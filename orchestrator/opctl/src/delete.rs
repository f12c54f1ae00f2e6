//! `opctl delete`: delete one named entity, or every manifest of a file, last document first.

use anyhow::Result;

use crate::args::Delete;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::manifest_file::{self, label, workspace_marker};

pub async fn run(delete: Delete, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("🗑 delete...");
    let targets = targets(&delete)?;
    for target in &targets {
        let workspace = target.workspace.as_deref();
        let deleted = client.delete(target.kind, workspace, &target.name).await?;
        console.info(&format!(
            "🗑 deleting{} {}...{}",
            workspace_marker(workspace),
            label(
                &target.name,
                target.version.as_deref(),
                &target.kind.to_string()
            ),
            deleted.outcome
        ));
    }
    console.info("🗑 delete...complete");
    Ok(())
}

/// One entity to delete.
struct Target {
    kind: operator_contract::ManifestKind,
    name: String,
    version: Option<String>,
    workspace: Option<String>,
}

/// The named entity, or the file's manifests in reverse order.
fn targets(delete: &Delete) -> Result<Vec<Target>> {
    if let (Some(kind), Some(name)) = (delete.kind, &delete.name) {
        return Ok(vec![Target {
            kind,
            name: name.clone(),
            version: None,
            workspace: delete.workspace_for(kind).map(str::to_string),
        }]);
    }
    let Some(path) = &delete.file else {
        anyhow::bail!("name what to delete with -t TYPE -n NAME, or -f FILE");
    };
    let file = manifest_file::read(path)?;
    Ok(file
        .manifests
        .iter()
        .rev()
        .map(|m| Target {
            kind: m.kind,
            name: m.name.clone(),
            version: Some(m.version.clone()),
            workspace: m.effective_workspace(delete.workspace.as_deref()),
        })
        .collect())
}
