//! Live updates: server-sent events fed by a JetStream KV watch on the records' bucket, the
//! same change stream as `opctl get --watch`. Each change sends a `change` event naming the
//! key; the page then renders itself again from the server. A comment line goes out when
//! nothing changed for a while, so proxies keep the stream open.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use operator_contract::election::FENCE_KEY;
use serde::Deserialize;

use super::session::Sessions;
use super::views::UiError;
use crate::auth::Users;
use crate::error::ControlError;
use crate::manager::{OpenWatch, OperatorManager};
use crate::store::{workspaced_key, OPERATORS_BUCKET, RESOURCES_BUCKET};
use crate::watch::HEARTBEAT;

/// How many events may wait for a slow reader before the stream is ended (the page opens it again).
const BUFFERED_EVENTS: usize = 64;

#[derive(Deserialize)]
pub struct EventsQuery {
    collection: String,
    workspace: Option<String>,
    name: Option<String>,
}

/// `GET /ui/events?collection=operators|resources[&workspace=W[&name=N]]`.
pub async fn stream(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: web::Data<Addr<OperatorManager>>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, UiError> {
    let session = sessions.signed_in(&request, &users).await?;
    let query = query.into_inner();
    let (bucket, filter) = match (query.collection.as_str(), &query.workspace) {
        ("operators", _) => (OPERATORS_BUCKET, ">".to_string()),
        ("resources", Some(ws)) => {
            operator_contract::names::validate_name("workspace", ws).map_err(ControlError::from)?;
            session.caller.require_read(ws)?;
            let filter = match &query.name {
                Some(name) => {
                    operator_contract::names::validate_name("name", name)
                        .map_err(ControlError::from)?;
                    workspaced_key(ws, name)
                }
                None => format!("{ws}.>"),
            };
            (RESOURCES_BUCKET, filter)
        }
        _ => {
            return Err(ControlError::invalid(
                "collection: operators, or resources with a workspace",
            )
            .into())
        }
    };
    let changes = manager.send(OpenWatch { bucket, filter }).await??;
    let (sender, events) = mpsc::channel::<Bytes>(BUFFERED_EVENTS);
    actix_web::rt::spawn(forward(changes, sender));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-store"))
        // Sent at once, not held back by a buffering proxy.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events.map(Ok::<_, actix_web::Error>)))
}

async fn forward(mut changes: async_nats::jetstream::kv::Watch, mut sender: mpsc::Sender<Bytes>) {
    // Opens the stream in the browser at once.
    if sender
        .send(Bytes::from_static(b": open\n\n"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let event = match tokio::time::timeout(HEARTBEAT, changes.next()).await {
            Err(_) => Bytes::from_static(b": heartbeat\n\n"),
            // The page opens the stream again.
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(entry))) if entry.key == FENCE_KEY => continue,
            Ok(Some(Ok(entry))) => Bytes::from(format!("event: change\ndata: {}\n\n", entry.key)),
        };
        if sender.send(event).await.is_err() {
            return;
        }
    }
}
