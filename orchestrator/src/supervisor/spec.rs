//! `ComponentSpec`: one component of an operator as the supervisor runs it — the manifest's
//! component, the environment the orchestrator derives for it, the secrets it consumes with
//! their values, and the hash that tells when its replicas must be replaced. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use operator_contract::manifest::{Component, Port};
use operator_contract::subject::TypeSubjects;
use operator_nats_auth::AccountSigner;
use serde::Serialize;

/// The name a replica goes by in its operator's leader election: the supervisor names each
/// replica (its container's name, say) so that the lease's holder says which one leads.
pub use operator_contract::env::ELECTION_REPLICA_ID_ENV as REPLICA_ID_ENV;
pub use operator_contract::env::{
    MESSAGE_STREAM_ENV, NATS_URL_ENV, OPERATOR_NAME_ENV, QUERY_REPLY_SUBJECT_ENV, QUERY_SUBJECT_ENV,
};
/// Asks a program not to colour its output (no-color.org): replicas' output is kept as text.
pub const NO_COLOR_ENV: &str = "NO_COLOR";

/// What every component of this orchestrator gets unless its manifest says otherwise.
#[derive(Debug, Clone, Default)]
pub struct ComponentDefaults {
    pub nats_url: String,
    /// `ORCHESTRATOR_COMPONENT_ENV`.
    pub env: Vec<(String, String)>,
    /// With NATS isolation on: mints each component's own NATS user.
    pub nats_signer: Option<Arc<AccountSigner>>,
}

/// A secret a component refers to, with the values it consumes.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSecret {
    pub workspace: String,
    pub name: String,
    /// The secret record's generation: a new one replaces the replicas that consume it.
    pub generation: u64,
    pub all_keys: bool,
    /// The consumed keys and their values.
    #[serde(skip)]
    pub data: BTreeMap<String, String>,
}

/// Keys only: a secret's values never reach a log through `{:?}`.
impl fmt::Debug for ResolvedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedSecret")
            .field("workspace", &self.workspace)
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One component, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    pub operator: String,
    pub name: String,
    pub image: String,
    /// The secret that lets a cluster pull `image`, if any (`imagePullSecret`).
    pub image_pull_secret: Option<String>,
    pub command: Vec<String>,
    pub arguments: Vec<String>,
    pub replicas: u32,
    /// Every variable but the secrets': derived, then the orchestrator's defaults, then the
    /// manifest's `environmentVars`, each overriding the one before.
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<ResolvedSecret>,
    pub ports: Vec<Port>,
    /// Everything but `replicas`, hashed: replicas of another hash are replaced.
    pub hash: String,
}

impl ComponentSpec {
    /// The spec of `component` of operator `operator`, whose resource types travel on
    /// `subjects`, consuming `secrets`.
    pub fn build<'a>(
        operator: &str,
        component: &Component,
        subjects: impl Iterator<Item = &'a TypeSubjects>,
        defaults: &ComponentDefaults,
        secrets: Vec<ResolvedSecret>,
    ) -> Self {
        let subjects: Vec<&TypeSubjects> = subjects.collect();
        let mut env = wiring_env(subjects.iter().copied());
        env.insert(NATS_URL_ENV.into(), defaults.nats_url.clone());
        env.insert(OPERATOR_NAME_ENV.into(), operator.into());
        env.extend(defaults.env.iter().cloned());
        env.extend(component.environment_vars.clone());
        let mut spec = Self {
            operator: operator.into(),
            name: component.name.clone(),
            image: component.image.clone(),
            image_pull_secret: component.image_pull_secret.clone(),
            command: component.command.clone(),
            arguments: component.arguments.clone(),
            replicas: component.replicas,
            env,
            secrets,
            ports: component.ports.clone(),
            hash: String::new(),
        };
        if let Some(signer) = &defaults.nats_signer {
            let types: Vec<TypeSubjects> = subjects.into_iter().cloned().collect();
            spec.secrets.extend(crate::nats_auth::component_credentials(
                signer, &spec, &types,
            ));
        }
        spec.hash = spec.config_hash();
        spec
    }

    /// The whole environment of a replica: the secrets' values, overridden by `env`.
    pub fn process_env(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> =
            self.secrets.iter().flat_map(|s| s.data.clone()).collect();
        all.extend(self.env.clone());
        all
    }

    /// The environment of one replica: [`Self::process_env`] and, unless the manifest sets
    /// them, the replica's name in the election and `NO_COLOR` (its output is kept as text).
    pub fn replica_env(&self, replica_name: &str) -> BTreeMap<String, String> {
        let mut env = self.process_env();
        env.entry(REPLICA_ID_ENV.into())
            .or_insert_with(|| replica_name.into());
        env.entry(NO_COLOR_ENV.into()).or_insert_with(|| "1".into());
        env
    }

    /// The command line: `command` then `arguments`.
    pub fn argv(&self) -> Vec<String> {
        self.command
            .iter()
            .chain(&self.arguments)
            .cloned()
            .collect()
    }

    /// FNV-1a over everything that shapes a replica, secrets by generation (never by value).
    fn config_hash(&self) -> String {
        let shape = serde_json::json!({
            "image": self.image,
            "imagePullSecret": self.image_pull_secret,
            "command": self.command,
            "arguments": self.arguments,
            "env": self.env,
            "secrets": self.secrets.iter().map(|s| serde_json::json!({
                "secret": s,
                "keys": s.data.keys().collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "ports": self.ports.iter().map(|p| (&p.name, p.target_port)).collect::<Vec<_>>(),
        });
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in shape.to_string().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// The NATS variables an operator's resource types imply, each set only when every type
/// agrees on it (otherwise the component's own default applies).
fn wiring_env<'a>(subjects: impl Iterator<Item = &'a TypeSubjects>) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in subjects {
        for (variable, value) in [
            (MESSAGE_STREAM_ENV, &t.command_stream),
            (QUERY_SUBJECT_ENV, &t.query_subject),
            (QUERY_REPLY_SUBJECT_ENV, &t.reply_subject),
        ] {
            let values = seen.entry(variable).or_default();
            if !values.contains(value) {
                values.push(value.clone());
            }
        }
    }
    seen.into_iter()
        .filter_map(|(variable, values)| match &values[..] {
            [only] => Some((variable.to_string(), only.clone())),
            _ => None,
        })
        .collect()
}

/// The seed's ADF component as a spec, for the supervisor's tests.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use operator_contract::Manifest;

    const SEED_OPERATOR: &str = include_str!("../../../deploy/examples/adf-operator.yaml");

    /// The seed's `adf-operator` secret, consuming `data`.
    pub fn seed_secret(generation: u64, all_keys: bool, data: &[(&str, &str)]) -> ResolvedSecret {
        ResolvedSecret {
            workspace: "user-system".into(),
            name: "adf-operator".into(),
            generation,
            all_keys,
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The seed operator's component, changed by `edit`, with NATS at `nats://nats:4222`, the
    /// stand-in as Azure's authority host and `secret`.
    pub fn seed_spec(edit: impl FnOnce(&mut Component), secret: ResolvedSecret) -> ComponentSpec {
        let manifest = Manifest::parse_all(SEED_OPERATOR)
            .expect("the seed parses")
            .remove(0);
        let section = manifest.operator.clone().expect("an operator");
        let subjects: Vec<TypeSubjects> = section
            .resources
            .iter()
            .map(|r| TypeSubjects::for_type(&manifest.name, r))
            .collect();
        let mut component = section.components[0].clone();
        edit(&mut component);
        let defaults = ComponentDefaults {
            nats_url: "nats://nats:4222".into(),
            env: vec![(
                "AZURE_AUTHORITY_HOST".into(),
                "http://adf-standin:7800".into(),
            )],
            nats_signer: None,
        };
        ComponentSpec::build(
            &manifest.name,
            &component,
            subjects.iter(),
            &defaults,
            vec![secret],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{seed_secret, seed_spec};
    use super::*;

    fn secret(generation: u64, value: &str) -> ResolvedSecret {
        seed_secret(generation, true, &[("AZURE_CLIENT_SECRET", value)])
    }

    #[test]
    fn the_seed_component_gets_nats_its_operator_name_and_the_wiring_its_manifest_leaves_out() {
        let spec = seed_spec(|_| {}, secret(1, "s3cr3t"));
        let env = spec.process_env();
        assert_eq!(env["NATS_URL"], "nats://nats:4222");
        assert_eq!(env["OPERATOR_NAME"], "adf-operator");
        assert_eq!(
            env["ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT"],
            "dataos.operator.adf.query"
        );
        assert_eq!(
            env["ENTITY_OF_INTEREST_MESSAGE_STREAM"],
            "dataos-azure-entities"
        );
        assert_eq!(env["OPERATOR_STATE_STORE_TYPE"], "jetstream_kv");
        assert_eq!(env["AZURE_AUTHORITY_HOST"], "http://adf-standin:7800");
        assert_eq!(env["AZURE_CLIENT_SECRET"], "s3cr3t");
        assert_eq!(spec.replicas, 2);
        assert_eq!(
            spec.argv(),
            [
                "/opt/operator/adf-operator",
                "operator",
                "adf",
                "--electionStateFile",
                "/opt/operator/leader-election.log"
            ]
        );
    }

    #[test]
    fn the_manifest_environment_wins_over_defaults_and_secrets() {
        let spec = seed_spec(
            |c| {
                c.environment_vars
                    .insert("NATS_URL".into(), "nats://elsewhere:4222".into());
                c.environment_vars
                    .insert("AZURE_CLIENT_SECRET".into(), "from-manifest".into());
            },
            secret(1, "s3cr3t"),
        );
        let env = spec.process_env();
        assert_eq!(env["NATS_URL"], "nats://elsewhere:4222");
        assert_eq!(env["AZURE_CLIENT_SECRET"], "from-manifest");
    }

    #[test]
    fn each_replica_is_named_for_the_election_unless_the_manifest_names_it() {
        let spec = seed_spec(|_| {}, secret(1, "s3cr3t"));
        assert_eq!(spec.replica_env("r-0")[REPLICA_ID_ENV], "r-0");
        assert_eq!(spec.replica_env("r-0")[NO_COLOR_ENV], "1");
        let named = seed_spec(
            |c| {
                c.environment_vars
                    .insert(REPLICA_ID_ENV.into(), "mine".into());
            },
            secret(1, "s3cr3t"),
        );
        assert_eq!(named.replica_env("r-0")[REPLICA_ID_ENV], "mine");
    }

    #[test]
    fn variables_on_which_resource_types_disagree_are_left_to_the_component() {
        let a = TypeSubjects::defaults("op", "a");
        let b = TypeSubjects::defaults("op", "b");
        let env = wiring_env([a, b].iter());
        assert_eq!(env[MESSAGE_STREAM_ENV], "operator-op");
        assert_eq!(env[QUERY_REPLY_SUBJECT_ENV], "operator.op.reply");
        assert!(!env.contains_key(QUERY_SUBJECT_ENV), "{env:?}");
    }

    #[test]
    fn the_hash_changes_with_the_configuration_or_a_secret_generation_but_not_the_replica_count() {
        let base = seed_spec(|_| {}, secret(1, "s3cr3t")).hash;
        assert_eq!(seed_spec(|_| {}, secret(1, "s3cr3t")).hash, base, "stable");
        assert_eq!(
            seed_spec(|c| c.replicas = 5, secret(1, "s3cr3t")).hash,
            base
        );
        assert_ne!(seed_spec(|_| {}, secret(2, "s3cr3t")).hash, base);
        assert_ne!(
            seed_spec(|c| c.image = "adf-operator:2".into(), secret(1, "s3cr3t")).hash,
            base
        );
    }

    #[test]
    fn a_spec_printed_for_debugging_shows_no_secret_value() {
        let spec = seed_spec(|_| {}, secret(1, "s3cr3t-value"));
        let printed = format!("{spec:?}");
        assert!(printed.contains("AZURE_CLIENT_SECRET"), "{printed}");
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
    }
}
