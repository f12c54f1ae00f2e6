//! The orchestrator's durable state: three buckets of records, for operators, resources and
//! secrets, behind [`RecordStore`]. The daemon keeps them in JetStream KV ([`JetStreamStore`]);
//! the actors' tests keep them in memory ([`MemoryStore`]).
//!
//! In JetStream, writes are compare-and-set on the revision the writer last saw, so a stale
//! writer cannot overwrite a newer record. Secret records are stored sealed (`secret_keys`),
//! never as plaintext. With replicas (`ORCHESTRATOR_REPLICA_NAME`), only the leader writes, and
//! its writes are fenced instead ([`JetStreamStore::lead`]): it writes the fence key of each
//! bucket when it takes the lead, and JetStream refuses every later write of its term once a
//! successor has written its own fence, so a deposed leader (paused, cut off) changes nothing.

mod memory;

pub use memory::MemoryStore;

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures::StreamExt;
use operator_contract::election::FENCE_KEY;
use operator_election::{
    fenced_write, write_fence, Fence, FencedOperation, FencedWriteError, WriteFence,
};
use operator_nats_cluster::open_or_create_bucket;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::records::Record;
use crate::secret_keys::{Sealed, SecretKeyring};

/// Bucket of operator records, keyed by operator name.
pub const OPERATORS_BUCKET: &str = "orchestrator-operators";
/// Bucket of resource records, keyed `<workspace>.<name>`.
pub const RESOURCES_BUCKET: &str = "orchestrator-resources";
/// Bucket of secret records, keyed `<workspace>.<name>`.
pub const SECRETS_BUCKET: &str = "orchestrator-secrets";

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A bucket could not be opened or created.
    #[error("cannot open bucket {bucket}: {reason}")]
    OpenFailed {
        bucket: &'static str,
        reason: String,
    },
    /// A create found the key already there.
    #[error("{key} already exists in {bucket}")]
    AlreadyExists { bucket: &'static str, key: String },
    /// An update found a newer revision than the writer's: someone else wrote since.
    #[error("{key} in {bucket} was changed by another writer")]
    WrongRevision { bucket: &'static str, key: String },
    /// The write was refused: this orchestrator no longer leads (a successor fenced the
    /// bucket, or its own lease lapsed).
    #[error(
        "store write of {key} in {bucket} refused: this orchestrator no longer leads ({reason})"
    )]
    Fenced {
        bucket: &'static str,
        key: String,
        reason: String,
    },
    /// Reading, writing or decoding failed.
    #[error("store {operation} of {key} in {bucket} failed: {reason}")]
    Failed {
        operation: &'static str,
        bucket: &'static str,
        key: String,
        reason: String,
    },
}

/// Which bucket a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Operators,
    Resources,
    Secrets,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Self::Operators => OPERATORS_BUCKET,
            Self::Resources => RESOURCES_BUCKET,
            Self::Secrets => SECRETS_BUCKET,
        }
    }
}

/// A record as stored, with the revision a later compare-and-set must name.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub record: Record,
    pub revision: u64,
}

/// Where the records live. Every write names the revision its writer last saw (a create, that
/// the key is new), so a stale writer is refused rather than obeyed.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// The replication factor of everything the orchestrator creates in JetStream.
    fn replicas(&self) -> usize;

    /// Every record in a bucket.
    async fn load_all(&self, bucket: Bucket) -> Result<Vec<Stored>, StoreError>;

    /// The record stored under `key`, if any.
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Stored>, StoreError>;

    /// Stores a record under a key that must not exist yet; returns its revision.
    async fn create(&self, bucket: Bucket, key: &str, record: &Record) -> Result<u64, StoreError>;

    /// Replaces a record if it is still at `revision`; returns the new revision.
    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        record: &Record,
        revision: u64,
    ) -> Result<u64, StoreError>;

    /// Removes a record if it is still at `revision`.
    async fn delete(&self, bucket: Bucket, key: &str, revision: u64) -> Result<(), StoreError>;
}

/// The store every actor holds: a clone is one reference count.
pub type Store = Arc<dyn RecordStore>;

/// Handles to the three JetStream buckets, shared by every clone (a bucket handle carries its
/// stream's whole info and a JetStream context: kilobytes).
#[derive(Clone)]
pub struct JetStreamStore {
    shared: Arc<Buckets>,
}

/// What every clone of a [`Store`] shares.
#[derive(Clone)]
struct Buckets {
    operators: kv::Store,
    resources: kv::Store,
    secrets: kv::Store,
    /// Seals and opens secret records; read-only once loaded.
    keyring: Arc<SecretKeyring>,
    replicas: usize,
    /// Set while this replica leads: its writes are fenced.
    leading: Option<Arc<Leading>>,
}

/// A leader's fences: one per bucket, and its lease's.
struct Leading {
    js: jetstream::Context,
    term: u64,
    replica: String,
    lease: Fence,
    operators: WriteFence,
    resources: WriteFence,
    secrets: WriteFence,
}

impl Leading {
    /// A fenced write of this leader to `kv`: refused once its lease has lapsed (checked first,
    /// so a leader paused past it writes nothing) or a successor has fenced the bucket.
    async fn write(
        &self,
        bucket: &'static str,
        kv: &kv::Store,
        key: &str,
        operation: FencedOperation,
        fence: WriteFence,
    ) -> Result<u64, StoreError> {
        self.lease.check().map_err(|e| StoreError::Fenced {
            bucket,
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        fenced_write(&self.js, kv, key, operation, fence)
            .await
            .map_err(|e| fence_error(bucket, key, e))
    }
}

/// A bucket the leader alone writes, outside [`RecordStore`]: fenced while replicas run.
#[derive(Clone)]
pub struct LeaderBucket {
    bucket: &'static str,
    kv: kv::Store,
    /// The leader and its fence of this bucket; `None` for a lone orchestrator.
    fenced: Option<(Arc<Leading>, WriteFence)>,
}

impl LeaderBucket {
    /// The bucket, for reads.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// Stores `value` under `key`; returns its revision.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        match &self.fenced {
            Some((leading, fence)) => {
                let operation = FencedOperation::Put(value.into());
                leading
                    .write(self.bucket, &self.kv, key, operation, *fence)
                    .await
            }
            None => self
                .kv
                .put(key, value.into())
                .await
                .map_err(|e| self.failed("put", key, e)),
        }
    }

    /// Marks `key` deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match &self.fenced {
            Some((leading, fence)) => leading
                .write(self.bucket, &self.kv, key, FencedOperation::Delete, *fence)
                .await
                .map(|_| ()),
            None => self
                .kv
                .delete(key)
                .await
                .map_err(|e| self.failed("delete", key, e)),
        }
    }

    fn failed(&self, operation: &'static str, key: &str, e: impl ToString) -> StoreError {
        StoreError::Failed {
            operation,
            bucket: self.bucket,
            key: key.to_string(),
            reason: e.to_string(),
        }
    }
}

/// A secret record as stored: nothing but the sealed JSON of the record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRecord {
    sealed: Sealed,
}

/// A record read back, and whether it should be written again sealed with the current key.
struct Decoded {
    record: Record,
    stale: bool,
}

impl JetStreamStore {
    /// Opens the buckets, creating any that is missing; secret records are sealed with `keyring`.
    pub async fn open(
        js: &jetstream::Context,
        keyring: SecretKeyring,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            shared: Arc::new(Buckets {
                operators: open_bucket(js, OPERATORS_BUCKET, replicas).await?,
                resources: open_bucket(js, RESOURCES_BUCKET, replicas).await?,
                secrets: open_bucket(js, SECRETS_BUCKET, replicas).await?,
                keyring: Arc::new(keyring),
                replicas,
                leading: None,
            }),
        })
    }

    /// Takes the lead in `term`: writes the fence of every bucket, after which every write of
    /// this store is fenced on it and on `lease` (checked before each write, so a leader paused
    /// past its lease writes nothing). Read the buckets only after this: any write of an
    /// earlier leader that landed is then in them.
    pub async fn lead(
        self,
        js: jetstream::Context,
        term: u64,
        replica: &str,
        lease: Fence,
    ) -> Result<Self, StoreError> {
        let mut fences = Vec::with_capacity(3);
        for bucket in [Bucket::Operators, Bucket::Resources, Bucket::Secrets] {
            let sequence = write_fence(self.kv(bucket), term, replica)
                .await
                .map_err(|e| fence_error(bucket.name(), FENCE_KEY, e))?;
            fences.push(WriteFence { term, sequence });
        }
        let mut buckets = Buckets::clone(&self.shared);
        buckets.leading = Some(Arc::new(Leading {
            js,
            term,
            replica: replica.to_string(),
            lease,
            operators: fences[0],
            resources: fences[1],
            secrets: fences[2],
        }));
        Ok(Self {
            shared: Arc::new(buckets),
        })
    }

    /// A write of the leader, fenced; returns the key's new revision.
    async fn fenced(
        &self,
        leading: &Leading,
        bucket: Bucket,
        key: &str,
        operation: FencedOperation,
    ) -> Result<u64, StoreError> {
        let fence = match bucket {
            Bucket::Operators => leading.operators,
            Bucket::Resources => leading.resources,
            Bucket::Secrets => leading.secrets,
        };
        leading
            .write(bucket.name(), self.kv(bucket), key, operation, fence)
            .await
    }

    /// Opens a bucket that only the leader writes besides the record buckets (the users'):
    /// while this store leads, its fence is written now and every write to it is fenced like
    /// the records'; without replicas, writes are plain.
    pub async fn leader_bucket(
        &self,
        js: &jetstream::Context,
        bucket: &'static str,
    ) -> Result<LeaderBucket, StoreError> {
        let kv = open_bucket(js, bucket, self.shared.replicas).await?;
        let fenced = match &self.shared.leading {
            None => None,
            Some(leading) => {
                let sequence = write_fence(&kv, leading.term, &leading.replica)
                    .await
                    .map_err(|e| fence_error(bucket, FENCE_KEY, e))?;
                let fence = WriteFence {
                    term: leading.term,
                    sequence,
                };
                Some((leading.clone(), fence))
            }
        };
        Ok(LeaderBucket { bucket, kv, fenced })
    }

    fn kv(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Operators => &self.shared.operators,
            Bucket::Resources => &self.shared.resources,
            Bucket::Secrets => &self.shared.secrets,
        }
    }
}

#[async_trait]
impl RecordStore for JetStreamStore {
    fn replicas(&self) -> usize {
        self.shared.replicas
    }

    /// Every record in a bucket, read in one pass over the bucket's stream. Secret records sealed
    /// with an older key (or stored before sealing) are sealed again with the current one.
    async fn load_all(&self, bucket: Bucket) -> Result<Vec<Stored>, StoreError> {
        let kv = self.kv(bucket);
        let fail = |operation, reason: String| StoreError::Failed {
            operation,
            bucket: bucket.name(),
            key: ">".into(),
            reason,
        };
        let status = kv
            .status()
            .await
            .map_err(|e| fail("status", e.to_string()))?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        if status.values() == 0 {
            return Ok(out);
        }
        let mut watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| fail("watch", e.to_string()))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| fail("watch", e.to_string()))?;
            if entry.operation == kv::Operation::Put && entry.key != FENCE_KEY {
                let decoded = self.decode(bucket, &entry.key, &entry.value)?;
                if decoded.stale {
                    stale.push(out.len());
                }
                let record = decoded.record;
                out.push(Stored {
                    key: entry.key.clone(),
                    record,
                    revision: entry.revision,
                });
            }
            if entry.delta == 0 {
                break;
            }
        }
        drop(watch);
        for index in stale {
            let stored = &mut out[index];
            match self
                .update(bucket, &stored.key, &stored.record, stored.revision)
                .await
            {
                Ok(revision) => {
                    stored.revision = revision;
                    info!(bucket = bucket.name(), key = %stored.key, key_id = %self.shared.keyring.current_id(), "secret record sealed again with the current key");
                }
                Err(e) => {
                    warn!(bucket = bucket.name(), key = %stored.key, error = %e, "secret record not sealed again; it stays readable with its key");
                }
            }
        }
        Ok(out)
    }

    /// The record stored under `key`, if any (read through the stream leader once replicated).
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Stored>, StoreError> {
        let entry = self
            .kv(bucket)
            .entry(key)
            .await
            .map_err(|e| StoreError::Failed {
                operation: "get",
                bucket: bucket.name(),
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let record = self.decode(bucket, key, &entry.value)?.record;
        Ok(Some(Stored {
            key: key.to_string(),
            record,
            revision: entry.revision,
        }))
    }

    async fn create(&self, bucket: Bucket, key: &str, record: &Record) -> Result<u64, StoreError> {
        let value = self.encode(bucket, key, record)?;
        if let Some(leading) = &self.shared.leading {
            // The leader alone writes, and its copy says the key is new.
            return self
                .fenced(leading, bucket, key, FencedOperation::Put(value.into()))
                .await;
        }
        self.kv(bucket)
            .create(key, value.into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    bucket: bucket.name(),
                    key: key.to_string(),
                },
                _ => StoreError::Failed {
                    operation: "create",
                    bucket: bucket.name(),
                    key: key.to_string(),
                    reason: e.to_string(),
                },
            })
    }

    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        record: &Record,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let value = self.encode(bucket, key, record)?;
        if let Some(leading) = &self.shared.leading {
            // Fenced instead of compare-and-set: only the leader writes.
            return self
                .fenced(leading, bucket, key, FencedOperation::Put(value.into()))
                .await;
        }
        self.kv(bucket)
            .update(key, value.into(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => StoreError::WrongRevision {
                    bucket: bucket.name(),
                    key: key.to_string(),
                },
                _ => StoreError::Failed {
                    operation: "update",
                    bucket: bucket.name(),
                    key: key.to_string(),
                    reason: e.to_string(),
                },
            })
    }

    async fn delete(&self, bucket: Bucket, key: &str, revision: u64) -> Result<(), StoreError> {
        if let Some(leading) = &self.shared.leading {
            return self
                .fenced(leading, bucket, key, FencedOperation::Purge)
                .await
                .map(|_| ());
        }
        self.kv(bucket)
            .purge_expect_revision(key, Some(revision))
            .await
            .map_err(|e| StoreError::Failed {
                operation: "delete",
                bucket: bucket.name(),
                key: key.to_string(),
                reason: e.to_string(),
            })
    }
}

/// Opens (or creates) a bucket with at least `replicas`, reading through the stream leader once
/// replicated (see `operator_nats_cluster`).
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    open_or_create_bucket(js, config)
        .await
        .map_err(|reason| StoreError::OpenFailed { bucket, reason })
}

/// A refused or failed fenced write as a store error.
fn fence_error(bucket: &'static str, key: &str, error: FencedWriteError) -> StoreError {
    match error {
        FencedWriteError::Fenced { reason } => StoreError::Fenced {
            bucket,
            key: key.to_string(),
            reason,
        },
        FencedWriteError::Unavailable { reason } => StoreError::Failed {
            operation: "write",
            bucket,
            key: key.to_string(),
            reason,
        },
    }
}

impl JetStreamStore {
    /// The bytes stored for `record`: its JSON, sealed in the secrets bucket.
    fn encode(&self, bucket: Bucket, key: &str, record: &Record) -> Result<Vec<u8>, StoreError> {
        let failed = |e: serde_json::Error| StoreError::Failed {
            operation: "encode",
            bucket: bucket.name(),
            key: key.to_string(),
            reason: e.to_string(),
        };
        let json = serde_json::to_vec(record).map_err(failed)?;
        if bucket != Bucket::Secrets {
            return Ok(json);
        }
        let sealed = SealedRecord {
            sealed: self.shared.keyring.seal(&json, &seal_context(bucket, key)),
        };
        serde_json::to_vec(&sealed).map_err(failed)
    }

    /// Reads stored bytes back. Errors on secret records give positions, never serde's text,
    /// which can quote the value it choked on.
    fn decode(&self, bucket: Bucket, key: &str, bytes: &[u8]) -> Result<Decoded, StoreError> {
        let fail = |reason: String| StoreError::Failed {
            operation: "decode",
            bucket: bucket.name(),
            key: key.to_string(),
            reason,
        };
        if bucket != Bucket::Secrets {
            let record = serde_json::from_slice(bytes).map_err(|e| fail(e.to_string()))?;
            return Ok(Decoded {
                record,
                stale: false,
            });
        }
        let Ok(SealedRecord { sealed }) = serde_json::from_slice(bytes) else {
            // Written before secrets were sealed: read it, and seal it from now on.
            let record = serde_json::from_slice(bytes)
                .map_err(|e| fail(format!("not a sealed secret record ({})", position(&e))))?;
            return Ok(Decoded {
                record,
                stale: true,
            });
        };
        let json = self
            .shared
            .keyring
            .open(&sealed, &seal_context(bucket, key))
            .map_err(|e| fail(e.to_string()))?;
        let record = serde_json::from_slice(&json).map_err(|e| {
            fail(format!(
                "the opened secret record is not a record ({})",
                position(&e)
            ))
        })?;
        Ok(Decoded {
            record,
            stale: self.shared.keyring.is_stale(&sealed.key_id),
        })
    }
}

/// What a sealed record is bound to: its bucket and key, so it opens nowhere else.
fn seal_context(bucket: Bucket, key: &str) -> Vec<u8> {
    format!("{}/{key}", bucket.name()).into_bytes()
}

/// Where a JSON error happened, without the text around it.
fn position(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// The key of a workspaced record.
pub fn workspaced_key(workspace: &str, name: &str) -> String {
    format!("{workspace}.{name}")
}
