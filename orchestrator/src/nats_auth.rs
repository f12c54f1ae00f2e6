//! NATS isolation on the orchestrator's side: its own credentials, and the credentials it mints
//! for every component it starts (with `ORCHESTRATOR_NATS_ACCOUNT_SEED_FILE`), each allowed
//! only its operator's subjects, streams and buckets (`operator_nats_auth`). They reach
//! the replicas as a secret (`NATS_CREDS`), so every runtime carries them as it carries the
//! operator's own secrets: a process's or container's environment, a Kubernetes Secret.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use operator_contract::subject::TypeSubjects;
use operator_nats_auth::{
    AccountSigner, ComponentAccess, NatsCredentials, ACCOUNT_SEED_FILE_ENV, NATS_CREDS_ENV,
    NATS_CREDS_FILE_ENV,
};
use tracing::{error, info};

use crate::supervisor::{ComponentSpec, ResolvedSecret};

/// The workspace the minted credentials are filed under among a component's secrets.
const CREDENTIALS_WORKSPACE: &str = "orchestrator";

/// How the orchestrator authenticates to NATS, and whether it isolates components.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsAuthConfig {
    /// The orchestrator's NATS credentials file (`nats-auth init` writes one).
    #[arg(long = "nats-creds-file", env = NATS_CREDS_FILE_ENV)]
    pub creds_file: Option<PathBuf>,

    /// The orchestrator's NATS credentials, as the text of a credentials file.
    #[arg(long = "nats-creds", env = NATS_CREDS_ENV, hide_env_values = true)]
    pub creds: Option<NatsCredentials>,

    /// The account signing seed file (`nats-auth init`): set, every component gets its own
    /// NATS user, allowed only its operator's subjects and buckets.
    #[arg(long = "nats-account-seed-file", env = ACCOUNT_SEED_FILE_ENV)]
    pub account_seed_file: Option<PathBuf>,
}

impl NatsAuthConfig {
    /// Connect options carrying the orchestrator's credentials, if it has any.
    pub async fn connect_options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        let options = async_nats::ConnectOptions::new();
        Ok(match (&self.creds, &self.creds_file) {
            (Some(creds), _) => options
                .credentials(&creds.0)
                .with_context(|| format!("{NATS_CREDS_ENV} is not usable"))?,
            (None, Some(file)) => options.credentials_file(file).await.with_context(|| {
                format!("cannot use the NATS credentials in {}", file.display())
            })?,
            (None, None) => options,
        })
    }

    /// The signer of component credentials, when isolation is on.
    pub fn account_signer(&self) -> anyhow::Result<Option<Arc<AccountSigner>>> {
        let Some(path) = &self.account_seed_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {ACCOUNT_SEED_FILE_ENV} ({})", path.display()))?;
        let signer = AccountSigner::from_seed_file_text(&text)
            .with_context(|| format!("{ACCOUNT_SEED_FILE_ENV} ({})", path.display()))?;
        info!(account = %signer.account(), "NATS isolation on: each component gets its own NATS user");
        Ok(Some(Arc::new(signer)))
    }
}

/// The secret that gives `spec`'s replicas their own NATS user: allowed the subjects of its
/// operator's resource types `types` and the names its environment sets. Its generation
/// follows the permissions, so replicas are replaced when their grants change and kept
/// otherwise (fresh credentials each time, same rights).
pub fn component_credentials(
    signer: &AccountSigner,
    spec: &ComponentSpec,
    types: &[TypeSubjects],
) -> Option<ResolvedSecret> {
    let env = spec.process_env();
    let access =
        ComponentAccess::for_component(&spec.operator, types, |name| env.get(name).cloned());
    let permissions = access.permissions();
    let creds = match signer.mint(
        &format!("{}/{}", spec.operator, spec.name),
        Some(&permissions),
    ) {
        Ok(creds) => creds,
        Err(e) => {
            error!(operator = %spec.operator, component = %spec.name, error = %e, "cannot mint NATS credentials; the component starts without");
            return None;
        }
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for subject in permissions.publish.iter().chain(&permissions.subscribe) {
        for byte in subject.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Some(ResolvedSecret {
        workspace: CREDENTIALS_WORKSPACE.into(),
        name: format!("nats-{}", spec.name),
        // Positive and below 2^53: shown as a JSON number without loss.
        generation: (hash >> 11).max(1),
        all_keys: true,
        data: [(NATS_CREDS_ENV.to_string(), creds.0)].into(),
    })
}

#[cfg(test)]
mod tests {
    use operator_contract::Manifest;
    use operator_nats_auth::{creds_jwt, jwt_claims, NatsSetup};

    use super::*;
    use crate::supervisor::ComponentDefaults;

    const DEMO_OPERATOR: &str = include_str!("../../deploy/examples/demo-operator.yaml");

    fn demo_spec(
        signer: Option<Arc<AccountSigner>>,
        edit: impl FnOnce(&mut Manifest),
    ) -> ComponentSpec {
        let mut manifest = Manifest::parse_all(DEMO_OPERATOR)
            .expect("parses")
            .remove(0);
        edit(&mut manifest);
        let section = manifest.operator.clone().expect("an operator");
        let types: Vec<TypeSubjects> = section
            .resources
            .iter()
            .map(|r| TypeSubjects::for_type(&manifest.name, r))
            .collect();
        let defaults = ComponentDefaults {
            nats_url: "nats://nats:4222".into(),
            env: Vec::new(),
            nats_signer: signer,
        };
        ComponentSpec::build(
            &manifest.name,
            &section.components[0],
            types.iter(),
            &defaults,
            Vec::new(),
        )
    }

    fn signer() -> Arc<AccountSigner> {
        let setup = NatsSetup::generate().expect("generated");
        Arc::new(AccountSigner::from_seed_file_text(&setup.signing_seed_file).expect("signer"))
    }

    #[test]
    fn with_isolation_each_component_gets_its_own_user_as_a_secret() {
        let signer = signer();
        let spec = demo_spec(Some(signer.clone()), |_| {});
        let env = spec.process_env();
        let creds = env
            .get(NATS_CREDS_ENV)
            .expect("credentials in the environment");
        let claims = jwt_claims(creds_jwt(creds).expect("a JWT")).expect("claims");
        assert_eq!(claims["name"], "demo/demo-controller");
        assert_eq!(claims["nats"]["issuer_account"], signer.account());
        let subscribe = claims["nats"]["sub"]["allow"].to_string();
        assert!(subscribe.contains("operator.demo.job.query"), "{subscribe}");
        assert!(subscribe.contains("_INBOX_demo.>"), "{subscribe}");
        // Never printed: the spec's debug form names the secret's keys only.
        assert!(!format!("{spec:?}").contains(creds.as_str()));

        assert!(
            !demo_spec(None, |_| {})
                .process_env()
                .contains_key(NATS_CREDS_ENV),
            "isolation is opt-in"
        );
    }

    #[test]
    fn fresh_credentials_keep_the_replicas_new_grants_replace_them() {
        let signer = signer();
        let first = demo_spec(Some(signer.clone()), |_| {});
        let again = demo_spec(Some(signer.clone()), |_| {});
        assert_ne!(
            first.process_env()[NATS_CREDS_ENV],
            again.process_env()[NATS_CREDS_ENV]
        );
        assert_eq!(first.hash, again.hash, "same grants: replicas kept");
        let renamed_bucket = demo_spec(Some(signer), |m| {
            let component = &mut m.operator.as_mut().expect("an operator").components[0];
            component
                .environment_vars
                .insert("OPERATOR_STATE_STORE_BUCKET".into(), "demo-entities".into());
        });
        assert_ne!(
            first.secrets[0].generation, renamed_bucket.secrets[0].generation,
            "new grants: a new generation, so the replicas are replaced"
        );
        assert_ne!(first.hash, renamed_bucket.hash);
    }
}
