//! `ComponentReachable`, the condition the orchestrator sets itself: `False` when a command
//! sent to the operator's component has had no status in answer for longer than
//! [`ANSWER_BOUND`], or when no replica has answered the runtime's liveness probe for that long
//! (a component that died while its resources were idle), so a stale status is not shown as
//! fresh; `True` again with the next status event or answered probe. The decisions are pure
//! functions; the handlers store what they return.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use operator_contract::condition::{self, Condition, COMPONENT_REACHABLE};
use operator_contract::ConditionStatus;
use tracing::warn;
use uuid::Uuid;

use super::{state, ResourceEntity};
use crate::records::Record;
use crate::store::{Bucket, StoreError};

/// How long a sent command may go unanswered before the component counts as unreachable.
pub const ANSWER_BOUND: Duration = Duration::from_secs(10);

/// Checks, one bound after a command was sent, whether anything answered it.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReachabilityTick {
    pub command: Uuid,
}

/// The record with `ComponentReachable=False`, when the command `command` is still the last one
/// and unanswered; `None` when nothing is to change.
pub fn mark_unreachable(record: &Record, command: Uuid, now: DateTime<Utc>) -> Option<Record> {
    let current = record.last_command.as_ref().map(|c| c.id) == Some(command);
    if !current || !state::command_unconfirmed(record) {
        return None;
    }
    let already = condition::find(&record.conditions, COMPONENT_REACHABLE)
        .is_some_and(|c| c.status == ConditionStatus::False);
    if already {
        return None;
    }
    let last_event = last_event(record);
    let mut changed = record.clone();
    let previous = record.conditions.clone();
    condition::set_condition(
        &mut changed.conditions,
        &previous,
        Condition {
            kind: COMPONENT_REACHABLE.into(),
            status: ConditionStatus::False,
            reason: "NoReplicaAnswered".into(),
            message: format!(
                "no replica of the component answered generation {} within {} s; {last_event}: the status shown may be stale",
                record.generation,
                ANSWER_BOUND.as_secs()
            ),
            last_transition_time: now,
            observed_generation: record.generation,
        },
        now,
    );
    Some(changed)
}

/// The operator's runtime heard from a replica (`reachable`), or has not since `last_answer`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ComponentLiveness {
    pub reachable: bool,
    pub last_answer: DateTime<Utc>,
}

/// The record with `ComponentReachable` following the liveness probe: `False` when no replica
/// has answered since `last_answer`, `True` again once one has; `None` when nothing changes.
pub fn follow_liveness(
    record: &Record,
    liveness: ComponentLiveness,
    now: DateTime<Utc>,
) -> Option<Record> {
    let marked_false = condition::find(&record.conditions, COMPONENT_REACHABLE)
        .is_some_and(|c| c.status == ConditionStatus::False);
    // Back to True only from False; to False only from anything else.
    if marked_false != liveness.reachable {
        return None;
    }
    let (status, reason, message) = if liveness.reachable {
        (ConditionStatus::True, "ProbeAnswered", String::new())
    } else {
        (
            ConditionStatus::False,
            "NoReplicaAnswered",
            format!(
                "no replica of the component has answered since {} (for more than {} s); {}: the status shown may be stale",
                liveness.last_answer.to_rfc3339(),
                ANSWER_BOUND.as_secs(),
                last_event(record)
            ),
        )
    };
    let mut changed = record.clone();
    let previous = record.conditions.clone();
    let condition = Condition {
        kind: COMPONENT_REACHABLE.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: now,
        observed_generation: observed_generation(record),
    };
    condition::set_condition(&mut changed.conditions, &previous, condition, now);
    Some(changed)
}

/// The generation the last status event described (0 before any).
fn observed_generation(record: &Record) -> u64 {
    record
        .status
        .as_ref()
        .map(|s| s.observed_generation)
        .unwrap_or_default()
}

fn last_event(record: &Record) -> String {
    record
        .status
        .as_ref()
        .map(|s| format!("the last status event was at {}", s.updated_at.to_rfc3339()))
        .unwrap_or_else(|| "no status event was ever received".to_string())
}

/// Sets `ComponentReachable=True`: a status event just arrived.
pub fn mark_reachable(record: &mut Record, now: DateTime<Utc>) {
    let previous = record.conditions.clone();
    let observed = observed_generation(record);
    condition::set_condition(
        &mut record.conditions,
        &previous,
        Condition {
            kind: COMPONENT_REACHABLE.into(),
            status: ConditionStatus::True,
            reason: "StatusReceived".into(),
            message: String::new(),
            last_transition_time: now,
            observed_generation: observed,
        },
        now,
    );
}

impl Handler<ReachabilityTick> for ResourceEntity {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: ReachabilityTick, _ctx: &mut Self::Context) -> Self::Result {
        let changed = self.stored.as_ref().and_then(|(record, revision)| {
            mark_unreachable(record, msg.command, Utc::now()).map(|r| (r, *revision))
        });
        self.store_reachability(changed, "component unreachable: a command went unanswered")
    }
}

impl Handler<ComponentLiveness> for ResourceEntity {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: ComponentLiveness, _ctx: &mut Self::Context) -> Self::Result {
        self.activity += 1;
        let changed = self.stored.as_ref().and_then(|(record, revision)| {
            follow_liveness(record, msg, Utc::now()).map(|r| (r, *revision))
        });
        let said = if msg.reachable {
            "component reachable again: a replica answered"
        } else {
            "component unreachable: no replica answered the liveness probe"
        };
        self.store_reachability(changed, said)
    }
}

impl ResourceEntity {
    /// Stores a record whose `ComponentReachable` changed (at `revision`), and its history.
    fn store_reachability(
        &mut self,
        changed: Option<(Record, u64)>,
        said: &'static str,
    ) -> AtomicResponse<Self, ()> {
        let Some((record, revision)) = changed else {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        let (store, kv_key) = (self.shared.store.clone(), self.kv_key());
        let write = async move {
            let rev = store
                .update(Bucket::Resources, &kv_key, &record, revision)
                .await?;
            Ok::<_, StoreError>((record, rev))
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |result, act, _| match result {
                Ok(stored) => {
                    warn!(entity.key = %act.key, "{said}");
                    if let Some((before, _)) = &act.stored {
                        act.history()
                            .record(&act.key, crate::history::status_events(before, &stored.0));
                    }
                    act.stored = Some(stored);
                }
                Err(e) => {
                    warn!(entity.key = %act.key, error = %e, "component reachability not recorded")
                }
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator_contract::{EntityKey, Manifest};

    fn record_with_command() -> Record {
        let manifest = Manifest::parse_all(
            "name: r\nversion: v1\ntype: resource\nresource: {operator: demo, type: job, spec: {}}\n",
        )
        .expect("parses")
        .remove(0);
        let key = EntityKey::new("public", "r").expect("key");
        match state::plan_apply(None, manifest, &key).expect("plan") {
            state::ApplyPlan::Create(record) => record,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unanswered_command_marks_the_component_unreachable_once() {
        let record = record_with_command();
        let id = record.last_command.as_ref().map(|c| c.id).expect("command");
        let now = Utc::now();
        let marked = mark_unreachable(&record, id, now).expect("marked");
        let found = condition::find(&marked.conditions, COMPONENT_REACHABLE).expect("set");
        assert_eq!(found.status, ConditionStatus::False);
        assert_eq!(found.reason, "NoReplicaAnswered");
        assert!(found.message.contains("no status event was ever received"));
        assert_eq!(mark_unreachable(&marked, id, now), None, "already marked");
        assert_eq!(
            mark_unreachable(&record, Uuid::nil(), now),
            None,
            "an older command"
        );
    }

    #[test]
    fn an_unanswered_probe_marks_it_unreachable_once_and_an_answer_marks_it_back() {
        let record = record_with_command();
        let silent = ComponentLiveness {
            reachable: false,
            last_answer: Utc::now(),
        };
        let answered = ComponentLiveness {
            reachable: true,
            ..silent
        };
        assert!(follow_liveness(&record, answered, Utc::now()).is_none());
        let marked = follow_liveness(&record, silent, Utc::now()).expect("marked");
        let found = condition::find(&marked.conditions, COMPONENT_REACHABLE).expect("set");
        assert_eq!(found.status, ConditionStatus::False);
        assert_eq!(found.reason, "NoReplicaAnswered");
        assert!(found.message.contains("no status event was ever received"));
        assert!(follow_liveness(&marked, silent, Utc::now()).is_none());
        let back = follow_liveness(&marked, answered, Utc::now()).expect("back");
        let found = condition::find(&back.conditions, COMPONENT_REACHABLE).expect("set");
        assert_eq!(found.status, ConditionStatus::True);
        assert_eq!(found.reason, "ProbeAnswered");
    }

    #[test]
    fn a_status_event_makes_it_reachable_again() {
        let record = record_with_command();
        let id = record.last_command.as_ref().map(|c| c.id).expect("command");
        let mut marked = mark_unreachable(&record, id, Utc::now()).expect("marked");
        mark_reachable(&mut marked, Utc::now());
        let found = condition::find(&marked.conditions, COMPONENT_REACHABLE).expect("set");
        assert_eq!(found.status, ConditionStatus::True);
        assert_eq!(marked.conditions.len(), 1);
    }
}
