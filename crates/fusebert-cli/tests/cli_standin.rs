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
