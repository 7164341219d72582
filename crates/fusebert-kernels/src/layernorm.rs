//! LayerNorm of fp16 rows with f32 statistics: `y = LN(x + residual + bias) * gamma + beta`,
//! optionally also int8 codes with a per-row scale for the next W8A8 GEMM.
//!
//! Fast path (`kernels/layernorm.cu`): hidden a multiple of 8, 16-byte vectors, one pass over
//! memory, parameters read once per block; a warp per row up to hidden 1024 (`layernorm_f16`,
//! `layernorm_f16_q8`), a block per row up to 4096 (`..._wide`).
//! Any other hidden (or [`Variant::Simple`]) uses `layernorm_f16_simple`.
use half::f16;

use super::{check_align, check_len, check_u32, kerr, launch, opt_ptr, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// Largest hidden size of the register-resident fast path (4 vectors of 8 per thread, 128 threads).
pub const MAX_FAST_HIDDEN: usize = 4096;
/// Largest hidden size of the warp-per-row kernels (4 vectors of 8 per lane).
pub const MAX_WARP_HIDDEN: usize = 1024;
/// Rows each block of the fast path walks (8 warps x 4 rows in the warp-per-row kernels):
/// amortises the per-block parameter read (<= 1/32 of the row traffic) while 4096 tokens still
/// spread over 128 blocks of 8 warps.
pub const ROWS_PER_BLOCK: usize = 32;

/// Int8 side output of [`layernorm_f16`] (for the next W8A8 GEMM).
pub struct Q8Out<'a> {
    /// `[rows, hidden]` int8 codes of the fp16 output.
    pub q: &'a mut DeviceBuffer<i8>,
    /// `[rows]` scales (absmax / 127).
    pub scale: &'a mut DeviceBuffer<f32>,
    /// Optional `[hidden]` per-column fp16 multipliers: the codes quantise `out[r, j] * smooth[j]`
    /// (SmoothQuant-style smoothing; the next GEMM's weights carry `W[n, j] / smooth[j]`).
    pub smooth: Option<&'a DeviceBuffer<f16>>,
}

/// The inputs of a layernorm: `LN(x + residual + bias)` over rows of `hidden`, `x` and
/// `residual` `[rows, hidden]`, `bias`, `gamma`, `beta` `[hidden]`, f32 statistics.
pub struct LayerNormF16<'a> {
    pub x: &'a DeviceBuffer<f16>,
    pub residual: Option<&'a DeviceBuffer<f16>>,
    pub bias: Option<&'a DeviceBuffer<f16>>,
    pub gamma: &'a DeviceBuffer<f16>,
    pub beta: &'a DeviceBuffer<f16>,
    pub rows: usize,
    pub hidden: usize,
    pub eps: f32,
}

/// The layernorm into `out` `[rows, hidden]`; with `q8`, also its int8 codes and per-token
/// scales (of `out * smooth` when smoothing multipliers are given) for the next int8 GEMM.
/// [`Variant::Simple`] is the one-block-per-row baseline (no `q8`).
pub fn layernorm_f16(
    dev: &Device,
    ln: &LayerNormF16<'_>,
    out: &mut DeviceBuffer<f16>,
    q8: Option<Q8Out<'_>>,
    variant: Variant,
) -> Result<()> {
    let LayerNormF16 { x, residual, bias, gamma, beta, rows, hidden, eps } = *ln;
    let fast = variant == Variant::Fast && hidden % 8 == 0 && hidden <= MAX_FAST_HIDDEN;
    let kernel = match (fast, q8.is_some()) {
        (true, q8) => fast_kernel(hidden, q8),
        (false, _) => ids::LAYERNORM_F16_SIMPLE,
    };
    if rows == 0 || hidden == 0 {
        return Err(kerr(kernel, format!("rows = {rows} and hidden = {hidden} must be positive")));
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(kerr(kernel, format!("eps = {eps} must be positive and finite")));
    }
    let n = rows * hidden;
    check_len(kernel, "x", x, n)?;
    check_len(kernel, "out", out, n)?;
    check_len(kernel, "gamma", gamma, hidden)?;
    check_len(kernel, "beta", beta, hidden)?;
    if let Some(r) = residual {
        check_len(kernel, "residual", r, n)?;
    }
    if let Some(b) = bias {
        check_len(kernel, "bias", b, hidden)?;
    }
    if let Some(q) = &q8 {
        check_len(kernel, "q", q.q, n)?;
        check_len(kernel, "scale", q.scale, rows)?;
        if let Some(m) = q.smooth {
            check_len(kernel, "smooth", m, hidden)?;
            check_align(kernel, "smooth", m, 16)?;
        }
    }
    let rows32 = check_u32(kernel, "rows", rows)?;
    let hidden32 = check_u32(kernel, "hidden", hidden)?;
    if fast {
        for (name, b) in
            [("x", Some(x)), ("residual", residual), ("bias", bias), ("gamma", Some(gamma)), ("beta", Some(beta))]
        {
            if let Some(b) = b {
                check_align(kernel, name, b, 16)?;
            }
        }
        check_align(kernel, "out", out, 16)?;
        if let Some(q) = &q8 {
            check_align(kernel, "q", q.q, 8)?;
        }
        let cfg = geometry(rows, hidden, q8.is_some());
        let mut args = vec![
            KernelArg::from(x),
            opt_ptr(residual),
            opt_ptr(bias),
            KernelArg::from(gamma),
            KernelArg::from(beta),
            KernelArg::from(&*out),
        ];
        if let Some(q) = &q8 {
            args.push(KernelArg::from(&*q.q));
            args.push(KernelArg::from(&*q.scale));
            args.push(opt_ptr(q.smooth));
        }
        args.extend([KernelArg::U32(rows32), KernelArg::U32(hidden32), KernelArg::F32(eps)]);
        launch(dev, kernel, cfg, &args)
    } else {
        let cfg = LaunchConfig::linear(rows32, 256, (hidden * 4) as u32);
        let (qa, sa, ma) = match &q8 {
            Some(q) => (KernelArg::from(&*q.q), KernelArg::from(&*q.scale), opt_ptr(q.smooth)),
            None => (KernelArg::Ptr(0), KernelArg::Ptr(0), KernelArg::Ptr(0)),
        };
        let args = [
            KernelArg::from(x),
            opt_ptr(residual),
            opt_ptr(bias),
            KernelArg::from(gamma),
            KernelArg::from(beta),
            KernelArg::from(&*out),
            qa,
            sa,
            ma,
            KernelArg::U32(hidden32),
            KernelArg::F32(eps),
        ];
        launch(dev, kernel, cfg, &args)
    }
}

/// The launch geometry of the fast layernorm of `[rows, hidden]` (what the launch and the
/// performance plan both use): a warp per row (8 warps per block) up to 1024 columns, else a
/// block per row (whole warps, <= 4 vectors per thread); [`ROWS_PER_BLOCK`] rows per block;
/// gamma, beta (and the smoothing multipliers with `q8`) staged in shared memory.
pub fn geometry(rows: usize, hidden: usize, q8: bool) -> LaunchConfig {
    let nvec = hidden / 8;
    let threads = if hidden <= MAX_WARP_HIDDEN { 256 } else { (nvec.div_ceil(4).div_ceil(32) * 32).max(32) as u32 };
    let grid = rows.div_ceil(ROWS_PER_BLOCK) as u32;
    let params = if q8 { 4 } else { 3 };
    LaunchConfig::linear(grid, threads, (params * hidden * 2) as u32)
}

/// The fast layernorm kernel for rows of `hidden` (`q8`: with int8 codes).
pub fn fast_kernel(hidden: usize, q8: bool) -> &'static str {
    match (q8, hidden <= MAX_WARP_HIDDEN) {
        (false, true) => ids::LAYERNORM_F16,
        (true, true) => ids::LAYERNORM_F16_Q8,
        (false, false) => ids::LAYERNORM_F16_WIDE,
        (true, false) => ids::LAYERNORM_F16_Q8_WIDE,
    }
}
