//! The command consumer: pulls commands in batches, hands each to the controller in stream order
//! (so commands of one key apply in order) and acknowledges it once the entity is stored, with
//! many commands in flight at once. Malformed commands are terminated, not redelivered.
//!
//! Replicated, only the leader consumes: the controller starts a [`CommandFeed`] when it starts
//! leading and stops it when it stops. The feed checks the fence before attaching and before
//! handing over each command; a command it may no longer apply is NAKed for the next leader. A
//! new leader first replaces the durable consumer of a work-queue stream, so what its
//! predecessor pulled but never acknowledged is redelivered now rather than after the ack wait,
//! and a paused predecessor's pull requests die with the old consumer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::Addr;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream::RetentionPolicy;
use async_nats::jetstream::{self, AckKind};
use futures::stream::{FuturesUnordered, StreamExt};
use operator_contract::Envelope;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument, Span};

use super::{COMMANDS_IN_FLIGHT, PULL_BATCH};
use crate::controller::messages::ApplyCommand;
use crate::controller::ControllerActor;
use crate::election::Fence;
use crate::handler::CommandOutcome;
use crate::metrics::ComponentMetrics;
use crate::store::StoreError;
use crate::trace::{failed, process_span};

/// How long to wait before attaching again after the consumer went away.
const REATTACH_DELAY: Duration = Duration::from_secs(1);
/// How long a failed store write delays the command's redelivery.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// How long a stopping feed gets to finish the commands it handed over.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where commands come from: the command stream and the component's consumer on it.
#[derive(Debug, Clone)]
pub(crate) struct CommandFeed {
    pub js: jetstream::Context,
    pub stream: String,
    pub config: pull::Config,
    pub metrics: ComponentMetrics,
}

/// A feed consuming until stopped.
#[derive(Debug)]
pub(crate) struct RunningFeed {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CommandFeed {
    /// Starts consuming for `controller` while `fence` allows; with `take_over`, replaces the
    /// consumer first (see the module docs).
    pub fn start(
        &self,
        controller: Addr<ControllerActor>,
        fence: Fence,
        take_over: bool,
    ) -> RunningFeed {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(consume_commands(
            self.clone(),
            controller,
            stopped,
            fence,
            take_over,
        ));
        RunningFeed { stop, task }
    }
}

impl RunningFeed {
    /// Stops pulling and waits for the commands handed over to be acknowledged.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            warn!("command consumer did not stop in time");
        }
    }
}

/// Replaces the consumer of a work-queue stream: the messages left in such a stream are exactly
/// the unacknowledged ones, and the new consumer delivers them at once.
async fn take_over_consumer(feed: &CommandFeed, name: &str) -> Result<(), String> {
    let stream = feed
        .js
        .get_stream(&feed.stream)
        .await
        .map_err(|e| e.to_string())?;
    if stream.cached_info().config.retention != RetentionPolicy::WorkQueue {
        debug!(stream = %feed.stream, "not a work-queue stream: the consumer is kept");
        return Ok(());
    }
    if let Err(e) = stream.delete_consumer(name).await {
        debug!(consumer = %name, error = %e, "consumer not deleted (perhaps absent)");
    }
    stream
        .create_consumer(feed.config.clone())
        .await
        .map_err(|e| e.to_string())?;
    info!(stream = %feed.stream, consumer = %name, "command consumer taken over: unacknowledged commands are redelivered now");
    Ok(())
}

/// Consumes commands until `stop` changes or the fence stops allowing, then waits for the
/// commands already handed to the controller to be acknowledged.
async fn consume_commands(
    feed: CommandFeed,
    controller: Addr<ControllerActor>,
    mut stop: watch::Receiver<bool>,
    fence: Fence,
    mut take_over: bool,
) {
    let CommandFeed {
        js,
        stream,
        config,
        metrics,
    } = feed.clone();
    let name = config.name.clone().unwrap_or_default();
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut known_consumer: Option<jetstream::consumer::PullConsumer> = None;
    'attach: while !*stop.borrow() {
        if let Err(e) = fence.check() {
            info!(reason = %e, "command consumer stopping: not the leader");
            break 'attach;
        }
        if take_over {
            known_consumer = None;
            match take_over_consumer(&feed, &name).await {
                Ok(()) => take_over = false,
                Err(e) => {
                    warn!(stream = %stream, consumer = %name, error = %e, "cannot take the command consumer over; retrying");
                    tokio::select! {
                        _ = stop.changed() => break 'attach,
                        _ = tokio::time::sleep(REATTACH_DELAY) => continue 'attach,
                    }
                }
            }
        }
        // The consumer is looked up (or made) once, and again only when it went away: after a
        // lost pull (its NATS node killed or cut off) pulling again needs no JetStream API call,
        // which would time out until the consumer has a new leader.
        let attached = async {
            let consumer = match &known_consumer {
                Some(consumer) => consumer.clone(),
                None => js
                    .get_stream(&stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .get_or_create_consumer(&name, config.clone())
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .expires(operator_nats_cluster::PULL_EXPIRES)
                .heartbeat(operator_nats_cluster::PULL_HEARTBEAT)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((consumer, messages))
        };
        let mut messages = match attached.await {
            Ok((consumer, messages)) => {
                known_consumer = Some(consumer);
                messages
            }
            Err(e) => {
                known_consumer = None;
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
                        if let Err(e) = fence.check() {
                            info!(reason = %e, "command consumer stopping: not the leader");
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                            break 'attach;
                        }
                        in_flight.push(hand_over(message, &controller, &metrics));
                    }
                    Some(Err(e)) => {
                        warn!(stream = %stream, consumer = %name, error = %e, "command stream error");
                        if operator_nats_cluster::must_reattach(&e) {
                            if !operator_nats_cluster::only_the_pull_lost(&e) {
                                known_consumer = None;
                            }
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
/// acknowledges it once it is stored. Its `process` span, child of the sender's, is the parent
/// of what the command causes.
fn hand_over(
    message: jetstream::Message,
    controller: &Addr<ControllerActor>,
    metrics: &ComponentMetrics,
) -> Pending {
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
    let span = process_span(&message.subject, &envelope, message.headers.as_ref());
    let envelope_id = envelope.id;
    let (reply, applied) = oneshot::channel();
    let in_flight = metrics.command_handed_over();
    controller.do_send(ApplyCommand {
        envelope,
        cause: span.clone(),
        reply,
    });
    Box::pin(
        async move {
            let _in_flight = in_flight;
            let applied = match applied.await {
                Ok(Ok(applied)) => applied,
                Ok(Err(e)) => {
                    failed(&Span::current());
                    warn!(error = %e, "command refused and terminated");
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        warn!(error = %e, "command termination not sent");
                    }
                    return;
                }
                Err(_) => {
                    debug!("command not applied (not the leader, or stopping); left for redelivery");
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            };
            match applied.outcome {
                CommandOutcome::Stale { stored_generation } => {
                    debug!(stored_generation, "stale command acknowledged and ignored")
                }
                CommandOutcome::Applied => debug!(envelope.id = %envelope_id, "command applied"),
            }
            match applied.flush.wait().await {
                Ok(()) => {
                    if let Err(e) = message.ack().await {
                        warn!(error = %e, "command acknowledgement not sent; it will be redelivered");
                    }
                }
                Err(e) => {
                    failed(&Span::current());
                    warn!(error = %e, "command not stored; it will be redelivered");
                    let delay = match e {
                        StoreError::Fenced { .. } => None,
                        _ => Some(NAK_DELAY),
                    };
                    let _ = message.ack_with(AckKind::Nak(delay)).await;
                }
            }
        }
        .instrument(span),
    )
}
