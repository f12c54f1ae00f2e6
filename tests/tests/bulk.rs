//! Bulk apply and big lists end to end, on a real nats-server with the real binaries: a file of
//! thousands of documents is one request, each document answered on its own (a bad one refuses
//! only itself and is named), the request's own limits are refused with a clear reason, a list
//! is streamed whole and `-o json` stays one valid JSON document, also through a follower.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use operator_tests::process::{admin_http_client, metric_sum};
use operator_tests::*;
use serde_json::Value;

/// The largest single manifest text (the contract's `MAX_MANIFEST_BYTES`).
const ONE_MANIFEST_BYTES: usize = 1024 * 1024;

/// `count` demo jobs named `job-0`…, each padded with a description of `padding` characters,
/// as one multi-document text.
fn jobs(count: usize, padding: usize) -> String {
    let description = "d".repeat(padding);
    (0..count)
        .map(|i| {
            TestSystem::job(&format!("job-{i}"), "{}").replace(
                "type: resource\n",
                &format!("type: resource\ndescription: {description}\n"),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The names in `opctl get -o json`'s answer, which must be one JSON document.
fn listed_names(stdout: &str) -> anyhow::Result<BTreeSet<String>> {
    let answer: Value = serde_json::from_str(stdout)?;
    let items = answer["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no items in {stdout}"))?;
    Ok(items
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect())
}

/// How many requests the orchestrator counted for `method` `route`, any status.
async fn requests_counted(
    orchestrator: &OrchestratorProcess,
    method: &str,
    route: &str,
) -> anyhow::Result<f64> {
    let method = format!("method=\"{method}\"");
    let route = format!("route=\"{route}\"");
    metric_sum(
        &admin_http_client()?,
        &orchestrator.url(),
        "orchestrator_http_requests_total",
        &[&method, &route],
    )
    .await
}

#[tokio::test]
async fn a_file_of_two_thousand_documents_over_a_megabyte_applies_in_one_request_and_lists_whole(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let text = jobs(2000, 600);
    assert!(text.len() > ONE_MANIFEST_BYTES, "{} bytes", text.len());

    let before = requests_counted(&system.orchestrator, "POST", "/api/v1/batch").await?;
    let run = system
        .opctl
        .run_with_stdin(&["apply", "-f", "-"], Some(&text))?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let applied = run
        .stderr
        .lines()
        .filter(|l| l.contains("🔧 applying(public) job-") && l.ends_with("...created"))
        .count();
    assert_eq!(applied, 2000, "{}", run.stderr);
    let after = requests_counted(&system.orchestrator, "POST", "/api/v1/batch").await?;
    assert_eq!(after - before, 1.0, "the file went as one request");

    let expected: BTreeSet<String> = (0..2000).map(|i| format!("job-{i}")).collect();
    let json = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "json"])?;
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert_eq!(listed_names(&json.stdout)?, expected);

    let table = system.opctl.run(&["get", "-t", "resource", "-a"])?;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let rows = table
        .stdout
        .lines()
        .filter(|l| l.starts_with("  job-"))
        .count();
    assert_eq!(rows, 2000, "{}", table.stdout);
    let header = table.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("NAME") && header.contains("STATUS"),
        "{header}"
    );

    let names = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "name"])?;
    assert_eq!(names.stdout.lines().count(), 2000, "{}", names.stdout);
    Ok(())
}

#[tokio::test]
async fn a_bad_document_among_good_ones_refuses_only_itself_and_is_named() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let text = [
        TestSystem::job("good-1", "{}"),
        TestSystem::job("Bad_Name", "{}"),
        TestSystem::job("good-3", "{}"),
        TestSystem::job("orphan", "{}").replace("operator: demo", "operator: nobody"),
        TestSystem::job("good-5", "{}"),
    ]
    .join("---\n");

    let dry = system
        .opctl
        .run_with_stdin(&["apply", "--dry-run", "-f", "-"], Some(&text))?;
    dry.assert_refused("document 2: resource Bad_Name: name:");
    assert!(
        dry.stderr
            .contains("good-1:v1:resource...created, generation 1 (dry run)"),
        "{}",
        dry.stderr
    );
    let listed = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "json"])?;
    assert!(
        listed_names(&listed.stdout)?.is_empty(),
        "a dry run stores nothing"
    );

    let run = system
        .opctl
        .run_with_stdin(&["apply", "-f", "-"], Some(&text))?;
    run.assert_refused("document 2: resource Bad_Name: name:");
    assert!(
        run.stderr.contains(
            "document 4: resource orphan: resource.operator: operator 'nobody' is not applied"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("2 of 5 document(s) refused; the other 3 were applied"),
        "{}",
        run.stderr
    );
    let listed = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "json"])?;
    let expected: BTreeSet<String> = ["good-1", "good-3", "good-5"].map(String::from).into();
    assert_eq!(listed_names(&listed.stdout)?, expected);
    Ok(())
}

#[tokio::test]
async fn a_batch_past_the_requests_limits_is_refused_whole_and_a_big_document_alone(
) -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    system.opctl.apply(&example("demo-operator.yaml"), None)?;
    let client = admin_http_client()?;
    let url = format!("{}/api/v1/batch", system.orchestrator.url());

    let too_many = jobs(10_001, 0);
    let answer = client.post(&url).body(too_many).send().await?;
    assert_eq!(answer.status().as_u16(), 400);
    let body = answer.text().await?;
    assert!(
        body.contains("a batch holds at most 10000 documents"),
        "{body}"
    );

    let too_large = format!("#{}\n{}", "x".repeat(32 * 1024 * 1024), jobs(1, 0));
    let answer = client.post(&url).body(too_large).send().await?;
    assert_eq!(answer.status().as_u16(), 413);
    let body = answer.text().await?;
    assert!(
        body.contains("batch text is larger than 33554432 bytes"),
        "{body}"
    );

    let big_one = TestSystem::job("big", "{}").replace(
        "type: resource\n",
        &format!(
            "type: resource\ndescription: {}\n",
            "b".repeat(ONE_MANIFEST_BYTES)
        ),
    );
    let text = [TestSystem::job("small", "{}"), big_one].join("---\n");
    let answer = client.post(&url).body(text).send().await?;
    assert_eq!(answer.status().as_u16(), 200);
    let answer: Value = answer.json().await?;
    assert_eq!(answer["failed"], 1, "{answer}");
    assert_eq!(
        answer["documents"][0]["applied"]["outcome"], "created",
        "{answer}"
    );
    assert_eq!(answer["documents"][1]["name"], "big", "{answer}");
    let reason = answer["documents"][1]["error"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("larger than 1048576 bytes"), "{answer}");

    let listed = system
        .opctl
        .run(&["get", "-t", "resource", "-a", "-o", "json"])?;
    let expected: BTreeSet<String> = ["small".to_string()].into();
    assert_eq!(listed_names(&listed.stdout)?, expected);
    Ok(())
}

/// A replica named `name` on the NATS at `nats`, sharing the secret keys at `keys`.
fn replica(nats: &str, name: &str, keys: &std::path::Path) -> anyhow::Result<OrchestratorProcess> {
    OrchestratorProcess::start_with_env(
        nats,
        &[
            ("ORCHESTRATOR_REPLICA_NAME", name),
            ("ORCHESTRATOR_SECRET_KEYS_FILE", &keys.display().to_string()),
        ],
    )
}

/// `/readyz` of `orchestrator`: 200 while it leads.
async fn leads(orchestrator: &OrchestratorProcess) -> bool {
    operator_telemetry::install_tls_provider();
    let answer = reqwest::Client::new()
        .get(format!("{}/readyz", orchestrator.url()))
        .send()
        .await;
    matches!(answer, Ok(a) if a.status().as_u16() == 200)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_and_a_streamed_list_go_through_a_follower() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let keys = tempfile::tempdir()?;
    let keys = keys.path().join("secret-keys");
    let leader = replica(&nats.url(), "first", &keys)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leads(&leader).await {
        anyhow::ensure!(Instant::now() < deadline, "no lead: {}", leader.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follower = replica(&nats.url(), "second", &keys)?;
    assert!(!leads(&follower).await, "the second replica follows");
    let opctl = follower.opctl();
    opctl.apply(&example("demo-operator.yaml"), None)?;

    let text = jobs(500, 2500);
    assert!(text.len() > ONE_MANIFEST_BYTES, "{} bytes", text.len());
    let before = requests_counted(&leader, "POST", "/api/v1/batch").await?;
    opctl.apply(&text, None)?;
    let after = requests_counted(&leader, "POST", "/api/v1/batch").await?;
    assert_eq!(
        after - before,
        1.0,
        "the follower forwarded the one request"
    );

    let json = opctl.run(&["get", "-t", "resource", "-a", "-o", "json"])?;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let expected: BTreeSet<String> = (0..500).map(|i| format!("job-{i}")).collect();
    assert_eq!(listed_names(&json.stdout)?, expected);
    Ok(())
}
