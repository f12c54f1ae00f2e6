//! Replicas of the demo component for the failover flows and the failover benchmark: N real
//! `demo-operator` processes electing a leader on the test's nats-server, each with its own
//! `--electionStateFile`, and what the election leaves in NATS (the lease key, the fence key of
//! the entity bucket) read the way an outsider would.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use serde_json::Value;

use crate::{ComponentProcess, TestSystem};

/// The operator the replicas serve (the demo's).
pub const OPERATOR: &str = "demo";
/// The election cluster of the replicas.
pub const CLUSTER: &str = "demo-replicas";
/// The entity bucket of the demo operator.
pub const ENTITY_BUCKET: &str = "entities-demo";

/// The demo operator's manifest with the election settings its replicas run with, so
/// `opctl get -t operator -n demo -d` can show them.
pub fn replicated_demo_operator(replicas: usize) -> String {
    crate::example("demo-operator.yaml")
        .replace("      replicas: 1\n", &format!("      replicas: {replicas}\n"))
        .replace(
            "        OPERATOR_STATE_STORE_TYPE: jetstream_kv\n",
            &format!(
                "        OPERATOR_STATE_STORE_TYPE: jetstream_kv\n        ELECTION_CLUSTER_NAME: {CLUSTER}\n        ELECTION_CLUSTER_SIZE: {replicas}\n"
            ),
        )
}

/// Who holds the lease, and in which term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The replica's index in the set.
    pub index: usize,
    pub term: u64,
}

/// N replicas of the demo component.
pub struct ReplicaSet {
    pub replicas: Vec<ComponentProcess>,
    ids: Vec<String>,
    states: tempfile::TempDir,
    lease: kv::Store,
}

impl ReplicaSet {
    /// Applies the replicated demo operator and starts `n` replicas (ids `r0`…) with the
    /// platform of `system`, lease `ttl` and `renew` interval, plus `env`.
    pub async fn start(
        system: &TestSystem,
        n: usize,
        ttl: Duration,
        renew: Duration,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        system.opctl.apply(&replicated_demo_operator(n), None)?;
        let states = tempfile::tempdir()?;
        let mut replicas = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("r{i}");
            let state_file = states.path().join(format!("{id}.election.log"));
            let ttl_ms = ttl.as_millis().to_string();
            let renew_ms = renew.as_millis().to_string();
            let size = n.to_string();
            let mut all: Vec<(&str, &str)> = vec![
                ("DEMO_PLATFORM_URL", system.platform.url.as_str()),
                ("DEMO_POLL_INTERVAL_MS", "100"),
                ("OPERATOR_STATE_STORE_TYPE", "jetstream_kv"),
                ("ELECTION_CLUSTER_NAME", CLUSTER),
                ("ELECTION_CLUSTER_SIZE", &size),
                ("ELECTION_REPLICA_ID", &id),
                ("ELECTION_LEASE_TTL_MS", &ttl_ms),
                ("ELECTION_RENEW_INTERVAL_MS", &renew_ms),
                ("LOG_LEVEL", "info,operator_sdk=debug"),
                ("LOG_FORMAT", "json"),
            ];
            all.extend_from_slice(env);
            let state = state_file.to_string_lossy().into_owned();
            let args = ["--electionStateFile", state.as_str()];
            replicas.push(ComponentProcess::start_binary(
                "demo-operator",
                &args,
                &system.nats.url(),
                OPERATOR,
                &all,
            )?);
            ids.push(id);
        }
        let js = async_nats::jetstream::new(system.client.clone());
        let bucket = format!("election-{CLUSTER}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let lease = loop {
            if let Ok(store) = js.get_key_value(&bucket).await {
                break store;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no replica created {bucket}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            replicas,
            ids,
            states,
            lease,
        })
    }

    /// The election state file of replica `i`.
    pub fn state_file(&self, i: usize) -> PathBuf {
        self.states
            .path()
            .join(format!("{}.election.log", self.ids[i]))
    }

    /// The transitions replica `i` recorded: `(event, term)` in order.
    pub fn journal(&self, i: usize) -> Vec<(String, Option<u64>, Value)> {
        std::fs::read_to_string(self.state_file(i))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|v| {
                let event = v["event"].as_str().unwrap_or_default().to_string();
                (event, v["term"].as_u64(), v)
            })
            .collect()
    }

    /// Waits (polling its file: no event says it changed) until replica `i`'s journal has an
    /// entry `event` of `term`.
    pub async fn wait_for_journal(
        &self,
        i: usize,
        event: &str,
        term: u64,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((_, _, entry)) = self
                .journal(i)
                .into_iter()
                .find(|(e, t, _)| e == event && *t == Some(term))
            {
                return Ok(entry);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "replica {i} recorded no '{event}' of term {term}: {:?}",
                    self.journal(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of replica `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id)
    }

    /// The replica's id.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// Waits, watching the lease key, for a leader other than `not` to take the lease; returns
    /// it with its term (the lease's revision when taken).
    pub async fn wait_for_leader(
        &self,
        not: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<Leader> {
        let key = format!("leader.{OPERATOR}");
        // Delivers the current value first, then every change.
        let mut watch = self.lease.watch_with_history(&key).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entry = tokio::time::timeout_at(deadline, watch.next())
                .await
                .with_context(|| format!("no new leader within {timeout:?}"))?
                .context("lease watch ended")??;
            if entry.operation != Operation::Put {
                continue;
            }
            let lease: Value = serde_json::from_slice(&entry.value)?;
            let holder = lease["holder"].as_str().unwrap_or_default();
            let Some(index) = self.index_of(holder) else {
                continue;
            };
            if Some(index) == not {
                continue;
            }
            // The write that takes the lease has no term yet: its revision is the term.
            let term = lease["term"].as_u64().unwrap_or(entry.revision);
            return Ok(Leader { index, term });
        }
    }
}

/// The fence key of the demo's entity bucket: its sequence and the term it names.
pub async fn fence(client: &async_nats::Client) -> anyhow::Result<Option<(u64, u64)>> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(ENTITY_BUCKET).await?;
    let Some(entry) = kv.entry("_fence").await? else {
        return Ok(None);
    };
    let value: Value = serde_json::from_slice(&entry.value)?;
    Ok(Some((
        entry.revision,
        value["term"].as_u64().context("fence without a term")?,
    )))
}

/// Writes `key` of the demo's entity bucket the way a leader fenced at `fence_sequence` would;
/// returns JetStream's answer (an error for a stale fence).
pub async fn fenced_write(
    client: &async_nats::Client,
    key: &str,
    fence_sequence: u64,
) -> anyhow::Result<Result<u64, String>> {
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        fence_sequence.to_string().as_str(),
    );
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        format!("$KV.{ENTITY_BUCKET}._fence").as_str(),
    );
    let ack = js
        .publish_with_headers(format!("$KV.{ENTITY_BUCKET}.{key}"), headers, "{}".into())
        .await?;
    Ok(ack.await.map(|a| a.sequence).map_err(|e| e.to_string()))
}

/// The `Operator-Term` of every message written to the entity bucket after `after`, in order.
pub async fn terms_written_after(
    client: &async_nats::Client,
    after: u64,
) -> anyhow::Result<Vec<(u64, String, Option<u64>)>> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(format!("KV_{ENTITY_BUCKET}")).await?;
    let last = stream.get_info().await?.state.last_sequence;
    let mut written = Vec::new();
    for sequence in after + 1..=last {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // superseded (history 1) or deleted
        };
        let term = message
            .headers
            .get("Operator-Term")
            .and_then(|v| v.as_str().parse::<u64>().ok());
        written.push((sequence, message.subject.to_string(), term));
    }
    Ok(written)
}
