//! Serving benchmark: `fusebert serve` in-process on the CPU reference with all-MiniLM-L6-v2,
//! driven over loopback HTTP by 1, 16 and 128 concurrent clients (each sends one short sentence
//! per request and waits for the reply). Prints requests/s and latency percentiles per level, and
//! at one client the server's own overhead per request: mean latency minus mean device time
//! (`fusebert_device_duration_seconds`; every batch holds one request there).
//!
//! Then throughput with 1 and 2 replicas (`--replicas`: workers over one queue), 32 clients, on
//! the CPU reference (all-MiniLM-L6-v2) and on the PTX emulator (the tiny DistilBERT of
//! `testdata/models`).
//!
//! Run: `cargo bench --bench serve` (`SERVE_BENCH_REQUESTS=N` scales the request counts;
//! `SERVE_BENCH=levels` or `SERVE_BENCH=replicas` runs one part).
#[path = "../tests/serve_common/mod.rs"]
mod serve_common;

use std::time::{Duration, Instant};

use serde_json::json;

use serve_common::*;

const TEXT: &str = "The quick brown fox jumps over the lazy dog.";

/// Runs `total` requests from `clients` concurrent clients; returns each request's latency and the wall time.
async fn drive(addr: std::net::SocketAddr, clients: usize, total: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let per_client = total.div_ceil(clients);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let http = Http::new(addr);
                let body = json!({ "inputs": TEXT });
                let mut lat = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let r = http.post("/embed", &body).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn metric_sum_count(http: &Http, name: &str) -> (f64, f64) {
    let text = http.get("/metrics").await.body;
    (parse_metric(&text, &format!("{name}_sum")).unwrap(), parse_metric(&text, &format!("{name}_count")).unwrap())
}

/// Requests per second from 32 clients with 1 and 2 replicas of `backend` serving `model`.
async fn replicas(label: &str, model: std::path::PathBuf, backend: fusebert_server::Backend, total: usize) {
    println!("{label}: 32 clients, {total} requests, /embed of one 12-token sentence per request");
    println!("{:>9} {:>10} {:>9} {:>9} {:>12}", "replicas", "req/s", "p50 ms", "p99 ms", "mean batch");
    for n in [1, 2] {
        let mut opts = options(model.clone());
        opts.backend = backend;
        opts.replicas = n;
        let server = start(opts).await;
        let http = Http::new(server.addr());
        drive(server.addr(), 4, 40).await; // warm
        let (req0, batches0) = metric_sum_count(&http, "fusebert_batch_requests").await;
        let (mut lat, wall) = drive(server.addr(), 32, total).await;
        let (req1, batches1) = metric_sum_count(&http, "fusebert_batch_requests").await;
        lat.sort();
        println!(
            "{n:>9} {:>10.1} {:>9.3} {:>9.3} {:>12.2}",
            lat.len() as f64 / wall.as_secs_f64(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            (req1 - req0) / (batches1 - batches0)
        );
        server.begin_shutdown();
        server.wait().await.unwrap();
    }
}

fn main() {
    let scale: usize = std::env::var("SERVE_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let part = std::env::var("SERVE_BENCH").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if part != "levels" {
        rt.block_on(async {
            let tiny =
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/tiny-distilbert-mean");
            replicas("--device emu, tiny DistilBERT", tiny, fusebert_server::Backend::Emulator, 640 * scale).await;
            replicas("--device cpu, all-MiniLM-L6-v2", minilm(), fusebert_server::Backend::Cpu, 640 * scale).await;
        });
    }
    if part == "replicas" {
        return;
    }
    rt.block_on(async {
        let mut opts = options(minilm());
        opts.max_client_batch_size = 32;
        let server = start(opts).await;
        let http = Http::new(server.addr());
        drive(server.addr(), 1, 20).await; // warm: connections, allocator, caches
        println!("fusebert serve, --device cpu, all-MiniLM-L6-v2, /embed of one 12-token sentence per request");
        println!("{:>8} {:>9} {:>10} {:>9} {:>9} {:>12}", "clients", "requests", "req/s", "p50 ms", "p99 ms", "mean batch");
        for (clients, total) in [(1, 300 * scale), (16, 800 * scale), (128, 2048 * scale)] {
            let (dev0, batches0) = metric_sum_count(&http, "fusebert_device_duration_seconds").await;
            let (req0, _) = metric_sum_count(&http, "fusebert_batch_requests").await;
            let (mut lat, wall) = drive(server.addr(), clients, total).await;
            let (dev1, batches1) = metric_sum_count(&http, "fusebert_device_duration_seconds").await;
            let (req1, _) = metric_sum_count(&http, "fusebert_batch_requests").await;
            lat.sort();
            let n = lat.len();
            let batches = batches1 - batches0;
            println!(
                "{clients:>8} {n:>9} {:>10.1} {:>9.3} {:>9.3} {:>12.2}",
                n as f64 / wall.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                (req1 - req0) / batches
            );
            if clients == 1 {
                let mean_latency = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64;
                let mean_device = (dev1 - dev0) / batches;
                println!(
                    "         one client: mean latency {:.3} ms = device {:.3} ms + server overhead {:.3} ms per request",
                    mean_latency * 1e3,
                    mean_device * 1e3,
                    (mean_latency - mean_device) * 1e3
                );
            }
        }
        server.begin_shutdown();
        server.wait().await.unwrap();
    });
}
