//! Finding the run a crashed reconcile started, pure: given a recorded [`Intent`] and the runs
//! queryPipelineRuns returned, [`choose_run`] picks the run createRun most likely started for
//! it, or none.
//!
//! A candidate is a run of the intent's pipeline, invoked manually (createRun), not already
//! known to the entity (its earlier runIds), whose parameters equal the ones sent (Azure reports
//! values as strings and may add the pipeline's defaults, so every sent parameter must match and
//! extra ones are allowed), and which started no earlier than `requestedAt − margin` (the margin
//! absorbs clock skew between this host and Azure).
//!
//! Of the candidates, the earliest that started at or after `requestedAt` is taken: createRun
//! was called after the intent was recorded, so with clocks in step that is the first run it
//! could be. Only when there is none (Azure's clock behind ours) is the latest candidate from
//! the margin before `requestedAt` taken — the one nearest to `requestedAt` — rather than the
//! earliest, which would more likely be an unrelated earlier run of the same pipeline.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::azure::model::PipelineRun;
use crate::details::Intent;

/// The run `intent` most likely started, among `runs`; never one of `known`.
pub fn choose_run<'a>(
    runs: &'a [PipelineRun],
    intent: &Intent,
    margin: Duration,
    known: &[String],
) -> Option<&'a PipelineRun> {
    let earliest = intent.requested_at - margin;
    let candidates: Vec<(DateTime<Utc>, &PipelineRun)> = runs
        .iter()
        .filter(|run| !known.contains(&run.run_id))
        .filter(|run| {
            run.pipeline_name
                .as_deref()
                .is_none_or(|name| name == intent.pipeline.pipeline_name)
        })
        .filter(|run| run.invoked_by.as_ref().is_some_and(|by| by.is_manual()))
        .filter(|run| {
            same_parameters(
                &intent.parameters,
                run.parameters.as_ref().unwrap_or(&Map::new()),
            )
        })
        .filter_map(|run| Some((run.started_at()?, run)))
        .filter(|(start, _)| *start >= earliest)
        .collect();
    let after = candidates
        .iter()
        .filter(|(start, _)| *start >= intent.requested_at)
        .min_by_key(|(start, run)| (*start, &run.run_id));
    let before = || {
        candidates
            .iter()
            .filter(|(start, _)| *start < intent.requested_at)
            .max_by_key(|(start, run)| (*start, std::cmp::Reverse(&run.run_id)))
    };
    after.or_else(before).map(|(_, run)| *run)
}

/// True when every parameter `sent` is in `reported` with the same value.
pub fn same_parameters(sent: &Map<String, Value>, reported: &Map<String, Value>) -> bool {
    sent.iter()
        .all(|(name, value)| reported.get(name).is_some_and(|r| same_value(value, r)))
}

/// True when Azure's `reported` value stands for the `sent` one: equal, or its string form.
fn same_value(sent: &Value, reported: &Value) -> bool {
    if sent == reported {
        return true;
    }
    match (sent, reported) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(b), Value::String(r)) => r.trim().eq_ignore_ascii_case(&b.to_string()),
        (Value::Number(a), Value::String(r)) => {
            r.trim().parse::<f64>().is_ok_and(|r| a.as_f64() == Some(r))
        }
        (Value::Null, Value::String(r)) => r.is_empty() || r == "null",
        (Value::String(_), _) => false,
        (structured, Value::String(r)) => {
            serde_json::from_str::<Value>(r).is_ok_and(|parsed| parsed == *structured)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::azure::model::parse_time;
    use crate::spec::PipelineRef;

    fn t(text: &str) -> DateTime<Utc> {
        parse_time(text).expect("time")
    }

    fn intent(parameters: Value) -> Intent {
        Intent {
            generation: 1,
            requested_at: t("2026-03-01T12:00:00Z"),
            pipeline: PipelineRef {
                resource_group_name: "rg".into(),
                factory_name: "f".into(),
                pipeline_name: "copy".into(),
            },
            parameters: match parameters {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        }
    }

    fn run(id: &str, start: &str, parameters: Value) -> PipelineRun {
        serde_json::from_value(json!({
            "runId": id,
            "pipelineName": "copy",
            "parameters": parameters,
            "invokedBy": {"name": "Manual", "id": "x", "invokedByType": "Manual"},
            "runStart": start,
            "status": "InProgress"
        }))
        .expect("a run")
    }

    fn margin() -> Duration {
        Duration::minutes(5)
    }

    #[test]
    fn the_first_run_started_after_the_intent_is_taken() {
        let runs = [
            run("earlier", "2026-03-01T11:58:00Z", json!({})),
            run("ours", "2026-03-01T12:00:00.300Z", json!({})),
            run("later", "2026-03-01T12:00:05Z", json!({})),
        ];
        let chosen = choose_run(&runs, &intent(json!({})), margin(), &[]);
        assert_eq!(chosen.map(|r| r.run_id.as_str()), Some("ours"));
    }

    #[test]
    fn with_azures_clock_behind_the_run_nearest_before_the_intent_is_taken() {
        let runs = [
            run("much-earlier", "2026-03-01T11:56:00Z", json!({})),
            run("ours", "2026-03-01T11:59:58Z", json!({})),
        ];
        let chosen = choose_run(&runs, &intent(json!({})), margin(), &[]);
        assert_eq!(chosen.map(|r| r.run_id.as_str()), Some("ours"));
    }

    #[test]
    fn runs_outside_the_margin_triggered_or_already_known_are_never_taken() {
        let mut triggered = run("triggered", "2026-03-01T12:00:01Z", json!({}));
        triggered.invoked_by =
            serde_json::from_value(json!({"name": "nightly", "invokedByType": "ScheduleTrigger"}))
                .ok();
        let runs = [
            run("too-early", "2026-03-01T11:54:59Z", json!({})),
            triggered,
            run("known", "2026-03-01T12:00:02Z", json!({})),
        ];
        let chosen = choose_run(&runs, &intent(json!({})), margin(), &["known".to_string()]);
        assert_eq!(chosen, None);
    }

    #[test]
    fn runs_with_other_parameters_or_of_another_pipeline_are_not_taken() {
        let mut other_pipeline = run(
            "other-pipeline",
            "2026-03-01T12:00:01Z",
            json!({"day": "1"}),
        );
        other_pipeline.pipeline_name = Some("load".into());
        let runs = [
            other_pipeline,
            run("other-day", "2026-03-01T12:00:02Z", json!({"day": "2"})),
            run(
                "ours",
                "2026-03-01T12:00:03Z",
                json!({"day": "1", "defaulted": "x"}),
            ),
        ];
        let chosen = choose_run(&runs, &intent(json!({"day": 1})), margin(), &[]);
        assert_eq!(chosen.map(|r| r.run_id.as_str()), Some("ours"));
    }

    #[test]
    fn an_empty_page_chooses_nothing() {
        assert_eq!(choose_run(&[], &intent(json!({})), margin(), &[]), None);
    }

    #[test]
    fn parameters_compare_with_the_strings_azure_reports() {
        let sent = json!({
            "s": "text", "n": 3, "f": 1.5, "b": true,
            "list": ["a.csv"], "obj": {"k": 1}, "nothing": null
        });
        let reported = json!({
            "s": "text", "n": "3", "f": "1.5", "b": "True",
            "list": "[\"a.csv\"]", "obj": "{\"k\":1}", "nothing": ""
        });
        let (Value::Object(sent), Value::Object(reported)) = (sent, reported) else {
            unreachable!("objects")
        };
        assert!(same_parameters(&sent, &reported));
        assert!(same_parameters(&sent, &sent));
        let mut changed = reported.clone();
        changed.insert("n".into(), json!("4"));
        assert!(!same_parameters(&sent, &changed));
        changed = reported.clone();
        changed.remove("s");
        assert!(!same_parameters(&sent, &changed));
        assert!(
            !same_value(&json!("3"), &json!(3)),
            "a string sent stays a string"
        );
    }
}
