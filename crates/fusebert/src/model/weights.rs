//! `model.safetensors` -> host tensors (`Vec<f32>` with shapes), by parameter name.
//!
//! The encoder's names may carry the family's prefix (`bert.`, `roberta.`, `distilbert.`,
//! `electra.`: task-model files) or none (base-model files); the prefix is resolved once, from
//! the word embedding table, and every tensor the config implies is then looked up under it: all
//! missing names are reported together ([`Error::WeightsMissing`]). DistilBERT's names
//! (`transformer.layer.N.attention.q_lin`, ...) map onto the same structs as BERT's. F32, F16 and
//! BF16 are converted to f32 on load; dtypes and shapes are checked; extra tensors (e.g.
//! `position_ids`) are ignored. These plain structs are what the device forward pass uploads.
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::{Architecture, BertConfig};
use crate::error::{Error, Result};

/// A dense row-major f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The parameter name as found in the file (prefix included).
    pub name: String,
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "HostTensor data does not fit its shape");
        HostTensor { name: name.into(), shape, data }
    }
}

/// A dense layer `y = x W^T + b` (PyTorch `nn.Linear` layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: HostTensor,
    /// `[out_features]`.
    pub bias: HostTensor,
}

impl Linear {
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }
}

/// LayerNorm scale and shift, each `[hidden]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormWeights {
    pub gamma: HostTensor,
    pub beta: HostTensor,
}

/// Word, position and token-type tables (`[rows, embedding_size]`; `embedding_size ==
/// hidden_size` except for ELECTRA) and their LayerNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingWeights {
    /// `[vocab_size, embedding_size]`.
    pub word: HostTensor,
    /// `[max_position_embeddings, embedding_size]`; token `i` of a sequence reads row
    /// `config.position_offset + i` (the tokenizer writes those ids into the batch).
    pub position: HostTensor,
    /// `[type_vocab_size, embedding_size]`. For models without token types (DistilBERT,
    /// `config.has_token_types == false`) one all-zero row, named `(none: zero token types)`,
    /// so adding `token_type[0]` is exact and every forward pass can add it unconditionally.
    pub token_type: HostTensor,
    /// `[embedding_size]`.
    pub layer_norm: LayerNormWeights,
    /// ELECTRA's `embeddings_project` (`[hidden, embedding_size]`), applied after the LayerNorm;
    /// `None` when `embedding_size == hidden_size` and for every other family.
    pub projection: Option<Linear>,
}

/// Name of the all-zero token-type table of models without token types.
pub const NO_TOKEN_TYPES: &str = "(none: zero token types)";

/// One encoder layer (post-LN BERT).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderLayerWeights {
    /// `attention.self.{query,key,value}`: `[hidden, hidden]` each.
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    /// `attention.output.dense`: `[hidden, hidden]`.
    pub attn_output: Linear,
    /// `attention.output.LayerNorm` (after the attention residual).
    pub attn_layer_norm: LayerNormWeights,
    /// `intermediate.dense` (FFN1): `[intermediate, hidden]`.
    pub ffn1: Linear,
    /// `output.dense` (FFN2): `[hidden, intermediate]`.
    pub ffn2: Linear,
    /// `output.LayerNorm` (after the FFN residual).
    pub ffn_layer_norm: LayerNormWeights,
}

impl EncoderLayerWeights {
    /// The six linear layers: query, key, value, attention output, FFN1, FFN2.
    pub fn linears(&self) -> [&Linear; 6] {
        [&self.query, &self.key, &self.value, &self.attn_output, &self.ffn1, &self.ffn2]
    }
}

/// Which task head a classifier came from. Both compute `logits = W tanh(D h_first + d) + b`
/// on the first token's final state, so [`BertWeights::pooler`] holds `D, d` in both cases and
/// [`ClassifierHead::linear`] holds `W, b`: one device path serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `BertForSequenceClassification`: `classifier` over the pooler output (`pooler.dense`).
    BertPooler,
    /// `RobertaForSequenceClassification`: `classifier.dense` + tanh + `classifier.out_proj`
    /// (`pooler` holds `classifier.dense`; `linear` holds `classifier.out_proj`).
    RobertaDense,
}

/// A sequence-classification head: `logits = W pooler_output + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierHead {
    /// `[num_labels, hidden]`.
    pub linear: Linear,
    /// One name per class, from `id2label` (`LABEL_i` where the config has none).
    pub labels: Vec<String>,
    /// Where the head (and the dense layer in [`BertWeights::pooler`]) came from.
    pub kind: HeadKind,
}

/// Every parameter of a BERT encoder, as host f32.
#[derive(Debug, Clone, PartialEq)]
pub struct BertWeights {
    pub embeddings: EmbeddingWeights,
    pub layers: Vec<EncoderLayerWeights>,
    /// `pooler.dense` (`[hidden, hidden]`, tanh): `None` when the file has no pooler. For a
    /// RoBERTa classification head, `classifier.dense` (see [`HeadKind::RobertaDense`]).
    pub pooler: Option<Linear>,
    /// `classifier` head: `None` for plain encoders.
    pub classifier: Option<ClassifierHead>,
}

/// Dtypes we convert to f32.
const DTYPES: &str = "F32, F16, BF16";

/// Reads tensors of one safetensors file by name, checking dtype and shape. Missing tensors
/// are collected (and stood in for by zeros) so that one error can list them all.
struct Reader<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
    /// The encoder's prefix (`"bert."`, ..., or `""`), resolved once from the file.
    prefix: &'static str,
    missing: RefCell<Vec<String>>,
}

impl<'a> Reader<'a> {
    fn new(path: &'a Path, bytes: &'a [u8], arch: Architecture) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), msg: e.to_string() })?;
        // The word table names the prefix: `<prefix>embeddings.word_embeddings.weight`.
        let word = "embeddings.word_embeddings.weight";
        let prefix = [arch.prefix(), ""].into_iter().find(|p| st.tensor(&format!("{p}{word}")).is_ok());
        let Some(prefix) = prefix else {
            return Err(Error::WeightsMissing {
                path: path.to_path_buf(),
                prefix: format!("{} or none", arch.prefix()),
                missing: vec![format!("{}{word}", arch.prefix()), word.to_string()],
            });
        };
        Ok(Reader { path, st, prefix, missing: RefCell::new(Vec::new()) })
    }

    fn has(&self, full_name: &str) -> bool {
        self.st.tensor(full_name).is_ok()
    }

    /// Tensor `name` of the encoder (the resolved prefix added).
    fn encoder(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.exact(&format!("{}{name}", self.prefix), shape)
    }

    /// Tensor `full_name` exactly, with this shape, converted to f32 (zeros, and the name
    /// recorded, when it is missing).
    fn exact(&self, full_name: &str, shape: &[usize]) -> Result<HostTensor> {
        let path = PathBuf::from(self.path);
        let Ok(view) = self.st.tensor(full_name) else {
            self.missing.borrow_mut().push(full_name.to_string());
            return Ok(HostTensor::new(full_name, shape.to_vec(), vec![0.0; shape.iter().product()]));
        };
        if view.shape() != shape {
            return Err(Error::TensorShape {
                path,
                name: full_name.to_string(),
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let data = to_f32(view.dtype(), view.data()).ok_or_else(|| Error::TensorDtype {
            path,
            name: full_name.to_string(),
            expected: DTYPES.to_string(),
            got: view.dtype().to_string(),
        })?;
        Ok(HostTensor::new(full_name, shape.to_vec(), data))
    }

    fn linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        self.linear_exact(&format!("{}{name}", self.prefix), out_f, in_f)
    }

    /// A linear layer by full name (task heads are not prefixed).
    fn linear_exact(&self, full: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.exact(&format!("{full}.weight"), &[out_f, in_f])?,
            bias: self.exact(&format!("{full}.bias"), &[out_f])?,
        })
    }

    fn layer_norm(&self, name: &str, h: usize) -> Result<LayerNormWeights> {
        Ok(LayerNormWeights {
            gamma: self.encoder(&format!("{name}.weight"), &[h])?,
            beta: self.encoder(&format!("{name}.bias"), &[h])?,
        })
    }

    /// `Err(WeightsMissing)` listing every missing tensor, if any.
    fn finish(&self) -> Result<()> {
        let missing = self.missing.take();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::WeightsMissing { path: self.path.to_path_buf(), prefix: self.prefix.to_string(), missing })
    }
}

/// Parameter names of one encoder layer, per family (BERT's layout, DistilBERT's).
struct LayerNames {
    query: String,
    key: String,
    value: String,
    attn_output: String,
    attn_layer_norm: String,
    ffn1: String,
    ffn2: String,
    ffn_layer_norm: String,
}

impl LayerNames {
    fn new(arch: Architecture, i: usize) -> LayerNames {
        if arch == Architecture::DistilBert {
            let p = format!("transformer.layer.{i}");
            return LayerNames {
                query: format!("{p}.attention.q_lin"),
                key: format!("{p}.attention.k_lin"),
                value: format!("{p}.attention.v_lin"),
                attn_output: format!("{p}.attention.out_lin"),
                attn_layer_norm: format!("{p}.sa_layer_norm"),
                ffn1: format!("{p}.ffn.lin1"),
                ffn2: format!("{p}.ffn.lin2"),
                ffn_layer_norm: format!("{p}.output_layer_norm"),
            };
        }
        let p = format!("encoder.layer.{i}");
        LayerNames {
            query: format!("{p}.attention.self.query"),
            key: format!("{p}.attention.self.key"),
            value: format!("{p}.attention.self.value"),
            attn_output: format!("{p}.attention.output.dense"),
            attn_layer_norm: format!("{p}.attention.output.LayerNorm"),
            ffn1: format!("{p}.intermediate.dense"),
            ffn2: format!("{p}.output.dense"),
            ffn_layer_norm: format!("{p}.output.LayerNorm"),
        }
    }
}

/// Little-endian bytes of a supported dtype -> f32 (`None` for other dtypes).
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let u16s = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    Some(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => u16s().map(|b| half::f16::from_bits(b).to_f32()).collect(),
        Dtype::BF16 => u16s().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        _ => return None,
    })
}

impl BertWeights {
    /// Loads and checks every tensor `config` implies from the safetensors file at `path`.
    pub fn from_file(path: &Path, config: &BertConfig) -> Result<BertWeights> {
        if !path.is_file() {
            return Err(Error::FileMissing { path: path.to_path_buf() });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path, config)
    }

    /// As [`from_file`](Self::from_file), from the file's bytes (`path` names it in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path, config: &BertConfig) -> Result<BertWeights> {
        let r = Reader::new(path, bytes, config.architecture)?;
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        let embeddings = Self::embeddings(&r, config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let n = LayerNames::new(config.architecture, i);
                Ok(EncoderLayerWeights {
                    query: r.linear(&n.query, h, h)?,
                    key: r.linear(&n.key, h, h)?,
                    value: r.linear(&n.value, h, h)?,
                    attn_output: r.linear(&n.attn_output, h, h)?,
                    attn_layer_norm: r.layer_norm(&n.attn_layer_norm, h)?,
                    ffn1: r.linear(&n.ffn1, ff, h)?,
                    ffn2: r.linear(&n.ffn2, h, ff)?,
                    ffn_layer_norm: r.layer_norm(&n.ffn_layer_norm, h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A file either has both pooler tensors or none: `weight` decides, `bias` is then required.
        let mut pooler = if r.has(&format!("{}pooler.dense.weight", r.prefix)) {
            Some(r.linear("pooler.dense", h, h)?)
        } else {
            None
        };
        let classifier = Self::classifier(&r, config, &mut pooler)?;
        r.finish()?;
        Ok(BertWeights { embeddings, layers, pooler, classifier })
    }

    /// The embedding tables, LayerNorm and (ELECTRA) projection.
    fn embeddings(r: &Reader, config: &BertConfig) -> Result<EmbeddingWeights> {
        let (h, e) = (config.hidden_size, config.embedding_size);
        let token_type = if config.has_token_types {
            r.encoder("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, e])?
        } else {
            HostTensor::new(NO_TOKEN_TYPES, vec![1, e], vec![0.0; e])
        };
        let projection = if config.architecture == Architecture::Electra && e != h {
            Some(r.linear("embeddings_project", h, e)?)
        } else {
            None
        };
        Ok(EmbeddingWeights {
            word: r.encoder("embeddings.word_embeddings.weight", &[config.vocab_size, e])?,
            position: r.encoder("embeddings.position_embeddings.weight", &[config.max_position_embeddings, e])?,
            token_type,
            layer_norm: r.layer_norm("embeddings.LayerNorm", e)?,
            projection,
        })
    }

    /// The classification head, if the file has one: BERT's `classifier` (over the pooler) or
    /// RoBERTa's `classifier.dense` + `classifier.out_proj` (its dense layer replaces `pooler`).
    /// Labels come from `id2label`. Heads of other shapes are a typed error, never ignored.
    fn classifier(r: &Reader, config: &BertConfig, pooler: &mut Option<Linear>) -> Result<Option<ClassifierHead>> {
        let h = config.hidden_size;
        let unsupported = |what: &str| {
            Error::Config {
            path: r.path.to_path_buf(),
            msg: format!("{what} is not supported (supported heads: BERT `classifier` over the pooler, RoBERTa `classifier.dense` + `classifier.out_proj`)"),
        }
        };
        if r.has("pre_classifier.weight") {
            return Err(unsupported("DistilBERT's classification head (`pre_classifier` + ReLU)"));
        }
        let (kind, out_name) = if r.has("classifier.out_proj.weight") {
            // ELECTRA's head has the same names but a GELU where RoBERTa has tanh.
            if config.architecture == Architecture::Electra {
                return Err(unsupported("ELECTRA's classification head (dense + GELU + out_proj)"));
            }
            (HeadKind::RobertaDense, "classifier.out_proj")
        } else if r.has("classifier.weight") {
            (HeadKind::BertPooler, "classifier")
        } else {
            return Ok(None);
        };
        let view = r.st.tensor(&format!("{out_name}.weight")).expect("checked above");
        // The class count comes from `id2label` when the config has one, else from the file.
        let num_labels = match config.id2label.len() {
            0 => view.shape().first().copied().unwrap_or(0).max(1),
            n => n,
        };
        let linear = r.linear_exact(out_name, num_labels, h)?;
        match kind {
            HeadKind::RobertaDense => *pooler = Some(r.linear_exact("classifier.dense", h, h)?),
            // BertForSequenceClassification classifies the pooler output.
            HeadKind::BertPooler if pooler.is_none() => {
                r.missing.borrow_mut().push(format!("{}pooler.dense.weight", r.prefix));
            }
            HeadKind::BertPooler => {}
        }
        let labels =
            (0..num_labels).map(|i| config.id2label.get(&i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))).collect();
        Ok(Some(ClassifierHead { linear, labels, kind }))
    }
}

/// One tensor of a small safetensors file (a sentence-transformers `Dense` module), checked
/// by name, shape and dtype.
pub(crate) fn read_tensor(path: &Path, name: &str, shape: &[usize]) -> Result<HostTensor> {
    if !path.is_file() {
        return Err(Error::FileMissing { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Safetensors { path: path.to_path_buf(), msg: e.to_string() })?;
    let r = Reader { path, st, prefix: "", missing: RefCell::new(Vec::new()) };
    let t = r.exact(name, shape)?;
    r.finish()?;
    Ok(t)
}
