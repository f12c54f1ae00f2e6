//! The ADF operator's keyless sign-in end to end against the stand-in: workload identity (a
//! federated token file, rotated during a run) and managed identity (the instance metadata
//! endpoint), and a token file that cannot be used.

use operator_tests::adf::*;
use serde_json::json;

/// A pipeline that runs long enough for its access token to be expired under it.
async fn long_run_with_tokens_expired_midway(
    adf: &Adf,
    rotate: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    adf.control(
        reqwest::Method::PUT,
        "pipelines/NightlyPipeline",
        Some(json!({"outcome": "succeed", "runMs": 4000})),
    )
    .await?;
    adf.system.opctl.apply(
        &Adf::run_manifest("nightly", "NightlyPipeline"),
        Some("public"),
    )?;
    adf.wait_runtime("nightly", "inprogress").await?;
    if let Some(file) = rotate {
        // The issuer rotates the projected token: only the new one is accepted from now on.
        adf.control(
            reqwest::Method::PUT,
            "federated-token",
            Some(json!({"token": "eyJ.rotated.token"})),
        )
        .await?;
        std::fs::write(file, "eyJ.rotated.token\n")?;
    }
    adf.control(
        reqwest::Method::POST,
        "faults",
        Some(json!({"expireTokens": true})),
    )
    .await?;
    adf.wait_runtime("nightly", "succeeded").await?;
    Ok(())
}

#[tokio::test]
async fn workload_identity_signs_in_with_the_federated_token_and_reads_it_again_when_rotated(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "eyJ.first.token")?;
    let path = token_file.to_string_lossy().into_owned();
    let adf = Adf::start_with(
        "memory",
        &[("AZURE_FEDERATED_TOKEN_FILE", &path)],
        &[("ADF_STANDIN_FEDERATED_TOKEN", "eyJ.first.token")],
        &["AZURE_CLIENT_SECRET"],
    )
    .await?;
    long_run_with_tokens_expired_midway(&adf, Some(&token_file)).await?;

    let calls = adf.calls().await?;
    assert!(
        calls["tokensBy"]["clientAssertion"].as_u64() >= Some(2),
        "{calls}"
    );
    assert!(calls["tokensBy"]["clientSecret"].is_null(), "{calls}");
    assert!(
        calls["answered"]["401"].as_u64() >= Some(1),
        "the token expired: {calls}"
    );
    let log = adf.component.log();
    assert!(
        log.contains("signing in to Azure with workload identity"),
        "{log}"
    );
    assert!(log.contains(&path), "{log}");
    assert!(!log.contains("eyJ.first.token") && !log.contains("eyJ.rotated.token"));
    Ok(())
}

#[tokio::test]
async fn managed_identity_signs_in_through_the_metadata_endpoint_as_the_user_assigned_identity(
) -> anyhow::Result<()> {
    let adf = Adf::start_with(
        "memory",
        &[],
        &[("ADF_STANDIN_MANAGED_IDENTITY_CLIENT_ID", CLIENT)],
        &["AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"],
    )
    .await?;
    long_run_with_tokens_expired_midway(&adf, None).await?;

    let calls = adf.calls().await?;
    assert!(
        calls["tokensBy"]["managedIdentity"].as_u64() >= Some(2),
        "{calls}"
    );
    assert!(calls["tokensBy"]["clientSecret"].is_null(), "{calls}");
    let log = adf.component.log();
    assert!(
        log.contains("signing in to Azure with managed identity"),
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_or_empty_federated_token_file_stops_the_operator_naming_the_file(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("azure-identity-token");
    let path = token_file.to_string_lossy().into_owned();
    let mut adf = Adf::start_with(
        "memory",
        &[("AZURE_FEDERATED_TOKEN_FILE", &path)],
        &[],
        &["AZURE_CLIENT_SECRET"],
    )
    .await?;
    let status = adf.component.wait_exit(WAIT)?;
    assert!(!status.success());
    let log = adf.component.log();
    assert!(
        log.contains("AZURE_FEDERATED_TOKEN_FILE") && log.contains(&path),
        "{log}"
    );

    std::fs::write(&token_file, " \n")?;
    adf.component.restart()?;
    let status = adf.component.wait_exit(WAIT)?;
    assert!(!status.success());
    let log = adf.component.log();
    assert!(log.contains("is empty"), "{log}");
    Ok(())
}
