//! The SDK for operator components: implement a [`Reconciler`], hand it to [`run`] (or
//! [`Component`]) with a [`ComponentConfig`], and the SDK does the rest — NATS connection,
//! the command consumer, queries, the entity store, scheduling with per-entity backoff, status
//! events and graceful shutdown — following `shared/PROTOCOL.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use operator_sdk::prelude::*;
//!
//! struct Echo;
//!
//! impl Reconciler for Echo {
//!     fn id(&self) -> &str {
//!         "echo"
//!     }
//!
//!     async fn reconcile(
//!         &self,
//!         request: ReconcileRequest,
//!         ctx: ReconcileContext,
//!     ) -> Result<ReconcileResult, ReconcileError> {
//!         if request.entity.deleting {
//!             return Ok(ReconcileResult::await_change());
//!         }
//!         let status = request.new_runtime_status(ResourceStatus::Active, RuntimeStatus::Succeeded);
//!         ctx.controller().update_entity_status(status).await?;
//!         Ok(ReconcileResult::await_change())
//!     }
//! }
//!
//! fn main() -> Result<(), ComponentError> {
//!     operator_sdk::run(ComponentConfig::for_operator("echo"), Echo)
//! }
//! ```

/// jemalloc for every component built on the SDK: it hands pages freed for a second back to
/// the system (set in `.cargo/config.toml`), so a component's resident size follows the
/// entities it holds, not the peak of a burst. Off with `default-features = false`.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod backoff;
mod bridge;
mod component;
mod config;
mod controller;
mod election;
mod events;
mod handler;
pub mod metrics;
mod operator_details;
mod reconciler;
pub mod shared_state;
mod store;
pub mod testing;
mod trace;

pub use backoff::Backoff;
pub use bridge::BridgeError;
pub use component::{run, Component, ComponentError};
pub use config::{ComponentConfig, ConfigError, StateStoreType};
pub use controller::{Controller, ControllerError, OController};
pub use election::{
    ElectionError, ElectionSettings, Fence, Fenced, LeaderElection, LeadershipAcquired,
    LeadershipLost, Resign, StepDown, Subscribe, Term,
};
pub use events::EventError;
pub use handler::{CommandOutcome, DefaultMessageHandler, HandlerError, MessageHandler};
pub use operator_details::OperatorDetails;
pub use reconciler::{
    Action, ReconcileContext, ReconcileError, ReconcileRequest, ReconcileResult, Reconciler,
};
pub use store::{EntityRef, EntityStore, KvStore, MemoryStore, StoreError, StoreFlush};

/// Trace context for the calls an operator makes to its platform.
pub use operator_telemetry as telemetry;

pub use operator_contract::condition::{self, COMPONENT_REACHABLE, READY, SUCCEEDED, SYNCED};
pub use operator_contract::history::{EventType, HistoryEvent};
/// Re-exported so component writers need not depend on `operator-contract` for the basics.
pub use operator_contract::{
    Condition, ConditionStatus, Entity, EntityKey, EntityStatus, Envelope, EnvelopeKind, Operation,
    ResourceStatus, RuntimeStatus,
};

/// Everything a component writer usually needs.
pub mod prelude {
    pub use crate::{
        run, Action, Component, ComponentConfig, ComponentError, ConditionStatus, Controller,
        ControllerError, Entity, EntityKey, EntityStatus, OController, ReconcileContext,
        ReconcileError, ReconcileRequest, ReconcileResult, Reconciler, ResourceStatus,
        RuntimeStatus,
    };
}
