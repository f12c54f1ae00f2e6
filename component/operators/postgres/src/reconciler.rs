//! `PostgresReconciler`: keeps a `database` or `role` of a PostgreSQL server as its spec says.
//! Long-lived, not run to completion: every reconcile (a new spec, a resync, a restart) reads
//! the object, compares it with the spec ([`crate::plan`]) and
//!
//! - creates it when missing, and applies what a new generation of the spec changed;
//! - at a resync, a difference the spec did not ask for is drift: put back
//!   (`driftPolicy: correct`, the default, with a `DriftCorrected` event) or only reported
//!   (`driftPolicy: report`: `Ready=False`, reason `DriftDetected`, the differences in
//!   `details.drift`, a `DriftDetected` event when they change);
//! - on delete, drops the object (`deletionPolicy: Delete`) or keeps it (`Retain`, the
//!   default).
//!
//! `details.appliedGeneration` records the generation whose spec was last applied in full: a
//! difference is drift only when that is the entity's generation. Every statement is sent only
//! after `ReconcileContext::fence` allows (the server cannot check a leader's term).

use std::sync::Arc;
use std::time::Duration;

use operator_sdk::prelude::*;
use operator_sdk::{HistoryEvent, READY, SYNCED};
use serde_json::{json, Map, Value};
use tracing::{info, info_span, warn, Instrument};

use crate::plan::{database_details, plan_database, plan_role, role_details, Difference, Plan};
use crate::server::{Server, ServerError};
use crate::spec::{DeletionPolicy, DriftPolicy, ObjectSpec, RoleSpec, DATABASE, ROLE};
use crate::sql::{self, SqlText};

/// How long to wait before looking again for a password key the component does not have (it
/// comes with a restart of the component, when its Secrets change).
pub const MISSING_KEY_RETRY: Duration = Duration::from_secs(30);

/// Looks up a Secret key the component consumes (an environment variable in production).
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The reconciler of `database` and `role` entities.
pub struct PostgresReconciler<S> {
    server: S,
    secrets: SecretLookup,
}

impl<S: Server> PostgresReconciler<S> {
    /// A reconciler on `server`, reading password keys through `secrets`.
    pub fn new(server: S, secrets: SecretLookup) -> Self {
        Self { server, secrets }
    }
}

impl<S: Server> Reconciler for PostgresReconciler<S> {
    fn id(&self) -> &str {
        "postgres"
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> Result<ReconcileResult, ReconcileError> {
        let entity = &request.entity;
        let span = info_span!(
            "postgres.reconcile",
            r#type = %entity.resource_type,
            key = %entity.key,
            generation = entity.generation,
            deleting = entity.deleting,
        );
        async {
            let Some(parsed) = ObjectSpec::parse(&entity.resource_type, &entity.spec) else {
                if entity.deleting {
                    return Ok(ReconcileResult::await_change());
                }
                return Err(ReconcileError::terminal(format!(
                    "resource type {} is not managed by the postgres operator (only {DATABASE} and {ROLE})",
                    entity.resource_type
                )));
            };
            if entity.deleting {
                // A spec that never parsed created nothing.
                return match parsed {
                    Ok(spec) => self.delete(&request, &ctx, &spec).await,
                    Err(_) => Ok(ReconcileResult::await_change()),
                };
            }
            let spec = parsed.map_err(|e| refused(&request, "SpecInvalid", e))?;
            match self.apply(&request, &ctx, &spec).await {
                Ok(result) => Ok(result),
                Err(error) => self.report_failure(&request, &ctx, error).await,
            }
        }
        .instrument(span)
        .await
    }
}

/// Why applying a spec failed, before the error policy.
#[derive(Debug)]
enum Failure {
    Server(ServerError),
    /// The role's password key is not among the component's Secret keys.
    MissingKey(String),
    Sdk(ReconcileError),
}

impl From<ServerError> for Failure {
    fn from(e: ServerError) -> Self {
        Self::Server(e)
    }
}

impl From<ReconcileError> for Failure {
    fn from(e: ReconcileError) -> Self {
        Self::Sdk(e)
    }
}

impl From<ControllerError> for Failure {
    fn from(e: ControllerError) -> Self {
        Self::Sdk(e.into())
    }
}

/// What the last status says was applied.
struct Applied {
    generation: Option<u64>,
    name: Option<String>,
    drift: Value,
}

impl Applied {
    fn of(request: &ReconcileRequest) -> Self {
        let details = request.status.as_ref().map(|s| &s.details);
        let get = |key: &str| details.and_then(|d| d.get(key));
        Self {
            generation: get("appliedGeneration").and_then(Value::as_u64),
            name: get("name").and_then(Value::as_str).map(str::to_string),
            drift: get("drift").cloned().unwrap_or(Value::Null),
        }
    }
}

/// What one reconcile did to the object.
enum Done {
    Nothing,
    Created {
        drift: bool,
    },
    Changed {
        differences: Vec<Difference>,
        drift: bool,
    },
}

impl<S: Server> PostgresReconciler<S> {
    /// The password of a role, from its Secret key (`None` without one).
    fn password(&self, spec: &RoleSpec) -> Result<Option<String>, Failure> {
        match &spec.password_secret_key {
            None => Ok(None),
            Some(key) => (self.secrets)(key)
                .map(Some)
                .ok_or_else(|| Failure::MissingKey(key.clone())),
        }
    }

    /// Compares the object with the spec.
    async fn plan(&self, spec: &ObjectSpec, password: Option<&str>) -> Result<Plan, ServerError> {
        Ok(match spec {
            ObjectSpec::Database(spec) => {
                let observed = self.server.database(&spec.name).await?;
                plan_database(spec, self.server.login_role(), observed.as_ref())
            }
            ObjectSpec::Role(spec) => {
                let observed = self.server.role(&spec.name).await?;
                plan_role(spec, password, observed.as_ref())
            }
        })
    }

    /// The details of the object as the server holds it now (`None`: it does not exist).
    async fn observe(&self, spec: &ObjectSpec) -> Result<Option<Map<String, Value>>, ServerError> {
        Ok(match spec {
            ObjectSpec::Database(spec) => self
                .server
                .database(&spec.name)
                .await?
                .map(|state| database_details(&spec.name, &state)),
            ObjectSpec::Role(spec) => self
                .server
                .role(&spec.name)
                .await?
                .map(|state| role_details(&spec.name, &state)),
        })
    }

    async fn run(&self, ctx: &ReconcileContext, statements: &[SqlText]) -> Result<(), Failure> {
        ctx.fence()?;
        self.server.execute(statements).await?;
        Ok(())
    }

    /// Creates, updates or checks the object, and reports where it stands.
    async fn apply(
        &self,
        request: &ReconcileRequest,
        ctx: &ReconcileContext,
        spec: &ObjectSpec,
    ) -> Result<ReconcileResult, Failure> {
        let entity = &request.entity;
        let applied = Applied::of(request);
        if let Some(previous) = applied.name.as_deref().filter(|n| *n != spec.name()) {
            return Err(refused(
                request,
                "NameChanged",
                format!(
                    "name cannot change (it was {previous:?}): delete this resource and create another"
                ),
            )
            .into());
        }
        let password = match spec {
            ObjectSpec::Role(role) => self.password(role)?,
            ObjectSpec::Database(_) => None,
        };
        // A new spec is applied whatever the drift policy; at its own generation a difference
        // is drift.
        let new_spec = applied.generation != Some(entity.generation);
        let correct = new_spec || spec.drift_policy() == DriftPolicy::Correct;
        let plan = self.plan(spec, password.as_deref()).await?;
        let mut reported = Vec::new();
        let done = match plan {
            Plan::Missing { create } if correct => {
                self.run(ctx, &create).await?;
                Done::Created { drift: !new_spec }
            }
            Plan::Missing { .. } => {
                reported.push(missing(spec));
                Done::Nothing
            }
            Plan::Present { differences } => {
                let (fixable, fixed_never): (Vec<_>, Vec<_>) =
                    differences.into_iter().partition(|d| d.fix.is_some());
                reported.extend(fixed_never);
                if fixable.is_empty() {
                    Done::Nothing
                } else if correct {
                    let statements: Vec<SqlText> =
                        fixable.iter().filter_map(|d| d.fix.clone()).collect();
                    self.run(ctx, &statements).await?;
                    Done::Changed {
                        differences: fixable,
                        drift: !new_spec,
                    }
                } else {
                    reported.extend(fixable);
                    Done::Nothing
                }
            }
        };
        let details = match done {
            Done::Nothing if reported.iter().any(|d| d.field == "exists") => None,
            _ => self.observe(spec).await?,
        };
        let mut status = request.new_status(ResourceStatus::Active);
        let mut details = details.unwrap_or_default();
        details.insert("name".into(), json!(spec.name()));
        // A new spec is applied in full (whatever cannot change is reported); at a resync the
        // generation is already the applied one.
        details.insert("appliedGeneration".into(), json!(entity.generation));
        let what = kind(spec);
        match &done {
            Done::Nothing => {}
            Done::Created { drift: false } => {
                info!(name = spec.name(), "created");
                status.add_event(HistoryEvent::normal(
                    "Created",
                    format!("{what} {} created", spec.name()),
                    entity.generation,
                ));
            }
            Done::Created { drift: true } => {
                warn!(
                    name = spec.name(),
                    "dropped outside the operator: created again"
                );
                status.add_event(HistoryEvent::warning(
                    "DriftCorrected",
                    format!("{what} {} was missing: created again", spec.name()),
                    entity.generation,
                ));
            }
            Done::Changed { differences, drift } => {
                let list = describe(differences);
                let (reason, message) = if *drift {
                    warn!(name = spec.name(), drift = %list, "changed outside the operator: put back");
                    ("DriftCorrected", format!("put back: {list}"))
                } else {
                    info!(name = spec.name(), changes = %list, "updated");
                    ("Updated", format!("updated: {list}"))
                };
                let event = if *drift {
                    HistoryEvent::warning(reason, message, entity.generation)
                } else {
                    HistoryEvent::normal(reason, message, entity.generation)
                };
                status.add_event(event);
            }
        }
        if reported.is_empty() {
            request.set_condition(&mut status, READY, ConditionStatus::True, "InSync", "");
        } else {
            let list = describe(&reported);
            let drift = json!(reported);
            if drift != applied.drift {
                warn!(name = spec.name(), drift = %list, "drift detected");
                status.add_event(HistoryEvent::warning(
                    "DriftDetected",
                    list.clone(),
                    entity.generation,
                ));
            }
            details.insert("drift".into(), drift);
            let reason = if reported.iter().any(is_fixable) {
                "DriftDetected"
            } else {
                "CannotChange"
            };
            status.message = Some(list.clone());
            request.set_condition(&mut status, READY, ConditionStatus::False, reason, list);
        }
        request.set_condition(
            &mut status,
            SYNCED,
            ConditionStatus::True,
            "ReconcileSucceeded",
            "",
        );
        status.details = details;
        if !request.status_unchanged(&status) {
            ctx.update_status(status).await?;
        }
        Ok(ReconcileResult::await_change())
    }

    /// The error policy of a live entity: the status says what failed (Synced=False, details
    /// kept); a refusal retries cannot fix is terminal, anything else is retried.
    async fn report_failure(
        &self,
        request: &ReconcileRequest,
        ctx: &ReconcileContext,
        failure: Failure,
    ) -> Result<ReconcileResult, ReconcileError> {
        let (error, reason, message) = match failure {
            Failure::Sdk(e) => return Err(e),
            Failure::Server(e) if e.is_terminal() => {
                return Err(refused(request, "StatementRefused", e))
            }
            Failure::Server(e) => {
                let message = e.to_string();
                (
                    ReconcileError::retryable(&message),
                    "ReconcileFailed",
                    message,
                )
            }
            Failure::MissingKey(key) => {
                let message = format!(
                    "passwordSecretKey {key}: the component has no such Secret key (add the Secret holding it to the component's secrets)"
                );
                (
                    ReconcileError::retryable_after(&message, MISSING_KEY_RETRY),
                    "PasswordSecretKeyMissing",
                    message,
                )
            }
        };
        warn!(error = %message, "reconcile failed; retrying");
        let last = request.status.as_ref();
        let mut status = request.new_status(last.map_or(ResourceStatus::Pending, |s| s.status));
        if let Some(last) = last {
            status.details = last.details.clone();
            status.conditions = last.conditions.clone();
        }
        status.message = Some(message.clone());
        request.set_condition(&mut status, SYNCED, ConditionStatus::False, reason, message);
        if !request.status_unchanged(&status) {
            ctx.update_status(status).await?;
        }
        Err(error)
    }

    /// The resource is deleted: drop the object or keep it, as its deletion policy says.
    async fn delete(
        &self,
        request: &ReconcileRequest,
        ctx: &ReconcileContext,
        spec: &ObjectSpec,
    ) -> Result<ReconcileResult, ReconcileError> {
        let what = kind(spec);
        if spec.deletion_policy() == DeletionPolicy::Retain {
            info!(
                name = spec.name(),
                "deleted resource: the object is kept (deletionPolicy Retain)"
            );
            return Ok(ReconcileResult::await_change());
        }
        let statement = match spec {
            ObjectSpec::Database(spec) => sql::drop_database(&spec.name),
            ObjectSpec::Role(spec) => sql::drop_role(&spec.name),
        };
        ctx.fence()?;
        match self.server.execute(&[statement]).await {
            Ok(()) => {
                info!(name = spec.name(), "dropped (deletionPolicy Delete)");
                Ok(ReconcileResult::await_change())
            }
            Err(e) => {
                let message = format!("cannot drop {what} {}: {e}", spec.name());
                warn!(error = %message, "delete failed; retrying");
                let mut status = request.new_status(ResourceStatus::Deleting);
                status.message = Some(message.clone());
                if let Some(last) = &request.status {
                    status.details = last.details.clone();
                }
                request.set_condition(
                    &mut status,
                    SYNCED,
                    ConditionStatus::False,
                    "DeleteFailed",
                    message.clone(),
                );
                if !request.status_unchanged(&status) {
                    ctx.update_status(status).await?;
                }
                Err(ReconcileError::retryable(message))
            }
        }
    }
}

/// A terminal error that keeps the details last reported (what the server held, the applied
/// generation and the name), so the next spec is still compared with them.
fn refused(
    request: &ReconcileRequest,
    reason: &str,
    message: impl std::fmt::Display,
) -> ReconcileError {
    let details = request
        .status
        .as_ref()
        .map(|s| s.details.clone())
        .unwrap_or_default();
    ReconcileError::terminal_with(reason, message, details)
}

fn kind(spec: &ObjectSpec) -> &'static str {
    match spec {
        ObjectSpec::Database(_) => DATABASE,
        ObjectSpec::Role(_) => ROLE,
    }
}

/// The object is gone though it was applied: reported under `driftPolicy: report`.
fn missing(spec: &ObjectSpec) -> Difference {
    Difference {
        field: "exists",
        desired: "true".into(),
        actual: format!("false ({} dropped outside the operator)", kind(spec)),
        fix: None,
    }
}

fn is_fixable(difference: &Difference) -> bool {
    difference.fix.is_some() || difference.field == "exists"
}

fn describe(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(Difference::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
