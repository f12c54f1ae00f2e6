//! Leader election among replicas, fenced: the replicas of a component, and the orchestrator's
//! replicas, elect their leader the same way.
//!
//! With `ELECTION_CLUSTER_NAME` set, each replica of a component runs a [`LeaderElection`]
//! actor (the orchestrator's replicas use the cluster and operator name `orchestrator`). The lease is
//! the key `leader.<operator>` of the KV bucket `election-<cluster>`: a replica takes it when it
//! is absent (create-if-absent) or when it has not changed for a whole TTL as that replica
//! counts it (compare-and-set on the revision it saw), and the leader renews it every renew
//! interval (compare-and-set on its own last revision). The revision that took the lease is the
//! leader's *term*; terms only grow.
//!
//! The leader may act until its deadline — when it sent its last successful renewal, plus the
//! TTL less a fifth — and every writer checks the [`Fence`] first; a paused leader resumes past
//! its deadline and does nothing. On top of that, stores fence their writes on the server
//! ([`fenced_write`]), and a component's platform calls carry the term (the SDK's
//! `ReconcileContext::fence`). A replica that stops cleanly
//! deletes its lease at once, so the next one takes over without waiting for the TTL.
//!
//! Every replica heartbeats under `replica.<operator>.<replica>` in the same bucket, and
//! `--electionStateFile` records each transition of this replica (see [`journal`]).

mod actor;
mod fence;
mod fencing;
mod journal;
mod lease;
mod messages;
pub mod metrics;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use actor::LeaderElection;
pub use fence::{Fence, FenceState, Fenced, Term};
pub use fencing::{fenced_write, write_fence, FencedOperation, FencedWriteError, WriteFence};
pub use messages::{
    LeadershipAcquired, LeadershipLost, PublishDetails, Resign, StepDown, Subscribe,
};

use state::Timing;

/// Why the election could not start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ElectionError {
    /// The cluster's KV bucket could neither be opened nor created.
    #[error("cannot open or create election bucket {bucket}: {reason}")]
    Bucket { bucket: String, reason: String },
    /// The server does not enforce the headers store writes are fenced with.
    #[error("nats-server {version} does not enforce fenced writes: replicated components (ELECTION_CLUSTER_NAME) need nats-server 2.11 or newer")]
    ServerTooOld { version: String },
}

/// The settings of one replica's election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    /// `ELECTION_CLUSTER_NAME`: the bucket `election-<cluster>` holds the lease.
    pub cluster: String,
    /// The operator whose leader is elected: the lease is `leader.<operator>`.
    pub operator: String,
    /// This replica's name in the lease, its heartbeat and the journal.
    pub replica: String,
    /// How long a lease lasts unrenewed.
    pub ttl: Duration,
    /// How often the leader renews and every replica heartbeats.
    pub renew_interval: Duration,
    /// `ELECTION_CLUSTER_SIZE`: how many replicas are expected.
    pub expected_replicas: Option<u32>,
    /// `--electionStateFile`: where transitions are appended.
    pub state_file: Option<PathBuf>,
}

impl ElectionSettings {
    fn timing(&self) -> Timing {
        Timing {
            ttl: self.ttl,
            renew_interval: self.renew_interval,
        }
    }
}
