//! TEI's routes exactly, over real HTTP on loopback: `POST /` and `/invocations` dispatching by
//! model type, `GET /` and `/ping`, `/similarity`, `/decode`, the OpenAPI document (equal to the
//! route table), `--auto-truncate` off (TEI's 422) and truncation from either end, 415 for a
//! body not declared JSON, `/info`'s output dimension after a Dense module.
mod serve_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use serve_common::*;

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models").join(name)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_and_invocations_dispatch_by_model_type() {
    let opts = options(tiny("tiny-distilbert-mean"))
        .with_model("ce", crossencoder())
        .with_model("clf", tiny("tiny-roberta-classifier"));
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let texts = ["Hello!", "The quick brown fox."];
    // An embedding model: `/` and `/invocations` embed, as `/embed` does.
    let want = http.post("/embed", &json!({ "inputs": texts })).await.json();
    for route in ["/", "/invocations", "/models/tiny-distilbert-mean/", "/models/tiny-distilbert-mean/invocations"] {
        let r = http.post(route, &json!({ "inputs": texts })).await;
        assert_eq!(r.status, 200, "{route}: {}", r.body);
        assert_eq!(r.json(), want, "{route}");
    }
    // ... and a similarity body gets /similarity (InferenceClient.sentence_similarity posts it to `/`).
    let sim = json!({ "inputs": { "source_sentence": texts[0], "sentences": [texts[1], texts[0]] } });
    let by_route = http.post("/similarity", &sim).await;
    assert_eq!(by_route.status, 200, "{}", by_route.body);
    assert_eq!(http.post("/", &sim).await.json(), by_route.json());
    let s = floats(&by_route.json());
    let (a, b) = (floats(&want[0]), floats(&want[1]));
    assert!((s[0] - dot(&a, &b)).abs() < 1e-6 && (s[1] - 1.0).abs() < 1e-6, "{s:?}");
    // A cross-encoder reranks; a classifier predicts.
    let rr = json!({ "query": "what is a GEMM", "texts": ["A GEMM multiplies matrices.", "Paris"] });
    let want = http.post("/models/ce/rerank", &rr).await;
    assert_eq!(want.status, 200, "{}", want.body);
    assert_eq!(http.post("/models/ce/", &rr).await.json(), want.json());
    assert_eq!(http.post("/models/ce/invocations", &rr).await.json(), want.json());
    assert_eq!(http.post("/models/ce", &rr).await.json(), want.json(), "without the trailing slash too");
    // Pairs cut from either end: the longer text loses tokens first, from the chosen end.
    let long = long_text(2000);
    let info = http.get("/models/ce/info").await.json();
    let limit = info["max_input_length"].as_u64().unwrap().to_string();
    let mut scores = Vec::new();
    for direction in ["right", "left"] {
        let body = json!({ "query": "q", "texts": [format!("start {long} end")], "truncate": true,
                           "truncation_direction": direction, "raw_scores": true });
        let r = http.post("/models/ce/rerank", &body).await;
        assert_eq!(r.status, 200, "{direction}: {}", r.body);
        assert_eq!(r.header("x-compute-tokens"), Some(limit.as_str()), "{direction}");
        scores.push(r.json()[0]["score"].as_f64().unwrap());
    }
    assert_ne!(scores[0], scores[1], "left and right truncation kept the same tokens");
    let p = json!({ "inputs": "I like it" });
    let want = http.post("/models/clf/predict", &p).await;
    assert_eq!(want.status, 200, "{}", want.body);
    assert_eq!(want.json().as_array().unwrap().len(), 3, "three labels, sorted: {}", want.body);
    assert_eq!(http.post("/models/clf/", &p).await.json(), want.json());
    // An unknown model is a 404 naming the served ones.
    let r = http.post("/models/nope/embed", &json!({ "inputs": "x" })).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("clf"), "{}", r.body);
    // GET / and /ping are health, open.
    for route in ["/", "/ping", "/health"] {
        assert_eq!(http.get(route).await.status, 200, "{route}");
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_415_and_health_routes_stay_open() {
    let mut opts = options(minilm());
    opts.api_keys = fusebert_server::auth::ApiKeys::new(&["k"]);
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let key = [("authorization", "Bearer k")];
    for open in ["/", "/ping", "/health", "/ready", "/metrics", "/api-doc/openapi.json"] {
        assert_eq!(http.get(open).await.status, 200, "{open} stays open");
    }
    let post = |path: &'static str, body: Value| {
        let http = http.clone();
        async move { http.send(hyper::Method::POST, path, Some(body.to_string()), &key).await }
    };
    assert_eq!(http.post("/", &json!({ "inputs": "x" })).await.status, 401, "POST / needs the key");
    // /decode: ids back to text, with or without the special tokens; always a list.
    let ids: Vec<u64> = post("/tokenize", json!({ "inputs": "Hello world!" })).await.json()[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let r = post("/decode", json!({ "ids": ids })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!(["hello world!"]));
    let r = post("/decode", json!({ "ids": [ids.clone(), ids[1..3].to_vec()], "skip_special_tokens": false })).await;
    assert_eq!(r.json(), json!(["[CLS] hello world! [SEP]", "hello world"]));
    let r = post("/decode", json!({ "ids": [] })).await;
    assert_eq!((r.status.as_u16(), r.json()["error_type"].clone()), (200, Value::Null), "[] decodes to one empty text");
    let r = post("/decode", json!({ "ids": [[]] })).await;
    assert_eq!(r.json(), json!([""]));
    let r = post("/decode", json!({ "ids": [5_000_000] })).await;
    assert_eq!(r.status, 422, "{}", r.body);
    // 415: a body not declared JSON, TEI route or OpenAI route, each in its error shape.
    for (ct, route) in
        [(Some("text/plain"), "/embed"), (None, "/embed"), (Some("application/x-www-form-urlencoded"), "/")]
    {
        let mut headers = vec![("authorization", "Bearer k")];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let r = http.send_raw(hyper::Method::POST, route, "{\"inputs\": \"x\"}", &headers).await;
        assert_eq!(r.status, 415, "{ct:?} {route}: {}", r.body);
        assert_eq!(r.json()["error_type"], "UnsupportedMediaType", "{}", r.body);
    }
    let r = http
        .send_raw(hyper::Method::POST, "/v1/embeddings", "{\"input\": \"x\"}", &[("authorization", "Bearer k")])
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{}", r.body);
    let r = http
        .send_raw(
            hyper::Method::POST,
            "/embed",
            "{\"inputs\": \"x\"}",
            &[("authorization", "Bearer k"), ("content-type", "application/json; charset=utf-8")],
        )
        .await;
    assert_eq!(r.status, 200, "a charset parameter is fine: {}", r.body);
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// The served OpenAPI document is the checked-in file, and its paths and methods are exactly
/// the route table; every route in the table is routed (no 404 or 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_equals_the_routes() {
    let file = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&file).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let routed: BTreeSet<(String, String)> =
        fusebert_server::http::route_table().into_iter().map(|(m, p, _)| (m.to_string(), p)).collect();
    assert_eq!(documented, routed, "openapi.json and the router disagree");

    let server = start(options(tiny("tiny-distilbert-mean"))).await;
    let http = Http::new(server.addr());
    let served = http.get("/api-doc/openapi.json").await;
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, file);
    for (method, path) in routed {
        let path = path.replace("{name}", "tiny-distilbert-mean");
        let r = if method == "GET" { http.get(&path).await } else { http.post(&path, &json!({})).await };
        assert!(![404, 405].contains(&r.status.as_u16()), "{method} {path}: {} {}", r.status, r.body);
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// `--auto-truncate false`: an over-long input is TEI's 422 unless the request truncates; from
/// the right it keeps the start, from the left the end ([CLS]/[SEP] kept either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_off_by_flag_and_from_either_end() {
    let mut opts = options(minilm());
    opts.auto_truncate = false;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let long = words.join(" ");
    let r = http.post("/embed", &json!({ "inputs": long })).await;
    assert_eq!((r.status.as_u16(), r.json()["error_type"].as_str()), (422, Some("Validation")), "{}", r.body);
    assert!(
        r.body.starts_with("{\"error\":\"Input validation error: `inputs` must have less than 256 tokens"),
        "{}",
        r.body
    );
    assert_eq!(http.get("/info").await.json()["auto_truncate"], false);
    let ids: Vec<u64> = http.post("/tokenize", &json!({ "inputs": long })).await.json()[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(ids.len() > 256);
    let n = ids.len();
    let right: Vec<u64> = ids[..255].iter().copied().chain([ids[n - 1]]).collect();
    let left: Vec<u64> = [ids[0]].into_iter().chain(ids[n - 255..].iter().copied()).collect();
    for (direction, kept) in [
        ("right", right),
        ("Right", ids[..255].iter().copied().chain([ids[n - 1]]).collect()),
        ("left", left.clone()),
        ("Left", left),
    ] {
        let by_text =
            http.post("/embed", &json!({ "inputs": long, "truncate": true, "truncation_direction": direction })).await;
        assert_eq!(by_text.status, 200, "{direction}: {}", by_text.body);
        assert_eq!(by_text.header("x-compute-tokens"), Some("256"));
        let by_ids = http.post("/embed", &json!({ "inputs": [kept] })).await.json();
        assert_eq!(floats(&by_text.json()[0]), floats(&by_ids[0]), "{direction}: not the expected tokens");
    }
    // At the smallest limit (the two special tokens) left truncation keeps just them; below it
    // the server refuses to start with a typed error.
    let mut tiny_opts = options(minilm());
    tiny_opts.max_batch_tokens = 1;
    let err = fusebert_server::Server::start(tiny_opts.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("room for two special tokens"), "{err}");
    tiny_opts.max_batch_tokens = 2;
    let tiny_server = start(tiny_opts).await;
    let r = Http::new(tiny_server.addr())
        .post("/embed", &json!({ "inputs": "a b c", "truncate": true, "truncation_direction": "left" }))
        .await;
    assert_eq!((r.status.as_u16(), r.header("x-compute-tokens")), (200, Some("2")), "{}", r.body);
    tiny_server.begin_shutdown();
    tiny_server.wait().await.unwrap();
    // The OpenAI route follows --auto-truncate too.
    let r = http.post("/v1/embeddings", &json!({ "input": long })).await;
    assert_eq!(r.status, 422, "{}", r.body);
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// A copy of the tiny DistilBERT folder with a Dense module (64 -> 24, tanh) after pooling.
fn with_dense(dst: &Path) {
    let src = tiny("tiny-distilbert-mean");
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(dst.join("2_Dense")).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
        }
    }
    std::fs::copy(src.join("1_Pooling/config.json"), dst.join("1_Pooling/config.json")).unwrap();
    let mut modules: Value = serde_json::from_str(&std::fs::read_to_string(src.join("modules.json")).unwrap()).unwrap();
    modules
        .as_array_mut()
        .unwrap()
        .push(json!({ "idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense" }));
    std::fs::write(dst.join("modules.json"), modules.to_string()).unwrap();
    let (i, o) = (64usize, 24usize);
    std::fs::write(
        dst.join("2_Dense/config.json"),
        json!({ "in_features": i, "out_features": o, "bias": true, "activation_function": "torch.nn.modules.activation.Tanh" })
            .to_string(),
    )
    .unwrap();
    let w: Vec<u8> = (0..i * o).flat_map(|k| (((k * 37 % 101) as f32 - 50.0) / 400.0).to_le_bytes()).collect();
    let b: Vec<u8> = (0..o).flat_map(|k| ((k as f32 - 12.0) / 100.0).to_le_bytes()).collect();
    let tensors = [
        ("linear.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![o, i], &w).unwrap()),
        ("linear.bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![o], &b).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, &dst.join("2_Dense/model.safetensors")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_reports_the_output_dimension_after_dense() {
    let dir = std::env::temp_dir().join(format!("fusebert-serve-dense-{}", std::process::id()));
    with_dense(&dir);
    let server = start(options(dir.clone())).await;
    let http = Http::new(server.addr());
    let info = http.get("/info").await.json();
    assert_eq!(info["embedding_dimension"], 24, "{info}");
    assert_eq!(info["hidden_size"], 64, "{info}");
    let e = http.post("/embed", &json!({ "inputs": "Hello!" })).await.json();
    assert_eq!(e[0].as_array().unwrap().len(), 24);
    let r = http.post("/embed", &json!({ "inputs": "Hello!", "dimensions": 25 })).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let o = http.post("/v1/embeddings", &json!({ "input": "Hello!" })).await.json();
    assert_eq!(o["data"][0]["embedding"].as_array().unwrap().len(), 24);
    server.begin_shutdown();
    server.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
