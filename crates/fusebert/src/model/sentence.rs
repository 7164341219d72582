//! sentence-transformers folders: which pooling, Dense and Normalize modules follow the encoder,
//! the input length limit, and the prompts.
//!
//! Two layouts exist in the wild and both are read:
//! - classic: `modules.json` types `sentence_transformers.models.{Transformer,Pooling,Dense,Normalize}`,
//!   `sentence_bert_config.json` with `max_seq_length`, `1_Pooling/config.json` with boolean
//!   `pooling_mode_*_tokens` keys;
//! - sentence-transformers 6: types under `sentence_transformers.base...` /
//!   `sentence_transformers.sentence_transformer...`, `pooling_mode` as a string, and the length
//!   limit in `tokenizer_config.json` `model_max_length`.
//!
//! A folder without `modules.json` is a plain encoder: [`SentenceConfig::load`] returns `None`
//! and callers keep their defaults (mean pooling, no normalisation). Anything a folder asks for
//! that we do not implement (another module type, several pooling modes at once, a Dense layer
//! with an unknown activation) is an [`Error::Config`] naming the file, never silently skipped.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::weights::{HostTensor, Linear};
use crate::error::{Error, Result};
pub use crate::numerics::pooling::Pooling;

/// Which of the two sentence-transformers folder layouts a folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `sentence_transformers.models.*` module types, boolean pooling keys.
    Classic,
    /// sentence-transformers 6: module types under `sentence_transformers.base` etc., string
    /// `pooling_mode`.
    V6,
}

/// The activation of a sentence-transformers `Dense` module (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.modules.linear.Identity`.
    Identity,
    /// `torch.nn.modules.activation.Tanh` (the sentence-transformers default).
    Tanh,
    /// `torch.nn.modules.activation.ReLU`.
    Relu,
    /// `torch.nn.modules.activation.Sigmoid`.
    Sigmoid,
    /// `torch.nn.modules.activation.GELU` (exact, erf).
    Gelu,
}

impl DenseActivation {
    /// Parses a torch class path (only the class name matters).
    pub fn parse(path: &str) -> Option<DenseActivation> {
        Some(match path.rsplit('.').next()? {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            "ReLU" => DenseActivation::Relu,
            "Sigmoid" => DenseActivation::Sigmoid,
            "GELU" => DenseActivation::Gelu,
            _ => return None,
        })
    }

    /// The activation applied to one value (in f64, rounded once).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            DenseActivation::Identity => x,
            DenseActivation::Tanh => (x as f64).tanh() as f32,
            DenseActivation::Relu => x.max(0.0),
            DenseActivation::Sigmoid => (1.0 / (1.0 + (-(x as f64)).exp())) as f32,
            DenseActivation::Gelu => crate::numerics::activation::gelu_erf(x),
        }
    }
}

/// A `Dense` module: `activation(W x + b)` on the pooled vector.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseModule {
    /// `linear.weight` `[out, in]`, `linear.bias` `[out]` (zeros when the module has no bias).
    pub linear: Linear,
    pub activation: DenseActivation,
}

/// What a sentence-transformers folder says about turning hidden states into one embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    pub layout: Layout,
    /// The pooling mode of the `Pooling` module.
    pub pooling: Pooling,
    /// Whether the prompt's tokens take part in pooling (`include_prompt`, default true). When
    /// false, `[CLS]` and the prompt's tokens are masked out (sentence-transformers' rule).
    pub include_prompt: bool,
    /// `Dense` modules after pooling, in order.
    pub dense: Vec<DenseModule>,
    /// Whether a `Normalize` module ends the pipeline (unit-length embeddings).
    pub normalize: bool,
    /// The input limit in tokens (special tokens included): `sentence_bert_config.json`
    /// `max_seq_length`, else `tokenizer_config.json` `model_max_length`; `None` when neither
    /// gives one (then the position table is the limit).
    pub max_seq_length: Option<usize>,
    /// Named prompts from `config_sentence_transformers.json` (`prompts`).
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when none is asked for (`default_prompt_name`).
    pub default_prompt_name: Option<String>,
}

impl SentenceConfig {
    /// The pipeline of a plain encoder folder (no sentence-transformers files): mean pooling,
    /// no Dense, no Normalize, no prompts.
    pub fn plain() -> SentenceConfig {
        SentenceConfig {
            layout: Layout::Classic,
            pooling: Pooling::Mean,
            include_prompt: true,
            dense: Vec::new(),
            normalize: false,
            max_seq_length: None,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
        }
    }

    /// Reads the sentence-transformers files of `dir`; `Ok(None)` when it has no `modules.json`.
    pub fn load(dir: &Path) -> Result<Option<SentenceConfig>> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(None);
        }
        let modules: Vec<RawModule> = read_json(&modules_path)?;
        let bad = |msg: String| Error::Config { path: modules_path.clone(), msg };
        let mut cfg = SentenceConfig::plain();
        let mut seen_pooling = false;
        let mut seen_transformer = false;
        cfg.layout = if modules.iter().all(|m| m.kind.starts_with("sentence_transformers.models.")) {
            Layout::Classic
        } else {
            Layout::V6
        };
        for m in &modules {
            let class = m.kind.rsplit('.').next().unwrap_or_default();
            let stage_error = |what: &str| bad(format!("module `{}` ({}) {what}", m.name, m.kind));
            match class {
                "Transformer" if !seen_transformer && !seen_pooling => seen_transformer = true,
                "Pooling" if seen_transformer && !seen_pooling => {
                    let (pooling, include_prompt) = read_pooling(&dir.join(&m.path).join("config.json"))?;
                    (cfg.pooling, cfg.include_prompt, seen_pooling) = (pooling, include_prompt, true);
                }
                "Dense" if seen_pooling && !cfg.normalize => cfg.dense.push(read_dense(&dir.join(&m.path))?),
                "Normalize" if seen_pooling && !cfg.normalize => cfg.normalize = true,
                "Transformer" | "Pooling" | "Dense" | "Normalize" => {
                    return Err(stage_error("is out of order (supported: Transformer, Pooling, Dense..., Normalize)"))
                }
                _ => {
                    return Err(stage_error(
                        "is not supported (supported module types: Transformer, Pooling, Dense, Normalize)",
                    ))
                }
            }
        }
        if !seen_pooling {
            return Err(bad("no Pooling module (an encoder folder without pooling has nothing to embed with)".into()));
        }
        cfg.max_seq_length = read_max_seq_length(dir)?;
        let st_path = dir.join("config_sentence_transformers.json");
        if st_path.is_file() {
            let raw: RawStConfig = read_json(&st_path)?;
            cfg.prompts = raw.prompts.unwrap_or_default();
            if let Some(name) = &raw.default_prompt_name {
                if !cfg.prompts.contains_key(name) {
                    return Err(Error::Config {
                        path: st_path,
                        msg: format!("default_prompt_name `{name}` is not one of the prompts"),
                    });
                }
            }
            cfg.default_prompt_name = raw.default_prompt_name;
        }
        Ok(Some(cfg))
    }

    /// The prompt text for `name` (a typed error listing the folder's prompt names otherwise).
    pub fn prompt(&self, name: &str) -> Result<&str> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            let names: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            Error::Input(format!("no prompt named `{name}` (this model's prompts: {})", names.join(", ")))
        })
    }

    /// The sentence embedding of one sequence from its final hidden states (`[len, hidden]`):
    /// pooling, then the Dense modules, then Normalize, as `SentenceTransformer.encode`.
    /// `prompt_tokens` is how many leading tokens (`[CLS]` included) belong to a prompt: they are
    /// masked out of pooling when `include_prompt` is false (0 when no prompt was used).
    pub fn embed(&self, last_hidden_state: &[f32], hidden: usize, prompt_tokens: usize) -> Vec<f32> {
        self.after_pooling(&self.pool(last_hidden_state, hidden, prompt_tokens))
    }

    /// The folder's pooling of one sequence's final hidden states (`prompt_tokens` as in
    /// [`embed`](Self::embed)).
    pub fn pool(&self, last_hidden_state: &[f32], hidden: usize, prompt_tokens: usize) -> Vec<f32> {
        let skip = if self.include_prompt { 0 } else { prompt_tokens };
        crate::numerics::pooling::pool(last_hidden_state, hidden, self.pooling, skip)
    }

    /// Each Dense module in turn (`activation(W v + b)`): the modules after pooling but Normalize
    /// (a server chooses normalisation per request).
    pub fn dense(&self, pooled: &[f32]) -> Vec<f32> {
        let mut v = pooled.to_vec();
        for d in &self.dense {
            v = super::reference::linear(&v, d.linear.in_features(), &d.linear.weight.data, Some(&d.linear.bias.data));
            v.iter_mut().for_each(|x| *x = d.activation.apply(*x));
        }
        v
    }

    /// The modules after pooling: each Dense module, then Normalize when the folder has it.
    pub fn after_pooling(&self, pooled: &[f32]) -> Vec<f32> {
        let mut v = self.dense(pooled);
        if self.normalize {
            crate::numerics::pooling::l2_normalize(&mut v);
        }
        v
    }

    /// [`embed`](Self::embed) for every sequence of a forward pass's output (CPU or device: both
    /// return the final hidden states).
    pub fn embed_all(&self, out: &super::reference::Output, prompt_tokens: usize) -> Vec<Vec<f32>> {
        out.sequences.iter().map(|s| self.embed(&s.last_hidden_state, out.hidden_size, prompt_tokens)).collect()
    }

    /// The prompt to prepend: `text` when given, else the prompt named `name`, else the folder's
    /// `default_prompt_name`, else none. Both given is an error.
    pub fn choose_prompt(&self, text: Option<&str>, name: Option<&str>) -> Result<Option<String>> {
        match (text, name) {
            (Some(_), Some(_)) => Err(Error::Input("give a prompt by text or by name, not both".into())),
            (Some(t), None) => Ok(Some(t.to_string())),
            (None, Some(n)) => self.prompt(n).map(|p| Some(p.to_string())),
            (None, None) => self.default_prompt_name.as_deref().map(|n| self.prompt(n).map(str::to_string)).transpose(),
        }
    }

    /// The output width: the last Dense module's, else the encoder's `hidden`.
    pub fn output_dim(&self, hidden: usize) -> usize {
        self.dense.last().map_or(hidden, |d| d.linear.out_features())
    }
}

/// One entry of `modules.json`.
#[derive(Deserialize)]
struct RawModule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `config_sentence_transformers.json` (the fields we use).
#[derive(Deserialize)]
struct RawStConfig {
    prompts: Option<BTreeMap<String, String>>,
    default_prompt_name: Option<String>,
}

/// `1_Pooling/config.json`, either layout.
#[derive(Deserialize)]
struct RawPooling {
    /// sentence-transformers 6: one mode as a string.
    pooling_mode: Option<String>,
    pooling_mode_cls_token: Option<bool>,
    pooling_mode_mean_tokens: Option<bool>,
    pooling_mode_max_tokens: Option<bool>,
    pooling_mode_mean_sqrt_len_tokens: Option<bool>,
    pooling_mode_weightedmean_tokens: Option<bool>,
    pooling_mode_lasttoken: Option<bool>,
    include_prompt: Option<bool>,
}

/// The pooling mode and `include_prompt` of a Pooling module's config.
fn read_pooling(path: &Path) -> Result<(Pooling, bool)> {
    let raw: RawPooling = read_json(path)?;
    let bad = |msg: String| Error::Config { path: path.to_path_buf(), msg };
    let include_prompt = raw.include_prompt.unwrap_or(true);
    if let Some(mode) = &raw.pooling_mode {
        let p = Pooling::parse(mode)
            .ok_or_else(|| bad(format!("pooling_mode `{mode}` is not supported (supported: {})", Pooling::names())))?;
        return Ok((p, include_prompt));
    }
    let flags = [
        (raw.pooling_mode_cls_token, Pooling::Cls),
        (raw.pooling_mode_mean_tokens, Pooling::Mean),
        (raw.pooling_mode_max_tokens, Pooling::Max),
        (raw.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        (raw.pooling_mode_weightedmean_tokens, Pooling::WeightedMean),
        (raw.pooling_mode_lasttoken, Pooling::LastToken),
    ];
    let on: Vec<Pooling> = flags.iter().filter(|(f, _)| *f == Some(true)).map(|&(_, p)| p).collect();
    match on.as_slice() {
        [p] => Ok((*p, include_prompt)),
        [] => Err(bad("no pooling mode is enabled (expected one `pooling_mode_*` key set to true)".into())),
        many => Err(bad(format!(
            "several pooling modes at once ({}) are not supported: their concatenation is not implemented",
            many.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `N_Dense/config.json` + `N_Dense/model.safetensors`.
fn read_dense(dir: &Path) -> Result<DenseModule> {
    #[derive(Deserialize)]
    struct RawDense {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
        activation_function: Option<String>,
    }
    fn yes() -> bool {
        true
    }
    let cfg_path = dir.join("config.json");
    let raw: RawDense = read_json(&cfg_path)?;
    let act_name = raw.activation_function.unwrap_or_else(|| "torch.nn.modules.activation.Tanh".into());
    let activation = DenseActivation::parse(&act_name).ok_or_else(|| Error::Config {
        path: cfg_path.clone(),
        msg: format!("Dense activation `{act_name}` is not supported (supported: Identity, Tanh, ReLU, Sigmoid, GELU)"),
    })?;
    let st_path = dir.join("model.safetensors");
    let (o, i) = (raw.out_features, raw.in_features);
    let weight = super::weights::read_tensor(&st_path, "linear.weight", &[o, i])?;
    let bias = if raw.bias {
        super::weights::read_tensor(&st_path, "linear.bias", &[o])?
    } else {
        HostTensor::new("(no bias)", vec![o], vec![0.0; o])
    };
    Ok(DenseModule { linear: Linear { weight, bias }, activation })
}

/// The input limit: `sentence_bert_config.json` `max_seq_length`, else `tokenizer_config.json`
/// `model_max_length` when it is a real limit (tokenizers write ~1e30 for "none").
fn read_max_seq_length(dir: &Path) -> Result<Option<usize>> {
    let sb = dir.join("sentence_bert_config.json");
    if sb.is_file() {
        let v: serde_json::Value = read_json(&sb)?;
        if let Some(n) = v.get("max_seq_length").filter(|n| !n.is_null()) {
            let n = n.as_u64().filter(|&n| n >= 2).ok_or_else(|| Error::Config {
                path: sb.clone(),
                msg: format!("max_seq_length must be an integer >= 2, got {n}"),
            })?;
            return Ok(Some(n as usize));
        }
    }
    let tc = dir.join("tokenizer_config.json");
    if tc.is_file() {
        let v: serde_json::Value = read_json(&tc)?;
        // as_u64 is None for the ~1e30 "no limit" value, which JSON parses as a float.
        if let Some(n) = v.get("model_max_length").and_then(|n| n.as_u64()).filter(|n| (2..1 << 40).contains(n)) {
            return Ok(Some(n as usize));
        }
    }
    Ok(None)
}

/// Reads and parses a JSON file (typed errors naming it).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    if !path.is_file() {
        return Err(Error::FileMissing { path: path.to_path_buf() });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config { path: PathBuf::from(path), msg: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder with these files (relative path, contents).
    fn folder(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fusebert-sentence-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, text) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#;

    #[test]
    fn plain_folder_has_no_pipeline() {
        let dir = folder("plain", &[("config.json", "{}")]);
        assert_eq!(SentenceConfig::load(&dir).unwrap(), None);
    }

    #[test]
    fn boolean_and_string_pooling_modes() {
        for (mode, json) in [
            (Pooling::WeightedMean, r#"{"pooling_mode_weightedmean_tokens":true,"include_prompt":false}"#),
            (Pooling::MeanSqrtLen, r#"{"pooling_mode":"mean_sqrt_len_tokens","include_prompt":false}"#),
            (Pooling::LastToken, r#"{"pooling_mode":"lasttoken","include_prompt":false}"#),
        ] {
            let dir = folder(mode.name(), &[("modules.json", MODULES), ("1_Pooling/config.json", json)]);
            let c = SentenceConfig::load(&dir).unwrap().unwrap();
            assert_eq!((c.pooling, c.include_prompt, c.normalize), (mode, false, false));
            assert_eq!(c.max_seq_length, None);
        }
    }

    #[test]
    fn unsupported_folders_are_typed_errors() {
        let cases = [
            (
                "two",
                r#"{"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":true}"#,
                MODULES,
                "several pooling modes",
            ),
            ("none", r#"{"pooling_mode_cls_token":false}"#, MODULES, "no pooling mode"),
            ("bad", r#"{"pooling_mode":"median"}"#, MODULES, "pooling_mode `median`"),
            (
                "module",
                r#"{"pooling_mode":"cls"}"#,
                r#"[{"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                    {"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                    {"name":"2","path":"2_LayerNorm","type":"sentence_transformers.models.LayerNorm"}]"#,
                "not supported",
            ),
        ];
        for (tag, pooling, modules, want) in cases {
            let dir = folder(tag, &[("modules.json", modules), ("1_Pooling/config.json", pooling)]);
            let e = SentenceConfig::load(&dir).unwrap_err();
            assert!(matches!(e, Error::Config { .. }) && e.to_string().contains(want), "{tag}: {e}");
        }
    }

    #[test]
    fn limits_and_prompts() {
        let dir = folder(
            "limits",
            &[
                ("modules.json", MODULES),
                ("1_Pooling/config.json", r#"{"pooling_mode":"cls"}"#),
                ("tokenizer_config.json", r#"{"model_max_length":1000000000000000019884624838656}"#),
                ("config_sentence_transformers.json", r#"{"prompts":{"q":"query: "},"default_prompt_name":"q"}"#),
            ],
        );
        let c = SentenceConfig::load(&dir).unwrap().unwrap();
        assert_eq!(c.max_seq_length, None, "~1e30 means no limit");
        assert_eq!(c.choose_prompt(None, None).unwrap().as_deref(), Some("query: "));
        assert_eq!(c.choose_prompt(Some("x: "), None).unwrap().as_deref(), Some("x: "));
        assert!(c.choose_prompt(None, Some("d")).unwrap_err().to_string().contains("prompts: q"));
    }

    #[test]
    fn dense_then_normalize() {
        let mut c = SentenceConfig::plain();
        let w = HostTensor::new("w", vec![1, 2], vec![1.0, -1.0]);
        let b = HostTensor::new("b", vec![1], vec![0.5]);
        c.dense.push(DenseModule { linear: Linear { weight: w, bias: b }, activation: DenseActivation::Tanh });
        // mean of [[1, 2], [3, 2]] = [2, 2]; W x + b = 0.5; tanh
        assert_eq!(c.embed(&[1.0, 2.0, 3.0, 2.0], 2, 0), vec![(0.5f64).tanh() as f32]);
        c.normalize = true;
        assert_eq!(c.embed(&[1.0, 2.0, 3.0, 2.0], 2, 0), vec![1.0]);
        assert_eq!(c.output_dim(2), 1);
    }
}
