//! Who may call the API, and what they may do.
//!
//! Users are identified by API keys. A key is 32 random bytes (`opk_` + base64url); only its
//! SHA-256 is stored (KV bucket `orchestrator-users`, one record per user), so a copy of the
//! store gives no key away. Keys are random and long, so a plain hash needs no salt or
//! stretching; a lookup hashes the presented key and finds the user by that hash.
//!
//! Roles are per workspace: `read` (get, list) or `write` (also apply and delete). An admin
//! may do everything, including operators (instance-level) and users. The first start with no
//! user creates `admin` with a new key, printed once on stdout; a deployment can instead give
//! the admin's key in a file (`ORCHESTRATOR_ADMIN_APIKEY_FILE`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use base64::Engine as _;
use futures::StreamExt;
use operator_contract::election::FENCE_KEY;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::error::ControlError;
use crate::store::LeaderBucket;

/// Bucket of user records, keyed by user name.
pub const USERS_BUCKET: &str = "orchestrator-users";
/// The admin's user name.
pub const ADMIN_USER: &str = "admin";
/// The prefix of every key this orchestrator makes.
const KEY_PREFIX: &str = "opk_";
/// The shortest key accepted from a file (keys made here are 47 characters).
const MIN_KEY_LEN: usize = 24;

/// What a user may do in one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            other => Err(format!("role '{other}' is not read or write")),
        }
    }
}

/// A user as stored: never a key, only the hashes of its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// Workspace → role.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// SHA-256 (hex) of each key of the user.
    #[serde(default)]
    pub key_hashes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub name: String,
    pub admin: bool,
    pub roles: BTreeMap<String, Role>,
    pub keys: usize,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            name: u.name.clone(),
            admin: u.admin,
            roles: u.roles.clone(),
            keys: u.key_hashes.len(),
            created_at: u.created_at,
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
    pub roles: BTreeMap<String, Role>,
}

impl Caller {
    fn of(user: &UserRecord) -> Self {
        Self {
            name: user.name.clone(),
            admin: user.admin,
            roles: user.roles.clone(),
        }
    }

    /// Whether the caller may see what is in `workspace`.
    pub fn can_read(&self, workspace: &str) -> bool {
        self.admin || self.roles.contains_key(workspace)
    }

    /// Whether the caller may change what is in `workspace`.
    pub fn can_write(&self, workspace: &str) -> bool {
        self.admin || self.roles.get(workspace) == Some(&Role::Write)
    }

    /// Refuses unless the caller may see `workspace`.
    pub fn require_read(&self, workspace: &str) -> Result<(), ControlError> {
        if self.can_read(workspace) {
            return Ok(());
        }
        Err(ControlError::Forbidden(format!(
            "user {} has no role in workspace {workspace}",
            self.name
        )))
    }

    /// Refuses unless the caller may change `workspace`.
    pub fn require_write(&self, workspace: &str) -> Result<(), ControlError> {
        if self.can_write(workspace) {
            return Ok(());
        }
        let has = match self.roles.get(workspace) {
            Some(_) => "only the read role",
            None => "no role",
        };
        Err(ControlError::Forbidden(format!(
            "user {} has {has} in workspace {workspace}; changing it needs the write role",
            self.name
        )))
    }

    /// Refuses unless the caller is an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ControlError> {
        if self.admin {
            return Ok(());
        }
        Err(ControlError::Forbidden(format!(
            "{what} needs an admin; user {} is not one",
            self.name
        )))
    }
}

/// A new random key.
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The users, in memory and in their bucket; cheap to clone.
#[derive(Clone)]
pub struct Users {
    bucket: LeaderBucket,
    state: Arc<RwLock<UsersState>>,
}

#[derive(Default)]
struct UsersState {
    users: BTreeMap<String, UserRecord>,
    /// Key hash → user name.
    by_hash: HashMap<String, String>,
}

impl UsersState {
    fn insert(&mut self, user: UserRecord) {
        self.remove(&user.name);
        for hash in &user.key_hashes {
            self.by_hash.insert(hash.clone(), user.name.clone());
        }
        self.users.insert(user.name.clone(), user);
    }

    fn remove(&mut self, name: &str) -> Option<UserRecord> {
        let old = self.users.remove(name)?;
        for hash in &old.key_hashes {
            self.by_hash.remove(hash);
        }
        Some(old)
    }
}

impl Users {
    /// Loads every user from their bucket, which `bucket` writes (fenced while replicas run:
    /// a deposed leader changes no user).
    pub async fn open(bucket: LeaderBucket) -> anyhow::Result<Self> {
        let kv = bucket.kv();
        let mut state = UsersState::default();
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list {USERS_BUCKET}: {e}"))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| anyhow::anyhow!("cannot list {USERS_BUCKET}: {e}"))?;
            if key == FENCE_KEY {
                continue;
            }
            let Some(bytes) = kv
                .get(&key)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read user {key}: {e}"))?
            else {
                continue;
            };
            match serde_json::from_slice::<UserRecord>(&bytes) {
                Ok(user) => state.insert(user),
                Err(e) => warn!(user = %key, error = %e, "unreadable user record ignored"),
            }
        }
        Ok(Self {
            bucket,
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// Makes sure an admin can log in: with the key in `key_file` when given (created with a
    /// new key when the file does not exist), else with a new key printed once when there is
    /// no user at all.
    pub async fn bootstrap_admin(&self, key_file: Option<&Path>) -> anyhow::Result<()> {
        let key = match key_file {
            Some(path) => Some(read_or_create_key_file(path)?),
            None if self.is_empty() => {
                let key = new_key();
                // stdout, not the log: shown once, to whoever started the orchestrator.
                println!("admin API key (shown once; keep it, e.g. export OPCTL_APIKEY=…): {key}");
                Some(key)
            }
            None => None,
        };
        let Some(key) = key else {
            return Ok(());
        };
        let hash = hash_key(&key);
        let existing = self.get(ADMIN_USER);
        if existing
            .as_ref()
            .is_some_and(|u| u.admin && u.key_hashes == [hash.clone()])
        {
            return Ok(());
        }
        let admin = UserRecord {
            name: ADMIN_USER.into(),
            admin: true,
            roles: BTreeMap::new(),
            key_hashes: vec![hash],
            created_at: existing
                .map(|u| u.created_at)
                .unwrap_or_else(chrono::Utc::now),
        };
        self.put(admin).await?;
        info!(user = ADMIN_USER, "admin key set");
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.read().users.is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, UsersState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, UsersState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The user a key belongs to.
    pub fn authenticate(&self, key: &str) -> Option<Caller> {
        let state = self.read();
        let name = state.by_hash.get(&hash_key(key))?;
        state.users.get(name).map(Caller::of)
    }

    /// One user.
    pub fn get(&self, name: &str) -> Option<UserRecord> {
        self.read().users.get(name).cloned()
    }

    /// Every user, without key hashes.
    pub fn list(&self) -> Vec<UserView> {
        self.read().users.values().map(UserView::from).collect()
    }

    /// Stores a user (replacing one of the same name), then makes it effective.
    pub async fn put(&self, user: UserRecord) -> Result<(), ControlError> {
        let bytes = serde_json::to_vec(&user)
            .map_err(|e| ControlError::Internal(format!("cannot encode user: {e}")))?;
        self.bucket.put(&user.name, bytes).await?;
        self.write().insert(user);
        Ok(())
    }

    /// Deletes a user and with it every key of theirs.
    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        if self.get(name).is_none() {
            return Err(ControlError::NotFound(format!("user {name} not found")));
        }
        self.bucket.delete(name).await?;
        self.write().remove(name);
        Ok(())
    }
}

fn read_or_create_key_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().to_string();
            if key.len() < MIN_KEY_LEN {
                anyhow::bail!(
                    "ORCHESTRATOR_ADMIN_APIKEY_FILE {}: the key must be at least {MIN_KEY_LEN} characters",
                    path.display()
                );
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = new_key();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    anyhow::anyhow!("cannot create admin key file {}: {e}", path.display())
                })?;
            writeln!(file, "{key}")?;
            info!(file = %path.display(), "new admin key written (owner-only permissions)");
            Ok(key)
        }
        Err(e) => anyhow::bail!("cannot read admin key file {}: {e}", path.display()),
    }
}

/// The key a request carries: `Authorization: Bearer <key>`, or `X-Api-Key: <key>`.
fn presented_key(request: &ServiceRequest) -> Option<String> {
    let headers = request.headers();
    if let Some(value) = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(|k| k.trim().to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.trim().to_string())
}

/// Paths answered without a key: the probes of a load balancer or kubelet, which carry none,
/// and the web view, which signs its users in with a session of its own (`crate::ui`).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || crate::ui::is_ui_path(path)
}

/// Middleware: refuses (401) every request but health checks without a valid key, and puts
/// the [`Caller`] in the request for the handlers.
pub async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if is_public(request.path()) {
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let users = request.app_data::<actix_web::web::Data<Users>>().cloned();
    let key = presented_key(&request);
    let caller = match (users, &key) {
        (Some(users), Some(key)) => users.authenticate(key),
        _ => None,
    };
    let Some(caller) = caller else {
        let refusal = ControlError::Unauthorized(match key {
            Some(_) => "the API key is not valid".into(),
            None => "no API key: send it as 'Authorization: Bearer <key>' (opctl: --apikey or OPCTL_APIKEY)".into(),
        });
        let response: HttpResponse = refusal.error_response();
        return Ok(request.into_response(response));
    };
    request.extensions_mut().insert(caller);
    Ok(next.call(request).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(admin: bool, roles: &[(&str, Role)]) -> Caller {
        Caller {
            name: "u".into(),
            admin,
            roles: roles.iter().map(|(w, r)| (w.to_string(), *r)).collect(),
        }
    }

    #[test]
    fn keys_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() > 40, "{a}");
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert!(!hash_key(&a).contains(&a[KEY_PREFIX.len()..]));
    }

    #[test]
    fn roles_decide_reading_and_writing_per_workspace() {
        let reader = caller(false, &[("public", Role::Read)]);
        assert!(reader.can_read("public"));
        assert!(!reader.can_write("public"));
        assert!(!reader.can_read("sandbox"));
        let writer = caller(false, &[("public", Role::Write)]);
        assert!(writer.can_read("public") && writer.can_write("public"));
        assert!(writer.require_admin("applying an operator").is_err());
        let admin = caller(true, &[]);
        assert!(admin.can_write("anything") && admin.require_admin("x").is_ok());
    }

    #[test]
    fn refusals_name_the_user_the_workspace_and_the_missing_role() {
        let reader = caller(false, &[("public", Role::Read)]);
        let refusal = reader.require_write("public").expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "user u has only the read role in workspace public; changing it needs the write role"
        );
        let refusal = reader.require_read("sandbox").expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "user u has no role in workspace sandbox"
        );
    }
}
