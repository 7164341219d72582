//! The attention blocks (`attention_block_{f16,int8}_sm90_d{64,32}`: the fused QKV attention,
//! then in the same launch the attention-out GEMM + bias + residual and LN1 of each sequence's
//! rows) on the emulator at sm_90: bit for bit the chain they replace (`qkv_attention_*_sm90`,
//! then `gemm_*_sm90_ln` with the residual epilogue and the strip layernorm), every output (the
//! context, int8 its codes and scales, y, LN1's rows, int8 their codes and scales), on random
//! non-zero inputs, outputs poisoned before every launch, ragged batches (a one-token text: an
//! idle consumer warpgroup in both GEMMs; 128 tokens; lengths off every multiple of 64), in
//! lazy, eager and random completion, with the grid resident (every CTA of a sequence takes
//! part) and one CTA at a time (a sequence's last CTA does its tiles and rows alone), and twice
//! on one device (the counters left zero).
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_sm90::{GemmSm90Launch, Sm90Layernorm};
use fusebert_kernels::qkv_attention_sm90::{self as qa, AttentionOut, ContextCodes, CTX_COUNTERS, FOLD_COUNTERS};
use fusebert_kernels::{
    AttentionShape, Device, DeviceBuffer, Epilogue, FusedLayerNorm, FusedQ8, GemmF16, GemmInt8, GemmShape,
    SplitWorkspace,
};
use half::f16;
use kernels_util::*;
use rand::Rng;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(13)];
const LENS: [u32; 5] = [97, 1, 128, 65, 30];

/// Every output of one run, as bits.
#[derive(Debug, PartialEq, Eq)]
struct Outputs {
    ctx: Vec<u32>,
    codes: Vec<u32>,
    scales: Vec<u32>,
    y: Vec<u16>,
    h1: Vec<u16>,
    ln_codes: Vec<i8>,
    ln_scales: Vec<u32>,
}

/// A ragged batch with random weights for the QKV projection, the output projection and LN1.
struct Case {
    cu: Vec<u32>,
    heads: usize,
    d: usize,
    x: Vec<f16>,
    w: Vec<f16>,
    bias: Vec<f16>,
    wo: Vec<f16>,
    bo: Vec<f16>,
    gamma: Vec<f16>,
    beta: Vec<f16>,
    a8: Vec<i8>,
    w8: Vec<i8>,
    wo8: Vec<i8>,
    a_scale: Vec<f32>,
    w_scale: Vec<f32>,
    wo_scale: Vec<f32>,
}

impl Case {
    fn new(seed: u64, heads: usize, d: usize) -> Case {
        let mut cu = vec![0u32];
        for &l in &LENS {
            cu.push(cu.last().unwrap() + l);
        }
        let (t, h) = (*cu.last().unwrap() as usize, heads * d);
        let r = &mut rng(seed);
        let wa = 2.0 / (h as f32).sqrt();
        let gamma = rand_around_one(r, h, 0.2);
        Case {
            x: rand_f16(r, t * h, 1.0),
            w: rand_f16(r, 3 * h * h, wa),
            bias: rand_f16(r, 3 * h, 0.5),
            wo: rand_f16(r, h * h, wa),
            bo: rand_f16(r, h, 0.5),
            gamma,
            beta: rand_f16(r, h, 0.3),
            a8: nonzero_codes(r, t * h, -128),
            w8: nonzero_codes(r, 3 * h * h, -127),
            wo8: nonzero_codes(r, h * h, -127),
            a_scale: (0..t).map(|_| r.gen_range(0.0005f32..0.003)).collect(),
            w_scale: (0..3 * h).map(|_| r.gen_range(0.005f32..0.02) * (128.0 / h as f32).sqrt()).collect(),
            wo_scale: (0..h).map(|_| r.gen_range(0.0005f32..0.002)).collect(),
            cu,
            heads,
            d,
        }
    }
    fn t(&self) -> usize {
        *self.cu.last().unwrap() as usize
    }
    fn h(&self) -> usize {
        self.heads * self.d
    }

    /// The block (`block`) or the chain, fp16 or int8, on `dev`, `launches` times (the outputs
    /// of the last).
    fn run(&self, dev: &Device, int8: bool, block: bool, launches: usize) -> Outputs {
        let (t, h) = (self.t(), self.h());
        let s = AttentionShape::from_cu_seqlens(&self.cu, self.heads, self.d).unwrap();
        assert!(qa::block_supports(&s));
        let up16 = |v: &[f16]| -> DeviceBuffer<f16> { dev.upload(v).unwrap() };
        let up8 = |v: &[i8]| -> DeviceBuffer<i8> { dev.upload(v).unwrap() };
        let up32 = |v: &[f32]| -> DeviceBuffer<f32> { dev.upload(v).unwrap() };
        let (dx, dw, db, dwo, dbo) = (up16(&self.x), up16(&self.w), up16(&self.bias), up16(&self.wo), up16(&self.bo));
        let (dg, dbeta) = (up16(&self.gamma), up16(&self.beta));
        let (da, dw8, dwo8) = (up8(&self.a8), up8(&self.w8), up8(&self.wo8));
        let (das, dws, dwos) = (up32(&self.a_scale), up32(&self.w_scale), up32(&self.wo_scale));
        let dc = dev.upload(&self.cu).unwrap();
        let ws = SplitWorkspace::for_shapes(dev, &[(t, h, h, int8)]).unwrap();
        let mut ctx_counters = dev.alloc_filled::<u32>(CTX_COUNTERS * s.batch, 0).unwrap();
        let mut fold = dev.alloc_filled::<u32>(FOLD_COUNTERS * s.batch, 0).unwrap();
        let mut outs = None;
        // the block's context scratch: a slot of 128 rows a sequence, rows past its length zero
        // (read by the GEMM's A box, unused), the others poisoned; the chain's: [T, H] poisoned
        let rows = if block { s.batch * qa::SLOT_ROWS } else { t };
        let slot_row = |r: usize| block && (r % qa::SLOT_ROWS) >= LENS[r / qa::SLOT_ROWS] as usize;
        let init16: Vec<u16> = (0..rows * h).map(|i| if slot_row(i / h) { 0 } else { 0xffff }).collect();
        let init8: Vec<i8> = (0..rows * h).map(|i| if slot_row(i / h) { 0 } else { 127 }).collect();
        for _ in 0..launches {
            let mut out: DeviceBuffer<f16> =
                dev.upload(&init16.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>()).unwrap();
            let mut q = dev.upload(&init8).unwrap();
            let mut scale = poisoned::<f32>(dev, rows);
            let (mut y, h1) = (poisoned::<f16>(dev, t * h), poisoned::<f16>(dev, t * h));
            let (ln_q, ln_scale) = (poisoned::<i8>(dev, t * h), poisoned::<f32>(dev, t));
            let ln = FusedLayerNorm {
                gamma: &dg,
                beta: &dbeta,
                out: &h1,
                q8: int8.then_some(FusedQ8 { q: &ln_q, scale: &ln_scale, smooth: None }),
                eps: 1e-12,
            };
            let strip = GemmSm90Launch { layernorm: Sm90Layernorm::Strip, ..Default::default() };
            let out_shape = GemmShape { m: t, n: h, k: h };
            clear(dev);
            if int8 {
                let g = GemmInt8 {
                    a: &da,
                    a_scale: &das,
                    zero_point: None,
                    w: &dw8,
                    w_scale: &dws,
                    bias: Some(&db),
                    epilogue: Epilogue::None,
                    shape: GemmShape { m: t, n: 3 * h, k: h },
                };
                let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut ctx_counters };
                if block {
                    let o = AttentionOut {
                        w: &dwo8,
                        w_scale: Some(&dwos),
                        bias: &dbo,
                        residual: &dx,
                        y: &mut y,
                        ln,
                        counters: &mut fold,
                    };
                    qa::attention_block_int8_sm90(dev, &g, &dc, &mut out, codes, o, s).unwrap();
                } else {
                    qa::qkv_attention_int8_sm90(dev, &g, &dc, &mut out, codes, s).unwrap();
                    let go = GemmInt8 {
                        a: &q,
                        a_scale: &scale,
                        zero_point: None,
                        w: &dwo8,
                        w_scale: &dwos,
                        bias: Some(&dbo),
                        epilogue: Epilogue::Residual(&dx),
                        shape: out_shape,
                    };
                    fusebert_kernels::gemm_int8_sm90_ln(dev, &go, &mut y, &ln, &ws, strip).unwrap();
                }
            } else {
                let g = GemmF16 {
                    a: &dx,
                    w: &dw,
                    bias: Some(&db),
                    epilogue: Epilogue::None,
                    shape: GemmShape { m: t, n: 3 * h, k: h },
                };
                if block {
                    let o = AttentionOut {
                        w: &dwo,
                        w_scale: None,
                        bias: &dbo,
                        residual: &dx,
                        y: &mut y,
                        ln,
                        counters: &mut fold,
                    };
                    qa::attention_block_f16_sm90(dev, &g, &dc, &mut out, o, s).unwrap();
                } else {
                    qa::qkv_attention_f16_sm90(dev, &g, &dc, &mut out, s).unwrap();
                    let go = GemmF16 {
                        a: &out,
                        w: &dwo,
                        bias: Some(&dbo),
                        epilogue: Epilogue::Residual(&dx),
                        shape: out_shape,
                    };
                    fusebert_kernels::gemm_f16_sm90_ln(dev, &go, &mut y, &ln, &ws, strip).unwrap();
                }
            }
            if block {
                let c = last_counters(dev).unwrap();
                assert_no_local(&c, "attention block");
                let kernel = dev.emulator_backend().unwrap().launches().last().unwrap().kernel.clone();
                assert_eq!(kernel, qa::block_kernel_name(int8, self.d));
                assert!(fold.to_host().unwrap().iter().all(|&w| w == 0), "fold counters left non-zero");
            }
            // the context's rows in token order (the block's from their slots)
            let token_rows = |v: Vec<u32>, width: usize| -> Vec<u32> {
                if !block {
                    return v;
                }
                let mut packed = Vec::with_capacity(t * width);
                for (b, &len) in LENS.iter().enumerate() {
                    let at = b * qa::SLOT_ROWS * width;
                    packed.extend_from_slice(&v[at..at + len as usize * width]);
                }
                packed
            };
            let wide = |v: Vec<u16>| v.into_iter().map(u32::from).collect::<Vec<_>>();
            let (codes, scales, ln_codes, ln_scales) = if int8 {
                let q = token_rows(bits(&q).into_iter().map(|c| c as u8 as u32).collect(), h);
                (q, token_rows(f32_bits(&scale), 1), bits(&ln_q), f32_bits(&ln_scale))
            } else {
                (Vec::new(), Vec::new(), Vec::new(), Vec::new())
            };
            let ctx = token_rows(wide(f16_bits(&out)), h);
            outs = Some(Outputs { ctx, codes, scales, y: f16_bits(&y), h1: f16_bits(&h1), ln_codes, ln_scales });
        }
        outs.unwrap()
    }
}

fn emu(mode: AsyncMode, resident: Option<u32>) -> Device {
    kernels_util::hopper::sm90_resident(mode, resident)
}

/// The block against the chain: the grid resident in every completion mode (twice in lazy:
/// the counters left zero for the next launch), one CTA at a time in lazy and random.
fn block_equals_chain(case: &Case, int8: bool) {
    let chain = case.run(&emu(AsyncMode::Lazy, None), int8, false, 1);
    let runs =
        [(None, MODES[0], 2), (None, MODES[1], 1), (None, MODES[2], 1), (Some(1), MODES[0], 1), (Some(1), MODES[2], 1)];
    for (resident, mode, launches) in runs {
        let got = case.run(&emu(mode, resident), int8, true, launches);
        assert!(got == chain, "int8 {int8}, resident {resident:?}, {mode:?}: the block differs from the chain");
    }
}

/// Head dim 64, 6 heads (H 384: two attention-out tiles a sequence, 6 CTAs to claim them).
#[test]
fn d64_f16_blocks_are_the_chains_bits() {
    block_equals_chain(&Case::new(41, 6, 64), false);
}

#[test]
fn d64_int8_blocks_are_the_chains_bits() {
    block_equals_chain(&Case::new(41, 6, 64), true);
}

/// Head dim 32 in pairs, 6 heads (H 192: one tile, 3 CTAs a sequence).
#[test]
fn d32_f16_blocks_are_the_chains_bits() {
    block_equals_chain(&Case::new(42, 6, 32), false);
}

#[test]
fn d32_int8_blocks_are_the_chains_bits() {
    block_equals_chain(&Case::new(42, 6, 32), true);
}
