//! The `pipeline-run` resource's spec as commanded, and the pipeline it names ([`PipelineRef`]).

use std::time::Duration;

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
    /// `timeout` is not a positive duration.
    #[error("invalid pipeline-run spec: timeout: {value:?} is not a positive duration such as 30m or 1h30m")]
    BadTimeout { value: String },
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
    /// How long the run may take (`30m`, `1h30m`, …): past it, it is cancelled.
    #[serde(default)]
    pub timeout: Option<String>,
    /// `timeout`, read.
    #[serde(skip)]
    pub timeout_after: Option<Duration>,
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
        parsed.timeout_after = match parsed.timeout.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_duration(text).ok_or_else(|| SpecError::BadTimeout {
                value: text.to_string(),
            })?),
        };
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

/// A positive duration written as numbers with units, `500ms`, `90s`, `30m`, `1h30m`, `2d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next()? {
                's' => (1_000, 1),
                'm' => (60_000, 1),
                'h' => (3_600_000, 1),
                'd' => (86_400_000, 1),
                _ => return None,
            }
        };
        rest = &rest[len..];
        total = total.checked_add(Duration::from_millis(amount.checked_mul(unit_ms)?))?;
    }
    (!total.is_zero()).then_some(total)
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

    #[test]
    fn timeouts_read_as_durations_and_bad_ones_are_refused_naming_the_field() {
        let with = |timeout: Value| {
            PipelineRunSpec::parse(&json!({
                "factoryName": "f", "pipelineName": "p", "resourceGroupName": "rg",
                "timeout": timeout
            }))
        };
        for (text, secs) in [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("2d", 172_800)] {
            let spec = with(json!(text)).expect(text);
            assert_eq!(
                spec.timeout_after,
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(
            with(json!("250ms")).expect("ms").timeout_after,
            Some(Duration::from_millis(250))
        );
        assert_eq!(with(Value::Null).expect("null").timeout_after, None);
        for bad in ["-30m", "half an hour", "30", "0s", "m", "30x", "1h 30m"] {
            let err = with(json!(bad)).expect_err(bad);
            assert!(matches!(err, SpecError::BadTimeout { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("timeout"), "{err}");
        }
    }
}
