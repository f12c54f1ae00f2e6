//! The CQRS envelope every message between the orchestrator and components travels in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::entity::EntityKey;

/// The largest envelope accepted from the wire, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// The NATS header JetStream de-duplicates publishes on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// What an envelope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeKind {
    /// Orchestrator → component: change the desired state.
    Command,
    /// Orchestrator → component: tell me what you know.
    Query,
    /// Component → orchestrator: the answer to a query.
    Reply,
    /// Component → orchestrator: an entity's status changed.
    Event,
}

/// The operation an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Get,
    Status,
    Error,
}

/// One message of the CQRS channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub id: Uuid,
    pub kind: EnvelopeKind,
    pub operation: Operation,
    pub operator: String,
    pub resource_type: String,
    pub key: EntityKey,
    pub generation: u64,
    #[serde(default)]
    pub payload: serde_json::Value,
    pub time: DateTime<Utc>,
    /// For a reply or an event caused by a command: the id of that envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
}

/// Why bytes from the wire are not an envelope.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// The message is larger than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {0} bytes is larger than the limit of {MAX_ENVELOPE_BYTES}")]
    TooLarge(usize),
    /// The bytes are not a JSON envelope.
    #[error("not an envelope: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl Envelope {
    /// A new envelope with a fresh time-ordered id.
    pub fn new(
        kind: EnvelopeKind,
        operation: Operation,
        operator: &str,
        resource_type: &str,
        key: EntityKey,
        generation: u64,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            operation,
            operator: operator.to_string(),
            resource_type: resource_type.to_string(),
            key,
            generation,
            payload,
            time: Utc::now(),
            correlation_id: None,
        }
    }

    /// A reply to this envelope carrying `payload`.
    pub fn reply(&self, operation: Operation, payload: serde_json::Value) -> Self {
        let mut reply = Self::new(
            EnvelopeKind::Reply,
            operation,
            &self.operator,
            &self.resource_type,
            self.key.clone(),
            self.generation,
            payload,
        );
        reply.correlation_id = Some(self.id);
        reply
    }

    /// The envelope as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an envelope from the wire, refusing oversized or malformed ones.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_wire_and_a_reply_points_back_at_it() {
        let key = EntityKey::new("public", "run-1").expect("valid");
        let command = Envelope::new(
            EnvelopeKind::Command,
            Operation::Create,
            "adf-operator",
            "pipeline-run",
            key,
            3,
            serde_json::json!({"factoryName": "f"}),
        );
        let decoded = Envelope::decode(&command.encode()).expect("decodes");
        assert_eq!(decoded, command);
        let reply = command.reply(Operation::Get, serde_json::json!({}));
        assert_eq!(reply.correlation_id, Some(command.id));
        assert_eq!(reply.kind, EnvelopeKind::Reply);
        assert_ne!(reply.id, command.id);
    }

    #[test]
    fn garbage_and_oversized_bytes_are_refused() {
        assert!(matches!(
            Envelope::decode(b"{\"id\": 1}"),
            Err(EnvelopeError::Malformed(_))
        ));
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::decode(&big),
            Err(EnvelopeError::TooLarge(_))
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn sample() -> Vec<u8> {
            let key = EntityKey::new("public", "run-1").expect("valid");
            Envelope::new(
                EnvelopeKind::Command,
                Operation::Create,
                "adf-operator",
                "pipeline-run",
                key,
                3,
                serde_json::json!({"spec": {"factoryName": "f", "n": [1, 2.5, null, true]}}),
            )
            .encode()
        }

        proptest! {
            #![proptest_config(crate::manifest::proptests::config())]

            #[test]
            fn arbitrary_bytes_never_panic_and_refusals_say_why(
                bytes in prop::collection::vec(any::<u8>(), 0..1024),
            ) {
                if let Err(err) = Envelope::decode(&bytes) {
                    prop_assert!(err.to_string().len() > "not an envelope: ".len(), "{err}");
                }
            }

            #[test]
            fn a_mutated_envelope_decodes_to_a_valid_one_or_is_refused(
                edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            ) {
                let mut bytes = sample();
                for (i, b) in edits {
                    let at = i % bytes.len();
                    bytes[at] = b;
                }
                match Envelope::decode(&bytes) {
                    // Whatever decodes has a key that passed validation, and survives the wire.
                    Ok(envelope) => {
                        prop_assert!(EntityKey::new(&envelope.key.workspace, &envelope.key.name).is_ok());
                        prop_assert_eq!(Envelope::decode(&envelope.encode()).ok(), Some(envelope));
                    }
                    Err(err) => prop_assert!(!err.to_string().is_empty()),
                }
            }
        }

        #[test]
        fn deeply_nested_payloads_are_refused_not_overflowing_the_stack() {
            let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
            let text = String::from_utf8(sample())
                .expect("utf-8")
                .replace("\"n\":[1,2.5,null,true]", &format!("\"n\":{deep}"));
            let err = Envelope::decode(text.as_bytes()).expect_err("refused");
            assert!(err.to_string().contains("recursion limit"), "{err}");
        }
    }
}
