//! Benchmark of bulk apply and big lists: N resources as `--files` files of `--per-file`
//! documents, all files sent at once, through the single-request apply (`POST /api/v1/apply`,
//! one document after another, as `opctl apply` sent files before batches) and through the
//! batch (`POST /api/v1/batch`), each on a fresh system with the demo component (instant
//! platform); then the time to the first line of the list, whole answer against streamed, and
//! of `opctl get -t resource -a`.
//!
//! `cargo run --release -p operator-tests --bin bulk_bench -- --files 10 --per-file 2000`

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use operator_tests::measure::{
    job_documents, post_all, time_opctl_list, watch_succeeded, DemoSystem,
};
use operator_tests::NatsServer;

#[derive(Parser)]
struct Args {
    /// Files sent at once.
    #[arg(long, default_value_t = 10)]
    files: usize,
    /// Resource documents a file.
    #[arg(long, default_value_t = 2000)]
    per_file: usize,
    /// OPERATOR_MAX_WORKERS of the component.
    #[arg(long, default_value_t = 64)]
    workers: usize,
}

/// How the files go to the orchestrator.
#[derive(Clone, Copy)]
enum Path {
    /// `POST /api/v1/apply`: the documents of a file applied one after another.
    Apply,
    /// `POST /api/v1/batch`: each document answered on its own, runs of resources at once.
    Batch,
}

impl Path {
    fn route(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Batch => "batch",
        }
    }
}

struct Figures {
    applied: Duration,
    reconciled: Duration,
    whole_list: Duration,
    first_streamed_line: Duration,
    all_streamed: Duration,
    opctl_first_line: Duration,
    opctl_done: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.files * args.per_file;
    println!(
        "bulk: {n} resources as {} files of {} documents, sent at once; demo component, instant platform",
        args.files, args.per_file
    );
    let mut rows = Vec::new();
    for path in [Path::Apply, Path::Batch] {
        let figures = run(&args, path).await?;
        rows.push((path, figures));
    }
    println!();
    println!("  path            applied in   applied/s   reconciled in   applied→reconciled/s");
    for (path, f) in &rows {
        println!(
            "  /api/v1/{:<7} {:>9.2} s {:>11.0} {:>13.2} s {:>22.0}",
            path.route(),
            f.applied.as_secs_f64(),
            n as f64 / f.applied.as_secs_f64(),
            f.reconciled.as_secs_f64(),
            n as f64 / f.reconciled.as_secs_f64(),
        );
    }
    println!();
    println!("  list of {n} (after the batch run)");
    if let Some((_, f)) = rows.last() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  whole JSON answer (GET /api/v1/resources, the old opctl's first line) {:>8.1} ms",
            ms(f.whole_list)
        );
        println!(
            "  streamed (?stream=true): first line                                  {:>8.1} ms, all {:.1} ms",
            ms(f.first_streamed_line),
            ms(f.all_streamed)
        );
        println!(
            "  opctl get -t resource -a: first row                                   {:>8.1} ms, done {:.1} ms",
            ms(f.opctl_first_line),
            ms(f.opctl_done)
        );
    }
    Ok(())
}

async fn run(args: &Args, path: Path) -> anyhow::Result<Figures> {
    let n = args.files * args.per_file;
    let nats = NatsServer::start()?;
    let js = async_nats::jetstream::new(nats.client().await?);
    let system = DemoSystem::start(&nats, &[], args.workers, &[]).await?;
    let (orchestrator, http) = (&system.orchestrator, &system.http);
    let files: Vec<String> = (0..args.files)
        .map(|f| job_documents(&format!("f{f}"), args.per_file))
        .collect();

    let watcher = watch_succeeded(&js, n).await?;

    let url = format!(
        "{}/api/v1/{}?workspace=public",
        orchestrator.url(),
        path.route()
    );
    let start = Instant::now();
    let at_once = files.len();
    post_all(http, &url, files, at_once).await?;
    let applied = start.elapsed();
    let (done, at) = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("not all reconciled within 10 minutes")??;
    anyhow::ensure!(done == n, "only {done} of {n} reconciled");
    let reconciled = at.duration_since(start);
    println!(
        "  /api/v1/{}: applied in {:.2} s, all reconciled in {:.2} s",
        path.route(),
        applied.as_secs_f64(),
        reconciled.as_secs_f64()
    );

    let list_url = format!(
        "{}/api/v1/resources?workspace=public&all=true",
        orchestrator.url()
    );
    let t = Instant::now();
    let whole: serde_json::Value = http.get(&list_url).send().await?.json().await?;
    let whole_list = t.elapsed();
    let listed = whole["items"].as_array().map(Vec::len).unwrap_or_default();
    anyhow::ensure!(listed == n, "the list holds {listed} of {n}");

    let t = Instant::now();
    let mut streamed = http
        .get(format!("{list_url}&stream=true"))
        .send()
        .await?
        .bytes_stream();
    let mut first_streamed_line = None;
    let mut lines = 0;
    while let Some(chunk) = streamed.next().await {
        let chunk = chunk?;
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        if lines > 0 && first_streamed_line.is_none() {
            first_streamed_line = Some(t.elapsed());
        }
    }
    let all_streamed = t.elapsed();
    anyhow::ensure!(lines == n, "the stream holds {lines} of {n} lines");

    let listed = time_opctl_list(orchestrator, "f").await?;
    anyhow::ensure!(
        listed.rows == n,
        "opctl printed {} of {n} rows",
        listed.rows
    );
    Ok(Figures {
        applied,
        reconciled,
        whole_list,
        first_streamed_line: first_streamed_line.unwrap_or(all_streamed),
        all_streamed,
        opctl_first_line: listed.first_row,
        opctl_done: listed.done,
    })
}
