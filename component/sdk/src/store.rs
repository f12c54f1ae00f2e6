//! `EntityStore`: the entities a component was commanded and the statuses it reported, kept in
//! memory or in a JetStream KV bucket (chosen by `OPERATOR_STATE_STORE_TYPE`).
//!
//! The store is owned by the controller actor and read and written synchronously; the KV store
//! keeps an in-memory copy and writes behind to its bucket, and [`StoreFlush`] tells when the
//! writes of one operation are durable (a command is acknowledged only then).

mod jetstream_kv;
pub(crate) mod memory;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use operator_contract::subject::entity_kv_key;
use operator_contract::{Entity, EntityKey, EntityStatus};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use jetstream_kv::KvStore;
pub(crate) use jetstream_kv::{
    open_or_create, snapshot, write_fence, Mode, Snapshot, StoreEvent, WriteFence,
};
pub use memory::MemoryStore;

/// The KV key prefix under which statuses are kept, before the entity's key.
pub const STATUS_KEY_PREFIX: &str = "status.";
/// The KV key prefix under which the tombstones of deleted entities are kept.
pub const TOMBSTONE_KEY_PREFIX: &str = "deleted.";
/// How long a deleted entity is remembered: far longer than a command can wait for its
/// redelivery (the ack wait, or a new leader taking the consumer over).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// What is kept of an entity once it is deleted and cleaned up, so that a command older than
/// its delete (a create whose acknowledgement was lost, redelivered after the delete) is known
/// stale rather than taken for a new entity. Envelope ids are time-ordered (UUIDv7): a command
/// of a resource created again after the delete carries a later id than the delete's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// The generation of the delete.
    pub generation: u64,
    /// The envelope id of the delete command.
    pub command: Uuid,
    pub deleted_at: DateTime<Utc>,
}

impl Tombstone {
    /// The tombstone of an entity deleted now.
    pub fn of(entity: &Entity) -> Self {
        Self {
            generation: entity.generation,
            command: entity.last_command,
            deleted_at: Utc::now(),
        }
    }

    /// True when the command with envelope id `command` was sent before the delete (or is it).
    pub fn precedes(&self, command: Uuid) -> bool {
        command <= self.command
    }
}

/// Identifies an entity within a component: its resource type and `workspace/name` key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub resource_type: String,
    pub key: EntityKey,
}

impl EntityRef {
    /// The reference of `key` of `resource_type`.
    pub fn new(resource_type: impl Into<String>, key: EntityKey) -> Self {
        Self {
            resource_type: resource_type.into(),
            key,
        }
    }

    /// The reference of an entity.
    pub fn of_entity(entity: &Entity) -> Self {
        Self::new(entity.resource_type.clone(), entity.key.clone())
    }

    /// The reference of the entity a status is about.
    pub fn of_status(status: &EntityStatus) -> Self {
        Self::new(status.resource_type.clone(), status.key.clone())
    }

    /// The KV key the entity is kept under: `<type>.<workspace>.<name>`.
    pub fn entity_kv_key(&self) -> String {
        entity_kv_key(&self.resource_type, &self.key)
    }

    /// The KV key the entity's status is kept under: `status.<type>.<workspace>.<name>`.
    pub fn status_kv_key(&self) -> String {
        format!("{STATUS_KEY_PREFIX}{}", self.entity_kv_key())
    }

    /// The KV key the entity's tombstone is kept under: `deleted.<type>.<workspace>.<name>`.
    pub fn tombstone_kv_key(&self) -> String {
        format!("{TOMBSTONE_KEY_PREFIX}{}", self.entity_kv_key())
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_type, self.key)
    }
}

/// What went wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The KV bucket could neither be opened nor created.
    #[error("cannot open or create KV bucket {bucket}: {reason}")]
    BucketUnavailable { bucket: String, reason: String },
    /// The KV bucket's contents could not be listed or read at start.
    #[error("cannot load KV bucket {bucket}: {reason}")]
    LoadFailed { bucket: String, reason: String },
    /// A value could not be encoded as JSON, so it was not written (no type of the contract
    /// fails to encode; this stands for a bug, never for empty bytes written instead).
    #[error("a value could not be encoded for the bucket")]
    Unencodable,
    /// The store stopped before a write was durable.
    #[error("the store stopped before the write was durable")]
    Closed,
    /// NATS did not answer a store operation.
    #[error("the store is unavailable: {reason}")]
    Unavailable { reason: String },
    /// The write was refused: this replica does not lead (or no longer does).
    #[error("write refused: {reason}")]
    Fenced { reason: String },
}

/// The answer a write's waiter gets.
pub(crate) type Ticket = oneshot::Receiver<Result<(), StoreError>>;

/// Resolves when the writes it stands for are durable (at once for the memory store).
#[derive(Debug, Default)]
#[must_use = "a flush does nothing unless awaited"]
pub struct StoreFlush {
    tickets: Vec<Ticket>,
}

impl StoreFlush {
    /// A flush with nothing to wait for.
    pub fn done() -> Self {
        Self::default()
    }

    pub(crate) fn new(tickets: Vec<Ticket>) -> Self {
        Self { tickets }
    }

    /// A flush that fails at once with `error`.
    pub(crate) fn failed(error: StoreError) -> Self {
        let (tx, ticket) = oneshot::channel();
        let _ = tx.send(Err(error));
        Self {
            tickets: vec![ticket],
        }
    }

    pub(crate) fn into_tickets(self) -> Vec<Ticket> {
        self.tickets
    }

    /// True when there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Waits until every write is durable; the first refusal or failure otherwise.
    pub async fn wait(self) -> Result<(), StoreError> {
        for ticket in self.tickets {
            ticket.await.map_err(|_| StoreError::Closed)??;
        }
        Ok(())
    }
}

/// The store of a component, in memory or in a JetStream KV bucket.
#[derive(Debug)]
pub enum EntityStore {
    /// Kept in the process only.
    Memory(MemoryStore),
    /// Kept in memory and written behind to a KV bucket.
    JetStreamKv(Box<KvStore>),
}

impl Default for EntityStore {
    fn default() -> Self {
        Self::Memory(MemoryStore::default())
    }
}

impl EntityStore {
    fn cache(&self) -> &MemoryStore {
        match self {
            Self::Memory(store) => store,
            Self::JetStreamKv(store) => store.cache(),
        }
    }

    /// The stored entity, if any, decoded (the store keeps values encoded: see `MemoryStore`).
    pub fn entity(&self, entity: &EntityRef) -> Option<Entity> {
        self.cache().entity(entity)
    }

    /// The stored status of an entity, if any, decoded.
    pub fn status(&self, entity: &EntityRef) -> Option<EntityStatus> {
        self.cache().status(entity)
    }

    /// True when an entity is stored under `entity` (nothing is decoded).
    pub fn has_entity(&self, entity: &EntityRef) -> bool {
        self.cache().has_entity(entity)
    }

    /// What is remembered of a deleted entity, if it was deleted lately (see [`Tombstone`]).
    pub fn tombstone(&self, entity: &EntityRef) -> Option<&Tombstone> {
        self.cache().tombstone(entity)
    }

    /// Stores an entity, replacing the one with the same reference (and the tombstone of a
    /// deleted one: this is a new one).
    pub fn put_entity(&mut self, entity: Entity) {
        match self {
            Self::Memory(store) => store.put_entity(entity),
            Self::JetStreamKv(store) => store.put_entity(entity),
        }
    }

    /// Stores a status, replacing the one of the same entity.
    pub fn put_status(&mut self, status: EntityStatus) {
        match self {
            Self::Memory(store) => store.put_status(status),
            Self::JetStreamKv(store) => store.put_status(status),
        }
    }

    /// Removes an entity and its status.
    pub fn remove(&mut self, entity: &EntityRef) {
        match self {
            Self::Memory(store) => store.remove(entity),
            Self::JetStreamKv(store) => store.remove(entity),
        }
    }

    /// Removes a deleted entity and its status, and keeps its tombstone.
    pub(crate) fn bury(&mut self, entity: &EntityRef) {
        let Some(tombstone) = self.entity(entity).as_ref().map(Tombstone::of) else {
            return;
        };
        match self {
            Self::Memory(store) => {
                store.remove(entity);
                store.put_tombstone(entity.clone(), tombstone);
            }
            Self::JetStreamKv(store) => store.bury(entity, tombstone),
        }
    }

    /// Forgets the entities deleted more than [`TOMBSTONE_TTL`] ago; how many.
    pub(crate) fn prune_tombstones(&mut self) -> usize {
        let ttl = chrono::Duration::from_std(TOMBSTONE_TTL).unwrap_or_default();
        let expired = self.cache().tombstones_before(Utc::now() - ttl);
        for r in &expired {
            match self {
                Self::Memory(store) => store.remove_tombstone(r),
                Self::JetStreamKv(store) => store.remove_tombstone(r),
            }
        }
        expired.len()
    }

    /// How many entities are stored.
    pub fn len(&self) -> usize {
        self.cache().len()
    }

    /// True when no entity is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stored entity with its status, decoded one at a time.
    pub fn entries(&self) -> impl Iterator<Item = (Entity, Option<EntityStatus>)> + '_ {
        self.cache().entries()
    }

    /// Makes the next flush wait for what the store holds for `entity` to be durable (see
    /// `KvStore::confirm`); nothing to wait for in memory.
    pub(crate) fn confirm(&mut self, entity: &EntityRef) {
        if let Self::JetStreamKv(store) = self {
            store.confirm(entity);
        }
    }

    /// The writes made since the last call, to wait on before acknowledging what caused them.
    pub(crate) fn take_flush(&mut self) -> StoreFlush {
        match self {
            Self::Memory(_) => StoreFlush::done(),
            Self::JetStreamKv(store) => store.take_flush(),
        }
    }

    /// The KV store, when that is the store in use.
    pub(crate) fn kv_mut(&mut self) -> Option<&mut KvStore> {
        match self {
            Self::Memory(_) => None,
            Self::JetStreamKv(store) => Some(store),
        }
    }

    /// Resolves once no write is outstanding (used at shutdown).
    pub(crate) fn flush_all(&mut self) -> StoreFlush {
        match self {
            Self::Memory(_) => StoreFlush::done(),
            Self::JetStreamKv(store) => store.flush_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_map_to_the_protocol_kv_keys() {
        let r = EntityRef::new("job", EntityKey::new("public", "run-1").expect("valid"));
        assert_eq!(r.entity_kv_key(), "job.public.run-1");
        assert_eq!(r.status_kv_key(), "status.job.public.run-1");
        assert_eq!(r.to_string(), "job/public/run-1");
    }

    #[test]
    fn tombstones_older_than_their_ttl_are_pruned_and_fresh_ones_kept() {
        let mut store = EntityStore::default();
        let (old, fresh) = (
            memory::tests::entity("old", 2),
            memory::tests::entity("fresh", 2),
        );
        for e in [&old, &fresh] {
            store.put_entity(e.clone());
            store.bury(&EntityRef::of_entity(e));
        }
        let (old, fresh) = (EntityRef::of_entity(&old), EntityRef::of_entity(&fresh));
        if let EntityStore::Memory(memory) = &mut store {
            let mut expired = memory.tombstone(&old).cloned().expect("kept");
            expired.deleted_at -= chrono::Duration::from_std(TOMBSTONE_TTL).expect("fits")
                + chrono::Duration::seconds(1);
            memory.put_tombstone(old.clone(), expired);
        }
        assert_eq!(store.prune_tombstones(), 1);
        assert_eq!(store.tombstone(&old), None);
        assert!(store.tombstone(&fresh).is_some());
    }

    #[tokio::test]
    async fn memory_writes_are_durable_at_once() {
        let mut store = EntityStore::default();
        assert!(store.is_empty());
        let flush = store.take_flush();
        assert!(flush.is_done());
        assert_eq!(flush.wait().await, Ok(()));
    }
}
