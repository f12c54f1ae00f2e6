//! The manager's side of running components: it owns the secret records, so it resolves each
//! component's secret references into values and sends the specs to the operator's
//! `ComponentSupervisor`; and it routes the component requests of the API (logs, rendered
//! Kubernetes objects) and the orchestrator's shutdown to the supervisors.

use actix::prelude::*;
use futures::future::join_all;
use operator_contract::subject::TypeSubjects;
use operator_contract::Manifest;
use tracing::{info, warn};

use super::{OperatorEntry, OperatorManager};
use crate::error::ControlError;
use crate::store::workspaced_key;
use crate::supervisor::{
    ComponentSpec, ComponentSupervisor, FollowComponentLogs, GetComponentLogs, LogFollow,
    RenderKubernetes, ReplicaLogs, ResolvedSecret, StopComponents, SuperviseComponents,
    SupervisorSetup,
};

/// The last lines of an operator's replicas.
#[derive(Message)]
#[rtype(result = "Result<Vec<ReplicaLogs>, ControlError>")]
pub struct GetOperatorLogs {
    pub operator: String,
    pub component: Option<String>,
    pub replica: Option<u32>,
    pub tail: usize,
}

/// The lines `GetOperatorLogs` names, then every new one, as a stream.
#[derive(Message)]
#[rtype(result = "Result<LogFollow, ControlError>")]
pub struct FollowOperatorLogs(pub GetOperatorLogs);

/// An operator's components as Kubernetes objects (YAML, secret values redacted).
#[derive(Message)]
#[rtype(result = "Result<String, ControlError>")]
pub struct RenderOperator {
    pub operator: String,
    pub namespace: Option<String>,
}

/// The orchestrator is stopping: stop the components where the runtime says so.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAllComponents;

impl OperatorManager {
    /// Runs operators' components with `setup` (the default runs none).
    pub fn with_components(mut self, setup: SupervisorSetup) -> Self {
        self.components = setup;
        self
    }

    pub(super) fn start_supervisor(&self, operator: &str) -> Addr<ComponentSupervisor> {
        ComponentSupervisor::new(operator.to_string(), &self.components).start()
    }

    /// The specs of an operator's components, their secrets resolved from the records here.
    fn component_specs(&self, manifest: &Manifest) -> Vec<ComponentSpec> {
        let Some(section) = &manifest.operator else {
            return Vec::new();
        };
        let subjects: Vec<TypeSubjects> = section
            .resources
            .iter()
            .map(|r| TypeSubjects::for_type(&manifest.name, r))
            .collect();
        section
            .components
            .iter()
            .map(|component| {
                let secrets = component
                    .secrets
                    .iter()
                    .filter_map(|reference| {
                        let key = workspaced_key(&reference.workspace, &reference.name);
                        let Some(stored) = self.secrets.get(&key) else {
                            warn!(operator = %manifest.name, secret = %key, "a component's secret is missing; started without it");
                            return None;
                        };
                        let data = stored
                            .record
                            .manifest
                            .secret
                            .as_ref()
                            .map(|s| s.data.clone())
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(k, _)| reference.all_keys || reference.keys.contains(k))
                            .collect();
                        Some(ResolvedSecret {
                            workspace: reference.workspace.clone(),
                            name: reference.name.clone(),
                            generation: stored.record.generation,
                            all_keys: reference.all_keys,
                            data,
                        })
                    })
                    .collect();
                ComponentSpec::build(
                    &manifest.name,
                    component,
                    subjects.iter(),
                    &self.components.defaults,
                    secrets,
                )
            })
            .collect()
    }

    /// Sends an operator's current specs to its supervisor; `retry_exited` on a re-apply.
    pub(super) fn supervise(&self, entry: &OperatorEntry, retry_exited: bool) {
        entry.supervisor.do_send(SuperviseComponents {
            specs: self.component_specs(&entry.stored.record.manifest),
            retry_exited,
        });
    }

    /// A secret changed: the operators that consume it get its new values (their replicas are
    /// replaced).
    pub(super) fn secret_changed(&self, workspace: &str, name: &str) {
        for operator in self.operators_using_secret(workspace, name) {
            if let Some(entry) = self.operators.get(&operator) {
                info!(operator = %operator, secret = %format!("{workspace}/{name}"), "secret changed; components updated");
                self.supervise(entry, false);
            }
        }
    }

    fn supervisor_of(&self, operator: &str) -> Result<Addr<ComponentSupervisor>, ControlError> {
        self.operators
            .get(operator)
            .map(|e| e.supervisor.clone())
            .ok_or_else(|| ControlError::NotFound(format!("operator {operator} not found")))
    }
}

impl Handler<GetOperatorLogs> for OperatorManager {
    type Result = ResponseFuture<Result<Vec<ReplicaLogs>, ControlError>>;

    fn handle(&mut self, msg: GetOperatorLogs, _ctx: &mut Self::Context) -> Self::Result {
        let supervisor = self.supervisor_of(&msg.operator);
        Box::pin(async move {
            supervisor?
                .send(GetComponentLogs {
                    component: msg.component,
                    replica: msg.replica,
                    tail: msg.tail,
                })
                .await?
        })
    }
}

impl Handler<FollowOperatorLogs> for OperatorManager {
    type Result = ResponseFuture<Result<LogFollow, ControlError>>;

    fn handle(&mut self, msg: FollowOperatorLogs, _ctx: &mut Self::Context) -> Self::Result {
        let FollowOperatorLogs(request) = msg;
        let supervisor = self.supervisor_of(&request.operator);
        Box::pin(async move {
            supervisor?
                .send(FollowComponentLogs {
                    component: request.component,
                    replica: request.replica,
                    tail: request.tail,
                })
                .await?
        })
    }
}

impl Handler<RenderOperator> for OperatorManager {
    type Result = ResponseFuture<Result<String, ControlError>>;

    fn handle(&mut self, msg: RenderOperator, _ctx: &mut Self::Context) -> Self::Result {
        let supervisor = self.supervisor_of(&msg.operator);
        Box::pin(async move {
            supervisor?
                .send(RenderKubernetes {
                    namespace: msg.namespace,
                })
                .await?
        })
    }
}

impl Handler<StopAllComponents> for OperatorManager {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAllComponents, _ctx: &mut Self::Context) -> Self::Result {
        if !self.components.stop_on_exit {
            return Box::pin(async {});
        }
        let stops: Vec<_> = self
            .operators
            .values()
            .map(|e| e.supervisor.send(StopComponents))
            .collect();
        info!(operators = stops.len(), "stopping every component");
        Box::pin(async move {
            join_all(stops).await;
        })
    }
}
