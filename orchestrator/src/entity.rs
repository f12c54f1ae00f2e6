//! `ResourceEntity`: one actor per Resource. It owns the resource's record (desired spec,
//! generation, status), writes it to the store before answering, sends the command that
//! follows, resends it with backoff until JetStream has it, and applies status events.

mod reachable;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use operator_contract::subject::TypeSubjects;
use operator_contract::{EntityKey, EntityStatus, Envelope, EnvelopeKind, Manifest, Operation};
use tracing::{debug, info, info_span, warn, Span};

use crate::bridge::{ComponentLink, PublishCommand, SendQuery, StatusReported};
use crate::error::ControlError;
use crate::history::{status_events, HistoryWriter};
use crate::records::{Applied, Outcome, Record, RecordView};
use crate::store::{workspaced_key, Bucket, Store, StoreError};
use operator_contract::history::HistoryEvent;
use state::{ApplyPlan, StatusDecision};

pub use reachable::{follow_liveness, ComponentLiveness, ANSWER_BOUND};
pub use state::settled;

const FIRST_RESEND: Duration = Duration::from_millis(200);
const MAX_RESEND: Duration = Duration::from_secs(30);

/// Apply a resource manifest whose spec the runtime has validated.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct ApplySpec {
    pub manifest: Manifest,
    /// Answer what the apply would do, storing nothing and sending no command.
    pub dry_run: bool,
    /// Who applied it, for the history.
    pub applied_by: String,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// Start deleting the resource.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct RequestDelete {
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// The resource's view; with `details`, the component's live answer too.
#[derive(Message)]
#[rtype(result = "Option<RecordView>")]
pub struct GetView {
    pub details: bool,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// Told to the runtime by an entity settled and quiet for an idle period: it may sleep.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MaySleep {
    pub key: EntityKey,
    pub entity: Addr<ResourceEntity>,
}

/// Asked by the runtime: the record to keep while the entity sleeps, if it is still settled.
#[derive(Message)]
#[rtype(result = "Option<Sleeping>")]
pub struct Passivate;

/// The runtime now holds the record: stop, leaving the gauges as they are.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sleep;

/// What a sleeping entity leaves with its runtime.
pub struct Sleeping {
    /// The record as stored (JSON).
    pub record: Box<[u8]>,
    pub revision: u64,
    pub gauged: Gauged,
}

/// Told to the runtime when an entity has stopped for good (deleted, or never stored).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EntityGone {
    pub key: EntityKey,
    pub entity: Addr<ResourceEntity>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ResendTick;

/// What every entity of one resource type shares, held once by its runtime: an entity keeps a
/// reference to it, not copies of its own.
pub struct EntityContext {
    pub operator: String,
    pub subjects: TypeSubjects,
    pub store: Store,
    /// Where commands and queries go.
    pub link: ComponentLink,
    pub runtime: Recipient<EntityGone>,
    /// Where a settled, quiet entity offers to sleep.
    pub sleep_requests: Recipient<MaySleep>,
    /// How long a settled entity stays quiet before it offers to sleep.
    pub idle_after: Duration,
    /// Where events are kept.
    pub history: HistoryWriter,
}

/// The entity actor.
pub struct ResourceEntity {
    key: EntityKey,
    /// The record and the store revision it was written at; `None` until first stored.
    stored: Option<(Record, u64)>,
    shared: Arc<EntityContext>,
    resend_after: Duration,
    resend_pending: bool,
    /// Command publishes under way.
    publishing: u32,
    /// Messages from the runtime handled, and how many of them the last idle check had seen.
    activity: u64,
    activity_seen: u64,
    /// Stopped to sleep: its record and gauges live on with the runtime.
    sleeping: bool,
    /// What this entity adds to the gauges now, taken back when it changes.
    gauged: Option<Gauged>,
}

/// An entity's contribution to the `orchestrator_entities` and `orchestrator_commands_in_flight`
/// gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gauged {
    operator: String,
    resource_type: String,
    status: String,
    runtime: String,
    command_in_flight: bool,
}

impl Gauged {
    pub fn of(record: &Record) -> Self {
        let resource = record.manifest.resource.as_ref();
        Self {
            operator: resource.map(|r| r.operator.clone()).unwrap_or_default(),
            resource_type: resource
                .map(|r| r.resource_type.clone())
                .unwrap_or_default(),
            status: record.status_word(),
            runtime: record
                .status
                .as_ref()
                .and_then(|s| s.runtime)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            command_in_flight: state::command_unconfirmed(record),
        }
    }

    pub fn add(&self, delta: f64) {
        metrics::gauge!(
            crate::metrics::ENTITIES,
            "operator" => self.operator.clone(),
            "type" => self.resource_type.clone(),
            "status" => self.status.clone(),
            "runtime" => self.runtime.clone(),
        )
        .increment(delta);
        if self.command_in_flight {
            metrics::gauge!(
                crate::metrics::COMMANDS_IN_FLIGHT,
                "operator" => self.operator.clone(),
                "type" => self.resource_type.clone(),
            )
            .increment(delta);
        }
    }
}

impl ResourceEntity {
    pub fn new(key: EntityKey, stored: Option<(Record, u64)>, shared: Arc<EntityContext>) -> Self {
        Self {
            key,
            stored,
            shared,
            resend_after: FIRST_RESEND,
            resend_pending: false,
            publishing: 0,
            activity: 0,
            activity_seen: 0,
            sleeping: false,
            gauged: None,
        }
    }

    /// An entity woken from sleep: its record was stored at `revision`, and its gauges were
    /// left counted (`gauged`) when it went to sleep.
    pub fn woken(
        key: EntityKey,
        record: Record,
        revision: u64,
        gauged: Gauged,
        shared: Arc<EntityContext>,
    ) -> Self {
        let mut entity = Self::new(key, Some((record, revision)), shared);
        entity.gauged = Some(gauged);
        entity
    }

    /// Nothing in flight: stored, not deleting, its last command confirmed, no publish under way.
    fn settled(&self) -> bool {
        self.publishing == 0 && !self.resend_pending && self.record().is_some_and(state::settled)
    }

    /// Offers to sleep when settled and no message came since the last check.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let quiet = self.activity == self.activity_seen;
        self.activity_seen = self.activity;
        if quiet && self.settled() {
            self.shared.sleep_requests.do_send(MaySleep {
                key: self.key.clone(),
                entity: ctx.address(),
            });
        }
    }

    /// The record's key in the resources bucket (made when needed, not kept).
    fn kv_key(&self) -> String {
        workspaced_key(&self.key.workspace, &self.key.name)
    }

    fn history(&self) -> &HistoryWriter {
        &self.shared.history
    }

    /// Moves this entity's contribution to the gauges to what its record says now.
    fn refresh_gauges(&mut self) {
        let now = self.record().map(Gauged::of);
        if now == self.gauged {
            return;
        }
        if let Some(old) = self.gauged.take() {
            old.add(-1.0);
        }
        if let Some(new) = &now {
            new.add(1.0);
        }
        self.gauged = now;
    }

    fn record(&self) -> Option<&Record> {
        self.stored.as_ref().map(|(r, _)| r)
    }

    /// Publishes the record's last command for `parent` (the request's span, or none for a
    /// resend); on failure tries again later with backoff.
    fn send_command(&mut self, ctx: &mut Context<Self>, parent: Span) {
        let Some(envelope) = self.record().and_then(|r| r.last_command.clone()) else {
            return;
        };
        let (id, operation, generation) = (envelope.id, envelope.operation, envelope.generation);
        let subject = self.shared.subjects.command_subject.clone();
        debug!(entity.key = %self.key, generation = envelope.generation, "sending command");
        self.publishing += 1;
        self.shared
            .link
            .commands
            .send(PublishCommand {
                subject,
                envelope,
                parent,
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.publishing -= 1;
                let error = match result {
                    Ok(Ok(())) => {
                        act.resend_after = FIRST_RESEND;
                        act.history().record(&act.key, vec![HistoryEvent::normal(
                            "CommandSent",
                            format!("{} command sent to the component", format!("{operation:?}").to_lowercase()),
                            generation,
                        )]);
                        ctx.notify_later(reachable::ReachabilityTick { command: id }, reachable::ANSWER_BOUND);
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                let still_current = act.record().and_then(|r| r.last_command.as_ref()).map(|c| c.id) == Some(id);
                if still_current && !act.resend_pending {
                    warn!(entity.key = %act.key, error = %error, retry_in_ms = act.resend_after.as_millis() as u64, "command not sent");
                    act.resend_pending = true;
                    ctx.notify_later(ResendTick, act.resend_after);
                    act.resend_after = (act.resend_after * 2).min(MAX_RESEND);
                }
            })
            .spawn(ctx);
    }

    fn forget(&mut self, ctx: &mut Context<Self>) {
        self.shared.runtime.do_send(EntityGone {
            key: self.key.clone(),
            entity: ctx.address(),
        });
        ctx.stop();
    }
}

impl Actor for ResourceEntity {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh_gauges();
        metrics::gauge!(crate::metrics::ENTITIES_AWAKE, "operator" => self.shared.operator.clone())
            .increment(1.0);
        ctx.run_interval(self.shared.idle_after, Self::check_idle);
        // After a restart, resend what the component may not have received; the same envelope
        // id lets JetStream drop it if it did, and the generation lets the component ignore it.
        if self.record().is_some_and(state::command_unconfirmed) {
            self.send_command(ctx, Span::none());
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!(crate::metrics::ENTITIES_AWAKE, "operator" => self.shared.operator.clone())
            .decrement(1.0);
        if self.sleeping {
            return;
        }
        if let Some(old) = self.gauged.take() {
            old.add(-1.0);
        }
    }
}

impl Handler<Passivate> for ResourceEntity {
    type Result = Option<Sleeping>;

    fn handle(&mut self, _: Passivate, _ctx: &mut Self::Context) -> Self::Result {
        if !self.settled() {
            return None;
        }
        let (record, revision) = self.stored.as_ref()?;
        let bytes = match serde_json::to_vec(record) {
            Ok(bytes) => bytes.into_boxed_slice(),
            Err(e) => {
                warn!(entity.key = %self.key, error = %e, "record not encoded; the entity stays awake");
                return None;
            }
        };
        Some(Sleeping {
            record: bytes,
            revision: *revision,
            gauged: self.gauged.clone().unwrap_or_else(|| Gauged::of(record)),
        })
    }
}

impl Handler<Sleep> for ResourceEntity {
    type Result = ();

    fn handle(&mut self, _: Sleep, ctx: &mut Self::Context) {
        self.sleeping = true;
        ctx.stop();
    }
}

impl Handler<ResendTick> for ResourceEntity {
    type Result = ();

    fn handle(&mut self, _: ResendTick, ctx: &mut Self::Context) {
        self.resend_pending = false;
        if self.record().is_some_and(state::command_unconfirmed) {
            self.send_command(ctx, Span::none());
        }
    }
}

impl Handler<ApplySpec> for ResourceEntity {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: ApplySpec, _ctx: &mut Self::Context) -> Self::Result {
        self.activity += 1;
        let span = info_span!(parent: &msg.span, "entity.apply", entity.key = %self.key);
        let _entered = span.clone().entered();
        let plan = match state::plan_apply(self.record(), msg.manifest, &self.key) {
            Ok(plan) => plan,
            Err(reason) => {
                return AtomicResponse::new(Box::pin(fut::ready(Err(ControlError::Conflict {
                    reason,
                    details: vec![],
                }))))
            }
        };
        let outcome = state::outcome(&plan);
        if msg.dry_run {
            let applied = match &plan {
                ApplyPlan::Create(record) | ApplyPlan::Update(record) => {
                    Ok(record.applied(outcome))
                }
                ApplyPlan::Unchanged => {
                    self.record().map(|r| r.applied(outcome)).ok_or_else(|| {
                        ControlError::Internal("unchanged resource has no record".into())
                    })
                }
            };
            return AtomicResponse::new(Box::pin(fut::ready(applied)));
        }
        let (store, kv_key, revision) = (
            self.shared.store.clone(),
            self.kv_key(),
            self.stored.as_ref().map(|s| s.1),
        );
        let applied_by = msg.applied_by.clone();
        let previous_command = self
            .record()
            .and_then(|r| r.last_command.as_ref())
            .map(|c| c.id);
        let write = async move {
            match plan {
                ApplyPlan::Unchanged => Ok(None),
                ApplyPlan::Create(record) => {
                    match store.create(Bucket::Resources, &kv_key, &record).await {
                        Ok(rev) => Ok(Some((record, rev))),
                        // A create whose acknowledgement was lost (its NATS node died or was
                        // cut off under it) may have landed all the same: the record there is
                        // this resource's if it holds the same manifest, and is adopted.
                        Err(StoreError::AlreadyExists { bucket, key }) => {
                            match store.get(Bucket::Resources, &kv_key).await? {
                                Some(stored) if stored.record.manifest == record.manifest => {
                                    Ok(Some((stored.record, stored.revision)))
                                }
                                _ => Err(StoreError::AlreadyExists { bucket, key }),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                ApplyPlan::Update(record) => {
                    let rev = store
                        .update(Bucket::Resources, &kv_key, &record, revision.unwrap_or(0))
                        .await?;
                    Ok(Some((record, rev)))
                }
            }
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |result: Result<Option<(Record, u64)>, StoreError>, act, ctx| match result {
                Ok(Some(stored)) => {
                    let applied = stored.0.applied(outcome);
                    act.history().record(&act.key, vec![HistoryEvent::normal(
                        "Applied",
                        format!("{outcome:?} by {applied_by}, generation {}", applied.generation).to_lowercase(),
                        applied.generation,
                    )]);
                    let new_command = stored.0.last_command.as_ref().map(|c| c.id);
                    act.stored = Some(stored);
                    act.refresh_gauges();
                    info!(parent: &span, entity.key = %act.key, generation = applied.generation, outcome = ?outcome, "resource applied");
                    if new_command != previous_command {
                        act.send_command(ctx, span);
                    }
                    Ok(applied)
                }
                Ok(None) => act
                    .record()
                    .map(|r| r.applied(Outcome::Unchanged))
                    .ok_or_else(|| ControlError::Internal("unchanged resource has no record".into())),
                Err(e) => {
                    let error = match e {
                        StoreError::AlreadyExists { .. } => ControlError::Conflict {
                            reason: format!(
                                "a resource named {} already exists under another operator; delete it first",
                                act.key
                            ),
                            details: vec![],
                        },
                        other => other.into(),
                    };
                    if act.stored.is_none() {
                        act.forget(ctx);
                    }
                    Err(error)
                }
            },
        )))
    }
}

impl Handler<RequestDelete> for ResourceEntity {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: RequestDelete, _ctx: &mut Self::Context) -> Self::Result {
        self.activity += 1;
        let span = info_span!(parent: &msg.span, "entity.delete", entity.key = %self.key);
        let Some((current, revision)) = self.stored.clone() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(ControlError::NotFound(
                format!("resource {} not found", self.key),
            )))));
        };
        let Some(record) = state::plan_delete(&current, &self.key) else {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(
                current.applied(Outcome::Deleting)
            ))));
        };
        let (store, kv_key) = (self.shared.store.clone(), self.kv_key());
        let write = async move {
            let rev = store
                .update(Bucket::Resources, &kv_key, &record, revision)
                .await?;
            Ok::<_, StoreError>((record, rev))
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(|result, act, ctx| {
            let stored = result?;
            let applied = stored.0.applied(Outcome::Deleting);
            act.history().record(&act.key, vec![HistoryEvent::normal(
                "DeleteRequested",
                "delete requested; the component cleans up on the platform",
                applied.generation,
            )]);
            act.stored = Some(stored);
            act.refresh_gauges();
            info!(parent: &span, entity.key = %act.key, generation = applied.generation, "resource deleting");
            act.send_command(ctx, span);
            Ok(applied)
        })))
    }
}

impl Handler<StatusReported> for ResourceEntity {
    type Result = AtomicResponse<Self, Result<(), ControlError>>;

    fn handle(&mut self, msg: StatusReported, _ctx: &mut Self::Context) -> Self::Result {
        self.activity += 1;
        let _entered =
            info_span!(parent: &msg.span, "entity.status", entity.key = %self.key).entered();
        let Some((current, revision)) = self.stored.as_ref() else {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(()))));
        };
        let mut status: EntityStatus = match serde_json::from_value(msg.envelope.payload) {
            Ok(s) => s,
            Err(e) => {
                warn!(entity.key = %self.key, error = %e, "status event payload is not a status; dropped");
                return AtomicResponse::new(Box::pin(fut::ready(Ok(()))));
            }
        };
        // The operator's own events go to the history, not into the stored status.
        let operator_events = std::mem::take(&mut status.events);
        let decision = state::apply_status(current, status);
        let events = match &decision {
            StatusDecision::Store(record) => {
                let mut events = status_events(current, record);
                events.extend(operator_events);
                events
            }
            StatusDecision::Forget => vec![HistoryEvent::normal(
                "Deleted",
                "the component cleaned up; the resource is gone",
                current.generation,
            )],
            StatusDecision::Stale => Vec::new(),
        };
        let (store, kv_key, revision) = (self.shared.store.clone(), self.kv_key(), *revision);
        let write = async move {
            match decision {
                StatusDecision::Stale => Ok(None),
                StatusDecision::Store(record) => {
                    let rev = store
                        .update(Bucket::Resources, &kv_key, &record, revision)
                        .await?;
                    Ok(Some(Some((*record, rev))))
                }
                StatusDecision::Forget => {
                    store.delete(Bucket::Resources, &kv_key, revision).await?;
                    Ok(Some(None))
                }
            }
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            |result: Result<Option<Option<(Record, u64)>>, StoreError>, act, ctx| {
                let result = result?;
                act.history().record(&act.key, events);
                match result {
                    None => {}
                    Some(Some(stored)) => {
                        act.stored = Some(stored);
                        act.refresh_gauges();
                    }
                    Some(None) => {
                        info!(entity.key = %act.key, "resource deleted");
                        act.stored = None;
                        act.refresh_gauges();
                        act.forget(ctx);
                    }
                }
                Ok(())
            },
        )))
    }
}

impl Handler<GetView> for ResourceEntity {
    type Result = ResponseFuture<Option<RecordView>>;

    fn handle(&mut self, msg: GetView, _ctx: &mut Self::Context) -> Self::Result {
        self.activity += 1;
        let Some(record) = self.record() else {
            return Box::pin(async { None });
        };
        let mut view = record.view();
        if !msg.details {
            return Box::pin(async move { Some(view) });
        }
        let resource = record.manifest.resource.as_ref();
        let query = Envelope::new(
            EnvelopeKind::Query,
            Operation::Get,
            resource.map(|r| r.operator.as_str()).unwrap_or_default(),
            resource
                .map(|r| r.resource_type.as_str())
                .unwrap_or_default(),
            self.key.clone(),
            record.generation,
            serde_json::json!({}),
        );
        let ask = self.shared.link.queries.send(SendQuery {
            subject: self.shared.subjects.query_subject.clone(),
            envelope: query,
            parent: msg.span,
        });
        Box::pin(async move {
            match ask.await {
                Ok(Ok(reply)) if reply.operation == Operation::Error => {
                    view.details_error = reply
                        .payload
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string);
                }
                Ok(Ok(reply)) => view.details = Some(reply.payload),
                Ok(Err(e)) => view.details_error = Some(e.to_string()),
                Err(e) => view.details_error = Some(e.to_string()),
            }
            Some(view)
        })
    }
}
