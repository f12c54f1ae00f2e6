//! `DemoReconciler`: runs `job` entities on the HTTP job platform, or succeeds them at once
//! in-process when no platform is configured (the throughput benchmark's mode). A job of the
//! entity's generation already on the platform is followed, never submitted again, so a new
//! leader resumes a running job where its predecessor left it.

use std::time::Duration;

use operator_sdk::prelude::*;
use operator_sdk::HistoryEvent;

use crate::job::{JobSpec, JobState};
use crate::platform::HttpPlatform;

/// Where jobs run.
#[derive(Debug, Clone)]
pub enum Platform {
    /// Every job succeeds the moment it is reconciled.
    Instant,
    /// The HTTP job service.
    Http(HttpPlatform),
}

/// The demo operator's reconciler, for `job` and any other type name.
#[derive(Debug, Clone)]
pub struct DemoReconciler {
    platform: Platform,
    poll_interval: Duration,
}

impl DemoReconciler {
    /// A reconciler on `platform`, polling running jobs every `poll_interval`.
    pub fn new(platform: Platform, poll_interval: Duration) -> Self {
        Self {
            platform,
            poll_interval,
        }
    }
}

impl Reconciler for DemoReconciler {
    fn id(&self) -> &str {
        match self.platform {
            Platform::Instant => "demo-job-instant",
            Platform::Http(_) => "demo-job-http",
        }
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> Result<ReconcileResult, ReconcileError> {
        match &self.platform {
            Platform::Instant => reconcile_instantly(request, ctx).await,
            Platform::Http(platform) => {
                reconcile_on(platform, self.poll_interval, request, ctx).await
            }
        }
    }
}

fn parse_spec(request: &ReconcileRequest) -> Result<JobSpec, ReconcileError> {
    JobSpec::parse(&request.entity.spec)
        .map_err(|e| ReconcileError::terminal(format!("invalid job spec: {e}")))
}

async fn report(
    request: &ReconcileRequest,
    ctx: &ReconcileContext,
    status: EntityStatus,
) -> Result<(), ReconcileError> {
    if !request.status_unchanged(&status) {
        ctx.update_status(status).await?;
    }
    Ok(())
}

async fn reconcile_instantly(
    request: ReconcileRequest,
    ctx: ReconcileContext,
) -> Result<ReconcileResult, ReconcileError> {
    if request.entity.deleting {
        return Ok(ReconcileResult::await_change());
    }
    parse_spec(&request)?;
    let mut status = request.new_runtime_status(ResourceStatus::Active, RuntimeStatus::Succeeded);
    request.set_run_conditions(&mut status, "Job");
    report(&request, &ctx, status).await?;
    Ok(ReconcileResult::await_change())
}

async fn reconcile_on(
    platform: &HttpPlatform,
    poll_interval: Duration,
    request: ReconcileRequest,
    ctx: ReconcileContext,
) -> Result<ReconcileResult, ReconcileError> {
    let entity = &request.entity;
    // Every platform call is gated on the fence and carries the term.
    if entity.deleting {
        platform.delete(&entity.key, ctx.fence()?).await?;
        return Ok(ReconcileResult::await_change());
    }
    let spec = parse_spec(&request)?;
    let mut submitted = false;
    let reported = match platform.get(&entity.key, ctx.fence()?).await? {
        Some(reported) if reported.job.generation >= entity.generation => reported,
        _ => {
            submitted = true;
            platform
                .put(&entity.key, entity.generation, &spec, ctx.fence()?)
                .await?
        }
    };
    let (runtime, result) = match reported.job.state {
        JobState::Running => (
            RuntimeStatus::InProgress,
            ReconcileResult::requeue(poll_interval),
        ),
        JobState::Succeeded => (RuntimeStatus::Succeeded, ReconcileResult::await_change()),
        JobState::Failed => (RuntimeStatus::Failed, ReconcileResult::await_change()),
    };
    let mut status = request.new_runtime_status(ResourceStatus::Active, runtime);
    if submitted {
        // An operator's own event, kept in the resource's history beside the orchestrator's.
        status.add_event(HistoryEvent::normal(
            "JobSubmitted",
            format!(
                "job of generation {} submitted to the platform",
                entity.generation
            ),
            entity.generation,
        ));
    }
    status.message = reported.job.message;
    // Succeeded=False carries the job's message.
    request.set_run_conditions(&mut status, "Job");
    status.details = reported.json;
    report(&request, &ctx, status).await?;
    Ok(result)
}
