//! Tests of `AdfClient` against a throwaway in-test HTTP server playing Entra ID and ARM with
//! scripted answers; the reconciler's flow tests use the same server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use operator_sdk::Backoff;
use serde_json::json;

use super::model::RunStatus;
use super::*;
use crate::config::Secret;

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000003";

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub auth: Option<String>,
}

/// A scripted answer: status, headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, &'static str)>, String);

#[derive(Debug, Default)]
pub(crate) struct Script {
    /// Answers to ARM calls, in order.
    answers: VecDeque<Answer>,
    calls: Vec<Call>,
    token_requests: Vec<String>,
}

pub(crate) type Shared = Arc<Mutex<Script>>;

async fn answer(req: HttpRequest, body: web::Bytes, script: web::Data<Shared>) -> HttpResponse {
    let Ok(mut script) = script.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    let body = String::from_utf8_lossy(&body).to_string();
    if req.path().ends_with("/oauth2/v2.0/token") {
        script.token_requests.push(body);
        let token = format!("token-{}", script.token_requests.len());
        return HttpResponse::Ok()
            .json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}));
    }
    script.calls.push(Call {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        body,
        auth: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let Some((status, headers, body)) = script.answers.pop_front() else {
        return HttpResponse::InternalServerError().body("unscripted call");
    };
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in headers {
        response.insert_header((name, value));
    }
    response.content_type("application/json").body(body)
}

/// Starts the server; returns its script and a client pointed at it for both endpoints.
pub(crate) fn serve(answers: Vec<Answer>) -> (Shared, AdfClient) {
    operator_sdk::telemetry::install_tls_provider();
    let script: Shared = Arc::new(Mutex::new(Script {
        answers: answers.into(),
        ..Script::default()
    }));
    let data = web::Data::new(script.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("binds");
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    let config = AzureConfig {
        azure_tenant_id: Some(TENANT.parse().expect("guid")),
        azure_client_id: Some(
            "00000000-0000-0000-0000-000000000002"
                .parse()
                .expect("guid"),
        ),
        azure_client_secret: Some(Secret::new("the-secret")),
        azure_federated_token_file: None,
        azure_imds_endpoint: url.clone(),
        azure_subscription_id: SUBSCRIPTION.parse().expect("guid"),
        azure_authority_host: url.clone(),
        azure_resource_manager_endpoint: url,
    };
    let retry = RetryPolicy {
        attempts: 3,
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
        max_wait: Duration::from_secs(2),
    };
    let credential = config.credential().expect("a credential");
    let budget = Arc::new(crate::budget::MonitorBudget::new(100_000, None));
    let client = AdfClient::new(&config, credential, retry, budget).expect("client");
    (script, client)
}

pub(crate) fn ok(body: serde_json::Value) -> Answer {
    (200, vec![], body.to_string())
}

pub(crate) fn status(code: u16, body: &str) -> Answer {
    (code, vec![], body.to_string())
}

pub(crate) fn calls(script: &Shared) -> Vec<Call> {
    script.lock().map(|s| s.calls.clone()).unwrap_or_default()
}

fn pipeline() -> PipelineRef {
    PipelineRef {
        resource_group_name: "Engineering".into(),
        factory_name: "factory1".into(),
        pipeline_name: "Copy Pipeline".into(),
    }
}

pub(crate) fn base() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/Engineering/providers/Microsoft.DataFactory/factories/factory1"
    )
}

pub(crate) fn run_json(status: &str) -> serde_json::Value {
    json!({"runId": "r1", "runGroupId": "r1", "pipelineName": "Copy Pipeline", "status": status,
           "message": "", "runStart": "2026-03-01T12:00:00Z", "invokedBy": {"name": "Manual", "invokedByType": "Manual"}})
}

#[actix_rt::test]
async fn create_run_posts_the_parameters_with_a_token_and_the_recovery_query() {
    let (script, client) = serve(vec![ok(json!({"runId": "r1"}))]);
    let parameters = json!({"day": "2026-03-01", "n": 3});
    let run_id = client
        .create_run(
            &pipeline(),
            CreateRun {
                parameters: parameters.as_object().expect("object"),
                reference_pipeline_run_id: Some("r0"),
                start_activity_name: Some("Copy"),
                start_from_failure: Some(true),
            },
        )
        .await
        .expect("created");
    assert_eq!(run_id, "r1");
    let calls = calls(&script);
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.path,
        format!("{}/pipelines/Copy%20Pipeline/createRun", base())
    );
    assert_eq!(
        call.query,
        "referencePipelineRunId=r0&isRecovery=true&startActivityName=Copy&startFromFailure=true&api-version=2018-06-01"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.body).expect("json"),
        parameters
    );
    assert_eq!(call.auth.as_deref(), Some("Bearer token-1"));
    let token_requests = script
        .lock()
        .map(|s| s.token_requests.clone())
        .unwrap_or_default();
    assert_eq!(token_requests.len(), 1);
    let form = &token_requests[0];
    for field in [
        "grant_type=client_credentials",
        "client_id=00000000-0000-0000-0000-000000000002",
        "client_secret=the-secret",
        "scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
    ] {
        assert!(form.contains(field), "{field} missing from {form}");
    }
}

#[actix_rt::test]
async fn a_plain_create_run_sends_an_empty_object_and_no_recovery_flag() {
    let (script, client) = serve(vec![ok(json!({"runId": "r2"}))]);
    let none = Map::new();
    client
        .create_run(
            &pipeline(),
            CreateRun {
                parameters: &none,
                reference_pipeline_run_id: None,
                start_activity_name: None,
                start_from_failure: None,
            },
        )
        .await
        .expect("created");
    let call = &calls(&script)[0];
    assert_eq!(call.query, "api-version=2018-06-01");
    assert_eq!(call.body, "{}");
}

#[actix_rt::test]
async fn a_401_refreshes_the_token_once_and_retries_once() {
    let (script, client) = serve(vec![
        status(
            401,
            r#"{"error": {"code": "ExpiredAuthenticationToken", "message": "expired"}}"#,
        ),
        ok(run_json("InProgress")),
        status(
            401,
            r#"{"error": {"code": "InvalidAuthenticationToken", "message": "no"}}"#,
        ),
        status(
            401,
            r#"{"error": {"code": "InvalidAuthenticationToken", "message": "no"}}"#,
        ),
    ]);
    let run = client.get_run(&pipeline(), "r1").await.expect("a run");
    assert_eq!(run.status(), RunStatus::InProgress);
    let auths: Vec<_> = calls(&script).into_iter().map(|c| c.auth).collect();
    assert_eq!(
        auths,
        vec![Some("Bearer token-1".into()), Some("Bearer token-2".into())]
    );

    let err = client
        .get_run(&pipeline(), "r1")
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, AzureError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED),
        "{err}"
    );
    assert_eq!(calls(&script).len(), 4, "one refresh per call, not a loop");
}

#[actix_rt::test]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let (script, client) = serve(vec![
        (429, vec![("Retry-After", "0")], String::new()),
        status(503, "busy"),
        ok(run_json("Succeeded")),
    ]);
    let run = client.get_run(&pipeline(), "r1").await.expect("a run");
    assert_eq!(run.status(), RunStatus::Succeeded);
    assert_eq!(calls(&script).len(), 3);
}

#[actix_rt::test]
async fn past_the_bounded_attempts_a_failure_is_retryable_not_terminal() {
    let (script, client) = serve(vec![
        status(500, "a"),
        status(502, "b"),
        status(503, "c"),
        ok(run_json("Succeeded")),
    ]);
    let err = client
        .get_run(&pipeline(), "r1")
        .await
        .expect_err("gives up");
    assert!(matches!(err, AzureError::Unavailable { .. }), "{err}");
    assert!(!err.is_terminal());
    assert_eq!(calls(&script).len(), 3);

    let (_, client) = serve(vec![(429, vec![("Retry-After", "60")], String::new())]);
    let err = client
        .get_run(&pipeline(), "r1")
        .await
        .expect_err("too long");
    assert_eq!(
        err,
        AzureError::Throttled {
            operation: "getPipelineRun",
            retry_after: Some(Duration::from_secs(60))
        }
    );
}

#[actix_rt::test]
async fn create_run_is_not_replayed_after_a_server_error_that_may_have_started_a_run() {
    let (script, client) = serve(vec![status(502, "gateway"), ok(json!({"runId": "r2"}))]);
    let none = Map::new();
    let err = client
        .create_run(
            &pipeline(),
            CreateRun {
                parameters: &none,
                reference_pipeline_run_id: None,
                start_activity_name: None,
                start_from_failure: None,
            },
        )
        .await
        .expect_err("not retried");
    assert!(matches!(err, AzureError::Unavailable { .. }), "{err}");
    assert_eq!(calls(&script).len(), 1);
}

#[actix_rt::test]
async fn other_client_errors_are_terminal_with_azures_code_and_message() {
    let (_, client) = serve(vec![status(
        404,
        r#"{"error": {"code": "PipelineRunNotFound", "message": "The pipeline run r9 was not found"}}"#,
    )]);
    let err = client
        .get_run(&pipeline(), "r9")
        .await
        .expect_err("refused");
    assert!(err.is_terminal() && err.is_not_found());
    assert_eq!(
        err.to_string(),
        "getPipelineRun: PipelineRunNotFound: The pipeline run r9 was not found"
    );
}

#[actix_rt::test]
async fn cancel_asks_for_a_recursive_cancel_and_accepts_an_empty_answer() {
    let (script, client) = serve(vec![status(200, "")]);
    client
        .cancel_run(&pipeline(), "r1")
        .await
        .expect("cancelled");
    let call = &calls(&script)[0];
    assert_eq!(call.path, format!("{}/pipelineruns/r1/cancel", base()));
    assert_eq!(call.query, "isRecursive=true&api-version=2018-06-01");
}

#[actix_rt::test]
async fn a_cancel_of_a_run_no_longer_going_reads_as_not_running() {
    let (_, client) = serve(vec![status(
        400,
        r#"{"error": {"code": "PipelineRunNotRunning", "message": "Pipeline run 'r1' is not running"}}"#,
    )]);
    let err = client
        .cancel_run(&pipeline(), "r1")
        .await
        .expect_err("refused");
    assert!(err.is_not_running() && !err.is_not_found(), "{err}");
}

#[actix_rt::test]
async fn queries_follow_continuation_tokens() {
    let (script, client) = serve(vec![
        ok(json!({"value": [run_json("InProgress")], "continuationToken": "page-2"})),
        ok(json!({"value": [run_json("Queued")]})),
    ]);
    let after = Utc::now() - chrono::Duration::minutes(5);
    let runs = client
        .query_runs(
            &pipeline(),
            RunFilterParameters::window(after, Utc::now()).of_pipeline("Copy Pipeline"),
        )
        .await
        .expect("runs");
    assert_eq!(runs.len(), 2);
    let calls = calls(&script);
    assert_eq!(calls[0].path, format!("{}/queryPipelineRuns", base()));
    let second: serde_json::Value = serde_json::from_str(&calls[1].body).expect("json");
    assert_eq!(second["continuationToken"], json!("page-2"));
    assert_eq!(second["filters"][0]["values"], json!(["Copy Pipeline"]));
}

#[actix_rt::test]
async fn activity_runs_are_queried_for_the_run() {
    let (script, client) = serve(vec![ok(json!({"value": [
        {"activityName": "Copy", "activityType": "Copy", "status": "InProgress"}
    ]}))]);
    let now = Utc::now();
    let activities = client
        .query_activity_runs(&pipeline(), "r1", now - chrono::Duration::minutes(1), now)
        .await
        .expect("activities");
    assert_eq!(activities[0].activity_name.as_deref(), Some("Copy"));
    assert_eq!(
        calls(&script)[0].path,
        format!("{}/pipelineruns/r1/queryActivityruns", base())
    );
}
