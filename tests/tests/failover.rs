//! Component replicas end to end: three real `demo-operator` processes elect a leader on a real
//! nats-server; the leader is killed (SIGKILL), stopped cleanly (SIGTERM) or paused past its
//! lease (SIGSTOP, then SIGCONT), and the jobs platform counts what reached it.

use std::time::Duration;

use operator_tests::replicas::{self, fence, fenced_write, terms_written_after};
use operator_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(400);

fn jobs(prefix: &str, n: usize, duration_ms: u64) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|n| TestSystem::job(n, &format!("{{durationMs: {duration_ms}}}")))
        .collect();
    (names, manifests.join("---\n"))
}

async fn wait_all(system: &TestSystem, names: &[String], runtime: &str) -> anyhow::Result<()> {
    for name in names {
        wait_for_resource(&system.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some(runtime)
        })
        .await?;
    }
    Ok(())
}

/// Every job was started on the platform exactly once.
fn started_once(system: &TestSystem, names: &[String]) {
    let calls = system.platform.calls();
    for name in names {
        assert_eq!(
            calls.starts.get(&format!("public/{name}")),
            Some(&1),
            "{name} started {:?} times",
            calls.starts.get(&format!("public/{name}"))
        );
    }
}

/// The envelope ids of the commands a replica applied, from its (JSON, debug) log.
fn applied_commands(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "command applied")
        .filter_map(|l| l["fields"]["envelope.id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn killing_the_leader_hands_its_work_to_another_replica_without_losing_or_repeating_any(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut set = ReplicaSet::start(&system, 3, TTL, RENEW, &[]).await?;
    let first = set.wait_for_leader(None, WAIT).await?;

    // Jobs running on the platform, followed by the leader.
    let (running, manifests) = jobs("running", 8, 4000);
    system.opctl.apply(&manifests, None)?;
    wait_all(&system, &running, "inprogress").await?;

    // More commands, and the leader dies before it can have handled them all.
    let (late, manifests) = jobs("late", 8, 500);
    system.opctl.apply(&manifests, None)?;
    set.replicas[first.index].kill9();
    let killed = tokio::time::Instant::now();
    let second = set.wait_for_leader(Some(first.index), WAIT).await?;
    assert!(second.term > first.term, "{first:?} then {second:?}");

    // Nothing lost: every job runs to its end; nothing twice: each was started once. Commands
    // the dead leader held unacknowledged come back at the takeover, not after the ack wait.
    wait_all(&system, &running, "succeeded").await?;
    wait_all(&system, &late, "succeeded").await?;
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "{:?} after the kill",
        killed.elapsed()
    );
    started_once(&system, &running);
    started_once(&system, &late);
    let calls = system.platform.calls();
    for name in &running {
        assert_eq!(
            calls.started_by.get(&format!("public/{name}")),
            Some(&first.term),
            "{name} was started by the first leader and followed, not restarted"
        );
    }
    assert!(
        calls.first_call_of_term(second.term).is_some(),
        "the new leader reconciled"
    );
    assert_eq!(calls.fenced.values().sum::<u32>(), 0, "no stale call");
    set.wait_for_journal(second.index, "acquired", second.term, WAIT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_leader_stopped_cleanly_hands_over_at_once_without_waiting_for_its_lease(
) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(20);
    let system = TestSystem::start().await?;
    let mut set = ReplicaSet::start(&system, 3, ttl, Duration::from_secs(1), &[]).await?;
    let first = set.wait_for_leader(None, WAIT).await?;
    let (names, manifests) = jobs("handover", 4, 1500);
    system.opctl.apply(&manifests, None)?;
    wait_all(&system, &names, "inprogress").await?;

    let began = tokio::time::Instant::now();
    set.replicas[first.index].signal("TERM")?;
    let second = set.wait_for_leader(Some(first.index), WAIT).await?;
    let handover = began.elapsed();
    assert!(
        handover < ttl / 4,
        "handover took {handover:?}, the lease lasts {ttl:?}"
    );
    let status = set.replicas[first.index].wait_exit(WAIT)?;
    assert!(status.success(), "{status}");
    let events: Vec<String> = set
        .journal(first.index)
        .into_iter()
        .map(|(event, _, _)| event)
        .collect();
    assert_eq!(
        events.iter().rev().take(2).collect::<Vec<_>>(),
        [&"stopped".to_string(), &"released".to_string()],
        "{events:?}"
    );

    wait_all(&system, &names, "succeeded").await?;
    started_once(&system, &names);
    assert!(system
        .platform
        .calls()
        .first_call_of_term(second.term)
        .is_some());
    Ok(())
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_is_refused_and_steps_down_when_it_resumes(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let set = ReplicaSet::start(&system, 3, TTL, RENEW, &[]).await?;
    let first = set.wait_for_leader(None, WAIT).await?;
    let (running, manifests) = jobs("paused", 6, 3000);
    system.opctl.apply(&manifests, None)?;
    wait_all(&system, &running, "inprogress").await?;
    let (first_fence, fence_term) = fence(&system.client).await?.expect("fenced");
    assert_eq!(fence_term, first.term);

    let stale = &set.replicas[first.index];
    stale.signal("STOP")?;
    // Queries are answered by the other replicas while the leader is frozen (every replica
    // answers; were one picked per query, a frozen one would leave some unanswered).
    for name in &running[..4] {
        let details = system
            .opctl
            .run(&["get", "-t", "resource", "-n", name, "-d", "-o", "json"])?;
        let view: serde_json::Value = serde_json::from_str(&details.stdout)?;
        assert_eq!(view["details"]["entity"]["generation"], 1, "{view}");
        assert!(view["details"]["status"]["runtime"].is_string(), "{view}");
    }

    let second = set.wait_for_leader(Some(first.index), WAIT).await?;
    // Commands while the old leader is frozen go to the new one only.
    let (during, manifests) = jobs("during", 4, 200);
    system.opctl.apply(&manifests, None)?;
    wait_all(&system, &during, "succeeded").await?;
    wait_all(&system, &running, "succeeded").await?;

    let resumed_at = std::time::Instant::now();
    let log_before = stale.log().len();
    stale.signal("CONT")?;
    let lost = set
        .wait_for_journal(first.index, "lost", first.term, WAIT)
        .await?;
    assert!(
        lost["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("lapsed"),
        "{lost}"
    );

    // Resumed, it acted on the platform no more and wrote nothing. A call whose lease check
    // passed just before the freeze goes out on resume (the check and the send are not one
    // step; one per reconcile under way): the platform, which has seen the successor's term,
    // refuses it, and so every call of the old term after the resume is one refused.
    let calls = system.platform.calls();
    let late = calls.calls_of_term_after(first.term, resumed_at);
    assert_eq!(
        calls.fenced.values().sum::<u32>() as usize,
        late,
        "a call of the deposed term was accepted"
    );
    let (second_fence, fence_term) = fence(&system.client).await?.expect("fenced");
    assert_eq!(fence_term, second.term);
    assert!(second_fence > first_fence);
    for (sequence, subject, term) in terms_written_after(&system.client, second_fence).await? {
        assert_eq!(term, Some(second.term), "{subject} at {sequence}");
    }
    // A write fenced as the old leader's is refused by the store itself.
    let refused = fenced_write(&system.client, "job.public.paused-0", first_fence).await?;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("wrong last sequence")),
        "{refused:?}"
    );
    // The command stream was never consumed by both: the old leader applied nothing after it
    // resumed, and no command was applied by two replicas.
    let stale_log = stale.log();
    assert!(
        applied_commands(&stale_log[log_before..]).is_empty(),
        "{}",
        &stale_log[log_before..]
    );
    let mut applied: Vec<String> = set
        .replicas
        .iter()
        .flat_map(|r| applied_commands(&r.log()))
        .collect();
    let total = applied.len();
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), total, "a command was applied twice");
    assert_eq!(total, running.len() + during.len());
    started_once(&system, &running);
    started_once(&system, &during);
    Ok(())
}

#[tokio::test]
async fn a_leader_whose_store_write_is_refused_steps_down_and_another_carries_on(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let set = ReplicaSet::start(&system, 3, TTL, RENEW, &[]).await?;
    let first = set.wait_for_leader(None, WAIT).await?;
    let (before, manifests) = jobs("before", 2, 0);
    system.opctl.apply(&manifests, None)?;
    wait_all(&system, &before, "succeeded").await?;

    // Another writer fences the store with a newer term behind the leader's back, as a new
    // leader would: the leader's next write is refused by JetStream itself.
    let js = async_nats::jetstream::new(system.client.clone());
    let kv = js.get_key_value(replicas::ENTITY_BUCKET).await?;
    let (fence_sequence, _) = fence(&system.client).await?.expect("fenced");
    let newer = serde_json::json!({
        "term": first.term + 1, "replica": "intruder", "writtenAt": chrono::Utc::now()
    });
    kv.update("_fence", serde_json::to_vec(&newer)?.into(), fence_sequence)
        .await?;
    let (after, manifests) = jobs("after", 2, 0);
    system.opctl.apply(&manifests, None)?;

    let lost = set
        .wait_for_journal(first.index, "lost", first.term, WAIT)
        .await?;
    assert!(
        lost["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{lost}"
    );
    let second = set.wait_for_leader(Some(first.index), WAIT).await?;
    wait_all(&system, &after, "succeeded").await?;
    started_once(&system, &before);
    started_once(&system, &after);
    let (_, fence_term) = fence(&system.client).await?.expect("fenced");
    assert_eq!(
        fence_term, second.term,
        "the new leader fenced the store again"
    );
    Ok(())
}

#[tokio::test]
async fn the_operator_details_show_each_replica_and_which_one_leads() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut set = ReplicaSet::start(&system, 3, TTL, RENEW, &[]).await?;
    let leader = set.wait_for_leader(None, WAIT).await?;
    let leader_id = set.id(leader.index).to_string();

    // Every replica heartbeats within a renew interval of starting.
    let deadline = tokio::time::Instant::now() + WAIT;
    let election = loop {
        let run = system
            .opctl
            .run(&["get", "-t", "operator", "-n", "demo", "-d", "-o", "json"])?;
        let view: serde_json::Value = serde_json::from_str(&run.stdout)?;
        let election = view["details"]["election"]["demo-controller"].clone();
        if election["aliveReplicas"] == 3 && election["leader"] == leader_id.as_str() {
            break election;
        }
        assert!(tokio::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let replicas = election["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3, "{election}");
    let leaders: Vec<&serde_json::Value> = replicas
        .iter()
        .filter(|r| r["status"] == "leader")
        .collect();
    assert_eq!(leaders.len(), 1, "{election}");
    assert_eq!(leaders[0]["name"], leader_id.as_str());
    assert_eq!(leaders[0]["term"], leader.term);
    assert!(leaders[0]["since"].is_string() && leaders[0]["lastHeartbeat"].is_string());
    assert_eq!(election["term"], leader.term);
    assert_eq!(election["cluster"], "demo-replicas");
    assert_eq!(election["expectedReplicas"], 3);
    assert!(election.get("warning").is_none(), "{election}");

    // A dead follower shows as unresponsive once its heartbeat is a lease old, with a warning.
    let follower = (0..3).find(|i| *i != leader.index).expect("a follower");
    set.replicas[follower].kill9();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let run = system
            .opctl
            .run(&["get", "-t", "operator", "-n", "demo", "-d"])?;
        if run.stdout.contains("unresponsive") {
            assert!(
                run.stdout.contains("2 of 3 expected replicas"),
                "{}",
                run.stdout
            );
            assert!(run.stdout.contains(&leader_id), "{}", run.stdout);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", run.stdout);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
