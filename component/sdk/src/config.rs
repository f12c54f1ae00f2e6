//! `ComponentConfig`: every setting of a component, from flags or the seed's environment
//! variables, and its validation into the settings the SDK runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};
use operator_contract::election::election_bucket;
use operator_contract::names::validate_name;
use operator_contract::subject::{
    self, validate_stream_name, validate_subject, validate_subscription,
};
use operator_nats_auth::{
    component_inbox_prefix, NatsCredentials, NATS_CREDS_ENV, NATS_CREDS_FILE_ENV,
};
use operator_nats_cluster::parse_server_list;
use thiserror::Error;

use crate::election::ElectionSettings;

pub use operator_contract::env::{
    ELECTION_CLUSTER_NAME_ENV, ELECTION_CLUSTER_SIZE_ENV, ELECTION_LEASE_TTL_ENV,
    ELECTION_RENEW_INTERVAL_ENV, ELECTION_REPLICA_ID_ENV, ELECTION_STATE_FILE_ENV, MAX_WORKERS_ENV,
    MESSAGE_DURABILITY_ENV, MESSAGE_QUEUE_ENV, MESSAGE_STREAM_ENV, METRIC_PORT_ENV, NATS_URL_ENV,
    OPERATOR_NAME_ENV, QUERY_REPLY_SUBJECT_ENV, QUERY_SUBJECT_ENV, RESYNC_INTERVAL_ENV,
    STATE_STORE_BUCKET_ENV, STATE_STORE_TYPE_ENV,
};
/// The replication factor of the buckets the component creates [default: 3 on a cluster of three
/// or more servers, else 1]; the orchestrator sets it for the components it runs.
pub use operator_nats_cluster::COMPONENT_JETSTREAM_REPLICAS_ENV as JETSTREAM_REPLICAS_ENV;
/// The log level (`RUST_LOG` wins when both are set).
pub use operator_telemetry::LOG_LEVEL_ENV;

/// Where a component keeps its entities and statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateStoreType {
    /// In the process: lost when it stops.
    #[value(name = "memory")]
    Memory,
    /// In a JetStream KV bucket: a restarted component resumes where it was.
    #[value(name = "jetstream_kv")]
    JetStreamKv,
}

/// The settings every component shares. Flatten it into a binary's own `clap::Parser` with
/// `#[command(flatten)]`; each flag is also read from the environment variable named in it.
#[derive(Debug, Clone, Args)]
pub struct ComponentConfig {
    /// NATS server URL, or a comma-separated list of a cluster's seed servers.
    #[arg(long, env = NATS_URL_ENV, value_name = NATS_URL_ENV, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Replication factor of the KV buckets this component creates (1 to 5) [default: 3 on a
    /// NATS cluster of three or more servers, else 1]; an existing bucket with fewer is raised.
    #[arg(
        long,
        env = JETSTREAM_REPLICAS_ENV,
        value_name = JETSTREAM_REPLICAS_ENV,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub jetstream_replicas: Option<u8>,

    /// NATS user credentials, as the text of a credentials file (with NATS isolation the
    /// orchestrator sets it: a user allowed only this operator's subjects and buckets).
    #[arg(long, env = NATS_CREDS_ENV, value_name = NATS_CREDS_ENV, hide_env_values = true)]
    pub nats_creds: Option<NatsCredentials>,

    /// A NATS credentials file (used when `NATS_CREDS` is not set).
    #[arg(long, env = NATS_CREDS_FILE_ENV, value_name = NATS_CREDS_FILE_ENV)]
    pub nats_creds_file: Option<PathBuf>,

    /// Name of the operator this component serves.
    #[arg(long, env = OPERATOR_NAME_ENV, value_name = OPERATOR_NAME_ENV)]
    pub operator_name: String,

    /// Log level or filter (`RUST_LOG` wins when set).
    #[arg(long, env = LOG_LEVEL_ENV, value_name = LOG_LEVEL_ENV, default_value = "info")]
    pub log_level: String,

    /// Port serving Prometheus metrics at /metrics and /healthz; unset, none is served.
    #[arg(long, env = METRIC_PORT_ENV, value_name = METRIC_PORT_ENV)]
    pub metric_port: Option<u16>,

    /// Leader-election cluster: set, replicas elect one leader in KV bucket
    /// `election-<name>` (needs the `jetstream_kv` store); unset, the component acts alone.
    #[arg(long, env = ELECTION_CLUSTER_NAME_ENV, value_name = ELECTION_CLUSTER_NAME_ENV)]
    pub election_cluster_name: Option<String>,

    /// How many replicas are expected; `opctl get -t operator -n NAME -d` warns when fewer
    /// are alive.
    #[arg(
        long,
        env = ELECTION_CLUSTER_SIZE_ENV,
        value_name = ELECTION_CLUSTER_SIZE_ENV,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub election_cluster_size: Option<u32>,

    /// File each leadership transition of this replica is appended to (one JSON line each).
    #[arg(long = "electionStateFile", env = ELECTION_STATE_FILE_ENV, value_name = ELECTION_STATE_FILE_ENV)]
    pub election_state_file: Option<PathBuf>,

    /// This replica's name in the election [default: <hostname>-<pid>].
    #[arg(long, env = ELECTION_REPLICA_ID_ENV, value_name = ELECTION_REPLICA_ID_ENV)]
    pub election_replica_id: Option<String>,

    /// How long a lease lasts without a renewal (ms): a dead leader is replaced after at most
    /// this long.
    #[arg(
        long,
        env = ELECTION_LEASE_TTL_ENV,
        value_name = ELECTION_LEASE_TTL_ENV,
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(100..=600_000)
    )]
    pub election_lease_ttl_ms: u64,

    /// How often the leader renews its lease and every replica heartbeats (ms); at most half
    /// the TTL.
    #[arg(
        long,
        env = ELECTION_RENEW_INTERVAL_ENV,
        value_name = ELECTION_RENEW_INTERVAL_ENV,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..=300_000)
    )]
    pub election_renew_interval_ms: u64,

    /// How often the leader reconciles every entity again, to see drift on the platform
    /// (seconds; 0: never).
    #[arg(
        long,
        env = RESYNC_INTERVAL_ENV,
        value_name = RESYNC_INTERVAL_ENV,
        default_value_t = 300
    )]
    pub operator_resync_interval_s: u64,

    /// How many reconciles may run at once.
    #[arg(
        long,
        env = MAX_WORKERS_ENV,
        value_name = MAX_WORKERS_ENV,
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub operator_max_workers: u32,

    /// Where entities and statuses are kept.
    #[arg(long, env = STATE_STORE_TYPE_ENV, value_name = STATE_STORE_TYPE_ENV, value_enum, default_value_t = StateStoreType::Memory)]
    pub operator_state_store_type: StateStoreType,

    /// KV bucket of the `jetstream_kv` store [default: entities-<OPERATOR_NAME>].
    #[arg(long, env = STATE_STORE_BUCKET_ENV, value_name = STATE_STORE_BUCKET_ENV)]
    pub operator_state_store_bucket: Option<String>,

    /// `true`: a durable command consumer; `false`: one that goes away with the component.
    #[arg(
        long,
        env = MESSAGE_DURABILITY_ENV,
        value_name = MESSAGE_DURABILITY_ENV,
        default_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub message_durability: bool,

    /// Command consumer and query queue group [default: component-<OPERATOR_NAME>].
    #[arg(long, env = MESSAGE_QUEUE_ENV, value_name = MESSAGE_QUEUE_ENV)]
    pub entity_of_interest_message_queue: Option<String>,

    /// Command stream [default: operator-<OPERATOR_NAME>].
    #[arg(long, env = MESSAGE_STREAM_ENV, value_name = MESSAGE_STREAM_ENV)]
    pub entity_of_interest_message_stream: Option<String>,

    /// Query subject [default: operator.<OPERATOR_NAME>.*.query].
    #[arg(long, env = QUERY_SUBJECT_ENV, value_name = QUERY_SUBJECT_ENV)]
    pub entity_of_interest_message_query_subject: Option<String>,

    /// Subject status events are published on [default: operator.<OPERATOR_NAME>.reply].
    #[arg(long, env = QUERY_REPLY_SUBJECT_ENV, value_name = QUERY_REPLY_SUBJECT_ENV)]
    pub entity_of_interest_message_query_reply_subject: Option<String>,
}

/// A setting that cannot be used, named by its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable (and flag) at fault.
    pub variable: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// The checked settings with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub nats_url: String,
    pub nats_servers: Vec<async_nats::ServerAddr>,
    pub jetstream_replicas: Option<usize>,
    pub nats_auth: Option<NatsAuth>,
    pub operator: String,
    pub max_workers: usize,
    pub store_type: StateStoreType,
    pub store_bucket: String,
    pub durable: bool,
    pub consumer: String,
    pub command_stream: String,
    pub query_subject: String,
    pub reply_subject: String,
    pub election: Option<ElectionSettings>,
    pub resync_interval: Option<Duration>,
}

impl ComponentConfig {
    /// A configuration with every default, for `operator` (handy in tests and examples).
    pub fn for_operator(operator: &str) -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            jetstream_replicas: None,
            nats_creds: None,
            nats_creds_file: None,
            operator_name: operator.into(),
            log_level: "info".into(),
            metric_port: None,
            election_cluster_name: None,
            election_cluster_size: None,
            election_state_file: None,
            election_replica_id: None,
            election_lease_ttl_ms: 5000,
            election_renew_interval_ms: 1000,
            operator_resync_interval_s: 300,
            operator_max_workers: 4,
            operator_state_store_type: StateStoreType::Memory,
            operator_state_store_bucket: None,
            message_durability: true,
            entity_of_interest_message_queue: None,
            entity_of_interest_message_stream: None,
            entity_of_interest_message_query_subject: None,
            entity_of_interest_message_query_reply_subject: None,
        }
    }

    /// Checks every value and fills in the defaults that derive from the operator's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(|_| ())
    }

    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let operator = self.operator_name.trim().to_string();
        validate_name("operator name", &operator)
            .map_err(|e| ConfigError::new(OPERATOR_NAME_ENV, e.to_string()))?;
        let nats_url = self.nats_url.trim().to_string();
        if nats_url.is_empty() {
            return Err(ConfigError::new(NATS_URL_ENV, "must not be empty"));
        }
        let nats_servers = parse_server_list(&nats_url)
            .map_err(|e| ConfigError::new(NATS_URL_ENV, e.to_string()))?;

        let store_bucket = or_default(&self.operator_state_store_bucket, || {
            subject::default_entity_bucket(&operator)
        });
        let consumer = or_default(&self.entity_of_interest_message_queue, || {
            subject::default_command_consumer(&operator)
        });
        let command_stream = or_default(&self.entity_of_interest_message_stream, || {
            subject::default_command_stream(&operator)
        });
        let query_subject = or_default(&self.entity_of_interest_message_query_subject, || {
            subject::default_query_wildcard(&operator)
        });
        let reply_subject =
            or_default(&self.entity_of_interest_message_query_reply_subject, || {
                subject::default_reply_subject(&operator)
            });

        validate_stream_name(&store_bucket)
            .map_err(|e| ConfigError::new(STATE_STORE_BUCKET_ENV, e.to_string()))?;
        validate_stream_name(&consumer)
            .map_err(|e| ConfigError::new(MESSAGE_QUEUE_ENV, e.to_string()))?;
        validate_stream_name(&command_stream)
            .map_err(|e| ConfigError::new(MESSAGE_STREAM_ENV, e.to_string()))?;
        validate_subscription(&query_subject)
            .map_err(|e| ConfigError::new(QUERY_SUBJECT_ENV, e.to_string()))?;
        validate_subject(&reply_subject)
            .map_err(|e| ConfigError::new(QUERY_REPLY_SUBJECT_ENV, e.to_string()))?;

        let election = self.election(&operator)?;
        Ok(Settings {
            election,
            resync_interval: (self.operator_resync_interval_s > 0)
                .then(|| Duration::from_secs(self.operator_resync_interval_s)),
            nats_url,
            nats_servers,
            jetstream_replicas: self.jetstream_replicas.map(usize::from),
            nats_auth: match (&self.nats_creds, &self.nats_creds_file) {
                (Some(creds), _) => Some(NatsAuth::Credentials(creds.clone())),
                (None, Some(file)) => Some(NatsAuth::CredentialsFile(file.clone())),
                (None, None) => None,
            },
            operator,
            max_workers: self.operator_max_workers.max(1) as usize,
            store_type: self.operator_state_store_type,
            store_bucket,
            durable: self.message_durability,
            consumer,
            command_stream,
            query_subject,
            reply_subject,
        })
    }
}

/// The NATS user a component connects as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NatsAuth {
    Credentials(NatsCredentials),
    CredentialsFile(PathBuf),
}

impl Settings {
    /// `options` with the component's NATS user, if it has one, and then its own inbox prefix:
    /// the only inboxes its user may subscribe to, which no other operator's user may.
    pub(crate) async fn nats_options(
        &self,
        options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        let options = match &self.nats_auth {
            None => return Ok(options),
            Some(NatsAuth::Credentials(creds)) => options.credentials(&creds.0)?,
            Some(NatsAuth::CredentialsFile(file)) => options.credentials_file(file).await?,
        };
        Ok(options.custom_inbox_prefix(component_inbox_prefix(&self.operator)))
    }
}

impl ComponentConfig {
    fn election(&self, operator: &str) -> Result<Option<ElectionSettings>, ConfigError> {
        let cluster = match self.election_cluster_name.as_deref().map(str::trim) {
            Some(cluster) if !cluster.is_empty() => cluster.to_string(),
            _ => return Ok(None),
        };
        validate_stream_name(&election_bucket(&cluster))
            .map_err(|e| ConfigError::new(ELECTION_CLUSTER_NAME_ENV, e.to_string()))?;
        if self.operator_state_store_type != StateStoreType::JetStreamKv {
            return Err(ConfigError::new(
                STATE_STORE_TYPE_ENV,
                "replicas elect a leader (ELECTION_CLUSTER_NAME is set) and share their entities: use jetstream_kv",
            ));
        }
        let ttl = Duration::from_millis(self.election_lease_ttl_ms);
        let renew_interval = Duration::from_millis(self.election_renew_interval_ms);
        if renew_interval * 2 > ttl {
            return Err(ConfigError::new(
                ELECTION_RENEW_INTERVAL_ENV,
                format!(
                    "{} ms is more than half of {ELECTION_LEASE_TTL_ENV} ({} ms)",
                    self.election_renew_interval_ms, self.election_lease_ttl_ms
                ),
            ));
        }
        let replica = match self.election_replica_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => default_replica_id(),
        };
        Ok(Some(ElectionSettings {
            cluster,
            operator: operator.to_string(),
            replica,
            ttl,
            renew_interval,
            expected_replicas: self.election_cluster_size,
            state_file: self.election_state_file.clone(),
        }))
    }
}

/// `<hostname>-<pid>`: unique among the replicas of a host, readable in a pod.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}", std::process::id())
}

fn or_default(value: &Option<String>, default: impl FnOnce() -> String) -> String {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => default(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ComponentConfig,
    }

    fn parse(args: &[&str]) -> Result<ComponentConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("component").chain(args.iter().copied()))
            .map(|c| c.config)
    }

    #[test]
    fn defaults_derive_from_the_operator_name() {
        let config = parse(&["--operator-name", "demo"]).expect("parses");
        let settings = config.settings().expect("valid");
        assert_eq!(settings.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(settings.max_workers, 4);
        assert_eq!(settings.store_type, StateStoreType::Memory);
        assert_eq!(settings.store_bucket, "entities-demo");
        assert!(settings.durable);
        assert_eq!(settings.consumer, "component-demo");
        assert_eq!(settings.command_stream, "operator-demo");
        assert_eq!(settings.query_subject, "operator.demo.*.query");
        assert_eq!(settings.reply_subject, "operator.demo.reply");
        assert_eq!(
            config.settings(),
            ComponentConfig::for_operator("demo").settings()
        );
    }

    #[test]
    fn every_setting_can_be_given_on_the_command_line() {
        let config = parse(&[
            "--operator-name=adf",
            "--nats-url=nats://nats:4222",
            "--operator-max-workers=16",
            "--operator-state-store-type=jetstream_kv",
            "--operator-state-store-bucket=adf-entities",
            "--message-durability=false",
            "--entity-of-interest-message-queue=adf-component",
            "--entity-of-interest-message-stream=dataos-azure-entities",
            "--entity-of-interest-message-query-subject=dataos.operator.adf.query",
            "--entity-of-interest-message-query-reply-subject=dataos.operator.adf.reply",
            "--electionStateFile=/tmp/election",
            "--metric-port=9090",
        ])
        .expect("parses");
        let s = config.settings().expect("valid");
        assert_eq!(s.max_workers, 16);
        assert_eq!(s.store_type, StateStoreType::JetStreamKv);
        assert_eq!(s.store_bucket, "adf-entities");
        assert!(!s.durable);
        assert_eq!(s.consumer, "adf-component");
        assert_eq!(s.command_stream, "dataos-azure-entities");
        assert_eq!(s.query_subject, "dataos.operator.adf.query");
        assert_eq!(s.reply_subject, "dataos.operator.adf.reply");
        assert_eq!(
            config.election_state_file,
            Some(PathBuf::from("/tmp/election"))
        );
    }

    #[test]
    fn invalid_values_are_refused_naming_the_variable() {
        let err = parse(&["--operator-name=demo", "--operator-max-workers=0"])
            .expect_err("zero workers refused");
        assert!(err.to_string().contains(MAX_WORKERS_ENV), "{err}");
        let err = parse(&["--operator-name=demo", "--operator-state-store-type=redis"])
            .expect_err("unknown store refused");
        assert!(err.to_string().contains(STATE_STORE_TYPE_ENV), "{err}");

        let mut config = ComponentConfig::for_operator("Demo");
        assert_eq!(
            config.validate().map_err(|e| e.variable),
            Err(OPERATOR_NAME_ENV)
        );
        config.operator_name = "demo".into();
        config.entity_of_interest_message_query_reply_subject = Some("a.*".into());
        assert_eq!(
            config.validate().map_err(|e| e.variable),
            Err(QUERY_REPLY_SUBJECT_ENV)
        );
        config.entity_of_interest_message_query_reply_subject = None;
        config.entity_of_interest_message_stream = Some("a.b".into());
        let err = config.validate().expect_err("bad stream refused");
        assert!(err.to_string().starts_with(MESSAGE_STREAM_ENV), "{err}");
    }

    #[test]
    fn a_cluster_name_turns_the_election_on_with_its_timing() {
        let config = parse(&[
            "--operator-name=adf",
            "--election-cluster-name=azure-operators",
            "--election-cluster-size=2",
            "--operator-state-store-type=jetstream_kv",
            "--election-replica-id=pod-a",
            "--election-lease-ttl-ms=2000",
            "--election-renew-interval-ms=500",
            "--operator-resync-interval-s=0",
        ])
        .expect("parses");
        let settings = config.settings().expect("valid");
        let election = settings.election.expect("elected");
        assert_eq!(election.cluster, "azure-operators");
        assert_eq!(election.operator, "adf");
        assert_eq!(election.replica, "pod-a");
        assert_eq!(election.ttl, Duration::from_secs(2));
        assert_eq!(election.renew_interval, Duration::from_millis(500));
        assert_eq!(election.expected_replicas, Some(2));
        assert_eq!(settings.resync_interval, None);

        let alone = parse(&["--operator-name=adf"]).expect("parses");
        let settings = alone.settings().expect("valid");
        assert_eq!(settings.election, None);
        assert_eq!(settings.resync_interval, Some(Duration::from_secs(300)));
    }

    #[test]
    fn an_election_needs_the_shared_store_and_a_renewal_well_within_the_ttl() {
        let mut config = ComponentConfig::for_operator("adf");
        config.election_cluster_name = Some("azure-operators".into());
        assert_eq!(
            config.validate().map_err(|e| e.variable),
            Err(STATE_STORE_TYPE_ENV)
        );
        config.operator_state_store_type = StateStoreType::JetStreamKv;
        assert_eq!(config.validate(), Ok(()));
        config.election_renew_interval_ms = 3000;
        assert_eq!(
            config.validate().map_err(|e| e.variable),
            Err(ELECTION_RENEW_INTERVAL_ENV)
        );
        config.election_renew_interval_ms = 1000;
        config.election_cluster_name = Some("a.b".into());
        assert_eq!(
            config.validate().map_err(|e| e.variable),
            Err(ELECTION_CLUSTER_NAME_ENV)
        );
        let replica = default_replica_id();
        assert!(
            replica.ends_with(&format!("-{}", std::process::id())),
            "{replica}"
        );
    }

    #[test]
    fn query_subjects_may_use_whole_token_wildcards() {
        assert!(validate_subscription("operator.demo.*.query").is_ok());
        assert!(validate_subscription("operator.demo.>").is_ok());
        for bad in ["", "a..b", "a.b*", "a.>.b", "a b"] {
            assert!(validate_subscription(bad).is_err(), "{bad:?} accepted");
        }
    }
}
