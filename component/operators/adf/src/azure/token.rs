//! Access tokens for Azure Resource Manager, by the [`Credential`] configured: a pure
//! [`TokenCache`] (when to refresh) and a [`TokenSource`] whose one task owns the cache, so
//! concurrent reconciles share a token and a refresh happens once however many ask for it.
//! Neither the client secret nor a token is ever logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tracing::{debug, warn, Instrument, Span};

use super::credential::{Credential, CredentialError};
use super::http::{exchange, Exchange, Outcome};
use super::model::ErrorBody;
use super::retry::RetryPolicy;
use crate::config::Secret;

/// A token is refreshed this long before it expires, at most (10 % of short lifetimes).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The lifetime assumed when the token endpoint does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Requests waiting for the token task before askers wait.
const QUEUE: usize = 256;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The token endpoint could not be reached or failed (5xx, 429) every time it was tried.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the credentials or the request.
    #[error("token request refused with {status}: {code}: {message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The token endpoint answered with something that is not a token.
    #[error("unreadable token response: {0}")]
    BadResponse(String),
    /// The credential cannot be used (the federated token file is missing or empty).
    #[error(transparent)]
    Credential(CredentialError),
    /// The token task has stopped (the process is shutting down).
    #[error("the token task has stopped")]
    Stopped,
}

/// A token to send, with the serial that names it when Azure rejects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub value: Secret,
    pub serial: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

/// The current token and when it must be refreshed.
#[derive(Debug, Default)]
pub struct TokenCache {
    current: Option<Cached>,
    serial: u64,
}

impl TokenCache {
    /// The cached token, unless it is due for refresh at `now` or is the one `rejected`.
    pub fn usable(&self, now: Instant, rejected: Option<u64>) -> Option<Bearer> {
        let cached = self.current.as_ref()?;
        let fresh = now < cached.refresh_at && rejected != Some(cached.bearer.serial);
        fresh.then(|| cached.bearer.clone())
    }

    /// Keeps a token just issued at `now` for `lifetime`.
    pub fn store(&mut self, value: Secret, lifetime: Duration, now: Instant) -> Bearer {
        self.serial += 1;
        let bearer = Bearer {
            value,
            serial: self.serial,
        };
        self.current = Some(Cached {
            bearer: bearer.clone(),
            refresh_at: now + lifetime.saturating_sub(refresh_margin(lifetime)),
        });
        bearer
    }
}

/// How long before expiry a token of `lifetime` is refreshed: 5 minutes, or 10 % of shorter
/// lifetimes.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_REFRESH_MARGIN)
}

/// Where and as whom tokens are asked for.
#[derive(Debug)]
pub struct TokenEndpoint {
    http: Client,
    authority: Url,
    credential: Credential,
    retry: RetryPolicy,
}

impl TokenEndpoint {
    /// Tokens for `credential`; Entra ID's requests go to `authority`.
    pub fn new(http: Client, authority: &Url, credential: Credential, retry: RetryPolicy) -> Self {
        Self {
            http,
            authority: authority.clone(),
            credential,
            retry,
        }
    }

    /// Asks for a new token, retrying transient failures within the retry policy.
    async fn fetch(&self) -> Result<(Secret, Duration), TokenError> {
        // Built afresh each time: workload identity's file may have been rotated.
        let request = self
            .credential
            .token_request(&self.authority)
            .map_err(TokenError::Credential)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = exchange(
                &self.http,
                Exchange {
                    method: request.method.clone(),
                    template: request.template,
                    url: &request.url,
                    body: &request.body,
                    bearer: None,
                    headers: request.headers,
                    attempt,
                },
            )
            .await;
            let (reason, retry_after) = match outcome {
                Outcome::Success(bytes) => return read_token(&bytes),
                Outcome::Status {
                    status,
                    retry_after,
                    body,
                } if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                    (format!("{status}: {}", describe(&body)), retry_after)
                }
                Outcome::Status { status, body, .. } => {
                    let error = ErrorBody::parse(&body);
                    return Err(TokenError::Refused {
                        status,
                        code: error.code.unwrap_or_else(|| status.as_str().to_string()),
                        message: error.message.unwrap_or_default(),
                    });
                }
                Outcome::Unreachable { reason, .. } => (reason, None),
            };
            match self
                .retry
                .next_delay(attempt, retry_after, rand::random::<f64>())
            {
                Some(delay) => {
                    debug!(attempt, delay_ms = delay.as_millis() as u64, error = %reason, "token request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(TokenError::Unavailable(reason)),
            }
        }
    }
}

fn describe(body: &[u8]) -> String {
    let error = ErrorBody::parse(body);
    match (error.code, error.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => "no details".into(),
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
}

fn read_token(body: &[u8]) -> Result<(Secret, Duration), TokenError> {
    // serde's message names the failing field, never its value.
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::BadResponse(e.to_string()))?;
    if response
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(TokenError::BadResponse("token_type is not Bearer".into()));
    }
    // v2.0 sends a number, v1.0 a string.
    let seconds = match response.expires_in {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let lifetime = seconds.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((Secret::new(response.access_token), lifetime))
}

struct TokenRequest {
    rejected: Option<u64>,
    reply: oneshot::Sender<Result<Bearer, TokenError>>,
    /// The asker's span: a fetch made for it is traced as part of its work.
    asker: Span,
}

/// Hands out tokens from one task that owns the cache; started on first use, inside the
/// component's runtime.
#[derive(Debug)]
pub struct TokenSource {
    endpoint: Arc<TokenEndpoint>,
    requests: OnceCell<mpsc::Sender<TokenRequest>>,
}

impl TokenSource {
    /// A source asking `endpoint`.
    pub fn new(endpoint: TokenEndpoint) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            requests: OnceCell::new(),
        }
    }

    /// A valid token; a new one when `rejected` names the cached one (Azure answered 401).
    pub async fn bearer(&self, rejected: Option<u64>) -> Result<Bearer, TokenError> {
        let requests = self
            .requests
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(serve(self.endpoint.clone(), rx));
                tx
            })
            .await;
        let (reply, answer) = oneshot::channel();
        requests
            .send(TokenRequest {
                rejected,
                reply,
                asker: Span::current(),
            })
            .await
            .map_err(|_| TokenError::Stopped)?;
        answer.await.map_err(|_| TokenError::Stopped)?
    }
}

/// The token task: answers requests in turn, fetching when the cache cannot serve one. When a
/// fetch fails, the requests that queued meanwhile get the same error rather than a fetch each.
async fn serve(endpoint: Arc<TokenEndpoint>, mut requests: mpsc::Receiver<TokenRequest>) {
    let mut cache = TokenCache::default();
    while let Some(request) = requests.recv().await {
        if let Some(bearer) = cache.usable(Instant::now(), request.rejected) {
            let _ = request.reply.send(Ok(bearer));
            continue;
        }
        match endpoint.fetch().instrument(request.asker.clone()).await {
            Ok((value, lifetime)) => {
                let bearer = cache.store(value, lifetime, Instant::now());
                debug!(
                    serial = bearer.serial,
                    lifetime_s = lifetime.as_secs(),
                    "access token obtained"
                );
                let _ = request.reply.send(Ok(bearer));
            }
            Err(e) => {
                warn!(error = %e, "no access token");
                while let Ok(waiting) = requests.try_recv() {
                    let _ = waiting.reply.send(Err(e.clone()));
                }
                let _ = request.reply.send(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refresh_five_minutes_early_or_ten_percent_early_when_short() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_cached_token_serves_until_its_refresh_time() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        assert_eq!(cache.usable(t0, None), None);
        let bearer = cache.store(Secret::new("tok"), Duration::from_secs(3600), t0);
        assert_eq!(
            cache.usable(t0 + Duration::from_secs(3000), None),
            Some(bearer)
        );
        assert_eq!(cache.usable(t0 + Duration::from_secs(3300), None), None);
    }

    #[test]
    fn a_rejected_token_is_replaced_once_not_for_every_asker() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        let first = cache.store(Secret::new("a"), Duration::from_secs(3600), t0);
        assert_eq!(cache.usable(t0, Some(first.serial)), None);
        let second = cache.store(Secret::new("b"), Duration::from_secs(3600), t0);
        assert_ne!(first.serial, second.serial);
        // A late 401 for the first token does not throw the second away.
        assert_eq!(cache.usable(t0, Some(first.serial)), Some(second));
    }

    #[test]
    fn token_responses_read_with_numeric_or_string_lifetimes_and_never_show_the_token() {
        let (token, lifetime) = read_token(
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
        )
        .expect("a token");
        assert_eq!(token.expose(), "eyJ0");
        assert_eq!(lifetime, Duration::from_secs(3599));
        assert!(!format!("{token:?}").contains("eyJ0"));
        let (_, lifetime) =
            read_token(br#"{"token_type":"Bearer","expires_in":"600","access_token":"x"}"#)
                .expect("a token");
        assert_eq!(lifetime, Duration::from_secs(600));
        assert!(read_token(br#"{"token_type":"mac","access_token":"x"}"#).is_err());
        assert!(read_token(br#"{"expires_in":5}"#).is_err());
    }
}
