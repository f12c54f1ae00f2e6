//! The Operations view in a real browser: headless Chromium driven over WebDriver against the
//! real orchestrator, adf-operator and ADF stand-in on a real nats-server. Skipped with a
//! message where Chromium and chromedriver are not installed (`tests/ensure-browser.sh`
//! installs them). Screenshots of each page go to `target/tmp/ui-screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use operator_tests::adf::*;
use operator_tests::process::ADMIN_APIKEY;
use operator_tests::*;
use serde_json::{json, Value};

/// How long the browser waits for a page to show a change.
const UI_WAIT: Duration = Duration::from_secs(30);
/// How long the watched pipeline runs in the stand-in: long enough for the browser to open its
/// page while it is `inprogress` (the test then waits for `succeeded`).
const RUN_MS: u64 = 15_000;

/// chromedriver on the port it chose itself (`--port=0`, read back from what it prints).
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    /// `None` when chromedriver is not installed.
    fn start() -> anyhow::Result<Option<Self>> {
        let path = match std::env::var_os("CHROMEDRIVER") {
            Some(p) => PathBuf::from(p),
            None => match ["/usr/bin/chromedriver", "/usr/local/bin/chromedriver"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
            {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let mut child = Command::new(&path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let stdout = child.stdout.take().context("chromedriver's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("chromedriver ended before saying its port");
            };
            let line = line?;
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().parse::<u16>()?;
            }
        };
        // Keeps reading, so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Some(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }))
    }

    async fn browser(&self) -> anyhow::Result<Client> {
        let mut args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ];
        // Chromium's sandbox refuses to run as root (CI runs as root).
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.uid() == 0
        });
        if root {
            args.push("--no-sandbox");
        }
        let mut options = json!({ "args": args });
        if let Some(binary) = std::env::var_os("CHROMIUM_BIN") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await?)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: kept with the build's output, not committed.
fn screenshot_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn screenshot(browser: &Client, name: &str) -> anyhow::Result<()> {
    let png = browser.screenshot().await?;
    std::fs::write(screenshot_dir()?.join(format!("{name}.png")), png)?;
    Ok(())
}

/// The text of an element, read in one script call: a live update may replace the element
/// between a find and a read.
async fn text_of(browser: &Client, css: &str) -> anyhow::Result<String> {
    let text = browser
        .execute(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;",
            vec![json!(css)],
        )
        .await?;
    text.as_str()
        .map(str::to_string)
        .with_context(|| format!("no {css} on the page"))
}

/// Waits for an element, found by XPath, to be on the page.
async fn wait_for(browser: &Client, xpath: &str) -> anyhow::Result<fantoccini::elements::Element> {
    browser
        .wait()
        .at_most(UI_WAIT)
        .for_element(Locator::XPath(xpath))
        .await
        .with_context(|| format!("waiting for {xpath}"))
}

async fn sign_in(browser: &Client, base: &str, key: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{base}/ui/")).await?;
    let field = browser.find(Locator::Id("apikey")).await?;
    field.send_keys(key).await?;
    browser.find(Locator::Id("sign-in")).await?.click().await?;
    Ok(())
}

/// Marks the page so a later check can tell it was not loaded again.
async fn mark_page(browser: &Client) -> anyhow::Result<()> {
    browser
        .execute("window.notReloaded = true; return null;", vec![])
        .await?;
    Ok(())
}

async fn still_marked(browser: &Client) -> anyhow::Result<bool> {
    Ok(browser
        .execute("return window.notReloaded === true;", vec![])
        .await?
        == Value::Bool(true))
}

#[tokio::test]
async fn an_operator_follows_the_seeds_pipeline_run_to_succeeded_in_the_browser(
) -> anyhow::Result<()> {
    let Some(driver) = ChromeDriver::start()? else {
        println!(
            "SKIPPED: chromedriver not found (run tests/ensure-browser.sh, or set CHROMEDRIVER)"
        );
        return Ok(());
    };
    let adf = Adf::start("memory", &[]).await?;
    adf.control(
        reqwest::Method::PUT,
        "pipelines/ArmtemplateSampleCopyPipeline",
        Some(json!({ "outcome": "succeed", "runMs": RUN_MS })),
    )
    .await?;
    let base = adf.system.orchestrator.url();
    let http = process::admin_http_client()?;
    // A user who may read `public` only.
    let reader: Value = http
        .put(format!("{base}/api/v1/users/reader"))
        .json(&json!({ "roles": { "public": "read" } }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let reader_key = reader["apikey"]
        .as_str()
        .context("reader's key")?
        .to_string();
    // A resource whose description is markup: shown as text, never run.
    let hostile = Adf::run_manifest("hostile", "ArmtemplateSampleCopyPipeline").replace(
        "description: adf pipeline run",
        "description: \"<script>window.injected = true</script><b>bold</b>\"",
    );
    adf.system.opctl.apply(&hostile, Some("public"))?;

    let browser = driver.browser().await?;
    let result = walk_through(&browser, &adf, &base, &reader_key).await;
    if result.is_err() {
        let _ = screenshot(&browser, "failure").await;
    }
    browser.close().await?;
    result
}

async fn walk_through(
    browser: &Client,
    adf: &Adf,
    base: &str,
    reader_key: &str,
) -> anyhow::Result<()> {
    // Unauthenticated: sent to the sign-in page; a wrong key is refused beside the field.
    browser.goto(&format!("{base}/ui/operators")).await?;
    assert!(
        browser.current_url().await?.path().ends_with("/ui/sign-in"),
        "{}",
        browser.current_url().await?
    );
    screenshot(browser, "sign-in").await?;
    sign_in(browser, base, "opk_not-a-key-of-anyone").await?;
    wait_for(browser, "//p[@id='apikey-error']").await?;
    assert_eq!(
        text_of(browser, "#apikey-error").await?,
        "apikey: the API key is not valid"
    );
    sign_in(browser, base, ADMIN_APIKEY).await?;

    // The seed's operator, with its resource types and components.
    wait_for(browser, "//section[@id='operator-adf-operator']").await?;
    let text = text_of(browser, "#operator-adf-operator").await?;
    assert!(text.contains("pipeline-run"), "{text}");
    assert!(text.contains("active"), "{text}");
    screenshot(browser, "operators").await?;

    // Scaling a component stores the operator's manifest with the new count, as opctl scale.
    let replicas = browser
        .find(Locator::Css(
            "#scale-adf-operator-adf-controller input[name=replicas]",
        ))
        .await?;
    replicas.clear().await?;
    replicas.send_keys("3").await?;
    browser
        .find(Locator::Css(
            "#scale-adf-operator-adf-controller button[type=submit]",
        ))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "//form[@id='scale-adf-operator-adf-controller']//input[@name='replicas' and @value='3']",
    )
    .await?;
    let stored =
        adf.system
            .opctl
            .run(&["get", "-t", "operator", "-n", "adf-operator", "-o", "json"])?;
    let stored: Value = serde_json::from_str(&stored.stdout)?;
    assert_eq!(
        stored.pointer("/manifest/operator/components/0/replicas"),
        Some(&json!(3)),
        "{stored}"
    );

    // The resources of `public`: the run appears without reloading once applied.
    browser
        .goto(&format!("{base}/ui/workspaces/public/resources"))
        .await?;
    wait_for(browser, "//tr[@data-resource='hostile']").await?;
    mark_page(browser).await?;
    adf.system
        .opctl
        .apply(&example("adf-pipeline-run.yaml"), Some("public"))?;
    wait_for(
        browser,
        "//tr[@data-resource='pipeline-run-1']//span[contains(@class,'runtime') and .='inprogress']",
    )
    .await?;
    assert!(still_marked(browser).await?, "the list was loaded again");
    screenshot(browser, "resources").await?;
    browser.set_window_size(390, 844).await?;
    screenshot(browser, "resources-phone").await?;
    browser.set_window_size(1280, 800).await?;

    // Its page follows it from inprogress to succeeded without reloading.
    // The link as it is now (the list may be re-rendered under a click).
    let href = text_of(browser, "tr[data-resource='pipeline-run-1'] a").await?;
    assert_eq!(href, "pipeline-run-1");
    browser
        .execute(
            "document.querySelector(\"tr[data-resource='pipeline-run-1'] a\").click(); return null;",
            vec![],
        )
        .await?;
    wait_for(browser, "//span[@id='resource-runtime' and .='inprogress']").await?;
    mark_page(browser).await?;
    wait_for(browser, "//span[@id='resource-runtime' and .='succeeded']").await?;
    assert!(
        still_marked(browser).await?,
        "the resource page was loaded again"
    );
    let runs = adf.runs().await?;
    let run_id = wait_for(browser, "//code[@id='run-id']")
        .await?
        .text()
        .await?;
    assert!(
        runs.iter().any(|r| r["runId"] == run_id.as_str()),
        "{run_id} in {runs:?}"
    );
    let activities = text_of(browser, "#activity-runs").await?;
    assert!(activities.contains("Copy data"), "{activities}");
    assert!(activities.contains("Succeeded"), "{activities}");
    // Its history, newest first, from the same stream as `opctl events`.
    wait_for(browser, "//table[@id='history']//th[.='Applied']").await?;
    screenshot(browser, "pipeline-run").await?;

    // Markup in a manifest is shown as text and never runs.
    browser
        .goto(&format!("{base}/ui/workspaces/public/resources/hostile"))
        .await?;
    wait_for(browser, "//p[@id='resource-description']").await?;
    assert_eq!(
        text_of(browser, "#resource-description").await?,
        "<script>window.injected = true</script><b>bold</b>"
    );
    assert_eq!(
        browser
            .execute("return window.injected === undefined;", vec![])
            .await?,
        Value::Bool(true)
    );
    assert!(browser
        .find_all(Locator::Css("#resource-description b"))
        .await?
        .is_empty());

    // A state-changing request without the session's token is refused, and changes nothing.
    let cookie = browser.get_named_cookie("opui_session").await?;
    assert!(cookie.http_only().unwrap_or(false), "{cookie:?}");
    let forged = reqwest::Client::new()
        .post(format!(
            "{base}/ui/workspaces/public/resources/hostile/delete"
        ))
        .header("cookie", format!("opui_session={}", cookie.value()))
        .form(&[("csrf", "forged")])
        .send()
        .await?;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);

    // Delete, with a confirmation; the row goes from the list without reloading.
    browser
        .find(Locator::Id("delete-link"))
        .await?
        .click()
        .await?;
    screenshot(browser, "delete").await?;
    browser
        .find(Locator::Id("confirm-delete"))
        .await?
        .click()
        .await?;
    wait_for(browser, "//h1[starts-with(., 'Resources in')]").await?;
    wait_for(
        browser,
        "//table[@class='resources' and not(.//tr[@data-resource='hostile']//span[.!='deleting' and contains(@class,'status') and not(contains(@class,'runtime'))])]",
    )
    .await?;
    // Gone from the store once its component has cleaned up, and then from the list.
    wait_for_resource(&adf.system.client, "public", "hostile", WAIT, |r| {
        r.is_none()
    })
    .await?;
    browser.refresh().await?;
    wait_for(
        browser,
        "//table[@class='resources' and not(.//tr[@data-resource='hostile'])]",
    )
    .await?;

    // An unknown resource: a 404 page with a way back.
    browser
        .goto(&format!(
            "{base}/ui/workspaces/public/resources/no-such-run"
        ))
        .await?;
    wait_for(browser, "//h1[.='Not found']").await?;
    browser
        .find(Locator::LinkText("Back to the resources"))
        .await?;
    screenshot(browser, "not-found").await?;

    // Sign out; the reader sees `public` but is refused a workspace without a role.
    browser.goto(&format!("{base}/ui/operators")).await?;
    wait_for(browser, "//form[@class='who']//button").await?;
    browser
        .find(Locator::Css("form.who button"))
        .await?
        .click()
        .await?;
    wait_for(browser, "//input[@id='apikey']").await?;
    sign_in(browser, base, reader_key).await?;
    wait_for(browser, "//h1[.='Operators']").await?;
    browser
        .goto(&format!("{base}/ui/workspaces/sandbox/resources"))
        .await?;
    wait_for(browser, "//h1[.='Not allowed']").await?;
    assert_eq!(
        text_of(browser, "#error-message").await?,
        "user reader has no role in workspace sandbox"
    );
    screenshot(browser, "refused").await?;
    browser
        .goto(&format!(
            "{base}/ui/workspaces/public/resources/pipeline-run-1"
        ))
        .await?;
    wait_for(browser, "//span[@id='resource-runtime' and .='succeeded']").await?;
    assert!(
        browser
            .find_all(Locator::Id("delete-link"))
            .await?
            .is_empty(),
        "a reader is offered a delete"
    );
    Ok(())
}
