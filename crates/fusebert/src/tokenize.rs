//! Text -> token ids -> a packed batch.
//!
//! The `tokenizer.json` of a model is used for normalisation, WordPiece and the special tokens
//! (`[CLS]` ... `[SEP]`), with the file's own padding and truncation turned off: shipped files often
//! pad and truncate to 128, and a user's input must never be silently cut. Batching is ours:
//! sequences are packed end to end (no padding), with `cu_seqlens` offsets.
use std::path::{Path, PathBuf};

pub use fusebert_core::batch::{Batch, PackedBatch};

use crate::error::{Error, Result};

/// A BERT-family tokenizer with our batching and length policy.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Longest allowed sequence, special tokens included.
    max_len: usize,
    /// Added to every position id (RoBERTa: `pad_token_id + 1`).
    position_offset: u32,
    /// Force every token type to 0 (models with one token type or none: RoBERTa, DistilBERT,
    /// whose tokenizers may still number a pair's second segment 1).
    single_type: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({}, max_len {})", self.path.display(), self.max_len)
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`; sequences longer than `max_len` tokens are rejected (or cut).
    pub fn from_file(path: &Path, max_len: usize) -> Result<Tokenizer> {
        if !path.is_file() {
            return Err(Error::FileMissing { path: path.to_path_buf() });
        }
        let err = |msg: String| Error::Tokenizer { path: path.to_path_buf(), msg };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| err(e.to_string()))?;
        if max_len < 2 {
            return Err(err(format!("max_len must leave room for [CLS] and [SEP], got {max_len}")));
        }
        Ok(Tokenizer { inner, path: path.to_path_buf(), max_len, position_offset: 0, single_type: false })
    }

    /// `dir/tokenizer.json`, limited to `max_position_embeddings` tokens.
    pub fn from_model_dir(dir: &Path, max_position_embeddings: usize) -> Result<Tokenizer> {
        if !dir.is_dir() {
            return Err(Error::ModelDirMissing(dir.to_path_buf()));
        }
        Self::from_file(&dir.join("tokenizer.json"), max_position_embeddings)
    }

    /// The tokenizer of a loaded model: `model.dir/tokenizer.json`, limited to the model's
    /// input limit ([`BertModel::max_input_tokens`](crate::model::BertModel::max_input_tokens):
    /// the folder's `max_seq_length`, else the position table), with the model's position
    /// offset and token-type rule.
    pub fn for_model(model: &crate::model::BertModel) -> Result<Tokenizer> {
        let mut t = Self::from_model_dir(&model.dir, model.max_input_tokens())?;
        t.position_offset = model.config.position_offset as u32;
        t.single_type = !model.config.has_token_types
            || model.config.type_vocab_size == 1
            || !feeds_token_types(&model.dir.join("tokenizer_config.json"))?;
        Ok(t)
    }

    /// The same tokenizer with another length limit (`--max-length`); the caller checks it
    /// against the model's position table.
    pub fn with_max_len(mut self, max_len: usize) -> Result<Tokenizer> {
        if max_len < 2 {
            return Err(Error::Input(format!("max length must leave room for two special tokens, got {max_len}")));
        }
        self.max_len = max_len;
        Ok(self)
    }

    /// The longest sequence this tokenizer lets through.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The wrapped `tokenizers` tokenizer (padding and truncation off).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Tokenises `texts` with special tokens. A sequence longer than `max_len` is an
    /// [`Error::InputTooLong`] naming its index, unless `truncate`: then it is cut to `max_len`
    /// tokens, keeping its final `[SEP]`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S], truncate: bool) -> Result<Batch> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
        self.finish(encodings, truncate)
    }

    /// How many leading tokens `prompt` takes in front of a text, the opening special token
    /// included: its own encoding minus the closing special token (sentence-transformers'
    /// `prompt_length`, used to mask the prompt out of pooling).
    pub fn prompt_tokens(&self, prompt: &str) -> Result<usize> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
        Ok(enc.get_ids().len().saturating_sub(1))
    }

    /// Tokenises text pairs (`[CLS] a [SEP] b [SEP]`, or the model's own pair template) with
    /// token types 0/1 where the model has token types. Too long a pair is an
    /// [`Error::InputTooLong`] unless `truncate`: then the longer of the two texts loses tokens
    /// first (`longest_first`, as transformers' and sentence-transformers' cross-encoders).
    pub fn encode_pairs<A: AsRef<str>, B: AsRef<str>>(&self, pairs: &[(A, B)], truncate: bool) -> Result<Batch> {
        let err = |e: tokenizers::Error| Error::Tokenizer { path: self.path.clone(), msg: e.to_string() };
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|(a, b)| (a.as_ref().to_string(), b.as_ref().to_string()).into()).collect();
        let encodings = if truncate {
            let mut t = self.inner.clone();
            let params = tokenizers::TruncationParams {
                max_length: self.max_len,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                ..Default::default()
            };
            t.with_truncation(Some(params)).map_err(err)?;
            t.encode_batch(inputs, true).map_err(err)?
        } else {
            self.inner.encode_batch(inputs, true).map_err(err)?
        };
        self.finish(encodings, false)
    }

    /// Token ids and types of each encoding, length-checked (cut when `truncate`), as a batch
    /// with the model's position offset.
    fn finish(&self, encodings: Vec<tokenizers::Encoding>, truncate: bool) -> Result<Batch> {
        let mut ids = Vec::with_capacity(encodings.len());
        let mut types = Vec::with_capacity(encodings.len());
        for (index, enc) in encodings.iter().enumerate() {
            let (mut i, mut t) = (enc.get_ids().to_vec(), enc.get_type_ids().to_vec());
            if i.len() > self.max_len {
                if !truncate {
                    return Err(Error::InputTooLong { index, tokens: i.len(), limit: self.max_len });
                }
                cut_keeping_last(&mut i, self.max_len);
                cut_keeping_last(&mut t, self.max_len);
            }
            if self.single_type {
                t.iter_mut().for_each(|t| *t = 0);
            }
            ids.push(i);
            types.push(t);
        }
        Ok(Batch::new(ids, types)?.with_position_offset(self.position_offset))
    }
}

/// Whether transformers feeds this tokenizer's token types to the model, per
/// `tokenizer_config.json`: `model_input_names` when it is given; else not for the generic
/// `TokenizersBackend` class (transformers 5: its inputs are `input_ids` and `attention_mask`
/// only, so a pair's second segment reaches the model as type 0, which the golden outputs of
/// the tiny cross-encoder fixture confirm); else yes (model-specific classes such as
/// `BertTokenizer` return `token_type_ids`). No file: yes.
fn feeds_token_types(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Tokenizer { path: path.to_path_buf(), msg: e.to_string() })?;
    if let Some(names) = v.get("model_input_names").and_then(|n| n.as_array()) {
        return Ok(names.iter().any(|n| n == "token_type_ids"));
    }
    Ok(v.get("tokenizer_class").and_then(|c| c.as_str()) != Some("TokenizersBackend"))
}

/// Shortens `v` to `len` items, keeping its last item (the closing `[SEP]`) at the end.
fn cut_keeping_last(v: &mut Vec<u32>, len: usize) {
    let last = *v.last().expect("cut of an empty sequence");
    v.truncate(len - 1);
    v.push(last);
}
