//! What a pipeline-run entity's status says, pure: the details map ([`RunDetails`]: the recorded
//! intent, the runId and the run's synced metadata), the mapping of Azure's run status onto the
//! control plane's, the adaptive poll interval, and when an unchanged status is republished.

use std::time::Duration;

use chrono::{DateTime, Utc};
use operator_sdk::{EntityStatus, ReconcileRequest, ResourceStatus, RuntimeStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::azure::model::{format_time, ActivityError, ActivityRun, PipelineRun, RunStatus};
use crate::spec::PipelineRef;

/// Runs younger than this are polled at the shortest interval.
const WARM_UP: Duration = Duration::from_secs(30);
/// How many earlier runIds of an entity are remembered (never adopted again).
const PREVIOUS_RUNS_KEPT: usize = 20;

/// The run asked for, recorded durably before createRun is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// The entity generation the run is for.
    pub generation: u64,
    /// When createRun was about to be called, by this host's clock.
    pub requested_at: DateTime<Utc>,
    #[serde(flatten)]
    pub pipeline: PipelineRef,
    /// The parameters sent.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// An activity run as the details show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivitySummary {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_in_ms: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ActivityError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_run_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_run_end: Option<String>,
}

impl ActivitySummary {
    fn of(run: &ActivityRun) -> Self {
        Self {
            name: run.activity_name.clone().unwrap_or_default(),
            activity_type: run.activity_type.clone(),
            status: run.status.clone(),
            duration_in_ms: run.duration_in_ms.clone(),
            error: run.error.clone().filter(|e| !e.is_empty()),
            activity_run_id: run.activity_run_id.clone(),
            activity_run_start: run.activity_run_start.clone(),
            activity_run_end: run.activity_run_end.clone(),
        }
    }
}

/// An Azure error the entity settled on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    pub operation: String,
    pub code: String,
    pub message: String,
}

/// The status details of a pipeline-run entity. Unknown values are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// True when the runId was found by query after a crash rather than returned by createRun.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The run on ADF Studio's monitoring page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_in_ms: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_runs: Vec<ActivitySummary>,
    /// RunIds this entity started or adopted for earlier generations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_run_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetails>,
    /// The spec's timeout, set once the operator has cancelled the run for passing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_at: Option<DateTime<Utc>>,
}

impl RunDetails {
    /// The details of `status`, or empty ones when there are none or they do not read.
    pub fn of_status(status: Option<&EntityStatus>) -> Result<Self, serde_json::Error> {
        match status {
            Some(status) if !status.details.is_empty() => {
                serde_json::from_value(Value::Object(status.details.clone()))
            }
            _ => Ok(Self::default()),
        }
    }

    /// The details as a status map.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Fresh details for a new run of `intent`, remembering this entity's earlier runIds.
    pub fn for_new_run(&self, intent: Intent) -> Self {
        let mut previous = self.previous_run_ids.clone();
        if let Some(run_id) = &self.run_id {
            if !previous.contains(run_id) {
                previous.push(run_id.clone());
            }
        }
        let excess = previous.len().saturating_sub(PREVIOUS_RUNS_KEPT);
        previous.drain(..excess);
        Self {
            intent: Some(intent),
            previous_run_ids: previous,
            ..Self::default()
        }
    }

    /// Copies the run's metadata and its activity runs (ordered by start, then name).
    pub fn sync(&mut self, run: &PipelineRun, activities: Option<&[ActivityRun]>) {
        self.run_id = Some(run.run_id.clone());
        self.run_group_id = run.run_group_id.clone();
        self.status = run.status.clone();
        self.message = run.message.clone().filter(|m| !m.is_empty());
        self.run_start = run.run_start.clone();
        self.run_end = run.run_end.clone();
        self.duration_in_ms = run.duration_in_ms.clone();
        self.last_updated = run.last_updated.clone();
        self.error = None;
        if let Some(activities) = activities {
            let mut summaries: Vec<_> = activities.iter().map(ActivitySummary::of).collect();
            summaries.sort_by(|a, b| {
                (&a.activity_run_start, &a.name, &a.activity_run_id).cmp(&(
                    &b.activity_run_start,
                    &b.name,
                    &b.activity_run_id,
                ))
            });
            self.activity_runs = summaries;
        }
    }
}

/// The control plane's runtime status for Azure's run status: Queued/InProgress (and anything
/// unknown) → inprogress, Succeeded → succeeded, Failed → failed, Canceling/Cancelled →
/// cancelled. The resource status is `active` throughout.
pub fn runtime_of(status: &RunStatus) -> RuntimeStatus {
    match status {
        RunStatus::Queued | RunStatus::InProgress | RunStatus::Other(_) => {
            RuntimeStatus::InProgress
        }
        RunStatus::Succeeded => RuntimeStatus::Succeeded,
        RunStatus::Failed => RuntimeStatus::Failed,
        RunStatus::Canceling | RunStatus::Cancelled => RuntimeStatus::Cancelled,
    }
}

/// The status of a run as last synced into `details`.
pub fn run_status(
    request: &ReconcileRequest,
    run: &PipelineRun,
    details: &RunDetails,
) -> EntityStatus {
    let state = run.status();
    // A run cancelled for its timeout failed; one that ended on its own meanwhile keeps its end.
    if let (Some(timeout), false) = (
        &details.timed_out_after,
        matches!(state, RunStatus::Succeeded | RunStatus::Failed),
    ) {
        let mut status = request.new_runtime_status(ResourceStatus::Active, RuntimeStatus::Failed);
        status.message = Some(format!(
            "timed out after {timeout} (spec.timeout): the run was cancelled"
        ));
        status.details = details.to_map();
        return status;
    }
    let mut status = request.new_runtime_status(ResourceStatus::Active, runtime_of(&state));
    status.message = match (&state, &details.message) {
        (RunStatus::Failed, _) => Some(failure_message(details)),
        (_, Some(message)) => Some(message.clone()),
        _ => None,
    };
    status.details = details.to_map();
    status
}

/// What a failed run's status says: the failing activities' names and errors first (what a
/// user acts on), then the pipeline's own message.
pub fn failure_message(details: &RunDetails) -> String {
    let failed: Vec<String> = details
        .activity_runs
        .iter()
        .filter_map(|activity| {
            let error = activity.error.as_ref()?;
            let message = error.message.as_deref().unwrap_or_default().trim();
            Some(
                match error.error_code.as_deref().filter(|c| !c.trim().is_empty()) {
                    Some(code) => format!("{}: {code}: {message}", activity.name),
                    None => format!("{}: {message}", activity.name),
                },
            )
        })
        .collect();
    match (failed.is_empty(), &details.message) {
        (true, Some(message)) => message.clone(),
        (true, None) => "pipeline run failed".into(),
        (false, Some(message)) => {
            format!(
                "failed activities: {}; pipeline: {message}",
                failed.join("; ")
            )
        }
        (false, None) => format!("failed activities: {}", failed.join("; ")),
    }
}

/// The run's page in ADF Studio's monitoring view. ARM names are limited to URL-safe
/// characters, so they are written as they are.
pub fn monitoring_url(subscription: &str, pipeline: &PipelineRef, run_id: &str) -> String {
    format!(
        "https://adf.azure.com/monitoring/pipelineruns/{run_id}?factory=/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.DataFactory/factories/{}",
        pipeline.resource_group_name, pipeline.factory_name
    )
}

/// The status recording an intent or a runId before the run's metadata is known.
pub fn pending_status(request: &ReconcileRequest, details: &RunDetails) -> EntityStatus {
    let mut status = request.new_runtime_status(ResourceStatus::Active, RuntimeStatus::Pending);
    status.details = details.to_map();
    status
}

/// How long to wait before polling a run that has been going for `age` again: `min` for the
/// first 30 s, then growing by a tenth of the extra age, up to `max`.
pub fn poll_interval(age: Duration, min: Duration, max: Duration) -> Duration {
    let grown = min + age.saturating_sub(WARM_UP) / 10;
    grown.min(max).max(min)
}

/// The status to publish after a sync, or `None` when it would only repeat the last one
/// (`request.status`) and that one's `lastSyncedAt` is younger than `refresh`. The status
/// passed in carries no `lastSyncedAt`; the one returned carries `now`.
pub fn to_publish(
    request: &ReconcileRequest,
    mut status: EntityStatus,
    now: DateTime<Utc>,
    refresh: Duration,
) -> Option<EntityStatus> {
    const KEY: &str = "lastSyncedAt";
    let last_synced = request.status.as_ref().and_then(|s| s.details.get(KEY));
    let synced_at = last_synced
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    if let (Some(raw), Some(at)) = (last_synced, synced_at) {
        status.details.insert(KEY.into(), raw.clone());
        let recent = (now - at.with_timezone(&Utc))
            .to_std()
            .map_or(true, |age| age < refresh);
        if recent && request.status_unchanged(&status) {
            return None;
        }
    }
    status
        .details
        .insert(KEY.into(), Value::String(format_time(now)));
    Some(status)
}

#[cfg(test)]
mod tests;
