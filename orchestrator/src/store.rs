//! The orchestrator's durable state: one JetStream KV bucket each for operators, resources and
//! secrets. Writes are compare-and-set on the revision the writer last saw, so a stale writer
//! cannot overwrite a newer record.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use thiserror::Error;

use crate::records::Record;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Operators,
    Resources,
    Secrets,
}

impl Bucket {
    fn name(self) -> &'static str {
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

/// Handles to the three buckets; cheap to clone.
#[derive(Clone)]
pub struct Store {
    operators: kv::Store,
    resources: kv::Store,
    secrets: kv::Store,
}

impl Store {
    /// Opens the buckets, creating any that is missing.
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        Ok(Self {
            operators: open_bucket(js, OPERATORS_BUCKET).await?,
            resources: open_bucket(js, RESOURCES_BUCKET).await?,
            secrets: open_bucket(js, SECRETS_BUCKET).await?,
        })
    }

    fn kv(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Operators => &self.operators,
            Bucket::Resources => &self.resources,
            Bucket::Secrets => &self.secrets,
        }
    }

    /// Every record in a bucket, read in one pass over the bucket's stream.
    pub async fn load_all(&self, bucket: Bucket) -> Result<Vec<Stored>, StoreError> {
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
        if status.values() == 0 {
            return Ok(out);
        }
        let mut watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| fail("watch", e.to_string()))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| fail("watch", e.to_string()))?;
            if entry.operation == kv::Operation::Put {
                let record = decode(bucket, &entry.key, &entry.value)?;
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
        Ok(out)
    }

    /// Stores a record under a key that must not exist yet.
    pub async fn create(
        &self,
        bucket: Bucket,
        key: &str,
        record: &Record,
    ) -> Result<u64, StoreError> {
        self.kv(bucket)
            .create(key, encode(record).into())
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

    /// Replaces a record if it is still at `revision`; returns the new revision.
    pub async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        record: &Record,
        revision: u64,
    ) -> Result<u64, StoreError> {
        self.kv(bucket)
            .update(key, encode(record).into(), revision)
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

    /// Removes a record if it is still at `revision`.
    pub async fn delete(&self, bucket: Bucket, key: &str, revision: u64) -> Result<(), StoreError> {
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

async fn open_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| StoreError::OpenFailed {
        bucket,
        reason: e.to_string(),
    })
}

fn encode(record: &Record) -> Vec<u8> {
    // A record is plain data with string keys; serializing it cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode(bucket: Bucket, key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Failed {
        operation: "decode",
        bucket: bucket.name(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The key of a workspaced record.
pub fn workspaced_key(workspace: &str, name: &str) -> String {
    format!("{workspace}.{name}")
}
