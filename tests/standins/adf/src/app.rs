//! The routing table: Entra's token endpoint, the factory routes behind the ARM gate, the
//! control API, and the middleware that logs and counts every request.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use tracing::info;

use crate::arm;
use crate::clock;
use crate::control;
use crate::error::ArmError;
use crate::imds;
use crate::state::{lock, Operation, SharedStandIn};

const TOKEN_ROUTE: &str = "/{tenant}/oauth2/v2.0/token";
const IMDS_TOKEN_ROUTE: &str = "/metadata/identity/oauth2/token";
const FACTORY_SCOPE: &str = "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/\
providers/Microsoft.DataFactory/factories/{factory}";
const CREATE_RUN_ROUTE: &str = "/pipelines/{pipeline}/createRun";
const GET_RUN_ROUTE: &str = "/pipelineruns/{runId}";
const CANCEL_ROUTE: &str = "/pipelineruns/{runId}/cancel";
const QUERY_RUNS_ROUTE: &str = "/queryPipelineRuns";
const QUERY_ACTIVITY_RUNS_ROUTE: &str = "/pipelineruns/{runId}/queryActivityruns";

/// The operation a matched route template serves, for the call counts.
fn operation_of(template: &str) -> Option<Operation> {
    if template == TOKEN_ROUTE || template == IMDS_TOKEN_ROUTE {
        return Some(Operation::Token);
    }
    match template.strip_prefix(FACTORY_SCOPE)? {
        CREATE_RUN_ROUTE => Some(Operation::CreateRun),
        GET_RUN_ROUTE => Some(Operation::GetRun),
        CANCEL_ROUTE => Some(Operation::Cancel),
        QUERY_RUNS_ROUTE => Some(Operation::QueryPipelineRuns),
        QUERY_ACTIVITY_RUNS_ROUTE => Some(Operation::QueryActivityRuns),
        _ => None,
    }
}

/// The whole application over `standin`; `main` serves it and the tests call it in-process.
pub fn build(
    standin: SharedStandIn,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(standin)
        .wrap(from_fn(observe))
        .route(TOKEN_ROUTE, web::post().to(token))
        .route(IMDS_TOKEN_ROUTE, web::get().to(imds_token))
        .service(
            web::scope(FACTORY_SCOPE)
                .wrap(from_fn(arm::gate))
                .route(CREATE_RUN_ROUTE, web::post().to(arm::create_run))
                .route(GET_RUN_ROUTE, web::get().to(arm::get_run))
                .route(CANCEL_ROUTE, web::post().to(arm::cancel_run))
                .route(QUERY_RUNS_ROUTE, web::post().to(arm::query_pipeline_runs))
                .route(
                    QUERY_ACTIVITY_RUNS_ROUTE,
                    web::post().to(arm::query_activity_runs),
                ),
        )
        .service(
            web::scope("/_standin")
                .route("/pipelines/{name}", web::put().to(control::put_pipeline))
                .route("/faults", web::post().to(control::post_faults))
                .route(
                    "/federated-token",
                    web::put().to(control::put_federated_token),
                )
                .route("/runs", web::get().to(control::get_runs))
                .route("/calls", web::get().to(control::get_calls))
                .route("/monitoring", web::get().to(control::get_monitoring))
                .route("/reset", web::post().to(control::reset)),
        )
        .default_service(web::to(no_route))
}

/// Logs every request with its route template and status, and counts those to Azure routes.
async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let standin = request.app_data::<SharedStandIn>().cloned();
    let method = request.method().clone();
    let template = request
        .match_pattern()
        .unwrap_or_else(|| request.path().to_owned());
    let started = std::time::Instant::now();
    let arrived = clock::now();
    // Routing has not happened yet in a middleware: read the names from the path itself.
    let factory = segment_after(request.path(), "factories");
    let run_id = segment_after(request.path(), "pipelineruns");
    let result = next.call(request).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    if let (Some(standin), Some(operation)) = (standin, operation_of(&template)) {
        let mut standin = lock(&standin);
        standin.record_call(operation, status.as_u16());
        let monitoring = matches!(
            operation,
            Operation::GetRun | Operation::QueryPipelineRuns | Operation::QueryActivityRuns
        );
        if let (true, Some(factory)) = (monitoring, &factory) {
            let polled = run_id.as_deref().filter(|_| operation == Operation::GetRun);
            standin.monitoring().record(factory, polled, arrived);
        }
    }
    info!(
        http.method = %method,
        http.route = %template,
        http.status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis(),
        "request served"
    );
    result
}

/// The path segment after the first one named `name` (case-insensitive), as sent.
fn segment_after(path: &str, name: &str) -> Option<String> {
    let mut segments = path.split('/');
    segments.find(|s| s.eq_ignore_ascii_case(name))?;
    segments.next().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant, form-encoded.
async fn token(
    standin: SharedStandIn,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let now = clock::now();
    let fields = std::str::from_utf8(&body)
        .ok()
        .and_then(|form| web::Query::<Vec<(String, String)>>::from_query(form).ok());
    let Some(fields) = fields else {
        return HttpResponse::BadRequest().json(serde_json::json!({
            "error": "invalid_request",
            "error_description": "AADSTS900144: The request body must be form-encoded.",
        }));
    };
    match lock(&standin).issue_token(&tenant, &fields, now) {
        Ok(grant) => HttpResponse::Ok().json(grant.to_json()),
        Err(refusal) => refusal.to_response(now),
    }
}

/// `GET /metadata/identity/oauth2/token`: the instance metadata endpoint's managed identity.
async fn imds_token(standin: SharedStandIn, request: HttpRequest) -> HttpResponse {
    let now = clock::now();
    let query = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let header = request
        .headers()
        .get("Metadata")
        .and_then(|value| value.to_str().ok());
    let ttl = lock(&standin).settings().token_ttl;
    match lock(&standin).issue_managed_token(header, &query, now) {
        Ok((grant, client_id)) => imds::answer(&grant.access_token, &client_id, ttl, now),
        Err(refusal) => refusal.to_response(),
    }
}

async fn no_route(request: HttpRequest) -> HttpResponse {
    ArmError::no_route(request.method().as_str(), request.path()).error_response()
}
