//! The demo's platforms: an HTTP job service (`DEMO_PLATFORM_URL`) reached with reqwest, and
//! the error split the reconciler needs (unavailable → retry, refused → terminal, fenced → step
//! down). Every request carries the leader's term in [`FENCING_TERM_HEADER`]; a platform that
//! has seen a higher term answers 409 Conflict.

use std::time::Duration;

use operator_sdk::{EntityKey, ReconcileError};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use thiserror::Error;

use crate::job::{Job, JobSpec, JobSubmission};

/// How long one platform request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that carries the caller's term.
pub const FENCING_TERM_HEADER: &str = "X-Fencing-Term";

/// Why a platform request failed.
#[derive(Debug, Error)]
pub enum PlatformError {
    /// The platform could not be reached, timed out or failed (5xx): worth retrying.
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// The platform refused the request (4xx): retrying will not help.
    #[error("platform refused the request with {status}: {body}")]
    Refused { status: StatusCode, body: String },
    /// The platform answered with something that is not a job.
    #[error("platform sent an unreadable job: {0}")]
    BadResponse(String),
    /// The platform has seen a newer leader's term (409): this replica must step down.
    #[error("platform refused this term: {0}")]
    Fenced(String),
}

impl From<PlatformError> for ReconcileError {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::Fenced(_) => ReconcileError::fenced(e),
            PlatformError::Refused { .. } => ReconcileError::terminal(e),
            PlatformError::Unavailable(_) | PlatformError::BadResponse(_) => {
                ReconcileError::retryable(e)
            }
        }
    }
}

impl From<reqwest::Error> for PlatformError {
    fn from(e: reqwest::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A job as the platform reports it, with the JSON it came as.
#[derive(Debug, Clone)]
pub struct Reported {
    pub job: Job,
    pub json: serde_json::Map<String, Value>,
}

/// The HTTP job service: `PUT`/`GET`/`DELETE {url}/jobs/{workspace}/{name}`.
#[derive(Debug, Clone)]
pub struct HttpPlatform {
    client: reqwest::Client,
    base: String,
}

impl HttpPlatform {
    /// A client for the service at `url`.
    pub fn new(url: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_string(),
        })
    }

    /// A request on the job of `key`, carrying `term`.
    fn job(&self, method: Method, key: &EntityKey, term: u64) -> RequestBuilder {
        // Workspaces and names are lowercase letters, digits and hyphens: nothing to escape.
        let url = format!("{}/jobs/{}/{}", self.base, key.workspace, key.name);
        self.client
            .request(method, url)
            .header(FENCING_TERM_HEADER, term)
    }

    /// The job of `key`, or `None` when the platform has none.
    pub async fn get(&self, key: &EntityKey, term: u64) -> Result<Option<Reported>, PlatformError> {
        let response = self.job(Method::GET, key, term).send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        read_job(check(response).await?).await.map(Some)
    }

    /// Submits the job of `key` at `generation` (the platform keeps a job of the same
    /// generation running rather than restarting it).
    pub async fn put(
        &self,
        key: &EntityKey,
        generation: u64,
        spec: &JobSpec,
        term: u64,
    ) -> Result<Reported, PlatformError> {
        let body = JobSubmission { generation, spec };
        let response = self.job(Method::PUT, key, term).json(&body).send().await?;
        read_job(check(response).await?).await
    }

    /// Deletes the job of `key`; a job already gone is fine.
    pub async fn delete(&self, key: &EntityKey, term: u64) -> Result<(), PlatformError> {
        let response = self.job(Method::DELETE, key, term).send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(response).await.map(|_| ())
    }
}

async fn check(response: Response) -> Result<Response, PlatformError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    if status == StatusCode::CONFLICT {
        Err(PlatformError::Fenced(body))
    } else if status.is_client_error() {
        Err(PlatformError::Refused { status, body })
    } else {
        Err(PlatformError::Unavailable(format!("{status}: {body}")))
    }
}

async fn read_job(response: Response) -> Result<Reported, PlatformError> {
    let json: serde_json::Map<String, Value> = response
        .json()
        .await
        .map_err(|e| PlatformError::BadResponse(e.to_string()))?;
    let job = serde_json::from_value(Value::Object(json.clone()))
        .map_err(|e| PlatformError::BadResponse(e.to_string()))?;
    Ok(Reported { job, json })
}
