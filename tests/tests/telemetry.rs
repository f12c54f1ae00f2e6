//! Traces and metrics end to end: the real opctl, orchestrator and components on a real
//! nats-server export their spans to an OTLP receiver inside the test, and serve Prometheus
//! text at `/metrics`. A reconcile must be one trace from `opctl apply` through the component and
//! back to the orchestrator, linked across every process boundary.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use operator_tests::otlp::{descends_from, dump, in_trace, Kind, Protocol, ReceivedSpan};
use operator_tests::*;

const WAIT: Duration = Duration::from_secs(30);
/// How long spans may take to arrive once the work is done: a few batch delays.
const SPANS_WAIT: Duration = Duration::from_secs(20);
const COMMAND_SUBJECT: &str = "operator.demo.job.command";

/// An HTTP client with a fresh connection per request (the servers may close idle ones).
fn http_client() -> anyhow::Result<reqwest::Client> {
    operator_telemetry::install_tls_provider();
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?)
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// NATS, an orchestrator running components as processes, a jobs platform and opctl, every
/// process exporting its spans to `receiver` with `protocol`.
struct Traced {
    orchestrator: OrchestratorProcess,
    _nats: NatsServer,
    platform: Platform,
    client: async_nats::Client,
    opctl: Opctl,
    // Fields drop in order: the receiver last, so the processes' last exports still find it.
    receiver: OtlpReceiver,
}

impl Drop for Traced {
    fn drop(&mut self) {
        // SIGTERM while NATS still runs: the orchestrator stops the component it runs, which
        // would otherwise outlive it.
        let _ = self.orchestrator.terminate(WAIT);
    }
}

impl Traced {
    async fn start(protocol: Protocol) -> anyhow::Result<Self> {
        Self::start_with(protocol, &[]).await
    }

    /// The same with `extra` OTEL settings for every process.
    async fn start_with(protocol: Protocol, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let receiver = OtlpReceiver::start()?;
        let mut otel = match protocol {
            Protocol::Grpc => receiver.env(),
            Protocol::HttpProtobuf => receiver.http_env(),
        };
        for (key, value) in extra {
            otel.retain(|(k, _)| k != key);
            otel.push((key.to_string(), value.to_string()));
        }
        let nats = NatsServer::start()?;
        let mut env = as_refs(&otel);
        // The orchestrator runs the component: the OTLP settings must reach it from there.
        env.extend([
            ("ORCHESTRATOR_COMPONENT_RUNTIME", "process"),
            ("ORCHESTRATOR_RESTART_BACKOFF_MS", "100"),
            ("ORCHESTRATOR_STOP_GRACE_S", "5"),
        ]);
        let orchestrator = OrchestratorProcess::start_with_env(&nats.url(), &env)?;
        let client = nats.client().await?;
        let opctl = orchestrator.opctl().with_env(&otel);
        Ok(Self {
            orchestrator,
            _nats: nats,
            platform: Platform::start()?,
            client,
            opctl,
            receiver,
        })
    }

    /// The demo operator, its component run by the orchestrator from the built binary, with
    /// `extra` in its `environmentVars`.
    fn apply_demo_operator(&self, extra: &[(&str, &str)]) -> anyhow::Result<()> {
        let command = binary("demo-operator")?.display().to_string();
        let mut vars = format!(
            "      environmentVars:\n        DEMO_PLATFORM_URL: {}\n",
            self.platform.url
        );
        for (k, v) in extra {
            vars.push_str(&format!("        {k}: \"{v}\"\n"));
        }
        let manifest = example("demo-operator.yaml")
            .replace(
                "        - demo-operator\n",
                &format!("        - {command}\n"),
            )
            .replace("      environmentVars:\n", &vars);
        assert!(manifest.contains(&command), "the example changed shape");
        self.opctl.apply(&manifest, None)?;
        Ok(())
    }

    /// Applies demo job `name` through opctl, waits until it is reconciled and returns the
    /// spans of its apply.
    async fn apply_and_trace(&self, name: &str) -> anyhow::Result<Chain> {
        self.opctl
            .apply(&TestSystem::job(name, "{durationMs: 0}"), None)?;
        self.wait_succeeded(name).await?;
        wait_for_chain(&self.receiver, name).await
    }

    async fn wait_succeeded(&self, name: &str) -> anyhow::Result<()> {
        wait_for_resource(&self.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some("succeeded")
        })
        .await
        .with_context(|| format!("orchestrator log:\n{}", self.orchestrator.log()))?;
        Ok(())
    }
}

fn is_component(span: &ReceivedSpan) -> bool {
    !span.service.is_empty() && span.service != "opctl" && span.service != "orchestrator"
}

/// Whether one of the span's attributes is `key`'s entity key, in any spelling.
fn about(span: &ReceivedSpan, name: &str) -> bool {
    span.attributes
        .values()
        .any(|v| v == &format!("public/{name}") || v == &format!("public.{name}"))
}

/// One apply's spans, from opctl to the orchestrator's handling of the status event.
#[derive(Debug)]
struct Chain {
    opctl_root: ReceivedSpan,
    opctl_request: ReceivedSpan,
    http_server: ReceivedSpan,
    command_send: ReceivedSpan,
    command_process: ReceivedSpan,
    reconcile: ReceivedSpan,
    status_send: ReceivedSpan,
    status_process: ReceivedSpan,
}

/// Finds, among `spans`, the chain of the apply of resource `name`, or says which link is
/// missing.
fn find_chain(spans: &[ReceivedSpan], name: &str) -> Result<Chain, String> {
    // The component's first reconcile of the resource: the one the command caused.
    let reconciles: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| is_component(s) && s.name.contains("reconcile") && about(s, name))
        .collect();
    if reconciles.is_empty() {
        return Err(format!(
            "no component span named *reconcile* about public/{name}"
        ));
    }
    let mut last_error = String::new();
    for reconcile in reconciles {
        match chain_through(spans, reconcile) {
            Ok(chain) => return Ok(chain),
            Err(e) => last_error = format!("through reconcile span {}: {e}", reconcile.span_id),
        }
    }
    Err(last_error)
}

fn chain_through(spans: &[ReceivedSpan], reconcile: &ReceivedSpan) -> Result<Chain, String> {
    let trace = in_trace(spans, &reconcile.trace_id);
    let one = |what: &str, found: Option<&&ReceivedSpan>| {
        found
            .map(|s| (*s).clone())
            .ok_or_else(|| format!("no {what} in trace {}", reconcile.trace_id))
    };
    let opctl_root = one(
        "opctl root span",
        trace
            .iter()
            .find(|s| s.service == "opctl" && s.parent_span_id.is_none()),
    )?;
    let opctl_request = one(
        "opctl client span under its root",
        trace.iter().find(|s| {
            s.service == "opctl" && s.kind == Kind::Client && descends_from(spans, s, &opctl_root)
        }),
    )?;
    let http_server = one(
        "orchestrator server span, child of opctl's client span",
        trace.iter().find(|s| {
            s.service == "orchestrator" && s.kind == Kind::Server && s.is_child_of(&opctl_request)
        }),
    )?;
    let command_send = one(
        "orchestrator producer span for the command under the server span",
        trace.iter().find(|s| {
            s.service == "orchestrator"
                && s.kind == Kind::Producer
                && s.attr("messaging.destination.name") == Some(COMMAND_SUBJECT)
                && descends_from(spans, s, &http_server)
        }),
    )?;
    let command_process = one(
        "component consumer span, child of the orchestrator's send span",
        trace
            .iter()
            .find(|s| is_component(s) && s.kind == Kind::Consumer && s.is_child_of(&command_send)),
    )?;
    if !descends_from(spans, reconcile, &command_process) {
        return Err(format!(
            "the reconcile span {} does not descend from the component's process span {}",
            reconcile.span_id, command_process.span_id
        ));
    }
    let status_send = one(
        "component producer span (the status event) under the process span",
        trace.iter().find(|s| {
            is_component(s)
                && s.kind == Kind::Producer
                && descends_from(spans, s, &command_process)
                && spans.iter().any(|c| {
                    c.service == "orchestrator" && c.kind == Kind::Consumer && c.is_child_of(s)
                })
        }),
    )?;
    let status_process = one(
        "orchestrator consumer span, child of the component's send span",
        trace.iter().find(|s| {
            s.service == "orchestrator" && s.kind == Kind::Consumer && s.is_child_of(&status_send)
        }),
    )?;
    Ok(Chain {
        opctl_root,
        opctl_request,
        http_server,
        command_send,
        command_process,
        reconcile: reconcile.clone(),
        status_send,
        status_process,
    })
}

/// Waits for the chain of `name`'s apply; on failure says which link is missing and shows
/// every span received.
async fn wait_for_chain(receiver: &OtlpReceiver, name: &str) -> anyhow::Result<Chain> {
    let waited = receiver
        .wait_for(
            &format!("the trace of {name}'s apply"),
            SPANS_WAIT,
            |spans| find_chain(spans, name).is_ok(),
        )
        .await;
    match waited {
        Ok(spans) => find_chain(&spans, name).map_err(anyhow::Error::msg),
        Err(e) => {
            let spans = receiver.spans();
            let missing = find_chain(&spans, name).err().unwrap_or_default();
            bail!("{missing}\n{e}")
        }
    }
}

/// The libraries under the exporter (HTTP/2, gRPC) make spans of their own while they export;
/// exported in turn, those would feed the next export for ever.
const TRANSPORT_TARGETS: &[&str] = &["h2::", "hyper", "tonic", "tower", "reqwest"];

fn assert_no_transport_spans(spans: &[ReceivedSpan]) {
    let transport: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.attr("target")
                .or(s.attr("code.module.name"))
                .is_some_and(|t| TRANSPORT_TARGETS.iter().any(|p| t.starts_with(p)))
        })
        .collect();
    if let Some(first) = transport.first() {
        panic!(
            "{} of {} spans exported come from the exporter's transport ({} of them from {:?}), e.g. {first:?}",
            transport.len(),
            spans.len(),
            transport.iter().filter(|s| s.service == first.service).count(),
            first.service,
        );
    }
}

/// The messaging attributes of a NATS send or process span.
fn assert_messaging(span: &ReceivedSpan, spans: &[ReceivedSpan]) {
    let context = || format!("span {span:?}\n{}", dump(spans));
    assert_eq!(span.attr("messaging.system"), Some("nats"), "{}", context());
    let destination = span.attr("messaging.destination.name").unwrap_or_default();
    assert!(!destination.is_empty(), "{}", context());
    assert!(
        !span
            .attr("messaging.message.id")
            .unwrap_or_default()
            .is_empty(),
        "{}",
        context()
    );
    let verb = match span.kind {
        Kind::Producer => "send",
        Kind::Consumer => "process",
        _ => panic!("not a messaging span: {}", context()),
    };
    assert_eq!(span.name, format!("{verb} {destination}"), "{}", context());
}

#[tokio::test]
async fn one_apply_is_one_trace_from_opctl_through_the_component_and_back() -> anyhow::Result<()> {
    let system = Traced::start(Protocol::Grpc).await?;
    system.apply_demo_operator(&[])?;
    let chain = system.apply_and_trace("traced").await?;
    let spans = system.receiver.spans();
    let shown = || format!("{chain:#?}\n{}", dump(&spans));

    // One trace across the three services.
    let services: std::collections::BTreeSet<&str> = in_trace(&spans, &chain.reconcile.trace_id)
        .iter()
        .map(|s| s.service.as_str())
        .collect();
    assert!(
        services.contains("opctl") && services.contains("orchestrator"),
        "{}",
        shown()
    );
    assert!(services.len() >= 3, "no component service: {}", shown());

    // opctl: the command's root span, and the request it made.
    assert_eq!(chain.opctl_root.name, "opctl apply", "{}", shown());
    assert!(chain
        .opctl_request
        .attr("http.request.method")
        .is_some_and(|m| m == "PUT" || m == "POST"));
    // The orchestrator's API request, continued from opctl's `traceparent`.
    assert_eq!(
        chain.http_server.attr("http.request.method"),
        chain.opctl_request.attr("http.request.method"),
        "{}",
        shown()
    );
    assert_eq!(
        chain.http_server.attr("http.response.status_code"),
        Some("200"),
        "{}",
        shown()
    );

    // The command, from the orchestrator's send to the component's process: same message.
    for span in [
        &chain.command_send,
        &chain.command_process,
        &chain.status_send,
        &chain.status_process,
    ] {
        assert_messaging(span, &spans);
    }
    assert_eq!(
        chain.command_process.attr("messaging.destination.name"),
        Some(COMMAND_SUBJECT),
        "{}",
        shown()
    );
    assert_eq!(
        chain.command_send.attr("messaging.message.id"),
        chain.command_process.attr("messaging.message.id"),
        "{}",
        shown()
    );

    // The reconcile says what it reconciled.
    let reconcile = &chain.reconcile;
    assert_eq!(
        reconcile.attr("entity.key"),
        Some("public/traced"),
        "{}",
        shown()
    );
    assert_eq!(reconcile.attr("entity.type"), Some("job"), "{}", shown());
    assert_eq!(
        reconcile.attr("entity.generation"),
        Some("1"),
        "{}",
        shown()
    );

    // The status event, from the component's send to the orchestrator's process.
    let status_subject = chain
        .status_send
        .attr("messaging.destination.name")
        .unwrap_or_default();
    assert_ne!(status_subject, COMMAND_SUBJECT, "{}", shown());
    assert_eq!(
        chain.status_process.attr("messaging.destination.name"),
        Some(status_subject),
        "{}",
        shown()
    );
    assert_eq!(
        chain.status_send.attr("messaging.message.id"),
        chain.status_process.attr("messaging.message.id"),
        "{}",
        shown()
    );
    // Every span came over gRPC.
    assert!(spans.iter().all(|s| s.protocol == Protocol::Grpc));
    assert_no_transport_spans(&spans);
    Ok(())
}

#[tokio::test]
async fn spans_still_queued_are_flushed_when_the_processes_stop() -> anyhow::Result<()> {
    // A batch every 10 minutes: whatever arrives sooner was flushed by a process stopping.
    let mut system =
        Traced::start_with(Protocol::Grpc, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]).await?;
    system.apply_demo_operator(&[])?;
    system
        .opctl
        .apply(&TestSystem::job("flushed", "{durationMs: 0}"), None)?;
    system.wait_succeeded("flushed").await?;
    // opctl has exited: its spans are in. The daemons still hold theirs.
    let spans = system.receiver.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.service == "opctl" && s.name == "opctl apply"),
        "opctl did not flush its spans at exit:\n{}",
        dump(&spans)
    );
    assert!(
        spans.iter().all(|s| s.service == "opctl"),
        "spans exported before the batch delay:\n{}",
        dump(&spans)
    );

    // SIGTERM: the orchestrator stops its component (SIGTERM too), and each flushes.
    let status = system.orchestrator.terminate(WAIT)?;
    assert!(status.success(), "orchestrator exited with {status}");
    let chain = wait_for_chain(&system.receiver, "flushed").await?;
    assert_eq!(chain.opctl_root.trace_id, chain.status_process.trace_id);
    Ok(())
}

#[tokio::test]
async fn spans_exported_over_otlp_http_make_the_same_trace() -> anyhow::Result<()> {
    let system = Traced::start(Protocol::HttpProtobuf).await?;
    system.apply_demo_operator(&[])?;
    let chain = system.apply_and_trace("over-http").await?;
    let spans = system.receiver.spans();
    assert!(
        spans.iter().all(|s| s.protocol == Protocol::HttpProtobuf),
        "{}",
        dump(&spans)
    );
    assert_eq!(chain.opctl_root.trace_id, chain.status_process.trace_id);
    Ok(())
}

#[tokio::test]
async fn the_receiver_collects_spans_sent_over_grpc_and_http() -> anyhow::Result<()> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    let string = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let request = |name: &str, parent: Vec<u8>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "probe")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: if parent.is_empty() {
                        vec![2; 8]
                    } else {
                        vec![3; 8]
                    },
                    parent_span_id: parent,
                    name: name.into(),
                    kind: 4,
                    attributes: vec![
                        string("messaging.system", "nats"),
                        KeyValue {
                            key: "entity.generation".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::IntValue(7)),
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let receiver = OtlpReceiver::start()?;
    let mut grpc = TraceServiceClient::connect(receiver.grpc_endpoint()).await?;
    grpc.export(request("send a", Vec::new())).await?;
    let http = http_client()?
        .post(format!("{}/v1/traces", receiver.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(request("send b", vec![2; 8]).encode_to_vec())
        .send()
        .await?;
    assert!(http.status().is_success(), "{}", http.status());

    let spans = receiver
        .wait_for("both spans", Duration::from_secs(5), |s| s.len() == 2)
        .await?;
    let a = spans.iter().find(|s| s.name == "send a").context("a")?;
    let b = spans.iter().find(|s| s.name == "send b").context("b")?;
    assert_eq!(a.service, "probe");
    assert_eq!(a.trace_id, "01".repeat(16));
    assert_eq!(a.parent_span_id, None);
    assert_eq!(a.kind, Kind::Producer);
    assert_eq!(a.attr("messaging.system"), Some("nats"));
    assert_eq!(a.attr("entity.generation"), Some("7"));
    assert_eq!(a.protocol, Protocol::Grpc);
    assert!(b.is_child_of(a) && descends_from(&spans, b, a));
    assert_eq!(b.protocol, Protocol::HttpProtobuf);

    // A condition never met fails after its timeout, saying what it waited for.
    let error = receiver
        .wait_for("a third span", Duration::from_millis(200), |s| s.len() == 3)
        .await
        .err()
        .context("waiting for a third span succeeded")?;
    assert!(error.to_string().contains("a third span"), "{error}");
    assert!(error.to_string().contains("send b"), "{error}");
    Ok(())
}

/// The ADF operator against the stand-in: its calls to Azure are client spans of the reconcile.
#[tokio::test]
async fn the_adf_operators_calls_to_azure_are_client_spans_of_its_reconcile() -> anyhow::Result<()>
{
    const TENANT: &str = "00000000-0000-0000-0000-000000000001";
    const CLIENT: &str = "00000000-0000-0000-0000-000000000002";
    const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000003";
    const SECRET: &str = "replace-me";
    let receiver = OtlpReceiver::start()?;
    let otel = receiver.env();
    let nats = NatsServer::start()?;
    let orchestrator = OrchestratorProcess::start_with_env(&nats.url(), &as_refs(&otel))?;
    let client = nats.client().await?;
    let opctl = orchestrator.opctl().with_env(&otel);
    let standin = StandinProcess::start(&[
        ("ADF_STANDIN_TENANT_ID", TENANT),
        ("ADF_STANDIN_CLIENT_ID", CLIENT),
        ("ADF_STANDIN_CLIENT_SECRET", SECRET),
        ("ADF_STANDIN_SUBSCRIPTION_ID", SUBSCRIPTION),
        ("ADF_STANDIN_QUEUED_MS", "100"),
        ("ADF_STANDIN_RUN_MS", "500"),
    ])?;
    opctl.apply(&example("adf-secret.yaml"), Some("user-system"))?;
    opctl.apply(&example("adf-operator.yaml"), None)?;
    let state_file = tempfile::NamedTempFile::new()?.into_temp_path().keep()?;
    let state_file = state_file.to_string_lossy().into_owned();
    let wiring = seed_wiring_env();
    let mut env = as_refs(&wiring);
    env.extend([
        ("OPERATOR_STATE_STORE_TYPE", "memory"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION),
        ("AZURE_AUTHORITY_HOST", &standin.url),
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", &standin.url),
        ("ADF_POLL_MIN_MS", "100"),
        ("ADF_POLL_MAX_MS", "300"),
    ]);
    env.extend(as_refs(&otel));
    let _component = ComponentProcess::start_binary(
        "adf-operator",
        &["operator", "adf", "--electionStateFile", &state_file],
        &nats.url(),
        "adf-operator",
        &env,
    )?;

    opctl.apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    wait_for_resource(&client, "public", "pipeline-run-1", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await
    .with_context(|| format!("orchestrator log:\n{}", orchestrator.log()))?;

    // The reconcile the apply caused (in opctl's trace) made HTTP calls: the run's creation
    // among them, answered.
    let calls_of = |spans: &[ReceivedSpan]| -> Option<(ReceivedSpan, Vec<ReceivedSpan>)> {
        spans
            .iter()
            .filter(|r| {
                is_component(r) && r.name.contains("reconcile") && about(r, "pipeline-run-1")
            })
            .filter(|r| {
                spans
                    .iter()
                    .any(|s| s.service == "opctl" && s.trace_id == r.trace_id)
            })
            .find_map(|r| {
                let calls: Vec<ReceivedSpan> = spans
                    .iter()
                    .filter(|s| s.kind == Kind::Client && descends_from(spans, s, r))
                    .cloned()
                    .collect();
                let created = calls.iter().any(|c| {
                    c.attr("http.request.method") == Some("POST")
                        && c.attr("url.template")
                            .is_some_and(|t| t.contains("createRun"))
                        && c.attr("http.response.status_code") == Some("200")
                });
                created.then(|| (r.clone(), calls))
            })
    };
    let spans = receiver
        .wait_for(
            "a reconcile of pipeline-run-1 in opctl's trace with its createRun call",
            SPANS_WAIT,
            |spans| calls_of(spans).is_some(),
        )
        .await?;
    let (reconcile, calls) = calls_of(&spans).context("checked by the wait")?;
    for call in &calls {
        let shown = || format!("{call:?}\n{}", dump(&spans));
        assert!(is_component(call), "{}", shown());
        assert_eq!(call.trace_id, reconcile.trace_id);
        assert!(call.attr("http.request.method").is_some(), "{}", shown());
        let template = call.attr("url.template").unwrap_or_default();
        assert!(template.starts_with('/'), "{}", shown());
        // The template names the route, never the ids in it.
        assert!(!template.contains(SUBSCRIPTION), "{}", shown());
        let status: u16 = call
            .attr("http.response.status_code")
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        assert!((200..600).contains(&status), "{}", shown());
    }
    Ok(())
}

/// One Prometheus text exposition: (name, labels) → value.
fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while let Some((key, after)) = rest.split_once("=\"") {
                    let end = after.find('"').unwrap_or(after.len());
                    labels.insert(
                        key.trim_start_matches(',').trim().to_string(),
                        after[..end].to_string(),
                    );
                    rest = after.get(end + 1..).unwrap_or("");
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The sum of every series of `name` whose labels include `labels`; 0 when there is none.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn prometheus_text_is_read_by_name_and_labels() {
    let text = "# TYPE a_total counter\na_total{operator=\"demo\",type=\"job\",result=\"ok\"} 3\n\
                a_total{operator=\"demo\",type=\"job\",result=\"requeue\"} 2\n\
                a_total{operator=\"other\",type=\"job\",result=\"ok\"} 5\nb 1.5\n";
    assert_eq!(metric(text, "a_total", &[("operator", "demo")]), 5.0);
    assert_eq!(metric(text, "a_total", &[("result", "ok")]), 8.0);
    assert_eq!(metric(text, "b", &[]), 1.5);
    assert_eq!(metric(text, "c", &[]), 0.0);
}

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = http.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        content_type.starts_with("text/plain"),
        "{url}: {content_type}"
    );
    Ok(response.text().await?)
}

#[tokio::test]
async fn the_orchestrators_and_the_components_metrics_count_what_they_did() -> anyhow::Result<()> {
    let system = Traced::start(Protocol::Grpc).await?;
    // The component picks its own port (0) and says which in its log, read as it is written.
    system.apply_demo_operator(&[("METRIC_PORT", "0")])?;
    let log = Following::start(&system.opctl, &["logs", "-n", "demo", "-f"])?;
    let serving = log.stdout_line(|line| line.contains("serving metrics at /metrics"))?;
    drop(log);
    let metric_port: u16 = serving
        .split("0.0.0.0:")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .with_context(|| format!("no port in {serving:?}"))?;
    let http = http_client()?;
    // The orchestrator's /metrics, like its API, asks for a key.
    let admin = operator_tests::process::admin_http_client()?;
    let orchestrator_url = format!("{}/metrics", system.orchestrator.url());
    let component_url = format!("http://127.0.0.1:{metric_port}/metrics");
    let component_before = scrape(&http, &component_url).await?;
    let orchestrator_before = scrape(&admin, &orchestrator_url).await?;

    let names = ["counted-1", "counted-2", "counted-3"];
    let all: Vec<String> = names
        .iter()
        .map(|n| TestSystem::job(n, "{durationMs: 0}"))
        .collect();
    system.opctl.apply(&all.join("---\n"), None)?;
    for name in names {
        system.wait_succeeded(name).await?;
    }
    let n = names.len() as f64;
    let job = [("operator", "demo"), ("type", "job")];

    // The component counts a reconcile once it has ended, after its status event went out:
    // its counters may move a moment after the orchestrator has stored the status.
    let component_checks = |after: &str| -> Result<(), String> {
        let moved = |name: &str, labels: &[(&str, &str)]| {
            metric(after, name, labels) - metric(&component_before, name, labels)
        };
        let reconciled = moved("operator_reconciles_total", &job);
        check(
            reconciled >= n,
            format!("operator_reconciles_total moved by {reconciled}, not {n}"),
        )?;
        let ok = moved(
            "operator_reconciles_total",
            &[("operator", "demo"), ("type", "job"), ("result", "ok")],
        ) + moved(
            "operator_reconciles_total",
            &[("operator", "demo"), ("type", "job"), ("result", "requeue")],
        );
        check(
            ok >= n,
            format!("successful reconciles moved by {ok}, not {n}"),
        )?;
        let timed = moved("operator_reconcile_duration_seconds_count", &job);
        check(
            timed == reconciled,
            format!("{timed} reconcile durations recorded for {reconciled} reconciles"),
        )?;
        let applied = moved(
            "operator_commands_total",
            &[
                ("operator", "demo"),
                ("type", "job"),
                ("outcome", "applied"),
            ],
        );
        check(
            applied == n,
            format!("operator_commands_total{{outcome=applied}} moved by {applied}, not {n}"),
        )?;
        let events = moved("operator_status_events_total", &job);
        check(
            events >= n,
            format!("operator_status_events_total moved by {events}"),
        )?;
        let depth = metric(after, "operator_work_queue_depth", &[("operator", "demo")]);
        check(
            depth == 0.0,
            format!("operator_work_queue_depth is {depth}"),
        )
    };
    scrape_until(&http, &component_url, &component_before, component_checks).await?;

    // The orchestrator: the commands it published, the status events it took in, the API
    // requests, and the resources by state.
    let orchestrator_checks = |after: &str| -> Result<(), String> {
        let moved = |name: &str, labels: &[(&str, &str)]| {
            metric(after, name, labels) - metric(&orchestrator_before, name, labels)
        };
        let published = moved("orchestrator_commands_published_total", &job);
        check(
            published >= n,
            format!("orchestrator_commands_published_total moved by {published}"),
        )?;
        let received = moved("orchestrator_status_events_total", &job);
        check(
            received >= n,
            format!("orchestrator_status_events_total moved by {received}"),
        )?;
        let requests = moved("orchestrator_http_requests_total", &[]);
        check(
            requests >= 1.0,
            format!("orchestrator_http_requests_total moved by {requests}"),
        )?;
        let succeeded = metric(
            after,
            "orchestrator_entities",
            &[
                ("operator", "demo"),
                ("type", "job"),
                ("status", "active"),
                ("runtime", "succeeded"),
            ],
        );
        check(
            succeeded == n,
            format!("orchestrator_entities{{runtime=succeeded}} is {succeeded}, not {n}"),
        )
    };
    scrape_until(
        &admin,
        &orchestrator_url,
        &orchestrator_before,
        orchestrator_checks,
    )
    .await?;
    Ok(())
}

fn check(ok: bool, failure: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(failure)
    }
}

/// Scrapes `url` until its text passes `checks`; after a bounded wait, fails with the last
/// check's failure and both texts.
async fn scrape_until(
    http: &reqwest::Client,
    url: &str,
    before: &str,
    checks: impl Fn(&str) -> Result<(), String>,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = scrape(http, url).await?;
        match checks(&after) {
            Ok(()) => return Ok(after),
            Err(failure) if tokio::time::Instant::now() > deadline => {
                bail!("{url}: {failure}\nbefore:\n{before}\nafter:\n{after}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
