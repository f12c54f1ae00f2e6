//! A resource's history: the events the orchestrator keeps for each resource (the last
//! [`HISTORY_PER_RESOURCE`], in the JetStream stream [`HISTORY_STREAM`], one subject per
//! resource), shown by `opctl events` and the latest few by `opctl get -d`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entity::EntityKey;

/// The stream that keeps every resource's events.
pub const HISTORY_STREAM: &str = "orchestrator-history";
/// How many events are kept per resource; older ones are dropped.
pub const HISTORY_PER_RESOURCE: i64 = 100;
/// The subjects of the history stream.
pub const HISTORY_SUBJECTS: &str = "orchestrator.history.>";

/// The subject of one resource's events (workspace and name are validated names: no dots).
pub fn history_subject(key: &EntityKey) -> String {
    format!("orchestrator.history.{}.{}", key.workspace, key.name)
}

/// Whether an event is routine or a sign of trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event in a resource's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEvent {
    pub time: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// CamelCase, for machines: `Applied`, `CommandSent`, `ReconcileFailed`.
    pub reason: String,
    pub message: String,
    /// The resource's generation when it happened.
    pub generation: u64,
}

impl HistoryEvent {
    /// A `Normal` event now.
    pub fn normal(reason: &str, message: impl Into<String>, generation: u64) -> Self {
        Self {
            time: Utc::now(),
            kind: EventType::Normal,
            reason: reason.to_string(),
            message: message.into(),
            generation,
        }
    }

    /// A `Warning` event now.
    pub fn warning(reason: &str, message: impl Into<String>, generation: u64) -> Self {
        Self {
            kind: EventType::Warning,
            ..Self::normal(reason, message, generation)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_has_its_own_subject_under_the_stream_subjects() {
        let key = EntityKey::new("public", "run-1").expect("key");
        assert_eq!(history_subject(&key), "orchestrator.history.public.run-1");
        assert!(HISTORY_SUBJECTS.ends_with(".>"));
        let json = serde_json::to_value(HistoryEvent::warning("ReconcileFailed", "boom", 2))
            .expect("json");
        assert_eq!(json["type"], "Warning");
        assert_eq!(json["reason"], "ReconcileFailed");
    }
}
