//! The Data Factory REST API's bodies (api-version 2018-06-01) as this operator reads and
//! writes them; every field Azure may omit or send as null is optional.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// A pipeline run's status as Azure reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Canceling,
    Cancelled,
    /// A status this operator does not know; followed as if still running.
    Other(String),
}

impl RunStatus {
    /// Reads Azure's status string (case-insensitively).
    pub fn parse(status: &str) -> Self {
        match status.to_ascii_lowercase().as_str() {
            "queued" => Self::Queued,
            "inprogress" => Self::InProgress,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceling" | "cancelling" => Self::Canceling,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => Self::Other(status.to_string()),
        }
    }

    /// True when the run will not change any more.
    pub fn has_ended(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// True when the run has ended or is being cancelled: nothing left to cancel.
    pub fn is_stopping_or_ended(&self) -> bool {
        self.has_ended() || *self == Self::Canceling
    }
}

/// Who started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct InvokedBy {
    pub name: Option<String>,
    pub id: Option<String>,
    pub invoked_by_type: Option<String>,
}

impl InvokedBy {
    /// True for a run started through the API (createRun), as opposed to a trigger.
    pub fn is_manual(&self) -> bool {
        [&self.invoked_by_type, &self.name]
            .into_iter()
            .flatten()
            .any(|v| v.eq_ignore_ascii_case("manual"))
    }
}

/// A pipeline run (Get Pipeline Run, and each item of queryPipelineRuns).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRun {
    pub run_id: String,
    #[serde(default)]
    pub run_group_id: Option<String>,
    #[serde(default)]
    pub is_latest: Option<bool>,
    #[serde(default)]
    pub pipeline_name: Option<String>,
    /// Azure reports every value as a string.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub invoked_by: Option<InvokedBy>,
    #[serde(default)]
    pub last_updated: Option<String>,
    #[serde(default)]
    pub run_start: Option<String>,
    #[serde(default)]
    pub run_end: Option<String>,
    #[serde(default)]
    pub duration_in_ms: Option<Number>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl PipelineRun {
    /// The run's status (unknown when Azure sent none).
    pub fn status(&self) -> RunStatus {
        RunStatus::parse(self.status.as_deref().unwrap_or(""))
    }

    /// When the run started, by Azure's clock.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.run_start.as_deref().and_then(parse_time)
    }
}

/// The answer of createRun.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRunResponse {
    pub run_id: String,
}

/// One filter of a run query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunQueryFilter {
    pub operand: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// One ordering of a run query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunQueryOrderBy {
    pub order_by: String,
    pub order: String,
}

/// The body of queryPipelineRuns and queryActivityruns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFilterParameters {
    pub last_updated_after: String,
    pub last_updated_before: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RunQueryFilter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order_by: Vec<RunQueryOrderBy>,
}

impl RunFilterParameters {
    /// A query for runs updated between `after` and `before`.
    pub fn window(after: DateTime<Utc>, before: DateTime<Utc>) -> Self {
        Self {
            last_updated_after: format_time(after),
            last_updated_before: format_time(before),
            continuation_token: None,
            filters: Vec::new(),
            order_by: Vec::new(),
        }
    }

    /// Only the runs of `pipeline`, oldest first.
    pub fn of_pipeline(mut self, pipeline: &str) -> Self {
        self.filters.push(RunQueryFilter {
            operand: "PipelineName".into(),
            operator: "Equals".into(),
            values: vec![pipeline.to_string()],
        });
        self.order_by.push(RunQueryOrderBy {
            order_by: "RunStart".into(),
            order: "ASC".into(),
        });
        self
    }
}

/// One page of a query's answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub continuation_token: Option<String>,
}

/// An activity run's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ActivityError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ActivityError {
    /// True when Azure sent an error object with nothing in it (as it does for successes).
    pub fn is_empty(&self) -> bool {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        blank(&self.error_code) && blank(&self.message)
    }
}

/// An activity run (an item of queryActivityruns).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRun {
    #[serde(default)]
    pub activity_name: Option<String>,
    #[serde(default)]
    pub activity_type: Option<String>,
    #[serde(default)]
    pub activity_run_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub duration_in_ms: Option<Number>,
    #[serde(default)]
    pub error: Option<ActivityError>,
    #[serde(default)]
    pub activity_run_start: Option<String>,
    #[serde(default)]
    pub activity_run_end: Option<String>,
}

/// Azure's error body: `{"error": {"code", "message"}}` from ARM, or OAuth's
/// `{"error": "…", "error_description": "…"}` from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl ErrorBody {
    /// Reads whichever shape `body` has; anything else becomes the message, shortened.
    pub fn parse(body: &[u8]) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(json)) => match json.get("error") {
                Some(Value::Object(error)) => Self {
                    code: text(error.get("code")),
                    message: text(error.get("message")),
                },
                Some(Value::String(code)) => Self {
                    code: Some(code.clone()),
                    message: text(json.get("error_description")),
                },
                _ => Self {
                    code: text(json.get("code")),
                    message: text(json.get("message")),
                },
            },
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                Self {
                    code: None,
                    message: (!text.is_empty()).then(|| text.chars().take(500).collect()),
                }
            }
        }
    }
}

/// Formats a time as Azure takes it (RFC 3339, UTC, milliseconds).
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time as Azure sends it: RFC 3339, or without an offset (taken as UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pipeline_run_reads_from_azures_json() {
        let run: PipelineRun = serde_json::from_value(json!({
            "runId": "2f7fdb90-5df1-4b8e-ac2f-064cfa58202b",
            "runGroupId": "2f7fdb90-5df1-4b8e-ac2f-064cfa58202b",
            "isLatest": true,
            "pipelineName": "examplePipeline",
            "parameters": {"OutputBlobNameList": "[\"exampleoutput.csv\"]"},
            "invokedBy": {"name": "Manual", "id": "80a01654a9d34ad18b3fcac5d5d76b67", "invokedByType": "Manual"},
            "runStart": "2018-06-16T00:37:44.6257014Z",
            "runEnd": "2018-06-16T00:38:12.7314495Z",
            "durationInMs": 28105,
            "status": "Succeeded",
            "message": "",
            "lastUpdated": "2018-06-16T00:38:12.7314495Z",
            "annotations": [],
            "runDimension": {}
        }))
        .expect("a run");
        assert_eq!(run.status(), RunStatus::Succeeded);
        assert!(run.invoked_by.as_ref().is_some_and(InvokedBy::is_manual));
        let start = run.started_at().expect("parses 7 fractional digits");
        assert_eq!(format_time(start), "2018-06-16T00:37:44.625Z");
        assert_eq!(run.duration_in_ms, Some(Number::from(28105)));
    }

    #[test]
    fn statuses_read_case_insensitively_and_say_when_a_run_is_over() {
        assert_eq!(RunStatus::parse("InProgress"), RunStatus::InProgress);
        assert_eq!(RunStatus::parse("Canceled"), RunStatus::Cancelled);
        assert!(RunStatus::parse("Failed").has_ended());
        assert!(!RunStatus::Canceling.has_ended());
        assert!(RunStatus::Canceling.is_stopping_or_ended());
        assert_eq!(
            RunStatus::parse("Paused"),
            RunStatus::Other("Paused".into())
        );
    }

    #[test]
    fn error_bodies_read_in_either_of_azures_shapes() {
        let arm = ErrorBody::parse(
            br#"{"error": {"code": "PipelineNotFound", "message": "Pipeline p not found"}}"#,
        );
        assert_eq!(arm.code.as_deref(), Some("PipelineNotFound"));
        assert_eq!(arm.message.as_deref(), Some("Pipeline p not found"));
        let oauth = ErrorBody::parse(
            br#"{"error": "invalid_client", "error_description": "AADSTS7000215"}"#,
        );
        assert_eq!(oauth.code.as_deref(), Some("invalid_client"));
        let text = ErrorBody::parse(b"upstream timeout");
        assert_eq!(text.message.as_deref(), Some("upstream timeout"));
        assert_eq!(ErrorBody::parse(b""), ErrorBody::default());
    }

    #[test]
    fn a_run_query_asks_for_one_pipeline_oldest_first() {
        let t = parse_time("2026-01-01T00:00:00Z").expect("time");
        let body = serde_json::to_value(RunFilterParameters::window(t, t).of_pipeline("p"))
            .expect("serializes");
        assert_eq!(
            body,
            json!({
                "lastUpdatedAfter": "2026-01-01T00:00:00.000Z",
                "lastUpdatedBefore": "2026-01-01T00:00:00.000Z",
                "filters": [{"operand": "PipelineName", "operator": "Equals", "values": ["p"]}],
                "orderBy": [{"orderBy": "RunStart", "order": "ASC"}]
            })
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00.1234567"),
            parse_time("2026-01-01T00:00:00.1234567Z")
        );
    }
}
