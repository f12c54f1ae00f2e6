//! Orchestrator replicas end to end: two orchestrators on one nats-server, one leading. A
//! follower forwards the API; the leader's kill hands the lead (and the writes) to the other;
//! a leader paused past its lease writes nothing once it resumes, and exits.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use operator_tests::platform::Platform;
use operator_tests::*;

mod fencing;

const WAIT: Duration = Duration::from_secs(30);
const LEASE_TTL_MS: u64 = 2000;

/// A replica named `name` on the NATS at `nats`, sharing the secret keys of `keys` with the
/// others.
fn replica(nats: &str, name: &str, keys: &std::path::Path) -> anyhow::Result<OrchestratorProcess> {
    OrchestratorProcess::start_with_env(
        nats,
        &[
            ("ORCHESTRATOR_REPLICA_NAME", name),
            ("ORCHESTRATOR_LEASE_TTL_MS", &LEASE_TTL_MS.to_string()),
            ("ORCHESTRATOR_LEASE_RENEW_MS", "500"),
            ("ORCHESTRATOR_SECRET_KEYS_FILE", &keys.display().to_string()),
        ],
    )
}

/// `/readyz` of `orchestrator`: 200 while it leads, 503 while it follows. Asked without a key,
/// as a load balancer's or kubelet's probe asks.
async fn ready(orchestrator: &OrchestratorProcess) -> anyhow::Result<u16> {
    operator_telemetry::install_tls_provider();
    let answer = reqwest::Client::new()
        .get(format!("{}/readyz", orchestrator.url()))
        .send()
        .await?;
    Ok(answer.status().as_u16())
}

/// Waits until `orchestrator` says it leads.
async fn wait_leading(orchestrator: &OrchestratorProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while ready(orchestrator).await.unwrap_or(0) != 200 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replica did not lead within {WAIT:?}; its log:\n{}",
            orchestrator.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `opctl` sent to these replicas, in this order.
fn opctl_of(replicas: &[&OrchestratorProcess]) -> Opctl {
    let mut opctl = replicas[0].opctl();
    opctl.server = replicas
        .iter()
        .map(|r| r.url())
        .collect::<Vec<_>>()
        .join(",");
    opctl
}

/// Applies a demo job through `replica` on a blocking thread (opctl waits for its answer; the
/// test's runtime must not), giving the apply's own result.
async fn apply_job_through(
    replica: &OrchestratorProcess,
    name: &str,
) -> anyhow::Result<anyhow::Result<operator_tests::process::OpctlRun>> {
    let opctl = opctl_of(&[replica]);
    let manifest = TestSystem::job(name, "{durationMs: 0}");
    Ok(tokio::task::spawn_blocking(move || opctl.apply(&manifest, Some("public"))).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_three_node_cluster_a_follower_forwards_and_takes_over_when_the_leader_is_killed(
) -> anyhow::Result<()> {
    let nats = NatsCluster::start(3)?;
    let client = nats.client().await?;
    nats.wait_ready(&client, WAIT).await?;
    let platform = Platform::start()?;
    let keys = tempfile::tempdir()?;
    let keys = keys.path().join("secret-keys");
    let mut first = replica(&nats.url(), "first", &keys)?;
    wait_leading(&first).await?;
    let second = replica(&nats.url(), "second", &keys)?;
    assert_eq!(
        ready(&second).await?,
        503,
        "a follower is not ready for writes"
    );

    // Through the follower: forwarded to the leader.
    let through_second = opctl_of(&[&second]);
    through_second.apply(&example("demo-operator.yaml"), None)?;
    let _component = ComponentProcess::start(
        &nats.url(),
        "demo",
        &[
            ("DEMO_PLATFORM_URL", platform.url.as_str()),
            ("OPERATOR_STATE_STORE_TYPE", "memory"),
        ],
    )?;
    through_second.apply(
        &TestSystem::job("before", "{durationMs: 0}"),
        Some("public"),
    )?;
    wait_for_resource(&client, "public", "before", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    let listed = through_second.run(&["get", "-t", "resource", "-w", "public", "-a"])?;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("before"), "{}", listed.stdout);

    // The leader dies; the same opctl, given both addresses, carries on through the other.
    let both = opctl_of(&[&first, &second]);
    first.kill9();
    let killed = Instant::now();
    let deadline = killed + WAIT;
    let taken_after = loop {
        let run = both.run_with_stdin(
            &["apply", "-f", "-", "-w", "public"],
            Some(&TestSystem::job("after", "{durationMs: 0}")),
        )?;
        if run.code == 0 {
            break killed.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no write accepted within {WAIT:?} of the leader's kill: {run:?}\nsecond's log:\n{}",
            second.log()
        );
    };
    println!("leader killed -> write accepted through the other replica after {taken_after:?} (lease TTL {LEASE_TTL_MS} ms)");
    // TTL + 0.1–0.2 s on an idle machine (README, Replicas and failover); the bound leaves
    // room for a loaded one (3.13 s was seen with a fault run beside the tests), while a
    // follower that waited for anything but the lease would still fail it.
    assert!(
        taken_after < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(3),
        "took {taken_after:?}; second's log:\n{}",
        second.log()
    );
    assert_eq!(ready(&second).await?, 200);
    wait_for_resource(&client, "public", "after", WAIT, |r| {
        runtime_of(r) == Some("succeeded")
    })
    .await?;
    // Nothing acknowledged before the kill was lost.
    let shown = both.run(&[
        "get", "-t", "resource", "-w", "public", "-n", "before", "-o", "json",
    ])?;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("succeeded"), "{}", shown.stdout);
    Ok(())
}

#[tokio::test]
async fn a_write_forwarded_to_a_paused_leader_goes_to_its_successor() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let keys = tempfile::tempdir()?;
    let keys = keys.path().join("secret-keys");
    let first = replica(&nats.url(), "first", &keys)?;
    wait_leading(&first).await?;
    let second = replica(&nats.url(), "second", &keys)?;
    let third = replica(&nats.url(), "third", &keys)?;
    // Both follow, and answer.
    for follower in [&second, &third] {
        assert_eq!(ready(follower).await?, 503);
    }
    opctl_of(&[&first]).apply(&example("demo-operator.yaml"), None)?;

    // Paused while it still holds the lease: the follower forwards the write to it, and the
    // kernel takes the request into the paused process's buffers.
    first.signal("STOP")?;
    let paused = Instant::now();
    let applied = apply_job_through(&third, "while-paused").await?;
    let taken_after = paused.elapsed();
    // The successor is known to lead before the paused one can answer anything.
    first.signal("CONT")?;
    applied?;
    println!("leader paused -> write through a follower accepted after {taken_after:?} (lease TTL {LEASE_TTL_MS} ms)");
    assert!(
        taken_after < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(5),
        "{taken_after:?}"
    );
    drop(second);
    Ok(())
}

#[tokio::test]
async fn a_leader_killed_and_started_again_within_its_lease_sends_requests_on_to_its_successor(
) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let keys = tempfile::tempdir()?;
    let keys = keys.path().join("secret-keys");
    let mut first = replica(&nats.url(), "first", &keys)?;
    wait_leading(&first).await?;
    let second = replica(&nats.url(), "second", &keys)?;
    assert_eq!(ready(&second).await?, 503);
    opctl_of(&[&first]).apply(&example("demo-operator.yaml"), None)?;

    // Back before its lease lapsed, the new process finds the lease in its own name: it must
    // not wait for a lead that goes to `second`.
    first.kill9();
    let killed = Instant::now();
    first.restart()?;
    let applied = apply_job_through(&first, "after-restart").await?;
    let taken_after = killed.elapsed();
    applied?;
    println!("leader killed and started again -> write through it accepted after {taken_after:?} (lease TTL {LEASE_TTL_MS} ms)");
    assert!(
        taken_after < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(5),
        "{taken_after:?}; waited for a lead its previous process held (30 s)"
    );
    drop(second);
    Ok(())
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_and_exits() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let keys = tempfile::tempdir()?;
    let keys = keys.path().join("secret-keys");
    let mut first = replica(&nats.url(), "first", &keys)?;
    wait_leading(&first).await?;
    let second = replica(&nats.url(), "second", &keys)?;
    opctl_of(&[&first]).apply(&example("demo-operator.yaml"), None)?;

    first.signal("STOP")?;
    wait_leading(&second).await?;
    // A write sent to the paused leader: the kernel accepts the connection and the request
    // into the socket's buffers; the process reads it once it resumes.
    let mut stale_write = tokio::net::TcpStream::connect(("127.0.0.1", first.port)).await?;
    let body = TestSystem::job("from-the-deposed", "{durationMs: 0}");
    let request = format!(
        "POST /api/v1/apply?workspace=public HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        operator_tests::process::ADMIN_APIKEY,
        body.len()
    );
    stale_write.write_all(request.as_bytes()).await?;
    first.signal("CONT")?;
    let mut answer = String::new();
    // The answer is a refusal, or nothing at all when the process exits first.
    let _ = stale_write.read_to_string(&mut answer).await;
    println!(
        "the deposed leader answered: {}",
        answer.lines().next().unwrap_or("nothing (it exited first)")
    );
    assert!(
        !answer.starts_with("HTTP/1.1 2"),
        "the deposed leader accepted a write: {answer}"
    );
    let status = first.wait_exit(WAIT)?;
    assert_eq!(
        status.code(),
        Some(75),
        "a deposed leader exits with 75; its log:\n{}",
        first.log()
    );

    // The write never landed: the new leader, and the bucket itself, do not have it.
    let js = async_nats::jetstream::new(client);
    let resources = js.get_key_value("orchestrator-resources").await?;
    assert!(
        resources.get("public.from-the-deposed").await?.is_none(),
        "the deposed leader's write landed; its log:\n{}",
        first.log()
    );
    let shown = opctl_of(&[&second]).run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "from-the-deposed",
    ])?;
    assert_ne!(shown.code, 0, "{shown:?}");
    // The new leader takes writes.
    opctl_of(&[&second]).apply(
        &TestSystem::job("from-the-leader", "{durationMs: 0}"),
        Some("public"),
    )?;
    Ok(())
}

#[tokio::test]
async fn jetstream_refuses_the_store_writes_of_a_leader_once_a_successor_fenced_the_store(
) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = async_nats::jetstream::new(nats.client().await?);
    fencing::check_store_fencing(&js, 1).await
}
