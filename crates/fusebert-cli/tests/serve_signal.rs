//! The real `fusebert serve` binary: SIGTERM drains (the in-flight request completes, new
//! connections are refused) and the process exits 0; bad flags are a typed error.
#![cfg(unix)]
#[path = "../../fusebert-server/tests/serve_common/mod.rs"]
mod serve_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use serve_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fusebert"))
        .args(["serve", "--hostname", "127.0.0.1", "--port", "0", "--max-batch-requests", "1", "--json-output"])
        .arg("--model")
        .arg(minilm())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, lines) = listening_address(&mut child);
    let http = Http::new(addr);
    let slow = {
        let http = http.clone();
        let body = json!({ "inputs": vec![long_text(300); 12], "truncate": true });
        tokio::spawn(async move { http.post("/embed", &body).await })
    };
    for _ in 0..200 {
        if http.metric("fusebert_queue_tokens").await.unwrap() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let done = slow.await.unwrap();
    assert_eq!(done.status, 200, "the in-flight request completes: {}", done.body);
    assert_eq!(done.json().as_array().unwrap().len(), 12);
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let log = rest.join("\n");
    assert!(log.contains("shutting down"), "{log}");
    // --json-output: the request's log line is JSON with its id and status.
    let line = rest.iter().find(|l| l.contains("\"path\":\"/embed\"")).unwrap_or_else(|| panic!("{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], 200);
    assert!(v["request_id"].is_string());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens after exit");
}

#[test]
fn bad_flags_are_typed_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fusebert")).arg("serve").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--hostname", "not a host!", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--hostname not a host!"), "{err}");
    let (code, err) = run(&["--max-batch-tokens", "0", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--max-batch-tokens must be at least 1"), "{err}");
    let (code, err) = run(&["--device", "cpu", "--precision", "int8"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--precision"), "{err}");
    let (code, err) = run(&["--model", "/nonexistent/model", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/model"), "{err}");
    let (code, err) = run(&["--model", "a=/nonexistent/named", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/named"), "{err}");
    let (code, err) = run(&["--replicas", "0", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--replicas must be at least 1"), "{err}");
    let (code, err) = run(&["--devices", "1", "--port", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--devices applies to --device cuda"), "{err}");
}

/// The binary on two CUDA devices (the driver stand-in, selected by the environment as a user
/// would) with two models: `/info` lists both devices, and SIGTERM under 32 concurrent clients
/// answers every in-flight request (200, the single-request answer) before exiting 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_devices_two_models_drain_on_sigterm() {
    let models = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fusebert"))
        .args(["serve", "--device", "cuda", "--hostname", "127.0.0.1", "--port", "0", "--max-batch-requests", "4"])
        .arg("--model")
        .arg(format!("emb={}", models.join("tiny-distilbert-mean").display()))
        .arg("--model")
        .arg(format!("ce={}", crossencoder().display()))
        .env("FUSEBERT_CUDA_DRIVER", "emulator:deferred")
        .env("FUSEBERT_CUDA_STANDIN_DEVICES", "2")
        .env_remove("FUSEBERT_CUDA_STANDIN_FAIL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, lines) = listening_address(&mut child);
    let http = Http::new(addr);
    let info = http.get("/info").await.json();
    assert_eq!(info["devices"], json!([{ "name": "cuda:0", "ready": true }, { "name": "cuda:1", "ready": true }]));
    assert_eq!(info["models"], json!(["emb", "ce"]));
    let body = |c: usize| {
        let texts: Vec<String> = (0..8).map(|i| format!("client {c} text {i}: {}", long_text(10 + i))).collect();
        if c % 2 == 0 {
            ("/models/emb/embed", json!({ "inputs": texts }))
        } else {
            ("/models/ce/rerank", json!({ "query": "q", "texts": texts, "raw_scores": true }))
        }
    };
    let alone: Vec<String> = futures_all((0..2).map(|c| {
        let (http, (path, b)) = (http.clone(), body(c));
        async move { http.post(path, &b).await.body }
    }))
    .await;
    let tasks: Vec<_> = (0..32)
        .map(|c| {
            let (path, b) = body(c % 2);
            tokio::spawn(async move { (c, Http::new(addr).post(path, &b).await) })
        })
        .collect();
    for _ in 0..500 {
        if http.metric("fusebert_in_flight_requests").await.unwrap() >= 33.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    for t in tasks {
        let (c, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "client {c}: {}", r.body);
        assert_eq!(r.body, alone[c % 2], "client {c}: not the single-request answer");
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
}

type StderrLines = std::io::Lines<BufReader<std::process::ChildStderr>>;

/// The address the spawned server prints on stderr once it listens, and the rest of its stderr.
fn listening_address(child: &mut std::process::Child) -> (std::net::SocketAddr, StderrLines) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(a) = line.strip_prefix("fusebert serve: listening on http://") {
            return (a.parse().unwrap(), lines);
        }
    }
}

async fn futures_all<F: std::future::Future<Output = String>>(futs: impl Iterator<Item = F>) -> Vec<String> {
    let mut out = Vec::new();
    for f in futs {
        out.push(f.await);
    }
    out
}
