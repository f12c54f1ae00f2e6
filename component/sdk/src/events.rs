//! `EventPublisher`: status events to the reply subject by JetStream publish, de-duplicated by
//! envelope id, each awaited until the stream acknowledges it and retried with backoff while
//! NATS or the stream is unavailable.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use operator_contract::envelope::MSG_ID_HEADER;
use operator_contract::{EntityStatus, Envelope, EnvelopeKind, Operation};
use operator_telemetry::inject_nats;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, warn, Instrument, Span};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::config::QUERY_REPLY_SUBJECT_ENV;
use crate::metrics::ComponentMetrics;
use crate::trace::{failed, send_span};

/// How long one status event is retried before the caller is told it failed.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// The delays between attempts.
const PUBLISH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Why a status event was not published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// No JetStream stream captures the reply subject.
    #[error("no stream captures subject {subject}: set {QUERY_REPLY_SUBJECT_ENV} to the operator's replySubject")]
    NoStream { subject: String },
    /// NATS did not acknowledge the event in time.
    #[error("status event on {subject} not acknowledged after {attempts} attempts: {reason}")]
    Unavailable {
        subject: String,
        attempts: u32,
        reason: String,
    },
}

/// The status event for `status`: kind `event`, operation `status`, generation = the observed
/// generation, payload = the status, correlated with the command that caused it.
pub(crate) fn status_event(status: &EntityStatus, correlation_id: Option<Uuid>) -> Envelope {
    let mut envelope = Envelope::new(
        EnvelopeKind::Event,
        Operation::Status,
        &status.operator,
        &status.resource_type,
        status.key.clone(),
        status.observed_generation,
        serde_json::to_value(status).unwrap_or_default(),
    );
    envelope.correlation_id = correlation_id;
    envelope
}

struct JetStreamSink {
    js: jetstream::Context,
    subject: String,
    /// Turns true when the component shuts down: retries stop then.
    stopping: watch::Receiver<bool>,
}

#[derive(Clone)]
enum Sink {
    JetStream(Arc<JetStreamSink>),
    Channel(tokio::sync::mpsc::UnboundedSender<Envelope>),
}

/// Publishes status events; cheap to clone.
#[derive(Clone)]
pub(crate) struct EventPublisher {
    sink: Sink,
    metrics: ComponentMetrics,
}

impl EventPublisher {
    /// A publisher to `subject` through JetStream, retrying until `stopping` turns true.
    pub fn jetstream(
        js: jetstream::Context,
        subject: String,
        stopping: watch::Receiver<bool>,
        metrics: ComponentMetrics,
    ) -> Self {
        Self {
            sink: Sink::JetStream(Arc::new(JetStreamSink {
                js,
                subject,
                stopping,
            })),
            metrics,
        }
    }

    /// A publisher into a channel, for tests without NATS (and `crate::testing`).
    pub fn channel(
        metrics: ComponentMetrics,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Envelope>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Self {
                sink: Sink::Channel(tx),
                metrics,
            },
            rx,
        )
    }

    /// Publishes `envelope` and waits for the stream's acknowledgement, retrying for a while,
    /// in a `send` span that is a child of the current one (the reconcile's).
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), EventError> {
        let published = match &self.sink {
            Sink::JetStream(sink) => {
                let span = send_span(&sink.subject, envelope);
                let published = publish_with_retry(sink, envelope)
                    .instrument(span.clone())
                    .await;
                if published.is_err() {
                    failed(&span);
                }
                published
            }
            Sink::Channel(tx) => {
                let _ = tx.send(envelope.clone());
                Ok(())
            }
        };
        if published.is_ok() {
            self.metrics.status_event_published(&envelope.resource_type);
        }
        published
    }
}

async fn publish_with_retry(sink: &JetStreamSink, envelope: &Envelope) -> Result<(), EventError> {
    let subject = sink.subject.as_str();
    let mut stopping = sink.stopping.clone();
    let payload = bytes::Bytes::from(envelope.encode());
    let id = envelope.id.to_string();
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, id.as_str());
        // The orchestrator follows the event back to this send (and so to the reconcile).
        inject_nats(&mut headers, &Span::current());
        let result = match sink
            .js
            .publish_with_headers(subject.to_string(), headers, payload.clone())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let error = match result {
            Ok(_) => {
                debug!(subject = %subject, attempts, "status event published");
                return Ok(());
            }
            Err(e) => e,
        };
        let no_stream = error.kind() == PublishErrorKind::StreamNotFound;
        if no_stream && attempts == 1 {
            error!(
                subject = %subject,
                "no stream captures the status event subject: set \
                 ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT to the operator's replySubject"
            );
        } else if attempts == 1 {
            warn!(subject = %subject, error = %error, "status event not published; retrying");
        } else {
            debug!(subject = %subject, attempts, error = %error, "status event not published; retrying");
        }
        let failed = || {
            if no_stream {
                EventError::NoStream {
                    subject: subject.to_string(),
                }
            } else {
                EventError::Unavailable {
                    subject: subject.to_string(),
                    attempts,
                    reason: error.to_string(),
                }
            }
        };
        let delay = PUBLISH_BACKOFF.delay_with_random_jitter(attempts);
        if error.kind() == PublishErrorKind::MaxPayloadExceeded
            || *stopping.borrow()
            || Instant::now() + delay > deadline
        {
            return Err(failed());
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.changed() => return Err(failed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use operator_contract::{EntityKey, ResourceStatus};

    use super::*;

    #[test]
    fn a_status_event_carries_the_status_at_its_observed_generation() {
        let mut status = EntityStatus::pending(
            EntityKey::new("public", "run-1").expect("valid"),
            "demo",
            "job",
        );
        status.observed_generation = 7;
        status.status = ResourceStatus::Deleted;
        let command = Uuid::now_v7();
        let event = status_event(&status, Some(command));
        assert_eq!(event.kind, EnvelopeKind::Event);
        assert_eq!(event.operation, Operation::Status);
        assert_eq!(event.generation, 7);
        assert_eq!(event.correlation_id, Some(command));
        let back: EntityStatus = serde_json::from_value(event.payload).expect("a status");
        assert_eq!(back, status);
    }
}
