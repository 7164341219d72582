//! The cluster-distributed quantisation of the Hopper int8 GEMM (`gemm_int8_sm90_n192_cqa`: a
//! cluster of 8 CTAs per 128-row strip, the per-row ranges combined through distributed shared
//! memory) on the emulator at sm_90, against `quantize_i8` on `gemm_int8_sm90`'s output (and the
//! strip-tail entry `gemm_int8_sm90_n192_qa`, itself checked against `quantize_i8` in
//! tests/gemm_sm90_qa.rs): codes, scales and zero points bit for bit. At N <= 3072 the launch
//! keeps y in shared memory (`qa_resident`): `out` must stay unwritten (poisoned), and the
//! emulator's counters must show y neither stored nor read back (against the same launch with
//! y stored, `Sm90Qa::ClusterStored`, whose output is gemm_int8_sm90's bit for bit); at N > 3072
//! y is stored and read back. Ragged shapes (M 1, 70, 130, 136, 300: one to three strips,
//! partial ones; N 264, 520, 1000, 1536, 2304, 3072, 3080, 3456: ranks with no tile, one, two, three,
//! partial tiles), grids of one cluster (8 CTAs: a cluster walks several strips, its slots and
//! staging reused) and of one cluster per strip, lazy / eager / random completion, outputs
//! poisoned, with and without smoothing and zero points (the scales and zero points written over
//! the GEMM's own).
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Cols, Sm90Qa};
use fusebert_kernels::{
    Device, DeviceBuffer, Epilogue, FusedQuantize, GemmInt8, GemmShape, QuantizeF16, QuantizedI8, ZeroPoint,
};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;

struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// 8 CTAs (one cluster walks every strip), or the default grid (a cluster per strip)
    one_cluster: bool,
    mode: AsyncMode,
    smooth: bool,
    zero_points: bool,
    /// also launch the cluster entry with y stored (Sm90Qa::ClusterStored): its output and the
    /// counters' difference
    stored: bool,
}

const fn case(m: usize, n: usize, k: usize, one_cluster: bool, mode: AsyncMode, flags: [bool; 3]) -> Case {
    let [smooth, zero_points, stored] = flags;
    Case { m, n, k, one_cluster, mode, smooth, zero_points, stored }
}

/// N <= 3072: the resident launch (y kept in shared memory)
const CASES: [Case; 7] = [
    case(1, 264, 64, false, AsyncMode::Lazy, [false, false, false]),
    case(136, 1000, 128, true, AsyncMode::Eager, [true, true, true]),
    case(130, 264, 96, true, AsyncMode::Random(7), [true, false, false]),
    case(300, 2304, 128, true, AsyncMode::Random(3), [false, true, true]),
    case(300, 520, 32, false, AsyncMode::Lazy, [true, false, false]),
    case(70, 3072, 32, false, AsyncMode::Random(19), [true, false, false]),
    case(136, 1536, 256, false, AsyncMode::Random(11), [false, false, true]),
];

/// The operands of tests/gemm_sm90_qa.rs (pre-activations of a few units).
fn operands(r: &mut rand_chacha::ChaCha8Rng, c: &Case) -> GeluInt8Operands {
    gelu_int8_operands(r, c.m, c.n, c.k)
}

/// The operands on the device, a fresh copy per launch (a fused launch writes its scales and
/// zero points over A's with zero points).
struct Buffers {
    a: DeviceBuffer<i8>,
    a_scale: DeviceBuffer<f32>,
    zero: DeviceBuffer<i32>,
    w: DeviceBuffer<i8>,
    w_scale: DeviceBuffer<f32>,
    bias: DeviceBuffer<f16>,
    smooth: DeviceBuffer<f16>,
    w_sum: DeviceBuffer<i32>,
}

impl Buffers {
    fn upload(dev: &Device, o: &GeluInt8Operands) -> Buffers {
        let (a, a_scale, zero) =
            (dev.upload(&o.a).unwrap(), dev.upload(&o.a_scale).unwrap(), dev.upload(&o.zero).unwrap());
        let (w, w_scale, bias, smooth) = (
            dev.upload(&o.w).unwrap(),
            dev.upload(&o.w_scale).unwrap(),
            dev.upload(&o.bias).unwrap(),
            dev.upload(&o.smooth).unwrap(),
        );
        let w_sum = dev.upload(&o.w_sum).unwrap();
        Buffers { a, a_scale, zero, w, w_scale, bias, smooth, w_sum }
    }

    /// The case's GEMM: GELU with bias, zero points on A if the case has them.
    fn gemm(&self, c: &Case) -> GemmInt8<'_> {
        GemmInt8 {
            a: &self.a,
            a_scale: &self.a_scale,
            zero_point: c.zero_points.then_some(ZeroPoint { zero: &self.zero, w_sum: &self.w_sum }),
            w: &self.w,
            w_scale: &self.w_scale,
            bias: Some(&self.bias),
            epilogue: Epilogue::Gelu,
            shape: GemmShape { m: c.m, n: c.n, k: c.k },
        }
    }
}

/// One fused launch on fresh copies of A, its scales and zero points (the codes' scales and zero
/// points go over the GEMM's own with zero points): the output, codes, scales, zero points, the
/// kernel and its counters.
#[allow(clippy::type_complexity)]
fn fused(
    dev: &Device,
    o: &GeluInt8Operands,
    c: &Case,
    how: GemmSm90Launch<'_>,
) -> (Vec<u16>, Vec<i8>, Vec<u32>, Vec<i32>, String, fusebert_emu::Counters) {
    let (m, n) = (c.m, c.n);
    let d = Buffers::upload(dev, o);
    let g = d.gemm(c);
    let mut y = poisoned::<f16>(dev, m * n);
    let (q, s_own, z_own) = (poisoned::<i8>(dev, m * n), poisoned::<f32>(dev, m), poisoned::<i32>(dev, m));
    let (s, z) = if c.zero_points { (&d.a_scale, &d.zero) } else { (&s_own, &z_own) };
    let qa = FusedQuantize { q: &q, scale: s, zero: z, smooth: c.smooth.then_some(&d.smooth) };
    let ws = SplitWorkspace::new(dev, 1, 1, m).unwrap();
    clear(dev);
    fusebert_kernels::gemm_int8_sm90_qa(dev, &g, &mut y, &qa, &ws, how).unwrap();
    let (kernel, cn) = last_launch(dev, "gemm_int8_sm90_qa");
    (f16_bits(&y), bits(&q), f32_bits(s), bits(z), kernel, cn)
}

/// gemm_int8_sm90 (192-column tiles) then quantize_i8 on its output, on fresh copies of the
/// operands: the output, codes, scales and zero points the fused launches must give.
fn reference(dev: &Device, o: &GeluInt8Operands, c: &Case) -> (Vec<u16>, Vec<i8>, Vec<u32>, Vec<i32>) {
    let (m, n) = (c.m, c.n);
    let d = Buffers::upload(dev, o);
    let g = d.gemm(c);
    let mut y = poisoned::<f16>(dev, m * n);
    let how = GemmSm90Launch { cols: Sm90Cols::N192, ..Default::default() };
    fusebert_kernels::gemm_int8_sm90(dev, &g, &mut y, how).unwrap();
    let (mut q, mut s, mut z) = (poisoned::<i8>(dev, m * n), poisoned::<f32>(dev, m), poisoned::<i32>(dev, m));
    let x = QuantizeF16 { x: &y, smooth: c.smooth.then_some(&d.smooth), rows: m, hidden: n };
    fusebert_kernels::quantize_i8(dev, &x, QuantizedI8 { q: &mut q, scale: &mut s, zero: Some(&mut z) }).unwrap();
    (f16_bits(&y), bits(&q), f32_bits(&s), bits(&z))
}

fn print_counters(what: &str, name: &str, x: &fusebert_emu::Counters) {
    eprintln!(
        "{what}: {name}: global load {} B, store {} B, dsmem {} B, warp instructions {}, barriers {}, atomics {}",
        x.global_load_bytes, x.global_store_bytes, x.dsmem_bytes, x.warp_instructions, x.barriers, x.atomics
    );
}

#[test]
fn resident_cluster_quantize_equals_quantize_i8_and_leaves_out_unwritten() {
    let mut r = rng(93);
    for c in &CASES {
        let (m, n, k) = (c.m, c.n, c.k);
        assert!(gemm_sm90::qa_resident(n));
        let dev = sm90(c.mode);
        let o = operands(&mut r, c);
        let (y0, q0, s0, z0) = reference(&dev, &o, c);
        let how = GemmSm90Launch { ctas: c.one_cluster.then_some(8), ..Default::default() };
        let (y, q, s, z, kernel, cn) = fused(&dev, &o, c, how);
        assert_eq!(kernel, gemm_sm90::KERNEL_INT8_CQA);
        assert_eq!(gemm_sm90::qa_cluster(m, n, k), Some(gemm_sm90::QA_CLUSTER));
        let what = format!("M {m} N {n} K {k} {how:?} smooth {} zero points {}", c.smooth, c.zero_points);
        print_counters(&what, "resident", &cn);
        assert!(y.iter().all(|&v| v == 0xFFFF), "{what}: out written by the resident launch");
        assert_eq!(q, q0, "{what}: codes");
        assert_eq!(s, s0, "{what}: scales");
        assert_eq!(z, z0, "{what}: zero points");
        assert!(z0.iter().all(|&z| z > -128 && z < 127), "{what}: degenerate zero points {z0:?}");
        assert!(cn.dsmem_bytes > 0 && cn.atomics == 0, "{what}: the ranges cross the cluster, no strip counters");
        // wgmmas only for the consumer warpgroups with a row below M: a strip of <= 64 rows
        // computes 64 of its 128 (M 1, and the last strips of M 136 and 300)
        let macs = gemm_sm90::computed_rows(m) * n.div_ceil(192) * 192 * k.next_multiple_of(128);
        assert_eq!(cn.tensor_macs, macs as u64, "{what}: tensor work");
        if c.stored {
            // the same launch with y stored and read back: its output, the same codes, and
            // exactly y's bytes more stored and loaded
            let how = GemmSm90Launch { qa: Sm90Qa::ClusterStored, ..how };
            let (ys, qs, ss, zs, ks, cs) = fused(&dev, &o, c, how);
            assert_eq!(ks, gemm_sm90::KERNEL_INT8_CQA);
            print_counters(&what, "stored", &cs);
            assert_eq!(ys, y0, "{what}: stored: GEMM output");
            assert_eq!(
                (qs, ss, zs),
                (q0.clone(), s0.clone(), z0.clone()),
                "{what}: stored: codes, scales, zero points"
            );
            let y_bytes = (m * n * 2) as u64;
            assert_eq!(cs.global_store_bytes - cn.global_store_bytes, y_bytes, "{what}: y's stores");
            assert_eq!(cs.global_load_bytes - cn.global_load_bytes, y_bytes, "{what}: y's read-back");
        }
    }
}

/// N > 3072 (a CTA owns 3 tiles of a strip): y stored (gemm_int8_sm90's output bit for bit)
/// and read back, the codes quantize_i8's; the strip tail gives the same.
#[test]
fn stored_cluster_quantize_past_3072_columns_equals_quantize_i8() {
    let mut r = rng(94);
    for c in [
        case(70, 3080, 32, false, AsyncMode::Eager, [true, true, false]),
        // one cluster walks 2 strips, ranks 0 and 1 with 3 tiles of 2 K blocks a strip: more
        // than the ring's 3 stages past a strip's barrier (the producer takes part in them)
        case(130, 3456, 256, true, AsyncMode::Random(5), [false, false, false]),
    ] {
        let (m, n, k) = (c.m, c.n, c.k);
        assert!(!gemm_sm90::qa_resident(n));
        let dev = sm90(c.mode);
        let o = operands(&mut r, &c);
        let (y0, q0, s0, z0) = reference(&dev, &o, &c);
        let how = GemmSm90Launch { ctas: c.one_cluster.then_some(8), ..Default::default() };
        let (y, q, s, z, kernel, cn) = fused(&dev, &o, &c, how);
        assert_eq!(kernel, gemm_sm90::KERNEL_INT8_CQA);
        let what = format!("M {m} N {n} K {k} {how:?}");
        print_counters(&what, "stored", &cn);
        assert_eq!(y, y0, "{what}: GEMM output");
        assert_eq!((q, s, z), (q0, s0, z0), "{what}: codes, scales, zero points");
        assert!(cn.global_store_bytes >= (m * n * 3) as u64, "{what}: y and the codes stored");
    }
    // the strip tail at one of the resident shapes: the same bits as quantize_i8 too
    let c = &CASES[4];
    let dev = sm90(c.mode);
    let o = operands(&mut r, c);
    let (y0, q0, s0, z0) = reference(&dev, &o, c);
    let tail = GemmSm90Launch { cols: Sm90Cols::N192, qa: Sm90Qa::StripTail, ..Default::default() };
    let (y, q, s, z, kernel, _) = fused(&dev, &o, c, tail);
    assert_eq!(kernel, gemm_sm90::kernel_name(gemm_sm90::Sm90Entry::Int8Qa, 192, false));
    assert_eq!((y, q, s, z), (y0, q0, s0, z0), "strip tail");
}

#[test]
fn launch_choice_and_grid() {
    // unsplit: the cluster entry; split (small grids): the strip tail
    assert_eq!(gemm_sm90::qa_cluster(512, 3072, 768), Some(8));
    assert_eq!(gemm_sm90::qa_kernel_name(512, 3072, 768), gemm_sm90::KERNEL_INT8_CQA);
    // y on chip up to 2 tiles of 192 columns per CTA of the cluster
    assert!(gemm_sm90::qa_resident(3072) && gemm_sm90::qa_resident(520) && !gemm_sm90::qa_resident(3080));
    assert_eq!(gemm_sm90::qa_cluster(128, 768, 3072), None);
    let p = gemm_sm90::plan(128, 768, 3072, true);
    assert!(p.splits > 1);
    assert_eq!(
        gemm_sm90::qa_kernel_name(128, 768, 3072),
        gemm_sm90::kernel_name(gemm_sm90::Sm90Entry::Int8Qa, p.cols, true)
    );
    assert_eq!(gemm_sm90::qa_cluster_ctas(4096, None), 128);
    assert_eq!(gemm_sm90::qa_cluster_ctas(300, None), 24);
    assert_eq!(gemm_sm90::qa_cluster_ctas(300, Some(2)), 8);
    assert_eq!(gemm_sm90::qa_cluster_ctas(4096, Some(20)), 24);
    assert_eq!(gemm_sm90::qa_cluster_ctas(1, Some(64)), 8);
}

#[test]
fn cluster_quantize_refuses_bad_inputs_and_needs_no_strip_counters() {
    let dev = sm90(AsyncMode::Lazy);
    let (m, n, k) = (300, 264, 272); // K >= N: A can pose as the codes
    let ones = OnesInt8::upload(&dev, GemmShape { m, n, k });
    let (a, g) = (&ones.a, ones.gemm());
    let (q, s, z) = (dev.alloc::<i8>(m * n).unwrap(), dev.alloc::<f32>(m).unwrap(), dev.alloc::<i32>(m).unwrap());
    let mut y = dev.alloc::<f16>(m * n).unwrap();
    // one strip's counters for three strips: the cluster entry counts none
    let short = SplitWorkspace::new(&dev, 1, 1, 32).unwrap();
    let short_scale = dev.alloc::<f32>(m - 1).unwrap();
    let auto = GemmSm90Launch::default();
    let none = GemmSm90Launch { ctas: Some(0), ..Default::default() };
    for (codes, scale, how, why) in
        [(a, &s, auto, "overlaps"), (&q, &short_scale, auto, "q_scale"), (&q, &s, none, "at least one CTA")]
    {
        let qa = FusedQuantize { q: codes, scale, zero: &z, smooth: None };
        let err = fusebert_kernels::gemm_int8_sm90_qa(&dev, &g, &mut y, &qa, &short, how).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(gemm_sm90::KERNEL_INT8_CQA) && text.contains(why), "{why}: {text}");
    }
    let qa = FusedQuantize { q: &q, scale: &s, zero: &z, smooth: None };
    fusebert_kernels::gemm_int8_sm90_qa(&dev, &g, &mut y, &qa, &short, auto).unwrap();
    let (kernel, _) = last_launch(&dev, "gemm_int8_sm90_n192_cqa");
    assert_eq!(kernel, gemm_sm90::KERNEL_INT8_CQA);
    // y is all GELU(272) = 272: every code the top one
    assert!(bits(&q).iter().all(|&c| c == 127), "codes");
}
