//! Broken models and inputs give typed errors naming the file / tensor (never a panic).
//! Each test writes a valid tiny model, then breaks one thing.
mod golden_support;
mod tiny_model;

use fusebert::model::reference::{self, Options};
use fusebert::model::BertModel;
use fusebert::tokenize::{Batch, Tokenizer};
use fusebert::Error;
use safetensors::Dtype;
use tiny_model::{Spec, TempDir, HIDDEN};

fn load_err(dir: &std::path::Path) -> Error {
    BertModel::load(dir).expect_err("loading a broken model must fail")
}

#[test]
fn tiny_model_loads_and_runs() {
    let dir = Spec::default().write();
    let m = BertModel::load(dir.path()).unwrap();
    assert_eq!(m.weights.layers.len(), 1);
    assert!(m.weights.pooler.is_some() && m.weights.classifier.is_none());
    let out = reference::forward(&m, &Batch::from_ids(vec![vec![1, 5, 2], vec![3, 2]]).unwrap(), &Options::default())
        .unwrap();
    assert_eq!(out.sequences[0].last_hidden_state.len(), 3 * HIDDEN);
    assert!(out.sequences.iter().all(|s| s.pooled.iter().all(|v| v.is_finite())));
}

#[test]
fn missing_folder() {
    let e = load_err(std::path::Path::new("/nonexistent/fusebert-model"));
    assert!(matches!(e, Error::ModelDirMissing(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/fusebert-model"), "{e}");
}

#[test]
fn missing_file() {
    let dir = Spec::default().write();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::FileMissing { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::FileMissing { .. }) && e.to_string().contains("config.json"), "{e}");
}

#[test]
fn malformed_config_json() {
    let dir = Spec::default().write();
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 8,,}").unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("config.json"), "{e}");
}

#[test]
fn unknown_hidden_act() {
    let spec = Spec::default();
    let dir = spec.write();
    let cfg = spec.config_json().replace("\"gelu\"", "\"mish\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("unknown hidden_act `mish`"), "{e}");
}

#[test]
fn hidden_not_divisible_by_heads() {
    let spec = Spec::default();
    let dir = spec.write();
    let cfg = spec.config_json().replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("not divisible"), "{e}");
}

#[test]
fn truncated_safetensors() {
    let dir = Spec::default().write();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::Safetensors { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    // Shorter than the 8-byte header length.
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }));
}

#[test]
fn corrupt_safetensors_header() {
    let dir = Spec::default().write();
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..40].copy_from_slice(&[b'#'; 32]); // JSON header garbage
    std::fs::write(&path, &bytes).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, Error::Safetensors { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    // A header length far beyond the file.
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }));
}

/// Rewrites the tiny model with `edit` applied to its tensor list.
fn with_tensors(spec: &Spec, edit: impl FnOnce(&mut Vec<tiny_model::T>)) -> TempDir {
    let dir = spec.write();
    let mut ts = spec.tensors();
    edit(&mut ts);
    tiny_model::write_safetensors(&dir.path().join("model.safetensors"), &ts);
    dir
}

#[test]
fn tensor_with_wrong_shape() {
    let name = "encoder.layer.0.intermediate.dense.weight";
    let dir = with_tensors(&Spec::default(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.shape = vec![HIDDEN, 16]; // transposed
    });
    match load_err(dir.path()) {
        Error::TensorShape { name: n, expected, got, path } => {
            assert_eq!((n.as_str(), expected, got), (name, vec![16, HIDDEN], vec![HIDDEN, 16]));
            assert!(path.ends_with("model.safetensors"));
        }
        e => panic!("expected TensorShape, got {e}"),
    }
}

#[test]
fn tensor_with_wrong_dtype() {
    let name = "embeddings.LayerNorm.weight";
    let dir = with_tensors(&Spec::default(), |ts| ts.iter_mut().find(|t| t.name == name).unwrap().dtype = Dtype::I32);
    let e = load_err(dir.path());
    assert!(matches!(&e, Error::TensorDtype { name: n, got, .. } if n == name && got == "I32"), "{e}");
}

#[test]
fn tensor_missing() {
    let name = "encoder.layer.0.attention.self.value.bias";
    let dir = with_tensors(&Spec::default(), |ts| ts.retain(|t| t.name != name));
    let e = load_err(dir.path());
    // Every missing tensor is listed in one error (here just the one).
    assert!(matches!(&e, Error::WeightsMissing { missing, .. } if missing == &[name.to_string()]), "{e}");
}

/// F32, F16 and BF16 files (with or without the `bert.` prefix) load to the same f32 weights
/// (the tiny model's values are exact in all three).
#[test]
fn dtypes_and_prefix_load_identically() {
    let base = BertModel::load(Spec::default().write().path()).unwrap();
    for (dtype, prefix) in [(Dtype::F16, ""), (Dtype::BF16, ""), (Dtype::F32, "bert."), (Dtype::F16, "bert.")] {
        let m = BertModel::load(Spec { dtype, prefix, ..Spec::default() }.write().path()).unwrap();
        assert_eq!(m.weights.layers[0].ffn1.weight.data, base.weights.layers[0].ffn1.weight.data, "{dtype} {prefix}");
        assert_eq!(m.weights.embeddings.word.data, base.weights.embeddings.word.data, "{dtype} {prefix}");
        assert_eq!(m.weights.pooler.as_ref().unwrap().weight.data, base.weights.pooler.as_ref().unwrap().weight.data);
    }
}

#[test]
fn pooler_is_optional() {
    let m = BertModel::load(Spec { pooler: false, ..Spec::default() }.write().path()).unwrap();
    assert!(m.weights.pooler.is_none());
    let out = reference::forward(&m, &Batch::from_ids(vec![vec![1, 2]]).unwrap(), &Options::default()).unwrap();
    assert!(out.sequences[0].pooler_output.is_none() && out.sequences[0].logits.is_none());
}

#[test]
fn classifier_head_with_labels() {
    let m = BertModel::load(Spec { labels: 3, prefix: "bert.", ..Spec::default() }.write().path()).unwrap();
    let head = m.weights.classifier.as_ref().unwrap();
    assert_eq!(head.labels, vec!["class_0", "class_1", "class_2"]);
    let out = reference::forward(&m, &Batch::from_ids(vec![vec![1, 2, 3]]).unwrap(), &Options::default()).unwrap();
    let s = &out.sequences[0];
    let (logits, scores) = (s.logits.as_ref().unwrap(), s.scores.as_ref().unwrap());
    assert_eq!(logits.len(), 3);
    assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    // logits = W pooler + b, recomputed here in f64.
    let p = s.pooler_output.as_ref().unwrap();
    for (c, &logit) in logits.iter().enumerate() {
        let want: f64 = head.linear.bias.data[c] as f64
            + (0..HIDDEN).map(|j| head.linear.weight.data[c * HIDDEN + j] as f64 * p[j] as f64).sum::<f64>();
        assert!((logit as f64 - want).abs() < 1e-5, "logit {c}: {logit} vs {want}");
    }
}

#[test]
fn classifier_without_pooler_is_rejected() {
    let e = load_err(Spec { labels: 2, pooler: false, ..Spec::default() }.write().path());
    assert!(
        matches!(&e, Error::WeightsMissing { missing, .. } if missing == &["pooler.dense.weight".to_string()]),
        "{e}"
    );
}

/// Real model: 600 words is more than 512 positions. Without truncation it is an error naming
/// the input; with it, the reference runs on exactly 512 tokens ending in [SEP].
#[test]
fn too_long_text_and_truncation() {
    let dir = golden_support::model_dir();
    let model = BertModel::load(&dir).unwrap();
    let limit = model.config.max_position_embeddings;
    let tok = Tokenizer::from_model_dir(&dir, limit).unwrap();
    let long = "token ".repeat(600);
    let texts = ["fine", long.as_str()];
    let e = tok.encode_batch(&texts, false).unwrap_err();
    assert!(matches!(e, Error::InputTooLong { index: 1, limit: 512, .. }), "{e}");
    let batch = tok.encode_batch(&texts, true).unwrap();
    assert_eq!(batch.lengths[1], limit);
    assert_eq!(*batch.input_ids[1].last().unwrap(), 102);
    let out = reference::forward(&model, &batch, &Options::default()).unwrap();
    assert_eq!(out.sequences[1].len, limit);
    assert!(out.sequences[1].pooled.iter().all(|v| v.is_finite()));
    // A hand-built batch over the limit is refused by the forward pass too.
    let too_long = Batch::from_ids(vec![vec![101; limit + 1]]).unwrap();
    let e = reference::forward(&model, &too_long, &Options::default()).unwrap_err();
    assert!(matches!(e, Error::InputTooLong { index: 0, .. }), "{e}");
}
