//! Bad input at the API, on a real nats-server: alias bombs, deep nesting, oversized bodies,
//! invalid names and mangled manifests are refused with a 4xx that says why, the orchestrator
//! keeps serving, and nothing reaches the store.

use anyhow::Context;
use futures::StreamExt;
use operator_tests::process::admin_http_client;
use operator_tests::*;
use rand::{Rng, SeedableRng};

/// Posts `body` to the apply endpoint: the status and the body of the answer.
async fn post_apply(
    client: &reqwest::Client,
    orchestrator: &OrchestratorProcess,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let answer = client
        .post(format!("{}/api/v1/apply", orchestrator.url()))
        .body(body)
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

/// How many keys each of the orchestrator's buckets holds.
async fn stored_keys(nats: &async_nats::Client) -> anyhow::Result<usize> {
    let js = async_nats::jetstream::new(nats.clone());
    let mut count = 0;
    for bucket in [
        "orchestrator-operators",
        "orchestrator-resources",
        "orchestrator-secrets",
    ] {
        let kv = js
            .get_key_value(bucket)
            .await
            .with_context(|| format!("bucket {bucket}"))?;
        count += kv.keys().await?.count().await;
    }
    Ok(count)
}

/// A few kilobytes of YAML whose aliases would expand to a billion values.
fn alias_bomb() -> String {
    let leaf = vec!["x"; 1000].join(", ");
    let middle = vec!["*a"; 1000].join(", ");
    let top = vec!["*b"; 1000].join(", ");
    format!("name: s\nversion: v1\ntype: secret\nsecret:\n  type: key-value\n  acl: r\n  data: {{A: b}}\na: &a [{leaf}]\nb: &b [{middle}]\nc: [{top}]\n")
}

#[tokio::test]
async fn refused_manifests_are_answered_4xx_with_a_reason_and_store_nothing() -> anyhow::Result<()>
{
    let nats = NatsServer::start()?;
    let orchestrator = OrchestratorProcess::start(&nats.url())?;
    let client = admin_http_client()?;
    let nats_client = nats.client().await?;

    let secret = example("adf-secret.yaml");
    let deep = format!(
        "name: r1\nversion: v1\ntype: resource\nresource: {{operator: op, type: t, spec: {{a: {}1{}}}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    let cases = [
        ("an alias bomb", alias_bomb(), "aliases repeat too much"),
        ("deep nesting", deep, "nest deeper than"),
        (
            "a body over the limit",
            format!("{secret}\n#{}", "x".repeat(1024 * 1024)),
            "",
        ),
        (
            "an invalid name after a valid document",
            format!(
                "{secret}\n---\n{}",
                secret.replace("name: adf-operator", "name: Adf_Operator")
            ),
            "document 2: name",
        ),
        (
            "an image that is no reference",
            example("adf-operator.yaml")
                .replace("image: adf-operator:latest", "image: adf operator"),
            "operator.components[0].image",
        ),
        (
            "a reply subject with a wildcard",
            example("adf-operator.yaml").replace(
                "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT: dataos.operator.adf.reply",
                "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT: dataos.>",
            ),
            "environmentVars.ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT",
        ),
        ("a scalar", "42".to_string(), "a manifest is a mapping"),
    ];
    for (what, body, expected) in cases {
        let (status, answer) = post_apply(&client, &orchestrator, body).await?;
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status}: {answer}"
        );
        assert!(
            answer.contains(expected),
            "{what}: the answer does not say {expected:?}: {answer}"
        );
    }

    // Examples mangled at random (a fixed seed, so a failure repeats): never a 5xx, and what
    // the orchestrator refuses it does not keep. A mangled text may still be a valid manifest
    // that is applied; those are counted and deleted by name.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let examples = [secret.clone(), example("adf-operator.yaml")];
    for round in 0..40 {
        let mut bytes = examples[round % examples.len()].clone().into_bytes();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = *b":-[]{}&*!|>'\"#,\n x"
                .get(rng.random_range(0..19))
                .unwrap_or(&b'x');
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let (status, answer) = post_apply(&client, &orchestrator, body.clone()).await?;
        assert!(
            status < 500,
            "round {round}: answered {status}: {answer}\n{body}"
        );
        if status >= 400 {
            let refusal: serde_json::Value = serde_json::from_str(&answer)
                .with_context(|| format!("round {round}: not JSON: {answer}"))?;
            let reason = refusal["error"].as_str().unwrap_or_default();
            assert!(
                !reason.trim().is_empty(),
                "round {round}: no reason: {answer}"
            );
            assert_eq!(
                refusal["applied"].as_array().map_or(0, Vec::len),
                0,
                "round {round}: a refused one-document text applied something: {answer}"
            );
        } else {
            // Applied as it was mangled: remove it so the store is empty again.
            let applied: serde_json::Value = serde_json::from_str(&answer)?;
            for entry in applied["applied"].as_array().into_iter().flatten() {
                let name = entry["name"].as_str().unwrap_or_default();
                let path = match entry["type"].as_str() {
                    Some("secret") => format!(
                        "workspaces/{}/secrets/{name}",
                        entry["workspace"].as_str().unwrap_or_default()
                    ),
                    _ => format!("operators/{name}"),
                };
                client
                    .delete(format!("{}/api/v1/{path}", orchestrator.url()))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
    }

    assert_eq!(
        stored_keys(&nats_client).await?,
        0,
        "a refused manifest left something in the store"
    );
    let health = client
        .get(format!("{}/healthz", orchestrator.url()))
        .send()
        .await?;
    assert!(
        health.status().is_success(),
        "the orchestrator stopped serving"
    );
    Ok(())
}
