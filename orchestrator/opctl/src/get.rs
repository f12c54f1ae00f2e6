//! `opctl get`: list the entities of a type or show one, as a table, JSON or YAML.

use std::io::Write;

use anyhow::Result;

use crate::args::{Get, OutputFormat};
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::{describe, output};

pub async fn run(get: Get, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("🔍 get...");
    if get.watch {
        return crate::watch::run_get(&get, client, console).await;
    }
    let workspace = get.workspace();
    if get.workspace.is_none() && get.name.is_none() {
        if let Some(ws) = workspace {
            console.info(&format!(
                "🔍 get...workspace {ws} (the default; -w WS for another)"
            ));
        }
    }
    // A whole type's list is printed as it arrives; `-d` renders the list whole.
    if get.name.is_none() && !get.details {
        return crate::list_stream::print(&get, client, console).await;
    }
    let answer = match &get.name {
        Some(name) => {
            client
                .record(get.kind, workspace, name, get.details)
                .await?
        }
        None => client.list(get.kind, workspace, get.all_owners).await?,
    };
    let text = match get.output_format() {
        // -d alone is for people; -d -o yaml|json gives the whole record for machines.
        _ if get.details && get.output.is_none() => {
            let mut text = describe::render(&answer);
            if let (operator_contract::ManifestKind::Resource, Some(ws), Some(name)) =
                (get.kind, workspace, &get.name)
            {
                text.push_str(&latest_events(client, ws, name).await);
            }
            text
        }
        OutputFormat::Name => {
            let records = match get.name {
                Some(_) => vec![output::single_item(&answer)?],
                None => output::list_items(&answer)?,
            };
            output::names_text(&records)
        }
        OutputFormat::Table => {
            let records = match get.name {
                Some(_) => vec![output::single_item(&answer)?],
                None => output::list_items(&answer)?,
            };
            if records.is_empty() {
                console.info(&nothing_found(&get));
                console.info("🔍 get...complete");
                return Ok(());
            }
            output::table_text(&records)
        }
        format => output::document_text(&answer, format)?,
    };
    let described = get.details && get.output.is_none();
    if let Some(reason) = answer
        .get("detailsError")
        .and_then(|v| v.as_str())
        .filter(|_| !described)
    {
        console.warn(&format!("live details unavailable: {reason}"));
    }
    console.info("🔍 get...complete");
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

pub fn nothing_found(get: &Get) -> String {
    match get.workspace() {
        Some(ws) => format!("🔍 no {} in workspace {ws}", get.kind),
        None => format!("🔍 no {}", get.kind),
    }
}

/// The latest few events of a resource, as a section of `get -d`; what went wrong reading them
/// is said in their place.
async fn latest_events(client: &OrchestratorClient, workspace: &str, name: &str) -> String {
    let events = match client.events(workspace, name).await {
        Ok(answer) => match crate::events::items(&answer) {
            Ok(items) => items,
            Err(e) => return format!("\nEvents unavailable: {e:#}\n"),
        },
        Err(e) => return format!("\nEvents unavailable: {e:#}\n"),
    };
    if events.is_empty() {
        return String::new();
    }
    let latest = &events[events.len().saturating_sub(crate::events::LATEST)..];
    format!(
        "\nEvents (the latest {}; opctl events shows all):\n{}",
        latest.len(),
        crate::events::table_text(latest)
    )
}
