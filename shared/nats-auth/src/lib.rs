//! NATS isolation with decentralized JWT auth: the keys and JWTs of a NATS operator and of the
//! one account the control plane lives in, the server configuration that trusts them, and the
//! user JWTs the orchestrator mints for each component it starts, allowed only its own
//! operator's subjects, streams and KV buckets.
//!
//! The server enforces the permissions: a component that publishes or subscribes outside its
//! allow-lists gets a permissions violation, and JetStream API requests outside them never
//! reach JetStream. Without an account signing key nothing here is used and NATS runs without
//! auth, as before.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{json, Value};
use sha2::{Digest, Sha512_256};
use thiserror::Error;

use operator_contract::election::{election_bucket, lease_key, replica_key_prefix};
use operator_contract::env::{
    shared_buckets, ELECTION_CLUSTER_NAME_ENV, MESSAGE_STREAM_ENV, QUERY_REPLY_SUBJECT_ENV,
    QUERY_SUBJECT_ENV, SHARED_BUCKETS_ENV, STATE_STORE_BUCKET_ENV,
};
use operator_contract::subject::{
    default_command_stream, default_entity_bucket, default_query_wildcard, default_reply_subject,
    TypeSubjects,
};

/// The user credentials (JWT and seed, as a `.creds` file holds them) a client connects with.
pub const NATS_CREDS_ENV: &str = "NATS_CREDS";
/// A file holding the user credentials a client connects with.
pub const NATS_CREDS_FILE_ENV: &str = "NATS_CREDS_FILE";
/// The orchestrator's account signing seed: set, it mints credentials for every component.
pub const ACCOUNT_SEED_FILE_ENV: &str = "ORCHESTRATOR_NATS_ACCOUNT_SEED_FILE";

/// Why keys, JWTs or credentials could not be made or read.
#[derive(Debug, Error)]
pub enum NatsAuthError {
    #[error("invalid nkey: {0}")]
    Key(String),
    #[error("{0}")]
    Credentials(String),
}

impl From<nkeys::error::Error> for NatsAuthError {
    fn from(e: nkeys::error::Error) -> Self {
        Self::Key(e.to_string())
    }
}

/// The prefix of every inbox a component's connection makes: its replies (JetStream acks,
/// pulled commands) arrive there, and no other operator's component may subscribe to it.
pub fn component_inbox_prefix(operator: &str) -> String {
    format!("_INBOX_{operator}")
}

/// User credentials, as a `.creds` file holds them. Debug shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsCredentials(pub String);

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NatsCredentials(..)")
    }
}

impl FromStr for NatsCredentials {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("-----BEGIN NATS USER JWT-----") && s.contains("SEED-----") {
            Ok(Self(s.to_string()))
        } else {
            Err("expected a NATS .creds text (a user JWT and its nkey seed)".into())
        }
    }
}

/// What a component may do on NATS: the subjects it may publish to and subscribe to, and
/// whether it may answer the requests it receives (query replies go to the requester's inbox).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPermissions {
    pub publish: BTreeSet<String>,
    pub subscribe: BTreeSet<String>,
    pub allow_responses: bool,
}

/// The NATS names one component of an operator uses: its grants derive from them alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentAccess {
    pub operator: String,
    /// Command streams it consumes.
    pub command_streams: BTreeSet<String>,
    /// Subjects it answers queries on (wildcards allowed).
    pub query_subjects: BTreeSet<String>,
    /// Subjects it publishes status events on.
    pub reply_subjects: BTreeSet<String>,
    /// Its entity bucket.
    pub entity_bucket: String,
    /// The leader-election cluster its replicas elect in, if any.
    pub election_cluster: Option<String>,
    /// The `shared-` buckets it shares with other operators (`OPERATOR_SHARED_BUCKETS`); a
    /// name that is not a shared bucket's grants nothing (the orchestrator refuses it at apply).
    pub shared_buckets: BTreeSet<String>,
}

impl ComponentAccess {
    /// The names a component of `operator` uses: its resource types' subjects, plus what its
    /// environment `env` sets it to use (or the component's defaults), so that the grants
    /// cover both what the orchestrator sends on and what the component listens to.
    pub fn for_component<'a>(
        operator: &str,
        types: impl IntoIterator<Item = &'a TypeSubjects>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let set = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut access = Self {
            operator: operator.to_string(),
            command_streams: BTreeSet::new(),
            query_subjects: BTreeSet::new(),
            reply_subjects: BTreeSet::new(),
            entity_bucket: set(STATE_STORE_BUCKET_ENV)
                .unwrap_or_else(|| default_entity_bucket(operator)),
            election_cluster: set(ELECTION_CLUSTER_NAME_ENV),
            shared_buckets: set(SHARED_BUCKETS_ENV)
                .and_then(|value| shared_buckets(&value).ok())
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        for t in types {
            access.command_streams.insert(t.command_stream.clone());
            access.query_subjects.insert(t.query_subject.clone());
            access.reply_subjects.insert(t.reply_subject.clone());
        }
        access
            .command_streams
            .insert(set(MESSAGE_STREAM_ENV).unwrap_or_else(|| default_command_stream(operator)));
        access
            .query_subjects
            .insert(set(QUERY_SUBJECT_ENV).unwrap_or_else(|| default_query_wildcard(operator)));
        access.reply_subjects.insert(
            set(QUERY_REPLY_SUBJECT_ENV).unwrap_or_else(|| default_reply_subject(operator)),
        );
        access
    }

    /// The allow-lists of this component's user: nothing of another operator.
    pub fn permissions(&self) -> UserPermissions {
        let mut publish = BTreeSet::new();
        let mut subscribe = BTreeSet::new();
        // Account-level JetStream info: limits and usage, no stream's content.
        publish.insert("$JS.API.INFO".to_string());
        subscribe.insert(format!("{}.>", component_inbox_prefix(&self.operator)));

        for stream in &self.command_streams {
            publish.extend(consumer_api(stream));
            publish.insert(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"));
            publish.insert(format!("$JS.ACK.{stream}.>"));
        }
        subscribe.extend(self.query_subjects.iter().cloned());
        publish.extend(self.reply_subjects.iter().cloned());

        // The entity bucket is the component's own, and shared buckets are shared on purpose:
        // every key, reads, watches.
        for bucket in std::iter::once(&self.entity_bucket).chain(&self.shared_buckets) {
            let stream = format!("KV_{bucket}");
            publish.insert(format!("$KV.{bucket}.>"));
            publish.insert(format!("$JS.API.STREAM.MSG.GET.{stream}"));
            publish.insert(format!("$JS.API.DIRECT.GET.{stream}"));
            publish.insert(format!("$JS.API.DIRECT.GET.{stream}.>"));
            publish.extend(bucket_stream_api(&stream));
            publish.extend(consumer_api(&stream));
        }

        // The election bucket is shared by a cluster's operators: only this operator's keys.
        if let Some(cluster) = &self.election_cluster {
            let bucket = election_bucket(cluster);
            let stream = format!("KV_{bucket}");
            let lease = format!("$KV.{bucket}.{}", lease_key(&self.operator));
            let replicas = format!("$KV.{bucket}.{}>", replica_key_prefix(&self.operator));
            publish.extend(bucket_stream_api(&stream));
            for key in [&lease, &replicas] {
                publish.insert(key.clone());
                publish.insert(format!("$JS.API.DIRECT.GET.{stream}.{key}"));
            }
            // The lease watch: a consumer filtered on the lease key alone.
            publish.insert(format!("$JS.API.CONSUMER.CREATE.{stream}.*.{lease}"));
        }
        UserPermissions {
            publish,
            subscribe,
            allow_responses: true,
        }
    }
}

/// Opening (or creating) a KV bucket's stream, and answering its ordered consumers' flow control.
fn bucket_stream_api(stream: &str) -> [String; 3] {
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Creating, reading and deleting consumers of one stream.
fn consumer_api(stream: &str) -> [String; 6] {
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
    ]
}

/// Signs a JWT over `claims` with `signer`, as nats-server verifies it: `iss` is the signer's
/// public key, `jti` the base32 SHA-512/256 of the standard claims.
fn encode_jwt(
    mut claims: serde_json::Map<String, Value>,
    signer: &KeyPair,
) -> Result<String, NatsAuthError> {
    claims.insert("iss".into(), Value::String(signer.public_key()));
    claims.insert("iat".into(), json!(chrono::Utc::now().timestamp()));
    claims.remove("jti");
    let standard: serde_json::Map<String, Value> = claims
        .iter()
        .filter(|(k, _)| ["aud", "exp", "iat", "iss", "name", "nbf", "sub"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let digest = Sha512_256::digest(Value::Object(standard).to_string().as_bytes());
    claims.insert("jti".into(), Value::String(BASE32_NOPAD.encode(&digest)));

    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = BASE64URL_NOPAD.encode(Value::Object(claims).to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = signer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature)))
}

fn claims(subject: &str, name: &str, nats: Value) -> serde_json::Map<String, Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), Value::String(subject.to_string()));
    claims.insert("name".into(), Value::String(name.to_string()));
    claims.insert("nats".into(), nats);
    claims
}

/// The `.creds` text of a user: its JWT and its seed.
pub fn format_creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The holder of an account signing key: mints user credentials in that account.
pub struct AccountSigner {
    signing_key: KeyPair,
    account: String,
}

impl fmt::Debug for AccountSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSigner")
            .field("account", &self.account)
            .field("signing_key", &self.signing_key.public_key())
            .finish()
    }
}

impl AccountSigner {
    /// From the text [`NatsSetup::signing_seed_file`] holds: the account's public key on its
    /// first line, the signing seed on its second.
    pub fn from_seed_file_text(text: &str) -> Result<Self, NatsAuthError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(account), Some(seed)) = (lines.next(), lines.next()) else {
            return Err(NatsAuthError::Credentials(
                "the account seed file must hold the account's public key, then the signing seed"
                    .into(),
            ));
        };
        let account_key = KeyPair::from_public_key(account)?;
        if account_key.key_pair_type() != nkeys::KeyPairType::Account {
            return Err(NatsAuthError::Key(format!(
                "{account} is not an account public key"
            )));
        }
        let signing_key = KeyPair::from_seed(seed)?;
        if signing_key.key_pair_type() != nkeys::KeyPairType::Account {
            return Err(NatsAuthError::Key(
                "the signing seed is not an account seed".into(),
            ));
        }
        Ok(Self {
            signing_key,
            account: account.to_string(),
        })
    }

    /// The account users are minted in.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Credentials of a new user named `name` with `permissions`; `None` permissions: every
    /// subject of the account.
    pub fn mint(
        &self,
        name: &str,
        permissions: Option<&UserPermissions>,
    ) -> Result<NatsCredentials, NatsAuthError> {
        let user = KeyPair::new_user();
        let mut nats = json!({
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "issuer_account": self.account,
            "type": "user",
            "version": 2,
        });
        if let Some(p) = permissions {
            nats["pub"] = json!({ "allow": p.publish });
            nats["sub"] = json!({ "allow": p.subscribe });
            if p.allow_responses {
                // One answer per request received, within the server's default time.
                nats["resp"] = json!({ "max": 1, "ttl": 0 });
            }
        }
        let jwt = encode_jwt(claims(&user.public_key(), name, nats), &self.signing_key)?;
        Ok(NatsCredentials(format_creds(&jwt, &user.seed()?)))
    }
}

/// Everything the one-time set-up makes: the files a deployment keeps.
pub struct NatsSetup {
    /// Included in nats-server's configuration: trusts the operator, preloads the accounts.
    pub server_config: String,
    /// For the orchestrator: the account's public key and a signing seed.
    pub signing_seed_file: String,
    /// The orchestrator's own credentials: every subject of the account.
    pub orchestrator_creds: NatsCredentials,
    /// The operator's and the accounts' identity seeds: to keep offline (they re-sign JWTs).
    pub identity_seeds: String,
}

impl NatsSetup {
    /// A new operator, a system account and the control plane's account (JetStream without
    /// limits), with a signing key for the orchestrator.
    pub fn generate() -> Result<Self, NatsAuthError> {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();

        let operator_jwt = encode_jwt(
            claims(
                &operator.public_key(),
                "operator-control-plane",
                json!({ "system_account": system.public_key(), "type": "operator", "version": 2 }),
            ),
            &operator,
        )?;
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        let system_jwt = encode_jwt(
            claims(
                &system.public_key(),
                "SYS",
                json!({ "limits": unlimited, "type": "account", "version": 2 }),
            ),
            &operator,
        )?;
        let mut limits = unlimited.clone();
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
        let account_jwt = encode_jwt(
            claims(
                &account.public_key(),
                "control-plane",
                json!({
                    "limits": limits,
                    "signing_keys": [signing.public_key()],
                    "default_permissions": { "pub": {}, "sub": {} },
                    "type": "account",
                    "version": 2,
                }),
            ),
            &operator,
        )?;

        let server_config = format!(
            "# NATS decentralized auth of the operator control plane: include it in nats-server's\n\
             # configuration. Users are minted by the orchestrator in account {account_pub}.\n\
             operator: {operator_jwt}\n\
             system_account: {system_pub}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {system_pub}: {system_jwt}\n  {account_pub}: {account_jwt}\n}}\n",
            account_pub = account.public_key(),
            system_pub = system.public_key(),
        );
        let signing_seed_file = format!(
            "# The control plane's NATS account and the signing seed the orchestrator mints users with.\n{}\n{}\n",
            account.public_key(),
            signing.seed()?
        );
        let signer = AccountSigner::from_seed_file_text(&signing_seed_file)?;
        let orchestrator_creds = signer.mint("orchestrator", None)?;
        let identity_seeds = format!(
            "# Identity seeds: keep them offline; they re-sign the operator's and accounts' JWTs.\n\
             operator {}\nsystem-account {}\naccount {}\n",
            operator.seed()?,
            system.seed()?,
            account.seed()?
        );
        Ok(Self {
            server_config,
            signing_seed_file,
            orchestrator_creds,
            identity_seeds,
        })
    }
}

/// The claims of a JWT, undecoded signature unchecked: for tests and diagnostics.
pub fn jwt_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?).ok()
}

/// The JWT in a `.creds` text.
pub fn creds_jwt(creds: &str) -> Option<&str> {
    let start =
        creds.find("-----BEGIN NATS USER JWT-----\n")? + "-----BEGIN NATS USER JWT-----\n".len();
    let rest = &creds[start..];
    rest.lines().next().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(election: Option<&str>) -> ComponentAccess {
        let types = [TypeSubjects::defaults("a", "job")];
        ComponentAccess::for_component("a", types.iter(), |name| match name {
            "ELECTION_CLUSTER_NAME" => election.map(str::to_string),
            _ => None,
        })
    }

    #[test]
    fn a_component_is_granted_only_its_operators_names() {
        let p = access(None).permissions();
        for allowed in [
            "$JS.API.STREAM.INFO.operator-a",
            "$JS.API.CONSUMER.CREATE.operator-a.>",
            "$JS.API.CONSUMER.MSG.NEXT.operator-a.>",
            "$JS.ACK.operator-a.>",
            "operator.a.reply",
            "$KV.entities-a.>",
            "$JS.API.STREAM.INFO.KV_entities-a",
            "$JS.API.DIRECT.GET.KV_entities-a.>",
            "$JS.API.CONSUMER.CREATE.KV_entities-a.>",
        ] {
            assert!(
                p.publish.contains(allowed),
                "{allowed} not in {:?}",
                p.publish
            );
        }
        assert_eq!(
            p.subscribe,
            BTreeSet::from([
                "_INBOX_a.>".to_string(),
                "operator.a.*.query".to_string(),
                "operator.a.job.query".to_string(),
            ])
        );
        assert!(p.allow_responses);
        // Nothing that reaches everything: no bare wildcard, no other operator's name.
        for subject in p.publish.iter().chain(&p.subscribe) {
            assert!(
                !subject.starts_with('>') && !subject.starts_with("*."),
                "{subject}"
            );
            assert!(!subject.starts_with("_INBOX."), "{subject}");
            assert!(
                subject.contains(".a.")
                    || subject.contains("-a")
                    || subject.contains("_a")
                    || subject == "$JS.API.INFO",
                "{subject} is not operator a's"
            );
        }
        // No publish to commands: only the orchestrator sends them.
        assert!(
            !p.publish.iter().any(|s| s.contains("command")),
            "{:?}",
            p.publish
        );
    }

    #[test]
    fn the_shared_election_bucket_is_granted_by_key() {
        let p = access(Some("azure")).permissions();
        for allowed in [
            "$KV.election-azure.leader.a",
            "$KV.election-azure.replica.a.>",
            "$JS.API.DIRECT.GET.KV_election-azure.$KV.election-azure.leader.a",
            "$JS.API.CONSUMER.CREATE.KV_election-azure.*.$KV.election-azure.leader.a",
            "$JS.API.STREAM.INFO.KV_election-azure",
        ] {
            assert!(
                p.publish.contains(allowed),
                "{allowed} not in {:?}",
                p.publish
            );
        }
        assert!(!p.publish.contains("$KV.election-azure.>"));
        assert!(!p
            .publish
            .iter()
            .any(|s| s.starts_with("$JS.API.DIRECT.GET.KV_election-azure")
                && s.ends_with(".>")
                && !s.contains(".replica.a.")));
    }

    #[test]
    fn the_environment_and_nats_api_widen_the_grants_to_the_names_the_component_uses() {
        let seed = TypeSubjects {
            command_stream: "dataos-azure-entities".into(),
            command_subject: "dataos.operator.adf.command".into(),
            query_subject: "dataos.operator.adf.query".into(),
            reply_subject: "dataos.operator.adf.reply".into(),
        };
        let access = ComponentAccess::for_component("adf", [&seed], |name| {
            (name == "OPERATOR_STATE_STORE_BUCKET").then(|| "adf-entities".to_string())
        });
        assert!(access.command_streams.contains("dataos-azure-entities"));
        assert!(access.query_subjects.contains("dataos.operator.adf.query"));
        assert_eq!(access.entity_bucket, "adf-entities");
        let p = access.permissions();
        assert!(p.publish.contains("dataos.operator.adf.reply"));
        assert!(p.publish.contains("$KV.adf-entities.>"));
    }

    #[test]
    fn shared_buckets_are_granted_whole_and_other_names_grant_nothing() {
        let types = [TypeSubjects::defaults("a", "job")];
        let access = ComponentAccess::for_component("a", types.iter(), |name| {
            (name == "OPERATOR_SHARED_BUCKETS").then(|| "shared-budget".to_string())
        });
        let p = access.permissions();
        assert!(p.publish.contains("$KV.shared-budget.>"), "{p:?}");
        assert!(p.publish.contains("$JS.API.STREAM.CREATE.KV_shared-budget"));
        assert!(p.publish.contains("$JS.API.DIRECT.GET.KV_shared-budget.>"));

        let refused = ComponentAccess::for_component("a", types.iter(), |name| {
            (name == "OPERATOR_SHARED_BUCKETS")
                .then(|| "shared-budget, orchestrator-resources".to_string())
        });
        assert!(refused.shared_buckets.is_empty(), "{refused:?}");
        assert!(!refused
            .permissions()
            .publish
            .iter()
            .any(|s| s.contains("orchestrator-resources")));
    }

    #[test]
    fn minted_credentials_carry_a_user_jwt_signed_by_the_account_signing_key() {
        let setup = NatsSetup::generate().expect("generated");
        let signer = AccountSigner::from_seed_file_text(&setup.signing_seed_file).expect("signer");
        let permissions = access(None).permissions();
        let creds = signer.mint("a/worker", Some(&permissions)).expect("minted");
        let jwt = creds_jwt(&creds.0).expect("a JWT");
        let claims = jwt_claims(jwt).expect("claims");
        assert_eq!(claims["nats"]["type"], "user");
        assert_eq!(claims["nats"]["issuer_account"], signer.account());
        assert_eq!(claims["name"], "a/worker");
        let allowed: BTreeSet<String> =
            serde_json::from_value(claims["nats"]["pub"]["allow"].clone()).expect("a list");
        assert_eq!(allowed, permissions.publish);
        assert_eq!(claims["nats"]["resp"]["max"], 1);

        // The signature verifies with the issuer's public key.
        let (signed, signature) = jwt.rsplit_once('.').expect("three parts");
        let issuer = KeyPair::from_public_key(claims["iss"].as_str().expect("iss")).expect("key");
        let signature = BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .expect("base64");
        issuer
            .verify(signed.as_bytes(), &signature)
            .expect("valid signature");

        // The client library accepts the text as credentials.
        assert!(async_nats::ConnectOptions::new()
            .credentials(&creds.0)
            .is_ok());
        assert_eq!(format!("{creds:?}"), "NatsCredentials(..)");
        assert!(creds.0.parse::<NatsCredentials>().is_ok());
    }

    #[test]
    fn the_server_configuration_trusts_the_operator_and_preloads_both_accounts() {
        let setup = NatsSetup::generate().expect("generated");
        let config = &setup.server_config;
        assert!(config.contains("resolver: MEMORY"), "{config}");
        let operator_jwt = config
            .lines()
            .find_map(|l| l.strip_prefix("operator: "))
            .expect("an operator line");
        let operator = jwt_claims(operator_jwt).expect("claims");
        assert_eq!(operator["iss"], operator["sub"], "self-signed");
        let system = operator["nats"]["system_account"]
            .as_str()
            .expect("system account");
        assert!(config.contains(&format!("system_account: {system}")));
        let signer = AccountSigner::from_seed_file_text(&setup.signing_seed_file).expect("signer");
        let account_jwt = config
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{}: ", signer.account())))
            .expect("the account preloaded");
        let account = jwt_claims(account_jwt).expect("claims");
        assert_eq!(account["iss"], operator["sub"]);
        assert_eq!(
            account["nats"]["limits"]["disk_storage"], -1,
            "JetStream enabled"
        );
        assert!(setup.orchestrator_creds.0.contains("BEGIN USER NKEY SEED"));
    }
}
