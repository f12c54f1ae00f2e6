//! Sleeping entities, end to end: a resource with nothing in flight gives up its actor after the
//! idle period and is kept by its runtime as its stored record; a list or a `get` answers from
//! that record without waking it; an apply, a delete, a `get -d` and a status event from the
//! component wake it, and nothing is lost either way, also across a `kill -9` of the orchestrator
//! (settled resources are restored asleep).

use std::time::Duration;

use operator_tests::process::{admin_http_client, metric_sum};
use operator_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
/// Short, so the test does not wait long for its resources to sleep.
const IDLE_MS: &str = "100";

/// The sum of the samples of the gauge `name` whose labels contain every one of `labels`.
async fn gauge(
    orchestrator: &OrchestratorProcess,
    name: &str,
    labels: &[&str],
) -> anyhow::Result<f64> {
    metric_sum(&admin_http_client()?, &orchestrator.url(), name, labels).await
}

/// The demo operator's entities holding an actor now.
async fn awake_entities(orchestrator: &OrchestratorProcess) -> anyhow::Result<f64> {
    gauge(
        orchestrator,
        "orchestrator_entities_awake",
        &["operator=\"demo\""],
    )
    .await
}

/// Waits until the demo operator has no awake entity (the gauge is scraped, there being no
/// event to await for it).
async fn until_all_asleep(orchestrator: &OrchestratorProcess) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let awake = awake_entities(orchestrator).await?;
        if awake == 0.0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{awake} entities still awake"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn listed(opctl: &Opctl) -> anyhow::Result<Vec<(String, String)>> {
    let out = opctl.run(&["get", "-t", "resource", "-w", "public", "-a", "-o", "json"])?;
    let answer: Value = serde_json::from_str(&out.stdout)?;
    let mut rows: Vec<(String, String)> = answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            (
                item["name"].as_str().unwrap_or_default().to_string(),
                item["runtime"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    Ok(rows)
}

#[tokio::test]
async fn settled_resources_sleep_answer_while_asleep_and_wake_for_what_changes_them(
) -> anyhow::Result<()> {
    let system =
        TestSystem::start_with_orchestrator_env(&[("ORCHESTRATOR_ENTITY_IDLE_MS", IDLE_MS)])
            .await?;
    let _component = system.start_demo_component("memory")?;
    let TestSystem {
        mut orchestrator,
        platform,
        client,
        opctl,
        nats: _nats,
    } = system;
    for name in ["kept", "changed", "deleted"] {
        opctl.apply(&TestSystem::job(name, "{durationMs: 0}"), None)?;
    }
    for name in ["kept", "changed", "deleted"] {
        wait_for_resource(&client, "public", name, WAIT, |r| {
            runtime_of(r) == Some("succeeded")
        })
        .await?;
    }
    until_all_asleep(&orchestrator).await?;

    // Asleep, they are still counted and listed, and a list or a get does not wake them.
    let active = gauge(
        &orchestrator,
        "orchestrator_entities",
        &["operator=\"demo\"", "runtime=\"succeeded\""],
    )
    .await?;
    assert_eq!(active, 3.0, "sleeping resources stay in the gauges");
    let succeeded = |names: &[&str]| -> Vec<(String, String)> {
        let mut rows: Vec<_> = names
            .iter()
            .map(|n| (n.to_string(), "succeeded".to_string()))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(listed(&opctl)?, succeeded(&["kept", "changed", "deleted"]));
    let one = opctl.run(&[
        "get", "-t", "resource", "-w", "public", "-n", "kept", "-o", "json",
    ])?;
    let one: Value = serde_json::from_str(&one.stdout)?;
    assert_eq!(one["generation"], 1, "{one}");
    let awake = awake_entities(&orchestrator).await?;
    assert_eq!(awake, 0.0, "a list or a get woke an entity");

    // `get -d` wakes one to ask its component.
    let details = opctl.run(&[
        "get", "-t", "resource", "-w", "public", "-n", "kept", "-d", "-o", "json",
    ])?;
    let details: Value = serde_json::from_str(&details.stdout)?;
    assert_eq!(details["details"]["entity"]["generation"], 1, "{details}");

    // An apply and a delete wake theirs.
    opctl.apply(&TestSystem::job("changed", "{durationMs: 1}"), None)?;
    wait_for_resource(&client, "public", "changed", WAIT, |r| {
        r.is_some_and(|r| r["status"]["observedGeneration"] == 2)
            && runtime_of(r) == Some("succeeded")
    })
    .await?;
    opctl.run(&["delete", "-t", "resource", "-w", "public", "-n", "deleted"])?;
    wait_for_resource(&client, "public", "deleted", WAIT, |r| r.is_none()).await?;

    // A status event wakes a sleeping one: a job that runs longer than the idle period reports
    // `inprogress`, sleeps, then reports its end.
    opctl.apply(&TestSystem::job("long", "{durationMs: 1500}"), None)?;
    wait_for_resource(&client, "public", "long", WAIT, |r| {
        runtime_of(r) == Some("inprogress")
    })
    .await?;
    wait_for_resource(&client, "public", "long", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    assert_eq!(platform.calls().starts.get("public/long"), Some(&1));

    // Restored after a kill -9: asleep from the start, listed and counted as before.
    until_all_asleep(&orchestrator).await?;
    orchestrator.kill9();
    orchestrator.restart()?;
    let opctl = orchestrator.opctl();
    assert_eq!(listed(&opctl)?, succeeded(&["kept", "changed", "long"]));
    let awake = awake_entities(&orchestrator).await?;
    assert_eq!(awake, 0.0, "settled resources are restored asleep");
    let active = gauge(
        &orchestrator,
        "orchestrator_entities",
        &["operator=\"demo\"", "runtime=\"succeeded\""],
    )
    .await?;
    assert_eq!(active, 3.0);
    // And a restored one wakes for an update like any other.
    opctl.apply(&TestSystem::job("kept", "{durationMs: 2}"), None)?;
    wait_for_resource(&client, "public", "kept", WAIT, |r| {
        r.is_some_and(|r| r["status"]["observedGeneration"] == 2)
            && runtime_of(r) == Some("succeeded")
    })
    .await?;
    Ok(())
}
