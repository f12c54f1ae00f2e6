//! The Azure Data Factory endpoints (api-version 2018-06-01) and the ARM gate in front of
//! them: delay, bearer token, api-version, subscription, then the armed faults.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock;
use crate::error::ArmError;
use crate::query::{self, QueryKind};
use crate::run::RerunOptions;
use crate::state::{factory_key, lock, SharedStandIn};

/// The path parameters every factory route shares.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FactoryPath {
    subscription: String,
    resource_group: String,
    factory: String,
}

impl FactoryPath {
    fn key(&self) -> String {
        factory_key(&self.subscription, &self.resource_group, &self.factory)
    }
}

/// A factory route naming a pipeline. (actix's path extractor cannot flatten, so the factory's
/// parameters are repeated.)
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelinePath {
    subscription: String,
    resource_group: String,
    factory: String,
    pipeline: String,
}

/// A factory route naming a run.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPath {
    subscription: String,
    resource_group: String,
    factory: String,
    run_id: String,
}

impl RunPath {
    fn key(&self) -> String {
        factory_key(&self.subscription, &self.resource_group, &self.factory)
    }
}

/// The query string as name/value pairs, in order.
fn query_pairs(request: &HttpRequest) -> Result<Vec<(String, String)>, ArmError> {
    web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ArmError::bad_request(format!("The query string is invalid: {e}.")))
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Runs before every factory route, the way ARM stands before a resource provider.
pub async fn gate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(standin) = request.app_data::<SharedStandIn>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "the stand-in's state is not registered",
        ));
    };
    let delay = lock(&standin).arm_delay();
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    let admitted = {
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            // A header that is not text is as malformed as one without the Bearer scheme.
            .map(|value| value.to_str().unwrap_or_default());
        let pairs = query_pairs(request.request());
        let subscription = request.match_info().get("subscription").unwrap_or_default();
        match pairs {
            Ok(pairs) => lock(&standin).admit(
                authorization,
                query_value(&pairs, "api-version"),
                subscription,
                clock::now(),
            ),
            Err(e) => Err(e),
        }
    };
    match admitted {
        Ok(()) => next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(refusal) => Ok(request.error_response(refusal).map_into_right_body()),
    }
}

/// Reads a `true`/`false` query parameter, as .NET binds a bool.
fn bool_parameter(pairs: &[(String, String)], name: &str) -> Result<Option<bool>, ArmError> {
    match query_value(pairs, name).map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(text) => Err(ArmError::bad_request(format!(
            "The value '{text}' is not valid for query parameter '{name}'."
        ))),
    }
}

fn text_parameter(pairs: &[(String, String)], name: &str) -> Option<String> {
    query_value(pairs, name)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// The createRun body: the pipeline's parameters as one JSON object, or nothing.
fn run_parameters(body: &[u8]) -> Result<Map<String, Value>, ArmError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(parameters)) => Ok(parameters),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ArmError::bad_request(
            "The request body must be a JSON object of pipeline parameters.",
        )),
        Err(e) => Err(ArmError::bad_request(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

/// `POST …/pipelines/{pipeline}/createRun`
pub async fn create_run(
    standin: SharedStandIn,
    path: web::Path<PipelinePath>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ArmError> {
    let pairs = query_pairs(&request)?;
    let rerun = RerunOptions {
        reference_pipeline_run_id: text_parameter(&pairs, "referencePipelineRunId"),
        is_recovery: bool_parameter(&pairs, "isRecovery")?,
        start_activity_name: text_parameter(&pairs, "startActivityName"),
        start_from_failure: bool_parameter(&pairs, "startFromFailure")?,
    };
    let parameters = run_parameters(&body)?;
    let run_id = lock(&standin).create_run(
        factory_key(&path.subscription, &path.resource_group, &path.factory),
        &path.pipeline,
        parameters,
        rerun,
        clock::now(),
    )?;
    Ok(HttpResponse::Ok().json(json!({ "runId": run_id })))
}

/// `GET …/pipelineruns/{runId}`
pub async fn get_run(
    standin: SharedStandIn,
    path: web::Path<RunPath>,
) -> Result<HttpResponse, ArmError> {
    let view = lock(&standin).run(&path.key(), &path.run_id, clock::now())?;
    Ok(HttpResponse::Ok().json(view.to_json()))
}

/// The query of a cancel besides the api-version.
#[derive(Debug, Deserialize)]
pub struct CancelQuery {
    #[serde(rename = "isRecursive", default)]
    is_recursive: bool,
}

/// `POST …/pipelineruns/{runId}/cancel`; no run here has child runs, so `isRecursive` is only
/// recorded (the runs report shows it) for tests to check it was asked for.
pub async fn cancel_run(
    standin: SharedStandIn,
    path: web::Path<RunPath>,
    query: web::Query<CancelQuery>,
) -> Result<HttpResponse, ArmError> {
    lock(&standin).cancel_run(&path.key(), &path.run_id, query.is_recursive, clock::now())?;
    Ok(HttpResponse::Ok().finish())
}

/// `POST …/queryPipelineRuns`
pub async fn query_pipeline_runs(
    standin: SharedStandIn,
    path: web::Path<FactoryPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ArmError> {
    let query = query::parse(QueryKind::PipelineRuns, &body)
        .map_err(|e| ArmError::bad_request(e.to_string()))?;
    let page = lock(&standin).query_runs(&path.key(), &query, clock::now());
    let value: Vec<Value> = page.rows.iter().map(|run| run.to_json()).collect();
    Ok(HttpResponse::Ok().json(json!({
        "value": value,
        "continuationToken": page.continuation_token,
    })))
}

/// `POST …/pipelineruns/{runId}/queryActivityruns`
pub async fn query_activity_runs(
    standin: SharedStandIn,
    path: web::Path<RunPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ArmError> {
    let query = query::parse(QueryKind::ActivityRuns, &body)
        .map_err(|e| ArmError::bad_request(e.to_string()))?;
    let page =
        lock(&standin).query_activity_runs(&path.key(), &path.run_id, &query, clock::now())?;
    let value: Vec<Value> = page
        .rows
        .iter()
        .map(|activity| activity.to_json())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "value": value,
        "continuationToken": page.continuation_token,
    })))
}
