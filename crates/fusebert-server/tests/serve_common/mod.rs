//! Shared by the `serve_*` tests: start the real server on 127.0.0.1 port 0 (in-process) and
//! talk HTTP to it with hyper's client.
#![allow(dead_code)] // each test binary uses a subset
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use fusebert::model::reference::{self, Options};
use fusebert::model::BertModel;
use fusebert::tokenize::Tokenizer;
use fusebert_server::{ServeOptions, Server};

/// The bundled all-MiniLM-L6-v2 (scripts/setup.sh installs it).
pub fn minilm() -> PathBuf {
    fusebert::model::bundled_model_dir().expect("bundled all-MiniLM-L6-v2 missing: run `bash scripts/setup.sh`")
}

/// A one-label BERT cross-encoder (random weights), with its tokenizer.
pub fn crossencoder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/serve_data/tiny-bert-crossencoder")
}

/// Options for a test server: MiniLM on the CPU reference, loopback, port 0, no request logs.
pub fn options(model: PathBuf) -> ServeOptions {
    let mut o = ServeOptions::new(model, "127.0.0.1:0".parse().unwrap());
    o.log_requests = false;
    o
}

pub async fn start(opts: ServeOptions) -> Server {
    Server::start(opts).await.expect("server starts")
}

/// A reply: status, headers, body text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 client (connection pooling as a real client does).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), addr }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<String>, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
        self.request(req).await
    }

    /// Sends a request and reads the whole reply (within 120 s).
    async fn request(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(120), self.client.request(req))
            .await
            .expect("reply within 120 s")
            .expect("HTTP request");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    /// A POST with exactly these headers (no Content-Type unless given).
    pub async fn send_raw(&self, method: Method, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        self.request(req).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string()), &[]).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, Some(body.to_string()), &[]).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    /// The value of one un-labelled or labelled series in `/metrics` (`name{labels}` as printed).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.body;
        parse_metric(&text, series)
    }
}

/// The value of `series` in a Prometheus text: `name` or `name{a="x",...}`, summed over every
/// series of that name whose labels include the given ones (so `fusebert_batch_requests_count`
/// adds up every model and device). `Some(0)` when the metric exists but has no such series yet.
pub fn parse_metric(text: &str, series: &str) -> Option<f64> {
    let (name, want) = match series.split_once('{') {
        Some((n, rest)) => (n, labels_of(rest.trim_end_matches('}'))),
        None => (series, Vec::new()),
    };
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, value)) = line.rsplit_once(' ') else { continue };
        let (n, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, labels_of(rest.trim_end_matches('}'))),
            None => (head, Vec::new()),
        };
        if n == name && want.iter().all(|w| labels.contains(w)) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    sum.or_else(|| text.contains(&format!("# TYPE {base} ")).then_some(0.0))
}

fn labels_of(s: &str) -> Vec<(String, String)> {
    s.split("\",")
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// `v` as f32s.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The CPU reference's mean-pooled embeddings of `texts` (each alone), L2-normalised or not.
pub fn reference_embeddings(model: &BertModel, texts: &[&str], normalize: bool) -> Vec<Vec<f32>> {
    let tok = Tokenizer::for_model(model).unwrap();
    texts
        .iter()
        .map(|t| {
            let batch = tok.encode_batch(&[*t], true).unwrap();
            reference::forward(model, &batch, &Options { normalize }).unwrap().sequences.remove(0).pooled
        })
        .collect()
}

/// A text of about `words` tokens.
pub fn long_text(words: usize) -> String {
    (0..words).map(|i| ["alpha", "beta", "gamma", "delta"][i % 4]).collect::<Vec<_>>().join(" ")
}
