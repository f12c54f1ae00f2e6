//! A NATS cluster for the cluster flows: N real `nats-server` nodes with JetStream, each a host
//! of its own — a network namespace with one veth on a bridge the harness makes, address
//! 10.251.R.i — with the standard ports, so the routes are known before any node starts and a
//! killed node comes back where it was. Being hosts of their own, nodes can be partitioned for
//! real: a node's link taken down (cut from everything), or its peers' packets dropped inside its
//! namespace (cut from the other nodes, still reached by its clients). Clients may be hosts of
//! their own on the same bridge too ([`NatsCluster::add_host`]: an orchestrator replica, say),
//! and be cut off the same way. Everything the harness made is removed when the cluster is
//! dropped. Needs root and iproute2 (and iptables for a
//! partition from the peers).

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

/// One node: its host (namespace, link), address, store and log.
struct Node {
    name: String,
    namespace: String,
    /// The bridge side of its veth pair.
    link: String,
    ip: String,
    store: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

/// A host on the cluster's bridge for something other than a node: a namespace with an
/// address, where a process is started with `ip netns exec` (in place: same pid).
#[derive(Debug, Clone)]
pub struct Host {
    pub namespace: String,
    /// The bridge side of its veth pair.
    link: String,
    pub ip: String,
}

impl Host {
    /// `program` to be run inside this host.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }
}

/// N clustered nats-server processes, each in a network namespace of its own. Dropped, it
/// kills them first, then removes the network (its fields drop in this order).
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// The third byte of every address: 10.251.R.x.
    r: u8,
    hosts: usize,
    routes: String,
    _logs: tempfile::TempDir,
    network: Network,
}

/// The bridge the nodes' hosts hang on, their namespaces, and the rule that lets bridged
/// traffic through a host firewall whose FORWARD policy drops (Docker's does).
struct Network {
    bridge: String,
    namespaces: Vec<String>,
    forward_rule: bool,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (iproute2): the cluster's hosts are network namespaces")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn forward_rule(action: &str, bridge: &str) -> anyhow::Result<()> {
    let status = Command::new("iptables")
        .args([
            action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run iptables")?;
    if !status.success() {
        bail!("iptables {action} FORWARD for {bridge} failed: {status}");
    }
    Ok(())
}

impl Network {
    /// The bridge `opbr<R>` with 10.251.R.254 (the address clients on this host come from).
    fn create(r: u8) -> anyhow::Result<Self> {
        let bridge = format!("opbr{r}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let mut network = Self {
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            forward_rule: false,
        };
        ip(&["addr", "add", &format!("10.251.{r}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        // Without iptables there is no FORWARD policy to get past either.
        network.forward_rule = forward_rule("-I", &bridge).is_ok();
        Ok(network)
    }

    /// A host: namespace `ns`, veth `link` (bridge side) to `link`-peer inside, address `ip`.
    fn add_host(&mut self, ns: &str, link: &str, addr: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        let inside = format!("{link}i");
        ip(&["link", "add", link, "type", "veth", "peer", "name", &inside])?;
        ip(&["link", "set", &inside, "netns", ns])?;
        ip(&["link", "set", link, "master", &self.bridge])?;
        ip(&["link", "set", link, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", ns, "link", "set", &inside, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair in it.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        if self.forward_rule {
            let _ = forward_rule("-D", &self.bridge);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl NatsCluster {
    /// Starts `n` nodes named `n1`… and waits until each accepts clients. JetStream elects its
    /// meta leader a moment later: see [`NatsCluster::wait_ready`].
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..5 {
            let r: u8 = rand::rng().random_range(1..=250);
            match Self::start_at(r, n) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no cluster started")))
    }

    fn start_at(r: u8, n: usize) -> anyhow::Result<Self> {
        let mut network = Network::create(r)?;
        let logs = crate::process::log_dir()?;
        let ips: Vec<String> = (1..=n).map(|i| format!("10.251.{r}.{i}")).collect();
        let routes = ips
            .iter()
            .map(|ip| format!("nats://{ip}:{ROUTE_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, ip) in ips.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let namespace = format!("opns{r}{name}");
            let link = format!("opv{r}{name}");
            network.add_host(&namespace, &link, &ip)?;
            nodes.push(Node {
                log: logs.path().join(format!("{name}.log")),
                name,
                namespace,
                link,
                ip,
                store: tempfile::tempdir()?,
                child: None,
            });
        }
        let mut cluster = Self {
            nodes,
            r,
            hosts: 0,
            routes,
            _logs: logs,
            network,
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
        // `ip netns exec` runs the server in place (same pid) inside the node's namespace.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.namespace, &bin])
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

    /// A new host on the cluster's bridge, `name` being a few letters (link names are at most
    /// 15 characters): for a client that a test cuts off with [`NatsCluster::partition_host`].
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        self.hosts += 1;
        let r = self.r;
        let host = Host {
            namespace: format!("opns{r}{name}"),
            link: format!("opv{r}{name}"),
            ip: format!("10.251.{r}.{}", 100 + self.hosts),
        };
        self.network
            .add_host(&host.namespace, &host.link, &host.ip)?;
        Ok(host)
    }

    /// The address of this machine on the cluster's bridge: where a server that the hosts
    /// must reach listens.
    pub fn gateway(&self) -> String {
        format!("10.251.{}.254", self.r)
    }

    /// Cuts `host` off from everything (the nodes, this machine) until healed: its link goes
    /// down, its TCP connections stay open, as in a real partition.
    pub fn partition_host(&self, host: &Host) -> anyhow::Result<Partition> {
        link_down(&host.link)
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

    /// The node that leads consumer `consumer` of `stream`.
    pub async fn consumer_leader(
        &self,
        js: &jetstream::Context,
        stream: &str,
        consumer: &str,
    ) -> anyhow::Result<String> {
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await?
            .get_consumer(consumer)
            .await
            .map_err(|e| anyhow::anyhow!("consumer {consumer} of {stream}: {e}"))?;
        let info = consumer.info().await?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .with_context(|| format!("consumer {} of {stream} has no leader", info.name))
    }

    /// The node that last said it became the JetStream meta leader, from the nodes' logs.
    pub fn meta_leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let text = std::fs::read_to_string(&n.log).ok()?;
                let line = text
                    .lines()
                    .rfind(|l| l.contains("Self is new JetStream cluster metadata leader"))?;
                // Lines start `[pid] yyyy/mm/dd hh:mm:ss.micros`: comparable as text.
                let stamp = line.split_once("] ")?.1.get(..26)?.to_string();
                Some((stamp, n.name.clone()))
            })
            .max()
            .map(|(_, name)| name)
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

/// A node cut off, until healed (also when dropped).
pub struct Partition {
    /// Undoes the cut: `ip` arguments, or iptables rules inside a namespace.
    undo: Vec<Vec<String>>,
}

impl NatsCluster {
    /// Cuts node `i` off from the other nodes and from every client: its link goes down (the
    /// TCP connections stay open, as in a real partition) until healed.
    pub fn partition(&self, i: usize) -> anyhow::Result<Partition> {
        link_down(&self.nodes[i].link)
    }

    /// Cuts node `i` off from the other nodes only: inside its host, packets from them are
    /// dropped; its clients still reach it, and it is a minority of one that must take no write.
    pub fn partition_from_peers(&self, i: usize) -> anyhow::Result<Partition> {
        let ns = self.nodes[i].namespace.clone();
        let mut partition = Partition { undo: Vec::new() };
        for (_, peer) in self.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            let rule = |action: &str| -> Vec<String> {
                [
                    "ip", "netns", "exec", &ns, "iptables", action, "INPUT", "-s", &peer.ip, "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            };
            run(&rule("-I"))?;
            partition.undo.push(rule("-D"));
        }
        Ok(partition)
    }
}

/// Takes `link` down, until the partition is healed.
fn link_down(link: &str) -> anyhow::Result<Partition> {
    ip(&["link", "set", link, "down"])?;
    Ok(Partition {
        undo: vec![vec![
            "ip".into(),
            "link".into(),
            "set".into(),
            link.to_string(),
            "up".into(),
        ]],
    })
}

fn run(command: &[String]) -> anyhow::Result<()> {
    let status = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", command[0]))?;
    if !status.success() {
        bail!("{} failed: {status}", command.join(" "));
    }
    Ok(())
}

impl Partition {
    /// Lets traffic through again.
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for command in std::mem::take(&mut self.undo) {
            if let Err(e) = run(&command) {
                result = Err(e);
            }
        }
        result
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.undo_all();
    }
}
