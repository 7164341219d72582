//! The one place where the server meets the model: what an input becomes (tokens), how long it
//! may be, which routes the model can serve, and what a device batch returns.
//!
//! Everything model-specific the server does goes through [`Encoder`] (tokenisation and limits,
//! shared by the request handlers, `Sync`) and [`Engine`] (the forward pass, owned by the batcher
//! thread). Pooling, normalisation, prompts and pair handling can change here without touching
//! the HTTP layer.
use std::time::Instant;

use crate::model::bert::{DeviceBert, DevicePooling, ForwardOptions, Outputs as Wanted};
use crate::model::reference::{self, Options, SequenceOutput};
use crate::model::{BertModel, Precision, SentenceConfig};
use crate::tokenize::{Batch, Tokenizer};
use crate::{Device, Error, Result};

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The f32 CPU reference.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// The PTX emulator.
    Emu,
}

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

/// Tokenisation and length policy; shared by every request handler.
pub struct Encoder {
    tokenizer: Tokenizer,
    /// The same tokenizer with longest-first truncation to `max_input_length`.
    truncating: tokenizers::Tokenizer,
    max_input_length: usize,
    vocab_size: usize,
    /// The first and last special tokens the tokenizer's template adds to a single sequence
    /// (`[CLS]`/`[SEP]`, RoBERTa's `<s>`/`</s>`); `None` when it adds none.
    wrap: Option<(u32, u32)>,
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
        let tokenizer = Tokenizer::for_model(model)?;
        // The folder's max_seq_length, else the position table (model::sentence parses both).
        let max_input_length = model.max_input_tokens().min(cap);
        let mut truncating = tokenizer.inner().clone();
        truncating
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_input_length,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer { path: model.dir.join("tokenizer.json"), msg: e.to_string() })?;
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
        Ok(Encoder { tokenizer, truncating, max_input_length, vocab_size, wrap, info })
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

    /// Tokenises one input with special tokens; past the length limit it is cut when `truncate`,
    /// else an [`EncodeError::TooLong`].
    pub fn encode(&self, input: &Input, truncate: bool) -> std::result::Result<Tokens, EncodeError> {
        let tokens = match input {
            Input::Ids(ids) => self.wrap_ids(ids)?,
            Input::Text(t) => self.encode_with(t.as_str().into(), truncate)?,
            Input::Pair(a, b) => self.encode_with((a.as_str(), b.as_str()).into(), truncate)?,
        };
        // Text is cut by the truncating tokenizer when `truncate`; token ids are never cut.
        if tokens.len() > self.max_input_length {
            return Err(EncodeError::TooLong { tokens: tokens.len(), limit: self.max_input_length });
        }
        Ok(tokens)
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

    fn encode_with(
        &self,
        input: tokenizers::EncodeInput<'_>,
        truncate: bool,
    ) -> std::result::Result<Tokens, EncodeError> {
        let tok = if truncate { &self.truncating } else { self.tokenizer.inner() };
        let enc = tok.encode(input, true).map_err(|e| EncodeError::Invalid(e.to_string()))?;
        Ok(Tokens { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
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
pub struct Outputs {
    pub sequences: Vec<SequenceOutput>,
    /// Wall time of the forward pass.
    pub device_seconds: f64,
}

/// The forward pass; owned by the batcher thread (a device is used from one thread). It pools
/// as the folder's sentence-transformers pipeline says (pooling mode, Dense modules), leaving
/// normalisation to each request.
pub struct Engine {
    backend: EngineBackend,
    /// The folder's pipeline with its Normalize module off (`normalize` is per request).
    pipeline: SentenceConfig,
    /// Position offset of the model (RoBERTa: `pad_token_id + 1`), added to every batch.
    position_offset: u32,
}

enum EngineBackend {
    Cpu(Box<BertModel>),
    Device(Box<DeviceBert>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            EngineBackend::Cpu(_) => write!(f, "Engine(cpu reference)"),
            EngineBackend::Device(b) => write!(f, "Engine({:?}, {:?})", b.device(), b.precision()),
        }
    }
}

impl Engine {
    /// Opens the backend and uploads the model (int8 is calibrated, as the CLI does).
    pub fn new(model: BertModel, backend: Backend, precision: Precision) -> Result<Engine> {
        let mut pipeline = model.sentence_config();
        pipeline.normalize = false;
        let position_offset = model.config.position_offset as u32;
        let dev = match backend {
            Backend::Cpu => {
                return Ok(Engine { backend: EngineBackend::Cpu(Box::new(model)), pipeline, position_offset })
            }
            Backend::Cuda => Device::cuda(0)?,
            Backend::Emu => Device::emulator()?,
        };
        let bert = if precision == Precision::Int8 {
            let tokenizer = Tokenizer::for_model(&model)?;
            let calibration = tokenizer.encode_batch(&crate::model::quant::CALIBRATION_TEXTS, true)?;
            DeviceBert::new_calibrated(&dev, &model, precision, &calibration)?
        } else {
            DeviceBert::new(&dev, &model, precision)?
        };
        Ok(Engine { backend: EngineBackend::Device(Box::new(bert)), pipeline, position_offset })
    }

    /// Runs one packed batch. `mean_pooled` of each sequence holds the pipeline's (un-normalised)
    /// sentence embedding: normalisation is per request (`normalize`), on the host, so it is the
    /// same whatever the batch. The device reads back only what `wanted` asks for (what the
    /// batch's requests need); the CPU reference computes everything.
    pub fn run(&mut self, inputs: &[&Tokens], wanted: Wanted) -> Result<Outputs> {
        let ids = inputs.iter().map(|t| t.ids.clone()).collect();
        let types = inputs.iter().map(|t| t.type_ids.clone()).collect();
        let batch = Batch::new(ids, types)?.with_position_offset(self.position_offset);
        let start = Instant::now();
        let mut out = match &mut self.backend {
            EngineBackend::Cpu(model) => reference::forward(model, &batch, &Options { normalize: false })?,
            EngineBackend::Device(bert) => {
                let pooling = DevicePooling { mode: self.pipeline.pooling, skip: 0 };
                let wanted = Wanted { hidden_states: false, ..wanted };
                bert.forward_pooled(&batch, ForwardOptions { normalize: false, outputs: wanted }, pooling)?.0
            }
        };
        let pooled: Vec<Vec<f32>> = match &self.backend {
            EngineBackend::Cpu(_) => self.pipeline.embed_all(&out, 0),
            EngineBackend::Device(_) if wanted.pooled => {
                out.sequences.iter().map(|s| self.pipeline.after_pooling(&s.mean_pooled)).collect()
            }
            EngineBackend::Device(_) => vec![Vec::new(); out.sequences.len()],
        };
        for (s, p) in out.sequences.iter_mut().zip(pooled) {
            s.mean_pooled = p;
        }
        Ok(Outputs { sequences: out.sequences, device_seconds: start.elapsed().as_secs_f64() })
    }
}
