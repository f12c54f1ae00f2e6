//! The Azure Data Factory operator end to end: the seed's walk-through against the stand-in ADF
//! server, with the real orchestrator, adf-operator and opctl processes on a real nats-server.

use std::time::Duration;

use operator_tests::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const CLIENT: &str = "00000000-0000-0000-0000-000000000002";
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000003";
const SECRET: &str = "replace-me";

struct Adf {
    system: TestSystem,
    standin: StandinProcess,
    component: ComponentProcess,
    http: reqwest::Client,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn start_replica(
    system: &TestSystem,
    args: &[String],
    env: &[(String, String)],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<ComponentProcess> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra_env);
    ComponentProcess::start_binary(
        "adf-operator",
        &args,
        &system.nats.url(),
        "adf-operator",
        &all,
    )
}

impl Adf {
    /// NATS, the orchestrator, the stand-in and the adf-operator, with the seed's secret and
    /// operator applied.
    async fn start(store: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let system = TestSystem::start().await?;
        let standin = StandinProcess::start(&[
            ("ADF_STANDIN_TENANT_ID", TENANT),
            ("ADF_STANDIN_CLIENT_ID", CLIENT),
            ("ADF_STANDIN_CLIENT_SECRET", SECRET),
            ("ADF_STANDIN_SUBSCRIPTION_ID", SUBSCRIPTION),
            ("ADF_STANDIN_QUEUED_MS", "200"),
            ("ADF_STANDIN_RUN_MS", "1500"),
        ])?;
        system
            .opctl
            .apply(&example("adf-secret.yaml"), Some("user-system"))?;
        system.opctl.apply(&example("adf-operator.yaml"), None)?;
        let state_file = tempfile::NamedTempFile::new()?.into_temp_path().keep()?;
        let state_file = state_file.to_string_lossy().into_owned();
        let env: Vec<(&str, &str)> = vec![
            ("OPERATOR_STATE_STORE_TYPE", store),
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
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_SECRET", SECRET),
            ("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION),
            ("AZURE_AUTHORITY_HOST", &standin.url),
            ("AZURE_RESOURCE_MANAGER_ENDPOINT", &standin.url),
            ("ADF_POLL_MIN_MS", "100"),
            ("ADF_POLL_MAX_MS", "500"),
        ];
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = vec![
            "operator".to_string(),
            "adf".to_string(),
            "--electionStateFile".to_string(),
            state_file,
        ];
        let component = start_replica(&system, &args, &env, extra_env)?;
        Ok(Self {
            system,
            standin,
            component,
            // A fresh connection per control call: the stand-in may close an idle one just as
            // a pooled request goes out on it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?,
            args,
            env,
        })
    }

    /// Another adf-operator process like the first one, with `extra_env` on top.
    fn replica(&self, extra_env: &[(&str, &str)]) -> anyhow::Result<ComponentProcess> {
        start_replica(&self.system, &self.args, &self.env, extra_env)
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/_standin/{path}", self.standin.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "stand-in {path}: {}",
            response.status()
        );
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    async fn runs(&self) -> anyhow::Result<Vec<Value>> {
        let report = self.control(reqwest::Method::GET, "runs", None).await?;
        Ok(report["runs"].as_array().cloned().unwrap_or_default())
    }

    async fn calls(&self) -> anyhow::Result<Value> {
        self.control(reqwest::Method::GET, "calls", None).await
    }

    fn run_manifest(name: &str, pipeline: &str) -> String {
        example("adf-pipeline-run.yaml")
            .replace("name: pipeline-run-1", &format!("name: {name}"))
            .replace("ArmtemplateSampleCopyPipeline", pipeline)
    }

    async fn wait_runtime(&self, name: &str, runtime: &str) -> anyhow::Result<Value> {
        let record = wait_for_resource(&self.system.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some(runtime)
        })
        .await?;
        record.ok_or_else(|| anyhow::anyhow!("{name} vanished"))
    }
}

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
async fn a_failing_pipeline_ends_failed_with_azures_message() -> anyhow::Result<()> {
    let adf = Adf::start("memory", &[]).await?;
    adf.system.opctl.apply(
        &Adf::run_manifest("doomed", "AlwaysFailPipeline"),
        Some("public"),
    )?;
    let record = adf.wait_runtime("doomed", "failed").await?;
    let message = record["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Operation on target Copy data failed"),
        "{record}"
    );
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
    assert_eq!(adf.calls().await?["cancel"], 1);
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
