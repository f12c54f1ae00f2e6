//! The ADF operator's monitoring budget end to end: many runs of one factory in flight against
//! the stand-in stay within `ADF_MONITOR_BUDGET_PER_MINUTE`, all reach their end, none starves,
//! and the budget's state is in the KV bucket where a new leader finds it; the leader publishes
//! each factory's use, which `opctl get -t operator -n adf-operator -d` shows.
//!
//! Short by default (for CI); the full version: `ADF_BUDGET_RUNS=300
//! ADF_BUDGET_PER_MINUTE=600 ADF_BUDGET_RUN_MS=60000 cargo test -p operator-tests --test
//! adf_budget -- --nocapture` (figures in the README).

use std::time::{Duration, Instant};

use futures::StreamExt;
use operator_tests::adf::*;
use operator_tests::*;
use serde_json::{json, Value};

const FACTORY: &str = "datafactoryoz3un3trdpaa";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn many_runs_of_one_factory_stay_within_its_monitoring_budget_and_none_starves(
) -> anyhow::Result<()> {
    let runs = setting("ADF_BUDGET_RUNS", 40) as usize;
    let per_minute = setting("ADF_BUDGET_PER_MINUTE", 300);
    let run_ms = setting("ADF_BUDGET_RUN_MS", 3_000);
    let budget = per_minute.to_string();
    let adf = Adf::start_with(
        "jetstream_kv",
        &[
            ("ADF_MONITOR_BUDGET_PER_MINUTE", &budget),
            ("OPERATOR_MAX_WORKERS", "8"),
            ("ADF_POLL_MIN_MS", "200"),
            ("ADF_POLL_MAX_MS", "2000"),
            // Elected, as the seed runs it: the leader's heartbeat carries the budget's use.
            ("ELECTION_CLUSTER_NAME", "azure-operators"),
        ],
        &[],
        &[],
    )
    .await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/BudgetPipeline",
        Some(json!({"outcome": "succeed", "runMs": run_ms})),
    )
    .await?;
    let names: Vec<String> = (0..runs).map(|i| format!("budget-run-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|name| Adf::run_manifest(name, "BudgetPipeline"))
        .collect();
    let started = Instant::now();
    adf.system
        .opctl
        .apply(&manifests.join("\n---\n"), Some("public"))?;

    // Generous: every run needs at least one poll after it ends, two calls each.
    let wait =
        Duration::from_millis(run_ms) + Duration::from_secs(60 + 2 * runs as u64 * 60 / per_minute);
    for name in &names {
        wait_for_resource(&adf.system.client, "public", name, wait, |r| {
            runtime_of(r) == Some("succeeded")
        })
        .await?;
    }
    let finished = started.elapsed();

    let window_ms = (60_000).min((finished.as_millis() as u64 / 2).max(5_000));
    let report = adf
        .control(
            reqwest::Method::GET,
            &format!("monitoring?windowMs={window_ms}"),
            None,
        )
        .await?;
    let factory = &report["factories"][FACTORY];
    let calls = factory["calls"].as_u64().unwrap_or(0);
    let busiest = factory["maxInWindow"].as_u64().unwrap_or(u64::MAX);
    // One more for the spacing at the window edges, one for arrival jitter.
    let allowed = per_minute * window_ms / 60_000 + 2;
    let max_gap_ms = report["maxPollGapMs"].as_u64().unwrap_or(u64::MAX);
    let span_s = factory["spanMs"].as_u64().unwrap_or(0) as f64 / 1000.0;
    eprintln!(
        "runs: {runs}, budget: {per_minute}/min, run: {run_ms} ms; all ended after {:.1} s; \
         monitoring calls: {calls} ({:.0}/min on average over {span_s:.1} s); busiest {window_ms} ms \
         window: {busiest} calls (allowed {allowed}); longest gap between two polls of a run: \
         {:.1} s",
        finished.as_secs_f64(),
        calls as f64 * 60.0 / span_s.max(1.0),
        max_gap_ms as f64 / 1000.0
    );
    assert!(calls >= 2 * runs as u64, "every run was polled: {report}");
    assert!(busiest <= allowed, "over budget: {report}");
    assert_eq!(report["runsPolled"], runs, "{report}");
    // A round of every run's poll (two calls each) at the budget's pace, plus the floor.
    let round_ms = 2 * runs as u64 * 60_000 / per_minute;
    assert!(
        max_gap_ms <= 2 * round_ms + 5_000,
        "a run starved: {max_gap_ms} ms between two polls, a round takes {round_ms} ms"
    );

    // The pacing state is where the next leader reads it.
    let js = async_nats::jetstream::new(adf.system.client.clone());
    let kv = js.get_key_value("shared-adf-monitor-budget").await?;
    let state = kv
        .get(format!("engineering.{FACTORY}"))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no budget state for the factory"))?;
    let state: Value = serde_json::from_slice(&state)?;
    assert!(state["nextFreeMs"].as_i64() > Some(0), "{state}");

    // The leader's next heartbeat carries the budget's use; the operator's record shows it.
    let election = js.get_key_value("election-azure-operators").await?;
    let mut heartbeats = election.watch("replica.adf-operator.>").await?;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(entry) = heartbeats.next().await {
            let heartbeat: Value = serde_json::from_slice(&entry?.value).unwrap_or_default();
            if heartbeat
                .pointer("/details/monitoringBudget/0/factory")
                .is_some()
            {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the heartbeat watch ended")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no heartbeat carried the budget's use within 30 s"))??;
    let run = adf
        .system
        .opctl
        .run(&["get", "-t", "operator", "-n", "adf-operator", "-d"])?;
    assert_eq!(run.code, 0, "{run:?}");
    let shown = run.stdout;
    assert!(
        shown.contains("Operator details (published by the leader of adf-controller):"),
        "{shown}"
    );
    eprintln!("{shown}");
    assert!(
        shown.contains("FACTORY") && shown.contains("USED LAST MINUTE"),
        "{shown}"
    );
    let row = shown
        .lines()
        .find(|line| line.contains(&format!("engineering.{FACTORY}")))
        .ok_or_else(|| anyhow::anyhow!("no row for the factory:\n{shown}"))?;
    assert!(row.contains(&format!("| {per_minute} ")), "{row}");
    Ok(())
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_factorys_monitoring_for_every_run() -> anyhow::Result<()>
{
    let adf = Adf::start_with("memory", &[("OPERATOR_MAX_WORKERS", "8")], &[], &[]).await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/PausedPipeline",
        Some(json!({"outcome": "succeed", "runMs": 15_000})),
    )
    .await?;
    let names: Vec<String> = (0..6).map(|i| format!("paused-run-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|name| Adf::run_manifest(name, "PausedPipeline"))
        .collect();
    adf.system
        .opctl
        .apply(&manifests.join("\n---\n"), Some("public"))?;
    for name in &names {
        adf.wait_runtime(name, "inprogress").await?;
    }
    adf.control(
        reqwest::Method::POST,
        "faults",
        Some(json!({"throttle": 1, "retryAfterS": 3})),
    )
    .await?;
    for name in &names {
        adf.wait_runtime(name, "succeeded").await?;
    }
    let calls = adf.calls().await?;
    assert_eq!(calls["answered"]["429"], 1, "{calls}");
    let report = adf
        .control(reqwest::Method::GET, "monitoring", None)
        .await?;
    // Six runs polled every 100 ms leave no other gap of seconds: the pause made this one.
    let gap = report["factories"][FACTORY]["maxGapMs"]
        .as_u64()
        .unwrap_or(0);
    assert!(gap >= 2_900, "no pause after the 429: {report}");
    Ok(())
}
