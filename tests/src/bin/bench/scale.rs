//! The scale mode (`bench --scale [N]`): N demo jobs applied through the batch endpoint on a fresh
//! system, and every figure of one small machine's capacity from that one run: resident sizes of
//! the orchestrator, the component and nats-server idle, at N and settled; bytes per resource;
//! applied and reconciled per second; the time to the first row of `opctl get -a`; and the time
//! a `kill -9`ed orchestrator takes to restore the N.

use std::time::{Duration, Instant};

use anyhow::Context;
use operator_tests::measure::{
    job_document, job_documents, mb, post_all, rss, steady_rss, time_opctl_list, wait_asleep,
    wait_restored, wait_succeeded, DemoSystem,
};
use operator_tests::NatsServer;

/// Documents per batch request: a file of this many, as `opctl apply -f` would send it.
const PER_FILE: usize = 2000;

/// Resident sizes of the three processes at one moment.
#[derive(Clone, Copy)]
struct Sizes {
    orchestrator: u64,
    component: u64,
    nats: u64,
}

pub struct Scale {
    pub resources: usize,
    pub workers: usize,
    pub files_at_once: usize,
}

/// What the raw primitives gave in the same run, to set beside the control plane's rate.
pub struct RawRates {
    pub kv_put_sequential: f64,
    pub kv_put_pipelined: f64,
    pub in_flight: usize,
}

pub async fn run(scale: &Scale, raw: &RawRates) -> anyhow::Result<()> {
    let n = scale.resources;
    let nats = NatsServer::start()?;
    let DemoSystem {
        mut orchestrator,
        component,
        http,
    } = DemoSystem::start(&nats, &[], scale.workers, &[]).await?;
    let nats_pid = nats.pid().context("nats-server not running")?;
    let component_pid = component.pid().context("component not running")?;
    let sizes = |orchestrator_pid| -> anyhow::Result<Sizes> {
        Ok(Sizes {
            orchestrator: rss(orchestrator_pid)?,
            component: rss(component_pid)?,
            nats: rss(nats_pid)?,
        })
    };
    // Idle means running and warmed up: one job reconciled end to end first.
    let warmed = http
        .post(format!(
            "{}/api/v1/apply?workspace=public",
            orchestrator.url()
        ))
        .body(job_document("warm-up"))
        .send()
        .await?;
    anyhow::ensure!(warmed.status().is_success(), "{}", warmed.text().await?);
    wait_succeeded(&http, &orchestrator.url(), 1, Duration::from_secs(60)).await?;
    let orchestrator_pid = orchestrator.pid().context("orchestrator not running")?;
    let idle = sizes(orchestrator_pid)?;

    let files: Vec<String> = (0..n.div_ceil(PER_FILE))
        .map(|f| job_documents(&format!("s{f}"), PER_FILE.min(n - f * PER_FILE)))
        .collect();
    let url = format!("{}/api/v1/batch?workspace=public", orchestrator.url());
    let start = Instant::now();
    let reconciled = {
        let (http, base) = (http.clone(), orchestrator.url());
        tokio::spawn(
            async move { wait_succeeded(&http, &base, n, Duration::from_secs(1800)).await },
        )
    };
    post_all(&http, &url, files, scale.files_at_once).await?;
    let applied_in = start.elapsed();
    let reconciled_in = reconciled.await??.duration_since(start);
    let at_n = sizes(orchestrator_pid)?;
    let asleep_after = wait_asleep(&http, &orchestrator.url()).await?;
    let settled = Sizes {
        orchestrator: steady_rss(orchestrator_pid).await?,
        component: steady_rss(component_pid).await?,
        nats: rss(nats_pid)?,
    };

    let listed = time_opctl_list(&orchestrator, "s").await?;
    anyhow::ensure!(
        listed.rows == n,
        "opctl printed {} of {n} rows",
        listed.rows
    );

    let start = Instant::now();
    orchestrator.restart()?;
    let orchestrator_pid = orchestrator.pid().context("orchestrator not running")?;
    wait_restored(&http, &orchestrator.url(), n + 1).await?;
    let restored_in = start.elapsed();
    let restored = steady_rss(orchestrator_pid).await?;

    let per = |at: u64, idle: u64| at.saturating_sub(idle) as f64 / n as f64;
    println!();
    println!(
        "scale: {n} demo jobs (instant platform) as {} batch requests of ≤ {PER_FILE} documents, {} at once; component with {} workers",
        n.div_ceil(PER_FILE),
        scale.files_at_once,
        scale.workers
    );
    println!(
        "{:<40} {:>10} {:>10} {:>12} {:>16}",
        "RSS", "idle MB", "at N MB", "settled MB", "settled B/res"
    );
    for (name, idle, at_n, settled) in [
        (
            "orchestrator",
            idle.orchestrator,
            at_n.orchestrator,
            settled.orchestrator,
        ),
        (
            "component (demo operator)",
            idle.component,
            at_n.component,
            settled.component,
        ),
        ("nats-server", idle.nats, at_n.nats, settled.nats),
    ] {
        println!(
            "{name:<40} {:>10.1} {:>10.1} {:>12.1} {:>16.0}",
            mb(idle),
            mb(at_n),
            mb(settled),
            per(settled, idle)
        );
    }
    println!(
        "{:<40} {:>10.1} {:>10.1} {:>12.1} {:>16.0}",
        "orchestrator + component",
        mb(idle.orchestrator + idle.component),
        mb(at_n.orchestrator + at_n.component),
        mb(settled.orchestrator + settled.component),
        per(
            settled.orchestrator + settled.component,
            idle.orchestrator + idle.component
        )
    );
    println!(
        "(settled: every entity asleep, {:.1} s after the last was reconciled, and the resident size no longer falling)",
        asleep_after.as_secs_f64()
    );
    let rate = n as f64 / reconciled_in.as_secs_f64();
    println!(
        "applied in {:.2} s ({:.0}/s); all reconciled in {:.2} s: {rate:.0} applied→reconciled/s",
        applied_in.as_secs_f64(),
        n as f64 / applied_in.as_secs_f64(),
        reconciled_in.as_secs_f64(),
    );
    println!(
        "  beside raw KV puts of the same run: {:.2}× sequential ({:.0}/s), {:.2}× {} in flight ({:.0}/s)",
        rate / raw.kv_put_sequential,
        raw.kv_put_sequential,
        rate / raw.kv_put_pipelined,
        raw.in_flight,
        raw.kv_put_pipelined
    );
    println!(
        "opctl get -t resource -a: first row after {:.1} ms, all {n} rows after {:.1} ms",
        listed.first_row.as_secs_f64() * 1000.0,
        listed.done.as_secs_f64() * 1000.0
    );
    println!(
        "orchestrator kill -9 → all {n} restored: {:.2} s, then {:.1} MB",
        restored_in.as_secs_f64(),
        mb(restored)
    );
    Ok(())
}
