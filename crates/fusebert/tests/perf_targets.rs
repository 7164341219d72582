//! Issue 14's targets, pinned: the roofline model's prediction (spec-sheet GPU constants, fp16
//! or int8, CUDA graphs) of the forward pass `DeviceBert` launches for sentence embeddings (no
//! pooler: nobody asked for it) stays at or under the published reference points. A kernel or
//! launch-plan change that makes a prediction worse fails here, with the per-kernel table.
use fusebert::model::{synthetic, Precision};
use fusebert::perf::{forward_plan, gpu::gpu, predict, Heads};

/// (config, batch, tokens, precision, gpu, target ms)
const TARGETS: [(&str, usize, usize, Precision, &str, f64); 5] = [
    ("bert-base", 1, 128, Precision::F16, "a100-80gb", 0.30),
    ("bert-base", 1, 128, Precision::F16, "h100-sxm", 0.20),
    ("minilm-l6", 1, 20, Precision::F16, "h100-sxm", 0.10),
    // TensorRT's published A100 figures for BERT-base 32x128
    ("bert-base", 32, 128, Precision::F16, "a100-80gb", 3.85),
    ("bert-base", 32, 128, Precision::Int8, "a100-80gb", 2.23),
];

#[test]
fn predicted_times_meet_the_targets() {
    let mut failures = Vec::new();
    for (config, batch, tokens, precision, name, target) in TARGETS {
        let c = synthetic::shape_config(config).unwrap();
        let plan = forward_plan(&c, precision, &vec![tokens; batch], Heads { pooler: false, labels: 0 });
        let p = predict(&gpu(name).unwrap(), &plan, precision, true);
        eprintln!("{config} {batch}x{tokens} {precision:?} on {name}: {:.3} ms (target {target})", p.total_ms);
        if p.total_ms > target {
            let table: Vec<String> = p
                .kernels
                .iter()
                .map(|k| format!("  {} {} x{}: {:.1} us", k.name, k.step, k.launches, k.time_us))
                .collect();
            failures.push(format!(
                "{config} {batch}x{tokens} {precision:?} on {name}: {:.3} ms > {target} ms\n{}",
                p.total_ms,
                table.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
