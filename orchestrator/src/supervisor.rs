//! `ComponentSupervisor`: one actor per operator runtime, making the running components match
//! the operator's manifest through the configured runtime — `process`, `docker`, `kubernetes`
//! or `external`. For processes and containers it owns every replica's state (`state.rs`):
//! it starts the missing ones, stops the extra ones, replaces those of an old configuration and
//! restarts those that exit, with backoff. Kubernetes does that itself from the Deployments.

mod docker;
mod kubernetes;
pub mod messages;
mod process;
pub mod spec;
mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use clap::ValueEnum;
use futures::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use crate::config::ComponentsConfig;
use crate::error::ControlError;
pub use messages::{
    ComponentsView, FollowComponentLogs, GetComponentLogs, GetComponents, LogFollow, LogLine,
    RenderKubernetes, ReplicaLogs, StopComponents, SuperviseComponents,
};
use messages::{
    DesiredView, ReplicaExited, ReplicaLaunched, ReplicaOutput, ReplicaStopped, ReplicasFound,
};
pub use spec::{ComponentDefaults, ComponentSpec, ResolvedSecret};
use state::{Action, AfterExit, Desired, ReplicaId, Replicas, RestartPolicy};

use docker::DockerLauncher;
pub use docker::DockerRuntimeError;
use kubernetes::KubeLauncher;
pub use kubernetes::KubernetesError;
pub use process::ProcessLaunchError;
use process::{ProcessHandle, ProcessLauncher};

/// Why a replica did not start, as its runtime said.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The `process` runtime could not start it.
    #[error(transparent)]
    Process(#[from] ProcessLaunchError),
    /// The `docker` runtime could not start it.
    #[error(transparent)]
    Docker(#[from] DockerRuntimeError),
}

/// The most lines of output kept per replica by the `process` runtime.
const LOG_LINES_KEPT: usize = 2000;
/// Lines a slow follower of the `process` runtime's output may fall behind before it skips.
const LOG_LINES_FOLLOWED: usize = 1024;

/// Where the orchestrator runs components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComponentRuntime {
    /// Local processes, children of the orchestrator.
    Process,
    /// Containers, through the Docker Engine API.
    Docker,
    /// A Deployment per component on a Kubernetes cluster.
    Kubernetes,
    /// Nothing: the user runs the components.
    External,
}

impl std::fmt::Display for ComponentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Process => "process",
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
            Self::External => "external",
        })
    }
}

/// The runtime every supervisor of this orchestrator uses, with what it needs to reach it.
#[derive(Clone)]
pub enum Launcher {
    Process(ProcessLauncher),
    Docker(DockerLauncher),
    Kubernetes(KubeLauncher),
    External,
}

/// What every supervisor is made with.
#[derive(Clone)]
pub struct SupervisorSetup {
    pub launcher: Launcher,
    pub policy: RestartPolicy,
    pub defaults: ComponentDefaults,
    /// Stop the components when the orchestrator stops.
    pub stop_on_exit: bool,
}

impl SupervisorSetup {
    /// Reaches the configured runtime (the Docker engine, a cluster) once, at start.
    /// Only the Docker engine can be missing at start: a missing cluster leaves the
    /// `kubernetes` runtime rendering its objects only (and says so).
    pub async fn connect(
        config: &ComponentsConfig,
        nats_url: String,
    ) -> Result<Self, DockerRuntimeError> {
        let grace = Duration::from_secs(config.stop_grace_s);
        let launcher = match config.runtime {
            ComponentRuntime::Process => Launcher::Process(
                ProcessLauncher::new(grace).with_log_dir(config.process_log_dir.clone()),
            ),
            ComponentRuntime::Docker => Launcher::Docker(
                DockerLauncher::connect(
                    config.docker_network.clone(),
                    config.docker_prefix.clone(),
                    grace,
                )
                .await?,
            ),
            ComponentRuntime::Kubernetes => {
                let launcher = KubeLauncher::connect(config.kube_namespace.clone()).await;
                if let Some(reason) = &launcher.unavailable {
                    warn!(reason = %reason, "kubernetes runtime without a cluster");
                }
                Launcher::Kubernetes(launcher)
            }
            ComponentRuntime::External => Launcher::External,
        };
        let initial = Duration::from_millis(config.restart_backoff_ms.max(1));
        Ok(Self {
            launcher,
            policy: RestartPolicy {
                initial,
                max: Duration::from_millis(config.restart_backoff_max_ms).max(initial),
                ..RestartPolicy::default()
            },
            defaults: ComponentDefaults {
                nats_url,
                env: forwarded_telemetry_env()
                    .into_iter()
                    .chain(config.component_env.iter().cloned())
                    .collect(),
                nats_signer: None,
            },
            // A process cannot outlive the orchestrator; containers and pods may.
            stop_on_exit: config.stop_on_exit || config.runtime == ComponentRuntime::Process,
        })
    }

    /// A setup that runs nothing (for operators restored before a runtime is known, tests).
    pub fn external() -> Self {
        Self {
            launcher: Launcher::External,
            policy: RestartPolicy::default(),
            defaults: ComponentDefaults::default(),
            stop_on_exit: false,
        }
    }

    /// Run by orchestrator replica `instance` (one of several): local processes are named after
    /// it.
    pub fn with_instance(mut self, instance: Option<String>) -> Self {
        if let Launcher::Process(launcher) = self.launcher {
            self.launcher = Launcher::Process(launcher.with_instance(instance));
        }
        self
    }

    /// With a signer, every component started gets its own NATS user (NATS isolation).
    pub fn with_nats_signer(
        mut self,
        signer: Option<std::sync::Arc<operator_nats_auth::AccountSigner>>,
    ) -> Self {
        self.defaults.nats_signer = signer;
        self
    }

    pub fn runtime(&self) -> ComponentRuntime {
        match self.launcher {
            Launcher::Process(_) => ComponentRuntime::Process,
            Launcher::Docker(_) => ComponentRuntime::Docker,
            Launcher::Kubernetes(_) => ComponentRuntime::Kubernetes,
            Launcher::External => ComponentRuntime::External,
        }
    }
}

/// The supervisor actor of one operator.
pub struct ComponentSupervisor {
    operator: String,
    launcher: Launcher,
    specs: Vec<ComponentSpec>,
    replicas: Replicas,
    /// The `process` runtime's running children.
    processes: HashMap<ReplicaId, ProcessHandle>,
    /// The `process` runtime's output, per replica.
    logs: BTreeMap<ReplicaId, VecDeque<String>>,
    /// The `process` runtime's output as it is written, for those following it.
    log_lines: broadcast::Sender<LogLine>,
    /// False until containers from before a restart have been looked for.
    ready: bool,
    /// The last outcome of applying to Kubernetes, when it failed or is not possible.
    kube_problem: Option<String>,
    /// Callers of `StopComponents` waiting for every replica to be gone.
    stop_waiters: Vec<oneshot::Sender<()>>,
}

impl ComponentSupervisor {
    pub fn new(operator: String, setup: &SupervisorSetup) -> Self {
        Self {
            operator,
            launcher: setup.launcher.clone(),
            specs: Vec::new(),
            replicas: Replicas::new(setup.policy),
            processes: HashMap::new(),
            logs: BTreeMap::new(),
            log_lines: broadcast::Sender::new(LOG_LINES_FOLLOWED),
            ready: false,
            kube_problem: None,
            stop_waiters: Vec::new(),
        }
    }

    fn desired(&self) -> Vec<Desired> {
        self.specs
            .iter()
            .map(|s| Desired {
                component: s.name.clone(),
                replicas: s.replicas,
                hash: s.hash.clone(),
            })
            .collect()
    }

    /// Starts and stops replicas until they match the specs (process and docker runtimes).
    fn converge(&mut self, retry_exited: bool, ctx: &mut Context<Self>) {
        if !self.ready || !matches!(self.launcher, Launcher::Process(_) | Launcher::Docker(_)) {
            return;
        }
        let actions = self
            .replicas
            .converge(&self.desired(), retry_exited, Instant::now());
        for action in actions {
            match action {
                Action::Start { id, launch, hash } => self.start(id, launch, &hash, ctx),
                Action::Stop { id, launch } => self.stop(id, launch, ctx),
            }
        }
        self.answer_stop_waiters();
    }

    fn start(&mut self, id: ReplicaId, launch: u64, hash: &str, ctx: &mut Context<Self>) {
        let Some(spec) = self
            .specs
            .iter()
            .find(|s| s.name == id.component && s.hash == hash)
            .cloned()
        else {
            return;
        };
        match &self.launcher {
            Launcher::Process(launcher) => {
                let result = launcher.spawn(&spec, &id, launch, ctx.address());
                let result = result
                    .map(|(pid, handle)| {
                        self.processes.insert(id.clone(), handle);
                        pid.to_string()
                    })
                    .map_err(LaunchError::from);
                ctx.notify(ReplicaLaunched { id, launch, result });
            }
            Launcher::Docker(docker) => {
                let docker = docker.clone();
                let addr = ctx.address();
                actix::spawn(async move {
                    let result = docker.start(&spec, &id).await.map_err(LaunchError::from);
                    addr.do_send(ReplicaLaunched { id, launch, result });
                });
            }
            Launcher::Kubernetes(_) | Launcher::External => {}
        }
    }

    fn stop(&mut self, id: ReplicaId, launch: u64, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        match &self.launcher {
            Launcher::Process(_) => {
                let handle = self.processes.remove(&id);
                actix::spawn(async move {
                    if let Some(handle) = handle {
                        handle.stop().await;
                    }
                    addr.do_send(ReplicaStopped { id, launch });
                });
            }
            Launcher::Docker(docker) => {
                let docker = docker.clone();
                let name = docker.container_name(&self.operator, &id);
                actix::spawn(async move {
                    if let Err(e) = docker.stop(&name).await {
                        warn!(container = %name, error = %e, "container not removed");
                    }
                    addr.do_send(ReplicaStopped { id, launch });
                });
            }
            Launcher::Kubernetes(_) | Launcher::External => {}
        }
    }

    /// Watches a container until it stops (the `docker` runtime).
    fn watch_container(&self, id: ReplicaId, launch: u64, ctx: &mut Context<Self>) {
        if let Launcher::Docker(docker) = &self.launcher {
            let docker = docker.clone();
            let name = docker.container_name(&self.operator, &id);
            let addr = ctx.address();
            actix::spawn(async move {
                let exit = docker.wait(&name).await;
                addr.do_send(ReplicaExited { id, launch, exit });
            });
        }
    }

    fn note(&mut self, id: &ReplicaId, line: String) {
        if matches!(self.launcher, Launcher::Process(_)) {
            self.keep_line(id.clone(), format!("[orchestrator] {line}"));
        }
    }

    /// Keeps a line of the `process` runtime's output and hands it to its followers.
    fn keep_line(&mut self, id: ReplicaId, line: String) {
        // No follower is not an error.
        let _ = self.log_lines.send(LogLine {
            component: id.component.clone(),
            replica: id.index,
            line: line.clone(),
        });
        let lines = self.logs.entry(id).or_default();
        lines.push_back(line);
        while lines.len() > LOG_LINES_KEPT {
            lines.pop_front();
        }
    }

    /// The replicas a logs request names.
    fn replicas_matching(&self, component: Option<&str>, replica: Option<u32>) -> Vec<ReplicaId> {
        self.replicas
            .views(Instant::now())
            .into_iter()
            .map(|v| ReplicaId {
                component: v.component,
                index: v.replica,
            })
            .filter(|id| log_request_matches(component, replica, &id.component, id.index))
            .collect()
    }

    /// Why this runtime has no logs to give, if it has none.
    fn no_logs(&self) -> Option<ControlError> {
        match &self.launcher {
            Launcher::Process(_) | Launcher::Docker(_) => None,
            Launcher::Kubernetes(_) => Some(ControlError::invalid(format!(
                "the kubernetes runtime keeps no logs here: kubectl logs -l {}={}",
                kubernetes::LABEL_OPERATOR,
                self.operator
            ))),
            Launcher::External => Some(ControlError::invalid(
                "the orchestrator runs no component (external runtime), so it has no logs",
            )),
        }
    }

    /// Applies the specs to Kubernetes, in the background.
    fn apply_to_kubernetes(&mut self, ctx: &mut Context<Self>) {
        let Launcher::Kubernetes(kube) = &self.launcher else {
            return;
        };
        self.kube_problem = kube.unavailable.clone();
        let (kube, operator, specs) = (kube.clone(), self.operator.clone(), self.specs.clone());
        async move { kube.apply(&operator, &specs).await }
            .into_actor(self)
            .map(|result, act, _| match result {
                Ok(()) => info!(operator = %act.operator, "components applied to kubernetes"),
                Err(e) => {
                    warn!(operator = %act.operator, error = %e, "components not applied to kubernetes");
                    act.kube_problem = Some(e.to_string());
                }
            })
            .wait(ctx);
    }

    fn answer_stop_waiters(&mut self) {
        if self.specs.is_empty() && self.replicas.is_empty() {
            for waiter in self.stop_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for ComponentSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Launcher::Docker(docker) = &self.launcher else {
            self.ready = true;
            return;
        };
        let (docker, operator, addr) = (docker.clone(), self.operator.clone(), ctx.address());
        actix::spawn(async move {
            let found = docker.find(&operator).await;
            addr.do_send(ReplicasFound { found });
        });
    }
}

impl Handler<ReplicasFound> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReplicasFound, ctx: &mut Self::Context) {
        match msg.found {
            Ok(found) => {
                info!(operator = %self.operator, containers = found.len(), "existing containers found");
                for (id, launch) in self.replicas.adopt(found, Instant::now()) {
                    self.watch_container(id, launch, ctx);
                }
            }
            Err(e) => {
                warn!(operator = %self.operator, error = %e, "cannot look for existing containers")
            }
        }
        self.ready = true;
        self.converge(false, ctx);
    }
}

impl Handler<SuperviseComponents> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SuperviseComponents, ctx: &mut Self::Context) {
        self.specs = msg.specs;
        info!(
            operator = %self.operator,
            components = self.specs.len(),
            replicas = self.specs.iter().map(|s| s.replicas).sum::<u32>(),
            "components supervised"
        );
        self.apply_to_kubernetes(ctx);
        self.converge(msg.retry_exited, ctx);
    }
}

impl Handler<StopComponents> for ComponentSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopComponents, ctx: &mut Self::Context) -> Self::Result {
        self.specs.clear();
        if let Launcher::Kubernetes(kube) = &self.launcher {
            let (kube, operator) = (kube.clone(), self.operator.clone());
            return Box::pin(async move {
                if let Err(e) = kube.apply(&operator, &[]).await {
                    warn!(operator = %operator, error = %e, "components not removed from kubernetes");
                }
            });
        }
        let (done, stopped) = oneshot::channel();
        self.stop_waiters.push(done);
        if matches!(self.launcher, Launcher::External) {
            self.answer_stop_waiters();
        }
        // Before containers from an earlier orchestrator are found this waits for them too.
        self.converge(false, ctx);
        Box::pin(async move {
            let _ = stopped.await;
        })
    }
}

impl Handler<ReplicaLaunched> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaLaunched, ctx: &mut Self::Context) {
        let ReplicaLaunched { id, launch, result } = msg;
        match result {
            Ok(handle_id) => {
                info!(operator = %self.operator, replica = %id, id = %handle_id, "replica started");
                self.note(&id, format!("replica {id} started ({handle_id})"));
                self.replicas
                    .started(&id, launch, handle_id, Instant::now());
                self.watch_container(id, launch, ctx);
                // It may have been scaled away while it started.
                self.converge(false, ctx);
            }
            Err(error) => {
                let exit = state::Exit {
                    code: None,
                    reason: error.to_string(),
                };
                ctx.notify(ReplicaExited { id, launch, exit });
            }
        }
    }
}

impl Handler<ReplicaExited> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaExited, ctx: &mut Self::Context) {
        let ReplicaExited { id, launch, exit } = msg;
        let reason = exit.reason.clone();
        match self.replicas.exited(&id, launch, exit, Instant::now()) {
            AfterExit::RestartIn(delay) => {
                if let Launcher::Process(_) = self.launcher {
                    self.processes.remove(&id);
                }
                warn!(operator = %self.operator, replica = %id, reason = %reason, restart_in_ms = delay.as_millis() as u64, "replica exited; restarting");
                self.note(&id, format!("{reason}; restarting in {delay:?}"));
                ctx.run_later(delay, |act, ctx| act.converge(false, ctx));
            }
            AfterExit::GaveUp => {
                self.processes.remove(&id);
                warn!(operator = %self.operator, replica = %id, reason = %reason, "replica exited too often; not restarted until the operator is applied again");
                self.note(&id, format!("{reason}; exited too often, not restarted until the operator is applied again"));
            }
            AfterExit::Ignored => {}
        }
    }
}

impl Handler<ReplicaStopped> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaStopped, ctx: &mut Self::Context) {
        info!(operator = %self.operator, replica = %msg.id, "replica stopped");
        self.replicas.stopped(&msg.id, msg.launch);
        if self.replicas.get(&msg.id).is_none() {
            self.logs.remove(&msg.id);
        }
        self.converge(false, ctx);
    }
}

impl Handler<ReplicaOutput> for ComponentSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaOutput, _ctx: &mut Self::Context) {
        if self
            .replicas
            .get(&msg.id)
            .is_none_or(|r| r.launch != msg.launch)
        {
            return;
        }
        self.keep_line(msg.id, msg.line);
    }
}

impl Handler<GetComponents> for ComponentSupervisor {
    type Result = ResponseFuture<ComponentsView>;

    fn handle(&mut self, _: GetComponents, _ctx: &mut Self::Context) -> Self::Result {
        let desired = self
            .specs
            .iter()
            .map(|s| DesiredView {
                component: s.name.clone(),
                replicas: s.replicas,
                image: s.image.clone(),
            })
            .collect();
        let mut view = ComponentsView {
            runtime: String::new(),
            desired,
            replicas: Vec::new(),
            message: None,
        };
        match &self.launcher {
            Launcher::Process(_) | Launcher::Docker(_) => {
                view.runtime = if matches!(self.launcher, Launcher::Process(_)) {
                    ComponentRuntime::Process
                } else {
                    ComponentRuntime::Docker
                }
                .to_string();
                view.replicas = self.replicas.views(Instant::now());
                Box::pin(async move { view })
            }
            Launcher::External => {
                view.runtime = ComponentRuntime::External.to_string();
                view.message = Some("the orchestrator runs no component (external runtime): start them yourself with the NATS wiring below".into());
                Box::pin(async move { view })
            }
            Launcher::Kubernetes(kube) => {
                view.runtime = ComponentRuntime::Kubernetes.to_string();
                view.message = self.kube_problem.clone();
                let (kube, operator) = (kube.clone(), self.operator.clone());
                Box::pin(async move {
                    match kube.replicas(&operator).await {
                        Ok(replicas) => view.replicas = replicas,
                        Err(e) => view.message = Some(e.to_string()),
                    }
                    view
                })
            }
        }
    }
}

/// Whether a replica is one a logs request for `component` and `replica` names.
fn log_request_matches(
    component: Option<&str>,
    replica: Option<u32>,
    of_component: &str,
    index: u32,
) -> bool {
    component.is_none_or(|c| c == of_component) && replica.is_none_or(|r| r == index)
}

impl Handler<GetComponentLogs> for ComponentSupervisor {
    type Result = ResponseFuture<Result<Vec<ReplicaLogs>, ControlError>>;

    fn handle(&mut self, msg: GetComponentLogs, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.no_logs() {
            return Box::pin(async move { Err(refusal) });
        }
        let ids = self.replicas_matching(msg.component.as_deref(), msg.replica);
        let tail = msg.tail;
        match &self.launcher {
            Launcher::Docker(docker) => {
                let (docker, operator) = (docker.clone(), self.operator.clone());
                Box::pin(async move {
                    let mut logs = Vec::new();
                    for id in ids {
                        let name = docker.container_name(&operator, &id);
                        let lines = docker
                            .logs(&name, tail)
                            .await
                            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
                        logs.push(ReplicaLogs {
                            component: id.component,
                            replica: id.index,
                            lines,
                        });
                    }
                    Ok(logs)
                })
            }
            _ => {
                let logs = ids
                    .into_iter()
                    .map(|id| ReplicaLogs {
                        lines: self.kept_lines(&id, tail),
                        component: id.component,
                        replica: id.index,
                    })
                    .collect();
                Box::pin(async move { Ok(logs) })
            }
        }
    }
}

impl ComponentSupervisor {
    /// The last `tail` lines kept of a `process` replica.
    fn kept_lines(&self, id: &ReplicaId, tail: usize) -> Vec<String> {
        let kept = self.logs.get(id);
        let skip = kept.map_or(0, |l| l.len().saturating_sub(tail));
        kept.map(|l| l.iter().skip(skip).cloned().collect())
            .unwrap_or_default()
    }
}

impl Handler<FollowComponentLogs> for ComponentSupervisor {
    type Result = Result<LogFollow, ControlError>;

    fn handle(&mut self, msg: FollowComponentLogs, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.no_logs() {
            return Err(refusal);
        }
        let ids = self.replicas_matching(msg.component.as_deref(), msg.replica);
        if let Launcher::Docker(docker) = &self.launcher {
            // Docker follows each container from its tail on; the streams end as they go.
            let followed = ids.into_iter().map(|id| {
                let name = docker.container_name(&self.operator, &id);
                docker
                    .follow(&name, msg.tail)
                    .map(move |line| LogLine {
                        component: id.component.clone(),
                        replica: id.index,
                        line: line.unwrap_or_else(|e| format!("[orchestrator] {e}")),
                    })
                    .boxed()
            });
            return Ok(futures::stream::select_all(followed).boxed());
        }
        // The tail and the subscription are taken in one turn of the actor: no line falls
        // between them, none is sent twice.
        let tail: Vec<LogLine> = ids
            .iter()
            .flat_map(|id| {
                self.kept_lines(id, msg.tail)
                    .into_iter()
                    .map(|line| LogLine {
                        component: id.component.clone(),
                        replica: id.index,
                        line,
                    })
            })
            .collect();
        let (component, replica) = (msg.component, msg.replica);
        let live = futures::stream::unfold(self.log_lines.subscribe(), |mut lines| async move {
            let next = match lines.recv().await {
                Ok(line) => line,
                Err(broadcast::error::RecvError::Lagged(skipped)) => LogLine {
                    component: String::new(),
                    replica: 0,
                    line: format!(
                        "[orchestrator] {skipped} lines skipped: this reader fell behind"
                    ),
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((next, lines))
        })
        .filter(move |line| {
            futures::future::ready(
                line.component.is_empty()
                    || log_request_matches(
                        component.as_deref(),
                        replica,
                        &line.component,
                        line.replica,
                    ),
            )
        });
        Ok(futures::stream::iter(tail).chain(live).boxed())
    }
}

impl Handler<RenderKubernetes> for ComponentSupervisor {
    type Result = Result<String, ControlError>;

    fn handle(&mut self, msg: RenderKubernetes, _ctx: &mut Self::Context) -> Self::Result {
        let namespace = msg.namespace.unwrap_or_else(|| match &self.launcher {
            Launcher::Kubernetes(kube) => kube.namespace.clone(),
            _ => "default".into(),
        });
        kubernetes::render(&self.specs, &namespace, true)
            .to_yaml()
            .map_err(|e| ControlError::Internal(e.to_string()))
    }
}

/// The orchestrator's own OTLP settings (endpoint, protocol, sampler), handed to the
/// components it starts so that their spans join the same traces in the same place.
/// `ORCHESTRATOR_COMPONENT_ENV` and the manifest's `environmentVars` override them.
fn forwarded_telemetry_env() -> Vec<(String, String)> {
    operator_telemetry::FORWARDED_OTEL_ENV
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect()
}
