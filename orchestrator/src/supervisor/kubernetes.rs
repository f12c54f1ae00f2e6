//! The `kubernetes` runtime: a Deployment per component (and a Service when it has ports) and
//! a Secret per referenced secret, rendered from the specs with the Kubernetes API types and
//! applied with server-side apply when a cluster is configured. Kubernetes places, restarts
//! and scales the pods; the supervisor reads their state back from the pods' status.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, LocalObjectReference, Pod,
    PodSpec, PodTemplateSpec, Secret, SecretEnvSource, SecretKeySelector, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use operator_contract::manifest::REDACTED;
use serde::Serialize;
use tracing::info;

use super::spec::{ComponentSpec, ResolvedSecret};
use super::state::{ReplicaState, ReplicaView};

/// The operator an object belongs to.
pub const LABEL_OPERATOR: &str = "operator.io/operator";
/// The component an object runs.
pub const LABEL_COMPONENT: &str = "operator.io/component";
/// Who manages the objects.
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "operator-orchestrator";
/// The pod template annotation that changes with the configuration, so pods are replaced.
const ANNOTATION_HASH: &str = "operator.io/config-hash";
/// The field manager of server-side apply.
const FIELD_MANAGER: &str = "operator-orchestrator";
/// The longest name of a Service (a DNS-1035 label).
const MAX_SERVICE_NAME: usize = 63;

/// Every object of an operator's components.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub secrets: Vec<Secret>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

fn labels(operator: &str, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_OPERATOR.to_string(), operator.to_string()),
    ]);
    if let Some(component) = component {
        labels.insert(LABEL_COMPONENT.to_string(), component.to_string());
    }
    labels
}

fn meta(name: String, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The Kubernetes Secret that holds a referenced secret for one operator.
pub fn secret_name(operator: &str, secret: &ResolvedSecret) -> String {
    format!("{operator}-{}-{}", secret.workspace, secret.name)
}

/// The Deployment of a component.
pub fn deployment_name(spec: &ComponentSpec) -> String {
    format!("{}-{}", spec.operator, spec.name)
}

/// Renders every object; with `redact`, secret values are replaced (for printing).
pub fn render(specs: &[ComponentSpec], namespace: &str, redact: bool) -> Rendered {
    let mut rendered = Rendered::default();
    let mut secrets_done = BTreeSet::new();
    for spec in specs {
        for secret in &spec.secrets {
            let name = secret_name(&spec.operator, secret);
            if !secrets_done.insert(name.clone()) {
                continue;
            }
            let data = secret
                .data
                .iter()
                .map(|(k, v)| (k.clone(), if redact { REDACTED.into() } else { v.clone() }))
                .collect();
            rendered.secrets.push(Secret {
                metadata: meta(name, namespace, labels(&spec.operator, None)),
                string_data: Some(data),
                type_: Some("Opaque".into()),
                ..Default::default()
            });
        }
        rendered.deployments.push(deployment(spec, namespace));
        if !spec.ports.is_empty() {
            rendered.services.push(service(spec, namespace));
        }
    }
    rendered
}

fn deployment(spec: &ComponentSpec, namespace: &str) -> Deployment {
    let selector = BTreeMap::from([
        (LABEL_OPERATOR.to_string(), spec.operator.clone()),
        (LABEL_COMPONENT.to_string(), spec.name.clone()),
    ]);
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    let mut env_from = Vec::new();
    for secret in &spec.secrets {
        let name = secret_name(&spec.operator, secret);
        if secret.all_keys {
            env_from.push(EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: None,
                }),
                ..Default::default()
            });
            continue;
        }
        // `env` wins over a secret's key of the same name, as it does for the other runtimes.
        for key in secret.data.keys().filter(|k| !spec.env.contains_key(*k)) {
            env.push(EnvVar {
                name: key.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: name.clone(),
                        key: key.clone(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let ports: Vec<ContainerPort> = spec
        .ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.name.clone()),
            container_port: i32::from(p.target_port),
            ..Default::default()
        })
        .collect();
    let container = Container {
        name: spec.name.clone(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.arguments.is_empty()).then(|| spec.arguments.clone()),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        ports: (!ports.is_empty()).then_some(ports),
        ..Default::default()
    };
    let mut template_labels = labels(&spec.operator, Some(&spec.name));
    template_labels.extend(selector.clone());
    Deployment {
        metadata: meta(
            deployment_name(spec),
            namespace,
            labels(&spec.operator, Some(&spec.name)),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(spec.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_HASH.to_string(),
                        spec.hash.clone(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    image_pull_secrets: spec
                        .image_pull_secret
                        .as_ref()
                        .map(|name| vec![LocalObjectReference { name: name.clone() }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(spec: &ComponentSpec, namespace: &str) -> Service {
    let mut name = deployment_name(spec);
    if name.len() > MAX_SERVICE_NAME {
        name.truncate(MAX_SERVICE_NAME);
        name = name.trim_end_matches('-').to_string();
    }
    Service {
        metadata: meta(name, namespace, labels(&spec.operator, Some(&spec.name))),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                (LABEL_OPERATOR.to_string(), spec.operator.clone()),
                (LABEL_COMPONENT.to_string(), spec.name.clone()),
            ])),
            ports: Some(
                spec.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: i32::from(p.service_port),
                        target_port: Some(IntOrString::Int(i32::from(p.target_port))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Kubernetes object that could not be rendered, applied, listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// An object could not be written as YAML.
    #[error("cannot render a {kind} as YAML: {source}")]
    RenderFailed {
        kind: String,
        #[source]
        source: serde_norway::Error,
    },
    /// The API server refused or did not answer a call on one object.
    #[error("cannot {operation} {kind} {name}: {source}")]
    ObjectFailed {
        operation: &'static str,
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Objects of a kind could not be listed.
    #[error("cannot list {kind}s: {source}")]
    ListFailed {
        kind: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl Rendered {
    /// Every object as one YAML stream, Secrets first.
    pub fn to_yaml(&self) -> Result<String, KubernetesError> {
        let mut out = String::new();
        fn push<T: Serialize + kube::Resource<DynamicType = ()>>(
            out: &mut String,
            object: &T,
        ) -> Result<(), KubernetesError> {
            out.push_str("---\n");
            let yaml = serde_norway::to_string(object).map_err(|source| {
                KubernetesError::RenderFailed {
                    kind: T::kind(&()).to_string(),
                    source,
                }
            })?;
            out.push_str(&yaml);
            Ok(())
        }
        for s in &self.secrets {
            push(&mut out, s)?;
        }
        for d in &self.deployments {
            push(&mut out, d)?;
        }
        for s in &self.services {
            push(&mut out, s)?;
        }
        Ok(out)
    }
}

/// How the `kubernetes` runtime reaches a cluster, when one is configured.
#[derive(Clone)]
pub struct KubeLauncher {
    client: Option<kube::Client>,
    pub namespace: String,
    /// Why there is no client, when there is none.
    pub unavailable: Option<String>,
}

impl KubeLauncher {
    /// A client from the in-cluster service account or `KUBECONFIG`; without either, the
    /// runtime only renders.
    pub async fn connect(namespace: Option<String>) -> Self {
        match kube::Client::try_default().await {
            Ok(client) => {
                let namespace = namespace.unwrap_or_else(|| client.default_namespace().into());
                info!(namespace = %namespace, "kubernetes runtime ready");
                Self {
                    client: Some(client),
                    namespace,
                    unavailable: None,
                }
            }
            Err(e) => Self {
                client: None,
                namespace: namespace.unwrap_or_else(|| "default".into()),
                unavailable: Some(format!(
                    "no Kubernetes cluster configured ({e}): objects are rendered only"
                )),
            },
        }
    }

    /// Applies the operator's objects and deletes those it no longer needs.
    pub async fn apply(
        &self,
        operator: &str,
        specs: &[ComponentSpec],
    ) -> Result<(), KubernetesError> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let rendered = render(specs, &self.namespace, false);
        let ns = &self.namespace;
        apply_all(
            &Api::namespaced(client.clone(), ns),
            operator,
            &rendered.secrets,
        )
        .await?;
        apply_all(
            &Api::namespaced(client.clone(), ns),
            operator,
            &rendered.deployments,
        )
        .await?;
        apply_all(
            &Api::namespaced(client.clone(), ns),
            operator,
            &rendered.services,
        )
        .await
    }

    /// The operator's pods as replicas.
    pub async fn replicas(&self, operator: &str) -> Result<Vec<ReplicaView>, KubernetesError> {
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("{LABEL_OPERATOR}={operator}")))
            .await
            .map_err(|source| KubernetesError::ListFailed {
                kind: "Pod".into(),
                source: Box::new(source),
            })?;
        let mut views: Vec<ReplicaView> = list.items.iter().map(pod_view).collect();
        views.sort_by(|a, b| (&a.component, &a.id).cmp(&(&b.component, &b.id)));
        let mut index = BTreeMap::<String, u32>::new();
        for view in &mut views {
            let next = index.entry(view.component.clone()).or_default();
            view.replica = *next;
            *next += 1;
        }
        Ok(views)
    }
}

/// Applies the operator's objects of one kind (server-side apply), then deletes those of that
/// kind it no longer has.
async fn apply_all<K>(api: &Api<K>, operator: &str, objects: &[K]) -> Result<(), KubernetesError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut keep = Vec::new();
    for object in objects {
        let name = object.meta().name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| KubernetesError::ObjectFailed {
                operation: "apply",
                kind: kind.to_string(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        keep.push(name);
    }
    let selector = format!("{LABEL_OPERATOR}={operator},{LABEL_MANAGED_BY}={MANAGED_BY}");
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| KubernetesError::ListFailed {
            kind: kind.to_string(),
            source: Box::new(source),
        })?;
    for object in existing.items {
        let name = object.meta().name.clone().unwrap_or_default();
        if !keep.contains(&name) {
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|source| KubernetesError::ObjectFailed {
                    operation: "delete",
                    kind: kind.to_string(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
        }
    }
    Ok(())
}

/// One pod as a replica: running, restarting (waiting after a crash) or exited with a code.
fn pod_view(pod: &Pod) -> ReplicaView {
    let component = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_COMPONENT).cloned())
        .unwrap_or_default();
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    let state = status.and_then(|s| s.state.as_ref());
    let last = status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let (replica_state, exit) = match state {
        Some(s) if s.running.is_some() => (ReplicaState::Running, last),
        Some(s) if s.terminated.is_some() => (ReplicaState::Exited, s.terminated.as_ref()),
        Some(s)
            if s.waiting
                .as_ref()
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff")) =>
        {
            (ReplicaState::Restarting, last)
        }
        _ => (ReplicaState::Starting, last),
    };
    ReplicaView {
        component,
        replica: 0,
        state: replica_state,
        id: pod.metadata.name.clone(),
        restarts: status
            .and_then(|s| u32::try_from(s.restart_count).ok())
            .unwrap_or(0),
        exit_code: exit.map(|t| i64::from(t.exit_code)),
        message: exit.map(|t| {
            t.reason
                .clone()
                .unwrap_or_else(|| format!("exited with code {}", t.exit_code))
        }),
        uptime_seconds: None,
        restart_in_seconds: None,
    }
}

#[cfg(test)]
#[path = "kubernetes/tests.rs"]
mod tests;

#[cfg(test)]
#[path = "kubernetes/cluster_tests.rs"]
mod cluster_tests;
