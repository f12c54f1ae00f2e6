//! The orchestrator daemon: connects to NATS, rebuilds the actor tree from the store, serves
//! the HTTP API. With replicas (`ORCHESTRATOR_REPLICA_NAME`), it does so only while it leads,
//! and forwards the API to the leader otherwise (see `replication`).
//!
//! ```text
//! System
//! └─ OperatorManager        operator and secret records; routes resource requests
//!    └─ OperatorRuntime     one per operator: compiled schemas, subjects, entities
//!       ├─ NatsBridge       streams, command publishes, queries, status events
//!       ├─ ResourceEntity   one per resource: record, generation, status, command resends
//!       └─ ComponentSupervisor  one per operator: runs its components (process, docker,
//!                               kubernetes or external), restarts them, scales them
//! ```

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor as _;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, Context as _};
use async_nats::jetstream;
use clap::Parser;
use operator_contract::election::election_bucket;
use operator_election::{LeaderElection, Resign, Subscribe};
use operator_nats_cluster::{
    parse_server_list, replicas_for, COMPONENT_JETSTREAM_REPLICAS_ENV, JETSTREAM_REPLICAS_ENV,
};
use tracing::{info, warn};

use operator_orchestrator::config::Config;
use operator_orchestrator::manager::OperatorManager;
use operator_orchestrator::replication::forward::{forward, Forwarder};
use operator_orchestrator::replication::role::ReplicaRole;
use operator_orchestrator::replication::{Directory, ReplicaSettings, ORCHESTRATOR_CLUSTER};
use operator_orchestrator::store::JetStreamStore;
use operator_orchestrator::supervisor::SupervisorSetup;
use operator_orchestrator::{admission, api, auth, manager, metrics, secret_keys, ui};

/// jemalloc gives freed memory back to the system (its background threads purge pages unused
/// for a while: one second, set in `.cargo/config.toml`), so the resident size follows what the
/// daemon holds; glibc's malloc kept the peak of a bulk apply long after the resources had
/// settled (see README, Benchmark).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Actors live on this thread; NATS I/O runs on the runtime's worker threads.
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the async runtime: {e}"))
    });
    system.block_on(async move {
        // Inside the runtime: the gRPC span exporter needs it.
        let telemetry = operator_telemetry::init("orchestrator", &config.log_level)
            .context("cannot set up telemetry")?;
        operator_telemetry::metrics_handle();
        // Shown as 0 from the first scrape, not only after the first reconnect.
        ::metrics::counter!(metrics::NATS_RECONNECTS).increment(0);
        let result = run(config).await;
        // Flushes the spans still queued; blocking, so off the actors' thread.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        result
    })
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    let client = connect(&config).await?;
    let js = async_nats::jetstream::new(client.clone());
    let replicas = replicas_for(&client, config.jetstream_replicas.map(usize::from))
        .with_context(|| format!("{JETSTREAM_REPLICAS_ENV} cannot be used"))?;
    // Components create their buckets like ours, unless told otherwise (ORCHESTRATOR_COMPONENT_ENV
    // or an operator's manifest).
    let component_env = &mut config.components.component_env;
    if !component_env
        .iter()
        .any(|(key, _)| key == COMPONENT_JETSTREAM_REPLICAS_ENV)
    {
        component_env.push((
            COMPONENT_JETSTREAM_REPLICAS_ENV.into(),
            replicas.to_string(),
        ));
    }
    let keyring = secret_keys::SecretKeyring::load(&config.secret_keys)
        .context("cannot load the keys that seal secrets")?;
    let store = JetStreamStore::open(&js, keyring, replicas)
        .await
        .context("cannot open the orchestrator's KV buckets (is JetStream enabled on the NATS server? start it with -js)")?;
    // Bound once: a replica serves the follower's API, then the leader's, on the same socket.
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listening = listener.local_addr()?;
    let replica = config.replication.replica(listening)?;
    let parts = Parts {
        client,
        js,
        replicas,
        listener,
    };
    match replica {
        None => run_alone(config, store, parts).await,
        Some(replica) => run_replica(config, store, parts, replica).await,
    }
}

/// What both ways of running share.
struct Parts {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    listener: TcpListener,
}

/// The only orchestrator: leads at once; stops its components when it stops.
async fn run_alone(config: Config, store: JetStreamStore, parts: Parts) -> anyhow::Result<()> {
    let leader = Leader::start(&config, store, &parts).await?;
    let manager = leader.manager.clone();
    let server = leader.server(&config, &parts.listener)?;
    announce_listening(&config, &parts.listener)?;
    server.await?;
    manager
        .send(manager::StopAllComponents)
        .await
        .context("cannot stop the components")?;
    info!("orchestrator stopped");
    Ok(())
}

/// One of several orchestrators: forwards the API until it leads, then leads until it stops
/// (or loses the lease, which ends the process: see `replication::role`).
async fn run_replica(
    config: Config,
    store: JetStreamStore,
    parts: Parts,
    replica: ReplicaSettings,
) -> anyhow::Result<()> {
    let name = replica.election.replica.clone();
    let (election, fence) = LeaderElection::start(&parts.js, replica.election, parts.replicas)
        .await
        .context("cannot join the orchestrators' election")?;
    let bucket = parts
        .js
        .get_key_value(election_bucket(ORCHESTRATOR_CLUSTER))
        .await
        .context("cannot open the orchestrators' election bucket")?;
    let directory = Directory::new(bucket);
    directory.publish(&name, &replica.advertise_url).await?;
    let (leading, leading_seen) = tokio::sync::watch::channel(false);
    let forwarder = Forwarder::new(directory, name.clone(), leading_seen)
        .context("cannot build the client that forwards the API")?;
    let follower = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(forwarder.clone()))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
            .route("/readyz", web::get().to(follower_ready))
            .route("/metrics", web::get().to(metrics::scrape))
            .default_service(web::to(forward))
    })
    .workers(config.http_workers)
    .shutdown_timeout(SHUTDOWN_GRACE_S)
    .listen(parts.listener.try_clone()?)?
    .run();
    let follower_handle = follower.handle();
    // Spawned: it must keep serving (and answer `stop`) while this task goes on.
    let mut follower = actix_web::rt::spawn(follower);
    announce_listening(&config, &parts.listener)?;
    info!(replica = %name, advertise_url = %replica.advertise_url, "orchestrator replica following");
    let (role, mut terms) = ReplicaRole::new();
    let role = role.start();
    election
        .send(Subscribe {
            acquired: role.clone().recipient(),
            lost: role.recipient(),
        })
        .await
        .context("cannot join the orchestrators' election")?;
    let term = tokio::select! {
        stopped = &mut follower => {
            let _ = election.send(Resign).await;
            stopped??;
            info!("orchestrator stopped");
            return Ok(());
        }
        term = terms.recv() => term.context("the election ended")?,
    };
    let started = Instant::now();
    // Fenced first, then read: whatever a predecessor wrote before the fence is in the store,
    // and nothing it writes after is accepted.
    let store = store
        .lead(parts.js.clone(), term, &name, fence)
        .await
        .context("cannot fence the store")?;
    let leader = Leader::start(&config, store, &parts).await?;
    let server = actix_web::rt::spawn(leader.server(&config, &parts.listener)?);
    leading.send_replace(true);
    // Gracefully: a request the follower is forwarding to the deposed leader gets its answer
    // (a 503 once the forward sees the lease has moved) instead of a dropped connection.
    follower_handle.stop(true).await;
    info!(
        replica = %name,
        term,
        took_ms = started.elapsed().as_millis() as u64,
        "orchestrator replica leads"
    );
    server.await??;
    // The successor takes over at once, and adopts the components this one ran (the
    // process runtime's children end with this process).
    let _ = election.send(Resign).await;
    info!("orchestrator stopped");
    Ok(())
}

/// A follower is alive but takes no writes itself: a load balancer that routes writes sends
/// them elsewhere (it would forward them all the same).
async fn follower_ready() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "ready": false,
        "role": "follower",
    }))
}

/// The leader's actor tree and what its API needs.
struct Leader {
    manager: actix::Addr<OperatorManager>,
    users: auth::Users,
    admission: admission::Admission,
    sessions: ui::Sessions,
}

impl Leader {
    /// Restores the actor tree from the store and starts it, with the component runtime.
    async fn start(config: &Config, store: JetStreamStore, parts: &Parts) -> anyhow::Result<Self> {
        let components = SupervisorSetup::connect(&config.components, config.component_nats_url())
            .await
            .map_err(|reason| {
                anyhow::anyhow!("component runtime {}: {reason}", config.components.runtime)
            })?
            .with_nats_signer(config.nats_auth.account_signer()?)
            .with_instance(config.replication.replica_name.clone());
        info!(runtime = %components.runtime(), "components runtime chosen");
        let users = store
            .leader_bucket(&parts.js, auth::USERS_BUCKET)
            .await
            .context("cannot open the users' bucket")?;
        let manager = OperatorManager::restore(
            Arc::new(store),
            parts.client.clone(),
            config.runtime_timings(),
        )
        .await?
        .with_components(components);
        let users = auth::Users::open(users).await?;
        users
            .bootstrap_admin(config.admin_apikey_file.as_deref())
            .await?;
        let sessions = ui::Sessions::open(&parts.js, parts.replicas).await?;
        Ok(Self {
            manager: actix::Actor::start(manager),
            sessions,
            users,
            admission: admission::Admission::new(config.max_in_flight),
        })
    }

    /// The API server of the leader, on `listener`.
    fn server(&self, config: &Config, listener: &TcpListener) -> anyhow::Result<Server> {
        let manager = self.manager.clone();
        let users = self.users.clone();
        let admission = self.admission.clone();
        let sessions = self.sessions.clone();
        let server = HttpServer::new(move || {
            // The last wrapped runs first: trace and count, then admit, then authenticate.
            App::new()
                .wrap(actix_web::middleware::from_fn(auth::authenticate))
                .wrap(actix_web::middleware::from_fn(admission::admit))
                .wrap(actix_web::middleware::from_fn(metrics::observe_request))
                .app_data(web::Data::new(manager.clone()))
                .app_data(web::Data::new(users.clone()))
                .app_data(web::Data::new(admission.clone()))
                .app_data(web::Data::new(sessions.clone()))
                .route("/metrics", web::get().to(metrics::scrape))
                .route("/readyz", web::get().to(leader_ready))
                .configure(api::configure)
                .configure(ui::configure)
        })
        .workers(config.http_workers)
        .shutdown_timeout(SHUTDOWN_GRACE_S)
        .listen(listener.try_clone()?)?;
        Ok(server.run())
    }
}

/// How long requests under way get to finish at shutdown. Watches, followed logs and event
/// streams never finish: past this they are cut (their clients say so), rather than holding a
/// stopping orchestrator for actix's default 30 s.
const SHUTDOWN_GRACE_S: u64 = 5;

/// The leader takes writes.
async fn leader_ready() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ready": true, "role": "leader" }))
}

/// Logs the API's address and writes it to `ORCHESTRATOR_LISTEN_ADDR_FILE`.
fn announce_listening(config: &Config, listener: &TcpListener) -> anyhow::Result<()> {
    let listening = listener.local_addr()?;
    info!(listen = %listening, "orchestrator API listening");
    if let Some(file) = &config.listen_addr_file {
        std::fs::write(file, listening.to_string())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Connects to NATS, retrying until the configured deadline, and refuses a server that is too old.
async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    let servers = parse_server_list(&config.nats_url)?;
    let deadline = Instant::now() + config.nats_connect_timeout();
    let client = loop {
        let options = config
            .nats_auth
            .connect_options()
            .await?
            .name("orchestrator");
        let options = operator_telemetry::observe_connection(options, || {
            ::metrics::counter!(metrics::NATS_RECONNECTS).increment(1)
        });
        match options.connect(servers.as_slice()).await {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                warn!(nats_url = %config.nats_url, error = %e, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!(
                "cannot reach NATS at {} (set NATS_URL or --nats-url): {e}",
                config.nats_url
            ),
        }
    };
    let version = client.server_info().version;
    if let Err(reason) = operator_contract::version::check_nats_server_version(&version) {
        bail!("{reason}");
    }
    info!(nats_url = %config.nats_url, server_version = %version, "connected to NATS");
    Ok(client)
}
