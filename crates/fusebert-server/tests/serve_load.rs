//! `fusebert serve` under concurrency: batching is invisible (each reply equals the text's
//! single-request embedding, bit for bit), a client batch larger than a device batch is split,
//! overload answers 429 with Retry-After at once, a request past its deadline answers 503 and its
//! queued inputs never reach the device, a client that disconnects has its queued inputs dropped.
//! Loops are bounded in count; no timing is asserted beyond "this request was still running".
mod serve_common;

use std::time::Duration;

use serde_json::json;

use serve_common::*;

/// 24 texts of different lengths (1 to ~70 tokens).
fn texts() -> Vec<String> {
    (0..24).map(|i| format!("text number {i}: {}", long_text(1 + i * 3))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_their_single_request_embedding() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    let texts = texts();
    // Each text alone first, one request at a time: batches of one.
    let mut alone = Vec::new();
    for t in &texts {
        let r = http.post("/embed", &json!({ "inputs": t })).await;
        assert_eq!(r.status, 200, "{}", r.body);
        alone.push(floats(&r.json()[0]));
    }
    let before = http.metric("fusebert_batch_requests_count").await.unwrap();
    // 24 clients at once, 3 rounds each, every client its own connection pool.
    let mut tasks = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let (t, addr) = (t.clone(), server.addr());
        tasks.push(tokio::spawn(async move {
            let http = Http::new(addr);
            let mut got = Vec::new();
            for _ in 0..3 {
                let r = http.post("/embed", &json!({ "inputs": t })).await;
                assert_eq!(r.status, 200, "client {i}: {}", r.body);
                got.push(floats(&r.json()[0]));
            }
            (i, got)
        }));
    }
    for task in tasks {
        let (i, got) = task.await.unwrap();
        for g in got {
            assert_eq!(g, alone[i], "client {i}: the batched reply differs from the single-request one");
        }
    }
    let batches = http.metric("fusebert_batch_requests_count").await.unwrap() - before;
    assert!(batches < 72.0, "72 concurrent inputs ran in {batches} batches: no batching happened");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_batch_is_split_across_device_batches() {
    let mut opts = options(minilm());
    opts.max_batch_requests = 4;
    opts.max_batch_tokens = 300;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let texts: Vec<String> = texts().into_iter().take(10).chain([long_text(250)]).collect();
    let r = http.post("/embed", &json!({ "inputs": texts })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    for (i, t) in texts.iter().enumerate() {
        let alone = http.post("/embed", &json!({ "inputs": t })).await.json();
        assert_eq!(floats(&v[i]), floats(&alone[0]), "input {i}");
    }
    let text = http.get("/metrics").await.body;
    let m = |s: &str| parse_metric(&text, s).unwrap();
    // 11 inputs at most 4 per batch, within 300 tokens: at least 3 batches, then 11 singles.
    assert!(m("fusebert_batch_requests_count") >= 3.0 + 11.0);
    assert_eq!(m("fusebert_batch_requests_bucket{le=\"4\"}"), m("fusebert_batch_requests_count"), "no batch over 4");
    assert_eq!(
        m("fusebert_batch_tokens_bucket{le=\"512\"}"),
        m("fusebert_batch_tokens_count"),
        "no batch over 300 tokens"
    );
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// A request that keeps the CPU device busy for a while: 32 inputs of 256 tokens, one per batch.
fn slow_body() -> serde_json::Value {
    json!({ "inputs": vec![long_text(300); 32], "truncate": true })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_with_retry_after_at_once() {
    let mut opts = options(minilm());
    opts.max_concurrent_requests = 1;
    opts.max_batch_requests = 1;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { http.post("/embed", &slow_body()).await })
    };
    // Wait (bounded) until the slow request holds the only permit.
    for _ in 0..200 {
        if http.metric("fusebert_queue_tokens").await.unwrap() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = http.post("/embed", &json!({ "inputs": "one more" })).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.header("retry-after-ms").is_some());
    assert_eq!(r.json()["error_type"], "Overloaded");
    let o = http.post("/v1/embeddings", &json!({ "input": "one more" })).await;
    assert_eq!(o.status, 429);
    assert_eq!(o.json()["error"]["type"], "rate_limit_error");
    assert!(!slow.is_finished(), "the 429s came while the slow request was still running");
    // Health is never queued behind inference.
    assert_eq!(http.get("/health").await.status, 200);
    let done = slow.await.unwrap();
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(http.post("/embed", &json!({ "inputs": "now" })).await.status, 200, "the permit came back");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// Waits (bounded) until the queue is empty and returns the number of batches run.
async fn settle(http: &Http) -> f64 {
    for _ in 0..500 {
        if http.metric("fusebert_queue_tokens").await == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The batch running when the queue emptied finishes too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    http.metric("fusebert_batch_requests_count").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_503_and_its_work_dropped() {
    let mut opts = options(minilm());
    opts.max_batch_requests = 1;
    opts.request_timeout = Duration::from_millis(300);
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let r = http.post("/embed", &slow_body()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error_type"], "Unavailable");
    assert!(r.body.contains("timed out"), "{}", r.body);
    let batches = settle(&http).await;
    assert!(batches < 32.0, "all 32 inputs ran ({batches} batches) although the request had timed out");
    let dropped = http.metric("fusebert_dropped_total{reason=\"cancelled\"}").await.unwrap();
    assert_eq!(dropped + batches, 32.0, "every input either ran or was dropped");
    assert_eq!(http.metric("fusebert_requests_total{route=\"/embed\",status=\"503\"}").await, Some(1.0));
    assert_eq!(http.post("/embed", &json!({ "inputs": "still serving" })).await.status, 200);
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_has_its_queued_work_dropped() {
    let mut opts = options(minilm());
    opts.max_batch_requests = 1;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    // The client gives up after 300 ms: its connection closes with the request unanswered.
    let gone = tokio::time::timeout(Duration::from_millis(300), http.post("/embed", &slow_body())).await;
    assert!(gone.is_err(), "the slow request finished within 300 ms: make it slower");
    let batches = settle(&http).await;
    assert!(batches < 32.0, "all 32 inputs ran ({batches} batches) after the client left");
    let dropped = http.metric("fusebert_dropped_total{reason=\"cancelled\"}").await.unwrap();
    assert_eq!(dropped + batches, 32.0, "every input either ran or was dropped");
    assert_eq!(http.metric("fusebert_requests_total{route=\"/embed\",status=\"499\"}").await, Some(1.0));
    assert_eq!(http.metric("fusebert_in_flight_requests").await, Some(1.0), "only /metrics itself");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_the_shutdown_timeout_drops_the_queue() {
    let mut opts = options(minilm());
    opts.max_batch_requests = 1;
    opts.shutdown_timeout = Duration::from_millis(200);
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { http.post("/embed", &slow_body()).await })
    };
    for _ in 0..200 {
        if http.metric("fusebert_queue_tokens").await.unwrap() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = server.state().clone();
    server.begin_shutdown();
    server.wait().await.unwrap();
    let text = state.metrics.render();
    let ran = parse_metric(&text, "fusebert_batch_requests_count").unwrap();
    let dropped = parse_metric(&text, "fusebert_dropped_total{reason=\"shutdown\"}").unwrap();
    assert!(ran < 32.0 && dropped > 0.0, "ran {ran}, dropped {dropped}: the queue was not dropped");
    assert_eq!(parse_metric(&text, "fusebert_queue_tokens"), Some(0.0));
    // The client gets a 503 (its handler saw its inputs dropped) or a closed connection; never a 200.
    if let Ok(r) = slow.await {
        assert_eq!(r.status, 503, "{}", r.body);
    }
}

/// `--replicas 2` on the CPU: two workers over one queue; both run batches under concurrent
/// load, every answer is the single-request one, `/info` lists both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_queue() {
    let mut opts = options(minilm());
    opts.replicas = 2;
    opts.max_batch_requests = 2;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let info = http.get("/info").await.json();
    assert_eq!(info["devices"], json!([{ "name": "cpu:0", "ready": true }, { "name": "cpu:1", "ready": true }]));
    let texts = texts();
    let mut alone = Vec::new();
    for t in &texts[..8] {
        alone.push(http.post("/embed", &json!({ "inputs": t })).await.json());
    }
    // Bursts of 16 concurrent clients until both replicas have run a batch (bounded).
    for burst in 0..5 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (t, addr) = (texts[i % 8].clone(), server.addr());
                tokio::spawn(async move { (i, Http::new(addr).post("/embed", &json!({ "inputs": t })).await) })
            })
            .collect();
        for task in tasks {
            let (i, r) = task.await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json(), alone[i % 8], "client {i}");
        }
        let text = http.get("/metrics").await.body;
        let ran = |d: &str| parse_metric(&text, &format!("fusebert_batch_requests_count{{device=\"{d}\"}}")).unwrap();
        if ran("cpu:0") > 0.0 && ran("cpu:1") > 0.0 {
            break;
        }
        assert!(burst < 4, "a replica ran no batch in 5 bursts:\n{text}");
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}
