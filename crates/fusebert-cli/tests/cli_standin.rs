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
