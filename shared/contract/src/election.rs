//! The leader-election contract between component replicas and the orchestrator: the bucket a
//! cluster elects in, the keys of its lease and of each replica's heartbeat, the values stored
//! under them, and the fence key and headers that make a stale leader's store writes fail.
//!
//! A component with `ELECTION_CLUSTER_NAME=<cluster>` elects in the KV bucket
//! `election-<cluster>`: the lease of operator `<op>` is the key `leader.<op>` (its KV revision
//! when taken is the leader's *term*), and every replica heartbeats under
//! `replica.<op>.<replica>`. The leader writes the key [`FENCE_KEY`] of its entity bucket once
//! per term, and every later write to that bucket expects the fence key's sequence to be
//! unchanged ([`EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER`] with
//! [`EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER`]), so JetStream refuses the writes of a leader
//! whose successor has written its fence.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key, in a component's entity bucket, the leader writes once per term before any other
/// write; its sequence fences every later write.
pub const FENCE_KEY: &str = "_fence";
/// JetStream's optimistic-concurrency header: the expected last sequence of a subject.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER: &str = "Nats-Expected-Last-Subject-Sequence";
/// The subject [`EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER`] applies to, when not the published one
/// (nats-server 2.11 and later).
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";
/// The term of the leader that made a store write, carried on every write for audit.
pub const TERM_HEADER: &str = "Operator-Term";
/// The oldest nats-server that enforces [`EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER`]; a
/// replicated component refuses older ones (they would ignore the fence silently).
pub const MIN_NATS_SERVER_FOR_FENCING: (u64, u64) = (2, 11);

/// The KV bucket a cluster elects in.
pub fn election_bucket(cluster: &str) -> String {
    format!("election-{cluster}")
}

/// The key of an operator's lease within its cluster's bucket.
pub fn lease_key(operator: &str) -> String {
    format!("leader.{operator}")
}

/// The key filter matching every replica heartbeat of an operator.
pub fn replica_key_prefix(operator: &str) -> String {
    format!("replica.{operator}.")
}

/// The key of one replica's heartbeat.
pub fn replica_key(operator: &str, replica: &str) -> String {
    format!("{}{}", replica_key_prefix(operator), key_token(replica))
}

/// `name` as one KV key token: characters other than letters, digits, `-` and `_` become `-`.
pub fn key_token(name: &str) -> String {
    let token: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if token.is_empty() {
        "-".into()
    } else {
        token
    }
}

/// The value of a lease key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The replica holding the lease.
    pub holder: String,
    /// The holder's term: the lease's revision when it was taken (unknown on the write that
    /// takes it, so absent there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// When the holder took the lease (its clock).
    pub acquired_at: DateTime<Utc>,
    /// When the holder last renewed it (its clock).
    pub renewed_at: DateTime<Utc>,
    /// How long the lease lasts without a renewal, as followers count it.
    pub ttl_ms: u64,
}

/// A replica's role, as its heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// It holds the lease: it consumes commands and reconciles.
    Leader,
    /// It answers queries and waits to lead.
    Follower,
}

/// The value of a replica's heartbeat key, rewritten every renew interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaHeartbeat {
    pub replica: String,
    pub role: ReplicaRole,
    /// The term while leading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// When the replica took its current role.
    pub since: DateTime<Utc>,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// When this heartbeat was written (the replica's clock).
    pub heartbeat_at: DateTime<Utc>,
    /// The interval between heartbeats.
    pub interval_ms: u64,
    /// The lease TTL: a heartbeat older than this means the replica is not responding.
    pub ttl_ms: u64,
    /// `ELECTION_CLUSTER_SIZE`, when set: how many replicas are expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_replicas: Option<u32>,
    /// What the operator publishes of itself beyond its resources (e.g. the ADF operator's
    /// monitoring budget per factory), as its leader last set it; shown by
    /// `opctl get -t operator -n NAME -d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Whether `version` (as in the server's INFO) enforces the fence headers.
pub fn server_enforces_fencing(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MIN_NATS_SERVER_FOR_FENCING,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_operator_and_replica_as_single_tokens() {
        assert_eq!(
            election_bucket("azure-operators"),
            "election-azure-operators"
        );
        assert_eq!(lease_key("adf-operator"), "leader.adf-operator");
        assert_eq!(
            replica_key("adf-operator", "host.local-42"),
            "replica.adf-operator.host-local-42"
        );
        assert_eq!(key_token(""), "-");
    }

    #[test]
    fn fencing_needs_a_2_11_server() {
        assert!(!server_enforces_fencing("2.10.22"));
        assert!(server_enforces_fencing("2.11.0"));
        assert!(server_enforces_fencing("2.15.1"));
        assert!(server_enforces_fencing("v3.0.0"));
        assert!(!server_enforces_fencing("garbage"));
    }

    #[test]
    fn records_round_trip_in_camel_case() {
        let now = Utc::now();
        let lease = LeaseRecord {
            holder: "r1".into(),
            term: None,
            acquired_at: now,
            renewed_at: now,
            ttl_ms: 5000,
        };
        let json = serde_json::to_value(&lease).expect("serializes");
        assert!(json.get("term").is_none());
        assert_eq!(json["ttlMs"], 5000);
        let back: LeaseRecord = serde_json::from_value(json).expect("reads");
        assert_eq!(back, lease);
    }
}
