//! `fusebert bench` and `fusebert roofline` end to end: the JSON fields, per-kernel counts equal
//! to the analytic plan (launches, GEMM FLOPs), the SVG plots, typed errors.
use std::process::Command;

use fusebert::model::{synthetic, Precision};
use fusebert::perf::{forward_plan, Heads};
use serde_json::Value;

fn fusebert(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fusebert")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn bench_on_emulator(precision: &str, p: Precision) {
    let plot = std::env::temp_dir().join(format!("fusebert-bench-{}-{precision}.svg", std::process::id()));
    let (code, out, err) = fusebert(&[
        "bench",
        "--device",
        "emu",
        "--config",
        "minilm-l6",
        "--precision",
        precision,
        "--batch",
        "1,2",
        "--tokens",
        "9",
        "--warmup",
        "0",
        "--iters",
        "2",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "stderr is not a terminal: no progress output expected, got {err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let c = synthetic::shape_config("minilm-l6").unwrap();
    for (v, b) in lines.iter().zip([1usize, 2]) {
        for f in
            ["device", "precision", "batch", "tokens", "iterations", "latency_ms", "sequences_per_s", "tokens_per_s"]
        {
            assert!(!v[f].is_null(), "missing {f}: {v}");
        }
        assert_eq!(v["batch"], b);
        assert_eq!(v["tokens"], 9);
        assert_eq!(v["iterations"], 2);
        assert_eq!(v["precision"], precision);
        let lat = &v["latency_ms"];
        let (min, p50, p90, p99) = (
            lat["min"].as_f64().unwrap(),
            lat["p50"].as_f64().unwrap(),
            lat["p90"].as_f64().unwrap(),
            lat["p99"].as_f64().unwrap(),
        );
        assert!(min > 0.0 && min <= p50 && p50 <= p90 && p90 <= p99, "{lat}");
        let tps = v["tokens_per_s"].as_f64().unwrap();
        assert!((tps - (9 * b) as f64 / (lat["mean"].as_f64().unwrap() / 1e3)).abs() < 1e-6 * tps);
        assert_eq!(v["counts"], "emulator counters");
        // an embedding model asked for the default outputs: no pooler, no classifier
        let plan = forward_plan(&c, p, &vec![9; b], Heads::NONE);
        let kernels = v["kernels"].as_array().unwrap();
        // launch counts per kernel name equal the plan's
        for k in kernels {
            let name = k["name"].as_str().unwrap();
            let planned = plan.launches.iter().filter(|l| l.kernel == name).count() as u64;
            assert_eq!(k["launches"].as_u64().unwrap(), planned, "{name}");
        }
        let total: u64 = kernels.iter().map(|k| k["launches"].as_u64().unwrap()).sum();
        assert_eq!(total as usize, plan.launches.len());
        // GEMM FLOPs: measured tensor FLOPs = the plan's executed count; useful = 2mnk closed form
        let gemm = |f: &str| -> u64 {
            kernels
                .iter()
                .filter(|k| k["name"].as_str().unwrap().starts_with("gemm"))
                .map(|k| k[f].as_u64().unwrap())
                .sum()
        };
        let planned_tensor: u64 = plan.launches.iter().filter(|l| l.gemm.is_some()).map(|l| l.tensor_flops).sum();
        assert_eq!(gemm("flops"), planned_tensor);
        let t = 9 * b;
        let closed = 2 * t * 6 * (4 * 384 * 384 + 2 * 384 * 1536);
        assert_eq!(gemm("useful_flops"), closed as u64);
        assert!(kernels
            .iter()
            .all(|k| k["load_bytes"].as_u64().unwrap() > 0 && k["store_bytes"].as_u64().unwrap() > 0));
        assert_host_bytes(v, b, 9);
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 4, "two shapes, two panels");
}

/// The bytes one `embed`-style pass (default outputs of an embedding model) moves: up, one
/// copy of the packed ids, positions, token types and cu_seqlens; down, the pooled f32
/// embeddings and nothing else (minilm-l6: hidden 384).
fn assert_host_bytes(v: &Value, b: usize, t: usize) {
    let n = |f: &str| v[f].as_u64().unwrap_or_else(|| panic!("missing {f}: {v}")) as usize;
    assert_eq!((n("h2d_copies"), n("h2d_bytes")), (1, 4 * (3 * b * t + b + 1)), "{v}");
    assert_eq!((n("d2h_copies"), n("d2h_bytes")), (1, b * 384 * 4), "{v}");
}

/// `bench` through the CUDA backend on the driver stand-in: the same bytes each way, and the
/// plain table says them too.
#[test]
fn bench_on_the_cuda_stand_in_reports_the_host_bytes() {
    let run = |json: bool| {
        let mut args = vec!["bench", "--device", "cuda", "--config", "minilm-l6", "--batch", "2", "--tokens", "7"];
        args.extend(["--warmup", "1", "--iters", "1"]);
        if json {
            args.push("--json");
        }
        let o = Command::new(env!("CARGO_BIN_EXE_fusebert"))
            .args(&args)
            .env("FUSEBERT_CUDA_DRIVER", "emulator:deferred")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(run(true).trim()).unwrap();
    assert!(v["device"].as_str().unwrap().contains("stand-in"), "{v}");
    assert_eq!(v["cuda_graph"], true);
    assert_host_bytes(&v, 2, 7);
    let table = run(false);
    let (head, row) = (table.lines().next().unwrap(), table.lines().nth(1).unwrap());
    assert!(head.contains("h2d B") && head.contains("d2h B"), "{table}");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[cols.len() - 2..], [(4 * (3 * 2 * 7 + 3)).to_string(), (2 * 384 * 4).to_string()], "{table}");
}

#[test]
fn bench_json_on_emulator_f16_matches_the_plan() {
    bench_on_emulator("f16", Precision::F16);
}

#[test]
fn bench_json_on_emulator_int8_matches_the_plan() {
    bench_on_emulator("int8", Precision::Int8);
}

#[test]
fn bench_bad_arguments_are_errors() {
    let (code, _, err) = fusebert(&["bench", "--device", "emu", "--config", "gpt2", "--iters", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("gpt2") && err.contains("bert-base"), "{err}");
    let (code, _, err) = fusebert(&["bench", "--device", "emu", "--config", "minilm-l6", "--batch", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("positive"), "{err}");
    let (code, _, err) =
        fusebert(&["bench", "--device", "emu", "--config", "minilm-l6", "--tokens", "513", "--iters", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("max_position_embeddings"), "{err}");
}

/// `--profile` on the emulator: host time per kernel (the forward pass's kernels) and the
/// per-class table; on another device it is a typed error.
#[test]
fn bench_profile_on_emulator_names_kernels_and_classes() {
    let (code, out, err) = fusebert(&[
        "bench",
        "--device",
        "emu",
        "--config",
        "minilm-l6",
        "--tokens",
        "16",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--profile",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host time per kernel") && out.contains("gemm_f16") && out.contains("attention"), "{out}");
    assert!(out.contains("per instruction class") && out.contains("tensor") && out.contains("total"), "{out}");
    let (code, _, err) = fusebert(&["bench", "--device", "cpu", "--profile"]);
    assert_eq!(code, 1);
    assert!(err.contains("device"), "{err}");
}

/// `verify --config`: a built-in shape with random weights against the CPU reference, on
/// synthetic ids; bad shapes are typed errors.
#[test]
fn verify_a_builtin_shape_with_random_weights() {
    let (code, out, err) =
        fusebert(&["verify", "--config", "minilm-l6", "--batch", "2", "--tokens", "12", "--precision", "int8"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("random weights, 2 x 12 ids") && out.contains("layer 6") && out.contains("PASS"), "{out}");
    let (code, _, err) = fusebert(&["verify", "--config", "minilm-l6", "--tokens", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("positive"), "{err}");
    let (code, _, err) = fusebert(&["verify", "--config", "gpt2"]);
    assert_eq!(code, 1);
    assert!(err.contains("gpt2"), "{err}");
    let (code, _, _) = fusebert(&["verify", "--batch", "2"]);
    assert_eq!(code, 2, "--batch needs --config (a usage error)");
}

#[test]
fn roofline_json_and_plot() {
    let plot = std::env::temp_dir().join(format!("fusebert-roofline-{}.svg", std::process::id()));
    let (code, out, err) = fusebert(&[
        "roofline",
        "--gpu",
        "a100-80gb",
        "--config",
        "bert-base",
        "--batch",
        "32",
        "--tokens",
        "128",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let (total, floor) = (v["total_ms"].as_f64().unwrap(), v["floor_ms"].as_f64().unwrap());
    assert!(floor > 0.0 && total > floor && total < 10.0, "{v}");
    for f in ["sms", "peak_tflops_f16", "peak_tops_int8", "mma_sync_fraction", "dram_gbps", "l2_bytes", "launch_us"] {
        assert!(v["gpu"][f].is_number(), "gpu.{f}");
    }
    let kernels = v["kernels"].as_array().unwrap();
    assert!(kernels.iter().all(|k| ["compute", "memory", "latency"].contains(&k["bound"].as_str().unwrap())));
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    for k in kernels {
        assert!(svg.contains(k["name"].as_str().unwrap()));
    }
    // the table form says it is a prediction; --graphs lowers a launch-bound pass
    let (_, table, _) = fusebert(&["roofline", "--gpu", "h100-sxm", "--config", "minilm-l6"]);
    assert!(table.contains("PREDICTED"), "{table}");
    let total_of = |extra: &[&str]| -> f64 {
        let mut a = vec!["roofline", "--gpu", "h200", "--config", "minilm-l6", "--json"];
        a.extend_from_slice(extra);
        let (_, o, _) = fusebert(&a);
        serde_json::from_str::<Value>(o.trim()).unwrap()["total_ms"].as_f64().unwrap()
    };
    assert!(total_of(&["--graphs"]) < total_of(&[]));
    let (code, _, err) = fusebert(&["roofline", "--gpu", "v100"]);
    assert_eq!(code, 1);
    assert!(err.contains("v100"), "{err}");
}
