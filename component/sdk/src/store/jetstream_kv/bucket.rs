//! The entity bucket's I/O besides ordinary writes: open it, take a snapshot of it (every entity
//! and status with its revision, after noting the stream's last sequence), watch it from a
//! revision on, and write the leader's fence.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, stream::StorageType};
use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use operator_contract::election::FENCE_KEY;
pub(crate) use operator_nats_cluster::open_or_create_bucket as open_or_create;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::super::{MemoryStore, StoreError};
use super::{decode_into, StoreEvent};
use crate::election::FencedWriteError;

/// How many values are read at once when a snapshot is taken.
const LOAD_CONCURRENCY: usize = 64;
/// How many watched changes are handed to the controller at once, at most.
const WATCH_BATCH: usize = 256;
/// How long to wait before watching again after the watch failed.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// The bucket as of one moment: values with their revisions.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub cache: MemoryStore,
    pub revisions: HashMap<String, u64>,
    /// The stream's last sequence before the snapshot was read: a watch from the next one
    /// misses nothing.
    pub last_sequence: u64,
}

/// One change seen on the watch: `value` is `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub key: String,
    pub revision: u64,
    pub value: Option<Bytes>,
}

/// Opens (or creates) `bucket` with `replicas`.
pub(crate) async fn open(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        description: "entities and statuses of an operator component".into(),
        history: 1,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    open_or_create(js, config)
        .await
        .map_err(|reason| StoreError::BucketUnavailable {
            bucket: bucket.to_string(),
            reason,
        })
}

/// Reads every entity and status of the bucket with its revision.
pub(crate) async fn snapshot(kv: &kv::Store) -> Result<Snapshot, StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::LoadFailed {
        bucket: kv.name.clone(),
        reason: e.to_string(),
    };
    let last_sequence = kv
        .stream
        .get_info()
        .await
        .map_err(|e| failed(&e))?
        .state
        .last_sequence;
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| failed(&e))?
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    let entries: Vec<Option<kv::Entry>> = futures::stream::iter(keys)
        .map(|key| async move { kv.entry(key).await })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    let mut snapshot = Snapshot {
        last_sequence,
        ..Snapshot::default()
    };
    for entry in entries.into_iter().flatten() {
        if entry.operation != Operation::Put || entry.key == FENCE_KEY {
            continue;
        }
        snapshot.revisions.insert(entry.key.clone(), entry.revision);
        decode_into(&mut snapshot.cache, &entry.key, &entry.value, &kv.name);
    }
    Ok(snapshot)
}

/// Watches every key from revision `from` on, sending batches of changes tagged with
/// `generation` until the receiver goes away; a failed watch resumes after the last revision
/// it delivered.
pub(crate) fn watch(
    kv: kv::Store,
    from: u64,
    generation: u64,
    events: mpsc::UnboundedSender<StoreEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = from.max(1);
        while !events.is_closed() {
            match kv.watch_all_from_revision(next).await {
                Ok(watch) => {
                    let mut batches = watch.ready_chunks(WATCH_BATCH);
                    while let Some(batch) = batches.next().await {
                        let mut changes = Vec::with_capacity(batch.len());
                        let mut failed = false;
                        for entry in batch {
                            match entry {
                                Ok(entry) => {
                                    next = next.max(entry.revision + 1);
                                    changes.push(Change {
                                        value: (entry.operation == Operation::Put)
                                            .then_some(entry.value),
                                        key: entry.key,
                                        revision: entry.revision,
                                    });
                                }
                                Err(e) => {
                                    debug!(error = %e, "entity bucket watch failed");
                                    failed = true;
                                }
                            }
                        }
                        if !changes.is_empty()
                            && events
                                .send(StoreEvent::Changed {
                                    generation,
                                    changes,
                                })
                                .is_err()
                        {
                            return;
                        }
                        if failed {
                            break;
                        }
                    }
                }
                Err(e) => warn!(error = %e, "entity bucket not watched; retrying"),
            }
            tokio::time::sleep(REWATCH_DELAY).await;
        }
    })
}

/// Writes the fence of `term` (see `operator_election::write_fence`). Returns the fence's new
/// sequence.
pub(crate) async fn write_fence(
    kv: &kv::Store,
    term: u64,
    replica: &str,
) -> Result<u64, StoreError> {
    crate::election::write_fence(kv, term, replica)
        .await
        .map_err(|e| match e {
            FencedWriteError::Fenced { reason } => StoreError::Fenced { reason },
            FencedWriteError::Unavailable { reason } => StoreError::Unavailable { reason },
        })
}
