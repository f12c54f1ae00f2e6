//! `opctl`: the command line of the orchestrator — apply, get and delete operators, resources
//! and secrets over its HTTP API, with `dataos-ctl`-style log lines and tables; scale an
//! operator's components, read their logs and render them as Kubernetes objects.

mod apply;
mod args;
mod client;
mod config_file;
mod console;
mod delete;
mod describe;
mod get;
mod lint;
mod logs;
mod manifest_file;
mod output;
mod render;
mod scale;
mod table;
mod user;

use std::process::ExitCode;

use anyhow::Result;
use tracing::Instrument;

use crate::args::{Cli, Command};
use crate::client::{ApiError, OrchestratorClient};
use crate::console::Console;

/// The exit code of a refusal by the server or a failure on this side.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let console = Console::start();
    let cli = match Cli::try_parse_checked(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() || is_help(&error) => error.exit(),
        Err(error) => {
            console.error(&args::usage_error_line(&error), &[]);
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(EXIT_FAILURE));
        }
    };
    match run(cli, &console) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&console, &error);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Whether clap shows help because a subcommand or argument is missing (printed as clap does).
fn is_help(error: &clap::Error) -> bool {
    error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
}

#[tokio::main(flavor = "current_thread")]
async fn run(cli: Cli, console: &Console) -> Result<()> {
    // Spans only when an OTLP endpoint is configured; opctl's own logs stay off unless
    // RUST_LOG asks for them (the console says what the user needs).
    let telemetry = if operator_telemetry::exporting_configured() {
        Some(operator_telemetry::init("opctl", "off")?)
    } else {
        None
    };
    let apikey = match cli.apikey {
        Some(key) => Some(key),
        None => match config_file::default_path() {
            Some(path) => config_file::load(&path)?.apikey,
            None => None,
        },
    };
    let client = OrchestratorClient::new(cli.server, apikey)?;
    let verb = cli.command.verb();
    let span = tracing::info_span!("opctl", otel.name = %format!("opctl {verb}"), command = verb);
    let result = async {
        match cli.command {
            Command::Apply(apply) => apply::run(apply, &client, console).await,
            Command::Get(get) => get::run(get, &client, console).await,
            Command::Delete(delete) => delete::run(delete, &client, console).await,
            Command::Scale(scale) => scale::run(scale, &client, console).await,
            Command::Logs(logs) => logs::run(logs, &client, console).await,
            Command::Render(render) => render::run(render, &client, console).await,
            Command::User(user) => user::run(user, &client, console).await,
            Command::Whoami => user::whoami(&client).await,
        }
    }
    .instrument(span)
    .await;
    if let Some(telemetry) = telemetry {
        // Blocking, and the exporter needs this runtime alive: off the runtime's only thread.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    result
}

/// One `ERRO` line with the reason, then the server's details, one a line.
fn report(console: &Console, error: &anyhow::Error) {
    match error.downcast_ref::<ApiError>() {
        Some(refusal) => console.error(&refusal.reason, &refusal.details),
        None => console.error(&format!("{error:#}"), &[]),
    }
}
