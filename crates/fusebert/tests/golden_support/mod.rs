//! Shared by the integration tests: the bundled model and the golden outputs of
//! `tests/golden/all-MiniLM-L6-v2` (a copy of the shared golden files, made by PyTorch + transformers, see its README).
#![allow(dead_code)] // shared by several test binaries; each uses a subset
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// The model folder: `FUSEBERT_MODEL`, else the bundled all-MiniLM-L6-v2.
pub fn model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FUSEBERT_MODEL") {
        return PathBuf::from(p);
    }
    fusebert::model::bundled_model_dir().expect("bundled model not installed: run `bash scripts/setup.sh`")
}

/// The golden folder: `FUSEBERT_GOLDEN`, else the copy kept in the repository
/// (`tests/golden/`, byte-identical to the team's shared golden files, never regenerated).
pub fn golden_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FUSEBERT_GOLDEN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden/all-MiniLM-L6-v2")
}

/// One golden case: `B` texts padded to `L` tokens, hidden size `H`.
pub struct Golden {
    pub texts: Vec<String>,
    pub batch: usize,
    pub padded_len: usize,
    /// `[B][L]`, right-padded with 0.
    pub input_ids: Vec<Vec<i64>>,
    pub attention_mask: Vec<Vec<i64>>,
    pub token_type_ids: Vec<Vec<i64>>,
    /// `[B * L * H]`.
    pub last_hidden_state: Vec<f32>,
    /// `[B * H]` each.
    pub pooled: Vec<f32>,
    pub pooler_output: Vec<f32>,
    pub sentence_embedding_l2norm: Vec<f32>,
    /// The same model run in float64 (the closest thing to the exact answer).
    pub last_hidden_state_f64: Vec<f64>,
    pub mean_pooled_f64: Vec<f64>,
}

impl Golden {
    pub fn load(case: &str) -> Golden {
        let path = golden_dir().join(format!("{case}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let texts_json = meta.metadata().as_ref().and_then(|m| m.get("texts")).expect("metadata key `texts`");
        let texts: Vec<String> = serde_json::from_str(texts_json).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let f32s = |name: &str| -> Vec<f32> {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::F32, "{name}");
            t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
        };
        let f64s = |name: &str| -> Vec<f64> {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::F64, "{name}");
            t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
        };
        let ids = st.tensor("input_ids").unwrap();
        let (b, l) = (ids.shape()[0], ids.shape()[1]);
        let i64s = |name: &str| -> Vec<Vec<i64>> {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::I64, "{name}");
            let flat: Vec<i64> = t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
            flat.chunks(l).map(<[i64]>::to_vec).collect()
        };
        assert_eq!(texts.len(), b);
        Golden {
            texts,
            batch: b,
            padded_len: l,
            input_ids: i64s("input_ids"),
            attention_mask: i64s("attention_mask"),
            token_type_ids: i64s("token_type_ids"),
            last_hidden_state: f32s("last_hidden_state"),
            pooled: f32s("mean_pooled"),
            pooler_output: f32s("pooler_output"),
            sentence_embedding_l2norm: f32s("sentence_embedding_l2norm"),
            last_hidden_state_f64: f64s("last_hidden_state_f64"),
            mean_pooled_f64: f64s("mean_pooled_f64"),
        }
    }

    /// Number of valid (unpadded) tokens of sequence `i`.
    pub fn valid_len(&self, i: usize) -> usize {
        self.attention_mask[i].iter().filter(|&&m| m == 1).count()
    }

    /// The valid token ids of sequence `i`.
    pub fn ids(&self, i: usize) -> Vec<u32> {
        self.input_ids[i][..self.valid_len(i)].iter().map(|&x| x as u32).collect()
    }
}

pub const CASES: [&str; 5] = ["fox", "hello", "paragraph", "empty", "batch3"];

/// Largest |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Largest |a - b| against a float64 reference.
pub fn max_abs_diff_f64(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}
