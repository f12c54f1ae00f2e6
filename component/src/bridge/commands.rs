//! The command consumer: pulls commands in batches, hands each to the controller in stream order
//! (so commands of one key apply in order) and acknowledges it once the entity is stored, with
//! many commands in flight at once. Malformed commands are terminated, not redelivered.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::Addr;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::{self, AckKind};
use futures::stream::{FuturesUnordered, StreamExt};
use operator_shared::Envelope;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::{COMMANDS_IN_FLIGHT, PULL_BATCH};
use crate::controller::messages::ApplyCommand;
use crate::controller::ControllerActor;
use crate::handler::CommandOutcome;

/// How long to wait before attaching again after the consumer went away.
const REATTACH_DELAY: Duration = Duration::from_secs(1);
/// How long a failed store write delays the command's redelivery.
const NAK_DELAY: Duration = Duration::from_secs(1);

type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Consumes commands from `stream` until `stop` changes, then waits for the commands already
/// handed to the controller to be acknowledged.
pub(crate) async fn consume_commands(
    js: jetstream::Context,
    stream: String,
    config: pull::Config,
    controller: Addr<ControllerActor>,
    mut stop: watch::Receiver<bool>,
) {
    let name = config.name.clone().unwrap_or_default();
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    'attach: while !*stop.borrow() {
        let attached = async {
            let consumer = js
                .get_stream(&stream)
                .await
                .map_err(|e| e.to_string())?
                .get_or_create_consumer(&name, config.clone())
                .await
                .map_err(|e| e.to_string())?;
            consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .expires(Duration::from_secs(30))
                .heartbeat(Duration::from_secs(10))
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        let mut messages = match attached.await {
            Ok(messages) => messages,
            Err(e) => {
                warn!(stream = %stream, consumer = %name, error = %e, "cannot attach command consumer; retrying");
                tokio::select! {
                    _ = stop.changed() => break 'attach,
                    _ = tokio::time::sleep(REATTACH_DELAY) => continue 'attach,
                }
            }
        };
        info!(stream = %stream, consumer = %name, "consuming commands");
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break 'attach,
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                next = messages.next(), if in_flight.len() < COMMANDS_IN_FLIGHT => match next {
                    Some(Ok(message)) => {
                        if !controller.connected() {
                            // Unacknowledged, the message is redelivered to a healthy replica.
                            error!("controller stopped; command consumer stopping");
                            break 'attach;
                        }
                        in_flight.push(hand_over(message, &controller));
                    }
                    Some(Err(e)) => {
                        let fatal = matches!(
                            e.kind(),
                            MessagesErrorKind::ConsumerDeleted
                                | MessagesErrorKind::NoResponders
                                | MessagesErrorKind::RequestLimitExceeded
                                | MessagesErrorKind::PushBasedConsumer
                        );
                        warn!(stream = %stream, consumer = %name, error = %e, "command stream error");
                        if fatal {
                            tokio::time::sleep(REATTACH_DELAY).await;
                            continue 'attach;
                        }
                    }
                    None => continue 'attach,
                },
            }
        }
    }
    while in_flight.next().await.is_some() {}
    info!(stream = %stream, consumer = %name, "command consumer stopped");
}

/// Hands a command to the controller now (keeping stream order) and returns the future that
/// acknowledges it once it is stored.
fn hand_over(message: jetstream::Message, controller: &Addr<ControllerActor>) -> Pending {
    let envelope = match Envelope::decode(&message.payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            warn!(subject = %message.subject, error = %e, "malformed command terminated");
            return Box::pin(async move {
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    warn!(error = %e, "command termination not sent");
                }
            });
        }
    };
    let span = info_span!(
        "bridge.command",
        entity.type = %envelope.resource_type,
        entity.key = %envelope.key,
        entity.generation = envelope.generation,
        operation = ?envelope.operation,
    );
    let (reply, applied) = oneshot::channel();
    controller.do_send(ApplyCommand { envelope, reply });
    Box::pin(
        async move {
            let applied = match applied.await {
                Ok(Ok(applied)) => applied,
                Ok(Err(e)) => {
                    warn!(error = %e, "command refused and terminated");
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        warn!(error = %e, "command termination not sent");
                    }
                    return;
                }
                Err(_) => {
                    debug!("controller stopped; command left for redelivery");
                    return;
                }
            };
            if let CommandOutcome::Stale { stored_generation } = applied.outcome {
                debug!(stored_generation, "stale command acknowledged and ignored");
            }
            match applied.flush.wait().await {
                Ok(()) => {
                    if let Err(e) = message.ack().await {
                        warn!(error = %e, "command acknowledgement not sent; it will be redelivered");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "command not stored; it will be redelivered");
                    let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                }
            }
        }
        .instrument(span),
    )
}
