//! Web sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, and the session's
//! record (user name, anti-forgery token) in a JetStream KV bucket with a time to live, so a
//! replica that takes over keeps everyone signed in. The key signed in with is never kept: a
//! session names the user, whose roles are read afresh on every request (a changed or deleted
//! user takes effect at once). The bucket is keyed by the id's SHA-256, so a copy of the bucket
//! gives no cookie away.

use std::time::Duration;

use actix_web::HttpRequest;
use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::views::UiError;
use crate::auth::{hash_key, Caller, Users};
use crate::error::ControlError;

/// The sessions' bucket.
pub const SESSIONS_BUCKET: &str = "orchestrator-ui-sessions";
/// How long a session lasts after sign-in.
const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// The cookie's name.
const COOKIE: &str = "opui_session";

/// A session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    user: String,
    /// Sent back in every form that changes something, and compared.
    csrf: String,
    created_at: DateTime<Utc>,
}

/// The signed-in user of a request.
pub struct SignedIn {
    pub caller: Caller,
    /// The token forms carry.
    pub csrf: String,
    /// The session's key in the bucket.
    key: String,
}

impl SignedIn {
    /// Refuses a state-changing request whose token is not this session's.
    pub fn check_csrf(&self, presented: &str) -> Result<(), UiError> {
        let same = presented.len() == self.csrf.len()
            && presented
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(UiError::Forgery)
        }
    }
}

/// The sessions' bucket; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    kv: kv::Store,
}

impl Sessions {
    /// Opens the bucket, creating it when absent.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Self> {
        let config = kv::Config {
            bucket: SESSIONS_BUCKET.to_string(),
            history: 1,
            max_age: SESSION_TTL,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = operator_nats_cluster::open_or_create_bucket(js, config)
            .await
            .map_err(|reason| anyhow::anyhow!("cannot open {SESSIONS_BUCKET}: {reason}"))?;
        Ok(Self { kv })
    }

    /// Starts a session for `user`; answers the cookie's value.
    pub async fn create(&self, user: &str) -> Result<String, ControlError> {
        let id = random_token();
        let record = SessionRecord {
            user: user.to_string(),
            csrf: random_token(),
            created_at: Utc::now(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| ControlError::Internal(format!("cannot encode a session: {e}")))?;
        self.kv
            .put(hash_key(&id), bytes.into())
            .await
            .map_err(|e| ControlError::Unavailable(format!("cannot store the session: {e}")))?;
        Ok(id)
    }

    /// The signed-in user of `request`, or why there is none.
    pub async fn signed_in(
        &self,
        request: &HttpRequest,
        users: &Users,
    ) -> Result<SignedIn, UiError> {
        let sign_in = || UiError::SignIn {
            next: request.uri().to_string(),
        };
        let id = session_id(request).ok_or_else(sign_in)?;
        let key = hash_key(&id);
        let bytes = self
            .kv
            .get(&key)
            .await
            .map_err(|e| ControlError::Unavailable(format!("cannot read the session: {e}")))?
            .ok_or_else(sign_in)?;
        let record: SessionRecord = serde_json::from_slice(&bytes).map_err(|_| sign_in())?;
        let user = users.get(&record.user).ok_or_else(sign_in)?;
        Ok(SignedIn {
            caller: Caller {
                name: user.name,
                admin: user.admin,
                roles: user.roles,
            },
            csrf: record.csrf,
            key,
        })
    }

    /// Ends a session.
    pub async fn end(&self, session: &SignedIn) -> Result<(), ControlError> {
        self.kv
            .purge(&session.key)
            .await
            .map_err(|e| ControlError::Unavailable(format!("cannot end the session: {e}")))
    }
}

/// 32 random bytes, base64url.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session id in the request's cookie.
fn session_id(request: &HttpRequest) -> Option<String> {
    request
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that keeps a session; `Secure` when the request came over TLS.
pub fn session_cookie(id: &str, request: &HttpRequest) -> String {
    let secure = if request.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that drops the session's cookie.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_id_is_read_from_among_other_cookies() {
        let request = actix_web::test::TestRequest::default()
            .insert_header(("cookie", "a=1; opui_session=abc; b=2"))
            .to_http_request();
        assert_eq!(session_id(&request).as_deref(), Some("abc"));
        let request = actix_web::test::TestRequest::default()
            .insert_header(("cookie", "opui_sessionx=abc"))
            .to_http_request();
        assert_eq!(session_id(&request), None);
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let request = actix_web::test::TestRequest::default().to_http_request();
        let cookie = session_cookie("id", &request);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"), "{cookie}");
    }

    #[test]
    fn a_forged_token_is_refused() {
        let session = SignedIn {
            caller: Caller {
                name: "u".into(),
                admin: false,
                roles: Default::default(),
            },
            csrf: "abc".into(),
            key: "k".into(),
        };
        assert!(session.check_csrf("abc").is_ok());
        assert!(session.check_csrf("abd").is_err());
        assert!(session.check_csrf("").is_err());
    }
}
