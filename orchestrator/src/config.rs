//! The daemon's configuration: every flag also read from its environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use operator_nats_cluster::JETSTREAM_REPLICAS_ENV;
use operator_telemetry::LOG_LEVEL_ENV;

use crate::supervisor::ComponentRuntime;

/// The orchestrator: the control plane's daemon.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "The control-plane daemon: operators, resources and secrets over NATS JetStream"
)]
pub struct Config {
    /// The NATS server (JetStream enabled, version 2.10 or newer), or a comma-separated list
    /// of a cluster's seed servers.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Replication factor of every stream and KV bucket the system creates (1 to 5), given to
    /// the components too [default: 3 on a NATS cluster of three or more servers, else 1].
    /// An existing stream with fewer replicas is raised.
    #[arg(
        long,
        env = JETSTREAM_REPLICAS_ENV,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub jetstream_replicas: Option<u8>,

    /// Where the HTTP API listens (port 0: one the system chooses, logged and written to
    /// `ORCHESTRATOR_LISTEN_ADDR_FILE`).
    #[arg(long, env = "ORCHESTRATOR_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// A file the address the API listens on is written to once it listens (for a port 0).
    #[arg(long, env = "ORCHESTRATOR_LISTEN_ADDR_FILE")]
    pub listen_addr_file: Option<std::path::PathBuf>,

    /// How long `get -d` waits for a component to answer, in milliseconds.
    #[arg(long, env = "ORCHESTRATOR_QUERY_TIMEOUT_MS", default_value_t = 3000)]
    pub query_timeout_ms: u64,

    /// How long a settled resource (nothing in flight) keeps its actor before it sleeps as
    /// its stored bytes, in milliseconds; the next message for it wakes it.
    /// Not 0: the idle check runs at this interval.
    #[arg(
        long,
        env = "ORCHESTRATOR_ENTITY_IDLE_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub entity_idle_ms: u64,

    /// How long to keep trying to reach NATS at start, in seconds.
    #[arg(
        long,
        env = "ORCHESTRATOR_NATS_CONNECT_TIMEOUT_S",
        default_value_t = 30
    )]
    pub nats_connect_timeout_s: u64,

    /// Log level or filter directives (`RUST_LOG` wins when set).
    #[arg(long, env = LOG_LEVEL_ENV, default_value = "info")]
    pub log_level: String,

    /// HTTP worker threads.
    #[arg(long, env = "ORCHESTRATOR_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// API requests under way at once; past it, requests are answered 429 with Retry-After.
    #[arg(long, env = "ORCHESTRATOR_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// A file holding the admin's API key (created with a new key, owner-only, when absent).
    /// Without it, the first start prints a new admin key once.
    #[arg(long, env = "ORCHESTRATOR_ADMIN_APIKEY_FILE")]
    pub admin_apikey_file: Option<std::path::PathBuf>,

    /// Replicas of the orchestrator, and which of them leads.
    #[command(flatten)]
    pub replication: ReplicationConfig,

    /// How operators' components are run.
    #[command(flatten)]
    pub components: ComponentsConfig,

    /// NATS credentials, and the isolation of components on NATS.
    #[command(flatten)]
    pub nats_auth: crate::nats_auth::NatsAuthConfig,

    /// The keys that seal secret values at rest.
    #[command(flatten)]
    pub secret_keys: crate::secret_keys::SecretKeysConfig,
}

/// Several orchestrators on one NATS: one leads (a fenced lease), the others stand by and
/// forward the API to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationConfig {
    /// This orchestrator's name among its replicas. Set, the orchestrator runs as one of
    /// several: it leads only while it holds the lease, and forwards the API to the leader
    /// otherwise. Unset, it is the only one and leads at once.
    #[arg(long = "replica-name", env = "ORCHESTRATOR_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// The URL the other replicas forward API requests to while this one leads [default:
    /// `http://` and the address the API listens on, with the host name for an unspecified
    /// address].
    #[arg(long = "advertise-url", env = "ORCHESTRATOR_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How long the leader's lease lasts without a renewal (ms): a dead leader is replaced
    /// within it.
    #[arg(
        long = "lease-ttl-ms",
        env = "ORCHESTRATOR_LEASE_TTL_MS",
        default_value_t = 5000
    )]
    pub lease_ttl_ms: u64,

    /// How often the leader renews its lease (ms); at most half the TTL.
    #[arg(
        long = "lease-renew-ms",
        env = "ORCHESTRATOR_LEASE_RENEW_MS",
        default_value_t = 1000
    )]
    pub lease_renew_ms: u64,
}

/// How the orchestrator runs the components of the operators applied to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ComponentsConfig {
    /// Where components run: `process` (local processes), `docker` (containers through the
    /// Docker Engine API), `kubernetes` (a Deployment per component) or `external` (the
    /// orchestrator runs nothing; components are started by the user).
    #[arg(
        long = "component-runtime",
        env = "ORCHESTRATOR_COMPONENT_RUNTIME",
        value_enum,
        default_value_t = ComponentRuntime::Process
    )]
    pub runtime: ComponentRuntime,

    /// The NATS URL given to components [default: the orchestrator's own].
    #[arg(long = "component-nats-url", env = "ORCHESTRATOR_COMPONENT_NATS_URL")]
    pub component_nats_url: Option<String>,

    /// Environment every component gets, as KEY=VALUE (comma-separated in the variable); a
    /// component's own `environmentVars` win.
    #[arg(
        long = "component-env",
        env = "ORCHESTRATOR_COMPONENT_ENV",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_key_value
    )]
    pub component_env: Vec<(String, String)>,

    /// The first delay before a replica that exited is started again; it doubles on each
    /// exit in a row.
    #[arg(
        long = "restart-backoff-ms",
        env = "ORCHESTRATOR_RESTART_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub restart_backoff_ms: u64,

    /// The longest delay before a replica that exited is started again.
    #[arg(
        long = "restart-backoff-max-ms",
        env = "ORCHESTRATOR_RESTART_BACKOFF_MAX_MS",
        default_value_t = 60_000
    )]
    pub restart_backoff_max_ms: u64,

    /// How long a replica gets to stop after SIGTERM before it is killed, in seconds.
    #[arg(
        long = "stop-grace-s",
        env = "ORCHESTRATOR_STOP_GRACE_S",
        default_value_t = 10
    )]
    pub stop_grace_s: u64,

    /// `docker`: the network component containers join (it must exist; in compose, the
    /// project's network); unset: Docker's default bridge.
    #[arg(long = "docker-network", env = "ORCHESTRATOR_DOCKER_NETWORK")]
    pub docker_network: Option<String>,

    /// `docker`: the prefix of container names and the value of their
    /// `io.operator.orchestrator` label, so that several orchestrators can share an engine.
    #[arg(
        long = "docker-prefix",
        env = "ORCHESTRATOR_DOCKER_PREFIX",
        default_value = "opr"
    )]
    pub docker_prefix: String,

    /// `docker`: stop and remove the components' containers when the orchestrator stops (as
    /// in compose, so that `compose down` leaves nothing behind); otherwise they keep running
    /// and the next orchestrator adopts them.
    #[arg(
        long = "components-stop-on-exit",
        env = "ORCHESTRATOR_COMPONENTS_STOP_ON_EXIT",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub stop_on_exit: bool,

    /// `process`: a folder where each replica's output is also appended to
    /// `<replica name>.log` (kept after the replica and the orchestrator are gone, unlike the
    /// lines `opctl logs` shows from memory).
    #[arg(long = "process-log-dir", env = "ORCHESTRATOR_PROCESS_LOG_DIR")]
    pub process_log_dir: Option<std::path::PathBuf>,

    /// `kubernetes`: the namespace of the Deployments and Secrets [default: the client's].
    #[arg(long = "kube-namespace", env = "ORCHESTRATOR_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
}

/// Parses `KEY=VALUE`, refusing a key that is not a valid variable name.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    if !operator_contract::names::is_env_var_name(key) {
        return Err(format!(
            "'{key}': variable names are letters, digits and '_', not starting with a digit"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

impl Config {
    /// What every operator runtime is started with.
    pub fn runtime_timings(&self) -> crate::runtime::RuntimeTimings {
        crate::runtime::RuntimeTimings {
            query_timeout: Duration::from_millis(self.query_timeout_ms),
            entity_idle: Duration::from_millis(self.entity_idle_ms),
        }
    }

    pub fn nats_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.nats_connect_timeout_s)
    }

    /// The NATS URL components get: the one set for them, else the orchestrator's own.
    pub fn component_nats_url(&self) -> String {
        self.components
            .component_nats_url
            .clone()
            .unwrap_or_else(|| self.nats_url.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn components_default_to_local_processes_with_the_orchestrators_nats() {
        let config = Config::parse_from(["orchestrator", "--nats-url", "nats://n:4222"]);
        assert_eq!(config.components.runtime, ComponentRuntime::Process);
        assert_eq!(config.component_nats_url(), "nats://n:4222");
    }

    #[test]
    fn component_environment_is_key_value_pairs_with_valid_names() {
        let config = Config::parse_from([
            "orchestrator",
            "--component-env",
            "A=1,B_2=x=y",
            "--component-runtime",
            "docker",
        ]);
        assert_eq!(
            config.components.component_env,
            [("A".into(), "1".into()), ("B_2".into(), "x=y".into())]
        );
        assert_eq!(config.components.runtime, ComponentRuntime::Docker);
        let refused = Config::try_parse_from(["orchestrator", "--component-env", "1A=x"]);
        assert!(refused.is_err());
        let refused = Config::try_parse_from(["orchestrator", "--component-env", "novalue"]);
        assert!(refused.is_err());
    }

    #[test]
    fn an_entity_idle_period_of_zero_is_refused_with_the_flag_named() {
        let refused = Config::try_parse_from(["orchestrator", "--entity-idle-ms", "0"])
            .expect_err("0 would check idleness without pause");
        let said = refused.to_string();
        assert!(said.contains("--entity-idle-ms"), "{said}");
        assert!(said.contains("0 is not in 1.."), "{said}");
        let taken = Config::try_parse_from(["orchestrator", "--entity-idle-ms", "100"]);
        assert_eq!(taken.expect("100 is taken").entity_idle_ms, 100);
    }
}
