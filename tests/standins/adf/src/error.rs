//! Azure Resource Manager's error answer, `{"error":{"code","message"}}`: each code with the
//! status (and, for throttling, the `Retry-After` header) that ARM sends with it.

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde_json::json;

/// An ARM error answer; handlers return it and actix-web turns it into the response.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ArmError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl ArmError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// The request itself is wrong: its body, its query string or its filters.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn missing_api_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    }

    pub fn invalid_api_version(given: &str, supported: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{given}' is invalid. The supported versions are '{supported}'."
            ),
        )
    }

    /// No `Authorization` header, or one that is not `Bearer <token>`.
    pub fn authentication_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AuthenticationFailed", message)
    }

    /// A bearer token this server never issued.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )
    }

    /// A token issued here whose lifetime is over, worded with ARM's US-style times.
    pub fn expired_token(expired_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        const US_TIME: &str = "%-m/%-d/%Y %-I:%M:%S %p";
        Self::new(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                expired_at.format(US_TIME),
                now.format(US_TIME)
            ),
        )
    }

    pub fn subscription_not_found(subscription: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        )
    }

    pub fn run_not_found(run_id: &str, factory: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "PipelineRunNotFound",
            format!("Pipeline run '{run_id}' does not exist in factory '{factory}'."),
        )
    }

    /// A cancel of a run that has already ended (or is being cancelled), as ADF answers it.
    pub fn run_not_running(run_id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PipelineRunNotRunning",
            format!("Pipeline run '{run_id}' is not running and cannot be cancelled."),
        )
    }

    pub fn too_many_requests(subscription: &str, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "Number of requests for subscription '{subscription}' exceeded the limit. \
                     Please try again after '{retry_after_s}' seconds."
                ),
            )
        }
    }

    pub fn internal_server_error(now: DateTime<Utc>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!(
                "Encountered internal server error. Diagnostic information: timestamp '{}', \
                 tracking id '{}'.",
                now.format("%Y%m%dT%H%M%SZ"),
                uuid::Uuid::new_v4()
            ),
        )
    }

    /// Nothing is routed at this method and path: the stand-in's fallback, so a client that
    /// builds a URL wrongly reads why instead of an empty 404.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The ADF stand-in has no route for {method} {path}."),
        )
    }
}

impl ResponseError for ArmError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((RETRY_AFTER, seconds.to_string()));
        }
        response.json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}
