//! Tests of the status details, the status mapping, the poll interval and republishing.

use chrono::TimeZone;
use operator_sdk::{Entity, EntityKey};
use serde_json::json;

use super::*;

fn request() -> ReconcileRequest {
    ReconcileRequest {
        entity: Entity {
            key: EntityKey::new("public", "pipeline-run-1").expect("valid key"),
            operator: "adf-operator".into(),
            resource_type: "pipeline-run".into(),
            generation: 2,
            spec: json!({"factoryName": "f", "pipelineName": "p", "resourceGroupName": "rg"}),
            deleting: false,
            last_command: uuid::Uuid::nil(),
            updated_at: Utc::now(),
        },
        status: None,
    }
}

fn run(status: &str, message: &str) -> PipelineRun {
    serde_json::from_value(json!({
        "runId": "run-1",
        "runGroupId": "run-1",
        "pipelineName": "p",
        "status": status,
        "message": message,
        "runStart": "2026-03-01T12:00:00.1234567Z",
        "lastUpdated": "2026-03-01T12:00:10Z",
        "durationInMs": 10_000
    }))
    .expect("a run")
}

fn intent() -> Intent {
    Intent {
        generation: 2,
        requested_at: Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("time"),
        pipeline: PipelineRef {
            resource_group_name: "rg".into(),
            factory_name: "f".into(),
            pipeline_name: "p".into(),
        },
        parameters: Map::new(),
    }
}

#[test]
fn azure_run_statuses_map_onto_runtime_statuses() {
    for (azure, runtime) in [
        ("Queued", RuntimeStatus::InProgress),
        ("InProgress", RuntimeStatus::InProgress),
        ("Succeeded", RuntimeStatus::Succeeded),
        ("Failed", RuntimeStatus::Failed),
        ("Canceling", RuntimeStatus::Cancelled),
        ("Cancelled", RuntimeStatus::Cancelled),
        ("SomethingNew", RuntimeStatus::InProgress),
    ] {
        assert_eq!(runtime_of(&RunStatus::parse(azure)), runtime, "{azure}");
        let status = run_status(&request(), &run(azure, ""), &RunDetails::default());
        assert_eq!(status.status, ResourceStatus::Active, "{azure}");
        assert_eq!(status.runtime, Some(runtime), "{azure}");
    }
}

#[test]
fn a_failed_run_carries_azures_message_as_the_status_message() {
    let failed = run(
        "Failed",
        "Operation on target Copy failed: ErrorCode=UserErrorFileNotFound",
    );
    let mut details = RunDetails::default();
    details.sync(&failed, None);
    let status = run_status(&request(), &failed, &details);
    assert_eq!(status.runtime, Some(RuntimeStatus::Failed));
    assert_eq!(
        status.message.as_deref(),
        Some("Operation on target Copy failed: ErrorCode=UserErrorFileNotFound")
    );
    let silent = run("Failed", "");
    let status = run_status(&request(), &silent, &RunDetails::default());
    assert_eq!(status.message.as_deref(), Some("pipeline run failed"));
    let succeeded = run("Succeeded", "");
    let status = run_status(&request(), &succeeded, &RunDetails::default());
    assert_eq!(status.message, None);
}

#[test]
fn the_poll_interval_starts_at_the_minimum_and_grows_with_age_up_to_the_maximum() {
    let (min, max) = (Duration::from_secs(2), Duration::from_secs(30));
    let at = |secs| poll_interval(Duration::from_secs(secs), min, max);
    assert_eq!(at(0), min);
    assert_eq!(at(30), min);
    assert_eq!(at(60), Duration::from_secs(5));
    assert_eq!(at(130), Duration::from_secs(12));
    assert_eq!(at(3_600), max);
    assert!((0..600).all(|s| at(s) <= at(s + 1)), "never shrinks");
    assert_eq!(poll_interval(Duration::from_secs(999), max, max), max);
}

#[test]
fn synced_details_carry_the_runs_metadata_and_its_activity_runs() {
    let activities: Vec<ActivityRun> = serde_json::from_value(json!([
        {"activityName": "Copy", "activityType": "Copy", "activityRunId": "a2",
         "status": "Failed", "durationInMs": 900,
         "activityRunStart": "2026-03-01T12:00:02Z", "activityRunEnd": "2026-03-01T12:00:03Z",
         "error": {"errorCode": "2200", "message": "file not found", "failureType": "UserError", "target": "Copy"}},
        {"activityName": "Lookup", "activityType": "Lookup", "activityRunId": "a1",
         "status": "Succeeded", "durationInMs": 300,
         "activityRunStart": "2026-03-01T12:00:01Z",
         "error": {"errorCode": "", "message": "", "failureType": "", "target": "Lookup"}}
    ]))
    .expect("activity runs");
    let mut details = RunDetails::default().for_new_run(intent());
    details.sync(&run("Failed", "failed"), Some(&activities));
    let map = details.to_map();
    assert_eq!(map["runId"], json!("run-1"));
    assert_eq!(map["runGroupId"], json!("run-1"));
    assert_eq!(map["status"], json!("Failed"));
    assert_eq!(map["message"], json!("failed"));
    assert_eq!(map["runStart"], json!("2026-03-01T12:00:00.1234567Z"));
    assert_eq!(map["durationInMs"], json!(10_000));
    assert_eq!(map["lastUpdated"], json!("2026-03-01T12:00:10Z"));
    assert_eq!(map["intent"]["generation"], json!(2));
    assert_eq!(map["intent"]["pipelineName"], json!("p"));
    assert_eq!(
        map["activityRuns"][0]["name"],
        json!("Lookup"),
        "ordered by start"
    );
    assert_eq!(
        map["activityRuns"][0].get("error"),
        None,
        "empty errors left out"
    );
    assert_eq!(map["activityRuns"][1]["type"], json!("Copy"));
    assert_eq!(map["activityRuns"][1]["error"]["errorCode"], json!("2200"));
    assert_eq!(map.get("runEnd"), None);

    let status = EntityStatus {
        details: map,
        ..request().new_status(ResourceStatus::Active)
    };
    let read = RunDetails::of_status(Some(&status)).expect("reads back");
    assert_eq!(read, details);
}

#[test]
fn a_new_run_remembers_the_earlier_run_ids_and_forgets_the_rest() {
    let mut details = RunDetails::default().for_new_run(intent());
    details.sync(&run("Succeeded", ""), None);
    details.error = None;
    let next = details.for_new_run(Intent {
        generation: 3,
        ..intent()
    });
    assert_eq!(next.previous_run_ids, vec!["run-1".to_string()]);
    assert_eq!(next.run_id, None);
    assert_eq!(next.status, None);
    assert_eq!(next.intent.map(|i| i.generation), Some(3));
    assert_eq!(
        RunDetails::of_status(None).expect("none"),
        RunDetails::default()
    );
}

#[test]
fn an_unchanged_status_is_republished_only_to_refresh_last_synced_at() {
    let refresh = Duration::from_secs(60);
    let t0 = Utc
        .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("time");
    let mut details = RunDetails::default().for_new_run(intent());
    details.sync(&run("InProgress", ""), None);
    let mut last = request();
    let status = || run_status(&request(), &run("InProgress", ""), &details);

    let first = to_publish(&last, status(), t0, refresh).expect("first sync published");
    assert_eq!(
        first.details["lastSyncedAt"],
        json!("2026-03-01T12:00:00.000Z")
    );
    last.status = Some(first.clone());

    let soon = t0 + chrono::Duration::seconds(10);
    assert_eq!(to_publish(&last, status(), soon, refresh), None);

    let later = t0 + chrono::Duration::seconds(61);
    let refreshed = to_publish(&last, status(), later, refresh).expect("refreshed");
    assert_eq!(
        refreshed.details["lastSyncedAt"],
        json!("2026-03-01T12:01:01.000Z")
    );

    let mut changed_details = details.clone();
    changed_details.sync(&run("Succeeded", ""), None);
    let changed = run_status(&last, &run("Succeeded", ""), &changed_details);
    let published = to_publish(&last, changed, soon, refresh).expect("a change is published");
    assert_eq!(published.runtime, Some(RuntimeStatus::Succeeded));
    assert_eq!(
        published.details["lastSyncedAt"],
        json!("2026-03-01T12:00:10.000Z")
    );
}

#[test]
fn the_intent_status_is_pending_and_carries_the_intent() {
    let details = RunDetails::default().for_new_run(intent());
    let status = pending_status(&request(), &details);
    assert_eq!(status.status, ResourceStatus::Active);
    assert_eq!(status.runtime, Some(RuntimeStatus::Pending));
    assert_eq!(status.observed_generation, 2);
    assert_eq!(
        status.details["intent"]["requestedAt"],
        json!("2026-03-01T12:00:00Z")
    );
    assert_eq!(status.details.get("runId"), None);
}

#[test]
fn a_failed_run_names_its_failing_activities_and_their_errors_first() {
    let failed = run("Failed", "Operation on target Copy failed: file not found");
    let activities: Vec<ActivityRun> = serde_json::from_value(json!([
        {"activityName": "Lookup", "activityType": "Lookup", "status": "Succeeded",
         "activityRunStart": "2026-03-01T12:00:01Z",
         "error": {"errorCode": "", "message": "", "failureType": "", "target": "Lookup"}},
        {"activityName": "Copy", "activityType": "Copy", "status": "Failed",
         "activityRunStart": "2026-03-01T12:00:02Z",
         "error": {"errorCode": "2200", "message": "file not found", "failureType": "UserError", "target": "Copy"}}
    ]))
    .expect("activities");
    let mut details = RunDetails::default();
    details.sync(&failed, Some(&activities));
    let status = run_status(&request(), &failed, &details);
    assert_eq!(
        status.message.as_deref(),
        Some("failed activities: Copy: 2200: file not found; pipeline: Operation on target Copy failed: file not found")
    );
    details.message = None;
    assert_eq!(
        failure_message(&details),
        "failed activities: Copy: 2200: file not found"
    );
}

#[test]
fn the_monitoring_link_points_at_the_run_on_adf_studio() {
    let url = monitoring_url("sub-1", &intent().pipeline, "run-1");
    assert_eq!(
        url,
        "https://adf.azure.com/monitoring/pipelineruns/run-1?factory=/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.DataFactory/factories/f"
    );
}

#[test]
fn a_run_cancelled_for_its_timeout_fails_saying_so_unless_it_ended_on_its_own() {
    let mut details = RunDetails::default();
    details.sync(&run("InProgress", ""), None);
    details.timed_out_after = Some("30m".into());
    for azure in ["InProgress", "Canceling", "Cancelled"] {
        let status = run_status(&request(), &run(azure, ""), &details);
        assert_eq!(status.runtime, Some(RuntimeStatus::Failed), "{azure}");
        assert_eq!(
            status.message.as_deref(),
            Some("timed out after 30m (spec.timeout): the run was cancelled")
        );
        assert_eq!(status.details["timedOutAfter"], json!("30m"));
    }
    let status = run_status(&request(), &run("Succeeded", ""), &details);
    assert_eq!(status.runtime, Some(RuntimeStatus::Succeeded));
}
