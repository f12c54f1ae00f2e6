//! The `operator` section: the components that run the operator's logic, the resource types it
//! manages with their JSON Schemas and NATS API, its messaging domain and enabled workspaces.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::scalar::scalar_map;
use crate::names::{is_env_var_name, validate_image_reference, validate_name, MAX_PORT_NAME_LEN};
use crate::schema::SpecSchema;
use crate::{env, subject};

/// The Operator-specific section of a manifest of type `operator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorSection {
    pub nats_cluster_config: NatsClusterConfig,
    pub components: Vec<Component>,
    pub resources: Vec<ResourceType>,
    pub enabled_workspaces: Vec<String>,
}

/// The operator's isolated messaging domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsClusterConfig {
    pub name: String,
    pub compute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_api_key: Option<String>,
}

/// Whether a component is a long-running service or a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Service,
    Worker,
}

/// A computational component: the process that reconciles the operator's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ComponentKind,
    pub compute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<String>,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    pub replicas: u32,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub environment_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

/// How a component consumes a referenced secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ConsumptionType {
    #[default]
    EnvVars,
}

/// A reference from a component to a Secret resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub workspace: String,
    #[serde(default)]
    pub all_keys: bool,
    /// The keys to consume when `allKeys` is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default)]
    pub consumption_type: ConsumptionType,
}

/// A port a component exposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub service_port: u16,
    pub target_port: u16,
}

/// A type of resource the operator manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceType {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_jq_filter: Option<String>,
    #[serde(default)]
    pub is_runnable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_schema: Option<SpecSchemaSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_api: Option<NatsApi>,
}

/// The JSON Schema a resource's `spec` must satisfy, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecSchemaSource {
    pub json_schema: String,
}

/// The subjects a resource type's commands and queries travel on, overriding the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsApi {
    pub command: CommandApi,
    pub query: QueryApi,
}

/// Where commands go: a JetStream stream and the subject it captures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandApi {
    pub stream: String,
    pub subject: String,
}

/// Where queries go, and where components publish replies and status events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryApi {
    pub subject: String,
    pub reply_subject: String,
}

type Failure = (String, String);

fn name_failure(path: String) -> impl Fn(crate::names::NameError) -> Failure {
    move |e| (path.clone(), e.to_string())
}

/// The component variables whose values become NATS subjects, stream, consumer or bucket
/// names: refused at apply, rather than by every replica at its start.
fn check_nats_variable(key: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.is_empty() {
        // The component falls back on its default.
        return Ok(());
    }
    match key {
        env::MESSAGE_STREAM_ENV | env::MESSAGE_QUEUE_ENV | env::STATE_STORE_BUCKET_ENV => {
            subject::validate_stream_name(value)
        }
        env::ELECTION_CLUSTER_NAME_ENV => {
            subject::validate_stream_name(&crate::election::election_bucket(value))
        }
        env::QUERY_SUBJECT_ENV => subject::validate_subscription(value),
        env::QUERY_REPLY_SUBJECT_ENV => subject::validate_subject(value),
        env::SHARED_BUCKETS_ENV => return env::shared_buckets(value).map(drop),
        _ => Ok(()),
    }
    .map_err(|e| e.to_string())
}

impl OperatorSection {
    /// Checks names, uniqueness, replica counts, subjects and that every schema compiles.
    pub(super) fn check(&self) -> Result<(), Failure> {
        validate_name("natsClusterConfig name", &self.nats_cluster_config.name)
            .map_err(name_failure("natsClusterConfig.name".into()))?;
        if self.resources.is_empty() {
            return Err((
                "resources".into(),
                "an operator manages at least one resource type".into(),
            ));
        }
        if self.enabled_workspaces.is_empty() {
            return Err((
                "enabledWorkspaces".into(),
                "list at least one workspace".into(),
            ));
        }
        for (i, ws) in self.enabled_workspaces.iter().enumerate() {
            validate_name("workspace", ws)
                .map_err(name_failure(format!("enabledWorkspaces[{i}]")))?;
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.components.iter().enumerate() {
            let at = |field: &str| format!("components[{i}].{field}");
            validate_name("component name", &c.name).map_err(name_failure(at("name")))?;
            if !seen.insert(c.name.as_str()) {
                return Err((
                    at("name"),
                    format!("component '{}' is listed twice", c.name),
                ));
            }
            validate_image_reference(&c.image).map_err(|reason| (at("image"), reason))?;
            for (j, port) in c.ports.iter().enumerate() {
                let at = format!("components[{i}].ports[{j}].name");
                validate_name("port name", &port.name).map_err(name_failure(at.clone()))?;
                if port.name.len() > MAX_PORT_NAME_LEN {
                    return Err((
                        at,
                        format!(
                            "port name '{}' is longer than {MAX_PORT_NAME_LEN} characters",
                            port.name
                        ),
                    ));
                }
            }
            for (j, s) in c.secrets.iter().enumerate() {
                let at = |field: &str| format!("components[{i}].secrets[{j}].{field}");
                validate_name("secret name", &s.name).map_err(name_failure(at("name")))?;
                validate_name("workspace", &s.workspace).map_err(name_failure(at("workspace")))?;
                if !s.all_keys && s.keys.is_empty() {
                    return Err((
                        at("keys"),
                        "list the keys to consume, or set allKeys: true".into(),
                    ));
                }
            }
            for (key, value) in &c.environment_vars {
                let at = at(&format!("environmentVars.{key}"));
                if !is_env_var_name(key) {
                    return Err((
                        at,
                        "variable names are letters, digits and '_', not starting with a digit"
                            .into(),
                    ));
                }
                check_nats_variable(key, value).map_err(|reason| (at, reason))?;
            }
        }
        let mut seen = BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let at = |field: &str| format!("resources[{i}].{field}");
            validate_name("resource type", &r.name).map_err(name_failure(at("name")))?;
            if !seen.insert(r.name.as_str()) {
                return Err((
                    at("name"),
                    format!("resource type '{}' is listed twice", r.name),
                ));
            }
            if let Some(schema) = &r.spec_schema {
                SpecSchema::compile(&schema.json_schema).map_err(|e| {
                    (
                        at("specSchema.jsonSchema"),
                        format!("resource type '{}': {e}", r.name),
                    )
                })?;
            }
            if let Some(api) = &r.nats_api {
                subject::validate_stream_name(&api.command.stream)
                    .map_err(|e| (at("natsApi.command.stream"), e.to_string()))?;
                for (field, value) in [
                    ("natsApi.command.subject", &api.command.subject),
                    ("natsApi.query.subject", &api.query.subject),
                    ("natsApi.query.replySubject", &api.query.reply_subject),
                ] {
                    subject::validate_subject(value).map_err(|e| (at(field), e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// The resource type named `name`, if the operator manages it.
    pub fn resource_type(&self, name: &str) -> Option<&ResourceType> {
        self.resources.iter().find(|r| r.name == name)
    }
}
