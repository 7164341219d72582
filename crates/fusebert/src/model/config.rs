//! `config.json` of a Hugging Face BERT-family model, parsed and validated.
//!
//! BERT, RoBERTa / XLM-RoBERTa / CamemBERT, DistilBERT and ELECTRA share one encoder (post-LN,
//! absolute positions); they differ in their embeddings ([`Architecture`]: position offset, token
//! types, an embedding projection), their weight names and their config keys (DistilBERT's
//! `dim`, `n_layers`, ...), all normalised here into one [`BertConfig`].
//!
//! The five core sizes (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
//! `intermediate_size`, `vocab_size`) are required: a config without them is not one we can
//! trust to describe the weights. Every other field falls back to the Hugging Face default of
//! the model type. Every problem is an [`Error::Config`] naming the file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub use crate::numerics::activation::HiddenAct;
use crate::numerics::activation::HIDDEN_ACT_NAMES;

/// The model family (`model_type`): decides the weight names and the embedding layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `bert` (also the default when `model_type` is absent).
    Bert,
    /// `roberta`, `xlm-roberta`, `camembert`: positions offset by `pad_token_id + 1`.
    Roberta,
    /// `distilbert`: no token types, its own weight names.
    DistilBert,
    /// `electra`: embeddings of `embedding_size`, projected to `hidden_size`.
    Electra,
}

/// The `model_type` values we load.
pub const MODEL_TYPES: &str = "bert, roberta, xlm-roberta, camembert, distilbert, electra";

impl Architecture {
    /// Parses `model_type`; `None` for families we do not implement.
    pub fn parse(model_type: &str) -> Option<Architecture> {
        Some(match model_type {
            "bert" => Architecture::Bert,
            "roberta" | "xlm-roberta" | "camembert" => Architecture::Roberta,
            "distilbert" => Architecture::DistilBert,
            "electra" => Architecture::Electra,
            _ => return None,
        })
    }

    /// Weight-name prefix of the encoder in task-model files (`bert.`, `roberta.`, ...); base
    /// model files have none.
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "bert.",
            Architecture::Roberta => "roberta.",
            Architecture::DistilBert => "distilbert.",
            Architecture::Electra => "electra.",
        }
    }
}

/// A validated BERT-family configuration.
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
    /// The model family.
    pub architecture: Architecture,
    /// Position id of a sequence's first token: 0 for BERT, `pad_token_id + 1` for RoBERTa
    /// (token `i` of a sequence uses position row `position_offset + i`).
    pub position_offset: usize,
    /// Whether the model adds token-type (segment) embeddings. False for DistilBERT, whose
    /// weights then carry a single all-zero token-type row, so that every forward pass can add
    /// `token_type[0]` unconditionally and get the same numbers.
    pub has_token_types: bool,
    /// Width of the embedding tables: `hidden_size`, except ELECTRA's `embedding_size`, which a
    /// projection (`embeddings_project`) maps to `hidden_size` after the embedding LayerNorm.
    pub embedding_size: usize,
}

impl BertConfig {
    /// Size of one attention head: `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Longest input in tokens the position table allows: `max_position_embeddings -
    /// position_offset` (512 for BERT and RoBERTa alike).
    pub fn max_input_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset
    }

    /// A plain BERT configuration with these sizes and every other field at its default (for
    /// building models in code, e.g. tests).
    pub fn bert(hidden: usize, layers: usize, heads: usize, intermediate: usize, vocab: usize) -> BertConfig {
        BertConfig {
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            vocab_size: vocab,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: HiddenAct::Gelu,
            pad_token_id: 0,
            id2label: BTreeMap::new(),
            label2id: BTreeMap::new(),
            architecture: Architecture::Bert,
            position_offset: 0,
            has_token_types: true,
            embedding_size: hidden,
        }
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

/// `config.json` as written; `Option` where Hugging Face has a default. DistilBERT's names
/// (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`) are read as their BERT twins.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(alias = "dim")]
    hidden_size: Option<usize>,
    #[serde(alias = "n_layers")]
    num_hidden_layers: Option<usize>,
    #[serde(alias = "n_heads")]
    num_attention_heads: Option<usize>,
    #[serde(alias = "hidden_dim")]
    intermediate_size: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    #[serde(alias = "activation")]
    hidden_act: Option<String>,
    pad_token_id: Option<u32>,
    model_type: Option<String>,
    position_embedding_type: Option<String>,
    sinusoidal_pos_embds: Option<bool>,
    embedding_size: Option<usize>,
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
        let architecture = match &self.model_type {
            None => Architecture::Bert,
            Some(t) => Architecture::parse(t)
                .ok_or_else(|| err(format!("model_type `{t}` is not supported (supported: {MODEL_TYPES})")))?,
        };
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(err(format!("position_embedding_type `{p}` is not supported (only `absolute`)")));
            }
        }
        if self.sinusoidal_pos_embds == Some(true) {
            return Err(err("sinusoidal_pos_embds = true is not supported (only learned positions)".into()));
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
        // RoBERTa's padding id is 1 (its position rows 0 and 1 are never used by real tokens).
        let roberta = architecture == Architecture::Roberta;
        let pad_token_id = self.pad_token_id.unwrap_or(if roberta { 1 } else { 0 });
        let position_offset = if roberta { pad_token_id as usize + 1 } else { 0 };
        let max_position_embeddings = positive(self.max_position_embeddings, "max_position_embeddings", 512)?;
        // Every input holds at least its two special tokens ([CLS] [SEP], <s> </s>).
        if max_position_embeddings < position_offset + 2 {
            return Err(err(format!(
                "max_position_embeddings must be >= {}, got {max_position_embeddings}",
                position_offset + 2
            )));
        }
        let has_token_types = architecture != Architecture::DistilBert;
        let type_vocab_size = if has_token_types { positive(self.type_vocab_size, "type_vocab_size", 2)? } else { 1 };
        let embedding_size = match architecture {
            Architecture::Electra => positive(self.embedding_size, "embedding_size", hidden_size)?,
            _ => hidden_size,
        };
        let eps = self.layer_norm_eps.unwrap_or(1e-12);
        if !(eps.is_finite() && eps > 0.0) {
            return Err(err(format!("layer_norm_eps must be a positive finite number, got {eps}")));
        }
        let act_name = self.hidden_act.unwrap_or_else(|| "gelu".to_string());
        let hidden_act = HiddenAct::parse(&act_name)
            .ok_or_else(|| err(format!("unknown hidden_act `{act_name}` (supported: {HIDDEN_ACT_NAMES})")))?;
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
            pad_token_id,
            id2label,
            label2id: self.label2id.unwrap_or_default(),
            architecture,
            position_offset,
            has_token_types,
            embedding_size,
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
            (r#""model_type":"gpt2""#, "model_type `gpt2` is not supported"),
            (r#""model_type":"distilbert","sinusoidal_pos_embds":true"#, "sinusoidal"),
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
    fn families() {
        let c = parse(&format!(r#"{{{MIN},"model_type":"xlm-roberta","max_position_embeddings":514}}"#)).unwrap();
        assert_eq!((c.architecture, c.pad_token_id, c.position_offset), (Architecture::Roberta, 1, 2));
        assert_eq!(c.max_input_tokens(), 512);
        let c = parse(&format!(r#"{{{MIN},"model_type":"roberta","pad_token_id":0}}"#)).unwrap();
        assert_eq!(c.position_offset, 1);
        let d = parse(
            r#"{"model_type":"distilbert","dim":8,"n_layers":3,"n_heads":2,"hidden_dim":32,"vocab_size":10,"activation":"relu"}"#,
        )
        .unwrap();
        assert_eq!((d.hidden_size, d.num_hidden_layers, d.num_attention_heads, d.intermediate_size), (8, 3, 2, 32));
        assert_eq!((d.hidden_act, d.has_token_types, d.type_vocab_size), (HiddenAct::Relu, false, 1));
        let e = parse(&format!(r#"{{{MIN},"model_type":"electra","embedding_size":4}}"#)).unwrap();
        assert_eq!((e.architecture, e.embedding_size, e.hidden_size), (Architecture::Electra, 4, 8));
        let b = parse(&format!("{{{MIN}}}")).unwrap();
        assert_eq!(b, BertConfig::bert(8, 1, 2, 16, 10));
    }

    #[test]
    fn tanh_gelu_aliases() {
        for a in ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"] {
            assert_eq!(HiddenAct::parse(a), Some(HiddenAct::GeluTanh));
        }
    }
}
