//! The one place where the server meets the model: what an input becomes (tokens), how long it
//! may be, which routes the model can serve, and what a device batch returns.
//!
//! Everything model-specific the server does goes through [`Encoder`] (tokenisation and limits,
//! shared by the request handlers, `Sync`) and [`Engine`] (the forward pass, owned by the batcher
//! thread). Pooling, normalisation, prompts and pair handling can change here without touching
//! the HTTP layer.
use std::time::Instant;

use fusebert::model::forward::OutputSelection as Wanted;
use fusebert::model::reference::SequenceOutput;
use fusebert::model::{BertModel, Precision};
use fusebert::tokenize::{Batch, Tokenizer};
use fusebert::{Error, Pipeline, Result};

pub use fusebert::Backend;

/// One tokenised input, ready for a device batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One input as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Text(String),
    /// Two segments (cross-encoders: query and passage).
    Pair(String, String),
    /// Token ids (OpenAI's `input: [int]`); `[CLS]` / `[SEP]` are added unless already there.
    Ids(Vec<u32>),
}

/// Which end of an over-long input truncation cuts (TEI's `truncation_direction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    /// Keep the start, cut the end (the default).
    #[default]
    Right,
    /// Keep the end, cut the start.
    Left,
}

impl Direction {
    /// TEI's spellings: `right`/`Right`, `left`/`Left`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "right" | "Right" => Some(Direction::Right),
            "left" | "Left" => Some(Direction::Left),
            _ => None,
        }
    }
}

/// Why an input cannot be encoded: the server turns it into a 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// Longer than [`Encoder::max_input_length`] and truncation is off.
    TooLong { tokens: usize, limit: usize },
    /// Anything else wrong with the input (message for the client).
    Invalid(String),
}

/// What the model is, for `/info` and for deciding which routes it can serve.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The folder name (or `--served-model-name`).
    pub model_id: String,
    /// The encoder's width (rows of `/embed_all`).
    pub hidden_size: usize,
    /// The sentence embedding's width (after the folder's Dense modules, if any).
    pub embedding_size: usize,
    /// The folder's pooling mode (`1_Pooling/config.json`, else mean).
    pub pooling: &'static str,
    /// Classifier labels; `None` for a plain encoder.
    pub labels: Option<Vec<String>>,
    /// Sentence-transformers prompts (`config_sentence_transformers.json`), name -> prefix.
    pub prompts: Vec<(String, String)>,
    /// `"float32"` on the CPU reference, `"float16"` / `"int8"` on a device.
    pub dtype: &'static str,
}

/// Tokenisation and length policy; shared by every request handler. Texts and pairs are
/// tokenised by the model's [`Tokenizer`], the one every fusebert front end uses (special
/// tokens, token types, truncation), so the server's numbers are the library's and the CLI's.
pub struct Encoder {
    /// The model's tokenizer, limited to `max_input_length`.
    tokenizer: Tokenizer,
    max_input_length: usize,
    vocab_size: usize,
    /// The first and last special tokens the tokenizer's template adds to a single sequence
    /// (`[CLS]`/`[SEP]`, RoBERTa's `<s>`/`</s>`); `None` when it adds none.
    wrap: Option<(u32, u32)>,
    /// The model's tokenizer truncating pairs from the left (`longest_first`), built once.
    left_pairs: tokenizers::Tokenizer,
    /// Whether the library zeroes token types (models that are not fed them).
    zero_types: bool,
    info: ModelInfo,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({:?}, max_input_length {})", self.tokenizer, self.max_input_length)
    }
}

impl Encoder {
    /// The encoder of `model`; inputs are limited to sentence-transformers' `max_seq_length` when
    /// the folder has one (256 for all-MiniLM-L6-v2, as TEI), else `max_position_embeddings`,
    /// and never more than `cap` tokens (the batch token budget).
    pub fn new(model: &BertModel, backend: Backend, precision: Precision, cap: usize) -> Result<Encoder> {
        // The folder's max_seq_length, else the position table (model::sentence parses both).
        let max_input_length = model.max_input_tokens().min(cap);
        let tokenizer = Tokenizer::for_model(model)?.with_max_len(max_input_length)?;
        let wrap = template_specials(&tokenizer, &model.dir)?;
        let sentence = model.sentence_config();
        let model_id = model.dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let info = ModelInfo {
            model_id,
            hidden_size: model.config.hidden_size,
            embedding_size: sentence.dense.last().map_or(model.config.hidden_size, |d| d.linear.out_features()),
            pooling: sentence.pooling.name(),
            labels: model.weights.classifier.as_ref().map(|c| c.labels.clone()),
            prompts: sentence.prompts.into_iter().collect(),
            dtype: match (backend, precision) {
                (Backend::Cpu, _) => "float32",
                (_, Precision::F16) => "float16",
                (_, Precision::Int8) => "int8",
            },
        };
        let vocab_size = model.config.vocab_size;
        let tok_err =
            |e: tokenizers::Error| Error::Tokenizer { path: model.dir.join("tokenizer.json"), msg: e.to_string() };
        let mut left_pairs = tokenizer.inner().clone();
        left_pairs
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_input_length,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                direction: tokenizers::TruncationDirection::Left,
                ..Default::default()
            }))
            .map_err(tok_err)?;
        // Whether the library feeds a pair's second segment as type 1 (probed at the model's own
        // length limit: this encoder's may be shorter than a pair).
        let probe = Tokenizer::for_model(model)?.encode_pairs(&[("a", "b")], true)?;
        let zero_types = probe.token_type_ids[0].iter().all(|&t| t == 0);
        Ok(Encoder { tokenizer, max_input_length, vocab_size, wrap, left_pairs, zero_types, info })
    }

    /// Longest input in tokens, `[CLS]` and `[SEP]` included.
    pub fn max_input_length(&self) -> usize {
        self.max_input_length
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    /// The prefix of prompt `name`, or an error naming the prompts the model has.
    pub fn prompt(&self, name: &str) -> std::result::Result<&str, EncodeError> {
        self.info.prompts.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_str()).ok_or_else(|| {
            let known: Vec<&str> = self.info.prompts.iter().map(|(n, _)| n.as_str()).collect();
            EncodeError::Invalid(format!("unknown prompt_name `{name}`: the model's prompts are {known:?}"))
        })
    }

    /// Tokenises one input with special tokens; past the length limit it is cut when `truncate`
    /// (keeping its start, or its end with [`Direction::Left`]), else an [`EncodeError::TooLong`].
    pub fn encode(&self, input: &Input, truncate: bool) -> std::result::Result<Tokens, EncodeError> {
        self.encode_from(input, truncate, Direction::Right)
    }

    /// [`Encoder::encode`] with a truncation direction.
    pub fn encode_from(
        &self,
        input: &Input,
        truncate: bool,
        direction: Direction,
    ) -> std::result::Result<Tokens, EncodeError> {
        let left = truncate && direction == Direction::Left;
        let tokens = match input {
            Input::Ids(ids) => self.wrap_ids(ids)?,
            Input::Text(t) if left => self.text_cut_left(t)?,
            Input::Pair(a, b) if left => self.pair_cut_left(a, b)?,
            Input::Text(t) => tokens_of(self.tokenizer.encode_batch(&[t], truncate))?,
            Input::Pair(a, b) => tokens_of(self.tokenizer.encode_pairs(&[(a, b)], truncate))?,
        };
        // Text is cut by the tokenizer when `truncate`; token ids are never cut.
        if tokens.len() > self.max_input_length {
            return Err(EncodeError::TooLong { tokens: tokens.len(), limit: self.max_input_length });
        }
        Ok(tokens)
    }

    /// A text whose start is cut when too long: the template's opening token, the last tokens
    /// of the text that fit, the closing token (what the tokenizer's left truncation gives).
    fn text_cut_left(&self, text: &str) -> std::result::Result<Tokens, EncodeError> {
        let enc = self.tokenizer.inner().encode(text, true).map_err(|e| EncodeError::Invalid(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        let max = self.max_input_length;
        if ids.len() > max {
            ids = match self.wrap {
                // Room for the opening and closing tokens (a limit below 2 keeps the last tokens).
                Some((first, last)) if max >= 2 => {
                    let body = &ids[1..ids.len() - 1];
                    let keep = &body[body.len() - (max - 2)..];
                    std::iter::once(first).chain(keep.iter().copied()).chain([last]).collect()
                }
                _ => ids[ids.len() - max..].to_vec(),
            };
        }
        let n = ids.len();
        Ok(Tokens { ids, type_ids: vec![0; n] })
    }

    /// A pair cut from the left (`longest_first`: the longer text loses its first tokens).
    fn pair_cut_left(&self, a: &str, b: &str) -> std::result::Result<Tokens, EncodeError> {
        let enc = self
            .left_pairs
            .encode((a.to_string(), b.to_string()), true)
            .map_err(|e| EncodeError::Invalid(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        let type_ids = if self.zero_types { vec![0; ids.len()] } else { enc.get_type_ids().to_vec() };
        Ok(Tokens { ids, type_ids })
    }

    /// The text of token ids (`/decode`), special tokens skipped when asked.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> std::result::Result<String, EncodeError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EncodeError::Invalid(format!("token id {bad} is not below vocab_size {}", self.vocab_size)));
        }
        self.tokenizer.inner().decode(ids, skip_special).map_err(|e| EncodeError::Invalid(e.to_string()))
    }

    /// The token pieces of `text` for `/tokenize`: (id, piece, special, byte offsets).
    pub fn pieces(&self, text: &str, add_special: bool) -> std::result::Result<Vec<Piece>, EncodeError> {
        let enc = self.tokenizer.inner().encode(text, add_special).map_err(|e| EncodeError::Invalid(e.to_string()))?;
        let pieces = (0..enc.len())
            .map(|i| {
                let special = enc.get_special_tokens_mask()[i] == 1;
                let (start, stop) = enc.get_offsets()[i];
                Piece {
                    id: enc.get_ids()[i],
                    text: enc.get_tokens()[i].clone(),
                    special,
                    start: (!special).then_some(start),
                    stop: (!special).then_some(stop),
                }
            })
            .collect();
        Ok(pieces)
    }

    /// Token ids as given, checked against the vocabulary, wrapped in the template's first and
    /// last special tokens (`[CLS] ... [SEP]`, `<s> ... </s>`) unless they already are (the
    /// encoder was trained with both; nothing is decoded and re-tokenised).
    fn wrap_ids(&self, ids: &[u32]) -> std::result::Result<Tokens, EncodeError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EncodeError::Invalid(format!("token id {bad} is not below vocab_size {}", self.vocab_size)));
        }
        let mut v = Vec::with_capacity(ids.len() + 2);
        let Some((first, last)) = self.wrap else {
            let n = ids.len();
            return Ok(Tokens { ids: ids.to_vec(), type_ids: vec![0; n] });
        };
        if ids.first() != Some(&first) {
            v.push(first);
        }
        v.extend_from_slice(ids);
        if ids.last() != Some(&last) || ids.len() < 2 {
            v.push(last);
        }
        let n = v.len();
        Ok(Tokens { ids: v, type_ids: vec![0; n] })
    }
}

/// The one sequence of a tokenised batch, or why there is none.
fn tokens_of(batch: Result<Batch>) -> std::result::Result<Tokens, EncodeError> {
    match batch {
        Ok(mut b) => Ok(Tokens { ids: b.input_ids.swap_remove(0), type_ids: b.token_type_ids.swap_remove(0) }),
        Err(Error::InputTooLong { tokens, limit, .. }) => Err(EncodeError::TooLong { tokens, limit }),
        Err(e) => Err(EncodeError::Invalid(e.to_string())),
    }
}

/// The special tokens the tokenizer's post-processor puts around one sequence: what it adds to
/// an empty text. A template that adds something other than one token on each side is a typed
/// error naming the file.
fn template_specials(tokenizer: &Tokenizer, dir: &std::path::Path) -> Result<Option<(u32, u32)>> {
    let err = |msg: String| Error::Tokenizer { path: dir.join("tokenizer.json"), msg };
    let empty = tokenizer.inner().encode("", true).map_err(|e| err(e.to_string()))?;
    match empty.get_ids() {
        [] => Ok(None),
        &[first, last] => Ok(Some((first, last))),
        other => Err(err(format!(
            "the post-processor adds {} special tokens to one sequence; token-id inputs need one before and one after",
            other.len()
        ))),
    }
}

/// One token of `/tokenize` (TEI's shape: byte offsets, `null` for special tokens).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Piece {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// The per-input outputs of a device batch.
pub struct BatchOutputs {
    pub sequences: Vec<SequenceOutput>,
    /// Wall time of the forward pass.
    pub device_seconds: f64,
}

/// The forward pass; owned by the batcher thread (a device is used from one thread). It is the
/// library's [`Pipeline`]: pooling as the folder's sentence-transformers modules say (pooling
/// mode, Dense), normalisation left to each request.
pub struct Engine {
    pipeline: Pipeline,
    /// Position offset of the model (RoBERTa: `pad_token_id + 1`), added to every batch.
    position_offset: u32,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({:?})", self.pipeline)
    }
}

impl Engine {
    /// Opens the backend and uploads the model (int8 is calibrated, as everywhere).
    pub fn new(model: BertModel, backend: Backend, precision: Precision) -> Result<Engine> {
        let position_offset = model.config.position_offset as u32;
        Ok(Engine { pipeline: Pipeline::from_model(model, backend, precision)?, position_offset })
    }

    /// Runs one packed batch. `pooled` of each sequence holds the pipeline's (un-normalised)
    /// sentence embedding: normalisation is per request (`normalize`), on the host, so it is the
    /// same whatever the batch. The device reads back only what `wanted` asks for (what the
    /// batch's requests need); the CPU reference computes everything.
    pub fn run(&mut self, inputs: &[&Tokens], wanted: Wanted) -> Result<BatchOutputs> {
        let ids = inputs.iter().map(|t| t.ids.clone()).collect();
        let types = inputs.iter().map(|t| t.type_ids.clone()).collect();
        let batch = Batch::new(ids, types)?.with_position_offset(self.position_offset);
        let start = Instant::now();
        let out = self.pipeline.forward(&batch, wanted)?;
        Ok(BatchOutputs { sequences: out.sequences, device_seconds: start.elapsed().as_secs_f64() })
    }
}
