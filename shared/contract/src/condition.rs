//! Kubernetes-style conditions of a Resource's status: `type`, `status` (`True`, `False`,
//! `Unknown`), a CamelCase `reason`, a `message`, `lastTransitionTime` and
//! `observedGeneration`. Setting one keeps its `lastTransitionTime` unless its status changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::status::EntityStatus;

/// The condition a long-lived resource sets when it is usable.
pub const READY: &str = "Ready";
/// The condition a runnable resource sets: `Unknown` while running, then `True` or `False`.
pub const SUCCEEDED: &str = "Succeeded";
/// Whether the last reconcile worked (`False` with its error).
pub const SYNCED: &str = "Synced";
/// Set by the orchestrator: `False` when no replica of the component answered for too long.
pub const COMPONENT_REACHABLE: &str = "ComponentReachable";

/// The three values of a condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    /// CamelCase, for machines: `JobFailed`, `ReconcileFailed`.
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
    pub observed_generation: u64,
}

/// Sets the condition of `kind` in `conditions`: `lastTransitionTime` is taken from `previous`
/// (the same type in the conditions last reported) while the status stays the same, and is
/// `now` when it changes or the condition is new.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    previous: &[Condition],
    mut condition: Condition,
    now: DateTime<Utc>,
) {
    condition.last_transition_time = match previous.iter().find(|c| c.kind == condition.kind) {
        Some(before) if before.status == condition.status => before.last_transition_time,
        _ => now,
    };
    conditions.retain(|c| c.kind != condition.kind);
    conditions.push(condition);
}

/// The condition of `kind`, if set.
pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.kind == kind)
}

impl EntityStatus {
    /// Sets a condition at this status's generation, keeping the `lastTransitionTime` of
    /// `previous` (the status last reported) while the condition's status is unchanged.
    pub fn set_condition(
        &mut self,
        previous: Option<&EntityStatus>,
        kind: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let condition = Condition {
            kind: kind.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: self.updated_at,
            observed_generation: self.observed_generation,
        };
        let before = previous
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default();
        set_condition(&mut self.conditions, before, condition, self.updated_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(status: ConditionStatus, at: i64) -> Condition {
        Condition {
            kind: READY.into(),
            status,
            reason: "Because".into(),
            message: String::new(),
            last_transition_time: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            observed_generation: 1,
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap_or_default();
        let previous = vec![condition(ConditionStatus::True, 100)];
        let mut now = Vec::new();
        set_condition(
            &mut now,
            &previous,
            condition(ConditionStatus::True, 0),
            t(200),
        );
        assert_eq!(now[0].last_transition_time, t(100));
        set_condition(
            &mut now,
            &previous,
            condition(ConditionStatus::False, 0),
            t(300),
        );
        assert_eq!(now.len(), 1, "one condition per type");
        assert_eq!(now[0].last_transition_time, t(300));
        assert_eq!(now[0].status, ConditionStatus::False);
    }

    #[test]
    fn conditions_serialize_as_kubernetes_spells_them() {
        let json = serde_json::to_value(condition(ConditionStatus::Unknown, 0)).expect("json");
        assert_eq!(json["type"], "Ready");
        assert_eq!(json["status"], "Unknown");
        assert!(json.get("lastTransitionTime").is_some());
        assert!(json.get("observedGeneration").is_some());
    }
}
