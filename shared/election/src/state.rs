//! `Campaign`: the election's pure state machine, time passed in. It remembers what the replica
//! last saw of the lease key (and when, on its own monotonic clock), whether it leads and until
//! when, and decides the next KV operation: read the key, take a free lease (create-if-absent),
//! take over one left unrenewed for a whole TTL (compare-and-set on the revision seen), renew
//! its own (compare-and-set), or release it.
//!
//! A follower counts a lease's TTL from when *it* first saw the lease's current revision, never
//! from a timestamp the holder wrote, so clocks need not agree. A leader counts its deadline from
//! when it *sent* the write that took or renewed the lease, minus a margin: it stops acting
//! before any follower can have started.

use std::time::Duration;

use tokio::time::Instant;

use super::fence::{FenceState, Term};

/// The election's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long a lease lasts unrenewed, as followers count it.
    pub ttl: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
}

impl Timing {
    /// How much sooner than its TTL a leader stops acting: a fifth of the TTL.
    pub fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// How long a leader may act after sending a successful take or renewal.
    pub fn validity(&self) -> Duration {
        self.ttl.saturating_sub(self.margin())
    }
}

/// The lease key as read or watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observation {
    /// No lease: the key is absent (revision 0) or was deleted at `revision`.
    Free { revision: u64 },
    /// `holder` holds the lease; `revision` is its last write.
    Held { revision: u64, holder: String },
}

impl Observation {
    fn revision(&self) -> u64 {
        match self {
            Self::Free { revision } | Self::Held { revision, .. } => *revision,
        }
    }
}

/// What the replica knows of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Unknown,
    Free {
        revision: u64,
    },
    Held {
        revision: u64,
        holder: String,
        /// When this replica first saw this revision.
        since: Instant,
    },
}

/// Why leadership ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LossReason {
    /// The deadline passed before a renewal succeeded (NATS slow or unreachable, or the
    /// process paused).
    Lapsed,
    /// The renewal found another revision: the lease was taken over.
    TakenOver,
    /// A write or a platform call of this term was refused; the replica steps down.
    Refused(String),
    /// The component is stopping and gave the lease up.
    Released,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lapsed => f.write_str("the lease lapsed before it could be renewed"),
            Self::TakenOver => f.write_str("another replica took the lease over"),
            Self::Refused(reason) => write!(f, "a write of this term was refused: {reason}"),
            Self::Released => f.write_str("the component is stopping and released the lease"),
        }
    }
}

/// A change of leadership for the actor to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    Acquired { term: Term },
    Lost { term: Term, reason: LossReason },
}

/// The next KV operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to do before the next tick.
    Wait,
    /// Read the lease key.
    Read,
    /// Take the free lease: create-if-absent.
    Create,
    /// Take the lease left unrenewed at `revision`: compare-and-set.
    TakeOver { revision: u64 },
    /// Renew the lease held at `revision`: compare-and-set.
    Renew { revision: u64, term: Term },
    /// Delete the lease held at `revision` (compare-and-set), giving it up.
    Release { revision: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Leading {
    term: Term,
    /// The lease's last revision written by this replica.
    revision: u64,
    /// When the last successful take or renewal was sent.
    sent_at: Instant,
}

/// The election state of one replica.
#[derive(Debug)]
pub(crate) struct Campaign {
    timing: Timing,
    replica: String,
    seen: Seen,
    leading: Option<Leading>,
    /// A KV operation is in flight; decide nothing until it ends.
    busy: bool,
    /// After stepping down, no attempt to lead before this.
    quiet_until: Option<Instant>,
    /// A lease to give up (after stepping down, or at shutdown).
    to_release: Option<u64>,
    /// Stopping: never lead again.
    resigned: bool,
}

impl Campaign {
    pub fn new(replica: impl Into<String>, timing: Timing) -> Self {
        Self {
            timing,
            replica: replica.into(),
            seen: Seen::Unknown,
            leading: None,
            busy: false,
            quiet_until: None,
            to_release: None,
            resigned: false,
        }
    }

    /// The term this replica leads in.
    pub fn term(&self) -> Option<Term> {
        self.leading.as_ref().map(|l| l.term)
    }

    /// What the fence should say now.
    pub fn fence(&self) -> FenceState {
        match &self.leading {
            Some(l) => FenceState::Leading {
                term: l.term,
                valid_until: l.sent_at + self.timing.validity(),
            },
            None => FenceState::Following,
        }
    }

    /// Records what a read or the watch showed of the lease key. A leader that sees the lease
    /// in another's hands, or deleted, after its own last write has lost it.
    pub fn observe(&mut self, observation: Observation, now: Instant) -> Option<Transition> {
        let revision = observation.revision();
        let stale = match &self.seen {
            Seen::Free { revision: seen } | Seen::Held { revision: seen, .. } => revision < *seen,
            Seen::Unknown => false,
        };
        if stale {
            return None;
        }
        let lost = self.leading.as_ref().is_some_and(|l| {
            revision > l.revision
                && !matches!(&observation, Observation::Held { holder, .. } if *holder == self.replica)
        });
        self.seen = match observation {
            Observation::Free { revision } => Seen::Free { revision },
            Observation::Held { revision, holder } => match &self.seen {
                Seen::Held {
                    revision: seen,
                    since,
                    ..
                } if *seen == revision => Seen::Held {
                    revision,
                    holder,
                    since: *since,
                },
                _ => Seen::Held {
                    revision,
                    holder,
                    since: now,
                },
            },
        };
        if lost {
            return self.lose(self.why_taken(now), now);
        }
        None
    }

    /// A lease found in other hands lapsed first when its deadline is past (the leader was
    /// paused or cut off); otherwise it was taken over under it.
    fn why_taken(&self, now: Instant) -> LossReason {
        match &self.leading {
            Some(l) if now >= l.sent_at + self.timing.validity() => LossReason::Lapsed,
            _ => LossReason::TakenOver,
        }
    }

    /// The next KV operation, if one is due; marks the campaign busy until its result comes.
    pub fn next(&mut self, now: Instant) -> (Step, Option<Transition>) {
        if self.busy {
            return (Step::Wait, None);
        }
        if let Some(revision) = self.to_release.take() {
            self.busy = true;
            return (Step::Release { revision }, None);
        }
        if let Some(leading) = &self.leading {
            if now >= leading.sent_at + self.timing.validity() {
                let lost = self.lose(LossReason::Lapsed, now);
                return (self.take_release(), lost);
            }
            if now >= leading.sent_at + self.timing.renew_interval {
                let step = Step::Renew {
                    revision: leading.revision,
                    term: leading.term,
                };
                self.busy = true;
                return (step, None);
            }
            return (Step::Wait, None);
        }
        if self.resigned || self.quiet_until.is_some_and(|q| now < q) {
            return (Step::Wait, None);
        }
        let step = match &self.seen {
            Seen::Unknown => Step::Read,
            Seen::Free { .. } => Step::Create,
            Seen::Held {
                revision, since, ..
            } if now >= *since + self.timing.ttl => Step::TakeOver {
                revision: *revision,
            },
            Seen::Held { .. } => Step::Wait,
        };
        if step != Step::Wait {
            self.busy = true;
        }
        (step, None)
    }

    fn take_release(&mut self) -> Step {
        match self.to_release.take() {
            Some(revision) => {
                self.busy = true;
                Step::Release { revision }
            }
            None => Step::Wait,
        }
    }

    /// The take (create or takeover) sent at `sent_at` succeeded at `revision`: the term.
    pub fn acquired(&mut self, revision: u64, sent_at: Instant) -> Option<Transition> {
        self.busy = false;
        if self.resigned {
            self.to_release = Some(revision);
            return None;
        }
        self.seen = Seen::Held {
            revision,
            holder: self.replica.clone(),
            since: sent_at,
        };
        self.leading = Some(Leading {
            term: revision,
            revision,
            sent_at,
        });
        Some(Transition::Acquired { term: revision })
    }

    /// A read ended: what it found, or nothing when it failed.
    pub fn read_finished(
        &mut self,
        observation: Option<Observation>,
        now: Instant,
    ) -> Option<Transition> {
        self.busy = false;
        self.observe(observation?, now)
    }

    /// The take found the lease taken, or failed: read the key again.
    pub fn not_acquired(&mut self) {
        self.busy = false;
        self.seen = Seen::Unknown;
    }

    /// The renewal of `term` sent at `sent_at` succeeded at `revision`.
    pub fn renewed(&mut self, term: Term, revision: u64, sent_at: Instant) {
        self.busy = false;
        if let Some(leading) = self.leading.as_mut().filter(|l| l.term == term) {
            leading.revision = revision;
            leading.sent_at = sent_at;
        }
    }

    /// The renewal of `term` found another revision: the lease is someone else's.
    pub fn renewal_refused(&mut self, term: Term, now: Instant) -> Option<Transition> {
        self.busy = false;
        self.seen = Seen::Unknown;
        if self.term() != Some(term) {
            return None;
        }
        let reason = self.why_taken(now);
        self.leading = None;
        self.quiet_until = Some(now + self.timing.ttl);
        Some(Transition::Lost { term, reason })
    }

    /// The renewal failed for another reason (NATS slow or away): try again next tick; the
    /// deadline decides when to give up.
    pub fn renewal_failed(&mut self) {
        self.busy = false;
    }

    /// The release ended (done or not: a release that fails leaves a lease that lapses).
    pub fn released(&mut self) {
        self.busy = false;
        self.seen = Seen::Unknown;
    }

    /// Steps down on the caller's word (a refused write of `term`); a lease still held is
    /// released, and the replica stays out of the race for one TTL.
    pub fn step_down(&mut self, term: Term, reason: String, now: Instant) -> Option<Transition> {
        if self.term() != Some(term) {
            return None;
        }
        self.lose(LossReason::Refused(reason), now)
    }

    /// Stops for good: gives up a lease held and never leads again.
    pub fn resign(&mut self, now: Instant) -> Option<Transition> {
        self.resigned = true;
        self.lose(LossReason::Released, now)
    }

    /// True once nothing is in flight and nothing is left to release.
    pub fn is_settled(&self) -> bool {
        !self.busy && self.to_release.is_none()
    }

    fn lose(&mut self, reason: LossReason, now: Instant) -> Option<Transition> {
        let leading = self.leading.take()?;
        if reason != LossReason::TakenOver
            && !matches!(self.seen, Seen::Held { ref holder, .. } if *holder != self.replica)
        {
            self.to_release = Some(leading.revision);
        }
        self.quiet_until = Some(now + self.timing.ttl);
        Some(Transition::Lost {
            term: leading.term,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        ttl: Duration::from_secs(5),
        renew_interval: Duration::from_secs(1),
    };

    fn held(revision: u64, holder: &str) -> Observation {
        Observation::Held {
            revision,
            holder: holder.into(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A campaign of `r1` that took a free lease at `t0`, in term 5.
    fn leading_in_term_5(t0: Instant) -> Campaign {
        let mut c = Campaign::new("r1", TIMING);
        c.observe(Observation::Free { revision: 0 }, t0);
        c.next(t0);
        c.acquired(5, t0);
        c
    }

    #[test]
    fn a_free_lease_is_created_and_its_revision_is_the_term() {
        let t0 = Instant::now();
        let mut c = Campaign::new("r1", TIMING);
        assert_eq!(c.next(t0).0, Step::Read);
        assert_eq!(c.next(t0).0, Step::Wait, "one operation at a time");
        c.read_finished(Some(Observation::Free { revision: 0 }), t0);
        assert_eq!(c.next(t0).0, Step::Create);
        assert_eq!(c.acquired(7, t0), Some(Transition::Acquired { term: 7 }));
        assert_eq!(c.term(), Some(7));
        assert_eq!(
            c.fence(),
            FenceState::Leading {
                term: 7,
                valid_until: t0 + secs(4)
            }
        );
    }

    #[test]
    fn a_held_lease_is_taken_over_only_after_a_whole_ttl_without_a_new_revision() {
        let t0 = Instant::now();
        let mut c = Campaign::new("r2", TIMING);
        c.observe(held(3, "r1"), t0);
        assert_eq!(c.next(t0 + secs(4)).0, Step::Wait);
        // A renewal restarts the count; seeing the same revision again does not.
        c.observe(held(4, "r1"), t0 + secs(4));
        c.observe(held(4, "r1"), t0 + secs(6));
        assert_eq!(c.next(t0 + secs(8)).0, Step::Wait);
        assert_eq!(c.next(t0 + secs(9)).0, Step::TakeOver { revision: 4 });
        c.not_acquired();
        assert_eq!(
            c.next(t0 + secs(9)).0,
            Step::Read,
            "lost the race: read again"
        );
    }

    #[test]
    fn an_older_observation_never_replaces_a_newer_one() {
        let t0 = Instant::now();
        let mut c = Campaign::new("r2", TIMING);
        c.observe(held(9, "r1"), t0);
        c.observe(Observation::Free { revision: 8 }, t0 + secs(1));
        assert_eq!(c.next(t0 + secs(1)).0, Step::Wait);
    }

    #[test]
    fn the_leader_renews_every_interval_and_its_deadline_moves_with_each_renewal() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        assert_eq!(c.next(t0 + Duration::from_millis(900)).0, Step::Wait);
        assert_eq!(
            c.next(t0 + secs(1)).0,
            Step::Renew {
                revision: 5,
                term: 5
            }
        );
        c.renewed(5, 11, t0 + secs(1));
        // Its own renewal seen on the watch changes nothing.
        assert_eq!(c.observe(held(11, "r1"), t0 + secs(1)), None);
        assert_eq!(
            c.fence(),
            FenceState::Leading {
                term: 5,
                valid_until: t0 + secs(5)
            }
        );
        assert_eq!(
            c.next(t0 + secs(2)).0,
            Step::Renew {
                revision: 11,
                term: 5
            }
        );
    }

    #[test]
    fn a_leader_whose_renewals_fail_steps_down_at_its_deadline_and_releases() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        for s in 1..4 {
            assert!(matches!(c.next(t0 + secs(s)).0, Step::Renew { .. }));
            c.renewal_failed();
        }
        let (step, lost) = c.next(t0 + secs(4));
        assert_eq!(
            lost,
            Some(Transition::Lost {
                term: 5,
                reason: LossReason::Lapsed
            })
        );
        assert_eq!(step, Step::Release { revision: 5 });
        assert_eq!(c.fence(), FenceState::Following);
        c.released();
        assert_eq!(
            c.next(t0 + secs(5)).0,
            Step::Wait,
            "stays out of the race for a TTL"
        );
        assert_eq!(c.next(t0 + secs(9)).0, Step::Read);
    }

    #[test]
    fn a_refused_renewal_or_a_lease_seen_in_other_hands_means_the_lease_is_lost() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        c.next(t0 + secs(1));
        assert_eq!(
            c.renewal_refused(5, t0 + secs(1)),
            Some(Transition::Lost {
                term: 5,
                reason: LossReason::TakenOver
            })
        );
        assert_eq!(c.next(t0 + secs(1)).0, Step::Wait, "nothing to release");

        let mut c = leading_in_term_5(t0);
        assert_eq!(
            c.observe(held(9, "r2"), t0 + secs(1)),
            Some(Transition::Lost {
                term: 5,
                reason: LossReason::TakenOver
            })
        );
    }

    #[test]
    fn a_paused_leader_that_wakes_to_find_its_lease_taken_knows_it_lapsed() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        assert_eq!(
            c.observe(held(9, "r2"), t0 + secs(30)),
            Some(Transition::Lost {
                term: 5,
                reason: LossReason::Lapsed
            })
        );
        assert_eq!(c.fence(), FenceState::Following);
        assert_eq!(
            c.next(t0 + secs(30)).0,
            Step::Wait,
            "nothing of its own to release"
        );
    }

    #[test]
    fn stepping_down_on_a_refusal_releases_the_lease_of_that_term_only() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        assert_eq!(c.step_down(4, "old".into(), t0), None, "another term");
        let lost = c.step_down(5, "fence moved".into(), t0);
        assert!(matches!(
            lost,
            Some(Transition::Lost {
                term: 5,
                reason: LossReason::Refused(_)
            })
        ));
        assert_eq!(c.next(t0).0, Step::Release { revision: 5 });
    }

    #[test]
    fn a_resigned_replica_releases_and_never_leads_again() {
        let t0 = Instant::now();
        let mut c = leading_in_term_5(t0);
        assert!(matches!(
            c.resign(t0),
            Some(Transition::Lost {
                reason: LossReason::Released,
                ..
            })
        ));
        assert!(!c.is_settled());
        assert_eq!(c.next(t0).0, Step::Release { revision: 5 });
        c.released();
        assert!(c.is_settled());
        c.observe(Observation::Free { revision: 6 }, t0 + secs(60));
        assert_eq!(c.next(t0 + secs(60)).0, Step::Wait);
        // A take that lands after resigning is given back at once.
        assert_eq!(c.acquired(8, t0 + secs(60)), None);
        assert_eq!(c.next(t0 + secs(60)).0, Step::Release { revision: 8 });
    }
}
