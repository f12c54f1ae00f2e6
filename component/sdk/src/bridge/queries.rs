//! The query responder: a core queue subscription on the query subject; each query is answered
//! from the store (through the controller) on the request's reply inbox.

use actix::Addr;
use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use operator_contract::{Envelope, Operation};
use operator_telemetry::inject_nats;
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use super::BridgeError;
use crate::controller::messages::AnswerQuery;
use crate::controller::ControllerActor;
use crate::trace::{failed, process_span};

/// Subscribes to queries on `subject`, in queue group `group` when given (one member answers)
/// or plainly (every replica answers; the requester takes the first).
pub(crate) async fn subscribe_queries(
    client: &Client,
    subject: &str,
    group: Option<&str>,
) -> Result<Subscriber, BridgeError> {
    let subscribed = match group {
        Some(group) => {
            client
                .queue_subscribe(subject.to_string(), group.to_string())
                .await
        }
        None => client.subscribe(subject.to_string()).await,
    };
    subscribed.map_err(|e| BridgeError::Subscribe {
        subject: subject.to_string(),
        reason: e.to_string(),
    })
}

/// Answers the queries of `subscriber` until `stop` changes or the connection closes.
pub(crate) async fn answer_queries(
    client: Client,
    mut subscriber: Subscriber,
    controller: Addr<ControllerActor>,
    mut stop: watch::Receiver<bool>,
) {
    info!("answering queries");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            message = subscriber.next() => match message {
                Some(message) => {
                    tokio::spawn(answer(client.clone(), controller.clone(), message));
                }
                None => break,
            },
        }
    }
    let _ = subscriber.unsubscribe().await;
    info!("query responder stopped");
}

async fn answer(client: Client, controller: Addr<ControllerActor>, message: Message) {
    let Some(inbox) = message.reply.clone() else {
        debug!(subject = %message.subject, "query without a reply inbox ignored");
        return;
    };
    let query = match Envelope::decode(&message.payload) {
        Ok(query) => query,
        Err(e) => {
            warn!(subject = %message.subject, error = %e, "malformed query ignored");
            return;
        }
    };
    let span = process_span(&message.subject, &query, message.headers.as_ref());
    let reply_span = span.clone();
    async move {
        let reply = match controller
            .send(AnswerQuery {
                envelope: query.clone(),
            })
            .await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                failed(&reply_span);
                query.reply(Operation::Error, json!({ "message": e.to_string() }))
            }
            Err(_) => {
                failed(&reply_span);
                query.reply(
                    Operation::Error,
                    json!({ "message": "the component is shutting down" }),
                )
            }
        };
        // The requester may follow the answer back to the span that produced it.
        let mut headers = async_nats::HeaderMap::new();
        inject_nats(&mut headers, &reply_span);
        if let Err(e) = client
            .publish_with_headers(inbox, headers, reply.encode().into())
            .await
        {
            warn!(error = %e, "query reply not sent");
        }
    }
    .instrument(span)
    .await
}
