//! `KvStore`: the `jetstream_kv` store. Entities live under `<type>.<workspace>.<name>` and
//! statuses under `status.<type>.<workspace>.<name>` in the component's bucket; the store loads
//! them at start, serves reads from memory and writes behind through one writer task.
//!
//! Alone (no election) the component is the bucket's only writer. Replicated, the store has a
//! mode: a *follower* never writes and keeps its copy current by watching the bucket (so every
//! replica answers queries); the *leader* writes its fence first (see `bucket::write_fence`),
//! catches its copy up to it, stops watching, and fences every write on it, so JetStream
//! refuses what a deposed leader still tries to write. A replica that stops leading takes a
//! fresh snapshot, since its copy may hold writes that never landed.

mod bucket;
mod write_queue;
mod writer;

use std::collections::HashMap;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use operator_contract::election::FENCE_KEY;
use operator_contract::subject::parse_entity_kv_key;
use operator_contract::{Entity, EntityStatus};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub(crate) use self::bucket::{open_or_create, snapshot, write_fence, Change, Snapshot};
pub(crate) use self::writer::WriteFence;
use self::writer::{WriteValue, WriterCommand};
use super::memory::Kept;
use super::{
    EntityRef, MemoryStore, StoreError, StoreFlush, Tombstone, STATUS_KEY_PREFIX,
    TOMBSTONE_KEY_PREFIX,
};
use crate::election::Fence;

/// What the store's tasks tell the controller.
#[derive(Debug)]
pub(crate) enum StoreEvent {
    /// The watch of the bucket saw these changes.
    Changed {
        generation: u64,
        changes: Vec<Change>,
    },
    /// A write fenced at `sequence` was refused: this replica no longer leads.
    Refused { sequence: u64, reason: String },
}

/// Who writes the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// This component alone (no election): plain writes.
    Sole,
    /// Another replica, or nobody: no writes, the copy follows the bucket.
    Following,
    /// This replica, fenced.
    Leading(WriteFence),
}

/// The store kept in a JetStream KV bucket, with an in-memory copy for reads.
#[derive(Debug)]
pub struct KvStore {
    bucket: String,
    kv: kv::Store,
    cache: MemoryStore,
    /// The revision of each key in the copy, while following.
    revisions: HashMap<String, u64>,
    writer: mpsc::UnboundedSender<WriterCommand>,
    pending: Vec<super::Ticket>,
    mode: Mode,
    events: Option<mpsc::UnboundedSender<StoreEvent>>,
    /// Changes of an older watch are ignored.
    generation: u64,
    watcher: Option<JoinHandle<()>>,
    /// The highest revision the watch has delivered.
    watched_up_to: u64,
}

impl KvStore {
    /// Opens (or creates) `bucket` with `replicas` and loads it. Without an election the store is its only
    /// writer; with one it follows the bucket, and the controller reads the returned events.
    pub(crate) async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        fence: Fence,
    ) -> Result<(Self, Option<mpsc::UnboundedReceiver<StoreEvent>>), StoreError> {
        let kv = bucket::open(js, bucket, replicas).await?;
        let snapshot = bucket::snapshot(&kv).await?;
        let (events, receiver) = if fence.is_elected() {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let writer = writer::spawn(js.clone(), kv.clone(), fence, events.clone());
        let mut store = Self {
            bucket: bucket.to_string(),
            kv,
            cache: MemoryStore::default(),
            revisions: HashMap::new(),
            writer,
            pending: Vec::new(),
            mode: if events.is_some() {
                Mode::Following
            } else {
                Mode::Sole
            },
            events,
            generation: 0,
            watcher: None,
            watched_up_to: 0,
        };
        store.follow_from(snapshot);
        if store.mode == Mode::Sole {
            store.remove_orphans();
        }
        info!(bucket = %bucket, entities = store.cache.len(), mode = ?store.mode, "entity store loaded");
        Ok((store, receiver))
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(super) fn cache(&self) -> &MemoryStore {
        &self.cache
    }

    /// The bucket, for the snapshot and fence operations run outside the controller.
    pub(crate) fn kv(&self) -> kv::Store {
        self.kv.clone()
    }

    /// Who writes, as far as this store knows.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// True while a watch keeps the copy current.
    pub(crate) fn is_watching(&self) -> bool {
        self.watcher.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// The highest revision the watch has delivered.
    pub(crate) fn watched_up_to(&self) -> u64 {
        self.watched_up_to
    }

    /// Starts leading with `fence` (already written and watched): stops following and fences
    /// every write from now on.
    pub(crate) fn lead(&mut self, fence: WriteFence) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.generation += 1;
        self.revisions.clear();
        self.mode = Mode::Leading(fence);
        self.remove_orphans();
    }

    /// Stops leading: no more writes; the copy is replaced by the next [`Snapshot`].
    pub(crate) fn stop_leading(&mut self) {
        if matches!(self.mode, Mode::Leading(_)) {
            self.mode = Mode::Following;
        }
    }

    /// Replaces the copy with `snapshot` and follows the bucket from there.
    pub(crate) fn follow_from(&mut self, snapshot: Snapshot) {
        if matches!(self.mode, Mode::Leading(_)) {
            return;
        }
        self.cache = snapshot.cache;
        self.revisions = snapshot.revisions;
        self.watched_up_to = snapshot.last_sequence;
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.generation += 1;
        if let (Mode::Following, Some(events)) = (self.mode, &self.events) {
            self.watcher = Some(bucket::watch(
                self.kv.clone(),
                snapshot.last_sequence + 1,
                self.generation,
                events.clone(),
            ));
        }
    }

    /// Applies watched changes to the copy while following.
    pub(crate) fn apply(&mut self, generation: u64, changes: Vec<Change>) {
        if generation != self.generation {
            return;
        }
        for change in changes {
            self.watched_up_to = self.watched_up_to.max(change.revision);
            if self.mode != Mode::Following || change.key == FENCE_KEY {
                continue;
            }
            let known = self.revisions.get(&change.key).copied().unwrap_or(0);
            if change.revision <= known {
                continue;
            }
            self.revisions.insert(change.key.clone(), change.revision);
            match change.value {
                Some(value) => decode_into(&mut self.cache, &change.key, &value, &self.bucket),
                None => remove_key(&mut self.cache, &change.key),
            }
        }
    }

    pub(super) fn put_entity(&mut self, entity: Entity) {
        let r = EntityRef::of_entity(&entity);
        let kept = Kept::new(entity);
        let Some(bytes) = self.encoded(&kept) else {
            return;
        };
        if !self.write(r.entity_kv_key(), Some(bytes)) {
            return;
        }
        if self.cache.tombstone(&r).is_some() && !self.write(r.tombstone_kv_key(), None) {
            return;
        }
        self.cache.put_kept_entity(r, kept);
    }

    pub(super) fn put_status(&mut self, status: EntityStatus) {
        let r = EntityRef::of_status(&status);
        let kept = Kept::new(status);
        let Some(bytes) = self.encoded(&kept) else {
            return;
        };
        if self.write(r.status_kv_key(), Some(bytes)) {
            self.cache.put_kept_status(r, kept);
        }
    }

    pub(super) fn remove(&mut self, entity: &EntityRef) {
        if self.cache.has_entity(entity) && !self.write(entity.entity_kv_key(), None) {
            return;
        }
        if self.cache.has_status(entity) && !self.write(entity.status_kv_key(), None) {
            return;
        }
        self.cache.remove(entity);
    }

    /// Removes a deleted entity and its status, and writes its tombstone first: a restart
    /// between the writes finds the entity still there and cleans it up again.
    pub(super) fn bury(&mut self, entity: &EntityRef, tombstone: Tombstone) {
        let Some(bytes) = self.encoded(&Kept::new(tombstone.clone())) else {
            return;
        };
        if !self.write(entity.tombstone_kv_key(), Some(bytes)) {
            return;
        }
        self.cache.put_tombstone(entity.clone(), tombstone);
        self.remove(entity);
    }

    pub(super) fn remove_tombstone(&mut self, entity: &EntityRef) {
        if self.write(entity.tombstone_kv_key(), None) {
            self.cache.remove_tombstone(entity);
        }
    }

    /// Makes the next flush wait until what the copy holds for `entity` is in the bucket, and
    /// fail if it cannot be (a write of this term was refused). A command found stale against
    /// the copy is acknowledged only then, or a refused write would swallow it.
    pub(super) fn confirm(&mut self, entity: &EntityRef) {
        let Some(fence) = self.writable() else {
            return;
        };
        let key = entity.entity_kv_key();
        self.send_to_writer(|done| WriterCommand::Confirm { key, fence, done });
    }

    pub(super) fn take_flush(&mut self) -> StoreFlush {
        StoreFlush::new(std::mem::take(&mut self.pending))
    }

    pub(super) fn flush_all(&mut self) -> StoreFlush {
        let (done, ticket) = oneshot::channel();
        // A stopped writer drops `done`, and the flush reports the store closed.
        let _ = self.writer.send(WriterCommand::Idle(done));
        StoreFlush::new(vec![ticket])
    }

    /// The bytes to write for `kept`: its JSON, shared in content with the copy. A value that
    /// could not be encoded is not written (never as empty bytes): the next flush fails.
    fn encoded<T>(&mut self, kept: &Kept<T>) -> Option<Bytes> {
        match kept {
            Kept::Json(json) => Some(Bytes::copy_from_slice(json)),
            Kept::Value(_) => {
                let failed = StoreFlush::failed(StoreError::Unencodable);
                self.pending.extend(failed.into_tickets());
                None
            }
        }
    }

    /// Queues a write; false (and a refused flush) when this replica may not write.
    fn write(&mut self, key: String, value: Option<Bytes>) -> bool {
        let Some(fence) = self.writable() else {
            return false;
        };
        self.send_to_writer(|done| WriterCommand::Write {
            key,
            value: WriteValue { value, fence },
            done,
        });
        true
    }

    /// The fence writes are made with now (none when alone), or `None` and a refused flush
    /// when this replica may not write.
    fn writable(&mut self) -> Option<Option<WriteFence>> {
        match self.mode {
            Mode::Sole => Some(None),
            Mode::Leading(fence) => Some(Some(fence)),
            Mode::Following => {
                let refused = StoreFlush::failed(StoreError::Fenced {
                    reason: "this replica is not the leader".into(),
                });
                self.pending.extend(refused.into_tickets());
                None
            }
        }
    }

    /// Sends the writer a command whose completion the next flush waits for.
    fn send_to_writer(&mut self, command: impl FnOnce(writer::Done) -> WriterCommand) {
        let (done, ticket) = oneshot::channel();
        // A stopped writer drops `done`, and the flush reports the store closed.
        let _ = self.writer.send(command(done));
        self.pending.push(ticket);
    }

    fn remove_orphans(&mut self) {
        for orphan in self.cache.orphan_statuses() {
            debug!(entity = %orphan, "status without entity removed");
            self.cache.remove_status(&orphan);
            self.write(orphan.status_kv_key(), None);
        }
        // Nobody waits for the clean-up.
        drop(self.take_flush());
    }
}

/// Puts the value of KV key `key` into `cache`: a status, a tombstone or an entity, by its key.
pub(crate) fn decode_into(cache: &mut MemoryStore, key: &str, value: &[u8], bucket: &str) {
    if let Some(r) = tombstone_ref(key) {
        if let Some(tombstone) = decode::<Tombstone>(key, value) {
            cache.put_tombstone(r, tombstone);
        }
        return;
    }
    if let Some(rest) = key.strip_prefix(STATUS_KEY_PREFIX) {
        if parse_entity_kv_key(rest).is_some() {
            if let Some(status) = decode::<EntityStatus>(key, value) {
                cache.put_kept_status(EntityRef::of_status(&status), Kept::Json(value.into()));
            }
            return;
        }
    }
    if parse_entity_kv_key(key).is_some() {
        if let Some(entity) = decode::<Entity>(key, value) {
            cache.put_kept_entity(EntityRef::of_entity(&entity), Kept::Json(value.into()));
        }
    } else {
        warn!(bucket = %bucket, kv.key = %key, "unknown key in entity bucket ignored");
    }
}

/// The entity whose tombstone KV key `key` is, if it is one.
fn tombstone_ref(key: &str) -> Option<EntityRef> {
    let (resource_type, entity_key) = parse_entity_kv_key(key.strip_prefix(TOMBSTONE_KEY_PREFIX)?)?;
    Some(EntityRef::new(resource_type, entity_key))
}

/// Removes what KV key `key` held from `cache`.
fn remove_key(cache: &mut MemoryStore, key: &str) {
    if let Some(r) = tombstone_ref(key) {
        cache.remove_tombstone(&r);
        return;
    }
    let (rest, status) = match key.strip_prefix(STATUS_KEY_PREFIX) {
        Some(rest) => (rest, true),
        None => (key, false),
    };
    if let Some((resource_type, entity_key)) = parse_entity_kv_key(rest) {
        let r = EntityRef::new(resource_type, entity_key);
        if status {
            cache.remove_status(&r);
        } else {
            cache.remove_entity(&r);
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    serde_json::from_slice(value)
        .map_err(|e| warn!(kv.key = %key, error = %e, "unreadable value in entity bucket ignored"))
        .ok()
}

#[cfg(test)]
mod tests {
    use operator_nats_cluster::test_server::TestNatsServer;

    use super::*;
    use crate::store::memory::tests::entity;
    use crate::store::EntityStore;

    async fn open(js: &jetstream::Context) -> EntityStore {
        let (store, _) = KvStore::open(js, "entities-tombstones", 1, Fence::unelected())
            .await
            .expect("store opened");
        EntityStore::JetStreamKv(Box::new(store))
    }

    #[tokio::test]
    async fn a_tombstone_is_kept_in_the_bucket_until_the_entity_is_created_again() {
        let nats = TestNatsServer::start();
        let client = async_nats::connect(nats.url()).await.expect("connected");
        let js = jetstream::new(client);

        let mut store = open(&js).await;
        let deleted = Entity {
            deleting: true,
            ..entity("run-1", 2)
        };
        let r = EntityRef::of_entity(&deleted);
        store.put_entity(deleted.clone());
        store.put_status(EntityStatus::pending(deleted.key.clone(), "demo", "job"));
        store.bury(&r);
        store.take_flush().wait().await.expect("durable");
        assert_eq!(store.entity(&r), None);

        // Another replica, or this one after a restart, loads the bucket.
        let reopened = open(&js).await;
        assert_eq!(reopened.entity(&r), None);
        assert_eq!(reopened.status(&r), None);
        let tombstone = reopened.tombstone(&r).expect("the tombstone is kept");
        assert_eq!(
            (tombstone.generation, tombstone.command),
            (2, deleted.last_command)
        );

        store.put_entity(entity("run-1", 1));
        store.take_flush().wait().await.expect("durable");
        let reopened = open(&js).await;
        assert_eq!(reopened.tombstone(&r), None, "gone with the new entity");
        assert_eq!(reopened.entity(&r).map(|e| e.generation), Some(1));
    }
}
