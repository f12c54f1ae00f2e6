//! An OTLP trace receiver inside the test process: the binaries export their spans to it (over
//! gRPC, or OTLP/HTTP protobuf on a second port) and a test awaits the spans it expects.
//!
//! It runs on its own threads, not on the caller's runtime: a test that blocks on an `opctl`
//! run must not stop the receiver that `opctl` flushes its spans to on the way out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message as _;
use tokio::sync::watch;

/// The kind of a span, as OTLP numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    fn from_otlp(kind: i32) -> Self {
        match kind {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }
}

/// How a span reached the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// One span as received. Ids are lowercase hex; attributes are rendered as strings.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub attributes: BTreeMap<String, String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub protocol: Protocol,
}

impl ReceivedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether `parent` is this span's parent.
    pub fn is_child_of(&self, parent: &ReceivedSpan) -> bool {
        self.trace_id == parent.trace_id && self.parent_span_id.as_deref() == Some(&parent.span_id)
    }
}

/// The spans of `spans` in `trace_id`, in start order.
pub fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    found.sort_by_key(|s| s.start_unix_nano);
    found
}

/// The parent of `span` among `spans`, if it was received.
pub fn parent_of<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    let parent = span.parent_span_id.as_deref()?;
    spans
        .iter()
        .find(|s| s.trace_id == span.trace_id && s.span_id == parent)
}

/// Whether `ancestor` is `span`'s parent, grandparent, … among `spans`.
pub fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut current = span;
    // A bound, in case a broken exporter sends a cycle.
    for _ in 0..64 {
        match parent_of(spans, current) {
            Some(parent) if parent.span_id == ancestor.span_id => {
                return parent.trace_id == ancestor.trace_id
            }
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// The most spans [`dump`] shows.
const DUMP_LIMIT: usize = 400;

/// The spans as a readable table, grouped by trace, in start order, each indented by its depth
/// (service, kind, name, ids, attributes); the first [`DUMP_LIMIT`] only.
pub fn dump(spans: &[ReceivedSpan]) -> String {
    let by_id: std::collections::HashMap<(&str, &str), &ReceivedSpan> = spans
        .iter()
        .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s))
        .collect();
    let depth = |span: &ReceivedSpan| {
        let mut depth = 0;
        let mut current = span;
        while let Some(parent) = current
            .parent_span_id
            .as_deref()
            .and_then(|p| by_id.get(&(current.trace_id.as_str(), p)))
        {
            depth += 1;
            current = parent;
            if depth > 32 {
                break;
            }
        }
        depth
    };
    let mut sorted: Vec<&ReceivedSpan> = spans.iter().collect();
    sorted.sort_by(|a, b| {
        (a.trace_id.as_str(), a.start_unix_nano).cmp(&(b.trace_id.as_str(), b.start_unix_nano))
    });
    let traces = {
        let mut ids: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let mut out = format!("{} spans in {traces} traces\n", spans.len());
    let mut trace = "";
    for span in sorted.iter().take(DUMP_LIMIT) {
        if span.trace_id != trace {
            trace = &span.trace_id;
            let _ = writeln!(out, "trace {trace}");
        }
        let attributes: Vec<String> = span
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "  {:indent$}[{}] {:?} {:?} span={} parent={} {}",
            "",
            span.service,
            span.kind,
            span.name,
            span.span_id,
            span.parent_span_id.as_deref().unwrap_or("-"),
            attributes.join(" "),
            indent = depth(span) * 2
        );
    }
    if spans.len() > DUMP_LIMIT {
        let _ = writeln!(out, "… and {} more", spans.len() - DUMP_LIMIT);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| render(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, render(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Some(_) => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn spans_of(request: ExportTraceServiceRequest, protocol: Protocol) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    kind: Kind::from_otlp(span.kind),
                    attributes: attributes(&span.attributes),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    protocol,
                });
            }
        }
    }
    out
}

#[derive(Clone)]
struct Store(watch::Sender<Vec<ReceivedSpan>>);

impl Store {
    fn add(&self, request: ExportTraceServiceRequest, protocol: Protocol) {
        let spans = spans_of(request, protocol);
        if !spans.is_empty() {
            self.0.send_modify(|all| all.extend(spans));
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(store: web::Data<Store>, body: web::Bytes) -> HttpResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.add(request, Protocol::HttpProtobuf);
            HttpResponse::Ok()
                .content_type("application/x-protobuf")
                .body(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(e) => HttpResponse::BadRequest().body(format!("not an OTLP trace request: {e}")),
    }
}

/// The receiver: OTLP/gRPC on one loopback port, OTLP/HTTP (protobuf, `POST /v1/traces`) on
/// another. Dropping it stops both.
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    store: Store,
    stop_grpc: Option<tokio::sync::oneshot::Sender<()>>,
    http_server: actix_web::dev::ServerHandle,
}

/// How long the processes' batch processors wait before exporting, in milliseconds, in
/// [`OtlpReceiver::env`]: short, so spans arrive while a test waits instead of at exit.
pub const SCHEDULE_DELAY_MS: &str = "100";

/// The OTLP exporter settings for `endpoint` and `protocol`: every span sampled, batches sent
/// every [`SCHEDULE_DELAY_MS`].
pub fn exporter_env(endpoint: &str, protocol: &str) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_DELAY_MS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl OtlpReceiver {
    /// Starts both listeners on free loopback ports.
    pub fn start() -> anyhow::Result<Self> {
        let (tx, _) = watch::channel(Vec::new());
        let store = Store(tx);

        let grpc_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        grpc_listener.set_nonblocking(true)?;
        let grpc = grpc_listener.local_addr()?;
        let (stop_grpc, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let service =
            TraceServiceServer::new(store.clone()).max_decoding_message_size(64 * 1024 * 1024);
        std::thread::Builder::new()
            .name("otlp-grpc".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(grpc_listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let server = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming);
                    tokio::select! {
                        result = server => {
                            if let Err(e) = result {
                                eprintln!("OTLP gRPC receiver stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("the OTLP gRPC receiver's thread ended")??;

        let http_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let http = http_listener.local_addr()?;
        let data = web::Data::new(store.clone());
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-http".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                            .route("/v1/traces", web::post().to(http_export))
                    })
                    .workers(1)
                    .disable_signals()
                    .listen(http_listener);
                    match server {
                        Ok(server) => {
                            let server = server.run();
                            let _ = handle_tx.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let http_server = handle_rx
            .recv()
            .context("the OTLP/HTTP receiver's thread ended")??;

        Ok(Self {
            grpc,
            http,
            store,
            stop_grpc: Some(stop_grpc),
            http_server,
        })
    }

    /// The gRPC endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP base endpoint (the exporter appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// What a process needs in its environment to export every span here over gRPC, promptly.
    pub fn env(&self) -> Vec<(String, String)> {
        exporter_env(&self.grpc_endpoint(), "grpc")
    }

    /// The same over OTLP/HTTP protobuf.
    pub fn http_env(&self) -> Vec<(String, String)> {
        exporter_env(&self.http_endpoint(), "http/protobuf")
    }

    /// A copy of every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.0.borrow().clone()
    }

    /// How many spans were received so far.
    pub fn count(&self) -> usize {
        self.store.0.borrow().len()
    }

    /// Forgets the spans received so far.
    pub fn clear(&self) {
        self.store.0.send_modify(Vec::clear);
    }

    /// Waits until the spans received satisfy `done` (checked now and after every export) and
    /// returns a copy of them; after `timeout`, fails with `what` and the spans received.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        match self.wait_until(timeout, done).await {
            Some(spans) => Ok(spans),
            None => anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}; received:\n{}",
                dump(&self.spans())
            ),
        }
    }

    /// [`Self::wait_for`] without the report: `None` after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Option<Vec<ReceivedSpan>> {
        let mut changes = self.store.0.subscribe();
        let waited = tokio::time::timeout(timeout, changes.wait_for(|spans| done(spans)))
            .await
            .map(|r| r.map(|spans| spans.clone()));
        // The sender lives as long as `self`: the inner error cannot happen.
        waited.ok().and_then(Result::ok)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_grpc.take() {
            let _ = stop.send(());
        }
        // The stop command is sent at once; its future only reports completion.
        drop(self.http_server.stop(false));
    }
}
