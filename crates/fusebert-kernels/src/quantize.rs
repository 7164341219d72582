//! Per-token int8 quantisation of fp16 activations (`kernels/quantize.cu`). Symmetric:
//! `scale[r] = absmax(x[r]) / 127`, `q = clamp(round_half_even(x * (127 / absmax)), ±127)`.
//! Asymmetric ([`quantize_i8`] with a zero-point buffer): the row's range `[min(0, x), max(0, x)]` onto all 256
//! codes with a per-row zero point, for one-sided inputs such as GELU outputs.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// Per-token int8 codes of `x` `[rows, hidden]` (of `x * smooth` when smoothing multipliers
/// `[hidden]` are given).
pub struct QuantizeF16<'a> {
    pub x: &'a DeviceBuffer<f16>,
    pub smooth: Option<&'a DeviceBuffer<f16>>,
    pub rows: usize,
    pub hidden: usize,
}

/// Where the codes go: `q` `[rows, hidden]`, `scale` `[rows]`, and with `zero` `[rows]` the
/// asymmetric form ([min, max] onto all 256 codes, a per-token zero point).
pub struct QuantizedI8<'a> {
    pub q: &'a mut DeviceBuffer<i8>,
    pub scale: &'a mut DeviceBuffer<f32>,
    pub zero: Option<&'a mut DeviceBuffer<i32>>,
}

/// Quantises every row (round half to even): symmetric (absmax / 127), or asymmetric when
/// `out.zero` is given.
pub fn quantize_i8(dev: &Device, input: &QuantizeF16<'_>, out: QuantizedI8<'_>) -> Result<()> {
    let QuantizeF16 { x, smooth, rows, hidden } = *input;
    let QuantizedI8 { q, scale, zero } = out;
    let (kernel, cfg) = geometry(rows, hidden, zero.is_some());
    check_multiple(kernel, "hidden", hidden, 8)?;
    if hidden > 4096 || rows == 0 {
        return Err(super::kerr(kernel, format!("hidden = {hidden} must be <= 4096 and rows = {rows} positive")));
    }
    check_len(kernel, "x", x, rows * hidden)?;
    check_len(kernel, "q", q, rows * hidden)?;
    check_len(kernel, "scale", scale, rows)?;
    if let Some(z) = &zero {
        check_len(kernel, "zero", z, rows)?;
    }
    check_align(kernel, "x", x, 16)?;
    check_align(kernel, "q", q, 8)?;
    if let Some(m) = smooth {
        check_len(kernel, "smooth", m, hidden)?;
        check_align(kernel, "smooth", m, 16)?;
    }
    let mut args = vec![KernelArg::from(x), KernelArg::from(&*q), KernelArg::from(&*scale)];
    if let Some(z) = &zero {
        args.push(KernelArg::from(&**z));
    }
    args.extend([
        super::opt_ptr(smooth),
        KernelArg::U32(check_u32(kernel, "rows", rows)?),
        KernelArg::U32(hidden as u32),
    ]);
    launch(dev, kernel, cfg, &args)
}

/// The kernel and launch geometry of a quantisation of `[rows, hidden]` (what the launch and the
/// performance plan both use): a warp per row (8 warps x 2 rows per block) up to 1024 columns,
/// else a block per row (<= 4 vectors per thread, 8 rows per block).
pub fn geometry(rows: usize, hidden: usize, asym: bool) -> (&'static str, LaunchConfig) {
    let warp_row = hidden <= 1024;
    let kernel = match (asym, warp_row) {
        (false, true) => ids::QUANTIZE_I8_F16,
        (false, false) => ids::QUANTIZE_I8_F16_WIDE,
        (true, true) => ids::QUANTIZE_I8_ASYM_F16,
        (true, false) => ids::QUANTIZE_I8_ASYM_F16_WIDE,
    };
    let threads = if warp_row { 256 } else { ((hidden / 8).div_ceil(4).div_ceil(32) * 32).max(32) as u32 };
    let grid = rows.div_ceil(if warp_row { 16 } else { 8 }) as u32;
    (kernel, LaunchConfig::linear(grid, threads, 0))
}
