//! The orchestrator's HTTP API answers, as the orchestrator writes them and `opctl` reads them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Condition, EntityStatus, Manifest};

/// One row of `opctl get`, with the whole record for `-d` and `-o json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub workspace: Option<String>,
    pub owner: Option<String>,
    pub status: String,
    pub runtime: Option<String>,
    pub generation: u64,
    /// When the record was first applied (the AGE column).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message: Option<String>,
    /// The component's conditions and the orchestrator's own (`ComponentReachable`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub manifest: Manifest,
    pub entity_status: Option<EntityStatus>,
    /// Live details from the component (`?details=true`).
    pub details: Option<serde_json::Value>,
    pub details_error: Option<String>,
}

/// What applying one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Deleting,
    Deleted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        })
    }
}

/// The answer to applying or deleting one document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub version: String,
    pub workspace: Option<String>,
    pub generation: u64,
    pub outcome: Outcome,
}

/// The answer to an apply: one entry per document, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyAnswer {
    pub applied: Vec<Applied>,
    /// True when nothing was stored: `apply --dry-run`.
    #[serde(default, rename = "dryRun")]
    pub dry_run: bool,
}

/// What became of one document of a batch (`POST /api/v1/batch`): applied, or refused and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentAnswer {
    /// 1-based index of the document in the text.
    pub document: usize,
    /// The document's `type` and `name` as written, also when it was refused.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    /// What applying it did, when it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// Why it was refused (the attribute path and reason, as a single apply says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The answer to a batch: one entry per document, in the text's order. `200` even when some
/// documents were refused; `failed` counts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAnswer {
    pub documents: Vec<DocumentAnswer>,
    pub failed: usize,
    /// True when nothing was stored: `apply --dry-run`.
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of every error answer: `{"error": "...", "details": ["...", ...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub details: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_shown_as_it_is_written_on_the_wire() {
        for outcome in [
            Outcome::Created,
            Outcome::Updated,
            Outcome::Unchanged,
            Outcome::Deleting,
            Outcome::Deleted,
        ] {
            let wire = serde_json::to_value(outcome).expect("serializable");
            assert_eq!(wire, serde_json::Value::String(outcome.to_string()));
        }
    }
}
