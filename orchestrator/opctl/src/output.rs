//! What `get` prints on standard output: a table of record summaries, or the server's JSON as
//! it came (pretty), or that JSON as YAML.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::args::OutputFormat;
use crate::table;

/// The columns of every `get` table: the seed's, then how long ago the entity was applied.
const HEADERS: [&str; 8] = [
    "NAME",
    "VERSION",
    "TYPE",
    "WORKSPACE",
    "STATUS",
    "RUNTIME",
    "OWNER",
    "AGE",
];

/// The fields of a record that a table shows; the rest of the record is ignored here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RecordSummary {
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub workspace: Option<String>,
    pub status: Option<String>,
    pub runtime: Option<String>,
    pub owner: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl RecordSummary {
    fn cells(&self) -> Vec<String> {
        let optional = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            self.name.clone(),
            self.version.clone(),
            self.kind.clone(),
            optional(&self.workspace),
            optional(&self.status),
            optional(&self.runtime),
            optional(&self.owner),
            self.created_at
                .map(|t| age(chrono::Utc::now() - t))
                .unwrap_or_default(),
        ]
    }

    /// `TYPE/NAME`, or `TYPE/WORKSPACE/NAME` for what lives in a workspace (`-o name`).
    pub fn qualified_name(&self) -> String {
        match &self.workspace {
            Some(ws) => format!("{}/{ws}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// An age as kubectl prints it: the largest unit, `45s`, `12m`, `3h`, `9d`.
pub fn age(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// One `TYPE/[WORKSPACE/]NAME` a line.
pub fn names_text(records: &[RecordSummary]) -> String {
    records.iter().map(|r| r.qualified_name() + "\n").collect()
}

/// The records of a list answer (`{"items": [...]}`), sorted by workspace then name.
pub fn list_items(answer: &Value) -> Result<Vec<RecordSummary>> {
    let items = answer
        .get("items")
        .cloned()
        .context("the orchestrator's list answer has no `items`")?;
    let mut records: Vec<RecordSummary> = serde_json::from_value(items)
        .context("the orchestrator's list answer has malformed items")?;
    records.sort_by(|a, b| (&a.workspace, &a.name).cmp(&(&b.workspace, &b.name)));
    Ok(records)
}

/// One record answer as a summary.
pub fn single_item(answer: &Value) -> Result<RecordSummary> {
    serde_json::from_value(answer.clone()).context("the orchestrator's record answer is malformed")
}

/// The table of these records, preceded by a blank line as `dataos-ctl` prints it.
pub fn table_text(records: &[RecordSummary]) -> String {
    let rows: Vec<Vec<String>> = records.iter().map(RecordSummary::cells).collect();
    format!("\n{}", table::render(&HEADERS, &rows))
}

/// A table printed a page at a time as records arrive: the columns are as wide as the first
/// page needs and widen, never narrow, for a later page with a longer cell.
#[derive(Default)]
pub struct TablePages {
    widths: Vec<usize>,
}

impl TablePages {
    /// The text of the next page: the blank line and header before the first, then its rows.
    pub fn page(&mut self, records: &[RecordSummary]) -> String {
        let rows: Vec<Vec<String>> = records.iter().map(RecordSummary::cells).collect();
        let needed = table::widths(&HEADERS, &rows);
        if self.widths.is_empty() {
            self.widths = needed;
            return format!(
                "\n{}{}",
                table::header_line(&HEADERS, &self.widths),
                table::row_lines(&self.widths, &rows)
            );
        }
        for (width, need) in self.widths.iter_mut().zip(needed) {
            *width = (*width).max(need);
        }
        table::row_lines(&self.widths, &rows)
    }
}

/// One record of a streamed list in a machine-readable format, written so that the pieces
/// joined read as [`document_text`] of the whole `{"items": [...]}`; `first` for the first.
pub fn list_item_text(record: &Value, format: OutputFormat, first: bool) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            let pretty = serde_json::to_string_pretty(record)?;
            let indented: Vec<String> = pretty.lines().map(|l| format!("    {l}")).collect();
            let opening = if first { "{\n  \"items\": [\n" } else { ",\n" };
            format!("{opening}{}", indented.join("\n"))
        }
        OutputFormat::Yaml | OutputFormat::Table | OutputFormat::Name => {
            let one = serde_json::json!({ "items": [record] });
            let text = document_text(&one, OutputFormat::Yaml)?;
            match first {
                true => text,
                // Every piece but the first leaves out the `items:` line.
                false => text
                    .split_once('\n')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default(),
            }
        }
    })
}

/// What ends a streamed list in a machine-readable format; `empty` when no record came.
pub fn list_end_text(format: OutputFormat, empty: bool) -> String {
    match (format, empty) {
        (OutputFormat::Json, true) => "{\n  \"items\": []\n}\n".into(),
        (OutputFormat::Json, false) => "\n  ]\n}\n".into(),
        (_, true) => "items: []\n".into(),
        (_, false) => String::new(),
    }
}

/// One record as a row of the `get` table, without the header (a change under `--watch`).
pub fn row_text(record: &RecordSummary) -> String {
    let text = table::render(&HEADERS, &[record.cells()]);
    text.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

/// The server's JSON in the machine-readable format asked for.
pub fn document_text(answer: &Value, format: OutputFormat) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(answer)? + "\n",
        OutputFormat::Yaml | OutputFormat::Table | OutputFormat::Name => {
            let readable = in_reading_order(answer).context("cannot write the answer as YAML")?;
            serde_norway::to_string(&readable).context("cannot write the answer as YAML")?
        }
    })
}

/// The order a record's attributes are printed in as YAML: identity and state first, the
/// live details next, the manifest as applied last; attributes not named here follow.
const RECORD_KEY_ORDER: [&str; 14] = [
    "name",
    "version",
    "type",
    "workspace",
    "owner",
    "status",
    "runtime",
    "generation",
    "updatedAt",
    "message",
    "details",
    "detailsError",
    "entityStatus",
    "manifest",
];

/// The answer as a YAML value with each record's attributes in [`RECORD_KEY_ORDER`]
/// (JSON objects arrive sorted by key, which buries the name among the rest).
fn in_reading_order(answer: &Value) -> Result<serde_norway::Value> {
    let mut value = serde_norway::to_value(answer)?;
    match value
        .get_mut("items")
        .and_then(|items| items.as_sequence_mut())
    {
        Some(items) => items.iter_mut().for_each(order_record),
        None => order_record(&mut value),
    }
    Ok(value)
}

fn order_record(record: &mut serde_norway::Value) {
    let Some(mapping) = record.as_mapping_mut() else {
        return;
    };
    let mut rest = std::mem::take(mapping);
    for key in RECORD_KEY_ORDER {
        if let Some((key, value)) = rest.remove_entry(key) {
            mapping.insert(key, value);
        }
    }
    mapping.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_record() -> Value {
        json!({
            "name": "pipeline-run-1", "version": "v1alpha", "type": "resource",
            "workspace": "public", "owner": "iamgroot", "status": "active",
            "runtime": "inprogress", "generation": 1, "updatedAt": "2025-01-01T00:00:00Z",
            "message": null, "manifest": {"name": "pipeline-run-1"}, "entityStatus": null,
            "details": {"runId": "abc"}, "detailsError": null
        })
    }

    #[test]
    fn a_list_answer_becomes_table_rows_with_null_fields_blank() {
        let operator = json!({"name": "adf-operator", "version": "v1alpha", "type": "operator",
                              "workspace": null, "owner": null, "status": "active", "runtime": null});
        let answer = json!({"items": [seed_record(), operator]});
        let records = list_items(&answer).expect("items");
        let text = table_text(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert!(
            lines[2].starts_with("  adf-operator   | v1alpha | operator |           | active |"),
            "{text}"
        );
        assert!(
            lines[3].starts_with(
                "  pipeline-run-1 | v1alpha | resource | public    | active | inprogress |"
            ),
            "{text}"
        );
    }

    #[test]
    fn ages_use_the_largest_unit_and_names_carry_type_and_workspace() {
        let age_of = |s: i64| age(chrono::TimeDelta::seconds(s));
        assert_eq!(
            [age_of(5), age_of(200), age_of(3 * 3600), age_of(3 * 86_400)],
            ["5s", "3m", "3h", "3d"]
        );
        let records = list_items(&json!({"items": [seed_record(),
            {"name": "demo", "version": "v1", "type": "operator", "workspace": null,
             "createdAt": (chrono::Utc::now() - chrono::TimeDelta::seconds(300)).to_rfc3339()}]}))
        .expect("items");
        assert_eq!(records[0].cells()[7], "5m");
        assert_eq!(
            names_text(&records),
            "operator/demo\nresource/public/pipeline-run-1\n"
        );
    }

    #[test]
    fn a_list_answer_without_items_is_an_error() {
        assert!(list_items(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn details_print_as_indented_yaml_including_the_live_details() {
        let text = document_text(&seed_record(), OutputFormat::Yaml).expect("yaml");
        assert!(
            text.starts_with("name: pipeline-run-1\nversion: v1alpha\ntype: resource\n"),
            "{text}"
        );
        assert!(
            text.ends_with("manifest:\n  name: pipeline-run-1\n"),
            "{text}"
        );
        assert!(text.contains("details:\n  runId: abc\n"), "{text}");
    }

    #[test]
    fn json_output_is_the_answer_pretty_printed() {
        let text = document_text(&json!({"items": []}), OutputFormat::Json).expect("json");
        assert_eq!(text, "{\n  \"items\": []\n}\n");
    }
}
