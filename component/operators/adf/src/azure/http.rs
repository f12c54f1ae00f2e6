//! One HTTP exchange with Azure in its own client span (`<METHOD> <url template>`, after
//! OpenTelemetry's HTTP conventions) whose W3C `traceparent` the request carries, sorted into
//! the few outcomes the retry loops decide on.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use operator_sdk::telemetry::trace_headers;
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::Value;
use tracing::{field, info_span, Instrument, Span};

use super::retry::parse_retry_after;
use crate::config::Secret;

/// What a request carries.
#[derive(Debug)]
pub enum Body {
    /// Nothing.
    Empty,
    /// A JSON document.
    Json(Value),
    /// A form (the token request); its values are never logged.
    Form(Vec<(&'static str, String)>),
}

/// One request to make.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub method: Method,
    /// The URL's path with placeholders (`/subscriptions/{subscriptionId}/…`), for the span.
    pub template: &'static str,
    pub url: &'a Url,
    pub body: &'a Body,
    pub bearer: Option<&'a Secret>,
    /// Other headers (the metadata endpoint's `Metadata: true`).
    pub headers: &'a [(&'static str, &'static str)],
    /// 1 for the first try.
    pub attempt: u32,
}

/// How an exchange ended.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer and its body.
    Success(Bytes),
    /// Any other answer.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
        body: Bytes,
    },
    /// No answer. `sent` is false only when the connection was never made, so the server
    /// cannot have acted on the request.
    Unreachable { reason: String, sent: bool },
}

/// Sends one request and reads the whole answer.
pub async fn exchange(client: &Client, x: Exchange<'_>) -> Outcome {
    let span = info_span!(
        "adf.http",
        otel.name = %format!("{} {}", x.method, x.template),
        otel.kind = "client",
        otel.status_code = field::Empty,
        http.request.method = %x.method,
        url.template = x.template,
        server.address = x.url.host_str().unwrap_or_default(),
        server.port = x.url.port_or_known_default(),
        attempt = x.attempt,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    let headers = trace_headers(&span);
    async move {
        let mut request = client.request(x.method.clone(), x.url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in x.headers {
            request = request.header(*name, *value);
        }
        if let Some(bearer) = x.bearer {
            request = request.bearer_auth(bearer.expose());
        }
        request = match x.body {
            Body::Empty if x.method == Method::POST => request.json(&serde_json::json!({})),
            Body::Empty => request,
            Body::Json(json) => request.json(json),
            Body::Form(form) => request.form(form),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                failed(transport_failure(&e));
                return Outcome::Unreachable {
                    sent: !(e.is_connect() || e.is_builder()),
                    reason: without_url(e),
                };
            }
        };
        let status = response.status();
        Span::current().record("http.response.status_code", status.as_u16());
        if status.is_client_error() || status.is_server_error() {
            failed(status.as_str());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                failed(transport_failure(&e));
                return Outcome::Unreachable {
                    sent: true,
                    reason: without_url(e),
                };
            }
        };
        if status.is_success() {
            Outcome::Success(body)
        } else {
            Outcome::Status {
                status,
                retry_after,
                body,
            }
        }
    }
    .instrument(span)
    .await
}

/// Marks the current (client) span as failed with `error_type` (a status code, or why no
/// answer came).
fn failed(error_type: &str) {
    let span = Span::current();
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}

/// The error's description without its URL (the span has the template), and with its causes.
fn without_url(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `error.type` of a request that got no answer: it timed out, or the transport failed.
fn transport_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else {
        "transport"
    }
}
