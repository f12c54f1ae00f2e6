//! The Azure Data Factory operator end to end: the seed's walk-through against the stand-in ADF
//! server, with the real orchestrator, adf-operator and opctl processes on a real nats-server.

use operator_tests::adf::*;
use operator_tests::*;
use serde_json::{json, Value};

#[tokio::test]
async fn the_seed_walk_through_reaches_succeeded_with_the_run_synced() -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    adf.system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    adf.wait_runtime("pipeline-run-1", "inprogress").await?;
    let record = adf.wait_runtime("pipeline-run-1", "succeeded").await?;

    let details = &record["status"]["details"];
    let runs = adf.runs().await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(details["runId"], runs[0]["runId"], "{details}");
    assert_eq!(runs[0]["pipelineName"], "ArmtemplateSampleCopyPipeline");
    assert_eq!(details["status"], "Succeeded", "{details}");
    for field in [
        "runGroupId",
        "runStart",
        "runEnd",
        "durationInMs",
        "lastUpdated",
        "lastSyncedAt",
    ] {
        assert!(!details[field].is_null(), "{field} missing in {details}");
    }
    let activities = details["activityRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!activities.is_empty(), "{details}");
    assert_eq!(activities[0]["status"], "Succeeded", "{details}");

    let get = adf.system.opctl.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "pipeline-run-1",
        "-d",
    ])?;
    assert_eq!(get.code, 0, "{}", get.stderr);
    let run_id = runs[0]["runId"].as_str().unwrap_or_default();
    assert!(get.stdout.contains(run_id), "{}", get.stdout);
    assert!(get.stdout.contains("Copy data"), "{}", get.stdout);
    Ok(())
}

#[tokio::test]
async fn a_failing_pipeline_ends_failed_naming_the_failing_activity_with_a_monitoring_link(
) -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/AlwaysFailPipeline",
        Some(
            json!({"outcome": "fail", "failureMessage": "the blob input/day.csv is missing",
                    "activities": [{"name": "Lookup day", "type": "Lookup"},
                                   {"name": "Copy day", "type": "Copy"}]}),
        ),
    )
    .await?;
    adf.system.opctl.apply(
        &Adf::run_manifest("doomed", "AlwaysFailPipeline"),
        Some("public"),
    )?;
    let record = adf.wait_runtime("doomed", "failed").await?;
    let message = record["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("failed activities: Copy day: 2200: the blob input/day.csv is missing"),
        "{record}"
    );
    assert!(
        message.contains("Operation on target Copy day failed"),
        "{record}"
    );
    assert!(!message.contains("Lookup day"), "{record}");
    // The conditions say the same: Succeeded=False with the failing activity's error.
    let conditions = record["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let succeeded = conditions
        .iter()
        .find(|c| c["type"] == "Succeeded")
        .unwrap_or_else(|| panic!("no Succeeded condition: {record}"));
    assert_eq!(succeeded["status"], "False", "{record}");
    assert_eq!(succeeded["reason"], "PipelineRunFailed", "{record}");
    assert!(
        succeeded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Copy day: 2200: the blob input/day.csv is missing"),
        "{record}"
    );
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Synced" && c["status"] == "True"),
        "{record}"
    );
    let run_id = adf.runs().await?[0]["runId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let link = format!(
        "https://adf.azure.com/monitoring/pipelineruns/{run_id}?factory=/subscriptions/{SUBSCRIPTION}/resourceGroups/Engineering/providers/Microsoft.DataFactory/factories/datafactoryoz3un3trdpaa"
    );
    assert_eq!(
        record["status"]["details"]["monitoringUrl"], link,
        "{record}"
    );
    let described = adf.system.opctl.run(&[
        "get", "-t", "resource", "-w", "public", "-n", "doomed", "-d",
    ])?;
    let first_message = described
        .stdout
        .lines()
        .position(|l| l.contains("Copy day: 2200"));
    let spec = described
        .stdout
        .lines()
        .position(|l| l.starts_with("Spec:"));
    assert!(
        first_message.is_some() && first_message < spec,
        "the failure comes before the spec: {}",
        described.stdout
    );
    assert!(described.stdout.contains(&link), "{}", described.stdout);
    let get = adf
        .system
        .opctl
        .run(&["get", "-t", "resource", "-w", "public", "-a"])?;
    let row = get
        .stdout
        .lines()
        .find(|l| l.contains("doomed"))
        .unwrap_or_default();
    assert!(row.contains("failed"), "{}", get.stdout);
    Ok(())
}

#[tokio::test]
async fn deleting_a_running_pipeline_run_cancels_the_run() -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/LongPipeline",
        Some(json!({"outcome": "succeed", "runMs": 600000})),
    )
    .await?;
    adf.system.opctl.apply(
        &Adf::run_manifest("long-run", "LongPipeline"),
        Some("public"),
    )?;
    adf.wait_runtime("long-run", "inprogress").await?;
    let del = adf
        .system
        .opctl
        .run(&["delete", "-t", "resource", "-w", "public", "-n", "long-run"])?;
    assert_eq!(del.code, 0, "{}", del.stderr);
    wait_for_resource(&adf.system.client, "public", "long-run", WAIT, |r| {
        r.is_none()
    })
    .await?;
    let runs = adf.runs().await?;
    assert_eq!(runs.len(), 1);
    assert!(
        matches!(runs[0]["status"].as_str(), Some("Cancelled" | "Canceling")),
        "{runs:?}"
    );
    assert_eq!(runs[0]["cancelledRecursively"], true, "{runs:?}");
    assert_eq!(adf.calls().await?["cancel"], 1);
    Ok(())
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled_recursively_and_fails_saying_so() -> anyhow::Result<()>
{
    let adf = Adf::start("memory", &[]).await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/SlowPipeline",
        Some(json!({"outcome": "succeed", "runMs": 600000})),
    )
    .await?;
    let manifest = Adf::run_manifest("slow-run", "SlowPipeline").replace(
        "resourceGroupName: Engineering",
        "resourceGroupName: Engineering\n    timeout: 3s",
    );
    adf.system.opctl.apply(&manifest, Some("public"))?;
    adf.wait_runtime("slow-run", "inprogress").await?;
    let record = adf.wait_runtime("slow-run", "failed").await?;
    assert_eq!(
        record["status"]["message"], "timed out after 3s (spec.timeout): the run was cancelled",
        "{record}"
    );
    let runs = adf.runs().await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        matches!(runs[0]["status"].as_str(), Some("Cancelled" | "Canceling")),
        "{runs:?}"
    );
    assert_eq!(runs[0]["cancelledRecursively"], true, "{runs:?}");
    assert_eq!(adf.calls().await?["cancel"], 1);

    // Deleting it now: its run has ended, so nothing is cancelled again and nothing fails.
    let del = adf
        .system
        .opctl
        .run(&["delete", "-t", "resource", "-w", "public", "-n", "slow-run"])?;
    assert_eq!(del.code, 0, "{}", del.stderr);
    wait_for_resource(&adf.system.client, "public", "slow-run", WAIT, |r| {
        r.is_none()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn throttling_is_retried_and_the_run_still_succeeds_once() -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    adf.control(
        reqwest::Method::POST,
        "faults",
        Some(json!({"throttle": 3, "retryAfterS": 1})),
    )
    .await?;
    adf.system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    adf.wait_runtime("pipeline-run-1", "succeeded").await?;
    let calls = adf.calls().await?;
    assert_eq!(calls["answered"]["429"], 3, "{calls}");
    assert_eq!(adf.runs().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_crash_between_create_run_and_recording_it_starts_no_second_run() -> anyhow::Result<()> {
    let mut adf = Adf::start(
        "jetstream_kv",
        &[("ADF_OPERATOR_CRASH_AFTER_CREATE_RUN", "1")],
    )
    .await?;
    adf.system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    let status = adf.component.wait_exit(WAIT)?;
    assert!(
        !status.success(),
        "the operator was meant to crash after createRun"
    );
    assert_eq!(
        adf.runs().await?.len(),
        1,
        "createRun was not called before the crash"
    );

    adf.component
        .set_env("ADF_OPERATOR_CRASH_AFTER_CREATE_RUN", None);
    adf.component.restart()?;
    let record = adf.wait_runtime("pipeline-run-1", "succeeded").await?;
    let runs = adf.runs().await?;
    assert_eq!(runs.len(), 1, "a second run was started: {runs:?}");
    assert_eq!(record["status"]["details"]["runId"], runs[0]["runId"]);
    Ok(())
}

#[tokio::test]
async fn secret_values_are_never_shown_by_get_or_logged() -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    for args in [
        vec!["get", "-t", "secret", "-w", "user-system", "-a"],
        vec![
            "get",
            "-t",
            "secret",
            "-w",
            "user-system",
            "-n",
            "adf-operator",
            "-d",
        ],
        vec![
            "get",
            "-t",
            "secret",
            "-w",
            "user-system",
            "-n",
            "adf-operator",
            "-o",
            "json",
        ],
    ] {
        let run = adf.system.opctl.run(&args)?;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    }
    let shown = adf.system.opctl.run(&[
        "get",
        "-t",
        "secret",
        "-w",
        "user-system",
        "-n",
        "adf-operator",
        "-o",
        "json",
    ])?;
    assert!(
        shown.stdout.contains("AZURE_CLIENT_SECRET"),
        "keys are shown: {}",
        shown.stdout
    );
    adf.system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    adf.wait_runtime("pipeline-run-1", "succeeded").await?;
    assert!(!adf.system.orchestrator.log().contains(SECRET));
    assert!(!adf.component.log().contains(SECRET));
    Ok(())
}

#[tokio::test]
async fn a_pipeline_run_whose_leader_is_killed_is_followed_by_the_next_and_runs_once(
) -> anyhow::Result<()> {
    let election = |id| {
        [
            ("ELECTION_CLUSTER_NAME", "azure-operators"),
            ("ELECTION_LEASE_TTL_MS", "2000"),
            ("ELECTION_RENEW_INTERVAL_MS", "400"),
            ("ELECTION_REPLICA_ID", id),
        ]
    };
    let mut adf = Adf::start("jetstream_kv", &election("adf-a")).await?;
    let mut second = adf.replica(&election("adf-b"))?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/LongCopyPipeline",
        Some(json!({"outcome": "succeed", "runMs": 4000})),
    )
    .await?;
    adf.system.opctl.apply(
        &Adf::run_manifest("failover-run", "LongCopyPipeline"),
        Some("public"),
    )?;
    adf.wait_runtime("failover-run", "inprogress").await?;

    // The lease names the replica that started the run: kill it in the middle of the run.
    let js = async_nats::jetstream::new(adf.system.client.clone());
    let lease = js
        .get_key_value("election-azure-operators")
        .await?
        .get("leader.adf-operator")
        .await?
        .expect("a leader");
    let holder = serde_json::from_slice::<Value>(&lease)?["holder"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match holder.as_str() {
        "adf-a" => adf.component.kill9(),
        "adf-b" => second.kill9(),
        other => anyhow::bail!("unexpected leader {other}"),
    }

    let record = adf.wait_runtime("failover-run", "succeeded").await?;
    let runs = adf.runs().await?;
    assert_eq!(
        runs.len(),
        1,
        "one run, followed by the new leader: {runs:?}"
    );
    assert_eq!(record["status"]["details"]["runId"], runs[0]["runId"]);
    assert_eq!(adf.calls().await?["createRun"], 1);
    Ok(())
}

#[tokio::test]
async fn a_spec_past_adfs_parameter_limit_or_with_a_bad_timeout_is_refused_at_apply(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system
        .opctl
        .apply(&example("adf-secret.yaml"), Some("user-system"))?;
    system.opctl.apply(&example("adf-operator.yaml"), None)?;
    let with = |extra: &str| {
        example("adf-pipeline-run.yaml").replace(
            "resourceGroupName: Engineering",
            &format!("resourceGroupName: Engineering\n{extra}"),
        )
    };
    let parameters = |n: usize| {
        let lines: Vec<String> = (0..n).map(|i| format!("      p{i}: {i}")).collect();
        format!("    parameters:\n{}", lines.join("\n"))
    };
    for (what, manifest, expected) in [
        (
            "51 parameters",
            with(&parameters(51)),
            vec!["spec/parameters", "more than 50 properties"],
        ),
        (
            "a timeout that does not parse",
            with("    timeout: half an hour"),
            vec!["spec/timeout"],
        ),
        (
            "a negative timeout",
            with("    timeout: -30m"),
            vec!["spec/timeout"],
        ),
    ] {
        let run = system
            .opctl
            .run_with_stdin(&["apply", "-f", "-", "-w", "public"], Some(&manifest))?;
        assert_ne!(run.code, 0, "{what} was accepted");
        for text in expected {
            assert!(run.stderr.contains(text), "{what}: {}", run.stderr);
        }
    }
    for (what, manifest) in [
        ("50 parameters", with(&parameters(50))),
        ("a timeout of 1h30m", with("    timeout: 1h30m")),
    ] {
        let run = system
            .opctl
            .run_with_stdin(&["apply", "-f", "-", "-w", "public"], Some(&manifest))?;
        assert_eq!(run.code, 0, "{what} was refused: {}", run.stderr);
    }
    Ok(())
}
