//! Knowing why without reading logs, end to end on a real nats-server with the real binaries:
//! `apply --dry-run` stores nothing and refuses what apply refuses, `diff`'s exit codes,
//! `get --watch` printing a change made by another opctl, `wait` meeting, timing out and
//! failing early.

use anyhow::Context;
use operator_tests::*;

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
    let nowhere = Opctl {
        server: format!("http://127.0.0.1:{}", free_port()),
        env: system.opctl.env.clone(),
    };
    std::fs::write(file, &job)?;
    assert_eq!(nowhere.run(&["diff", "-f", file])?.code, 2);
    Ok(())
}
