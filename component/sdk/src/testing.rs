//! A harness to unit-test a reconciler's flow without NATS: the SDK's own controller over the
//! memory store, commands applied as the command stream would deliver them, and each reconcile
//! run through the SDK's own error policy (terminal errors become status `error`, a finished
//! deletion publishes `deleted`, a Retry-After is honoured), with the statuses it published.
//!
//! ```
//! use operator_sdk::prelude::*;
//! use operator_sdk::testing::{self, Next, ReconcileHarness};
//! use serde_json::json;
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
//!         if !request.entity.deleting {
//!             ctx.update_status(request.new_status(ResourceStatus::Active)).await?;
//!         }
//!         Ok(ReconcileResult::await_change())
//!     }
//! }
//!
//! testing::block_on(async {
//!     let mut harness = ReconcileHarness::new("echo", Echo);
//!     harness.apply("thing", "public/one", json!({"size": 1})).await;
//!     let run = harness.reconcile("thing", "public/one").await;
//!     assert_eq!(run.next, Next::AwaitChange);
//!     assert_eq!(run.published[0].status, ResourceStatus::Active);
//! });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use operator_contract::{
    Entity, EntityKey, EntityStatus, Envelope, EnvelopeKind, Operation, ResourceStatus,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::controller::messages::{ApplyCommand, GetEntity, GetEntityStatus, ReconcileFinished};
use crate::controller::state::Outcome;
use crate::controller::task::{self, ReconcileTask};
use crate::controller::{Controller, ControllerActor};
use crate::election::Fence;
use crate::events::EventPublisher;
use crate::handler::DefaultMessageHandler;
use crate::metrics::ComponentMetrics;
use crate::reconciler::{DynReconciler, ReconcileRequest, Reconciler};
use crate::store::{EntityRef, EntityStore};
use crate::trace::TraceContext;

/// Runs `future` on an actix system, as the controller needs: a test of the harness is a plain
/// `#[test]` function around it.
pub fn block_on<F: Future>(future: F) -> F::Output {
    actix::System::new().block_on(future)
}

/// What the controller does next after a reconcile, as the SDK decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing until a command (or a resync).
    AwaitChange,
    /// Reconcile again after this long.
    RequeueAfter(Duration),
    /// Retried with backoff, not before `retry_after` when the error carried one.
    Retry { retry_after: Option<Duration> },
    /// Failed for good: status `error` was reported; waits for a new spec.
    WaitForNewSpec,
    /// The deletion finished: `deleted` was published and the entity is gone from the store.
    Deleted,
    /// This replica may no longer act.
    Fenced(String),
}

/// One reconcile run through the harness.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// What the SDK does next.
    pub next: Next,
    /// The statuses the reconcile published (the reconciler's, then the SDK's own: `error`
    /// or `deleted`), in order.
    pub published: Vec<EntityStatus>,
    /// The status stored for the entity afterwards.
    pub status: Option<EntityStatus>,
}

impl Reconciled {
    /// The last status published, if any.
    pub fn last(&self) -> Option<&EntityStatus> {
        self.published.last()
    }
}

/// A controller over the memory store that reconciles only when asked.
pub struct ReconcileHarness {
    operator: String,
    reconciler: Arc<dyn DynReconciler>,
    addr: Addr<ControllerActor>,
    controller: Controller,
    published: mpsc::UnboundedReceiver<Envelope>,
    metrics: ComponentMetrics,
    generations: HashMap<EntityRef, u64>,
    retries: HashMap<EntityRef, u32>,
}

/// `workspace/name` as a key (panics on a malformed one: this is for tests).
fn key(key: &str) -> EntityKey {
    let (workspace, name) = key.split_once('/').unwrap_or(("public", key));
    match EntityKey::new(workspace, name) {
        Ok(key) => key,
        Err(e) => panic!("invalid entity key {key:?}: {e}"),
    }
}

impl ReconcileHarness {
    /// A harness of `operator` reconciling with `reconciler`; call inside [`block_on`] (or any
    /// actix system).
    pub fn new(operator: &str, reconciler: impl Reconciler) -> Self {
        let reconciler: Arc<dyn DynReconciler> = Arc::new(reconciler);
        let metrics = ComponentMetrics::new(operator);
        let (events, published) = EventPublisher::channel(metrics.clone());
        let addr = ControllerActor::new(
            EntityStore::default(),
            Box::new(DefaultMessageHandler),
            reconciler.clone(),
            1,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            events.clone(),
            metrics.clone(),
        )
        .without_reconciling()
        .start();
        let controller = Controller::new(addr.clone(), events, Fence::unelected());
        Self {
            operator: operator.to_string(),
            reconciler,
            addr,
            controller,
            published,
            metrics,
            generations: HashMap::new(),
            retries: HashMap::new(),
        }
    }

    async fn command(
        &mut self,
        operation: Operation,
        resource_type: &str,
        key_text: &str,
        payload: Value,
    ) -> Entity {
        let key = key(key_text);
        let r = EntityRef::new(resource_type, key.clone());
        let generation = self.generations.entry(r.clone()).or_insert(0);
        *generation += 1;
        let envelope = Envelope::new(
            EnvelopeKind::Command,
            operation,
            &self.operator,
            resource_type,
            key,
            *generation,
            payload,
        );
        let (reply, applied) = oneshot::channel();
        self.addr.do_send(ApplyCommand {
            envelope,
            cause: tracing::Span::none(),
            reply,
        });
        match applied.await {
            Ok(Ok(applied)) => {
                let _ = applied.flush.wait().await;
            }
            other => panic!("command on {r} not applied: {other:?}"),
        }
        self.retries.remove(&r);
        self.entity(resource_type, key_text)
            .await
            .unwrap_or_else(|| panic!("{r} not stored"))
    }

    /// Creates or updates the entity `key` (`workspace/name`) of `resource_type` with `spec`,
    /// at the next generation, as a command from the orchestrator would.
    pub async fn apply(&mut self, resource_type: &str, key: &str, spec: Value) -> Entity {
        let operation = if self
            .generations
            .contains_key(&EntityRef::new(resource_type, self::key(key)))
        {
            Operation::Update
        } else {
            Operation::Create
        };
        self.command(operation, resource_type, key, json!({ "spec": spec }))
            .await
    }

    /// Deletes the entity: it is stored `deleting` at the next generation.
    pub async fn delete(&mut self, resource_type: &str, key: &str) -> Entity {
        self.command(Operation::Delete, resource_type, key, json!({}))
            .await
    }

    /// The stored entity.
    pub async fn entity(&self, resource_type: &str, key: &str) -> Option<Entity> {
        let entity = EntityRef::new(resource_type, self::key(key));
        self.addr.send(GetEntity { entity }).await.ok().flatten()
    }

    /// The stored status.
    pub async fn status(&self, resource_type: &str, key: &str) -> Option<EntityStatus> {
        let entity = EntityRef::new(resource_type, self::key(key));
        self.addr
            .send(GetEntityStatus { entity })
            .await
            .ok()
            .flatten()
    }

    /// Reconciles the stored entity once, as the controller would (with its last status and
    /// the count of failed reconciles in a row before), and says what the SDK made of it.
    pub async fn reconcile(&mut self, resource_type: &str, key: &str) -> Reconciled {
        let r = EntityRef::new(resource_type, self::key(key));
        let Some(entity) = self.entity(resource_type, key).await else {
            panic!("{r} is not stored: apply it first");
        };
        let request = ReconcileRequest {
            entity,
            status: self.status(resource_type, key).await,
        };
        let retries = self.retries.get(&r).copied().unwrap_or(0);
        let outcome = task::reconcile(ReconcileTask {
            reconciler: self.reconciler.clone(),
            controller: self.controller.clone(),
            request,
            retries,
            fence: Fence::unelected(),
            term: 0,
            cause: TraceContext::default(),
            metrics: self.metrics.clone(),
        })
        .await;
        let next = match &outcome {
            Outcome::Reconciled {
                requeue_after: None,
            } => Next::AwaitChange,
            Outcome::Reconciled {
                requeue_after: Some(after),
            } => Next::RequeueAfter(*after),
            Outcome::Failed { retry_after } => Next::Retry {
                retry_after: *retry_after,
            },
            Outcome::Settled => Next::WaitForNewSpec,
            Outcome::Deleted { .. } => Next::Deleted,
            Outcome::Fenced { reason } => Next::Fenced(reason.clone()),
        };
        if matches!(outcome, Outcome::Failed { .. }) {
            *self.retries.entry(r.clone()).or_insert(0) += 1;
        } else {
            self.retries.remove(&r);
        }
        if let Outcome::Deleted { .. } = outcome {
            // The controller removes a cleaned-up entity when told the reconcile finished.
            let _ = self
                .addr
                .send(ReconcileFinished {
                    entity: r.clone(),
                    outcome,
                    cause: TraceContext::default(),
                    epoch: 0,
                })
                .await;
        }
        let mut published = Vec::new();
        while let Ok(envelope) = self.published.try_recv() {
            match serde_json::from_value::<EntityStatus>(envelope.payload) {
                Ok(status) => published.push(status),
                Err(e) => panic!("a status event that is not a status: {e}"),
            }
        }
        Reconciled {
            next,
            status: self.status(resource_type, key).await,
            published,
        }
    }
}

impl Reconciled {
    /// True when the reconcile published a status `status`.
    pub fn published_status(&self, status: ResourceStatus) -> bool {
        self.published.iter().any(|s| s.status == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// Reports, fails or asks to come back as its spec says.
    struct Scripted;

    impl Reconciler for Scripted {
        fn id(&self) -> &str {
            "scripted"
        }

        async fn reconcile(
            &self,
            request: ReconcileRequest,
            ctx: ReconcileContext,
        ) -> Result<ReconcileResult, ReconcileError> {
            let spec = &request.entity.spec;
            if request.entity.deleting {
                return Ok(match spec["cleanupMs"].as_u64() {
                    Some(ms) if ctx.retries() == 0 && spec["stillCleaning"] == true => {
                        ReconcileResult::requeue(Duration::from_millis(ms))
                    }
                    _ => ReconcileResult::await_change(),
                });
            }
            match spec["fail"].as_str() {
                Some("throttled") => Err(ReconcileError::retryable_after(
                    "throttled",
                    Duration::from_secs(7),
                )),
                Some("refused") => {
                    let mut details = serde_json::Map::new();
                    details.insert("code".into(), json!("E42"));
                    Err(ReconcileError::terminal_with(
                        "SpecRefused",
                        "the platform refused the spec",
                        details,
                    ))
                }
                _ => {
                    ctx.update_status(request.new_status(ResourceStatus::Active))
                        .await?;
                    Ok(ReconcileResult::await_change())
                }
            }
        }
    }

    #[test]
    fn a_reconcile_publishes_what_the_reconciler_reported() {
        block_on(async {
            let mut h = ReconcileHarness::new("harness-a", Scripted);
            h.apply("thing", "public/a", json!({})).await;
            let run = h.reconcile("thing", "public/a").await;
            assert_eq!(run.next, Next::AwaitChange);
            assert_eq!(run.published.len(), 1);
            assert_eq!(run.status.map(|s| s.status), Some(ResourceStatus::Active));
        });
    }

    #[test]
    fn a_retry_after_is_kept_and_retries_are_counted() {
        block_on(async {
            let mut h = ReconcileHarness::new("harness-b", Scripted);
            h.apply("thing", "public/b", json!({"fail": "throttled"}))
                .await;
            let run = h.reconcile("thing", "public/b").await;
            assert_eq!(
                run.next,
                Next::Retry {
                    retry_after: Some(Duration::from_secs(7))
                }
            );
            assert!(run.published.is_empty());
        });
    }

    #[test]
    fn a_terminal_error_reports_its_reason_and_details() {
        block_on(async {
            let mut h = ReconcileHarness::new("harness-c", Scripted);
            h.apply("thing", "public/c", json!({"fail": "refused"}))
                .await;
            let run = h.reconcile("thing", "public/c").await;
            assert_eq!(run.next, Next::WaitForNewSpec);
            let status = run.last().expect("error status");
            assert_eq!(status.status, ResourceStatus::Error);
            assert_eq!(
                status.message.as_deref(),
                Some("the platform refused the spec")
            );
            assert_eq!(status.details["code"], json!("E42"));
            let synced = crate::condition::find(&status.conditions, crate::SYNCED).expect("Synced");
            assert_eq!(synced.reason, "SpecRefused");
            assert_eq!(synced.status, ConditionStatus::False);
        });
    }

    #[test]
    fn a_deletion_that_asks_to_come_back_is_not_finished_until_it_says_so() {
        block_on(async {
            let mut h = ReconcileHarness::new("harness-d", Scripted);
            h.apply(
                "thing",
                "public/d",
                json!({"cleanupMs": 250, "stillCleaning": true}),
            )
            .await;
            h.reconcile("thing", "public/d").await;
            h.delete("thing", "public/d").await;
            let run = h.reconcile("thing", "public/d").await;
            assert_eq!(run.next, Next::RequeueAfter(Duration::from_millis(250)));
            assert!(!run.published_status(ResourceStatus::Deleted));
            assert!(
                h.entity("thing", "public/d").await.is_some(),
                "still deleting"
            );
            // A new spec without stillCleaning: this time the clean-up is done.
            h.apply("thing", "public/d", json!({})).await;
            h.delete("thing", "public/d").await;
            let run = h.reconcile("thing", "public/d").await;
            assert_eq!(run.next, Next::Deleted);
            assert!(run.published_status(ResourceStatus::Deleted));
            assert!(h.entity("thing", "public/d").await.is_none(), "removed");
        });
    }
}
