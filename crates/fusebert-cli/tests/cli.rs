//! The `fusebert` binary end to end: output against the golden files, exit codes, error
//! messages on stderr (`error: ...`, never a panic).
#[path = "../../fusebert/tests/golden_support/mod.rs"]
mod golden_support;
#[path = "../../fusebert/tests/tiny_model/mod.rs"]
mod tiny_model;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use golden_support::{model_dir, Golden};
use serde_json::Value;

fn fusebert(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusebert"));
    cmd.args(args).env_remove("FUSEBERT_MODEL").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run fusebert");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as one JSON value per line; asserts success.
fn json_lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "fusebert failed: {}", stderr(o));
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A failure: exit code `code`, `error: ...` on stderr, no panic.
fn assert_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr should start with `error: `: {err}");
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    golden_support::max_abs_diff(a, b)
}

#[test]
fn embed_fox_matches_golden() {
    let g = Golden::load("fox");
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    // The folder has a Normalize module: unit vectors by default, as sentence-transformers.
    let folder = json_lines(&fusebert(&["embed", "--model", dir, &g.texts[0]], None));
    assert_eq!(folder.len(), 1);
    assert_eq!(folder[0]["text"], g.texts[0].as_str());
    assert_eq!(folder[0]["tokens"], g.valid_len(0));
    let e = max_diff(&floats(&folder[0]["embedding"]), &g.sentence_embedding_l2norm);
    assert!(e <= 1e-5, "embed vs golden sentence_embedding_l2norm: {e}");

    let plain = json_lines(&fusebert(&["embed", "--model", dir, "--no-normalize", &g.texts[0]], None));
    let e = max_diff(&floats(&plain[0]["embedding"]), &g.pooled);
    assert!(e <= 1e-5, "embed --no-normalize vs golden pooled: {e}");

    let normed = json_lines(&fusebert(&["embed", "--model", dir, "--normalize", &g.texts[0]], None));
    assert_eq!(normed, folder);
}

/// No TEXT: one input per stdin line (`\r\n` accepted), same results as arguments.
#[test]
fn embed_reads_lines_from_stdin() {
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    let from_args = json_lines(&fusebert(&["embed", "--model", dir, "Hello!", "second line"], None));
    let from_stdin = json_lines(&fusebert(&["embed", "--model", dir], Some(b"Hello!\r\nsecond line\n")));
    assert_eq!(from_args, from_stdin);
    assert_eq!(from_stdin.len(), 2);
}

#[test]
fn invalid_utf8_on_stdin() {
    let dir = model_dir();
    let o = fusebert(&["embed", "--model", dir.to_str().unwrap()], Some(b"fine\nbad \xff\xfe byte\n"));
    assert_error(&o, 1, "UTF-8");
}

#[test]
fn cuda_without_gpu() {
    let dir = model_dir();
    let o = fusebert(&["embed", "--device", "cuda", "--model", dir.to_str().unwrap(), "hi"], None);
    let gpu = matches!(fusebert::device::cuda::device_count(), Ok(n) if n > 0);
    if gpu {
        // With a GPU the device opens; until the device forward pass lands it must still fail
        // cleanly rather than fall back silently.
        assert!(!stderr(&o).contains("panicked"));
        return;
    }
    assert_error(&o, 1, "CUDA");
    let o = fusebert(&["info", "--cuda-available"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn too_long_input_needs_truncate() {
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    // The limit is the folder's max_seq_length (256), as sentence-transformers and TEI.
    let long = "token ".repeat(600);
    assert_error(
        &fusebert(&["embed", "--model", dir, "ok", &long], None),
        1,
        "input 1 has 602 tokens, more than the input limit of 256",
    );
    let out = json_lines(&fusebert(&["embed", "--model", dir, "--truncate", "ok", &long], None));
    assert_eq!(out[1]["tokens"], 256);
    // --max-length raises it up to the position limit: a 500-token text is embedded whole.
    let five_hundred = "token ".repeat(498);
    let out = json_lines(&fusebert(&["embed", "--model", dir, "--max-length", "512", &five_hundred], None));
    assert_eq!(out[0]["tokens"], 500);
    let out = json_lines(&fusebert(&["embed", "--model", dir, "--max-length", "512", "--truncate", &long], None));
    assert_eq!(out[0]["tokens"], 512);
}

#[test]
fn classify_tiny_model_with_labels() {
    let spec = tiny_model::Spec { vocab: 30522, labels: 3, ..Default::default() };
    let dir = spec.write();
    std::fs::copy(model_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let out = json_lines(&fusebert(&["classify", "--model", dir.path().to_str().unwrap(), "a b c", "hello"], None));
    assert_eq!(out.len(), 2);
    for v in &out {
        let labels = v["labels"].as_array().unwrap();
        assert_eq!(labels.len(), 3);
        let scores: Vec<f64> = labels.iter().map(|l| l["score"].as_f64().unwrap()).collect();
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let best = scores.iter().cloned().fold(f64::MIN, f64::max);
        let best_label = &labels[scores.iter().position(|&s| s == best).unwrap()]["label"];
        assert_eq!(&v["label"], best_label);
        assert_eq!(v["score"].as_f64().unwrap(), best);
        assert!(labels.iter().all(|l| l["label"].as_str().unwrap().starts_with("class_") && l["logit"].is_number()));
    }
}

#[test]
fn classify_without_head_is_an_error() {
    let dir = model_dir();
    assert_error(&fusebert(&["classify", "--model", dir.to_str().unwrap(), "hi"], None), 1, "no classifier head");
}

#[test]
fn model_folder_errors() {
    assert_error(&fusebert(&["embed", "--model", "/nonexistent/m", "hi"], None), 1, "/nonexistent/m");
    // FUSEBERT_MODEL is the default when --model is absent.
    let o = Command::new(env!("CARGO_BIN_EXE_fusebert"))
        .args(["embed", "hi"])
        .env("FUSEBERT_MODEL", "/nonexistent/from-env")
        .output()
        .unwrap();
    assert_error(&o, 1, "/nonexistent/from-env");
}

#[test]
fn usage_errors_exit_2() {
    let o = fusebert(&["embed", "--device", "tpu", "hi"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = fusebert(&["frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
    let dir = model_dir();
    assert_error(
        &fusebert(&["embed", "--model", dir.to_str().unwrap(), "--precision", "int8", "hi"], None),
        1,
        "--precision",
    );
}

#[test]
fn info_lists_kernels() {
    let o = fusebert(&["info"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("PTX arch: {}", fusebert::ptx::PTX_ARCH)), "{out}");
    for m in fusebert::ptx::MODULES {
        for k in m.kernels {
            assert!(out.contains(&format!("{}::{k}", m.name)) && out.contains(k), "{k} missing from:\n{out}");
        }
    }
    assert!(out.contains("registers") && out.contains("CUDA"), "{out}");
}

use fusebert::model::compare::cosine;

/// The device path end to end through the CLI: the emulator runs the kernels' PTX.
#[test]
fn embed_on_the_emulator_matches_golden_in_fp16_and_int8() {
    let g = Golden::load("fox");
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    for (precision, min_cos) in [("f16", 0.9999), ("int8", 0.995)] {
        let out = json_lines(&fusebert(
            &["embed", "--model", dir, "--device", "emu", "--precision", precision, &g.texts[0]],
            None,
        ));
        assert_eq!(out[0]["tokens"], g.valid_len(0));
        let c = cosine(&floats(&out[0]["embedding"]), &g.pooled);
        assert!(c >= min_cos, "{precision}: cosine vs golden {c}");
    }
}

#[test]
fn verify_passes_on_the_emulator_and_reports_launches() {
    let o = fusebert(&["verify", "--device", "emu", "--counters", "Hello!"], None);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "verify failed: {text}{}", stderr(&o));
    assert!(text.contains("layer 6") && text.contains("PASS"), "{text}");
    // 2 + 5 per layer (layernorms fused into the residual GEMMs) + gather + pooler
    assert!(text.contains("launches: 34 (expected 34"), "{text}");
}

/// `--arch sm_90`: the emulator as an H100 selects the Hopper kernels after their self-check
/// (int8 and fp16 pass; the counters name the `_sm90` kernels, the residual GEMMs with their
/// layernorm fused and split over K; fp16 28 launches, the mma.sync pass's 34 less one per
/// layer: FFN1, FFN2 and LN2 run as `ffn_block_f16_sm90_n64`; int8 35, the
/// mma.sync pass's 47 less two per layer: FFN1 quantises its own output, `gemm_int8_sm90_n192_cqa`
/// here (unsplit: the cluster entry), and no `quantize_i8_asym` launch runs; the attention writes
/// the context's codes, `attention_int8_sm90_packed_d32`, and no context quantize launch runs);
/// `--kernels sm80` on the same emulator goes back to
/// mma.sync (34 launches). One test per run, so the two test threads share them.
#[test]
fn verify_on_an_sm90_emulator_runs_the_hopper_kernels_in_fp16() {
    verify_on_an_sm90_emulator("f16");
}

#[test]
fn verify_on_an_sm90_emulator_runs_the_hopper_kernels_in_int8() {
    verify_on_an_sm90_emulator("int8");
}

fn verify_on_an_sm90_emulator(precision: &str) {
    let o = fusebert(
        &["verify", "--device", "emu", "--arch", "sm_90", "--precision", precision, "--counters", "Hello!"],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{precision}: {text}{}", stderr(&o));
    assert!(text.contains("kernels: sm90") && text.contains("self-check gemm: pass"), "{text}");
    let gemm = if precision == "f16" { "gemm_f16_sm90" } else { "gemm_int8_sm90" };
    let attention = if precision == "f16" { "attention_sm90_packed_d32" } else { "attention_int8_sm90_packed_d32" };
    assert!(text.contains(gemm) && text.contains(attention) && text.contains("PASS"), "{text}");
    // fp16: the mma.sync schedule's count less one a layer (FFN1, FFN2 and LN2 run as the
    // FFN block for a short text); int8 adds the embeddings' quantize launch, and FFN1 and
    // the attention quantise their own outputs
    let launches = if precision == "f16" { 28 } else { 35 };
    if precision == "int8" {
        // (K 384 is one int8 chunk: unsplit, so the cluster entries: FFN1's quantisation on
        // 8 CTAs, the attention-output layernorm on 3 of 128 columns)
        assert!(text.contains("gemm_int8_sm90_n192_cqa") && !text.contains("quantize_i8_asym"), "{text}");
        assert!(text.contains("gemm_int8_sm90_cln3"), "{text}");
    }
    // one short text: the GEMMs are split over K where K has several chunks (fp16: all of
    // MiniLM's, FFN1 and FFN2 inside the block; int8: FFN2, K 1536; K 384 is one int8 chunk)
    if precision == "f16" {
        assert!(text.contains("ffn_block_f16_sm90_n64") && text.contains("gemm_f16_sm90_sk "), "{text}");
    } else {
        assert!(text.contains("gemm_int8_sm90_sk_ln"), "{text}");
    }
    assert!(text.contains(&format!("launches: {launches} (expected {launches}")), "{text}");
}

#[test]
fn verify_with_kernels_sm80_on_an_sm90_emulator_runs_mma_sync() {
    let o =
        fusebert(&["verify", "--device", "emu", "--arch", "sm_90", "--kernels", "sm80", "--counters", "Hello!"], None);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success() && text.contains("kernels: sm80") && !text.contains("_sm90 "), "{text}");
    assert!(text.contains("launches: 34 (expected 34"), "{text}");
}

/// `fusebert emu run` through the binary: a kernel from a PTX file with safetensors in and out,
/// counters as JSON, and a sanitizer finding (out-of-bounds) as a non-zero exit with the report.
#[test]
fn emu_run_executes_a_ptx_kernel_and_reports_findings() {
    use safetensors::tensor::TensorView;
    let dir = tiny_model::TempDir::new("emu-run");
    let ptx = dir.path().join("cases.ptx");
    std::fs::write(&ptx, include_str!("../../fusebert-emu/src/testdata/sanitize_cases.ptx")).unwrap();
    let x: Vec<f32> = (0..50).map(|i| i as f32 * 0.5 - 3.0).collect();
    let xb: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
    let inputs = dir.path().join("in.safetensors");
    let view = TensorView::new(safetensors::Dtype::F32, vec![50], &xb).unwrap();
    std::fs::write(&inputs, safetensors::serialize(vec![("x", view)], None).unwrap()).unwrap();
    let output = dir.path().join("out.safetensors");
    let run = |n: &str| {
        let (p, i, o) = (ptx.to_str().unwrap(), inputs.to_str().unwrap(), output.to_str().unwrap());
        fusebert(
            &[
                "emu",
                "run",
                p,
                "--kernel",
                "scale_f32",
                "--grid",
                "2",
                "--block",
                "32",
                "--inputs",
                i,
                "--output",
                o,
                "--arg",
                "buf:x",
                "--arg",
                "out:y:F32:50",
                "--arg",
                "f32:-2",
                "--arg",
                &format!("i32:{n}"),
                "--counters",
            ],
            None,
        )
    };
    let ok = run("50");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("global_load_bytes"));
    let st_bytes = std::fs::read(&output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let y: Vec<f32> = bytemuck::cast_slice(st.tensor("y").unwrap().data()).to_vec();
    assert_eq!(y, x.iter().map(|v| -2.0 * v).collect::<Vec<_>>());
    // n = 64 > 50 elements: threads 50..63 read and write past both buffers
    let bad = run("64");
    assert!(!bad.status.success());
    let msg = stderr(&bad);
    assert!(msg.contains("scale_f32") && msg.contains("out-of-bounds"), "{msg}");
}
