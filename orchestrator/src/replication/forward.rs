//! A follower's API: every request but the health checks is forwarded to the leader, and its
//! answer (streamed, for watches) sent back as it comes. Forwarding rather than redirecting:
//! clients keep one address, HTTP clients drop the API key on a redirect to another host, and
//! the leader is often not reachable from the client at all (a pod address).

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::json;
use tracing::{debug, warn};

use super::{Directory, Leader};

/// The largest request body forwarded.
const MAX_FORWARDED_BODY: usize = 64 * 1024 * 1024;
/// How long a connection to the leader may take to open (a partitioned leader drops the SYN).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a forward waiting for the leader's answer checks that it still leads: a leader
/// paused (SIGSTOP) or cut off holds the request, while another replica has taken the lease.
const LEADER_CHECK: Duration = Duration::from_millis(500);

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How long a request that reached this replica as it took the lead waits for its leader's
/// server to be up.
const PROMOTION_WAIT: Duration = Duration::from_secs(30);

/// What a follower needs to forward.
#[derive(Clone)]
pub struct Forwarder {
    pub directory: Directory,
    pub client: reqwest::Client,
    /// This replica's name: never forward to itself.
    pub replica: String,
    /// True once this replica leads and its leader's server takes requests.
    pub leading: tokio::sync::watch::Receiver<bool>,
}

impl Forwarder {
    pub fn new(
        directory: Directory,
        replica: String,
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            directory,
            leading,
            client: reqwest::Client::builder()
                .http1_only()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()?,
            replica,
        })
    }
}

/// `503` with `Retry-After`, for a request that cannot reach a leader now.
fn unavailable(reason: String) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({ "error": reason }))
}

/// The answer to a request that reached this replica's follower server while the lease names
/// this replica. Either it is taking the lead: `503` once the leader's server is up (restoring
/// the state can take seconds), and the client retries a second later on a new connection,
/// which the leader's server takes (the follower's stops accepting as soon as the leader's is
/// up, and drains what it has). Or the lease is its previous process's, killed and started
/// again before the lease lapsed: `503` as soon as the lease lapses or another replica takes
/// it, rather than waiting for a lead this process may never get.
async fn promoted(forwarder: &Forwarder) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + PROMOTION_WAIT;
    let mut leading = forwarder.leading.clone();
    loop {
        tokio::select! {
            up = leading.wait_for(|up| *up) => {
                if up.is_err() {
                    return unavailable("this orchestrator is stopping; retry".into());
                }
                return HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "1"))
                    .force_close()
                    .json(json!({ "error": "this orchestrator has just taken the lead; retry" }));
            }
            _ = tokio::time::sleep(LEADER_CHECK) => {}
        }
        match forwarder.directory.leader().await {
            Ok(Leader::At { replica, .. }) if replica == forwarder.replica => {}
            Ok(Leader::At { replica, .. }) => {
                return unavailable(format!("the orchestrator {replica} leads now; retry"))
            }
            Ok(Leader::Unknown) => {
                return unavailable("no orchestrator leads at the moment; retry".into())
            }
            Err(e) => return unavailable(format!("cannot find the leading orchestrator: {e}")),
        }
        if tokio::time::Instant::now() >= deadline {
            return unavailable("this orchestrator is taking the lead; retry".into());
        }
    }
}

/// Forwards one request to the leader.
pub async fn forward(
    request: HttpRequest,
    mut body: web::Payload,
    forwarder: web::Data<Forwarder>,
) -> HttpResponse {
    let (leader_replica, leader) = match forwarder.directory.leader().await {
        Ok(Leader::At { replica, url }) if replica != forwarder.replica => (replica, url),
        Ok(Leader::At { .. }) => return promoted(&forwarder).await,
        Ok(Leader::Unknown) => {
            return unavailable("no orchestrator leads at the moment; retry".into())
        }
        Err(e) => return unavailable(format!("cannot find the leading orchestrator: {e}")),
    };
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if bytes.len() + chunk.len() <= MAX_FORWARDED_BODY => {
                bytes.extend_from_slice(&chunk)
            }
            Ok(_) => {
                return HttpResponse::PayloadTooLarge().json(json!({
                    "error": format!("request body larger than {MAX_FORWARDED_BODY} bytes")
                }))
            }
            Err(e) => {
                return HttpResponse::BadRequest()
                    .json(json!({ "error": format!("cannot read the request body: {e}") }))
            }
        }
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{leader}{path}");
    let Ok(method) = reqwest::Method::from_bytes(request.method().as_str().as_bytes()) else {
        return HttpResponse::MethodNotAllowed().finish();
    };
    let mut outgoing = forwarder.client.request(method, &url);
    for (name, value) in request.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name.as_str() != "host" {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    debug!(leader = %leader, path = %path, "api.forward");
    let sent = outgoing.body(bytes.freeze()).send();
    tokio::pin!(sent);
    let answered = loop {
        tokio::select! {
            answered = &mut sent => break answered,
            _ = tokio::time::sleep(LEADER_CHECK) => {
                match forwarder.directory.leader().await {
                    Ok(Leader::At { replica, .. }) if replica == leader_replica => {}
                    Ok(Leader::At { replica, .. }) if replica == forwarder.replica => {
                        return promoted(&forwarder).await;
                    }
                    _ => {
                        warn!(leader = %leader, "the leading orchestrator lost the lease while a forwarded request waited on it");
                        return unavailable(format!(
                            "the orchestrator {leader_replica} stopped leading while the request was under way (it may or may not have been carried out); retry"
                        ));
                    }
                }
            }
        }
    };
    let answer = match answered {
        Ok(answer) => answer,
        Err(e) => {
            warn!(leader = %leader, error = %e, "cannot reach the leading orchestrator");
            return unavailable(format!(
                "cannot reach the leading orchestrator at {leader}: {e}"
            ));
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) || name.as_str() == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.append_header((name, value));
        }
    }
    response.streaming(answer.bytes_stream())
}
