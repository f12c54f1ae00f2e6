//! The runtime actor over the memory store, with an actor in place of the operator's
//! components: validation, routing to entities, statuses from the components, sleeping and
//! waking, restoring, shutting down.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use operator_contract::{EntityKey, ResourceStatus, RuntimeStatus};

use super::*;
use crate::actor_testing::{demo_operator, job, public, Components, WAIT};
use crate::history::HistoryWriter;
use crate::records::Outcome;
use crate::store::{Bucket, MemoryStore, RecordStore};

/// How many of the runtime's resources have an actor, and how many sleep.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
struct Census;

impl Handler<Census> for OperatorRuntime {
    type Result = MessageResult<Census>;

    fn handle(&mut self, _: Census, _ctx: &mut Self::Context) -> Self::Result {
        let asleep = self
            .entities
            .values()
            .filter(|slot| matches!(slot.state, SlotState::Asleep(_)))
            .count();
        MessageResult((self.entities.len() - asleep, asleep))
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    components: Arc<Components>,
    runtime: Addr<OperatorRuntime>,
}

impl Fixture {
    fn start(entity_idle: Duration) -> Self {
        let store = Arc::new(MemoryStore::new());
        let components = Components::new();
        let plan = OperatorPlan::compile(&demo_operator()).expect("the demo operator compiles");
        let runtime = OperatorRuntime::new(
            plan,
            store.clone(),
            components.transport(HistoryWriter::kept()),
            RuntimeTimings {
                query_timeout: Duration::from_secs(1),
                entity_idle,
            },
        )
        .start();
        Self {
            store,
            components,
            runtime,
        }
    }

    /// Entities that stay awake unless a test wants them asleep.
    fn awake() -> Self {
        Self::start(Duration::from_secs(3600))
    }

    async fn apply(&self, name: &str, spec: &str) -> Result<Applied, ControlError> {
        self.runtime
            .send(ApplyResource {
                manifest: job(name, spec),
                workspace: "public".into(),
                dry_run: false,
                applied_by: "tester".into(),
                span: tracing::Span::none(),
            })
            .await
            .expect("delivered")
    }

    async fn find(&self, name: &str, details: bool) -> Option<RecordView> {
        self.runtime
            .send(FindResource {
                key: public(name),
                details,
                span: tracing::Span::none(),
            })
            .await
            .expect("delivered")
    }

    async fn list(&self, workspace: Option<&str>) -> Vec<RecordView> {
        self.runtime
            .send(ListResources {
                workspace: workspace.map(str::to_string),
            })
            .await
            .expect("delivered")
            .into_iter()
            .filter_map(Listed::view)
            .collect()
    }

    async fn census(&self) -> (usize, usize) {
        self.runtime.send(Census).await.expect("delivered")
    }

    /// Waits until `(awake, asleep)` is `expected`: sleeping is the runtime's own decision,
    /// with no event to await, so it is asked until then.
    async fn wait_for_census(&self, expected: (usize, usize)) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = self.census().await;
        while last != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "(awake, asleep) is {last:?}, not {expected:?}, after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            last = self.census().await;
        }
    }

    /// Applies `name` and reports its command done, as its component would.
    async fn applied_and_done(&self, name: &str) {
        self.apply(name, "{}").await.expect("applied");
        let sent = self
            .components
            .commands
            .wait_until("the create is sent", |c| {
                c.iter().any(|c| c.key == public(name))
            })
            .await;
        let command = sent
            .iter()
            .find(|c| c.key == public(name))
            .expect("sent")
            .clone();
        self.components
            .report(
                &command,
                ResourceStatus::Active,
                Some(RuntimeStatus::Succeeded),
            )
            .await
            .expect("the status is stored");
    }
}

#[actix::test]
async fn a_spec_that_breaks_its_type_schema_is_refused_with_the_field_before_any_entity() {
    let fixture = Fixture::awake();
    let refused = fixture.apply("a", "{durationMs: soon}").await;
    let Err(ControlError::Invalid { details, .. }) = refused else {
        panic!("expected invalid, got {refused:?}");
    };
    assert!(
        details.iter().any(|d| d.contains("durationMs")),
        "the field is named: {details:?}"
    );
    assert!(fixture.store.records(Bucket::Resources).is_empty());
    assert!(fixture
        .runtime
        .send(ListKeys)
        .await
        .expect("delivered")
        .is_empty());
}

#[actix::test]
async fn a_dry_run_of_a_new_resource_starts_nothing_and_stores_nothing() {
    let fixture = Fixture::awake();
    let preview = fixture
        .runtime
        .send(ApplyResource {
            manifest: job("a", "{}"),
            workspace: "public".into(),
            dry_run: true,
            applied_by: "tester".into(),
            span: tracing::Span::none(),
        })
        .await
        .expect("delivered")
        .expect("a preview");
    assert_eq!(preview.outcome, Outcome::Created);
    assert_eq!(fixture.census().await, (0, 0));
    assert!(fixture.store.records(Bucket::Resources).is_empty());
}

#[actix::test]
async fn statuses_from_the_components_reach_the_resource_through_the_runtime() {
    let fixture = Fixture::awake();
    fixture.applied_and_done("a").await;
    let view = fixture.find("a", false).await.expect("found");
    assert_eq!(
        (view.status.as_str(), view.runtime.as_deref()),
        ("active", Some("succeeded"))
    );
    let list = fixture.list(Some("public")).await;
    assert_eq!(list.len(), 1);
    let elsewhere = fixture.list(Some("sandbox")).await;
    assert!(elsewhere.is_empty());
}

#[actix::test]
async fn a_settled_resource_sleeps_is_read_asleep_and_wakes_for_a_change() {
    let fixture = Fixture::start(Duration::from_millis(20));
    fixture.applied_and_done("a").await;
    fixture.wait_for_census((0, 1)).await;

    let view = fixture.find("a", false).await.expect("read asleep");
    assert_eq!(view.runtime.as_deref(), Some("succeeded"));
    let list = fixture.list(None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(fixture.census().await, (0, 1), "reading does not wake it");

    let updated = fixture
        .apply("a", "{durationMs: 7}")
        .await
        .expect("applied");
    assert_eq!((updated.outcome, updated.generation), (Outcome::Updated, 2));
    let sent = fixture
        .components
        .commands
        .wait_until("the update is sent", |c| c.len() == 2)
        .await;
    assert_eq!(sent[1].generation, 2, "woken with its record: generation 2");
    let (record, _) = fixture.store.records(Bucket::Resources)["public.a"].clone();
    assert_eq!(record.generation, 2);
}

#[actix::test]
async fn a_status_for_a_sleeping_resource_wakes_it_and_is_stored() {
    let fixture = Fixture::start(Duration::from_millis(20));
    fixture.applied_and_done("a").await;
    fixture.wait_for_census((0, 1)).await;
    let create = fixture.components.commands.all().remove(0);
    fixture
        .components
        .report(&create, ResourceStatus::Error, Some(RuntimeStatus::Failed))
        .await
        .expect("the status is stored");
    let (record, _) = fixture.store.records(Bucket::Resources)["public.a"].clone();
    assert_eq!(record.status.map(|s| s.status), Some(ResourceStatus::Error));
}

#[actix::test]
async fn restored_settled_records_sleep_and_an_unconfirmed_command_is_sent_again() {
    let fixture = Fixture::awake();
    // What a previous orchestrator left: one resource settled, one whose create may never
    // have reached the component.
    let done = fixture.store.clone();
    let settled = {
        let mut record = Record::new(job("done", "{}"), Some("public".into()));
        let mut status = operator_contract::EntityStatus::pending(public("done"), "demo", "job");
        status.observed_generation = 1;
        status.status = ResourceStatus::Active;
        record.status = Some(status);
        record
    };
    let mut pending = Record::new(job("pending", "{}"), Some("public".into()));
    pending.last_command = Some(operator_contract::Envelope::new(
        operator_contract::EnvelopeKind::Command,
        operator_contract::Operation::Create,
        "demo",
        "job",
        public("pending"),
        1,
        serde_json::json!({ "spec": {} }),
    ));
    done.create(Bucket::Resources, "public.done", &settled)
        .await
        .expect("stored");
    done.create(Bucket::Resources, "public.pending", &pending)
        .await
        .expect("stored");
    let resources = done.load_all(Bucket::Resources).await.expect("read back");
    fixture
        .runtime
        .send(RestoreResources { resources })
        .await
        .expect("delivered");
    assert_eq!(fixture.census().await, (1, 1));
    let resent = fixture
        .components
        .commands
        .wait_until("the unconfirmed create is sent again", |c| !c.is_empty())
        .await;
    assert_eq!(resent[0].key, public("pending"));
    assert_eq!(
        Some(resent[0].id),
        pending.last_command.map(|c| c.id),
        "the same envelope"
    );
    let keys: Vec<EntityKey> = fixture.runtime.send(ListKeys).await.expect("delivered");
    assert_eq!(keys, [public("done"), public("pending")]);
}

#[actix::test]
async fn a_delete_of_a_resource_it_does_not_have_is_not_its_business() {
    let fixture = Fixture::awake();
    let answer = fixture
        .runtime
        .send(DeleteResource {
            key: public("nobody"),
            span: tracing::Span::none(),
        })
        .await
        .expect("delivered");
    assert!(answer.is_none());
}

#[actix::test]
async fn a_deleted_resource_leaves_the_runtime() {
    let fixture = Fixture::awake();
    fixture.applied_and_done("a").await;
    let deleting = fixture
        .runtime
        .send(DeleteResource {
            key: public("a"),
            span: tracing::Span::none(),
        })
        .await
        .expect("delivered")
        .expect("it has it")
        .expect("deleting");
    assert_eq!(deleting.outcome, Outcome::Deleting);
    let sent = fixture
        .components
        .commands
        .wait_until("the delete is sent", |c| c.len() == 2)
        .await;
    fixture
        .components
        .report(&sent[1], ResourceStatus::Deleted, None)
        .await
        .expect("the status is applied");
    fixture.wait_for_census((0, 0)).await;
    assert!(fixture.find("a", false).await.is_none());
}

#[actix::test]
async fn shutdown_removes_the_operators_streams() {
    let fixture = Fixture::awake();
    fixture.runtime.send(Shutdown).await.expect("delivered");
    assert_eq!(fixture.components.removed_streams.all(), ["demo"]);
}
