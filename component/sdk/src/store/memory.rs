//! `MemoryStore`: entities and statuses in hash maps; the whole of the `memory` store and the
//! in-process copy of the `jetstream_kv` one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use operator_contract::{Entity, EntityStatus};

use super::{EntityRef, Tombstone};

/// Entities and their statuses, by reference: one map entry for both, each boxed, so the map's
/// spare capacity costs a pointer a slot rather than a whole entity, and the reference is held
/// once.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    held: HashMap<EntityRef, Held>,
    /// How many entries hold an entity (the rest hold only a status).
    entities: usize,
    /// Entities deleted lately, apart: most stores hold none, and an idle entity pays nothing.
    tombstones: HashMap<EntityRef, Tombstone>,
}

#[derive(Debug, Default, Clone)]
struct Held {
    entity: Option<Box<Entity>>,
    status: Option<Box<EntityStatus>>,
}

impl MemoryStore {
    /// The stored entity, if any.
    pub fn entity(&self, entity: &EntityRef) -> Option<&Entity> {
        self.held.get(entity)?.entity.as_deref()
    }

    /// The stored status of an entity, if any.
    pub fn status(&self, entity: &EntityRef) -> Option<&EntityStatus> {
        self.held.get(entity)?.status.as_deref()
    }

    /// Stores an entity, replacing the one with the same reference and forgetting that one of
    /// that reference was deleted.
    pub fn put_entity(&mut self, entity: Entity) {
        let r = EntityRef::of_entity(&entity);
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&r);
        }
        let held = self.held.entry(r).or_default();
        if held.entity.replace(Box::new(entity)).is_none() {
            self.entities += 1;
        }
    }

    /// Stores a status, replacing the one of the same entity.
    pub fn put_status(&mut self, status: EntityStatus) {
        let held = self.held.entry(EntityRef::of_status(&status)).or_default();
        held.status = Some(Box::new(status));
    }

    /// Removes an entity and its status.
    pub fn remove(&mut self, entity: &EntityRef) {
        if let Some(held) = self.held.remove(entity) {
            if held.entity.is_some() {
                self.entities -= 1;
            }
        }
    }

    /// Removes an entity, leaving its status.
    pub(crate) fn remove_entity(&mut self, entity: &EntityRef) {
        let Some(held) = self.held.get_mut(entity) else {
            return;
        };
        if held.entity.take().is_some() {
            self.entities -= 1;
        }
        if held.status.is_none() {
            self.held.remove(entity);
        }
    }

    /// Removes a status whose entity is gone; true when there was one.
    pub(crate) fn remove_status(&mut self, entity: &EntityRef) -> bool {
        let Some(held) = self.held.get_mut(entity) else {
            return false;
        };
        let had = held.status.take().is_some();
        if held.entity.is_none() {
            self.held.remove(entity);
        }
        had
    }

    /// What is remembered of a deleted entity, if it was deleted lately.
    pub fn tombstone(&self, entity: &EntityRef) -> Option<&Tombstone> {
        self.tombstones.get(entity)
    }

    /// Remembers a deleted entity.
    pub(crate) fn put_tombstone(&mut self, entity: EntityRef, tombstone: Tombstone) {
        self.tombstones.insert(entity, tombstone);
    }

    /// Forgets a deleted entity.
    pub(crate) fn remove_tombstone(&mut self, entity: &EntityRef) {
        self.tombstones.remove(entity);
    }

    /// The deleted entities remembered since before `before`.
    pub(crate) fn tombstones_before(&self, before: DateTime<Utc>) -> Vec<EntityRef> {
        self.tombstones
            .iter()
            .filter(|(_, t)| t.deleted_at < before)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// How many entities are stored.
    pub fn len(&self) -> usize {
        self.entities
    }

    /// True when no entity is stored.
    pub fn is_empty(&self) -> bool {
        self.entities == 0
    }

    /// Every stored entity with its status.
    pub fn entries(&self) -> impl Iterator<Item = (&Entity, Option<&EntityStatus>)> {
        self.held
            .values()
            .filter_map(|held| Some((held.entity.as_deref()?, held.status.as_deref())))
    }

    /// References of statuses whose entity is not stored.
    pub(crate) fn orphan_statuses(&self) -> Vec<EntityRef> {
        self.held
            .iter()
            .filter(|(_, held)| held.entity.is_none() && held.status.is_some())
            .map(|(r, _)| r.clone())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use operator_contract::{EntityKey, ResourceStatus};
    use uuid::Uuid;

    use super::*;

    pub(crate) fn entity(name: &str, generation: u64) -> Entity {
        Entity {
            key: EntityKey::new("public", name).expect("valid"),
            operator: "demo".into(),
            resource_type: "job".into(),
            generation,
            spec: serde_json::json!({"durationMs": 10}),
            deleting: false,
            last_command: Uuid::now_v7(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn entities_and_statuses_are_kept_and_removed_together() {
        let mut store = MemoryStore::default();
        let e = entity("run-1", 1);
        let r = EntityRef::of_entity(&e);
        store.put_entity(e.clone());
        let mut status = EntityStatus::pending(e.key.clone(), "demo", "job");
        status.status = ResourceStatus::Active;
        store.put_status(status.clone());
        assert_eq!(store.entity(&r), Some(&e));
        assert_eq!(store.status(&r), Some(&status));
        assert_eq!(store.entries().count(), 1);
        assert!(store.orphan_statuses().is_empty());
        store.remove(&r);
        assert!(store.is_empty());
        assert_eq!(store.status(&r), None);
    }

    #[test]
    fn a_status_without_its_entity_is_an_orphan() {
        let mut store = MemoryStore::default();
        let e = entity("run-1", 1);
        store.put_status(EntityStatus::pending(e.key.clone(), "demo", "job"));
        let orphans = store.orphan_statuses();
        assert_eq!(orphans, vec![EntityRef::of_entity(&e)]);
        assert!(store.remove_status(&orphans[0]));
        assert!(!store.remove_status(&orphans[0]));
    }

    #[test]
    fn removing_an_entity_keeps_its_status_and_counts_only_entities() {
        let mut store = MemoryStore::default();
        let (a, b) = (entity("run-1", 1), entity("run-2", 1));
        let r = EntityRef::of_entity(&a);
        store.put_entity(a.clone());
        store.put_entity(a.clone());
        store.put_entity(b);
        store.put_status(EntityStatus::pending(a.key.clone(), "demo", "job"));
        assert_eq!(store.len(), 2, "a replaced entity is counted once");
        store.remove_entity(&r);
        assert_eq!(store.len(), 1);
        assert_eq!(store.entity(&r), None);
        assert!(store.status(&r).is_some(), "the status stays");
        assert_eq!(store.orphan_statuses(), vec![r.clone()]);
        assert_eq!(store.entries().count(), 1);
        store.remove(&r);
        assert!(store.orphan_statuses().is_empty());
    }
}
