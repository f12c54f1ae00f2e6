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
mod diff;
mod events;
mod get;
mod lint;
mod list_stream;
mod logs;
mod manifest_file;
mod output;
mod render;
mod scale;
mod table;
mod user;
mod wait;
mod watch;

use std::process::ExitCode;

use anyhow::Result;
use tracing::Instrument;

use crate::args::{Cli, Command};
use crate::client::{ApiError, OrchestratorClient};
use crate::console::Console;

/// The exit code of a refusal by the server or a failure on this side.
const EXIT_FAILURE: u8 = 1;
/// `diff`'s exit codes, kubectl's: differences found, or an error.
const EXIT_DIFFERENT: u8 = 1;
const EXIT_DIFF_ERROR: u8 = 2;

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
    let failure = match cli.command {
        Command::Diff(_) => EXIT_DIFF_ERROR,
        _ => EXIT_FAILURE,
    };
    match run(cli, &console) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            report(&console, &error);
            ExitCode::from(failure)
        }
    }
}

/// Whether clap shows help because a subcommand or argument is missing (printed as clap does).
fn is_help(error: &clap::Error) -> bool {
    error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
}

#[tokio::main(flavor = "current_thread")]
async fn run(cli: Cli, console: &Console) -> Result<u8> {
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
    let client = OrchestratorClient::new(cli.server.0, apikey)?;
    let verb = cli.command.verb();
    let span = tracing::info_span!("opctl", otel.name = %format!("opctl {verb}"), command = verb);
    let result = async {
        let done = |r: Result<()>| r.map(|()| 0);
        match cli.command {
            Command::Apply(apply) => done(apply::run(apply, &client, console).await),
            Command::Diff(diff) => diff::run(diff, &client, console).await.map(|differs| {
                if differs {
                    EXIT_DIFFERENT
                } else {
                    0
                }
            }),
            Command::Get(get) => done(get::run(get, &client, console).await),
            Command::Delete(delete) => done(delete::run(delete, &client, console).await),
            Command::Wait(wait) => done(wait::run(wait, &client, console).await),
            Command::Events(events) => done(events::run(events, &client, console).await),
            Command::Scale(scale) => done(scale::run(scale, &client, console).await),
            Command::Logs(logs) => done(logs::run(logs, &client, console).await),
            Command::Render(render) => done(render::run(render, &client, console).await),
            Command::User(user) => done(user::run(user, &client, console).await),
            Command::Whoami => done(user::whoami(&client).await),
            Command::Completion { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "opctl", &mut std::io::stdout());
                Ok(0)
            }
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
