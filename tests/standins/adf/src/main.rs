//! `adf-standin`: a stand-in for Azure Data Factory's REST API (api-version 2018-06-01) and
//! Entra ID's token endpoint, for running the ADF operator where Azure cannot be reached.
//!
//! Runs go Queued → InProgress → Succeeded or Failed on a clock; a control API under
//! `/_standin/` lets tests shape pipelines, arm faults and read what the operator did.

mod app;
mod arm;
mod auth;
mod clock;
mod control;
mod error;
mod imds;
mod monitor;
mod query;
mod run;
mod state;

#[cfg(test)]
mod app_tests;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;

use actix_web::{web, HttpServer};
use anyhow::Context as _;
use clap::Parser;
use operator_telemetry::LOG_LEVEL_ENV;
use tracing::info;

use crate::auth::ExpectedClient;
use crate::clock::MAX_DURATION_MS;
use crate::imds::Identities;
use crate::state::{Settings, StandIn};

/// The longest token lifetime accepted, in seconds: the clock's cap on durations.
const MAX_TOKEN_TTL_S: u64 = MAX_DURATION_MS / 1000;

/// A stand-in Azure Data Factory server for tests.
#[derive(Debug, Parser)]
#[command(name = "adf-standin", version)]
struct Cli {
    /// Where to listen; port 0 picks a free port. The bound address is printed on stdout's
    /// first line as `listening on http://ADDR`.
    #[arg(long, env = "ADF_STANDIN_LISTEN", default_value = "127.0.0.1:7800")]
    listen: SocketAddr,

    /// The only tenant the token endpoint serves; any when unset.
    #[arg(long, env = "ADF_STANDIN_TENANT_ID")]
    tenant_id: Option<String>,

    /// The only client id the token endpoint accepts; any when unset.
    #[arg(long, env = "ADF_STANDIN_CLIENT_ID")]
    client_id: Option<String>,

    /// The only client secret the token endpoint accepts; any when unset.
    #[arg(long, env = "ADF_STANDIN_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,

    /// The only federated token (workload identity) accepted as client assertion; any when
    /// unset.
    #[arg(long, env = "ADF_STANDIN_FEDERATED_TOKEN", hide_env_values = true)]
    federated_token: Option<String>,

    /// The client id of the user-assigned managed identity the metadata endpoint knows, besides
    /// the system-assigned one.
    #[arg(long, env = "ADF_STANDIN_MANAGED_IDENTITY_CLIENT_ID")]
    managed_identity_client_id: Option<String>,

    /// The only subscription the factory routes serve; any when unset.
    #[arg(long, env = "ADF_STANDIN_SUBSCRIPTION_ID")]
    subscription_id: Option<String>,

    /// Lifetime of issued tokens, in seconds.
    #[arg(
        long,
        env = "ADF_STANDIN_TOKEN_TTL_S",
        default_value_t = 3599,
        value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_S)
    )]
    token_ttl_s: u64,

    /// How long a new run stays Queued, in milliseconds.
    #[arg(
        long,
        env = "ADF_STANDIN_QUEUED_MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION_MS)
    )]
    queued_ms: u64,

    /// How long a run stays InProgress before it ends, in milliseconds.
    #[arg(
        long,
        env = "ADF_STANDIN_RUN_MS",
        default_value_t = 3000,
        value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION_MS)
    )]
    run_ms: u64,

    /// Log level or filter directives (`RUST_LOG` wins when set).
    #[arg(long, env = LOG_LEVEL_ENV, default_value = "info")]
    log_level: String,
}

impl Cli {
    fn settings(&self) -> Settings {
        // An empty variable means "not configured", as a compose file's `VAR=` does.
        let configured = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        Settings {
            expected_client: ExpectedClient {
                tenant_id: configured(&self.tenant_id),
                client_id: configured(&self.client_id),
                client_secret: configured(&self.client_secret),
                federated_token: configured(&self.federated_token),
            },
            identities: Identities {
                system_client_id: uuid::Uuid::new_v4().to_string(),
                user_assigned_client_id: configured(&self.managed_identity_client_id),
            },
            subscription_id: configured(&self.subscription_id),
            token_ttl: clock::millis(self.token_ttl_s * 1000),
            queued_ms: self.queued_ms,
            run_ms: self.run_ms,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    operator_telemetry::init_logging(&cli.log_level);
    match actix_web::rt::System::new().block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adf-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings();
    let listener = std::net::TcpListener::bind(cli.listen)
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    info!(
        listen = %address,
        tenant_checked = settings.expected_client.tenant_id.is_some(),
        client_checked = settings.expected_client.client_id.is_some(),
        secret_checked = settings.expected_client.client_secret.is_some(),
        subscription_checked = settings.subscription_id.is_some(),
        queued_ms = settings.queued_ms,
        run_ms = settings.run_ms,
        "adf stand-in starting"
    );
    let standin = web::Data::new(Mutex::new(StandIn::new(settings)));
    // One worker suffices: handlers never block, and the delay fault sleeps asynchronously.
    let server = HttpServer::new(move || app::build(standin.clone()))
        .workers(1)
        .listen(listener)
        .context("cannot serve on the bound socket")?
        .run();
    // Tests that ask for port 0 read the address from this line, so it goes out at once.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}").context("cannot write to stdout")?;
    stdout.flush().context("cannot flush stdout")?;
    drop(stdout);
    server.await.context("the HTTP server failed")?;
    info!("adf stand-in stopped");
    Ok(())
}
