//! `postgres-operator`: the PostgreSQL operator, a component for `database` and `role`
//! resources built only on the SDK's public API. Configured by the SDK's `ComponentConfig`
//! (`NATS_URL`, `OPERATOR_NAME`, `OPERATOR_STATE_STORE_TYPE`, `OPERATOR_RESYNC_INTERVAL_S`, …)
//! and libpq's variables for the server (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
//! `PGDATABASE`), which the orchestrator fills from a Secret. A role's password is the value
//! of the Secret key its spec names, which the component consumes as an environment variable.

mod plan;
mod reconciler;
mod scram;
mod server;
mod spec;
mod sql;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use operator_sdk::ComponentConfig;

use crate::reconciler::PostgresReconciler;
use crate::server::{PgServer, ServerConfig};

/// Keeps databases and roles of a PostgreSQL server as their resources say.
#[derive(Debug, Parser)]
#[command(name = "postgres-operator", version)]
struct Cli {
    #[command(flatten)]
    component: ComponentConfig,

    #[command(flatten)]
    server: ServerConfig,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postgres-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    cli.component.validate()?;
    // Logging starts inside the component: say where the server is (never the password).
    eprintln!(
        "postgres-operator: managing databases and roles on {}",
        cli.server.target()
    );
    let server = PgServer::new(cli.server);
    let secrets = Arc::new(|key: &str| std::env::var(key).ok());
    operator_sdk::run(cli.component, PostgresReconciler::new(server, secrets))?;
    Ok(())
}
