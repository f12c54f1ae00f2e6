//! The three buckets in memory, with JetStream KV's rules: one revision sequence for all keys,
//! compare-and-set on it, records kept as the JSON that would be stored. For the actors' tests,
//! which also use it to read what was stored and to make writes fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Bucket, RecordStore, StoreError, Stored};
use crate::records::Record;

/// Records in memory; see the module's documentation.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per bucket: key → (the record's JSON, its revision).
    buckets: HashMap<Bucket, BTreeMap<String, (Vec<u8>, u64)>>,
    /// The last revision given out.
    last_revision: u64,
    /// While set, every operation fails with this reason, as an unreachable server's would.
    unavailable: Option<String>,
    /// Writes that succeeded (creates, updates, deletes).
    writes: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail with `reason` (`None`: work again).
    pub fn set_unavailable(&self, reason: Option<&str>) {
        self.lock().unavailable = reason.map(str::to_string);
    }

    /// Every record of `bucket`, by key, without going through the trait (no failure).
    pub fn records(&self, bucket: Bucket) -> BTreeMap<String, (Record, u64)> {
        let state = self.lock();
        state
            .buckets
            .get(&bucket)
            .into_iter()
            .flatten()
            .map(|(key, (json, revision))| {
                let record = serde_json::from_slice(json).expect("stored JSON is a record");
                (key.clone(), (record, *revision))
            })
            .collect()
    }

    /// How many writes (creates, updates, deletes) succeeded.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is still
        // what it wrote.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn check(&self, operation: &'static str, bucket: Bucket, key: &str) -> Result<(), StoreError> {
        match &self.unavailable {
            Some(reason) => Err(StoreError::Failed {
                operation,
                bucket: bucket.name(),
                key: key.to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn bucket(&mut self, bucket: Bucket) -> &mut BTreeMap<String, (Vec<u8>, u64)> {
        self.buckets.entry(bucket).or_default()
    }

    fn next_revision(&mut self) -> u64 {
        self.last_revision += 1;
        self.writes += 1;
        self.last_revision
    }
}

fn encode(bucket: Bucket, key: &str, record: &Record) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Failed {
        operation: "encode",
        bucket: bucket.name(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn decode(bucket: Bucket, key: &str, json: &[u8], revision: u64) -> Result<Stored, StoreError> {
    let record = serde_json::from_slice(json).map_err(|e| StoreError::Failed {
        operation: "decode",
        bucket: bucket.name(),
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Stored {
        key: key.to_string(),
        record,
        revision,
    })
}

#[async_trait]
impl RecordStore for MemoryStore {
    fn replicas(&self) -> usize {
        1
    }

    async fn load_all(&self, bucket: Bucket) -> Result<Vec<Stored>, StoreError> {
        let mut state = self.lock();
        state.check("load", bucket, ">")?;
        state
            .bucket(bucket)
            .iter()
            .map(|(key, (json, revision))| decode(bucket, key, json, *revision))
            .collect()
    }

    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut state = self.lock();
        state.check("get", bucket, key)?;
        state
            .bucket(bucket)
            .get(key)
            .map(|(json, revision)| decode(bucket, key, json, *revision))
            .transpose()
    }

    async fn create(&self, bucket: Bucket, key: &str, record: &Record) -> Result<u64, StoreError> {
        let json = encode(bucket, key, record)?;
        let mut state = self.lock();
        state.check("create", bucket, key)?;
        if state.bucket(bucket).contains_key(key) {
            return Err(StoreError::AlreadyExists {
                bucket: bucket.name(),
                key: key.to_string(),
            });
        }
        let revision = state.next_revision();
        state
            .bucket(bucket)
            .insert(key.to_string(), (json, revision));
        Ok(revision)
    }

    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        record: &Record,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let json = encode(bucket, key, record)?;
        let mut state = self.lock();
        state.check("update", bucket, key)?;
        if state.bucket(bucket).get(key).map(|(_, at)| *at) != Some(revision) {
            return Err(StoreError::WrongRevision {
                bucket: bucket.name(),
                key: key.to_string(),
            });
        }
        let new_revision = state.next_revision();
        state
            .bucket(bucket)
            .insert(key.to_string(), (json, new_revision));
        Ok(new_revision)
    }

    async fn delete(&self, bucket: Bucket, key: &str, revision: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.check("delete", bucket, key)?;
        let at = state.bucket(bucket).get(key).map(|(_, at)| *at);
        if at.is_some_and(|at| at != revision) {
            // As JetStream's purge with an expected revision answers: a plain failure.
            return Err(StoreError::Failed {
                operation: "delete",
                bucket: bucket.name(),
                key: key.to_string(),
                reason: "wrong last sequence".to_string(),
            });
        }
        state.bucket(bucket).remove(key);
        state.next_revision();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator_contract::Manifest;

    fn record(name: &str) -> Record {
        let manifest = Manifest::parse_all(&format!(
            "name: {name}\nversion: v1\ntype: resource\nresource: {{operator: demo, type: job, spec: {{}}}}\n"
        ))
        .expect("parses")
        .remove(0);
        Record::new(manifest, Some("public".into()))
    }

    #[tokio::test]
    async fn writes_are_compare_and_set_on_one_revision_sequence() {
        let store = MemoryStore::new();
        let first = store
            .create(Bucket::Resources, "public.a", &record("a"))
            .await
            .expect("create");
        let other = store
            .create(Bucket::Operators, "demo", &record("demo"))
            .await
            .expect("create");
        assert!(other > first, "one sequence across buckets");
        assert!(matches!(
            store
                .create(Bucket::Resources, "public.a", &record("a"))
                .await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let updated = store
            .update(Bucket::Resources, "public.a", &record("a"), first)
            .await
            .expect("update at the revision read");
        assert!(matches!(
            store
                .update(Bucket::Resources, "public.a", &record("a"), first)
                .await,
            Err(StoreError::WrongRevision { .. })
        ));
        assert!(store
            .delete(Bucket::Resources, "public.a", first)
            .await
            .is_err());
        store
            .delete(Bucket::Resources, "public.a", updated)
            .await
            .expect("delete at the revision read");
        assert!(store
            .get(Bucket::Resources, "public.a")
            .await
            .expect("get")
            .is_none());
        store.set_unavailable(Some("no responders"));
        assert!(matches!(
            store.load_all(Bucket::Operators).await,
            Err(StoreError::Failed { .. })
        ));
    }
}
