//! The messages of the controller actor.

use actix::Message;
use operator_contract::{Entity, EntityStatus, Envelope};
use tokio::sync::oneshot;
use tracing::Span;

use super::state::Outcome;
use super::ControllerError;
use crate::election::Term;
use crate::handler::{CommandOutcome, HandlerError};
use crate::store::{EntityRef, Snapshot, StoreError, StoreFlush};
use crate::trace::TraceContext;

/// Apply a command from the command stream to the store. Sent with `do_send` so commands
/// enter the mailbox in stream order; the answer comes back on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ApplyCommand {
    pub envelope: Envelope,
    /// The span of the command's receipt: what the command causes is traced under it (the
    /// current span does not cross the mailbox).
    pub cause: Span,
    pub reply: oneshot::Sender<Result<CommandApplied, HandlerError>>,
}

/// What applying a command did, and the flush to await before acknowledging it.
#[derive(Debug)]
pub(crate) struct CommandApplied {
    pub outcome: CommandOutcome,
    pub flush: StoreFlush,
}

/// Answer a query from the store.
#[derive(Message)]
#[rtype(result = "Result<Envelope, HandlerError>")]
pub(crate) struct AnswerQuery {
    pub envelope: Envelope,
}

/// The stored entity.
#[derive(Message)]
#[rtype(result = "Option<Entity>")]
pub(crate) struct GetEntity {
    pub entity: EntityRef,
}

/// The stored status of an entity.
#[derive(Message)]
#[rtype(result = "Option<EntityStatus>")]
pub(crate) struct GetEntityStatus {
    pub entity: EntityRef,
}

/// Store a status reported by a reconciler; the caller then publishes the returned event.
#[derive(Message)]
#[rtype(result = "Result<StatusStored, ControllerError>")]
pub(crate) struct StoreStatus {
    pub status: EntityStatus,
}

/// A stored status: the event to publish once `flush` is durable.
#[derive(Debug)]
pub(crate) struct StatusStored {
    pub event: Envelope,
    pub flush: StoreFlush,
}

/// A reconcile task ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReconcileFinished {
    pub entity: EntityRef,
    pub outcome: Outcome,
    /// The trace it joined.
    pub cause: TraceContext,
    /// The leadership epoch it ran in: results of an earlier one are dropped.
    pub epoch: u64,
}

/// The fence of `term` is written at `sequence` (or could not be).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FenceWritten {
    pub term: Term,
    pub result: Result<u64, StoreError>,
}

/// A fresh snapshot of the bucket to follow from.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Resynced {
    pub snapshot: Snapshot,
}

/// Time to reconcile every entity again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ResyncTick;

/// Stop starting reconciles; `done` gets the store's final flush once none is running.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain {
    pub done: oneshot::Sender<StoreFlush>,
}
