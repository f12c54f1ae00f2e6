//! The entity actor over the memory store, with an actor in place of its components: what it
//! stores and when, the commands it sends and resends, statuses, deletion, and going to sleep.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use operator_contract::subject::TypeSubjects;
use operator_contract::{EntityKey, Envelope, Operation, ResourceStatus, RuntimeStatus};

use super::*;
use crate::actor_testing::{job, public, status_event, Components, Publishing, Recorded};
use crate::history::HistoryWriter;
use crate::store::{MemoryStore, RecordStore};

/// What an entity tells its runtime, recorded.
struct Runtime {
    gone: Arc<Recorded<EntityKey>>,
    sleep_offers: Arc<Recorded<EntityKey>>,
}

impl Actor for Runtime {
    type Context = Context<Self>;
}

impl Handler<EntityGone> for Runtime {
    type Result = ();
    fn handle(&mut self, msg: EntityGone, _ctx: &mut Self::Context) {
        self.gone.push(msg.key);
    }
}

impl Handler<MaySleep> for Runtime {
    type Result = ();
    fn handle(&mut self, msg: MaySleep, _ctx: &mut Self::Context) {
        self.sleep_offers.push(msg.key);
    }
}

/// One entity and everything around it.
struct Fixture {
    store: Arc<MemoryStore>,
    components: Arc<Components>,
    history: HistoryWriter,
    gone: Arc<Recorded<EntityKey>>,
    sleep_offers: Arc<Recorded<EntityKey>>,
    context: Arc<EntityContext>,
}

impl Fixture {
    fn new(idle_after: Duration) -> Self {
        let store = Arc::new(MemoryStore::new());
        let components = Components::new();
        let history = HistoryWriter::kept();
        let (gone, sleep_offers) = (Recorded::new(), Recorded::new());
        let runtime = Runtime {
            gone: gone.clone(),
            sleep_offers: sleep_offers.clone(),
        }
        .start();
        let context = Arc::new(EntityContext {
            operator: "demo".into(),
            subjects: TypeSubjects::defaults("demo", "job"),
            store: store.clone(),
            link: components.link(),
            runtime: runtime.clone().recipient(),
            sleep_requests: runtime.recipient(),
            idle_after,
            history: history.clone(),
        });
        Self {
            store,
            components,
            history,
            gone,
            sleep_offers,
            context,
        }
    }

    /// An entity that sleeps only when a test wants it to.
    fn awake() -> Self {
        Self::new(Duration::from_secs(3600))
    }

    fn start(&self, name: &str) -> Addr<ResourceEntity> {
        ResourceEntity::new(public(name), None, self.context.clone()).start()
    }

    fn stored(&self, name: &str) -> Option<(Record, u64)> {
        self.store
            .records(Bucket::Resources)
            .remove(&workspaced_key("public", name))
    }

    /// Stores job `name` with `spec` as another writer would have.
    async fn stored_before(&self, name: &str, spec: &str) {
        let record = Record::new(job(name, spec), Some("public".into()));
        self.store
            .create(Bucket::Resources, &workspaced_key("public", name), &record)
            .await
            .expect("stored");
    }

    fn reasons(&self) -> Vec<String> {
        self.history
            .events()
            .into_iter()
            .map(|(_, event)| event.reason)
            .collect()
    }

    /// An entity for job `name`, applied with an empty spec, and its create as sent.
    async fn created(&self, name: &str) -> (Addr<ResourceEntity>, Envelope) {
        let entity = self.start(name);
        entity
            .send(apply(job(name, "{}")))
            .await
            .expect("delivered")
            .expect("applied");
        let create = self.commands(1).await.remove(0);
        (entity, create)
    }

    /// The commands sent so far, once there are `count`.
    async fn commands(&self, count: usize) -> Vec<Envelope> {
        self.components
            .commands
            .wait_until(&format!("{count} commands sent"), |c| c.len() >= count)
            .await
    }
}

fn apply(manifest: operator_contract::Manifest) -> ApplySpec {
    ApplySpec {
        manifest,
        dry_run: false,
        applied_by: "tester".into(),
        span: Span::none(),
    }
}

/// Applies job `a` with `spec`, which must succeed.
async fn applied(entity: &Addr<ResourceEntity>, spec: &str) -> Applied {
    entity
        .send(apply(job("a", spec)))
        .await
        .expect("delivered")
        .expect("applied")
}

async fn report(
    entity: &Addr<ResourceEntity>,
    command: &Envelope,
    status: ResourceStatus,
    runtime: Option<RuntimeStatus>,
) {
    entity
        .send(status_event(command, status, runtime))
        .await
        .expect("delivered")
        .expect("the status is stored");
}

#[actix::test]
async fn an_apply_is_stored_before_its_answer_and_its_command_follows() {
    let fixture = Fixture::awake();
    let entity = fixture.start("a");
    let applied = applied(&entity, "{durationMs: 5}").await;
    assert_eq!((applied.outcome, applied.generation), (Outcome::Created, 1));
    let (record, _) = fixture.stored("a").expect("stored when the apply answered");
    let stored_command = record.last_command.expect("the record holds its command");
    assert_eq!(stored_command.operation, Operation::Create);

    let commands = fixture.commands(1).await;
    assert_eq!(
        commands[0].id, stored_command.id,
        "the stored command is sent"
    );
    assert_eq!(commands[0].generation, 1);
    assert_eq!(
        fixture.reasons().first().map(String::as_str),
        Some("Applied"),
        "the apply is in the history before its command's sending"
    );
}

#[actix::test]
async fn the_same_manifest_again_is_unchanged_and_sends_nothing() {
    let fixture = Fixture::awake();
    let entity = fixture.start("a");
    applied(&entity, "{durationMs: 5}").await;
    let writes = fixture.store.writes();
    let again = applied(&entity, "{durationMs: 5}").await;
    assert_eq!((again.outcome, again.generation), (Outcome::Unchanged, 1));
    assert_eq!(fixture.store.writes(), writes, "nothing written");
    let changed = applied(&entity, "{durationMs: 6}").await;
    assert_eq!((changed.outcome, changed.generation), (Outcome::Updated, 2));
    let commands = fixture.commands(2).await;
    assert_eq!(
        commands
            .iter()
            .map(|c| (c.operation, c.generation))
            .collect::<Vec<_>>(),
        [(Operation::Create, 1), (Operation::Update, 2)]
    );
}

#[actix::test]
async fn a_command_jetstream_refused_is_sent_again_with_the_same_id() {
    let fixture = Fixture::awake();
    fixture.components.set_publishing(Publishing::Refuse);
    let entity = fixture.start("a");
    entity
        .send(apply(job("a", "{}")))
        .await
        .expect("delivered")
        .expect("applied: the record is stored, the command follows when it can");
    assert!(fixture.components.commands.all().is_empty());
    fixture.components.set_publishing(Publishing::Accept);
    let commands = fixture.commands(1).await;
    let (record, _) = fixture.stored("a").expect("stored");
    assert_eq!(
        Some(commands[0].id),
        record.last_command.map(|c| c.id),
        "the resend is the same envelope, so JetStream can drop a duplicate"
    );
}

#[actix::test]
async fn a_status_is_stored_and_a_confirmed_command_is_not_kept() {
    let fixture = Fixture::awake();
    let (entity, command) = fixture.created("a").await;
    report(
        &entity,
        &command,
        ResourceStatus::Active,
        Some(RuntimeStatus::InProgress),
    )
    .await;
    let (record, _) = fixture.stored("a").expect("stored");
    let status = record.status.expect("the status is stored");
    assert_eq!(
        (status.status, status.runtime),
        (ResourceStatus::Active, Some(RuntimeStatus::InProgress))
    );
    assert_eq!(record.last_command, None, "confirmed, so not kept");
}

#[actix::test]
async fn a_status_older_than_the_one_held_changes_nothing() {
    let fixture = Fixture::awake();
    let (entity, command) = fixture.created("a").await;
    let older = status_event(
        &command,
        ResourceStatus::Active,
        Some(RuntimeStatus::InProgress),
    );
    report(
        &entity,
        &command,
        ResourceStatus::Active,
        Some(RuntimeStatus::Succeeded),
    )
    .await;
    let writes = fixture.store.writes();
    entity
        .send(older)
        .await
        .expect("delivered")
        .expect("a stale status is not an error");
    assert_eq!(fixture.store.writes(), writes, "nothing written");
    let (record, _) = fixture.stored("a").expect("stored");
    assert_eq!(
        record.status.and_then(|s| s.runtime),
        Some(RuntimeStatus::Succeeded)
    );
}

#[actix::test]
async fn a_new_resource_whose_first_write_fails_is_gone_and_the_error_is_answered() {
    let fixture = Fixture::awake();
    fixture.store.set_unavailable(Some("no responders"));
    let entity = fixture.start("a");
    let refused = entity.send(apply(job("a", "{}"))).await.expect("delivered");
    let error = refused.expect_err("nothing was stored");
    assert!(error.to_string().contains("no responders"), "{error}");
    fixture
        .gone
        .wait_until("the entity tells its runtime it is gone", |g| {
            g == [public("a")]
        })
        .await;
    assert!(fixture.components.commands.all().is_empty());
}

#[actix::test]
async fn a_create_whose_acknowledgement_was_lost_is_adopted_and_another_resource_is_not() {
    let fixture = Fixture::awake();
    // Stored by an earlier attempt whose answer never came.
    fixture.stored_before("a", "{}").await;
    let adopted = fixture
        .start("a")
        .send(apply(job("a", "{}")))
        .await
        .expect("delivered")
        .expect("the record there holds the same manifest: adopted");
    assert_eq!(adopted.generation, 1);

    fixture.stored_before("b", "{durationMs: 1}").await;
    let refused = fixture
        .start("b")
        .send(apply(job("b", "{durationMs: 2}")))
        .await
        .expect("delivered");
    assert!(
        matches!(refused, Err(ControlError::Conflict { .. })),
        "{refused:?}"
    );
}

#[actix::test]
async fn a_delete_sends_its_command_and_the_deleted_status_removes_the_record() {
    let fixture = Fixture::awake();
    let entity = fixture.start("a");
    applied(&entity, "{}").await;
    let deleting = entity
        .send(RequestDelete { span: Span::none() })
        .await
        .expect("delivered")
        .expect("deleting");
    assert_eq!(
        (deleting.outcome, deleting.generation),
        (Outcome::Deleting, 2)
    );
    let refused = entity.send(apply(job("a", "{}"))).await.expect("delivered");
    assert!(
        matches!(refused, Err(ControlError::Conflict { .. })),
        "an apply while deleting: {refused:?}"
    );
    let delete = fixture.commands(2).await.remove(1);
    assert_eq!(
        (delete.operation, delete.generation),
        (Operation::Delete, 2)
    );
    report(&entity, &delete, ResourceStatus::Deleted, None).await;
    assert!(fixture.stored("a").is_none(), "the record is removed");
    fixture
        .gone
        .wait_until("the entity tells its runtime it is gone", |g| {
            g == [public("a")]
        })
        .await;
    assert!(fixture.reasons().ends_with(&[
        "DeleteRequested".to_string(),
        "CommandSent".to_string(),
        "Deleted".to_string()
    ]));
}

#[actix::test]
async fn details_are_asked_of_the_components_only_when_wanted() {
    let fixture = Fixture::awake();
    let entity = fixture.start("a");
    applied(&entity, "{}").await;
    let plain = entity
        .send(GetView {
            details: false,
            span: Span::none(),
        })
        .await
        .expect("delivered")
        .expect("a view");
    assert_eq!(plain.details, None);
    assert!(fixture.components.queries.all().is_empty());
    let detailed = entity
        .send(GetView {
            details: true,
            span: Span::none(),
        })
        .await
        .expect("delivered")
        .expect("a view");
    assert_eq!(
        detailed.details,
        Some(serde_json::json!({ "answeredFor": "public/a" }))
    );
}

#[actix::test]
async fn a_settled_quiet_entity_offers_to_sleep_and_leaves_its_record_as_stored() {
    let fixture = Fixture::new(Duration::from_millis(20));
    let (entity, command) = fixture.created("a").await;
    let unsettled = entity.send(Passivate).await.expect("delivered");
    assert!(
        unsettled.is_none(),
        "its command is not confirmed: it stays awake"
    );
    report(
        &entity,
        &command,
        ResourceStatus::Active,
        Some(RuntimeStatus::Succeeded),
    )
    .await;
    fixture
        .sleep_offers
        .wait_until("the settled entity offers to sleep", |offers| {
            offers.contains(&public("a"))
        })
        .await;
    let sleeping = entity
        .send(Passivate)
        .await
        .expect("delivered")
        .expect("settled: it gives its record");
    let (stored, revision) = fixture.stored("a").expect("stored");
    let kept: Record = serde_json::from_slice(&sleeping.record).expect("a record");
    assert_eq!(sleeping.revision, revision);
    assert_eq!(kept.status, stored.status);
    entity.send(Sleep).await.expect("delivered");
    assert!(fixture.gone.all().is_empty(), "sleeping is not gone");
}
