//! The rendered objects checked against the Kubernetes API types: each must survive a round
//! trip through its typed struct unchanged (a misspelt or misplaced field would be dropped),
//! and say what the component needs.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::*;
use crate::supervisor::spec::fixtures::{seed_secret, seed_spec};

fn seed_specs(all_keys: bool) -> Vec<ComponentSpec> {
    let secret = seed_secret(
        1,
        all_keys,
        &[
            ("AZURE_CLIENT_ID", "client-id"),
            ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
        ],
    );
    vec![seed_spec(|c| c.environment_vars.clear(), secret)]
}

/// Serializes `object`, reads it back as its type and serializes again: nothing may change.
fn round_trips<T: Serialize + DeserializeOwned>(object: &T) -> Value {
    let json = serde_json::to_value(object).expect("serializes");
    let typed: T = serde_json::from_value(json.clone()).expect("reads back as its type");
    assert_eq!(serde_json::to_value(&typed).expect("serializes"), json);
    json
}

/// Reads `document` as `T`; every field of it must come out of the typed struct as it went
/// in (the types may add `apiVersion` and `kind` to embedded objects).
fn strictly<T: Serialize + DeserializeOwned>(document: &Value) -> T {
    let typed: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("not a valid object: {e}\n{document}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    let lost = lost_fields(document, &back, "");
    assert!(
        lost.is_empty(),
        "fields unknown to the Kubernetes API types or misplaced: {lost:?}"
    );
    typed
}

/// The paths of `original` that `back` does not hold with the same value.
fn lost_fields(original: &Value, back: &Value, path: &str) -> Vec<String> {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => o
            .iter()
            .flat_map(|(k, v)| match b.get(k) {
                Some(bv) => lost_fields(v, bv, &format!("{path}/{k}")),
                None => vec![format!("{path}/{k}")],
            })
            .collect(),
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => o
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (v, bv))| lost_fields(v, bv, &format!("{path}/{i}")))
            .collect(),
        (o, b) if o == b => Vec::new(),
        _ => vec![path.to_string()],
    }
}

#[test]
fn a_misspelt_field_is_caught_by_the_strict_check() {
    let document = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x", "namspace": "typo"}});
    let typed: ServiceAccount = serde_json::from_value(document.clone()).expect("lenient");
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(lost_fields(&document, &back, ""), ["/metadata/namspace"]);
}

fn env_of(deployment: &Deployment) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers[0].env.clone())
        .unwrap_or_default()
}

#[test]
fn the_seed_operator_renders_a_deployment_of_two_replicas_that_reads_its_secret_by_reference() {
    let rendered = render(&seed_specs(true), "operators", false);
    assert_eq!(rendered.deployments.len(), 1);
    let deployment = &rendered.deployments[0];
    let json = round_trips(deployment);
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["metadata"]["name"], "adf-operator-adf-controller");
    assert_eq!(json["metadata"]["namespace"], "operators");
    let spec = deployment.spec.as_ref().expect("a spec");
    assert_eq!(spec.replicas, Some(2));
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in &selector {
        assert_eq!(
            template_labels.get(k),
            Some(v),
            "the selector matches its pods"
        );
    }
    let container = &spec.template.spec.as_ref().expect("a pod spec").containers[0];
    assert_eq!(container.image.as_deref(), Some("adf-operator:latest"));
    assert_eq!(
        container.command.as_deref(),
        Some(&["/opt/operator/adf-operator".to_string()][..])
    );
    assert_eq!(
        container.args.as_ref().map(Vec::len),
        Some(4),
        "{:?}",
        container.args
    );
    let env = env_of(deployment);
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("NATS_URL").as_deref(), Some("nats://nats:4222"));
    assert_eq!(
        value("ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT").as_deref(),
        Some("dataos.operator.adf.query")
    );
    let secret_ref = container.env_from.as_ref().expect("envFrom")[0]
        .secret_ref
        .as_ref()
        .expect("a secretRef");
    assert_eq!(secret_ref.name, "adf-operator-user-system-adf-operator");
    assert!(
        !json.to_string().contains("s3cr3t-value"),
        "no secret value in a Deployment"
    );
    let pull = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    assert_eq!(pull[0].name, "dataos-container-registry");
    assert_eq!(
        rendered.services.len(),
        1,
        "the metrics port gets a Service"
    );
    let service = round_trips(&rendered.services[0]);
    assert_eq!(service["spec"]["ports"][0]["port"], 30001);
}

#[test]
fn the_secret_holds_the_values_when_applied_and_hides_them_when_printed() {
    let applied = render(&seed_specs(true), "operators", false);
    let secret = round_trips(&applied.secrets[0]);
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["stringData"]["AZURE_CLIENT_SECRET"], "s3cr3t-value");
    let printed = render(&seed_specs(true), "operators", true)
        .to_yaml()
        .expect("yaml");
    assert!(!printed.contains("s3cr3t-value"), "{printed}");
    assert!(
        printed.contains("AZURE_CLIENT_SECRET: '********'"),
        "{printed}"
    );
}

#[test]
fn named_keys_are_read_one_by_one_and_the_manifest_environment_wins() {
    let mut specs = seed_specs(false);
    specs[0]
        .env
        .insert("AZURE_CLIENT_ID".into(), "from-manifest".into());
    let rendered = render(&specs, "operators", false);
    let deployment = &rendered.deployments[0];
    round_trips(deployment);
    let env = env_of(deployment);
    let from_secret: Vec<&str> = env
        .iter()
        .filter(|e| e.value_from.is_some())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(from_secret, ["AZURE_CLIENT_SECRET"]);
    let selector = env
        .iter()
        .find_map(|e| e.value_from.as_ref().and_then(|v| v.secret_key_ref.clone()))
        .expect("a secretKeyRef");
    assert_eq!(selector.key, "AZURE_CLIENT_SECRET");
    assert!(deployment.spec.as_ref().is_some_and(|s| s
        .template
        .spec
        .as_ref()
        .is_some_and(|p| p.containers[0].env_from.is_none())));
}

#[test]
fn the_printed_yaml_reads_back_as_the_same_objects() {
    let rendered = render(&seed_specs(true), "operators", false);
    let yaml = rendered.to_yaml().expect("yaml");
    let mut secrets = Vec::new();
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    for document in serde_norway::Deserializer::from_str(&yaml) {
        let value = Value::deserialize(document).expect("a YAML document");
        match value["kind"].as_str() {
            Some("Secret") => secrets.push(strictly::<Secret>(&value)),
            Some("Deployment") => deployments.push(strictly::<Deployment>(&value)),
            Some("Service") => services.push(strictly::<Service>(&value)),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    assert_eq!(
        Rendered {
            secrets,
            deployments,
            services
        },
        rendered
    );
}

use serde::Deserialize;

/// Every object of the Kubernetes manifests shipped in `deploy/kubernetes`.
fn shipped_documents() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).expect("YAML");
            if !value.is_null() {
                documents.push((file.display().to_string(), value));
            }
        }
    }
    documents
}

#[test]
fn the_shipped_kubernetes_manifests_are_valid_objects_of_their_kinds() {
    let documents = shipped_documents();
    let mut kinds = Vec::new();
    for (file, value) in &documents {
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Namespace" => drop(strictly::<Namespace>(value)),
            "ServiceAccount" => drop(strictly::<ServiceAccount>(value)),
            "Role" => drop(strictly::<Role>(value)),
            "RoleBinding" => drop(strictly::<RoleBinding>(value)),
            "ConfigMap" => drop(strictly::<ConfigMap>(value)),
            "Service" => drop(strictly::<Service>(value)),
            "StatefulSet" => drop(strictly::<StatefulSet>(value)),
            "Deployment" => drop(strictly::<Deployment>(value)),
            "PersistentVolumeClaim" => drop(strictly::<PersistentVolumeClaim>(value)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    for needed in [
        "StatefulSet",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] {
        assert!(
            kinds.iter().any(|k| k == needed),
            "no {needed} in {kinds:?}"
        );
    }
}

#[test]
fn the_orchestrator_role_allows_what_the_kubernetes_runtime_does() {
    let role = shipped_documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "Role")
        .map(|(_, v)| strictly::<Role>(&v))
        .expect("a Role");
    let allowed = |resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|rule| {
            rule.resources.iter().flatten().any(|r| r == resource)
                && rule.verbs.iter().any(|v| v == verb)
        })
    };
    for resource in ["deployments", "secrets", "services"] {
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(allowed(resource, verb), "{resource}: {verb}");
        }
    }
    assert!(allowed("pods", "list"));
}

#[test]
fn the_nats_statefulset_runs_jetstream_on_a_persistent_volume() {
    let set = shipped_documents()
        .into_iter()
        .find(|(_, v)| v["kind"] == "StatefulSet")
        .map(|(_, v)| strictly::<StatefulSet>(&v))
        .expect("a StatefulSet");
    let spec = set.spec.expect("a spec");
    assert!(spec.volume_claim_templates.is_some_and(|t| !t.is_empty()));
    let container = &spec.template.spec.expect("a pod spec").containers[0];
    let argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    assert!(
        argv.iter().any(|a| a == "-js" || a == "--jetstream"),
        "{argv:?}"
    );
}
