//! `ControllerActor`: the thin actix shell around the store, the message handler and the
//! [`WorkQueue`]. Reconciles run as spawned tasks that report back with `ReconcileFinished`.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn};

use super::messages::{
    AnswerQuery, ApplyCommand, CommandApplied, Drain, GetEntity, GetEntityStatus,
    ReconcileFinished, StatusStored, StoreStatus,
};
use super::state::{needs_reconcile_at_start, Outcome, Timer, WorkQueue};
use super::{task, Controller, ControllerError};
use crate::backoff::Backoff;
use crate::events::{status_event, EventPublisher};
use crate::handler::{CommandOutcome, MessageHandler};
use crate::reconciler::{DynReconciler, ReconcileRequest};
use crate::store::{EntityRef, EntityStore, StoreFlush};

/// Room in the mailbox for requests from reconcile tasks before senders wait.
const MAILBOX_CAPACITY: usize = 4096;

/// Owns the store and the work queue of a component.
pub(crate) struct ControllerActor {
    store: EntityStore,
    handler: Box<dyn MessageHandler>,
    reconciler: Arc<dyn DynReconciler>,
    queue: WorkQueue,
    events: EventPublisher,
    controller: Option<Controller>,
    drain_waiters: Vec<oneshot::Sender<StoreFlush>>,
}

impl ControllerActor {
    pub fn new(
        store: EntityStore,
        handler: Box<dyn MessageHandler>,
        reconciler: Arc<dyn DynReconciler>,
        max_workers: usize,
        backoff: Backoff,
        events: EventPublisher,
    ) -> Self {
        Self {
            store,
            handler,
            reconciler,
            queue: WorkQueue::new(max_workers, backoff),
            events,
            controller: None,
            drain_waiters: Vec::new(),
        }
    }

    /// Starts as many reconciles as workers are free.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let Some(controller) = self.controller.clone() else {
            return;
        };
        while let Some(work) = self.queue.next() {
            let Some(entity) = self.store.entity(&work.entity).cloned() else {
                self.queue.finish(&work.entity, &Outcome::Settled, 0.0);
                continue;
            };
            let request = ReconcileRequest {
                entity,
                status: self.store.status(&work.entity).cloned(),
            };
            let reconcile = task::reconcile(
                self.reconciler.clone(),
                controller.clone(),
                request,
                work.retries,
            );
            let addr = ctx.address();
            tokio::spawn(async move {
                let outcome = reconcile.await;
                addr.do_send(ReconcileFinished {
                    entity: work.entity,
                    outcome,
                });
            });
        }
    }

    fn arm(&self, timer: Timer, ctx: &mut Context<Self>) {
        ctx.run_later(timer.delay, move |actor, ctx| {
            if actor.queue.timer_fired(&timer.entity, timer.token) {
                actor.dispatch(ctx);
            }
        });
    }

    fn notify_if_drained(&mut self) {
        if self.drain_waiters.is_empty() || !self.queue.is_idle() {
            return;
        }
        for done in self.drain_waiters.drain(..) {
            let _ = done.send(self.store.flush_all());
        }
    }
}

impl Actor for ControllerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.controller = Some(Controller::new(ctx.address(), self.events.clone()));
        let resumed: Vec<EntityRef> = self
            .store
            .entries()
            .filter(|(entity, status)| needs_reconcile_at_start(entity, *status))
            .map(|(entity, _)| EntityRef::of_entity(entity))
            .collect();
        info!(
            reconciler = self.reconciler.id(),
            entities = self.store.len(),
            resumed = resumed.len(),
            "controller started"
        );
        for entity in resumed {
            self.queue.enqueue(entity);
        }
        self.dispatch(ctx);
    }
}

impl Handler<ApplyCommand> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyCommand, ctx: &mut Self::Context) {
        let envelope = &msg.envelope;
        let _span = info_span!(
            "controller.apply",
            entity.type = %envelope.resource_type,
            entity.key = %envelope.key,
            entity.generation = envelope.generation,
            operation = ?envelope.operation,
        )
        .entered();
        let result = self.handler.handle_command(envelope, &mut self.store);
        let flush = self.store.take_flush();
        let applied = result.map(|outcome| {
            if outcome == CommandOutcome::Applied {
                self.queue.enqueue(EntityRef::new(
                    envelope.resource_type.clone(),
                    envelope.key.clone(),
                ));
            }
            CommandApplied { outcome, flush }
        });
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
        MessageResult(self.store.entity(&msg.entity).cloned())
    }
}

impl Handler<GetEntityStatus> for ControllerActor {
    type Result = MessageResult<GetEntityStatus>;

    fn handle(&mut self, msg: GetEntityStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.store.status(&msg.entity).cloned())
    }
}

impl Handler<StoreStatus> for ControllerActor {
    type Result = MessageResult<StoreStatus>;

    fn handle(&mut self, msg: StoreStatus, _ctx: &mut Self::Context) -> Self::Result {
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
        if let Some(timer) = self
            .queue
            .finish(&msg.entity, &msg.outcome, rand::random::<f64>())
        {
            self.arm(timer, ctx);
        }
        if let Outcome::Deleted { generation } = msg.outcome {
            let cleaned = self
                .store
                .entity(&msg.entity)
                .is_some_and(|e| e.deleting && e.generation == generation);
            if cleaned {
                self.store.remove(&msg.entity);
                // Removal is written behind; a restart before it lands only repeats the
                // (idempotent) clean-up.
                drop(self.store.take_flush());
                self.queue.forget(&msg.entity);
                debug!(entity = %msg.entity, "entity removed");
            } else {
                warn!(entity = %msg.entity, generation, "entity changed during its deletion; kept");
            }
        }
        self.dispatch(ctx);
        self.notify_if_drained();
    }
}

impl Handler<Drain> for ControllerActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) {
        self.queue.start_draining();
        info!(
            running = self.queue.running(),
            waiting = self.queue.waiting(),
            "controller draining"
        );
        self.drain_waiters.push(msg.done);
        self.notify_if_drained();
    }
}
