//! Spans after OpenTelemetry's messaging conventions (`process <subject>` for a command or
//! query received, `send <subject>` for a status event), and the trace context a command hands
//! on to the reconciles it causes.

use operator_contract::Envelope;
use operator_telemetry::{extract_nats, set_remote_parent, trace_headers};
use tracing::{field, info_span, Span};

/// A span after the messaging conventions: `$operation $subject` of kind `$kind`, about
/// `$envelope`.
macro_rules! messaging_span {
    ($name:literal, $operation:literal, $kind:literal, $subject:expr, $envelope:expr) => {{
        let (subject, envelope): (&str, &Envelope) = ($subject, $envelope);
        info_span!(
            $name,
            otel.name = %format!("{} {subject}", $operation),
            otel.kind = $kind,
            otel.status_code = field::Empty,
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.message.id = %envelope.id,
            messaging.operation.type = $operation,
            operation = ?envelope.operation,
            entity.type = %envelope.resource_type,
            entity.key = %envelope.key,
            entity.generation = envelope.generation,
        )
    }};
}

/// The consumer span of `envelope` received on `subject`, child of the span whose W3C headers
/// the message carries (when it carries some). [`failed`] marks it as an error.
pub(crate) fn process_span(
    subject: &str,
    envelope: &Envelope,
    headers: Option<&async_nats::HeaderMap>,
) -> Span {
    let span = messaging_span!("nats.process", "process", "consumer", subject, envelope);
    extract_nats(headers, &span);
    span
}

/// The producer span of `envelope` sent to `subject`, child of the current span.
pub(crate) fn send_span(subject: &str, envelope: &Envelope) -> Span {
    messaging_span!("nats.send", "send", "producer", subject, envelope)
}

/// A span's trace context (its W3C headers), kept to parent later spans on it.
///
/// The controller keeps this rather than the command's `Span`: a `Span` held open keeps its
/// OpenTelemetry span from ending, so the command's `process` span would not be exported for
/// as long as the entity is remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TraceContext(Vec<(String, String)>);

impl TraceContext {
    /// The context of `span`; empty when spans are not exported.
    pub fn of(span: &Span) -> Self {
        Self(trace_headers(span))
    }

    /// Makes `span` a child of the span this context was taken from; an empty context leaves
    /// `span` where it was (a root, or the current span's child).
    pub fn adopt(&self, span: &Span) {
        if self.0.is_empty() {
            return;
        }
        set_remote_parent(span, |name| {
            self.0
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        });
    }
}

/// Marks `span` (one with an `otel.status_code` field) as failed.
pub(crate) fn failed(span: &Span) {
    span.record("otel.status_code", "ERROR");
}
