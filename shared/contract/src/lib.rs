//! The contract between the orchestrator and operator components: manifests, JSON Schema
//! validation, the CQRS envelope, NATS subjects, entity and status models.
//!
//! This crate does no network I/O and knows nothing of actors.

pub mod api;
pub mod condition;
pub mod election;
pub mod entity;
pub mod env;
pub mod envelope;
pub mod history;
pub mod manifest;
pub mod names;
pub mod schema;
pub mod status;
pub mod subject;
pub mod version;

pub use condition::{Condition, ConditionStatus};
pub use entity::{Entity, EntityKey};
pub use envelope::{Envelope, EnvelopeKind, Operation};
pub use manifest::{Manifest, ManifestKind};
pub use status::{EntityStatus, ResourceStatus, RuntimeStatus};
