//! The stand-in's own control API under `/_standin/` (not Azure's): tests set pipeline
//! behaviours, arm faults, read the runs and call counts, and reset.

use actix_web::{web, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::clock::{self, MAX_DURATION_MS};
use crate::run::{ActivitySpec, Outcome, PipelineBehaviour, DEFAULT_FAILURE_MESSAGE};
use crate::run::{DEFAULT_ACTIVITY_NAME, DEFAULT_ACTIVITY_TYPE};
use crate::state::{lock, Faults, SharedStandIn};

/// `PUT /_standin/pipelines/{name}`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PipelineRequest {
    outcome: Outcome,
    queued_ms: Option<u64>,
    run_ms: Option<u64>,
    failure_message: Option<String>,
    activities: Option<Vec<ActivitySpec>>,
}

/// `POST /_standin/faults`: each field given replaces what is armed; absent ones stay.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsRequest {
    throttle: Option<u32>,
    retry_after_s: Option<u64>,
    server_errors: Option<u32>,
    delay_ms: Option<u64>,
    expire_tokens: Option<bool>,
}

fn refused(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}

/// Reads a control body strictly: a typo in a test's request should fail the test loudly.
fn read_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

fn within_limit(name: &str, value: Option<u64>) -> Result<(), String> {
    match value {
        Some(ms) if ms > MAX_DURATION_MS => {
            Err(format!("{name} must be at most {MAX_DURATION_MS}"))
        }
        _ => Ok(()),
    }
}

pub async fn put_pipeline(
    standin: SharedStandIn,
    name: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    match set_pipeline(&standin, &name, &body) {
        Ok(behaviour) => {
            HttpResponse::Ok().json(json!({ "pipeline": name.as_str(), "behaviour": behaviour }))
        }
        Err(message) => refused(message),
    }
}

fn set_pipeline(
    standin: &SharedStandIn,
    name: &str,
    body: &[u8],
) -> Result<PipelineBehaviour, String> {
    let request: PipelineRequest = read_body(body)?;
    within_limit("queuedMs", request.queued_ms)?;
    within_limit("runMs", request.run_ms)?;
    let activities = request.activities.unwrap_or_else(|| {
        vec![ActivitySpec {
            name: DEFAULT_ACTIVITY_NAME.to_owned(),
            activity_type: DEFAULT_ACTIVITY_TYPE.to_owned(),
        }]
    });
    if activities.is_empty() {
        return Err("activities must name at least one activity".to_owned());
    }
    let mut standin = lock(standin);
    let settings = standin.settings();
    let behaviour = PipelineBehaviour {
        outcome: request.outcome,
        queued_ms: request.queued_ms.unwrap_or(settings.queued_ms),
        run_ms: request.run_ms.unwrap_or(settings.run_ms),
        failure_message: request
            .failure_message
            .unwrap_or_else(|| DEFAULT_FAILURE_MESSAGE.to_owned()),
        activities,
    };
    standin.set_pipeline(name, behaviour.clone());
    Ok(behaviour)
}

pub async fn post_faults(standin: SharedStandIn, body: web::Bytes) -> HttpResponse {
    match arm_faults(&standin, &body) {
        Ok(armed) => HttpResponse::Ok().json(armed),
        Err(message) => refused(message),
    }
}

fn arm_faults(standin: &SharedStandIn, body: &[u8]) -> Result<Faults, String> {
    let request: FaultsRequest = read_body(body)?;
    within_limit("delayMs", request.delay_ms)?;
    let mut standin = lock(standin);
    let faults = standin.faults_mut();
    if let Some(throttle) = request.throttle {
        faults.throttle = throttle;
    }
    if let Some(retry_after_s) = request.retry_after_s {
        faults.retry_after_s = retry_after_s;
    }
    if let Some(server_errors) = request.server_errors {
        faults.server_errors = server_errors;
    }
    if let Some(delay_ms) = request.delay_ms {
        faults.delay_ms = delay_ms;
    }
    let armed = faults.clone();
    if request.expire_tokens == Some(true) {
        standin.expire_tokens(clock::now());
    }
    Ok(armed)
}

pub async fn get_runs(standin: SharedStandIn) -> HttpResponse {
    HttpResponse::Ok().json(lock(&standin).runs_report(clock::now()))
}

pub async fn get_calls(standin: SharedStandIn) -> HttpResponse {
    HttpResponse::Ok().json(lock(&standin).calls_report())
}

/// `GET /_standin/monitoring?windowMs=N` (default a minute): monitoring calls by factory with
/// the most any window of N ms held, and the longest gap between two polls of a run.
pub async fn get_monitoring(
    standin: SharedStandIn,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let window_ms = query
        .get("windowMs")
        .and_then(|w| w.parse().ok())
        .unwrap_or(60_000u64)
        .max(1);
    HttpResponse::Ok().json(lock(&standin).monitoring().report(window_ms))
}

/// `PUT /_standin/federated-token`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedTokenRequest {
    token: Option<String>,
}

/// `PUT /_standin/federated-token` `{"token": "…"}`: from now on only this client assertion is
/// accepted (`null`: any), as when the cluster's issuer rotates the projected token.
pub async fn put_federated_token(standin: SharedStandIn, body: web::Bytes) -> HttpResponse {
    match read_body::<FederatedTokenRequest>(&body) {
        Ok(request) => {
            lock(&standin).set_federated_token(request.token);
            HttpResponse::NoContent().finish()
        }
        Err(message) => refused(message),
    }
}

pub async fn reset(standin: SharedStandIn) -> HttpResponse {
    lock(&standin).reset();
    HttpResponse::NoContent().finish()
}
