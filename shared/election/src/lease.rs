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

/// A KV operation on the lease or a heartbeat that failed (NATS away, a timeout, a stream
/// error); the campaign retries on its next tick.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    /// The lease key could not be read.
    #[error("cannot read {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: kv::EntryError,
    },
    /// Taking a free lease failed otherwise than by losing the race.
    #[error("cannot take {key}: {source}")]
    Take {
        key: String,
        #[source]
        source: kv::CreateError,
    },
    /// A takeover or renewal failed otherwise than by a newer revision.
    #[error("cannot write {key}: {source}")]
    Update {
        key: String,
        #[source]
        source: kv::UpdateError,
    },
    /// The lease could not be released, or a heartbeat removed.
    #[error("cannot delete {key}: {source}")]
    Delete {
        key: String,
        #[source]
        source: kv::DeleteError,
    },
    /// A heartbeat could not be written.
    #[error("cannot write the heartbeat {key}: {source}")]
    Heartbeat {
        key: String,
        #[source]
        source: kv::PutError,
    },
    /// A record could not be encoded.
    #[error("cannot encode the record of {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

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
pub(crate) async fn read(kv: &kv::Store, key: &str) -> Result<Observation, LeaseError> {
    let entry = kv.entry(key).await.map_err(|source| LeaseError::Read {
        key: key.to_string(),
        source,
    })?;
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
) -> Result<Write, LeaseError> {
    match kv.create(key, encode(key, lease)?).await {
        Ok(revision) => Ok(Write::Done(revision)),
        // Also when a create over a deleted key meets another replica's create.
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Write::Conflict),
        Err(source) => Err(LeaseError::Take {
            key: key.to_string(),
            source,
        }),
    }
}

/// Writes `lease` only if the key is still at `revision`: a takeover or a renewal.
pub(crate) async fn update(
    kv: &kv::Store,
    key: &str,
    lease: &LeaseRecord,
    revision: u64,
) -> Result<Write, LeaseError> {
    match kv.update(key, encode(key, lease)?, revision).await {
        Ok(revision) => Ok(Write::Done(revision)),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Write::Conflict),
        Err(source) => Err(LeaseError::Update {
            key: key.to_string(),
            source,
        }),
    }
}

/// Deletes the lease if it is still at `revision` (a lease taken over is left alone).
pub(crate) async fn release(kv: &kv::Store, key: &str, revision: u64) -> Result<(), LeaseError> {
    kv.delete_expect_revision(key, Some(revision))
        .await
        .map_err(|source| LeaseError::Delete {
            key: key.to_string(),
            source,
        })
}

/// Writes this replica's heartbeat.
pub(crate) async fn heartbeat(
    kv: &kv::Store,
    key: &str,
    heartbeat: &ReplicaHeartbeat,
) -> Result<(), LeaseError> {
    kv.put(key, encode(key, heartbeat)?)
        .await
        .map(|_| ())
        .map_err(|source| LeaseError::Heartbeat {
            key: key.to_string(),
            source,
        })
}

/// Removes this replica's heartbeat (it is stopping).
pub(crate) async fn remove_heartbeat(kv: &kv::Store, key: &str) -> Result<(), LeaseError> {
    kv.delete(key).await.map_err(|source| LeaseError::Delete {
        key: key.to_string(),
        source,
    })
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Bytes, LeaseError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| LeaseError::Encode {
            key: key.to_string(),
            source,
        })
}
