//! `AdfReconciler`: reconciles `pipeline-run` entities into Azure Data Factory pipeline runs —
//! one run per generation of the spec, followed with Get Pipeline Run until it ends, cancelled
//! when a newer generation replaces it or the resource is deleted.
//!
//! # No duplicate runs
//!
//! createRun is not idempotent, and a crash between it and recording the runId must not lead
//! to a second run when the entity is reconciled again (after a restart, or a retry). So:
//!
//! 1. Before createRun, the intent is recorded through `update_entity_status` (status `active`,
//!    runtime `pending`, details `{"intent": {"generation", "requestedAt", "resourceGroupName",
//!    "factoryName", "pipelineName", "parameters"}}`). The call returns once the status is
//!    stored — with `OPERATOR_STATE_STORE_TYPE=jetstream_kv`, once it is in the KV bucket.
//! 2. createRun is sent once: only a 429 or a connection never made is retried in place.
//! 3. The runId is recorded the moment createRun returns (`ADF_OPERATOR_CRASH_AFTER_CREATE_RUN=1`
//!    aborts the process just before this, to test the scheme).
//! 4. A reconcile that finds an intent for the current generation without a runId looks for the
//!    run first: queryPipelineRuns for the pipeline, updated from `requestedAt − ADF_CLOCK_SKEW_SECS`
//!    to now, and `adopt::choose_run` picks the manual run with the same parameters started
//!    nearest after `requestedAt` (see `adopt.rs`), never one of the entity's earlier runIds.
//!    Found: its runId is recorded (`"adopted": true`). Not found while the intent is younger
//!    than [`ADOPT_SETTLE`]: look again then (a run just created may not be listed yet). Not
//!    found after that: a new intent is recorded and the run created.
//!
//! A redelivered command changes nothing (the SDK drops generations not above the stored one),
//! and an entity whose run has ended is not reconciled again at start.
//!
//! Replicated, a new leader resumes from the stored status: a run with a runId is followed, an
//! intent without one is recovered as above. Azure cannot check a leader's term, so createRun
//! and cancel are sent only after `ReconcileContext::fence` allows (a paused leader resumes
//! past its deadline and sends nothing), and every status write is fenced by the SDK.

use std::time::Duration;

use chrono::Utc;
use operator_sdk::{
    ControllerError, EntityStatus, ReconcileContext, ReconcileError, ReconcileRequest,
    ReconcileResult, Reconciler, ResourceStatus,
};
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::adopt::choose_run;
use crate::azure::model::{PipelineRun, RunFilterParameters};
use crate::azure::{AdfClient, AzureError, CreateRun};
use crate::config::PollSettings;
use crate::details::{
    monitoring_url, pending_status, poll_interval, run_status, runtime_of, to_publish,
    ErrorDetails, Intent, RunDetails,
};
use crate::spec::{PipelineRef, PipelineRunSpec, SpecError, PIPELINE_RUN};

/// How long after its intent a run may still be missing from queryPipelineRuns before it is
/// taken as never created.
pub const ADOPT_SETTLE: Duration = Duration::from_secs(10);

/// Why a reconcile of a pipeline run failed.
#[derive(Debug, Error)]
pub enum PipelineRunError {
    /// The entity is of a resource type this operator does not manage.
    #[error("resource type {0} is not managed by the adf operator (only {PIPELINE_RUN})")]
    UnsupportedType(String),
    /// The spec cannot be run.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// An Azure call failed.
    #[error(transparent)]
    Azure(#[from] AzureError),
    /// A status could not be recorded.
    #[error("status not recorded: {0}")]
    Status(#[from] ControllerError),
    /// This replica no longer leads: no call to Azure may be made.
    #[error("{0}")]
    Fenced(String),
}

/// Azure cannot check a term, so the operator checks its own before every call that changes
/// something there (createRun, cancel).
fn fenced(ctx: &ReconcileContext) -> Result<(), PipelineRunError> {
    ctx.fence()
        .map(|_| ())
        .map_err(|e| PipelineRunError::Fenced(e.to_string()))
}

impl PipelineRunError {
    /// True when retrying will not help.
    fn is_terminal(&self) -> bool {
        match self {
            Self::UnsupportedType(_) | Self::Spec(_) => true,
            Self::Azure(e) => e.is_terminal(),
            Self::Status(_) | Self::Fenced(_) => false,
        }
    }

    /// The Azure error as the details show it.
    fn details(&self) -> Option<ErrorDetails> {
        match self {
            Self::Azure(AzureError::Refused {
                operation,
                code,
                message,
                ..
            }) => Some(ErrorDetails {
                operation: operation.to_string(),
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

/// What looking for a run started before a crash found.
#[derive(Debug)]
enum Found {
    Run(Box<PipelineRun>),
    /// Nothing yet; look again after this long.
    NotYet(Duration),
    Nothing,
}

/// The entity being reconciled and its last recorded status.
struct Reporter<'a> {
    request: ReconcileRequest,
    ctx: &'a ReconcileContext,
}

impl Reporter<'_> {
    /// The details of the last status (empty when unreadable).
    fn details(&self) -> RunDetails {
        RunDetails::of_status(self.request.status.as_ref()).unwrap_or_else(|e| {
            warn!(error = %e, "status details unreadable; starting from none");
            RunDetails::default()
        })
    }

    /// Stores and publishes `status` with its conditions, returning once it is durable.
    async fn record(&mut self, mut status: EntityStatus) -> Result<(), ControllerError> {
        // Succeeded=False carries the status message: the failing activities and their errors.
        self.request.set_run_conditions(&mut status, "PipelineRun");
        self.ctx.update_status(status.clone()).await?;
        self.request.status = Some(status);
        Ok(())
    }
}

/// The reconciler of `pipeline-run` entities.
#[derive(Debug)]
pub struct AdfReconciler {
    client: AdfClient,
    poll: PollSettings,
}

impl Reconciler for AdfReconciler {
    fn id(&self) -> &str {
        "adf-pipeline-run"
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> Result<ReconcileResult, ReconcileError> {
        let entity = &request.entity;
        let span = info_span!(
            "adf.reconcile",
            operator = %entity.operator,
            r#type = %entity.resource_type,
            key = %entity.key,
            generation = entity.generation,
            deleting = entity.deleting,
        );
        let mut reporter = Reporter { request, ctx: &ctx };
        async {
            let outcome = if reporter.request.entity.deleting {
                self.delete(&mut reporter).await
            } else {
                self.apply(&mut reporter).await
            };
            match outcome {
                Ok(result) => Ok(result),
                Err(e) => self.settle(&mut reporter, e).await,
            }
        }
        .instrument(span)
        .await
    }
}

impl AdfReconciler {
    /// A reconciler calling Azure through `client`.
    pub fn new(client: AdfClient, poll: PollSettings) -> Self {
        Self { client, poll }
    }

    fn skew(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.poll.clock_skew).unwrap_or(chrono::Duration::minutes(5))
    }

    /// Drives a live entity: follow its run, recover a crashed start, or start a new run.
    async fn apply(&self, r: &mut Reporter<'_>) -> Result<ReconcileResult, PipelineRunError> {
        let entity = &r.request.entity;
        if entity.resource_type != PIPELINE_RUN {
            return Err(PipelineRunError::UnsupportedType(
                entity.resource_type.clone(),
            ));
        }
        let spec = PipelineRunSpec::parse(&entity.spec)?;
        let generation = entity.generation;
        let details = r.details();
        match (&details.intent, &details.run_id) {
            (Some(intent), Some(_)) if intent.generation == generation => {
                self.follow(r, details).await
            }
            (Some(intent), None) if intent.generation == generation => {
                self.recover(r, details, &spec).await
            }
            _ => {
                let mut details = details;
                match self.stop_previous(r.ctx, &details).await? {
                    Found::NotYet(wait) => return Ok(ReconcileResult::requeue(wait)),
                    // A run found by query is remembered, so it is never adopted again.
                    Found::Run(run) => details.run_id = Some(run.run_id),
                    Found::Nothing => {}
                }
                self.start(r, &details, &spec).await
            }
        }
    }

    /// Cancels the run of an earlier generation if it is still going; returns the run found
    /// by query when its runId had not been recorded.
    async fn stop_previous(
        &self,
        ctx: &ReconcileContext,
        details: &RunDetails,
    ) -> Result<Found, PipelineRunError> {
        let Some(intent) = &details.intent else {
            return Ok(Found::Nothing);
        };
        let (run, found) = match &details.run_id {
            Some(run_id) => (self.get_if_exists(&intent.pipeline, run_id).await?, false),
            None => match self.find_started(intent, &details.previous_run_ids).await? {
                Found::Run(run) => (Some(*run), true),
                other => return Ok(other),
            },
        };
        let Some(run) = run else {
            return Ok(Found::Nothing);
        };
        if !run.status().is_stopping_or_ended() {
            info!(run_id = %run.run_id, previous_generation = intent.generation, "cancelling the run of the previous generation");
            self.cancel(ctx, &intent.pipeline, &run.run_id).await?;
        }
        Ok(if found {
            Found::Run(Box::new(run))
        } else {
            Found::Nothing
        })
    }

    /// Records the intent, creates the run, records its runId and syncs it.
    async fn start(
        &self,
        r: &mut Reporter<'_>,
        details: &RunDetails,
        spec: &PipelineRunSpec,
    ) -> Result<ReconcileResult, PipelineRunError> {
        let pipeline = spec.pipeline();
        let parameters = spec.parameters();
        let intent = Intent {
            generation: r.request.entity.generation,
            requested_at: Utc::now(),
            pipeline: pipeline.clone(),
            parameters: parameters.clone(),
        };
        let mut next = details.for_new_run(intent);
        r.record(pending_status(&r.request, &next)).await?;
        info!(pipeline = %pipeline.pipeline_name, factory = %pipeline.factory_name, "intent recorded; creating the pipeline run");
        fenced(r.ctx)?;
        let run_id = self
            .client
            .create_run(
                &pipeline,
                CreateRun {
                    parameters: &parameters,
                    reference_pipeline_run_id: spec.reference_pipeline_run_id.as_deref(),
                    start_activity_name: spec.start_activity_name.as_deref(),
                    start_from_failure: spec.start_from_failure,
                },
            )
            .await?;
        if self.poll.crash_after_create_run {
            error!(run_id = %run_id, "crash hook set: aborting before the runId is recorded");
            std::process::abort();
        }
        info!(run_id = %run_id, "pipeline run created");
        next.monitoring_url = Some(monitoring_url(
            self.client.subscription(),
            &pipeline,
            &run_id,
        ));
        next.run_id = Some(run_id);
        r.record(pending_status(&r.request, &next)).await?;
        self.follow(r, next).await
    }

    /// An intent without a runId: adopt the run it started, wait for it to be listed, or
    /// create it.
    async fn recover(
        &self,
        r: &mut Reporter<'_>,
        mut details: RunDetails,
        spec: &PipelineRunSpec,
    ) -> Result<ReconcileResult, PipelineRunError> {
        let Some(intent) = details.intent.clone() else {
            return self.start(r, &details, spec).await;
        };
        match self
            .find_started(&intent, &details.previous_run_ids)
            .await?
        {
            Found::Run(run) => {
                info!(run_id = %run.run_id, requested_at = %intent.requested_at, "adopting the run created before the last reconcile ended");
                details.run_id = Some(run.run_id);
                details.adopted = true;
                r.record(pending_status(&r.request, &details)).await?;
                self.follow(r, details).await
            }
            Found::NotYet(wait) => {
                info!(
                    retry_in_ms = wait.as_millis() as u64,
                    "no run listed for the recorded intent yet; looking again"
                );
                Ok(ReconcileResult::requeue(wait))
            }
            Found::Nothing => {
                info!(requested_at = %intent.requested_at, "no run was created for the recorded intent; creating it");
                self.start(r, &details, spec).await
            }
        }
    }

    /// Looks for the run `intent` started, never one of `known`.
    async fn find_started(
        &self,
        intent: &Intent,
        known: &[String],
    ) -> Result<Found, PipelineRunError> {
        let now = Utc::now();
        let skew = self.skew();
        let filter = RunFilterParameters::window(intent.requested_at - skew, now + skew)
            .of_pipeline(&intent.pipeline.pipeline_name);
        let runs = match self.client.query_runs(&intent.pipeline, filter).await {
            Ok(runs) => runs,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        debug!(listed = runs.len(), "runs listed for the recorded intent");
        if let Some(run) = choose_run(&runs, intent, skew, known) {
            return Ok(Found::Run(Box::new(run.clone())));
        }
        let age = (now - intent.requested_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        Ok(match ADOPT_SETTLE.checked_sub(age) {
            Some(wait) if !wait.is_zero() => Found::NotYet(wait),
            _ => Found::Nothing,
        })
    }

    /// Syncs the run into the status; requeues while it runs.
    async fn follow(
        &self,
        r: &mut Reporter<'_>,
        mut details: RunDetails,
    ) -> Result<ReconcileResult, PipelineRunError> {
        let (Some(intent), Some(run_id)) = (details.intent.clone(), details.run_id.clone()) else {
            return Ok(ReconcileResult::await_change());
        };
        let run = self.client.get_run(&intent.pipeline, &run_id).await?;
        let state = run.status();
        let now = Utc::now();
        let started = run.started_at().unwrap_or(intent.requested_at);
        let skew = self.skew();
        let mut unsynced = None;
        let activities = match self
            .client
            .query_activity_runs(&intent.pipeline, &run_id, started - skew, now + skew)
            .await
        {
            Ok(activities) => Some(activities),
            Err(e) => {
                warn!(error = %e, "activity runs not synced");
                // An ended run is not polled again: come back for its final activities.
                if state.has_ended() && !e.is_terminal() {
                    unsynced = Some(e);
                }
                None
            }
        };
        details.sync(&run, activities.as_deref());
        details.monitoring_url = Some(monitoring_url(
            self.client.subscription(),
            &intent.pipeline,
            &run_id,
        ));
        // The timeout counts from the intent, so time queued counts too, and a new leader
        // enforces it from the same instant.
        let timeout = PipelineRunSpec::parse(&r.request.entity.spec)
            .ok()
            .and_then(|spec| spec.timeout.zip(spec.timeout_after));
        let elapsed = (now - intent.requested_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let mut timeout_left = None;
        if let (Some((text, limit)), false) = (&timeout, state.is_stopping_or_ended()) {
            if details.timed_out_after.is_none() && elapsed >= *limit {
                info!(run_id = %run_id, timeout = %text, "pipeline run timed out; cancelling it");
                self.cancel(r.ctx, &intent.pipeline, &run_id).await?;
                details.timed_out_after = Some(text.trim().to_string());
            } else {
                timeout_left = limit.checked_sub(elapsed);
            }
        }
        let last_runtime = r.request.status.as_ref().and_then(|s| s.runtime);
        let status = run_status(&r.request, &run, &details);
        if let Some(status) = to_publish(&r.request, status, now, self.poll.sync_refresh) {
            if status.runtime != last_runtime {
                info!(run_id = %run_id, status = %run.status.as_deref().unwrap_or(""), runtime = ?status.runtime, "pipeline run status changed");
            }
            r.record(status).await?;
        }
        if let Some(e) = unsynced {
            return Err(e.into());
        }
        if state.has_ended() {
            return Ok(ReconcileResult::await_change());
        }
        let age = (now - started).to_std().unwrap_or(Duration::ZERO);
        let interval = poll_interval(age, self.poll.min, self.poll.max);
        Ok(ReconcileResult::requeue(match timeout_left {
            Some(left) if !left.is_zero() => interval.min(left),
            _ => interval,
        }))
    }

    /// The resource is being deleted: cancel its run if it still goes, and wait (a bounded
    /// time) for Azure to confirm.
    async fn delete(&self, r: &mut Reporter<'_>) -> Result<ReconcileResult, PipelineRunError> {
        let details = r.details();
        let Some(intent) = details.intent.clone() else {
            debug!("no run was ever started; nothing to cancel");
            return Ok(ReconcileResult::await_change());
        };
        let run = match &details.run_id {
            Some(run_id) => self.get_if_exists(&intent.pipeline, run_id).await?,
            None => {
                let mut found = self
                    .find_started(&intent, &details.previous_run_ids)
                    .await?;
                if let Found::NotYet(wait) = found {
                    tokio::time::sleep(wait).await;
                    found = self
                        .find_started(&intent, &details.previous_run_ids)
                        .await?;
                }
                match found {
                    Found::Run(run) => Some(*run),
                    Found::NotYet(_) | Found::Nothing => None,
                }
            }
        };
        let Some(run) = run.filter(|run| !run.status().is_stopping_or_ended()) else {
            debug!("the run is over or gone; nothing to cancel");
            return Ok(ReconcileResult::await_change());
        };
        let mut next = details;
        next.sync(&run, None);
        let mut status = r
            .request
            .new_runtime_status(ResourceStatus::Deleting, runtime_of(&run.status()));
        status.details = next.to_map();
        r.record(status).await?;
        info!(run_id = %run.run_id, "cancelling the run of a deleted resource");
        self.cancel(r.ctx, &intent.pipeline, &run.run_id).await?;

        let deadline = Instant::now() + self.poll.cancel_wait;
        loop {
            match self.get_if_exists(&intent.pipeline, &run.run_id).await? {
                Some(now) if !now.status().is_stopping_or_ended() => {}
                _ => {
                    info!(run_id = %run.run_id, "run cancelled");
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(run_id = %run.run_id, wait_ms = self.poll.cancel_wait.as_millis() as u64, "run not cancelled in time; deleting the resource anyway");
                break;
            }
            tokio::time::sleep(self.poll.min.min(left)).await;
        }
        Ok(ReconcileResult::await_change())
    }

    /// The run, or `None` when Azure no longer knows it.
    async fn get_if_exists(
        &self,
        pipeline: &PipelineRef,
        run_id: &str,
    ) -> Result<Option<PipelineRun>, PipelineRunError> {
        match self.client.get_run(pipeline, run_id).await {
            Ok(run) => Ok(Some(run)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels a run; one that is gone, or ended meanwhile, is fine.
    async fn cancel(
        &self,
        ctx: &ReconcileContext,
        pipeline: &PipelineRef,
        run_id: &str,
    ) -> Result<(), PipelineRunError> {
        fenced(ctx)?;
        match self.client.cancel_run(pipeline, run_id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is_not_running() => {
                debug!(run_id, "the run had already ended; nothing to cancel");
                Ok(())
            }
            Err(e) if e.is_terminal() => match self.get_if_exists(pipeline, run_id).await? {
                Some(run) if !run.status().is_stopping_or_ended() => Err(e.into()),
                _ => Ok(()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The error policy. Throttling with a Retry-After requeues after it. Terminal failures of
    /// a live entity are reported here (status `error`, details kept, so an earlier run is
    /// still known to the next generation) rather than through the SDK, which would drop the
    /// details. A deleting entity is never settled in error: it is retried, with the reason
    /// in a `deleting` status, until its run can be cancelled.
    async fn settle(
        &self,
        r: &mut Reporter<'_>,
        error: PipelineRunError,
    ) -> Result<ReconcileResult, ReconcileError> {
        let deleting = r.request.entity.deleting;
        match &error {
            PipelineRunError::Fenced(reason) => return Err(ReconcileError::fenced(reason)),
            PipelineRunError::Status(e) if e.is_fenced() => return Err(ReconcileError::fenced(e)),
            _ => {}
        }
        if let PipelineRunError::Azure(AzureError::Throttled {
            retry_after: Some(wait),
            ..
        }) = &error
        {
            if !deleting {
                warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "throttled by Azure; requeued after its Retry-After");
                return Ok(ReconcileResult::requeue(*wait));
            }
        }
        if let PipelineRunError::Azure(AzureError::OverBudget { retry_after, .. }) = &error {
            debug!(
                retry_in_ms = retry_after.as_millis() as u64,
                "factory's monitoring budget spent for now; requeued"
            );
            return Ok(ReconcileResult::requeue(*retry_after));
        }
        if !error.is_terminal() {
            return Err(ReconcileError::retryable(error));
        }
        let mut details = r.details();
        details.error = error.details();
        let mut status = if deleting {
            r.request.new_status(ResourceStatus::Deleting)
        } else {
            r.request.new_status(ResourceStatus::Error)
        };
        status.message = Some(error.to_string());
        status.details = details.to_map();
        if !r.request.status_unchanged(&status) {
            r.record(status).await.map_err(ReconcileError::from)?;
        }
        if deleting {
            warn!(error = %error, "cannot clean up the deleted resource; retrying");
            Err(ReconcileError::retryable(error))
        } else {
            warn!(error = %error, "pipeline run failed for good; waiting for a new spec");
            Ok(ReconcileResult::await_change())
        }
    }
}

#[cfg(test)]
mod tests;
