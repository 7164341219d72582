//! Several models in one server: `--model NAME=DIR` (repeatable), the OpenAI `model` field and
//! `/v1/models`, TEI's routes under `/models/NAME/`, one queue per model with fair scheduling (a
//! deep backlog on one model does not hold up another), per-model metric labels.
mod serve_common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use fusebert_server::ModelSpec;
use serve_common::*;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/tiny-distilbert-mean")
}

#[test]
fn model_flags_parse_name_and_folder() {
    assert_eq!(
        ModelSpec::parse("bge=./models/bge"),
        ModelSpec { name: Some("bge".into()), dir: "./models/bge".into() }
    );
    assert_eq!(ModelSpec::parse("./models/bge"), ModelSpec { name: None, dir: "./models/bge".into() });
    // a folder whose path holds `=` after a slash is a folder, not a name
    assert_eq!(ModelSpec::parse("./a=b/c"), ModelSpec { name: None, dir: "./a=b/c".into() });
    assert_eq!(ModelSpec::parse("=x"), ModelSpec { name: None, dir: "=x".into() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_model_field_and_routes_select_the_model() {
    let mut opts = options(minilm()).with_model("small", tiny());
    opts.served_model_name = Some("mini".into());
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let m = http.get("/v1/models").await.json();
    let ids: Vec<&str> = m["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mini", "small"]);
    let text = "Hello!";
    let mini = http.post("/embed", &json!({ "inputs": text })).await.json();
    let small = http.post("/models/small/embed", &json!({ "inputs": text })).await.json();
    assert_eq!(mini[0].as_array().unwrap().len(), 384);
    assert_eq!(small[0].as_array().unwrap().len(), 64);
    assert_eq!(http.post("/models/mini/embed", &json!({ "inputs": text })).await.json(), mini);
    for (name, want) in [("mini", &mini), ("small", &small)] {
        let r = http.post("/v1/embeddings", &json!({ "input": text, "model": name })).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["model"], name);
        assert_eq!(floats(&r.json()["data"][0]["embedding"]), floats(&want[0]), "{name}");
    }
    let r = http.post("/v1/embeddings", &json!({ "input": text })).await.json();
    assert_eq!(r["model"], "mini", "no model: the first");
    let r = http.post("/v1/embeddings", &json!({ "input": text, "model": "gpt" })).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "model");
    let info = http.get("/models/small/info").await.json();
    assert_eq!((info["served_model_name"].as_str(), info["embedding_dimension"].as_u64()), (Some("small"), Some(64)));
    assert_eq!(http.get("/info").await.json()["models"], json!(["mini", "small"]));
    let text = http.get("/metrics").await.body;
    for model in ["mini", "small"] {
        let series = format!("fusebert_batch_requests_count{{model=\"{model}\"}}");
        assert!(parse_metric(&text, &series).unwrap() >= 2.0, "{series} in\n{text}");
        assert!(text.contains(&format!("fusebert_queue_tokens{{model=\"{model}\"}} 0")), "{text}");
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_under_one_name_is_a_typed_error() {
    let opts = options(tiny()).with_model("tiny-distilbert-mean", tiny());
    let err = fusebert_server::Server::start(opts).await.err().expect("refused");
    assert!(err.to_string().contains("two models are served as `tiny-distilbert-mean`"), "{err}");
}

/// A deep backlog on one model (32 inputs of 256 tokens, one per batch) does not hold up the
/// other: its requests are answered while the backlog is still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_on_one_model_does_not_starve_another() {
    let mut opts = options(minilm()).with_model("small", tiny());
    opts.max_batch_requests = 1;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let backlog = {
        let http = http.clone();
        let body = json!({ "inputs": vec![long_text(300); 32], "truncate": true });
        tokio::spawn(async move { http.post("/embed", &body).await })
    };
    let queued = "fusebert_queue_tokens{model=\"all-MiniLM-L6-v2\"}";
    let model_name = http.get("/info").await.json()["served_model_name"].as_str().unwrap().to_string();
    let queued = queued.replace("all-MiniLM-L6-v2", &model_name);
    for _ in 0..200 {
        if http.metric(&queued).await.unwrap() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..3 {
        let r = http.post("/models/small/embed", &json!({ "inputs": format!("small request {i}") })).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let left = http.metric(&queued).await.unwrap();
    assert!(left > 0.0, "the other model's requests waited for the whole backlog");
    assert!(!backlog.is_finished());
    let done = backlog.await.unwrap();
    assert_eq!(done.status, 200, "{}", done.body);
    server.begin_shutdown();
    server.wait().await.unwrap();
}
