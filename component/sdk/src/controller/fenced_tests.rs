//! The controller over the `jetstream_kv` store on a real nats-server, fenced as a leader whose
//! fence another leader has overwritten: no command may be acknowledged on the strength of a
//! write JetStream refused.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use operator_contract::{Envelope, Operation};
use operator_nats_cluster::test_server::TestNatsServer;
use tokio::sync::oneshot;

use super::messages::ApplyCommand;
use super::tests::{command, drained, start_with_store, Probe, Step, TEST_OPERATOR};
use super::ControllerActor;
use crate::election::{Fence, FenceState};
use crate::handler::CommandOutcome;
use crate::prelude::*;
use crate::store::{write_fence, EntityStore, KvStore, WriteFence};

async fn send(addr: &Addr<ControllerActor>, generation: u64) -> (CommandOutcome, bool) {
    let (reply, applied) = oneshot::channel();
    addr.do_send(ApplyCommand {
        envelope: command(Operation::Create, "after-0", generation),
        cause: tracing::Span::none(),
        reply,
    });
    let applied = applied.await.expect("answered").expect("handled");
    let durable = applied.flush.wait().await.is_ok();
    (applied.outcome, durable)
}

/// What a leading store's test keeps alive: the lease's sender and the store's events.
type Held = (
    tokio::sync::watch::Sender<FenceState>,
    Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::StoreEvent>>,
);

/// The store of a leader of term 5 on `nats`: its fence written, its copy caught up.
async fn leading_store(nats: &TestNatsServer, bucket: &str) -> (KvStore, Held) {
    let client = async_nats::connect(nats.url()).await.expect("connected");
    let js = async_nats::jetstream::new(client);
    let (state, fence) = Fence::channel();
    state
        .send(FenceState::Leading {
            term: 5,
            valid_until: tokio::time::Instant::now() + Duration::from_secs(300),
        })
        .expect("fence published");
    let (mut store, events) = KvStore::open(&js, bucket, 1, fence)
        .await
        .expect("store opened");
    let sequence = write_fence(&store.kv(), 5, "r0")
        .await
        .expect("fence written");
    store.lead(WriteFence { term: 5, sequence });
    (store, (state, events))
}

/// A controller with one worker over `store`, reconciling with `probe`, and where its status
/// events arrive (kept for as long as the test runs).
fn start_leading(
    store: KvStore,
    probe: &Arc<Probe>,
) -> (
    Addr<ControllerActor>,
    tokio::sync::mpsc::UnboundedReceiver<Envelope>,
) {
    start_with_store(
        TEST_OPERATOR,
        EntityStore::JetStreamKv(Box::new(store)),
        probe,
        1,
        None,
    )
}

#[actix::test]
async fn a_command_redelivered_after_its_write_was_refused_is_not_acknowledged_as_stale() {
    let nats = TestNatsServer::start();
    let (store, _held) = leading_store(&nats, "entities-fenced").await;

    // Another leader fences the bucket behind its back.
    write_fence(&store.kv(), 6, "intruder")
        .await
        .expect("newer fence written");

    let probe = Probe::new(Duration::ZERO, |_, _, _| {
        Step::Report(Action::await_change())
    });
    let (addr, _events) = start_leading(store, &probe);
    let (outcome, durable) = send(&addr, 1).await;
    assert_eq!(outcome, CommandOutcome::Applied);
    assert!(!durable, "the write of a deposed leader was refused");

    // JetStream redelivers the NAKed command at once; the copy still holds the refused write,
    // so it looks stale, but acknowledging it would lose it for the next leader.
    let (outcome, durable) = send(&addr, 1).await;
    assert!(
        matches!(outcome, CommandOutcome::Stale { .. }),
        "{outcome:?}"
    );
    assert!(
        !durable,
        "a stale verdict against a refused write must not be acknowledged"
    );
    drained(&addr).await;
    assert_eq!(
        probe.calls(),
        [],
        "nothing is reconciled, so nothing is done on the platform, on a write that was refused"
    );
}

#[actix::test]
async fn a_requeue_that_comes_due_while_a_delete_is_not_durable_does_not_reconcile_it() {
    let nats = TestNatsServer::start();
    let (store, _held) = leading_store(&nats, "entities-polled").await;

    // A running job, polled every 20 ms.
    let probe = Probe::new(Duration::ZERO, |_, _, _| {
        Step::Report(Action::requeue(Duration::from_millis(20)))
    });
    let (addr, _events) = start_leading(store, &probe);
    let (outcome, durable) = send(&addr, 1).await;
    assert_eq!(outcome, CommandOutcome::Applied);
    assert!(durable);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while probe.calls().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // NATS goes away: the delete's write is retried and stays pending, with the copy saying
    // `deleting`. Acting on it (the job deleted on the platform) would be undone by the next
    // leader, who never saw the delete and starts the job again.
    drop(nats);
    let (reply, applied) = oneshot::channel();
    addr.do_send(ApplyCommand {
        envelope: command(Operation::Delete, "after-0", 2),
        cause: tracing::Span::none(),
        reply,
    });
    let applied = applied.await.expect("answered").expect("handled");
    assert_eq!(applied.outcome, CommandOutcome::Applied);
    // A window of ten polling periods: none may reconcile the delete.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deleting: Vec<_> = probe.calls().into_iter().filter(|c| c.2).collect();
    assert_eq!(
        deleting,
        [],
        "a delete reconciled before its write was durable"
    );
}
