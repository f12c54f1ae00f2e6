//! A NATS cluster for the cluster flows: N real `nats-server` nodes with JetStream, each on an
//! address of its own in 127.0.0.0/8 with the standard ports, so the routes are known before any
//! node starts and a killed node comes back where it was. A cluster draws its addresses at random
//! (127.A.B.1…N) and draws again when a node cannot listen.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream;
use rand::Rng as _;

use crate::process::{kill, wait_for_port};

/// The client port of every node (on the node's own address).
pub const CLIENT_PORT: u16 = 4222;
/// The route port of every node.
pub const ROUTE_PORT: u16 = 6222;

/// One node: its address, store and log.
struct Node {
    name: String,
    ip: String,
    store: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

/// N clustered nats-server processes.
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
    _logs: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes named `n1`… and waits until each accepts clients. JetStream elects its
    /// meta leader a moment later: see [`NatsCluster::wait_ready`].
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..5 {
            let mut rng = rand::rng();
            let base = format!(
                "127.{}.{}",
                rng.random_range(1..=254),
                rng.random_range(1..=254)
            );
            match Self::start_at(&base, n) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no cluster started")))
    }

    fn start_at(base: &str, n: usize) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let ips: Vec<String> = (1..=n).map(|i| format!("{base}.{i}")).collect();
        let routes = ips
            .iter()
            .map(|ip| format!("nats://{ip}:{ROUTE_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, ip) in ips.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            nodes.push(Node {
                log: logs.path().join(format!("{name}.log")),
                name,
                ip,
                store: tempfile::tempdir()?,
                child: None,
            });
        }
        let mut cluster = Self {
            nodes,
            routes,
            _logs: logs,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut child = Command::new(&bin)
            .args(["-js", "-a", &node.ip, "-p", &CLIENT_PORT.to_string()])
            .args(["-n", &node.name, "--cluster_name", "c1"])
            .args(["--cluster", &format!("nats://{}:{ROUTE_PORT}", node.ip)])
            .args(["--routes", &self.routes, "-sd"])
            .arg(node.store.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        wait_for_port(
            &format!("{}:{CLIENT_PORT}", node.ip),
            Duration::from_secs(10),
            &format!("nats-server {}", node.name),
            &mut child,
        )?;
        node.child = Some(child);
        Ok(())
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma-separated: what `NATS_URL` takes.
    pub fn url(&self) -> String {
        (0..self.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://{}:{CLIENT_PORT}", self.nodes[i].ip)
    }

    /// Node `i`'s server name (`n1`…).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// A client that knows every node.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let servers: Vec<String> = (0..self.len()).map(|i| self.node_url(i)).collect();
        Ok(async_nats::connect(servers).await?)
    }

    /// Waits until JetStream answers account requests (it has a meta leader).
    pub async fn wait_ready(
        &self,
        client: &async_nats::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let js = jetstream::new(client.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match js.query_account().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    bail!(
                        "JetStream not ready within {timeout:?}: {e}\n{}",
                        self.logs()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill(&mut child);
        }
    }

    /// Starts node `i` again, on its address and store.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// The name of the node leading `stream`'s RAFT group, as JetStream reports it.
    pub async fn stream_leader(
        &self,
        js: &jetstream::Context,
        stream: &str,
    ) -> anyhow::Result<String> {
        let mut stream = js.get_stream(stream).await?;
        let info = stream.info().await?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .with_context(|| format!("{stream:?} has no leader"))
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", n.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A node cut off from everything else (the other nodes and every client) by DROP rules on
/// its address, until healed (also when dropped).
pub struct Partition {
    ip: String,
    healed: bool,
}

/// The rules that cut `ip` off: whatever it sends and whatever is sent to it.
fn partition_rules(ip: &str) -> [[String; 2]; 2] {
    [
        ["-s".to_string(), ip.to_string()],
        ["-d".to_string(), ip.to_string()],
    ]
}

fn iptables(action: &str, rule: &[String; 2]) -> anyhow::Result<()> {
    let status = Command::new("iptables")
        .args([action, "INPUT", &rule[0], &rule[1], "-j", "DROP"])
        .args(["-m", "comment", "--comment", "operator-tests-partition"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run iptables (a partition needs iptables and root)")?;
    if !status.success() {
        bail!(
            "iptables {action} INPUT {} {} failed: {status}",
            rule[0],
            rule[1]
        );
    }
    Ok(())
}

impl NatsCluster {
    /// Cuts node `i` off from the rest: its routes and its clients' connections stop carrying
    /// anything (the TCP connections stay open, as in a real partition) until healed.
    pub fn partition(&self, i: usize) -> anyhow::Result<Partition> {
        let ip = self.nodes[i].ip.clone();
        let mut partition = Partition { ip, healed: true };
        for rule in partition_rules(&partition.ip) {
            iptables("-I", &rule)?;
            partition.healed = false;
        }
        Ok(partition)
    }
}

impl Partition {
    /// Lets traffic through again.
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.remove_rules()
    }

    fn remove_rules(&mut self) -> anyhow::Result<()> {
        if self.healed {
            return Ok(());
        }
        self.healed = true;
        let mut result = Ok(());
        for rule in partition_rules(&self.ip) {
            if let Err(e) = iptables("-D", &rule) {
                result = Err(e);
            }
        }
        result
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.remove_rules();
    }
}
