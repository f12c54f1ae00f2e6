//! `Reconciler`: what a component writer implements. A reconcile gets the entity and its last
//! status, drives the platform toward the entity's spec, reports through the controller and
//! returns an [`Action`] (for a deleting entity too: `requeue` keeps it deleting and comes
//! back, `await_change` says the platform is clean); errors are [`ReconcileError::Retryable`]
//! (retried with backoff, not before its Retry-After), [`ReconcileError::Terminal`] (status
//! `error` with its reason and details, no retry until the spec changes) or
//! [`ReconcileError::Fenced`] (this replica no longer leads: it stops, and steps down).
//!
//! A reconciler gates every side effect on [`ReconcileContext::fence`], and passes the term it
//! returns to a platform that can refuse a stale leader (the demo operator sends it as the
//! `X-Fencing-Term` header).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use operator_contract::condition::{SUCCEEDED, SYNCED};
use operator_contract::{ConditionStatus, Entity, EntityStatus, ResourceStatus, RuntimeStatus};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::controller::{Controller, ControllerError, OController};
use crate::election::{Fence, Term};

/// Drives a platform toward the state the entities describe.
pub trait Reconciler: Send + Sync + 'static {
    /// A name for logs and traces, e.g. `demo-job`.
    fn id(&self) -> &str;

    /// Reconciles one entity. The SDK never runs two reconciles of one entity at once.
    fn reconcile(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> impl Future<Output = Result<ReconcileResult, ReconcileError>> + Send;
}

/// What to reconcile: the entity as stored, and the status last reported for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileRequest {
    pub entity: Entity,
    pub status: Option<EntityStatus>,
}

impl ReconcileRequest {
    /// A new status of this entity at its generation, with no runtime, message or details.
    pub fn new_status(&self, status: ResourceStatus) -> EntityStatus {
        let entity = &self.entity;
        EntityStatus {
            observed_generation: entity.generation,
            status,
            ..EntityStatus::pending(entity.key.clone(), &entity.operator, &entity.resource_type)
        }
    }

    /// Sets a condition on `status` (a new status of this request), keeping the
    /// `lastTransitionTime` the condition had in the status last reported while its status is
    /// the same: `request.set_condition(&mut status, SUCCEEDED, ConditionStatus::False,
    /// "JobFailed", message)`.
    pub fn set_condition(
        &self,
        status: &mut EntityStatus,
        kind: &str,
        condition: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        status.set_condition(self.status.as_ref(), kind, condition, reason, message);
    }

    /// Sets the conditions of a run-to-completion resource from `status.runtime`: `Succeeded`
    /// (True; False with `status.message`, which should say why; Unknown while pending or
    /// running), reasons `<subject>Succeeded|Failed|Cancelled|Running|Pending`; and `Synced`
    /// True: this reconcile reached the platform.
    pub fn set_run_conditions(&self, status: &mut EntityStatus, subject: &str) {
        let (state, outcome) = match status.runtime {
            Some(RuntimeStatus::Succeeded) => (ConditionStatus::True, "Succeeded"),
            Some(RuntimeStatus::Failed) => (ConditionStatus::False, "Failed"),
            Some(RuntimeStatus::Cancelled) => (ConditionStatus::False, "Cancelled"),
            Some(RuntimeStatus::InProgress) => (ConditionStatus::Unknown, "Running"),
            Some(RuntimeStatus::Pending) | None => (ConditionStatus::Unknown, "Pending"),
        };
        let message = match state {
            ConditionStatus::False => status.message.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let reason = format!("{subject}{outcome}");
        self.set_condition(status, SUCCEEDED, state, &reason, message);
        self.set_condition(
            status,
            SYNCED,
            ConditionStatus::True,
            "ReconcileSucceeded",
            "",
        );
    }

    /// A new status of this entity at its generation with a runtime status.
    pub fn new_runtime_status(
        &self,
        status: ResourceStatus,
        runtime: RuntimeStatus,
    ) -> EntityStatus {
        EntityStatus {
            runtime: Some(runtime),
            ..self.new_status(status)
        }
    }

    /// True when `status` says the same as the last reported status (ignoring its time), so
    /// reporting it again would only repeat it.
    pub fn status_unchanged(&self, status: &EntityStatus) -> bool {
        self.status.as_ref().is_some_and(|last| {
            last.observed_generation == status.observed_generation
                && last.status == status.status
                && last.runtime == status.runtime
                && last.message == status.message
                && last.details == status.details
                && same_conditions(&last.conditions, &status.conditions)
                && status.events.is_empty()
        })
    }
}

/// The same conditions, whatever their order and transition times.
fn same_conditions(a: &[operator_contract::Condition], b: &[operator_contract::Condition]) -> bool {
    let key = |c: &operator_contract::Condition| {
        (
            c.kind.clone(),
            c.status,
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    a == b
}

/// What the controller does after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration` (e.g. to poll a running job), unless a command comes
    /// first.
    pub fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Nothing more until a new command arrives.
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// The delay before the next reconcile, if one is asked for.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// The result of a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileResult {
    pub action: Action,
}

impl ReconcileResult {
    /// Reconcile again after `duration`.
    pub fn requeue(duration: Duration) -> Self {
        Action::requeue(duration).into()
    }

    /// Nothing more until a new command arrives.
    pub fn await_change() -> Self {
        Action::await_change().into()
    }
}

impl From<Action> for ReconcileResult {
    fn from(action: Action) -> Self {
        Self { action }
    }
}

/// Why a reconcile failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReconcileError {
    /// A failure that may pass (platform unavailable, timeout): retried with per-entity
    /// exponential backoff, and not before `retry_after` when the platform said when
    /// (a `Retry-After`).
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A failure retries will not fix (invalid spec, request refused): the status becomes
    /// `error` with this message, `Synced=False` with `reason` (`ReconcileFailed` when none)
    /// and `details` as the status's details; the entity waits for a new spec.
    #[error("{message}")]
    Terminal {
        message: String,
        reason: Option<String>,
        details: Map<String, Value>,
    },
    /// This replica may no longer act: its lease lapsed, or the store or the platform refused
    /// its term. The reconcile stops without a status and the replica steps down; the leader
    /// reconciles the entity.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl ReconcileError {
    /// A failure worth retrying.
    pub fn retryable(reason: impl fmt::Display) -> Self {
        Self::Retryable {
            message: reason.to_string(),
            retry_after: None,
        }
    }

    /// A failure worth retrying, not before `after` (the platform's `Retry-After`; the
    /// backoff's delay when that is longer).
    pub fn retryable_after(reason: impl fmt::Display, after: Duration) -> Self {
        Self::Retryable {
            message: reason.to_string(),
            retry_after: Some(after),
        }
    }

    /// A failure not worth retrying.
    pub fn terminal(reason: impl fmt::Display) -> Self {
        Self::Terminal {
            message: reason.to_string(),
            reason: None,
            details: Map::new(),
        }
    }

    /// A failure not worth retrying, with the CamelCase `reason` of the `Synced=False`
    /// condition and the `details` the status shows (what was refused, by whom):
    /// `ReconcileError::terminal_with("SpecRefused", e, details)`.
    pub fn terminal_with(
        reason: &str,
        message: impl fmt::Display,
        details: Map<String, Value>,
    ) -> Self {
        Self::Terminal {
            message: message.to_string(),
            reason: Some(reason.to_string()),
            details,
        }
    }

    /// This replica's term was refused (by the platform, say): step down.
    pub fn fenced(reason: impl fmt::Display) -> Self {
        Self::Fenced(reason.to_string())
    }

    /// True for [`ReconcileError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// When a retryable failure may be retried at the earliest, if the platform said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<ControllerError> for ReconcileError {
    fn from(e: ControllerError) -> Self {
        if e.is_fenced() {
            Self::Fenced(e.to_string())
        } else {
            Self::retryable(e)
        }
    }
}

/// What a reconcile can reach besides its request: the controller, how many times in a row
/// this entity's reconcile has failed, and the fence of the term it runs in.
#[derive(Clone)]
pub struct ReconcileContext {
    controller: Controller,
    retries: u32,
    fence: Fence,
    term: Term,
}

impl fmt::Debug for ReconcileContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileContext")
            .field("retries", &self.retries)
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

impl ReconcileContext {
    pub(crate) fn new(controller: Controller, retries: u32, fence: Fence, term: Term) -> Self {
        Self {
            controller,
            retries,
            fence,
            term,
        }
    }

    /// Call before every side effect on a platform: the term to send along when this replica
    /// still leads in the term the reconcile started in, [`ReconcileError::Fenced`] otherwise
    /// (return it). Term 0 means the component is not elected.
    pub fn fence(&self) -> Result<Term, ReconcileError> {
        match self.fence.check() {
            Ok(term) if term == self.term => Ok(term),
            Ok(term) => Err(ReconcileError::fenced(format!(
                "started in term {} but this replica now leads in term {term}",
                self.term
            ))),
            Err(e) => Err(ReconcileError::fenced(e)),
        }
    }

    /// The term this reconcile runs in (0 when the component is not elected).
    pub fn term(&self) -> Term {
        self.term
    }

    /// The controller: read entities and statuses, report statuses.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// How many reconciles of this entity failed with a retryable error in a row before this
    /// one (0 on a first try).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Stores `status` and publishes it as a status event; shorthand for
    /// `ctx.controller().update_entity_status(status)`.
    pub async fn update_status(&self, status: EntityStatus) -> Result<(), ControllerError> {
        self.controller.update_entity_status(status).await
    }
}

/// A [`Reconciler`] behind a pointer: the controller holds one without being generic.
pub(crate) trait DynReconciler: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn reconcile_boxed(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> BoxFuture<'_, Result<ReconcileResult, ReconcileError>>;
}

impl<R: Reconciler> DynReconciler for R {
    fn id(&self) -> &str {
        Reconciler::id(self)
    }

    fn reconcile_boxed(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> BoxFuture<'_, Result<ReconcileResult, ReconcileError>> {
        Box::pin(self.reconcile(request, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::tests::entity;

    #[test]
    fn actions_say_when_to_come_back() {
        assert_eq!(Action::await_change().requeue_after(), None);
        let result = ReconcileResult::requeue(Duration::from_millis(200));
        assert_eq!(
            result.action.requeue_after(),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn errors_say_whether_to_retry() {
        assert!(ReconcileError::retryable("platform down").is_retryable());
        assert!(!ReconcileError::terminal("bad spec").is_retryable());
        assert_eq!(ReconcileError::terminal("bad spec").to_string(), "bad spec");
        let from_controller: ReconcileError = ControllerError::Stopped.into();
        assert!(from_controller.is_retryable());
        let throttled = ReconcileError::retryable_after("throttled", Duration::from_secs(3));
        assert!(throttled.is_retryable());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(ReconcileError::retryable("down").retry_after(), None);
        let mut details = serde_json::Map::new();
        details.insert("code".into(), serde_json::json!("E1"));
        let refused = ReconcileError::terminal_with("SpecRefused", "no", details.clone());
        assert_eq!(
            refused,
            ReconcileError::Terminal {
                message: "no".into(),
                reason: Some("SpecRefused".into()),
                details
            }
        );
        let refused: ReconcileError = ControllerError::Fenced("not the leader".into()).into();
        assert!(matches!(refused, ReconcileError::Fenced(_)));
    }

    #[test]
    fn new_statuses_describe_the_entity_generation_and_repeats_are_spotted() {
        let mut request = ReconcileRequest {
            entity: entity("run-1", 3),
            status: None,
        };
        let status = request.new_runtime_status(ResourceStatus::Active, RuntimeStatus::InProgress);
        assert_eq!(status.observed_generation, 3);
        assert_eq!(status.key, request.entity.key);
        assert!(!request.status_unchanged(&status));
        request.status = Some(status.clone());
        let mut again = status.clone();
        again.updated_at = chrono::Utc::now() + chrono::Duration::seconds(5);
        assert!(request.status_unchanged(&again));
        again.runtime = Some(RuntimeStatus::Succeeded);
        assert!(!request.status_unchanged(&again));
    }
}
