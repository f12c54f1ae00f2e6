//! Memory per resource: the resident size (VmRSS) of the orchestrator and of the demo operator's
//! component idle, then with N resources applied through the API and reconciled (instant
//! platform), then again once a `kill -9`ed orchestrator has restored all of them from the
//! store; and the bytes each resource adds.
//!
//! `cargo build --release --workspace --bins && target/release/memory --resources 20000`
//!
//! `--heaptrack FILE` attaches heaptrack (`heaptrack -p`) to the orchestrator once it is idle
//! and stops the orchestrator with SIGTERM after the N are reconciled, so `FILE` holds every
//! allocation the N resources made; read it with `heaptrack_print --print-peaks`. heaptrack sees
//! only the system allocator: build the orchestrator for it with `--no-default-features`
//! (without jemalloc).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use operator_tests::measure::{
    job_document, mb, rss, steady_rss, wait_asleep, wait_restored, watch_succeeded, DemoSystem,
};
use operator_tests::NatsServer;

#[derive(Parser)]
struct Args {
    /// Resources applied through the API.
    #[arg(long, default_value_t = 20_000)]
    resources: usize,
    /// Applies in flight at once.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Attach heaptrack to the idle orchestrator and write its profile here (skips the restart).
    #[arg(long)]
    heaptrack: Option<std::path::PathBuf>,
    /// The orchestrator's `ORCHESTRATOR_ENTITY_IDLE_MS`; `--entity-idle-ms 3600000` keeps every
    /// entity awake, as before entities slept (a baseline for the same run).
    #[arg(long)]
    entity_idle_ms: Option<u64>,
}

/// An idle period this long means the entities are meant to stay awake: not waited for.
const KEPT_AWAKE_MS: u64 = 60_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let js = async_nats::jetstream::new(client);
    let idle_ms = args.entity_idle_ms.map(|ms| ms.to_string());
    let env: Vec<(&str, &str)> = idle_ms
        .iter()
        .map(|ms| ("ORCHESTRATOR_ENTITY_IDLE_MS", ms.as_str()))
        .collect();
    let DemoSystem {
        mut orchestrator,
        component,
        http,
    } = DemoSystem::start(&nats, &env, 64, &[]).await?;
    let orchestrator_pid = orchestrator.pid().context("orchestrator not running")?;
    let component_pid = component.pid().context("component not running")?;
    let idle = (rss(orchestrator_pid)?, rss(component_pid)?);

    let mut heaptrack = match &args.heaptrack {
        Some(file) => Some(attach_heaptrack(orchestrator_pid, file)?),
        None => None,
    };

    let start = Instant::now();
    apply_all(
        &http,
        &orchestrator.url(),
        &js,
        args.resources,
        args.in_flight,
    )
    .await?;
    let reconciled_in = start.elapsed();
    let loaded = (rss(orchestrator_pid)?, rss(component_pid)?);
    let n = args.resources as f64;
    // Settled resources give up their actors after the idle period: measured again once every
    // one sleeps.
    let kept_awake = args.entity_idle_ms.is_some_and(|ms| ms >= KEPT_AWAKE_MS);
    let asleep = if kept_awake {
        None
    } else {
        let after = wait_asleep(&http, &orchestrator.url()).await?;
        Some((after, steady_rss(orchestrator_pid).await?))
    };

    println!(
        "{} resources applied and reconciled in {:.1} s",
        args.resources,
        reconciled_in.as_secs_f64()
    );
    println!(
        "{:<44} {:>10} {:>12} {:>16}",
        "RSS", "idle MB", "at N MB", "bytes/resource"
    );
    for (name, idle, at_n) in [
        ("orchestrator", idle.0, loaded.0),
        ("component (demo operator)", idle.1, loaded.1),
    ] {
        println!(
            "{name:<44} {:>10.1} {:>12.1} {:>16.0}",
            mb(idle),
            mb(at_n),
            at_n.saturating_sub(idle) as f64 / n
        );
    }
    if let Some((after, asleep)) = asleep {
        println!(
            "{:<44} {:>10} {:>12.1} {:>16.0}",
            format!(
                "orchestrator, every entity asleep (+{:.1} s)",
                after.as_secs_f64()
            ),
            "",
            mb(asleep),
            asleep.saturating_sub(idle.0) as f64 / n
        );
    }

    if let Some(child) = heaptrack.as_mut() {
        orchestrator.terminate(Duration::from_secs(60))?;
        let status = child.wait()?;
        println!(
            "heaptrack ended ({status}); profile in {:?}",
            args.heaptrack
        );
        return Ok(());
    }

    // A restart: every record read back from the store, every entity started again.
    let start = Instant::now();
    orchestrator.restart()?;
    let pid = orchestrator.pid().context("orchestrator not running")?;
    wait_restored(&http, &orchestrator.url(), args.resources).await?;
    let restored_in = start.elapsed();
    let restored = steady_rss(pid).await?;
    println!(
        "{:<44} {:>10} {:>12.1} {:>16.0}",
        format!(
            "orchestrator after kill -9, restored ({:.1} s)",
            restored_in.as_secs_f64()
        ),
        "",
        mb(restored),
        restored.saturating_sub(idle.0) as f64 / n
    );
    Ok(())
}

/// Starts `heaptrack -p PID -o FILE` and waits until it says it is attached.
fn attach_heaptrack(pid: u32, file: &std::path::Path) -> anyhow::Result<Child> {
    let log = tempfile::NamedTempFile::new()?;
    let child = Command::new("heaptrack")
        .arg("-o")
        .arg(file)
        .arg("-p")
        .arg(pid.to_string())
        .stdout(log.reopen()?)
        .stderr(log.reopen()?)
        .spawn()
        .context("starting heaptrack (apt-get install heaptrack)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log.path())?;
        if text.contains("injection finished") {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("heaptrack did not attach within 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Applies `n` small demo jobs through the API, `in_flight` at a time, and waits until the
/// orchestrator's record of each says `succeeded` (watched on its KV bucket).
async fn apply_all(
    http: &reqwest::Client,
    base: &str,
    js: &async_nats::jetstream::Context,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let watcher = watch_succeeded(js, n).await?;
    let url = format!("{base}/api/v1/apply?workspace=public");
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let name = format!("mem-{i}");
                let response = http.post(&url).body(job_document(&name)).send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "apply {name}: {}",
                    response.text().await?
                );
                Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let (done, _) = tokio::time::timeout(Duration::from_secs(900), watcher)
        .await
        .context("resources were not all reconciled within 15 minutes")??;
    anyhow::ensure!(done == n, "the watch ended after {done} of {n} reconciled");
    Ok(())
}
