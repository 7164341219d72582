//! Random-weight models of a named shape (`bert-base`, `bert-large`, `minilm-l6`) or any
//! config: what `bench` and `roofline` run when no model folder is at hand. The weights are
//! deterministic (a seeded SplitMix64) and scaled like a trained BERT's (uniform +-0.05 for
//! matrices, LayerNorm gamma ~1), so the kernels see realistic magnitudes; the outputs mean
//! nothing.
use std::path::PathBuf;

use super::config::BertConfig;
use super::weights::{BertWeights, EmbeddingWeights, EncoderLayerWeights, HostTensor, LayerNormWeights, Linear};
use super::BertModel;
use crate::error::{Error, Result};

/// The built-in shape names, for help texts and errors.
pub const SHAPE_NAMES: [&str; 3] = ["bert-base", "bert-large", "minilm-l6"];

/// The config of a named shape: `bert-base` (L12 H768 A12 F3072), `bert-large` (L24 H1024 A16
/// F4096), both with the uncased vocabulary (30522), and `minilm-l6` (all-MiniLM-L6-v2: L6
/// H384 A12 F1536).
pub fn shape_config(name: &str) -> Result<BertConfig> {
    let (layers, hidden, heads, ffn) = match name {
        "bert-base" => (12, 768, 12, 3072),
        "bert-large" => (24, 1024, 16, 4096),
        "minilm-l6" => (6, 384, 12, 1536),
        other => {
            return Err(Error::Input(format!(
                "unknown model shape `{other}`, expected one of {}",
                SHAPE_NAMES.join(", ")
            )))
        }
    };
    Ok(config(layers, hidden, heads, ffn, 30522, 512))
}

/// A BERT config with the Hugging Face defaults for everything but the sizes.
pub fn config(layers: usize, hidden: usize, heads: usize, ffn: usize, vocab: usize, max_pos: usize) -> BertConfig {
    let mut c = BertConfig::bert(hidden, layers, heads, ffn, vocab);
    c.max_position_embeddings = max_pos;
    c
}

/// SplitMix64: tiny, seeded, good enough for test weights (no `rand` in the library).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn tensor(&mut self, name: &str, shape: Vec<usize>, center: f32, spread: f32) -> HostTensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| center + spread * self.unit()).collect();
        HostTensor::new(name, shape, data)
    }
}

/// A model of `config` with random weights from `seed`, with a pooler (as BERT checkpoints
/// have) and no classifier.
pub fn random_model(config: &BertConfig, seed: u64) -> BertModel {
    let mut r = SplitMix(seed ^ 0x5EED_F00D);
    let (h, f) = (config.hidden_size, config.intermediate_size);
    let mut linear = |name: &str, out: usize, inp: usize| Linear {
        weight: r.tensor(&format!("{name}.weight"), vec![out, inp], 0.0, 0.05),
        bias: r.tensor(&format!("{name}.bias"), vec![out], 0.0, 0.02),
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        layers.push((
            linear(&format!("{p}.attention.self.query"), h, h),
            linear(&format!("{p}.attention.self.key"), h, h),
            linear(&format!("{p}.attention.self.value"), h, h),
            linear(&format!("{p}.attention.output.dense"), h, h),
            linear(&format!("{p}.intermediate.dense"), f, h),
            linear(&format!("{p}.output.dense"), h, f),
        ));
    }
    let pooler = linear("pooler.dense", h, h);
    let mut r = SplitMix(seed ^ 0x1A7E_4A0E);
    let mut ln = |name: &str| LayerNormWeights {
        gamma: r.tensor(&format!("{name}.weight"), vec![h], 1.0, 0.1),
        beta: r.tensor(&format!("{name}.bias"), vec![h], 0.0, 0.05),
    };
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(l, (query, key, value, attn_output, ffn1, ffn2))| EncoderLayerWeights {
            query,
            key,
            value,
            attn_output,
            attn_layer_norm: ln(&format!("encoder.layer.{l}.attention.output.LayerNorm")),
            ffn1,
            ffn2,
            ffn_layer_norm: ln(&format!("encoder.layer.{l}.output.LayerNorm")),
        })
        .collect();
    let emb_ln = ln("embeddings.LayerNorm");
    let mut r = SplitMix(seed ^ 0x000E_3BED);
    let embeddings = EmbeddingWeights {
        word: r.tensor("embeddings.word_embeddings.weight", vec![config.vocab_size, h], 0.0, 0.1),
        position: r.tensor("embeddings.position_embeddings.weight", vec![config.max_position_embeddings, h], 0.0, 0.05),
        token_type: r.tensor("embeddings.token_type_embeddings.weight", vec![config.type_vocab_size, h], 0.0, 0.05),
        layer_norm: emb_ln,
        projection: None,
    };
    BertModel {
        dir: PathBuf::from(format!("<random {} layers, hidden {h}, seed {seed}>", config.num_hidden_layers)),
        config: config.clone(),
        weights: BertWeights { embeddings, layers, pooler: Some(pooler), classifier: None },
        sentence: None,
    }
}

/// A batch of `batch` sequences of `tokens` ids: `[CLS]` (101) first, then ids cycling through
/// the vocabulary (what `bench` feeds; the ids do not change any launch or count).
pub fn id_batch(config: &BertConfig, batch: usize, tokens: usize, salt: u32) -> Result<crate::tokenize::Batch> {
    let vocab = config.vocab_size as u32;
    let ids = (0..batch)
        .map(|b| {
            (0..tokens)
                .map(|i| if i == 0 { 101 % vocab } else { (1000 + 7 * i as u32 + b as u32 + salt) % vocab })
                .collect()
        })
        .collect();
    crate::tokenize::Batch::from_ids(ids)
}

/// Calibration input for the int8 path of a model without a tokenizer: nine sequences of 8 to
/// 40 ids.
pub fn calibration_batch(config: &BertConfig) -> Result<crate::tokenize::Batch> {
    let vocab = config.vocab_size as u32;
    let ids = (0..9u32).map(|s| (0..8 + 4 * s).map(|i| (13 + 97 * i + 1009 * s) % vocab).collect()).collect();
    crate::tokenize::Batch::from_ids(ids)
}
