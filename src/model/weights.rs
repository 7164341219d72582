//! `model.safetensors` -> host tensors (`Vec<f32>` with shapes), by BERT parameter name.
//!
//! Names may carry the `bert.` prefix (`BertForSequenceClassification` files) or not
//! (`BertModel` files). F32, F16 and BF16 are converted to f32 on load. Every tensor the config
//! implies is checked by name, dtype and shape; extra tensors (e.g. `position_ids`) are ignored.
//! These plain structs are what the device forward pass uploads, layer by layer.
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::BertConfig;
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

/// Word, position and token-type tables (`[rows, hidden]`) and their LayerNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingWeights {
    /// `[vocab_size, hidden]`.
    pub word: HostTensor,
    /// `[max_position_embeddings, hidden]`.
    pub position: HostTensor,
    /// `[type_vocab_size, hidden]`.
    pub token_type: HostTensor,
    pub layer_norm: LayerNormWeights,
}

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

/// A sequence-classification head: `logits = W pooler_output + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierHead {
    /// `[num_labels, hidden]`.
    pub linear: Linear,
    /// One name per class, from `id2label` (`LABEL_i` where the config has none).
    pub labels: Vec<String>,
}

/// Every parameter of a BERT encoder, as host f32.
#[derive(Debug, Clone, PartialEq)]
pub struct BertWeights {
    pub embeddings: EmbeddingWeights,
    pub layers: Vec<EncoderLayerWeights>,
    /// `pooler.dense` (`[hidden, hidden]`, tanh): `None` when the file has no pooler.
    pub pooler: Option<Linear>,
    /// `classifier` head: `None` for plain encoders.
    pub classifier: Option<ClassifierHead>,
}

/// Dtypes we convert to f32.
const DTYPES: &str = "F32, F16, BF16";

/// Reads tensors of one safetensors file by name, checking dtype and shape.
struct Reader<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
    /// `"bert."` or `""`, detected from the file.
    prefix: &'static str,
}

impl<'a> Reader<'a> {
    fn new(path: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), msg: e.to_string() })?;
        let prefix = if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() { "bert." } else { "" };
        Ok(Reader { path, st, prefix })
    }

    fn has(&self, full_name: &str) -> bool {
        self.st.tensor(full_name).is_ok()
    }

    /// Tensor `name` of the encoder (the `bert.` prefix added when the file uses it).
    fn encoder(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.exact(&format!("{}{name}", self.prefix), shape)
    }

    /// Tensor `full_name` exactly, with this shape, converted to f32.
    fn exact(&self, full_name: &str, shape: &[usize]) -> Result<HostTensor> {
        let path = PathBuf::from(self.path);
        let view = self
            .st
            .tensor(full_name)
            .map_err(|_| Error::TensorMissing { path: path.clone(), name: full_name.to_string() })?;
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
        Ok(Linear {
            weight: self.encoder(&format!("{name}.weight"), &[out_f, in_f])?,
            bias: self.encoder(&format!("{name}.bias"), &[out_f])?,
        })
    }

    fn layer_norm(&self, name: &str, h: usize) -> Result<LayerNormWeights> {
        Ok(LayerNormWeights {
            gamma: self.encoder(&format!("{name}.weight"), &[h])?,
            beta: self.encoder(&format!("{name}.bias"), &[h])?,
        })
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
        let r = Reader::new(path, bytes)?;
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        let embeddings = EmbeddingWeights {
            word: r.encoder("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: r.encoder("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type: r.encoder("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?,
            layer_norm: r.layer_norm("embeddings.LayerNorm", h)?,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(EncoderLayerWeights {
                    query: r.linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: r.linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: r.linear(&format!("{p}.attention.self.value"), h, h)?,
                    attn_output: r.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attn_layer_norm: r.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    ffn1: r.linear(&format!("{p}.intermediate.dense"), ff, h)?,
                    ffn2: r.linear(&format!("{p}.output.dense"), h, ff)?,
                    ffn_layer_norm: r.layer_norm(&format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A file either has both pooler tensors or none: `weight` decides, `bias` is then required.
        let pooler = if r.has(&format!("{}pooler.dense.weight", r.prefix)) {
            Some(r.linear("pooler.dense", h, h)?)
        } else {
            None
        };
        let classifier = Self::classifier(&r, config, pooler.is_some())?;
        Ok(BertWeights { embeddings, layers, pooler, classifier })
    }

    /// `classifier.{weight,bias}` (never prefixed), with labels from `id2label`.
    fn classifier(r: &Reader, config: &BertConfig, has_pooler: bool) -> Result<Option<ClassifierHead>> {
        let Ok(view) = r.st.tensor("classifier.weight") else { return Ok(None) };
        let h = config.hidden_size;
        // The class count comes from `id2label` when the config has one, else from the file.
        let num_labels = match config.id2label.len() {
            0 => view.shape().first().copied().unwrap_or(0).max(1),
            n => n,
        };
        let linear = Linear {
            weight: r.exact("classifier.weight", &[num_labels, h])?,
            bias: r.exact("classifier.bias", &[num_labels])?,
        };
        // BertForSequenceClassification classifies the pooler output.
        if !has_pooler {
            return Err(Error::TensorMissing {
                path: r.path.to_path_buf(),
                name: format!("{}pooler.dense.weight", r.prefix),
            });
        }
        let labels =
            (0..num_labels).map(|i| config.id2label.get(&i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))).collect();
        Ok(Some(ClassifierHead { linear, labels }))
    }
}
