//! The status model every Resource shares: `status`, `runtime` for runnable types, and the
//! details map a component syncs from its platform.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entity::EntityKey;

/// Where a Resource stands in the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResourceStatus {
    /// Accepted and stored; no component has reported on it yet.
    #[default]
    Pending,
    /// A component reconciled it.
    Active,
    /// The last reconcile failed in a way retries will not fix; `message` says why.
    Error,
    /// A delete was asked; the component is cleaning up on the platform.
    Deleting,
    /// The component finished cleaning up; the orchestrator forgets the Resource.
    Deleted,
}

/// Where a runnable Resource's run stands on its platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    Pending,
    #[serde(rename = "inprogress")]
    InProgress,
    Succeeded,
    Failed,
    Cancelled,
}

impl RuntimeStatus {
    /// True when the run has ended and will not change by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Error => "error",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        })
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::InProgress => "inprogress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        })
    }
}

/// What a component reports about one entity, and what `opctl get` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityStatus {
    pub key: EntityKey,
    pub operator: String,
    pub resource_type: String,
    /// The generation of the spec this status describes.
    pub observed_generation: u64,
    pub status: ResourceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Platform details the component syncs (for a pipeline run: runId, activity runs, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Kubernetes-style conditions (`Ready`, `Succeeded`, `Synced`, ...): `crate::condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::condition::Condition>,
    /// Events the operator adds to the resource's history with this status (`add_event`); the
    /// orchestrator moves them to the history and does not keep them in the status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::history::HistoryEvent>,
    pub updated_at: DateTime<Utc>,
}

impl EntityStatus {
    /// A fresh status for a key, before anything has been reconciled.
    pub fn pending(key: EntityKey, operator: &str, resource_type: &str) -> Self {
        Self {
            key,
            operator: operator.to_string(),
            resource_type: resource_type.to_string(),
            observed_generation: 0,
            status: ResourceStatus::Pending,
            runtime: None,
            message: None,
            details: serde_json::Map::new(),
            conditions: Vec::new(),
            events: Vec::new(),
            updated_at: Utc::now(),
        }
    }

    /// Adds an event to the resource's history, sent with this status.
    pub fn add_event(&mut self, event: crate::history::HistoryEvent) {
        self.events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_the_seed_prints_them() {
        assert_eq!(
            serde_json::to_string(&RuntimeStatus::InProgress).expect("serializes"),
            "\"inprogress\""
        );
        assert_eq!(RuntimeStatus::InProgress.to_string(), "inprogress");
        assert_eq!(ResourceStatus::Active.to_string(), "active");
        assert!(RuntimeStatus::Cancelled.is_final());
        assert!(!RuntimeStatus::InProgress.is_final());
    }
}
