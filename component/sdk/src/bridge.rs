//! The NATS side of a component: the command consumer (JetStream pull consumer on the command
//! stream, acknowledging each command only once it is stored) and the query responder (core
//! queue subscription answering from the store).

mod commands;
mod queries;

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use thiserror::Error;

pub(crate) use commands::{CommandFeed, RunningFeed};
pub(crate) use queries::{answer_queries, subscribe_queries};

/// How long JetStream waits for an acknowledgement before redelivering a command.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a non-durable consumer outlives its last pull.
pub(crate) const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);
/// How many commands are handed over but not yet acknowledged, at most.
pub(crate) const COMMANDS_IN_FLIGHT: usize = 1024;
/// How many commands one pull request asks for.
pub(crate) const PULL_BATCH: usize = 256;

/// Why the bridge could not start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BridgeError {
    /// The query subscription could not be made.
    #[error("cannot subscribe to queries on {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    /// The command consumer could not be created or attached to.
    #[error("cannot attach consumer {consumer} to stream {stream}: {reason}")]
    Consumer {
        stream: String,
        consumer: String,
        reason: String,
    },
}

/// The command consumer's configuration: explicit acks, unlimited deliveries, and either a
/// durable consumer or one that goes away when the component has been gone a while.
pub(crate) fn consumer_config(name: &str, durable: bool) -> pull::Config {
    pull::Config {
        durable_name: durable.then(|| name.to_string()),
        name: Some(name.to_string()),
        description: Some("commands for an operator component".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: (COMMANDS_IN_FLIGHT * 4) as i64,
        inactive_threshold: if durable {
            Duration::ZERO
        } else {
            INACTIVE_THRESHOLD
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_consumer_never_expires_and_an_ephemeral_one_does() {
        let durable = consumer_config("component-demo", true);
        assert_eq!(durable.durable_name.as_deref(), Some("component-demo"));
        assert_eq!(durable.inactive_threshold, Duration::ZERO);
        assert_eq!(durable.ack_policy, AckPolicy::Explicit);
        assert_eq!(durable.max_deliver, -1);
        let ephemeral = consumer_config("component-demo", false);
        assert_eq!(ephemeral.durable_name, None);
        assert_eq!(ephemeral.name.as_deref(), Some("component-demo"));
        assert_eq!(ephemeral.inactive_threshold, INACTIVE_THRESHOLD);
    }
}
