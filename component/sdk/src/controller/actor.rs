//! `ControllerActor`: the thin actix shell around the store, the message handler and the
//! [`WorkQueue`]. Reconciles run as spawned tasks that report back with `ReconcileFinished`.
//! Whether it may consume, reconcile and write at all is its leadership (`leadership.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, info_span, warn};

use super::leadership::Leadership;
use super::messages::{
    AnswerQuery, ApplyCommand, CommandApplied, Drain, GetEntity, GetEntityStatus,
    ReconcileFinished, ResyncTick, StatusStored, StoreStatus,
};
use super::state::{needs_resync, Outcome, Timer, WorkQueue};
use super::task::{self, ReconcileTask};
use super::{Controller, ControllerError};
use crate::backoff::Backoff;
use crate::bridge::{CommandFeed, RunningFeed};
use crate::election::{Fence, LeaderElection};
use crate::events::{status_event, EventPublisher};
use crate::handler::{CommandOutcome, MessageHandler};
use crate::metrics::{CommandResult, ComponentMetrics};
use crate::reconciler::{DynReconciler, ReconcileRequest};
use crate::store::{EntityRef, EntityStore, StoreEvent, StoreFlush};
use crate::trace::TraceContext;

/// Room in the mailbox for requests from reconcile tasks before senders wait.
const MAILBOX_CAPACITY: usize = 4096;
/// How often the leader forgets the entities deleted more than `TOMBSTONE_TTL` ago.
const TOMBSTONE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Owns the store and the work queue of a component.
pub(crate) struct ControllerActor {
    pub(super) store: EntityStore,
    pub(super) store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
    handler: Box<dyn MessageHandler>,
    reconciler: Arc<dyn DynReconciler>,
    pub(super) queue: WorkQueue,
    max_workers: usize,
    backoff: Backoff,
    pub(super) events: EventPublisher,
    controller: Option<Controller>,
    drain_waiters: Vec<oneshot::Sender<StoreFlush>>,
    pub(super) draining: bool,
    pub(super) leadership: Leadership,
    /// Grows at every change of leadership; work of an older epoch is dropped.
    pub(super) epoch: u64,
    pub(super) fence: Fence,
    pub(super) election: Option<Addr<LeaderElection>>,
    pub(super) replica: String,
    pub(super) feed: Option<CommandFeed>,
    pub(super) running_feed: Option<RunningFeed>,
    pub(super) feeds_stopping: usize,
    pub(super) tasks: HashMap<EntityRef, AbortHandle>,
    /// The trace of the latest command applied to each entity, which its reconciles join.
    causes: HashMap<EntityRef, TraceContext>,
    /// Entities with a command's write not yet durable, and how many such writes: not
    /// reconciled meanwhile, even when a requeue (polling a running job) comes due, since the
    /// copy holds the write that may yet be refused; reconciled once it is durable.
    awaiting_durable: HashMap<EntityRef, usize>,
    resync: Option<Duration>,
    pub(super) metrics: ComponentMetrics,
}

impl ControllerActor {
    /// A controller that acts alone (no election), with no command feed (tests feed it
    /// `ApplyCommand` directly), recording into `metrics`.
    pub fn new(
        store: EntityStore,
        handler: Box<dyn MessageHandler>,
        reconciler: Arc<dyn DynReconciler>,
        max_workers: usize,
        backoff: Backoff,
        events: EventPublisher,
        metrics: ComponentMetrics,
    ) -> Self {
        Self {
            store,
            store_events: None,
            handler,
            reconciler,
            queue: WorkQueue::new(max_workers, backoff),
            max_workers,
            backoff,
            events,
            controller: None,
            drain_waiters: Vec::new(),
            draining: false,
            leadership: Leadership::Sole,
            epoch: 0,
            fence: Fence::unelected(),
            election: None,
            replica: String::new(),
            feed: None,
            running_feed: None,
            feeds_stopping: 0,
            tasks: HashMap::new(),
            causes: HashMap::new(),
            awaiting_durable: HashMap::new(),
            resync: None,
            metrics,
        }
    }

    /// Consumes commands from `feed` while it leads.
    pub fn with_commands(mut self, feed: CommandFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Leads only when `election` says so, behind `fence`; `store_events` are the store's.
    pub fn with_election(
        mut self,
        election: Addr<LeaderElection>,
        fence: Fence,
        replica: String,
        store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
    ) -> Self {
        self.election = Some(election);
        self.fence = fence;
        self.replica = replica;
        self.store_events = store_events;
        self.leadership = Leadership::Following;
        self
    }

    /// Starts no reconcile of its own: a test harness runs them (`crate::testing`).
    pub fn without_reconciling(mut self) -> Self {
        self.queue.start_draining();
        self
    }

    /// Reconciles every entity again every `interval` while leading.
    pub fn with_resync(mut self, interval: Option<Duration>) -> Self {
        self.resync = interval;
        self
    }

    /// Forgets every scheduled and running reconcile (they belong to a leadership that ended).
    pub(super) fn reset_work(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
        self.causes.clear();
        self.queue = WorkQueue::new(self.max_workers, self.backoff);
        if self.draining {
            self.queue.start_draining();
        }
        self.record_queue();
    }

    fn record_queue(&self) {
        self.metrics
            .queue(self.queue.waiting(), self.queue.running());
    }

    /// Starts as many reconciles as workers are free.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.start_reconciles(ctx);
        self.record_queue();
    }

    fn start_reconciles(&mut self, ctx: &mut Context<Self>) {
        let Some(controller) = self.controller.clone() else {
            return;
        };
        let Some(term) = self.leadership.acting_term() else {
            return;
        };
        while let Some(work) = self.queue.next() {
            if self.awaiting_durable.contains_key(&work.entity) {
                // Queued again once the write is durable (`reconcile_once_durable`).
                self.queue.finish(&work.entity, &Outcome::Settled, 0.0);
                continue;
            }
            let Some(entity) = self.store.entity(&work.entity) else {
                self.queue.finish(&work.entity, &Outcome::Settled, 0.0);
                continue;
            };
            let request = ReconcileRequest {
                entity,
                status: self.store.status(&work.entity),
            };
            let cause = self.causes.get(&work.entity).cloned().unwrap_or_default();
            let reconcile = task::reconcile(ReconcileTask {
                reconciler: self.reconciler.clone(),
                controller: controller.clone(),
                request,
                retries: work.retries,
                fence: self.fence.clone(),
                term,
                cause: cause.clone(),
                metrics: self.metrics.clone(),
            });
            let (addr, epoch, entity) = (ctx.address(), self.epoch, work.entity.clone());
            let handle = tokio::spawn(async move {
                let outcome = reconcile.await;
                addr.do_send(ReconcileFinished {
                    entity,
                    outcome,
                    cause,
                    epoch,
                });
            });
            self.tasks.insert(work.entity, handle.abort_handle());
        }
    }

    fn arm(&self, timer: Timer, ctx: &mut Context<Self>) {
        let epoch = self.epoch;
        ctx.run_later(timer.delay, move |actor, ctx| {
            if actor.epoch == epoch && actor.queue.timer_fired(&timer.entity, timer.token) {
                actor.dispatch(ctx);
            }
        });
    }

    pub(super) fn notify_if_drained(&mut self) {
        let feed_stopped = self.running_feed.is_none() && self.feeds_stopping == 0;
        if self.drain_waiters.is_empty() || !self.queue.is_idle() || !feed_stopped {
            return;
        }
        for done in self.drain_waiters.drain(..) {
            let _ = done.send(self.store.flush_all());
        }
    }

    fn prune_tombstones(&mut self) {
        if self.draining || !self.leadership.is_leading() {
            return;
        }
        let pruned = self.store.prune_tombstones();
        // Written behind; a tombstone that stays is pruned again next time.
        drop(self.store.take_flush());
        if pruned > 0 {
            debug!(pruned, "tombstones of entities deleted long ago removed");
        }
    }

    /// Queues `entity` for a reconcile once the command's writes in `flush` are durable, and
    /// gives the flush its acknowledgement waits on. Never before: a reconcile acts on the
    /// platform, and a write that is refused (this replica was deposed meanwhile) would leave
    /// the next leader with the older spec, to act on the platform again (a job deleted, then
    /// started again at the generation it had).
    fn reconcile_once_durable(
        &mut self,
        entity: EntityRef,
        flush: StoreFlush,
        ctx: &mut Context<Self>,
    ) -> StoreFlush {
        if flush.is_done() {
            self.queue.enqueue(entity);
            return flush;
        }
        let (durable, answer) = oneshot::channel();
        *self.awaiting_durable.entry(entity.clone()).or_default() += 1;
        ctx.spawn(async move { flush.wait().await }.into_actor(self).map(
            move |result, this, ctx| {
                if let Some(count) = this.awaiting_durable.get_mut(&entity) {
                    *count -= 1;
                    if *count == 0 {
                        this.awaiting_durable.remove(&entity);
                    }
                }
                let still_there = this.store.has_entity(&entity);
                if result.is_ok() && still_there && this.leadership.is_leading() {
                    this.queue.enqueue(entity);
                    this.dispatch(ctx);
                }
                let _ = durable.send(result);
            },
        ));
        StoreFlush::new(vec![answer])
    }
}

impl Actor for ControllerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.controller = Some(Controller::new(
            ctx.address(),
            self.events.clone(),
            self.fence.clone(),
        ));
        info!(
            reconciler = self.reconciler.id(),
            entities = self.store.len(),
            elected = self.fence.is_elected(),
            "controller started"
        );
        if let Some(interval) = self.resync {
            ctx.run_interval(interval, |_, ctx| ctx.notify(ResyncTick));
        }
        ctx.run_interval(TOMBSTONE_PRUNE_INTERVAL, |this, _| this.prune_tombstones());
        self.join(ctx);
    }
}

impl Handler<ApplyCommand> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyCommand, ctx: &mut Self::Context) {
        if self.leadership.acting_term().is_none() {
            // Dropping the reply leaves the command to the leader.
            debug!("command not applied: this replica does not lead");
            return;
        }
        let envelope = &msg.envelope;
        let _span = info_span!(
            parent: &msg.cause,
            "controller.apply",
            entity.type = %envelope.resource_type,
            entity.key = %envelope.key,
            entity.generation = envelope.generation,
            operation = ?envelope.operation,
        )
        .entered();
        let result = self.handler.handle_command(envelope, &mut self.store);
        let entity = EntityRef::new(envelope.resource_type.clone(), envelope.key.clone());
        if let Ok(CommandOutcome::Stale { .. }) = &result {
            // Stale against the copy, which may hold a write that is refused later: the command
            // is acknowledged only once that write is known to be in the bucket.
            self.store.confirm(&entity);
        }
        let flush = self.store.take_flush();
        let counted = match &result {
            Ok(CommandOutcome::Applied) => CommandResult::Applied,
            Ok(CommandOutcome::Stale { .. }) => CommandResult::Stale,
            Err(_) => CommandResult::Refused,
        };
        self.metrics
            .command_handled(&envelope.resource_type, counted);
        let applied = match result {
            Ok(outcome @ CommandOutcome::Applied) => {
                self.causes
                    .insert(entity.clone(), TraceContext::of(&msg.cause));
                let flush = self.reconcile_once_durable(entity, flush, ctx);
                Ok(CommandApplied { outcome, flush })
            }
            // A redelivery found stale against a write that was not yet durable when it was
            // first applied (so never reconciled): reconciled once that write is known durable.
            Ok(outcome @ CommandOutcome::Stale { .. }) if !flush.is_done() => {
                let flush = self.reconcile_once_durable(entity, flush, ctx);
                Ok(CommandApplied { outcome, flush })
            }
            Ok(outcome) => Ok(CommandApplied { outcome, flush }),
            Err(e) => Err(e),
        };
        // The bridge may have given up on the message; nothing to do then.
        let _ = msg.reply.send(applied);
        self.dispatch(ctx);
    }
}

impl Handler<AnswerQuery> for ControllerActor {
    type Result = MessageResult<AnswerQuery>;

    fn handle(&mut self, msg: AnswerQuery, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.handler.handle_query(&msg.envelope, &self.store))
    }
}

impl Handler<GetEntity> for ControllerActor {
    type Result = MessageResult<GetEntity>;

    fn handle(&mut self, msg: GetEntity, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.store.entity(&msg.entity))
    }
}

impl Handler<GetEntityStatus> for ControllerActor {
    type Result = MessageResult<GetEntityStatus>;

    fn handle(&mut self, msg: GetEntityStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.store.status(&msg.entity))
    }
}

impl Handler<StoreStatus> for ControllerActor {
    type Result = MessageResult<StoreStatus>;

    fn handle(&mut self, msg: StoreStatus, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.fence.check() {
            return MessageResult(Err(ControllerError::Fenced(e.to_string())));
        }
        if self.leadership.acting_term().is_none() {
            return MessageResult(Err(ControllerError::Fenced(
                "this replica does not lead".into(),
            )));
        }
        let r = EntityRef::of_status(&msg.status);
        let Some(entity) = self.store.entity(&r) else {
            return MessageResult(Err(ControllerError::UnknownEntity(r.to_string())));
        };
        let event = status_event(&msg.status, Some(entity.last_command));
        self.store.put_status(msg.status);
        let flush = self.store.take_flush();
        MessageResult(Ok(StatusStored { event, flush }))
    }
}

impl Handler<ReconcileFinished> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: ReconcileFinished, ctx: &mut Self::Context) {
        if msg.epoch != self.epoch {
            return;
        }
        self.tasks.remove(&msg.entity);
        let settled = matches!(
            msg.outcome,
            Outcome::Reconciled {
                requeue_after: None
            } | Outcome::Settled
                | Outcome::Deleted { .. }
        );
        if settled && self.causes.get(&msg.entity) == Some(&msg.cause) {
            // The command's work is done: a later resync begins its own trace. A newer
            // command's trace, which replaced this one meanwhile, is kept.
            self.causes.remove(&msg.entity);
        }
        if let Some(timer) = self
            .queue
            .finish(&msg.entity, &msg.outcome, rand::random::<f64>())
        {
            self.arm(timer, ctx);
        }
        match msg.outcome {
            Outcome::Deleted { generation } => {
                let cleaned = self
                    .store
                    .entity(&msg.entity)
                    .is_some_and(|e| e.deleting && e.generation == generation);
                if cleaned {
                    self.store.bury(&msg.entity);
                    // Removal is written behind; a restart before it lands only repeats the
                    // (idempotent) clean-up.
                    drop(self.store.take_flush());
                    self.queue.forget(&msg.entity);
                    self.causes.remove(&msg.entity);
                    debug!(entity = %msg.entity, "entity removed");
                } else {
                    warn!(entity = %msg.entity, generation, "entity changed during its deletion; kept");
                }
            }
            Outcome::Fenced { reason } => self.step_down(reason, ctx),
            _ => {}
        }
        self.dispatch(ctx);
        self.notify_if_drained();
    }
}

impl Handler<ResyncTick> for ControllerActor {
    type Result = ();

    fn handle(&mut self, _msg: ResyncTick, ctx: &mut Self::Context) {
        if self.draining || !self.leadership.is_leading() {
            return;
        }
        let due: Vec<EntityRef> = self
            .store
            .entries()
            .filter(|(entity, status)| needs_resync(entity, status.as_ref()))
            .map(|(entity, _)| EntityRef::of_entity(&entity))
            .collect();
        info!(
            entities = due.len(),
            "resync: reconciling every entity again"
        );
        for entity in due {
            self.queue.enqueue(entity);
        }
        self.dispatch(ctx);
    }
}

impl Handler<Drain> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        self.draining = true;
        self.queue.start_draining();
        info!(
            running = self.queue.running(),
            waiting = self.queue.waiting(),
            "controller draining"
        );
        self.drain_waiters.push(msg.done);
        // Commands handed over still need the controller: the feed stops first.
        self.stop_feed(ctx);
        self.notify_if_drained();
    }
}
