//! Microsoft Entra ID's client-credentials token endpoint (with a client secret, or a
//! federated client assertion as workload identity sends) and ARM's bearer check: which access
//! tokens were issued, to which client, how, and until when.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ArmError;

/// The scopes that name Azure Resource Manager; Entra accepts both spellings of its audience.
const ARM_SCOPES: [&str; 2] = [
    "https://management.azure.com/.default",
    "https://management.core.windows.net/.default",
];
/// The client assertion type of a federated token.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client the token endpoint insists on; an unset field accepts any value.
#[derive(Debug, Clone, Default)]
pub struct ExpectedClient {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// The federated token (workload identity) accepted as client assertion; any when unset.
    pub federated_token: Option<String>,
}

/// A token the endpoint handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub access_token: String,
    pub expires_in_s: i64,
}

impl TokenGrant {
    /// Entra's token response.
    pub fn to_json(&self) -> Value {
        json!({
            "token_type": "Bearer",
            "expires_in": self.expires_in_s,
            "ext_expires_in": self.expires_in_s,
            "access_token": self.access_token,
        })
    }
}

/// A refusal in Entra's words: an OAuth error name, an AADSTS code and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// Entra's error body, trace and correlation ids included.
    pub fn to_response(&self, now: DateTime<Utc>) -> HttpResponse {
        let trace_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        HttpResponse::build(self.status).json(json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n\
                 Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        }))
    }
}

/// Every token issued, with its expiry.
#[derive(Debug, Default)]
pub struct Tokens {
    expiry_by_token: HashMap<String, DateTime<Utc>>,
    /// Tokens issued by how the client signed in.
    by_grant: BTreeMap<&'static str, u64>,
}

impl Tokens {
    /// Answers a client-credentials token request for `tenant` with the form `fields`,
    /// checking it as Entra would, in Entra's order.
    pub fn issue(
        &mut self,
        expected: &ExpectedClient,
        tenant: &str,
        fields: &[(String, String)],
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<TokenGrant, EntraError> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if expected
            .tenant_id
            .as_deref()
            .is_some_and(|wanted| !wanted.eq_ignore_ascii_case(tenant))
        {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct \
                     tenant ID and are signing into the correct cloud."
                ),
            ));
        }
        match field("grant_type") {
            None => return Err(EntraError::missing_parameter("grant_type")),
            Some("client_credentials") => {}
            Some(other) => {
                return Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    70003,
                    format!("The app requested an unsupported grant type '{other}'."),
                ))
            }
        }
        let client_id =
            field("client_id").ok_or_else(|| EntraError::missing_parameter("client_id"))?;
        if expected
            .client_id
            .as_deref()
            .is_some_and(|wanted| !wanted.eq_ignore_ascii_case(client_id))
        {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     '{tenant}'."
                ),
            ));
        }
        let scope = field("scope").ok_or_else(|| EntraError::missing_parameter("scope"))?;
        if !ARM_SCOPES
            .iter()
            .any(|arm| arm.eq_ignore_ascii_case(scope.trim()))
        {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                format!(
                    "The provided request must include a 'scope' input parameter. The provided \
                     value for the input parameter 'scope' is not valid. The scope {scope} is not \
                     valid: this stand-in issues tokens for {} only.",
                    ARM_SCOPES[0]
                ),
            ));
        }
        let grant =
            match (field("client_secret"), field("client_assertion")) {
                (Some(secret), _) => {
                    check_secret(expected, client_id, secret)?;
                    "clientSecret"
                }
                (None, Some(assertion)) => {
                    check_assertion(expected, field("client_assertion_type"), assertion)?;
                    "clientAssertion"
                }
                (None, None) => return Err(EntraError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' \
                     or 'client_secret'."
                        .to_owned(),
                )),
            };
        Ok(self.mint(tenant, client_id, grant, ttl, now))
    }

    /// A token for a managed identity (the instance metadata endpoint has checked the request).
    pub fn issue_managed(
        &mut self,
        client_id: &str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> TokenGrant {
        self.mint("managed-identity", client_id, "managedIdentity", ttl, now)
    }

    /// Tokens issued so far by how the client signed in.
    pub fn grants(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_grant
    }

    fn mint(
        &mut self,
        tenant: &str,
        client_id: &str,
        grant: &'static str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> TokenGrant {
        let expires_at = now + ttl;
        let access_token = jwt_shaped_token(tenant, client_id, now, expires_at);
        self.expiry_by_token
            .insert(access_token.clone(), expires_at);
        *self.by_grant.entry(grant).or_default() += 1;
        TokenGrant {
            access_token,
            expires_in_s: ttl.num_seconds(),
        }
    }

    /// ARM's check of the `Authorization` header: present, `Bearer <token>`, issued here and
    /// not expired. ARM's clock-skew allowance is left out, so short TTLs expire when asked.
    pub fn check(&self, authorization: Option<&str>, now: DateTime<Utc>) -> Result<(), ArmError> {
        let authorization = authorization.ok_or_else(|| {
            ArmError::authentication_failed(
                "Authentication failed. The 'Authorization' header is missing.",
            )
        })?;
        let token = authorization
            .split_once(' ')
            .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty())
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ArmError::authentication_failed(
                    "Authentication failed. The 'Authorization' header is provided in an \
                     invalid format.",
                )
            })?;
        match self.expiry_by_token.get(token) {
            None => Err(ArmError::invalid_token()),
            Some(expires_at) if *expires_at <= now => {
                Err(ArmError::expired_token(*expires_at, now))
            }
            Some(_) => Ok(()),
        }
    }

    /// Makes every token issued so far expire now; tokens issued later are unaffected.
    pub fn expire_all(&mut self, now: DateTime<Utc>) {
        for expires_at in self.expiry_by_token.values_mut() {
            *expires_at = (*expires_at).min(now);
        }
    }
}

/// Entra's check of a client secret.
fn check_secret(
    expected: &ExpectedClient,
    client_id: &str,
    secret: &str,
) -> Result<(), EntraError> {
    if expected
        .client_secret
        .as_deref()
        .is_some_and(|wanted| wanted != secret)
    {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request \
                 is the client secret value, not the client secret ID, for a secret added to \
                 app '{client_id}'."
            ),
        ));
    }
    Ok(())
}

/// Entra's check of a federated client assertion: its type, then whether a federated identity
/// credential of the app matches it (here: whether it is the token the test set).
fn check_assertion(
    expected: &ExpectedClient,
    assertion_type: Option<&str>,
    assertion: &str,
) -> Result<(), EntraError> {
    if assertion_type != Some(JWT_BEARER) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            7000219,
            format!("'client_assertion_type' must be '{JWT_BEARER}'."),
        ));
    }
    if assertion.trim().is_empty()
        || expected
            .federated_token
            .as_deref()
            .is_some_and(|wanted| wanted != assertion)
    {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            "No matching federated identity record found for presented assertion subject."
                .to_owned(),
        ));
    }
    Ok(())
}

/// A token shaped like Entra's (a JWT with ARM's audience and the usual claims), so clients
/// that peek at its claims work; its signature is not one anybody could check.
fn jwt_shaped_token(
    tenant: &str,
    client_id: &str,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> String {
    let header = json!({ "typ": "JWT", "alg": "RS256", "kid": "adf-standin" });
    let claims = json!({
        "aud": "https://management.azure.com/",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": issued_at.timestamp(),
        "nbf": issued_at.timestamp(),
        "exp": expires_at.timestamp(),
        "appid": client_id,
        "tid": tenant,
        "oid": Uuid::new_v4(),
        "uti": Uuid::new_v4().simple().to_string(),
    });
    let signature = Uuid::new_v4();
    format!(
        "{}.{}.{}",
        base64_url(header.to_string().as_bytes()),
        base64_url(claims.to_string().as_bytes()),
        base64_url(signature.as_bytes())
    )
}

/// Base64url without padding, as JWTs use; a dozen lines spare a dependency.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = chunk.iter().enumerate().fold(0u32, |acc, (index, byte)| {
            acc | u32::from(*byte) << (16 - 8 * index)
        });
        for sextet in 0..=chunk.len() {
            let index = (triple >> (18 - 6 * sextet)) & 0x3f;
            text.push(char::from(ALPHABET[index as usize]));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{millis, parse_timestamp};

    fn at(ms: u64) -> DateTime<Utc> {
        parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default() + millis(ms)
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn good_form() -> Vec<(String, String)> {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("scope", "https://management.azure.com/.default"),
        ])
    }

    fn expected() -> ExpectedClient {
        ExpectedClient {
            tenant_id: Some("tenant".to_owned()),
            client_id: Some("app".to_owned()),
            client_secret: Some("s3cret".to_owned()),
            federated_token: Some("eyJ.federated".to_owned()),
        }
    }

    #[test]
    fn base64_url_matches_the_rfc_examples() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn an_issued_token_is_accepted_until_it_expires() {
        let mut tokens = Tokens::default();
        let grant = tokens.issue(&expected(), "tenant", &good_form(), millis(2000), at(0));
        assert!(grant.is_ok());
        let Ok(grant) = grant else { return };
        assert_eq!(grant.expires_in_s, 2);
        assert!(grant.access_token.starts_with("eyJ"));
        let header = format!("Bearer {}", grant.access_token);
        assert!(tokens.check(Some(&header), at(1999)).is_ok());
        let expired = tokens.check(Some(&header), at(2000));
        assert!(expired.is_err_and(|e| e.to_string().starts_with("ExpiredAuthenticationToken")));
    }

    #[test]
    fn expiring_all_tokens_spares_tokens_issued_afterwards() {
        let mut tokens = Tokens::default();
        let hour = millis(3_600_000);
        let old = tokens.issue(&expected(), "tenant", &good_form(), hour, at(0));
        tokens.expire_all(at(10));
        let new = tokens.issue(&expected(), "tenant", &good_form(), hour, at(20));
        assert!(old.is_ok() && new.is_ok());
        if let (Ok(old), Ok(new)) = (old, new) {
            let bearer = |grant: &TokenGrant| format!("Bearer {}", grant.access_token);
            assert!(tokens.check(Some(&bearer(&old)), at(30)).is_err());
            assert!(tokens.check(Some(&bearer(&new)), at(30)).is_ok());
        }
    }

    #[test]
    fn bad_headers_and_unknown_tokens_are_refused_with_arm_codes() {
        let tokens = Tokens::default();
        let code = |header: Option<&str>| {
            tokens.check(header, at(0)).err().map(|e| {
                e.to_string()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        };
        assert_eq!(code(None).as_deref(), Some("AuthenticationFailed"));
        assert_eq!(
            code(Some("Basic abc")).as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(
            code(Some("Bearer ")).as_deref(),
            Some("AuthenticationFailed")
        );
        assert_eq!(
            code(Some("Bearer nope")).as_deref(),
            Some("InvalidAuthenticationToken")
        );
    }

    #[test]
    fn token_requests_are_refused_like_entra_refuses_them() {
        let mut tokens = Tokens::default();
        let mut refusal = |tenant: &str, fields: Vec<(String, String)>| {
            tokens
                .issue(&expected(), tenant, &fields, millis(1000), at(0))
                .err()
                .map(|e| (e.status.as_u16(), e.error, e.code))
        };
        let without = |name: &str| -> Vec<(String, String)> {
            good_form()
                .into_iter()
                .filter(|(key, _)| key != name)
                .collect()
        };
        let replaced = |name: &str, value: &str| -> Vec<(String, String)> {
            let mut fields = without(name);
            fields.push((name.to_owned(), value.to_owned()));
            fields
        };
        assert_eq!(
            refusal("other", good_form()),
            Some((400, "invalid_request", 90002))
        );
        assert_eq!(
            refusal("tenant", replaced("grant_type", "password")),
            Some((400, "unsupported_grant_type", 70003))
        );
        assert_eq!(
            refusal("tenant", without("grant_type")),
            Some((400, "invalid_request", 900144))
        );
        assert_eq!(
            refusal("tenant", replaced("client_id", "stranger")),
            Some((400, "unauthorized_client", 700016))
        );
        assert_eq!(
            refusal(
                "tenant",
                replaced("scope", "https://graph.microsoft.com/.default")
            ),
            Some((400, "invalid_scope", 70011))
        );
        assert_eq!(
            refusal("tenant", without("client_secret")),
            Some((401, "invalid_client", 7000218))
        );
        assert_eq!(
            refusal("tenant", replaced("client_secret", "guess")),
            Some((401, "invalid_client", 7000215))
        );
        assert_eq!(refusal("tenant", good_form()), None);
    }

    #[test]
    fn a_federated_assertion_signs_in_only_when_it_matches_and_grants_are_counted_by_kind() {
        let mut tokens = Tokens::default();
        let mut ask = |assertion_type: &str, assertion: &str| {
            let mut fields: Vec<_> = good_form()
                .into_iter()
                .filter(|(key, _)| key != "client_secret")
                .collect();
            fields.extend(form(&[
                ("client_assertion_type", assertion_type),
                ("client_assertion", assertion),
            ]));
            tokens
                .issue(&expected(), "tenant", &fields, millis(1000), at(0))
                .err()
                .map(|e| (e.status.as_u16(), e.code))
        };
        assert_eq!(ask(JWT_BEARER, "eyJ.federated"), None);
        assert_eq!(ask(JWT_BEARER, "eyJ.stale"), Some((401, 700213)));
        assert_eq!(ask("urn:other", "eyJ.federated"), Some((400, 7000219)));
        tokens
            .issue(&expected(), "tenant", &good_form(), millis(1000), at(0))
            .expect("a secret still works");
        tokens.issue_managed("identity", millis(1000), at(0));
        assert_eq!(
            tokens.grants().clone(),
            BTreeMap::from([
                ("clientAssertion", 1),
                ("clientSecret", 1),
                ("managedIdentity", 1)
            ])
        );
    }

    #[test]
    fn an_unconfigured_client_accepts_any_credentials() {
        let mut tokens = Tokens::default();
        let fields = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "anyone"),
            ("client_secret", "anything"),
            ("scope", "https://management.core.windows.net/.default"),
        ]);
        let grant = tokens.issue(
            &ExpectedClient::default(),
            "any",
            &fields,
            millis(1000),
            at(0),
        );
        assert!(grant.is_ok());
    }
}
