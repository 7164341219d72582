//! `fusebert serve` over real HTTP on loopback: every route, its reply shape and values (against
//! the CPU reference), every error (status and JSON body), auth, request ids, metrics.
mod serve_common;

use base64::Engine as _;
use serde_json::{json, Value};

use fusebert::model::reference::{self, Options};
use fusebert::model::BertModel;
use fusebert::tokenize::Tokenizer;
use serve_common::*;

const TEXTS: [&str; 3] = ["Hello!", "The quick brown fox jumps over the lazy dog.", ""];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_matches_the_reference_single_and_batched() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    let model = BertModel::load(&minilm()).unwrap();
    let want = reference_embeddings(&model, &TEXTS, true);

    let one = http.post("/embed", &json!({ "inputs": "Hello!" })).await;
    assert_eq!(one.status, 200, "{}", one.body);
    let v = one.json();
    assert_eq!(v.as_array().unwrap().len(), 1, "a single input still answers a 2-D array");
    let got = floats(&v[0]);
    assert_eq!(got.len(), 384);
    assert!(max_abs_diff(&got, &want[0]) <= 1e-6, "max abs diff {}", max_abs_diff(&got, &want[0]));
    assert_eq!(one.header("x-compute-tokens"), Some("4"));

    let many = http.post("/embed", &json!({ "inputs": TEXTS })).await;
    assert_eq!(many.status, 200, "{}", many.body);
    let v = many.json();
    for (i, w) in want.iter().enumerate() {
        let d = max_abs_diff(&floats(&v[i]), w);
        assert!(d <= 1e-6, "input {i}: max abs diff {d}");
    }

    // normalize false: the raw mean pooling; dimensions: cut, then renormalised.
    let raw = http.post("/embed", &json!({ "inputs": TEXTS[1], "normalize": false })).await.json();
    let want_raw = reference_embeddings(&model, &TEXTS[1..2], false);
    assert!(max_abs_diff(&floats(&raw[0]), &want_raw[0]) <= 1e-6);
    let cut = http.post("/embed", &json!({ "inputs": TEXTS[1], "dimensions": 8 })).await.json();
    let mut want_cut = want_raw[0][..8].to_vec();
    reference::l2_normalize(&mut want_cut);
    assert!(max_abs_diff(&floats(&cut[0]), &want_cut) <= 1e-6);
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_all_returns_each_tokens_final_hidden_state() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    let model = BertModel::load(&minilm()).unwrap();
    let batch = Tokenizer::for_model(&model).unwrap().encode_batch(&TEXTS[..2], false).unwrap();
    let reply = http.post("/embed_all", &json!({ "inputs": &TEXTS[..2] })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = reply.json();
    for i in 0..2 {
        let want = reference::forward(
            &model,
            &Tokenizer::for_model(&model).unwrap().encode_batch(&[TEXTS[i]], false).unwrap(),
            &Options::default(),
        )
        .unwrap();
        let rows = v[i].as_array().unwrap();
        assert_eq!(rows.len(), batch.lengths[i], "one row per token");
        let got: Vec<f32> = rows.iter().flat_map(floats).collect();
        let d = max_abs_diff(&got, &want.sequences[0].last_hidden_state);
        assert!(d <= 1e-5, "input {i}: max abs diff {d}");
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embeddings_float_base64_ids_dimensions_usage() {
    let mut opts = options(minilm());
    opts.served_model_name = Some("minilm".into());
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let model = BertModel::load(&minilm()).unwrap();
    let want = reference_embeddings(&model, &TEXTS, true);

    let r = http.post("/v1/embeddings", &json!({ "input": TEXTS, "model": "anything" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "minilm");
    // Hello! = 4 tokens, the fox = 12, "" = 2 ([CLS] [SEP]).
    assert_eq!(v["usage"]["prompt_tokens"], 18);
    assert_eq!(v["usage"]["total_tokens"], 18);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(v["data"][i]["index"], i);
        assert_eq!(v["data"][i]["object"], "embedding");
        assert!(max_abs_diff(&floats(&v["data"][i]["embedding"]), w) <= 1e-6);
    }

    // base64: the little-endian f32 bytes of the same vector, bit for bit.
    let b = http.post("/v1/embeddings", &json!({ "input": "Hello!", "encoding_format": "base64" })).await.json();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let f = http.post("/v1/embeddings", &json!({ "input": "Hello!" })).await.json();
    assert_eq!(decoded, floats(&f["data"][0]["embedding"]));

    // Token ids: the same tokens as the text give the same embedding, with or without [CLS]/[SEP].
    let ids: Vec<u32> =
        Tokenizer::for_model(&model).unwrap().encode_batch(&["Hello!"], false).unwrap().input_ids[0].clone();
    let inner = &ids[1..ids.len() - 1];
    let t = http.post("/v1/embeddings", &json!({ "input": [inner, ids] })).await.json();
    assert_eq!(floats(&t["data"][0]["embedding"]), decoded);
    assert_eq!(floats(&t["data"][1]["embedding"]), decoded);
    assert_eq!(t["usage"]["prompt_tokens"], 8);

    // dimensions: the first d values, renormalised.
    let d = http.post("/v1/embeddings", &json!({ "input": "Hello!", "dimensions": 16 })).await.json();
    let got = floats(&d["data"][0]["embedding"]);
    let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert_eq!(got.len(), 16);
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");

    let m = http.get("/v1/models").await.json();
    assert_eq!(m["data"][0]["id"], "minilm");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// `(status, error_type)` of a TEI error reply, checking the body shape.
fn tei_error(r: &Reply) -> (u16, String) {
    let v = r.json();
    assert!(v["error"].is_string(), "TEI error shape expected: {}", r.body);
    (r.status.as_u16(), v["error_type"].as_str().expect("error_type").to_string())
}

/// `(status, type)` of an OpenAI error reply, checking the nested shape.
fn openai_error(r: &Reply) -> (u16, String) {
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{}", r.body);
    (r.status.as_u16(), e["type"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_a_json_error() {
    let mut opts = options(minilm());
    opts.payload_limit = 4000;
    opts.max_client_batch_size = 3;
    opts.auto_truncate = false;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let v = "Validation".to_string();

    assert_eq!(tei_error(&http.post("/embed", &json!({ "inputs": [] })).await), (400, "Empty".into()));
    assert_eq!(tei_error(&http.post_raw("/embed", "{\"inputs\": ").await), (400, "Empty".into()));
    assert_eq!(tei_error(&http.post("/embed", &json!({ "inputs": 5 })).await), (422, v.clone()));
    assert_eq!(tei_error(&http.post("/embed", &json!({ "text": "x" })).await), (422, v.clone()));
    let big = "x ".repeat(3000);
    assert_eq!(tei_error(&http.post("/embed", &json!({ "inputs": big })).await), (413, v.clone()));
    let four = json!({ "inputs": ["a", "b", "c", "d"] });
    let r = http.post("/embed", &four).await;
    assert_eq!(tei_error(&r), (422, v.clone()));
    assert!(r.body.contains("batch size 4 > maximum allowed batch size 3"), "{}", r.body);

    // Past MiniLM's 256 tokens: refused unless truncation is asked for.
    let long = long_text(300);
    let r = http.post("/embed", &json!({ "inputs": long })).await;
    assert_eq!(tei_error(&r), (422, v.clone()));
    assert!(r.body.contains("must have less than 256 tokens. Given: 302"), "TEI's message: {}", r.body);
    let r = http.post("/embed", &json!({ "inputs": long, "truncate": true })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-compute-tokens"), Some("256"));

    assert_eq!(tei_error(&http.post("/embed", &json!({ "inputs": "a", "dimensions": 0 })).await), (422, v.clone()));
    assert_eq!(tei_error(&http.post("/embed", &json!({ "inputs": "a", "dimensions": 385 })).await), (422, v.clone()));
    assert_eq!(
        tei_error(&http.post("/embed", &json!({ "inputs": "a", "prompt_name": "query" })).await),
        (422, v.clone())
    );
    let sideways = json!({ "inputs": "a", "truncation_direction": "middle" });
    assert_eq!(tei_error(&http.post("/embed", &sideways).await), (422, v.clone()));

    // Routes MiniLM cannot serve say why.
    let r = http.post("/predict", &json!({ "inputs": "a" })).await;
    assert_eq!(tei_error(&r), (424, "Backend".into()));
    assert!(r.body.contains("classifier"), "{}", r.body);
    let r = http.post("/rerank", &json!({ "query": "a", "texts": ["b"] })).await;
    assert_eq!(tei_error(&r), (424, "Backend".into()));
    assert_eq!(tei_error(&http.get("/nope").await), (404, "NotFound".into()));

    // OpenAI routes answer in OpenAI's nested shape.
    let inv = "invalid_request_error".to_string();
    assert_eq!(openai_error(&http.post("/v1/embeddings", &json!({ "input": [] })).await), (400, inv.clone()));
    assert_eq!(openai_error(&http.post_raw("/v1/embeddings", "{").await), (400, inv.clone()));
    assert_eq!(openai_error(&http.post("/v1/embeddings", &json!({ "input": big })).await), (413, inv.clone()));
    let r = http.post("/v1/embeddings", &json!({ "input": "a", "encoding_format": "hex" })).await;
    assert_eq!(openai_error(&r), (422, inv.clone()));
    assert_eq!(r.json()["error"]["param"], "encoding_format");
    let bad_id = json!({ "input": [[101, 999_999, 102]] });
    assert_eq!(openai_error(&http.post("/v1/embeddings", &bad_id).await), (422, inv.clone()));
    assert_eq!(openai_error(&http.get("/v1/nope").await), (404, inv));
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_info_health_ready() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    let t = http.post("/tokenize", &json!({ "inputs": "Hello world!" })).await.json();
    let toks = t[0].as_array().unwrap();
    let ids: Vec<u64> = toks.iter().map(|x| x["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [101, 7592, 2088, 999, 102]);
    assert_eq!(toks[0]["special"], true);
    assert_eq!(toks[0]["start"], Value::Null);
    assert_eq!(
        (toks[2]["text"].as_str(), toks[2]["start"].as_u64(), toks[2]["stop"].as_u64()),
        (Some("world"), Some(6), Some(11))
    );
    let t = http.post("/tokenize", &json!({ "inputs": ["a", "b"], "add_special_tokens": false })).await.json();
    assert_eq!(t[1].as_array().unwrap().len(), 1);

    let info = http.get("/info").await.json();
    assert_eq!(info["max_input_length"], 256, "sentence-transformers' max_seq_length, as TEI");
    assert_eq!(info["max_batch_tokens"], 16384);
    assert_eq!(info["max_client_batch_size"], 32);
    assert_eq!(info["max_concurrent_requests"], 512);
    assert_eq!(info["model_dtype"], "float32");
    assert!(info["model_type"]["embedding"].is_object(), "{info}");

    assert_eq!(http.get("/health").await.status, 200);
    assert_eq!(http.get("/ready").await.status, 200);
    server.state().ready.store(false, std::sync::atomic::Ordering::SeqCst); // what a drain does first
    let r = http.get("/ready").await;
    assert_eq!(tei_error(&r), (503, "Unavailable".into()));
    assert_eq!(http.get("/health").await.status, 200, "alive while draining");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_everything_but_health_ready_metrics() {
    let mut opts = options(minilm());
    opts.api_keys = fusebert_server::auth::ApiKeys::new(&["key-one", "key-two"]);
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let body = Some(json!({ "inputs": "hi" }).to_string());
    let post = |h: &'static [(&'static str, &'static str)]| {
        let (http, body) = (http.clone(), body.clone());
        async move { http.send(hyper::Method::POST, "/embed", body, h).await }
    };
    let r = post(&[]).await;
    assert_eq!(tei_error(&r), (401, "Unauthorized".into()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(post(&[("authorization", "Bearer key-three")]).await.status, 401);
    assert_eq!(post(&[("authorization", "Bearer key-on")]).await.status, 401);
    assert_eq!(post(&[("authorization", "key-one")]).await.status, 401);
    assert_eq!(post(&[("authorization", "Bearer key-one")]).await.status, 200);
    assert_eq!(post(&[("authorization", "Bearer key-two")]).await.status, 200);
    assert_eq!(http.get("/info").await.status, 401);
    let r = http.send(hyper::Method::POST, "/v1/embeddings", Some(json!({ "input": "a" }).to_string()), &[]).await;
    assert_eq!(openai_error(&r), (401, "authentication_error".into()));
    for open in ["/health", "/ready", "/metrics"] {
        assert_eq!(http.get(open).await.status, 200, "{open} stays open");
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_honoured_or_made() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    let r = http.send(hyper::Method::GET, "/health", None, &[("x-request-id", "abc-123")]).await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let a = http.get("/health").await.header("x-request-id").unwrap().to_string();
    let b = http.get("/health").await.header("x-request-id").unwrap().to_string();
    assert!(!a.is_empty() && a != b, "{a} {b}");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let server = start(options(minilm())).await;
    let http = Http::new(server.addr());
    // 3 successful requests: 1 + 2 + 1 inputs, 4 + (4 + 12) + 2 = 22 tokens; then two 422s.
    assert_eq!(http.post("/embed", &json!({ "inputs": "Hello!" })).await.status, 200);
    assert_eq!(http.post("/embed", &json!({ "inputs": &TEXTS[..2] })).await.status, 200);
    assert_eq!(http.post("/v1/embeddings", &json!({ "input": "" })).await.status, 200);
    assert_eq!(http.post("/embed", &json!({ "inputs": [] })).await.status, 400);
    assert_eq!(http.post("/embed", &json!({ "inputs": 1.5 })).await.status, 422);
    let text = http.get("/metrics").await.body;
    let m = |s: &str| parse_metric(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    assert_eq!(m("fusebert_requests_total{route=\"/embed\",status=\"200\"}"), 2.0);
    assert_eq!(m("fusebert_requests_total{route=\"/embed\",status=\"422\"}"), 1.0);
    assert_eq!(m("fusebert_requests_total{route=\"/embed\",status=\"400\"}"), 1.0);
    assert_eq!(m("fusebert_requests_total{route=\"/v1/embeddings\",status=\"200\"}"), 1.0);
    assert_eq!(m("fusebert_request_duration_seconds_count{route=\"/embed\"}"), 4.0);
    assert_eq!(m("fusebert_tokens_total"), 22.0);
    assert_eq!(m("fusebert_batch_tokens_sum"), 22.0);
    assert_eq!(m("fusebert_queue_duration_seconds_count"), 4.0, "one per input");
    let batches = m("fusebert_batch_requests_count");
    assert_eq!(m("fusebert_device_duration_seconds_count"), batches);
    assert_eq!(m("fusebert_batch_requests_sum"), 4.0);
    assert!((3.0..=4.0).contains(&batches), "sequential requests: 3 or 4 batches, got {batches}");
    assert_eq!(m("fusebert_queue_tokens"), 0.0);
    assert_eq!(m("fusebert_in_flight_requests"), 1.0, "the /metrics request itself");
    for h in ["fusebert_queue_duration_seconds", "fusebert_device_duration_seconds", "fusebert_batch_tokens"] {
        assert!(text.contains(&format!("# TYPE {h} histogram")), "{h}");
        assert_eq!(m(&format!("{h}_bucket{{le=\"+Inf\"}}")), m(&format!("{h}_count")));
    }
    server.begin_shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_and_predict_on_a_cross_encoder() {
    let dir = crossencoder();
    let server = start(options(dir.clone())).await;
    let http = Http::new(server.addr());
    // The golden case: logits of sentence-transformers' CrossEncoder (PyTorch, f32).
    let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let query = case["rerank"]["query"].as_str().unwrap();
    let texts: Vec<&str> = case["rerank"]["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let golden = std::fs::read(dir.join("rerank.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&golden).unwrap();
    let want: Vec<f32> = golden
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // The library's pipeline (what `fusebert rerank` runs) gives the same scores.
    let mut pipeline = fusebert::Pipeline::open(&dir, fusebert::Backend::Cpu, fusebert::Precision::F16).unwrap();
    let from_pipeline = pipeline.rerank(query, &texts).unwrap();
    for (i, (&p, &w)) in from_pipeline.iter().zip(&want).enumerate() {
        let sig = 1.0 / (1.0 + (-w).exp());
        assert!((p - sig).abs() <= 1e-6, "pipeline pair {i}: {p} vs sentence-transformers {sig}");
    }

    let r =
        http.post("/rerank", &json!({ "query": query, "texts": texts, "raw_scores": true, "return_text": true })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ranks = r.json();
    let ranks = ranks.as_array().unwrap();
    assert_eq!(ranks.len(), 3);
    for (k, rank) in ranks.iter().enumerate() {
        let i = rank["index"].as_u64().unwrap() as usize;
        assert_eq!(rank["text"], texts[i]);
        let s = rank["score"].as_f64().unwrap() as f32;
        assert!((s - want[i]).abs() <= 1e-5, "pair {i}: {s} vs sentence-transformers {}", want[i]);
        let sig = 1.0 / (1.0 + (-s).exp());
        assert!((sig - from_pipeline[i]).abs() <= 1e-6, "pair {i}: the server and the pipeline disagree");
        if k > 0 {
            assert!(ranks[k - 1]["score"].as_f64() >= rank["score"].as_f64(), "sorted by score, descending");
        }
    }
    // Default: sigmoid of the logit, no text.
    let r = http.post("/rerank", &json!({ "query": query, "texts": texts })).await.json();
    let i = r[0]["index"].as_u64().unwrap() as usize;
    assert!(r[0].get("text").is_none());
    assert!((r[0]["score"].as_f64().unwrap() as f32 - 1.0 / (1.0 + (-want[i]).exp())).abs() <= 1e-5);
    assert_eq!(tei_error(&http.post("/rerank", &json!({ "query": query, "texts": [] })).await), (400, "Empty".into()));

    // /predict: a pair, and a batch of [text] / [text, pair].
    let p = http.post("/predict", &json!({ "inputs": [query, texts[1]], "raw_scores": true })).await.json();
    assert_eq!(p[0]["label"], "LABEL_0");
    assert!((p[0]["score"].as_f64().unwrap() as f32 - want[1]).abs() <= 1e-5);
    let p =
        http.post("/predict", &json!({ "inputs": [[query, texts[2]], ["alone"]], "raw_scores": true })).await.json();
    assert!((p[0][0]["score"].as_f64().unwrap() as f32 - want[2]).abs() <= 1e-5);
    assert_eq!(p[1].as_array().unwrap().len(), 1);
    let bad = http.post("/predict", &json!({ "inputs": [["a", "b", "c"]] })).await;
    assert_eq!(tei_error(&bad), (422, "Validation".into()));
    let info = http.get("/info").await.json();
    assert_eq!(info["model_type"]["reranker"]["id2label"]["0"], "LABEL_0", "{info}");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// A RoBERTa sentence-transformers folder (`<s>`/`</s>`, position offset, cls pooling): served,
/// its token-id inputs wrapped in the template's own special tokens, /info naming its pooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roberta_folder_is_served_with_its_own_special_tokens() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/tiny-roberta-cls");
    let server = start(options(dir.clone())).await;
    let http = Http::new(server.addr());
    let text = "hello world";
    let by_text = http.post("/embed", &json!({ "inputs": text, "normalize": false })).await.json();
    let pieces = http.post("/tokenize", &json!({ "inputs": text })).await.json();
    let ids: Vec<u64> = pieces[0].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect();
    let bare = &ids[1..ids.len() - 1];
    assert!(pieces[0][0]["special"].as_bool().unwrap(), "{pieces}");
    // token ids without the specials: the server adds <s> and </s>; with them: taken as given
    for input in [bare, &ids[..]] {
        let by_ids = http.post("/embed", &json!({ "inputs": [input], "normalize": false })).await.json();
        let (a, b) = (by_text[0].as_array().unwrap(), by_ids[0].as_array().unwrap());
        assert_eq!(a.len(), b.len());
        let diff = a.iter().zip(b).map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs()).fold(0.0, f64::max);
        assert!(diff <= 1e-6, "ids {input:?}: max abs diff {diff}");
    }
    let info = http.send(hyper::Method::GET, "/info", None, &[]).await.json();
    let pooling = fusebert::model::BertModel::load(&dir).unwrap().sentence_config().pooling;
    assert_eq!(info["model_type"]["embedding"]["pooling"], pooling.name(), "{info}");
    server.begin_shutdown();
    server.wait().await.unwrap();
}
