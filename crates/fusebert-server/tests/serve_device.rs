//! `fusebert serve` on the device backends (the PTX emulator running the real kernels; CUDA too
//! when a GPU or the driver stand-in opens), over real HTTP on loopback: concurrent requests are batched by the server onto the device forward pass,
//! and every answer matches the f32 CPU reference to the precision's tolerance (fp16 cosine >=
//! 0.9999, int8 >= 0.995, as `verify`).
mod serve_common;

use serde_json::json;

use fusebert::model::compare::cosine;
use fusebert::model::{BertModel, Precision};
use fusebert_server::Backend;
use serve_common::*;

/// A small sentence-transformers folder (DistilBERT, mean pooling, hidden 64, head dim 32): the
/// emulator runs its forward pass in well under a second.
fn model_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/tiny-distilbert-mean")
}

/// The emulator always; CUDA too when a device opens (a GPU, or FUSEBERT_CUDA_DRIVER=emulator).
fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Emulator];
    if fusebert_cuda_standin::cuda_device(0).is_ok() {
        b.push(Backend::Cuda(0));
    }
    b
}

async fn concurrent_embeddings_match_the_reference(precision: Precision, min_cosine: f64) {
    for backend in backends() {
        embeddings_on(backend, precision, min_cosine).await;
    }
}

async fn embeddings_on(backend: Backend, precision: Precision, min_cosine: f64) {
    let mut opts = options(model_dir());
    opts.backend = backend;
    opts.precision = precision;
    let server = start(opts).await;
    let http = Http::new(server.addr());
    let texts = ["Hello!", "The quick brown fox jumps over the lazy dog.", "GPU kernels, verified on a CPU."];
    let want = reference_embeddings(&BertModel::load(&model_dir()).unwrap(), &texts, true);
    // one request per text, all in flight at once: the batcher packs them into device batches
    let replies = futures_join(texts.iter().map(|t| {
        let http = http.clone();
        let body = json!({ "inputs": t });
        async move { http.post("/embed", &body).await }
    }))
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "{}", r.body);
        let got: Vec<f32> = r.json()[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let c = cosine(&got, &want[i]);
        assert!(c >= min_cosine, "{backend:?} {precision:?} text {i}: cosine {c} < {min_cosine}");
    }
    let info = http.send(hyper::Method::GET, "/info", None, &[]).await.json();
    let dtype = if precision == Precision::F16 { "float16" } else { "int8" };
    assert_eq!(info["model_dtype"], dtype, "{info}");
    server.begin_shutdown();
    server.wait().await.unwrap();
}

/// Runs the futures concurrently on the runtime and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = Reply> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp16_on_the_device_backends_matches_the_reference() {
    concurrent_embeddings_match_the_reference(Precision::F16, 0.9999).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_on_the_device_backends_matches_the_reference() {
    concurrent_embeddings_match_the_reference(Precision::Int8, 0.995).await;
}
