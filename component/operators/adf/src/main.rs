//! `adf-operator`: the Azure Data Factory operator, a component for `pipeline-run` resources
//! built only on the SDK's public API. Run as `adf-operator operator adf [flags]`; every flag
//! is also read from its environment variable (`adf-operator operator adf --help`).
//!
//! Configuration: the SDK's `ComponentConfig` (`NATS_URL`, `OPERATOR_NAME` — `adf-operator`
//! unless set —, `OPERATOR_STATE_STORE_TYPE`, …), the sign-in (`AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID` with `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`, else managed
//! identity through `AZURE_IMDS_ENDPOINT`), `AZURE_SUBSCRIPTION_ID`, the endpoints
//! (`AZURE_AUTHORITY_HOST`, `AZURE_RESOURCE_MANAGER_ENDPOINT`) and how runs are followed
//! (`ADF_POLL_MIN_MS`, `ADF_POLL_MAX_MS`, `ADF_SYNC_REFRESH_SECS`, `ADF_CANCEL_WAIT_MS`,
//! `ADF_CLOCK_SKEW_SECS`). A missing or malformed setting stops it at start, naming the
//! variable.

mod adopt;
mod azure;
mod budget;
mod config;
mod details;
mod reconciler;
mod spec;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use operator_sdk::shared_state::open_shared_bucket;
use operator_sdk::{Component, ComponentConfig, OperatorDetails};

use crate::azure::credential::Credential;
use crate::azure::retry::RetryPolicy;
use crate::azure::AdfClient;
use crate::budget::MonitorBudget;
use crate::config::{AzureConfig, PollingConfig};
use crate::reconciler::AdfReconciler;

/// The operator name used when `OPERATOR_NAME` is not set.
const DEFAULT_OPERATOR_NAME: &str = "adf-operator";

/// Operators for Azure resources.
#[derive(Debug, Parser)]
#[command(name = "adf-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an operator component.
    Operator(OperatorArgs),
}

/// The operators this binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OperatorKind {
    /// Azure Data Factory: `pipeline-run` resources.
    Adf,
}

#[derive(Debug, Args)]
struct OperatorArgs {
    /// Which operator to run.
    #[arg(value_enum)]
    kind: OperatorKind,

    #[command(flatten)]
    component: ComponentConfig,

    #[command(flatten)]
    azure: AzureConfig,

    #[command(flatten)]
    polling: PollingConfig,
}

impl Cli {
    /// The parser, with `OPERATOR_NAME` defaulting to this binary's operator.
    fn command_with_defaults() -> clap::Command {
        Self::command().mut_subcommand("operator", |operator| {
            operator.mut_arg("operator_name", |arg| {
                arg.default_value(DEFAULT_OPERATOR_NAME).required(false)
            })
        })
    }

    /// Parses the command line, exiting with clap's message on a usage error.
    fn parse_with_defaults() -> Self {
        let mut matches = Self::command_with_defaults().get_matches();
        Self::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
    }
}

fn main() -> ExitCode {
    match run(Cli::parse_with_defaults()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adf-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Operator(args) = cli.command;
    match args.kind {
        OperatorKind::Adf => run_adf(args),
    }
}

fn run_adf(args: OperatorArgs) -> anyhow::Result<()> {
    args.component.validate()?;
    let poll = args.polling.settings()?;
    let credential = args.azure.credential()?;
    // Logging starts inside the component, after this: the method goes to stderr, where the
    // component's log goes too. Never the secret nor the token; only the method and the file.
    match &credential {
        Credential::WorkloadIdentity { token_file, .. } => eprintln!(
            "adf-operator: signing in to Azure with workload identity ({} {})",
            config::FEDERATED_TOKEN_FILE_ENV,
            token_file.display()
        ),
        other => eprintln!("adf-operator: signing in to Azure with {}", other.method()),
    }
    operator_sdk::telemetry::install_tls_provider();
    let details = OperatorDetails::new();
    let budget = Arc::new(
        MonitorBudget::new(
            poll.monitor_budget_per_minute,
            Some(budget_bucket(args.component.clone())),
        )
        .with_details(details.clone()),
    );
    let client = AdfClient::new(&args.azure, credential, RetryPolicy::default(), budget)
        .context("cannot build the HTTP client")?;
    let reconciler = AdfReconciler::new(client, poll);
    Component::new(args.component, reconciler)
        .with_operator_details(details)
        .run()?;
    Ok(())
}

/// Opens the monitoring budget's KV bucket as the component connects to NATS; without it the
/// budget is this process's alone (logged).
fn budget_bucket(component: ComponentConfig) -> budget::Connect {
    Box::new(move || {
        let component = component.clone();
        Box::pin(async move {
            let opened = open_shared_bucket(&component, budget::BUCKET);
            match opened.await {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::warn!(bucket = budget::BUCKET, error = %e, "monitoring budget kept in this process only");
                    None
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE: [&str; 8] = [
        "--azure-tenant-id",
        "00000000-0000-0000-0000-000000000001",
        "--azure-client-id",
        "00000000-0000-0000-0000-000000000002",
        "--azure-client-secret",
        "secret",
        "--azure-subscription-id",
        "00000000-0000-0000-0000-000000000003",
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = ["adf-operator"].iter().chain(args).chain(AZURE.iter());
        let mut matches = Cli::command_with_defaults().try_get_matches_from(argv)?;
        Cli::from_arg_matches_mut(&mut matches)
    }

    #[test]
    fn the_manifest_command_line_parses_with_the_default_operator_name() {
        let cli = parse(&[
            "operator",
            "adf",
            "--electionStateFile",
            "/opt/operator/leader-election.log",
        ])
        .expect("parses");
        let Command::Operator(args) = cli.command;
        assert_eq!(args.kind, OperatorKind::Adf);
        if std::env::var_os("OPERATOR_NAME").is_none() {
            assert_eq!(args.component.operator_name, DEFAULT_OPERATOR_NAME);
        }
        assert!(args.component.election_state_file.is_some());
    }

    #[test]
    fn other_operator_kinds_are_refused() {
        let err = parse(&["operator", "databricks"]).expect_err("unknown kind");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(
            parse(&["adf"]).is_err(),
            "the operator subcommand is required"
        );
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command_with_defaults().debug_assert();
    }
}
