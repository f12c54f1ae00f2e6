//! Secrets at rest, on a real nats-server: the orchestrator's secret record in KV holds no
//! plaintext, `opctl get` shows keys only, the log never has a value; rotating the key seals
//! every secret again at start, and a missing key stops the orchestrator with the key's id.

use anyhow::{bail, Context};
use operator_tests::process::OpctlRun;
use operator_tests::*;

const VALUE: &str = "pl41ntext-cl13nt-s3cr3t-value";
const KEY_1: &str = "k1:MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const KEY_2: &str = "k2:MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";
const KEY_3: &str = "k3:MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=";

/// `opctl get` of the secret, with `extra` arguments.
fn get_secret(opctl: &Opctl, extra: &[&str]) -> anyhow::Result<OpctlRun> {
    let mut args = vec![
        "get",
        "-t",
        "secret",
        "-w",
        "user-system",
        "-n",
        "shop-credentials",
    ];
    args.extend(extra);
    opctl.run(&args)
}

fn secret_manifest() -> String {
    format!(
        "name: shop-credentials\nversion: v1\ntype: secret\nsecret:\n  type: key-value\n  acl: r\n  data:\n    CLIENT_SECRET: {VALUE}\n    CLIENT_ID: shop\n"
    )
}

/// The raw bytes the orchestrator stored for the secret, and the key id they name.
async fn raw_secret(client: &async_nats::Client) -> anyhow::Result<(String, String)> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("orchestrator-secrets").await?;
    let bytes = kv
        .get("user-system.shop-credentials")
        .await?
        .context("no secret record in KV")?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let stored: serde_json::Value = serde_json::from_slice(&bytes)?;
    let key_id = stored["sealed"]["keyId"]
        .as_str()
        .with_context(|| format!("not a sealed record: {text}"))?
        .to_string();
    Ok((text, key_id))
}

/// An orchestrator on `nats` reading its keys from a file holding `keys`, one a line.
fn orchestrator_with_keys(
    nats: &NatsServer,
    dir: &std::path::Path,
    keys: &[&str],
) -> anyhow::Result<OrchestratorProcess> {
    let path = dir.join("secret-keys");
    std::fs::write(&path, keys.join("\n"))?;
    let path = path.display().to_string();
    OrchestratorProcess::start_with_env(
        &nats.url(),
        &[("ORCHESTRATOR_SECRET_KEYS_FILE", path.as_str())],
    )
}

#[tokio::test]
async fn a_secret_is_sealed_in_kv_shown_as_keys_only_and_never_logged() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let dir = tempfile::tempdir()?;
    let orchestrator = orchestrator_with_keys(&nats, dir.path(), &[KEY_1])?;
    let opctl = orchestrator.opctl();
    opctl.apply(&secret_manifest(), Some("user-system"))?;

    let (raw, key_id) = raw_secret(&client).await?;
    assert!(!raw.contains(VALUE), "plaintext in KV: {raw}");
    assert!(!raw.contains("CLIENT_SECRET"), "key names in KV: {raw}");
    assert_eq!(key_id, "k1");

    let listed = opctl.run(&["get", "-t", "secret", "-w", "user-system"])?;
    let details = get_secret(&opctl, &["-d"])?;
    let json = get_secret(&opctl, &["-o", "json"])?;
    for (what, run) in [("list", &listed), ("-d", &details), ("-o json", &json)] {
        assert_eq!(run.code, 0, "{what}: {}", run.stderr);
        let shown = format!("{}{}", run.stdout, run.stderr);
        assert!(!shown.contains(VALUE), "{what} shows the value:\n{shown}");
    }
    assert!(
        details.stdout.contains("CLIENT_SECRET"),
        "keys are shown: {}",
        details.stdout
    );

    // The same manifest again changes nothing; a new value is sealed again, under the same key.
    opctl.apply(&secret_manifest(), Some("user-system"))?;
    opctl.apply(
        &secret_manifest().replace(VALUE, &format!("{VALUE}-2")),
        Some("user-system"),
    )?;
    let (raw, _) = raw_secret(&client).await?;
    assert!(
        !raw.contains(VALUE),
        "plaintext in KV after an update: {raw}"
    );
    assert!(
        !orchestrator.log().contains(VALUE),
        "the log has the value:\n{}",
        orchestrator.log()
    );
    Ok(())
}

#[tokio::test]
async fn rotating_the_key_seals_every_secret_again_and_a_lost_key_is_named() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let dir = tempfile::tempdir()?;
    let first = orchestrator_with_keys(&nats, dir.path(), &[KEY_1])?;
    first
        .opctl()
        .apply(&secret_manifest(), Some("user-system"))?;
    assert_eq!(raw_secret(&client).await?.1, "k1");
    drop(first);

    // A new key first, the old one kept: the secret is sealed again before the API listens.
    let rotated = orchestrator_with_keys(&nats, dir.path(), &[KEY_2, KEY_1])?;
    let (raw, key_id) = raw_secret(&client).await?;
    assert_eq!(key_id, "k2", "not sealed again at start: {raw}");
    let run = get_secret(&rotated.opctl(), &["-d"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    drop(rotated);

    // The old key can go now.
    let after = orchestrator_with_keys(&nats, dir.path(), &[KEY_2])?;
    let listed = after
        .opctl()
        .run(&["get", "-t", "secret", "-w", "user-system"])?;
    assert!(listed.stdout.contains("shop-credentials"), "{listed:?}");
    drop(after);

    // Without the key the secret was sealed with, the orchestrator refuses to start, naming it.
    match orchestrator_with_keys(&nats, dir.path(), &[KEY_3]) {
        Ok(_) => bail!("the orchestrator started without the key the secrets are sealed with"),
        Err(error) => {
            let text = format!("{error:#}");
            assert!(text.contains("'k2'"), "the key id is not named:\n{text}");
            assert!(!text.contains(VALUE), "the value is shown:\n{text}");
        }
    }
    Ok(())
}
