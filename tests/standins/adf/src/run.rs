//! One pipeline run's life as a pure function of time: Queued, then InProgress, then Succeeded
//! or Failed; or, once cancelled, Canceling then Cancelled. Also the activity runs inside it and
//! the JSON ADF shows for both.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::{format_timestamp, millis, millis_between};

/// How long a cancelled run stays Canceling before it is Cancelled.
pub const CANCEL_SETTLE: TimeDelta = TimeDelta::milliseconds(300);

/// The one activity of a pipeline nobody configured, named like the Copy activity ADF's
/// authoring UI creates.
pub const DEFAULT_ACTIVITY_NAME: &str = "Copy data";
pub const DEFAULT_ACTIVITY_TYPE: &str = "Copy";

/// What a failing activity reports unless a test says otherwise: the shape of a real Copy
/// activity error.
pub const DEFAULT_FAILURE_MESSAGE: &str = "ErrorCode=UserErrorFileNotFound,'Type=Microsoft.\
DataTransfer.Common.Shared.HybridDeliveryException,Message=The required Blob is missing. \
ContainerName: https://standin.blob.core.windows.net/input, path: input/data.csv.,\
Source=Microsoft.DataTransfer.ClientLibrary,'";

/// The status of a pipeline run, or of an activity run (which is never Queued or Canceling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Canceling,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceling => "Canceling",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// How a run of a pipeline ends when nobody cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeed,
    Fail,
}

/// One activity of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub activity_type: String,
}

/// How the runs of one pipeline behave; a run copies it when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineBehaviour {
    pub outcome: Outcome,
    pub queued_ms: u64,
    pub run_ms: u64,
    /// The failing activity's error message; the run's message wraps it as ADF does.
    pub failure_message: String,
    /// Run one after another, each for an equal share of `run_ms`; never empty.
    pub activities: Vec<ActivitySpec>,
}

impl PipelineBehaviour {
    /// What an unconfigured pipeline does: one Copy activity, failing when the pipeline's name
    /// contains `fail`, so a test can ask for a failure by naming alone.
    pub fn unconfigured(pipeline: &str, queued_ms: u64, run_ms: u64) -> Self {
        let fails = pipeline.to_ascii_lowercase().contains("fail");
        Self {
            outcome: if fails {
                Outcome::Fail
            } else {
                Outcome::Succeed
            },
            queued_ms,
            run_ms,
            failure_message: DEFAULT_FAILURE_MESSAGE.to_owned(),
            activities: vec![ActivitySpec {
                name: DEFAULT_ACTIVITY_NAME.to_owned(),
                activity_type: DEFAULT_ACTIVITY_TYPE.to_owned(),
            }],
        }
    }
}

/// createRun's optional query parameters, kept as given so tests can assert on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RerunOptions {
    pub reference_pipeline_run_id: Option<String>,
    pub is_recovery: Option<bool>,
    pub start_activity_name: Option<String>,
    pub start_from_failure: Option<bool>,
}

/// One run of a pipeline: what it was created with and whether and when it was cancelled.
/// Its status at any instant follows from these.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: Uuid,
    /// The run itself, or for a recovery rerun the group of the run it recovers.
    pub group_id: Uuid,
    /// Which factory it belongs to, as [`crate::state::factory_key`] spells it.
    pub factory: String,
    pub pipeline_name: String,
    /// The parameters as the client sent them.
    pub parameters: Map<String, Value>,
    pub rerun: RerunOptions,
    pub created_at: DateTime<Utc>,
    pub behaviour: PipelineBehaviour,
    /// One id per activity in `behaviour.activities`, fixed at creation.
    pub activity_run_ids: Vec<Uuid>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Whether the cancel asked for the runs it started to stop too (`isRecursive=true`).
    pub cancelled_recursively: bool,
    /// A later recovery run of the same group exists, so this one is no longer the latest.
    pub superseded: bool,
}

impl Run {
    pub fn new(
        factory: String,
        pipeline_name: String,
        parameters: Map<String, Value>,
        rerun: RerunOptions,
        behaviour: PipelineBehaviour,
        created_at: DateTime<Utc>,
    ) -> Self {
        let id = Uuid::new_v4();
        Self {
            id,
            group_id: id,
            factory,
            pipeline_name,
            parameters,
            rerun,
            created_at,
            activity_run_ids: behaviour
                .activities
                .iter()
                .map(|_| Uuid::new_v4())
                .collect(),
            behaviour,
            cancelled_at: None,
            cancelled_recursively: false,
            superseded: false,
        }
    }

    /// When it leaves the queue.
    fn started_at(&self) -> DateTime<Utc> {
        self.created_at + millis(self.behaviour.queued_ms)
    }

    /// When it ends unless cancelled first.
    fn natural_end(&self) -> DateTime<Utc> {
        self.started_at() + millis(self.behaviour.run_ms)
    }

    pub fn status_at(&self, now: DateTime<Utc>) -> RunStatus {
        if let Some(cancelled_at) = self.cancelled_at {
            if now >= cancelled_at + CANCEL_SETTLE {
                return RunStatus::Cancelled;
            }
            if now >= cancelled_at {
                return RunStatus::Canceling;
            }
        }
        if now < self.started_at() {
            RunStatus::Queued
        } else if now < self.natural_end() {
            RunStatus::InProgress
        } else {
            match self.behaviour.outcome {
                Outcome::Succeed => RunStatus::Succeeded,
                Outcome::Fail => RunStatus::Failed,
            }
        }
    }

    /// When it ended, or `None` while it has not.
    pub fn ended_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.status_at(now) {
            RunStatus::Succeeded | RunStatus::Failed => Some(self.natural_end()),
            RunStatus::Cancelled => self.cancelled_at.map(|at| at + CANCEL_SETTLE),
            RunStatus::Queued | RunStatus::InProgress | RunStatus::Canceling => None,
        }
    }

    /// When its status last changed.
    pub fn last_updated_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.status_at(now) {
            RunStatus::Queued => self.created_at,
            RunStatus::InProgress => self.started_at(),
            RunStatus::Canceling => self.cancelled_at.unwrap_or(self.created_at),
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => {
                self.ended_at(now).unwrap_or(self.created_at)
            }
        }
    }

    /// Cancels a Queued or InProgress run; any other is left alone, as ADF does. Returns
    /// whether the run was cancelled by this call.
    pub fn cancel(&mut self, now: DateTime<Utc>, recursive: bool) -> bool {
        let running = matches!(
            self.status_at(now),
            RunStatus::Queued | RunStatus::InProgress
        );
        if running {
            self.cancelled_at = Some(now);
            self.cancelled_recursively = recursive;
        }
        running
    }

    /// The activity that fails a failing run: the last one, so every earlier one succeeds.
    fn failing_activity(&self) -> &str {
        self.behaviour
            .activities
            .last()
            .map_or(DEFAULT_ACTIVITY_NAME, |activity| activity.name.as_str())
    }

    /// The run's `message`: empty except on failure, where ADF names the failing activity.
    fn message_at(&self, now: DateTime<Utc>) -> String {
        match self.status_at(now) {
            RunStatus::Failed => format!(
                "Operation on target {} failed: {}",
                self.failing_activity(),
                self.behaviour.failure_message
            ),
            _ => String::new(),
        }
    }

    /// When activity `index` starts; `index == count` gives the natural end.
    fn activity_boundary(&self, index: usize) -> DateTime<Utc> {
        let count = u64::try_from(self.behaviour.activities.len().max(1)).unwrap_or(1);
        let index = u64::try_from(index).unwrap_or(count);
        self.started_at() + millis(self.behaviour.run_ms * index / count)
    }

    /// The run as ADF shows it at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> RunView {
        RunView {
            run_id: self.id,
            run_group_id: self.group_id,
            is_latest: !self.superseded,
            pipeline_name: self.pipeline_name.clone(),
            parameters: self.parameters.clone(),
            last_updated: self.last_updated_at(now),
            run_start: self.created_at,
            run_end: self.ended_at(now),
            status: self.status_at(now),
            message: self.message_at(now),
        }
    }

    /// The activity runs that have started by `now`, in the order they ran. An activity starts
    /// only after the queue and before any cancel; one running at the cancel is Cancelled with
    /// the run.
    pub fn activity_views(&self, now: DateTime<Utc>) -> Vec<ActivityRunView> {
        let last = self.behaviour.activities.len().saturating_sub(1);
        let mut views = Vec::new();
        for (index, (spec, id)) in self
            .behaviour
            .activities
            .iter()
            .zip(&self.activity_run_ids)
            .enumerate()
        {
            let start = self.activity_boundary(index);
            let end = self.activity_boundary(index + 1);
            let began = now >= start && self.cancelled_at.is_none_or(|at| start <= at);
            if !began {
                break;
            }
            let (status, ended_at) = match self.cancelled_at {
                Some(at) if at < end => {
                    if now >= at + CANCEL_SETTLE {
                        (RunStatus::Cancelled, Some(at + CANCEL_SETTLE))
                    } else {
                        (RunStatus::InProgress, None)
                    }
                }
                _ if now < end => (RunStatus::InProgress, None),
                _ if index == last && self.behaviour.outcome == Outcome::Fail => {
                    (RunStatus::Failed, Some(end))
                }
                _ => (RunStatus::Succeeded, Some(end)),
            };
            views.push(ActivityRunView {
                activity_name: spec.name.clone(),
                activity_type: spec.activity_type.clone(),
                activity_run_id: *id,
                pipeline_name: self.pipeline_name.clone(),
                pipeline_run_id: self.id,
                status,
                start,
                end: ended_at,
                failure_message: (status == RunStatus::Failed)
                    .then(|| self.behaviour.failure_message.clone()),
            });
        }
        views
    }
}

/// A pipeline run as seen at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub run_id: Uuid,
    pub run_group_id: Uuid,
    pub is_latest: bool,
    pub pipeline_name: String,
    pub parameters: Map<String, Value>,
    pub last_updated: DateTime<Utc>,
    pub run_start: DateTime<Utc>,
    pub run_end: Option<DateTime<Utc>>,
    pub status: RunStatus,
    pub message: String,
}

impl RunView {
    /// ADF's PipelineRun JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "runId": self.run_id,
            "runGroupId": self.run_group_id,
            "isLatest": self.is_latest,
            "pipelineName": self.pipeline_name,
            "parameters": parameters_as_strings(&self.parameters),
            "invokedBy": {
                "name": "Manual",
                "id": self.run_id.simple().to_string(),
                "invokedByType": "Manual",
            },
            "lastUpdated": format_timestamp(self.last_updated),
            "runStart": format_timestamp(self.run_start),
            "runEnd": self.run_end.map(format_timestamp),
            "durationInMs": self.run_end.map(|end| millis_between(self.run_start, end)),
            "status": self.status.as_str(),
            "message": self.message,
            "runDimension": {},
            "annotations": [],
        })
    }
}

/// ADF reports every parameter value as a string: strings as they are, anything else as its
/// compact JSON.
fn parameters_as_strings(parameters: &Map<String, Value>) -> Map<String, Value> {
    parameters
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (name.clone(), Value::String(text))
        })
        .collect()
}

/// An activity run as seen at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRunView {
    pub activity_name: String,
    pub activity_type: String,
    pub activity_run_id: Uuid,
    pub pipeline_name: String,
    pub pipeline_run_id: Uuid,
    pub status: RunStatus,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub failure_message: Option<String>,
}

impl ActivityRunView {
    pub fn last_updated(&self) -> DateTime<Utc> {
        self.end.unwrap_or(self.start)
    }

    /// ADF's ActivityRun JSON; `error` has empty strings unless the activity failed, as ADF's.
    pub fn to_json(&self) -> Value {
        let (error_code, message, failure_type) = match &self.failure_message {
            Some(message) => ("2200", message.as_str(), "UserError"),
            None => ("", "", ""),
        };
        json!({
            "activityName": self.activity_name,
            "activityType": self.activity_type,
            "activityRunId": self.activity_run_id,
            "pipelineName": self.pipeline_name,
            "pipelineRunId": self.pipeline_run_id,
            "linkedServiceName": "",
            "status": self.status.as_str(),
            "activityRunStart": format_timestamp(self.start),
            "activityRunEnd": self.end.map(format_timestamp),
            "durationInMs": self.end.map(|end| millis_between(self.start, end)),
            "input": {},
            "output": {},
            "error": {
                "errorCode": error_code,
                "message": message,
                "failureType": failure_type,
                "target": self.activity_name,
                "details": "",
            },
            "retryAttempt": null,
            "iterationHash": "",
            "userProperties": {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_timestamp;

    fn at(ms: u64) -> DateTime<Utc> {
        let origin = parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default();
        origin + millis(ms)
    }

    fn run(outcome: Outcome, activities: &[&str]) -> Run {
        let behaviour = PipelineBehaviour {
            outcome,
            queued_ms: 500,
            run_ms: 3000,
            failure_message: "boom".to_owned(),
            activities: activities
                .iter()
                .map(|name| ActivitySpec {
                    name: (*name).to_owned(),
                    activity_type: "Copy".to_owned(),
                })
                .collect(),
        };
        Run::new(
            "sub/rg/factory".to_owned(),
            "p".to_owned(),
            Map::new(),
            RerunOptions::default(),
            behaviour,
            at(0),
        )
    }

    #[test]
    fn a_run_is_queued_then_in_progress_then_succeeded() {
        let run = run(Outcome::Succeed, &["Copy data"]);
        assert_eq!(run.status_at(at(0)), RunStatus::Queued);
        assert_eq!(run.status_at(at(499)), RunStatus::Queued);
        assert_eq!(run.status_at(at(500)), RunStatus::InProgress);
        assert_eq!(run.status_at(at(3499)), RunStatus::InProgress);
        assert_eq!(run.status_at(at(3500)), RunStatus::Succeeded);
        assert_eq!(run.ended_at(at(3499)), None);
        assert_eq!(run.ended_at(at(9000)), Some(at(3500)));
        assert_eq!(run.last_updated_at(at(100)), at(0));
        assert_eq!(run.last_updated_at(at(600)), at(500));
        assert_eq!(run.last_updated_at(at(9000)), at(3500));
    }

    #[test]
    fn a_failing_run_names_its_failing_activity_in_the_message() {
        let run = run(Outcome::Fail, &["Copy data"]);
        assert_eq!(run.status_at(at(3500)), RunStatus::Failed);
        assert_eq!(run.message_at(at(3000)), "");
        assert_eq!(
            run.message_at(at(3500)),
            "Operation on target Copy data failed: boom"
        );
    }

    #[test]
    fn a_cancelled_run_is_canceling_then_cancelled_and_never_ends_otherwise() {
        let mut run = run(Outcome::Succeed, &["Copy data"]);
        assert!(run.cancel(at(1000), true));
        assert_eq!(run.status_at(at(1000)), RunStatus::Canceling);
        assert_eq!(run.ended_at(at(1299)), None);
        assert_eq!(run.status_at(at(1300)), RunStatus::Cancelled);
        assert_eq!(run.status_at(at(9000)), RunStatus::Cancelled);
        assert_eq!(run.ended_at(at(9000)), Some(at(1300)));
        assert_eq!(run.last_updated_at(at(1100)), at(1000));
        assert_eq!(run.last_updated_at(at(9000)), at(1300));
    }

    #[test]
    fn cancelling_an_ended_or_canceling_run_changes_nothing() {
        let mut ended = run(Outcome::Fail, &["Copy data"]);
        assert!(!ended.cancel(at(4000), true));
        assert_eq!(ended.status_at(at(4000)), RunStatus::Failed);

        let mut canceling = run(Outcome::Succeed, &["Copy data"]);
        assert!(canceling.cancel(at(100), true));
        assert!(!canceling.cancel(at(200), true));
        assert_eq!(canceling.cancelled_at, Some(at(100)));
    }

    #[test]
    fn activities_run_one_after_another_and_the_last_one_fails() {
        let run = run(Outcome::Fail, &["Lookup", "Copy"]);
        assert!(run.activity_views(at(499)).is_empty());
        let first = run.activity_views(at(500));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].status, RunStatus::InProgress);
        let both = run.activity_views(at(2000));
        assert_eq!(both[0].status, RunStatus::Succeeded);
        assert_eq!(both[0].end, Some(at(2000)));
        assert_eq!(both[1].status, RunStatus::InProgress);
        let ended = run.activity_views(at(3500));
        assert_eq!(ended[1].status, RunStatus::Failed);
        assert_eq!(ended[1].failure_message.as_deref(), Some("boom"));
        assert_eq!(ended[0].failure_message, None);
    }

    #[test]
    fn the_activity_running_at_a_cancel_is_cancelled_and_later_ones_never_start() {
        let mut run = run(Outcome::Succeed, &["Lookup", "Copy"]);
        run.cancel(at(1000), true);
        let canceling = run.activity_views(at(1100));
        assert_eq!(canceling.len(), 1);
        assert_eq!(canceling[0].status, RunStatus::InProgress);
        let cancelled = run.activity_views(at(9000));
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].status, RunStatus::Cancelled);
        assert_eq!(cancelled[0].end, Some(at(1300)));
    }

    #[test]
    fn a_run_cancelled_in_the_queue_has_no_activity_runs() {
        let mut run = run(Outcome::Succeed, &["Copy data"]);
        run.cancel(at(100), true);
        assert!(run.activity_views(at(9000)).is_empty());
    }

    #[test]
    fn the_json_has_no_end_while_running_and_parameters_as_strings() {
        let mut run = run(Outcome::Succeed, &["Copy data"]);
        run.parameters.insert("count".to_owned(), json!(3));
        run.parameters.insert("name".to_owned(), json!("x"));
        let running = run.view(at(600)).to_json();
        assert_eq!(running["status"], "InProgress");
        assert_eq!(running["runEnd"], Value::Null);
        assert_eq!(running["durationInMs"], Value::Null);
        assert_eq!(running["parameters"], json!({"count": "3", "name": "x"}));
        assert_eq!(running["runStart"], "2026-11-26T10:00:00.0000000Z");
        let ended = run.view(at(9000)).to_json();
        assert_eq!(ended["runEnd"], "2026-11-26T10:00:03.5000000Z");
        assert_eq!(ended["durationInMs"], 3500);
        assert_eq!(ended["message"], "");
    }
}
