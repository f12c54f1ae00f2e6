//! The election's KV operations on its cluster's bucket: open it, read and watch the lease key,
//! take the lease (create-if-absent, or compare-and-set over an expired revision), renew it
//! (compare-and-set), release it (delete, compare-and-set), and write or remove a heartbeat.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, stream::StorageType};
use bytes::Bytes;
use operator_contract::election::{LeaseRecord, ReplicaHeartbeat};

use super::state::Observation;
use super::ElectionError;
use operator_nats_cluster::open_or_create_bucket as open_or_create;

/// How long dead replicas' heartbeats (and a lease nobody renewed) stay in the bucket.
const BUCKET_MAX_AGE: Duration = Duration::from_secs(3600);

/// How a take or a renewal ended.
#[derive(Debug)]
pub(crate) enum Write {
    /// Written at this revision.
    Done(u64),
    /// The key was not at the expected revision (or no longer absent): someone else wrote.
    Conflict,
}

/// Opens (or creates) the bucket `name` with `replicas`.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, ElectionError> {
    let config = kv::Config {
        bucket: name.to_string(),
        description: "leader election: leases and replica heartbeats".into(),
        history: 1,
        max_age: BUCKET_MAX_AGE,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    open_or_create(js, config)
        .await
        .map_err(|reason| ElectionError::Bucket {
            bucket: name.to_string(),
            reason,
        })
}

/// What the lease key holds now.
pub(crate) async fn read(kv: &kv::Store, key: &str) -> Result<Observation, String> {
    let entry = kv.entry(key).await.map_err(|e| e.to_string())?;
    Ok(observation(entry))
}

/// An entry of the lease key (from a read or the watch) as the campaign sees it.
pub(crate) fn observation(entry: Option<kv::Entry>) -> Observation {
    match entry {
        None => Observation::Free { revision: 0 },
        Some(entry) if entry.operation != Operation::Put => Observation::Free {
            revision: entry.revision,
        },
        Some(entry) => Observation::Held {
            revision: entry.revision,
            holder: serde_json::from_slice::<LeaseRecord>(&entry.value)
                .map(|lease| lease.holder)
                .unwrap_or_default(),
        },
    }
}

/// Takes a free lease: writes `lease` only if the key is absent or deleted.
pub(crate) async fn create(
    kv: &kv::Store,
    key: &str,
    lease: &LeaseRecord,
) -> Result<Write, String> {
    match kv.create(key, encode(lease)).await {
        Ok(revision) => Ok(Write::Done(revision)),
        // Also when a create over a deleted key meets another replica's create.
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Write::Conflict),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `lease` only if the key is still at `revision`: a takeover or a renewal.
pub(crate) async fn update(
    kv: &kv::Store,
    key: &str,
    lease: &LeaseRecord,
    revision: u64,
) -> Result<Write, String> {
    match kv.update(key, encode(lease), revision).await {
        Ok(revision) => Ok(Write::Done(revision)),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Write::Conflict),
        Err(e) => Err(e.to_string()),
    }
}

/// Deletes the lease if it is still at `revision` (a lease taken over is left alone).
pub(crate) async fn release(kv: &kv::Store, key: &str, revision: u64) -> Result<(), String> {
    kv.delete_expect_revision(key, Some(revision))
        .await
        .map_err(|e| e.to_string())
}

/// Writes this replica's heartbeat.
pub(crate) async fn heartbeat(
    kv: &kv::Store,
    key: &str,
    heartbeat: &ReplicaHeartbeat,
) -> Result<(), String> {
    kv.put(key, encode(heartbeat))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Removes this replica's heartbeat (it is stopping).
pub(crate) async fn remove_heartbeat(kv: &kv::Store, key: &str) -> Result<(), String> {
    kv.delete(key).await.map_err(|e| e.to_string())
}

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    // Plain records with string keys: serializing cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
