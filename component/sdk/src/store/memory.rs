//! `MemoryStore`: entities and statuses in hash maps; the whole of the `memory` store and the
//! in-process copy of the `jetstream_kv` one.

use std::collections::HashMap;

use operator_contract::{Entity, EntityStatus};

use super::EntityRef;

/// Entities and their statuses, by reference.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entities: HashMap<EntityRef, Entity>,
    statuses: HashMap<EntityRef, EntityStatus>,
}

impl MemoryStore {
    /// The stored entity, if any.
    pub fn entity(&self, entity: &EntityRef) -> Option<&Entity> {
        self.entities.get(entity)
    }

    /// The stored status of an entity, if any.
    pub fn status(&self, entity: &EntityRef) -> Option<&EntityStatus> {
        self.statuses.get(entity)
    }

    /// Stores an entity, replacing the one with the same reference.
    pub fn put_entity(&mut self, entity: Entity) {
        self.entities.insert(EntityRef::of_entity(&entity), entity);
    }

    /// Stores a status, replacing the one of the same entity.
    pub fn put_status(&mut self, status: EntityStatus) {
        self.statuses.insert(EntityRef::of_status(&status), status);
    }

    /// Removes an entity and its status.
    pub fn remove(&mut self, entity: &EntityRef) {
        self.entities.remove(entity);
        self.statuses.remove(entity);
    }

    /// Removes an entity, leaving its status.
    pub(crate) fn remove_entity(&mut self, entity: &EntityRef) {
        self.entities.remove(entity);
    }

    /// Removes a status whose entity is gone; true when there was one.
    pub(crate) fn remove_status(&mut self, entity: &EntityRef) -> bool {
        self.statuses.remove(entity).is_some()
    }

    /// How many entities are stored.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// True when no entity is stored.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Every stored entity with its status.
    pub fn entries(&self) -> impl Iterator<Item = (&Entity, Option<&EntityStatus>)> {
        self.entities
            .iter()
            .map(|(r, entity)| (entity, self.statuses.get(r)))
    }

    /// References of statuses whose entity is not stored.
    pub(crate) fn orphan_statuses(&self) -> Vec<EntityRef> {
        self.statuses
            .keys()
            .filter(|r| !self.entities.contains_key(*r))
            .cloned()
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
}
