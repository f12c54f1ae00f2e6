//! The whole application called in-process: the token endpoint, the ARM gate, the factory
//! routes and the control API together.

use std::sync::Mutex;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::web;
use anyhow::Context as _;
use serde_json::{json, Value};

use crate::app;
use crate::auth::ExpectedClient;
use crate::clock;
use crate::imds::Identities;
use crate::state::{Settings, SharedStandIn, StandIn};

const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";
const FACTORY: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/\
providers/Microsoft.DataFactory/factories/adf";
const API: &str = "api-version=2018-06-01";

fn standin() -> SharedStandIn {
    web::Data::new(Mutex::new(StandIn::new(Settings {
        expected_client: ExpectedClient {
            tenant_id: Some("tenant".to_owned()),
            client_id: Some("app".to_owned()),
            client_secret: Some("s3cret".to_owned()),
            federated_token: None,
        },
        identities: Identities {
            system_client_id: "system-identity".to_owned(),
            user_assigned_client_id: None,
        },
        subscription_id: Some(SUBSCRIPTION.to_owned()),
        token_ttl: clock::millis(3_599_000),
        queued_ms: 500,
        run_ms: 3000,
    })))
}

fn token_request(secret: &str) -> TestRequest {
    TestRequest::post()
        .uri("/tenant/oauth2/v2.0/token")
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .set_payload(format!(
            "grant_type=client_credentials&client_id=app&client_secret={secret}\
             &scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
        ))
}

/// What a test looks at in a response: the status, the Retry-After header and the body as
/// JSON (`null` when empty).
type Reply = (StatusCode, Option<String>, Value);

async fn reply<B: MessageBody>(response: ServiceResponse<B>) -> Reply {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = test::read_body(response).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, retry_after, json)
}

/// Calls the app with a `TestRequest`. A macro, because the request type the service takes
/// (`actix_http::Request`) is not re-exported by actix-web and so cannot be named in a bound.
macro_rules! send {
    ($app:expr, $request:expr) => {
        reply(test::call_service($app, $request.to_request()).await).await
    };
}

/// The `Authorization` value for a fresh token of the expected client.
macro_rules! bearer {
    ($app:expr) => {{
        let (status, _, body) = send!($app, token_request("s3cret"));
        anyhow::ensure!(status == StatusCode::OK, "token refused: {body}");
        let token = body["access_token"].as_str().context("no access_token")?;
        format!("Bearer {token}")
    }};
}

fn arm(method: &str, path: &str, bearer: &str) -> TestRequest {
    let request = match method {
        "GET" => TestRequest::get(),
        _ => TestRequest::post(),
    };
    request
        .uri(&format!("{FACTORY}{path}"))
        .insert_header(("authorization", bearer))
}

#[actix_web::test]
async fn a_token_then_create_run_then_get_run_shows_the_run() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);

    let create = arm(
        "POST",
        &format!("/pipelines/load/createRun?{API}&isRecovery=false&startActivityName=Copy"),
        &bearer,
    )
    .set_json(json!({"date": "2026-11-26", "retries": 2}));
    let (status, _, created) = send!(&app, create);
    assert_eq!(status, StatusCode::OK, "{created}");
    let run_id = created["runId"].as_str().context("no runId")?.to_owned();

    let get = arm("GET", &format!("/pipelineruns/{run_id}?{API}"), &bearer);
    let (status, _, run) = send!(&app, get);
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["runId"], run_id.as_str());
    assert_eq!(run["runGroupId"], run_id.as_str());
    assert_eq!(run["pipelineName"], "load");
    assert_eq!(run["status"], "Queued");
    assert_eq!(run["isLatest"], true);
    assert_eq!(run["runEnd"], Value::Null);
    assert_eq!(run["durationInMs"], Value::Null);
    assert_eq!(run["invokedBy"]["invokedByType"], "Manual");
    assert_eq!(
        run["parameters"],
        json!({"date": "2026-11-26", "retries": "2"})
    );

    let (_, _, report) = send!(&app, TestRequest::get().uri("/_standin/runs"));
    assert_eq!(report["runs"][0]["createdWith"]["isRecovery"], false);
    assert_eq!(
        report["runs"][0]["createdWith"]["startActivityName"],
        "Copy"
    );
    let (_, _, calls) = send!(&app, TestRequest::get().uri("/_standin/calls"));
    assert_eq!(calls["token"], 1);
    assert_eq!(calls["createRun"], 1);
    assert_eq!(calls["getRun"], 1);
    Ok(())
}

#[actix_web::test]
async fn an_unknown_run_is_not_found_with_adf_code() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    let get = arm(
        "GET",
        &format!("/pipelineruns/{}?{API}", uuid::Uuid::new_v4()),
        &bearer,
    );
    let (status, _, body) = send!(&app, get);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "PipelineRunNotFound");
    Ok(())
}

#[actix_web::test]
async fn a_wrong_client_secret_is_refused_like_entra() {
    let app = test::init_service(app::build(standin())).await;
    let (status, _, body) = send!(&app, token_request("guess"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.starts_with("AADSTS7000215"), "{description}");
}

#[actix_web::test]
async fn requests_without_a_valid_bearer_are_refused_with_401() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let path = format!("{FACTORY}/pipelineruns/{}?{API}", uuid::Uuid::new_v4());

    let (status, _, body) = send!(&app, TestRequest::get().uri(&path));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");

    let forged = TestRequest::get()
        .uri(&path)
        .insert_header(("authorization", "Bearer forged"));
    let (status, _, body) = send!(&app, forged);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    let bearer = bearer!(&app);
    let expire = TestRequest::post()
        .uri("/_standin/faults")
        .set_json(json!({"expireTokens": true}));
    let (status, _, _) = send!(&app, expire);
    assert_eq!(status, StatusCode::OK);
    let stale = TestRequest::get()
        .uri(&path)
        .insert_header(("authorization", bearer.as_str()));
    let (status, _, body) = send!(&app, stale);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");

    let (_, _, calls) = send!(&app, TestRequest::get().uri("/_standin/calls"));
    assert_eq!(calls["getRun"], 3);
    assert_eq!(calls["answered"]["401"], 3);
    Ok(())
}

#[actix_web::test]
async fn a_missing_or_wrong_api_version_is_refused_with_400_and_its_code() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    let run = uuid::Uuid::new_v4();

    let missing = arm("GET", &format!("/pipelineruns/{run}"), &bearer);
    let (status, _, body) = send!(&app, missing);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");

    let wrong = arm(
        "GET",
        &format!("/pipelineruns/{run}?api-version=2017-09-01-preview"),
        &bearer,
    );
    let (status, _, body) = send!(&app, wrong);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    Ok(())
}

#[actix_web::test]
async fn another_subscription_is_not_found() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    let elsewhere = TestRequest::post()
        .uri(&format!(
            "/subscriptions/other/resourceGroups/rg/providers/Microsoft.DataFactory/\
             factories/adf/pipelines/load/createRun?{API}"
        ))
        .insert_header(("authorization", bearer.as_str()));
    let (status, _, body) = send!(&app, elsewhere);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SubscriptionNotFound");
    Ok(())
}

#[actix_web::test]
async fn a_throttle_fault_answers_429_with_retry_after_then_clears() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    let arm_faults = TestRequest::post()
        .uri("/_standin/faults")
        .set_json(json!({"throttle": 1, "retryAfterS": 7, "serverErrors": 1}));
    let (status, _, armed) = send!(&app, arm_faults);
    assert_eq!(status, StatusCode::OK, "{armed}");

    let create = || arm("POST", &format!("/pipelines/load/createRun?{API}"), &bearer);
    let (status, retry_after, body) = send!(&app, create());
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert_eq!(body["error"]["code"], "TooManyRequests");

    let (status, _, body) = send!(&app, create());
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "InternalServerError");

    let (status, _, body) = send!(&app, create());
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, _, calls) = send!(&app, TestRequest::get().uri("/_standin/calls"));
    assert_eq!(calls["createRun"], 3);
    assert_eq!(calls["answered"]["429"], 1);
    assert_eq!(calls["answered"]["500"], 1);
    let (_, _, report) = send!(&app, TestRequest::get().uri("/_standin/runs"));
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[actix_web::test]
async fn query_pipeline_runs_filters_by_pipeline_name_and_time_window() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    for pipeline in ["load", "export", "load"] {
        let create = arm(
            "POST",
            &format!("/pipelines/{pipeline}/createRun?{API}"),
            &bearer,
        );
        let (status, _, body) = send!(&app, create);
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let now = clock::now();
    let hour = clock::millis(3_600_000);
    let query = |after, before| {
        arm("POST", &format!("/queryPipelineRuns?{API}"), &bearer).set_json(json!({
            "lastUpdatedAfter": clock::format_timestamp(after),
            "lastUpdatedBefore": clock::format_timestamp(before),
            "filters": [{"operand": "PipelineName", "operator": "Equals", "values": ["load"]}],
            "orderBy": [{"orderBy": "RunStart", "order": "DESC"}],
        }))
    };

    let (status, _, page) = send!(&app, query(now - hour, now + hour));
    assert_eq!(status, StatusCode::OK, "{page}");
    let runs = page["value"].as_array().context("no value")?;
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|run| run["pipelineName"] == "load"));
    assert!(runs[0]["runStart"].as_str() >= runs[1]["runStart"].as_str());
    assert_eq!(page["continuationToken"], Value::Null);

    let (status, _, page) = send!(&app, query(now - hour - hour, now - hour));
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["value"].as_array().map(Vec::len), Some(0));

    let unbounded =
        arm("POST", &format!("/queryPipelineRuns?{API}"), &bearer).set_json(json!({"filters": []}));
    let (status, _, body) = send!(&app, unbounded);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "BadRequest");
    Ok(())
}

#[actix_web::test]
async fn a_cancelled_run_is_canceling_and_its_activity_runs_follow() -> anyhow::Result<()> {
    let app = test::init_service(app::build(standin())).await;
    let bearer = bearer!(&app);
    let create = arm("POST", &format!("/pipelines/load/createRun?{API}"), &bearer);
    let (_, _, created) = send!(&app, create);
    let run_id = created["runId"].as_str().context("no runId")?.to_owned();

    let cancel = arm(
        "POST",
        &format!("/pipelineruns/{run_id}/cancel?isRecursive=true&{API}"),
        &bearer,
    );
    let (status, _, body) = send!(&app, cancel);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);
    let get = arm("GET", &format!("/pipelineruns/{run_id}?{API}"), &bearer);
    let (_, _, run) = send!(&app, get);
    assert_eq!(run["status"], "Canceling");
    // A run no longer going is refused as ADF refuses it.
    let again = arm(
        "POST",
        &format!("/pipelineruns/{run_id}/cancel?isRecursive=true&{API}"),
        &bearer,
    );
    let (status, _, body) = send!(&app, again);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "PipelineRunNotRunning");

    let now = clock::now();
    let hour = clock::millis(3_600_000);
    let activities = arm(
        "POST",
        &format!("/pipelineruns/{run_id}/queryActivityruns?{API}"),
        &bearer,
    )
    .set_json(json!({
        "lastUpdatedAfter": clock::format_timestamp(now - hour),
        "lastUpdatedBefore": clock::format_timestamp(now + hour),
    }));
    let (status, _, page) = send!(&app, activities);
    assert_eq!(status, StatusCode::OK, "{page}");
    // Cancelled while queued: no activity ever started.
    assert_eq!(page["value"].as_array().map(Vec::len), Some(0));
    assert_eq!(page["continuationToken"], Value::Null);
    Ok(())
}
