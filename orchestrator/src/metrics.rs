//! The orchestrator's Prometheus metrics, served as text at `GET /metrics` on the API's
//! address. Every name is listed here; the README's metrics table mirrors this list.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, Responder};
use tracing::{field::Empty, info_span, Instrument, Span};

/// Counter `{method, route, status}`: API requests answered.
pub const HTTP_REQUESTS: &str = "orchestrator_http_requests_total";
/// Histogram `{method, route}`: how long API requests took, in seconds.
pub const HTTP_REQUEST_DURATION: &str = "orchestrator_http_request_duration_seconds";
/// Counter `{operator, type}`: commands the command stream acknowledged.
pub const COMMANDS_PUBLISHED: &str = "orchestrator_commands_published_total";
/// Counter `{operator, type}`: command publishes that failed (each is retried with backoff).
pub const COMMAND_PUBLISH_FAILURES: &str = "orchestrator_command_publish_failures_total";
/// Gauge `{operator, type}`: resources whose last command no status event has confirmed yet.
pub const COMMANDS_IN_FLIGHT: &str = "orchestrator_commands_in_flight";
/// Counter `{operator, type}`: status events received from components.
pub const STATUS_EVENTS: &str = "orchestrator_status_events_total";
/// Gauge `{operator, type, status, runtime}`: resources by their status and runtime state as
/// `get` shows them.
pub const ENTITIES: &str = "orchestrator_entities";
/// Gauge `{operator}`: resources holding an actor now (something in flight, or recently
/// active); the rest sleep as their stored bytes until a message wakes them.
pub const ENTITIES_AWAKE: &str = "orchestrator_entities_awake";
/// Counter: connections to NATS re-established after a loss.
pub const NATS_RECONNECTS: &str = "orchestrator_nats_reconnects_total";

/// `GET /metrics`.
pub async fn scrape() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(operator_telemetry::render_metrics())
}

/// Middleware: one server span per request (a child of the caller's `traceparent`, when it
/// sends one), and the request counter and duration histogram.
pub async fn observe_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = request.method().to_string();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    // Health checks and scrapes come every few seconds: counted, not traced.
    let traced = !matches!(route.as_str(), "/metrics" | "/healthz" | "/readyz");
    let span = if !traced {
        Span::none()
    } else {
        info_span!(
            "http.request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = %route,
            url.path = %request.path(),
            http.response.status_code = Empty,
        )
    };
    let headers = request.headers();
    operator_telemetry::set_remote_parent(&span, |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let started = Instant::now();
    let response = next.call(request).instrument(span.clone()).await;
    let status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
