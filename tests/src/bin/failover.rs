//! Failover benchmark: replicas of the demo component follow jobs running on the test platform;
//! the leader is killed (SIGKILL) again and again, then stopped cleanly (SIGTERM), restarted
//! each time so the set stays whole. For each, it prints the time from the leader's death (or
//! the signal) to the lease taken by another replica and to the first reconcile of the new
//! leader (its first call to the platform, which records the term of every call), median and
//! max, beside the configured lease TTL. It ends by checking that no job was started twice and
//! no stale call reached the platform.
//!
//! `cargo build --release --workspace --bins && target/release/failover --kills 10 --sigterms 5`

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use operator_tests::{runtime_of, wait_for_resource, ReplicaSet, TestSystem};

#[derive(Parser)]
struct Args {
    /// How many times the leader is killed with SIGKILL.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// How many times the leader is stopped with SIGTERM.
    #[arg(long, default_value_t = 5)]
    sigterms: usize,
    /// Replicas of the component.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// ELECTION_LEASE_TTL_MS of the replicas.
    #[arg(long, default_value_t = 5000)]
    ttl_ms: u64,
    /// ELECTION_RENEW_INTERVAL_MS of the replicas.
    #[arg(long, default_value_t = 1000)]
    renew_ms: u64,
    /// Jobs in progress the whole time (each polled by the leader).
    #[arg(long, default_value_t = 20)]
    jobs: usize,
}

/// One handover: from the kill or signal to the lease taken, and to the first reconcile.
struct Handover {
    to_lease: Duration,
    to_reconcile: Duration,
}

const WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ttl = Duration::from_millis(args.ttl_ms);
    let renew = Duration::from_millis(args.renew_ms);
    let system = TestSystem::start().await?;
    let mut set = ReplicaSet::start(
        &system,
        args.replicas,
        ttl,
        renew,
        &[("LOG_LEVEL", "warn,operator_sdk=debug")],
    )
    .await?;
    set.wait_for_leader(None, WAIT).await?;

    let names: Vec<String> = (0..args.jobs).map(|i| format!("job-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|n| TestSystem::job(n, "{durationMs: 3600000}"))
        .collect();
    system.opctl.apply(&manifests.join("---\n"), None)?;
    for name in &names {
        wait_for_resource(&system.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some("inprogress")
        })
        .await?;
    }

    println!(
        "failover benchmark: {} replicas of the demo component, lease TTL {} ms, renewed every {} ms, {} jobs followed throughout",
        args.replicas, args.ttl_ms, args.renew_ms, args.jobs
    );
    let mut kills = Vec::new();
    for _ in 0..args.kills {
        kills.push(handover(&mut set, &system, false, args.renew_ms).await?);
    }
    let mut sigterms = Vec::new();
    for _ in 0..args.sigterms {
        sigterms.push(handover(&mut set, &system, true, args.renew_ms).await?);
    }

    let calls = system.platform.calls();
    let twice: Vec<&String> = calls
        .starts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    let refused: u32 = calls.fenced.values().sum();

    report("kill -9 of the leader", &kills, ttl);
    report("SIGTERM of the leader", &sigterms, ttl);
    println!(
        "jobs started twice: {}; stale calls refused by the platform: {refused}",
        twice.len()
    );
    if !twice.is_empty() {
        bail!("jobs started twice: {twice:?}");
    }
    Ok(())
}

/// Kills (or stops cleanly) the current leader, measures the handover, and restarts it.
async fn handover(
    set: &mut ReplicaSet,
    system: &TestSystem,
    clean: bool,
    renew_ms: u64,
) -> anyhow::Result<Handover> {
    let leader = set.wait_for_leader(None, WAIT).await?;
    let started_before = started(set, leader.index);
    // The leader renews every interval: the death falls anywhere between two renewals.
    let phase = rand::random_range(0..renew_ms.max(1));
    tokio::time::sleep(Duration::from_millis(phase)).await;
    let began = Instant::now();
    if clean {
        set.replicas[leader.index].signal("TERM")?;
    } else {
        set.replicas[leader.index].kill9();
    }
    let next = set.wait_for_leader(Some(leader.index), WAIT).await?;
    let to_lease = began.elapsed();
    let first_call = loop {
        if let Some(at) = system.platform.calls().first_call_of_term(next.term) {
            break at;
        }
        if began.elapsed() > WAIT {
            bail!("the new leader of term {} never reconciled", next.term);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let to_reconcile = first_call.saturating_duration_since(began);
    if clean {
        let status = set.replicas[leader.index].wait_exit(WAIT)?;
        if !status.success() {
            bail!("the stopped leader exited with {status}");
        }
    }
    set.replicas[leader.index].restart()?;
    // The restarted replica has joined once it records its start (no event says so).
    let deadline = Instant::now() + WAIT;
    while started(set, leader.index) == started_before {
        if Instant::now() > deadline {
            bail!("replica {} did not rejoin", set.id(leader.index));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  {} of {}: lease taken by {} after {:.3} s, first reconcile after {:.3} s",
        if clean { "SIGTERM" } else { "kill -9" },
        set.id(leader.index),
        set.id(next.index),
        to_lease.as_secs_f64(),
        to_reconcile.as_secs_f64()
    );
    Ok(Handover {
        to_lease,
        to_reconcile,
    })
}

fn started(set: &ReplicaSet, index: usize) -> usize {
    set.journal(index)
        .iter()
        .filter(|(event, _, _)| event == "started")
        .count()
}

fn report(what: &str, handovers: &[Handover], ttl: Duration) {
    if handovers.is_empty() {
        return;
    }
    let stats = |mut d: Vec<Duration>| {
        d.sort();
        (d[d.len() / 2], d[d.len() - 1])
    };
    let (lease_median, lease_max) = stats(handovers.iter().map(|h| h.to_lease).collect());
    let (median, max) = stats(handovers.iter().map(|h| h.to_reconcile).collect());
    println!("{what} ({} times):", handovers.len());
    println!(
        "  to the lease taken by another replica: median {:.2} s, max {:.2} s",
        lease_median.as_secs_f64(),
        lease_max.as_secs_f64()
    );
    println!(
        "  to the first reconcile by the new leader: median {:.2} s, max {:.2} s (lease TTL {:.2} s)",
        median.as_secs_f64(),
        max.as_secs_f64(),
        ttl.as_secs_f64()
    );
}
