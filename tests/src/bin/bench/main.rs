//! Benchmark: the raw NATS primitives the control plane is built on, then N resources applied
//! through the orchestrator's API and reconciled by the demo operator (instant platform), with
//! apply→reconciled latency and reconciles per second printed beside the raw figures as ratios.
//!
//! `cargo run --release -p operator-tests --bin bench -- --resources 2000 --in-flight 64`
//!
//! `--scale [N]` (default N 100,000) runs the scale mode instead of the control-plane runs:
//! see `scale.rs`.
//!
//! `--tracing on` runs the control plane with every span sampled (`OTEL_TRACES_SAMPLER=always_on`)
//! and exported over OTLP/gRPC to a receiver inside the bench; `--tracing compare` runs it
//! twice, without then with tracing, each on a fresh nats-server, and prints the ratios.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use operator_tests::measure::DemoSystem;
use operator_tests::{NatsServer, OtlpReceiver};
use tokio::sync::Mutex;

mod scale;

#[derive(Parser)]
struct Args {
    /// Resources applied through the API.
    #[arg(long, default_value_t = 2000)]
    resources: usize,
    /// Applies in flight at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Samples per raw primitive.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// OPERATOR_MAX_WORKERS of the component.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Span export of the control plane: `off`, `on` (every span sampled, exported to a
    /// receiver in this process) or `compare` (off, then on, and the ratios).
    #[arg(long, value_enum, default_value_t = Tracing::Off)]
    tracing: Tracing,
    /// Scale mode: this many resources (100,000 when no number is given) applied through the
    /// batch endpoint, with every size, rate and restore time printed.
    #[arg(long, num_args = 0..=1, default_missing_value = "100000")]
    scale: Option<usize>,
    /// Scale mode: batch requests (files of 2,000 documents) sent at once.
    #[arg(long, default_value_t = 4)]
    files_at_once: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tracing {
    Off,
    On,
    Compare,
}

struct Figures {
    name: &'static str,
    hist: Histogram<u64>,
    per_second: f64,
}

impl Figures {
    /// The quantile `q`, in microseconds.
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

async fn measure<F, Fut>(name: &'static str, samples: usize, mut op: F) -> anyhow::Result<Figures>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut hist = histogram();
    let start = Instant::now();
    for i in 0..samples {
        let t = Instant::now();
        op(i).await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    let per_second = samples as f64 / start.elapsed().as_secs_f64();
    Ok(Figures {
        name,
        hist,
        per_second,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    operator_telemetry::install_tls_provider();
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let js = async_nats::jetstream::new(client.clone());

    // Raw primitives.
    let mut responder = client.subscribe("bench.echo").await?;
    let echo_client = client.clone();
    tokio::spawn(async move {
        while let Some(msg) = responder.next().await {
            if let Some(reply) = msg.reply {
                let _ = echo_client.publish(reply, msg.payload).await;
            }
        }
    });
    let payload = bytes::Bytes::from(vec![b'x'; 512]);
    let rr = measure("request/reply", args.samples, |_| {
        let (c, p) = (client.clone(), payload.clone());
        async move {
            c.request("bench.echo", p).await?;
            Ok(())
        }
    })
    .await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "bench".into(),
        subjects: vec!["bench.js".into()],
        ..Default::default()
    })
    .await?;
    let publish = measure("JetStream publish+ack", args.samples, |_| {
        let (j, p) = (js.clone(), payload.clone());
        async move {
            j.publish("bench.js", p).await?.await?;
            Ok(())
        }
    })
    .await?;
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "bench".into(),
            ..Default::default()
        })
        .await?;
    let kv_put = measure("KV put", args.samples, |i| {
        let (k, p) = (kv.clone(), payload.clone());
        async move {
            k.put(format!("k{}", i % 1000), p).await?;
            Ok(())
        }
    })
    .await?;
    // As many puts at once as applies are in flight: the ceiling a pipelined writer meets.
    let kv_put_pipelined = {
        let start = Instant::now();
        futures::stream::iter(0..args.samples)
            .map(|i| {
                let (k, p) = (kv.clone(), payload.clone());
                async move { k.put(format!("p{}", i % 1000), p).await }
            })
            .buffer_unordered(args.in_flight)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        args.samples as f64 / start.elapsed().as_secs_f64()
    };

    if let Some(resources) = args.scale {
        print_raw(&args, &[&rr, &publish, &kv_put], kv_put_pipelined);
        let scale = scale::Scale {
            resources,
            workers: args.workers,
            files_at_once: args.files_at_once,
        };
        let raw = scale::RawRates {
            kv_put_sequential: kv_put.per_second,
            kv_put_pipelined,
            in_flight: args.in_flight,
        };
        return scale::run(&scale, &raw).await;
    }

    // The control plane, without and/or with tracing.
    let mut runs = Vec::new();
    if args.tracing != Tracing::On {
        runs.push(control_plane(&args, None).await?);
    }
    if args.tracing != Tracing::Off {
        let receiver = OtlpReceiver::start()?;
        runs.push(control_plane(&args, Some(&receiver)).await?);
    }

    print_raw(&args, &[&rr, &publish, &kv_put], kv_put_pipelined);
    for run in &runs {
        println!();
        println!(
            "control plane (demo operator, instant platform, {} workers), {}",
            args.workers, run.label
        );
        for (label, f) in [
            (
                "apply→reconciled, 1 in flight".to_string(),
                &run.sequential.figures,
            ),
            (
                format!("apply→reconciled, {} in flight", args.in_flight),
                &run.loaded.figures,
            ),
        ] {
            println!(
                "{:<34} {:>10.0} {:>10.0} {:>12.0}",
                label,
                f.p(0.5),
                f.p(0.99),
                f.per_second
            );
        }
        println!(
            "{} applies acknowledged in {:.2} s ({:.0}/s)",
            args.resources,
            run.loaded.applies_done.as_secs_f64(),
            args.resources as f64 / run.loaded.applies_done.as_secs_f64()
        );
        if let Some(spans) = &run.spans {
            let resources = args.resources + run.sequential_n;
            let total: usize = spans.values().sum();
            let by_service: Vec<String> = spans.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!(
                "spans received: {total} ({:.1} per resource applied; {})",
                total as f64 / resources as f64,
                by_service.join(", ")
            );
        }
    }
    // One resource's path holds two KV writes (create, status) and two JetStream publishes
    // (command, status event) at the least, plus an HTTP round trip.
    let raw_p50 = 2.0 * kv_put.p(0.5) + 2.0 * publish.p(0.5);
    let raw_p99 = 2.0 * kv_put.p(0.99) + 2.0 * publish.p(0.99);
    println!();
    let first = runs.first().context("no control-plane run")?;
    println!(
        "ratios, {} (raw path = 2 KV puts + 2 publishes, sequential):",
        first.label
    );
    println!(
        "  apply→reconciled p50, 1 in flight / raw path p50 = {:.1}",
        first.sequential.figures.p(0.5) / raw_p50
    );
    println!(
        "  apply→reconciled p99, 1 in flight / raw path p99 = {:.1}",
        first.sequential.figures.p(0.99) / raw_p99
    );
    println!(
        "  reconciles/s at {} in flight / sequential KV puts/s = {:.2}",
        args.in_flight,
        first.loaded.figures.per_second / kv_put.per_second
    );
    if let [off, on] = runs.as_slice() {
        println!();
        println!("tracing cost (on / off):");
        for (label, off, on) in [
            ("1 in flight".to_string(), &off.sequential, &on.sequential),
            (
                format!("{} in flight", args.in_flight),
                &off.loaded,
                &on.loaded,
            ),
        ] {
            println!(
                "  {label:<14} p50 ×{:.2}   p99 ×{:.2}   reconciles/s ×{:.2}",
                on.figures.p(0.5) / off.figures.p(0.5),
                on.figures.p(0.99) / off.figures.p(0.99),
                on.figures.per_second / off.figures.per_second
            );
        }
    }
    Ok(())
}

/// The raw primitives' figures, and the pipelined KV puts' rate.
fn print_raw(args: &Args, sequential: &[&Figures], kv_put_pipelined: f64) {
    println!(
        "raw primitives ({} samples each, 512-byte payload, sequential)",
        args.samples
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "primitive", "p50 µs", "p99 µs", "ops/s"
    );
    for f in sequential {
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>12.0}",
            f.name,
            f.p(0.5),
            f.p(0.99),
            f.per_second
        );
    }
    println!(
        "{:<34} {:>10} {:>10} {:>12.0}",
        format!("KV put, {} in flight", args.in_flight),
        "",
        "",
        kv_put_pipelined
    );
}

/// One run of the control plane: a fresh nats-server, orchestrator and demo component.
struct Run {
    label: &'static str,
    sequential: Batch,
    sequential_n: usize,
    loaded: Batch,
    /// Spans the receiver got by service, when tracing.
    spans: Option<std::collections::BTreeMap<String, usize>>,
}

/// Applies `--samples / 10` resources one at a time, then `--resources` with `--in-flight`
/// at once, through the API of a fresh system; with `receiver`, every process samples every
/// span and exports it there.
async fn control_plane(args: &Args, receiver: Option<&OtlpReceiver>) -> anyhow::Result<Run> {
    let nats = NatsServer::start()?;
    let client = nats.client().await?;
    let js = async_nats::jetstream::new(client);
    let otel = receiver.map(OtlpReceiver::env).unwrap_or_default();
    let otel: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let system = DemoSystem::start(&nats, &otel, args.workers, &otel).await?;
    let (orchestrator, http) = (&system.orchestrator, &system.http);
    let url = format!("{}/api/v1/apply?workspace=public", orchestrator.url());
    let sequential_n = (args.samples / 10).max(50);
    let sequential = apply_batch(http, &url, &js, "seq", sequential_n, 1).await?;
    let loaded = apply_batch(http, &url, &js, "load", args.resources, args.in_flight).await?;
    // What the processes still hold arrives within a few batch delays.
    let spans = match receiver {
        Some(receiver) => {
            settled_count(receiver).await;
            let mut by_service = std::collections::BTreeMap::new();
            for span in receiver.spans() {
                *by_service.entry(span.service).or_insert(0) += 1;
            }
            Some(by_service)
        }
        None => None,
    };
    Ok(Run {
        label: if receiver.is_some() {
            "tracing on (always_on, OTLP/gRPC batches every 100 ms to a receiver in the bench)"
        } else {
            "tracing off"
        },
        sequential,
        sequential_n,
        loaded,
        spans,
    })
}

/// The receiver's span count once a second has passed with no new span, or after 30 s.
async fn settled_count(receiver: &OtlpReceiver) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = receiver.count();
    while Instant::now() < deadline {
        let seen = last;
        match receiver
            .wait_until(Duration::from_secs(1), |spans| spans.len() > seen)
            .await
        {
            Some(spans) => last = spans.len(),
            None => break,
        }
    }
    last
}

/// Key → when it was applied, and who waits for it to be reconciled.
type InFlight = Arc<Mutex<HashMap<String, (Instant, tokio::sync::oneshot::Sender<()>)>>>;

struct Batch {
    figures: Figures,
    applies_done: Duration,
}

/// Applies `n` resources through the API, `in_flight` at a time, and times each from its
/// apply until the orchestrator's record shows it reconciled (watched on its KV bucket).
async fn apply_batch(
    http: &reqwest::Client,
    url: &str,
    js: &async_nats::jetstream::Context,
    prefix: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<Batch> {
    let resources_kv = js.get_key_value("orchestrator-resources").await?;
    // Watches every resource; only this batch's keys are in `sent`.
    let mut watch = resources_kv.watch("public.*").await?;
    // Key → when it was applied, and who waits for it to be reconciled.
    let sent: InFlight = Arc::default();
    let watcher = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut hist = histogram();
            let mut done = 0usize;
            let mut last = Instant::now();
            while done < n {
                let Some(Ok(entry)) = watch.next().await else {
                    break;
                };
                let Ok(record) = serde_json::from_slice::<serde_json::Value>(&entry.value) else {
                    continue;
                };
                if record["status"]["runtime"] != "succeeded" {
                    continue;
                }
                if let Some((t0, reconciled)) = sent.lock().await.remove(&entry.key) {
                    hist.record(t0.elapsed().as_micros().max(1) as u64).ok();
                    let _ = reconciled.send(());
                    done += 1;
                    last = Instant::now();
                }
            }
            (hist, last)
        })
    };
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, sent) = (http.clone(), sent.clone());
            async move {
                let name = format!("{prefix}-{i}");
                let body = format!(
                    "name: {name}\nversion: v1\ntype: resource\nresource:\n  operator: demo\n  type: job\n  spec: {{durationMs: 0}}\n"
                );
                let (tx, reconciled) = tokio::sync::oneshot::channel();
                sent.lock().await.insert(format!("public.{name}"), (Instant::now(), tx));
                let response = http.post(url).body(body).send().await?;
                anyhow::ensure!(response.status().is_success(), "apply {name}: {}", response.text().await?);
                if in_flight == 1 {
                    // One at a time means one resource in the system at a time: wait for it.
                    let _ = reconciled.await;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let applies_done = start.elapsed();
    let (hist, last) = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("resources were not all reconciled within 10 minutes")??;
    let per_second = n as f64 / last.duration_since(start).as_secs_f64();
    Ok(Batch {
        figures: Figures {
            name: "apply→reconciled",
            hist,
            per_second,
        },
        applies_done,
    })
}
