//! The pure transitions of a resource entity: what an apply, a delete or a status event does
//! to its record, and the command it leads to. No actors, no I/O.

use chrono::Utc;
use operator_contract::{
    EntityKey, EntityStatus, Envelope, EnvelopeKind, Manifest, Operation, ResourceStatus,
};

use crate::records::{Outcome, Record};

/// What an apply does to a record.
#[derive(Debug, PartialEq)]
pub enum ApplyPlan {
    /// The manifest is the one stored.
    Unchanged,
    /// A new record (generation 1) with its create command.
    Create(Record),
    /// A changed record; with a command when the spec changed.
    Update(Record),
}

/// Plans an apply of `manifest` over what is stored.
pub fn plan_apply(
    stored: Option<&Record>,
    mut manifest: Manifest,
    key: &EntityKey,
) -> Result<ApplyPlan, String> {
    if let Some(current) = stored {
        crate::records::keep_owner(&current.manifest, &mut manifest);
    }
    let Some(current) = stored else {
        let mut record = Record::new(manifest, Some(key.workspace.clone()));
        record.last_command = Some(command(&record, key, Operation::Create));
        return Ok(ApplyPlan::Create(record));
    };
    if current.deleting {
        return Err(format!(
            "resource {key} is being deleted; apply it again once it is gone"
        ));
    }
    if current.manifest == manifest {
        return Ok(ApplyPlan::Unchanged);
    }
    let spec_changed = spec_of(&current.manifest) != spec_of(&manifest);
    let mut record = current.clone();
    record.manifest = manifest;
    record.updated_at = Utc::now();
    if spec_changed {
        record.generation += 1;
        record.last_command = Some(command(&record, key, Operation::Update));
    }
    Ok(ApplyPlan::Update(record))
}

/// Plans a delete: `None` when one is already under way.
pub fn plan_delete(current: &Record, key: &EntityKey) -> Option<Record> {
    if current.deleting {
        return None;
    }
    let mut record = current.clone();
    record.deleting = true;
    record.generation += 1;
    record.updated_at = Utc::now();
    record.last_command = Some(command(&record, key, Operation::Delete));
    Some(record)
}

/// What a status event does.
#[derive(Debug, PartialEq)]
pub enum StatusDecision {
    /// Older than what is held: drop it (and acknowledge it).
    Stale,
    /// Store the record with the new status.
    Store(Box<Record>),
    /// The component finished the delete: remove the record.
    Forget,
}

/// Decides what a reported status does to the record.
pub fn apply_status(current: &Record, status: EntityStatus) -> StatusDecision {
    if status.status == ResourceStatus::Deleted {
        return if current.deleting && status.observed_generation >= current.generation {
            StatusDecision::Forget
        } else {
            StatusDecision::Stale
        };
    }
    if let Some(held) = &current.status {
        let newer = (status.observed_generation, status.updated_at)
            >= (held.observed_generation, held.updated_at);
        if !newer {
            return StatusDecision::Stale;
        }
    }
    let mut record = current.clone();
    record.status = Some(status);
    super::reachable::mark_reachable(&mut record, Utc::now());
    // Once the component has seen the command it is never sent again: neither kept in memory
    // nor in the store (a settled resource holds one copy of its spec, not two).
    if !command_unconfirmed(&record) {
        record.last_command = None;
    }
    StatusDecision::Store(Box::new(record))
}

/// Nothing left to do for the record until a message comes: not deleting, and its last
/// command confirmed by a status.
pub fn settled(record: &Record) -> bool {
    !record.deleting && !command_unconfirmed(record)
}

/// True when the component may not have seen the record's last command yet.
pub fn command_unconfirmed(record: &Record) -> bool {
    record.last_command.is_some()
        && record
            .status
            .as_ref()
            .is_none_or(|s| s.observed_generation < record.generation)
}

/// The outcome an apply plan reports.
pub fn outcome(plan: &ApplyPlan) -> Outcome {
    match plan {
        ApplyPlan::Unchanged => Outcome::Unchanged,
        ApplyPlan::Create(_) => Outcome::Created,
        ApplyPlan::Update(_) => Outcome::Updated,
    }
}

fn spec_of(manifest: &Manifest) -> Option<&serde_json::Value> {
    manifest.resource.as_ref().map(|r| &r.spec)
}

fn command(record: &Record, key: &EntityKey, operation: Operation) -> Envelope {
    let resource = record.manifest.resource.as_ref();
    let payload = match operation {
        Operation::Delete => serde_json::json!({}),
        _ => serde_json::json!({ "spec": resource.map(|r| r.spec.clone()) }),
    };
    Envelope::new(
        EnvelopeKind::Command,
        operation,
        resource.map(|r| r.operator.as_str()).unwrap_or_default(),
        resource
            .map(|r| r.resource_type.as_str())
            .unwrap_or_default(),
        key.clone(),
        record.generation,
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn manifest(factory: &str) -> Manifest {
        Manifest::parse_one(&format!(
            "name: run-1\nversion: v1\ntype: resource\nresource:\n  operator: op\n  type: job\n  spec: {{factoryName: {factory}}}\n"
        ))
        .expect("test manifest parses")
    }

    fn key() -> EntityKey {
        EntityKey::new("public", "run-1").expect("valid key")
    }

    fn status(record: &Record, generation: u64, status: ResourceStatus) -> EntityStatus {
        let mut s = EntityStatus::pending(key(), "op", "job");
        s.observed_generation = generation;
        s.status = status;
        let _ = record;
        s
    }

    fn created() -> Record {
        match plan_apply(None, manifest("a"), &key()).expect("plans") {
            ApplyPlan::Create(r) => r,
            other => panic!("expected create, got {other:?}"),
        }
    }

    #[test]
    fn a_first_apply_creates_generation_one_with_a_create_command() {
        let record = created();
        assert_eq!(record.generation, 1);
        let command = record.last_command.as_ref().expect("command");
        assert_eq!(command.operation, Operation::Create);
        assert_eq!(command.generation, 1);
        assert_eq!(command.payload["spec"]["factoryName"], "a");
        assert!(command_unconfirmed(&record));
    }

    #[test]
    fn the_same_manifest_again_changes_nothing() {
        let record = created();
        assert_eq!(
            plan_apply(Some(&record), manifest("a"), &key()),
            Ok(ApplyPlan::Unchanged)
        );
    }

    #[test]
    fn a_changed_spec_raises_the_generation_and_sends_an_update() {
        let record = created();
        let ApplyPlan::Update(updated) =
            plan_apply(Some(&record), manifest("b"), &key()).expect("plans")
        else {
            panic!("expected update");
        };
        assert_eq!(updated.generation, 2);
        assert_eq!(
            updated.last_command.as_ref().map(|c| c.operation),
            Some(Operation::Update)
        );
    }

    #[test]
    fn a_changed_description_alone_keeps_the_generation() {
        let record = created();
        let mut m = manifest("a");
        m.description = Some("new words".into());
        let ApplyPlan::Update(updated) = plan_apply(Some(&record), m, &key()).expect("plans")
        else {
            panic!("expected update");
        };
        assert_eq!(updated.generation, 1);
        assert_eq!(updated.last_command, record.last_command);
    }

    #[test]
    fn a_delete_raises_the_generation_once_and_refuses_applies_until_gone() {
        let record = created();
        let deleting = plan_delete(&record, &key()).expect("first delete plans");
        assert!(deleting.deleting);
        assert_eq!(deleting.generation, 2);
        assert_eq!(
            deleting.last_command.as_ref().map(|c| c.operation),
            Some(Operation::Delete)
        );
        assert!(plan_delete(&deleting, &key()).is_none());
        assert!(plan_apply(Some(&deleting), manifest("a"), &key()).is_err());
    }

    #[test]
    fn statuses_older_than_the_held_one_are_stale() {
        let mut record = created();
        let newer = status(&record, 1, ResourceStatus::Active);
        let mut older = newer.clone();
        older.updated_at = newer.updated_at - Duration::seconds(1);
        let StatusDecision::Store(stored) = apply_status(&record, newer) else {
            panic!("expected store");
        };
        assert!(!command_unconfirmed(&stored));
        assert_eq!(stored.last_command, None, "a confirmed command is not kept");
        record = *stored;
        assert_eq!(apply_status(&record, older), StatusDecision::Stale);
    }

    #[test]
    fn deleted_is_honoured_only_for_the_delete_generation() {
        let record = created();
        assert_eq!(
            apply_status(&record, status(&record, 1, ResourceStatus::Deleted)),
            StatusDecision::Stale
        );
        let deleting = plan_delete(&record, &key()).expect("plans");
        assert_eq!(
            apply_status(&deleting, status(&deleting, 1, ResourceStatus::Deleted)),
            StatusDecision::Stale
        );
        assert_eq!(
            apply_status(&deleting, status(&deleting, 2, ResourceStatus::Deleted)),
            StatusDecision::Forget
        );
    }
}
