//! The ADF operator's test system: a real nats-server, the orchestrator, the stand-in ADF
//! server and an adf-operator process, with the seed's secret and operator applied, and the
//! stand-in's control API.

use std::time::Duration;

use serde_json::Value;

use crate::{example, runtime_of, wait_for_resource, ComponentProcess, StandinProcess, TestSystem};

pub const WAIT: Duration = Duration::from_secs(60);
pub const TENANT: &str = "00000000-0000-0000-0000-000000000001";
pub const CLIENT: &str = "00000000-0000-0000-0000-000000000002";
pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000003";
pub const SECRET: &str = "replace-me";

pub struct Adf {
    pub system: TestSystem,
    pub standin: StandinProcess,
    pub component: ComponentProcess,
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
    pub async fn start(store: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(store, extra_env, &[], &[]).await
    }

    /// Like `start`, with more stand-in settings and without the operator variables `without`.
    pub async fn start_with(
        store: &str,
        extra_env: &[(&str, &str)],
        standin_env: &[(&str, &str)],
        without: &[&str],
    ) -> anyhow::Result<Self> {
        operator_telemetry::install_tls_provider();
        let system = TestSystem::start().await?;
        let mut standin_all = vec![
            ("ADF_STANDIN_TENANT_ID", TENANT),
            ("ADF_STANDIN_CLIENT_ID", CLIENT),
            ("ADF_STANDIN_CLIENT_SECRET", SECRET),
            ("ADF_STANDIN_SUBSCRIPTION_ID", SUBSCRIPTION),
            ("ADF_STANDIN_QUEUED_MS", "200"),
            ("ADF_STANDIN_RUN_MS", "1500"),
        ];
        standin_all.extend_from_slice(standin_env);
        let standin = StandinProcess::start(&standin_all)?;
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
            ("AZURE_IMDS_ENDPOINT", &standin.url),
            ("ADF_POLL_MIN_MS", "100"),
            ("ADF_POLL_MAX_MS", "500"),
        ];
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| !without.contains(k))
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
    pub fn replica(&self, extra_env: &[(&str, &str)]) -> anyhow::Result<ComponentProcess> {
        start_replica(&self.system, &self.args, &self.env, extra_env)
    }

    pub async fn control(
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

    pub async fn runs(&self) -> anyhow::Result<Vec<Value>> {
        let report = self.control(reqwest::Method::GET, "runs", None).await?;
        Ok(report["runs"].as_array().cloned().unwrap_or_default())
    }

    pub async fn calls(&self) -> anyhow::Result<Value> {
        self.control(reqwest::Method::GET, "calls", None).await
    }

    pub fn run_manifest(name: &str, pipeline: &str) -> String {
        example("adf-pipeline-run.yaml")
            .replace("name: pipeline-run-1", &format!("name: {name}"))
            .replace("ArmtemplateSampleCopyPipeline", pipeline)
    }

    pub async fn wait_runtime(&self, name: &str, runtime: &str) -> anyhow::Result<Value> {
        let record = wait_for_resource(&self.system.client, "public", name, WAIT, |r| {
            runtime_of(r) == Some(runtime)
        })
        .await?;
        record.ok_or_else(|| anyhow::anyhow!("{name} vanished"))
    }
}
