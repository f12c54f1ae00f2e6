//! Orchestrator replicas: several orchestrators on one NATS, one of which leads.
//!
//! With `ORCHESTRATOR_REPLICA_NAME` set, each orchestrator joins the election the components
//! use (`operator_election`), in the bucket `election-orchestrator` under the lease
//! `leader.orchestrator`. Every replica publishes the URL its API answers on under
//! `api.orchestrator.<replica>` in that bucket. The leader runs the actor tree, the event
//! consumers and the component supervisors, and its store writes are fenced
//! ([`Store::lead`](crate::store::Store::lead)); the others stand by and forward every API
//! request to the leader ([`forward`]). A leader that loses the lease exits: it starts again as
//! a follower, and a successor has already fenced whatever it might still try to write.

pub mod forward;
pub mod role;

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::kv;
use operator_contract::election::{key_token, lease_key, LeaseRecord};
use operator_election::ElectionSettings;
use thiserror::Error;

use crate::config::ReplicationConfig;

/// The election cluster, and the name the lease is taken under.
pub const ORCHESTRATOR_CLUSTER: &str = "orchestrator";

/// Why the replication settings cannot be used, or the leader cannot be found.
#[derive(Debug, Error)]
pub enum ReplicationError {
    /// The lease timing is inconsistent.
    #[error("ORCHESTRATOR_LEASE_RENEW_MS ({renew_ms}) must be at most half ORCHESTRATOR_LEASE_TTL_MS ({ttl_ms})")]
    Timing { renew_ms: u64, ttl_ms: u64 },
    /// The replica name is empty or not one KV key token.
    #[error("ORCHESTRATOR_REPLICA_NAME '{name}': use letters, digits, '-' and '_'")]
    Name { name: String },
    /// The advertised URL is not an http(s) URL.
    #[error("ORCHESTRATOR_ADVERTISE_URL '{url}': {reason}")]
    AdvertiseUrl { url: String, reason: String },
    /// Reading or writing the election bucket failed.
    #[error("election bucket {operation} of {key} failed: {reason}")]
    Bucket {
        operation: &'static str,
        key: String,
        reason: String,
    },
}

/// A replica's settings, checked.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub election: ElectionSettings,
    /// Where the other replicas reach this one's API.
    pub advertise_url: String,
}

impl ReplicationConfig {
    /// The settings of this replica, when it is one (`ORCHESTRATOR_REPLICA_NAME` set); the API
    /// listens on `listening`.
    pub fn replica(
        &self,
        listening: SocketAddr,
    ) -> Result<Option<ReplicaSettings>, ReplicationError> {
        let Some(name) = &self.replica_name else {
            return Ok(None);
        };
        if name.is_empty() || key_token(name) != *name {
            return Err(ReplicationError::Name { name: name.clone() });
        }
        if self.lease_renew_ms * 2 > self.lease_ttl_ms || self.lease_renew_ms == 0 {
            return Err(ReplicationError::Timing {
                renew_ms: self.lease_renew_ms,
                ttl_ms: self.lease_ttl_ms,
            });
        }
        let advertise_url = match &self.advertise_url {
            Some(url) => checked_url(url)?,
            None => default_advertise_url(listening),
        };
        Ok(Some(ReplicaSettings {
            election: ElectionSettings {
                cluster: ORCHESTRATOR_CLUSTER.into(),
                operator: ORCHESTRATOR_CLUSTER.into(),
                replica: name.clone(),
                ttl: Duration::from_millis(self.lease_ttl_ms),
                renew_interval: Duration::from_millis(self.lease_renew_ms),
                expected_replicas: None,
                state_file: None,
            },
            advertise_url,
        }))
    }
}

fn checked_url(url: &str) -> Result<String, ReplicationError> {
    let refuse = |reason: &str| ReplicationError::AdvertiseUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(refuse("an http:// or https:// URL with a host is expected"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `http://` and the listening address; an unspecified address (0.0.0.0) is replaced by the
/// host name, which is what other hosts (and pods) resolve.
fn default_advertise_url(listening: SocketAddr) -> String {
    if listening.ip().is_unspecified() {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        format!("http://{host}:{}", listening.port())
    } else {
        format!("http://{listening}")
    }
}

/// The key a replica's API URL is published under.
fn address_key(replica: &str) -> String {
    format!("api.{ORCHESTRATOR_CLUSTER}.{}", key_token(replica))
}

/// Where the replicas find each other's API: the election bucket.
#[derive(Clone)]
pub struct Directory {
    kv: kv::Store,
}

/// The leader as a follower sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    /// Nobody holds the lease (or its holder published no address yet).
    Unknown,
    /// `replica` leads; its API answers at `url`.
    At { replica: String, url: String },
}

impl Directory {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Publishes where this replica's API answers.
    pub async fn publish(&self, replica: &str, url: &str) -> Result<(), ReplicationError> {
        let key = address_key(replica);
        self.kv
            .put(&key, url.as_bytes().to_vec().into())
            .await
            .map(|_| ())
            .map_err(|e| ReplicationError::Bucket {
                operation: "put",
                key,
                reason: e.to_string(),
            })
    }

    /// The current leader and its URL, read from the lease (through the stream leader).
    pub async fn leader(&self) -> Result<Leader, ReplicationError> {
        let read = |key: String| async move {
            self.kv
                .entry(&key)
                .await
                .map_err(|e| ReplicationError::Bucket {
                    operation: "get",
                    key,
                    reason: e.to_string(),
                })
        };
        let lease = read(lease_key(ORCHESTRATOR_CLUSTER)).await?;
        let Some(holder) = lease
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| serde_json::from_slice::<LeaseRecord>(&entry.value).ok())
            .map(|lease| lease.holder)
        else {
            return Ok(Leader::Unknown);
        };
        let url = read(address_key(&holder))
            .await?
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| String::from_utf8(entry.value.to_vec()).ok());
        Ok(match url {
            Some(url) => Leader::At {
                replica: holder,
                url,
            },
            None => Leader::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn replication(args: &[&str]) -> ReplicationConfig {
        let mut argv = vec!["orchestrator"];
        argv.extend_from_slice(args);
        crate::config::Config::parse_from(argv).replication
    }

    fn listening() -> SocketAddr {
        "10.1.2.3:7700".parse().expect("address")
    }

    #[test]
    fn without_a_replica_name_the_orchestrator_is_alone() {
        let settings = replication(&[]).replica(listening()).expect("settings");
        assert!(settings.is_none());
    }

    #[test]
    fn a_replica_advertises_its_listening_address_by_default() {
        let settings = replication(&["--replica-name", "orch-1"])
            .replica(listening())
            .expect("settings")
            .expect("a replica");
        assert_eq!(settings.advertise_url, "http://10.1.2.3:7700");
        assert_eq!(settings.election.cluster, ORCHESTRATOR_CLUSTER);
        assert_eq!(settings.election.replica, "orch-1");
    }

    #[test]
    fn bad_replica_settings_are_refused_with_their_reason() {
        let name = replication(&["--replica-name", "a.b"]).replica(listening());
        assert!(
            matches!(name, Err(ReplicationError::Name { .. })),
            "{name:?}"
        );
        let timing = replication(&[
            "--replica-name",
            "a",
            "--lease-ttl-ms",
            "1000",
            "--lease-renew-ms",
            "800",
        ])
        .replica(listening());
        assert!(
            matches!(timing, Err(ReplicationError::Timing { .. })),
            "{timing:?}"
        );
        let url = replication(&["--replica-name", "a", "--advertise-url", "ftp://x"])
            .replica(listening());
        assert!(
            matches!(url, Err(ReplicationError::AdvertiseUrl { .. })),
            "{url:?}"
        );
    }
}
