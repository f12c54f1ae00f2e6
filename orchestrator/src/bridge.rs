//! `NatsBridge`: one per operator runtime, the runtime's only door to NATS. It owns the
//! operator's streams, publishes commands (de-duplicated by envelope id), sends queries by
//! request/reply, and feeds status events from the operator's event stream to the runtime,
//! acknowledging each only after the runtime has stored it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use operator_contract::envelope::MSG_ID_HEADER;
use operator_contract::subject::{self, TypeSubjects};
use operator_contract::{Envelope, EnvelopeKind, Operation};
use operator_nats_cluster::{apply_replication, replicas_to_keep};
use operator_telemetry::{extract_nats, inject_nats};
use tracing::{debug, info, info_span, warn, Instrument, Span};

use crate::error::ControlError;
use crate::history::{History, HistoryWriter};

/// How many status events are applied at once.
const EVENTS_IN_FLIGHT: usize = 256;
/// How long the orchestrator has to apply a status event before JetStream redelivers it. An
/// event whose acknowledgement was lost (its NATS node killed or cut off) waits this long, so it
/// is short; applying a status twice is harmless (the second is stale and only acknowledged).
const EVENT_ACK_WAIT: Duration = Duration::from_secs(5);

/// The streams an operator needs, derived from its resource types' subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    pub operator: String,
    /// Command stream name → the command subjects it captures.
    pub command_streams: BTreeMap<String, Vec<String>>,
    /// Every reply subject, captured by the operator's event stream.
    pub reply_subjects: Vec<String>,
    /// The replication factor of the streams (never lowered on an existing stream).
    pub replicas: usize,
}

impl StreamPlan {
    /// The plan for an operator's resource types.
    pub fn new<'a>(operator: &str, types: impl Iterator<Item = &'a TypeSubjects>) -> Self {
        let mut command_streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut reply_subjects = Vec::new();
        for t in types {
            let subjects = command_streams.entry(t.command_stream.clone()).or_default();
            if !subjects.contains(&t.command_subject) {
                subjects.push(t.command_subject.clone());
            }
            if !reply_subjects.contains(&t.reply_subject) {
                reply_subjects.push(t.reply_subject.clone());
            }
        }
        Self {
            operator: operator.to_string(),
            command_streams,
            reply_subjects,
            replicas: 1,
        }
    }
}

/// Creates or updates the operator's command and event streams. Called before an operator's
/// apply is acknowledged, so components can consume as soon as it is.
pub async fn ensure_streams(
    js: &jetstream::Context,
    plan: &StreamPlan,
) -> Result<(), ControlError> {
    let streams = plan
        .command_streams
        .iter()
        .map(|(name, subjects)| (name.clone(), subjects.clone()))
        .chain(std::iter::once((
            subject::event_stream(&plan.operator),
            plan.reply_subjects.clone(),
        )));
    for (name, subjects) in streams {
        let mut config = stream::Config {
            name: name.clone(),
            subjects,
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let replicas = replicas_to_keep(js, &name, plan.replicas).await;
        apply_replication(&mut config, replicas);
        js.create_or_update_stream(config)
            .await
            .map_err(|e| ControlError::Invalid {
                reason: format!(
                    "cannot create stream {name} for operator {}: {e}",
                    plan.operator
                ),
                details: vec!["two operators may not share a subject or a stream".into()],
            })?;
    }
    Ok(())
}

/// Deletes the operator's streams when the operator is deleted.
async fn remove_streams(js: &jetstream::Context, plan: &StreamPlan) {
    let names = plan
        .command_streams
        .keys()
        .cloned()
        .chain(std::iter::once(subject::event_stream(&plan.operator)));
    for name in names {
        if let Err(e) = js.delete_stream(&name).await {
            warn!(stream = %name, error = %e, "stream not deleted");
        }
    }
}

/// A status event from a component, for the runtime to apply and store.
#[derive(Message)]
#[rtype(result = "Result<(), ControlError>")]
pub struct StatusReported {
    pub envelope: Envelope,
    /// The `process` span of the event, continuing the component's trace.
    pub span: Span,
}

/// Publish a command on its stream and wait for JetStream's acknowledgement.
#[derive(Message)]
#[rtype(result = "Result<(), ControlError>")]
pub struct PublishCommand {
    pub subject: String,
    pub envelope: Envelope,
    /// What the command is sent for (an API request's span, or none for a resend).
    pub parent: Span,
}

/// Ask the operator's components about one entity.
#[derive(Message)]
#[rtype(result = "Result<Envelope, ControlError>")]
pub struct SendQuery {
    pub subject: String,
    pub envelope: Envelope,
    /// What the query is asked for.
    pub parent: Span,
}

/// The operator was deleted: stop consuming and delete its streams.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveStreams {
    pub plan: StreamPlan,
}

/// Where a runtime and its entities send what is meant for the operator's components: its
/// [`NatsBridge`] in the daemon, a test's actor in the actors' tests.
#[derive(Clone)]
pub struct ComponentLink {
    pub commands: Recipient<PublishCommand>,
    pub queries: Recipient<SendQuery>,
    pub streams: Recipient<RemoveStreams>,
}

impl ComponentLink {
    /// The link through a started bridge.
    pub fn through(bridge: Addr<NatsBridge>) -> Self {
        Self {
            commands: bridge.clone().recipient(),
            queries: bridge.clone().recipient(),
            streams: bridge.recipient(),
        }
    }
}

/// Starts what links a runtime to its components, given the operator's streams and where status
/// events go.
pub type ConnectComponents =
    Arc<dyn Fn(&StreamPlan, Recipient<StatusReported>) -> ComponentLink + Send + Sync>;

/// How runtimes reach their operators' components, and where their entities keep history.
#[derive(Clone)]
pub enum ComponentTransport {
    /// Through NATS: each runtime starts a [`NatsBridge`]; history goes to its stream.
    Nats(async_nats::Client),
    /// Through what `connect` starts, with history kept in memory (the actors' tests).
    Custom {
        connect: ConnectComponents,
        history: HistoryWriter,
    },
}

impl ComponentTransport {
    /// Links a runtime to its operator's components.
    pub fn connect(
        &self,
        plan: &StreamPlan,
        events: Recipient<StatusReported>,
        query_timeout: Duration,
    ) -> (ComponentLink, HistoryWriter) {
        match self {
            Self::Nats(client) => {
                let bridge = NatsBridge::new(plan.clone(), client.clone(), events, query_timeout);
                let history =
                    HistoryWriter::Stream(Arc::new(History::new(jetstream::new(client.clone()))));
                (ComponentLink::through(bridge.start()), history)
            }
            Self::Custom { connect, history } => (connect(plan, events), history.clone()),
        }
    }
}

/// The bridge actor.
pub struct NatsBridge {
    operator: String,
    /// The streams to (re)create when the bridge starts, e.g. after a restore.
    plan: StreamPlan,
    client: async_nats::Client,
    js: jetstream::Context,
    events: Recipient<StatusReported>,
    query_timeout: Duration,
    consumer_task: Option<tokio::task::JoinHandle<()>>,
}

impl NatsBridge {
    pub fn new(
        plan: StreamPlan,
        client: async_nats::Client,
        events: Recipient<StatusReported>,
        query_timeout: Duration,
    ) -> Self {
        Self {
            operator: plan.operator.clone(),
            plan,
            js: jetstream::new(client.clone()),
            client,
            events,
            query_timeout,
            consumer_task: None,
        }
    }
}

impl Actor for NatsBridge {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let (js, plan, events) = (self.js.clone(), self.plan.clone(), self.events.clone());
        self.consumer_task = Some(tokio::spawn(consume_events(js, plan, events)));
        info!(operator = %self.operator, "bridge started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(task) = self.consumer_task.take() {
            task.abort();
        }
    }
}

/// Makes sure the operator's streams exist (they may have been lost with a NATS store), then
/// reads its event stream for as long as the bridge lives, re-attaching after errors.
async fn consume_events(
    js: jetstream::Context,
    plan: StreamPlan,
    events: Recipient<StatusReported>,
) {
    let stream_name = subject::event_stream(&plan.operator);
    let durable = subject::event_consumer(&plan.operator);
    let mut take_over = true;
    // Looked up (or made) once, and again only when it went away: pulling again after a lost
    // pull needs no JetStream API call, which would time out until the consumer has a leader.
    let mut known_consumer: Option<consumer::PullConsumer> = None;
    loop {
        let lookup = async {
            ensure_streams(&js, &plan)
                .await
                .map_err(|e| e.to_string())?;
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            if take_over {
                // A previous orchestrator that died holding events it had pulled but not
                // acknowledged leaves them to the ack wait; the work-queue stream keeps them,
                // and a new consumer delivers them at once.
                match stream.delete_consumer(&durable).await {
                    Ok(_) => {
                        info!(consumer = %durable, "event consumer replaced: unacknowledged events are redelivered now")
                    }
                    Err(e) => {
                        debug!(consumer = %durable, error = %e, "event consumer not deleted (perhaps absent)")
                    }
                }
            }
            let consumer = stream
                .get_or_create_consumer(
                    &durable,
                    consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: EVENT_ACK_WAIT,
                        max_ack_pending: (EVENTS_IN_FLIGHT * 4) as i64,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(consumer)
        };
        let attach = async {
            let consumer = match known_consumer.take() {
                Some(consumer) => consumer,
                None => lookup.await?,
            };
            let messages = consumer
                .stream()
                .expires(operator_nats_cluster::PULL_EXPIRES)
                .heartbeat(operator_nats_cluster::PULL_HEARTBEAT)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((consumer, messages))
        };
        match attach.await {
            Ok((consumer, messages)) => {
                take_over = false;
                let mut look_up_again = false;
                // Read until the stream can deliver nothing more, then attach again: a consumer
                // just replaced on a cluster answers no responders until it has a leader.
                messages
                    .take_while(|message| {
                        let go_on = match message {
                            Err(e) if operator_nats_cluster::must_reattach(e) => {
                                warn!(error = %e, "event stream ended; attaching again");
                                look_up_again = !operator_nats_cluster::only_the_pull_lost(e);
                                false
                            }
                            Err(e) => {
                                warn!(error = %e, "event stream error");
                                true
                            }
                            Ok(_) => true,
                        };
                        futures::future::ready(go_on)
                    })
                    .for_each_concurrent(EVENTS_IN_FLIGHT, |message| {
                        let events = events.clone();
                        async move {
                            if let Ok(message) = message {
                                apply_event(message, &events).await;
                            }
                        }
                    })
                    .await;
                if !look_up_again {
                    known_consumer = Some(consumer);
                }
            }
            Err(e) => warn!(stream = %stream_name, error = %e, "cannot attach to event stream"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn apply_event(message: jetstream::Message, events: &Recipient<StatusReported>) {
    let envelope = match Envelope::decode(&message.payload) {
        Ok(e) if e.kind == EnvelopeKind::Event && e.operation == Operation::Status => e,
        Ok(e) => {
            warn!(kind = ?e.kind, operation = ?e.operation, "not a status event; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, subject = %message.subject, "malformed event; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let key = envelope.key.clone();
    let span = info_span!(
        "nats.process",
        otel.name = %format!("process {}", message.subject),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %message.subject,
        messaging.message.id = %envelope.id,
        operator = %envelope.operator,
        entity.type = %envelope.resource_type,
        entity.key = %envelope.key,
        entity.generation = envelope.generation,
    );
    extract_nats(message.headers.as_ref(), &span);
    metrics::counter!(
        crate::metrics::STATUS_EVENTS,
        "operator" => envelope.operator.clone(),
        "type" => envelope.resource_type.clone(),
    )
    .increment(1);
    let sent = events.send(StatusReported {
        envelope,
        span: span.clone(),
    });
    match sent.instrument(span).await {
        Ok(Ok(())) => {
            if let Err(e) = message.ack().await {
                warn!(entity.key = %key, error = %e, "event ack failed; it will be redelivered");
            }
        }
        Ok(Err(e)) => {
            warn!(entity.key = %key, error = %e, "status not stored; retrying");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                .await;
        }
        Err(_) => debug!(entity.key = %key, "runtime gone; event left for redelivery"),
    }
}

impl Handler<PublishCommand> for NatsBridge {
    type Result = ResponseFuture<Result<(), ControlError>>;

    fn handle(&mut self, msg: PublishCommand, _ctx: &mut Self::Context) -> Self::Result {
        let js = self.js.clone();
        let span = info_span!(
            parent: &msg.parent,
            "nats.send",
            otel.name = %format!("send {}", msg.subject),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %msg.subject,
            messaging.message.id = %msg.envelope.id,
            operator = %msg.envelope.operator,
            entity.type = %msg.envelope.resource_type,
            entity.key = %msg.envelope.key,
            entity.generation = msg.envelope.generation,
        );
        let labels = [
            ("operator", msg.envelope.operator.clone()),
            ("type", msg.envelope.resource_type.clone()),
        ];
        let send_span = span.clone();
        let publish = async move {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID_HEADER, msg.envelope.id.to_string().as_str());
            inject_nats(&mut headers, &send_span);
            let ack = js
                .publish_with_headers(msg.subject.clone(), headers, msg.envelope.encode().into())
                .await
                .map_err(|e| {
                    ControlError::Unavailable(format!("publish to {} failed: {e}", msg.subject))
                })?;
            ack.await.map_err(|e| {
                ControlError::Unavailable(format!("no ack from stream for {}: {e}", msg.subject))
            })?;
            Ok(())
        };
        Box::pin(
            async move {
                let result = publish.await;
                match &result {
                    Ok(()) => {
                        metrics::counter!(crate::metrics::COMMANDS_PUBLISHED, &labels).increment(1)
                    }
                    Err(_) => {
                        Span::current().record("otel.status_code", "ERROR");
                        metrics::counter!(crate::metrics::COMMAND_PUBLISH_FAILURES, &labels)
                            .increment(1);
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

impl Handler<SendQuery> for NatsBridge {
    type Result = ResponseFuture<Result<Envelope, ControlError>>;

    fn handle(&mut self, msg: SendQuery, _ctx: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        let timeout = self.query_timeout;
        let span = info_span!(
            parent: &msg.parent,
            "nats.send",
            otel.name = %format!("send {}", msg.subject),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %msg.subject,
            messaging.message.id = %msg.envelope.id,
            entity.key = %msg.envelope.key,
        );
        let request_span = span.clone();
        Box::pin(
            async move {
                let mut headers = HeaderMap::new();
                inject_nats(&mut headers, &request_span);
                let request = async_nats::Request::new()
                    .headers(headers)
                    .payload(msg.envelope.encode().into())
                    .timeout(Some(timeout));
                let reply = client
                    .send_request(msg.subject.clone(), request)
                    .await
                    .map_err(|e| {
                        use async_nats::client::RequestErrorKind;
                        ControlError::Unavailable(match e.kind() {
                            RequestErrorKind::NoResponders => format!(
                            "no component is listening on {}; is the operator's component running?",
                            msg.subject
                        ),
                            RequestErrorKind::TimedOut => format!(
                                "no component answered on {} within {} ms",
                                msg.subject,
                                timeout.as_millis()
                            ),
                            _ => format!("query on {} failed: {e}", msg.subject),
                        })
                    })?;
                Envelope::decode(&reply.payload).map_err(|e| {
                    ControlError::Unavailable(format!("component sent a bad reply: {e}"))
                })
            }
            .instrument(span),
        )
    }
}

impl Handler<RemoveStreams> for NatsBridge {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RemoveStreams, ctx: &mut Self::Context) -> Self::Result {
        if let Some(task) = self.consumer_task.take() {
            task.abort();
        }
        ctx.stop();
        let js = self.js.clone();
        Box::pin(async move { remove_streams(&js, &msg.plan).await })
    }
}
