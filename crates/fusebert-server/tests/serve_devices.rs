//! Every GPU under load, on the real CUDA host path: the driver stand-in reports two devices
//! (each its own PTX emulator); the server runs two models on both, one worker per device over
//! the shared queues. 32 concurrent clients: every answer equals the single-request answer bit
//! for bit, both devices and both models ran batches. Then one device fails mid-load
//! (`FUSEBERT_CUDA_STANDIN_FAIL`): it leaves the rotation, its batch is retried on the other,
//! every request is answered once and correctly, `/ready` stays 200, the failure is counted.
//! Its own test binary: the stand-in is process-wide.
mod serve_common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use fusebert::model::Precision;
use fusebert_cuda_standin::{self as standin, Mode, StandinOptions};
use fusebert_server::Backend;
use serve_common::*;

const CLIENTS: usize = 32;
const ROUNDS: usize = 2;

fn texts() -> Vec<String> {
    (0..8).map(|i| format!("sentence {i}: {}", long_text(2 + 5 * i))).collect()
}

/// Client `c`'s request in round `r`: model (0 embeds, 1 reranks) and body.
fn request(c: usize, r: usize) -> (usize, &'static str, Value) {
    let t = &texts()[(c + r) % 8];
    if c % 2 == 0 {
        (0, "/embed", json!({ "inputs": t }))
    } else {
        (1, "/models/ce/rerank", json!({ "query": "which sentence", "texts": [t], "raw_scores": true }))
    }
}

/// Runs every client's rounds concurrently; returns (client, round, reply body) for each.
async fn load(addr: std::net::SocketAddr) -> Vec<(usize, usize, Reply)> {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let http = Http::new(addr);
                let mut out = Vec::new();
                for r in 0..ROUNDS {
                    let (_, path, body) = request(c, r);
                    out.push((c, r, http.post(path, &body).await));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_models_on_two_devices_under_load_and_a_device_failure() {
    let base = StandinOptions { mode: Mode::Deferred, devices: 2, ..StandinOptions::default() };
    standin::install(base).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/tiny-distilbert-mean");
    let mut opts = options(dir).with_model("ce", crossencoder());
    opts.backend = Backend::Cuda(0);
    opts.devices = Some(vec![0, 1]);
    opts.precision = Precision::F16;
    opts.max_batch_requests = 8;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let info = http.get("/info").await.json();
    assert_eq!(info["devices"], json!([{ "name": "cuda:0", "ready": true }, { "name": "cuda:1", "ready": true }]));

    // Each request alone first: the answers every loaded reply must equal, bit for bit.
    let mut single = std::collections::HashMap::new();
    for c in 0..2 {
        for r in 0..8 {
            let (_, path, body) = request(c, r);
            let reply = http.post(path, &body).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            single.insert(body.to_string(), reply.body);
        }
    }
    let check = |replies: &[(usize, usize, Reply)]| {
        for (c, r, reply) in replies {
            assert_eq!(reply.status, 200, "client {c} round {r}: {}", reply.body);
            let (_, _, body) = request(*c, *r);
            assert_eq!(&reply.body, &single[&body.to_string()], "client {c} round {r}: not the single-request answer");
        }
        assert_eq!(replies.len(), CLIENTS * ROUNDS);
    };
    let replies = load(server.addr()).await;
    check(&replies);
    let text = http.get("/metrics").await.body;
    for series in ["{device=\"cuda:0\"}", "{device=\"cuda:1\"}", "{model=\"tiny-distilbert-mean\"}", "{model=\"ce\"}"] {
        let n = parse_metric(&text, &format!("fusebert_batch_requests_count{series}")).unwrap();
        assert!(n > 0.0, "no batch ran on {series}:\n{text}");
    }

    // Device 1 fails after 40 more kernels: mid-load. Bursts until it has (bounded).
    standin::install(StandinOptions { fail: Some((1, 40)), ..base }).unwrap();
    let failures = "fusebert_device_failures_total{device=\"cuda:1\"}";
    let mut sent = 0;
    for burst in 0..10 {
        let replies = load(server.addr()).await;
        check(&replies);
        sent += replies.len();
        if http.metric(failures).await == Some(1.0) {
            break;
        }
        assert!(burst < 9, "device 1 never failed");
    }
    let text = http.get("/metrics").await.body;
    assert_eq!(parse_metric(&text, failures), Some(1.0), "{text}");
    assert_eq!(parse_metric(&text, "fusebert_device_up{device=\"cuda:1\"}"), Some(0.0));
    assert_eq!(parse_metric(&text, "fusebert_device_up{device=\"cuda:0\"}"), Some(1.0));
    assert!(parse_metric(&text, "fusebert_retried_inputs_total").unwrap() >= 1.0, "the failed batch was retried");
    assert!(sent >= CLIENTS * ROUNDS);
    let r = http.get("/ready").await;
    assert_eq!(r.status, 200, "one device left: still ready: {}", r.body);
    assert_eq!(http.get("/info").await.json()["devices"][1], json!({ "name": "cuda:1", "ready": false }));
    // Still serving, on the device that is left.
    let after = load(server.addr()).await;
    check(&after);
    let on_1 = |t: &str| parse_metric(t, "fusebert_batch_requests_count{device=\"cuda:1\"}").unwrap();
    assert_eq!(on_1(&http.get("/metrics").await.body), on_1(&text), "nothing ran on the failed device");

    // The last device fails too: its batch has nowhere to go (424), /ready turns 503, and new
    // requests are answered at once instead of waiting in a queue nobody serves.
    standin::install(StandinOptions { fail: Some((0, 0)), ..base }).unwrap();
    let r = http.post("/embed", &json!({ "inputs": "the last device" })).await;
    assert_eq!((r.status.as_u16(), r.json()["error_type"].as_str()), (424, Some("Backend")), "{}", r.body);
    assert_eq!(http.get("/ready").await.status, 503);
    let r = http.post("/v1/embeddings", &json!({ "input": "nobody left" })).await;
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.body.contains("no device left"), "{}", r.body);
    assert_eq!(http.get("/health").await.status, 200, "alive, though not ready");
    server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(60), server.wait()).await.expect("drains").unwrap();
}
