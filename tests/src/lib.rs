//! Test harness: a real `nats-server` on a free port, the real `orchestrator`, `demo-operator`
//! and `opctl` binaries as processes, and a small jobs platform that records every call.
//!
//! The binaries must be built first (`cargo build --workspace --bins`); `tests/run` does it.

pub mod adf;
pub mod cluster;
pub mod faults;
pub mod measure;
pub mod otlp;
pub mod platform;
pub mod postgres;
pub mod process;
pub mod replicas;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;

pub use cluster::NatsCluster;
pub use otlp::OtlpReceiver;
pub use platform::Platform;
pub use process::{
    ComponentProcess, Following, NatsServer, Opctl, OrchestratorProcess, StandinProcess,
};
pub use replicas::{Leader, ReplicaSet};

/// The directory the workspace's binaries are built into: beside this executable, or one level
/// up when it is a test (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).unwrap_or_default()
    } else {
        dir
    }
}

/// The path of a workspace binary, or an error telling how to build it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

/// The example manifests shipped in `deploy/examples`.
pub fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits, by watching the orchestrator's resource bucket, until the record of `workspace/name`
/// satisfies `done`; returns that record. `None` is passed while the record does not exist. A
/// watch that breaks (a NATS node lost under it) is set up again until the timeout.
pub async fn wait_for_resource(
    nats: &async_nats::Client,
    workspace: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(Option<&Value>) -> bool,
) -> anyhow::Result<Option<Value>> {
    let key = format!("{workspace}.{name}");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<Value> = None;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        match watch_resource(nats, &key, deadline, &done, &mut last).await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => break,
            Err(e) => {
                last_error = format!("{e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    bail!("timed out waiting for {key}; last record: {last:?}; last error: {last_error}")
}

/// One watch of `key` until `done` (Some), the deadline (None) or a broken watch (an error).
async fn watch_resource(
    nats: &async_nats::Client,
    key: &str,
    deadline: tokio::time::Instant,
    done: &impl Fn(Option<&Value>) -> bool,
    last: &mut Option<Value>,
) -> anyhow::Result<Option<Option<Value>>> {
    let js = async_nats::jetstream::new(nats.clone());
    let kv = js
        .get_key_value("orchestrator-resources")
        .await
        .context("orchestrator bucket missing")?;
    let mut watch = kv.watch_with_history(key).await?;
    // The watch replays the current value (if any) first, so nothing between read and watch is missed.
    let current = kv.get(key).await?;
    *last = current.map(|b| serde_json::from_slice(&b)).transpose()?;
    if done(last.as_ref()) {
        return Ok(Some(last.clone()));
    }
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
            return Ok(None);
        };
        let entry = next.context("watch ended")??;
        *last = match entry.operation {
            async_nats::jetstream::kv::Operation::Put => {
                Some(serde_json::from_slice(&entry.value)?)
            }
            _ => None,
        };
        if done(last.as_ref()) {
            return Ok(Some(last.clone()));
        }
    }
}

/// The `runtime` a resource record holds, if any.
pub fn runtime_of(record: Option<&Value>) -> Option<&str> {
    record?.get("status")?.get("runtime")?.as_str()
}

/// The `status` a resource record holds, if the component reported one.
pub fn status_of(record: Option<&Value>) -> Option<&str> {
    record?.get("status")?.get("status")?.as_str()
}

/// The environment that points a component at the seed operator's subjects (its `natsApi`).
pub fn seed_component_env(platform_url: &str, store_type: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("DEMO_PLATFORM_URL".to_string(), platform_url.to_string()),
        (
            "OPERATOR_STATE_STORE_TYPE".to_string(),
            store_type.to_string(),
        ),
    ];
    env.extend(seed_wiring_env());
    env
}

/// The seed operator's NATS wiring (its `natsApi`) as a component's environment.
pub fn seed_wiring_env() -> Vec<(String, String)> {
    [
        ("ENTITY_OF_INTEREST_MESSAGE_STREAM", "dataos-azure-entities"),
        (
            "ENTITY_OF_INTEREST_MESSAGE_QUEUE",
            "azure-entities-adf-52323",
        ),
        (
            "ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT",
            "dataos.operator.adf.query",
        ),
        (
            "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT",
            "dataos.operator.adf.reply",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A whole system for one test: NATS, the orchestrator, a jobs platform and `opctl`.
pub struct TestSystem {
    pub nats: NatsServer,
    pub orchestrator: OrchestratorProcess,
    pub platform: Platform,
    pub client: async_nats::Client,
    pub opctl: Opctl,
}

impl TestSystem {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_orchestrator_env(&[]).await
    }

    /// A system whose orchestrator gets `env` besides what the harness sets.
    pub async fn start_with_orchestrator_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let orchestrator = OrchestratorProcess::start_with_env(&nats.url(), env)?;
        let platform = Platform::start()?;
        let client = nats.client().await?;
        let opctl = orchestrator.opctl();
        Ok(Self {
            nats,
            orchestrator,
            platform,
            client,
            opctl,
        })
    }

    /// Applies the demo operator and starts its component against the platform.
    pub fn start_demo_component(&self, store_type: &str) -> anyhow::Result<ComponentProcess> {
        self.opctl.apply(&example("demo-operator.yaml"), None)?;
        ComponentProcess::start(
            &self.nats.url(),
            "demo",
            &[
                ("DEMO_PLATFORM_URL", self.platform.url.as_str()),
                ("OPERATOR_STATE_STORE_TYPE", store_type),
            ],
        )
    }

    /// A demo job manifest.
    pub fn job(name: &str, spec: &str) -> String {
        format!("name: {name}\nversion: v1\ntype: resource\nowner: tester\nresource:\n  operator: demo\n  type: job\n  spec: {spec}\n")
    }
}
