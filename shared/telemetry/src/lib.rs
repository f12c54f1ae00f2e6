//! Telemetry shared by every binary.
//!
//! - Logs: `tracing` to stderr, level from `RUST_LOG` or else the binary's own `LOG_LEVEL`
//!   setting, text by default or JSON with `LOG_FORMAT=json`.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//!   spans are also exported over OTLP — gRPC unless `OTEL_EXPORTER_OTLP_PROTOCOL` says
//!   `http/protobuf` — through a batch processor, with the service name from
//!   `OTEL_SERVICE_NAME` (or the binary's default) and the sampler from `OTEL_TRACES_SAMPLER`
//!   (default: parent-based, always on). [`Telemetry::shutdown`] flushes what is left.
//! - Propagation: W3C `traceparent`/`tracestate`, carried in HTTP headers and in NATS message
//!   headers ([`inject_nats`], [`extract_nats`]).
//! - Metrics: one Prometheus recorder per process ([`metrics_handle`]), rendered as text at
//!   `/metrics` by whoever serves it.

use std::sync::OnceLock;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The seed's variable for the log level of components; `RUST_LOG` wins when both are set.
pub const LOG_LEVEL_ENV: &str = "LOG_LEVEL";
/// `json` for one JSON object a line, anything else for text.
pub const LOG_FORMAT_ENV: &str = "LOG_FORMAT";
/// Where spans go; unset means no export.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The traces-only endpoint, used verbatim (the one above gets `/v1/traces` for HTTP).
pub const OTLP_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `grpc` (the default) or `http/protobuf`.
pub const OTLP_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The traces-only protocol, which wins over the one above.
pub const OTLP_TRACES_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// The name spans are exported under.
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
/// The variables a process hands on to the processes it starts so that their spans go where
/// its own go (not the service name: each process has its own).
pub const FORWARDED_OTEL_ENV: &[&str] = &[
    OTLP_ENDPOINT_ENV,
    OTLP_TRACES_ENDPOINT_ENV,
    OTLP_PROTOCOL_ENV,
    OTLP_TRACES_PROTOCOL_ENV,
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

/// What [`init`] set up; keep it until the process ends and call [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exiting, or spans still queued are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter. Blocks: from async code, call it
    /// through `tokio::task::spawn_blocking` while the runtime is still alive (the gRPC
    /// exporter needs it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: spans not flushed at shutdown: {e}");
            }
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{OTLP_PROTOCOL_ENV}={0}: expected grpc or http/protobuf")]
    Protocol(String),
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(String),
}

/// Makes ring the process's TLS provider. reqwest and the OTLP exporter are built without a
/// default one (so that one binary never carries two); every binary calls this before its
/// first HTTP client. A second call keeps the first provider.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Installs the global subscriber (logs, and traces when an OTLP endpoint is configured) and
/// the W3C propagator. `level` is the binary's `LOG_LEVEL` setting; `service` the name spans
/// are exported under unless `OTEL_SERVICE_NAME` is set. The gRPC exporter needs a Tokio
/// runtime: call this inside one. Calling it twice keeps the first set-up.
pub fn init(service: &str, level: &str) -> Result<Telemetry, TelemetryError> {
    // The HTTP exporter's client needs a TLS provider even for plain http://.
    install_tls_provider();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = if exporting_configured() {
        Some(tracer_provider(service)?)
    } else {
        None
    };
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("operator"))
            // Only our own spans, at info: the HTTP/2 and NATS libraries' internals (trace and
            // debug level) would drown them, and the exporter's own HTTP/2 spans would feed
            // themselves, one batch's export making the next batch.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && *meta.level() <= tracing::Level::INFO
                    && !meta.target().starts_with("async_nats")
                    && !meta.target().starts_with("h2")
                    && !meta.target().starts_with("tonic")
                    && !meta.target().starts_with("hyper")
            }))
    });
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(log_filter(level))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter(level))
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .is_ok();
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// Logs only (no export): what tests and tools that never export use. Calling it twice is
/// harmless.
pub fn init_logging(level: &str) {
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(level))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(if level.trim().is_empty() {
                "info"
            } else {
                level
            })
        })
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether an OTLP endpoint is configured.
pub fn exporting_configured() -> bool {
    env_set(OTLP_ENDPOINT_ENV).is_some() || env_set(OTLP_TRACES_ENDPOINT_ENV).is_some()
}

fn tracer_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
    let protocol = env_set(OTLP_TRACES_PROTOCOL_ENV)
        .or_else(|| env_set(OTLP_PROTOCOL_ENV))
        .unwrap_or_else(|| "grpc".into());
    let exporter = match protocol.as_str() {
        "grpc" => SpanExporter::builder().with_tonic().build(),
        "http/protobuf" => {
            let mut builder = SpanExporter::builder().with_http();
            // The crate appends `/v1/traces` to the general endpoint only when it reads it
            // itself; say it explicitly so both variables behave as the specification says.
            if let (None, Some(base)) = (
                env_set(OTLP_TRACES_ENDPOINT_ENV),
                env_set(OTLP_ENDPOINT_ENV),
            ) {
                builder =
                    builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
            }
            builder.build()
        }
        other => return Err(TelemetryError::Protocol(other.to_string())),
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let service = env_set(SERVICE_NAME_ENV).unwrap_or_else(|| service.to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// The W3C headers (`traceparent`, and `tracestate` when there is one) of `span`, empty when
/// the span is not exported.
pub fn trace_headers(span: &Span) -> Vec<(String, String)> {
    struct Collect(Vec<(String, String)>);
    impl Injector for Collect {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_string(), value));
        }
    }
    let mut collected = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut collected);
    collected.0
}

/// Makes `span` a child of the remote span named by W3C headers read through `get` (a
/// header's value by lowercase name). Without such headers the span stays where it was.
pub fn set_remote_parent(span: &Span, get: impl Fn(&str) -> Option<String>) {
    let Some(traceparent) = get("traceparent") else {
        return;
    };
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent);
    if let Some(state) = get("tracestate") {
        carrier.insert("tracestate".to_string(), state);
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// Puts `span`'s W3C headers on a NATS message.
pub fn inject_nats(headers: &mut async_nats::HeaderMap, span: &Span) {
    for (name, value) in trace_headers(span) {
        headers.insert(name.as_str(), value.as_str());
    }
}

/// Makes `span` a child of the span whose W3C headers a NATS message carries.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>, span: &Span) {
    let Some(headers) = headers else {
        return;
    };
    set_remote_parent(span, |name| {
        headers.get(name).map(|value| value.as_str().to_string())
    });
}

/// Logs the client's connection events and calls `on_reconnect` for each connection
/// re-established after a loss. The first connection also reports `Connected`; it is not a
/// reconnect and is not counted.
pub fn observe_connection(
    options: async_nats::ConnectOptions,
    on_reconnect: impl Fn() + Send + Sync + 'static,
) -> async_nats::ConnectOptions {
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_reconnect = std::sync::Arc::new(on_reconnect);
    options.event_callback(move |event| {
        let (lost, on_reconnect) = (lost.clone(), on_reconnect.clone());
        async move {
            use std::sync::atomic::Ordering;
            match event {
                async_nats::Event::Connected => {
                    if lost.swap(false, Ordering::SeqCst) {
                        on_reconnect();
                    }
                    tracing::info!("NATS connected");
                }
                async_nats::Event::Disconnected => {
                    lost.store(true, Ordering::SeqCst);
                    tracing::warn!("NATS connection lost; reconnecting");
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        }
    })
}

/// The process's Prometheus recorder, installed on first use. Histograms are rendered with
/// the buckets of [`DURATION_BUCKETS`].
pub fn metrics_handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
        let builder = builder
            .set_buckets(DURATION_BUCKETS)
            .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (a test's) keeps its place; this one then renders
        // nothing, which the scrape shows plainly.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text of every metric recorded so far.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

/// Histogram buckets for durations in seconds: 1 ms to 5 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_without_an_exporter_has_no_trace_headers() {
        let span = tracing::info_span!("nothing");
        assert!(trace_headers(&span).is_empty());
    }

    #[test]
    fn recorded_metrics_are_rendered_as_prometheus_text() {
        metrics_handle();
        metrics::counter!("telemetry_test_total", "kind" => "unit").increment(3);
        let text = render_metrics();
        assert!(
            text.contains("telemetry_test_total{kind=\"unit\"} 3"),
            "{text}"
        );
    }
}
