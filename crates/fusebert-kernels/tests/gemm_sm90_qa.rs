//! The asymmetric int8 quantisation fused into the Hopper int8 GEMM (`gemm_int8_sm90*_qa`) on
//! the emulator at sm_90: the fp16 output equals the plain `gemm_int8_sm90`'s, and the codes,
//! scales and zero points equal `quantize_i8` (asymmetric: `quantize_i8_asym_f16`, or the
//! block-per-row `quantize_i8_asym_f16_wide` past 1024 columns) run on it, bit for bit. Ragged
//! shapes (M 1, 70, 130, 200: one, two and partial 128-row strips; N 264, 384, 520, 1040:
//! partial column tiles in both widths), both tile widths, unsplit and split over K, persistent
//! grids of one CTA per work unit and of 2 CTAs (a strip's last tile is then a CTA that did
//! other work first), lazy / eager / random completion, outputs poisoned, with and without
//! smoothing and zero points (the codes' scales and zero points written over the GEMM's own,
//! as LN1's are), every launch twice (the strip counters reset). As tests/gemm_sm90_ln.rs for
//! the fused layernorm.
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Cols, Sm90Entry, Sm90Qa};
use fusebert_kernels::{
    Device, DeviceBuffer, Epilogue, FusedQuantize, GemmInt8, GemmShape, QuantizeF16, QuantizedI8, ZeroPoint,
};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;

/// One case: the shape, the tile width, whether K is split (K of 2 chunks), 2 CTAs or one per
/// unit, the completion mode, smoothing multipliers, zero points on the GEMM's input.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    cols: Sm90Cols,
    split: bool,
    two_ctas: bool,
    mode: AsyncMode,
    smooth: bool,
    zero_points: bool,
}

const CASES: [Case; 5] = [
    Case {
        m: 200,
        n: 384,
        k: 160,
        cols: Sm90Cols::N128,
        split: false,
        two_ctas: false,
        mode: AsyncMode::Lazy,
        smooth: true,
        zero_points: false,
    },
    Case {
        m: 1,
        n: 520,
        k: 64,
        cols: Sm90Cols::N192,
        split: false,
        two_ctas: true,
        mode: AsyncMode::Eager,
        smooth: false,
        zero_points: false,
    },
    Case {
        m: 130,
        n: 264,
        k: 640,
        cols: Sm90Cols::N128,
        split: true,
        two_ctas: true,
        mode: AsyncMode::Random(11),
        smooth: true,
        zero_points: true,
    },
    Case {
        m: 70,
        n: 520,
        k: 640,
        cols: Sm90Cols::N192,
        split: true,
        two_ctas: false,
        mode: AsyncMode::Lazy,
        smooth: false,
        zero_points: true,
    },
    Case {
        m: 200,
        n: 1040,
        k: 96,
        cols: Sm90Cols::N192,
        split: false,
        two_ctas: true,
        mode: AsyncMode::Random(5),
        smooth: true,
        zero_points: false,
    },
];

fn operands(r: &mut rand_chacha::ChaCha8Rng, c: &Case) -> GeluInt8Operands {
    gelu_int8_operands(r, c.m, c.n, c.k)
}

/// One workspace for the case's split launches in either tile width.
fn workspace(dev: &Device, c: &Case) -> SplitWorkspace {
    split_workspace(dev, c.m, c.n, c.k, true)
}

/// The unfused pair: `gemm_int8_sm90` then `quantize_i8` (asymmetric) on its output. Returns
/// the output, codes, scales, zero points, and the quantize launch's kernel.
fn unfused(
    dev: &Device,
    g: &GemmInt8<'_>,
    smooth: Option<&DeviceBuffer<f16>>,
    how: GemmSm90Launch<'_>,
) -> (Vec<u16>, Vec<i8>, Vec<u32>, Vec<i32>, String) {
    let GemmShape { m, n, .. } = g.shape;
    let mut y = poisoned::<f16>(dev, m * n);
    fusebert_kernels::gemm_int8_sm90(dev, g, &mut y, how).unwrap();
    let (mut q, mut s, mut z) = (poisoned::<i8>(dev, m * n), poisoned::<f32>(dev, m), poisoned::<i32>(dev, m));
    fusebert_kernels::quantize_i8(
        dev,
        &QuantizeF16 { x: &y, smooth, rows: m, hidden: n },
        QuantizedI8 { q: &mut q, scale: &mut s, zero: Some(&mut z) },
    )
    .unwrap();
    let (kernel, _) = last_launch(dev, "quantize_i8");
    (f16_bits(&y), bits(&q), f32_bits(&s), bits(&z), kernel)
}

#[test]
fn int8_sm90_fused_quantize_equals_gemm_then_quantize_asym_bit_for_bit() {
    let mut r = rng(91);
    for c in &CASES {
        let (m, n, k) = (c.m, c.n, c.k);
        let dev = sm90(c.mode);
        let o = operands(&mut r, c);
        let (dw, dws, db, dsm) = (
            dev.upload(&o.w).unwrap(),
            dev.upload(&o.w_scale).unwrap(),
            dev.upload(&o.bias).unwrap(),
            dev.upload(&o.smooth).unwrap(),
        );
        let dsum = dev.upload(&o.w_sum).unwrap();
        let smooth = c.smooth.then_some(&dsm);
        let ws = workspace(&dev, c);
        let how = GemmSm90Launch {
            ctas: c.two_ctas.then_some(2),
            cols: c.cols,
            split: c.split.then_some(&ws),
            qa: Sm90Qa::StripTail,
            ..Default::default()
        };
        // the reference on its own copies of the operands (the fused run overwrites scales and zero points)
        let (da, das, dz) = (dev.upload(&o.a).unwrap(), dev.upload(&o.a_scale).unwrap(), dev.upload(&o.zero).unwrap());
        let g = GemmInt8 {
            a: &da,
            a_scale: &das,
            zero_point: c.zero_points.then_some(ZeroPoint { zero: &dz, w_sum: &dsum }),
            w: &dw,
            w_scale: &dws,
            bias: Some(&db),
            epilogue: Epilogue::Gelu,
            shape: GemmShape { m, n, k },
        };
        let (y0, q0, s0, z0, qkernel) = unfused(&dev, &g, smooth, how);
        let wide = if n > 1024 {
            fusebert_kernels::ids::QUANTIZE_I8_ASYM_F16_WIDE
        } else {
            fusebert_kernels::ids::QUANTIZE_I8_ASYM_F16
        };
        assert_eq!(qkernel, wide);
        let width = if c.cols == Sm90Cols::N192 { 192 } else { 128 };
        for rep in 0..2 {
            let (a_run, as_run, z_run) =
                (dev.upload(&o.a).unwrap(), dev.upload(&o.a_scale).unwrap(), dev.upload(&o.zero).unwrap());
            let mut y = poisoned::<f16>(&dev, m * n);
            let (q, s_own, z_own) = (poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m), poisoned::<i32>(&dev, m));
            // with zero points, the scales and zero points go over the GEMM's own (as FFN2's input
            // would over FFN1's); else to their own poisoned buffers
            let (s, z) = if c.zero_points { (&as_run, &z_run) } else { (&s_own, &z_own) };
            let qa = FusedQuantize { q: &q, scale: s, zero: z, smooth };
            clear(&dev);
            let zero_point = g.zero_point.map(|zp| ZeroPoint { zero: &z_run, ..zp });
            let g = GemmInt8 { a: &a_run, a_scale: &as_run, zero_point, ..g };
            fusebert_kernels::gemm_int8_sm90_qa(&dev, &g, &mut y, &qa, &ws, how).unwrap();
            let (kernel, cn) = last_launch(&dev, "gemm_int8_sm90_qa");
            assert_eq!(kernel, gemm_sm90::kernel_name(Sm90Entry::Int8Qa, width, c.split));
            let what = format!(
                "{kernel} M {m} N {n} K {k} {how:?} smooth {} zero points {} launch {rep}",
                c.smooth, c.zero_points
            );
            eprintln!(
                "{what}: global load {} B, store {} B, atomics {}, barriers {}",
                cn.global_load_bytes, cn.global_store_bytes, cn.atomics, cn.barriers
            );
            assert_eq!(f16_bits(&y), y0, "{what}: GEMM output");
            assert_eq!(bits(&q), q0, "{what}: codes");
            assert_eq!(f32_bits(s), s0, "{what}: scales");
            assert_eq!(bits(z), z0, "{what}: zero points");
            // the output spans both signs, so every row uses a real zero point
            assert!(z0.iter().all(|&z| z > -128 && z < 127), "{what}: degenerate zero points {z0:?}");
            if !c.two_ctas && m <= 128 {
                // one unit per CTA, the grid resident: every tile's CTA of the strip takes
                // rows (StripShare): split arrivals and resets, then started (a unit each),
                // arrived and done (a tile each), a claim per row and a last, empty one per
                // warp of every tile's CTA, 4 resets
                let tiles = n.div_ceil(width) as u64;
                let units = tiles * if c.split { gemm_sm90::k_chunks(k, true) as u64 } else { 1 };
                let split = if c.split { units + tiles } else { 0 };
                assert_eq!(cn.atomics, split + units + 2 * tiles + m as u64 + 8 * tiles + 4, "{what}: atomics");
            }
        }
    }
}

#[test]
fn sm90_fused_quantize_refuses_overlapping_codes_and_short_workspaces() {
    let dev = sm90(AsyncMode::Lazy);
    let (m, n, k) = (300, 128, 128);
    let ones = OnesInt8::upload(&dev, GemmShape { m, n, k });
    let (a, g) = (&ones.a, ones.gemm());
    let (q, s, z) = (dev.alloc::<i8>(m * n).unwrap(), dev.alloc::<f32>(m).unwrap(), dev.alloc::<i32>(m).unwrap());
    let mut y = dev.alloc::<f16>(m * n).unwrap();
    let full = SplitWorkspace::new(&dev, 1, 1, m).unwrap();
    let short = SplitWorkspace::new(&dev, 1, 1, 32).unwrap();
    let short_scale = dev.alloc::<f32>(m - 1).unwrap();
    let strip_tail = GemmSm90Launch { qa: Sm90Qa::StripTail, ..Default::default() };
    for (codes, scale, ws, why) in
        [(a, &s, &full, "overlaps"), (&q, &s, &short, "strip counters"), (&q, &short_scale, &full, "q_scale")]
    {
        let qa = FusedQuantize { q: codes, scale, zero: &z, smooth: None };
        let err = fusebert_kernels::gemm_int8_sm90_qa(&dev, &g, &mut y, &qa, ws, strip_tail).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(gemm_sm90::KERNEL_INT8_QA) && text.contains(why), "{why}: {text}");
    }
}

/// Rows wider than a warp's shared slot (4104 columns at 128-column tiles: 8 KiB hold 4096) read
/// their last vectors from L2 a second time; past quantize_i8's 4096 columns, the host rule
/// (`reference::quantize_asym`, the kernels' f32 operations in order) is the reference.
#[test]
fn rows_past_the_shared_slot_are_quantized_as_the_host_rule() {
    let mut r = rng(92);
    let c = Case {
        m: 70,
        n: 4104,
        k: 64,
        cols: Sm90Cols::N128,
        split: false,
        two_ctas: true,
        mode: AsyncMode::Random(3),
        smooth: true,
        zero_points: false,
    };
    let (m, n, k) = (c.m, c.n, c.k);
    let dev = sm90(c.mode);
    let o = operands(&mut r, &c);
    let up8 = |v: &[i8]| dev.upload(v).unwrap();
    let (da, dw) = (up8(&o.a), up8(&o.w));
    let (das, dws) = (dev.upload(&o.a_scale).unwrap(), dev.upload(&o.w_scale).unwrap());
    let (db, dsm) = (dev.upload(&o.bias).unwrap(), dev.upload(&o.smooth).unwrap());
    let g = GemmInt8 {
        a: &da,
        a_scale: &das,
        zero_point: None,
        w: &dw,
        w_scale: &dws,
        bias: Some(&db),
        epilogue: Epilogue::Gelu,
        shape: GemmShape { m, n, k },
    };
    let ws = workspace(&dev, &c);
    let how = GemmSm90Launch { ctas: Some(2), cols: c.cols, qa: Sm90Qa::StripTail, ..Default::default() };
    let mut y0 = poisoned::<f16>(&dev, m * n);
    fusebert_kernels::gemm_int8_sm90(&dev, &g, &mut y0, how).unwrap();
    let (q0, s0, z0) = fusebert_kernels::reference::quantize_asym(&bits(&y0), Some(&o.smooth), m, n);
    let s0: Vec<u32> = s0.iter().map(|v| v.to_bits()).collect();
    for rep in 0..2 {
        let mut y = poisoned::<f16>(&dev, m * n);
        let (q, s, z) = (poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m), poisoned::<i32>(&dev, m));
        let qa = FusedQuantize { q: &q, scale: &s, zero: &z, smooth: Some(&dsm) };
        fusebert_kernels::gemm_int8_sm90_qa(&dev, &g, &mut y, &qa, &ws, how).unwrap();
        let (kernel, _) = last_launch(&dev, "gemm_int8_sm90_qa");
        assert_eq!(kernel, gemm_sm90::KERNEL_INT8_QA);
        let what = format!("M {m} N {n} launch {rep}");
        assert_eq!(f16_bits(&y), f16_bits(&y0), "{what}: GEMM output");
        assert_eq!(bits(&q), q0, "{what}: codes");
        assert_eq!(f32_bits(&s), s0, "{what}: scales");
        assert_eq!(bits(&z), z0, "{what}: zero points");
    }
}
