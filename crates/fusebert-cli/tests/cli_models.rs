//! `fusebert embed / classify / rerank / info --model` on the model zoo (`tests/models/`)
//! against the golden outputs of sentence-transformers / transformers (`tests/golden/<name>/`):
//! exactly the commands the issue names (`embed --model DIR --truncate [--prompt-name P]`, no
//! other flags), on the CPU reference (atol 1e-4) and, where the device path implements the
//! model, on the emulator in fp16 (embeddings: 1 - cosine <= 1e-4; logits: atol 5e-3).
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use fusebert::model::compare::cosine;
use safetensors::SafeTensors;
use serde_json::Value;

fn fusebert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fusebert"))
        .args(args)
        .env_remove("FUSEBERT_MODEL")
        .stdin(Stdio::null())
        .output()
        .expect("run fusebert")
}

fn json_lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "fusebert failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn assert_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: ") && err.contains(needle) && !err.contains("panicked"), "{err}");
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn model(name: &str) -> String {
    tests_dir().join("models").join(name).to_str().unwrap().to_string()
}

/// Every case of a fixture: name, inputs (`texts`, `prompt_name`, `query`).
fn cases(name: &str) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(tests_dir().join("golden").join(name).join("cases.json")).unwrap();
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    map.into_iter().collect()
}

/// Golden `[rows, n]` tensor of a case, as rows.
fn golden(name: &str, case: &str, tensor: &str) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(tests_dir().join("golden").join(name).join(format!("{case}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(tensor).unwrap();
    let flat: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    flat.chunks(t.shape()[1]).map(<[f32]>::to_vec).collect()
}

fn texts(inputs: &Value) -> Vec<String> {
    inputs["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// `fusebert embed --model DIR --truncate [--prompt-name P] [device...] TEXT...` per case,
/// checked with `check(got, want)` per text; returns the number of texts checked.
fn embed_cases(name: &str, device: &[&str], check: impl Fn(&[f32], &[f32]) -> Result<(), String>) -> usize {
    let mut n = 0;
    for (case, inputs) in cases(name) {
        let dir = model(name);
        let mut args = vec!["embed", "--model", &dir, "--truncate"];
        if let Some(p) = inputs["prompt_name"].as_str() {
            args.extend(["--prompt-name", p]);
        }
        args.extend(device);
        let t = texts(&inputs);
        args.extend(t.iter().map(String::as_str));
        let out = json_lines(&fusebert(&args));
        let want = golden(name, &case, "sentence_embedding");
        assert_eq!(out.len(), want.len(), "{name}/{case}");
        for (i, (line, w)) in out.iter().zip(&want).enumerate() {
            assert_eq!(line["text"], t[i].as_str(), "{name}/{case}: text is the input, without the prompt");
            check(&floats(&line["embedding"]), w).unwrap_or_else(|e| panic!("{name}/{case}[{i}]: {e}"));
            n += 1;
        }
    }
    n
}

/// The logits `classify` (or `rerank`, for cases with a query) prints, in input order.
fn logits_cases(name: &str, device: &[&str], atol: f32) -> usize {
    let mut n = 0;
    for (case, inputs) in cases(name) {
        let dir = model(name);
        let t = texts(&inputs);
        let mut args = match inputs["query"].as_str() {
            Some(q) => vec!["rerank", "--model", &dir, "--query", q],
            None => vec!["classify", "--model", &dir],
        };
        args.extend(device);
        args.extend(t.iter().map(String::as_str));
        let out = json_lines(&fusebert(&args));
        let got: Vec<Vec<f32>> = if inputs["query"].is_string() {
            let mut lines = out.clone();
            lines.sort_by_key(|l| l["index"].as_u64().unwrap());
            lines.iter().map(|l| vec![l["logit"].as_f64().unwrap() as f32]).collect()
        } else {
            out.iter()
                .map(|l| l["labels"].as_array().unwrap().iter().map(|x| x["logit"].as_f64().unwrap() as f32).collect())
                .collect()
        };
        let want = golden(name, &case, "logits");
        assert_eq!(got.len(), want.len());
        let err = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err <= atol, "{name}/{case}: max abs logit err {err} > {atol}");
        n += t.len();
    }
    n
}

fn atol_1e4(got: &[f32], want: &[f32]) -> Result<(), String> {
    let e = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    (got.len() == want.len() && e <= 1e-4).then_some(()).ok_or(format!(
        "max abs err {e} (len {} vs {})",
        got.len(),
        want.len()
    ))
}

fn cosine_1e4(got: &[f32], want: &[f32]) -> Result<(), String> {
    let c = cosine(got, want);
    (got.len() == want.len() && 1.0 - c <= 1e-4).then_some(()).ok_or(format!("1 - cosine = {}", 1.0 - c))
}

const EMU_F16: [&str; 4] = ["--device", "emu", "--precision", "f16"];

#[test]
fn embed_follows_the_folder_on_cpu() {
    assert_eq!(embed_cases("tiny-roberta-cls", &[], atol_1e4), 8);
    assert_eq!(embed_cases("tiny-distilbert-mean", &[], atol_1e4), 5);
    assert_eq!(embed_cases("tiny-bert-max-hd48", &[], atol_1e4), 5);
}

#[test]
fn classify_and_rerank_on_cpu() {
    assert_eq!(logits_cases("tiny-roberta-classifier", &[], 1e-4), 5);
    assert_eq!(logits_cases("tiny-bert-crossencoder", &[], 1e-4), 3);
}

/// Every fixture through the device path (the kernels' PTX on the emulator), fp16: RoBERTa head
/// dim 16 with CLS + Normalize + prompts, DistilBERT (no token types), tanh GELU + max pooling
/// at head dim 48, RoBERTa's classification head, BERT pairs.
#[test]
fn fixtures_on_the_emulator_in_fp16() {
    assert_eq!(embed_cases("tiny-roberta-cls", &EMU_F16, cosine_1e4), 8);
    assert_eq!(embed_cases("tiny-bert-max-hd48", &EMU_F16, cosine_1e4), 5);
    assert_eq!(embed_cases("tiny-distilbert-mean", &EMU_F16, cosine_1e4), 5);
    assert_eq!(logits_cases("tiny-roberta-classifier", &EMU_F16, 5e-3), 5);
    assert_eq!(logits_cases("tiny-bert-crossencoder", &EMU_F16, 5e-3), 3);
}

#[test]
fn rerank_prints_index_score_logit_best_first() {
    let dir = model("tiny-bert-crossencoder");
    let out = json_lines(&fusebert(&["rerank", "--model", &dir, "--query", "q", "a", "bb b", "c c c"]));
    assert_eq!(out.len(), 3);
    let mut seen: Vec<u64> = out.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    for l in &out {
        let (s, z) = (l["score"].as_f64().unwrap(), l["logit"].as_f64().unwrap());
        assert!((s - 1.0 / (1.0 + (-z).exp())).abs() < 1e-6, "score is sigmoid(logit): {l}");
    }
    assert!(out.windows(2).all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()), "sorted by score");
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    // A classifier with 3 labels is not a reranker.
    assert_error(&fusebert(&["rerank", "--model", &model("tiny-roberta-classifier"), "--query", "q", "a"]), "3 labels");
}

#[test]
fn classify_pairs_equal_rerank_logits() {
    let dir = model("tiny-bert-crossencoder");
    let r = json_lines(&fusebert(&["rerank", "--model", &dir, "--query", "the query", "one text"]));
    let c = json_lines(&fusebert(&["classify", "--pairs", "--model", &dir, "the query\tone text"]));
    assert_eq!(c[0]["text_pair"], "one text");
    assert_eq!(c[0]["labels"][0]["logit"], r[0]["logit"]);
    assert_error(&fusebert(&["classify", "--pairs", "--model", &dir, "no tab here"]), "no TAB");
}

#[test]
fn embed_overrides_and_prompts() {
    let dir = model("tiny-roberta-cls");
    let folder = json_lines(&fusebert(&["embed", "--model", &dir, "Hello world."]));
    let e = floats(&folder[0]["embedding"]);
    let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "Normalize module is the default: |e| = {norm}");
    let raw =
        floats(&json_lines(&fusebert(&["embed", "--model", &dir, "--no-normalize", "Hello world."]))[0]["embedding"]);
    assert!(cosine(&raw, &e) > 0.999_999 && raw.iter().map(|x| x * x).sum::<f32>().sqrt() != 1.0);
    let mean = floats(
        &json_lines(&fusebert(&["embed", "--model", &dir, "--pooling", "mean", "Hello world."]))[0]["embedding"],
    );
    assert!(cosine(&mean, &e) < 0.9999, "--pooling mean differs from the folder's cls");
    // --prompt TEXT is the same as the named prompt with that text.
    let named = json_lines(&fusebert(&["embed", "--model", &dir, "--prompt-name", "query", "x"]));
    let text = json_lines(&fusebert(&["embed", "--model", &dir, "--prompt", "query: ", "x"]));
    assert_eq!(named, text);
    assert_error(&fusebert(&["embed", "--model", &dir, "--prompt-name", "nope", "x"]), "no prompt named `nope`");
    let o = fusebert(&["embed", "--model", &dir, "--pooling", "median", "x"]);
    assert_eq!(o.status.code(), Some(2), "a bad --pooling is a usage error");
}

#[test]
fn input_limit_is_max_seq_length_and_max_length_overrides_it() {
    let dir = model("tiny-distilbert-mean");
    let long = "word ".repeat(40);
    assert_error(&fusebert(&["embed", "--model", &dir, &long]), "more than the input limit of 16");
    assert_eq!(json_lines(&fusebert(&["embed", "--model", &dir, "--truncate", &long]))[0]["tokens"], 16);
    let whole = json_lines(&fusebert(&["embed", "--model", &dir, "--max-length", "512", &long]));
    assert!(whole[0]["tokens"].as_u64().unwrap() > 16);
    assert_error(&fusebert(&["embed", "--model", &dir, "--max-length", "513", "x"]), "position limit of 512");
}

#[test]
fn info_prints_the_pooling() {
    for (name, want) in [
        ("tiny-roberta-cls", "pooling: cls"),
        ("tiny-bert-max-hd48", "pooling: max"),
        ("tiny-distilbert-mean", "pooling: mean"),
    ] {
        let o = fusebert(&["info", "--model", &model(name)]);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(want), "{name}: {text}");
    }
}

/// `fusebert verify` works for every architecture the loader accepts: it runs on every folder of
/// the model zoo (BERT, RoBERTa with its position offset, DistilBERT, classifiers and
/// cross-encoders), fp16 and int8 on the emulator, with the model's own tokenisation, and
/// passes its tolerances (exit 0, "PASS").
#[test]
fn verify_passes_on_every_model_folder_in_fp16_and_int8() {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(tests_dir().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    folders.sort();
    assert!(folders.len() >= 5, "the model zoo: {folders:?}");
    for dir in &folders {
        for precision in ["f16", "int8"] {
            let d = dir.to_str().unwrap();
            let out =
                fusebert(&["verify", "--model", d, "--device", "emu", "--precision", precision, "Hello!", "A b c."]);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("PASS"), "{d} {precision}: {text}");
        }
    }
}
