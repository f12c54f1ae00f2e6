//! Unit tests of query parsing, filtering, ordering and paging.

use serde_json::{json, Map};

use super::*;
use crate::clock::millis;
use crate::run::RunStatus;

fn at(ms: u64) -> DateTime<Utc> {
    parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default() + millis(ms)
}

fn view(pipeline: &str, status: RunStatus, start_ms: u64, end_ms: Option<u64>) -> RunView {
    let id = Uuid::new_v4();
    RunView {
        run_id: id,
        run_group_id: id,
        is_latest: true,
        pipeline_name: pipeline.to_owned(),
        parameters: Map::new(),
        last_updated: at(end_ms.unwrap_or(start_ms)),
        run_start: at(start_ms),
        run_end: end_ms.map(at),
        status,
        message: String::new(),
    }
}

fn query(body: serde_json::Value) -> Result<Query, QueryError> {
    parse(QueryKind::PipelineRuns, body.to_string().as_bytes())
}

fn window(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "lastUpdatedAfter": "2026-11-26T00:00:00Z",
        "lastUpdatedBefore": "2026-11-27T00:00:00Z",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn names_of(page: &Page<RunView>) -> Vec<&str> {
    page.rows
        .iter()
        .map(|row| row.pipeline_name.as_str())
        .collect()
}

#[test]
fn the_time_window_is_required_and_must_be_a_date() {
    assert!(parse(QueryKind::PipelineRuns, b"").is_err());
    assert!(query(json!({"lastUpdatedAfter": "2026-11-26T00:00:00Z"})).is_err());
    assert!(query(json!({"lastUpdatedAfter": "soon", "lastUpdatedBefore": "later"})).is_err());
    assert!(query(window(json!({}))).is_ok());
}

#[test]
fn only_runs_updated_inside_the_window_are_selected() {
    let rows = vec![
        view("early", RunStatus::Succeeded, 0, Some(1000)),
        view("inside", RunStatus::Succeeded, 0, Some(5000)),
        view("late", RunStatus::InProgress, 9000, None),
    ];
    let query = query(json!({
        "lastUpdatedAfter": "2026-11-26T10:00:02Z",
        "lastUpdatedBefore": "2026-11-26T10:00:05Z",
    }));
    assert!(query.is_ok());
    if let Ok(query) = query {
        assert_eq!(names_of(&select(rows, &query)), ["inside"]);
    }
}

#[test]
fn text_filters_match_case_insensitively_and_negate() {
    let rows = || {
        vec![
            view("load", RunStatus::Succeeded, 0, Some(10)),
            view("export", RunStatus::Failed, 1, Some(10)),
            view("Load", RunStatus::InProgress, 2, None),
        ]
    };
    let by_name = query(window(json!({"filters": [
        {"operand": "PipelineName", "operator": "Equals", "values": ["LOAD"]}
    ]})));
    let not_in = query(window(json!({"filters": [
        {"operand": "status", "operator": "NotIn", "values": ["Succeeded", "InProgress"]}
    ]})));
    assert!(by_name.is_ok() && not_in.is_ok());
    if let (Ok(by_name), Ok(not_in)) = (by_name, not_in) {
        assert_eq!(names_of(&select(rows(), &by_name)), ["load", "Load"]);
        assert_eq!(names_of(&select(rows(), &not_in)), ["export"]);
    }
}

#[test]
fn time_filters_compare_and_a_missing_end_matches_nothing() {
    let rows = || {
        vec![
            view("a", RunStatus::Succeeded, 0, Some(1000)),
            view("b", RunStatus::Succeeded, 2000, Some(3000)),
            view("c", RunStatus::InProgress, 4000, None),
        ]
    };
    let started_after = query(window(json!({"filters": [
        {"operand": "RunStart", "operator": "GreaterThanOrEquals",
         "values": ["2026-11-26T10:00:02Z"]}
    ]})));
    let ended_before = query(window(json!({"filters": [
        {"operand": "RunEnd", "operator": "LessThan", "values": ["2026-11-26T11:00:00Z"]}
    ]})));
    let not_ended_at = query(window(json!({"filters": [
        {"operand": "RunEnd", "operator": "NotEquals", "values": ["2026-11-26T10:00:01Z"]}
    ]})));
    assert!(started_after.is_ok() && ended_before.is_ok() && not_ended_at.is_ok());
    if let (Ok(started_after), Ok(ended_before), Ok(not_ended_at)) =
        (started_after, ended_before, not_ended_at)
    {
        assert_eq!(names_of(&select(rows(), &started_after)), ["b", "c"]);
        assert_eq!(names_of(&select(rows(), &ended_before)), ["a", "b"]);
        assert_eq!(names_of(&select(rows(), &not_ended_at)), ["b"]);
    }
}

#[test]
fn a_run_group_filter_matches_the_id_in_any_case() {
    let rows = vec![
        view("a", RunStatus::Succeeded, 0, Some(10)),
        view("b", RunStatus::Succeeded, 1, Some(10)),
    ];
    let group = rows[1].run_group_id.to_string().to_uppercase();
    let query = query(window(json!({"filters": [
        {"operand": "RunGroupId", "operator": "In", "values": [group]}
    ]})));
    assert!(query.is_ok());
    if let Ok(query) = query {
        assert_eq!(names_of(&select(rows, &query)), ["b"]);
    }
}

#[test]
fn filters_that_cannot_work_are_refused() {
    let refused = [
        json!({"operand": "TriggerName", "operator": "Equals", "values": ["t"]}),
        json!({"operand": "ActivityName", "operator": "Equals", "values": ["t"]}),
        json!({"operand": "PipelineName", "operator": "Like", "values": ["t"]}),
        json!({"operand": "PipelineName", "operator": "GreaterThan", "values": ["t"]}),
        json!({"operand": "PipelineName", "operator": "Equals", "values": ["a", "b"]}),
        json!({"operand": "Status", "operator": "In", "values": []}),
        json!({"operand": "RunStart", "operator": "Equals", "values": ["noon"]}),
    ];
    for filter in refused {
        assert!(
            query(window(json!({ "filters": [filter.clone()] }))).is_err(),
            "{filter} was accepted"
        );
    }
    assert!(query(window(
        json!({"orderBy": [{"orderBy": "RunStart", "order": "UP"}]})
    ))
    .is_err());
    assert!(query(window(
        json!({"orderBy": [{"orderBy": "RunGroupId", "order": "ASC"}]})
    ))
    .is_err());
    assert!(query(window(json!({"continuationToken": "elsewhere"}))).is_err());
}

#[test]
fn runs_are_ordered_by_each_key_in_turn() {
    let rows = || {
        vec![
            view("b", RunStatus::Succeeded, 0, Some(10)),
            view("a", RunStatus::Failed, 1, Some(10)),
            view("b", RunStatus::Failed, 2, Some(10)),
        ]
    };
    let default = query(window(json!({})));
    let by_name_then_newest = query(window(json!({"orderBy": [
        {"orderBy": "PipelineName", "order": "ASC"},
        {"orderBy": "RunStart", "order": "DESC"}
    ]})));
    assert!(default.is_ok() && by_name_then_newest.is_ok());
    if let (Ok(default), Ok(by_name_then_newest)) = (default, by_name_then_newest) {
        let starts = |page: Page<RunView>| -> Vec<DateTime<Utc>> {
            page.rows.iter().map(|row| row.run_start).collect()
        };
        assert_eq!(starts(select(rows(), &default)), [at(0), at(1), at(2)]);
        assert_eq!(
            starts(select(rows(), &by_name_then_newest)),
            [at(1), at(2), at(0)]
        );
    }
}

#[test]
fn pages_hold_a_hundred_runs_and_chain_by_continuation_token() {
    let rows = || -> Vec<RunView> {
        (0..250)
            .map(|ms| view("p", RunStatus::Succeeded, ms, Some(1000)))
            .collect()
    };
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..3 {
        let parsed = query(window(json!({ "continuationToken": token })));
        assert!(parsed.is_ok());
        let Ok(parsed) = parsed else { return };
        let page = select(rows(), &parsed);
        seen.extend(page.rows.iter().map(|row| row.run_start));
        token = page.continuation_token;
    }
    assert_eq!(token, None);
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
}
