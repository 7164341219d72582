//! Per-token int8 quantisation of fp16 activations (`kernels/quantize.cu`). Symmetric:
//! `scale[r] = absmax(x[r]) / 127`, `q = clamp(round_half_even(x * (127 / absmax)), ±127)`.
//! Asymmetric ([`quantize_i8_asym`]): the row's range `[min(0, x), max(0, x)]` onto all 256
//! codes with a per-row zero point, for one-sided inputs such as GELU outputs.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use fusebert_core::error::Result;

/// Quantises `rows` rows of `hidden` (a multiple of 8, at most 4096): a warp per row up to
/// hidden 1024 (`quantize_i8_f16`), a block per row beyond (`quantize_i8_f16_wide`).
pub fn quantize_i8(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    q: &mut DeviceBuffer<i8>,
    scale: &mut DeviceBuffer<f32>,
    rows: usize,
    hidden: usize,
) -> Result<()> {
    quantize_i8_smoothed(dev, x, None, q, scale, rows, hidden)
}

/// [`quantize_i8`] of `x[r, j] * smooth[j]` (per-column fp16 multipliers, `None` = ones): the
/// activation side of SmoothQuant-style smoothing; the next GEMM's weights carry
/// `W[n, j] / smooth[j]`.
pub fn quantize_i8_smoothed(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    smooth: Option<&DeviceBuffer<f16>>,
    q: &mut DeviceBuffer<i8>,
    scale: &mut DeviceBuffer<f32>,
    rows: usize,
    hidden: usize,
) -> Result<()> {
    quantize_impl(dev, x, smooth, q, scale, None, rows, hidden)
}

/// Asymmetric per-token quantisation of `x[r, j] * smooth[j]`: `range = max(0, x) - min(0, x)`,
/// `inv = 255 / range`, `zero[r] = round_half_even(-min(0, x) * inv - 128)`,
/// `q = clamp(round_half_even(x * inv) + zero[r], -128, 127)`, `scale[r] = range / 255`, so
/// `x ≈ (q - zero[r]) * scale[r]`; consume with [`crate::gemm_int8_asym`].
/// All-zero rows get scale 0, zero 0, codes 0.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn quantize_i8_asym(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    smooth: Option<&DeviceBuffer<f16>>,
    q: &mut DeviceBuffer<i8>,
    scale: &mut DeviceBuffer<f32>,
    zero: &mut DeviceBuffer<i32>,
    rows: usize,
    hidden: usize,
) -> Result<()> {
    quantize_impl(dev, x, smooth, q, scale, Some(zero), rows, hidden)
}

#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
fn quantize_impl(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    smooth: Option<&DeviceBuffer<f16>>,
    q: &mut DeviceBuffer<i8>,
    scale: &mut DeviceBuffer<f32>,
    zero: Option<&mut DeviceBuffer<i32>>,
    rows: usize,
    hidden: usize,
) -> Result<()> {
    let warp_row = hidden <= 1024;
    let kernel = match (zero.is_some(), warp_row) {
        (false, true) => "quantize_i8_f16",
        (false, false) => "quantize_i8_f16_wide",
        (true, true) => "quantize_i8_asym_f16",
        (true, false) => "quantize_i8_asym_f16_wide",
    };
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
    // warp per row: 8 warps x 2 rows per block; block per row: <= 4 vectors per thread, 8 rows
    let threads = if warp_row { 256 } else { ((hidden / 8).div_ceil(4).div_ceil(32) * 32).max(32) as u32 };
    let grid = rows.div_ceil(if warp_row { 16 } else { 8 }) as u32;
    let mut args = vec![KernelArg::from(x), KernelArg::from(&*q), KernelArg::from(&*scale)];
    if let Some(z) = &zero {
        args.push(KernelArg::from(&**z));
    }
    args.extend([
        super::opt_ptr(smooth),
        KernelArg::U32(check_u32(kernel, "rows", rows)?),
        KernelArg::U32(hidden as u32),
    ]);
    launch(dev, kernel, LaunchConfig::linear(grid, threads, 0), &args)
}
