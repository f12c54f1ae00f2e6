//! The controller's leadership: alone it always acts (term 0); replicated it acts only between
//! `LeadershipAcquired` and `LeadershipLost`. Taking over is: write the store's fence, catch the
//! copy up to it, then resume every entity that is not settled (a running job is followed, not
//! started again: its status says so) and start consuming commands. Losing is: stop consuming,
//! abort the running reconciles, forget the schedule, and reload the copy from the bucket.

use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::actor::ControllerActor;
use super::messages::{FenceWritten, Resynced};
use super::state::needs_reconcile_at_start;
use crate::backoff::Backoff;
use crate::election::{LeadershipAcquired, LeadershipLost, StepDown, Subscribe, Term};
use crate::store::{EntityRef, Mode, StoreError, StoreEvent, WriteFence};

/// Status events announced again at once when a replica starts to act.
const ANNOUNCE_IN_FLIGHT: usize = 64;

/// The delays between attempts to write the fence or reload the copy.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Whether, and in which term, the controller may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leadership {
    /// No election: always, in term 0.
    Sole,
    /// Another replica leads, or none.
    Following,
    /// Took the lease in `term`; writing the fence (sequence once written) and catching up.
    Preparing { term: Term, fence: Option<u64> },
    /// Leads in `term`.
    Leading { term: Term },
}

impl Leadership {
    /// The term to act in, when the controller may act.
    pub fn acting_term(&self) -> Option<Term> {
        match self {
            Self::Sole => Some(0),
            Self::Leading { term } => Some(*term),
            Self::Following | Self::Preparing { .. } => None,
        }
    }

    /// True when reconciling and consuming.
    pub fn is_leading(&self) -> bool {
        self.acting_term().is_some()
    }

    fn term(&self) -> Option<Term> {
        match self {
            Self::Preparing { term, .. } | Self::Leading { term } => Some(*term),
            Self::Sole | Self::Following => None,
        }
    }
}

impl ControllerActor {
    /// At start: act at once when alone; otherwise follow the store and join the election.
    pub(super) fn join(&mut self, ctx: &mut Context<Self>) {
        if self.leadership == Leadership::Sole {
            self.start_acting(ctx);
            return;
        }
        if let Some(mut events) = self.store_events.take() {
            ctx.add_stream(futures::stream::poll_fn(move |cx| events.poll_recv(cx)));
        }
        if let Some(election) = &self.election {
            election.do_send(Subscribe {
                acquired: ctx.address().recipient(),
                lost: ctx.address().recipient(),
            });
        }
    }

    /// Resumes every unsettled entity and starts consuming commands.
    fn start_acting(&mut self, ctx: &mut Context<Self>) {
        let resumed: Vec<EntityRef> = self
            .store
            .entries()
            .filter(|(entity, status)| needs_reconcile_at_start(entity, status.as_ref()))
            .map(|(entity, _)| EntityRef::of_entity(&entity))
            .collect();
        info!(
            term = self.leadership.acting_term(),
            entities = self.store.len(),
            resumed = resumed.len(),
            "controller acting"
        );
        for entity in resumed {
            self.queue.enqueue(entity);
        }
        self.announce_stored_statuses();
        if let Some(feed) = &self.feed {
            if !self.draining {
                let take_over = self.leadership != Leadership::Sole;
                self.running_feed = Some(feed.start(ctx.address(), self.fence.clone(), take_over));
            }
        }
        self.dispatch(ctx);
    }

    /// Publishes every stored status again. A predecessor that died between storing a status
    /// and JetStream acknowledging its event (or a NATS outage longer than the event's retries)
    /// leaves a status the orchestrator never heard of, and a reconcile that finds it unchanged
    /// would not report it; the orchestrator keeps only what is not older than what it holds.
    fn announce_stored_statuses(&self) {
        let events: Vec<_> = self
            .store
            .entries()
            .filter_map(|(entity, status)| {
                status.map(|s| crate::events::status_event(&s, Some(entity.last_command)))
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let publisher = self.events.clone();
        tokio::spawn(async move {
            use futures::StreamExt as _;
            let count = events.len();
            let failed = futures::stream::iter(events)
                .map(|event| {
                    let publisher = publisher.clone();
                    async move { publisher.publish(&event).await.is_err() }
                })
                .buffer_unordered(ANNOUNCE_IN_FLIGHT)
                .filter(|failed| futures::future::ready(*failed))
                .count()
                .await;
            if failed > 0 {
                warn!(failed, of = count, "stored statuses not announced again");
            }
        });
    }

    /// Steps down from the current term (a write or a platform call was refused).
    pub(super) fn step_down(&mut self, reason: String, ctx: &mut Context<Self>) {
        let Some(term) = self.leadership.term() else {
            if self.leadership == Leadership::Sole {
                warn!(reason = %reason, "refused, but this component is not elected and cannot step down");
            }
            return;
        };
        if let Some(election) = &self.election {
            election.do_send(StepDown {
                term,
                reason: reason.clone(),
            });
        }
        self.lose(term, &reason, ctx);
    }

    /// Stops acting in `term`, if that is the current term.
    fn lose(&mut self, term: Term, reason: &str, ctx: &mut Context<Self>) {
        if self.leadership.term() != Some(term) {
            return;
        }
        warn!(term, reason = %reason, running = self.queue.running(), "controller stops leading");
        self.leadership = Leadership::Following;
        self.epoch += 1;
        self.stop_feed(ctx);
        self.reset_work();
        if let Some(store) = self.store.kv_mut() {
            store.stop_leading();
        }
        self.reload(ctx);
        self.notify_if_drained();
    }

    /// Stops the command feed, if one runs, and lets draining go on once it has.
    pub(super) fn stop_feed(&mut self, ctx: &mut Context<Self>) {
        let Some(feed) = self.running_feed.take() else {
            return;
        };
        self.feeds_stopping += 1;
        ctx.spawn(feed.stop().into_actor(self).map(|(), act, _| {
            act.feeds_stopping -= 1;
            act.notify_if_drained();
        }));
    }

    /// Takes a fresh snapshot of the bucket and follows it (retrying while following).
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let Some(kv) = self.store.kv_mut().map(|s| s.kv()) else {
            return;
        };
        let addr = ctx.address();
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                match crate::store::snapshot(&kv).await {
                    Ok(snapshot) => {
                        addr.do_send(Resynced { snapshot });
                        return;
                    }
                    Err(e) => {
                        attempt += 1;
                        warn!(error = %e, attempt, "entity bucket not reloaded; retrying");
                        tokio::time::sleep(RETRY.delay_with_random_jitter(attempt)).await;
                    }
                }
                if !addr.connected() {
                    return;
                }
            }
        });
    }

    /// Writes the fence of `term`, retrying while the lease lasts.
    fn write_fence(&mut self, term: Term, ctx: &mut Context<Self>) {
        let Some(kv) = self.store.kv_mut().map(|s| s.kv()) else {
            return;
        };
        let (addr, fence, replica) = (ctx.address(), self.fence.clone(), self.replica.clone());
        tokio::spawn(async move {
            let mut attempt = 0;
            let result = loop {
                if let Err(e) = fence.check() {
                    break Err(StoreError::Fenced {
                        reason: e.to_string(),
                    });
                }
                match crate::store::write_fence(&kv, term, &replica).await {
                    Err(StoreError::Unavailable { reason }) => {
                        attempt += 1;
                        warn!(term, reason = %reason, attempt, "fence not written; retrying");
                        tokio::time::sleep(RETRY.delay_with_random_jitter(attempt)).await;
                    }
                    result => break result,
                }
            };
            addr.do_send(FenceWritten { term, result });
        });
    }

    /// Leads once the fence is written and the copy has caught up with it.
    fn finish_preparing(&mut self, ctx: &mut Context<Self>) {
        let Leadership::Preparing {
            term,
            fence: Some(sequence),
        } = self.leadership
        else {
            return;
        };
        let Some(store) = self.store.kv_mut() else {
            return;
        };
        if store.watched_up_to() < sequence {
            return;
        }
        store.lead(WriteFence { term, sequence });
        self.leadership = Leadership::Leading { term };
        info!(
            term,
            fence = sequence,
            "store fenced and caught up: leading"
        );
        self.start_acting(ctx);
    }
}

impl Handler<LeadershipAcquired> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: LeadershipAcquired, ctx: &mut Self::Context) {
        if self.leadership == Leadership::Sole || self.draining {
            return;
        }
        if let Some(term) = self.leadership.term() {
            self.lose(term, "a new term began", ctx);
        }
        self.epoch += 1;
        self.leadership = Leadership::Preparing {
            term: msg.term,
            fence: None,
        };
        info!(term = msg.term, "leadership acquired: fencing the store");
        if self.store.kv_mut().is_some_and(|s| !s.is_watching()) {
            self.reload(ctx);
        }
        self.write_fence(msg.term, ctx);
    }
}

impl Handler<LeadershipLost> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: LeadershipLost, ctx: &mut Self::Context) {
        self.lose(msg.term, &msg.reason, ctx);
    }
}

impl Handler<FenceWritten> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: FenceWritten, ctx: &mut Self::Context) {
        let Leadership::Preparing { term, .. } = self.leadership else {
            return;
        };
        if term != msg.term {
            return;
        }
        match msg.result {
            Ok(sequence) => {
                self.leadership = Leadership::Preparing {
                    term,
                    fence: Some(sequence),
                };
                self.finish_preparing(ctx);
            }
            Err(e) => self.step_down(format!("fence not written: {e}"), ctx),
        }
    }
}

impl Handler<Resynced> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: Resynced, ctx: &mut Self::Context) {
        if let Some(store) = self.store.kv_mut() {
            if store.mode() == Mode::Following {
                store.follow_from(msg.snapshot);
                info!(
                    entities = self.store.len(),
                    "entity copy reloaded from the bucket"
                );
            }
        }
        self.finish_preparing(ctx);
    }
}

impl StreamHandler<StoreEvent> for ControllerActor {
    fn handle(&mut self, event: StoreEvent, ctx: &mut Self::Context) {
        match event {
            StoreEvent::Changed {
                generation,
                changes,
            } => {
                if let Some(store) = self.store.kv_mut() {
                    store.apply(generation, changes);
                }
                self.finish_preparing(ctx);
            }
            StoreEvent::Refused { sequence, reason } => {
                let current = self.store.kv_mut().map(|s| s.mode());
                if matches!(current, Some(Mode::Leading(f)) if f.sequence == sequence) {
                    self.step_down(reason, ctx);
                }
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        warn!("the store's event stream ended");
    }
}
