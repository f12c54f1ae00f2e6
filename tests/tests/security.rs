//! Who may do what, tried against the real orchestrator and opctl: requests without a valid
//! key, each role's refusals, owners and `-a`, keys stored only as hashes, opctl's config file,
//! and the "busy" answer under overload.

use std::os::unix::fs::PermissionsExt as _;

use futures::StreamExt;
use operator_tests::process::{admin_http_client, OpctlRun, ADMIN_APIKEY};
use operator_tests::*;

/// Creates a user through `opctl user create` and returns an opctl that uses their key.
fn user(system: &TestSystem, name: &str, roles: &[&str]) -> anyhow::Result<Opctl> {
    let mut args = vec!["user", "create", name];
    for role in roles {
        args.extend(["--role", role]);
    }
    let created = system.opctl.run(&args)?;
    anyhow::ensure!(created.code == 0, "user create: {}", created.stderr);
    let key = created.stdout.trim().to_string();
    anyhow::ensure!(key.starts_with("opk_"), "no key printed: {created:?}");
    Ok(system
        .opctl
        .clone()
        .with_env(&[("OPCTL_APIKEY".into(), key)]))
}

fn job_without_owner(name: &str) -> String {
    format!("name: {name}\nversion: v1\ntype: resource\nresource:\n  operator: demo\n  type: job\n  spec: {{durationMs: 1}}\n")
}

fn names_listed(run: &OpctlRun) -> Vec<String> {
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    let items = listed.as_array().or_else(|| listed["items"].as_array());
    items
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_but_health_checks_answer() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    operator_telemetry::install_tls_provider();
    let anonymous = reqwest::Client::new();
    let base = system.orchestrator.url();
    let health = anonymous.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    for path in [
        "/api/v1/resources",
        "/api/v1/operators",
        "/metrics",
        "/api/v1/users",
    ] {
        let none = anonymous.get(format!("{base}{path}")).send().await?;
        assert_eq!(none.status(), 401, "{path} without a key");
        assert_eq!(
            none.headers().get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let wrong = anonymous
            .get(format!("{base}{path}"))
            .bearer_auth("opk_not-a-key-of-this-orchestrator-at-all")
            .send()
            .await?;
        assert_eq!(wrong.status(), 401, "{path} with a wrong key");
    }
    let admin = admin_http_client()?
        .get(format!("{base}/api/v1/resources"))
        .send()
        .await?;
    assert_eq!(admin.status(), 200);

    let refused = system
        .opctl
        .clone()
        .with_env(&[("OPCTL_APIKEY".into(), "opk_wrong-wrong-wrong-wrong".into())])
        .run(&["get", "-t", "operator"])?;
    refused.assert_refused("the API key is not valid");
    Ok(())
}

#[tokio::test]
async fn roles_decide_who_reads_and_changes_each_workspace() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let writer = user(&system, "alice", &["public=write"])?;
    let reader = user(&system, "bob", &["public=read"])?;
    let stranger = user(&system, "carol", &["sandbox=write"])?;

    // Operators are the admin's.
    let operator =
        writer.run_with_stdin(&["apply", "-f", "-"], Some(&example("demo-operator.yaml")))?;
    operator.assert_refused("applying an operator needs an admin");

    // A writer applies; the resource is theirs.
    writer.apply(&job_without_owner("alice-job"), Some("public"))?;
    let mine = writer.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "alice-job",
        "-o",
        "json",
    ])?;
    assert_eq!(mine.code, 0, "{}", mine.stderr);
    let record: serde_json::Value = serde_json::from_str(&mine.stdout)?;
    assert_eq!(record["owner"], "alice");

    // Nobody applies in someone else's name but an admin.
    let mut impostor = job_without_owner("forged");
    impostor.push_str("owner: bob\n");
    let forged = writer.run_with_stdin(&["apply", "-f", "-", "-w", "public"], Some(&impostor))?;
    forged.assert_refused("cannot apply as bob");

    // A reader sees but cannot change.
    let read = reader.run(&["get", "-t", "resource", "-w", "public", "-n", "alice-job"])?;
    assert_eq!(read.code, 0, "{}", read.stderr);
    let apply = reader.run_with_stdin(
        &["apply", "-f", "-", "-w", "public"],
        Some(&job_without_owner("bob-job")),
    )?;
    apply.assert_refused("only the read role in workspace public");
    let delete = reader.run(&[
        "delete",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "alice-job",
    ])?;
    delete.assert_refused("needs the write role");

    // Someone with no role in the workspace sees nothing of it.
    let get = stranger.run(&["get", "-t", "resource", "-w", "public", "-n", "alice-job"])?;
    get.assert_refused("user carol has no role in workspace public");
    let listed = stranger.run(&["get", "-t", "resource", "-w", "public", "-a"])?;
    listed.assert_refused("user carol has no role in workspace public");
    let own = stranger.run(&["get", "-t", "resource", "-w", "sandbox", "-a", "-o", "json"])?;
    assert_eq!(own.code, 0, "{}", own.stderr);
    assert!(names_listed(&own).is_empty(), "{}", own.stdout);
    let secrets = stranger.run(&["get", "-t", "secret", "-w", "public"])?;
    secrets.assert_refused("user carol has no role in workspace public");
    let users = stranger.run(&["user", "list"])?;
    users.assert_refused("listing users needs an admin");

    // `get` lists your own; `-a` everyone's you may see.
    system.opctl.apply(
        &TestSystem::job("admin-job", "{durationMs: 1}"),
        Some("public"),
    )?;
    let own = writer.run(&["get", "-t", "resource", "-w", "public", "-o", "json"])?;
    assert_eq!(names_listed(&own), ["alice-job"]);
    let everyone = writer.run(&["get", "-t", "resource", "-w", "public", "-a", "-o", "json"])?;
    let mut names = names_listed(&everyone);
    names.sort();
    assert_eq!(names, ["admin-job", "alice-job"]);

    // A writer deletes in their workspace.
    let deleted = writer.run(&[
        "delete",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "alice-job",
    ])?;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);

    // A deleted user's key stops working at once.
    let gone = system.opctl.run(&["user", "delete", "bob"])?;
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    let after = reader.run(&["get", "-t", "operator"])?;
    after.assert_refused("not valid");
    Ok(())
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let created = system
        .opctl
        .run(&["user", "create", "dave", "--role", "public=read"])?;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key = created.stdout.trim().to_string();
    let js = async_nats::jetstream::new(system.client.clone());
    let users = js.get_key_value("orchestrator-users").await?;
    let mut names = users.keys().await?;
    let mut stored = Vec::new();
    while let Some(name) = names.next().await {
        let name = name?;
        stored.extend(users.get(&name).await?.unwrap_or_default().to_vec());
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains("\"name\":\"dave\""), "{stored}");
    for secret in [key.as_str(), ADMIN_APIKEY] {
        assert!(!stored.contains(secret), "a key is stored in clear");
        let secret_part = &secret["opk_".len()..];
        assert!(!stored.contains(secret_part), "a key is stored in clear");
    }
    let whoami = system
        .opctl
        .clone()
        .with_env(&[("OPCTL_APIKEY".into(), key)])
        .run(&["whoami"])?;
    assert_eq!(whoami.code, 0, "{}", whoami.stderr);
    assert!(whoami.stdout.starts_with("dave"), "{}", whoami.stdout);
    Ok(())
}

#[tokio::test]
async fn opctl_reads_its_key_from_a_config_file_only_its_owner_can_read() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("apikey: {ADMIN_APIKEY}\n"))?;
    let with_file = |mode: u32| -> anyhow::Result<OpctlRun> {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode))?;
        Opctl {
            server: system.orchestrator.url(),
            env: vec![("OPCTL_CONFIG".into(), config.to_string_lossy().into_owned())],
        }
        .run(&["whoami"])
    };
    let shared = with_file(0o644)?;
    shared.assert_refused("chmod 600");
    let private = with_file(0o600)?;
    assert_eq!(private.code, 0, "{}", private.stderr);
    assert!(
        private.stdout.starts_with("admin (admin)"),
        "{}",
        private.stdout
    );
    Ok(())
}

#[tokio::test]
async fn past_its_bound_the_api_answers_busy_and_loses_no_accepted_apply() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let orchestrator =
        OrchestratorProcess::start_with_env(&nats.url(), &[("ORCHESTRATOR_MAX_IN_FLIGHT", "2")])?;
    let http = admin_http_client()?;
    let applied = http
        .post(format!("{}/api/v1/apply", orchestrator.url()))
        .body(example("demo-operator.yaml"))
        .send()
        .await?;
    assert!(applied.status().is_success(), "{}", applied.text().await?);

    // Far more at once than the bound admits.
    const SENT: usize = 120;
    let url = format!("{}/api/v1/apply?workspace=public", orchestrator.url());
    let answers: Vec<(String, u16, Option<String>)> = futures::stream::iter(0..SENT)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let name = format!("burst-{i}");
                let response = http.post(url).body(job_without_owner(&name)).send().await?;
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                anyhow::Ok((name, response.status().as_u16(), retry_after))
            }
        })
        .buffer_unordered(SENT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let accepted: Vec<&str> = answers
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(name, _, _)| name.as_str())
        .collect();
    let busy: Vec<&(String, u16, Option<String>)> = answers
        .iter()
        .filter(|(_, status, _)| *status == 429)
        .collect();
    assert_eq!(
        accepted.len() + busy.len(),
        SENT,
        "every answer is accepted or busy: {answers:?}"
    );
    assert!(!busy.is_empty(), "the bound never refused anything");
    assert!(!accepted.is_empty(), "nothing was accepted");
    assert!(
        busy.iter()
            .all(|(_, _, retry)| retry.as_deref() == Some("1")),
        "a busy answer without Retry-After: {busy:?}"
    );

    // Every accepted apply is stored; no refused one is.
    let client = nats.client().await?;
    let kv = async_nats::jetstream::new(client)
        .get_key_value("orchestrator-resources")
        .await?;
    for name in &accepted {
        let record = kv.get(format!("public.{name}")).await?;
        assert!(record.is_some(), "accepted {name} is not stored");
    }
    for (name, _, _) in &busy {
        assert!(
            kv.get(format!("public.{name}")).await?.is_none(),
            "refused {name} was stored"
        );
    }
    let scrape = http
        .get(format!("{}/metrics", orchestrator.url()))
        .send()
        .await?
        .text()
        .await?;
    let refused_line = scrape
        .lines()
        .find(|l| l.starts_with("orchestrator_http_requests_refused_busy_total"))
        .unwrap_or_default();
    assert!(
        refused_line.ends_with(&format!(" {}", busy.len())),
        "{refused_line}"
    );
    Ok(())
}
