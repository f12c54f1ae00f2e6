//! The `pipeline-run` resource's spec as commanded, and the pipeline it names ([`PipelineRef`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// The resource type this operator reconciles.
pub const PIPELINE_RUN: &str = "pipeline-run";

/// Why a spec cannot be run.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The spec does not have the schema's shape.
    #[error("invalid pipeline-run spec: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A required name is empty.
    #[error("invalid pipeline-run spec: {0} must not be empty")]
    EmptyName(&'static str),
}

/// Where a pipeline lives: resource group, factory and pipeline name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    pub resource_group_name: String,
    pub factory_name: String,
    pub pipeline_name: String,
}

/// The spec of a `pipeline-run` entity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    pub factory_name: String,
    pub pipeline_name: String,
    pub resource_group_name: String,
    /// The pipeline's parameters (`{}` when absent or null).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// A run to recover from: the new run is created with `isRecovery=true`.
    #[serde(default, rename = "referencePipelineRunID")]
    pub reference_pipeline_run_id: Option<String>,
    /// In recovery mode, the activity the rerun starts from.
    #[serde(default)]
    pub start_activity_name: Option<String>,
    /// In recovery mode, rerun from the failed activities.
    #[serde(default)]
    pub start_from_failure: Option<bool>,
}

impl PipelineRunSpec {
    /// Reads and checks a spec.
    pub fn parse(spec: &Value) -> Result<Self, SpecError> {
        let mut parsed = Self::deserialize(spec)?;
        for (field, value) in [
            ("factoryName", &mut parsed.factory_name),
            ("pipelineName", &mut parsed.pipeline_name),
            ("resourceGroupName", &mut parsed.resource_group_name),
        ] {
            *value = value.trim().to_string();
            if value.is_empty() {
                return Err(SpecError::EmptyName(field));
            }
        }
        for optional in [
            &mut parsed.reference_pipeline_run_id,
            &mut parsed.start_activity_name,
        ] {
            if optional.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *optional = None;
            }
        }
        Ok(parsed)
    }

    /// The pipeline this spec runs.
    pub fn pipeline(&self) -> PipelineRef {
        PipelineRef {
            resource_group_name: self.resource_group_name.clone(),
            factory_name: self.factory_name.clone(),
            pipeline_name: self.pipeline_name.clone(),
        }
    }

    /// The parameters to send (`{}` when none).
    pub fn parameters(&self) -> Map<String, Value> {
        self.parameters.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_example_manifest_spec_reads_with_empty_parameters() {
        let spec = PipelineRunSpec::parse(&json!({
            "factoryName": "datafactoryoz3un3trdpaa",
            "pipelineName": "ArmtemplateSampleCopyPipeline",
            "resourceGroupName": "Engineering"
        }))
        .expect("valid");
        assert_eq!(spec.pipeline().factory_name, "datafactoryoz3un3trdpaa");
        assert_eq!(spec.parameters(), Map::new());
        assert_eq!(spec.reference_pipeline_run_id, None);
    }

    #[test]
    fn recovery_fields_and_nulls_read_as_the_schema_allows() {
        let spec = PipelineRunSpec::parse(&json!({
            "factoryName": "f", "pipelineName": "p", "resourceGroupName": "rg",
            "parameters": {"day": "2026-01-01", "n": 3},
            "referencePipelineRunID": "1f0c…", "startActivityName": null, "startFromFailure": true
        }))
        .expect("valid");
        assert_eq!(spec.reference_pipeline_run_id.as_deref(), Some("1f0c…"));
        assert_eq!(spec.start_activity_name, None);
        assert_eq!(spec.start_from_failure, Some(true));
        assert_eq!(spec.parameters()["n"], json!(3));
    }

    #[test]
    fn missing_or_empty_names_are_refused() {
        assert!(matches!(
            PipelineRunSpec::parse(&json!({"factoryName": "f", "pipelineName": "p"})),
            Err(SpecError::Malformed(_))
        ));
        assert!(matches!(
            PipelineRunSpec::parse(
                &json!({"factoryName": " ", "pipelineName": "p", "resourceGroupName": "rg"})
            ),
            Err(SpecError::EmptyName("factoryName"))
        ));
        assert!(PipelineRunSpec::parse(&Value::Null).is_err());
    }
}
