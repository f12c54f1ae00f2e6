//! `AdfClient`: the Data Factory REST API (api-version 2018-06-01) on Azure Resource Manager —
//! createRun, Get/cancel a pipeline run, queryPipelineRuns and queryActivityruns — with the
//! bearer token, one refresh on a 401, and bounded retries of 429/5xx/connection failures.
//!
//! createRun is the one call that is not replayed blindly: only a 429 or a connection that was
//! never made is retried in place, since anything else may have started a run. The reconciler's
//! recorded intent covers the rest (see `reconciler.rs`).

pub mod credential;
pub mod http;
pub mod model;
pub mod retry;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Client, Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use thiserror::Error;
use tracing::debug;

use self::credential::Credential;
use self::http::{exchange, Body, Exchange, Outcome};
use self::model::{
    ActivityRun, CreateRunResponse, ErrorBody, PipelineRun, QueryPage, RunFilterParameters,
};
use self::retry::RetryPolicy;
use self::token::{TokenEndpoint, TokenError, TokenSource};
use crate::budget::{factory_key, MonitorBudget};
use crate::config::AzureConfig;
use crate::spec::PipelineRef;

/// The Data Factory API version spoken.
pub const API_VERSION: &str = "2018-06-01";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most pages one query reads.
const MAX_PAGES: usize = 20;
/// The calls Azure counts as monitoring, paced by the factory's budget.
const MONITORING: [&str; 3] = ["getPipelineRun", "queryPipelineRuns", "queryActivityRuns"];

/// The URL template of a factory's `tail`, as Azure's REST reference writes it.
macro_rules! factory_template {
    ($tail:literal) => {
        concat!(
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}",
            "/providers/Microsoft.DataFactory/factories/{factoryName}",
            $tail
        )
    };
}

/// Why an Azure call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AzureError {
    /// Azure could not be reached, or failed (5xx), within the retry policy: worth retrying.
    #[error("{operation}: Azure unavailable: {reason}")]
    Unavailable {
        operation: &'static str,
        reason: String,
    },
    /// Azure throttled the call (429) past the retry policy; `retry_after` is its hint.
    #[error("{operation}: throttled by Azure")]
    Throttled {
        operation: &'static str,
        retry_after: Option<Duration>,
    },
    /// Azure refused the call (4xx other than 429): retrying will not help.
    #[error("{operation}: {code}: {message}")]
    Refused {
        operation: &'static str,
        status: StatusCode,
        code: String,
        message: String,
    },
    /// Azure answered 2xx with a body that is not what the API documents.
    #[error("{operation}: unreadable answer: {reason}")]
    BadResponse {
        operation: &'static str,
        reason: String,
    },
    /// The factory's monitoring budget has no slot before `retry_after`; nothing was sent.
    #[error("{operation}: the factory's monitoring budget is spent for now")]
    OverBudget {
        operation: &'static str,
        retry_after: Duration,
    },
    /// No access token could be had.
    #[error("{operation}: {source}")]
    Token {
        operation: &'static str,
        source: TokenError,
    },
}

impl AzureError {
    /// True when retrying will not help.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// True when Azure refused a cancel because the run is no longer going
    /// (`PipelineRunNotRunning`).
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "PipelineRunNotRunning")
    }

    /// True when Azure answered 404 (the factory, pipeline or run does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// Whether a call may be sent again after a failure that may have reached Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reads and idempotent writes.
    Safe,
    /// createRun: a second send may start a second run.
    Unsafe,
}

/// What createRun is asked for besides the pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateRun<'a> {
    pub parameters: &'a Map<String, Value>,
    pub reference_pipeline_run_id: Option<&'a str>,
    pub start_activity_name: Option<&'a str>,
    pub start_from_failure: Option<bool>,
}

/// A Data Factory client for one subscription.
#[derive(Debug)]
pub struct AdfClient {
    http: Client,
    arm: Url,
    subscription: String,
    tokens: TokenSource,
    retry: RetryPolicy,
    budget: Arc<MonitorBudget>,
}

/// The budget key of the factory a factory URL names (`…/resourceGroups/{rg}/…/factories/{f}/…`).
fn factory_of(url: &Url) -> Option<String> {
    let segments: Vec<String> = url.path_segments()?.map(percent_decode).collect();
    let after = |name: &str| {
        segments
            .iter()
            .position(|s| s.eq_ignore_ascii_case(name))
            .and_then(|i| segments.get(i + 1))
    };
    Some(factory_key(after("resourceGroups")?, after("factories")?))
}

/// `%XX` escapes of a path segment decoded (names are ASCII; anything else is kept as sent).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl AdfClient {
    /// A client with the configured credentials and endpoints. The rustls crypto provider must
    /// be installed first.
    pub fn new(
        config: &AzureConfig,
        credential: Credential,
        retry: RetryPolicy,
        budget: Arc<MonitorBudget>,
    ) -> Result<Self, reqwest::Error> {
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("adf-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let endpoint = TokenEndpoint::new(
            http.clone(),
            &config.azure_authority_host,
            credential,
            retry,
        );
        Ok(Self {
            http,
            arm: config.azure_resource_manager_endpoint.clone(),
            subscription: config.azure_subscription_id.to_string(),
            tokens: TokenSource::new(endpoint),
            retry,
            budget,
        })
    }

    /// The subscription this client calls.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// `{arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataFactory/
    /// factories/{factory}/{tail…}?api-version=…&{query…}`, every segment escaped.
    fn url(&self, pipeline: &PipelineRef, tail: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.arm.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "subscriptions",
                &self.subscription,
                "resourceGroups",
                &pipeline.resource_group_name,
                "providers",
                "Microsoft.DataFactory",
                "factories",
                &pipeline.factory_name,
            ]);
            segments.extend(tail);
        }
        url.query_pairs_mut()
            .clear()
            .extend_pairs(query)
            .append_pair("api-version", API_VERSION);
        url
    }

    /// Starts a run of `pipeline`; returns its runId.
    pub async fn create_run(
        &self,
        pipeline: &PipelineRef,
        run: CreateRun<'_>,
    ) -> Result<String, AzureError> {
        let mut query = Vec::new();
        if let Some(reference) = run.reference_pipeline_run_id {
            query.push(("referencePipelineRunId", reference));
            query.push(("isRecovery", "true"));
        }
        if let Some(activity) = run.start_activity_name {
            query.push(("startActivityName", activity));
        }
        if let Some(from_failure) = run.start_from_failure {
            query.push((
                "startFromFailure",
                if from_failure { "true" } else { "false" },
            ));
        }
        let url = self.url(
            pipeline,
            &["pipelines", &pipeline.pipeline_name, "createRun"],
            &query,
        );
        let body = Body::Json(Value::Object(run.parameters.clone()));
        let response: CreateRunResponse = self
            .call(
                "createRun",
                Method::POST,
                factory_template!("/pipelines/{pipelineName}/createRun"),
                &url,
                &body,
                Replay::Unsafe,
            )
            .await?;
        Ok(response.run_id)
    }

    /// The run `run_id` of `pipeline`'s factory.
    pub async fn get_run(
        &self,
        pipeline: &PipelineRef,
        run_id: &str,
    ) -> Result<PipelineRun, AzureError> {
        let url = self.url(pipeline, &["pipelineruns", run_id], &[]);
        self.call(
            "getPipelineRun",
            Method::GET,
            factory_template!("/pipelineruns/{runId}"),
            &url,
            &Body::Empty,
            Replay::Safe,
        )
        .await
    }

    /// Asks Azure to cancel the run `run_id` and the runs it started.
    pub async fn cancel_run(&self, pipeline: &PipelineRef, run_id: &str) -> Result<(), AzureError> {
        let url = self.url(
            pipeline,
            &["pipelineruns", run_id, "cancel"],
            &[("isRecursive", "true")],
        );
        let _: Option<Value> = self
            .call(
                "cancelPipelineRun",
                Method::POST,
                factory_template!("/pipelineruns/{runId}/cancel"),
                &url,
                &Body::Empty,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }

    /// Every run of the factory matching `filter`, following continuation tokens (up to a
    /// bound).
    pub async fn query_runs(
        &self,
        pipeline: &PipelineRef,
        filter: RunFilterParameters,
    ) -> Result<Vec<PipelineRun>, AzureError> {
        let url = self.url(pipeline, &["queryPipelineRuns"], &[]);
        self.query(
            "queryPipelineRuns",
            factory_template!("/queryPipelineRuns"),
            &url,
            filter,
        )
        .await
    }

    /// The activity runs of the run `run_id` updated between `after` and `before`.
    pub async fn query_activity_runs(
        &self,
        pipeline: &PipelineRef,
        run_id: &str,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<ActivityRun>, AzureError> {
        let url = self.url(
            pipeline,
            &["pipelineruns", run_id, "queryActivityruns"],
            &[],
        );
        self.query(
            "queryActivityRuns",
            factory_template!("/pipelineruns/{runId}/queryActivityruns"),
            &url,
            RunFilterParameters::window(after, before),
        )
        .await
    }

    async fn query<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        template: &'static str,
        url: &Url,
        mut filter: RunFilterParameters,
    ) -> Result<Vec<T>, AzureError> {
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let body =
                Body::Json(
                    serde_json::to_value(&filter).map_err(|e| AzureError::BadResponse {
                        operation,
                        reason: e.to_string(),
                    })?,
                );
            let page: QueryPage<T> = self
                .call(operation, Method::POST, template, url, &body, Replay::Safe)
                .await?;
            items.extend(page.value);
            match page.continuation_token.filter(|t| !t.is_empty()) {
                Some(token) => filter.continuation_token = Some(token),
                None => return Ok(items),
            }
        }
        debug!(operation, pages = MAX_PAGES, "query truncated");
        Ok(items)
    }

    /// Sends a request with a token until it succeeds or the retry policy says to stop, and
    /// reads the answer (an empty body reads as JSON null).
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        template: &'static str,
        url: &Url,
        body: &Body,
        replay: Replay,
    ) -> Result<T, AzureError> {
        let mut attempt = 0;
        let mut rejected = None;
        let factory = factory_of(url);
        let monitoring = MONITORING.contains(&operation);
        loop {
            attempt += 1;
            if let (true, Some(factory)) = (monitoring, &factory) {
                // Every attempt is a call Azure counts against the factory's limit.
                self.budget
                    .acquire(factory)
                    .await
                    .map_err(|wait| AzureError::OverBudget {
                        operation,
                        retry_after: wait,
                    })?;
            }
            let bearer = self
                .tokens
                .bearer(rejected)
                .await
                .map_err(|source| AzureError::Token { operation, source })?;
            let outcome = exchange(
                &self.http,
                Exchange {
                    method: method.clone(),
                    template,
                    url,
                    body,
                    bearer: Some(&bearer.value),
                    headers: &[],
                    attempt,
                },
            )
            .await;
            let failure = match outcome {
                Outcome::Success(bytes) => return read(operation, &bytes),
                Outcome::Status { status, .. }
                    if status == StatusCode::UNAUTHORIZED && rejected.is_none() =>
                {
                    // The token was revoked or expired early: refresh once and try again,
                    // without spending one of the bounded attempts.
                    rejected = Some(bearer.serial);
                    attempt -= 1;
                    continue;
                }
                Outcome::Status {
                    status,
                    retry_after,
                    body,
                } => match Transient::of_status(status, replay) {
                    Some(Transient::Throttled) => {
                        if let (Some(wait), Some(factory)) = (retry_after, &factory) {
                            self.budget.pause(factory, wait).await;
                        }
                        (Transient::Throttled, describe(status, &body), retry_after)
                    }
                    Some(transient) => (transient, describe(status, &body), retry_after),
                    None => {
                        let error = ErrorBody::parse(&body);
                        return Err(AzureError::Refused {
                            operation,
                            status,
                            code: error.code.unwrap_or_else(|| status.as_str().to_string()),
                            message: error.message.unwrap_or_else(|| {
                                status.canonical_reason().unwrap_or("refused").to_string()
                            }),
                        });
                    }
                },
                Outcome::Unreachable { reason, sent } => {
                    let transient = if sent && replay == Replay::Unsafe {
                        Transient::Ambiguous
                    } else {
                        Transient::Retry
                    };
                    (transient, reason, None)
                }
            };
            let (transient, reason, retry_after) = failure;
            let delay = match transient {
                Transient::Ambiguous => None,
                Transient::Retry | Transient::Throttled => {
                    self.retry
                        .next_delay(attempt, retry_after, rand::random::<f64>())
                }
            };
            match delay {
                Some(delay) => {
                    debug!(operation, attempt, delay_ms = delay.as_millis() as u64, error = %reason, "Azure call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None if transient == Transient::Throttled => {
                    return Err(AzureError::Throttled {
                        operation,
                        retry_after,
                    })
                }
                None => return Err(AzureError::Unavailable { operation, reason }),
            }
        }
    }
}

/// A failure that may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transient {
    /// Safe to send again.
    Retry,
    /// 429: Azure did not act on it; safe to send again.
    Throttled,
    /// The request may have been acted on and must not be sent again blindly.
    Ambiguous,
}

impl Transient {
    /// Whether a non-2xx `status` may pass, and how.
    fn of_status(status: StatusCode, replay: Replay) -> Option<Self> {
        if status == StatusCode::TOO_MANY_REQUESTS {
            Some(Self::Throttled)
        } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            Some(match replay {
                Replay::Safe => Self::Retry,
                Replay::Unsafe => Self::Ambiguous,
            })
        } else {
            None
        }
    }
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let error = ErrorBody::parse(body);
    match (error.code, error.message) {
        (Some(code), Some(message)) => format!("{status}: {code}: {message}"),
        (Some(text), None) | (None, Some(text)) => format!("{status}: {text}"),
        (None, None) => status.to_string(),
    }
}

fn read<T: DeserializeOwned>(operation: &'static str, bytes: &[u8]) -> Result<T, AzureError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| AzureError::BadResponse {
        operation,
        reason: e.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
