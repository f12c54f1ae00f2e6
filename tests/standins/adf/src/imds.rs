//! The Azure instance metadata service's managed-identity token endpoint,
//! `GET /metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=…]` with the
//! `Metadata: true` header: its checks, in IMDS's order, and its answer (every number a
//! string, as IMDS sends them).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

/// The resources that name Azure Resource Manager.
const ARM_RESOURCES: [&str; 2] = [
    "https://management.azure.com/",
    "https://management.azure.com",
];

/// An IMDS refusal: `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl ImdsError {
    fn invalid_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub fn to_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({
            "error": self.error,
            "error_description": self.description,
        }))
    }
}

/// The identities this machine has: the system-assigned one, and a user-assigned one when set.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub system_client_id: String,
    pub user_assigned_client_id: Option<String>,
}

/// A managed-identity token request checked as IMDS checks it; returns the client id of the
/// identity the token is for.
pub fn check(
    identities: &Identities,
    metadata_header: Option<&str>,
    query: &[(String, String)],
) -> Result<String, ImdsError> {
    let field = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    if !metadata_header.is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Err(ImdsError::invalid_request(
            "Required metadata header not specified",
        ));
    }
    if field("api-version").is_none() {
        return Err(ImdsError::invalid_request(
            "Required query variable 'api-version' is missing",
        ));
    }
    let resource = field("resource").ok_or_else(|| {
        ImdsError::invalid_request("Required query variable 'resource' is missing")
    })?;
    if !ARM_RESOURCES.contains(&resource) {
        return Err(ImdsError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_resource",
            description: format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant."
            ),
        });
    }
    match field("client_id") {
        None => Ok(identities.system_client_id.clone()),
        Some(asked)
            if identities
                .user_assigned_client_id
                .as_deref()
                .is_some_and(|known| known.eq_ignore_ascii_case(asked)) =>
        {
            Ok(asked.to_owned())
        }
        Some(_) => Err(ImdsError::invalid_request("Identity not found")),
    }
}

/// IMDS's token answer.
pub fn answer(
    access_token: &str,
    client_id: &str,
    ttl: TimeDelta,
    now: DateTime<Utc>,
) -> HttpResponse {
    let seconds = ttl.num_seconds().to_string();
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "client_id": client_id,
        "expires_in": seconds,
        "expires_on": (now + ttl).timestamp().to_string(),
        "ext_expires_in": seconds,
        "not_before": now.timestamp().to_string(),
        "resource": ARM_RESOURCES[0],
        "token_type": "Bearer",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn identities() -> Identities {
        Identities {
            system_client_id: "system".into(),
            user_assigned_client_id: Some("user-1".into()),
        }
    }

    const GOOD: [(&str, &str); 2] = [
        ("api-version", "2018-02-01"),
        ("resource", "https://management.azure.com/"),
    ];

    #[test]
    fn the_system_or_the_named_user_assigned_identity_gets_a_token() {
        assert_eq!(
            check(&identities(), Some("true"), &query(&GOOD)),
            Ok("system".into())
        );
        let mut with_client = GOOD.to_vec();
        with_client.push(("client_id", "USER-1"));
        assert_eq!(
            check(&identities(), Some("true"), &query(&with_client)),
            Ok("USER-1".into())
        );
        with_client[2] = ("client_id", "someone-else");
        let refused = check(&identities(), Some("true"), &query(&with_client));
        assert_eq!(
            refused.map_err(|e| e.description),
            Err("Identity not found".into())
        );
    }

    #[test]
    fn requests_without_the_header_or_the_query_are_refused_as_imds_refuses_them() {
        let refused = check(&identities(), None, &query(&GOOD)).expect_err("no header");
        assert_eq!(
            refused.description,
            "Required metadata header not specified"
        );
        let refused =
            check(&identities(), Some("true"), &query(&GOOD[..1])).expect_err("no resource");
        assert_eq!(
            refused.description,
            "Required query variable 'resource' is missing"
        );
        let refused =
            check(&identities(), Some("true"), &query(&GOOD[1..])).expect_err("no version");
        assert!(refused.description.contains("api-version"));
        let refused = check(
            &identities(),
            Some("true"),
            &query(&[
                ("api-version", "2018-02-01"),
                ("resource", "https://vault.azure.net"),
            ]),
        )
        .expect_err("another resource");
        assert_eq!(refused.error, "invalid_resource");
    }
}
