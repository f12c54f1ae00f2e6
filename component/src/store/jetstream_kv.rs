//! `KvStore`: the `jetstream_kv` store. Entities live under `<type>.<workspace>.<name>` and
//! statuses under `status.<type>.<workspace>.<name>` in the component's bucket; the store loads
//! them all at start, serves reads from memory and writes behind through one writer task that
//! pipelines writes across keys and keeps them ordered per key.

mod write_queue;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use operator_shared::subject::parse_entity_kv_key;
use operator_shared::{Entity, EntityStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn, Instrument};

use self::write_queue::{WriteQueue, WriteStart};
use super::{EntityRef, MemoryStore, StoreError, StoreFlush, STATUS_KEY_PREFIX};
use crate::backoff::Backoff;

/// How many values are read at once when the store loads.
const LOAD_CONCURRENCY: usize = 64;
/// The delays between retries of a failed write.
const WRITE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

enum WriterCommand {
    Write {
        key: String,
        value: Option<Bytes>,
        done: oneshot::Sender<()>,
    },
    Idle(oneshot::Sender<()>),
}

/// The store kept in a JetStream KV bucket, with an in-memory copy for reads.
#[derive(Debug)]
pub struct KvStore {
    bucket: String,
    cache: MemoryStore,
    writer: mpsc::UnboundedSender<WriterCommand>,
    pending: Vec<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for WriterCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Write { key, value, .. } => f
                .debug_struct("Write")
                .field("key", key)
                .field("delete", &value.is_none())
                .finish(),
            Self::Idle(_) => f.write_str("Idle"),
        }
    }
}

impl KvStore {
    /// Opens (or creates) `bucket`, loads every entity and status in it and starts the writer.
    pub(crate) async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, StoreError> {
        let kv = open_bucket(js, bucket).await?;
        let cache = load(&kv, bucket).await?;
        let (writer, commands) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(kv, commands));
        let mut store = Self {
            bucket: bucket.to_string(),
            cache,
            writer,
            pending: Vec::new(),
        };
        for orphan in store.cache.orphan_statuses() {
            debug!(entity = %orphan, "status without entity removed");
            store.cache.remove_status(&orphan);
            store.write(orphan.status_kv_key(), None);
        }
        // Nobody waits for the clean-up.
        drop(store.take_flush());
        info!(bucket = %bucket, entities = store.cache.len(), "entity store loaded");
        Ok(store)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(super) fn cache(&self) -> &MemoryStore {
        &self.cache
    }

    pub(super) fn put_entity(&mut self, entity: Entity) {
        let r = EntityRef::of_entity(&entity);
        self.write(r.entity_kv_key(), Some(encode(&entity)));
        self.cache.put_entity(entity);
    }

    pub(super) fn put_status(&mut self, status: EntityStatus) {
        let r = EntityRef::of_status(&status);
        self.write(r.status_kv_key(), Some(encode(&status)));
        self.cache.put_status(status);
    }

    pub(super) fn remove(&mut self, entity: &EntityRef) {
        if self.cache.entity(entity).is_some() {
            self.write(entity.entity_kv_key(), None);
        }
        if self.cache.status(entity).is_some() {
            self.write(entity.status_kv_key(), None);
        }
        self.cache.remove(entity);
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

    fn write(&mut self, key: String, value: Option<Bytes>) {
        let (done, ticket) = oneshot::channel();
        // A stopped writer drops `done`, and the flush reports the store closed.
        let _ = self.writer.send(WriterCommand::Write { key, value, done });
        self.pending.push(ticket);
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // Entities and statuses are plain data with string keys: serializing cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_string(),
            description: "entities and statuses of an operator component".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => {
            info!(bucket = %bucket, "entity bucket created");
            Ok(store)
        }
        // Another replica may have created it in the meantime.
        Err(create_error) => {
            js.get_key_value(bucket)
                .await
                .map_err(|_| StoreError::BucketUnavailable {
                    bucket: bucket.to_string(),
                    reason: create_error.to_string(),
                })
        }
    }
}

async fn load(kv: &kv::Store, bucket: &str) -> Result<MemoryStore, StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::LoadFailed {
        bucket: bucket.to_string(),
        reason: e.to_string(),
    };
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| failed(&e))?
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    let values: Vec<(String, Option<Bytes>)> = futures::stream::iter(keys)
        .map(|key| async move {
            let value = kv.get(key.as_str()).await;
            value.map(|v| (key, v))
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;

    let mut cache = MemoryStore::default();
    for (key, value) in values {
        let Some(value) = value else { continue };
        if let Some(rest) = key.strip_prefix(STATUS_KEY_PREFIX) {
            if parse_entity_kv_key(rest).is_some() {
                if let Some(status) = decode::<EntityStatus>(&key, &value) {
                    cache.put_status(status);
                }
                continue;
            }
        }
        if parse_entity_kv_key(&key).is_some() {
            if let Some(entity) = decode::<Entity>(&key, &value) {
                cache.put_entity(entity);
            }
        } else {
            warn!(bucket = %bucket, kv.key = %key, "unknown key in entity bucket ignored");
        }
    }
    Ok(cache)
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    serde_json::from_slice(value)
        .map_err(|e| warn!(kv.key = %key, error = %e, "unreadable value in entity bucket ignored"))
        .ok()
}

/// Writes behind for the store until it is dropped and every write is durable.
async fn run_writer(kv: kv::Store, mut commands: mpsc::UnboundedReceiver<WriterCommand>) {
    let mut queue: WriteQueue<oneshot::Sender<()>> = WriteQueue::default();
    let mut writes = FuturesUnordered::new();
    let mut idle_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            command = commands.recv(), if open => match command {
                Some(WriterCommand::Write { key, value, done }) => {
                    if let Some(start) = queue.submit(key, value, done) {
                        writes.push(write(kv.clone(), start));
                    }
                }
                Some(WriterCommand::Idle(done)) => idle_waiters.push(done),
                None => open = false,
            },
            Some((key, ok)) = writes.next(), if !writes.is_empty() => {
                let (durable, next) = queue.completed(&key, ok);
                for done in durable {
                    let _ = done.send(());
                }
                if let Some(start) = next {
                    writes.push(write(kv.clone(), start));
                }
            }
            else => {}
        }
        if queue.is_idle() {
            for done in idle_waiters.drain(..) {
                let _ = done.send(());
            }
            if !open {
                break;
            }
        }
    }
    debug!("entity store writer stopped");
}

async fn write(kv: kv::Store, start: WriteStart) -> (String, bool) {
    if start.failures > 0 {
        tokio::time::sleep(WRITE_BACKOFF.delay_with_random_jitter(start.failures)).await;
    }
    let span = info_span!("store.put", kv.key = %start.key, delete = start.value.is_none(), failures = start.failures);
    let result = async {
        match start.value {
            Some(value) => kv
                .put(start.key.as_str(), value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => kv
                .delete(start.key.as_str())
                .await
                .map_err(|e| e.to_string()),
        }
    }
    .instrument(span)
    .await;
    if let Err(e) = &result {
        warn!(kv.key = %start.key, failures = start.failures + 1, error = %e, "entity store write failed; retrying");
    }
    (start.key, result.is_ok())
}
