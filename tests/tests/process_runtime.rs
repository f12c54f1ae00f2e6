//! The `process` component runtime end to end, on a real nats-server: the orchestrator runs an
//! operator's components itself from the manifest's `command`, `arguments`, `replicas`,
//! `environmentVars` and secrets; restarts a replica that dies; scales on a re-apply or
//! `opctl scale`; and stops them when the operator is deleted. No test here starts a component.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use operator_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// NATS, an orchestrator with the `process` runtime (fast restarts), a jobs platform and opctl.
struct ProcessSystem {
    _nats: NatsServer,
    orchestrator: OrchestratorProcess,
    platform: Platform,
    client: async_nats::Client,
    opctl: Opctl,
}

impl ProcessSystem {
    async fn start() -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let orchestrator = OrchestratorProcess::start_with_env(
            &nats.url(),
            &[
                ("ORCHESTRATOR_COMPONENT_RUNTIME", "process"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MS", "100"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MAX_MS", "400"),
                ("ORCHESTRATOR_STOP_GRACE_S", "5"),
            ],
        )?;
        let client = nats.client().await?;
        let opctl = orchestrator.opctl();
        Ok(Self {
            _nats: nats,
            orchestrator,
            platform: Platform::start()?,
            client,
            opctl,
        })
    }

    /// The demo operator with its component's command set to the built `demo-operator`.
    fn demo_operator(&self, replicas: u32) -> anyhow::Result<String> {
        let command = binary("demo-operator")?.display().to_string();
        let manifest = example("demo-operator.yaml")
            .replace(
                "        - demo-operator\n",
                &format!("        - {command}\n"),
            )
            .replace(
                "      replicas: 1\n",
                &format!("      replicas: {replicas}\n"),
            )
            .replace(
                "      environmentVars:\n",
                &format!(
                    "      environmentVars:\n        DEMO_PLATFORM_URL: {}\n",
                    self.platform.url
                ),
            );
        assert!(manifest.contains(&command), "the example changed shape");
        Ok(manifest)
    }

    /// `opctl get -t operator -n NAME -d -o json`'s `details.components`.
    fn components(&self, operator: &str) -> anyhow::Result<Value> {
        let run = self
            .opctl
            .run(&["get", "-t", "operator", "-n", operator, "-d", "-o", "json"])?;
        if run.code != 0 {
            bail!("opctl get failed: {}", run.stderr);
        }
        let view: Value = serde_json::from_str(&run.stdout)?;
        Ok(view["details"]["components"].clone())
    }

    /// Asks the orchestrator until its view of the components satisfies `done`.
    fn wait_for_components(
        &self,
        operator: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let components = self.components(operator)?;
            if done(&components) {
                return Ok(components);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; components: {components:#}\norchestrator log:\n{}",
                    self.orchestrator.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self, operator: &str) -> anyhow::Result<String> {
        let run = self.opctl.run(&["logs", "-n", operator])?;
        if run.code != 0 {
            bail!("opctl logs failed: {}", run.stderr);
        }
        Ok(run.stdout)
    }

    fn wait_for_logs(&self, operator: &str, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let logs = self.logs(operator)?;
            if logs.contains(needle) {
                return Ok(logs);
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} in the logs:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn replicas(components: &Value) -> Vec<Value> {
    components["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running_pids(components: &Value) -> Vec<u32> {
    replicas(components)
        .iter()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["id"].as_str()?.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn the_orchestrator_runs_the_demo_component_and_its_jobs_are_reconciled() -> anyhow::Result<()>
{
    let system = ProcessSystem::start().await?;
    system.opctl.apply(&system.demo_operator(1)?, None)?;
    system.opctl.apply(
        &TestSystem::job("run-by-the-orchestrator", "{durationMs: 0}"),
        None,
    )?;

    let record = wait_for_resource(
        &system.client,
        "public",
        "run-by-the-orchestrator",
        WAIT,
        |r| runtime_of(r) == Some("succeeded"),
    )
    .await
    .with_context(|| system.orchestrator.log())?;
    assert_eq!(status_of(record.as_ref()), Some("active"));
    assert_eq!(
        system
            .platform
            .calls()
            .starts
            .get("public/run-by-the-orchestrator"),
        Some(&1)
    );

    let components = system.components("demo")?;
    assert_eq!(components["runtime"], "process");
    assert_eq!(components["desired"][0]["replicas"], 1);
    let pids = running_pids(&components);
    assert_eq!(pids.len(), 1, "{components:#}");
    assert!(alive(pids[0]));

    let logs = system.logs("demo")?;
    assert!(
        logs.contains("==> demo-controller-0 <=="),
        "a header per replica: {logs}"
    );
    assert!(
        logs.contains("[orchestrator] replica demo-controller-0 started"),
        "{logs}"
    );
    assert!(
        logs.contains("command stream found"),
        "the component's own output: {logs}"
    );
    let kept = system.orchestrator.component_log("demo-demo-controller-0");
    assert!(
        kept.contains("command stream found"),
        "the replica's output is kept in ORCHESTRATOR_PROCESS_LOG_DIR too: {kept:?}"
    );

    let described = system
        .opctl
        .run(&["get", "-t", "operator", "-n", "demo", "-d"])?;
    assert!(
        described.stdout.contains("Components (runtime: process):"),
        "{}",
        described.stdout
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_replica_is_restarted_scaling_follows_opctl_and_deleting_the_operator_stops_them(
) -> anyhow::Result<()> {
    let system = ProcessSystem::start().await?;
    system.opctl.apply(&system.demo_operator(1)?, None)?;
    let first = system.wait_for_components("demo", "one running replica", |c| {
        running_pids(c).len() == 1
    })?;
    let killed = running_pids(&first)[0];
    let kill = std::process::Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()?;
    assert!(kill.success());

    let restarted = system.wait_for_components("demo", "the replica restarted", |c| {
        running_pids(c).first().is_some_and(|pid| *pid != killed)
    })?;
    let replica = &replicas(&restarted)[0];
    assert_eq!(replica["restarts"], 1, "{restarted:#}");
    assert_eq!(replica["exitCode"], 137, "{restarted:#}");
    assert_eq!(replica["message"], "killed by signal 9");

    let scale = system.opctl.run(&["scale", "-n", "demo", "-r", "2"])?;
    assert_eq!(scale.code, 0, "{}", scale.stderr);
    assert!(
        scale.stderr.contains("from 1 to 2 replicas...updated"),
        "{}",
        scale.stderr
    );
    let scaled = system.wait_for_components("demo", "two running replicas", |c| {
        running_pids(c).len() == 2
    })?;
    assert_eq!(scaled["desired"][0]["replicas"], 2);
    let stored = system
        .opctl
        .run(&["get", "-t", "operator", "-n", "demo", "-o", "json"])?;
    let stored: Value = serde_json::from_str(&stored.stdout)?;
    assert_eq!(
        stored["manifest"]["operator"]["components"][0]["replicas"], 2,
        "the new count is stored"
    );

    // With two replicas sharing the work queue, a job is still run exactly once.
    system
        .opctl
        .apply(&TestSystem::job("with-two", "{durationMs: 0}"), None)?;
    wait_for_resource(&system.client, "public", "with-two", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    assert_eq!(
        system.platform.calls().starts.get("public/with-two"),
        Some(&1)
    );

    // Re-applying with another count scales too: down to one, the highest index goes.
    system.opctl.apply(&system.demo_operator(1)?, None)?;
    let down = system.wait_for_components("demo", "one replica left", |c| {
        replicas(c).len() == 1 && running_pids(c).len() == 1
    })?;
    assert_eq!(replicas(&down)[0]["replica"], 0);

    let pids = running_pids(&down);
    let deleted = system
        .opctl
        .run(&["delete", "-t", "resource", "-n", "with-two"])?;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    wait_for_resource(&system.client, "public", "with-two", WAIT, |r| r.is_none()).await?;
    let deleted = system
        .opctl
        .run(&["delete", "-t", "operator", "-n", "demo"])?;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    // The delete answers once its components are gone.
    assert!(
        pids.iter().all(|pid| !alive(*pid)),
        "still running: {pids:?}"
    );
    Ok(())
}

const SHOP_OPERATOR: &str = r#"
name: shop
version: v1
type: operator
operator:
  natsClusterConfig: {name: shop-nats, compute: runnable-default}
  components:
    - name: checker
      type: worker
      compute: runnable-default
      image: checker:latest
      command: ["/bin/sh", "-c"]
      arguments:
        - |
          case "$TOKEN" in
            first-*-one) echo "secret v1 seen";;
            second-*-two) echo "secret v2 seen";;
          esac
          [ "$OPERATOR_NAME" = shop ] && [ "$NATS_URL" = "$EXPECTED_NATS_URL" ] && [ -z "$UNUSED" ] && echo "wiring ok: $ENTITY_OF_INTEREST_MESSAGE_STREAM"
          exit 3
      replicas: 1
      environmentVars:
        EXPECTED_NATS_URL: NATS_URL_HERE
      secrets:
        - {name: shop-token, workspace: user-system, keys: [TOKEN]}
  resources:
    - name: order
  enabledWorkspaces: [public]
"#;

fn shop_secret(token: &str) -> String {
    format!(
        "name: shop-token\nversion: v1\ntype: secret\nsecret:\n  type: key-value\n  acl: r\n  data:\n    TOKEN: {token}\n    UNUSED: not-consumed\n"
    )
}

#[tokio::test]
async fn a_component_gets_its_secret_and_wiring_and_a_crashing_one_restarts_with_its_exit_code(
) -> anyhow::Result<()> {
    let system = ProcessSystem::start().await?;
    system
        .opctl
        .apply(&shop_secret("first-s3cr3t-one"), Some("user-system"))?;
    let nats_url = system._nats.url();
    system
        .opctl
        .apply(&SHOP_OPERATOR.replace("NATS_URL_HERE", &nats_url), None)?;

    let logs = system.wait_for_logs("shop", "secret v1 seen")?;
    assert!(
        logs.contains("wiring ok: operator-shop"),
        "NATS_URL, OPERATOR_NAME and the derived stream: {logs}"
    );
    let crashing = system.wait_for_components("shop", "two restarts", |c| {
        replicas(c)
            .first()
            .is_some_and(|r| r["restarts"].as_u64() >= Some(2))
    })?;
    let replica = &replicas(&crashing)[0];
    assert_eq!(replica["exitCode"], 3, "{crashing:#}");
    assert_eq!(replica["message"], "exited with code 3");
    assert!(system
        .logs("shop")?
        .contains("exited with code 3; restarting in"));

    // A new value of the secret reaches the component: its replicas are replaced, and
    // `logs -f` shows the new replica's lines as it writes them.
    let following = Following::start(&system.opctl, &["logs", "-n", "shop", "-f", "--tail", "1"])?;
    following.stdout_line(|line| line.starts_with("==> checker-"))?;
    system
        .opctl
        .apply(&shop_secret("second-s3cr3t-two"), Some("user-system"))?;
    following.stdout_line(|line| line.contains("secret v2 seen"))?;
    system.wait_for_logs("shop", "secret v2 seen")?;
    drop(following);

    let described = system
        .opctl
        .run(&["get", "-t", "operator", "-n", "shop", "-d", "-o", "json"])?;
    let rendered = system.opctl.run(&["render", "-n", "shop"])?;
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    assert!(
        rendered.stdout.contains("kind: Deployment"),
        "{}",
        rendered.stdout
    );
    assert!(
        rendered.stdout.contains("key: TOKEN"),
        "{}",
        rendered.stdout
    );
    for (what, text) in [
        ("the orchestrator's log", system.orchestrator.log()),
        ("get -d", described.stdout),
        ("render", rendered.stdout),
    ] {
        for value in ["first-s3cr3t-one", "second-s3cr3t-two"] {
            assert!(
                !text.contains(value),
                "{what} shows a secret value:\n{text}"
            );
        }
    }
    Ok(())
}

/// Waits until `pid` has exited, or fails after `WAIT`.
fn wait_gone(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("process {pid} still runs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_orchestrator_leaves_no_component_behind_and_runs_them_again_once_back(
) -> anyhow::Result<()> {
    let mut system = ProcessSystem::start().await?;
    system.opctl.apply(&system.demo_operator(1)?, None)?;
    let before = system.wait_for_components("demo", "one running replica", |c| {
        running_pids(c).len() == 1
    })?;
    let orphan = running_pids(&before)[0];

    // SIGKILL: no chance to stop its children; the kernel tells them (setpriv's pdeathsig).
    system.orchestrator.kill9();
    wait_gone(orphan)?;

    system.orchestrator.restart()?;
    let after = system.wait_for_components("demo", "the replica started again", |c| {
        running_pids(c).len() == 1
    })?;
    assert_ne!(running_pids(&after)[0], orphan);
    system
        .opctl
        .apply(&TestSystem::job("after-restart", "{durationMs: 0}"), None)?;
    wait_for_resource(&system.client, "public", "after-restart", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    Ok(())
}
