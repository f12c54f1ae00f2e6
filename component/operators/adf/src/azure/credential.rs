//! How the operator signs in to Azure, chosen from what is set: a client secret, workload
//! identity (a federated token file, read again at every token request so a rotated file is
//! picked up) or managed identity (the instance metadata endpoint). Each yields the one token
//! request to send; neither a secret nor the federated token is ever logged or put in an error.

use std::path::{Path, PathBuf};

use reqwest::{Method, Url};
use thiserror::Error;
use uuid::Uuid;

use super::http::Body;
use crate::config::Secret;

/// The scope asked for from Entra ID: Azure Resource Manager.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// The resource asked for from the instance metadata endpoint: Azure Resource Manager.
pub const ARM_RESOURCE: &str = "https://management.azure.com/";
/// The instance metadata endpoint's token API version.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The client assertion type of a federated (workload identity) token.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why a credential cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    /// The federated token file is missing, unreadable or empty.
    #[error("federated token file {path}: {reason}")]
    FederatedTokenFile { path: String, reason: String },
}

/// A way to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A service principal's client secret (client-credentials grant).
    ClientSecret {
        tenant_id: Uuid,
        client_id: Uuid,
        secret: Secret,
    },
    /// Workload identity: the federated token in `token_file` is the client assertion.
    WorkloadIdentity {
        tenant_id: Uuid,
        client_id: Uuid,
        token_file: PathBuf,
    },
    /// Managed identity through the instance metadata endpoint; `client_id` picks a
    /// user-assigned identity, none the system-assigned one.
    ManagedIdentity {
        client_id: Option<Uuid>,
        endpoint: Url,
    },
}

/// One token request, ready to send.
#[derive(Debug)]
pub struct TokenRequest {
    pub method: Method,
    pub template: &'static str,
    pub url: Url,
    pub body: Body,
    pub headers: &'static [(&'static str, &'static str)],
}

impl Credential {
    /// The method's name, for the start-up log line.
    pub fn method(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client secret",
            Self::WorkloadIdentity { .. } => "workload identity",
            Self::ManagedIdentity { .. } => "managed identity",
        }
    }

    /// The request that gets a token now; reads the federated token file when there is one.
    pub fn token_request(&self, authority: &Url) -> Result<TokenRequest, CredentialError> {
        let entra = |tenant_id: &Uuid, form: Vec<(&'static str, String)>| {
            let mut url = authority.clone();
            if let Ok(mut segments) = url.path_segments_mut() {
                segments
                    .pop_if_empty()
                    .extend([&tenant_id.to_string(), "oauth2", "v2.0", "token"]);
            }
            TokenRequest {
                method: Method::POST,
                template: "/{tenantId}/oauth2/v2.0/token",
                url,
                body: Body::Form(form),
                headers: &[],
            }
        };
        Ok(match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => entra(
                tenant_id,
                vec![
                    ("client_id", client_id.to_string()),
                    ("client_secret", secret.expose().to_string()),
                    ("scope", ARM_SCOPE.to_string()),
                    ("grant_type", "client_credentials".to_string()),
                ],
            ),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                let assertion = read_federated_token(token_file)?;
                entra(
                    tenant_id,
                    vec![
                        ("client_id", client_id.to_string()),
                        ("client_assertion_type", JWT_BEARER.to_string()),
                        ("client_assertion", assertion.expose().to_string()),
                        ("scope", ARM_SCOPE.to_string()),
                        ("grant_type", "client_credentials".to_string()),
                    ],
                )
            }
            Self::ManagedIdentity {
                client_id,
                endpoint,
            } => {
                let mut url = endpoint.clone();
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments
                        .pop_if_empty()
                        .extend(["metadata", "identity", "oauth2", "token"]);
                }
                {
                    let mut query = url.query_pairs_mut();
                    query
                        .clear()
                        .append_pair("api-version", IMDS_API_VERSION)
                        .append_pair("resource", ARM_RESOURCE);
                    if let Some(client_id) = client_id {
                        query.append_pair("client_id", &client_id.to_string());
                    }
                }
                TokenRequest {
                    method: Method::GET,
                    template: "/metadata/identity/oauth2/token",
                    url,
                    body: Body::Empty,
                    headers: &[("Metadata", "true")],
                }
            }
        })
    }
}

/// The federated token in `path`, trimmed. The error names the file and never its content.
pub fn read_federated_token(path: &Path) -> Result<Secret, CredentialError> {
    let failed = |reason: String| CredentialError::FederatedTokenFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(format!("cannot be read: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("is empty".into()));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "00000000-0000-0000-0000-000000000001";
    const CLIENT: &str = "00000000-0000-0000-0000-000000000002";

    fn guid(text: &str) -> Uuid {
        Uuid::try_parse(text).expect("a GUID")
    }

    /// A path of its own under the temporary directory, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("adf-federated-{}", Uuid::new_v4())))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn form(request: &TokenRequest) -> Vec<(&'static str, String)> {
        match &request.body {
            Body::Form(form) => form.clone(),
            other => panic!("not a form: {other:?}"),
        }
    }

    #[test]
    fn workload_identity_sends_the_files_token_as_a_client_assertion_read_afresh() {
        let file = TempPath::new();
        std::fs::write(&file.0, "eyJ.first.token\n").expect("written");
        let credential = Credential::WorkloadIdentity {
            tenant_id: guid(TENANT),
            client_id: guid(CLIENT),
            token_file: file.0.clone(),
        };
        let authority = Url::parse("https://login.example/").expect("a URL");
        let request = credential.token_request(&authority).expect("a request");
        assert_eq!(
            request.url.as_str(),
            format!("https://login.example/{TENANT}/oauth2/v2.0/token")
        );
        let fields = form(&request);
        assert!(fields.contains(&("client_assertion", "eyJ.first.token".into())));
        assert!(fields.contains(&("client_assertion_type", JWT_BEARER.into())));
        assert!(!fields.iter().any(|(k, _)| *k == "client_secret"));

        std::fs::write(&file.0, "eyJ.second.token").expect("rotated");
        let fields = form(&credential.token_request(&authority).expect("a request"));
        assert!(fields.contains(&("client_assertion", "eyJ.second.token".into())));
    }

    #[test]
    fn a_missing_or_empty_token_file_names_the_file_never_its_content() {
        let file = TempPath::new();
        let err = read_federated_token(&file.0).expect_err("missing");
        assert!(
            err.to_string().contains(&file.0.display().to_string()),
            "{err}"
        );
        std::fs::write(&file.0, "  \n").expect("written");
        let err = read_federated_token(&file.0).expect_err("empty");
        assert!(err.to_string().contains(&file.0.display().to_string()));
        assert!(err.to_string().ends_with("is empty"), "{err}");
        std::fs::write(&file.0, "eyJ.secret.content").expect("written");
        assert!(!format!("{:?}", read_federated_token(&file.0)).contains("secret.content"));
    }

    #[test]
    fn managed_identity_asks_the_metadata_endpoint_with_its_header_and_client_id() {
        let credential = Credential::ManagedIdentity {
            client_id: Some(guid(CLIENT)),
            endpoint: Url::parse("http://169.254.169.254").expect("a URL"),
        };
        let authority = Url::parse("https://login.example/").expect("a URL");
        let request = credential.token_request(&authority).expect("a request");
        assert_eq!(request.method, Method::GET);
        assert_eq!(
            request.url.as_str(),
            format!("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id={CLIENT}")
        );
        assert_eq!(request.headers, &[("Metadata", "true")]);
        let system = Credential::ManagedIdentity {
            client_id: None,
            endpoint: Url::parse("http://127.0.0.1:9/").expect("a URL"),
        };
        let request = system.token_request(&authority).expect("a request");
        assert!(
            !request.url.as_str().contains("client_id"),
            "{}",
            request.url
        );
    }
}
