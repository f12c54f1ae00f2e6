//! The manager actor over the memory store, its runtimes linked to an actor in place of the
//! operators' components, and a real nats-server for the streams it creates: operators and
//! secrets, routing resources, what may be deleted when, and the tree rebuilt from the store.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream;
use operator_contract::{EntityKey, ManifestKind, ResourceStatus, RuntimeStatus};
use operator_nats_cluster::test_server::TestNatsServer;

use super::*;
use crate::actor_testing::{demo_operator, job, manifest, public, Components};
use crate::history::HistoryWriter;
use crate::store::MemoryStore;

struct Fixture {
    nats: TestNatsServer,
    store: Arc<MemoryStore>,
    components: Arc<Components>,
    manager: Addr<OperatorManager>,
}

impl Fixture {
    async fn start() -> Self {
        let nats = TestNatsServer::start();
        let store = Arc::new(MemoryStore::new());
        let components = Components::new();
        let manager = Self::manager(&nats, &store, &components).await;
        Self {
            nats,
            store,
            components,
            manager,
        }
    }

    /// A manager over `store`, as an orchestrator starting on it would be.
    async fn manager(
        nats: &TestNatsServer,
        store: &Arc<MemoryStore>,
        components: &Arc<Components>,
    ) -> Addr<OperatorManager> {
        let client = async_nats::connect(nats.url()).await.expect("connected");
        OperatorManager::load(
            store.clone(),
            jetstream::new(client),
            components.transport(HistoryWriter::kept()),
            RuntimeTimings {
                query_timeout: Duration::from_secs(1),
                entity_idle: Duration::from_secs(3600),
            },
        )
        .await
        .expect("the store reads")
        .start()
    }

    /// The manager's answer to `message`.
    async fn ask<M>(&self, message: M) -> M::Result
    where
        M: Message + Send + 'static,
        M::Result: Send,
        OperatorManager: Handler<M>,
    {
        self.manager.send(message).await.expect("delivered")
    }

    async fn apply_operator(&self, manifest: Manifest) -> Result<Applied, ControlError> {
        self.ask(ApplyOperator {
            manifest,
            dry_run: false,
        })
        .await
    }

    async fn apply_job(&self, name: &str) -> Result<Applied, ControlError> {
        self.ask(RouteResource {
            manifest: job(name, "{}"),
            workspace: "public".into(),
            dry_run: false,
            applied_by: "tester".into(),
            span: tracing::Span::none(),
            pending_operator: None,
        })
        .await
    }

    async fn get_resource(&self, name: &str) -> Result<RecordView, ControlError> {
        self.ask(GetRecord {
            kind: ManifestKind::Resource,
            workspace: Some("public".into()),
            name: name.into(),
            details: false,
            span: tracing::Span::none(),
        })
        .await
    }

    /// Reports what the component would after the `index`-th command.
    async fn report(&self, index: usize, status: ResourceStatus, runtime: Option<RuntimeStatus>) {
        let commands = self
            .components
            .commands
            .wait_until("the command is sent", |c| c.len() > index)
            .await;
        self.components
            .report(&commands[index], status, runtime)
            .await
            .expect("the status is stored");
    }
}

/// The demo operator with its component reading `secret` from the `user-system` workspace.
fn demo_operator_using(secret: &str) -> Manifest {
    let text = include_str!("../../../deploy/examples/demo-operator.yaml").replace(
        "      replicas: 1\n",
        &format!(
            "      replicas: 1\n      secrets:\n        - name: {secret}\n          workspace: user-system\n          keys: [TOKEN]\n"
        ),
    );
    manifest(&text)
}

fn secret(name: &str, key: &str) -> Manifest {
    manifest(&format!(
        "name: {name}\nversion: v1\ntype: secret\nsecret: {{type: key-value-properties, acl: r, data: {{{key}: s3cr3t}}}}\n"
    ))
}

#[actix::test]
async fn a_resource_is_routed_to_its_operators_runtime_once_the_operator_is_applied() {
    let fixture = Fixture::start().await;
    let refused = fixture.apply_job("a").await;
    assert!(
        matches!(&refused, Err(ControlError::Invalid { reason, .. }) if reason.contains("'demo' is not applied")),
        "{refused:?}"
    );
    let applied = fixture
        .apply_operator(demo_operator())
        .await
        .expect("applied");
    assert_eq!(applied.outcome, Outcome::Created);
    assert!(fixture
        .store
        .records(Bucket::Operators)
        .contains_key("demo"));

    fixture.apply_job("a").await.expect("routed and applied");
    fixture
        .report(0, ResourceStatus::Active, Some(RuntimeStatus::InProgress))
        .await;
    let view = fixture.get_resource("a").await.expect("found");
    assert_eq!(view.runtime.as_deref(), Some("inprogress"));
    let listed = fixture
        .ask(ListRecords {
            kind: ManifestKind::Resource,
            workspace: None,
        })
        .await;
    assert_eq!(listed.len(), 1);

    // The operator's streams are made in NATS when it is applied.
    let js = jetstream::new(
        async_nats::connect(fixture.nats.url())
            .await
            .expect("connected"),
    );
    let events = operator_contract::subject::event_stream("demo");
    assert!(js.get_stream(&events).await.is_ok(), "stream {events}");
}

#[actix::test]
async fn an_operator_naming_a_missing_secret_is_refused_and_a_used_secret_cannot_be_deleted() {
    let fixture = Fixture::start().await;
    let refused = fixture
        .apply_operator(demo_operator_using("demo-token"))
        .await;
    let Err(ControlError::Invalid { details, .. }) = &refused else {
        panic!("expected invalid, got {refused:?}");
    };
    assert_eq!(
        details,
        &["operator.components[0].secrets[0]: secret user-system/demo-token does not exist; apply it first"]
    );
    assert!(fixture.store.records(Bucket::Operators).is_empty());

    let apply_secret = |manifest| ApplySecret {
        manifest,
        workspace: "user-system".into(),
        dry_run: false,
    };
    fixture
        .manager
        .send(apply_secret(secret("demo-token", "OTHER")))
        .await
        .expect("delivered")
        .expect("applied");
    let refused = fixture
        .apply_operator(demo_operator_using("demo-token"))
        .await;
    assert!(
        matches!(&refused, Err(ControlError::Invalid { details, .. }) if details[0].ends_with("has no key TOKEN")),
        "{refused:?}"
    );
    fixture
        .manager
        .send(apply_secret(secret("demo-token", "TOKEN")))
        .await
        .expect("delivered")
        .expect("updated");
    fixture
        .apply_operator(demo_operator_using("demo-token"))
        .await
        .expect("its secret is there now");

    let delete_secret = || DeleteSecret {
        workspace: "user-system".into(),
        name: "demo-token".into(),
    };
    let refused = fixture.ask(delete_secret()).await;
    assert!(
        matches!(&refused, Err(ControlError::Conflict { details, .. }) if details == &["operator demo"]),
        "{refused:?}"
    );
    fixture
        .ask(DeleteOperator {
            name: "demo".into(),
        })
        .await
        .expect("no resources: deleted");
    fixture
        .ask(delete_secret())
        .await
        .expect("no longer used: deleted");
    assert!(fixture.store.records(Bucket::Secrets).is_empty());
}

#[actix::test]
async fn an_operator_is_deleted_only_once_its_resources_are_gone() {
    let fixture = Fixture::start().await;
    fixture
        .apply_operator(demo_operator())
        .await
        .expect("applied");
    fixture.apply_job("a").await.expect("applied");
    let delete_operator = || DeleteOperator {
        name: "demo".into(),
    };
    let refused = fixture.ask(delete_operator()).await;
    assert!(
        matches!(&refused, Err(ControlError::Conflict { details, .. }) if details == &["resource public/a"]),
        "{refused:?}"
    );
    fixture
        .ask(DeleteResourceByKey {
            key: public("a"),
            span: tracing::Span::none(),
        })
        .await
        .expect("deleting");
    fixture.report(1, ResourceStatus::Deleted, None).await;
    assert!(matches!(
        fixture.get_resource("a").await,
        Err(ControlError::NotFound(_))
    ));
    fixture.ask(delete_operator()).await.expect("deleted");
    assert!(fixture.store.records(Bucket::Operators).is_empty());
    assert_eq!(fixture.components.removed_streams.all(), ["demo"]);
}

#[actix::test]
async fn a_new_manager_rebuilds_operators_and_resources_from_the_store() {
    let fixture = Fixture::start().await;
    fixture
        .apply_operator(demo_operator())
        .await
        .expect("applied");
    fixture.apply_job("a").await.expect("applied");
    fixture.apply_job("b").await.expect("applied");
    fixture
        .report(0, ResourceStatus::Active, Some(RuntimeStatus::Succeeded))
        .await;

    // The next orchestrator reads the same store; its components are the same ones.
    let components = Components::new();
    let manager = Fixture::manager(&fixture.nats, &fixture.store, &components).await;
    let keys: Vec<EntityKey> = {
        let listed = manager
            .send(ListRecords {
                kind: ManifestKind::Resource,
                workspace: Some("public".into()),
            })
            .await
            .expect("delivered");
        let mut keys: Vec<EntityKey> = listed.iter().map(|v| public(&v.name)).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys, [public("a"), public("b")]);
    let operators = manager
        .send(ListRecords {
            kind: ManifestKind::Operator,
            workspace: None,
        })
        .await
        .expect("delivered");
    assert_eq!(operators.len(), 1);
    // `b`'s create was never confirmed: the new runtime sends it again, `a`'s it does not.
    let resent = components
        .commands
        .wait_until("b's create is sent again", |c| !c.is_empty())
        .await;
    assert_eq!(
        resent.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
        [public("b")]
    );
}
