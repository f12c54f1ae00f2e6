//! The component's Prometheus metrics, served as text at `GET /metrics` on `METRIC_PORT` (with
//! `GET /healthz` answering 200) when that variable is set.
//!
//! Every metric carries `operator` (the component's operator name).
//!
//! | metric | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `operator_reconciles_total` | counter | `operator`, `type`, `result` | reconciles ended, `result` one of `ok` (done, waits for a change), `requeue` (done, comes back after a delay), `retry` (failed, retried with backoff), `terminal` (failed for good, status `error` reported), `fenced` (refused: this replica no longer leads), `deleted` (clean-up finished, `deleted` published) |
//! | `operator_reconcile_errors_total` | counter | `operator`, `type`, `kind` | reconciler failures, `kind` one of `retryable`, `terminal`, `panic` |
//! | `operator_reconcile_duration_seconds` | histogram | `operator`, `type` | a reconcile's duration, error policy included |
//! | `operator_work_queue_depth` | gauge | `operator` | entities waiting for a worker |
//! | `operator_reconciles_running` | gauge | `operator` | reconciles running |
//! | `operator_commands_in_flight` | gauge | `operator` | commands handed to the controller and not yet acknowledged (or NAKed, or terminated) |
//! | `operator_commands_total` | counter | `operator`, `type`, `outcome` | commands handled by the controller, `outcome` one of `applied`, `stale` (a redelivery, acknowledged and ignored), `refused` (invalid, terminated); commands left to another replica are not counted |
//! | `operator_status_events_total` | counter | `operator`, `type` | status events published (acknowledged by JetStream) |
//! | `operator_leader` | gauge | `operator`, `replica` | 1 while this replica holds the lease, else 0 (replicated components only) |
//! | `operator_leader_term` | gauge | `operator`, `replica` | the term of this replica's latest leadership, 0 before its first |
//! | `operator_nats_reconnects_total` | counter | `operator` | connections to NATS re-established after a loss: each `Connected` event of the client that follows a `Disconnected` one (the first connection is not counted) |
//!
//! Durations use the buckets of `operator_telemetry::DURATION_BUCKETS`.

pub(crate) mod endpoint;

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Reconciles ended, by `operator`, `type` and `result`.
pub const RECONCILES_TOTAL: &str = "operator_reconciles_total";
/// Reconciler failures, by `operator`, `type` and `kind`.
pub const RECONCILE_ERRORS_TOTAL: &str = "operator_reconcile_errors_total";
/// Reconcile durations in seconds, by `operator` and `type`.
pub const RECONCILE_DURATION_SECONDS: &str = "operator_reconcile_duration_seconds";
/// Entities waiting for a worker, by `operator`.
pub const WORK_QUEUE_DEPTH: &str = "operator_work_queue_depth";
/// Reconciles running, by `operator`.
pub const RECONCILES_RUNNING: &str = "operator_reconciles_running";
/// Commands handed to the controller and not yet acknowledged, by `operator`.
pub const COMMANDS_IN_FLIGHT: &str = "operator_commands_in_flight";
/// Commands handled, by `operator`, `type` and `outcome`.
pub const COMMANDS_TOTAL: &str = "operator_commands_total";
/// Status events published, by `operator` and `type`.
pub const STATUS_EVENTS_TOTAL: &str = "operator_status_events_total";
pub use operator_election::metrics::{LEADER, LEADER_TERM};
/// Connections to NATS re-established after a loss, by `operator`.
pub const NATS_RECONNECTS_TOTAL: &str = "operator_nats_reconnects_total";

/// How a reconcile ended: the `result` label of [`RECONCILES_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReconcileLabel {
    Ok,
    Requeue,
    Retry,
    Terminal,
    Fenced,
    Deleted,
}

impl ReconcileLabel {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Requeue => "requeue",
            Self::Retry => "retry",
            Self::Terminal => "terminal",
            Self::Fenced => "fenced",
            Self::Deleted => "deleted",
        }
    }
}

/// How a reconciler failed: the `kind` label of [`RECONCILE_ERRORS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReconcileErrorKind {
    Retryable,
    Terminal,
    Panic,
}

impl ReconcileErrorKind {
    fn label(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Terminal => "terminal",
            Self::Panic => "panic",
        }
    }
}

/// What became of a command: the `outcome` label of [`COMMANDS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandResult {
    Applied,
    Stale,
    Refused,
}

impl CommandResult {
    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Refused => "refused",
        }
    }
}

/// Records the metrics of one component (one operator); cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ComponentMetrics {
    operator: Arc<str>,
}

impl ComponentMetrics {
    /// The metrics of `operator`'s component.
    pub fn new(operator: &str) -> Self {
        Self {
            operator: operator.into(),
        }
    }

    fn operator(&self) -> String {
        self.operator.to_string()
    }

    /// Gives the gauges and the reconnect counter a value at once, so a scrape shows them
    /// before anything happened.
    pub fn register(&self) {
        self.queue(0, 0);
        gauge!(COMMANDS_IN_FLIGHT, "operator" => self.operator()).set(0.0);
        counter!(NATS_RECONNECTS_TOTAL, "operator" => self.operator()).increment(0);
    }

    /// A reconcile of an entity of `resource_type` ended after `duration`.
    pub fn reconciled(&self, resource_type: &str, result: ReconcileLabel, duration: Duration) {
        counter!(
            RECONCILES_TOTAL,
            "operator" => self.operator(),
            "type" => resource_type.to_string(),
            "result" => result.label(),
        )
        .increment(1);
        histogram!(
            RECONCILE_DURATION_SECONDS,
            "operator" => self.operator(),
            "type" => resource_type.to_string(),
        )
        .record(duration.as_secs_f64());
    }

    /// The reconciler of an entity of `resource_type` failed.
    pub fn reconcile_failed(&self, resource_type: &str, kind: ReconcileErrorKind) {
        counter!(
            RECONCILE_ERRORS_TOTAL,
            "operator" => self.operator(),
            "type" => resource_type.to_string(),
            "kind" => kind.label(),
        )
        .increment(1);
    }

    /// The work queue now holds `waiting` entities and runs `running` reconciles.
    pub fn queue(&self, waiting: usize, running: usize) {
        gauge!(WORK_QUEUE_DEPTH, "operator" => self.operator()).set(waiting as f64);
        gauge!(RECONCILES_RUNNING, "operator" => self.operator()).set(running as f64);
    }

    /// A command was handed to the controller; it counts as in flight until the returned guard
    /// is dropped.
    pub fn command_handed_over(&self) -> CommandInFlight {
        let in_flight = gauge!(COMMANDS_IN_FLIGHT, "operator" => self.operator());
        in_flight.increment(1.0);
        CommandInFlight(in_flight)
    }

    /// The controller handled a command of `resource_type`.
    pub fn command_handled(&self, resource_type: &str, result: CommandResult) {
        counter!(
            COMMANDS_TOTAL,
            "operator" => self.operator(),
            "type" => resource_type.to_string(),
            "outcome" => result.label(),
        )
        .increment(1);
    }

    /// A status event of an entity of `resource_type` was published.
    pub fn status_event_published(&self, resource_type: &str) {
        counter!(
            STATUS_EVENTS_TOTAL,
            "operator" => self.operator(),
            "type" => resource_type.to_string(),
        )
        .increment(1);
    }

    /// The NATS connection came back after a loss.
    pub fn nats_reconnected(&self) {
        counter!(NATS_RECONNECTS_TOTAL, "operator" => self.operator()).increment(1);
    }
}

/// A command counted in [`COMMANDS_IN_FLIGHT`] until dropped.
pub(crate) struct CommandInFlight(metrics::Gauge);

impl Drop for CommandInFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
