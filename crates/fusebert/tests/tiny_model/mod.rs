//! Builds small BERT model folders in temporary directories, for load and CLI tests: a valid
//! tiny model (hidden 8, 2 heads, 1 layer), which tests then break one thing at a time.
#![allow(dead_code)] // shared by several test binaries; each uses a subset
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "fusebert-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const HIDDEN: usize = 8;
pub const HEADS: usize = 2;
pub const FFN: usize = 16;
pub const MAX_POS: usize = 32;

/// What to put in a tiny model.
#[derive(Clone)]
pub struct Spec {
    pub vocab: usize,
    /// `"bert."` or `""`.
    pub prefix: &'static str,
    pub dtype: Dtype,
    pub pooler: bool,
    /// Number of classifier labels (no head when 0).
    pub labels: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { vocab: 64, prefix: "", dtype: Dtype::F32, pooler: true, labels: 0 }
    }
}

/// A named tensor, f32 values (converted to `dtype` when written).
pub struct T {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub dtype: Dtype,
}

/// Deterministic values `k / 64` with small `k`: exact in f32, f16 and bf16, so a model
/// stored in any of them loads to the same f32 weights.
fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 37 + seed * 11) % 61) as f32 - 29.0) / 64.0).collect()
}

impl Spec {
    pub fn config_json(&self) -> String {
        let mut labels = String::new();
        if self.labels > 0 {
            let l: Vec<String> = (0..self.labels).map(|i| format!("\"{i}\": \"class_{i}\"")).collect();
            labels = format!(", \"id2label\": {{{}}}", l.join(", "));
        }
        format!(
            r#"{{"model_type": "bert", "hidden_size": {HIDDEN}, "num_hidden_layers": 1, "num_attention_heads": {HEADS},
 "intermediate_size": {FFN}, "vocab_size": {}, "max_position_embeddings": {MAX_POS}, "type_vocab_size": 2,
 "layer_norm_eps": 1e-12, "hidden_act": "gelu"{labels}}}"#,
            self.vocab
        )
    }

    pub fn tensors(&self) -> Vec<T> {
        let (h, f) = (HIDDEN, FFN);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![self.vocab, h]),
            ("embeddings.position_embeddings.weight".into(), vec![MAX_POS, h]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        let l = "encoder.layer.0";
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", f, h),
            ("output.dense", h, f),
        ] {
            shapes.push((format!("{l}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{l}.{name}.bias"), vec![out]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{l}.{ln}.weight"), vec![h]));
            shapes.push((format!("{l}.{ln}.bias"), vec![h]));
        }
        if self.pooler {
            shapes.push(("pooler.dense.weight".into(), vec![h, h]));
            shapes.push(("pooler.dense.bias".into(), vec![h]));
        }
        let mut out: Vec<T> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product();
                T { name: format!("{}{name}", self.prefix), shape, data: values(i, n), dtype: self.dtype }
            })
            .collect();
        if self.labels > 0 {
            out.push(T {
                name: "classifier.weight".into(),
                shape: vec![self.labels, h],
                data: values(90, self.labels * h),
                dtype: self.dtype,
            });
            out.push(T {
                name: "classifier.bias".into(),
                shape: vec![self.labels],
                data: values(91, self.labels),
                dtype: self.dtype,
            });
        }
        out
    }

    /// Writes config.json and model.safetensors into a new temporary folder.
    pub fn write(&self) -> TempDir {
        let dir = TempDir::new("tiny");
        std::fs::write(dir.path().join("config.json"), self.config_json()).unwrap();
        write_safetensors(&dir.path().join("model.safetensors"), &self.tensors());
        dir
    }
}

/// Serialises tensors with the safetensors crate, converting f32 values to each tensor's dtype.
pub fn write_safetensors(path: &Path, tensors: &[T]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| encode(&t.data, t.dtype)).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), b).unwrap()))
        .collect();
    let data = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, data).unwrap();
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        Dtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
        Dtype::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        other => panic!("tiny model: no encoder for {other}"),
    }
}
