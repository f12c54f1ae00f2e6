//! The walking skeleton end to end: apply → command → reconcile → status → get, over a real
//! nats-server, with the real orchestrator, component and opctl processes.

use std::time::Duration;

use operator_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn seed_env(system: &TestSystem, store: &str) -> Vec<(String, String)> {
    seed_component_env(&system.platform.url, store)
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn the_seed_operator_and_pipeline_run_reach_active_with_a_runtime_status(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system
        .opctl
        .apply(&example("adf-secret.yaml"), Some("user-system"))?;
    system.opctl.apply(&example("adf-operator.yaml"), None)?;
    let env = seed_env(&system, "memory");
    let _component = ComponentProcess::start(&system.nats.url(), "adf-operator", &as_refs(&env))?;

    let applied = system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    assert!(
        applied.stderr.contains("pipeline-run-1"),
        "{}",
        applied.stderr
    );

    let record = wait_for_resource(&system.client, "public", "pipeline-run-1", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    assert_eq!(status_of(record.as_ref()), Some("active"));
    assert_eq!(
        system.platform.calls().starts.get("public/pipeline-run-1"),
        Some(&1)
    );

    let get = system
        .opctl
        .run(&["get", "-t", "resource", "-w", "public", "-a"])?;
    assert_eq!(get.code, 0, "{}", get.stderr);
    let row = get
        .stdout
        .lines()
        .find(|l| l.contains("pipeline-run-1"))
        .expect("a row for the run");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(
        cells[..7],
        [
            "pipeline-run-1",
            "v1alpha",
            "resource",
            "public",
            "active",
            "succeeded",
            "iamgroot"
        ]
    );
    for header in [
        "NAME",
        "VERSION",
        "TYPE",
        "WORKSPACE",
        "STATUS",
        "RUNTIME",
        "OWNER",
    ] {
        assert!(get.stdout.contains(header), "{}", get.stdout);
    }

    // -d asks the component live, by request/reply.
    let details = system.opctl.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "pipeline-run-1",
        "-d",
        "-o",
        "json",
    ])?;
    assert_eq!(details.code, 0, "{}", details.stderr);
    let view: serde_json::Value = serde_json::from_str(&details.stdout)?;
    assert_eq!(view["details"]["entity"]["generation"], 1, "{view}");
    assert_eq!(
        view["details"]["status"]["details"]["state"], "succeeded",
        "{view}"
    );
    Ok(())
}

#[tokio::test]
async fn details_without_a_component_say_so_instead_of_hanging() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    system
        .opctl
        .apply(&TestSystem::job("lonely", "{durationMs: 0}"), None)?;
    let details = system
        .opctl
        .run(&["get", "-t", "resource", "-n", "lonely", "-d", "-o", "json"])?;
    let view: serde_json::Value = serde_json::from_str(&details.stdout)?;
    let error = view["detailsError"].as_str().unwrap_or_default();
    assert!(error.contains("operator.demo.job.query"), "{view}");
    assert_eq!(view["status"], "pending");
    Ok(())
}

#[tokio::test]
async fn a_spec_violating_the_schema_is_refused_with_its_pointer_and_nothing_is_stored(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system
        .opctl
        .apply(&example("adf-secret.yaml"), Some("user-system"))?;
    system.opctl.apply(&example("adf-operator.yaml"), None)?;
    let bad = example("adf-pipeline-run.yaml")
        .replace("factoryName: datafactoryoz3un3trdpaa", "colour: red");
    let run = system
        .opctl
        .run_with_stdin(&["apply", "-f", "-", "-w", "public"], Some(&bad))?;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("spec/factoryName"), "{}", run.stderr);
    assert!(run.stderr.contains("spec/colour"), "{}", run.stderr);

    let js = async_nats::jetstream::new(system.client.clone());
    let kv = js.get_key_value("orchestrator-resources").await?;
    assert!(
        kv.get("public.pipeline-run-1").await?.is_none(),
        "a refused resource was stored"
    );
    let get = system.opctl.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "pipeline-run-1",
    ])?;
    assert_ne!(get.code, 0);
    assert!(get.stderr.contains("not found"), "{}", get.stderr);
    Ok(())
}

#[tokio::test]
async fn an_unknown_operator_or_a_disabled_workspace_is_refused() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let run = system.opctl.run_with_stdin(
        &["apply", "-f", "-"],
        Some(&example("adf-pipeline-run.yaml")),
    )?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("operator 'adf-operator' is not applied"),
        "{}",
        run.stderr
    );

    system
        .opctl
        .apply(&example("adf-secret.yaml"), Some("user-system"))?;
    system.opctl.apply(&example("adf-operator.yaml"), None)?;
    let run = system.opctl.run_with_stdin(
        &["apply", "-f", "-", "-w", "finance"],
        Some(&example("adf-pipeline-run.yaml")),
    )?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("not enabled in workspace finance"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_refers_only_to_secrets_that_exist() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let run = system
        .opctl
        .run_with_stdin(&["apply", "-f", "-"], Some(&example("adf-operator.yaml")))?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("user-system/adf-operator does not exist"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_resource_lets_the_component_clean_up_before_it_disappears() -> anyhow::Result<()>
{
    let system = TestSystem::start().await?;
    let mut component = system.start_demo_component("jetstream_kv")?;
    system
        .opctl
        .apply(&TestSystem::job("long-job", "{durationMs: 600000}"), None)?;
    wait_for_resource(&system.client, "public", "long-job", WAIT, |r| {
        runtime_of(r) == Some("inprogress")
    })
    .await?;

    // With the component down, the delete waits: the resource shows `deleting`.
    component.kill9();
    let run = system
        .opctl
        .run(&["delete", "-t", "resource", "-w", "public", "-n", "long-job"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let get = system
        .opctl
        .run(&["get", "-t", "resource", "-w", "public", "-a"])?;
    let row = get
        .stdout
        .lines()
        .find(|l| l.contains("long-job"))
        .expect("row while deleting");
    assert!(row.contains("deleting"), "{row}");
    assert_eq!(system.platform.job_count(), 1);

    component.restart()?;
    wait_for_resource(&system.client, "public", "long-job", WAIT, |r| r.is_none()).await?;
    assert_eq!(
        system.platform.calls().deletes.get("public/long-job"),
        Some(&1)
    );
    assert_eq!(system.platform.job_count(), 0);
    let get = system
        .opctl
        .run(&["get", "-t", "resource", "-w", "public", "-n", "long-job"])?;
    assert_ne!(get.code, 0);
    Ok(())
}

#[tokio::test]
async fn the_orchestrator_attaches_again_when_its_event_consumer_goes_away() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    let succeeded = |r: Option<&serde_json::Value>| runtime_of(r) == Some("succeeded");
    system
        .opctl
        .apply(&TestSystem::job("before", "{durationMs: 0}"), None)?;
    wait_for_resource(&system.client, "public", "before", WAIT, succeeded).await?;

    // The consumer vanishes under the orchestrator (deleted, or lost with a stream leader).
    let js = async_nats::jetstream::new(system.client.clone());
    js.get_stream(operator_contract::subject::event_stream("demo"))
        .await?
        .delete_consumer(&operator_contract::subject::event_consumer("demo"))
        .await?;

    // It attaches again and statuses flow as before. (On one server the pull ends at once; on a
    // cluster a consumer without a leader answers no responders instead, and the orchestrator
    // attaches again after a second rather than waiting out the heartbeats: the fault runs.)
    system
        .opctl
        .apply(&TestSystem::job("after", "{durationMs: 0}"), None)?;
    wait_for_resource(
        &system.client,
        "public",
        "after",
        Duration::from_secs(15),
        succeeded,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_an_operator_is_refused_while_resources_depend_on_it() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    system
        .opctl
        .apply(&TestSystem::job("job-a", "{durationMs: 0}"), None)?;
    system.opctl.apply(
        &TestSystem::job("job-b", "{durationMs: 0}"),
        Some("sandbox"),
    )?;

    let run = system
        .opctl
        .run(&["delete", "-t", "operator", "-n", "demo"])?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("public/job-a") && run.stderr.contains("sandbox/job-b"),
        "{}",
        run.stderr
    );

    for (ws, name) in [("public", "job-a"), ("sandbox", "job-b")] {
        let run = system
            .opctl
            .run(&["delete", "-t", "resource", "-w", ws, "-n", name])?;
        assert_eq!(run.code, 0, "{}", run.stderr);
        wait_for_resource(&system.client, ws, name, WAIT, |r| r.is_none()).await?;
    }
    let run = system
        .opctl
        .run(&["delete", "-t", "operator", "-n", "demo"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let get = system.opctl.run(&["get", "-t", "operator", "-a"])?;
    assert!(!get.stdout.contains("demo"), "{}", get.stdout);
    Ok(())
}

#[tokio::test]
async fn the_orchestrator_killed_and_restarted_loses_nothing() -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    let names: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
    let all: Vec<String> = names
        .iter()
        .map(|n| TestSystem::job(n, "{durationMs: 300}"))
        .collect();
    system.opctl.apply(&all.join("---\n"), None)?;
    // Every apply was acknowledged; kill at once, before statuses have come back.
    system.orchestrator.kill9();
    system.orchestrator.restart()?;

    for name in &names {
        wait_for_resource(&system.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some("succeeded")
        })
        .await?;
    }
    let get = system
        .opctl
        .run(&["get", "-t", "resource", "-w", "public", "-a", "-o", "json"])?;
    let listed: serde_json::Value = serde_json::from_str(&get.stdout)?;
    let count = listed
        .as_array()
        .map(Vec::len)
        .or_else(|| listed["items"].as_array().map(Vec::len));
    assert_eq!(count, Some(names.len()), "{}", get.stdout);
    for name in &names {
        assert_eq!(
            system
                .platform
                .calls()
                .starts
                .get(&format!("public/{name}")),
            Some(&1),
            "{name}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_component_restarted_with_the_jetstream_kv_store_keeps_its_entities() -> anyhow::Result<()>
{
    let system = TestSystem::start().await?;
    let mut component = system.start_demo_component("jetstream_kv")?;
    system
        .opctl
        .apply(&TestSystem::job("kept", "{durationMs: 1500}"), None)?;
    wait_for_resource(&system.client, "public", "kept", WAIT, |r| {
        runtime_of(r) == Some("inprogress")
    })
    .await?;

    component.kill9();
    component.restart()?;
    // The restarted component resumes the running job from its store and follows it to its end.
    wait_for_resource(&system.client, "public", "kept", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    let details = system
        .opctl
        .run(&["get", "-t", "resource", "-n", "kept", "-d", "-o", "json"])?;
    let view: serde_json::Value = serde_json::from_str(&details.stdout)?;
    assert_eq!(view["details"]["entity"]["generation"], 1, "{view}");
    assert_eq!(system.platform.calls().starts.get("public/kept"), Some(&1));
    Ok(())
}

#[tokio::test]
async fn a_command_delivered_twice_is_applied_once() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    system
        .opctl
        .apply(&TestSystem::job("once", "{durationMs: 0}"), None)?;
    // The command as sent, read before any component can confirm it (a confirmed command is
    // dropped from the record).
    let js = async_nats::jetstream::new(system.client.clone());
    let kv = js.get_key_value("orchestrator-resources").await?;
    let record: serde_json::Value =
        serde_json::from_slice(&kv.get("public.once").await?.expect("stored"))?;
    assert!(record["lastCommand"].is_object(), "{record}");
    let command = serde_json::to_vec(&record["lastCommand"])?;
    let _component = system.start_demo_component("memory")?;
    wait_for_resource(&system.client, "public", "once", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    let gets_before = system.platform.calls().gets.get("public/once").copied();

    // The same message id twice: JetStream keeps one.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "replayed-command");
    let first = js
        .publish_with_headers(
            "operator.demo.job.command",
            headers.clone(),
            command.clone().into(),
        )
        .await?
        .await?;
    let second = js
        .publish_with_headers("operator.demo.job.command", headers, command.clone().into())
        .await?
        .await?;
    assert!(!first.duplicate && second.duplicate);
    // A redelivery under another id reaches the component, which must not apply it again.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "replayed-command-2");
    js.publish_with_headers("operator.demo.job.command", headers, command.into())
        .await?
        .await?;

    let mut stream = js.get_stream("operator-demo").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream.info().await?.state.messages > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "component did not consume the replays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A later resource reconciled means the component is past the replays.
    system
        .opctl
        .apply(&TestSystem::job("sentinel", "{durationMs: 0}"), None)?;
    wait_for_resource(&system.client, "public", "sentinel", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    let calls = system.platform.calls();
    assert_eq!(calls.starts.get("public/once"), Some(&1));
    assert_eq!(
        calls.gets.get("public/once").copied(),
        gets_before,
        "a replayed command was reconciled"
    );
    Ok(())
}

#[tokio::test]
async fn a_command_that_could_not_be_sent_is_sent_after_an_orchestrator_restart(
) -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    let _component = system.start_demo_component("memory")?;
    // The command stream is lost: the apply is stored and acknowledged, the command cannot go.
    let js = async_nats::jetstream::new(system.client.clone());
    js.delete_stream("operator-demo").await?;
    system
        .opctl
        .apply(&TestSystem::job("stranded", "{durationMs: 0}"), None)?;
    // Killed at once: a running orchestrator would heal by itself too (it recreates the streams
    // when its event consumer re-attaches and resends with backoff), which this test is not about.
    system.orchestrator.kill9();
    let record =
        wait_for_resource(&system.client, "public", "stranded", WAIT, |r| r.is_some()).await?;
    assert_eq!(status_of(record.as_ref()), None);

    // The restarted orchestrator recreates the streams and resends what the component never saw.
    system.orchestrator.restart()?;
    wait_for_resource(&system.client, "public", "stranded", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    assert_eq!(
        system.platform.calls().starts.get("public/stranded"),
        Some(&1)
    );
    Ok(())
}

#[tokio::test]
async fn a_create_that_landed_without_its_acknowledgement_is_adopted_by_the_next_apply(
) -> anyhow::Result<()> {
    let mut system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let manifest = TestSystem::job("landed", "{durationMs: 0}");
    // Applied before any component runs, so no status can confirm the create yet and the stored
    // record still carries its command (a confirmed command is dropped from the record).
    system.opctl.apply(&manifest, None)?;
    let js = async_nats::jetstream::new(system.client.clone());
    let kv = js.get_key_value("orchestrator-resources").await?;
    let mut record: serde_json::Value =
        serde_json::from_slice(&kv.get("public.landed").await?.expect("stored"))?;
    assert!(
        record["lastCommand"].is_object(),
        "an unconfirmed create keeps its command: {record}"
    );
    let _component = system.start_demo_component("memory")?;
    wait_for_resource(&system.client, "public", "landed", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    system
        .opctl
        .run(&["delete", "-t", "resource", "-w", "public", "-n", "landed"])?;
    wait_for_resource(&system.client, "public", "landed", WAIT, |r| r.is_none()).await?;

    // A create lands behind an orchestrator that never heard back (as when the NATS node under
    // it dies before acknowledging): the record is there, its command was never sent.
    system.orchestrator.kill9();
    system.orchestrator.restart()?;
    record.as_object_mut().expect("a record").remove("status");
    record["lastCommand"]["id"] = serde_json::json!(uuid::Uuid::now_v7());
    kv.put("public.landed", serde_json::to_vec(&record)?.into())
        .await?;

    // Applying it again adopts it, instead of calling it another operator's, and sends its command.
    system.opctl.apply(&manifest, None)?;
    wait_for_resource(&system.client, "public", "landed", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    Ok(())
}
