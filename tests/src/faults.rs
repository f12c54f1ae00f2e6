//! Fault runs: the orchestrator, a component replica or the nats-server is killed with SIGKILL
//! again and again (and started again on the same store) while resources are applied, updated
//! and deleted through `opctl`; then the invariants are checked. With `cluster`, NATS is three
//! clustered nodes (every stream R3): a node is killed, or cut off from the others and from its
//! clients for a while (a real partition, by DROP rules on its loopback address), and two
//! orchestrator replicas run: the leading one is killed, or paused (SIGSTOP) past its lease and
//! resumed, when it must exit without having written anything.
//!
//! The components run under the orchestrator's `process` runtime, as deployed by default: a
//! killed orchestrator takes its replicas with it (they get SIGTERM) and runs them again once
//! back, and a killed replica is restarted by the orchestrator, not by this harness.
//!
//! Invariants: every acknowledged apply is in the store with the generation the acknowledged
//! operations imply (absent when the last one was a delete); every resource converges to what
//! its spec asks (`succeeded`, `failed` or `inprogress` on the jobs platform); the platform
//! started no job twice for the same key and generation, deleted no job of a resource that
//! exists, and holds exactly the jobs of the resources that exist, each at its generation. With
//! orchestrator replicas: every record written after the current leader fenced the store carries
//! that leader's term (no write of a deposed leader landed), and a paused leader exits on
//! resuming.
//!
//! Victims and operations come from a seeded RNG, so a run's choices can be replayed; the moments
//! at which processes die and come back are the machine's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::{
    binary, replicas, NatsCluster, NatsServer, Opctl, OrchestratorProcess, Platform, TestSystem,
};

/// The resources' workspace.
const WORKSPACE: &str = "public";
/// How long a running job runs: longer than any run.
const LONG_JOB_MS: u64 = 3_600_000;
/// How often convergence and readiness are polled.
const POLL: Duration = Duration::from_millis(50);
/// Convergence slower than this is told, with what is still off.
const SLOW_CONVERGENCE: Duration = Duration::from_secs(10);
/// How many of the replicas' log lines are shown about a resource that did not converge.
const SHOWN_LOG_LINES: usize = 60;
/// The pause between two attempts of an operation that was not acknowledged.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What a fault run does.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Kill cycles.
    pub cycles: usize,
    /// Seeds the choice of victims, moments and operations.
    pub seed: u64,
    /// No cycle starts after this; the final convergence has its own bound.
    pub max_duration: Duration,
    /// Replicas of the demo component.
    pub replicas: usize,
    /// Resources that exist at any time (about: deletes and creates move around it).
    pub resources: usize,
    /// Operations (apply, update or delete) sent during each cycle.
    pub operations_per_cycle: usize,
    /// The replicas' ELECTION_LEASE_TTL_MS and ELECTION_RENEW_INTERVAL_MS.
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    /// The kill, and each of the cycle's operations, land at a random moment within this.
    pub kill_window: Duration,
    /// How long the system may take to converge after a kill, and to acknowledge an operation.
    pub converge_timeout: Duration,
    /// Prints a line per cycle.
    pub verbose: bool,
    /// Who may be killed; each in turn, in an order of the RNG's.
    pub victims: Vec<Victim>,
    /// Three clustered NATS nodes instead of one server.
    pub cluster: bool,
    /// How long a partitioned node stays cut off.
    pub partition_for: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            cycles: 10,
            seed: 0,
            max_duration: Duration::from_secs(120),
            replicas: 3,
            resources: 8,
            operations_per_cycle: 3,
            lease_ttl: Duration::from_millis(2000),
            renew_interval: Duration::from_millis(400),
            kill_window: Duration::from_millis(300),
            cluster: false,
            partition_for: Duration::from_secs(3),
            converge_timeout: Duration::from_secs(60),
            verbose: true,
            victims: Victim::ALL.to_vec(),
        }
    }
}

/// Which process a cycle kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Victim {
    /// The orchestrator, or with replicas (a cluster run) the leading one.
    Orchestrator,
    /// With orchestrator replicas: the leader paused (SIGSTOP) past its lease, then resumed.
    OrchestratorPause,
    /// With orchestrator replicas: the leader's host cut off from NATS and everything else past
    /// its lease, then healed (it must have stopped leading, and take no write).
    OrchestratorPartition,
    Replica,
    /// The one nats-server, or with a cluster one of its nodes.
    NatsServer,
    /// With a cluster: one node cut off from the others and from its clients, then healed.
    NatsPartition,
}

impl Victim {
    pub const ALL: [Victim; 3] = [Victim::Orchestrator, Victim::Replica, Victim::NatsServer];
    /// Every victim a cluster run may have.
    pub const CLUSTER: [Victim; 6] = [
        Victim::Orchestrator,
        Victim::OrchestratorPause,
        Victim::OrchestratorPartition,
        Victim::Replica,
        Victim::NatsServer,
        Victim::NatsPartition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Victim::Orchestrator => "orchestrator",
            Victim::OrchestratorPause => "orchestrator (paused)",
            Victim::OrchestratorPartition => "orchestrator (partitioned)",
            Victim::Replica => "component replica",
            Victim::NatsServer => "nats-server",
            Victim::NatsPartition => "nats node (partitioned)",
        }
    }
}

/// What a fault run did and found.
#[derive(Debug, Default)]
pub struct FaultReport {
    pub seed: u64,
    pub cycles_done: usize,
    pub kills: BTreeMap<Victim, usize>,
    /// Replica kills that hit the leader.
    pub leader_kills: usize,
    pub creates_acknowledged: usize,
    pub updates_acknowledged: usize,
    pub deletes_acknowledged: usize,
    /// Attempts that got no acknowledgement and were tried again.
    pub attempts_retried: usize,
    /// Operations never acknowledged within the bound: `name: operation (last error)`.
    pub unacknowledged: Vec<String>,
    /// From each kill to the whole system converged again, by victim.
    pub convergence: BTreeMap<Victim, Vec<Duration>>,
    /// Times the orchestrator gave up restarting a replica and the operator was applied again.
    pub operator_reapplied: usize,
    /// Orchestrator replicas that exited by themselves (a lost lease) and were started again.
    pub orchestrators_revived: usize,
    pub platform_starts: u32,
    pub platform_deletes: u32,
    pub platform_fenced: u32,
    pub violations: Vec<String>,
    pub total: Duration,
}

impl FaultReport {
    /// The figures, one item a line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let kills = |v: Victim| self.kills.get(&v).copied().unwrap_or(0);
        out += &format!(
            "cycles done: {} (seed {})\nkills: orchestrator {} (paused past its lease {}, partitioned past it {}), component replica {} (the leader {} times), nats-server {}, nats node partitioned {}\n",
            self.cycles_done,
            self.seed,
            kills(Victim::Orchestrator),
            kills(Victim::OrchestratorPause),
            kills(Victim::OrchestratorPartition),
            kills(Victim::Replica),
            self.leader_kills,
            kills(Victim::NatsServer),
            kills(Victim::NatsPartition),
        );
        out += &format!(
            "operations acknowledged: {} applies ({} creates, {} updates), {} deletes; {} attempts retried; {} never acknowledged\n",
            self.creates_acknowledged + self.updates_acknowledged,
            self.creates_acknowledged,
            self.updates_acknowledged,
            self.deletes_acknowledged,
            self.attempts_retried,
            self.unacknowledged.len(),
        );
        let all: Vec<Duration> = self.convergence.values().flatten().copied().collect();
        out += &format!("converged after a kill: {}\n", stats(&all));
        for (victim, times) in &self.convergence {
            out += &format!(
                "  after a kill of the {}: {}\n",
                victim.name(),
                stats(times)
            );
        }
        out += &format!(
            "platform: {} job starts, {} delete calls, {} stale calls refused; operator applied again after the supervisor gave up: {}; orchestrator replicas started again after exiting: {}\n",
            self.platform_starts, self.platform_deletes, self.platform_fenced, self.operator_reapplied, self.orchestrators_revived
        );
        out += &format!("violations: {}\n", self.violations.len());
        for violation in &self.violations {
            out += &format!("  {violation}\n");
        }
        for unacknowledged in &self.unacknowledged {
            out += &format!("  never acknowledged: {unacknowledged}\n");
        }
        out += &format!("total time: {:.1} s\n", self.total.as_secs_f64());
        out
    }
}

/// `median m s, max x s (n)` of some durations.
fn stats(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    format!(
        "median {:.2} s, max {:.2} s ({} kills)",
        sorted[sorted.len() / 2].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64(),
        sorted.len()
    )
}

/// What a job's spec asks of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Succeeds,
    Fails,
    Runs,
}

impl JobKind {
    fn pick(rng: &mut impl Rng) -> Self {
        match rng.random_range(0..5) {
            0 | 1 => JobKind::Succeeds,
            2 => JobKind::Fails,
            _ => JobKind::Runs,
        }
    }

    /// The spec, made different from every earlier one by its revision.
    fn spec(self, revision: u32) -> String {
        match self {
            JobKind::Succeeds => format!("{{durationMs: 0, message: rev-{revision}}}"),
            JobKind::Fails => format!("{{durationMs: 0, fail: true, message: rev-{revision}}}"),
            JobKind::Runs => format!("{{durationMs: {LONG_JOB_MS}, message: rev-{revision}}}"),
        }
    }

    /// The runtime status the spec converges to.
    fn runtime(self) -> &'static str {
        match self {
            JobKind::Succeeds => "succeeded",
            JobKind::Fails => "failed",
            JobKind::Runs => "inprogress",
        }
    }
}

/// One resource as the acknowledged operations left it.
#[derive(Debug, Clone)]
struct Tracked {
    kind: JobKind,
    revision: u32,
    /// The generation the acknowledged operations imply.
    generation: u64,
    /// The last acknowledged operation was a delete.
    deleted: bool,
    /// Its removal was seen in the store and on the platform.
    gone: bool,
    /// An operation on it was never acknowledged: it may or may not have landed.
    uncertain: bool,
    /// It did not converge within the bound (a violation, reported): left alone after that,
    /// so the run goes on.
    stuck: bool,
}

impl Tracked {
    /// Whether the acknowledged operations tell what it should be.
    fn known(&self) -> bool {
        !self.uncertain && !self.stuck
    }
}

/// An operation of the workload.
#[derive(Debug, Clone)]
enum Operation {
    Create {
        name: String,
        kind: JobKind,
        revision: u32,
    },
    Update {
        name: String,
        kind: JobKind,
        revision: u32,
    },
    Delete {
        name: String,
    },
}

impl Operation {
    fn name(&self) -> &str {
        match self {
            Operation::Create { name, .. }
            | Operation::Update { name, .. }
            | Operation::Delete { name } => name,
        }
    }

    fn describe(&self) -> String {
        match self {
            Operation::Create { name, kind, .. } => format!("create {name} ({kind:?})"),
            Operation::Update { name, kind, .. } => format!("update {name} ({kind:?})"),
            Operation::Delete { name } => format!("delete {name}"),
        }
    }
}

/// How an operation ended.
#[derive(Debug)]
struct Attempted {
    operation: Operation,
    acknowledged: bool,
    /// Attempts that failed before the last one.
    retried: usize,
    last_error: String,
    /// The answer says the earlier attempts found what they expected gone: an acknowledged
    /// apply was lost.
    lost: bool,
}

/// Sends one operation through `opctl`, again after each failure, until it is acknowledged
/// (exit 0: a 2xx answer) or `deadline` passes.
fn perform(opctl: &Opctl, operation: Operation, deadline: Instant) -> Attempted {
    let mut retried = 0;
    loop {
        let run = match &operation {
            Operation::Create {
                name,
                kind,
                revision,
            }
            | Operation::Update {
                name,
                kind,
                revision,
            } => opctl.run_with_stdin(
                &["apply", "-f", "-", "-w", WORKSPACE],
                Some(&TestSystem::job(name, &kind.spec(*revision))),
            ),
            Operation::Delete { name } => {
                opctl.run(&["delete", "-t", "resource", "-w", WORKSPACE, "-n", name])
            }
        };
        let error = match run {
            Ok(run) if run.code == 0 => {
                return Attempted {
                    operation,
                    acknowledged: true,
                    retried,
                    last_error: String::new(),
                    lost: false,
                }
            }
            Ok(run) => run.stderr.trim().to_string(),
            Err(e) => format!("{e:#}"),
        };
        if let Operation::Delete { .. } = operation {
            if error.contains("not found") {
                // Gone already: an earlier attempt landed (and the delete finished) — unless
                // there was no earlier attempt, and the resource was lost.
                return Attempted {
                    acknowledged: retried > 0,
                    lost: retried == 0,
                    operation,
                    retried,
                    last_error: error,
                };
            }
        }
        if Instant::now() + RETRY_PAUSE > deadline {
            return Attempted {
                operation,
                acknowledged: false,
                retried,
                last_error: error,
                lost: false,
            };
        }
        retried += 1;
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// The demo operator run by the orchestrator: `replicas` of the built `demo-operator`, electing
/// a leader, against `platform_url`.
fn fault_operator(config: &FaultConfig, platform_url: &str) -> anyhow::Result<String> {
    let command = binary("demo-operator")?.display().to_string();
    let manifest = replicas::replicated_demo_operator(config.replicas)
        .replace(
            "        - demo-operator\n",
            &format!("        - {command}\n"),
        )
        .replace(
            "      environmentVars:\n",
            &format!(
                "      environmentVars:\n        DEMO_PLATFORM_URL: {platform_url}\n        DEMO_POLL_INTERVAL_MS: 500\n        ELECTION_LEASE_TTL_MS: {}\n        ELECTION_RENEW_INTERVAL_MS: {}\n",
                config.lease_ttl.as_millis(),
                config.renew_interval.as_millis()
            ),
        );
    if !manifest.contains(&command) || !manifest.contains("ELECTION_CLUSTER_NAME") {
        bail!("the demo operator example changed shape:\n{manifest}");
    }
    Ok(manifest)
}

/// One replica as the orchestrator shows it.
#[derive(Debug, Clone)]
struct ReplicaSeen {
    index: u64,
    state: String,
    pid: Option<u32>,
}

/// The processes of one run. The orchestrators go first, while NATS is still there for their
/// replicas to stop cleanly.
struct FaultSystem {
    /// One orchestrator, or (a cluster run) two replicas of it.
    orchestrators: Vec<OrchestratorProcess>,
    /// The secret keys the orchestrator replicas share.
    _keys: tempfile::TempDir,
    nats: Nats,
    platform: Platform,
    resources: async_nats::jetstream::kv::Store,
    js: async_nats::jetstream::Context,
    opctl: Opctl,
    /// Every replica process seen, to make sure none outlives the run.
    replica_pids: BTreeSet<u32>,
    /// Orchestrator replicas that exited by themselves and were started again.
    orchestrators_revived: usize,
}

impl Drop for FaultSystem {
    fn drop(&mut self) {
        // The replicas get SIGTERM when the orchestrator dies; any that lingers is killed.
        for orchestrator in &mut self.orchestrators {
            let _ = orchestrator.signal("CONT");
            orchestrator.kill9();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.replica_pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        for pid in self.replica_pids.iter().filter(|pid| alive(**pid)) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // A zombie (state Z) has exited.
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// One nats-server, or a cluster of three.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    async fn start(cluster: bool) -> anyhow::Result<Self> {
        if !cluster {
            return Ok(Self::Single(NatsServer::start()?));
        }
        let nodes = NatsCluster::start(3)?;
        let client = nodes.client().await?;
        nodes.wait_ready(&client, Duration::from_secs(60)).await?;
        Ok(Self::Cluster(nodes))
    }

    fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(nodes) => nodes.url(),
        }
    }

    async fn client(&self) -> anyhow::Result<async_nats::Client> {
        match self {
            Self::Single(server) => server.client().await,
            Self::Cluster(nodes) => nodes.client().await,
        }
    }
}

impl FaultSystem {
    async fn start(cluster: bool, config: &FaultConfig) -> anyhow::Result<Self> {
        let mut nats = Nats::start(cluster).await?;
        let keys = tempfile::tempdir()?;
        let keys_file = keys.path().join("secret-keys").display().to_string();
        let ttl_ms = config.lease_ttl.as_millis().to_string();
        let renew_ms = config.renew_interval.as_millis().to_string();
        let mut orchestrators = Vec::new();
        for (name, host_name) in if cluster {
            &[("orchestrator-1", "o1"), ("orchestrator-2", "o2")][..]
        } else {
            &[("", "")][..]
        } {
            let mut env = vec![
                ("ORCHESTRATOR_COMPONENT_RUNTIME", "process"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MS", "100"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MAX_MS", "400"),
                ("ORCHESTRATOR_STOP_GRACE_S", "5"),
            ];
            if cluster {
                env.extend([
                    ("ORCHESTRATOR_REPLICA_NAME", *name),
                    ("ORCHESTRATOR_SECRET_KEYS_FILE", keys_file.as_str()),
                    ("ORCHESTRATOR_LEASE_TTL_MS", ttl_ms.as_str()),
                    ("ORCHESTRATOR_LEASE_RENEW_MS", renew_ms.as_str()),
                ]);
            }
            // On a cluster each replica is a host of its own on the nodes' bridge, so that a
            // partition can cut it off; its components run there too.
            let host = match &mut nats {
                Nats::Cluster(nodes) => Some(nodes.add_host(host_name)?),
                Nats::Single(_) => None,
            };
            orchestrators.push(OrchestratorProcess::start_on(&nats.url(), &env, host)?);
        }
        let platform = match &nats {
            Nats::Cluster(nodes) => Platform::start_on(&nodes.gateway())?,
            Nats::Single(_) => Platform::start()?,
        };
        let client = nats.client().await?;
        let js = async_nats::jetstream::new(client);
        let resources = js
            .get_key_value("orchestrator-resources")
            .await
            .context("the orchestrator made no resource bucket")?;
        let js_for_diagnosis = js.clone();
        let mut opctl = orchestrators[0].opctl();
        opctl.server = orchestrators
            .iter()
            .map(OrchestratorProcess::url)
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            orchestrators,
            _keys: keys,
            nats,
            platform,
            resources,
            js: js_for_diagnosis,
            opctl,
            replica_pids: BTreeSet::new(),
            orchestrators_revived: 0,
        })
    }

    /// The replicas and the leader's index, as `opctl get -t operator -n demo -d` shows them.
    fn replicas(&self) -> anyhow::Result<(Vec<ReplicaSeen>, Option<u64>)> {
        let run = self.opctl.run(&[
            "get",
            "-t",
            "operator",
            "-n",
            replicas::OPERATOR,
            "-d",
            "-o",
            "json",
        ])?;
        if run.code != 0 {
            bail!("opctl get failed: {}", run.stderr.trim());
        }
        let view: Value = serde_json::from_str(&run.stdout)?;
        let seen = view["details"]["components"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| ReplicaSeen {
                index: r["replica"].as_u64().unwrap_or(u64::MAX),
                state: r["state"].as_str().unwrap_or_default().to_string(),
                pid: r["id"].as_str().and_then(|id| id.parse().ok()),
            })
            .collect();
        // Replicas are named `<operator>-<component>-<index>`.
        let leader = view["details"]["election"]
            .as_object()
            .and_then(|components| components.values().next())
            .and_then(|election| election["leader"].as_str())
            .and_then(|name| name.rsplit('-').next())
            .and_then(|index| index.parse().ok());
        Ok((seen, leader))
    }

    /// Waits until every replica runs; applies the operator again when the orchestrator gave
    /// up restarting one (its documented remedy). Returns the replicas and the leader.
    async fn wait_ready(
        &mut self,
        config: &FaultConfig,
        operator: &str,
        report: &mut FaultReport,
    ) -> anyhow::Result<(Vec<ReplicaSeen>, Option<u64>)> {
        let deadline = Instant::now() + config.converge_timeout;
        let mut last;
        loop {
            self.revive_orchestrators();
            match self.replicas() {
                Ok((seen, leader)) => {
                    self.replica_pids.extend(seen.iter().filter_map(|r| r.pid));
                    let running = seen.iter().filter(|r| r.state == "running").count();
                    if running == config.replicas && leader.is_some() {
                        return Ok((seen, leader));
                    }
                    if seen.iter().any(|r| r.state == "exited") {
                        self.opctl.apply(operator, None)?;
                        report.operator_reapplied += 1;
                    }
                    last = format!("{seen:?}, leader {leader:?}");
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "the replicas did not all run within {:?}: {last}",
                    config.converge_timeout
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What still differs from what the acknowledged operations ask: empty when converged.
    async fn divergence(&self, model: &BTreeMap<String, Tracked>) -> Vec<String> {
        let jobs = self.platform.jobs();
        let mut off = Vec::new();
        for (name, tracked) in model {
            if tracked.gone || !tracked.known() {
                continue;
            }
            let key = format!("{WORKSPACE}/{name}");
            let record: Option<Value> =
                match self.resources.get(format!("{WORKSPACE}.{name}")).await {
                    Ok(bytes) => bytes.and_then(|b| serde_json::from_slice(&b).ok()),
                    Err(e) => {
                        off.push(format!("{name}: store unreadable: {e}"));
                        continue;
                    }
                };
            let job = jobs.get(&key).copied();
            if tracked.deleted {
                if record.is_some() || job.is_some() {
                    off.push(format!(
                        "{name}: deleted, yet in the store ({}) or on the platform (job {job:?})",
                        record.is_some()
                    ));
                }
                continue;
            }
            let Some(record) = record else {
                off.push(format!("{name}: not in the store"));
                continue;
            };
            let generation = record["generation"].as_u64();
            let status = &record["status"];
            let observed = status["observedGeneration"].as_u64();
            let runtime = status["runtime"].as_str();
            if generation != Some(tracked.generation)
                || record["deleting"].as_bool() == Some(true)
                || observed != Some(tracked.generation)
                || runtime != Some(tracked.kind.runtime())
                || status["status"].as_str() != Some("active")
                || job != Some(tracked.generation)
            {
                off.push(format!(
                    "{name}: wants generation {} {}; the store has generation {generation:?}, observed {observed:?}, runtime {runtime:?}, status {:?}; the platform's job is at generation {job:?}",
                    tracked.generation,
                    tracked.kind.runtime(),
                    status["status"].as_str()
                ));
            }
        }
        off
    }

    /// Waits until nothing differs; marks the deleted resources seen gone.
    async fn wait_converged(
        &mut self,
        model: &mut BTreeMap<String, Tracked>,
        timeout: Duration,
    ) -> Result<(), Vec<String>> {
        let began = Instant::now();
        let deadline = began + timeout;
        let mut told = false;
        loop {
            self.revive_orchestrators();
            let off = self.divergence(model).await;
            if !told && !off.is_empty() && began.elapsed() > SLOW_CONVERGENCE {
                println!(
                    "  still converging after {SLOW_CONVERGENCE:?}: {}",
                    off.join("; ")
                );
                told = true;
            }
            if off.is_empty() {
                for tracked in model.values_mut().filter(|t| t.deleted) {
                    tracked.gone = true;
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(off);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills `victim` with SIGKILL and starts it again on the same store (a replica is
    /// restarted by the orchestrator); returns when the kill happened.
    fn kill(
        &mut self,
        victim: Victim,
        replica_pid: Option<u32>,
        node: usize,
        partition_for: Duration,
        lease_ttl: Duration,
    ) -> anyhow::Result<Instant> {
        match (victim, &mut self.nats) {
            (Victim::NatsServer, Nats::Cluster(nodes)) => {
                let node = node % nodes.len();
                nodes.kill(node);
                let killed = Instant::now();
                nodes.restart(node)?;
                return Ok(killed);
            }
            (Victim::NatsPartition, Nats::Cluster(nodes)) => {
                let partition = nodes.partition(node % nodes.len())?;
                let cut = Instant::now();
                std::thread::sleep(partition_for);
                partition.heal()?;
                return Ok(cut);
            }
            (Victim::NatsPartition, Nats::Single(_)) => {
                bail!("a partition needs a cluster (--cluster)")
            }
            _ => {}
        }
        match victim {
            Victim::Orchestrator => {
                let leader = self.leading_orchestrator()?;
                let orchestrator = &mut self.orchestrators[leader];
                orchestrator.kill9();
                let killed = Instant::now();
                orchestrator.restart()?;
                Ok(killed)
            }
            Victim::OrchestratorPause => {
                if self.orchestrators.len() < 2 {
                    bail!("a pause needs orchestrator replicas (--cluster)");
                }
                let leader = self.leading_orchestrator()?;
                let orchestrator = &mut self.orchestrators[leader];
                orchestrator.signal("STOP")?;
                let paused = Instant::now();
                std::thread::sleep(lease_ttl + Duration::from_secs(1));
                orchestrator.signal("CONT")?;
                // A leader that finds its lease gone exits at once (75), its writes refused.
                let status = orchestrator.wait_exit(Duration::from_secs(30))?;
                if status.code() != Some(75) {
                    bail!(
                        "the paused orchestrator leader ended with {status}, not 75 (lease lost)"
                    );
                }
                orchestrator.restart()?;
                Ok(paused)
            }
            Victim::OrchestratorPartition => {
                let leader = self.leading_orchestrator()?;
                let Nats::Cluster(nodes) = &self.nats else {
                    bail!("a partition needs a cluster (--cluster)");
                };
                let host = self.orchestrators[leader]
                    .host()
                    .context("the leading orchestrator has no host of its own to cut off")?;
                let partition = nodes.partition_host(host)?;
                let cut = Instant::now();
                // Past its lease: another replica leads meanwhile, and the one cut off must
                // find out, stop writing and exit (started again while converging).
                std::thread::sleep(lease_ttl + Duration::from_secs(1));
                partition.heal()?;
                Ok(cut)
            }
            Victim::NatsServer => {
                let killed = Instant::now();
                if let Nats::Single(server) = &mut self.nats {
                    server.restart()?;
                }
                Ok(killed)
            }
            Victim::NatsPartition => bail!("a partition needs a cluster (--cluster)"),
            Victim::Replica => {
                let pid = replica_pid.context("no replica to kill")?;
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()?;
                if !status.success() {
                    bail!("kill -9 {pid} failed: {status}");
                }
                Ok(Instant::now())
            }
        }
    }

    /// The records written after the current leader fenced the resources' bucket by another
    /// term than the leader's: what a deposed leader managed to write (none, if fencing holds).
    async fn writes_after_the_fence(&self) -> anyhow::Result<Vec<String>> {
        const TERM_HEADER: &str = "Operator-Term";
        let fence = self
            .resources
            .entry("_fence")
            .await?
            .context("no fence in the resources' bucket")?;
        let term: u64 = serde_json::from_slice::<Value>(&fence.value)?["term"]
            .as_u64()
            .context("the fence has no term")?;
        let mut stream = self.js.get_stream("KV_orchestrator-resources").await?;
        let last = stream.info().await?.state.last_sequence;
        let mut stale = Vec::new();
        for sequence in fence.revision + 1..=last {
            // Superseded and purged messages are gone: only what stands is checked.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let written_in = message
                .headers
                .get(TERM_HEADER)
                .and_then(|v| v.as_str().parse::<u64>().ok());
            if written_in != Some(term) {
                stale.push(format!(
                    "{} at sequence {sequence} in term {written_in:?}, after the fence of term {term}",
                    message.subject
                ));
            }
        }
        Ok(stale)
    }

    /// Starts again every orchestrator replica that exited by itself (one that lost its lease
    /// exits), as its supervisor (Kubernetes, compose) would.
    fn revive_orchestrators(&mut self) {
        for orchestrator in &mut self.orchestrators {
            if let Some(status) = orchestrator.exited() {
                println!("  orchestrator replica exited ({status}); started again");
                if let Err(e) = orchestrator.restart() {
                    println!("  cannot start the orchestrator replica again: {e:#}");
                } else {
                    self.orchestrators_revived += 1;
                }
            }
        }
    }

    /// The index of the orchestrator that leads: the only one, or the replica whose `/readyz`
    /// answers 200 (waited for while a failover is under way).
    fn leading_orchestrator(&self) -> anyhow::Result<usize> {
        if self.orchestrators.len() == 1 {
            return Ok(0);
        }
        let client = crate::process::admin_http_client()?;
        let runtime = tokio::runtime::Handle::current();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (index, orchestrator) in self.orchestrators.iter().enumerate() {
                let readyz = client.get(format!("{}/readyz", orchestrator.url())).send();
                let ready = runtime
                    .block_on(readyz)
                    .is_ok_and(|answer| answer.status().is_success());
                if ready {
                    return Ok(index);
                }
            }
            if Instant::now() > deadline {
                bail!("no orchestrator replica leads");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Prints the status each of these resources has in the component's own store, beside the
    /// orchestrator's: a status stored there but not here was never announced.
    async fn show_component_statuses(&self, names: &[&str]) {
        let Ok(entities) = self.js.get_key_value(replicas::ENTITY_BUCKET).await else {
            return;
        };
        for name in names {
            let key = format!("status.job.{WORKSPACE}.{name}");
            let stored = match entities.get(&key).await {
                Ok(Some(bytes)) => serde_json::from_slice::<Value>(&bytes)
                    .map(|status| {
                        format!(
                            "observed generation {}, status {}, runtime {}",
                            status["observedGeneration"], status["status"], status["runtime"]
                        )
                    })
                    .unwrap_or_else(|e| format!("unreadable: {e}")),
                Ok(None) => "none".into(),
                Err(e) => format!("unreadable: {e}"),
            };
            println!("  {name}: the component's stored status: {stored}");
        }
    }

    /// Prints what the replicas logged about these resources (the orchestrator keeps their
    /// output), to tell what happened to them.
    fn show_component_logs(&self, names: &[&str]) {
        let Ok(run) = self.opctl.run(&["logs", "-n", replicas::OPERATOR]) else {
            return;
        };
        let lines: Vec<&str> = run
            .stdout
            .lines()
            .filter(|line| {
                line.starts_with("==>")
                    || names.iter().any(|name| {
                        line.contains(&format!("/{name} "))
                            || line.ends_with(&format!("/{name}"))
                            || line.contains(&format!("/{name}\""))
                    })
            })
            .collect();
        let shown = lines.len().saturating_sub(SHOWN_LOG_LINES);
        println!(
            "  the replicas' log lines about {names:?}:\n{}",
            lines[shown..].join("\n")
        );
    }

    /// The resources, every owner's, as `opctl get -t resource -w public -a -o json` lists them.
    fn listed_resources(&mut self, deadline: Instant) -> anyhow::Result<BTreeMap<String, Value>> {
        loop {
            self.revive_orchestrators();
            let run = self
                .opctl
                .run(&["get", "-t", "resource", "-w", WORKSPACE, "-a", "-o", "json"])?;
            if run.code == 0 {
                let answer: Value = serde_json::from_str(&run.stdout)?;
                let items = answer
                    .get("items")
                    .cloned()
                    .unwrap_or(answer)
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                return Ok(items
                    .into_iter()
                    .filter_map(|item| Some((item["name"].as_str()?.to_string(), item)))
                    .collect());
            }
            if Instant::now() > deadline {
                bail!("opctl get failed: {}", run.stderr.trim());
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

/// The operations of one cycle: distinct resources, creates while fewer than wanted exist,
/// each sent at a moment within the kill window, so some go before the kill and some after.
fn plan(
    rng: &mut impl Rng,
    model: &BTreeMap<String, Tracked>,
    config: &FaultConfig,
    next_name: &mut usize,
) -> Vec<(Duration, Operation)> {
    let mut live: Vec<&String> = model
        .iter()
        .filter(|(_, t)| !t.deleted && t.known())
        .map(|(name, _)| name)
        .collect();
    let mut planned = Vec::new();
    let mut live_after = live.len();
    for _ in 0..config.operations_per_cycle {
        let create = live.is_empty() || (live_after < config.resources && rng.random_bool(0.5));
        if create {
            // Names are never used again, so a key and a generation name one job for good.
            let name = format!("fault-{}", *next_name);
            *next_name += 1;
            planned.push(Operation::Create {
                name,
                kind: JobKind::pick(rng),
                revision: 1,
            });
            live_after += 1;
            continue;
        }
        let name = live.swap_remove(rng.random_range(0..live.len())).clone();
        if rng.random_bool(0.7) {
            planned.push(Operation::Update {
                kind: JobKind::pick(rng),
                revision: model[&name].revision + 1,
                name,
            });
        } else {
            planned.push(Operation::Delete { name });
            live_after -= 1;
        }
    }
    let window = config.kill_window.as_millis() as u64;
    let mut moments: Vec<Duration> = (0..planned.len())
        .map(|_| Duration::from_millis(rng.random_range(0..=window)))
        .collect();
    moments.sort();
    moments.into_iter().zip(planned).collect()
}

/// Records what the operations did in the model.
fn record(
    model: &mut BTreeMap<String, Tracked>,
    attempts: Vec<Attempted>,
    report: &mut FaultReport,
    context: &str,
) {
    for attempt in attempts {
        report.attempts_retried += attempt.retried;
        let name = attempt.operation.name().to_string();
        if attempt.lost {
            report.violations.push(format!(
                "{context}: {} found no resource: an acknowledged apply was lost ({})",
                attempt.operation.describe(),
                attempt.last_error
            ));
        }
        if !attempt.acknowledged {
            if !attempt.lost {
                report.unacknowledged.push(format!(
                    "{context}: {} ({})",
                    attempt.operation.describe(),
                    attempt.last_error
                ));
            }
            model
                .entry(name)
                .or_insert(Tracked {
                    kind: JobKind::Succeeds,
                    revision: 1,
                    generation: 0,
                    deleted: false,
                    gone: false,
                    uncertain: true,
                    stuck: false,
                })
                .uncertain = true;
            continue;
        }
        match attempt.operation {
            Operation::Create { kind, revision, .. } => {
                report.creates_acknowledged += 1;
                model.insert(
                    name,
                    Tracked {
                        kind,
                        revision,
                        generation: 1,
                        deleted: false,
                        gone: false,
                        uncertain: false,
                        stuck: false,
                    },
                );
            }
            Operation::Update { kind, revision, .. } => {
                report.updates_acknowledged += 1;
                if let Some(tracked) = model.get_mut(&name) {
                    tracked.kind = kind;
                    tracked.revision = revision;
                    tracked.generation += 1;
                }
            }
            Operation::Delete { .. } => {
                report.deletes_acknowledged += 1;
                if let Some(tracked) = model.get_mut(&name) {
                    tracked.deleted = true;
                    tracked.generation += 1;
                }
            }
        }
    }
}

/// Runs the operations in order on a blocking thread, each not before its moment.
fn spawn_workload(
    opctl: &Opctl,
    operations: Vec<(Duration, Operation)>,
    timeout: Duration,
) -> tokio::task::JoinHandle<Vec<Attempted>> {
    let opctl = opctl.clone();
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        operations
            .into_iter()
            .map(|(moment, operation)| {
                std::thread::sleep((start + moment).saturating_duration_since(Instant::now()));
                perform(&opctl, operation, Instant::now() + timeout)
            })
            .collect()
    })
}

/// Runs a fault run: set-up, the cycles, the final checks. Violations are in the report; an
/// error means the run could not be carried out (a process would not start, say).
pub async fn run(config: &FaultConfig) -> anyhow::Result<FaultReport> {
    if config.victims.is_empty() {
        bail!("no victim to kill: name one at least");
    }
    let began = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut report = FaultReport {
        seed: config.seed,
        ..FaultReport::default()
    };
    if !config.cluster && config.victims.contains(&Victim::NatsPartition) {
        bail!("a partition needs a cluster (--cluster)");
    }
    if !config.cluster && config.victims.contains(&Victim::OrchestratorPause) {
        bail!("a pause of the leading orchestrator needs orchestrator replicas (--cluster)");
    }
    if !config.cluster && config.victims.contains(&Victim::OrchestratorPartition) {
        bail!("a partition of the leading orchestrator needs orchestrator replicas (--cluster)");
    }
    let mut system = FaultSystem::start(config.cluster, config).await?;
    let operator = fault_operator(config, &system.platform.url)?;
    system.opctl.apply(&operator, None)?;
    system.wait_ready(config, &operator, &mut report).await?;

    let mut model: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut next_name = 0;
    let initial: Vec<(Duration, Operation)> = (0..config.resources)
        .map(|_| {
            next_name += 1;
            let create = Operation::Create {
                name: format!("fault-{}", next_name - 1),
                kind: JobKind::pick(&mut rng),
                revision: 1,
            };
            (Duration::ZERO, create)
        })
        .collect();
    let attempts = spawn_workload(&system.opctl, initial, config.converge_timeout).await?;
    record(&mut model, attempts, &mut report, "set-up");
    if let Err(off) = system
        .wait_converged(&mut model, config.converge_timeout)
        .await
    {
        bail!("the first resources did not converge: {off:#?}");
    }

    // Each victim once per round, in an order of the RNG's.
    let mut victims: Vec<Victim> = Vec::new();
    for cycle in 0..config.cycles {
        if began.elapsed() > config.max_duration {
            println!(
                "faults: stopping after {cycle} cycles: --max-duration {:?} reached",
                config.max_duration
            );
            break;
        }
        if victims.is_empty() {
            victims = config.victims.clone();
            victims.shuffle(&mut rng);
        }
        let Some(victim) = victims.pop() else {
            break;
        };
        let replica_index = rng.random_range(0..config.replicas as u64);
        let node = rng.random_range(0..3usize);
        let delay =
            Duration::from_millis(rng.random_range(0..=config.kill_window.as_millis() as u64));
        let operations = plan(&mut rng, &model, config, &mut next_name);
        let context = format!("cycle {} (seed {})", cycle + 1, config.seed);

        let (seen, leader) = match system.wait_ready(config, &operator, &mut report).await {
            Ok(ready) => ready,
            Err(e) => {
                report.violations.push(format!("{context}: {e:#}"));
                break;
            }
        };
        let replica_pid = seen
            .iter()
            .find(|r| r.index == replica_index)
            .and_then(|r| r.pid);
        let hits_leader = victim == Victim::Replica && leader == Some(replica_index);
        let described: Vec<String> = operations
            .iter()
            .map(|(moment, op)| format!("{} at {} ms", op.describe(), moment.as_millis()))
            .collect();

        let workload = spawn_workload(&system.opctl, operations, config.converge_timeout);
        tokio::time::sleep(delay).await;
        let killed = tokio::task::block_in_place(|| {
            system.kill(
                victim,
                replica_pid,
                node,
                config.partition_for,
                config.lease_ttl,
            )
        })
        .with_context(|| format!("{context}: restarting the {}", victim.name()))?;
        *report.kills.entry(victim).or_default() += 1;
        if hits_leader {
            report.leader_kills += 1;
        }
        // Meanwhile an orchestrator that exits (both can, when a partition lets neither renew
        // the lease) is started again at once, as its supervisor would: the operations wait on it.
        let mut workload = workload;
        let attempts = loop {
            tokio::select! {
                attempts = &mut workload => break attempts?,
                _ = tokio::time::sleep(POLL) => system.revive_orchestrators(),
            }
        };
        record(&mut model, attempts, &mut report, &context);
        let converged = system
            .wait_converged(&mut model, config.converge_timeout)
            .await;
        report.cycles_done += 1;
        match converged {
            Ok(()) => {
                let took = killed.elapsed();
                report.convergence.entry(victim).or_default().push(took);
                if config.verbose {
                    println!(
                        "cycle {}/{}: {} {}{} at {} ms, during [{}]; converged {:.2} s after the kill",
                        cycle + 1,
                        config.cycles,
                        if victim == Victim::NatsPartition { "cut off" } else { "kill -9" },
                        victim.name(),
                        match (victim, hits_leader) {
                            (Victim::Replica, true) => format!(" {replica_index} (leader)"),
                            (Victim::Replica, false) => format!(" {replica_index}"),
                            _ => String::new(),
                        },
                        delay.as_millis(),
                        described.join(", "),
                        took.as_secs_f64()
                    );
                }
            }
            Err(off) => {
                report.violations.push(format!(
                    "{context}: after the kill of the {}{} during [{}], not converged within {:?}: {}",
                    victim.name(),
                    if hits_leader { " (the leader)" } else { "" },
                    described.join(", "),
                    config.converge_timeout,
                    off.join("; ")
                ));
                let names: Vec<&str> = off
                    .iter()
                    .filter_map(|o| o.split_once(": ").map(|(name, _)| name))
                    .collect();
                system.show_component_statuses(&names).await;
                system.show_component_logs(&names);
                for name in names {
                    if let Some(tracked) = model.get_mut(name) {
                        tracked.stuck = true;
                    }
                }
            }
        }
    }

    final_checks(&mut system, &mut model, config, &mut report).await;
    let calls = system.platform.calls();
    report.platform_starts = calls.starts.values().sum();
    report.platform_deletes = calls.deletes.values().sum();
    report.platform_fenced = calls.fenced.values().sum();
    report.orchestrators_revived = system.orchestrators_revived;
    if !report.violations.is_empty() {
        let log = system
            .orchestrators
            .iter()
            .map(OrchestratorProcess::log)
            .collect::<Vec<_>>()
            .join("\n");
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "faults: the orchestrator's last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    drop(system);
    report.total = began.elapsed();
    Ok(report)
}

/// The invariants, once everything has had time to converge.
async fn final_checks(
    system: &mut FaultSystem,
    model: &mut BTreeMap<String, Tracked>,
    config: &FaultConfig,
    report: &mut FaultReport,
) {
    let context = format!("at the end (seed {})", config.seed);
    if let Err(off) = system.wait_converged(model, config.converge_timeout).await {
        report.violations.push(format!(
            "{context}: not converged within {:?}: {}",
            config.converge_timeout,
            off.join("; ")
        ));
    }

    // What the API shows: every acknowledged apply at its generation, no deleted resource.
    let deadline = Instant::now() + config.converge_timeout;
    match tokio::task::block_in_place(|| system.listed_resources(deadline)) {
        Ok(listed) => {
            for (name, tracked) in model.iter().filter(|(_, t)| t.known()) {
                match (listed.get(name), tracked.deleted) {
                    (Some(_), true) => report.violations.push(format!(
                        "{context}: {name} was deleted (acknowledged) but is still listed"
                    )),
                    (None, false) => report.violations.push(format!(
                        "{context}: {name} was applied (acknowledged, generation {}) but is not listed",
                        tracked.generation
                    )),
                    (Some(item), false) => {
                        let message = item["manifest"]["resource"]["spec"]["message"].as_str();
                        let expected = format!("rev-{}", tracked.revision);
                        if item["generation"].as_u64() != Some(tracked.generation)
                            || message != Some(expected.as_str())
                            || item["runtime"].as_str() != Some(tracked.kind.runtime())
                        {
                            report.violations.push(format!(
                                "{context}: {name} should be at generation {} with spec {expected} and runtime {}; listed: generation {}, spec {:?}, runtime {}",
                                tracked.generation,
                                tracked.kind.runtime(),
                                item["generation"],
                                message,
                                item["runtime"]
                            ));
                        }
                    }
                    (None, true) => {}
                }
            }
            for name in listed.keys().filter(|n| !model.contains_key(*n)) {
                report
                    .violations
                    .push(format!("{context}: {name} is listed but was never applied"));
            }
        }
        Err(e) => report
            .violations
            .push(format!("{context}: cannot list the resources: {e:#}")),
    }

    if system.orchestrators.len() > 1 {
        match system.writes_after_the_fence().await {
            Ok(stale) => {
                report.violations.extend(stale.into_iter().map(|write| {
                    format!("{context}: a deposed orchestrator's write landed: {write}")
                }))
            }
            Err(e) => report.violations.push(format!(
                "{context}: cannot read the resources' stream: {e:#}"
            )),
        }
    }

    // What reached the platform: no job of a key and generation started twice, no job of a
    // live resource deleted, exactly the live resources' jobs at their generations.
    let calls = system.platform.calls();
    let jobs = system.platform.jobs();
    for (key, generations) in &calls.starts_by_generation {
        for (generation, starts) in generations.iter().filter(|(_, n)| **n > 1) {
            report.violations.push(format!(
                "{context}: the job {key} of generation {generation} was started {starts} times"
            ));
        }
    }
    for (name, tracked) in model.iter().filter(|(_, t)| t.known()) {
        let key = format!("{WORKSPACE}/{name}");
        let job = jobs.get(&key);
        if tracked.deleted {
            if let Some(generation) = job {
                report.violations.push(format!(
                    "{context}: {name} was deleted but its job (generation {generation}) is still on the platform"
                ));
            }
            continue;
        }
        if let Some(deletes) = calls.deletes.get(&key) {
            report.violations.push(format!(
                "{context}: the job of {name}, which exists, was deleted {deletes} times on the platform"
            ));
        }
        if job != Some(&tracked.generation) {
            report.violations.push(format!(
                "{context}: {name} is at generation {}, its job on the platform at {job:?}",
                tracked.generation
            ));
        }
        let started_above = calls
            .starts_by_generation
            .get(&key)
            .and_then(|g| g.keys().next_back())
            .is_some_and(|g| *g > tracked.generation);
        if started_above {
            report.violations.push(format!(
                "{context}: {name} had a job started above its generation {}",
                tracked.generation
            ));
        }
    }
}
