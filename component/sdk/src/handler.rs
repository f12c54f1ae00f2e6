//! `MessageHandler`: how commands change the store and how queries are answered, with
//! `DefaultMessageHandler` implementing the rules of PROTOCOL.md.

use chrono::Utc;
use operator_contract::{Entity, Envelope, EnvelopeKind, Operation};
use serde_json::json;
use thiserror::Error;

use crate::store::{EntityRef, EntityStore};

/// What a command did to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The entity was stored (created, changed or marked for deletion): reconcile it.
    Applied,
    /// The command's generation is not above the stored one: a redelivery, acknowledged and
    /// otherwise ignored.
    Stale {
        /// The generation already stored.
        stored_generation: u64,
    },
}

/// Why a message cannot be handled; the message is refused and not redelivered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandlerError {
    /// The envelope is not of the kind or operation the handler takes.
    #[error("unexpected {kind:?}/{operation:?} envelope")]
    Unexpected {
        kind: EnvelopeKind,
        operation: Operation,
    },
    /// A create or update command without a `spec` object in its payload.
    #[error("{operation:?} command without a spec in its payload")]
    MissingSpec { operation: Operation },
}

/// Applies commands to the store and answers queries from it. Both run inside the controller,
/// which owns the store, so they are plain functions; the default follows the protocol.
pub trait MessageHandler: Send + 'static {
    /// Applies a command to the store.
    fn handle_command(
        &self,
        envelope: &Envelope,
        store: &mut EntityStore,
    ) -> Result<CommandOutcome, HandlerError>;

    /// Answers a query with a reply envelope.
    fn handle_query(
        &self,
        envelope: &Envelope,
        store: &EntityStore,
    ) -> Result<Envelope, HandlerError>;
}

/// The protocol's rules: a command applies only when its generation is above the stored one;
/// a create or update sent before the delete of an entity since cleaned up does not apply (see
/// [`crate::store::Tombstone`]); create and update store the spec; delete marks the entity
/// `deleting` at the delete's generation (creating a stub when the entity is unknown, so
/// `deleted` is still reported);
/// `get` answers `{"entity": …, "status": …}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultMessageHandler;

impl MessageHandler for DefaultMessageHandler {
    fn handle_command(
        &self,
        envelope: &Envelope,
        store: &mut EntityStore,
    ) -> Result<CommandOutcome, HandlerError> {
        if envelope.kind != EnvelopeKind::Command {
            return Err(unexpected(envelope));
        }
        let r = EntityRef::new(envelope.resource_type.clone(), envelope.key.clone());
        let stored = store.entity(&r);
        if let Some(stored) = &stored {
            if envelope.generation <= stored.generation {
                return Ok(CommandOutcome::Stale {
                    stored_generation: stored.generation,
                });
            }
        }
        let buried = store.tombstone(&r).filter(|t| t.precedes(envelope.id));
        if let (None, Some(tombstone), Operation::Create | Operation::Update) =
            (&stored, buried, envelope.operation)
        {
            // Sent before the entity's delete, redelivered after it: the entity is not created
            // again. (A delete again only repeats the clean-up and its `deleted`.)
            return Ok(CommandOutcome::Stale {
                stored_generation: tombstone.generation,
            });
        }
        let entity = match envelope.operation {
            Operation::Create | Operation::Update => {
                let spec = envelope
                    .payload
                    .get("spec")
                    .filter(|spec| !spec.is_null())
                    .cloned()
                    .ok_or(HandlerError::MissingSpec {
                        operation: envelope.operation,
                    })?;
                Entity {
                    key: envelope.key.clone(),
                    operator: envelope.operator.clone(),
                    resource_type: envelope.resource_type.clone(),
                    generation: envelope.generation,
                    spec,
                    deleting: false,
                    last_command: envelope.id,
                    updated_at: Utc::now(),
                }
            }
            Operation::Delete => match stored {
                Some(stored) => Entity {
                    generation: envelope.generation,
                    deleting: true,
                    last_command: envelope.id,
                    updated_at: Utc::now(),
                    ..stored
                },
                None => Entity {
                    key: envelope.key.clone(),
                    operator: envelope.operator.clone(),
                    resource_type: envelope.resource_type.clone(),
                    generation: envelope.generation,
                    spec: serde_json::Value::Null,
                    deleting: true,
                    last_command: envelope.id,
                    updated_at: Utc::now(),
                },
            },
            _ => return Err(unexpected(envelope)),
        };
        store.put_entity(entity);
        Ok(CommandOutcome::Applied)
    }

    fn handle_query(
        &self,
        envelope: &Envelope,
        store: &EntityStore,
    ) -> Result<Envelope, HandlerError> {
        if envelope.kind != EnvelopeKind::Query || envelope.operation != Operation::Get {
            return Err(unexpected(envelope));
        }
        let r = EntityRef::new(envelope.resource_type.clone(), envelope.key.clone());
        let payload = json!({
            "entity": store.entity(&r),
            "status": store.status(&r),
        });
        Ok(envelope.reply(Operation::Get, payload))
    }
}

fn unexpected(envelope: &Envelope) -> HandlerError {
    HandlerError::Unexpected {
        kind: envelope.kind,
        operation: envelope.operation,
    }
}

#[cfg(test)]
mod tests {
    use operator_contract::{EntityKey, EntityStatus};

    use super::*;

    fn command(operation: Operation, generation: u64, payload: serde_json::Value) -> Envelope {
        Envelope::new(
            EnvelopeKind::Command,
            operation,
            "demo",
            "job",
            EntityKey::new("public", "run-1").expect("valid"),
            generation,
            payload,
        )
    }

    fn r() -> EntityRef {
        EntityRef::new("job", EntityKey::new("public", "run-1").expect("valid"))
    }

    #[test]
    fn a_create_stores_the_spec_at_the_command_generation() {
        let mut store = EntityStore::default();
        let create = command(Operation::Create, 1, json!({"spec": {"durationMs": 5}}));
        let outcome = DefaultMessageHandler.handle_command(&create, &mut store);
        assert_eq!(outcome, Ok(CommandOutcome::Applied));
        let entity = store.entity(&r()).expect("stored");
        assert_eq!(entity.generation, 1);
        assert_eq!(entity.spec, json!({"durationMs": 5}));
        assert_eq!(entity.last_command, create.id);
        assert!(!entity.deleting);
    }

    #[test]
    fn stale_and_duplicate_generations_change_nothing() {
        let mut store = EntityStore::default();
        let h = DefaultMessageHandler;
        h.handle_command(
            &command(Operation::Create, 2, json!({"spec": {"a": 1}})),
            &mut store,
        )
        .expect("applied");
        for generation in [1, 2] {
            let update = command(Operation::Update, generation, json!({"spec": {"a": 9}}));
            assert_eq!(
                h.handle_command(&update, &mut store),
                Ok(CommandOutcome::Stale {
                    stored_generation: 2
                })
            );
        }
        assert_eq!(store.entity(&r()).expect("stored").spec, json!({"a": 1}));
        let update = command(Operation::Update, 3, json!({"spec": {"a": 3}}));
        assert_eq!(
            h.handle_command(&update, &mut store),
            Ok(CommandOutcome::Applied)
        );
        assert_eq!(store.entity(&r()).expect("stored").spec, json!({"a": 3}));
    }

    #[test]
    fn a_delete_marks_the_entity_deleting_at_the_delete_generation() {
        let mut store = EntityStore::default();
        let h = DefaultMessageHandler;
        h.handle_command(
            &command(Operation::Create, 1, json!({"spec": {"a": 1}})),
            &mut store,
        )
        .expect("applied");
        let delete = command(Operation::Delete, 2, json!({}));
        assert_eq!(
            h.handle_command(&delete, &mut store),
            Ok(CommandOutcome::Applied)
        );
        let entity = store.entity(&r()).expect("kept until cleaned up");
        assert!(entity.deleting);
        assert_eq!(entity.generation, 2);
        assert_eq!(entity.spec, json!({"a": 1}));
        assert_eq!(entity.last_command, delete.id);
    }

    #[test]
    fn a_create_sent_before_a_delete_does_not_bring_back_the_deleted_entity() {
        let mut store = EntityStore::default();
        let h = DefaultMessageHandler;
        let create = command(Operation::Create, 1, json!({"spec": {"a": 1}}));
        let update = command(Operation::Update, 2, json!({"spec": {"a": 2}}));
        let delete = command(Operation::Delete, 3, json!({}));
        for c in [&create, &update, &delete] {
            assert_eq!(h.handle_command(c, &mut store), Ok(CommandOutcome::Applied));
        }
        store.bury(&r());
        assert_eq!(store.entity(&r()), None);
        for redelivered in [&create, &update] {
            assert_eq!(
                h.handle_command(redelivered, &mut store),
                Ok(CommandOutcome::Stale {
                    stored_generation: 3
                })
            );
        }
        assert_eq!(store.entity(&r()), None, "not created again");
        assert_eq!(
            h.handle_command(&delete, &mut store),
            Ok(CommandOutcome::Applied),
            "a delete again cleans up again"
        );
        store.bury(&r());

        // The resource created again, after the delete: its generations start at 1 again.
        let again = command(Operation::Create, 1, json!({"spec": {"a": 9}}));
        assert_eq!(
            h.handle_command(&again, &mut store),
            Ok(CommandOutcome::Applied)
        );
        assert_eq!(store.entity(&r()).map(|e| e.spec), Some(json!({"a": 9})));
        assert_eq!(
            store.tombstone(&r()),
            None,
            "a new entity: the tombstone goes"
        );
    }

    #[test]
    fn a_delete_of_an_unknown_entity_still_gets_reconciled() {
        let mut store = EntityStore::default();
        let delete = command(Operation::Delete, 4, json!({}));
        assert_eq!(
            DefaultMessageHandler.handle_command(&delete, &mut store),
            Ok(CommandOutcome::Applied)
        );
        let entity = store.entity(&r()).expect("stub stored");
        assert!(entity.deleting);
        assert_eq!(entity.generation, 4);
    }

    #[test]
    fn commands_without_a_spec_or_of_the_wrong_kind_are_refused() {
        let mut store = EntityStore::default();
        let h = DefaultMessageHandler;
        assert_eq!(
            h.handle_command(&command(Operation::Create, 1, json!({})), &mut store),
            Err(HandlerError::MissingSpec {
                operation: Operation::Create
            })
        );
        assert!(h
            .handle_command(&command(Operation::Get, 1, json!({})), &mut store)
            .is_err());
        assert!(store.is_empty());
    }

    #[test]
    fn a_query_is_answered_with_the_entity_and_its_status() {
        let mut store = EntityStore::default();
        let h = DefaultMessageHandler;
        let mut query = command(Operation::Get, 0, json!({}));
        query.kind = EnvelopeKind::Query;
        let reply = h.handle_query(&query, &store).expect("answered");
        assert_eq!(reply.payload, json!({"entity": null, "status": null}));
        assert_eq!(reply.correlation_id, Some(query.id));

        h.handle_command(
            &command(Operation::Create, 1, json!({"spec": {}})),
            &mut store,
        )
        .expect("applied");
        store.put_status(EntityStatus::pending(r().key, "demo", "job"));
        let reply = h.handle_query(&query, &store).expect("answered");
        assert_eq!(reply.kind, EnvelopeKind::Reply);
        assert_eq!(reply.operation, Operation::Get);
        assert_eq!(reply.payload["entity"]["generation"], json!(1));
        assert_eq!(reply.payload["status"]["status"], json!("pending"));
    }
}
