//! The daemon's configuration: every flag also read from its environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use operator_shared::telemetry::LOG_LEVEL_ENV;

/// The orchestrator: the control plane's daemon.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "The control-plane daemon: operators, resources and secrets over NATS JetStream"
)]
pub struct Config {
    /// The NATS server (JetStream enabled, version 2.10 or newer).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Where the HTTP API listens.
    #[arg(long, env = "ORCHESTRATOR_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// How long `get -d` waits for a component to answer, in milliseconds.
    #[arg(long, env = "ORCHESTRATOR_QUERY_TIMEOUT_MS", default_value_t = 3000)]
    pub query_timeout_ms: u64,

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
}

impl Config {
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn nats_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.nats_connect_timeout_s)
    }
}
