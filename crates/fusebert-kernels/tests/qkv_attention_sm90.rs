//! The fused QKV projection + attention (`kernels/qkv_attention_sm90.cu`) on the emulator at
//! sm_90: bit for bit the unfused chain it replaces (`gemm_f16_sm90` / `gemm_int8_sm90` writing
//! qkv [T, 3H] with the bias, then `attention_sm90` per sequence), on random non-zero inputs,
//! outputs poisoned (NaN) before every launch, ragged packed batches whose lengths are not
//! multiples of 64 (1, 64, 65, 128 among them), in lazy, eager and random completion of the
//! asynchronous work; the fp16 path also against the CPU reference (f32 GEMM, fp16 qkv, f64
//! attention), and the typed errors.
mod kernels_util;
use fusebert_kernels::attention_sm90::{attention_sm90, Sm90Tiling};
use fusebert_kernels::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert_kernels::gemm_sm90::{GemmSm90Launch, Sm90Cols};
use fusebert_kernels::qkv_attention_sm90::{
    self as qa, qkv_attention_f16_sm90, qkv_attention_int8_sm90, ContextCodes, CTX_COUNTERS,
};
use fusebert_kernels::{
    quantize_i8, reference, AttentionShape, Device, DeviceBuffer, Epilogue, GemmF16, GemmInt8, GemmShape, QuantizeF16,
    QuantizedI8, SplitWorkspace, ZeroPoint,
};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;
use rand::Rng;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(11)];
/// One-token text, a full 64-key block, one key past it, the full 128, and the rest ragged.
const LENS: [u32; 6] = [97, 1, 128, 65, 64, 30];

fn cu(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

fn bits(v: &[f16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A ragged batch: x [T, H], Wqkv [3H, H], bias [3H] (fp16), and the int8 operands.
struct Case {
    cu: Vec<u32>,
    heads: usize,
    d: usize,
    x: Vec<f16>,
    w: Vec<f16>,
    bias: Vec<f16>,
    a8: Vec<i8>,
    w8: Vec<i8>,
    a_scale: Vec<f32>,
    w_scale: Vec<f32>,
    zero: Vec<i32>,
    w_sum: Vec<i32>,
}

impl Case {
    fn new(seed: u64, heads: usize, lens: &[u32]) -> Case {
        Case::with_head_dim(seed, heads, 64, lens)
    }
    fn with_head_dim(seed: u64, heads: usize, d: usize, lens: &[u32]) -> Case {
        let cu = cu(lens);
        let t = *cu.last().unwrap() as usize;
        let h = heads * d;
        let r = &mut rng(seed);
        // q, k, v of about unit size: |x| <= 1, |w| <= 1 / sqrt(H) x 2
        let wa = 2.0 / (h as f32).sqrt();
        let (x, w, bias) = (rand_f16(r, t * h, 1.0), rand_f16(r, 3 * h * h, wa), rand_f16(r, 3 * h, 0.5));
        let a8 = nonzero_codes(r, t * h, -128);
        let w8 = nonzero_codes(r, 3 * h * h, -127);
        let w_sum = fusebert_kernels::weight_sums(&w8, 3 * h, h);
        let zero = nonzero_codes(r, t, -128).into_iter().map(i32::from).collect();
        // unit-sized q, k, v: |acc| ~ 73^2 sqrt(H), x 0.0017 x 0.012 sqrt(128 / H)
        let a_scale = (0..t).map(|_| r.gen_range(0.0005f32..0.003)).collect();
        let w_scale = (0..3 * h).map(|_| r.gen_range(0.005f32..0.02) * (128.0 / h as f32).sqrt()).collect();
        Case { cu, heads, d, x, w, bias, a8, w8, a_scale, w_scale, zero, w_sum }
    }
    fn t(&self) -> usize {
        *self.cu.last().unwrap() as usize
    }
    fn h(&self) -> usize {
        self.heads * self.d
    }
    fn shape(&self) -> AttentionShape {
        AttentionShape::from_cu_seqlens(&self.cu, self.heads, self.d).unwrap()
    }
    fn gemm_shape(&self) -> GemmShape {
        GemmShape { m: self.t(), n: 3 * self.h(), k: self.h() }
    }

    /// fp16: the fused kernel (`fused`) or the chain, into a poisoned output.
    fn run_f16(&self, dev: &Device, fused: bool) -> Vec<f16> {
        self.run_f16_with(dev, fused, GemmSm90Launch::default())
    }
    /// As `run_f16`, the chain's GEMM launched as `how`.
    fn run_f16_with(&self, dev: &Device, fused: bool, how: GemmSm90Launch<'_>) -> Vec<f16> {
        let (t, h) = (self.t(), self.h());
        let s = self.shape();
        let (dx, dw, db, dc) = (
            dev.upload(&self.x).unwrap(),
            dev.upload(&self.w).unwrap(),
            dev.upload(&self.bias).unwrap(),
            dev.upload(&self.cu).unwrap(),
        );
        let g = GemmF16 { a: &dx, w: &dw, bias: Some(&db), epilogue: Epilogue::None, shape: self.gemm_shape() };
        let mut out = poisoned::<f16>(dev, t * h);
        clear(dev);
        if fused {
            qkv_attention_f16_sm90(dev, &g, &dc, &mut out, s).unwrap();
            self.check_launch(dev, false, &out);
        } else {
            let mut qkv = poisoned::<f16>(dev, t * 3 * h);
            fusebert_kernels::gemm_f16_sm90(dev, &g, &mut qkv, how).unwrap();
            attention_sm90(dev, &qkv, &dc, &mut out, s, Sm90Tiling::PerSequence).unwrap();
        }
        out.to_host().unwrap()
    }

    /// int8 (asymmetric codes with zero points when `asym`): fused or the chain (+
    /// `quantize_i8`): the context, its codes and scales.
    fn run_int8(&self, dev: &Device, fused: bool, asym: bool) -> (Vec<f16>, Vec<i8>, Vec<f32>) {
        let (t, h) = (self.t(), self.h());
        let s = self.shape();
        let up = |v: &[i8]| -> DeviceBuffer<i8> { dev.upload(v).unwrap() };
        let (da, dw) = (up(&self.a8), up(&self.w8));
        let (das, dws) = (dev.upload(&self.a_scale).unwrap(), dev.upload(&self.w_scale).unwrap());
        let (dz, dsum) = (dev.upload(&self.zero).unwrap(), dev.upload(&self.w_sum).unwrap());
        let (db, dc) = (dev.upload(&self.bias).unwrap(), dev.upload(&self.cu).unwrap());
        let g = GemmInt8 {
            a: &da,
            a_scale: &das,
            zero_point: asym.then_some(ZeroPoint { zero: &dz, w_sum: &dsum }),
            w: &dw,
            w_scale: &dws,
            bias: Some(&db),
            epilogue: Epilogue::None,
            shape: self.gemm_shape(),
        };
        let mut out = poisoned::<f16>(dev, t * h);
        // codes poisoned too: every one must be written (127 is a code only a row's absmax gets)
        let mut q: DeviceBuffer<i8> = dev.upload(&vec![127i8; t * h]).unwrap();
        let mut scale = poisoned::<f32>(dev, t);
        clear(dev);
        if fused {
            let mut counters = dev.alloc_filled::<u32>(CTX_COUNTERS * s.batch, 0).unwrap();
            // twice: the first launch must leave the counters at zero for the second
            for _ in 0..2 {
                let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
                qkv_attention_int8_sm90(dev, &g, &dc, &mut out, codes, s).unwrap();
            }
            self.check_launch(dev, true, &out);
            assert!(counters.to_host().unwrap().iter().all(|&a| a == 0), "sequence counters left non-zero");
        } else {
            let mut qkv = poisoned::<f16>(dev, t * 3 * h);
            fusebert_kernels::gemm_int8_sm90(dev, &g, &mut qkv, GemmSm90Launch::default()).unwrap();
            attention_sm90(dev, &qkv, &dc, &mut out, s, Sm90Tiling::PerSequence).unwrap();
            let x = QuantizeF16 { x: &out, smooth: None, rows: t, hidden: h };
            quantize_i8(dev, &x, QuantizedI8 { q: &mut q, scale: &mut scale, zero: None }).unwrap();
        }
        (out.to_host().unwrap(), q.to_host().unwrap(), scale.to_host().unwrap())
    }

    /// The fused entry launched, no local memory, every output element written exactly once.
    fn check_launch(&self, dev: &Device, int8: bool, out: &DeviceBuffer<f16>) {
        let emu = dev.emulator_backend().expect("emulator");
        let kernel = qa::kernel_name(int8, self.d);
        assert_eq!(emu.launches().last().unwrap().kernel, kernel);
        let launch = emu.launches().last().unwrap().clone();
        assert_eq!(launch.grid, ((self.h() / qa::GROUP) as u32, self.cu.len() as u32 - 1, 1), "a CTA per 64 columns");
        let c = last_counters(dev).unwrap();
        let what = format!("{kernel} lens {:?}", self.cu);
        assert_no_local(&c, &what);
        // the context, and in int8 its codes and scales
        let (t, h) = (self.t(), self.h());
        let stored = t * h * 2 + if int8 { t * h + 4 * t } else { 0 };
        assert_eq!(c.global_store_bytes, stored as u64, "{what}: store bytes = output size");
        let host = out.to_host().unwrap();
        assert!(host.iter().all(|v| !v.is_nan()), "{what}: an output element was not written");
        // not a degenerate output (the bitwise comparisons would hold for zeros too)
        let max = host.iter().map(|v| v.to_f32().abs()).fold(0f32, f32::max);
        assert!(max > 0.1, "{what}: max |out| = {max}");
    }

    /// The CPU reference: the f32 GEMM + bias rounded to fp16 (the qkv the chain stores), then
    /// the f64 attention.
    fn reference_f16(&self) -> Vec<f32> {
        let (t, h) = (self.t(), self.h());
        let acc = reference::gemm_f32(&self.x, &self.w, t, 3 * h, h);
        let qkv: Vec<f16> =
            reference::epilogue(&acc, Some(&self.bias), 0, None, 3 * h).into_iter().map(f16::from_f32).collect();
        reference::attention(&qkv, &self.cu, self.heads, self.d, 1.0 / (self.d as f32).sqrt())
    }
}

/// fp16, heads 2 (H = K = 128: one K chunk), every completion mode: the fused output is the
/// chain's, bit for bit; and within the fp16 tolerance of the CPU reference. Tolerance 2e-3
/// absolute: the attention's own bound on unit-scale data (tests/attention_sm90.rs: P rounded
/// to fp16 before P V, <= 2^-11 max|v|; O rounded to fp16, <= 2^-11 |o|; here |v| <= ~1.5, so
/// <= 1.5e-3), plus the reference's qkv rounding from the f32 CPU GEMM against the kernel's
/// f32 wgmma sums in another order (an element may round to the neighbouring fp16: one ulp of
/// one q, k or v, 2^-11 relative, moving the output by far less than 1e-4).
#[test]
fn f16_bitwise_equals_chain_and_reference() {
    let case = Case::new(1, 2, &LENS);
    let want = case.reference_f16();
    let mut max_err = 0f32;
    for mode in MODES {
        let dev = sm90(mode);
        let fused = case.run_f16(&dev, true);
        let chain = case.run_f16(&dev, false);
        assert_eq!(bits(&fused), bits(&chain), "fp16 fused != chain ({mode:?})");
        let err = check_close(&format!("fp16 fused vs reference ({mode:?})"), &to_f32(&fused), &want, |_, _| 2e-3);
        max_err = max_err.max(err);
    }
    eprintln!("fp16 fused == chain bitwise in {MODES:?}; max |err| vs the CPU reference {max_err:e}");
}

/// fp16 with K = H = 320 (heads 5: five k-blocks in chunks of 4 + 1, so the first chunk is
/// folded in the consumers' shared regions, consumer 1's being the attention's area), with empty
/// sequences in the batch; the chain's GEMM in either tile width and as the planner launches it
/// (split over K at this M): the same bits every way.
#[test]
fn f16_chunked_k_bitwise_equals_chain() {
    let lens = [0, 128, 0, 33, 64];
    let case = Case::new(2, 5, &lens);
    let (m, n, k) = (case.t(), 3 * case.h(), case.h());
    for mode in MODES {
        let dev = sm90(mode);
        let ws = SplitWorkspace::for_shapes(&dev, &[(m, n, k, false)]).unwrap();
        let fused = case.run_f16(&dev, true);
        for how in [
            GemmSm90Launch::default(),
            GemmSm90Launch { cols: Sm90Cols::N128, ..Default::default() },
            GemmSm90Launch::planned(m, n, k, false, &ws),
        ] {
            let chain = case.run_f16_with(&dev, false, how);
            assert_eq!(bits(&fused), bits(&chain), "fp16 K 320 fused != chain ({mode:?}, {how:?})");
        }
    }
}

/// int8 (symmetric, and asymmetric with zero points), every completion mode: the chain's bits,
/// and the context codes and scales `quantize_i8` gives from the chain's context (launched
/// twice: the sequence counters reset). Heads 3 (the last CTA of a sequence quantises all three
/// heads' columns: rows of 192, not a multiple of 256 codes).
#[test]
fn int8_bitwise_equals_chain() {
    let case = Case::new(3, 3, &LENS);
    for mode in MODES {
        let dev = sm90(mode);
        for asym in [false, true] {
            let (fused, fq, fs) = case.run_int8(&dev, true, asym);
            let (chain, cq, cs) = case.run_int8(&dev, false, asym);
            assert_eq!(bits(&fused), bits(&chain), "int8 fused != chain ({mode:?}, asym {asym})");
            assert_eq!(fq, cq, "int8 context codes != quantize_i8's ({mode:?}, asym {asym})");
            let sbits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(sbits(&fs), sbits(&cs), "int8 context scales != quantize_i8's ({mode:?}, asym {asym})");
            // not degenerate: codes span the range
            assert!(fq.iter().any(|&c| c == 127 || c == -127) && fq.iter().any(|&c| c.abs() < 64));
        }
    }
}

/// The context codes' pass is shared by a sequence's CTAs: with all of them resident (the
/// emulator's H100: 132), every CTA joins and each of its 8 consumer warps claims rows until
/// they run out (atomics per sequence: started, arrived and done per CTA, 4 resets, a claim per
/// row, and a last, empty claim per joined warp); with one CTA resident at a time, a CTA that
/// arrives while others have not started must not wait for them (on a GPU they might need its
/// SM): only the last arrival joins. The same bits either way, in every completion mode.
#[test]
fn int8_context_codes_are_shared_by_the_sequences_ctas() {
    let case = Case::new(3, 3, &LENS);
    let groups = qa::ctas_per_sequence(case.heads, case.d) as u64;
    let (chain, cq, cs) = case.run_int8(&sm90(AsyncMode::Lazy), false, false);
    for (resident, joined) in [(None, groups), (Some(1), 1)] {
        for mode in MODES {
            let dev = Device::emulator_with(EmulatorOptions {
                arch: Arch::Sm90,
                async_mode: mode,
                resident_blocks: resident,
                ..Default::default()
            })
            .unwrap();
            let (fused, fq, fs) = case.run_int8(&dev, true, false);
            let what = format!("resident {resident:?}, {mode:?}");
            let (kernel, c) = last_launch(&dev, &what);
            assert_eq!(kernel, qa::kernel_name(true, 64));
            let want: u64 = LENS.iter().map(|&len| 3 * groups + 4 + len as u64 + 8 * joined).sum();
            assert_eq!(c.atomics, want, "{what}: atomics");
            assert_eq!(bits(&fused), bits(&chain), "{what}: context");
            assert_eq!(fq, cq, "{what}: codes");
            assert_eq!(
                fs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                cs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{what}: scales"
            );
        }
    }
}

/// Head dim 32 (MiniLM, bge-small, e5-small): a CTA per pair of heads (the same 128 x 192 GEMM
/// tile, both heads' q, k, v staged in attention_sm90's d32 layout, two attention areas), 4
/// heads (two CTAs a sequence), fp16 every completion mode: the chain's bits (its
/// attention_sm90_d32), and within the CPU reference's tolerance (see above).
#[test]
fn d32_f16_bitwise_equals_chain_and_reference() {
    let case = Case::with_head_dim(5, 4, 32, &LENS);
    let want = case.reference_f16();
    for mode in MODES {
        let dev = sm90(mode);
        let fused = case.run_f16(&dev, true);
        let chain = case.run_f16(&dev, false);
        assert_eq!(bits(&fused), bits(&chain), "d32 fp16 fused != chain ({mode:?})");
        check_close(&format!("d32 fp16 fused vs reference ({mode:?})"), &to_f32(&fused), &want, |_, _| 2e-3);
    }
}

/// Head dim 32, int8 (symmetric and with zero points), 6 heads (three CTAs a sequence share
/// its counters): the chain's context, codes and scales, bit for bit.
#[test]
fn d32_int8_bitwise_equals_chain() {
    let case = Case::with_head_dim(6, 6, 32, &[97, 1, 128, 30]);
    for mode in MODES {
        let dev = sm90(mode);
        for asym in [false, true] {
            let (fused, fq, fs) = case.run_int8(&dev, true, asym);
            let (chain, cq, cs) = case.run_int8(&dev, false, asym);
            assert_eq!(bits(&fused), bits(&chain), "d32 int8 fused != chain ({mode:?}, asym {asym})");
            assert_eq!(fq, cq, "d32 int8 context codes ({mode:?}, asym {asym})");
            let sbits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(sbits(&fs), sbits(&cs), "d32 int8 context scales ({mode:?}, asym {asym})");
        }
    }
}

/// Typed errors naming the kernel: head dim 16, an odd number of heads of 32, max_seqlen 129, a wrong GEMM shape, an
/// activation epilogue.
#[test]
fn typed_errors() {
    let dev = sm90(AsyncMode::Lazy);
    let case = Case::new(4, 2, &[5, 3]);
    let (t, h) = (case.t(), case.h());
    let (dx, dw, dc) = (dev.upload(&case.x).unwrap(), dev.upload(&case.w).unwrap(), dev.upload(&case.cu).unwrap());
    let mut out = poisoned::<f16>(&dev, t * h);
    let g = GemmF16 { a: &dx, w: &dw, bias: None, epilogue: Epilogue::None, shape: case.gemm_shape() };
    let k = qa::kernel_name(false, 64);
    let s = case.shape();
    assert!(qa::supports(&s));
    let d16 = AttentionShape { head_dim: 16, ..s };
    assert!(!qa::supports(&d16));
    assert_kernel_err(qkv_attention_f16_sm90(&dev, &g, &dc, &mut out, d16), k);
    // head dim 32 takes heads in pairs: 3 heads of 32 (H = 96) is not whole 64-column groups
    let odd = AttentionShape { head_dim: 32, heads: 3, ..s };
    assert!(!qa::supports(&odd));
    assert_kernel_err(qkv_attention_f16_sm90(&dev, &g, &dc, &mut out, odd), qa::kernel_name(false, 32));
    let long = AttentionShape { max_seqlen: 129, ..s };
    assert!(!qa::supports(&long));
    assert_kernel_err(qkv_attention_f16_sm90(&dev, &g, &dc, &mut out, long), k);
    let wrong = GemmF16 { shape: GemmShape { m: t, n: 2 * h, k: h }, ..g };
    assert_kernel_err(qkv_attention_f16_sm90(&dev, &wrong, &dc, &mut out, s), k);
    let gelu = GemmF16 { epilogue: Epilogue::Gelu, ..g };
    assert_kernel_err(qkv_attention_f16_sm90(&dev, &gelu, &dc, &mut out, s), k);
    // int8: a K that is not H
    let (da, dw8) = (dev.upload(&case.a8).unwrap(), dev.upload(&case.w8).unwrap());
    let (das, dws) = (dev.upload(&case.a_scale).unwrap(), dev.upload(&case.w_scale).unwrap());
    let g8 = GemmInt8 {
        a: &da,
        a_scale: &das,
        zero_point: None,
        w: &dw8,
        w_scale: &dws,
        bias: None,
        epilogue: Epilogue::None,
        shape: GemmShape { m: t, n: 3 * h, k: 2 * h },
    };
    let (mut q, mut scale) = (dev.alloc::<i8>(t * h).unwrap(), dev.alloc::<f32>(t).unwrap());
    let mut counters = dev.alloc_filled::<u32>(CTX_COUNTERS * s.batch, 0).unwrap();
    let k8 = qa::kernel_name(true, 64);
    let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
    assert_kernel_err(qkv_attention_int8_sm90(&dev, &g8, &dc, &mut out, codes, s), k8);
    let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
    assert_kernel_err(qkv_attention_int8_sm90(&dev, &g8, &dc, &mut out, codes, d16), k8);
    // context codes: too few scales, too few sequence counters (one sequence's four short)
    let g8 = GemmInt8 { shape: case.gemm_shape(), ..g8 };
    let (mut q, mut short_scale) = (dev.alloc::<i8>(t * h).unwrap(), dev.alloc::<f32>(t - 1).unwrap());
    let mut counters = dev.alloc_filled::<u32>(CTX_COUNTERS * s.batch, 0).unwrap();
    let codes = ContextCodes { q: &mut q, scale: &mut short_scale, counters: &mut counters };
    assert_kernel_err(qkv_attention_int8_sm90(&dev, &g8, &dc, &mut out, codes, s), k8);
    let few = CTX_COUNTERS * s.batch - 1;
    let (mut scale, mut few) = (dev.alloc::<f32>(t).unwrap(), dev.alloc_filled::<u32>(few, 0).unwrap());
    let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut few };
    assert_kernel_err(qkv_attention_int8_sm90(&dev, &g8, &dc, &mut out, codes, s), k8);
}
