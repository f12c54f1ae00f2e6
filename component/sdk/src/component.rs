//! `Component`: the entry point. It connects to NATS (retrying), refuses servers older than
//! 2.10 (2.11 when replicated), waits for the command stream, joins the leader election when
//! `ELECTION_CLUSTER_NAME` is set, opens the store, starts the controller actor (which consumes
//! commands while it leads) and the query responder, and shuts them down in order on
//! SIGTERM/SIGINT — the lease last, at once, so the next leader need not wait for its TTL.
//! With `METRIC_PORT` it serves its metrics (see [`crate::metrics`]) from the start.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use async_nats::jetstream;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use operator_contract::election::server_enforces_fencing;
use operator_contract::version::check_nats_server_version;
use operator_nats_cluster::replicas_for;
use operator_telemetry::{self as telemetry, TelemetryError};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::bridge::{self, BridgeError, CommandFeed};
use crate::config::{
    ComponentConfig, ConfigError, Settings, StateStoreType, JETSTREAM_REPLICAS_ENV,
};
use crate::controller::messages::Drain;
use crate::controller::ControllerActor;
use crate::election::{ElectionError, Fence, LeaderElection, PublishDetails, Resign};
use crate::events::EventPublisher;
use crate::handler::{DefaultMessageHandler, MessageHandler};
use crate::metrics::endpoint::{MetricsEndpoint, MetricsEndpointError};
use crate::metrics::ComponentMetrics;
use crate::operator_details::OperatorDetails;
use crate::reconciler::Reconciler;
use crate::store::{EntityStore, KvStore, MemoryStore, StoreError};

/// Delays between attempts to reach NATS or find the command stream.
const STARTUP_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// How long the NATS tasks get to stop at shutdown.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last flush of outgoing NATS messages may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a component stopped with an error.
#[derive(Debug, Error)]
pub enum ComponentError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Logs or span export could not be set up.
    #[error("cannot set up telemetry: {0}")]
    Telemetry(TelemetryError),
    /// The metrics endpoint could not listen (the port is taken, say).
    #[error(transparent)]
    Metrics(#[from] MetricsEndpointError),
    /// `serve` was called outside an actix System.
    #[error("Component::serve must run inside an actix System (Component::run sets one up)")]
    NoActixSystem,
    /// The NATS server is too old or its version unreadable.
    #[error("{0}")]
    NatsServer(String),
    /// The entity store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command consumer or the query subscription could not be set up.
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    /// The leader election could not start.
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// A NATS task ended while the component was running.
    #[error("{0} stopped unexpectedly")]
    TaskStopped(&'static str),
}

// A manual conversion: the message already includes the cause, so it is not also a `source`.
impl From<ConfigError> for ComponentError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// A component: a [`Reconciler`] plus everything around it.
///
/// ```no_run
/// # use operator_sdk::prelude::*;
/// # struct MyReconciler;
/// # impl Reconciler for MyReconciler {
/// #     fn id(&self) -> &str { "mine" }
/// #     async fn reconcile(&self, _: ReconcileRequest, _: ReconcileContext)
/// #         -> Result<ReconcileResult, ReconcileError> { Ok(ReconcileResult::await_change()) }
/// # }
/// let config = ComponentConfig::for_operator("demo");
/// Component::new(config, MyReconciler).run()?;
/// # Ok::<(), ComponentError>(())
/// ```
pub struct Component<R: Reconciler> {
    config: ComponentConfig,
    reconciler: R,
    handler: Box<dyn MessageHandler>,
    backoff: Backoff,
    drain_timeout: Duration,
    details: Option<OperatorDetails>,
}

/// Runs `reconciler` as a component with `config` until SIGTERM or SIGINT; see
/// [`Component::run`].
pub fn run<R: Reconciler>(config: ComponentConfig, reconciler: R) -> Result<(), ComponentError> {
    Component::new(config, reconciler).run()
}

impl<R: Reconciler> Component<R> {
    /// A component with the default message handler and backoff.
    pub fn new(config: ComponentConfig, reconciler: R) -> Self {
        Self {
            config,
            reconciler,
            handler: Box::new(DefaultMessageHandler),
            backoff: Backoff::default(),
            drain_timeout: Duration::from_secs(10),
            details: None,
        }
    }

    /// Publishes `details` (what the operator says of itself beyond its resources) with each
    /// heartbeat of an elected replica, for `opctl get -t operator -n NAME -d`; a component
    /// without `ELECTION_CLUSTER_NAME` does not heartbeat, so it publishes nothing.
    pub fn with_operator_details(mut self, details: OperatorDetails) -> Self {
        self.details = Some(details);
        self
    }

    /// Replaces the [`DefaultMessageHandler`].
    pub fn with_handler(mut self, handler: impl MessageHandler) -> Self {
        self.handler = Box::new(handler);
        self
    }

    /// Replaces the backoff of retried reconciles (250 ms doubling up to 30 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long running reconciles get to finish at shutdown (10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets up an actix System on a multi-thread tokio runtime and telemetry (logs, and span
    /// export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, under the operator's name unless
    /// `OTEL_SERVICE_NAME` is set), then serves until SIGTERM or SIGINT and flushes the spans.
    pub fn run(self) -> Result<(), ComponentError> {
        self.config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(ComponentError::Runtime)?;
        let service = self.service_name();
        let level = self.config.log_level.clone();
        actix::System::with_tokio_rt(move || runtime).block_on(async move {
            // The gRPC span exporter needs the runtime: set up inside it.
            let telemetry = telemetry::init(&service, &level).map_err(ComponentError::Telemetry)?;
            let served = self.serve(termination()).await;
            // Flushing blocks on the exporter, which needs the runtime still running.
            if tokio::task::spawn_blocking(move || telemetry.shutdown())
                .await
                .is_err()
            {
                eprintln!("telemetry: the flush at shutdown did not finish");
            }
            served
        })
    }

    /// The name spans are exported under by default: the operator's, else the binary's.
    fn service_name(&self) -> String {
        let operator = self.config.operator_name.trim();
        if !operator.is_empty() {
            return operator.to_string();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "operator-component".into())
    }

    /// Serves until `shutdown` resolves, then stops consuming, lets running reconciles finish
    /// and flushes the store. Must run inside an actix System.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> Result<(), ComponentError> {
        let settings = self.config.settings()?;
        if actix::System::try_current().is_none() {
            return Err(ComponentError::NoActixSystem);
        }
        let shutdown: Shared<LocalBoxFuture<'static, ()>> = shutdown.boxed_local().shared();
        let metrics = ComponentMetrics::new(&settings.operator);
        telemetry::metrics_handle();
        metrics.register();
        // Up before NATS is reached, so a scrape tells "running, waiting" from "down"; stopped
        // when `serve` returns.
        let _metrics_endpoint = self
            .config
            .metric_port
            .map(MetricsEndpoint::start)
            .transpose()?;
        info!(
            operator = %settings.operator,
            reconciler = self.reconciler.id(),
            nats_url = %settings.nats_url,
            "component starting"
        );

        let Some(client) = until(&shutdown, connect(&settings, &metrics)).await else {
            return Ok(());
        };
        let version = client.server_info().version;
        check_nats_server_version(&version).map_err(ComponentError::NatsServer)?;
        info!(server_version = %version, "connected to NATS");
        let replicas = replicas_for(&client, settings.jetstream_replicas).map_err(|e| {
            ComponentError::Config(ConfigError::new(JETSTREAM_REPLICAS_ENV, e.to_string()))
        })?;
        let js = jetstream::new(client.clone());

        let Some(stream) = until(&shutdown, wait_for_stream(&js, &settings.command_stream)).await
        else {
            return Ok(());
        };
        let consumer_config = bridge::consumer_config(&settings.consumer, settings.durable);
        let (election, fence) =
            attach(&settings, &js, &stream, &consumer_config, version, replicas).await?;
        match (&election, &self.details) {
            (Some((addr, _)), Some(details)) => addr.do_send(PublishDetails(details.subscribe())),
            (None, Some(_)) => info!(
                "operator details are not published: only elected components heartbeat ({} is not set)",
                operator_contract::env::ELECTION_CLUSTER_NAME_ENV
            ),
            _ => {}
        }
        let (store, store_events) = match settings.store_type {
            StateStoreType::Memory => (EntityStore::Memory(MemoryStore::default()), None),
            StateStoreType::JetStreamKv => {
                let (store, events) =
                    KvStore::open(&js, &settings.store_bucket, replicas, fence.clone()).await?;
                (EntityStore::JetStreamKv(Box::new(store)), events)
            }
        };
        // Replicated, every replica answers every query and the first answer wins, so a paused
        // replica cannot make a query wait for its timeout.
        let group = election.is_none().then_some(settings.consumer.as_str());
        let subscriber = bridge::subscribe_queries(&client, &settings.query_subject, group).await?;

        let (stop, stopped) = watch::channel(false);
        let events = EventPublisher::jetstream(
            js.clone(),
            settings.reply_subject.clone(),
            stopped.clone(),
            metrics.clone(),
        );
        let feed = CommandFeed {
            js: js.clone(),
            stream: settings.command_stream.clone(),
            config: consumer_config,
            metrics: metrics.clone(),
        };
        let mut controller = ControllerActor::new(
            store,
            self.handler,
            Arc::new(self.reconciler),
            settings.max_workers,
            self.backoff,
            events,
            metrics,
        )
        .with_commands(feed)
        .with_resync(settings.resync_interval);
        if let Some((addr, replica)) = &election {
            controller = controller.with_election(
                addr.clone(),
                fence.clone(),
                replica.clone(),
                store_events,
            );
        }
        let controller = controller.start();

        let mut queries = tokio::spawn(bridge::answer_queries(
            client.clone(),
            subscriber,
            controller.clone(),
            stopped,
        ));
        info!(
            operator = %settings.operator,
            stream = %settings.command_stream,
            consumer = %settings.consumer,
            query_subject = %settings.query_subject,
            reply_subject = %settings.reply_subject,
            max_workers = settings.max_workers,
            elected = election.is_some(),
            "component running"
        );

        let mut failure = None;
        tokio::select! {
            _ = shutdown.clone() => info!("shutdown requested"),
            _ = &mut queries => failure = Some(ComponentError::TaskStopped("the query responder")),
        }
        if let Some(e) = &failure {
            error!(error = %e, "component stopping");
        }

        Stopping {
            client,
            controller,
            queries,
            stop,
            election,
        }
        .stop(self.drain_timeout)
        .await;
        info!("component stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Attaches to the command stream: alone at once (so a bad consumer stops the component
/// here), or replicated through the leader election, whose fence guards every store write.
async fn attach(
    settings: &Settings,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    consumer_config: &jetstream::consumer::pull::Config,
    version: String,
    replicas: usize,
) -> Result<(Option<(actix::Addr<LeaderElection>, String)>, Fence), ComponentError> {
    match &settings.election {
        None => {
            stream
                .get_or_create_consumer(&settings.consumer, consumer_config.clone())
                .await
                .map_err(|e| BridgeError::Consumer {
                    stream: settings.command_stream.clone(),
                    consumer: settings.consumer.clone(),
                    reason: e.to_string(),
                })?;
            Ok((None, Fence::unelected()))
        }
        Some(election) => {
            if !server_enforces_fencing(&version) {
                return Err(ElectionError::ServerTooOld { version }.into());
            }
            let (addr, fence) = LeaderElection::start(js, election.clone(), replicas).await?;
            Ok((Some((addr, election.replica.clone())), fence))
        }
    }
}

/// What a serving component stops at shutdown, in order.
struct Stopping {
    client: async_nats::Client,
    controller: actix::Addr<ControllerActor>,
    queries: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    election: Option<(actix::Addr<LeaderElection>, String)>,
}

impl Stopping {
    /// The query responder first, then the controller (it stops consuming, lets running
    /// reconciles finish for up to `drain_timeout` and flushes the store), then the lease, then
    /// NATS's outgoing buffer.
    async fn stop(self, drain_timeout: Duration) {
        let Self {
            client,
            controller,
            queries,
            stop,
            election,
        } = self;
        let _ = stop.send(true);
        if tokio::time::timeout(TASK_STOP_TIMEOUT, queries)
            .await
            .is_err()
        {
            warn!(task = "queries", "task did not stop in time");
        }
        // The controller stops consuming, lets running reconciles finish and flushes the store;
        // only then is the lease given up, so the next leader starts after the last write.
        let (done, drained) = oneshot::channel();
        controller.do_send(Drain { done });
        match tokio::time::timeout(drain_timeout, drained).await {
            Ok(Ok(flush)) => match tokio::time::timeout(TASK_STOP_TIMEOUT, flush.wait()).await {
                Ok(Ok(())) => debug!("store flushed"),
                Ok(Err(e)) => warn!(error = %e, "store not flushed"),
                Err(_) => warn!("store flush timed out"),
            },
            Ok(Err(_)) => warn!("controller stopped before draining"),
            Err(_) => warn!(
                timeout_ms = drain_timeout.as_millis() as u64,
                "reconciles still running at shutdown"
            ),
        }
        // Both wait on NATS, which may be gone: bounded, so SIGTERM always ends the process.
        if let Some((addr, _)) = election {
            match tokio::time::timeout(TASK_STOP_TIMEOUT, addr.send(Resign)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => warn!("the election stopped before the lease was released"),
                Err(_) => warn!("the lease was not released in time; it expires by itself"),
            }
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "NATS flush failed at shutdown"),
            Err(_) => warn!("NATS flush timed out at shutdown (is the server gone?)"),
        }
    }
}

/// Runs `work` unless `shutdown` comes first.
async fn until<T>(
    shutdown: &Shared<LocalBoxFuture<'static, ()>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.clone() => {
            info!("shutdown requested before the component was running");
            None
        }
        value = work => Some(value),
    }
}

async fn connect(settings: &Settings, metrics: &ComponentMetrics) -> async_nats::Client {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let metrics = metrics.clone();
        let options = operator_telemetry::observe_connection(
            async_nats::ConnectOptions::new().name(format!("component-{}", settings.operator)),
            move || metrics.nats_reconnected(),
        );
        let connected = match settings.nats_options(options).await {
            Ok(options) => options.connect(settings.nats_servers.as_slice()).await,
            Err(e) => Err(e.into()),
        };
        match connected {
            Ok(client) => return client,
            Err(e) => {
                let delay = STARTUP_BACKOFF.delay_with_random_jitter(attempt);
                warn!(nats_url = %settings.nats_url, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to NATS; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn wait_for_stream(js: &jetstream::Context, name: &str) -> jetstream::stream::Stream {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match js.get_stream(name).await {
            Ok(stream) => {
                info!(stream = %name, "command stream found");
                return stream;
            }
            Err(e) => {
                if attempt % 10 == 1 {
                    info!(stream = %name, reason = %e, "waiting for the command stream; applying the operator creates it");
                }
                tokio::time::sleep(STARTUP_BACKOFF.delay_with_random_jitter(attempt)).await;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the component");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
