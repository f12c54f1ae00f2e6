//! The `docker` runtime: each replica is a container made from the component's `image`
//! through the Docker Engine API, on the configured network, named
//! `<prefix>-<operator>-<component>-<index>` and labelled with its operator, component,
//! replica and configuration hash, so that a restarted orchestrator finds and adopts it.
//! Docker's own restart policy is off: the supervisor restarts replicas, with its backoff.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tracing::{info, warn};

use super::spec::ComponentSpec;
use super::state::{Exit, Found, ReplicaId};

/// The orchestrator (prefix) a container belongs to.
pub const LABEL_ORCHESTRATOR: &str = "io.operator.orchestrator";
/// The operator a container runs a component of.
pub const LABEL_OPERATOR: &str = "io.operator.operator";
/// The component a container runs.
pub const LABEL_COMPONENT: &str = "io.operator.component";
/// The replica index of a container.
pub const LABEL_REPLICA: &str = "io.operator.replica";
/// The configuration hash a container was made with.
pub const LABEL_HASH: &str = "io.operator.config-hash";

/// A Docker Engine call that failed, named after what it was for; the engine's answer is kept
/// as the source.
#[derive(Debug, thiserror::Error)]
pub enum DockerRuntimeError {
    /// The engine did not answer, or agreed on no API version.
    #[error("cannot reach the Docker engine: {source}")]
    EngineUnreachable {
        #[source]
        source: DockerError,
    },
    /// The configured network is missing or cannot be inspected.
    #[error("docker network {network}: {source}")]
    NetworkUnavailable {
        network: String,
        #[source]
        source: DockerError,
    },
    /// The orchestrator's containers could not be listed.
    #[error("cannot list containers: {source}")]
    ListFailed {
        #[source]
        source: DockerError,
    },
    /// An operation on one container (inspect, create, start, remove) failed.
    #[error("cannot {operation} container {name}: {source}")]
    ContainerFailed {
        operation: &'static str,
        name: String,
        #[source]
        source: DockerError,
    },
    /// The image could not be inspected.
    #[error("cannot inspect image {image}: {source}")]
    ImageInspectFailed {
        image: String,
        #[source]
        source: DockerError,
    },
    /// The image is absent and could not be pulled (there may be no registry).
    #[error(
        "image {image} is not present and cannot be pulled: {source} (build it: bash deploy/build-images.sh)"
    )]
    ImageUnavailable {
        image: String,
        #[source]
        source: DockerError,
    },
    /// A container's logs could not be read.
    #[error("cannot read the logs of {name}: {source}")]
    LogsFailed {
        name: String,
        #[source]
        source: DockerError,
    },
}

impl DockerRuntimeError {
    fn container(operation: &'static str, name: &str) -> impl FnOnce(DockerError) -> Self {
        let name = name.to_string();
        move |source| Self::ContainerFailed {
            operation,
            name,
            source,
        }
    }
}

/// How the `docker` runtime reaches the engine and places containers.
#[derive(Clone)]
pub struct DockerLauncher {
    docker: Docker,
    network: Option<String>,
    prefix: String,
    grace: Duration,
}

impl DockerLauncher {
    /// Connects to the engine (`DOCKER_HOST`, or the local socket), agrees on an API version
    /// and checks that the network exists.
    pub async fn connect(
        network: Option<String>,
        prefix: String,
        grace: Duration,
    ) -> Result<Self, DockerRuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|source| DockerRuntimeError::EngineUnreachable { source })?
            .negotiate_version()
            .await
            .map_err(|source| DockerRuntimeError::EngineUnreachable { source })?;
        if let Some(network) = &network {
            docker
                .inspect_network(network, None)
                .await
                .map_err(|source| DockerRuntimeError::NetworkUnavailable {
                    network: network.clone(),
                    source,
                })?;
        }
        info!(api_version = %docker.client_version(), network = ?network, "docker runtime ready");
        Ok(Self {
            docker,
            network,
            prefix,
            grace,
        })
    }

    /// The container name of a replica.
    pub fn container_name(&self, operator: &str, id: &ReplicaId) -> String {
        format!("{}-{operator}-{}-{}", self.prefix, id.component, id.index)
    }

    fn labels_filter(&self, operator: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_ORCHESTRATOR}={}", self.prefix),
                format!("{LABEL_OPERATOR}={operator}"),
            ],
        )])
    }

    /// The operator's containers that exist already, running or not.
    pub async fn find(&self, operator: &str) -> Result<Vec<Found>, DockerRuntimeError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&self.labels_filter(operator))
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| DockerRuntimeError::ListFailed { source })?;
        let mut found = Vec::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let (Some(component), Some(index), Some(hash)) = (
                labels.get(LABEL_COMPONENT),
                labels.get(LABEL_REPLICA).and_then(|i| i.parse().ok()),
                labels.get(LABEL_HASH),
            ) else {
                continue;
            };
            let running = matches!(
                c.state,
                Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
            );
            let name = c
                .names
                .and_then(|n| n.first().cloned())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            found.push(Found {
                id: ReplicaId {
                    component: component.clone(),
                    index,
                },
                hash: hash.clone(),
                handle_id: name,
                exit: (!running).then(|| Exit {
                    code: None,
                    reason: c.status.unwrap_or_else(|| "exited".into()),
                }),
            });
        }
        Ok(found)
    }

    /// Starts a replica: its stopped container again when it has this configuration, else a
    /// new container. Returns the container's name.
    pub async fn start(
        &self,
        spec: &ComponentSpec,
        id: &ReplicaId,
    ) -> Result<String, DockerRuntimeError> {
        let name = self.container_name(&spec.operator, id);
        match self.docker.inspect_container(&name, None).await {
            Ok(existing) => {
                let same = existing
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(LABEL_HASH))
                    == Some(&spec.hash);
                let running = existing
                    .state
                    .as_ref()
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                match (same, running) {
                    (true, true) => return Ok(name),
                    (true, false) => {
                        self.docker
                            .start_container(&name, None)
                            .await
                            .map_err(DockerRuntimeError::container("start", &name))?;
                        return Ok(name);
                    }
                    (false, _) => self.remove(&name).await?,
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(DockerRuntimeError::ContainerFailed {
                    operation: "inspect",
                    name,
                    source,
                })
            }
        }
        self.ensure_image(&spec.image).await?;
        let body = self.container_body(spec, id);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(DockerRuntimeError::container("create", &name))?;
        self.docker
            .start_container(&name, None)
            .await
            .map_err(DockerRuntimeError::container("start", &name))?;
        Ok(name)
    }

    fn container_body(&self, spec: &ComponentSpec, id: &ReplicaId) -> ContainerCreateBody {
        let labels = HashMap::from([
            (LABEL_ORCHESTRATOR.to_string(), self.prefix.clone()),
            (LABEL_OPERATOR.to_string(), spec.operator.clone()),
            (LABEL_COMPONENT.to_string(), spec.name.clone()),
            (LABEL_REPLICA.to_string(), id.index.to_string()),
            (LABEL_HASH.to_string(), spec.hash.clone()),
        ]);
        let alias = format!("{}-{}", spec.operator, spec.name);
        let name = self.container_name(&spec.operator, id);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            // A hostname is at most 63 characters; the full name is in ELECTION_REPLICA_ID.
            hostname: Some(
                name.chars()
                    .take(63)
                    .collect::<String>()
                    .trim_end_matches('-')
                    .to_string(),
            ),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.arguments.is_empty()).then(|| spec.arguments.clone()),
            env: Some(
                spec.replica_env(&name)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(labels),
            stop_timeout: i64::try_from(self.grace.as_secs()).ok(),
            host_config: Some(HostConfig {
                network_mode: self.network.clone(),
                ..Default::default()
            }),
            networking_config: self.network.as_ref().map(|network| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![alias]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    /// Makes sure the image is there: pulled when it is not (which fails with no registry).
    async fn ensure_image(&self, image: &str) -> Result<(), DockerRuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(DockerRuntimeError::ImageInspectFailed {
                    image: image.to_string(),
                    source,
                })
            }
        }
        info!(image, "image not present; pulling it");
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            step.map_err(|source| DockerRuntimeError::ImageUnavailable {
                image: image.to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Resolves when the container stops, with its exit.
    pub async fn wait(&self, name: &str) -> Exit {
        loop {
            let options = WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build();
            let mut wait = self.docker.wait_container(name, Some(options));
            match wait.next().await {
                Some(Ok(response)) => return container_exit(response.status_code),
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                    return container_exit(code)
                }
                // The engine answers a long wait with a client-side timeout: wait again.
                Some(Err(DockerError::RequestTimeoutError)) => continue,
                Some(Err(e)) if is_not_found(&e) => {
                    return Exit {
                        code: None,
                        reason: "the container was removed".into(),
                    }
                }
                Some(Err(e)) => {
                    warn!(container = %name, error = %e, "lost track of a container");
                    return Exit {
                        code: None,
                        reason: format!("lost track of the container: {e}"),
                    };
                }
                None => continue,
            }
        }
    }

    /// Stops (SIGTERM, SIGKILL after the grace period) and removes a container.
    pub async fn stop(&self, name: &str) -> Result<(), DockerRuntimeError> {
        let grace = i32::try_from(self.grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(grace).build();
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) || is_not_modified(&e) => {}
            Err(e) => warn!(container = %name, error = %e, "cannot stop container; removing it"),
        }
        self.remove(name).await
    }

    async fn remove(&self, name: &str) -> Result<(), DockerRuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DockerRuntimeError::ContainerFailed {
                operation: "remove",
                name: name.to_string(),
                source,
            }),
        }
    }

    /// The last `tail` lines a container wrote, then each line it writes, until it is removed.
    pub fn follow(
        &self,
        name: &str,
        tail: usize,
    ) -> futures::stream::BoxStream<'static, Result<String, DockerRuntimeError>> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail.to_string())
            .build();
        let name = name.to_string();
        self.docker
            .logs(&name, Some(options))
            .take_while(|chunk| futures::future::ready(!matches!(chunk, Err(e) if is_not_found(e))))
            .flat_map(move |chunk| {
                let lines: Vec<Result<String, DockerRuntimeError>> = match chunk {
                    // Docker frames the output a line at a time.
                    Ok(output) => output
                        .to_string()
                        .lines()
                        .map(|line| Ok(line.to_string()))
                        .collect(),
                    Err(source) => vec![Err(DockerRuntimeError::LogsFailed {
                        name: name.clone(),
                        source,
                    })],
                };
                futures::stream::iter(lines)
            })
            .boxed()
    }

    /// The last `tail` lines a container wrote.
    pub async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, DockerRuntimeError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(output) => text.push_str(&output.to_string()),
                Err(e) if is_not_found(&e) => break,
                Err(source) => {
                    return Err(DockerRuntimeError::LogsFailed {
                        name: name.to_string(),
                        source,
                    })
                }
            }
        }
        Ok(text.lines().map(str::to_string).collect())
    }
}

fn container_exit(code: i64) -> Exit {
    Exit {
        code: Some(code),
        reason: format!("exited with code {code}"),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}
