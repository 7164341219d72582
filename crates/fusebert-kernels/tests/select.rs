//! Kernel family selection (`select.rs`): the request (`FUSEBERT_KERNELS` syntax), the
//! resolution per compute capability, and the Hopper self-check on the emulator: it passes on
//! the shipped `_sm90` kernels (the clean twin), and a planted misreading of the ISA in their
//! PTX (a descriptor swizzle that disagrees with the TMA box; V read K-major) fails it, so
//! `Auto` falls back to mma.sync with the mismatch named.
use fusebert_kernels::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert_kernels::select::{self, KernelFamily, Selected};
use fusebert_kernels::{attention_sm90, gemm_sm90, Device, Error};

fn emu(arch: Arch, async_mode: AsyncMode) -> Device {
    Device::emulator_with(EmulatorOptions { arch, async_mode, ..Default::default() }).expect("emulator")
}

/// The module's only (sm_90a) PTX.
fn sm90a_ptx(module: &str) -> String {
    fusebert_kernels::ptx::module(module).expect("embedded").by_arch[0].1.to_string()
}

#[test]
fn family_requests_parse_and_bad_ones_are_typed_errors() {
    for (s, f) in [
        ("auto", KernelFamily::Auto),
        ("", KernelFamily::Auto),
        ("SM80", KernelFamily::Sm80),
        ("sm_90", KernelFamily::Sm90),
    ] {
        assert_eq!(s.parse::<KernelFamily>().unwrap(), f, "{s}");
    }
    for f in [KernelFamily::Auto, KernelFamily::Sm80, KernelFamily::Sm90] {
        assert_eq!(f.to_string().parse::<KernelFamily>().unwrap(), f);
    }
    let e = "hopper".parse::<KernelFamily>().unwrap_err();
    assert!(matches!(&e, Error::Input(m) if m.contains("hopper") && m.contains("auto, sm80 or sm90")), "{e}");
}

#[test]
fn an_sm80_device_runs_mma_sync_and_refuses_sm90() {
    let dev = emu(Arch::Sm80, AsyncMode::Lazy);
    assert_eq!(dev.compute_capability(), (8, 0));
    assert_eq!(dev.kernel_family(KernelFamily::Auto, 64).unwrap(), Selected::Sm80);
    assert_eq!(dev.kernel_family(KernelFamily::Sm80, 64).unwrap(), Selected::Sm80);
    let e = dev.kernel_family(KernelFamily::Sm90, 64).unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains("FUSEBERT_KERNELS=sm90") && m.contains("9.0") && m.contains("8.0")),
        "{e}"
    );
    assert!(dev.self_check_verdicts().is_empty(), "no self-check off Hopper");
}

/// The clean twin: on an sm_90 device `Auto` runs the self-check once (the GEMMs, then
/// attention per head dim: cached on the device, shared by clones) and picks `_sm90`.
#[test]
fn auto_on_sm90_self_checks_once_and_selects_sm90() {
    let dev = emu(Arch::Sm90, AsyncMode::Random(7));
    assert_eq!(dev.compute_capability(), (9, 0));
    assert_eq!(dev.kernel_family(KernelFamily::Sm80, 32).unwrap(), Selected::Sm80);
    assert_eq!(dev.kernel_family(KernelFamily::Sm90, 32).unwrap(), Selected::Sm90);
    assert!(dev.self_check_verdicts().is_empty(), "explicit choices run no self-check");
    assert_eq!(dev.kernel_family(KernelFamily::Auto, 32).unwrap(), Selected::Sm90);
    let v = dev.self_check_verdicts();
    let names: Vec<_> = v.iter().map(|v| v.what.as_str()).collect();
    assert_eq!(names, ["gemm", "attention d32"]);
    assert!(v.iter().all(|v| v.passed()), "{v:?}");
    for v in &v {
        eprintln!("self-check {} on the emulator: {:?}", v.what, v.elapsed);
    }
    // cached: a clone asks again, nothing reruns
    assert_eq!(dev.clone().kernel_family(KernelFamily::Auto, 32).unwrap(), Selected::Sm90);
    assert_eq!(dev.self_check_verdicts(), v);
}

/// A misreading planted in the GEMM's PTX (the B descriptor's swizzle 64B where the TMA box is
/// 128B): the self-check names the kernel and the first wrong output; `Auto` falls back.
#[test]
fn a_planted_gemm_misreading_fails_the_self_check_and_auto_falls_back() {
    let dev = emu(Arch::Sm90, AsyncMode::Lazy);
    let ptx = sm90a_ptx(gemm_sm90::MODULE);
    let bad = ptx.replace("4611686293305360384", "9223372311732682752");
    assert_ne!(bad, ptx, "the mutation must change the PTX");
    dev.load_module(gemm_sm90::MODULE, &bad).unwrap();
    assert_eq!(dev.kernel_family(KernelFamily::Auto, 32).unwrap(), Selected::Sm80);
    let v = dev.self_check_verdicts();
    let gemm = v.iter().find(|v| v.what == "gemm").expect("gemm verdict");
    let m = gemm.mismatch.as_deref().expect("a mismatch");
    assert!(m.contains("gemm_f16_sm90") && m.contains("output"), "{m}");
    // an explicit request still gets what it asked for (benchmarking a suspect kernel)
    assert_eq!(dev.kernel_family(KernelFamily::Sm90, 32).unwrap(), Selected::Sm90);
}

/// A misreading planted in the cluster entries (the CTA's rank in its cluster read as its grid
/// index, right for the first cluster only) fails the GEMM check: their outputs differ from the
/// strip tail's and the plain GEMM's quantisation.
#[test]
fn a_planted_cluster_misreading_fails_the_self_check() {
    let dev = emu(Arch::Sm90, AsyncMode::Lazy);
    for module in [gemm_sm90::MODULE, gemm_sm90::MODULE_INT8] {
        let ptx = sm90a_ptx(module);
        let bad = ptx.replace("%cluster_ctarank;", "%ctaid.x;");
        assert_ne!(bad, ptx, "the mutation must change {module}'s PTX");
        dev.load_module(module, &bad).unwrap();
    }
    assert_eq!(dev.kernel_family(KernelFamily::Auto, 32).unwrap(), Selected::Sm80);
    let v = dev.self_check_verdicts();
    let gemm = v.iter().find(|v| v.what == "gemm").expect("gemm verdict");
    let m = gemm.mismatch.as_deref().expect("a mismatch");
    assert!(m.contains("_cqa") || m.contains("_cln"), "{m}");
}

/// A misreading planted in attention (V's descriptor without the transpose flag: V read
/// K-major) fails the attention check of that head dim only.
#[test]
fn a_planted_attention_misreading_fails_the_self_check() {
    let dev = emu(Arch::Sm90, AsyncMode::Lazy);
    let ptx = sm90a_ptx(attention_sm90::MODULE);
    // imm-trans-b of every RS wgmma (P V): 1 -> 0
    let bad = ptx.replace(", 1, 1, 1;", ", 1, 1, 0;");
    assert_ne!(bad, ptx, "the mutation must change the PTX");
    dev.load_module(attention_sm90::MODULE, &bad).unwrap();
    let v = select::self_check(&dev, &[32]);
    assert!(v[0].passed(), "the GEMMs are untouched: {:?}", v[0]);
    let m = v[1].mismatch.as_deref().expect("a mismatch");
    assert!(m.contains("attention_sm90_d32") || m.contains("launch failed"), "{m}");
    assert_eq!(dev.kernel_family(KernelFamily::Auto, 32).unwrap(), Selected::Sm80);
}

/// The per-kernel timing of `fusebert kernels time` on the emulator (random completion): every
/// layer kernel runs on both families with the same inputs, launched as the forward pass
/// launches it (fp16 FFN2, K 320 = two chunks on 1 tile: split over K), the fused steps too
/// (the residual GEMMs with their layernorm, the int8 FFN1 with FFN2's codes, the QKV GEMM and
/// attention in one launch at head dim 64, fp16 and int8 with the context's codes, and the int8
/// attention writing the context's codes against mma.sync's attention + quantize launch), the `_sm90`
/// outputs match mma.sync (int8 GEMM outputs exactly; layernorm and attention outputs to fp16
/// rounding: the families reduce a row in different orders) and, without a device clock, no time is claimed.
/// On sm_80 the `_sm90` rows are skipped with the reason.
#[test]
fn layer_timing_compares_both_families_and_claims_no_time_without_a_clock() {
    use fusebert_kernels::timing::{time_layer, LayerShape};
    let shape = LayerShape { batch: 2, tokens: 13, hidden: 128, heads: 2, ffn: 320 };
    let t = time_layer(&emu(Arch::Sm90, AsyncMode::Random(7)), shape, 1).unwrap();
    // 36 rows, and the cluster entry in place of the split fp16 FFN2 + layernorm
    assert_eq!(t.rows.len(), 37);
    for r in &t.rows {
        assert!(r.mean_ms.is_none() && r.tflops.is_none() && r.skipped.is_none(), "{r:?}");
        assert!(r.kernels.iter().all(|k| k.contains("_sm90") == (r.family == "sm90")), "{r:?}");
        if r.family == "sm90" {
            let exact = r.op.contains("int8") && !r.op.contains("layernorm") && !r.op.contains("attention");
            let tol = if exact { 0.0 } else { 2e-3 };
            assert!(r.max_rel_diff_vs_sm80.unwrap() <= tol, "{r:?}");
        }
    }
    let ffn2 = t.rows.iter().find(|r| r.family == "sm90" && r.op.starts_with("FFN2 fp16")).unwrap();
    assert_eq!(ffn2.kernels, ["gemm_f16_sm90_sk"], "{ffn2:?}");
    // the split's alternative, timed after it: the same bits (so the same difference from
    // mma.sync), no strip tail
    let ln2 = |split: bool| {
        let (s, c) = ("FFN2 + layernorm fp16", "FFN2 + layernorm fp16 (cluster entry for the split)");
        t.rows.iter().find(|r| r.family == "sm90" && r.op == if split { s } else { c }).unwrap()
    };
    assert_eq!(ln2(true).kernels, ["gemm_f16_sm90_sk_ln"]);
    assert_eq!(ln2(false).kernels, ["gemm_f16_sm90_n192_cln2"]);
    assert_eq!(ln2(false).max_rel_diff_vs_sm80, ln2(true).max_rel_diff_vs_sm80);
    let ffn1 = t.rows.iter().find(|r| r.op.starts_with("FFN1 int8 (bias + GELU + FFN2")).unwrap();
    assert_eq!(ffn1.kernels.len(), 2, "the mma.sync GEMM and the quantize launch: {ffn1:?}");
    let fused = t.rows.iter().find(|r| r.family == "sm90" && r.op.starts_with("QKV + attention")).unwrap();
    assert_eq!(fused.kernels, ["qkv_attention_f16_sm90_d64"], "{fused:?}");
    let codes = |family: &str, op: &str| {
        t.rows.iter().find(|r| r.family == family && r.op.starts_with(op) && r.op.contains("ctx codes int8")).unwrap()
    };
    let (q90, q80) = (codes("sm90", "QKV + attention"), codes("sm80", "QKV + attention"));
    assert_eq!(q90.kernels, ["qkv_attention_int8_sm90_d64"], "{q90:?}");
    assert_eq!(q80.kernels.len(), 3, "GEMM, attention, quantize: {q80:?}");
    // 13-token sequences: packed tiles
    let (a90, a80) = (codes("sm90", "attention"), codes("sm80", "attention"));
    assert_eq!(a90.kernels, ["attention_int8_sm90_packed_d64"], "{a90:?}");
    assert_eq!(a80.kernels.len(), 2, "attention, quantize: {a80:?}");
    // the FFN: mma.sync's two launches against the block's one, on LN2's rows
    let ffn = |family: &str| t.rows.iter().find(|r| r.family == family && r.op.contains("FFN block")).unwrap();
    assert_eq!(ffn("sm90").kernels, ["ffn_block_f16_sm90_n64"], "{:?}", ffn("sm90"));
    assert_eq!(ffn("sm80").kernels.len(), 2, "{:?}", ffn("sm80"));
    // int8: FFN2's K of 1024 (8 k-blocks: two chunks) splits; its cluster entry's rows and
    // codes are the split's bits
    let t = time_layer(&emu(Arch::Sm90, AsyncMode::Lazy), LayerShape { ffn: 1024, ..shape }, 1).unwrap();
    let ln2 = |op: &str| t.rows.iter().find(|r| r.family == "sm90" && r.op == op).unwrap();
    let split = ln2("FFN2 + layernorm int8 (+ codes)");
    let cluster = ln2("FFN2 + layernorm int8 (+ codes) (cluster entry for the split)");
    assert_eq!(
        (split.kernels[0].as_str(), cluster.kernels[0].as_str()),
        ("gemm_int8_sm90_sk_ln", "gemm_int8_sm90_n192_cln2")
    );
    assert!(cluster.max_rel_diff_vs_sm80.unwrap() <= 2e-3, "{cluster:?}");
    assert_eq!(cluster.max_rel_diff_vs_sm80, split.max_rel_diff_vs_sm80);
    let t = time_layer(&emu(Arch::Sm80, AsyncMode::Lazy), shape, 1).unwrap();
    let skipped: Vec<_> = t.rows.iter().filter(|r| r.family == "sm90").collect();
    assert_eq!(skipped.len(), 18);
    assert!(skipped.iter().all(|r| r.skipped.as_deref().unwrap().contains("9.0")), "{skipped:?}");
    let bad = LayerShape { heads: 5, ..shape };
    assert!(matches!(time_layer(&emu(Arch::Sm80, AsyncMode::Lazy), bad, 1), Err(Error::Input(_))));
}
