//! Everything the stand-in remembers, in one place: its settings, the tokens it issued, how
//! each pipeline behaves, the runs, the armed faults and the call counts. Every method takes
//! the instant it acts at, so the logic is tested without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::auth::{EntraError, ExpectedClient, TokenGrant, Tokens};
use crate::clock::format_timestamp;
use crate::error::ArmError;
use crate::imds::{self, Identities, ImdsError};
use crate::monitor::Monitoring;
use crate::query::{select, Page, Query};
use crate::run::{ActivityRunView, PipelineBehaviour, RerunOptions, Run, RunView};

/// The only API version ADF's data plane answers here.
pub const API_VERSION: &str = "2018-06-01";

/// The stand-in's state as handlers share it.
pub type SharedStandIn = web::Data<Mutex<StandIn>>;

/// Locks the state; a handler that panicked mid-update leaves nothing half-written that
/// matters to a test fixture, so a poisoned lock is used as it is.
pub fn lock(standin: &Mutex<StandIn>) -> MutexGuard<'_, StandIn> {
    standin
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a factory is named in the runs' keys: ARM names are case-insensitive.
pub fn factory_key(subscription: &str, resource_group: &str, factory: &str) -> String {
    format!("{subscription}/{resource_group}/{factory}").to_ascii_lowercase()
}

/// What the command line configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub expected_client: ExpectedClient,
    /// The managed identities the metadata endpoint hands tokens for.
    pub identities: Identities,
    pub subscription_id: Option<String>,
    pub token_ttl: TimeDelta,
    pub queued_ms: u64,
    pub run_ms: u64,
}

/// The operations counted in `/_standin/calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Token,
    CreateRun,
    GetRun,
    Cancel,
    QueryPipelineRuns,
    QueryActivityRuns,
}

impl Operation {
    pub const ALL: [Self; 6] = [
        Self::Token,
        Self::CreateRun,
        Self::GetRun,
        Self::Cancel,
        Self::QueryPipelineRuns,
        Self::QueryActivityRuns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::CreateRun => "createRun",
            Self::GetRun => "getRun",
            Self::Cancel => "cancel",
            Self::QueryPipelineRuns => "queryPipelineRuns",
            Self::QueryActivityRuns => "queryActivityruns",
        }
    }
}

/// Faults armed through the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// ARM requests still to be answered 429.
    pub throttle: u32,
    pub retry_after_s: u64,
    /// ARM requests still to be answered 500, after the throttled ones.
    pub server_errors: u32,
    /// Added before every ARM response.
    pub delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle: 0,
            retry_after_s: 1,
            server_errors: 0,
            delay_ms: 0,
        }
    }
}

/// Requests to Azure's routes (token and factory), by operation and by status answered; the
/// control API's own requests are not counted, so tests read only what the operator did.
#[derive(Debug, Default)]
pub struct Calls {
    by_operation: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<u16, u64>,
}

impl Calls {
    pub fn record(&mut self, operation: Operation, status: u16) {
        *self.by_operation.entry(operation.name()).or_default() += 1;
        *self.by_status.entry(status).or_default() += 1;
    }

    /// Every operation with its count, zeros included, and `answered`: counts by status, with
    /// 401, 429 and 500 always present.
    pub fn to_json(&self) -> Value {
        let mut counts = Map::new();
        for operation in Operation::ALL {
            let count = self.by_operation.get(operation.name()).copied();
            counts.insert(operation.name().to_owned(), json!(count.unwrap_or(0)));
        }
        let mut answered = BTreeMap::from([(401, 0), (429, 0), (500, 0)]);
        answered.extend(
            self.by_status
                .iter()
                .map(|(status, count)| (*status, *count)),
        );
        let answered: Map<String, Value> = answered
            .into_iter()
            .map(|(status, count)| (status.to_string(), json!(count)))
            .collect();
        counts.insert("answered".to_owned(), Value::Object(answered));
        Value::Object(counts)
    }
}

/// The whole state of the stand-in.
#[derive(Debug)]
pub struct StandIn {
    settings: Settings,
    tokens: Tokens,
    /// Behaviours set through the control API, by lowercased pipeline name.
    pipelines: HashMap<String, PipelineBehaviour>,
    /// In creation order.
    runs: Vec<Run>,
    faults: Faults,
    calls: Calls,
    monitoring: Monitoring,
}

impl StandIn {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            tokens: Tokens::default(),
            pipelines: HashMap::new(),
            runs: Vec::new(),
            faults: Faults::default(),
            calls: Calls::default(),
            monitoring: Monitoring::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn issue_token(
        &mut self,
        tenant: &str,
        fields: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<TokenGrant, EntraError> {
        let ttl = self.settings.token_ttl;
        self.tokens
            .issue(&self.settings.expected_client, tenant, fields, ttl, now)
    }

    /// Answers a managed-identity token request of the instance metadata endpoint.
    pub fn issue_managed_token(
        &mut self,
        metadata_header: Option<&str>,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<(TokenGrant, String), ImdsError> {
        let client_id = imds::check(&self.settings.identities, metadata_header, query)?;
        let grant = self
            .tokens
            .issue_managed(&client_id, self.settings.token_ttl, now);
        Ok((grant, client_id))
    }

    /// Replaces the federated token accepted as client assertion (a rotation).
    pub fn set_federated_token(&mut self, token: Option<String>) {
        self.settings.expected_client.federated_token = token;
    }

    /// The call counts, with `tokensBy`: tokens issued by how the client signed in.
    pub fn calls_report(&self) -> Value {
        let mut report = self.calls.to_json();
        if let Value::Object(map) = &mut report {
            map.insert("tokensBy".to_owned(), json!(self.tokens.grants()));
        }
        report
    }

    /// How long every ARM response waits, by the armed fault.
    pub fn arm_delay(&self) -> Duration {
        Duration::from_millis(self.faults.delay_ms)
    }

    /// What ARM checks before the data factory sees a request (the bearer token, the
    /// api-version, the subscription), then the armed throttling and server-error faults, each
    /// of which a request that gets this far uses up.
    pub fn admit(
        &mut self,
        authorization: Option<&str>,
        api_version: Option<&str>,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ArmError> {
        self.tokens.check(authorization, now)?;
        match api_version {
            None => return Err(ArmError::missing_api_version()),
            Some(API_VERSION) => {}
            Some(other) => return Err(ArmError::invalid_api_version(other, API_VERSION)),
        }
        if self
            .settings
            .subscription_id
            .as_deref()
            .is_some_and(|wanted| !wanted.eq_ignore_ascii_case(subscription))
        {
            return Err(ArmError::subscription_not_found(subscription));
        }
        if self.faults.throttle > 0 {
            self.faults.throttle -= 1;
            return Err(ArmError::too_many_requests(
                subscription,
                self.faults.retry_after_s,
            ));
        }
        if self.faults.server_errors > 0 {
            self.faults.server_errors -= 1;
            return Err(ArmError::internal_server_error(now));
        }
        Ok(())
    }

    /// How a pipeline's next run will behave.
    fn behaviour_of(&self, pipeline: &str) -> PipelineBehaviour {
        self.pipelines
            .get(&pipeline.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| {
                PipelineBehaviour::unconfigured(
                    pipeline,
                    self.settings.queued_ms,
                    self.settings.run_ms,
                )
            })
    }

    /// Starts a run. With `referencePipelineRunId` the referenced run's parameters are used,
    /// as ADF documents; with `isRecovery` too, the new run joins the referenced run's group
    /// and becomes its latest.
    pub fn create_run(
        &mut self,
        factory: String,
        pipeline: &str,
        parameters: Map<String, Value>,
        rerun: RerunOptions,
        now: DateTime<Utc>,
    ) -> Result<Uuid, ArmError> {
        let reference = match rerun.reference_pipeline_run_id.as_deref() {
            Some(reference) => Some(self.find(&factory, reference)?),
            None => None,
        };
        let parameters = match reference {
            Some(index) => self.runs[index].parameters.clone(),
            None => parameters,
        };
        let behaviour = self.behaviour_of(pipeline);
        let mut run = Run::new(
            factory,
            pipeline.to_owned(),
            parameters,
            rerun,
            behaviour,
            now,
        );
        if let (Some(index), Some(true)) = (reference, run.rerun.is_recovery) {
            let group_id = self.runs[index].group_id;
            run.group_id = group_id;
            self.runs
                .iter_mut()
                .filter(|earlier| earlier.group_id == group_id)
                .for_each(|earlier| earlier.superseded = true);
        }
        let id = run.id;
        self.runs.push(run);
        Ok(id)
    }

    /// The index of a run of `factory` by its id, in any case.
    fn find(&self, factory: &str, run_id: &str) -> Result<usize, ArmError> {
        Uuid::parse_str(run_id.trim())
            .ok()
            .and_then(|id| {
                self.runs
                    .iter()
                    .position(|run| run.id == id && run.factory == factory)
            })
            .ok_or_else(|| ArmError::run_not_found(run_id, factory))
    }

    pub fn run(
        &self,
        factory: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RunView, ArmError> {
        let index = self.find(factory, run_id)?;
        Ok(self.runs[index].view(now))
    }

    /// Cancels a run; an ended one is left as it is, without error, as ADF does.
    /// Cancels a run that is Queued or InProgress; any other is refused with ADF's
    /// `PipelineRunNotRunning`.
    pub fn cancel_run(
        &mut self,
        factory: &str,
        run_id: &str,
        recursive: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ArmError> {
        let index = self.find(factory, run_id)?;
        if self.runs[index].cancel(now, recursive) {
            Ok(())
        } else {
            Err(ArmError::run_not_running(run_id))
        }
    }

    pub fn query_runs(&self, factory: &str, query: &Query, now: DateTime<Utc>) -> Page<RunView> {
        let views = self
            .runs
            .iter()
            .filter(|run| run.factory == factory)
            .map(|run| run.view(now))
            .collect();
        select(views, query)
    }

    pub fn query_activity_runs(
        &self,
        factory: &str,
        run_id: &str,
        query: &Query,
        now: DateTime<Utc>,
    ) -> Result<Page<ActivityRunView>, ArmError> {
        let index = self.find(factory, run_id)?;
        Ok(select(self.runs[index].activity_views(now), query))
    }

    /// Sets how the pipeline's runs created from now on behave.
    pub fn set_pipeline(&mut self, pipeline: &str, behaviour: PipelineBehaviour) {
        self.pipelines
            .insert(pipeline.to_ascii_lowercase(), behaviour);
    }

    pub fn faults_mut(&mut self) -> &mut Faults {
        &mut self.faults
    }

    pub fn expire_tokens(&mut self, now: DateTime<Utc>) {
        self.tokens.expire_all(now);
    }

    pub fn record_call(&mut self, operation: Operation, status: u16) {
        self.calls.record(operation, status);
    }

    pub fn monitoring(&mut self) -> &mut Monitoring {
        &mut self.monitoring
    }

    /// Every run, oldest first, with what it was created with.
    pub fn runs_report(&self, now: DateTime<Utc>) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|run| {
                json!({
                    "runId": run.id,
                    "runGroupId": run.group_id,
                    "factory": run.factory,
                    "pipelineName": run.pipeline_name,
                    "status": run.status_at(now).as_str(),
                    "parameters": run.parameters,
                    "createdWith": run.rerun,
                    "createdAt": format_timestamp(run.created_at),
                    "cancelledAt": run.cancelled_at.map(format_timestamp),
                    "cancelledRecursively": run.cancelled_recursively,
                    "behaviour": run.behaviour,
                })
            })
            .collect();
        json!({ "runs": runs })
    }

    /// Forgets runs, faults and counts; tokens and pipeline behaviours stay.
    pub fn reset(&mut self) {
        self.runs.clear();
        self.faults = Faults::default();
        self.calls = Calls::default();
        self.monitoring = Monitoring::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ExpectedClient;
    use crate::clock::{millis, parse_timestamp};
    use crate::run::RunStatus;

    const FACTORY: &str = "sub/rg/adf";

    fn at(ms: u64) -> DateTime<Utc> {
        parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default() + millis(ms)
    }

    fn standin() -> StandIn {
        StandIn::new(Settings {
            expected_client: ExpectedClient::default(),
            identities: Identities::default(),
            subscription_id: None,
            token_ttl: millis(3_599_000),
            queued_ms: 500,
            run_ms: 3000,
        })
    }

    fn status(standin: &StandIn, run_id: Uuid, now: DateTime<Utc>) -> Option<RunStatus> {
        standin
            .run(FACTORY, &run_id.to_string(), now)
            .ok()
            .map(|view| view.status)
    }

    #[test]
    fn a_pipeline_named_for_failure_fails_unless_configured_otherwise() {
        let mut standin = standin();
        let failing = standin.create_run(
            FACTORY.to_owned(),
            "Nightly-FAIL",
            Map::new(),
            RerunOptions::default(),
            at(0),
        );
        standin.set_pipeline(
            "nightly-fail",
            PipelineBehaviour::unconfigured("fine", 0, 10),
        );
        let configured = standin.create_run(
            FACTORY.to_owned(),
            "Nightly-FAIL",
            Map::new(),
            RerunOptions::default(),
            at(0),
        );
        assert!(failing.is_ok() && configured.is_ok());
        if let (Ok(failing), Ok(configured)) = (failing, configured) {
            assert_eq!(status(&standin, failing, at(3500)), Some(RunStatus::Failed));
            assert_eq!(
                status(&standin, configured, at(10)),
                Some(RunStatus::Succeeded)
            );
        }
    }

    #[test]
    fn a_recovery_rerun_joins_the_group_and_takes_the_reference_parameters() {
        let mut standin = standin();
        let parameters = Map::from_iter([("date".to_owned(), json!("2026-11-26"))]);
        let first = standin.create_run(
            FACTORY.to_owned(),
            "load",
            parameters.clone(),
            RerunOptions::default(),
            at(0),
        );
        assert!(first.is_ok());
        let Ok(first) = first else { return };
        let rerun = RerunOptions {
            reference_pipeline_run_id: Some(first.to_string()),
            is_recovery: Some(true),
            ..RerunOptions::default()
        };
        let second = standin.create_run(FACTORY.to_owned(), "load", Map::new(), rerun, at(10));
        assert!(second.is_ok());
        let Ok(second) = second else { return };
        let first_view = standin.run(FACTORY, &first.to_string(), at(20));
        let second_view = standin.run(FACTORY, &second.to_string(), at(20));
        assert!(first_view.is_ok() && second_view.is_ok());
        if let (Ok(first_view), Ok(second_view)) = (first_view, second_view) {
            assert!(!first_view.is_latest);
            assert!(second_view.is_latest);
            assert_eq!(second_view.run_group_id, first);
            assert_eq!(second_view.parameters, parameters);
        }
    }

    #[test]
    fn a_rerun_of_an_unknown_run_is_not_found() {
        let mut standin = standin();
        let rerun = RerunOptions {
            reference_pipeline_run_id: Some(Uuid::new_v4().to_string()),
            ..RerunOptions::default()
        };
        let created = standin.create_run(FACTORY.to_owned(), "load", Map::new(), rerun, at(0));
        assert!(created.is_err_and(|e| e.to_string().starts_with("PipelineRunNotFound")));
    }

    #[test]
    fn runs_of_another_factory_are_not_seen() {
        let mut standin = standin();
        let created = standin.create_run(
            "sub/rg/other".to_owned(),
            "load",
            Map::new(),
            RerunOptions::default(),
            at(0),
        );
        assert!(created.is_ok());
        if let Ok(run_id) = created {
            assert_eq!(status(&standin, run_id, at(0)), None);
        }
    }

    #[test]
    fn throttling_is_used_up_before_server_errors_and_only_after_the_checks() {
        let mut standin = standin();
        let grant = standin.issue_token(
            "tenant",
            &[
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("client_id".to_owned(), "app".to_owned()),
                ("client_secret".to_owned(), "secret".to_owned()),
                (
                    "scope".to_owned(),
                    "https://management.azure.com/.default".to_owned(),
                ),
            ],
            at(0),
        );
        assert!(grant.is_ok());
        let Ok(grant) = grant else { return };
        let bearer = format!("Bearer {}", grant.access_token);
        *standin.faults_mut() = Faults {
            throttle: 1,
            retry_after_s: 3,
            server_errors: 1,
            delay_ms: 0,
        };
        let mut admit = |authorization: Option<&str>| {
            standin
                .admit(authorization, Some(API_VERSION), "sub", at(1))
                .err()
                .map(|e| {
                    e.to_string()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
        };
        assert_eq!(admit(None).as_deref(), Some("AuthenticationFailed"));
        assert_eq!(admit(Some(&bearer)).as_deref(), Some("TooManyRequests"));
        assert_eq!(admit(Some(&bearer)).as_deref(), Some("InternalServerError"));
        assert_eq!(admit(Some(&bearer)), None);
    }

    #[test]
    fn calls_report_every_operation_and_the_error_statuses() {
        let mut calls = Calls::default();
        calls.record(Operation::CreateRun, 429);
        calls.record(Operation::CreateRun, 200);
        calls.record(Operation::GetRun, 404);
        let report = calls.to_json();
        assert_eq!(report["createRun"], 2);
        assert_eq!(report["getRun"], 1);
        assert_eq!(report["cancel"], 0);
        assert_eq!(report["answered"]["429"], 1);
        assert_eq!(report["answered"]["401"], 0);
        assert_eq!(report["answered"]["404"], 1);
    }
}
