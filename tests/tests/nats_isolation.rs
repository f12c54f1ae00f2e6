//! NATS isolation end to end: a nats-server in operator mode with the set-up `nats-auth init`
//! writes, the orchestrator with the account signing seed running two operators' components
//! (the `process` runtime) under the users it minted for them. Both operators' jobs are
//! reconciled — the grants are wide enough — while credentials minted the same way for
//! operator A are refused by the server on everything of operator B: its query subject, its
//! command stream, its reply subject, its entity bucket, its election keys and its inboxes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use futures::StreamExt;
use operator_contract::subject::TypeSubjects;
use operator_nats_auth::{component_inbox_prefix, AccountSigner, ComponentAccess};
use operator_tests::*;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
/// How long a refused request may take to fail: the server drops it, so it times out.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);
const ELECTION_CLUSTER: &str = "isolation";

/// A nats-server with JetStream, trusting the operator of a fresh `nats-auth init`.
struct AuthNatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl AuthNatsServer {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let init = Command::new(binary("nats-auth")?)
            .args(["init", "--dir"])
            .arg(dir.path().join("auth"))
            .output()?;
        if !init.status.success() {
            bail!(
                "nats-auth init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let config = dir.path().join("server.conf");
        let ports = dir.path().join("ports");
        std::fs::create_dir_all(&ports)?;
        // Port -1: the server chooses one and reports it in its ports file.
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:-1\nports_file_dir: {:?}\njetstream {{ store_dir: {:?} }}\ninclude ./auth/nats-auth.conf\n",
                ports,
                dir.path().join("store")
            ),
        )?;
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let log = std::fs::File::create(dir.path().join("nats-server.log"))?;
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {bin}: install nats-server >= 2.10"))?;
        let port = match operator_tests::process::read_ports_file(&ports, &mut child) {
            Ok(port) => port,
            Err(e) => {
                let log =
                    std::fs::read_to_string(dir.path().join("nats-server.log")).unwrap_or_default();
                bail!("{e}: {log}");
            }
        };
        let server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen: {}", server.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn auth_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("auth").join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }
}

impl Drop for AuthNatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo operator renamed `name`, run by the orchestrator with the built binary, electing
/// in the cluster both operators share.
fn operator_manifest(name: &str) -> anyhow::Result<String> {
    let command = binary("demo-operator")?.display().to_string();
    let manifest = example("demo-operator.yaml")
        .replace("name: demo\n", &format!("name: {name}\n"))
        .replace(
            "        - demo-operator\n",
            &format!("        - {command}\n"),
        )
        .replace(
            "      environmentVars:\n",
            &format!("      environmentVars:\n        ELECTION_CLUSTER_NAME: {ELECTION_CLUSTER}\n"),
        );
    assert!(
        manifest.contains(&command) && manifest.contains(&format!("name: {name}\n")),
        "the example changed shape"
    );
    Ok(manifest)
}

fn job(operator: &str, name: &str) -> String {
    TestSystem::job(name, "{durationMs: 0}")
        .replace("operator: demo", &format!("operator: {operator}"))
}

/// A client with `creds`, as a component connects (its own inbox prefix), and the server
/// errors it is sent.
async fn connect_as(
    url: &str,
    creds: &str,
    inbox_prefix: &str,
) -> anyhow::Result<(async_nats::Client, mpsc::UnboundedReceiver<String>)> {
    let (errors, received) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .credentials(creds)?
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, received))
}

/// Waits for the server's permissions violation naming `subject`.
async fn violation_for(
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let error = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .with_context(|| {
                format!("no permissions violation for {subject}: the server allowed it")
            })?
            .context("the connection's events ended")?;
        let lower = error.to_lowercase();
        if lower.contains("permissions violation") && error.contains(&format!("\"{subject}\"")) {
            return Ok(error);
        }
    }
}

#[tokio::test]
async fn a_component_reaches_only_its_own_operators_subjects_and_buckets() -> anyhow::Result<()> {
    let nats = AuthNatsServer::start()?;
    let seed_file = nats.auth_file("account-signing.seed");
    let orchestrator_creds = nats.auth_file("orchestrator.creds");
    let orchestrator = OrchestratorProcess::start_with_env(
        &nats.url(),
        &[
            ("NATS_CREDS_FILE", path_str(&orchestrator_creds)?),
            ("ORCHESTRATOR_NATS_ACCOUNT_SEED_FILE", path_str(&seed_file)?),
            ("ORCHESTRATOR_COMPONENT_RUNTIME", "process"),
            ("ORCHESTRATOR_STOP_GRACE_S", "5"),
        ],
    )?;
    let opctl = orchestrator.opctl();
    let admin = async_nats::ConnectOptions::new()
        .credentials_file(&orchestrator_creds)
        .await?
        .connect(nats.url())
        .await?;

    // Without credentials nothing connects: the server is in operator mode.
    assert!(
        async_nats::connect(nats.url()).await.is_err(),
        "an anonymous client was let in"
    );

    // Both operators' components work under the users the orchestrator minted for them:
    // commands consumed, entities stored, a leader elected, status events published.
    for operator in ["iso-a", "iso-b"] {
        opctl.apply(&operator_manifest(operator)?, None)?;
        opctl.apply(&job(operator, &format!("job-of-{operator}")), None)?;
    }
    for operator in ["iso-a", "iso-b"] {
        let record = wait_for_resource(&admin, "public", &format!("job-of-{operator}"), WAIT, |r| {
            runtime_of(r) == Some("succeeded")
        })
        .await
        .with_context(|| format!("{operator}'s component did not reconcile under its own user; orchestrator log:\n{}", orchestrator.log()))?;
        assert_eq!(status_of(record.as_ref()), Some("active"));
    }
    // A query is answered too: the component may reply to the requester's inbox.
    let details = opctl.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "job-of-iso-a",
        "-d",
        "-o",
        "json",
    ])?;
    assert_eq!(details.code, 0, "{}", details.stderr);
    assert!(
        details.stdout.contains("succeeded"),
        "no live details: {}",
        details.stdout
    );

    // Operator A's component credentials, minted as the orchestrator mints them.
    let signer = AccountSigner::from_seed_file_text(&std::fs::read_to_string(&seed_file)?)?;
    let types = [TypeSubjects::defaults("iso-a", "job")];
    let access = ComponentAccess::for_component("iso-a", types.iter(), |name| {
        (name == "ELECTION_CLUSTER_NAME").then(|| ELECTION_CLUSTER.to_string())
    });
    let creds = signer.mint("iso-a/test", Some(&access.permissions()))?;
    let (a, mut errors) =
        connect_as(&nats.url(), &creds.0, &component_inbox_prefix("iso-a")).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(REFUSED_WITHIN)
        .build(a.clone());

    // A's own names work: the grants are not too tight.
    js.get_stream("operator-iso-a")
        .await
        .context("A cannot see its command stream")?;
    let entities = js
        .get_key_value("entities-iso-a")
        .await
        .context("A cannot open its bucket")?;
    let keys: Vec<String> = entities
        .keys()
        .await?
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    assert!(
        keys.iter().any(|k| k.contains("job-of-iso-a")),
        "A's bucket keys: {keys:?}"
    );
    let election = js
        .get_key_value(format!("election-{ELECTION_CLUSTER}"))
        .await?;
    assert!(
        election.entry("leader.iso-a").await?.is_some(),
        "A's lease unreadable"
    );
    // A shared bucket its `OPERATOR_SHARED_BUCKETS` lists (the ADF operator's monitoring
    // budget is one): created, written and read under a minted user; unlisted, refused.
    let shared_access = ComponentAccess::for_component("iso-a", types.iter(), |name| match name {
        "ELECTION_CLUSTER_NAME" => Some(ELECTION_CLUSTER.to_string()),
        "OPERATOR_SHARED_BUCKETS" => Some("shared-iso".to_string()),
        _ => None,
    });
    let shared_creds = signer.mint("iso-a/shared", Some(&shared_access.permissions()))?;
    let (shared_client, _shared_errors) = connect_as(
        &nats.url(),
        &shared_creds.0,
        &component_inbox_prefix("iso-a"),
    )
    .await?;
    let shared_js = jetstream::ContextBuilder::new()
        .timeout(REFUSED_WITHIN)
        .build(shared_client);
    let shared = shared_js
        .create_key_value(jetstream::kv::Config {
            bucket: "shared-iso".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .context("A cannot create the shared bucket it lists")?;
    shared
        .put("rg.factory", "{}".into())
        .await
        .context("A cannot write the shared bucket it lists")?;
    assert!(shared.get("rg.factory").await?.is_some());
    assert!(
        js.get_key_value("shared-iso").await.is_err(),
        "A opened a shared bucket it does not list"
    );
    violation_for(&mut errors, "$JS.API.STREAM.INFO.KV_shared-iso").await?;

    let mut own_queries = a.subscribe("operator.iso-a.job.query").await?;
    // A round trip on A's connection: the server has taken the subscription before it answers.
    js.query_account().await?;
    admin
        .publish("operator.iso-a.job.query", "ping".into())
        .await?;
    admin.flush().await?;
    let query = tokio::time::timeout(Duration::from_secs(5), own_queries.next())
        .await
        .context("A did not receive a query on its own subject")?;
    assert!(query.is_some());
    js.publish("operator.iso-a.reply", "{}".into())
        .await?
        .await
        .context("A cannot publish a status event on its own reply subject")?;

    // B's query subject (and B's commands, through any subscription) are refused.
    let _b_queries = a.subscribe("operator.iso-b.job.query").await?;
    violation_for(&mut errors, "operator.iso-b.job.query").await?;
    let _b_commands = a.subscribe("operator.iso-b.job.command").await?;
    violation_for(&mut errors, "operator.iso-b.job.command").await?;

    // B's command stream can be neither read nor consumed.
    assert!(
        js.get_stream("operator-iso-b").await.is_err(),
        "A read B's command stream"
    );
    violation_for(&mut errors, "$JS.API.STREAM.INFO.operator-iso-b").await?;
    let consumer = jetstream::consumer::pull::Config {
        durable_name: Some("component-iso-b".into()),
        ..Default::default()
    };
    assert!(
        js.create_consumer_on_stream(consumer, "operator-iso-b")
            .await
            .is_err(),
        "A created a consumer on B's command stream"
    );
    violation_for(
        &mut errors,
        "$JS.API.CONSUMER.CREATE.operator-iso-b.component-iso-b",
    )
    .await?;
    a.publish(
        "$JS.API.CONSUMER.MSG.NEXT.operator-iso-b.component-iso-b",
        "1".into(),
    )
    .await?;
    violation_for(
        &mut errors,
        "$JS.API.CONSUMER.MSG.NEXT.operator-iso-b.component-iso-b",
    )
    .await?;

    // B's reply subject: no status event in B's name.
    let ack = js.publish("operator.iso-b.reply", "{}".into()).await?;
    assert!(
        ack.await.is_err(),
        "A's status event on B's reply subject was stored"
    );
    violation_for(&mut errors, "operator.iso-b.reply").await?;

    // B's entity bucket: neither opened, read nor written.
    assert!(
        js.get_key_value("entities-iso-b").await.is_err(),
        "A opened B's bucket"
    );
    violation_for(&mut errors, "$JS.API.STREAM.INFO.KV_entities-iso-b").await?;
    let direct_get =
        "$JS.API.DIRECT.GET.KV_entities-iso-b.$KV.entities-iso-b.job.public.job-of-iso-b";
    assert!(
        tokio::time::timeout(REFUSED_WITHIN, a.request(direct_get, "".into()))
            .await
            .map_or(true, |answer| answer.is_err()),
        "A read B's entity"
    );
    violation_for(&mut errors, direct_get).await?;
    a.publish("$KV.entities-iso-b.job.public.job-of-iso-b", "{}".into())
        .await?;
    violation_for(&mut errors, "$KV.entities-iso-b.job.public.job-of-iso-b").await?;

    // The election bucket they share: B's lease is neither read nor taken by A.
    assert!(
        election.entry("leader.iso-b").await.is_err(),
        "A read B's lease"
    );
    violation_for(
        &mut errors,
        &format!("$JS.API.DIRECT.GET.KV_election-{ELECTION_CLUSTER}.$KV.election-{ELECTION_CLUSTER}.leader.iso-b"),
    )
    .await?;
    assert!(
        election.put("leader.iso-b", "{}".into()).await.is_err(),
        "A wrote B's lease"
    );
    violation_for(
        &mut errors,
        &format!("$KV.election-{ELECTION_CLUSTER}.leader.iso-b"),
    )
    .await?;

    // Replies meant for others: neither the common inbox nor B's.
    let _inboxes = a.subscribe("_INBOX.>").await?;
    violation_for(&mut errors, "_INBOX.>").await?;
    let _b_inboxes = a
        .subscribe(format!("{}.>", component_inbox_prefix("iso-b")))
        .await?;
    violation_for(&mut errors, "_INBOX_iso-b.>").await?;

    // B is unharmed: its lease still held, its job still reconciled.
    let b_lease = async_nats::jetstream::new(admin.clone())
        .get_key_value(format!("election-{ELECTION_CLUSTER}"))
        .await?
        .entry("leader.iso-b")
        .await?;
    assert!(
        b_lease.is_some_and(|e| e.value.as_ref() != b"{}"),
        "B's lease was overwritten"
    );
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a non-UTF-8 temporary path")
}
