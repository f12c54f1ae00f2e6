//! `opctl render`: an operator's components as the Kubernetes objects the `kubernetes`
//! runtime applies — a Deployment per component, a Secret per referenced secret (values
//! redacted), a Service per component with ports — as YAML on standard output.

use std::io::Write;

use anyhow::Result;

use crate::args::Render;
use crate::client::OrchestratorClient;
use crate::console::Console;

pub async fn run(render: Render, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("📜 render...");
    let yaml = client
        .render(&render.name, render.namespace.as_deref())
        .await?;
    console.info("📜 render...complete");
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}
