//! `Fence`: every task's view of whether this replica may act now. The election actor owns the
//! sending side and publishes its lease (term and local deadline) on every change; a reader
//! checks the deadline against the monotonic clock at the moment it is about to write or call a
//! platform, so a leader that was paused past its lease (SIGSTOP) sees it lapsed on its first
//! step after resuming, before any timer of the election actor has run.

use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

/// A leader's term: the revision of the lease key when it was taken. Terms only grow.
pub type Term = u64;

/// What the election actor publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceState {
    /// No election: the only replica, always allowed, term 0.
    Unelected,
    /// Leading in `term` until `valid_until` unless renewed.
    Leading { term: Term, valid_until: Instant },
    /// Not leading.
    Following,
}

/// Why a replica may not act.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Fenced {
    /// The replica does not lead.
    #[error("this replica is not the leader")]
    NotLeader,
    /// The replica's lease ran out before it was renewed (it may have been paused).
    #[error("the lease of term {term} lapsed {late_ms} ms ago without a renewal")]
    Lapsed {
        /// The term whose lease lapsed.
        term: Term,
        /// How long ago.
        late_ms: u64,
    },
}

/// The cloneable check every writer and every platform call goes through.
#[derive(Debug, Clone)]
pub struct Fence {
    state: watch::Receiver<FenceState>,
}

impl Fence {
    /// A fence that always allows (no election), with term 0.
    pub fn unelected() -> Self {
        let (_, state) = watch::channel(FenceState::Unelected);
        Self { state }
    }

    /// A fence and the sender the election actor publishes on.
    pub fn channel() -> (watch::Sender<FenceState>, Self) {
        let (tx, state) = watch::channel(FenceState::Following);
        (tx, Self { state })
    }

    /// The term this replica leads in, if it may act now.
    pub fn check(&self) -> Result<Term, Fenced> {
        check(*self.state.borrow(), Instant::now())
    }

    /// Whether an election runs (false for a lone, unelected component).
    pub fn is_elected(&self) -> bool {
        *self.state.borrow() != FenceState::Unelected
    }
}

pub(crate) fn check(state: FenceState, now: Instant) -> Result<Term, Fenced> {
    match state {
        FenceState::Unelected => Ok(0),
        FenceState::Following => Err(Fenced::NotLeader),
        FenceState::Leading { term, valid_until } if now < valid_until => Ok(term),
        FenceState::Leading { term, valid_until } => Err(Fenced::Lapsed {
            term,
            late_ms: now.duration_since(valid_until).as_millis() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lease_allows_until_its_deadline_and_not_a_moment_after() {
        tokio::time::pause();
        let (tx, fence) = Fence::channel();
        assert_eq!(fence.check(), Err(Fenced::NotLeader));
        let valid_until = Instant::now() + Duration::from_secs(4);
        tx.send(FenceState::Leading {
            term: 42,
            valid_until,
        })
        .expect("open");
        assert_eq!(fence.check(), Ok(42));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            fence.check(),
            Err(Fenced::Lapsed {
                term: 42,
                late_ms: 0
            })
        );
    }

    #[test]
    fn an_unelected_component_always_acts_in_term_zero() {
        let fence = Fence::unelected();
        assert_eq!(fence.check(), Ok(0));
        assert!(!fence.is_elected());
    }
}
