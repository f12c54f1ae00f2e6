//! Knowing why without reading logs, end to end on a real nats-server with the real binaries:
//! `apply --dry-run` stores nothing and refuses what apply refuses, `diff`'s exit codes,
//! `get --watch` printing a change made by another opctl, `wait` meeting, timing out and
//! failing early.

use std::time::{Duration, Instant};

use anyhow::Context;
use operator_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// The condition of a type in a stored resource record: the component's, then the
/// orchestrator's own; `Null` when absent.
fn condition(record: Option<&serde_json::Value>, kind: &str) -> serde_json::Value {
    let Some(record) = record else {
        return serde_json::Value::Null;
    };
    record["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(record["conditions"].as_array().into_iter().flatten())
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_default()
}

/// The last sequence of a bucket's stream: any write, delete or purge moves it.
async fn bucket_sequence(nats: &async_nats::Client, bucket: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .with_context(|| format!("bucket {bucket}"))?;
    Ok(stream.info().await?.state.last_sequence)
}

/// How many messages a stream holds now.
async fn stream_messages(nats: &async_nats::Client, stream: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js.get_stream(stream).await?;
    Ok(stream.info().await?.state.messages)
}

fn dry_run(system: &TestSystem, manifest: &str) -> anyhow::Result<process::OpctlRun> {
    system
        .opctl
        .run_with_stdin(&["apply", "--dry-run", "-f", "-"], Some(manifest))
}

#[tokio::test]
async fn a_dry_run_says_what_apply_would_do_stores_nothing_and_refuses_what_apply_refuses(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let job = TestSystem::job("dry", "{durationMs: 0}");

    let before = bucket_sequence(&system.client, "orchestrator-resources").await?;
    let run = dry_run(&system, &job)?;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("dry:v1:resource...created, generation 1 (dry run)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        bucket_sequence(&system.client, "orchestrator-resources").await?,
        before,
        "a dry run wrote to the resources bucket"
    );
    system
        .opctl
        .run(&["get", "-t", "resource", "-n", "dry"])?
        .assert_refused("not found");
    assert_eq!(stream_messages(&system.client, "operator-demo").await?, 0);

    // Stored for real: a changed spec would make generation 2, the same file nothing.
    system.opctl.apply(&job, None)?;
    let commands = stream_messages(&system.client, "operator-demo").await?;
    let stored = bucket_sequence(&system.client, "orchestrator-resources").await?;
    let changed = TestSystem::job("dry", "{durationMs: 5}");
    let run = dry_run(&system, &changed)?;
    assert!(
        run.stderr.contains("...updated, generation 2 (dry run)"),
        "{}",
        run.stderr
    );
    let run = dry_run(&system, &job)?;
    assert!(
        run.stderr.contains("...unchanged (dry run)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        bucket_sequence(&system.client, "orchestrator-resources").await?,
        stored
    );
    assert_eq!(
        stream_messages(&system.client, "operator-demo").await?,
        commands,
        "a dry run sent a command"
    );

    // What apply refuses, a dry run refuses with the same reason.
    for (manifest, workspace, reason) in [
        (
            TestSystem::job("bad", "{durationMs: -1}"),
            "public",
            "does not match the schema of job",
        ),
        (
            TestSystem::job("elsewhere", "{}"),
            "not-enabled",
            "not enabled in workspace not-enabled",
        ),
        (
            TestSystem::job("orphan", "{}").replace("operator: demo", "operator: nobody"),
            "public",
            "operator 'nobody' is not applied",
        ),
    ] {
        let args = ["apply", "--dry-run", "-f", "-", "-w", workspace];
        let dry = system.opctl.run_with_stdin(&args, Some(&manifest))?;
        dry.assert_refused(reason);
        let real = system.opctl.run_with_stdin(
            &args[..1]
                .iter()
                .chain(&args[2..])
                .copied()
                .collect::<Vec<_>>(),
            Some(&manifest),
        )?;
        real.assert_refused(reason);
    }
    let secret_ref = example("adf-operator.yaml");
    dry_run(&system, &secret_ref)?.assert_refused("refers to secrets that are missing");

    // A file with an operator not applied yet and its resources: each resource is checked
    // against the operator above it, and nothing is stored.
    let operator = example("demo-operator.yaml").replace("name: demo\n", "name: fresh\n");
    assert!(
        operator.contains("name: fresh\n"),
        "the example changed shape"
    );
    let resource = |name: &str, spec: &str| {
        TestSystem::job(name, spec).replace("operator: demo", "operator: fresh")
    };
    let before = bucket_sequence(&system.client, "orchestrator-operators").await?;
    let file = [operator.clone(), resource("fresh-job", "{durationMs: 0}")].join("\n---\n");
    let run = dry_run(&system, &file)?;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("fresh-job:v1:resource...created, generation 1 (dry run)"),
        "{}",
        run.stderr
    );
    let file = [operator, resource("fresh-bad", "{durationMs: -1}")].join("\n---\n");
    dry_run(&system, &file)?.assert_refused("does not match the schema of job");
    assert_eq!(
        bucket_sequence(&system.client, "orchestrator-operators").await?,
        before,
        "a dry run stored an operator"
    );
    system
        .opctl
        .run(&["get", "-t", "operator", "-n", "fresh"])?
        .assert_refused("not found");
    Ok(())
}

#[tokio::test]
async fn diff_exits_0_when_stored_1_when_different_and_2_on_error() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let job = TestSystem::job("diffed", "{durationMs: 0}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("job.yaml");
    let file = file.to_str().context("path")?;

    std::fs::write(file, &job)?;
    let run = system.opctl.run(&["diff", "-f", file])?;
    assert_eq!(run.code, 1, "not stored yet is a difference: {run:?}");
    assert!(run.stdout.starts_with("--- /dev/null\n"), "{}", run.stdout);

    system.opctl.apply(&job, None)?;
    let run = system.opctl.run(&["diff", "-f", file])?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "");

    std::fs::write(file, TestSystem::job("diffed", "{durationMs: 7}"))?;
    let run = system.opctl.run(&["diff", "-f", file])?;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "--- stored/resource/public/diffed\n+++ {file}/resource/public/diffed\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n-    durationMs: 0\n+    durationMs: 7\n"),
        "{}",
        run.stdout
    );

    std::fs::write(file, "name: Not A Name\n")?;
    assert_eq!(system.opctl.run(&["diff", "-f", file])?.code, 2);
    // Port 0 is never listened on: the connection is refused, whoever runs beside the test.
    let nowhere = Opctl {
        server: "http://127.0.0.1:0".to_string(),
        env: system.opctl.env.clone(),
    };
    std::fs::write(file, &job)?;
    assert_eq!(nowhere.run(&["diff", "-f", file])?.code, 2);
    Ok(())
}

#[tokio::test]
async fn get_watch_prints_a_change_made_by_another_opctl_and_fails_when_the_server_goes_away(
) -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    system
        .opctl
        .apply(&TestSystem::job("first", "{durationMs: 0}"), None)?;
    // The small habits: which workspace was listed, an AGE column, -o name.
    let list = system.opctl.run(&["get", "-t", "resource", "-a"])?;
    assert!(
        list.stderr
            .contains("workspace public (the default; -w WS for another)"),
        "{}",
        list.stderr
    );
    assert!(
        list.stdout
            .lines()
            .nth(1)
            .is_some_and(|h| h.trim_end().ends_with("AGE")),
        "{}",
        list.stdout
    );
    let names = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "name"])?;
    assert_eq!(names.stdout, "resource/public/first\n");
    let misplaced = system
        .opctl
        .run(&["get", "-t", "operator", "-w", "public"])?;
    assert_eq!(misplaced.code, 2, "{misplaced:?}");
    assert!(
        misplaced.stderr.contains("operators live in no workspace"),
        "{}",
        misplaced.stderr
    );
    let completion = system.opctl.run(&["completion", "bash"])?;
    assert_eq!(completion.code, 0, "{}", completion.stderr);
    assert!(
        completion.stdout.contains("complete -F _opctl"),
        "{}",
        &completion.stdout[..200.min(completion.stdout.len())]
    );

    let watch = Following::start(&system.opctl, &["get", "-t", "resource", "-a", "--watch"])?;
    watch.stdout_line(|l| l.contains("first") && l.contains("pending"))?;

    system
        .opctl
        .apply(&TestSystem::job("second", "{durationMs: 0}"), None)?;
    let row = watch.stdout_line(|l| l.contains("second"))?;
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(
        cells[..5],
        ["second", "v1", "resource", "public", "pending"],
        "{row}"
    );
    system
        .opctl
        .run(&["delete", "-t", "resource", "-n", "second"])?;
    watch.stdout_line(|l| l.contains("second") && l.contains("deleting"))?;

    system.orchestrator.kill9();
    let (code, stderr) = watch.ended()?;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ended the watch"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn wait_meets_a_condition_times_out_and_fails_early_on_a_failed_run() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    let wait = |name: &str, what: &str, timeout: &str| {
        system.opctl.run(&[
            "wait",
            "-t",
            "resource",
            "-w",
            "public",
            "-n",
            name,
            &format!("--for={what}"),
            "--timeout",
            timeout,
        ])
    };

    system
        .opctl
        .apply(&TestSystem::job("quick", "{durationMs: 300}"), None)?;
    let run = wait("quick", "runtime=succeeded", "30s")?;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("met runtime=succeeded"),
        "{}",
        run.stderr
    );
    let record =
        wait_for_resource(&system.client, "public", "quick", WAIT, |r| r.is_some()).await?;
    assert_eq!(runtime_of(record.as_ref()), Some("succeeded"));
    assert_eq!(condition(record.as_ref(), "Succeeded")["status"], "True");
    assert_eq!(
        condition(record.as_ref(), "Succeeded")["reason"],
        "JobSucceeded"
    );
    assert_eq!(wait("quick", "condition=Ready", "5s")?.code, 0);
    assert_eq!(wait("quick", "condition=Succeeded", "5s")?.code, 0);

    // A run that failed never succeeds: said at once, not after the timeout.
    system.opctl.apply(
        &TestSystem::job(
            "broken",
            "{durationMs: 300, fail: true, message: disk full}",
        ),
        None,
    )?;
    let started = Instant::now();
    let run = wait("broken", "runtime=succeeded", "60s")?;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    assert!(
        run.stderr
            .contains("will not meet runtime=succeeded: the run ended failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("disk full"), "{}", run.stderr);
    let record =
        wait_for_resource(&system.client, "public", "broken", WAIT, |r| r.is_some()).await?;
    let failed = condition(record.as_ref(), "Succeeded");
    assert_eq!(failed["status"], "False", "{record:?}");
    assert_eq!(failed["reason"], "JobFailed");
    assert_eq!(failed["message"], "disk full");
    assert_eq!(failed["observedGeneration"], 1);
    assert_eq!(condition(record.as_ref(), "Synced")["status"], "True");
    assert!(failed["lastTransitionTime"].is_string(), "{failed}");

    system
        .opctl
        .apply(&TestSystem::job("slow", "{durationMs: 600000}"), None)?;
    let run = wait("slow", "runtime=succeeded", "1s")?;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for resource public/slow"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("last status"), "{}", run.stderr);

    system
        .opctl
        .run(&["delete", "-t", "resource", "-n", "slow"])?;
    let run = wait("slow", "delete", "30s")?;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        system
            .opctl
            .run(&["get", "-t", "resource", "-n", "slow"])?
            .code
            != 0,
        "deleted, yet get finds it"
    );

    // Bad input: one line, non-zero.
    for args in [
        vec!["wait", "-t", "resource", "-n", "quick", "--for=bogus"],
        vec![
            "wait",
            "-t",
            "resource",
            "-n",
            "quick",
            "--for=delete",
            "--timeout",
            "-5s",
        ],
        vec!["wait", "-t", "operator", "-n", "demo", "--for=delete"],
    ] {
        let run = system.opctl.run(&args)?;
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_command_no_replica_answers_marks_the_component_unreachable_within_the_bound(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut component = system.start_demo_component("memory")?;
    system
        .opctl
        .apply(&TestSystem::job("lonely", "{durationMs: 0}"), None)?;
    let record = wait_for_resource(&system.client, "public", "lonely", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    assert_eq!(
        condition(record.as_ref(), "ComponentReachable")["status"],
        "True"
    );

    component.kill9();
    let changed = Instant::now();
    system
        .opctl
        .apply(&TestSystem::job("lonely", "{durationMs: 1}"), None)?;
    let record = wait_for_resource(&system.client, "public", "lonely", WAIT, |r| {
        condition(r, "ComponentReachable")["status"] == "False"
    })
    .await?;
    let elapsed = changed.elapsed();
    // The bound is 10 s; the check runs once, at the bound.
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    let unreachable = condition(record.as_ref(), "ComponentReachable");
    assert_eq!(unreachable["reason"], "NoReplicaAnswered");
    let message = unreachable["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the last status event was at"),
        "{message}"
    );
    // The stale status is still there, and says which generation it describes.
    assert_eq!(runtime_of(record.as_ref()), Some("succeeded"));
    assert_eq!(
        record.as_ref().map(|r| r["generation"].clone()),
        Some(2.into())
    );
    Ok(())
}

#[tokio::test]
async fn an_idle_resource_whose_component_died_is_marked_unreachable_and_back_when_it_returns(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let mut component = system.start_demo_component("memory")?;
    system
        .opctl
        .apply(&TestSystem::job("idle", "{durationMs: 0}"), None)?;
    wait_for_resource(&system.client, "public", "idle", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;

    // No command is in flight: only the orchestrator's probe can notice.
    component.kill9();
    let killed = Instant::now();
    let record = wait_for_resource(&system.client, "public", "idle", WAIT, |r| {
        condition(r, "ComponentReachable")["status"] == "False"
    })
    .await?;
    let elapsed = killed.elapsed();
    // The bound is 10 s of silence, checked every 3 s.
    assert!(
        elapsed >= Duration::from_secs(7) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    let unreachable = condition(record.as_ref(), "ComponentReachable");
    assert_eq!(unreachable["reason"], "NoReplicaAnswered");
    let message = unreachable["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has answered since") && message.contains("the last status event was at"),
        "{message}"
    );
    assert_eq!(runtime_of(record.as_ref()), Some("succeeded"));

    component.restart()?;
    let record = wait_for_resource(&system.client, "public", "idle", WAIT, |r| {
        condition(r, "ComponentReachable")["status"] == "True"
    })
    .await?;
    assert_eq!(
        condition(record.as_ref(), "ComponentReachable")["reason"],
        "ProbeAnswered"
    );
    // Recorded with the transition to False, long before this.
    let events = history(&system.opctl, "idle")?;
    assert!(
        events.iter().any(|e| e == "ComponentUnreachable"),
        "{events:?}"
    );
    Ok(())
}

/// The reasons of a resource's history, oldest first, as `opctl events -o json` gives them.
fn history(opctl: &Opctl, name: &str) -> anyhow::Result<Vec<String>> {
    let run = opctl.run(&["events", "-t", "resource", "-n", name, "-o", "json"])?;
    anyhow::ensure!(run.code == 0, "{run:?}");
    let answer: serde_json::Value = serde_json::from_str(&run.stdout)?;
    Ok(answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test]
async fn a_resource_history_survives_a_kill_9_of_the_orchestrator() -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    let done = |r: Option<&serde_json::Value>| runtime_of(r) == Some("succeeded");
    system
        .opctl
        .apply(&TestSystem::job("kept", "{durationMs: 100}"), None)?;
    wait_for_resource(&system.client, "public", "kept", WAIT, done).await?;
    let before = history(&system.opctl, "kept")?;
    // JobSubmitted is the demo operator's own event, sent with its status through the SDK.
    for reason in [
        "Applied",
        "CommandSent",
        "ReconcileStarted",
        "JobSubmitted",
        "Reconciled",
        "RuntimeChanged",
    ] {
        assert!(
            before.contains(&reason.to_string()),
            "{reason} missing: {before:?}"
        );
    }

    system.orchestrator.kill9();
    system.orchestrator.restart()?;
    assert_eq!(
        history(&system.opctl, "kept")?,
        before,
        "lost or changed by the restart"
    );

    let follow = Following::start(
        &system.opctl,
        &["events", "-t", "resource", "-n", "kept", "--watch"],
    )?;
    follow.stdout_line(|l| l.contains("Applied") && l.contains("created by admin"))?;
    system
        .opctl
        .apply(&TestSystem::job("kept", "{durationMs: 200}"), None)?;
    follow
        .stdout_line(|l| l.contains("Applied") && l.contains("updated by admin, generation 2"))?;
    follow.stdout_line(|l| l.contains("RuntimeChanged") && l.contains("succeeded"))?;

    let after = history(&system.opctl, "kept")?;
    assert_eq!(after[..before.len()], before[..]);
    assert!(after.len() > before.len(), "{after:?}");
    let details = system
        .opctl
        .run(&["get", "-t", "resource", "-n", "kept", "-d"])?;
    assert!(
        details
            .stdout
            .contains("Events (the latest 5; opctl events shows all):"),
        "{}",
        details.stdout
    );
    Ok(())
}
