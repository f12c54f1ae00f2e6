//! The orchestrator's HTTP API as `opctl` uses it: URLs built from validated path segments,
//! JSON answers, and every non-2xx answer turned into an [`ApiError`] with the server's reason.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use operator_contract::api::{Applied, ApplyAnswer, BatchAnswer, ErrorBody, Outcome};
use operator_contract::ManifestKind;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

#[path = "client/streams.rs"]
mod streams;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take; a details query waits on an operator's components.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a request is sent while the orchestrator answers "busy" (429).
const BUSY_ATTEMPTS: usize = 4;
/// The longest wait honoured from a `Retry-After`.
const MAX_BUSY_WAIT_S: u64 = 10;
/// The most of a non-JSON error body quoted in an error line.
const MAX_QUOTED_BODY: usize = 200;

/// A refusal from the orchestrator: its one-line reason and the details it listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
    pub details: Vec<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Reads the server's reason from an error answer, or says what came back instead.
    pub fn from_response(status: StatusCode, body: &str) -> Self {
        if let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) {
            return Self {
                status,
                reason: parsed.error,
                details: parsed.details,
            };
        }
        let quoted = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let reason = if quoted.is_empty() {
            format!("the orchestrator answered {status}")
        } else {
            let mut quoted: String = quoted.chars().take(MAX_QUOTED_BODY).collect();
            if body.chars().count() > MAX_QUOTED_BODY {
                quoted.push('…');
            }
            format!("the orchestrator answered {status}: {quoted}")
        };
        Self {
            status,
            reason,
            details: Vec::new(),
        }
    }
}

/// What one attempt of a request came to.
enum Sent {
    Answer(StatusCode, String),
    /// 429 or 503 with `Retry-After`: try again after this long. A 503 may come after the
    /// request was carried out (the leader lost its lease while it was under way).
    Busy {
        wait: Duration,
        unavailable: bool,
    },
}

/// `url`, built on `base`, moved onto `server` (same path below them, same query).
fn rebase(url: &mut Url, base: &Url, server: &Url) {
    if base == server {
        return;
    }
    let base = base.as_str().trim_end_matches('/');
    if let Some(rest) = url.as_str().strip_prefix(base) {
        if let Ok(moved) = Url::parse(&format!("{}{rest}", server.as_str().trim_end_matches('/'))) {
            *url = moved;
        }
    }
}

/// Whether an error is the orchestrator's "not found".
pub fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<ApiError>()
        .is_some_and(|e| e.status == StatusCode::NOT_FOUND)
}

/// A client of one orchestrator.
pub struct OrchestratorClient {
    http: reqwest::Client,
    /// For streams of changes, which last as long as the user wants: no whole-request timeout.
    stream_http: reqwest::Client,
    /// The replicas' URLs; requests are built on the first and sent to the one that answered
    /// last.
    servers: Vec<Url>,
    /// The index in `servers` of the one that answered last.
    current: AtomicUsize,
    apikey: Option<String>,
}

impl OrchestratorClient {
    /// A client of the orchestrator at `servers` (its replicas, tried in turn), `http://` or
    /// `https://` URLs.
    pub fn new(servers: Vec<Url>, apikey: Option<String>) -> Result<Self> {
        if servers.is_empty() {
            anyhow::bail!("--server names no orchestrator");
        }
        if let Some(server) = servers
            .iter()
            .find(|s| !matches!(s.scheme(), "http" | "https"))
        {
            anyhow::bail!("--server must be an http:// or https:// URL, not {server}");
        }
        operator_telemetry::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            stream_http,
            servers,
            current: AtomicUsize::new(0),
            apikey,
        })
    }

    /// Sends a manifest text as it is; the server applies every document of it.
    pub async fn apply(
        &self,
        manifest_text: String,
        workspace: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<Applied>> {
        let mut url = self.url(&["api", "v1", "apply"]);
        if let Some(ws) = workspace {
            url.query_pairs_mut().append_pair("workspace", ws);
        }
        if dry_run {
            url.query_pairs_mut().append_pair("dryRun", "true");
        }
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(manifest_text);
        let answer: ApplyAnswer = self.send(request).await?;
        Ok(answer.applied)
    }

    /// Sends a manifest text as one batch (`POST /api/v1/batch`): every document applied or
    /// refused on its own, answered in the text's order.
    pub async fn apply_batch(
        &self,
        manifest_text: String,
        workspace: Option<&str>,
        dry_run: bool,
    ) -> Result<BatchAnswer> {
        let mut url = self.url(&["api", "v1", "batch"]);
        if let Some(ws) = workspace {
            url.query_pairs_mut().append_pair("workspace", ws);
        }
        if dry_run {
            url.query_pairs_mut().append_pair("dryRun", "true");
        }
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(manifest_text);
        self.send(request).await
    }

    /// Lists the entities of one type, as the server's JSON (`{"items": [...]}`).
    pub async fn list(
        &self,
        kind: ManifestKind,
        workspace: Option<&str>,
        all_owners: bool,
    ) -> Result<Value> {
        let mut url = self.url(&["api", "v1", collection(kind)]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(ws) = workspace {
                query.append_pair("workspace", ws);
            }
            if all_owners {
                query.append_pair("all", "true");
            }
        }
        self.send(self.http.get(clean_query(url))).await
    }

    /// Fetches one entity's record, with its live details when asked.
    pub async fn record(
        &self,
        kind: ManifestKind,
        workspace: Option<&str>,
        name: &str,
        details: bool,
    ) -> Result<Value> {
        let mut url = self.url(&entity_path(kind, workspace, name));
        if details && kind != ManifestKind::Secret {
            url.query_pairs_mut().append_pair("details", "true");
        }
        self.send(self.http.get(url)).await
    }

    /// The server URL as shown in messages.
    pub fn server_shown(&self) -> &str {
        self.shown_server()
    }

    /// Deletes one entity.
    pub async fn delete(
        &self,
        kind: ManifestKind,
        workspace: Option<&str>,
        name: &str,
    ) -> Result<Applied> {
        let url = self.url(&entity_path(kind, workspace, name));
        let mut unavailable_before = false;
        let sent = self
            .send_text_noting_unavailable(
                self.http.request(Method::DELETE, url),
                &mut unavailable_before,
            )
            .await;
        match sent {
            Ok((status, body)) => self.parse(status, &body),
            // Sent again after a 503 that may have come once the delete was under way (the
            // leader lost its lease): "not found" then means that attempt deleted it.
            Err(e)
                if unavailable_before
                    && e.downcast_ref::<ApiError>()
                        .is_some_and(|a| a.status == StatusCode::NOT_FOUND) =>
            {
                tracing::info!(%name, "not found when sent again after a 503: the earlier attempt deleted it");
                Ok(Applied {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    version: String::new(),
                    workspace: workspace.map(str::to_string),
                    generation: 0,
                    outcome: Outcome::Deleted,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The last lines of an operator's replicas (`{"replicas": [...]}`).
    pub async fn logs(
        &self,
        operator: &str,
        component: Option<&str>,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Value> {
        let url = self.logs_url(operator, component, replica, tail);
        self.send(self.http.get(url)).await
    }

    fn logs_url(
        &self,
        operator: &str,
        component: Option<&str>,
        replica: Option<u32>,
        tail: usize,
    ) -> reqwest::Url {
        let mut url = self.url(&["api", "v1", "operators", operator, "logs"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(c) = component {
                query.append_pair("component", c);
            }
            if let Some(r) = replica {
                query.append_pair("replica", &r.to_string());
            }
            query.append_pair("tail", &tail.to_string());
        }
        url
    }

    /// An operator's components as Kubernetes objects, YAML.
    pub async fn render(&self, operator: &str, namespace: Option<&str>) -> Result<String> {
        let mut url = self.url(&["api", "v1", "operators", operator, "kubernetes"]);
        if let Some(ns) = namespace {
            url.query_pairs_mut().append_pair("namespace", ns);
        }
        let (_, body) = self.send_text(self.http.get(url)).await?;
        Ok(body)
    }

    /// The server URL with these path segments appended, each percent-encoded as needed.
    /// Creates or replaces a user; the answer holds their new key.
    pub async fn put_user(&self, name: &str, body: &Value) -> Result<Value> {
        let request = self
            .http
            .put(self.url(&["api", "v1", "users", name]))
            .json(body);
        self.send(request).await
    }

    /// Every user.
    pub async fn users(&self) -> Result<Value> {
        self.send(self.http.get(self.url(&["api", "v1", "users"])))
            .await
    }

    /// Deletes a user.
    pub async fn delete_user(&self, name: &str) -> Result<Value> {
        self.send(self.http.delete(self.url(&["api", "v1", "users", name])))
            .await
    }

    /// Who the key belongs to.
    pub async fn whoami(&self) -> Result<Value> {
        self.send(self.http.get(self.url(&["api", "v1", "whoami"])))
            .await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.servers[0].clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let (status, body) = self.send_text(request).await?;
        self.parse(status, &body)
    }

    /// A 2xx answer's JSON body.
    fn parse<T: DeserializeOwned>(&self, status: StatusCode, body: &str) -> Result<T> {
        serde_json::from_str(body).with_context(|| {
            format!(
                "the orchestrator at {} answered {status} with unexpected JSON",
                self.shown_server()
            )
        })
    }

    /// Sends a request; a 2xx answer's status and body, or the server's refusal as an error.
    /// A "busy" answer (429, or 503 with `Retry-After`) is sent again after the wait it names, a
    /// few times.
    async fn send_text(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, String)> {
        self.send_text_noting_unavailable(request, &mut false).await
    }

    /// [`Self::send_text`], setting `unavailable_before` when an attempt before the last was
    /// answered 503: that attempt may have been carried out.
    async fn send_text_noting_unavailable(
        &self,
        request: reqwest::RequestBuilder,
        unavailable_before: &mut bool,
    ) -> Result<(StatusCode, String)> {
        let mut request = match &self.apikey {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let mut attempt = 1;
        loop {
            // The last attempt (or a body that cannot be sent twice) reads "busy" as an error.
            let retry = (attempt < BUSY_ATTEMPTS)
                .then(|| request.try_clone())
                .flatten();
            match self.send_once(request, retry.is_some()).await? {
                Sent::Answer(status, body) => return Ok((status, body)),
                Sent::Busy { wait, unavailable } => {
                    *unavailable_before |= unavailable;
                    tokio::time::sleep(wait).await
                }
            }
            request = retry.context("a busy answer without a request to send again")?;
            attempt += 1;
        }
    }

    async fn send_once(&self, request: reqwest::RequestBuilder, retry_busy: bool) -> Result<Sent> {
        let mut request = request.build().map_err(|e| self.transport_error(&e))?;
        let span = tracing::info_span!(
            "http.request",
            otel.name = %format!("{} {}", request.method(), request.url().path()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            url.full = %clean_query(request.url().clone()),
            http.response.status_code = tracing::field::Empty,
        );
        for (name, value) in operator_telemetry::trace_headers(&span) {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                request.headers_mut().insert(name, value);
            }
        }
        let response = self
            .execute(&self.http, request)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                span.record("otel.status_code", "ERROR");
                self.transport_error(&e)
            })?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        // 429: too busy; 503 with Retry-After: no replica leads at the moment (a failover).
        let busy = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::SERVICE_UNAVAILABLE
                && response
                    .headers()
                    .contains_key(reqwest::header::RETRY_AFTER));
        if busy && retry_busy {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .min(MAX_BUSY_WAIT_S);
            return Ok(Sent::Busy {
                wait: Duration::from_secs(wait),
                unavailable: status == StatusCode::SERVICE_UNAVAILABLE,
            });
        }
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(ApiError::from_response(status, &body).into());
        }
        Ok(Sent::Answer(status, body))
    }

    /// The server URL as the user typed it, without the `/` the URL parser adds.
    fn shown_server(&self) -> &str {
        self.servers[self.current.load(Ordering::Relaxed)]
            .as_str()
            .trim_end_matches('/')
    }

    /// Sends `request` (built on the first server) to the server that answered last, and on to
    /// the next ones while a server cannot be reached.
    async fn execute(
        &self,
        http: &reqwest::Client,
        mut request: reqwest::Request,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let first = self.current.load(Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let index = (first + tried) % self.servers.len();
            rebase(request.url_mut(), &self.servers[0], &self.servers[index]);
            let spare = (tried + 1 < self.servers.len())
                .then(|| request.try_clone())
                .flatten();
            match (http.execute(request).await, spare) {
                (Err(e), Some(next)) if e.is_connect() => {
                    tracing::debug!(server = %self.servers[index], error = %e, "server unreachable; trying the next");
                    tried += 1;
                    request = next;
                }
                (result, _) => {
                    if result.is_ok() {
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return result;
                }
            }
        }
    }
    fn transport_error(&self, error: &reqwest::Error) -> anyhow::Error {
        let reason = innermost_reason(error);
        if error.is_connect() {
            anyhow::anyhow!(
                "cannot reach the orchestrator at {}: {reason} (start it, or set --server / OPCTL_SERVER)",
                self.shown_server()
            )
        } else if error.is_timeout() {
            anyhow::anyhow!(
                "the orchestrator at {} did not answer in time: {reason}",
                self.shown_server()
            )
        } else {
            anyhow::anyhow!(
                "request to the orchestrator at {} failed: {reason}",
                self.shown_server()
            )
        }
    }
}

/// The URL segment of a type's collection.
pub(crate) fn collection(kind: ManifestKind) -> &'static str {
    match kind {
        ManifestKind::Operator => "operators",
        ManifestKind::Resource => "resources",
        ManifestKind::Secret => "secrets",
    }
}

/// The path of one entity: `operators/{name}` or `workspaces/{ws}/{collection}/{name}`.
fn entity_path<'a>(kind: ManifestKind, workspace: Option<&'a str>, name: &'a str) -> Vec<&'a str> {
    match (kind, workspace) {
        (ManifestKind::Operator, _) | (_, None) => vec!["api", "v1", collection(kind), name],
        (_, Some(ws)) => vec!["api", "v1", "workspaces", ws, collection(kind), name],
    }
}

/// Drops an empty `?` left by a query with no pairs.
pub(crate) fn clean_query(mut url: Url) -> Url {
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

/// The message of the deepest cause, e.g. `Connection refused (os error 111)`.
fn innermost_reason(error: &reqwest::Error) -> String {
    let mut deepest: &dyn std::error::Error = error;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> OrchestratorClient {
        OrchestratorClient::new(vec![server.parse().expect("url")], None).expect("client")
    }

    #[test]
    fn a_request_built_on_the_first_server_moves_onto_another_with_its_path_and_query() {
        let first: Url = "http://a:1".parse().expect("url");
        let second: Url = "https://b:2/prefix/".parse().expect("url");
        let mut url: Url = "http://a:1/api/v1/resources?workspace=w"
            .parse()
            .expect("url");
        rebase(&mut url, &first, &second);
        assert_eq!(
            url.as_str(),
            "https://b:2/prefix/api/v1/resources?workspace=w"
        );
        rebase(&mut url, &second, &second);
        assert_eq!(
            url.as_str(),
            "https://b:2/prefix/api/v1/resources?workspace=w"
        );
    }

    #[test]
    fn an_error_body_gives_its_reason_and_every_detail() {
        let body = r#"{"error": "resource pipeline-run-1 does not match the pipeline-run schema",
                       "details": ["spec/factoryName: \"factoryName\" is a required property"]}"#;
        let error = ApiError::from_response(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            error.to_string(),
            "resource pipeline-run-1 does not match the pipeline-run schema"
        );
        assert_eq!(
            error.details,
            vec![r#"spec/factoryName: "factoryName" is a required property"#]
        );
    }

    #[test]
    fn an_error_body_without_details_has_none() {
        let error = ApiError::from_response(
            StatusCode::NOT_FOUND,
            r#"{"error": "operator x not found"}"#,
        );
        assert_eq!(error.reason, "operator x not found");
        assert!(error.details.is_empty());
    }

    #[test]
    fn a_non_json_error_body_is_quoted_on_one_line_with_the_status() {
        let error = ApiError::from_response(
            StatusCode::BAD_GATEWAY,
            "<html>\n<b>bad gateway</b>\n</html>",
        );
        assert_eq!(
            error.reason,
            "the orchestrator answered 502 Bad Gateway: <html> <b>bad gateway</b> </html>"
        );
        let error = ApiError::from_response(StatusCode::NOT_FOUND, "");
        assert_eq!(error.reason, "the orchestrator answered 404 Not Found");
    }

    #[test]
    fn entity_urls_follow_the_api_and_encode_odd_names() {
        let c = client("http://127.0.0.1:7700");
        let url = |kind, ws, name| c.url(&entity_path(kind, ws, name)).to_string();
        assert_eq!(
            url(ManifestKind::Operator, None, "adf-operator"),
            "http://127.0.0.1:7700/api/v1/operators/adf-operator"
        );
        assert_eq!(
            url(ManifestKind::Resource, Some("public"), "pipeline-run-1"),
            "http://127.0.0.1:7700/api/v1/workspaces/public/resources/pipeline-run-1"
        );
        assert_eq!(
            url(ManifestKind::Secret, Some("public"), "a/b c"),
            "http://127.0.0.1:7700/api/v1/workspaces/public/secrets/a%2Fb%20c"
        );
    }

    #[test]
    fn a_server_with_a_path_prefix_keeps_it() {
        let c = client("http://orch.example/prefix/");
        assert_eq!(
            c.url(&["api", "v1", "apply"]).to_string(),
            "http://orch.example/prefix/api/v1/apply"
        );
    }

    /// An API on a free port that answers its `n`th call (from 0) with `answer(n)`; counts calls.
    async fn api(
        answer: impl Fn(usize) -> actix_web::HttpResponse + Clone + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let server = actix_web::HttpServer::new(move || {
            let (calls, answer) = (counted.clone(), answer.clone());
            actix_web::App::new().default_service(actix_web::web::to(move || {
                let response = answer(calls.fetch_add(1, Ordering::SeqCst));
                async move { response }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind");
        let address = server.addrs()[0];
        actix_rt::spawn(server.run());
        (format!("http://{address}"), calls)
    }

    /// An API that answers "busy" (429, `Retry-After: 0`) `busy` times, then 200; counts calls.
    async fn busy_api(busy: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        api(move |call| {
            if call < busy {
                actix_web::HttpResponse::TooManyRequests()
                    .insert_header(("retry-after", "0"))
                    .json(serde_json::json!({"error": "the orchestrator is busy", "details": []}))
            } else {
                actix_web::HttpResponse::Ok().json(serde_json::json!({"name": "admin"}))
            }
        })
        .await
    }

    /// An API that answers a delete with 503 (`Retry-After: 0`, as a follower whose leader lost
    /// its lease mid-request does) `unavailable` times, then 404.
    async fn deleted_meanwhile_api(unavailable: usize) -> String {
        let (url, _) = api(move |call| {
            if call < unavailable {
                actix_web::HttpResponse::ServiceUnavailable()
                    .insert_header(("retry-after", "0"))
                    .json(serde_json::json!({"error": "it may or may not have been carried out", "details": []}))
            } else {
                actix_web::HttpResponse::NotFound()
                    .json(serde_json::json!({"error": "resource public/job-1 not found", "details": []}))
            }
        })
        .await;
        url
    }

    #[actix_web::test]
    async fn a_delete_sent_again_after_a_503_and_not_found_was_carried_out_by_the_first() {
        let url = deleted_meanwhile_api(1).await;
        let deleted = client(&url)
            .delete(ManifestKind::Resource, Some("public"), "job-1")
            .await
            .expect("gone: the first attempt deleted it");
        assert_eq!(deleted.outcome, Outcome::Deleted);

        let url = deleted_meanwhile_api(0).await;
        let error = client(&url)
            .delete(ManifestKind::Resource, Some("public"), "job-1")
            .await
            .expect_err("never there");
        let refusal = error.downcast_ref::<ApiError>().expect("the refusal");
        assert_eq!(refusal.status, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn a_busy_answer_is_sent_again_until_it_is_answered() {
        let (url, calls) = busy_api(BUSY_ATTEMPTS - 1).await;
        let me = client(&url)
            .whoami()
            .await
            .expect("answered on the last attempt");
        assert_eq!(me["name"], "admin");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            BUSY_ATTEMPTS
        );
    }

    #[actix_web::test]
    async fn an_api_that_stays_busy_is_reported_after_the_last_attempt() {
        let (url, calls) = busy_api(usize::MAX).await;
        let error = client(&url).whoami().await.expect_err("still busy");
        let refusal = error
            .downcast_ref::<ApiError>()
            .expect("the server's refusal");
        assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refusal.reason, "the orchestrator is busy");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            BUSY_ATTEMPTS
        );
    }
}
