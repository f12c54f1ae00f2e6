//! One reconcile as a spawned task: runs the reconciler, applies the error policy (terminal
//! errors become status `error`; a finished deletion publishes `deleted`), records its metrics
//! and says how it ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::FutureExt;
use operator_contract::{EntityStatus, ResourceStatus};
use tracing::{debug, error, field, info_span, warn, Instrument};

use super::state::Outcome;
use super::{Controller, OController};
use crate::election::{Fence, Term};
use crate::metrics::{ComponentMetrics, ReconcileErrorKind, ReconcileLabel};
use crate::reconciler::{DynReconciler, ReconcileContext, ReconcileError, ReconcileRequest};
use crate::trace::{failed, TraceContext};

/// Everything one reconcile needs.
pub(crate) struct ReconcileTask {
    pub reconciler: Arc<dyn DynReconciler>,
    pub controller: Controller,
    pub request: ReconcileRequest,
    /// Failed reconciles of this entity in a row before this one.
    pub retries: u32,
    pub fence: Fence,
    pub term: Term,
    /// The trace of the command that caused it; empty for a resync or a resume at start, which
    /// begin their own trace.
    pub cause: TraceContext,
    pub metrics: ComponentMetrics,
}

/// Runs one reconcile of `task.request.entity` in `task.term` and returns how it ended.
pub(crate) async fn reconcile(task: ReconcileTask) -> Outcome {
    let ReconcileTask {
        reconciler,
        controller,
        request,
        retries,
        fence,
        term,
        cause,
        metrics,
    } = task;
    let entity = &request.entity;
    let resource_type = entity.resource_type.clone();
    let span = info_span!(
        parent: None,
        "controller.reconcile",
        otel.name = %format!("reconcile {resource_type}"),
        otel.status_code = field::Empty,
        operator = %entity.operator,
        reconciler = reconciler.id(),
        entity.type = %entity.resource_type,
        entity.key = %entity.key,
        entity.generation = entity.generation,
        deleting = entity.deleting,
        retries,
        term,
    );
    cause.adopt(&span);
    // What the error policy needs once the request has been handed over.
    let mut report = request.new_status(ResourceStatus::Deleted);
    let previous = request.status.clone();
    let deleting = entity.deleting;
    let command = entity.last_command;
    let began = Instant::now();
    let record_span = span.clone();
    let errors = metrics.clone();
    let outcome = async move {
        let ctx = ReconcileContext::new(controller.clone(), retries, fence, term);
        let result = AssertUnwindSafe(reconciler.reconcile_boxed(request, ctx))
            .catch_unwind()
            .await;
        let result = match result {
            Ok(result) => {
                if let Some(kind) = result.as_ref().err().and_then(error_kind) {
                    errors.reconcile_failed(&report.resource_type, kind);
                }
                result
            }
            Err(_) => {
                error!("reconciler panicked");
                errors.reconcile_failed(&report.resource_type, ReconcileErrorKind::Panic);
                Err(ReconcileError::retryable("reconciler panicked"))
            }
        };
        match result {
            // A deleting entity whose clean-up asks to come back is still deleting.
            Ok(result) if deleting && result.action.requeue_after().is_some() => {
                debug!(requeue_after = ?result.action.requeue_after(), "deletion not finished; requeued");
                Outcome::Reconciled {
                    requeue_after: result.action.requeue_after(),
                }
            }
            Ok(_) if deleting => match controller.publish_status(&report, command).await {
                Ok(()) => {
                    debug!("entity deleted");
                    Outcome::Deleted {
                        generation: report.observed_generation,
                    }
                }
                Err(e) if e.is_fenced() => fenced(e.to_string()),
                Err(e) => {
                    warn!(error = %e, "deleted status not published; retrying");
                    Outcome::Failed { retry_after: None }
                }
            },
            Ok(result) => {
                debug!(requeue_after = ?result.action.requeue_after(), "entity reconciled");
                Outcome::Reconciled {
                    requeue_after: result.action.requeue_after(),
                }
            }
            Err(ReconcileError::Retryable {
                message,
                retry_after,
            }) => {
                warn!(error = %message, retry_after_ms = retry_after.map(|d| d.as_millis() as u64), "reconcile failed; retrying with backoff");
                Outcome::Failed { retry_after }
            }
            Err(ReconcileError::Fenced(reason)) => fenced(reason),
            Err(ReconcileError::Terminal {
                message,
                reason,
                details,
            }) => {
                warn!(error = %message, "reconcile failed for good; waiting for a new spec");
                report.status = ResourceStatus::Error;
                report.updated_at = Utc::now();
                report.details = details;
                // What the operator said before stays; Synced says the reconcile failed and why.
                if let Some(previous) = previous.as_ref() {
                    report.conditions = previous.conditions.clone();
                }
                report.set_condition(
                    previous.as_ref(),
                    operator_contract::condition::SYNCED,
                    operator_contract::ConditionStatus::False,
                    reason.as_deref().unwrap_or("ReconcileFailed"),
                    message.clone(),
                );
                report.message = Some(message);
                error_status_reported(&controller, report).await
            }
        }
    }
    .instrument(span)
    .await;
    let result = result_of(&outcome);
    if !matches!(
        result,
        ReconcileLabel::Ok | ReconcileLabel::Requeue | ReconcileLabel::Deleted
    ) {
        failed(&record_span);
    }
    metrics.reconciled(&resource_type, result, began.elapsed());
    outcome
}

/// The `kind` of a reconciler's failure, for the errors metric; `None` for a refusal.
fn error_kind(error: &ReconcileError) -> Option<ReconcileErrorKind> {
    match error {
        ReconcileError::Retryable { .. } => Some(ReconcileErrorKind::Retryable),
        ReconcileError::Terminal { .. } => Some(ReconcileErrorKind::Terminal),
        ReconcileError::Fenced(_) => None,
    }
}

/// The `result` of a reconcile that ended with `outcome`, for the reconciles metric.
fn result_of(outcome: &Outcome) -> ReconcileLabel {
    match outcome {
        Outcome::Reconciled {
            requeue_after: None,
        } => ReconcileLabel::Ok,
        Outcome::Reconciled {
            requeue_after: Some(_),
        } => ReconcileLabel::Requeue,
        Outcome::Failed { .. } => ReconcileLabel::Retry,
        Outcome::Settled => ReconcileLabel::Terminal,
        Outcome::Fenced { .. } => ReconcileLabel::Fenced,
        Outcome::Deleted { .. } => ReconcileLabel::Deleted,
    }
}

fn fenced(reason: String) -> Outcome {
    warn!(reason = %reason, "reconcile refused: this replica no longer leads");
    Outcome::Fenced { reason }
}

async fn error_status_reported(controller: &Controller, status: EntityStatus) -> Outcome {
    match controller.update_entity_status(status).await {
        Ok(()) => Outcome::Settled,
        Err(e) if e.is_fenced() => fenced(e.to_string()),
        Err(e) => {
            warn!(error = %e, "error status not reported; retrying");
            Outcome::Failed { retry_after: None }
        }
    }
}
