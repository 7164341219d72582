//! The `fusebert` binary on the CUDA driver stand-in: `FUSEBERT_CUDA_DRIVER=emulator` is the
//! binary's opt-in (the library never installs the stand-in), and the GPU check script's dry run.

/// `FUSEBERT_CUDA_DRIVER` selects the stand-in for the CLI: `info --cuda-available` exits 0 and
/// `verify --device cuda` passes fp16 and int8 on the bundled model, in both modes.
#[test]
fn cli_verify_on_cuda_passes_under_the_stand_in() {
    let exe = env!("CARGO_BIN_EXE_fusebert");
    let ok = std::process::Command::new(exe)
        .args(["info", "--cuda-available"])
        .env("FUSEBERT_CUDA_DRIVER", "emulator")
        .status()
        .unwrap();
    assert!(ok.success());
    let bad = std::process::Command::new(exe)
        .args(["info", "--cuda-available"])
        .env("FUSEBERT_CUDA_DRIVER", "bogus")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    for (mode, precision) in [("emulator:eager", "f16"), ("emulator:deferred", "int8"), ("emulator:deferred", "f16")] {
        let out = std::process::Command::new(exe)
            .args(["verify", "--device", "cuda", "--precision", precision, "Hello!", "The quick brown fox."])
            .env("FUSEBERT_CUDA_DRIVER", mode)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{mode} {precision}: {text}");
        assert!(text.contains("stand-in"), "{text}");
    }
}

/// `bench --device cuda` replays a graph by default and says so; `--no-graph` does not.
/// `embed --device cuda` equals the emulator device path exactly (same PTX, same emulator).
#[test]
fn cli_bench_reports_graphs_and_embed_matches_the_emulator() {
    let exe = env!("CARGO_BIN_EXE_fusebert");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe).args(args).env("FUSEBERT_CUDA_DRIVER", "emulator").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let bench = ["bench", "--device", "cuda", "--batch", "2", "--tokens", "9", "--iters", "2", "--json"];
    let json: serde_json::Value = serde_json::from_str(run(&bench).trim()).unwrap();
    assert_eq!(json["cuda_graph"], serde_json::Value::Bool(true), "{json}");
    let mut no_graph = bench.to_vec();
    no_graph.push("--no-graph");
    let json: serde_json::Value = serde_json::from_str(run(&no_graph).trim()).unwrap();
    assert_eq!(json["cuda_graph"], serde_json::Value::Bool(false), "{json}");
    let texts = ["The quick brown fox jumps over the lazy dog.", "Hello!"];
    for precision in ["f16", "int8"] {
        let cuda = run(&[&["embed", "--device", "cuda", "--precision", precision][..], &texts[..]].concat());
        let emu = run(&[&["embed", "--device", "emu", "--precision", precision][..], &texts[..]].concat());
        assert_eq!(cuda, emu, "{precision}");
        assert_eq!(cuda.lines().count(), 2);
    }
}

/// scripts/gpu-check.sh on a machine without a GPU: says what it would do, runs nothing, exits
/// non-zero.
#[test]
fn gpu_check_dry_run_without_a_gpu_exits_non_zero() {
    let has_gpu = std::process::Command::new("nvidia-smi").output().is_ok_and(|o| o.status.success());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gpu-check.sh");
    let out = std::process::Command::new("bash").args([script, "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fusebert verify --device cuda") && text.contains("32x384"), "{text}");
    if !has_gpu {
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("nothing was run"), "{text}");
    }
}

/// `embed --device cuda` over a corpus uses every device the driver shows (two stand-in
/// devices here): both run batches, and the output is the single-device output, in input order.
#[test]
fn embed_uses_every_gpu_and_keeps_the_order() {
    let exe = env!("CARGO_BIN_EXE_fusebert");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/models/tiny-distilbert-mean");
    let dir = std::env::temp_dir().join(format!("fusebert-embed-gpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    let lines: Vec<String> = (0..120).map(|i| format!("line {i}: {}", "word ".repeat(1 + i % 7))).collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let run = |devices: &str, extra: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(["embed", "--device", "cuda", "--model", model, "--batch-tokens", "64", "--stats", "--input"])
            .arg(&corpus)
            .args(extra)
            .env("FUSEBERT_CUDA_DRIVER", "emulator")
            .env("FUSEBERT_CUDA_STANDIN_DEVICES", devices)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{devices} devices: {err}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    let (one, _) = run("1", &[]);
    let (two, stats) = run("2", &[]);
    assert_eq!(one.lines().count(), 120);
    assert_eq!(two, one, "two devices: not the one-device output in the same order");
    let per_device =
        stats.lines().find_map(|l| l.strip_prefix("batches per device: ")).unwrap_or_else(|| panic!("{stats}"));
    let counts: Vec<usize> = serde_json::from_str(per_device).unwrap();
    assert_eq!(counts.len(), 2, "{stats}");
    assert!(counts.iter().all(|&c| c > 0), "a device ran no batch: {stats}");
    let (chosen, _) = run("2", &["--devices", "1"]);
    assert_eq!(chosen, one, "--devices 1");
    // CUDA_VISIBLE_DEVICES=1: the process sees only device 1 (device 0, set to fail at its
    // first kernel, is never used).
    let out = std::process::Command::new(exe)
        .args(["embed", "--device", "cuda", "--model", model, "--batch-tokens", "64", "--input"])
        .arg(&corpus)
        .env("FUSEBERT_CUDA_DRIVER", "emulator")
        .env("FUSEBERT_CUDA_STANDIN_DEVICES", "2")
        .env("FUSEBERT_CUDA_STANDIN_FAIL", "0:0")
        .env("CUDA_VISIBLE_DEVICES", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), one, "CUDA_VISIBLE_DEVICES=1");
    let out = std::process::Command::new(exe)
        .args(["embed", "--device", "cuda", "--model", model, "Hello!"])
        .env("FUSEBERT_CUDA_DRIVER", "emulator")
        .env("FUSEBERT_CUDA_STANDIN_DEVICES", "2")
        .env("FUSEBERT_CUDA_STANDIN_FAIL", "0:0")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("injected failure"), "device 0 fails: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kernels time --device cuda` through the real CUDA host path (events, graphs) on the stand-in:
/// as an H100, every GEMM and attention has an mma.sync row and an `_sm90` row, each with a
/// device time (the stand-in's modelled clock) and the `_sm90` output equal to mma.sync's (int8
/// GEMMs exactly; fp16 and every layernorm within accumulation order); as an A100 the `_sm90` rows say why they are
/// skipped. Shapes off every tile size (M 63, FFN 160).
#[test]
fn kernels_time_on_the_stand_in_times_both_families() {
    let exe = env!("CARGO_BIN_EXE_fusebert");
    let run = |gpu: &str| -> serde_json::Value {
        let out = std::process::Command::new(exe)
            .args(["kernels", "time", "--device", "cuda", "--batch", "3", "--tokens", "21"])
            .args(["--hidden", "128", "--heads", "2", "--ffn", "160", "--iters", "2", "--json"])
            .env("FUSEBERT_CUDA_DRIVER", "emulator")
            .env("FUSEBERT_CUDA_STANDIN_GPU", gpu)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{gpu}: {text}{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(text.trim()).unwrap()
    };
    let h100 = run("h100-sxm");
    let rows = h100["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 36, "4 GEMMs x fp16/int8, 2 fused layernorms x fp16/int8, the fused FFN1 codes, attention x fp16/int8 (+ the context's codes), QKV + attention x fp16/int8, the FFN block; two families each: {h100}");
    for pair in rows.chunks(2) {
        let (mma, hop) = (&pair[0], &pair[1]);
        assert_eq!((mma["family"].as_str(), hop["family"].as_str()), (Some("sm80"), Some("sm90")), "{pair:?}");
        assert_eq!(mma["op"], hop["op"]);
        for (row, hopper) in [(mma, false), (hop, true)] {
            let kernels = row["kernels"].as_array().unwrap();
            assert!(!kernels.is_empty(), "{row}");
            for k in kernels {
                assert_eq!(k.as_str().unwrap().contains("_sm90"), hopper, "{row}");
            }
            assert!(row["mean_ms"].as_f64().unwrap() > 0.0, "{row}");
        }
        let diff = hop["max_rel_diff_vs_sm80"].as_f64().unwrap();
        let op = hop["op"].as_str().unwrap();
        let exact = op.contains("int8") && !op.contains("layernorm") && !op.contains("attention");
        let tol = if exact { 0.0 } else { 2e-3 };
        assert!(diff <= tol, "{op}: {diff} > {tol}");
    }
    let a100 = run("a100-80gb");
    for row in a100["rows"].as_array().unwrap() {
        match row["family"].as_str().unwrap() {
            "sm90" => {
                assert!(row["mean_ms"].is_null(), "{row}");
                assert!(row["skipped"].as_str().unwrap().contains("compute capability 9.0"), "{row}");
            }
            _ => assert!(row["mean_ms"].as_f64().unwrap() > 0.0, "{row}"),
        }
    }
    let bad = std::process::Command::new(exe)
        .args(["kernels", "time", "--device", "emu", "--hidden", "64", "--heads", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("multiple of heads"), "{err}");
}
