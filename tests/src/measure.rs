//! What the benchmarks measure with: resident sizes, the orchestrator's gauges awaited, many demo
//! jobs as one multi-document text, and how soon `opctl get` prints.

use std::collections::HashSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;

use crate::process::metric_sum;
use crate::{binary, OrchestratorProcess};

/// Resident set size of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024)
}

/// Bytes in MiB.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The resident size once it has stopped falling: sampled every 250 ms until no sample in 2 s
/// was lower (the allocator hands freed pages back over a second or so), at most 30 s.
pub async fn steady_rss(pid: u32) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut lowest = rss(pid)?;
    let mut lowest_at = Instant::now();
    while lowest_at.elapsed() < Duration::from_secs(2) && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(pid)?;
        if now < lowest {
            lowest = now;
            lowest_at = Instant::now();
        }
    }
    Ok(lowest)
}

/// Waits until the orchestrator holds no entity actor (its `orchestrator_entities_awake` gauge,
/// scraped: there is no event to await for it); returns how long that took.
pub async fn wait_asleep(http: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let awake = metric_sum(http, base, "orchestrator_entities_awake", &[]).await?;
        if awake == 0.0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{awake} entities still awake after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the orchestrator's `orchestrator_entities` gauges add up to `n`: every
/// resource read back (settled ones asleep, the others with their entity started).
pub async fn wait_restored(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Refused until the restarted orchestrator listens: asked again.
        let entities = metric_sum(http, base, "orchestrator_entities", &[])
            .await
            .unwrap_or_default();
        if entities as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{entities} of {n} entities restored after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One small demo job (instant platform) as a manifest.
pub fn job_document(name: &str) -> String {
    format!(
        "name: {name}\nversion: v1\ntype: resource\nresource:\n  operator: demo\n  type: job\n  spec: {{durationMs: 0}}\n"
    )
}

/// `count` demo jobs named `{prefix}-{i}` as one multi-document text.
pub fn job_documents(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| job_document(&format!("{prefix}-{i}")))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Watches the orchestrator's resource records of workspace `public` and answers, once `n`
/// distinct ones show `succeeded`, how many did and when the last did.
pub async fn watch_succeeded(
    js: &async_nats::jetstream::Context,
    n: usize,
) -> anyhow::Result<tokio::task::JoinHandle<(usize, Instant)>> {
    let resources_kv = js.get_key_value("orchestrator-resources").await?;
    let mut watch = resources_kv.watch("public.*").await?;
    Ok(tokio::spawn(async move {
        let mut succeeded = HashSet::new();
        while succeeded.len() < n {
            let Some(Ok(entry)) = watch.next().await else {
                break;
            };
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&entry.value) else {
                continue;
            };
            if record["status"]["runtime"] == "succeeded" {
                succeeded.insert(entry.key);
            }
        }
        (succeeded.len(), Instant::now())
    }))
}

/// How `opctl get -t resource -a` did: when its first resource row came, when it ended, and
/// how many rows it printed.
pub struct ListTiming {
    pub first_row: Duration,
    pub done: Duration,
    pub rows: usize,
}

/// Runs `opctl get -t resource -a` against `orchestrator` and times its output; a row is a
/// line that starts with `row_prefix` (the names listed).
pub async fn time_opctl_list(
    orchestrator: &OrchestratorProcess,
    row_prefix: &str,
) -> anyhow::Result<ListTiming> {
    let opctl = orchestrator.opctl();
    let row_prefix = row_prefix.to_string();
    let t = Instant::now();
    let mut child = Command::new(binary("opctl")?)
        .args(["get", "-t", "resource", "-a"])
        .env("OPCTL_SERVER", &opctl.server)
        .envs(opctl.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (first, rows) = tokio::task::spawn_blocking(move || {
        let mut first = None;
        let mut rows = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if line.trim_start().starts_with(&row_prefix) {
                first.get_or_insert_with(|| t.elapsed());
                rows += 1;
            }
        }
        Ok::<_, std::io::Error>((first, rows))
    })
    .await??;
    child.wait()?;
    let done = t.elapsed();
    Ok(ListTiming {
        first_row: first.unwrap_or(done),
        done,
        rows,
    })
}

/// Waits until the orchestrator's `orchestrator_entities{runtime="succeeded"}` gauges add up to
/// `n`, scraped every 100 ms (a watch of every record would cost the machine under test as
/// much CPU as a component); answers when it saw them.
pub async fn wait_succeeded(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let succeeded = metric_sum(
            http,
            base,
            "orchestrator_entities",
            &["runtime=\"succeeded\""],
        )
        .await?;
        if succeeded as usize >= n {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{succeeded} of {n} resources succeeded after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh system on `nats`: an orchestrator with `env`, the demo operator applied, and its
/// component with `workers` workers and `component_env`, logging warnings only.
pub struct DemoSystem {
    pub orchestrator: OrchestratorProcess,
    pub component: crate::ComponentProcess,
    /// An admin's client of the orchestrator's API.
    pub http: reqwest::Client,
}

impl DemoSystem {
    pub async fn start(
        nats: &crate::NatsServer,
        env: &[(&str, &str)],
        workers: usize,
        component_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let orchestrator = OrchestratorProcess::start_with_env(&nats.url(), env)?;
        let http = crate::process::admin_http_client()?;
        let applied = http
            .post(format!("{}/api/v1/apply", orchestrator.url()))
            .body(crate::example("demo-operator.yaml"))
            .send()
            .await?;
        anyhow::ensure!(
            applied.status().is_success(),
            "operator apply failed: {}",
            applied.text().await?
        );
        let workers = workers.to_string();
        let mut all_env = vec![
            ("OPERATOR_MAX_WORKERS", workers.as_str()),
            ("LOG_LEVEL", "warn"),
        ];
        all_env.extend_from_slice(component_env);
        let component = crate::ComponentProcess::start(&nats.url(), "demo", &all_env)?;
        Ok(Self {
            orchestrator,
            component,
            http,
        })
    }
}

/// Posts each text to `url` (an apply or a batch), `at_once` at a time; fails on the first
/// answer that is not a success or that refused a document.
pub async fn post_all(
    http: &reqwest::Client,
    url: &str,
    texts: Vec<String>,
    at_once: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(texts)
        .map(|text| async move {
            let answer = http.post(url).body(text).send().await?;
            let status = answer.status();
            let body: serde_json::Value = answer.json().await?;
            anyhow::ensure!(status.is_success(), "{status}: {body}");
            anyhow::ensure!(
                body.get("failed").is_none_or(|f| f == 0),
                "documents refused: {body}"
            );
            Ok(())
        })
        .buffer_unordered(at_once.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}
