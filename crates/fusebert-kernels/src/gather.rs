//! Row gather for packed batches (`kernels/gather.cu`).
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// `out[b, :] = x[cu_seqlens[b], :]` for `b < batch`: the first (`[CLS]`) row of every packed
/// sequence, as a contiguous `[batch, hidden]` fp16 matrix. `hidden % 8 == 0`.
pub fn gather_first_rows(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    batch: usize,
    tokens: usize,
    hidden: usize,
) -> Result<()> {
    const K: &str = ids::GATHER_FIRST_ROWS_F16;
    check_multiple(K, "hidden", hidden, 8)?;
    check_len(K, "x", x, tokens * hidden)?;
    check_len(K, "cu_seqlens", cu_seqlens, batch + 1)?;
    check_len(K, "out", out, batch * hidden)?;
    check_align(K, "x", x, 16)?;
    check_align(K, "out", out, 16)?;
    if batch == 0 {
        return Ok(());
    }
    check_u32(K, "batch", batch)?;
    let cfg = geometry(batch, hidden);
    let args = [KernelArg::from(x), KernelArg::from(cu_seqlens), KernelArg::from(&*out), KernelArg::U32(hidden as u32)];
    launch(dev, K, cfg, &args)
}

/// The launch geometry of gathering `batch` rows of `hidden` (the launch's and the plan's): a
/// block per row, a thread per 16-byte vector (whole warps, <= 256).
pub fn geometry(batch: usize, hidden: usize) -> LaunchConfig {
    let threads = (hidden / 8).next_multiple_of(32).min(256) as u32;
    LaunchConfig::linear(batch as u32, threads, 0)
}
