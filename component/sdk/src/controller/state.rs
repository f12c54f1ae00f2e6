//! `WorkQueue`: the controller's scheduling state machine, pure and time-free. It holds the
//! keys waiting for a worker, the ones being reconciled (never two reconciles of one entity at
//! once; a change arriving meanwhile marks it dirty so it runs again after), the per-entity
//! failure counts behind the backoff, and the live requeue timer of each entity.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use operator_contract::{Entity, EntityStatus, ResourceStatus};

use crate::backoff::Backoff;
use crate::store::EntityRef;

/// How a reconcile ended, as far as scheduling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It succeeded; come back after the delay, or only when a command arrives.
    Reconciled { requeue_after: Option<Duration> },
    /// It failed in a way worth retrying: back off, then retry, not before `retry_after`
    /// when the platform said when.
    Failed { retry_after: Option<Duration> },
    /// It failed for good and the `error` status was reported: wait for a new spec.
    Settled,
    /// The entity was deleting, the platform is clean and `deleted` was published for this
    /// generation: the entity may go.
    Deleted { generation: u64 },
    /// A write or a platform call was refused: this replica no longer leads.
    Fenced { reason: String },
}

/// A reconcile to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Work {
    pub entity: EntityRef,
    /// Failed reconciles of this entity in a row before this one.
    pub retries: u32,
}

/// A requeue to arm: after `delay`, call [`WorkQueue::timer_fired`] with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timer {
    pub entity: EntityRef,
    pub delay: Duration,
    pub token: u64,
}

/// The controller's work queue.
#[derive(Debug)]
pub(crate) struct WorkQueue {
    max_workers: usize,
    backoff: Backoff,
    pending: VecDeque<EntityRef>,
    queued: HashSet<EntityRef>,
    in_flight: HashSet<EntityRef>,
    dirty: HashSet<EntityRef>,
    failures: HashMap<EntityRef, u32>,
    timers: HashMap<EntityRef, u64>,
    next_token: u64,
    draining: bool,
}

impl WorkQueue {
    /// A queue running at most `max_workers` reconciles at once.
    pub fn new(max_workers: usize, backoff: Backoff) -> Self {
        Self {
            max_workers: max_workers.max(1),
            backoff,
            pending: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            timers: HashMap::new(),
            next_token: 0,
            draining: false,
        }
    }

    /// The entity changed: reconcile it as soon as possible (after the running reconcile, if
    /// one is running). A pending requeue timer is dropped.
    pub fn enqueue(&mut self, entity: EntityRef) {
        self.timers.remove(&entity);
        if self.in_flight.contains(&entity) {
            self.dirty.insert(entity);
        } else if self.queued.insert(entity.clone()) {
            self.pending.push_back(entity);
        }
    }

    /// The next reconcile to start, when a worker is free.
    pub fn next(&mut self) -> Option<Work> {
        if self.draining || self.in_flight.len() >= self.max_workers {
            return None;
        }
        let entity = self.pending.pop_front()?;
        self.queued.remove(&entity);
        self.in_flight.insert(entity.clone());
        let retries = self.failures.get(&entity).copied().unwrap_or(0);
        Some(Work { entity, retries })
    }

    /// A reconcile ended; returns the requeue timer to arm, if any. `jitter` in `[0, 1)` picks
    /// the delay within the backoff window after a failure.
    pub fn finish(&mut self, entity: &EntityRef, outcome: &Outcome, jitter: f64) -> Option<Timer> {
        if !self.in_flight.remove(entity) {
            return None;
        }
        let failures = match outcome {
            Outcome::Failed { .. } => {
                let n = self.failures.entry(entity.clone()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                self.failures.remove(entity);
                0
            }
        };
        if self.dirty.remove(entity) {
            self.enqueue(entity.clone());
            return None;
        }
        if self.draining {
            return None;
        }
        let delay = match outcome {
            Outcome::Reconciled { requeue_after } => (*requeue_after)?,
            Outcome::Failed { retry_after } => {
                let backoff = self.backoff.delay(failures, jitter);
                retry_after.map_or(backoff, |after| after.max(backoff))
            }
            Outcome::Settled | Outcome::Deleted { .. } | Outcome::Fenced { .. } => return None,
        };
        self.next_token += 1;
        self.timers.insert(entity.clone(), self.next_token);
        Some(Timer {
            entity: entity.clone(),
            delay,
            token: self.next_token,
        })
    }

    /// A requeue timer went off; true when it was still live and the entity is now queued.
    pub fn timer_fired(&mut self, entity: &EntityRef, token: u64) -> bool {
        if self.timers.get(entity) != Some(&token) {
            return false;
        }
        self.enqueue(entity.clone());
        true
    }

    /// The entity is gone from the store: drop what is remembered of it.
    pub fn forget(&mut self, entity: &EntityRef) {
        self.failures.remove(entity);
        self.timers.remove(entity);
    }

    /// Start no more reconciles and arm no more timers.
    pub fn start_draining(&mut self) {
        self.draining = true;
        self.timers.clear();
    }

    /// True when no reconcile is running.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// How many reconciles are running.
    pub fn running(&self) -> usize {
        self.in_flight.len()
    }

    /// How many entities wait for a worker.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// Whether a periodic resync reconciles a stored entity again: everything but a terminal error
/// at the entity's generation (retrying it needs a new spec).
pub(crate) fn needs_resync(entity: &Entity, status: Option<&EntityStatus>) -> bool {
    !status.is_some_and(|s| {
        s.status == ResourceStatus::Error
            && s.observed_generation == entity.generation
            && !entity.deleting
    })
}

/// Whether a stored entity must be reconciled when the component starts: everything except
/// entities whose status describes their current generation and is final (a run that ended,
/// or a terminal error).
pub(crate) fn needs_reconcile_at_start(entity: &Entity, status: Option<&EntityStatus>) -> bool {
    let Some(status) = status else { return true };
    if entity.deleting || status.observed_generation < entity.generation {
        return true;
    }
    let settled = status.status == ResourceStatus::Error
        || status.runtime.is_some_and(|runtime| runtime.is_final());
    !settled
}

#[cfg(test)]
mod tests {
    use operator_contract::{EntityKey, RuntimeStatus};

    use super::*;
    use crate::store::memory::tests::entity;

    fn r(name: &str) -> EntityRef {
        EntityRef::new("job", EntityKey::new("public", name).expect("valid"))
    }

    fn queue(workers: usize) -> WorkQueue {
        WorkQueue::new(
            workers,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        )
    }

    const DONE: Outcome = Outcome::Reconciled {
        requeue_after: None,
    };

    #[test]
    fn at_most_max_workers_reconciles_run_at_once_in_arrival_order() {
        let mut q = queue(2);
        for name in ["a", "b", "c"] {
            q.enqueue(r(name));
        }
        assert_eq!(q.next().map(|w| w.entity), Some(r("a")));
        assert_eq!(q.next().map(|w| w.entity), Some(r("b")));
        assert_eq!(q.next(), None);
        assert_eq!((q.running(), q.waiting()), (2, 1));
        q.finish(&r("a"), &DONE, 0.0);
        assert_eq!(q.next().map(|w| w.entity), Some(r("c")));
    }

    #[test]
    fn an_entity_is_queued_once_however_many_changes_arrive() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        q.enqueue(r("a"));
        assert_eq!(q.waiting(), 1);
        assert!(q.next().is_some());
        assert_eq!(q.next(), None);
    }

    #[test]
    fn a_change_during_a_reconcile_runs_it_again_after_never_alongside() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        let work = q.next().expect("starts");
        q.enqueue(r("a"));
        q.enqueue(r("a"));
        assert_eq!(q.next(), None, "never two reconciles of one entity");
        let timer = q.finish(
            &work.entity,
            &Outcome::Reconciled {
                requeue_after: Some(Duration::from_secs(5)),
            },
            0.0,
        );
        assert_eq!(timer, None, "the change runs now instead of the requeue");
        assert_eq!(q.next().map(|w| w.entity), Some(r("a")));
        assert_eq!(q.next(), None);
    }

    #[test]
    fn retryable_failures_back_off_exponentially_and_success_resets_them() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        let mut delays = Vec::new();
        for expected_retries in 0..4 {
            let work = q.next().expect("runs");
            assert_eq!(work.retries, expected_retries);
            let timer = q
                .finish(&work.entity, &Outcome::Failed { retry_after: None }, 1.0)
                .expect("retry armed");
            delays.push(timer.delay);
            assert!(q.timer_fired(&timer.entity, timer.token));
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        let work = q.next().expect("runs");
        assert_eq!(q.finish(&work.entity, &DONE, 0.0), None);
        q.enqueue(r("a"));
        assert_eq!(q.next().map(|w| w.retries), Some(0));
    }

    #[test]
    fn the_backoff_delay_stops_at_the_cap() {
        let mut q = queue(1);
        q.enqueue(r("a"));
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let work = q.next().expect("runs");
            let timer = q
                .finish(&work.entity, &Outcome::Failed { retry_after: None }, 1.0)
                .expect("armed");
            last = timer.delay;
            q.timer_fired(&timer.entity, timer.token);
        }
        assert_eq!(last, Duration::from_secs(1));
    }

    #[test]
    fn a_retry_after_longer_than_the_backoff_delays_the_retry_and_a_shorter_one_does_not() {
        let first_retry = |retry_after| {
            let mut q = queue(4);
            q.enqueue(r("a"));
            let work = q.next().expect("runs");
            q.finish(&work.entity, &Outcome::Failed { retry_after }, 0.5)
                .expect("armed")
                .delay
        };
        let backoff = first_retry(None);
        assert!(backoff < Duration::from_secs(1), "{backoff:?}");
        assert_eq!(
            first_retry(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(first_retry(Some(Duration::from_millis(1))), backoff);
    }

    #[test]
    fn a_change_supersedes_a_pending_requeue_timer() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        let work = q.next().expect("runs");
        let timer = q
            .finish(&work.entity, &Outcome::Failed { retry_after: None }, 0.0)
            .expect("retry armed");
        q.enqueue(r("a"));
        assert!(
            !q.timer_fired(&timer.entity, timer.token),
            "stale timer ignored"
        );
        assert!(q.next().is_some());
        assert_eq!(q.next(), None);
    }

    #[test]
    fn terminal_failures_and_deletions_wait_for_a_change() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        q.enqueue(r("b"));
        let a = q.next().expect("runs");
        let b = q.next().expect("runs");
        assert_eq!(q.finish(&a.entity, &Outcome::Settled, 0.0), None);
        assert_eq!(
            q.finish(&b.entity, &Outcome::Deleted { generation: 2 }, 0.0),
            None
        );
        q.forget(&b.entity);
        assert!(q.is_idle());
        assert_eq!(q.next(), None);
    }

    #[test]
    fn draining_starts_nothing_new_and_arms_no_timer() {
        let mut q = queue(4);
        q.enqueue(r("a"));
        q.enqueue(r("b"));
        let a = q.next().expect("runs");
        q.start_draining();
        assert_eq!(q.next(), None);
        assert!(!q.is_idle());
        assert_eq!(
            q.finish(&a.entity, &Outcome::Failed { retry_after: None }, 0.0),
            None
        );
        assert!(q.is_idle());
    }

    #[test]
    fn a_finish_for_an_entity_not_running_is_ignored() {
        let mut q = queue(4);
        assert_eq!(
            q.finish(&r("a"), &Outcome::Failed { retry_after: None }, 0.0),
            None
        );
        assert_eq!(q.next(), None);
    }

    #[test]
    fn a_resync_reconciles_all_but_terminal_errors_of_the_current_spec() {
        let e = entity("a", 2);
        let mut status = EntityStatus::pending(e.key.clone(), "demo", "job");
        status.observed_generation = 2;
        status.status = ResourceStatus::Active;
        status.runtime = Some(RuntimeStatus::Succeeded);
        assert!(
            needs_resync(&e, Some(&status)),
            "a finished run is looked at again"
        );
        assert!(needs_resync(&e, None));
        status.status = ResourceStatus::Error;
        assert!(!needs_resync(&e, Some(&status)));
        status.observed_generation = 1;
        assert!(needs_resync(&e, Some(&status)), "an error of an older spec");
    }

    #[test]
    fn at_start_only_settled_entities_are_left_alone() {
        let e = entity("a", 2);
        let mut status = EntityStatus::pending(e.key.clone(), "demo", "job");
        assert!(needs_reconcile_at_start(&e, None));
        assert!(
            needs_reconcile_at_start(&e, Some(&status)),
            "never observed"
        );
        status.observed_generation = 2;
        status.status = ResourceStatus::Active;
        status.runtime = Some(RuntimeStatus::InProgress);
        assert!(needs_reconcile_at_start(&e, Some(&status)), "still running");
        status.runtime = Some(RuntimeStatus::Succeeded);
        assert!(!needs_reconcile_at_start(&e, Some(&status)), "run ended");
        status.runtime = None;
        assert!(
            needs_reconcile_at_start(&e, Some(&status)),
            "not runnable: resync"
        );
        status.status = ResourceStatus::Error;
        assert!(
            !needs_reconcile_at_start(&e, Some(&status)),
            "terminal error"
        );
        let deleting = Entity {
            deleting: true,
            ..e
        };
        assert!(needs_reconcile_at_start(&deleting, Some(&status)));
    }
}
