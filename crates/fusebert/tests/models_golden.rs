//! The model zoo (`tests/models/`, five tiny random-weight models of other architectures and
//! layouts) against the golden outputs of sentence-transformers / transformers
//! (`tests/golden/<name>/`, byte-identical copies of the team's shared files, see their README),
//! on the f32 CPU reference, through the same library calls as `fusebert embed / classify /
//! rerank`: the folder's pooling, Normalize, prompts and max_seq_length truncation.
use std::path::PathBuf;

use fusebert::model::reference::{self, Options, Output};
use fusebert::model::BertModel;
use fusebert::tokenize::Tokenizer;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

/// Max abs difference allowed against the golden values (f32 implementations agree to ~1e-6).
const ATOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// One case of `cases.json`.
#[derive(Deserialize)]
struct Case {
    texts: Vec<String>,
    prompt_name: Option<String>,
    query: Option<String>,
}

fn cases(model: &str) -> Vec<(String, Case)> {
    let path = root().join("golden").join(model).join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    map.into_iter().map(|(k, v)| (k, serde_json::from_value(v).unwrap())).collect()
}

/// The golden tensor `name` of a case: shape and f32 values.
fn golden(model: &str, case: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let path = root().join("golden").join(model).join(format!("{case}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    assert_eq!(t.dtype(), Dtype::F32);
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

fn load(model: &str) -> (BertModel, Tokenizer) {
    let m = BertModel::load(&root().join("models").join(model)).unwrap();
    let t = Tokenizer::for_model(&m).unwrap();
    (m, t)
}

/// What `fusebert embed --truncate [--prompt-name P]` computes, on the CPU reference.
fn embed(m: &BertModel, tok: &Tokenizer, case: &Case) -> Vec<Vec<f32>> {
    let pipeline = m.sentence_config();
    let prompt = pipeline.choose_prompt(None, case.prompt_name.as_deref()).unwrap();
    let (texts, prompt_tokens) = match &prompt {
        Some(p) => (case.texts.iter().map(|t| format!("{p}{t}")).collect(), tok.prompt_tokens(p).unwrap()),
        None => (case.texts.clone(), 0),
    };
    let batch = tok.encode_batch(&texts, true).unwrap();
    let out = reference::forward(m, &batch, &Options::default()).unwrap();
    pipeline.embed_all(&out, prompt_tokens)
}

/// The logits of `fusebert classify` (texts) or `rerank` (query, text pairs).
fn logits(m: &BertModel, tok: &Tokenizer, case: &Case) -> Vec<Vec<f32>> {
    let batch = match &case.query {
        Some(q) => {
            let pairs: Vec<(&str, &str)> = case.texts.iter().map(|t| (q.as_str(), t.as_str())).collect();
            tok.encode_pairs(&pairs, false).unwrap()
        }
        None => tok.encode_batch(&case.texts, false).unwrap(),
    };
    let out: Output = reference::forward(m, &batch, &Options::default()).unwrap();
    out.sequences.into_iter().map(|s| s.logits.expect("a classifier model")).collect()
}

/// Max abs difference of `got` (rows) against the golden `[rows, n]` values.
fn max_err(model: &str, case: &str, got: &[Vec<f32>], want: &(Vec<usize>, Vec<f32>)) -> f32 {
    let (shape, want) = want;
    assert_eq!(shape[0], got.len(), "{model}/{case}: rows");
    assert!(got.iter().all(|r| r.len() == shape[1]), "{model}/{case}: width, expected {}", shape[1]);
    got.iter().flatten().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn check_embeddings(model: &str) -> usize {
    let (m, tok) = load(model);
    let mut n = 0;
    for (name, case) in cases(model) {
        let got = embed(&m, &tok, &case);
        let err = max_err(model, &name, &got, &golden(model, &name, "sentence_embedding"));
        eprintln!("{model}/{name}: max abs err {err:.2e}");
        assert!(err <= ATOL, "{model}/{name}: max abs err {err} > {ATOL}");
        n += 1;
    }
    n
}

fn check_logits(model: &str) -> usize {
    let (m, tok) = load(model);
    let mut n = 0;
    for (name, case) in cases(model) {
        let got = logits(&m, &tok, &case);
        let err = max_err(model, &name, &got, &golden(model, &name, "logits"));
        eprintln!("{model}/{name}: max abs err {err:.2e}");
        assert!(err <= ATOL, "{model}/{name}: max abs err {err} > {ATOL}");
        n += 1;
    }
    n
}

#[test]
fn roberta_cls_normalize_prompts_classic_layout() {
    assert_eq!(check_embeddings("tiny-roberta-cls"), 4);
}

#[test]
fn distilbert_mean_max_seq_length_v6_layout() {
    assert_eq!(check_embeddings("tiny-distilbert-mean"), 3);
}

#[test]
fn bert_gelu_tanh_max_pooling_head_dim_48() {
    assert_eq!(check_embeddings("tiny-bert-max-hd48"), 3);
}

#[test]
fn roberta_classification_head() {
    assert_eq!(check_logits("tiny-roberta-classifier"), 3);
}

/// (query, text) pairs. The fixture's `tokenizer_config.json` names the generic
/// `TokenizersBackend` class, whose inputs (transformers 5) have no `token_type_ids`: the golden
/// logits are those of token types all 0, and 0/1 types miss them by ~2e-4.
#[test]
fn bert_cross_encoder_pairs() {
    assert_eq!(check_logits("tiny-bert-crossencoder"), 1);
    let (_, tok) = load("tiny-bert-crossencoder");
    let b = tok.encode_pairs(&[("a query", "a text")], false).unwrap();
    assert!(b.token_type_ids[0].iter().all(|&t| t == 0));
}

/// The folder limit is what truncation uses: DistilBERT's `long` case is cut at 16 tokens
/// (its `tokenizer_config.json` `model_max_length`), and without `--truncate` it is a typed
/// error naming both numbers.
#[test]
fn max_seq_length_is_the_limit() {
    let (m, tok) = load("tiny-distilbert-mean");
    assert_eq!((m.max_input_tokens(), tok.max_len()), (16, 16));
    let (_, long) = cases("tiny-distilbert-mean").into_iter().find(|(n, _)| n == "long").unwrap();
    let e = tok.encode_batch(&long.texts, false).unwrap_err();
    assert!(matches!(e, fusebert::Error::InputTooLong { limit: 16, .. }), "{e}");
    assert_eq!(tok.encode_batch(&long.texts, true).unwrap().lengths, vec![16]);
    let (m, _) = load("tiny-roberta-cls");
    assert_eq!((m.max_input_tokens(), m.config.max_input_tokens()), (128, 512));
}

/// A file missing tensors: one typed error listing every missing name under the resolved prefix.
#[test]
fn missing_weights_are_listed_together() {
    let src = root().join("models/tiny-roberta-classifier");
    let dir = std::env::temp_dir().join(format!("fusebert-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let drop = ["roberta.encoder.layer.1.output.dense.bias", "classifier.dense.weight"];
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| !drop.contains(&n.as_str())).collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    let e = BertModel::load(&dir).unwrap_err();
    match &e {
        fusebert::Error::WeightsMissing { prefix, missing, .. } => {
            assert_eq!(prefix, "roberta.");
            assert_eq!(missing, &drop.map(String::from).to_vec());
        }
        other => panic!("expected WeightsMissing, got {other}"),
    }
    assert!(e.to_string().contains("2 tensor(s) missing"), "{e}");
}

/// A batch built without the model's position offset is refused, not silently shifted.
#[test]
fn roberta_batch_needs_the_position_offset() {
    let (m, tok) = load("tiny-roberta-cls");
    let b = tok.encode_batch(&["Hello world."], false).unwrap();
    assert_eq!(b.packed.position_ids[0], 2, "RoBERTa positions start at pad_token_id + 1");
    let plain = fusebert::tokenize::Batch::from_ids(b.input_ids.clone()).unwrap();
    let e = reference::forward(&m, &plain, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("position ids start at 0"), "{e}");
}

/// ELECTRA: embedding tables of `embedding_size`, `embeddings_project` to `hidden_size` after
/// the embedding LayerNorm, encoder under the `electra.` prefix. No public golden fixture: the
/// check is that the loader maps every name and that the reference applies the projection.
#[test]
fn electra_projection_loads_and_applies() {
    let (v, p, e, h, ff) = (50usize, 16usize, 8usize, 16usize, 32usize);
    let mut specs: Vec<(String, Vec<usize>)> = vec![
        ("electra.embeddings.word_embeddings.weight".into(), vec![v, e]),
        ("electra.embeddings.position_embeddings.weight".into(), vec![p, e]),
        ("electra.embeddings.token_type_embeddings.weight".into(), vec![2, e]),
        ("electra.embeddings.LayerNorm.weight".into(), vec![e]),
        ("electra.embeddings.LayerNorm.bias".into(), vec![e]),
        ("electra.embeddings_project.weight".into(), vec![h, e]),
        ("electra.embeddings_project.bias".into(), vec![h]),
    ];
    let l = "electra.encoder.layer.0";
    for (n, o, i) in [
        ("attention.self.query", h, h),
        ("attention.self.key", h, h),
        ("attention.self.value", h, h),
        ("attention.output.dense", h, h),
        ("intermediate.dense", ff, h),
        ("output.dense", h, ff),
    ] {
        specs.push((format!("{l}.{n}.weight"), vec![o, i]));
        specs.push((format!("{l}.{n}.bias"), vec![o]));
    }
    for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
        specs.push((format!("{l}.{n}.weight"), vec![h]));
        specs.push((format!("{l}.{n}.bias"), vec![h]));
    }
    // Deterministic non-zero values in [-0.5, 0.5).
    let bytes: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(k, (_, s))| {
            (0..s.iter().product::<usize>())
                .flat_map(|j| (((j * 7919 + k * 104_729) % 1000) as f32 / 1000.0 - 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = specs
        .iter()
        .zip(&bytes)
        .map(|((n, s), b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("fusebert-electra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = format!(
        r#"{{"model_type":"electra","vocab_size":{v},"embedding_size":{e},"hidden_size":{h},"num_hidden_layers":1,
            "num_attention_heads":2,"intermediate_size":{ff},"max_position_embeddings":{p}}}"#
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    let m = BertModel::load(&dir).unwrap();
    let proj = m.weights.embeddings.projection.as_ref().expect("ELECTRA projection");
    assert_eq!((proj.out_features(), proj.in_features()), (h, e));
    assert_eq!(m.weights.embeddings.word.shape, vec![v, e]);
    let batch = fusebert::tokenize::Batch::from_ids(vec![vec![1, 5, 9, 2], vec![3, 4]]).unwrap();
    // The embedding output is the LayerNorm of the E-wide sum, projected to H.
    let x = reference::embed(&m.weights.embeddings, m.config.layer_norm_eps, &batch.packed);
    assert_eq!(x.len(), batch.total_tokens() * h);
    let w = &m.weights.embeddings;
    let (id, pos) = (5usize, 1usize);
    let sum: Vec<f32> =
        (0..e).map(|j| (w.word.data[id * e + j] + w.token_type.data[j]) + w.position.data[pos * e + j]).collect();
    let ln =
        reference::layernorm_rows(&sum, &w.layer_norm.gamma.data, &w.layer_norm.beta.data, m.config.layer_norm_eps);
    let want = reference::linear(&ln, e, &proj.weight.data, Some(&proj.bias.data));
    let err = x[h..2 * h].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err < 1e-6, "token 1: {err}");
    let out = reference::forward(&m, &batch, &Options::default()).unwrap();
    assert_eq!(out.sequences[1].last_hidden_state.len(), 2 * h);
}
