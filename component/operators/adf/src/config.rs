//! The ADF operator's own settings (Azure credentials and endpoints, polling), read by clap
//! from flags or environment variables, and their validation into a [`Credential`] and
//! [`PollSettings`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};
use reqwest::Url;
use thiserror::Error;
use uuid::Uuid;

use crate::azure::credential::{read_federated_token, Credential, CredentialError};

/// The Microsoft Entra tenant of the service principal (a GUID).
pub const TENANT_ID_ENV: &str = "AZURE_TENANT_ID";
/// The service principal's application (client) id (a GUID).
pub const CLIENT_ID_ENV: &str = "AZURE_CLIENT_ID";
/// The service principal's client secret; never logged.
pub const CLIENT_SECRET_ENV: &str = "AZURE_CLIENT_SECRET";
/// Workload identity: the file holding the federated token (projected by Kubernetes).
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// Managed identity: the instance metadata endpoint (tests point it at a stand-in).
pub const IMDS_ENDPOINT_ENV: &str = "AZURE_IMDS_ENDPOINT";
/// The subscription holding the data factories (a GUID).
pub const SUBSCRIPTION_ID_ENV: &str = "AZURE_SUBSCRIPTION_ID";
/// Where tokens are asked for.
pub const AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";
/// The Azure Resource Manager endpoint.
pub const RESOURCE_MANAGER_ENDPOINT_ENV: &str = "AZURE_RESOURCE_MANAGER_ENDPOINT";
/// The shortest interval between two polls of a running pipeline run, in milliseconds.
pub const POLL_MIN_ENV: &str = "ADF_POLL_MIN_MS";
/// The longest interval between two polls of a running pipeline run, in milliseconds.
pub const POLL_MAX_ENV: &str = "ADF_POLL_MAX_MS";
/// How often an unchanged status is still republished to refresh `lastSyncedAt`, in seconds.
pub const SYNC_REFRESH_ENV: &str = "ADF_SYNC_REFRESH_SECS";
/// How long a deletion waits for its run to reach Canceling/Cancelled, in milliseconds.
pub const CANCEL_WAIT_ENV: &str = "ADF_CANCEL_WAIT_MS";
/// The clock-skew margin used when looking for a run started before a crash, in seconds.
pub const CLOCK_SKEW_ENV: &str = "ADF_CLOCK_SKEW_SECS";
/// Monitoring calls allowed per factory per minute, shared by all its runs.
pub const MONITOR_BUDGET_ENV: &str = "ADF_MONITOR_BUDGET_PER_MINUTE";
/// Test hook: abort the process right after createRun returns, before its runId is recorded.
pub const CRASH_AFTER_CREATE_RUN_ENV: &str = "ADF_OPERATOR_CRASH_AFTER_CREATE_RUN";

/// The default authority host (Azure's public cloud).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The default Resource Manager endpoint (Azure's public cloud).
pub const DEFAULT_RESOURCE_MANAGER_ENDPOINT: &str = "https://management.azure.com";
/// The instance metadata endpoint of Azure VMs.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, to put on the wire and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Azure credentials and endpoints; flatten into the binary's parser.
#[derive(Debug, Clone, Args)]
pub struct AzureConfig {
    /// Tenant (directory) id of the service principal or workload identity.
    #[arg(long, env = TENANT_ID_ENV, value_name = TENANT_ID_ENV, value_parser = parse_guid)]
    pub azure_tenant_id: Option<Uuid>,

    /// Application (client) id of the service principal or workload identity; with managed
    /// identity, the user-assigned identity to use.
    #[arg(long, env = CLIENT_ID_ENV, value_name = CLIENT_ID_ENV, value_parser = parse_guid)]
    pub azure_client_id: Option<Uuid>,

    /// Client secret of the service principal (prefer the environment variable).
    #[arg(
        long,
        env = CLIENT_SECRET_ENV,
        value_name = CLIENT_SECRET_ENV,
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub azure_client_secret: Option<Secret>,

    /// Workload identity: the federated token file, read again at every token request.
    #[arg(long, env = FEDERATED_TOKEN_FILE_ENV, value_name = FEDERATED_TOKEN_FILE_ENV)]
    pub azure_federated_token_file: Option<PathBuf>,

    /// Managed identity: the instance metadata endpoint.
    #[arg(
        long,
        env = IMDS_ENDPOINT_ENV,
        value_name = IMDS_ENDPOINT_ENV,
        default_value = DEFAULT_IMDS_ENDPOINT,
        value_parser = parse_endpoint
    )]
    pub azure_imds_endpoint: Url,

    /// Subscription holding the data factories.
    #[arg(long, env = SUBSCRIPTION_ID_ENV, value_name = SUBSCRIPTION_ID_ENV, value_parser = parse_guid)]
    pub azure_subscription_id: Uuid,

    /// Authority host tokens are asked from.
    #[arg(
        long,
        env = AUTHORITY_HOST_ENV,
        value_name = AUTHORITY_HOST_ENV,
        default_value = DEFAULT_AUTHORITY_HOST,
        value_parser = parse_endpoint
    )]
    pub azure_authority_host: Url,

    /// Azure Resource Manager endpoint.
    #[arg(
        long,
        env = RESOURCE_MANAGER_ENDPOINT_ENV,
        value_name = RESOURCE_MANAGER_ENDPOINT_ENV,
        default_value = DEFAULT_RESOURCE_MANAGER_ENDPOINT,
        value_parser = parse_endpoint
    )]
    pub azure_resource_manager_endpoint: Url,
}

/// How runs are followed; flatten into the binary's parser.
#[derive(Debug, Clone, Args)]
pub struct PollingConfig {
    /// Shortest interval between polls of a running run (used for its first 30 s), in ms.
    #[arg(
        long,
        env = POLL_MIN_ENV,
        value_name = POLL_MIN_ENV,
        default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub adf_poll_min_ms: u64,

    /// Longest interval between polls of a long-running run, in ms.
    #[arg(
        long,
        env = POLL_MAX_ENV,
        value_name = POLL_MAX_ENV,
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub adf_poll_max_ms: u64,

    /// An unchanged status is republished (refreshing lastSyncedAt) at most this often, in s.
    #[arg(
        long,
        env = SYNC_REFRESH_ENV,
        value_name = SYNC_REFRESH_ENV,
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub adf_sync_refresh_secs: u64,

    /// How long a deletion waits for its run to be cancelled, in ms.
    #[arg(
        long,
        env = CANCEL_WAIT_ENV,
        value_name = CANCEL_WAIT_ENV,
        default_value_t = 30_000
    )]
    pub adf_cancel_wait_ms: u64,

    /// Clock-skew margin between this host and Azure when finding a run started before a
    /// crash, in s.
    #[arg(
        long,
        env = CLOCK_SKEW_ENV,
        value_name = CLOCK_SKEW_ENV,
        default_value_t = 300
    )]
    pub adf_clock_skew_secs: u64,

    /// Monitoring calls (Get Pipeline Run, queryPipelineRuns, queryActivityruns) allowed per
    /// factory per minute, across all its runs and replicas (Azure allows 1,000).
    #[arg(
        long,
        env = MONITOR_BUDGET_ENV,
        value_name = MONITOR_BUDGET_ENV,
        default_value_t = 600,
        value_parser = clap::value_parser!(u32).range(1..=1_000)
    )]
    pub adf_monitor_budget_per_minute: u32,

    /// Test hook: abort right after createRun returns, before the runId is recorded.
    #[arg(
        long,
        env = CRASH_AFTER_CREATE_RUN_ENV,
        value_name = CRASH_AFTER_CREATE_RUN_ENV,
        hide = true,
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub adf_operator_crash_after_create_run: bool,
}

/// A setting that cannot be used; the message starts with its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The polling interval's upper bound is below its lower bound.
    #[error("{POLL_MAX_ENV}: {max_ms} ms is below {POLL_MIN_ENV} ({min_ms} ms)")]
    PollRangeInverted { min_ms: u64, max_ms: u64 },
    /// The sign-in method chosen needs a variable that is not set.
    #[error("{variable}: required to sign in with {method}")]
    MissingForSignIn {
        variable: &'static str,
        method: &'static str,
    },
    /// The federated token file cannot be used; names the file, never its content.
    #[error("{FEDERATED_TOKEN_FILE_ENV}: {0}")]
    FederatedToken(#[source] CredentialError),
}

impl AzureConfig {
    /// The sign-in method, chosen from what is set: a client secret; else a federated token
    /// file (workload identity); else managed identity. Workload identity's file is read once
    /// here so a missing or empty one stops the operator at start.
    pub fn credential(&self) -> Result<Credential, ConfigError> {
        let needs = |method: &'static str| {
            let tenant_id = self.azure_tenant_id.ok_or(ConfigError::MissingForSignIn {
                variable: TENANT_ID_ENV,
                method,
            })?;
            let client_id = self.azure_client_id.ok_or(ConfigError::MissingForSignIn {
                variable: CLIENT_ID_ENV,
                method,
            })?;
            Ok::<_, ConfigError>((tenant_id, client_id))
        };
        if let Some(secret) = &self.azure_client_secret {
            let (tenant_id, client_id) = needs("a client secret")?;
            return Ok(Credential::ClientSecret {
                tenant_id,
                client_id,
                secret: secret.clone(),
            });
        }
        if let Some(token_file) = &self.azure_federated_token_file {
            let (tenant_id, client_id) = needs("workload identity")?;
            read_federated_token(token_file).map_err(ConfigError::FederatedToken)?;
            return Ok(Credential::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file: token_file.clone(),
            });
        }
        Ok(Credential::ManagedIdentity {
            client_id: self.azure_client_id,
            endpoint: self.azure_imds_endpoint.clone(),
        })
    }
}

/// How the reconciler follows runs, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    pub min: Duration,
    pub max: Duration,
    pub sync_refresh: Duration,
    pub cancel_wait: Duration,
    pub clock_skew: Duration,
    pub crash_after_create_run: bool,
    pub monitor_budget_per_minute: u32,
}

impl PollingConfig {
    /// Checks the values together.
    pub fn settings(&self) -> Result<PollSettings, ConfigError> {
        if self.adf_poll_max_ms < self.adf_poll_min_ms {
            return Err(ConfigError::PollRangeInverted {
                min_ms: self.adf_poll_min_ms,
                max_ms: self.adf_poll_max_ms,
            });
        }
        Ok(PollSettings {
            min: Duration::from_millis(self.adf_poll_min_ms),
            max: Duration::from_millis(self.adf_poll_max_ms),
            sync_refresh: Duration::from_secs(self.adf_sync_refresh_secs),
            cancel_wait: Duration::from_millis(self.adf_cancel_wait_ms),
            clock_skew: Duration::from_secs(self.adf_clock_skew_secs),
            crash_after_create_run: self.adf_operator_crash_after_create_run,
            monitor_budget_per_minute: self.adf_monitor_budget_per_minute,
        })
    }
}

/// A GUID in its usual 36-character form.
fn parse_guid(value: &str) -> Result<Uuid, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    match Uuid::try_parse(value) {
        Ok(uuid) if value.len() == 36 => Ok(uuid),
        _ => Err(format!(
            "'{value}' is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )),
    }
}

/// A non-empty secret; the error never repeats the value.
fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret::new(value))
}

/// An absolute http(s) URL without query or fragment.
fn parse_endpoint(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("'{value}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || !url.has_host() {
        return Err(format!("'{value}' must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{value}' must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        azure: AzureConfig,
        #[command(flatten)]
        polling: PollingConfig,
    }

    const TENANT: &str = "00000000-0000-0000-0000-000000000001";
    const CLIENT: &str = "00000000-0000-0000-0000-000000000002";
    const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000003";

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "adf".to_string(),
            format!("--azure-tenant-id={TENANT}"),
            format!("--azure-client-id={CLIENT}"),
            "--azure-client-secret=s3cr3t-value".to_string(),
            format!("--azure-subscription-id={SUBSCRIPTION}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(args)
    }

    #[test]
    fn defaults_point_at_azures_public_cloud_and_poll_between_2_and_30_seconds() {
        let cli = parse(&[]).expect("parses");
        assert_eq!(
            cli.azure.azure_authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            cli.azure.azure_resource_manager_endpoint.as_str(),
            "https://management.azure.com/"
        );
        assert_eq!(
            cli.azure.azure_tenant_id.map(|t| t.to_string()).as_deref(),
            Some(TENANT)
        );
        let poll = cli.polling.settings().expect("valid");
        assert_eq!(poll.min, Duration::from_secs(2));
        assert_eq!(poll.max, Duration::from_secs(30));
        assert!(!poll.crash_after_create_run);
    }

    #[test]
    fn malformed_ids_and_endpoints_are_refused_naming_the_variable() {
        for (flag, variable) in [
            ("--azure-tenant-id=contoso", TENANT_ID_ENV),
            ("--azure-client-id=1234", CLIENT_ID_ENV),
            (
                "--azure-subscription-id=0000000000000000000000000000000a",
                SUBSCRIPTION_ID_ENV,
            ),
            ("--azure-authority-host=login", AUTHORITY_HOST_ENV),
            (
                "--azure-resource-manager-endpoint=ftp://arm.example",
                RESOURCE_MANAGER_ENDPOINT_ENV,
            ),
            ("--adf-poll-min-ms=0", POLL_MIN_ENV),
            ("--azure-client-secret=  ", CLIENT_SECRET_ENV),
        ] {
            let err = parse(&[flag]).expect_err(flag);
            assert!(err.to_string().contains(variable), "{flag}: {err}");
        }
    }

    #[test]
    fn the_sign_in_method_is_chosen_from_what_is_set() {
        // Skipped when the test's own environment sets sign-in variables.
        if [
            CLIENT_SECRET_ENV,
            FEDERATED_TOKEN_FILE_ENV,
            TENANT_ID_ENV,
            CLIENT_ID_ENV,
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
        {
            return;
        }
        let method = |args: &[&str]| {
            let mut argv = vec!["adf", "--azure-subscription-id", SUBSCRIPTION];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .expect("parses")
                .azure
                .credential()
                .map(|c| c.method())
                .map_err(|e| e.to_string())
        };
        let ids = ["--azure-tenant-id", TENANT, "--azure-client-id", CLIENT];
        assert_eq!(
            method(&[&ids[..], &["--azure-client-secret", "s"]].concat()),
            Ok("client secret")
        );
        assert_eq!(method(&[]), Ok("managed identity"));
        assert_eq!(method(&ids[2..]), Ok("managed identity"));
        let err = method(&["--azure-client-secret", "s"]).expect_err("no tenant");
        assert!(err.starts_with(TENANT_ID_ENV), "{err}");
        let missing = std::env::temp_dir().join(format!("adf-token-{}", Uuid::new_v4()));
        let file = missing.to_string_lossy().into_owned();
        let err = method(&[&ids[..], &["--azure-federated-token-file", &file]].concat())
            .expect_err("no file");
        assert!(
            err.starts_with(FEDERATED_TOKEN_FILE_ENV) && err.contains(&file),
            "{err}"
        );
        std::fs::write(&missing, "eyJ.token").expect("written");
        let chosen = method(&[&ids[..], &["--azure-federated-token-file", &file]].concat());
        let _ = std::fs::remove_file(&missing);
        assert_eq!(chosen, Ok("workload identity"));
    }

    #[test]
    fn an_inverted_poll_range_is_refused_naming_the_variable() {
        let cli = parse(&["--adf-poll-min-ms=5000", "--adf-poll-max-ms=1000"]).expect("parses");
        let err = cli.polling.settings().expect_err("inverted");
        assert!(err.to_string().starts_with(POLL_MAX_ENV), "{err}");
    }

    #[test]
    fn the_secret_never_shows_in_debug_output_or_errors() {
        let cli = parse(&[]).expect("parses");
        assert!(!format!("{cli:?}").contains("s3cr3t-value"));
        let secret = cli.azure.azure_client_secret.expect("a secret");
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert_eq!(secret.to_string(), "<redacted>");
    }

    #[test]
    fn the_crash_hook_reads_one_as_true() {
        let cli = parse(&["--adf-operator-crash-after-create-run=1"]).expect("parses");
        assert!(
            cli.polling
                .settings()
                .expect("valid")
                .crash_after_create_run
        );
    }
}
