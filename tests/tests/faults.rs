//! A short fault run: the orchestrator, a component replica and the nats-server are each killed
//! with SIGKILL (and started again on the same store) while resources are applied, updated and
//! deleted; no acknowledged operation is lost, everything converges, nothing reaches the jobs
//! platform twice. The long run is the `faults` binary (README, Benchmark).

use std::time::Duration;

use operator_tests::faults::{run, FaultConfig, Victim};

const CYCLES: usize = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_orchestrator_a_replica_or_nats_again_and_again_loses_nothing_and_repeats_nothing(
) -> anyhow::Result<()> {
    // FAULTS_SEED replays a failed run's choices.
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fault run with seed {seed} (FAULTS_SEED={seed} replays it)");
    let config = FaultConfig {
        cycles: CYCLES,
        seed,
        max_duration: Duration::from_secs(100),
        resources: 5,
        converge_timeout: Duration::from_secs(45),
        ..FaultConfig::default()
    };
    let report = run(&config).await?;
    let summary = report.summary();
    println!("{summary}");
    assert!(
        report.violations.is_empty(),
        "seed {seed}: invariants violated:\n{summary}"
    );
    assert_eq!(report.cycles_done, CYCLES, "seed {seed}:\n{summary}");
    for victim in [Victim::Orchestrator, Victim::Replica, Victim::NatsServer] {
        assert_eq!(
            report.kills.get(&victim),
            Some(&(CYCLES / 3)),
            "seed {seed}: each victim is killed once every three cycles\n{summary}"
        );
    }
    assert!(
        report.creates_acknowledged > 5 && report.updates_acknowledged > 0,
        "seed {seed}: the workload ran\n{summary}"
    );
    assert_eq!(
        report.platform_starts as usize,
        report.creates_acknowledged + report.updates_acknowledged,
        "seed {seed}: one job started per acknowledged create or update (none coalesced, none twice)\n{summary}"
    );
    Ok(())
}
