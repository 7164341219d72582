//! Per-token symmetric int8 quantisation of fp16 activations (`kernels/quantize.cu`):
//! `scale[r] = absmax(x[r]) / 127`, `q = clamp(round_half_even(x * (127 / absmax)), ±127)`.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::error::Result;

/// Quantises `rows` rows of `hidden` (a multiple of 8, at most 4096).
pub fn quantize_i8(
    dev: &Device, x: &DeviceBuffer<f16>, q: &mut DeviceBuffer<i8>, scale: &mut DeviceBuffer<f32>, rows: usize,
    hidden: usize,
) -> Result<()> {
    const K: &str = "quantize_i8_f16";
    check_multiple(K, "hidden", hidden, 8)?;
    if hidden > 4096 || rows == 0 {
        return Err(super::kerr(K, format!("hidden = {hidden} must be <= 4096 and rows = {rows} positive")));
    }
    check_len(K, "x", x, rows * hidden)?;
    check_len(K, "q", q, rows * hidden)?;
    check_len(K, "scale", scale, rows)?;
    check_align(K, "x", x, 16)?;
    check_align(K, "q", q, 8)?;
    let threads = ((hidden / 8).div_ceil(4).div_ceil(32) * 32).max(32) as u32;
    let grid = rows.div_ceil(8) as u32;
    let args = [
        KernelArg::from(x),
        KernelArg::from(&*q),
        KernelArg::from(&*scale),
        KernelArg::U32(check_u32(K, "rows", rows)?),
        KernelArg::U32(hidden as u32),
    ];
    launch(dev, K, LaunchConfig::linear(grid, threads, 0), &args)
}
