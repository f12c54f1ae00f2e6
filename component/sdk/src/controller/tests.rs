//! The controller actor with a probing reconciler, the memory store and a channel in place of
//! NATS: commands, scheduling, the error policy, deletion and draining.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use operator_contract::{EnvelopeKind, Operation, RuntimeStatus};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::messages::{AnswerQuery, ApplyCommand, Drain, GetEntity};
use super::ControllerActor;
use crate::backoff::Backoff;
use crate::events::EventPublisher;
use crate::handler::{CommandOutcome, DefaultMessageHandler};
use crate::metrics::ComponentMetrics;
use crate::prelude::*;
use crate::store::{EntityRef, EntityStore};
use crate::Envelope;

/// The operator label of these tests' metrics.
pub(super) const TEST_OPERATOR: &str = "demo";

/// What the probe does on one call.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Report(Action),
    Retry,
    Terminal,
}

type Script = dyn Fn(&ReconcileRequest, u32, usize) -> Step + Send + Sync;

/// A reconciler that records what it sees and follows a script.
pub(super) struct Probe {
    delay: Duration,
    script: Box<Script>,
    calls: Mutex<Vec<(EntityRef, u64, bool, u32)>>,
    running: Mutex<HashMap<EntityRef, usize>>,
    overlaps: AtomicUsize,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
}

impl Probe {
    pub(super) fn new(
        delay: Duration,
        script: impl Fn(&ReconcileRequest, u32, usize) -> Step + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            delay,
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            running: Mutex::new(HashMap::new()),
            overlaps: AtomicUsize::new(0),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
        })
    }

    pub(super) fn calls(&self) -> Vec<(EntityRef, u64, bool, u32)> {
        self.calls.lock().expect("lock").clone()
    }
}

struct ProbeReconciler(Arc<Probe>);

impl Reconciler for ProbeReconciler {
    fn id(&self) -> &str {
        "probe"
    }

    async fn reconcile(
        &self,
        request: ReconcileRequest,
        ctx: ReconcileContext,
    ) -> Result<ReconcileResult, ReconcileError> {
        let probe = &self.0;
        let r = EntityRef::of_entity(&request.entity);
        let call = {
            let mut calls = probe.calls.lock().expect("lock");
            calls.push((
                r.clone(),
                request.entity.generation,
                request.entity.deleting,
                ctx.retries(),
            ));
            calls.len()
        };
        {
            let mut running = probe.running.lock().expect("lock");
            let n = running.entry(r.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                probe.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        let now = probe.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_concurrent.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(probe.delay).await;
        probe.concurrent.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = probe.running.lock().expect("lock").get_mut(&r) {
            *n -= 1;
        }
        match (probe.script)(&request, ctx.retries(), call) {
            Step::Report(action) => {
                if !request.entity.deleting {
                    let status = request
                        .new_runtime_status(ResourceStatus::Active, RuntimeStatus::Succeeded);
                    ctx.update_status(status).await?;
                }
                Ok(action.into())
            }
            Step::Retry => Err(ReconcileError::retryable("platform unavailable")),
            Step::Terminal => Err(ReconcileError::terminal("spec refused")),
        }
    }
}

fn start(
    probe: &Arc<Probe>,
    workers: usize,
) -> (Addr<ControllerActor>, mpsc::UnboundedReceiver<Envelope>) {
    start_with_resync(probe, workers, None)
}

fn start_with_resync(
    probe: &Arc<Probe>,
    workers: usize,
    resync: Option<Duration>,
) -> (Addr<ControllerActor>, mpsc::UnboundedReceiver<Envelope>) {
    start_for(TEST_OPERATOR, probe, workers, resync)
}

/// A controller of `operator`: the label of its metrics, which every test shares otherwise.
fn start_for(
    operator: &str,
    probe: &Arc<Probe>,
    workers: usize,
    resync: Option<Duration>,
) -> (Addr<ControllerActor>, mpsc::UnboundedReceiver<Envelope>) {
    start_with_store(operator, EntityStore::default(), probe, workers, resync)
}

/// A controller of `operator` over a store that already holds entities.
pub(super) fn start_with_store(
    operator: &str,
    store: EntityStore,
    probe: &Arc<Probe>,
    workers: usize,
    resync: Option<Duration>,
) -> (Addr<ControllerActor>, mpsc::UnboundedReceiver<Envelope>) {
    let metrics = ComponentMetrics::new(operator);
    let (events, received) = EventPublisher::channel(metrics.clone());
    let addr = ControllerActor::new(
        store,
        Box::new(DefaultMessageHandler),
        Arc::new(ProbeReconciler(probe.clone())),
        workers,
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        events,
        metrics,
    )
    .with_resync(resync)
    .start();
    (addr, received)
}

pub(super) fn command(operation: Operation, name: &str, generation: u64) -> Envelope {
    let payload = if operation == Operation::Delete {
        json!({})
    } else {
        json!({"spec": {"generation": generation}})
    };
    Envelope::new(
        EnvelopeKind::Command,
        operation,
        "demo",
        "job",
        EntityKey::new("public", name).expect("valid"),
        generation,
        payload,
    )
}

fn r(name: &str) -> EntityRef {
    EntityRef::new("job", EntityKey::new("public", name).expect("valid"))
}

async fn apply(addr: &Addr<ControllerActor>, envelope: Envelope) -> CommandOutcome {
    let (reply, applied) = oneshot::channel();
    addr.do_send(ApplyCommand {
        envelope,
        cause: tracing::Span::none(),
        reply,
    });
    let applied = applied.await.expect("answered").expect("handled");
    applied.flush.wait().await.expect("durable");
    applied.outcome
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Envelope>) -> EntityStatus {
    let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("an event in time")
        .expect("publisher alive");
    assert_eq!(
        (event.kind, event.operation),
        (EnvelopeKind::Event, Operation::Status)
    );
    serde_json::from_value(event.payload).expect("a status")
}

pub(super) async fn drained(addr: &Addr<ControllerActor>) {
    let (done, drained) = oneshot::channel();
    addr.do_send(Drain { done });
    let flush = drained.await.expect("drained");
    flush.wait().await.expect("flushed");
}

fn done() -> Step {
    Step::Report(Action::await_change())
}

#[actix::test]
async fn a_command_is_stored_reconciled_and_its_status_published_and_queryable() {
    let probe = Probe::new(Duration::ZERO, |_, _, _| done());
    let (addr, mut events) = start(&probe, 4);
    let create = command(Operation::Create, "run-1", 1);
    assert_eq!(apply(&addr, create.clone()).await, CommandOutcome::Applied);
    let status = next_event(&mut events).await;
    assert_eq!(status.status, ResourceStatus::Active);
    assert_eq!(status.runtime, Some(RuntimeStatus::Succeeded));
    assert_eq!(status.observed_generation, 1);

    let mut query = command(Operation::Get, "run-1", 0);
    query.kind = EnvelopeKind::Query;
    let reply = addr
        .send(AnswerQuery { envelope: query })
        .await
        .expect("alive")
        .expect("answered");
    assert_eq!(reply.payload["entity"]["generation"], json!(1));
    assert_eq!(reply.payload["status"]["runtime"], json!("succeeded"));
    assert_eq!(
        apply(&addr, create).await,
        CommandOutcome::Stale {
            stored_generation: 1
        },
        "a redelivery is ignored"
    );
    drained(&addr).await;
    assert_eq!(probe.calls().len(), 1);
}

#[actix::test]
async fn changes_during_a_reconcile_run_after_it_never_alongside() {
    tokio::time::pause();
    let probe = Probe::new(Duration::from_millis(50), |_, _, _| done());
    let (addr, _events) = start(&probe, 8);
    for generation in 1..=5 {
        apply(&addr, command(Operation::Update, "run-1", generation)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    drained(&addr).await;
    let calls = probe.calls();
    assert_eq!(
        probe.overlaps.load(Ordering::SeqCst),
        0,
        "no overlapping reconciles"
    );
    assert!(calls.len() >= 2 && calls.len() <= 5, "{calls:?}");
    assert_eq!(
        calls.last().map(|c| c.1),
        Some(5),
        "the last spec is reconciled"
    );
}

#[actix::test]
async fn no_more_than_max_workers_reconciles_run_at_once() {
    tokio::time::pause();
    let probe = Probe::new(Duration::from_millis(30), |_, _, _| done());
    let (addr, _events) = start(&probe, 3);
    for i in 0..12 {
        apply(&addr, command(Operation::Create, &format!("run-{i}"), 1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    drained(&addr).await;
    assert_eq!(probe.calls().len(), 12);
    assert_eq!(probe.max_concurrent.load(Ordering::SeqCst), 3);
}

#[actix::test]
async fn retryable_errors_are_retried_with_backoff_until_success() {
    tokio::time::pause();
    let probe = Probe::new(Duration::ZERO, |_, retries, _| {
        if retries < 3 {
            Step::Retry
        } else {
            done()
        }
    });
    let (addr, mut events) = start(&probe, 4);
    let began = tokio::time::Instant::now();
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    let status = next_event(&mut events).await;
    assert_eq!(status.status, ResourceStatus::Active);
    let retries: Vec<u32> = probe.calls().iter().map(|c| c.3).collect();
    assert_eq!(retries, vec![0, 1, 2, 3]);
    // 100 ms, 200 ms, 400 ms windows: at least half of each.
    assert!(
        began.elapsed() >= Duration::from_millis(350),
        "{:?}",
        began.elapsed()
    );
    drained(&addr).await;
}

#[actix::test]
async fn a_terminal_error_reports_status_error_and_waits_for_a_new_spec() {
    tokio::time::pause();
    let probe = Probe::new(Duration::ZERO, |request, _, _| {
        if request.entity.generation == 1 {
            Step::Terminal
        } else {
            done()
        }
    });
    let (addr, mut events) = start(&probe, 4);
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    let status = next_event(&mut events).await;
    assert_eq!(status.status, ResourceStatus::Error);
    assert_eq!(status.message.as_deref(), Some("spec refused"));
    assert_eq!(status.observed_generation, 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(probe.calls().len(), 1, "not retried");

    apply(&addr, command(Operation::Update, "run-1", 2)).await;
    let status = next_event(&mut events).await;
    assert_eq!(status.status, ResourceStatus::Active);
    assert_eq!(status.observed_generation, 2);
    drained(&addr).await;
}

#[actix::test]
async fn a_requeue_reconciles_again_after_the_delay() {
    tokio::time::pause();
    let probe = Probe::new(Duration::ZERO, |_, _, call| {
        if call < 4 {
            Step::Report(Action::requeue(Duration::from_millis(200)))
        } else {
            done()
        }
    });
    let (addr, _events) = start(&probe, 4);
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe.calls().len(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        probe.calls().len(),
        4,
        "requeued until the reconciler awaits a change"
    );
    drained(&addr).await;
}

#[actix::test]
async fn a_delete_cleans_up_removes_the_entity_and_publishes_deleted() {
    let probe = Probe::new(Duration::ZERO, |_, _, _| done());
    let (addr, mut events) = start(&probe, 4);
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    assert_eq!(next_event(&mut events).await.status, ResourceStatus::Active);
    let delete = command(Operation::Delete, "run-1", 2);
    apply(&addr, delete.clone()).await;
    let status = next_event(&mut events).await;
    assert_eq!(status.status, ResourceStatus::Deleted);
    assert_eq!(status.observed_generation, 2);
    drained(&addr).await;
    let calls = probe.calls();
    assert_eq!(calls.last(), Some(&(r("run-1"), 2, true, 0)));
    let entity = addr
        .send(GetEntity { entity: r("run-1") })
        .await
        .expect("alive");
    assert_eq!(entity, None, "the entity is gone");
}

#[actix::test]
async fn a_create_redelivered_after_its_entity_was_deleted_reconciles_nothing() {
    let probe = Probe::new(Duration::ZERO, |_, _, _| done());
    let (addr, mut events) = start(&probe, 4);
    let create = command(Operation::Create, "run-1", 1);
    apply(&addr, create.clone()).await;
    assert_eq!(next_event(&mut events).await.status, ResourceStatus::Active);
    apply(&addr, command(Operation::Delete, "run-1", 2)).await;
    assert_eq!(
        next_event(&mut events).await.status,
        ResourceStatus::Deleted
    );
    // The clean-up's end reaches the controller after its `deleted`: ask until it has.
    let gone = async {
        while addr
            .send(GetEntity { entity: r("run-1") })
            .await
            .expect("alive")
            .is_some()
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the entity goes once cleaned up");

    // Its acknowledgement lost, the create comes again after the delete.
    assert_eq!(
        apply(&addr, create).await,
        CommandOutcome::Stale {
            stored_generation: 2
        }
    );
    // Created again by a user: a new command, a new entity.
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    assert_eq!(next_event(&mut events).await.status, ResourceStatus::Active);
    drained(&addr).await;
    let calls: Vec<(u64, bool)> = probe
        .calls()
        .into_iter()
        .map(|(_, generation, deleting, _)| (generation, deleting))
        .collect();
    assert_eq!(
        calls,
        [(1, false), (2, true), (1, false)],
        "the redelivered create reconciled nothing"
    );
}

#[actix::test]
async fn draining_waits_for_running_reconciles() {
    tokio::time::pause();
    let probe = Probe::new(Duration::from_secs(2), |_, _, _| done());
    let (addr, mut events) = start(&probe, 4);
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let began = tokio::time::Instant::now();
    drained(&addr).await;
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert_eq!(next_event(&mut events).await.observed_generation, 1);
    apply(&addr, command(Operation::Update, "run-1", 2)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probe.calls().len(), 1, "nothing starts once draining");
}

#[actix::test]
async fn a_periodic_resync_reconciles_settled_entities_again_but_not_terminal_errors() {
    tokio::time::pause();
    let probe = Probe::new(Duration::ZERO, |request, _, _| {
        if request.entity.key.name == "broken" {
            Step::Terminal
        } else {
            done()
        }
    });
    let (addr, mut events) = start_with_resync(&probe, 4, Some(Duration::from_secs(60)));
    apply(&addr, command(Operation::Create, "run-1", 1)).await;
    apply(&addr, command(Operation::Create, "broken", 1)).await;
    next_event(&mut events).await;
    next_event(&mut events).await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(probe.calls().len(), 2, "nothing more before the interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = probe.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[2].0,
        r("run-1"),
        "the terminal error waits for a new spec"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(probe.calls().len(), 4, "again every interval");
    drained(&addr).await;
}

/// The value of the sample `series` (name and labels, as rendered) in Prometheus `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[actix::test]
async fn reconciles_commands_and_status_events_are_counted_in_the_metrics() {
    operator_telemetry::metrics_handle();
    let probe = Probe::new(Duration::ZERO, |request, _, _| {
        if request.entity.key.name == "broken" {
            Step::Terminal
        } else {
            done()
        }
    });
    let (addr, mut events) = start_for("metrics-test", &probe, 4, None);
    let create = command(Operation::Create, "run-1", 1);
    apply(&addr, create.clone()).await;
    next_event(&mut events).await;
    apply(&addr, command(Operation::Create, "broken", 1)).await;
    next_event(&mut events).await;
    apply(&addr, create).await;
    drained(&addr).await;

    let text = operator_telemetry::render_metrics();
    let labels = r#"operator="metrics-test",type="job""#;
    for (series, expected) in [
        (
            format!("operator_reconciles_total{{{labels},result=\"ok\"}}"),
            1.0,
        ),
        (
            format!("operator_reconciles_total{{{labels},result=\"terminal\"}}"),
            1.0,
        ),
        (
            format!("operator_reconcile_errors_total{{{labels},kind=\"terminal\"}}"),
            1.0,
        ),
        (
            format!("operator_reconcile_duration_seconds_count{{{labels}}}"),
            2.0,
        ),
        (
            format!("operator_commands_total{{{labels},outcome=\"applied\"}}"),
            2.0,
        ),
        (
            format!("operator_commands_total{{{labels},outcome=\"stale\"}}"),
            1.0,
        ),
        (format!("operator_status_events_total{{{labels}}}"), 2.0),
        (
            r#"operator_work_queue_depth{operator="metrics-test"}"#.to_string(),
            0.0,
        ),
        (
            r#"operator_reconciles_running{operator="metrics-test"}"#.to_string(),
            0.0,
        ),
    ] {
        assert_eq!(
            sample(&text, &series),
            Some(expected),
            "{series} in\n{text}"
        );
    }
}

#[actix::test]
async fn a_replica_that_starts_acting_announces_the_statuses_it_holds() {
    // As a predecessor that died after storing a status and before its event was acknowledged
    // leaves the store: the status is there, the orchestrator never heard of it.
    let mut store = EntityStore::default();
    let key = EntityKey::new("public", "held").expect("valid");
    let command = command(Operation::Create, "held", 3);
    store.put_entity(Entity {
        key: key.clone(),
        operator: "demo".into(),
        resource_type: "job".into(),
        generation: 3,
        spec: json!({"generation": 3}),
        deleting: false,
        last_command: command.id,
        updated_at: chrono::Utc::now(),
    });
    let mut held = EntityStatus::pending(key, "demo", "job");
    held.observed_generation = 3;
    held.status = ResourceStatus::Active;
    held.runtime = Some(RuntimeStatus::Succeeded);
    store.put_status(held.clone());
    drop(store.take_flush());

    let probe = Probe::new(Duration::ZERO, |_, _, _| {
        Step::Report(Action::await_change())
    });
    let (_addr, mut events) = start_with_store("demo-announce", store, &probe, 1, None);
    let announced = next_event(&mut events).await;
    assert_eq!(announced, held);
    assert!(
        probe.calls().is_empty(),
        "a settled entity is not reconciled again"
    );
}
