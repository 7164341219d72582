//! The Hopper (`_sm90`, `wgmma`) path of the roofline model (issue 23 item 3): its sourced
//! constants, the kernel-family choice, the persistent tiling against the research note's own
//! table (`hopper.md` 3.1), the fixed per-GEMM cost composed with the launch overheads, the
//! small-T tilings, and the issue's predicted-time bounds. The `mma.sync` path's predictions
//! are pinned to their values before the Hopper path existed.
use fusebert::kernels::gemm_sm90::Sm90Entry;
use fusebert::model::{synthetic, Precision};
use fusebert::perf::gpu::{gpu, GPU_NAMES, WGMMA_ATTENTION_FRACTION, WGMMA_FRACTION, WGMMA_GEMM_FIXED_US};
use fusebert::perf::roofline::Bound;
use fusebert::perf::sm90::{choose_gemm, cluster_alternative, resolve, KernelChoice, KernelFamily, Sm90Tile};
use fusebert::perf::{compare_families, forward_plan, forward_plan_for, predict, Heads, Prediction};

fn prediction(config: &str, batch: usize, tokens: usize, p: Precision, g: &str, f: KernelFamily) -> Prediction {
    let c = synthetic::shape_config(config).unwrap();
    let plan = forward_plan_for(&c, p, &vec![tokens; batch], Heads::NONE, f);
    predict(&gpu(g).unwrap(), &plan, p, true)
}

fn table(p: &Prediction) -> String {
    p.kernels.iter().map(|k| format!("  {} {} x{}: {:.1} us\n", k.name, k.step, k.launches, k.time_us)).collect()
}

#[test]
fn hopper_constants_are_the_research_notes() {
    assert_eq!(WGMMA_FRACTION, 0.80);
    assert_eq!(WGMMA_ATTENTION_FRACTION, 0.35);
    assert_eq!(WGMMA_GEMM_FIXED_US, 2.0);
    for name in ["h100-sxm", "h200"] {
        let g = gpu(name).unwrap();
        assert_eq!(g.compute_capability, (9, 0));
        assert_eq!(g.wgmma_fraction, Some(0.80));
        assert_eq!(g.wgmma_attention_fraction, Some(0.35));
        assert_eq!(g.wgmma_gemm_fixed_us, Some(2.0));
        // the mma.sync path stays as it was
        assert_eq!(g.mma_sync_fraction, 0.64);
    }
    // H200: 60 MB of L2 as PyTorch reported on an H200 machine (same MB as H100's 50 << 20)
    assert_eq!(gpu("h200").unwrap().l2_bytes, 60 << 20);
    assert_eq!(gpu("h100-sxm").unwrap().l2_bytes, 50 << 20);
    for name in ["a100-80gb", "l40s"] {
        let g = gpu(name).unwrap();
        assert!(g.compute_capability.0 < 9);
        assert_eq!((g.wgmma_fraction, g.wgmma_attention_fraction, g.wgmma_gemm_fixed_us), (None, None, None));
    }
}

#[test]
fn auto_picks_sm90_on_hopper_only_and_sm90_elsewhere_is_a_typed_error() {
    for name in GPU_NAMES {
        let g = gpu(name).unwrap();
        let hopper = name == "h100-sxm" || name == "h200";
        let auto = resolve(KernelChoice::Auto, &g).unwrap();
        assert_eq!(auto, if hopper { KernelFamily::Sm90 } else { KernelFamily::Sm80 }, "{name}");
        assert_eq!(resolve(KernelChoice::Sm80, &g).unwrap(), KernelFamily::Sm80);
        match resolve(KernelChoice::Sm90, &g) {
            Ok(f) => assert!(hopper && f == KernelFamily::Sm90),
            Err(e) => {
                assert!(!hopper);
                let e = e.to_string();
                assert!(e.contains("9.0") && e.contains(name), "{e}");
            }
        }
    }
}

#[test]
fn sm90_plan_replaces_gemms_and_attention_one_for_one() {
    let c = synthetic::shape_config("bert-base").unwrap();
    for p in [Precision::F16, Precision::Int8] {
        // (256-token sequences: too long for the fused QKV attention; see below)
        let a = forward_plan(&c, p, &[256; 2], Heads::NONE);
        let b = forward_plan_for(&c, p, &[256; 2], Heads::NONE, KernelFamily::Sm90);
        assert_eq!(a, forward_plan_for(&c, p, &[256; 2], Heads::NONE, KernelFamily::Sm80));
        assert_eq!((a.kernel_family, b.kernel_family), (KernelFamily::Sm80, KernelFamily::Sm90));
        // int8: the Hopper FFN1 quantises its own output and the Hopper attention writes the
        // context's codes, so the sm80 plan's quantize_ffn and quantize_ctx launches have no
        // counterpart; everything else pairs one for one
        let own = ["quantize_ffn", "quantize_ctx"];
        let fused = |l: &&fusebert::perf::PlannedLaunch| p == Precision::Int8 && own.contains(&l.step);
        assert_eq!(a.launches.iter().filter(fused).count(), if p == Precision::Int8 { 24 } else { 0 });
        assert!(!b.launches.iter().any(|l| own.contains(&l.step)));
        let a_paired: Vec<_> = a.launches.iter().filter(|l| !fused(l)).collect();
        assert_eq!(a_paired.len(), b.launches.len());
        for (x, y) in a_paired.into_iter().zip(&b.launches) {
            assert_eq!((x.step, x.layer, x.gemm, x.flops), (y.step, y.layer, y.gemm, y.flops));
            // the least bytes are the pass's, not the kernels'
            assert_eq!(x.min_load_bytes, y.min_load_bytes, "{}", x.step);
            if x.gemm.is_some() || x.step == "attention" {
                assert!(!x.kernel.contains("_sm90") && y.kernel.contains("_sm90"), "{} {}", x.kernel, y.kernel);
            } else {
                assert_eq!(x, y);
            }
        }
        let names: Vec<&str> = b.launches.iter().map(|l| l.kernel.as_str()).collect();
        // the PTX entries the forward pass launches: each GEMM's for its tiling (512 tokens: the
        // attention-output and FFN2 GEMMs, 24 tiles of 128 columns, are split over K), and
        // per-sequence attention for 256-token sequences
        let int8 = p == Precision::Int8;
        for l in b.launches.iter().filter(|l| l.gemm.is_some()) {
            let (m, n, k) = l.gemm.unwrap();
            let kind = if l.kernel.ends_with("qa") {
                Sm90Entry::Int8Qa
            } else {
                Sm90Entry::of(int8, l.step.ends_with("_ln1") || l.step.ends_with("_ln2"))
            };
            // the plan's tiling, or the cluster entry that replaces its split where the model
            // predicts it faster
            let tile = l.sm90_tile.unwrap();
            let planned = choose_gemm(kind, m, n, k);
            assert!(tile == planned || Some(tile) == cluster_alternative(kind, m, n, k), "{}: {tile:?}", l.step);
            assert_eq!(l.kernel, fusebert::perf::sm90::gemm_kernel(kind, tile), "{}", l.step);
        }
        let gemm = if int8 { "gemm_int8_sm90" } else { "gemm_f16_sm90" };
        // (int8: the attention entry that also writes the context's codes)
        let attention = if int8 { "attention_int8_sm90_d64" } else { "attention_sm90_d64" };
        for n in [format!("{gemm}_sk_ln"), attention.into()] {
            assert!(names.contains(&n.as_str()), "{n} not in {names:?}");
        }
        // sequences of at most 128 tokens: one fused launch per layer in place of the QKV GEMM
        // and attention, the same GEMM shape and FLOPs (+ attention's), the same least bytes
        // but the QKV activation's round trip
        let a = forward_plan(&c, p, &[128; 4], Heads::NONE);
        let f = forward_plan_for(&c, p, &[128; 4], Heads::NONE, KernelFamily::Sm90);
        // (the attention block, which also takes the attention-out GEMM and LN1)
        let step = "attention_block";
        let fused_count = |plan: &fusebert::perf::LaunchPlan| plan.launches.iter().filter(|l| l.step == step).count();
        assert_eq!((fused_count(&a), fused_count(&f)), (0, 12));
        // int8: and no quantize_ffn (FFN1 quantises), quantize_ctx (the fused kernel does) nor
        // attention-out + LN1 (the block does)
        assert_eq!(a.launches.len() - f.launches.len(), 24 + if int8 { 24 } else { 0 });
        for layer in 0..12 {
            let of = |plan: &fusebert::perf::LaunchPlan, step: &str| {
                plan.launches.iter().find(|l| l.step == step && l.layer == Some(layer)).cloned().unwrap()
            };
            let (qkv, att, out, block) = (of(&a, "qkv"), of(&a, "attention"), of(&a, "attn_out_ln1"), of(&f, step));
            assert_eq!(
                block.kernel,
                if int8 { "attention_block_int8_sm90_d64" } else { "attention_block_f16_sm90_d64" }
            );
            assert_eq!((block.gemm, block.flops), (qkv.gemm, qkv.flops + att.flops + out.flops));
        }
        assert_eq!(f.gemm_flops(), a.gemm_flops());
    }
}

/// The tiling is the kernels' (`gemm_sm90::plan`, what the forward pass launches): 128 x 128 or
/// 128 x 192 tiles, K split over its chunks on small grids, and the plan names the matching
/// entries (`_n192`, `_sk`). At 4096 tokens it is the research note's table (3.1) where the
/// kernels have the note's tile: QKV, attention-out and FFN2 128x192 (97% of the last wave);
/// FFN1 ties between 128 and 192 (no 256-column tile) and takes 192 (fewer A re-reads). At 128
/// tokens (BERT-base: 6 to 24 tiles) every GEMM is split. Unsplit fused layernorms and int8
/// quantisations run on the cluster entries (`_cln4` at hidden 768, `_cqa`), split ones on the
/// strip tail.
#[test]
fn tiles_and_splits_are_the_kernels() {
    use fusebert::kernels::gemm_sm90::{k_chunks, plan};
    let t = |cols, splits| Sm90Tile { rows: 128, cols, splits, cluster: 1 };
    for int8 in [false, true] {
        let (plain, ln) = (Sm90Entry::of(int8, false), Sm90Entry::of(int8, true));
        assert_eq!(choose_gemm(plain, 4096, 2304, 768), t(192, 1));
        assert_eq!(choose_gemm(plain, 4096, 768, 768), t(192, 1));
        assert_eq!(choose_gemm(plain, 4096, 3072, 768), t(192, 1));
        assert_eq!(choose_gemm(plain, 4096, 768, 3072), t(192, 1));
        // the fused layernorm on a cluster of 4 (hidden 768: 4 tiles of 192 columns)
        assert_eq!(choose_gemm(ln, 4096, 768, 768), Sm90Tile { cluster: 4, ..t(192, 1) });
        assert_eq!(choose_gemm(ln, 128, 768, 768), t(128, k_chunks(768, int8)));
        for (n, k) in [(2304, 768), (768, 768), (3072, 768), (768, 3072)] {
            assert_eq!(choose_gemm(plain, 128, n, k), t(128, k_chunks(k, int8)), "{n}x{k}");
            for m in [1, 20, 200, 1000, 4096] {
                let (p, c) = (plan(m, n, k, int8), choose_gemm(plain, m, n, k));
                assert_eq!((c.cols, c.splits), (p.cols, p.splits));
            }
        }
    }
    assert_eq!(choose_gemm(Sm90Entry::Int8Qa, 4096, 3072, 768), Sm90Tile { cluster: 8, ..t(192, 1) });
    // 128 tokens: every GEMM split, the layernorms' strip tails shared by their strips' CTAs
    // (one unit per CTA), so even the attention-output GEMM's split beats its cluster of 4 in
    // fp16 (see below)
    let p = prediction("bert-base", 1, 128, Precision::F16, "h100-sxm", KernelFamily::Sm90);
    for l in p.launches.iter().filter(|l| l.sm90_tile.is_some()) {
        assert!(l.kernel.starts_with("gemm_f16_sm90_sk"), "{}: {}", l.step, l.kernel);
    }
    let p = prediction("bert-base", 32, 128, Precision::F16, "h100-sxm", KernelFamily::Sm90);
    let kernels: Vec<&str> = p.launches.iter().filter(|l| l.sm90_tile.is_some()).map(|l| l.kernel.as_str()).collect();
    assert!(kernels.iter().all(|k| !k.contains("_sk")), "{kernels:?}");
    assert!(kernels.contains(&"gemm_f16_sm90_n192") && kernels.contains(&"gemm_f16_sm90_n192_cln4"), "{kernels:?}");
}

/// Of two launches of a fused layernorm or int8 quantisation that give the same bits (the plan's
/// split over K, whose strip's rows its tiles' CTAs normalise or code, one unit each, or the
/// cluster entry, every CTA with the whole of K), the plan takes the one the model predicts
/// faster on an H100, and the forward pass launches it (`DeviceBert::sm90_cluster`). BERT-base
/// int8 at 1x128: the attention-output GEMM's layernorm (K = 768) runs on a cluster of 4, FFN1's
/// codes stay split (the split's strip of 128 x 3072 shared by 24 CTAs), FFN2's layernorm (K =
/// 3072: four times the work on each of 4 CTAs) stays split; MiniLM's both layernorms (K = 384
/// and 1536, 3 CTAs) and FFN1's codes cluster. At 32x128 nothing is split, so there is nothing
/// to choose.
#[test]
fn cluster_replaces_a_split_where_the_model_predicts_it_faster() {
    use fusebert::kernels::gemm_sm90::KERNEL_INT8_CQA;
    let kernels = |config, batch| {
        let p = prediction(config, batch, 128, Precision::Int8, "h100-sxm", KernelFamily::Sm90);
        let of = |step: &str| p.launches.iter().find(|l| l.step == step).map(|l| l.kernel.clone()).unwrap();
        [of("attn_out_ln1"), of("ffn1"), of("ffn2_ln2")]
    };
    assert_eq!(kernels("bert-base", 1), ["gemm_int8_sm90_n192_cln4", "gemm_int8_sm90_sk_qa", "gemm_int8_sm90_sk_ln"]);
    assert_eq!(kernels("minilm-l6", 1), ["gemm_int8_sm90_cln3", KERNEL_INT8_CQA, "gemm_int8_sm90_cln3"]);
    // the split FFN2 had a cluster alternative: it lost on the model's numbers
    assert!(cluster_alternative(Sm90Entry::Int8Ln, 128, 768, 3072).is_some());
    // where the plan does not split there is no alternative
    assert_eq!(cluster_alternative(Sm90Entry::Int8Ln, 4096, 768, 3072), None);
    assert_eq!(cluster_alternative(Sm90Entry::Int8, 128, 768, 3072), None);
}

/// One compute-bound `_sm90` GEMM by hand: BERT-base QKV at 4096 tokens on the H100 (16
/// sequences of 256: too long for the fused QKV attention, so the QKV GEMM runs alone),
/// 128x192 tiles: 384 tiles over 132 CTAs = 3 units on the busiest, 2 m n k FLOPs at 0.80 of
/// 989.4 TFLOPS stretched by 396 / 384, plus 2 us (the graph node's 0.6 us included, not
/// added again): 20.9 us, as the research note (3.4) derives.
#[test]
fn fixed_cost_adds_two_microseconds_once_with_the_graph_node_inside() {
    let p = prediction("bert-base", 16, 256, Precision::F16, "h100-sxm", KernelFamily::Sm90);
    let qkv = p.launches.iter().find(|l| l.step == "qkv").unwrap();
    assert_eq!(qkv.kernel, "gemm_f16_sm90_n192");
    assert_eq!(qkv.sm90_tile.unwrap().describe(), "128x192");
    assert_eq!(qkv.bound, Bound::Compute);
    let compute = 2.0 * 4096.0 * 2304.0 * 768.0 / (989.4e12 * 0.80) * (396.0 / 384.0) * 1e6;
    assert!((qkv.compute_us - compute).abs() < 1e-9 * compute, "{} vs {compute}", qkv.compute_us);
    assert!((qkv.time_us - (compute + 2.0)).abs() < 1e-9, "{}", qkv.time_us);
    assert!((qkv.time_us - 20.9).abs() < 0.05, "{}", qkv.time_us);
    // its grid: persistent, one CTA per SM; a producer and two consumer warpgroups
    assert_eq!((qkv.blocks, qkv.threads, qkv.blocks_per_sm, qkv.waves), (132, 384, 1, 3));
    // the mma.sync kernel of the same step is charged no fixed cost: kernel + graph node
    let old = prediction("bert-base", 16, 256, Precision::F16, "h100-sxm", KernelFamily::Sm80);
    let qkv80 = old.launches.iter().find(|l| l.step == "qkv").unwrap();
    assert!((qkv80.time_us - (qkv80.kernel_us + 0.6)).abs() < 1e-9);
    // the attention: 0.35 of the fp16 peak, no fixed GEMM cost
    let att = p.launches.iter().find(|l| l.step == "attention").unwrap();
    assert_eq!(att.kernel, "attention_sm90_d64");
    let expect = att.tensor_flops as f64 / (989.4e12 * 0.35) * att.wave_factor * 1e6;
    assert!((att.compute_us - expect).abs() < 1e-9 * expect);
    // 128-token items aligned with the 256-token sequences: no padded rows or keys
    assert_eq!(att.tensor_flops, att.flops);
}

/// The attention block by hand: BERT-base at 32x128 on the H100 runs each layer's QKV GEMM,
/// attention, attention-out GEMM and LN1 as one launch (`attention_block_f16_sm90_d64`), a CTA
/// per (head, sequence): 384 CTAs in 3 waves (396 / 384), the GEMMs' 2 m n k FLOPs at 0.80 of
/// 989.4 TFLOPS and the attention's 4 heads d S^2 per sequence at 0.35, plus the grid's last
/// sequence's tail (one 128 x 64 output tile on one SM's share of the peak, then its LN rows at
/// one SM's bandwidth) and the GEMM's fixed 2 us; faster than the launches it replaces.
#[test]
fn attention_block_runs_its_gemms_then_its_tail() {
    let p = prediction("bert-base", 32, 128, Precision::F16, "h100-sxm", KernelFamily::Sm90);
    assert!(!p.launches.iter().any(|l| l.step == "qkv" || l.step == "attention" || l.step == "attn_out_ln1"));
    let f = p.launches.iter().find(|l| l.step == "attention_block").unwrap();
    assert_eq!(f.kernel, "attention_block_f16_sm90_d64");
    assert_eq!((f.blocks, f.threads, f.blocks_per_sm, f.waves), (384, 384, 1, 3));
    let gemm = 2.0 * 4096.0 * 2304.0 * 768.0 + 2.0 * 4096.0 * 768.0 * 768.0;
    let attention = 32.0 * 4.0 * 12.0 * 64.0 * 128.0 * 128.0;
    assert_eq!(f.tensor_flops as f64, gemm + attention);
    let compute = (gemm / (989.4e12 * 0.80) + attention / (989.4e12 * 0.35)) * (396.0 / 384.0) * 1e6;
    assert!((f.compute_us - compute).abs() < 1e-9 * compute, "{} vs {compute}", f.compute_us);
    assert_eq!(f.bound, Bound::Compute);
    // the tail: 2 x 128 x 64 x 768 tensor FLOPs on one SM, ceil(128 / 12) LN rows of 768 (y in,
    // the row out: 2 x 1536 bytes) at 126.72 GB/s
    let tail = 2.0 * 128.0 * 64.0 * 768.0 / (989.4e12 * 0.80 / 132.0) * 1e6 + 11.0 * 3072.0 / 126.72e9 * 1e6;
    assert!((f.time_us - (compute + tail + 2.0)).abs() < 1e-6, "{} vs {}", f.time_us, compute + tail + 2.0);
    // against the launches of a pass that does not fuse them
    let apart = |s: &str| {
        prediction("bert-base", 16, 256, Precision::F16, "h100-sxm", KernelFamily::Sm90)
            .launches
            .iter()
            .find(|l| l.step == s && l.layer == Some(0))
            .unwrap()
            .time_us
    };
    let sum = apart("qkv") + apart("attention") + apart("attn_out_ln1");
    eprintln!("block {:.1} us per layer, apart (S = 256) {sum:.1}", f.time_us);
    // (that attention does twice the FLOPs on the same bytes as the 128-token one)
    assert!(f.time_us < sum, "{}", f.time_us);
}

#[test]
fn mma_sync_predictions_are_unchanged() {
    // (config, batch, precision, gpu, total ms with graphs before the Hopper path), the
    // default plan (forward_plan) and the explicit sm80 family alike
    let pinned = [
        ("bert-base", 32, Precision::F16, "h100-sxm", PINNED[0]),
        ("bert-base", 32, Precision::Int8, "h100-sxm", PINNED[1]),
        ("bert-base", 1, Precision::F16, "h100-sxm", PINNED[2]),
        ("bert-base", 32, Precision::F16, "a100-80gb", PINNED[3]),
        ("minilm-l6", 1, Precision::F16, "h100-sxm", PINNED[4]),
    ];
    for (config, batch, p, g, ms) in pinned {
        let c = synthetic::shape_config(config).unwrap();
        let a = predict(&gpu(g).unwrap(), &forward_plan(&c, p, &vec![128; batch], Heads::NONE), p, true);
        let b = prediction(config, batch, 128, p, g, KernelFamily::Sm80);
        assert_eq!(a.total_ms, b.total_ms);
        assert!((a.total_ms - ms).abs() < 1e-9, "{config} {batch}x128 {p:?} {g}: {} != {ms}", a.total_ms);
        assert!(a.launches.iter().all(|l| l.sm90_tile.is_none() && !l.kernel.contains("_sm90")));
    }
}

/// Totals (ms) of the mma.sync path (`fusebert roofline --graphs --kernels sm80`, all sequences
/// 128 tokens); docs/performance.md printed them, rounded, before the Hopper path existed
/// (1.56, 1.19, 0.198 on H100, 2.89 on A100).
const PINNED: [f64; 5] =
    [1.5611406336244245, 1.1880301378005291, 0.19844731440125557, 2.887843736129792, 0.09319999999999998];

#[test]
fn family_comparison_pairs_every_step() {
    let a = prediction("minilm-l6", 32, 128, Precision::Int8, "h200", KernelFamily::Sm80);
    let b = prediction("minilm-l6", 32, 128, Precision::Int8, "h200", KernelFamily::Sm90);
    let rows = compare_families(&a, &b);
    assert_eq!(rows.iter().map(|r| r.launches).sum::<usize>(), a.launches.len());
    let sum80: f64 = rows.iter().map(|r| r.sm80_us).sum();
    let sum90: f64 = rows.iter().map(|r| r.sm90_us).sum();
    // totals are the launches' sums plus one graph replay
    assert!((sum80 / 1e3 + 0.010 - a.total_ms).abs() < 1e-9);
    assert!((sum90 / 1e3 + 0.010 - b.total_ms).abs() < 1e-9);
    // MiniLM's head dim 32 in pairs, 32 sequences of 128, int8: the attention block, which
    // also takes the attention-out GEMM and LN1
    let qkv = rows.iter().find(|r| r.step == "qkv").unwrap();
    assert_eq!(qkv.sm90_kernel, "attention_block_int8_sm90_d32");
    assert!(!qkv.sm80_kernel.contains("_sm90") && qkv.sm90_tile.is_some());
    let out = rows.iter().find(|r| r.step == "attn_out_ln1").unwrap();
    assert_eq!((out.sm90_kernel.as_str(), out.sm90_us), ("-", 0.0));
    // the Hopper FFN1 quantises its own output: the quantize launch has no _sm90 counterpart
    let q = rows.iter().find(|r| r.step == "quantize_ffn").unwrap();
    assert_eq!((q.sm80_kernel.as_str(), q.sm90_kernel.as_str(), q.sm90_us), ("quantize_i8_asym_f16_wide", "-", 0.0));
    let ffn1 = rows.iter().find(|r| r.step == "ffn1").unwrap();
    // MiniLM's FFN1 at 4096 tokens is unsplit: the cluster entry
    assert_eq!(ffn1.sm90_kernel, "gemm_int8_sm90_n192_cqa");
    // the fused int8 QKV attention writes the context's codes: no quantize_ctx launch either
    let q = rows.iter().find(|r| r.step == "quantize_ctx").unwrap();
    assert_eq!((q.sm80_kernel.as_str(), q.sm90_kernel.as_str(), q.sm90_us), ("quantize_i8_f16", "-", 0.0));
    // the other steps that both families run alike still pair kernel for kernel
    let e = rows.iter().find(|r| r.step == "quantize_emb").unwrap();
    assert_eq!((&e.sm80_kernel, e.sm80_us), (&e.sm90_kernel, e.sm90_us));
}

/// At 32x128 the `_sm90` path is predicted faster than `mma.sync` on both Hopper GPUs (fp16
/// by 18-20%, int8 by 5-9%: the int8 GEMMs' share is smaller, and its fused layernorm's and
/// fused quantisation's serial strips are 128 rows); at 1x128 (weight streaming) it is predicted slower:
/// its fixed 2 us per GEMM is added to the memory time, while the `mma.sync` kernels' ramp-up
/// is only the 2 us floor of every kernel, and its layernorm strip is 4 times the `mma.sync`
/// Narrow tile's (see docs/performance.md).
#[test]
fn sm90_is_faster_where_compute_bound() {
    for g in ["h100-sxm", "h200"] {
        for (p, ratio) in [(Precision::F16, 0.85), (Precision::Int8, 0.95)] {
            let a = prediction("bert-base", 32, 128, p, g, KernelFamily::Sm80);
            let b = prediction("bert-base", 32, 128, p, g, KernelFamily::Sm90);
            eprintln!("{g} {p:?} 32x128: sm80 {:.3} sm90 {:.3}", a.total_ms, b.total_ms);
            assert!(b.total_ms < ratio * a.total_ms, "{g} {p:?}: {} vs {}", b.total_ms, a.total_ms);
        }
        let a = prediction("bert-base", 1, 128, Precision::F16, g, KernelFamily::Sm80);
        let b = prediction("bert-base", 1, 128, Precision::F16, g, KernelFamily::Sm90);
        assert!(b.total_ms > a.total_ms);
    }
}

/// Issue 23's bounds on the `_sm90` path's predictions (CUDA graphs, H100 SXM, embedding pass),
/// with the sourced constants above, not tuned to pass. **Two of three hold**: BERT-base 32x128
/// fp16 1.082 ms <= 1.10 and int8 0.628 ms <= 0.65 (the attention blocks keep Q, K and V on
/// chip and fold the attention-out GEMM and LN1 into the same launch); 1x128 0.349 ms against
/// 0.15 does not (four launches a layer, the FFN's one since the FFN block): the model predicts the kernels that
/// exist (128x128 and 128x192 tiles, split-K, the cluster entries' fused layernorm and
/// quantisation at 32x128, the split launches' 128-row serial strips at 1x128), not the
/// research note's whole design (128x256 and 64-row tiles, swap-AB), and it charges every
/// kernel alike for what the note's estimate leaves out (activations read from DRAM by every
/// launch, the int8 context's quantisation, the 2 us per GEMM on top of streaming the weights
/// at 1x128); docs/performance.md has the breakdown. This test keeps that statement true: the
/// model's predictions are the ones the docs table reports (to its three decimals), and each is
/// compared with its bound and printed. A model or kernel change that moves them, or that
/// changes a verdict, fails here until the docs (and the issue note) say so.
#[test]
fn issue_23_bounds_are_reported_as_documented() {
    for (config, batch, p, bound, documented, meets) in [
        ("bert-base", 32, Precision::F16, 1.10, 1.082, true),
        ("bert-base", 32, Precision::Int8, 0.65, 0.628, true),
        ("bert-base", 1, Precision::F16, 0.15, 0.349, false),
    ] {
        let pr = prediction(config, batch, 128, p, "h100-sxm", KernelFamily::Sm90);
        let verdict = if pr.total_ms <= bound { "meets" } else { "misses" };
        eprintln!("{config} {batch}x128 {p:?} h100-sxm sm90: {:.3} ms {verdict} the bound {bound}", pr.total_ms);
        assert!(
            (pr.total_ms - documented).abs() <= 5e-4,
            "{config} {batch}x128 {p:?}: predicted {:.4} ms, docs/performance.md says {documented}\n{}",
            pr.total_ms,
            table(&pr)
        );
        assert_eq!(
            pr.total_ms <= bound,
            meets,
            "{config} {batch}x128 {p:?} {verdict} {bound}: update the docs and the note"
        );
    }
}

/// The token counts the forward pass takes the FFN block at (fp16; `perf::plan::ffn_block_cols`,
/// docs/performance.md), up to 2400: BERT-base 1..=256 on 128 x 64 tiles, and 128 x 128 at
/// 1025..=1040 and 1089..=1120 (9 row strips: the two launches' FFN2 + LN2 runs unsplit, its 36
/// tiles of 128 x 192 on 36 SMs, as the split rule needs 4 x tiles <= 132); MiniLM 1..=532 on
/// 128 x 64 (from 533 the two launches' last row strip computes 64 rows, not 128); the two
/// launches everywhere else.
#[test]
fn the_ffn_block_takes_the_documented_token_counts() {
    use fusebert::perf::plan::ffn_block_cols;
    // (config, [(first token count, last, tile width)])
    type Windows = (&'static str, &'static [(usize, usize, usize)]);
    let windows: [Windows; 2] =
        [("bert-base", &[(1, 256, 64), (1025, 1040, 128), (1089, 1120, 128)]), ("minilm-l6", &[(1, 532, 64)])];
    for (config, windows) in windows {
        let c = synthetic::shape_config(config).unwrap();
        for t in 1..=2400 {
            let want = windows.iter().find(|&&(a, b, _)| (a..=b).contains(&t)).map(|w| w.2);
            assert_eq!(ffn_block_cols(&c, t), want, "{config} at {t} tokens");
        }
    }
}
