//! The messages of the election actor: what it tells the other actors (`LeadershipAcquired`,
//! `LeadershipLost`), what they tell it (`Subscribe`, `StepDown`, `Resign`), and its own timer
//! and KV results.

use actix::{Message, Recipient};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::fence::Term;
use super::lease::{LeaseError, Write};
use super::state::Observation;

/// This replica now leads in `term`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LeadershipAcquired {
    pub term: Term,
    /// When it took the lease.
    pub since: DateTime<Utc>,
}

/// This replica no longer leads in `term` (its fence already says so).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LeadershipLost {
    pub term: Term,
    /// Why, for logs.
    pub reason: String,
}

/// Join the election, telling `acquired` and `lost` of every change from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub acquired: Recipient<LeadershipAcquired>,
    pub lost: Recipient<LeadershipLost>,
}

/// Step down from `term`: a write or a platform call of that term was refused.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StepDown {
    pub term: Term,
    pub reason: String,
}

/// Give the lease up and leave the election; answered once the lease is released and the
/// heartbeat removed (or that was given up on).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Resign;

/// From now on, every heartbeat carries the latest value of `0`: what the operator publishes
/// of itself (`ReplicaHeartbeat::details`); `Null` is left out.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PublishDetails(pub tokio::sync::watch::Receiver<serde_json::Value>);

/// The lease key as the watch delivered it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct LeaseObserved(pub Observation);

/// A KV operation of the campaign ended.
#[derive(Debug)]
pub(crate) enum KvFinished {
    Read(Result<Observation, LeaseError>),
    Take {
        sent_at: Instant,
        result: Result<Write, LeaseError>,
    },
    Renew {
        term: Term,
        sent_at: Instant,
        result: Result<Write, LeaseError>,
    },
    Release(Result<(), LeaseError>),
}
