//! The orchestrator daemon: connects to NATS, rebuilds the actor tree from the store, serves
//! the HTTP API.
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

mod admission;
mod api;
mod auth;
mod bridge;
mod config;
mod entity;
mod error;
mod history;
mod manager;
mod metrics;
mod nats_auth;
mod records;
mod replicas;
mod runtime;
mod secret_keys;
mod store;
mod supervisor;
mod watch;

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context as _};
use clap::Parser;
use tracing::{info, warn};

use crate::config::Config;
use crate::manager::OperatorManager;
use crate::store::Store;
use crate::supervisor::SupervisorSetup;

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
        let telemetry = operator_shared::telemetry::init("orchestrator", &config.log_level)
            .context("cannot set up telemetry")?;
        operator_shared::telemetry::metrics_handle();
        // Shown as 0 from the first scrape, not only after the first reconnect.
        ::metrics::counter!(metrics::NATS_RECONNECTS).increment(0);
        let result = run(config).await;
        // Flushes the spans still queued; blocking, so off the actors' thread.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        result
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    let client = connect(&config).await?;
    let js = async_nats::jetstream::new(client.clone());
    let keyring = secret_keys::SecretKeyring::load(&config.secret_keys)
        .context("cannot load the keys that seal secrets")?;
    let store = Store::open(&js, keyring)
        .await
        .context("cannot open the orchestrator's KV buckets (is JetStream enabled on the NATS server? start it with -js)")?;
    let components = SupervisorSetup::connect(&config.components, config.component_nats_url())
        .await
        .map_err(|reason| {
            anyhow::anyhow!("component runtime {}: {reason}", config.components.runtime)
        })?
        .with_nats_signer(config.nats_auth.account_signer()?);
    info!(runtime = %components.runtime(), "components runtime chosen");
    let manager = OperatorManager::restore(store, client, config.query_timeout())
        .await?
        .with_components(components);
    let users = auth::Users::open(&js).await?;
    users
        .bootstrap_admin(config.admin_apikey_file.as_deref())
        .await?;
    let admission = admission::Admission::new(config.max_in_flight);
    let manager = actix::Actor::start(manager);
    let stopping = manager.clone();
    info!(listen = %config.listen, "orchestrator API listening");
    HttpServer::new(move || {
        // The last wrapped runs first: trace and count, then admit, then authenticate.
        App::new()
            .wrap(actix_web::middleware::from_fn(auth::authenticate))
            .wrap(actix_web::middleware::from_fn(admission::admit))
            .wrap(actix_web::middleware::from_fn(metrics::observe_request))
            .app_data(web::Data::new(manager.clone()))
            .app_data(web::Data::new(users.clone()))
            .app_data(web::Data::new(admission.clone()))
            .route("/metrics", web::get().to(metrics::scrape))
            .configure(api::configure)
    })
    .workers(config.http_workers)
    .bind(config.listen)
    .with_context(|| format!("cannot listen on {}", config.listen))?
    .run()
    .await?;
    stopping
        .send(manager::StopAllComponents)
        .await
        .context("cannot stop the components")?;
    info!("orchestrator stopped");
    Ok(())
}

/// Connects to NATS, retrying until the configured deadline, and refuses a server that is too old.
async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + config.nats_connect_timeout();
    let client = loop {
        let options = config
            .nats_auth
            .connect_options()
            .await?
            .name("orchestrator");
        let options = operator_shared::telemetry::observe_connection(options, || {
            ::metrics::counter!(metrics::NATS_RECONNECTS).increment(1)
        });
        match options.connect(&config.nats_url).await {
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
    if let Err(reason) = operator_shared::version::check_nats_server_version(&version) {
        bail!("{reason}");
    }
    info!(nats_url = %config.nats_url, server_version = %version, "connected to NATS");
    Ok(client)
}
