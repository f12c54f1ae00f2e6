//! `opctl get -d`: one record for people — identity and state first, the spec, then the
//! details its component syncs from the platform, with lists of runs as small tables.

use serde_json::{Map, Value};

use crate::table;

/// Columns shown for a list of platform objects (activity runs, jobs, …), in this order,
/// when the objects have them.
const LIST_COLUMNS: [(&str, &str); 9] = [
    ("name", "NAME"),
    ("type", "TYPE"),
    ("status", "STATUS"),
    ("term", "TERM"),
    ("since", "SINCE"),
    ("lastHeartbeat", "LAST HEARTBEAT"),
    ("durationInMs", "DURATION"),
    ("message", "MESSAGE"),
    ("error", "ERROR"),
];

/// Renders a record answer (`GET …?details=true`) as readable text.
pub fn render(record: &Value) -> String {
    let mut out = String::new();
    let entity_status = record.get("entityStatus").filter(|v| !v.is_null());
    let observed = entity_status
        .and_then(|s| s.get("observedGeneration"))
        .and_then(Value::as_u64);
    let is_resource = record.get("type").and_then(Value::as_str) == Some("resource");
    let generation = match (record.get("generation").and_then(Value::as_u64), observed) {
        (Some(g), Some(o)) => format!("{g} (observed by its component: {o})"),
        (Some(g), None) if is_resource => format!("{g} (not yet seen by a component)"),
        (Some(g), None) => g.to_string(),
        _ => String::new(),
    };
    let manifest = record.get("manifest").cloned().unwrap_or(Value::Null);
    let operator = manifest
        .pointer("/resource/operator")
        .and_then(Value::as_str);
    let resource_type = manifest.pointer("/resource/type").and_then(Value::as_str);
    let managed_by = match (operator, resource_type) {
        (Some(op), Some(t)) => format!("operator {op}, type {t}"),
        _ => String::new(),
    };
    let fields = [
        ("Name", text(record, "name")),
        ("Type", text(record, "type")),
        ("Managed by", managed_by),
        ("Version", text(record, "version")),
        ("Workspace", text(record, "workspace")),
        ("Owner", text(record, "owner")),
        ("Status", text(record, "status")),
        ("Runtime", text(record, "runtime")),
        ("Message", text(record, "message")),
        ("Generation", generation),
        ("Updated", text(record, "updatedAt")),
    ];
    aligned(
        &mut out,
        "",
        fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.clone())),
    );

    if let Some(conditions) = record
        .get("conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        out.push_str("\nConditions:\n");
        out.push_str(&conditions_table(conditions));
    }
    if let Some(spec) = manifest
        .pointer("/resource/spec")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
    {
        out.push_str("\nSpec:\n");
        object(&mut out, "  ", spec);
    }
    if let Some(data) = manifest.pointer("/secret/data").and_then(Value::as_object) {
        out.push_str("\nKeys (values are never shown):\n");
        for key in data.keys() {
            out.push_str(&format!("  {key}\n"));
        }
    }

    // The live answer when the component gave one, else what it last reported.
    let live = record
        .pointer("/details/status/details")
        .filter(|d| is_non_empty_object(d));
    let stored = entity_status
        .and_then(|s| s.get("details"))
        .filter(|d| is_non_empty_object(d));
    let operator_wiring = record
        .get("details")
        .filter(|d| d.get("resourceTypes").is_some());
    match (live, stored, operator_wiring) {
        (_, _, Some(wiring)) => {
            out.push_str("\nNATS wiring (environment for a component run by hand):\n");
            object(
                &mut out,
                "  ",
                wiring.get("resourceTypes").unwrap_or(&Value::Null),
            );
        }
        (Some(details), _, _) => {
            out.push_str("\nDetails (live from the component):\n");
            object(&mut out, "  ", details);
        }
        (None, Some(details), _) => {
            out.push_str("\nDetails (as last reported by the component):\n");
            object(&mut out, "  ", details);
        }
        (None, None, None) => {}
    }
    if let Some(components) = record.pointer("/details/components") {
        components_section(&mut out, components);
    }
    if let Some(published) = record
        .pointer("/details/operatorDetails")
        .and_then(Value::as_object)
    {
        for (component, details) in published {
            out.push_str(&format!(
                "\nOperator details (published by the leader of {component}):\n"
            ));
            object(&mut out, "  ", details);
        }
    }
    if let Some(election) = record.pointer("/details/election") {
        out.push_str("\nLeader election (by component):\n");
        object(&mut out, "  ", election);
    }
    if let Some(streams) = record.pointer("/details/streams").and_then(Value::as_array) {
        out.push_str("\nStreams (JetStream: replicas and the node leading each):\n");
        out.push_str(&streams_table(streams));
    }
    if let Some(reason) = record.get("detailsError").and_then(Value::as_str) {
        out.push_str(&format!("\nLive details unavailable: {reason}\n"));
    }
    out
}

/// The operator's streams as a table: NAME, REPLICAS, LEADER, CURRENT FOLLOWERS, MESSAGES,
/// and ERROR for a stream that could not be read.
fn streams_table(streams: &[Value]) -> String {
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|s| {
            [
                "name",
                "replicas",
                "leader",
                "followersCurrent",
                "messages",
                "error",
            ]
            .iter()
            .map(|key| s.get(*key).map(scalar).unwrap_or_default())
            .collect()
        })
        .collect();
    table::render(
        &[
            "NAME",
            "REPLICAS",
            "LEADER",
            "CURRENT FOLLOWERS",
            "MESSAGES",
            "ERROR",
        ],
        &rows,
    )
}

/// The conditions as a table: TYPE, STATUS, REASON, SINCE (lastTransitionTime), MESSAGE.
fn conditions_table(conditions: &[Value]) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            ["type", "status", "reason", "lastTransitionTime", "message"]
                .iter()
                .map(|k| {
                    c.get(*k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .collect();
    crate::table::render(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &rows)
}

/// The columns of an operator's replica table.
const REPLICA_COLUMNS: [&str; 7] = [
    "COMPONENT",
    "REPLICA",
    "STATE",
    "ID",
    "RESTARTS",
    "EXIT",
    "MESSAGE",
];

/// What the orchestrator runs of an operator: each component's replicas and their state.
fn components_section(out: &mut String, components: &Value) {
    let runtime = components["runtime"].as_str().unwrap_or_default();
    out.push_str(&format!("\nComponents (runtime: {runtime}):\n"));
    for desired in components["desired"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: {} replica(s) of {}\n",
            scalar(&desired["component"]),
            scalar(&desired["replicas"]),
            scalar(&desired["image"])
        ));
    }
    if let Some(message) = components["message"].as_str() {
        out.push_str(&format!("  {message}\n"));
    }
    let replicas = components["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if replicas.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| {
            let state = match (r["state"].as_str(), r["restartInSeconds"].as_u64()) {
                (Some("restarting"), Some(s)) => format!("restarting in {s}s"),
                (state, _) => state.unwrap_or_default().to_string(),
            };
            vec![
                scalar(&r["component"]),
                scalar(&r["replica"]),
                state,
                scalar(&r["id"]),
                scalar(&r["restarts"]),
                scalar(&r["exitCode"]),
                scalar(&r["message"]),
            ]
        })
        .collect();
    for line in table::render(&REPLICA_COLUMNS, &rows).lines() {
        out.push_str(&format!("{line}\n"));
    }
}

fn is_non_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(|o| !o.is_empty())
}

fn text(record: &Value, key: &str) -> String {
    record.get(key).map(scalar).unwrap_or_default()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key: value` lines with the values in one column.
fn aligned(
    out: &mut String,
    indent: &str,
    fields: impl Iterator<Item = (impl AsRef<str>, String)>,
) {
    let fields: Vec<(String, String)> = fields
        .map(|(k, v)| (format!("{}:", k.as_ref()), v))
        .collect();
    let width = fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in fields {
        out.push_str(&format!("{indent}{key:<width$} {value}\n").replace(" \n", "\n"));
    }
}

/// An object: scalars aligned first, then nested objects indented, then lists.
fn object(out: &mut String, indent: &str, value: &Value) {
    let Some(map) = value.as_object() else {
        out.push_str(&format!("{indent}{}\n", scalar(value)));
        return;
    };
    aligned(
        out,
        indent,
        map.iter()
            .filter(|(_, v)| !v.is_object() && !v.is_array())
            .map(|(k, v)| (k, scalar(v))),
    );
    let deeper = format!("{indent}  ");
    for (key, nested) in map.iter().filter(|(_, v)| v.is_object()) {
        if is_non_empty_object(nested) {
            out.push_str(&format!("{indent}{key}:\n"));
            object(out, &deeper, nested);
        } else {
            out.push_str(&format!("{indent}{key}: none\n"));
        }
    }
    for (key, items) in map.iter().filter_map(|(k, v)| v.as_array().map(|a| (k, a))) {
        out.push_str(&format!("{indent}{key}:"));
        list(out, &deeper, items);
    }
}

/// A list: objects as a table of their best-known columns, anything else one per line.
fn list(out: &mut String, indent: &str, items: &[Value]) {
    if items.is_empty() {
        out.push_str(" none\n");
        return;
    }
    out.push('\n');
    let objects: Vec<&Map<String, Value>> = items.iter().filter_map(Value::as_object).collect();
    let known: Vec<(String, String)> = LIST_COLUMNS
        .iter()
        .filter(|(key, _)| {
            objects
                .iter()
                .any(|o| o.get(*key).is_some_and(|v| !v.is_null()))
        })
        .map(|(key, header)| (key.to_string(), header.to_string()))
        .collect();
    // Objects none of whose keys is a known column: every key, in the order first seen (JSON
    // objects here keep their keys sorted).
    let columns = if known.is_empty() {
        let mut keys: Vec<String> = Vec::new();
        for key in objects.iter().flat_map(|o| o.keys()) {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys.into_iter()
            .map(|key| {
                let header = header_of(&key);
                (key, header)
            })
            .collect()
    } else {
        known
    };
    if objects.len() != items.len() || columns.is_empty() {
        for item in items {
            out.push_str(&format!("{indent}- {}\n", scalar(item)));
        }
        return;
    }
    let headers: Vec<&str> = columns.iter().map(|(_, h)| h.as_str()).collect();
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            columns
                .iter()
                .map(|(key, _)| cell(key, o.get(key)))
                .collect()
        })
        .collect();
    for line in table::render(&headers, &rows).lines() {
        out.push_str(&format!(
            "{indent}{}\n",
            line.strip_prefix("  ").unwrap_or(line)
        ));
    }
}

/// A column header from a camelCase key: `usedLastMinute` → `USED LAST MINUTE`.
fn header_of(key: &str) -> String {
    let mut header = String::new();
    for c in key.chars() {
        if c.is_uppercase() && !header.is_empty() {
            header.push(' ');
        }
        header.extend(c.to_uppercase());
    }
    header
}

fn cell(key: &str, value: Option<&Value>) -> String {
    match (key, value) {
        (_, None | Some(Value::Null)) => String::new(),
        ("durationInMs", Some(v)) => v
            .as_f64()
            .map(|ms| format!("{:.1}s", ms / 1000.0))
            .unwrap_or_default(),
        ("error", Some(Value::Object(e))) => {
            let code = e
                .get("errorCode")
                .or_else(|| e.get("code"))
                .map(scalar)
                .unwrap_or_default();
            let message = e.get("message").map(scalar).unwrap_or_default();
            if code.is_empty() && message.is_empty() {
                String::new()
            } else {
                format!("{code}: {message}")
            }
        }
        (_, Some(v)) => scalar(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_details_show_per_component_with_unknown_objects_as_a_table_of_their_keys() {
        let record = serde_json::json!({"name": "adf-operator", "type": "operator",
            "details": {"operatorDetails": {"adf-controller": {"monitoringBudget": [
                {"factory": "rg.f1", "usedLastMinute": 12, "budgetPerMinute": 600, "pausedUntil": null},
                {"factory": "rg.f2", "usedLastMinute": 0, "budgetPerMinute": 600,
                 "pausedUntil": "2026-01-01T00:00:30Z"}]}}}});
        let text = render(&record);
        assert!(
            text.contains("Operator details (published by the leader of adf-controller):"),
            "{text}"
        );
        assert!(
            text.contains("BUDGET PER MINUTE | FACTORY |     PAUSED UNTIL     | USED LAST MINUTE"),
            "{text}"
        );
        assert!(
            text.contains("600               | rg.f2   | 2026-01-01T00:00:30Z | 0"),
            "{text}"
        );
    }

    #[test]
    fn conditions_show_as_a_table_with_their_reason_and_message() {
        let record = serde_json::json!({"name": "r", "type": "resource", "conditions": [
            {"type": "Succeeded", "status": "False", "reason": "JobFailed",
             "message": "disk full", "lastTransitionTime": "2026-01-01T00:00:00Z",
             "observedGeneration": 1}]});
        let text = render(&record);
        assert!(text.contains("\nConditions:\n"), "{text}");
        assert!(
            text.contains("Succeeded | False  | JobFailed | 2026-01-01T00:00:00Z | disk full"),
            "{text}"
        );
    }
    use serde_json::json;

    fn run_record(details: Value) -> Value {
        json!({
            "name": "pipeline-run-1", "type": "resource", "version": "v1alpha", "workspace": "public",
            "owner": "iamgroot", "status": "active", "runtime": "failed", "generation": 2,
            "message": "Operation on target Copy data failed",
            "manifest": {"resource": {"operator": "adf-operator", "type": "pipeline-run",
                                      "spec": {"factoryName": "f1", "pipelineName": "p1"}}},
            "entityStatus": {"observedGeneration": 2, "details": {"runId": "stored-run"}},
            "details": {"status": {"details": details}},
            "detailsError": null
        })
    }

    #[test]
    fn a_run_shows_its_state_spec_and_live_details_with_activity_runs_as_a_table() {
        let text = render(&run_record(json!({
            "runId": "r-1", "status": "Failed",
            "activityRuns": [{"name": "Copy data", "type": "Copy", "status": "Failed", "durationInMs": 1500,
                              "error": {"errorCode": "2200", "message": "boom"}}]
        })));
        assert!(text.contains("Runtime:    failed"), "{text}");
        assert!(
            text.contains("Generation: 2 (observed by its component: 2)"),
            "{text}"
        );
        assert!(
            text.contains("Managed by: operator adf-operator, type pipeline-run"),
            "{text}"
        );
        assert!(text.contains("factoryName:  f1"), "{text}");
        assert!(
            text.contains("Details (live from the component):"),
            "{text}"
        );
        assert!(text.contains("runId:  r-1"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("Copy data |"))
            .expect("an activity row");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells, ["Copy data", "Copy", "Failed", "1.5s", "2200: boom"]);
    }

    #[test]
    fn without_a_live_answer_the_last_reported_details_are_shown_with_the_reason() {
        let mut record = run_record(Value::Null);
        record["details"] = Value::Null;
        record["detailsError"] = json!("no component is listening on x.query");
        let text = render(&record);
        assert!(
            text.contains("Details (as last reported by the component):"),
            "{text}"
        );
        assert!(text.contains("stored-run"), "{text}");
        assert!(
            text.contains("Live details unavailable: no component is listening on x.query"),
            "{text}"
        );
    }

    #[test]
    fn an_operator_shows_each_stream_with_its_replicas_and_leader() {
        let record = json!({"name": "demo", "type": "operator",
        "details": {"resourceTypes": {}, "streams": [
            {"name": "operator-demo", "replicas": 3, "leader": "n2", "followersCurrent": 2,
             "messages": 0},
            {"name": "KV_entities-demo", "error": "stream not found"}
        ]}});
        let text = render(&record);
        assert!(text.contains("Streams (JetStream"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("operator-demo"))
            .expect("a row for the command stream");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells, ["operator-demo", "3", "n2", "2", "0", ""], "{text}");
        assert!(text.contains("stream not found"), "{text}");
    }

    #[test]
    fn an_operator_shows_each_replica_with_its_state_and_last_exit() {
        let record = json!({"name": "adf-operator", "type": "operator",
        "details": {"resourceTypes": {}, "components": {
            "runtime": "docker",
            "desired": [{"component": "adf-controller", "replicas": 2, "image": "adf-operator:latest"}],
            "replicas": [
                {"component": "adf-controller", "replica": 0, "state": "running",
                 "id": "opr-adf-operator-adf-controller-0", "restarts": 0},
                {"component": "adf-controller", "replica": 1, "state": "restarting",
                 "restartInSeconds": 4, "restarts": 2, "exitCode": 137,
                 "message": "exited with code 137"}
            ]}}});
        let text = render(&record);
        assert!(text.contains("Components (runtime: docker):"), "{text}");
        assert!(
            text.contains("adf-controller: 2 replica(s) of adf-operator:latest"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("restarting"))
            .expect("a row for the restarting replica");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells,
            [
                "adf-controller",
                "1",
                "restarting in 4s",
                "",
                "2",
                "137",
                "exited with code 137"
            ]
        );
    }

    #[test]
    fn a_secret_shows_its_keys_only() {
        let record = json!({"name": "s", "type": "secret",
            "manifest": {"secret": {"data": {"AZURE_CLIENT_SECRET": "********"}}}});
        let text = render(&record);
        assert!(text.contains("AZURE_CLIENT_SECRET"), "{text}");
        assert!(!text.contains("********"), "{text}");
    }
}
