//! The roofline model's arithmetic on hand-computed cases: occupancy, wave quantisation, the L2
//! estimate, bound classification, floor_ms; its answer for BERT-base 32x128; the SVG plot.
use fusebert::model::{synthetic, Precision};
use fusebert::perf::gpu::{gpu, gpu_for_device_name, GPU_NAMES};
use fusebert::perf::roofline::{blocks_per_sm, dram_bytes, predict_launch, waves, Bound, MIN_KERNEL_US};
use fusebert::perf::{forward_plan, predict, svg, Heads, PlannedLaunch};

#[test]
fn waves_count_partial_waves_as_whole() {
    // 264 blocks on 132 SMs x 1: exactly 2 waves, no loss
    assert_eq!(waves(264, 132, 1), (2, 1.0));
    // one block more than a wave: 2 waves for 133 blocks' work -> 264 / 133
    let (w, f) = waves(133, 132, 1);
    assert_eq!(w, 2);
    assert!((f - 264.0 / 133.0).abs() < 1e-12);
    // 1 block on 132 SMs: one SM works, 132x the ideal share of the time
    assert_eq!(waves(1, 132, 2), (1, 132.0));
    // 300 blocks, 108 SMs x 2 = 216 slots: 2 waves; the busiest SMs run 3 blocks: 324 / 300
    let (w, f) = waves(300, 108, 2);
    assert_eq!(w, 2);
    assert!((f - 1.08).abs() < 1e-12);
}

#[test]
fn occupancy_from_registers_shared_memory_and_threads() {
    let h100 = gpu("h100-sxm").unwrap();
    // 128 threads, 72 regs: 2304 regs per warp -> 28 warps -> 7 blocks; smem 24 KiB + 1 KiB
    // reserved: 228 KiB / 25 KiB = 9; threads 16: registers bind, 7
    assert_eq!(blocks_per_sm(&h100, 128, 72, 24576), 7);
    let a100 = gpu("a100-80gb").unwrap();
    // A100: 164 KiB / 25 KiB = 6 < 7: shared memory binds
    assert_eq!(blocks_per_sm(&a100, 128, 72, 24576), 6);
    // 256 threads, 126 regs (rounded to 128 x 32 = 4096 per warp): 16 warps -> 2 blocks
    assert_eq!(blocks_per_sm(&a100, 256, 126, 128 * 136 * 4), 2);
    // tiny kernel, no shared memory: the 32-block limit
    assert_eq!(blocks_per_sm(&h100, 32, 16, 0), 32);
}

#[test]
fn l2_estimate_serves_rereads_when_the_working_set_fits() {
    assert_eq!(dram_bytes(1000, 5000, 4096, 4096), 1000);
    // reused set 100 B, L2 50 B: half the 200 re-read bytes miss
    assert_eq!(dram_bytes(100, 300, 100, 50), 200);
}

fn launch(flops: u64, bytes: u64, blocks: u32) -> PlannedLaunch {
    PlannedLaunch {
        kernel: "gemm_f16".into(),
        step: "test",
        layer: None,
        grid: (blocks, 1, 1),
        block: (128, 1, 1),
        shared_mem_bytes: 24576,
        gemm: Some((64, 64, 64)),
        flops,
        tensor_flops: flops,
        attention_tensor_flops: 0,
        min_load_bytes: bytes,
        load_bytes: bytes,
        store_bytes: 0,
        reuse_bytes: bytes,
        reuse_bytes_per_block: 0,
        tail_bytes: 0,
        tail_tensor_flops: 0,
        extra_gemm_flops: 0,
        sm90_tile: None,
        parts: Vec::new(),
    }
}

/// Tensor work one CTA does after the rest of its grid (the attention block's last output
/// tile) adds its time on one SM's share of the path's peak: an `_sm90` launch's at
/// `wgmma_fraction` of the fp16 peak / 132.
#[test]
fn a_tail_of_tensor_work_runs_on_one_sm() {
    let g = gpu("h100-sxm").unwrap();
    let base = PlannedLaunch { kernel: "gemm_f16_sm90".into(), ..launch(1 << 30, 1 << 20, 132) };
    let tail = PlannedLaunch { tail_tensor_flops: 37_748_736, ..base.clone() };
    let (a, b) = (predict_launch(&g, &base, true), predict_launch(&g, &tail, true));
    let want = 37_748_736.0 / (989.4e12 * 0.8 / 132.0) * 1e6;
    assert!((b.kernel_us - a.kernel_us - want).abs() < 1e-9, "{} - {} vs {want}", b.kernel_us, a.kernel_us);
    assert!((want - 6.295).abs() < 0.01, "{want}");
}

#[test]
fn bound_is_the_largest_term() {
    let g = gpu("h100-sxm").unwrap();
    // 1 TFLOP over 132 x 7 blocks exactly (7 per SM: no wave tail): compute = 1e12 / (989.4e12 * 0.64)
    let c = predict_launch(&g, &launch(1_000_000_000_000, 1_000_000, 924), false);
    assert_eq!(c.bound, Bound::Compute);
    assert_eq!(c.wave_factor, 1.0);
    // residency from gemm_f16's ptxas registers (sm_90), 128 threads, 24 KiB
    assert_eq!(c.blocks_per_sm, blocks_per_sm(&g, 128, c.registers, 24576));
    assert!((c.compute_us - 1e6 / (989.4 * 0.64)).abs() < 1e-6 * c.compute_us);
    assert!((c.time_us - (c.compute_us + g.graph_node_us)).abs() < 1e-9);
    // 1 GB, no FLOPs: DRAM at 3350 GB/s * 0.85 (the working set exceeds the 50 MiB L2)
    let m = predict_launch(&g, &launch(0, 1_000_000_000, 924), false);
    assert_eq!(m.bound, Bound::Memory);
    assert!((m.dram_us - 1e6 / (3350.0 * 0.85)).abs() < 1e-6 * m.dram_us);
    // nearly nothing: the minimum kernel time, then the launch cost dominates
    let l = predict_launch(&g, &launch(1000, 1000, 1), false);
    assert_eq!(l.bound, Bound::Latency);
    assert_eq!(l.kernel_us, MIN_KERNEL_US);
    assert_eq!(l.time_us, g.launch_us);
    // in a CUDA graph the same launch costs its kernel time plus one node
    let lg = predict_launch(&g, &launch(1000, 1000, 1), true);
    assert!((lg.time_us - (MIN_KERNEL_US + g.graph_node_us)).abs() < 1e-12);
}

#[test]
fn bert_base_32x128_total_between_floor_and_a_few_ms_with_a_bound_per_kernel() {
    let c = synthetic::shape_config("bert-base").unwrap();
    let plan = forward_plan(&c, Precision::F16, &[128; 32], Heads { pooler: true, labels: 0 });
    // useful FLOPs, hand-computed: 4096 tokens x 12 layers x 2 x (4 x 768^2 + 2 x 768 x 3072)
    // + attention 12 x 32 x 4 x 12 heads x 64 x 128^2 + pooler 2 x 32 x 768^2
    let gemm = 2u64 * 4096 * 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 2 * 32 * 768 * 768;
    let attn = 12u64 * 32 * 4 * 12 * 64 * 128 * 128;
    assert_eq!(plan.gemm_flops(), gemm);
    assert_eq!(plan.flops(), gemm + attn);
    for name in ["h100-sxm", "a100-80gb"] {
        let g = gpu(name).unwrap();
        let p = predict(&g, &plan, Precision::F16, false);
        let flop_floor = (gemm + attn) as f64 / (g.peak_tflops_f16 * 1e12) * 1e3;
        assert!((p.flop_floor_ms - flop_floor).abs() < 1e-9);
        assert!(p.floor_ms >= flop_floor);
        assert!(p.total_ms > p.floor_ms && p.total_ms < 5.0, "{name}: total {} ms", p.total_ms);
        // 5 per layer: the layernorms run inside the attention-output and FFN2 GEMMs
        assert_eq!(p.launches.len(), 2 + 5 * 12 + 2);
        assert!(p.kernels.iter().any(|k| k.bound == Bound::Compute), "{name}: no compute-bound kernel");
        let sum: f64 = p.launches.iter().map(|l| l.time_us).sum();
        assert!((sum / 1e3 - p.total_ms).abs() < 1e-9);
    }
}

#[test]
fn graphs_shorten_a_launch_bound_pass() {
    let c = synthetic::shape_config("minilm-l6").unwrap();
    let plan = forward_plan(&c, Precision::F16, &[128], Heads { pooler: true, labels: 0 });
    let g = gpu("h200").unwrap();
    let plain = predict(&g, &plan, Precision::F16, false);
    let graph = predict(&g, &plan, Precision::F16, true);
    assert!(graph.total_ms < plain.total_ms);
    // 34 launches (2 + 5 per layer + 2) of at least launch_us each without a graph
    assert_eq!(plan.launches.len(), 34);
    assert!(plain.total_ms >= 34.0 * g.launch_us / 1e3);
}

#[test]
fn every_gpu_is_known_and_unknown_names_are_typed_errors() {
    for n in GPU_NAMES {
        let g = gpu(n).unwrap();
        assert!(g.sms > 0 && g.peak_tflops_f16 > 0.0 && g.peak_tops_int8 >= g.peak_tflops_f16 && g.dram_gbps > 0.0);
        assert!(!g.sources.is_empty());
    }
    for (device, name) in [
        ("NVIDIA H100 80GB HBM3", Some("h100-sxm")),
        ("NVIDIA H200", Some("h200")),
        ("NVIDIA A100-SXM4-80GB", Some("a100-80gb")),
        ("NVIDIA L40S", Some("l40s")),
        ("NVIDIA H100 PCIe", None),
        ("NVIDIA A100-SXM4-40GB", None),
        ("PTX emulator", None),
    ] {
        assert_eq!(gpu_for_device_name(device).map(|g| g.name), name, "{device}");
    }
    let e = gpu("v100").unwrap_err().to_string();
    assert!(e.contains("v100") && e.contains("h100-sxm"), "{e}");
    let e = synthetic::shape_config("gpt2").unwrap_err().to_string();
    assert!(e.contains("gpt2") && e.contains("bert-base"), "{e}");
}

/// Checks that `s` is well-formed XML as far as tags go: every opened element is closed in
/// order, attributes quoted, no bare `<` or `&` in text.
fn check_xmlish(s: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        assert!(!text.contains('>'), "stray '>' in text: {text}");
        for (j, _) in text.match_indices('&') {
            let ent = &text[j..];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;"].iter().any(|e| ent.starts_with(e)), "bare & in {text}");
        }
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
        } else if !tag.starts_with('?') && !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

#[test]
fn roofline_svg_is_well_formed_and_names_every_kernel() {
    let c = synthetic::shape_config("bert-base").unwrap();
    let plan = forward_plan(&c, Precision::Int8, &[128; 32], Heads { pooler: true, labels: 0 });
    let p = predict(&gpu("h100-sxm").unwrap(), &plan, Precision::Int8, false);
    let s = svg::roofline_svg(&p, "bert-base <32x128> & int8");
    check_xmlish(&s);
    assert!(s.starts_with("<?xml") && s.contains("<svg"));
    for l in &plan.launches {
        assert!(s.contains(&l.kernel), "{} missing", l.kernel);
    }
    assert!(s.contains("&lt;32x128&gt; &amp; int8"));
}

#[test]
fn bench_svg_is_well_formed() {
    let pts: Vec<svg::BenchPoint> = [(1, 128, 0.5), (8, 128, 1.0), (32, 128, 3.0), (1, 384, 0.9), (32, 384, 9.0)]
        .iter()
        .map(|&(b, t, ms)| svg::BenchPoint {
            batch: b,
            tokens: t,
            latency_ms: ms,
            tokens_per_s: (b * t) as f64 / ms * 1e3,
        })
        .collect();
    let s = svg::bench_svg(&pts, "test");
    check_xmlish(&s);
    assert_eq!(s.matches("<circle").count(), 2 * pts.len());
}
