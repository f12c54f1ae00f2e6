//! The demo's `job` resource: its spec as commanded and a job as the platform reports it.

use serde::{Deserialize, Serialize};

/// The spec of a `job` entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct JobSpec {
    /// How long the job runs on the platform.
    pub duration_ms: u64,
    /// Whether the job ends as failed.
    pub fail: bool,
    /// The message the job ends with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl JobSpec {
    /// Reads a spec; a missing or null spec is the default one.
    pub fn parse(spec: &serde_json::Value) -> Result<Self, serde_json::Error> {
        if spec.is_null() {
            return Ok(Self::default());
        }
        Self::deserialize(spec)
    }
}

/// Where a job stands on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A job as the platform reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub workspace: String,
    pub name: String,
    pub generation: u64,
    pub state: JobState,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
}

/// The body of a job submission.
#[derive(Debug, Clone, Serialize)]
pub struct JobSubmission<'a> {
    pub generation: u64,
    pub spec: &'a JobSpec,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_spec_takes_defaults_for_what_it_leaves_out() {
        assert_eq!(
            JobSpec::parse(&json!({})).expect("valid"),
            JobSpec::default()
        );
        assert_eq!(
            JobSpec::parse(&serde_json::Value::Null).expect("valid"),
            JobSpec::default()
        );
        let spec = JobSpec::parse(&json!({"durationMs": 50, "fail": true, "message": "boom"}))
            .expect("valid");
        assert_eq!(spec.duration_ms, 50);
        assert!(spec.fail);
        assert_eq!(spec.message.as_deref(), Some("boom"));
        assert!(JobSpec::parse(&json!({"durationMs": "soon"})).is_err());
    }

    #[test]
    fn a_platform_job_reads_from_its_json() {
        let job: Job = serde_json::from_value(json!({
            "workspace": "public", "name": "run-1", "generation": 2, "state": "running",
            "message": null, "startedAt": "2026-01-01T00:00:00Z", "endedAt": null
        }))
        .expect("a job");
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.generation, 2);
        let body = serde_json::to_value(JobSubmission {
            generation: 2,
            spec: &JobSpec::default(),
        })
        .expect("serializes");
        assert_eq!(
            body,
            json!({"generation": 2, "spec": {"durationMs": 0, "fail": false}})
        );
    }
}
