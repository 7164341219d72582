//! Hopper FFN block (`kernels/ffn_block_sm90.cu`, sm_90a only): a BERT layer's feed-forward half
//! in one persistent launch, fp16:
//! `f = act(x W1^T + b1)`, `y = f W2^T + b2 + x`, `out = LayerNorm(y)` (and, given
//! [`FusedQ8`](crate::FusedQ8), its int8 codes).
//!
//! The outputs (`f`, `y`, `out`) are **bit-identical** to the chain the forward pass runs
//! otherwise, [`gemm_f16_sm90`](crate::gemm_f16_sm90()) with the activation then
//! [`gemm_f16_sm90_ln`](crate::gemm_f16_sm90_ln()) with the residual: the block runs those
//! kernels' own device code (the K chunks and their fixed order, split-K folds, epilogues, the
//! blocked layernorm row), so a batch may take either path.
//!
//! Its units (FFN1 tiles x K chunks, FFN2 tiles x K chunks, LN2 rows in groups of 8) are handed
//! out in ticket order; a unit waits only on units of lower tickets (an FFN2 unit on its strip's
//! FFN1 tiles, an LN2 unit on its strip's FFN2 tiles), so any number of resident CTAs finishes
//! the launch. What it saves at small batches: one launch's fixed cost, the fill of FFN2's
//! pipeline (its weights stream in while FFN1 runs) and the serial strip tail of the layernorm
//! (its rows spread over the CTAs).
use half::f16;

use super::gemm_int8::ln_operands;
use super::gemm_sm90::{check_shape, gemm_f16_sm90, gemm_f16_sm90_ln, k_chunks, operand_map, output_map, smem, BM};
use super::{
    check_align, check_len, kerr, Epilogue, FusedLayerNorm, GemmF16, GemmShape, GemmSm90Launch, SplitWorkspace,
};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype};
use fusebert_core::error::Result;

/// The module (`kernels/ffn_block_sm90.cu`).
pub const MODULE: &str = "ffn_block_sm90";
/// The fp16 entry on 128 x 128 tiles.
pub const KERNEL: &str = "ffn_block_f16_sm90";
/// The fp16 entry on 128 x 64 tiles (twice the units: batches too short to fill the GPU).
pub const KERNEL_N64: &str = "ffn_block_f16_sm90_n64";
/// Threads per CTA: the producer warpgroup and two consumer warpgroups.
pub const THREADS: u32 = 384;
/// The output columns of both GEMMs' tiles the entries are compiled for.
pub const COLS: [usize; 2] = [128, 64];
/// Rows of an LN2 unit: one per consumer warp.
pub const LN_ROWS: usize = 8;
/// Counters before the per-strip ones: the ticket and the CTAs out.
const HEAD_COUNTERS: usize = 2;

/// The operands of the block: `x` `[m, h]` (FFN1's input and FFN2's residual), `w1` `[i, h]`,
/// `b1` `[i]`, `act` FFN1's activation (any [`Epilogue`] but `Residual`), `w2` `[h, i]`, `b2`
/// `[h]`.
#[derive(Clone, Copy)]
pub struct FfnBlockF16<'a> {
    pub x: &'a DeviceBuffer<f16>,
    pub w1: &'a DeviceBuffer<f16>,
    pub b1: &'a DeviceBuffer<f16>,
    pub act: Epilogue<'a>,
    pub w2: &'a DeviceBuffer<f16>,
    pub b2: &'a DeviceBuffer<f16>,
    pub m: usize,
    pub h: usize,
    pub i: usize,
}

/// The block's scratch for up to `max_m` rows of an `h` x `i` FFN: both GEMMs' split-K partial
/// slots and tile counters, and the launch's counters (the ticket, the CTAs out, per strip the
/// stored FFN1 and FFN2 tiles); every counter is left zero by each launch.
pub struct FfnBlockWorkspace {
    partials1: DeviceBuffer<u32>,
    split1: DeviceBuffer<u32>,
    partials2: DeviceBuffer<u32>,
    split2: DeviceBuffer<u32>,
    counters: DeviceBuffer<u32>,
    max_m: usize,
}

/// How a launch runs: its tiles' width and its grid.
#[derive(Debug, Clone, Copy)]
pub struct FfnBlockLaunch {
    /// Output columns of the GEMMs' tiles: 128 or 64 (one of [`COLS`]).
    pub cols: usize,
    /// CTAs (default: one per SM; never more than the units).
    pub ctas: Option<u32>,
}

impl Default for FfnBlockLaunch {
    fn default() -> Self {
        FfnBlockLaunch { cols: 128, ctas: None }
    }
}

/// The entry of tiles `cols` wide.
pub fn kernel_name(cols: usize) -> Result<&'static str> {
    match cols {
        128 => Ok(KERNEL),
        64 => Ok(KERNEL_N64),
        _ => Err(kerr(KERNEL, format!("tiles of {cols} columns: the block is compiled for {COLS:?}"))),
    }
}

/// Output tiles of an `m x n` GEMM on tiles `cols` wide.
fn tiles(m: usize, n: usize, cols: usize) -> usize {
    m.div_ceil(BM) * n.div_ceil(cols)
}

impl FfnBlockWorkspace {
    /// Room for launches of up to `max_m` rows on either tile width.
    pub fn new(dev: &Device, max_m: usize, h: usize, i: usize) -> Result<Self> {
        // the same partial words at either width; the narrower tiles' counters
        let slots = |n: usize, k: usize| tiles(max_m, n, 128) * k_chunks(k, false) * BM * 128;
        let counters = |n: usize| tiles(max_m, n, 64).max(1);
        Ok(FfnBlockWorkspace {
            partials1: dev.alloc(slots(i, h).max(1))?,
            split1: dev.alloc_filled(counters(i), 0)?,
            partials2: dev.alloc(slots(h, i).max(1))?,
            split2: dev.alloc_filled(counters(h), 0)?,
            counters: dev.alloc_filled(HEAD_COUNTERS + 2 * max_m.div_ceil(BM).max(1), 0)?,
            max_m,
        })
    }
}

/// Whether the block takes an FFN of `h` x `i`: both GEMMs' shapes (K a multiple of 8) and a
/// fused layernorm's row (`h` at most 1024, a multiple of 8).
pub fn supports(h: usize, i: usize) -> bool {
    let shape = |n, k| crate::GemmShape { m: 1, n, k };
    check_shape(KERNEL, shape(i, h), 8).is_ok()
        && check_shape(KERNEL, shape(h, i), 8).is_ok()
        && crate::gemm_plan::fuses_layernorm(h)
}

/// Work units of a launch over `m` rows on tiles `cols` wide: FFN1's and FFN2's tiles times their
/// K chunks, and the LN2 row groups.
pub fn units(m: usize, h: usize, i: usize, cols: usize) -> usize {
    let gemms = tiles(m, i, cols) * k_chunks(h, false) + tiles(m, h, cols) * k_chunks(i, false);
    gemms + m.div_ceil(BM) * (BM / LN_ROWS)
}

/// Dynamic shared memory of a CTA on tiles `cols` wide (the GEMM ring and the two consumer
/// regions).
pub fn shared_bytes(cols: usize) -> u32 {
    smem(cols)
}

/// The launch's grid: `how.ctas` (default: one per SM) CTAs, at most one per unit.
pub fn launch_config(dev: &Device, m: usize, h: usize, i: usize, how: FfnBlockLaunch) -> Result<LaunchConfig> {
    let kernel = kernel_name(how.cols)?;
    if how.ctas == Some(0) {
        return Err(kerr(kernel, "a launch needs at least one CTA"));
    }
    let units = units(m, h, i, how.cols).min(u32::MAX as usize) as u32;
    let ctas = how.ctas.unwrap_or_else(|| dev.multiprocessors()).min(units);
    Ok(LaunchConfig::linear(ctas, THREADS, shared_bytes(how.cols)))
}

/// Runs the block: FFN1's output into `f` `[m, i]`, FFN2's (+ residual) into `y` `[m, h]`, LN2
/// into `ln.out` (see the module docs), on the tiles and grid of `how`. Needs an sm_90 device;
/// [`supports`].
pub fn ffn_block_f16_sm90(
    dev: &Device,
    op: &FfnBlockF16<'_>,
    f: &mut DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f16>,
    ln: &FusedLayerNorm<'_>,
    ws: &FfnBlockWorkspace,
    how: FfnBlockLaunch,
) -> Result<()> {
    let (m, h, i, k) = (op.m, op.h, op.i, kernel_name(how.cols)?);
    if m == 0 {
        return Err(kerr(k, "M (tokens) must be positive"));
    }
    if !supports(h, i) {
        return Err(kerr(k, format!("an FFN of {h} x {i}: needs both a multiple of 8 and h at most 1024")));
    }
    if matches!(op.act, Epilogue::Residual(_)) {
        return Err(kerr(k, "FFN1's epilogue must be an activation, not a residual"));
    }
    if m > ws.max_m {
        return Err(kerr(k, format!("the workspace holds {} rows; the launch has {m}", ws.max_m)));
    }
    for (name, buf, len) in
        [("x", op.x, m * h), ("w1", op.w1, i * h), ("w2", op.w2, h * i), ("f", &*f, m * i), ("y", &*y, m * h)]
    {
        check_len(k, name, buf, len)?;
        check_align(k, name, buf, 16)?;
    }
    check_len(k, "b1", op.b1, i)?;
    check_len(k, "b2", op.b2, h)?;
    let map = |buf: &DeviceBuffer<f16>, rows, cols, box_rows| {
        operand_map(dev, buf, TensorMapDtype::F16, rows, cols, box_rows)
    };
    let mut args = vec![
        KernelArg::TensorMap(map(op.x, m, h, BM)?),
        KernelArg::TensorMap(map(op.w1, i, h, how.cols)?),
        KernelArg::from(op.b1),
        KernelArg::TensorMap(output_map(dev, f, m, i)?),
        KernelArg::TensorMap(map(f, m, i, BM)?),
        KernelArg::TensorMap(map(op.w2, h, i, how.cols)?),
        KernelArg::from(op.b2),
        KernelArg::from(op.x),
        KernelArg::TensorMap(output_map(dev, y, m, h)?),
        KernelArg::from(&*y),
        KernelArg::U32(m as u32),
        KernelArg::U32(h as u32),
        KernelArg::U32(i as u32),
        KernelArg::U32(op.act.code()),
        KernelArg::from(&ws.partials1),
        KernelArg::from(&ws.split1),
        KernelArg::from(&ws.partials2),
        KernelArg::from(&ws.split2),
        KernelArg::from(&ws.counters),
    ];
    args.extend(ln_operands(k, ln, m, h)?);
    // LN_PARAMS' strip counters (unused: the block's own counters order its rows) and eps
    args.extend([KernelArg::from(&ws.counters), KernelArg::F32(ln.eps)]);
    dev.launch_in(MODULE, k, launch_config(dev, m, h, i, how)?, &args)
}

/// The two launches the block replaces, on the same operands and outputs: `gemm_f16_sm90`
/// (FFN1 with `op.act`) into `f`, then `gemm_f16_sm90_ln` (FFN2 with the residual, the strip
/// layernorm, which stores `y`) into `y` and `ln.out`; K split where it has several chunks
/// (`ws`: room for both shapes). The block's bits: what the tests and the self-check hold it to.
pub fn ffn_chain_f16_sm90(
    dev: &Device,
    op: &FfnBlockF16<'_>,
    f: &mut DeviceBuffer<f16>,
    y: &mut DeviceBuffer<f16>,
    ln: &FusedLayerNorm<'_>,
    ws: &SplitWorkspace,
) -> Result<()> {
    let (m, h, i) = (op.m, op.h, op.i);
    let how = GemmSm90Launch { split: Some(ws), layernorm: crate::Sm90Layernorm::Strip, ..Default::default() };
    let g1 = GemmF16 { a: op.x, w: op.w1, bias: Some(op.b1), epilogue: op.act, shape: GemmShape { m, n: i, k: h } };
    gemm_f16_sm90(dev, &g1, f, how)?;
    let residual = Epilogue::Residual(op.x);
    let g2 = GemmF16 { a: f, w: op.w2, bias: Some(op.b2), epilogue: residual, shape: GemmShape { m, n: h, k: i } };
    gemm_f16_sm90_ln(dev, &g2, y, ln, ws, how)
}
