//! `opctl scale`: sets the replica count of an operator's component by re-applying the
//! operator's stored manifest with the new count — the same as editing `replicas` and
//! running `opctl apply`, so the change is stored and survives restarts.

use anyhow::{bail, Context, Result};
use operator_contract::ManifestKind;
use serde_json::Value;

use crate::args::Scale;
use crate::client::OrchestratorClient;
use crate::console::Console;

pub async fn run(scale: Scale, client: &OrchestratorClient, console: &Console) -> Result<()> {
    console.info("⚖ scale...");
    let record = client
        .record(ManifestKind::Operator, None, &scale.name, false)
        .await?;
    let mut manifest = record
        .get("manifest")
        .cloned()
        .context("the orchestrator's answer has no manifest")?;
    let (component, before) =
        set_replicas(&mut manifest, scale.component.as_deref(), scale.replicas)?;
    let applied = client
        .apply(serde_json::to_string(&manifest)?, None, false)
        .await?;
    let outcome = applied
        .first()
        .map(|a| a.outcome.to_string())
        .unwrap_or_default();
    console.info(&format!(
        "⚖ scaling {}/{component} from {before} to {} replicas...{outcome}",
        scale.name, scale.replicas
    ));
    console.info("⚖ scale...complete");
    Ok(())
}

/// Sets the replicas of the named component (or of the only one) in an operator manifest;
/// returns the component's name and its count before.
fn set_replicas(
    manifest: &mut Value,
    component: Option<&str>,
    replicas: u32,
) -> Result<(String, u64)> {
    let Some(components) = manifest
        .pointer_mut("/operator/components")
        .and_then(Value::as_array_mut)
    else {
        bail!("the manifest has no operator.components");
    };
    let names: Vec<String> = components
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let index = match component {
        Some(name) => names.iter().position(|n| n == name).with_context(|| {
            format!(
                "the operator has no component {name}; its components: {}",
                names.join(", ")
            )
        })?,
        None if names.len() == 1 => 0,
        None => bail!(
            "the operator has {} components ({}): name one with -c",
            names.len(),
            names.join(", ")
        ),
    };
    let target = &mut components[index];
    let before = target["replicas"].as_u64().unwrap_or_default();
    target["replicas"] = Value::from(replicas);
    Ok((names[index].clone(), before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn operator() -> Value {
        json!({"name": "adf-operator", "operator": {"components": [
            {"name": "adf-controller", "replicas": 2},
            {"name": "adf-sync", "replicas": 1}
        ]}})
    }

    #[test]
    fn the_named_component_gets_the_new_count_and_the_others_keep_theirs() {
        let mut manifest = operator();
        let (name, before) =
            set_replicas(&mut manifest, Some("adf-controller"), 3).expect("scaled");
        assert_eq!((name.as_str(), before), ("adf-controller", 2));
        assert_eq!(manifest["operator"]["components"][0]["replicas"], 3);
        assert_eq!(manifest["operator"]["components"][1]["replicas"], 1);
    }

    #[test]
    fn an_unknown_or_unnamed_component_among_several_is_refused_with_their_names() {
        let error = set_replicas(&mut operator(), Some("nope"), 1).expect_err("refused");
        assert!(
            error.to_string().contains("adf-controller, adf-sync"),
            "{error}"
        );
        let error = set_replicas(&mut operator(), None, 1).expect_err("refused");
        assert!(error.to_string().contains("name one with -c"), "{error}");
    }

    #[test]
    fn the_only_component_needs_no_name() {
        let mut manifest = json!({"operator": {"components": [{"name": "c", "replicas": 1}]}});
        assert_eq!(set_replicas(&mut manifest, None, 0).expect("scaled").0, "c");
    }
}
