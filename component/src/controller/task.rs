//! One reconcile as a spawned task: runs the reconciler, applies the error policy (terminal
//! errors become status `error`; a finished deletion publishes `deleted`) and says how it ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use operator_shared::{EntityStatus, ResourceStatus};
use tracing::{debug, error, info_span, warn, Instrument};

use super::state::Outcome;
use super::{Controller, OController};
use crate::election::{Fence, Term};
use crate::reconciler::{DynReconciler, ReconcileContext, ReconcileError, ReconcileRequest};

/// Runs one reconcile of `request.entity` in `term` and returns how it ended.
pub(crate) async fn reconcile(
    reconciler: Arc<dyn DynReconciler>,
    controller: Controller,
    request: ReconcileRequest,
    retries: u32,
    fence: Fence,
    term: Term,
) -> Outcome {
    let entity = &request.entity;
    let span = info_span!(
        "controller.reconcile",
        reconciler = reconciler.id(),
        entity.type = %entity.resource_type,
        entity.key = %entity.key,
        entity.generation = entity.generation,
        deleting = entity.deleting,
        retries,
        term,
    );
    // What the error policy needs once the request has been handed over.
    let mut report = request.new_status(ResourceStatus::Deleted);
    let deleting = entity.deleting;
    let command = entity.last_command;
    async move {
        let ctx = ReconcileContext::new(controller.clone(), retries, fence, term);
        let result = AssertUnwindSafe(reconciler.reconcile_boxed(request, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                error!("reconciler panicked");
                Err(ReconcileError::retryable("reconciler panicked"))
            });
        match result {
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
                    Outcome::Failed
                }
            },
            Ok(result) => {
                debug!(requeue_after = ?result.action.requeue_after(), "entity reconciled");
                Outcome::Reconciled {
                    requeue_after: result.action.requeue_after(),
                }
            }
            Err(ReconcileError::Retryable(reason)) => {
                warn!(error = %reason, "reconcile failed; retrying with backoff");
                Outcome::Failed
            }
            Err(ReconcileError::Fenced(reason)) => fenced(reason),
            Err(ReconcileError::Terminal(reason)) => {
                warn!(error = %reason, "reconcile failed for good; waiting for a new spec");
                report.status = ResourceStatus::Error;
                report.message = Some(reason);
                report.updated_at = Utc::now();
                error_status_reported(&controller, report).await
            }
        }
    }
    .instrument(span)
    .await
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
            Outcome::Failed
        }
    }
}
