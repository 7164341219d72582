//! One model folder, opened for one backend and precision, used the way sentence-transformers
//! uses it: the model's own tokenisation policy (special tokens, position offset, token types,
//! prompts, truncation), then embeddings, classifier scores or rerank scores.
//!
//! Every front end goes through this: the CLI's `embed`, `classify`, `rerank`, `verify` and
//! `bench`, and the server. Two callers with the same inputs therefore get the same numbers.
//!
//! ```no_run
//! use fusebert::{Backend, Pipeline, Precision};
//! let mut p = Pipeline::open("models/all-MiniLM-L6-v2", Backend::Emulator, Precision::F16)?;
//! let embeddings = p.embed(&["Hello!", "The quick brown fox."])?;
//! assert_eq!(embeddings.len(), 2);
//! # Ok::<(), fusebert::Error>(())
//! ```
use std::path::Path;

use crate::device::Device;
use crate::model::forward::{DeviceBert, DevicePooling, ForwardOptions, OutputSelection};
use crate::model::reference::{self, Options, Output};
use crate::model::{BertModel, ClassifierHead, Precision, SentenceConfig};
use crate::tokenize::{Batch, Tokenizer};
use crate::{Error, Result};

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The f32 CPU reference (no kernels; the oracle the others are verified against).
    Cpu,
    /// The kernels' exact PTX on the PTX emulator (no GPU needed; slow).
    Emulator,
    /// CUDA device `n`.
    Cuda(usize),
}

/// The forward pass behind a pipeline.
enum Engine {
    Cpu,
    Device(Box<DeviceBert>),
}

/// A model folder opened for inference.
pub struct Pipeline {
    model: BertModel,
    /// `None` for a model with no `tokenizer.json` (synthetic weights): batches of token ids
    /// still run; tokenising is an error naming the missing file.
    tokenizer: Option<Tokenizer>,
    /// The folder's sentence-transformers modules (pooling, Dense, Normalize, prompts).
    sentence: SentenceConfig,
    engine: Engine,
    backend: Backend,
    precision: Precision,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pipeline({}, {:?}, {:?})", self.model.dir.display(), self.backend, self.precision)
    }
}

/// A classifier's answer for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The raw logits, one per label.
    pub logits: Vec<f32>,
    /// Sigmoid of the one logit (one label), else the softmax over the labels.
    pub scores: Vec<f32>,
    /// The label with the highest score (the first of equal scores, as `torch.argmax`).
    pub best: usize,
}

impl Pipeline {
    /// Loads the folder (config.json, model.safetensors, tokenizer.json, sentence-transformers
    /// files) and sets the model up on `backend`. `precision` applies to the device backends
    /// (int8 is calibrated with SmoothQuant on built-in texts); the CPU reference is f32.
    pub fn open(dir: impl AsRef<Path>, backend: Backend, precision: Precision) -> Result<Pipeline> {
        Self::from_model(BertModel::load(dir.as_ref())?, backend, precision)
    }

    /// [`open`](Self::open) for a model already loaded.
    pub fn from_model(model: BertModel, backend: Backend, precision: Precision) -> Result<Pipeline> {
        let tokenizer = match model.dir.join("tokenizer.json").is_file() {
            true => Some(Tokenizer::for_model(&model)?),
            false => None,
        };
        let sentence = model.sentence_config();
        let engine = match backend {
            Backend::Cpu => Engine::Cpu,
            Backend::Emulator => Engine::Device(Box::new(device_model(&open_emulator()?, &model, precision)?)),
            Backend::Cuda(n) => Engine::Device(Box::new(device_model(&Device::cuda(n)?, &model, precision)?)),
        };
        Ok(Pipeline { model, tokenizer, sentence, engine, backend, precision })
    }

    /// [`from_model`](Self::from_model) on a device the caller opened (e.g. the emulator as an
    /// sm_90: `Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, .. })`); the pipeline
    /// reports `backend` (`Emulator` or `Cuda(n)`, whichever `dev` is).
    pub fn from_model_on(model: BertModel, dev: &Device, backend: Backend, precision: Precision) -> Result<Pipeline> {
        if backend == Backend::Cpu {
            return Err(Error::Input("Pipeline::from_model_on needs a device backend, not the cpu reference".into()));
        }
        let tokenizer = match model.dir.join("tokenizer.json").is_file() {
            true => Some(Tokenizer::for_model(&model)?),
            false => None,
        };
        let sentence = model.sentence_config();
        let engine = Engine::Device(Box::new(device_model(dev, &model, precision)?));
        Ok(Pipeline { model, tokenizer, sentence, engine, backend, precision })
    }

    /// Selects the device kernel family (the library form of `FUSEBERT_KERNELS`; see
    /// [`crate::kernels::select`]); the CPU reference has none and ignores it.
    pub fn set_kernel_family(&mut self, family: crate::kernels::KernelFamily) -> Result<()> {
        match &mut self.engine {
            Engine::Cpu => Ok(()),
            Engine::Device(bert) => bert.set_kernel_family(family),
        }
    }

    /// Caps inputs at `max_len` tokens (special tokens included); more than the model's position
    /// table allows is an error.
    pub fn set_max_length(&mut self, max_len: usize) -> Result<()> {
        let limit = self.model.config.max_input_tokens();
        if max_len > limit {
            return Err(Error::Input(format!(
                "a maximum length of {max_len} tokens is more than this model's position limit of {limit}"
            )));
        }
        self.tokenizer = Some(self.tokenizer()?.clone().with_max_len(max_len)?);
        Ok(())
    }

    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The model's tokenizer, or [`Error::FileMissing`] naming `tokenizer.json`.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::FileMissing { path: self.model.dir.join("tokenizer.json") })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The precision of the device forward pass (the CPU reference ignores it).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The sentence-transformers modules in use (the folder's, as changed by the caller).
    pub fn sentence_config(&self) -> &SentenceConfig {
        &self.sentence
    }

    /// Changes pooling, normalisation or prompts for this pipeline's later calls.
    pub fn sentence_config_mut(&mut self) -> &mut SentenceConfig {
        &mut self.sentence
    }

    /// The width of an embedding (after the folder's Dense modules).
    pub fn embedding_size(&self) -> usize {
        self.sentence.output_dim(self.model.config.hidden_size)
    }

    /// The device model, on the emulator and CUDA backends.
    pub fn device_model(&mut self) -> Option<&mut DeviceBert> {
        match &mut self.engine {
            Engine::Device(b) => Some(b),
            Engine::Cpu => None,
        }
    }

    /// The classifier head, or an error saying the model has none.
    pub fn classifier(&self) -> Result<&ClassifierHead> {
        self.model.weights.classifier.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "model {} has no classifier head (no classifier.weight / classifier.out_proj.weight)",
                self.model.dir.display()
            ))
        })
    }

    // ----- tokenisation: the model's policy, one place -----

    /// Token ids of `texts` with the model's special tokens, token types and position offset.
    /// Longer than the limit is [`Error::InputTooLong`] unless `truncate`.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S], truncate: bool) -> Result<Batch> {
        self.tokenizer()?.encode_batch(texts, truncate)
    }

    /// Text pairs (`[CLS] a [SEP] b [SEP]` or the model's pair template), longest-first
    /// truncation when `truncate`.
    pub fn tokenize_pairs<A: AsRef<str>, B: AsRef<str>>(&self, pairs: &[(A, B)], truncate: bool) -> Result<Batch> {
        self.tokenizer()?.encode_pairs(pairs, truncate)
    }

    /// `texts` with `prompt` in front, and how many leading tokens the prompt takes (masked out
    /// of pooling when the folder says `include_prompt: false`).
    pub fn tokenize_prompted<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: Option<&str>,
        truncate: bool,
    ) -> Result<(Batch, usize)> {
        match prompt {
            None => Ok((self.tokenize(texts, truncate)?, 0)),
            Some(p) => {
                let prompted: Vec<String> = texts.iter().map(|t| format!("{p}{}", t.as_ref())).collect();
                Ok((self.tokenize(&prompted, truncate)?, self.tokenizer()?.prompt_tokens(p)?))
            }
        }
    }

    // ----- forward passes over tokenised batches -----

    /// The sentence embedding of every sequence, as `SentenceTransformer.encode` gives it for
    /// this folder (pooling, Dense, Normalize). `prompt_tokens` from
    /// [`tokenize_prompted`](Self::tokenize_prompted).
    pub fn embed_batch(&mut self, batch: &Batch, prompt_tokens: usize) -> Result<Vec<Vec<f32>>> {
        match &mut self.engine {
            Engine::Cpu => {
                let out = reference::forward(&self.model, batch, &Options::default())?;
                Ok(self.sentence.embed_all(&out, prompt_tokens))
            }
            Engine::Device(bert) => bert.sentence_embeddings(batch, &self.sentence, prompt_tokens),
        }
    }

    /// The classifier's logits of every sequence (a device reads back only those).
    pub fn logits_batch(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        self.classifier()?;
        let out = match &mut self.engine {
            Engine::Cpu => reference::forward(&self.model, batch, &Options::default())?,
            Engine::Device(bert) => bert.forward(batch, ForwardOptions::classification())?.0,
        };
        out.sequences
            .into_iter()
            .map(|s| s.logits.ok_or_else(|| Error::Other("the forward pass returned no logits".into())))
            .collect()
    }

    /// One forward pass choosing its outputs (what a server batch serving several requests
    /// needs). `pooled` of each sequence holds the folder's embedding (pooling and Dense)
    /// **without** Normalize, so that normalisation can be chosen per request; the CPU
    /// reference computes every output.
    pub fn forward(&mut self, batch: &Batch, outputs: OutputSelection) -> Result<Output> {
        let (sentence, h) = (&self.sentence, self.model.config.hidden_size);
        let mut out = match &mut self.engine {
            Engine::Cpu => {
                let mut out = reference::forward(&self.model, batch, &Options { normalize: false })?;
                for s in &mut out.sequences {
                    s.pooled = sentence.dense(&sentence.pool(&s.last_hidden_state, h, 0));
                }
                return Ok(out);
            }
            Engine::Device(bert) => {
                let pooling = DevicePooling { mode: sentence.pooling, skip: 0 };
                let opts =
                    ForwardOptions { normalize: false, outputs: OutputSelection { hidden_states: false, ..outputs } };
                bert.forward_pooled(batch, opts, pooling)?.0
            }
        };
        if outputs.pooled && !sentence.dense.is_empty() {
            for s in &mut out.sequences {
                s.pooled = sentence.dense(&s.pooled);
            }
        }
        Ok(out)
    }

    // ----- whole calls on texts (truncating to the limit, as sentence-transformers) -----

    /// Sentence embeddings of `texts` with the folder's default prompt (if any).
    pub fn embed<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let prompt = self.sentence.choose_prompt(None, None)?;
        let (batch, prompt_tokens) = self.tokenize_prompted(texts, prompt.as_deref(), true)?;
        self.embed_batch(&batch, prompt_tokens)
    }

    /// The classifier's answer for each text.
    pub fn classify<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<Classification>> {
        let batch = self.tokenize(texts, true)?;
        Ok(self.logits_batch(&batch)?.into_iter().map(Classification::from_logits).collect())
    }

    /// A cross-encoder's relevance of each document to `query` (sigmoid of its one logit), in
    /// the documents' order.
    pub fn rerank<S: AsRef<str>>(&mut self, query: &str, docs: &[S]) -> Result<Vec<f32>> {
        let n = self.classifier()?.labels.len();
        if n != 1 {
            return Err(Error::Input(format!(
                "reranking needs a cross-encoder with one logit; model {} has {n} labels",
                self.model.dir.display()
            )));
        }
        let pairs: Vec<(&str, &str)> = docs.iter().map(|d| (query, d.as_ref())).collect();
        let batch = self.tokenize_pairs(&pairs, true)?;
        Ok(self.logits_batch(&batch)?.iter().map(|l| sigmoid(l[0])).collect())
    }
}

impl Classification {
    /// Scores from logits: sigmoid for one label, softmax for several.
    pub fn from_logits(logits: Vec<f32>) -> Classification {
        let scores = match logits.as_slice() {
            [one] => vec![sigmoid(*one)],
            many => reference::softmax(many),
        };
        let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        Classification { logits, scores, best }
    }
}

/// The logistic function in f64 (as torch's sigmoid on f32 inputs rounds).
pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

#[cfg(feature = "emulator")]
fn open_emulator() -> Result<Device> {
    Device::emulator()
}

#[cfg(not(feature = "emulator"))]
fn open_emulator() -> Result<Device> {
    Err(Error::Input("fusebert was built without its `emulator` feature".into()))
}

/// The model on `dev`; int8 is calibrated (SmoothQuant) on the built-in calibration texts,
/// tokenised with the model's own tokenizer (a model without one: random token ids).
pub fn device_model(dev: &Device, model: &BertModel, precision: Precision) -> Result<DeviceBert> {
    if precision != Precision::Int8 {
        return DeviceBert::new(dev, model, precision);
    }
    let calibration = match model.dir.join("tokenizer.json").is_file() {
        true => Tokenizer::for_model(model)?.encode_batch(&crate::model::quant::CALIBRATION_TEXTS, true)?,
        false => crate::model::synthetic::calibration_batch(&model.config)?,
    };
    DeviceBert::new_calibrated(dev, model, precision, &calibration)
}
