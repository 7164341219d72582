//! `config.json` of a Hugging Face BERT model, parsed and validated.
//!
//! The five core sizes (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
//! `intermediate_size`, `vocab_size`) are required: a config without them is not one we can
//! trust to describe the weights. Every other field falls back to the Hugging Face
//! `BertConfig` default. Every problem is an [`Error::Config`] naming the file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The activation of the feed-forward network (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`, `gelu_python`: exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`, `gelu_accurate`: the tanh approximation
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: `x sigmoid(x)`.
    Silu,
}

impl HiddenAct {
    /// Parses a `hidden_act` string; `None` for names we do not implement.
    pub fn parse(name: &str) -> Option<HiddenAct> {
        Some(match name {
            "gelu" | "gelu_python" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_accurate" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            "silu" | "swish" => HiddenAct::Silu,
            _ => return None,
        })
    }
}

/// A validated BERT configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Width of the hidden states (H).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the FFN (FFN1 output, FFN2 input).
    pub intermediate_size: usize,
    /// Rows of the word embedding table.
    pub vocab_size: usize,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included (default 512).
    pub max_position_embeddings: usize,
    /// Number of token types (default 2).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (default 1e-12).
    pub layer_norm_eps: f32,
    /// FFN activation (default `gelu`).
    pub hidden_act: HiddenAct,
    /// Padding token id (default 0).
    pub pad_token_id: u32,
    /// Class names by id, from `id2label` (empty when the file has none).
    pub id2label: BTreeMap<usize, String>,
    /// Class ids by name, from `label2id` (empty when the file has none).
    pub label2id: BTreeMap<String, usize>,
}

impl BertConfig {
    /// Size of one attention head: `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        if !path.is_file() {
            return Err(Error::FileMissing { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and validates config JSON; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<BertConfig> {
        let err = |msg: String| Error::Config { path: path.to_path_buf(), msg };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        raw.validate(path)
    }
}

/// `config.json` as written; `Option` where Hugging Face has a default.
#[derive(Deserialize)]
struct RawConfig {
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    pad_token_id: Option<u32>,
    model_type: Option<String>,
    position_embedding_type: Option<String>,
    id2label: Option<BTreeMap<String, String>>,
    label2id: Option<BTreeMap<String, usize>>,
}

impl RawConfig {
    fn validate(self, path: &Path) -> Result<BertConfig> {
        let err = |msg: String| Error::Config { path: PathBuf::from(path), msg };
        let required = |v: Option<usize>, name: &str| -> Result<usize> {
            match v {
                None => Err(err(format!("missing required field `{name}`"))),
                Some(0) => Err(err(format!("`{name}` must be > 0, got 0"))),
                Some(n) => Ok(n),
            }
        };
        let positive = |v: Option<usize>, name: &str, default: usize| -> Result<usize> {
            match v.unwrap_or(default) {
                0 => Err(err(format!("`{name}` must be > 0, got 0"))),
                n => Ok(n),
            }
        };
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return Err(err(format!("model_type `{t}` is not supported (only `bert`)")));
            }
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(err(format!("position_embedding_type `{p}` is not supported (only `absolute`)")));
            }
        }
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let num_hidden_layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        let num_attention_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let intermediate_size = required(self.intermediate_size, "intermediate_size")?;
        let vocab_size = required(self.vocab_size, "vocab_size")?;
        if hidden_size % num_attention_heads != 0 {
            return Err(err(format!(
                "hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )));
        }
        let max_position_embeddings = positive(self.max_position_embeddings, "max_position_embeddings", 512)?;
        // BERT inputs always hold [CLS] and [SEP].
        if max_position_embeddings < 2 {
            return Err(err(format!("max_position_embeddings must be >= 2, got {max_position_embeddings}")));
        }
        let type_vocab_size = positive(self.type_vocab_size, "type_vocab_size", 2)?;
        let eps = self.layer_norm_eps.unwrap_or(1e-12);
        if !(eps.is_finite() && eps > 0.0) {
            return Err(err(format!("layer_norm_eps must be a positive finite number, got {eps}")));
        }
        let act_name = self.hidden_act.unwrap_or_else(|| "gelu".to_string());
        let hidden_act = HiddenAct::parse(&act_name).ok_or_else(|| {
            err(format!(
                "unknown hidden_act `{act_name}` (supported: gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_fast, gelu_accurate, relu, silu, swish)"
            ))
        })?;
        let mut id2label = BTreeMap::new();
        for (k, v) in self.id2label.unwrap_or_default() {
            let id: usize = k.parse().map_err(|_| err(format!("id2label key `{k}` is not a class index")))?;
            id2label.insert(id, v);
        }
        Ok(BertConfig {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            vocab_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: eps as f32,
            hidden_act,
            pad_token_id: self.pad_token_id.unwrap_or(0),
            id2label,
            label2id: self.label2id.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BertConfig> {
        BertConfig::from_json(json, Path::new("config.json"))
    }

    const MIN: &str =
        r#""hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"vocab_size":10"#;

    #[test]
    fn defaults_follow_hugging_face() {
        let c = parse(&format!("{{{MIN}}}")).unwrap();
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.hidden_act, HiddenAct::Gelu);
        assert_eq!(c.head_dim(), 4);
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            (r#""hidden_act":"mish""#, "unknown hidden_act `mish`"),
            (r#""layer_norm_eps":-1"#, "layer_norm_eps"),
            (r#""max_position_embeddings":0"#, "max_position_embeddings"),
            (r#""model_type":"roberta""#, "roberta"),
            (r#""id2label":{"x":"A"}"#, "id2label"),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{{{MIN},{extra}}}")).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
        let e = parse(r#"{"hidden_size":10,"num_hidden_layers":1,"num_attention_heads":3,"intermediate_size":16,"vocab_size":10}"#)
            .unwrap_err();
        assert!(e.to_string().contains("not divisible"), "{e}");
        let e = parse(r#"{"hidden_size":8}"#).unwrap_err();
        assert!(e.to_string().contains("num_hidden_layers"), "{e}");
    }

    #[test]
    fn tanh_gelu_aliases() {
        for a in ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"] {
            assert_eq!(HiddenAct::parse(a), Some(HiddenAct::GeluTanh));
        }
    }
}
