//! The model zoo (`tests/models/`) through the device forward pass on the emulator (and CUDA
//! when present) against the golden outputs of sentence-transformers / transformers
//! (`tests/golden/<name>/`), the way `embed` / `classify` / `rerank` encode the inputs (the
//! folder's pooling, Normalize, prompts, max_seq_length truncation; pairs for the reranker).
//!
//! fp16 (the bar): embeddings 1 - cosine <= 1e-4 per text, logits atol 5e-3.
//! int8 (W8A8, SmoothQuant-calibrated on the built-in texts, as the CLI does): cosine >= 0.995
//! (the project's int8 bar) and logits atol 5e-2 (an int8 step is ~0.4% of a GEMM input's
//! range; the measured errors are printed).
mod forward_support;

use std::path::PathBuf;

use forward_support::{cosine, devices, max_abs};
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::{quant, BertModel, Precision};
use fusebert::tokenize::{Batch, Tokenizer};
use fusebert::Device;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

const F16_MAX_ONE_MINUS_COS: f64 = 1e-4;
const F16_LOGITS_ATOL: f32 = 5e-3;
const INT8_MIN_COS: f64 = 0.995;
const INT8_LOGITS_ATOL: f32 = 5e-2;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// One case of `cases.json`.
#[derive(Deserialize)]
struct Case {
    texts: Vec<String>,
    prompt_name: Option<String>,
    query: Option<String>,
}

fn cases(model: &str) -> Vec<(String, Case)> {
    let path = root().join("golden").join(model).join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    map.into_iter().map(|(k, v)| (k, serde_json::from_value(v).unwrap())).collect()
}

/// The golden `[rows, n]` tensor `name` of a case, as rows.
fn golden(model: &str, case: &str, name: &str) -> Vec<Vec<f32>> {
    let path = root().join("golden").join(model).join(format!("{case}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    assert_eq!((t.dtype(), t.shape().len()), (Dtype::F32, 2));
    let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    v.chunks(t.shape()[1]).map(<[f32]>::to_vec).collect()
}

fn load(model: &str) -> (BertModel, Tokenizer) {
    let m = BertModel::load(&root().join("models").join(model)).unwrap();
    let t = Tokenizer::for_model(&m).unwrap();
    (m, t)
}

/// The model on `dev` as the CLI builds it (int8: calibrated on the built-in texts).
fn device_bert(dev: &Device, m: &BertModel, tok: &Tokenizer, precision: Precision) -> DeviceBert {
    if precision == Precision::F16 {
        return DeviceBert::new(dev, m, precision).unwrap();
    }
    let calibration = tok.encode_batch(&quant::CALIBRATION_TEXTS, true).unwrap();
    DeviceBert::new_calibrated(dev, m, precision, &calibration).unwrap()
}

/// On the emulator: the last forward pass ran the GEMMs of `precision` (int8 really is W8A8).
fn assert_gemms_are(dev: &Device, precision: Precision, what: &str) {
    if let Some(e) = dev.emulator_backend() {
        let names: Vec<String> = e.launches().iter().map(|l| l.kernel.clone()).collect();
        let int8 = names.iter().filter(|k| k.starts_with("gemm_int8")).count();
        match precision {
            Precision::Int8 => assert!(int8 >= 4 * 2, "{what}: int8 GEMMs {names:?}"),
            Precision::F16 => assert_eq!(int8, 0, "{what}: {names:?}"),
        }
        e.clear_launches();
    }
}

/// Worst 1 - cosine (and worst cosine) of the device's sentence embeddings over every case.
fn embeddings(model: &str, dev: &Device, precision: Precision) -> f64 {
    let (m, tok) = load(model);
    let mut bert = device_bert(dev, &m, &tok, precision);
    let pipeline = m.sentence_config();
    let mut worst = 0f64;
    for (name, case) in cases(model) {
        let prompt = pipeline.choose_prompt(None, case.prompt_name.as_deref()).unwrap();
        let (texts, prompt_tokens) = match &prompt {
            Some(p) => (case.texts.iter().map(|t| format!("{p}{t}")).collect(), tok.prompt_tokens(p).unwrap()),
            None => (case.texts.clone(), 0),
        };
        let batch = tok.encode_batch(&texts, true).unwrap();
        let got = bert.sentence_embeddings(&batch, &pipeline, prompt_tokens).unwrap();
        assert_gemms_are(dev, precision, &format!("{model}/{name}"));
        let want = golden(model, &name, "sentence_embedding");
        assert_eq!(got.len(), want.len(), "{model}/{name}: rows");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "{model}/{name} text {i}: width");
            let d = 1.0 - cosine(g, w);
            eprintln!("{dev:?} {precision:?} {model}/{name} text {i}: 1 - cosine {d:.2e}");
            worst = worst.max(d);
        }
    }
    worst
}

/// Worst max abs logit error over every case (pairs for the cross-encoder).
fn logits(model: &str, dev: &Device, precision: Precision) -> f32 {
    let (m, tok) = load(model);
    let mut bert = device_bert(dev, &m, &tok, precision);
    let mut worst = 0f32;
    for (name, case) in cases(model) {
        let batch: Batch = match &case.query {
            Some(q) => {
                let pairs: Vec<(&str, &str)> = case.texts.iter().map(|t| (q.as_str(), t.as_str())).collect();
                tok.encode_pairs(&pairs, false).unwrap()
            }
            None => tok.encode_batch(&case.texts, false).unwrap(),
        };
        let (out, _) = bert.forward(&batch, ForwardOptions::default()).unwrap();
        assert_gemms_are(dev, precision, &format!("{model}/{name}"));
        let want = golden(model, &name, "logits");
        assert_eq!(out.sequences.len(), want.len(), "{model}/{name}: rows");
        for (s, w) in out.sequences.iter().zip(&want) {
            let g = s.logits.as_ref().expect("a classifier model");
            assert_eq!(g.len(), w.len(), "{model}/{name}: labels");
            worst = worst.max(max_abs(g, w));
        }
    }
    eprintln!("{dev:?} {precision:?} {model}: max abs logit err {worst:.2e}");
    worst
}

fn check_embeddings(model: &str) {
    for dev in devices() {
        let d = embeddings(model, &dev, Precision::F16);
        assert!(d <= F16_MAX_ONE_MINUS_COS, "{model} fp16: 1 - cosine {d:e} > {F16_MAX_ONE_MINUS_COS:e}");
        let d = embeddings(model, &dev, Precision::Int8);
        assert!(1.0 - d >= INT8_MIN_COS, "{model} int8: cosine {} < {INT8_MIN_COS}", 1.0 - d);
    }
}

fn check_logits(model: &str) {
    for dev in devices() {
        let e = logits(model, &dev, Precision::F16);
        assert!(e <= F16_LOGITS_ATOL, "{model} fp16: logits err {e} > {F16_LOGITS_ATOL}");
        let e = logits(model, &dev, Precision::Int8);
        assert!(e <= INT8_LOGITS_ATOL, "{model} int8: logits err {e} > {INT8_LOGITS_ATOL}");
    }
}

/// RoBERTa positions, head dim 16, CLS pooling + Normalize, prompts.
#[test]
fn device_roberta_cls_head_dim_16() {
    check_embeddings("tiny-roberta-cls");
}

/// DistilBERT names, no token types, mean pooling, max_seq_length 16 truncation.
#[test]
fn device_distilbert_mean() {
    check_embeddings("tiny-distilbert-mean");
}

/// gelu_new in the FFN1 epilogue, max pooling, head dim 48.
#[test]
fn device_bert_gelu_tanh_max_head_dim_48() {
    check_embeddings("tiny-bert-max-hd48");
}

/// RoBERTa classification head (dense + tanh + out_proj) on the device.
#[test]
fn device_roberta_classifier() {
    check_logits("tiny-roberta-classifier");
}

/// A cross-encoder's one logit on (query, text) pairs.
#[test]
fn device_bert_cross_encoder() {
    check_logits("tiny-bert-crossencoder");
}
