//! `MemoryStore`: entities and statuses in a hash map, each kept as its JSON encoding; the whole
//! of the `memory` store and the in-process copy of the `jetstream_kv` one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use operator_contract::{Entity, EntityStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::error;

use super::{EntityRef, Tombstone};

/// Entities and their statuses, by reference: one map entry for both, so the reference is held
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
    entity: Option<Kept<Entity>>,
    status: Option<Kept<EntityStatus>>,
}

/// A value kept as its JSON encoding and decoded when read. Decoded, every string, map and list
/// of an entity and its status is an allocation of its own: a demo job's pair asks about 2,250
/// bytes decoded and 1,100 encoded (900 of them JSON), and reads are one per reconcile or query.
#[derive(Debug, Clone)]
pub(crate) enum Kept<T> {
    Json(Box<[u8]>),
    /// Only for a value that could not be encoded (none of the contract's types fails to).
    Value(Box<T>),
}

impl<T: Serialize + DeserializeOwned + Clone> Kept<T> {
    /// Keeps `value` encoded, or as it is where it cannot be encoded.
    pub(crate) fn new(value: T) -> Self {
        match serde_json::to_vec(&value) {
            Ok(json) => Self::Json(json.into_boxed_slice()),
            Err(e) => {
                error!(error = %e, "a stored value could not be encoded; kept decoded");
                Self::Value(Box::new(value))
            }
        }
    }

    /// The value, decoded. The store decodes only what it encoded (or checked decodes, for what
    /// it read from its bucket), so decoding does not fail; if it ever did, the value is reported
    /// and read as missing.
    fn get(&self) -> Option<T> {
        match self {
            Self::Json(json) => serde_json::from_slice(json)
                .map_err(|e| error!(error = %e, "a stored value could not be decoded"))
                .ok(),
            Self::Value(value) => Some((**value).clone()),
        }
    }
}

impl MemoryStore {
    /// The stored entity, if any, decoded.
    pub fn entity(&self, entity: &EntityRef) -> Option<Entity> {
        self.held.get(entity)?.entity.as_ref()?.get()
    }

    /// The stored status of an entity, if any, decoded.
    pub fn status(&self, entity: &EntityRef) -> Option<EntityStatus> {
        self.held.get(entity)?.status.as_ref()?.get()
    }

    /// True when an entity is stored under `entity` (nothing is decoded).
    pub fn has_entity(&self, entity: &EntityRef) -> bool {
        self.held
            .get(entity)
            .is_some_and(|held| held.entity.is_some())
    }

    /// True when a status is stored for `entity` (nothing is decoded).
    pub fn has_status(&self, entity: &EntityRef) -> bool {
        self.held
            .get(entity)
            .is_some_and(|held| held.status.is_some())
    }

    /// Stores an entity, replacing the one with the same reference and forgetting that one of
    /// that reference was deleted.
    pub fn put_entity(&mut self, entity: Entity) {
        self.put_kept_entity(EntityRef::of_entity(&entity), Kept::new(entity));
    }

    /// Stores an entity already kept (its encoding shared with a write, say).
    pub(crate) fn put_kept_entity(&mut self, r: EntityRef, entity: Kept<Entity>) {
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&r);
        }
        let held = self.held.entry(r).or_default();
        if held.entity.replace(entity).is_none() {
            self.entities += 1;
        }
    }

    /// Stores a status, replacing the one of the same entity.
    pub fn put_status(&mut self, status: EntityStatus) {
        self.put_kept_status(EntityRef::of_status(&status), Kept::new(status));
    }

    /// Stores a status already kept.
    pub(crate) fn put_kept_status(&mut self, r: EntityRef, status: Kept<EntityStatus>) {
        self.held.entry(r).or_default().status = Some(status);
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

    /// Every stored entity with its status, decoded one at a time.
    pub fn entries(&self) -> impl Iterator<Item = (Entity, Option<EntityStatus>)> + '_ {
        self.held.values().filter_map(|held| {
            let entity = held.entity.as_ref()?.get()?;
            Some((entity, held.status.as_ref().and_then(Kept::get)))
        })
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
        assert_eq!(store.entity(&r), Some(e));
        assert_eq!(store.status(&r), Some(status));
        assert!(store.has_entity(&r) && store.has_status(&r));
        assert_eq!(store.entries().count(), 1);
        assert!(store.orphan_statuses().is_empty());
        store.remove(&r);
        assert!(store.is_empty());
        assert_eq!(store.status(&r), None);
    }

    #[test]
    fn values_are_kept_encoded_and_read_back_whole() {
        let mut store = MemoryStore::default();
        let mut e = entity("run-1", 3);
        e.spec = serde_json::json!({"nested": {"list": [1, 2.5, "x", null]}, "big": u64::MAX});
        store.put_entity(e.clone());
        let held = store.held.values().next().expect("held");
        assert!(matches!(held.entity, Some(Kept::Json(_))));
        assert_eq!(store.entity(&EntityRef::of_entity(&e)), Some(e));
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_kept_decoded() {
        // JSON maps need string keys: this one cannot be encoded.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let kept = Kept::new(map.clone());
        assert!(matches!(kept, Kept::Value(_)));
        assert_eq!(kept.get(), Some(map));
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
        assert!(!store.has_entity(&r));
        assert!(store.status(&r).is_some(), "the status stays");
        assert_eq!(store.orphan_statuses(), vec![r.clone()]);
        assert_eq!(store.entries().count(), 1);
        store.remove(&r);
        assert!(store.orphan_statuses().is_empty());
    }
}
