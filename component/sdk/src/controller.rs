//! The controller: one actor owning the entity store and the work queue, and the cloneable
//! [`Controller`] handle reconcilers use to read entities and report statuses ([`OController`]).

mod actor;
mod leadership;
pub(crate) mod messages;
pub(crate) mod state;
pub(crate) mod task;

use std::future::Future;

use actix::Addr;
use operator_contract::{Entity, EntityKey, EntityStatus};
use thiserror::Error;
use uuid::Uuid;

pub(crate) use actor::ControllerActor;

use crate::election::Fence;
use crate::events::{status_event, EventError, EventPublisher};
use crate::store::{EntityRef, StoreError};
use messages::{GetEntity, GetEntityStatus, StoreStatus};

/// Why a controller call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControllerError {
    /// The controller actor has stopped (the component is shutting down).
    #[error("the controller has stopped")]
    Stopped,
    /// A status was reported for an entity that is not in the store.
    #[error("entity {0} is not in the store")]
    UnknownEntity(String),
    /// The status could not be made durable.
    #[error("status not stored: {0}")]
    Store(StoreError),
    /// The status event could not be published.
    #[error("status event not published: {0}")]
    Publish(EventError),
    /// This replica may not write: it does not lead (or no longer does).
    #[error("refused: {0}")]
    Fenced(String),
}

impl ControllerError {
    /// True when the call was refused because this replica does not lead.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            Self::Fenced(_) | Self::Store(StoreError::Fenced { .. })
        )
    }
}

// Manual conversions: the messages above already include the cause, so it is not also a
// `source` (which would print it twice in error chains).
impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<EventError> for ControllerError {
    fn from(e: EventError) -> Self {
        Self::Publish(e)
    }
}

/// Reads entities and statuses and reports statuses: the reconciler's view of the controller.
pub trait OController: Clone + Send + Sync + 'static {
    /// The stored entity of `resource_type` with `key`.
    fn get_entity(
        &self,
        resource_type: &str,
        key: &EntityKey,
    ) -> impl Future<Output = Result<Option<Entity>, ControllerError>> + Send;

    /// The last status stored for the entity of `resource_type` with `key`.
    fn get_entity_status(
        &self,
        resource_type: &str,
        key: &EntityKey,
    ) -> impl Future<Output = Result<Option<EntityStatus>, ControllerError>> + Send;

    /// Stores `status` and publishes it as a status event on the reply subject, returning once
    /// JetStream has acknowledged it (retrying for a while when NATS is unavailable). A replica
    /// that does not lead is refused ([`ControllerError::Fenced`]); a replicated component
    /// publishes only once the (fenced) write has landed.
    fn update_entity_status(
        &self,
        status: EntityStatus,
    ) -> impl Future<Output = Result<(), ControllerError>> + Send;
}

/// The handle to a running component's controller; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    addr: Addr<ControllerActor>,
    events: EventPublisher,
    fence: Fence,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    pub(crate) fn new(addr: Addr<ControllerActor>, events: EventPublisher, fence: Fence) -> Self {
        Self {
            addr,
            events,
            fence,
        }
    }

    fn check_fence(&self) -> Result<(), ControllerError> {
        self.fence
            .check()
            .map(|_| ())
            .map_err(|e| ControllerError::Fenced(e.to_string()))
    }

    /// Publishes a status event without storing the status (used for `deleted`, which
    /// outlives the entity).
    pub(crate) async fn publish_status(
        &self,
        status: &EntityStatus,
        command: Uuid,
    ) -> Result<(), ControllerError> {
        self.check_fence()?;
        let event = status_event(status, Some(command));
        Ok(self.events.publish(&event).await?)
    }
}

impl OController for Controller {
    async fn get_entity(
        &self,
        resource_type: &str,
        key: &EntityKey,
    ) -> Result<Option<Entity>, ControllerError> {
        let entity = EntityRef::new(resource_type, key.clone());
        self.addr
            .send(GetEntity { entity })
            .await
            .map_err(|_| ControllerError::Stopped)
    }

    async fn get_entity_status(
        &self,
        resource_type: &str,
        key: &EntityKey,
    ) -> Result<Option<EntityStatus>, ControllerError> {
        let entity = EntityRef::new(resource_type, key.clone());
        self.addr
            .send(GetEntityStatus { entity })
            .await
            .map_err(|_| ControllerError::Stopped)
    }

    async fn update_entity_status(&self, status: EntityStatus) -> Result<(), ControllerError> {
        let stored = self
            .addr
            .send(StoreStatus { status })
            .await
            .map_err(|_| ControllerError::Stopped)??;
        if self.fence.is_elected() {
            // Replicated: only a write the store accepted under this term's fence is announced.
            stored.flush.wait().await?;
            self.check_fence()?;
            self.events.publish(&stored.event).await?;
            return Ok(());
        }
        // Alone, the status is written and published at once: were the write lost in a crash,
        // the entity is reconciled again at start and the (idempotent) event repeated.
        let (written, published) =
            futures::join!(stored.flush.wait(), self.events.publish(&stored.event));
        written?;
        published?;
        Ok(())
    }
}

#[cfg(test)]
mod fenced_tests;
#[cfg(test)]
mod tests;
