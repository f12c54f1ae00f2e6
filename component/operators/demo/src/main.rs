//! `demo-operator`: a component for `job` resources built only on the SDK's public API. With
//! `DEMO_PLATFORM_URL` it runs jobs on that HTTP job service; without it jobs succeed at once.

mod job;
mod platform;
mod reconciler;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use operator_sdk::ComponentConfig;

use crate::platform::HttpPlatform;
use crate::reconciler::{DemoReconciler, Platform};

/// Runs `job` entities of an operator on a demo platform.
#[derive(Debug, Parser)]
#[command(name = "demo-operator", version)]
struct Cli {
    #[command(flatten)]
    component: ComponentConfig,

    /// Base URL of the HTTP job platform; without it jobs succeed at once, in-process.
    #[arg(long, env = "DEMO_PLATFORM_URL", value_name = "DEMO_PLATFORM_URL")]
    platform_url: Option<String>,

    /// How often a running job is polled, in milliseconds.
    #[arg(
        long,
        env = "DEMO_POLL_INTERVAL_MS",
        value_name = "DEMO_POLL_INTERVAL_MS",
        default_value_t = 200,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    poll_interval_ms: u64,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    operator_sdk::telemetry::install_tls_provider();
    let platform = match cli.platform_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Platform::Http(
            HttpPlatform::new(url).context("cannot build the HTTP client for DEMO_PLATFORM_URL")?,
        ),
        _ => Platform::Instant,
    };
    let reconciler = DemoReconciler::new(platform, Duration::from_millis(cli.poll_interval_ms));
    operator_sdk::run(cli.component, reconciler)?;
    Ok(())
}
