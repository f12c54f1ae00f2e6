//! The pipeline run's reconcile flow through the SDK's harness (its controller over the memory
//! store, no NATS), against the in-test Azure server of the client's tests: the intent is
//! recorded before createRun, a run is followed to its end, a Retry-After past the retry policy
//! requeues, a refusal ends in error with Azure's code kept, and a delete before any run
//! finishes at once.

use std::time::Duration;

use operator_sdk::testing::{block_on, Next, ReconcileHarness};
use operator_sdk::RuntimeStatus;
use serde_json::{json, Value};

use super::*;
use crate::azure::tests::{calls, ok, run_json, serve, status, Answer};

fn poll() -> PollSettings {
    PollSettings {
        min: Duration::from_millis(10),
        max: Duration::from_millis(50),
        sync_refresh: Duration::from_secs(60),
        cancel_wait: Duration::from_millis(200),
        clock_skew: Duration::from_secs(300),
        crash_after_create_run: false,
        monitor_budget_per_minute: 100_000,
    }
}

fn spec() -> Value {
    json!({"factoryName": "factory1", "pipelineName": "Copy Pipeline",
           "resourceGroupName": "Engineering"})
}

fn harness(
    operator: &str,
    answers: Vec<Answer>,
) -> (ReconcileHarness, crate::azure::tests::Shared) {
    let (script, client) = serve(answers);
    let harness = ReconcileHarness::new(operator, AdfReconciler::new(client, poll()));
    (harness, script)
}

#[test]
fn the_intent_is_recorded_before_create_run_and_the_run_followed_to_its_end() {
    block_on(async {
        let (mut h, script) = harness(
            "adf-flow-a",
            vec![
                ok(json!({"runId": "r1"})),
                ok(run_json("Succeeded")),
                ok(json!({"value": []})),
            ],
        );
        h.apply(PIPELINE_RUN, "public/run-1", spec()).await;
        let run = h.reconcile(PIPELINE_RUN, "public/run-1").await;
        assert_eq!(run.next, Next::AwaitChange, "an ended run is not polled");
        let details: Vec<&serde_json::Map<String, Value>> =
            run.published.iter().map(|s| &s.details).collect();
        assert_eq!(details.len(), 3, "{:?}", run.published);
        assert!(details[0].contains_key("intent"), "{:?}", details[0]);
        assert!(
            !details[0].contains_key("runId"),
            "intent first, before createRun"
        );
        assert_eq!(details[1]["runId"], json!("r1"));
        let last = run.last().expect("status");
        assert_eq!(last.runtime, Some(RuntimeStatus::Succeeded));
        let calls = calls(&script);
        assert_eq!(calls[0].method, "POST", "{calls:?}");
        assert!(calls[0].path.ends_with("/createRun"));
    });
}

#[test]
fn a_retry_after_past_the_retry_policy_requeues_the_run_after_it() {
    block_on(async {
        let (mut h, _script) = harness(
            "adf-flow-b",
            vec![
                ok(json!({"runId": "r1"})),
                (429, vec![("retry-after", "7")], "{}".to_string()),
            ],
        );
        h.apply(PIPELINE_RUN, "public/run-2", spec()).await;
        let run = h.reconcile(PIPELINE_RUN, "public/run-2").await;
        assert_eq!(run.next, Next::RequeueAfter(Duration::from_secs(7)));
        let last = run.last().expect("status");
        assert_eq!(last.details["runId"], json!("r1"), "the run is known");
    });
}

#[test]
fn a_refused_create_run_ends_in_error_with_azures_code_in_the_details() {
    block_on(async {
        let (mut h, _script) = harness(
            "adf-flow-c",
            vec![status(
                404,
                r#"{"error": {"code": "PipelineNotFound", "message": "no pipeline Copy Pipeline"}}"#,
            )],
        );
        h.apply(PIPELINE_RUN, "public/run-3", spec()).await;
        let run = h.reconcile(PIPELINE_RUN, "public/run-3").await;
        assert_eq!(run.next, Next::AwaitChange, "settled by the operator");
        let last = run.last().expect("status");
        assert_eq!(last.status, ResourceStatus::Error);
        assert_eq!(last.details["error"]["code"], json!("PipelineNotFound"));
        assert!(last.details.contains_key("intent"), "the intent is kept");
    });
}

#[test]
fn deleting_a_run_never_started_finishes_at_once_without_calling_azure() {
    block_on(async {
        let (mut h, script) = harness("adf-flow-d", vec![]);
        h.apply(PIPELINE_RUN, "public/run-4", spec()).await;
        h.delete(PIPELINE_RUN, "public/run-4").await;
        let run = h.reconcile(PIPELINE_RUN, "public/run-4").await;
        assert_eq!(run.next, Next::Deleted);
        assert!(run.published_status(ResourceStatus::Deleted));
        assert!(calls(&script).is_empty());
        assert!(h.entity(PIPELINE_RUN, "public/run-4").await.is_none());
    });
}
