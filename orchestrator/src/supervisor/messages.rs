//! The messages of the `ComponentSupervisor`: what the manager asks of it, and what its
//! launches, watchers and output pumps report back.

use actix::Message;
use serde::Serialize;

use super::spec::ComponentSpec;
use super::state::{Exit, Found, ReplicaId, ReplicaView};
use super::{DockerRuntimeError, LaunchError};
use crate::error::ControlError;

/// Make the running components match these specs (on apply, restore, or a secret's change).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SuperviseComponents {
    pub specs: Vec<ComponentSpec>,
    /// Start again the replicas the restart policy gave up on (the operator was re-applied).
    pub retry_exited: bool,
}

/// Stop every component and remove what is left of them; answers once they are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopComponents;

/// The state of every replica.
#[derive(Message)]
#[rtype(result = "ComponentsView")]
pub struct GetComponents;

/// The last lines each matching replica wrote.
#[derive(Message)]
#[rtype(result = "Result<Vec<ReplicaLogs>, ControlError>")]
pub struct GetComponentLogs {
    pub component: Option<String>,
    pub replica: Option<u32>,
    pub tail: usize,
}

/// The last `tail` lines of each matching replica, then every line they write from now on
/// (replicas started later included), until the caller drops the stream.
#[derive(Message)]
#[rtype(result = "Result<LogFollow, ControlError>")]
pub struct FollowComponentLogs {
    pub component: Option<String>,
    pub replica: Option<u32>,
    pub tail: usize,
}

/// The lines of a followed log.
pub type LogFollow = futures::stream::BoxStream<'static, LogLine>;

/// One line a replica wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub component: String,
    pub replica: u32,
    pub line: String,
}

/// The components as Kubernetes objects, YAML, secret values redacted.
#[derive(Message)]
#[rtype(result = "Result<String, ControlError>")]
pub struct RenderKubernetes {
    pub namespace: Option<String>,
}

/// What `opctl get -t operator -n NAME -d` shows of an operator's components.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsView {
    /// `process`, `docker`, `kubernetes` or `external`.
    pub runtime: String,
    /// Each component and the replicas asked for.
    pub desired: Vec<DesiredView>,
    pub replicas: Vec<ReplicaView>,
    /// Why nothing more can be shown, when that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One component and its replica count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredView {
    pub component: String,
    pub replicas: u32,
    pub image: String,
}

/// The output of one replica.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaLogs {
    pub component: String,
    pub replica: u32,
    pub lines: Vec<String>,
}

/// A launch finished starting: its process id or container name, or why it did not start.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReplicaLaunched {
    pub id: ReplicaId,
    pub launch: u64,
    pub result: Result<String, LaunchError>,
}

/// A launch ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReplicaExited {
    pub id: ReplicaId,
    pub launch: u64,
    pub exit: Exit,
}

/// A launch was stopped and what was left of it removed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReplicaStopped {
    pub id: ReplicaId,
    pub launch: u64,
}

/// One line a replica wrote (the `process` runtime).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReplicaOutput {
    pub id: ReplicaId,
    pub launch: u64,
    pub line: String,
}

/// Containers from before an orchestrator restart were found (the `docker` runtime).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReplicasFound {
    pub found: Result<Vec<Found>, DockerRuntimeError>,
}
