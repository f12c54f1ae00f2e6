//! Fault run: kills the orchestrator, a replica of the demo component or the nats-server with
//! SIGKILL, cycle after cycle, while resources are applied, updated and deleted; restarts each
//! on the same store; then checks that no acknowledged operation was lost, every resource
//! converged, and the jobs platform saw no job started twice nor a live one deleted. Prints the
//! figures; exits non-zero on any violation.
//!
//! `cargo build --release --workspace --bins && target/release/faults --cycles 1000`
//! (`--cluster`: on three clustered NATS nodes, with partitions)

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use operator_tests::faults::{run, FaultConfig, Victim};

#[derive(Parser)]
struct Args {
    /// Kill cycles.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Seeds the choice of victims, moments and operations (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// No cycle starts after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_duration: u64,
    /// Replicas of the demo component.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Resources that exist at any time (about).
    #[arg(long, default_value_t = 8)]
    resources: usize,
    /// Operations (create, update, delete) sent during each cycle.
    #[arg(long, default_value_t = 3)]
    operations: usize,
    /// ELECTION_LEASE_TTL_MS of the replicas.
    #[arg(long, default_value_t = 2000)]
    ttl_ms: u64,
    /// ELECTION_RENEW_INTERVAL_MS of the replicas.
    #[arg(long, default_value_t = 400)]
    renew_ms: u64,
    /// The kill lands at a random moment within this many milliseconds of the cycle's start.
    #[arg(long, default_value_t = 300)]
    kill_window_ms: u64,
    /// Seconds the system may take to converge after a kill.
    #[arg(long, default_value_t = 60)]
    converge_timeout: u64,
    /// Who may be killed, each in turn [default: orchestrator,replica,nats-server, and
    /// orchestrator-pause, orchestrator-partition and nats-partition with --cluster].
    #[arg(long, value_enum, value_delimiter = ',')]
    victims: Option<Vec<Victim>>,
    /// Three clustered NATS nodes (every stream R3) and two orchestrator replicas:
    /// nats-server kills one node, nats-partition cuts one off (iptables, as root) for
    /// --partition-ms, orchestrator kills the leading replica, orchestrator-pause stops it
    /// past its lease and orchestrator-partition cuts its host off past it (the orchestrators'
    /// lease is --ttl-ms too).
    #[arg(long)]
    cluster: bool,
    /// How long a partitioned node stays cut off.
    #[arg(long, default_value_t = 3000)]
    partition_ms: u64,
    /// Prints only the figures, not a line per cycle.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    let config = FaultConfig {
        cycles: args.cycles,
        seed,
        max_duration: Duration::from_secs(args.max_duration),
        replicas: args.replicas,
        resources: args.resources,
        operations_per_cycle: args.operations,
        lease_ttl: Duration::from_millis(args.ttl_ms),
        renew_interval: Duration::from_millis(args.renew_ms),
        kill_window: Duration::from_millis(args.kill_window_ms),
        converge_timeout: Duration::from_secs(args.converge_timeout),
        verbose: !args.quiet,
        victims: args.victims.unwrap_or_else(|| {
            if args.cluster {
                Victim::CLUSTER.to_vec()
            } else {
                Victim::ALL.to_vec()
            }
        }),
        cluster: args.cluster,
        partition_for: Duration::from_millis(args.partition_ms),
    };
    println!(
        "faults: seed {seed} (--seed {seed} replays the same choices), {} cycles, {} replicas, {} resources, {} operations a cycle, lease TTL {} ms renewed every {} ms",
        config.cycles,
        config.replicas,
        config.resources,
        config.operations_per_cycle,
        args.ttl_ms,
        args.renew_ms
    );
    // Interrupted, the run is dropped (before the branch runs): its guards stop every process
    // and remove the hosts, links and rules a cluster run made. The process then exits at once:
    // returning would make the runtime wait for the workload's blocking thread, which may be in
    // the middle of an opctl call that waits for the system just stopped.
    let report = tokio::select! {
        report = run(&config) => report?,
        signal = interrupted() => {
            eprintln!("faults: {signal}; stopped, everything it started is cleaned up");
            std::process::exit(130);
        }
    };
    print!("{}", report.summary());
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
