//! Sentence pooling over packed sequences (`kernels/pooling.cu`), f32 out.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, codes, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use fusebert_core::error::Result;

/// How a sequence's token states become one vector: sentence-transformers' pooling modes,
/// one definition shared with the model layer (`numerics::pooling`, which also holds the CPU
/// semantics the kernel follows).
pub use fusebert_core::numerics::pooling::Pooling;

/// The kernel's mode code (`PoolMode`, `kernels/codes.cuh`).
fn mode_code(mode: Pooling) -> u32 {
    match mode {
        Pooling::Mean => codes::POOL_MEAN,
        Pooling::Cls => codes::POOL_CLS,
        Pooling::Max => codes::POOL_MAX,
        Pooling::MeanSqrtLen => codes::POOL_MEAN_SQRT,
        Pooling::WeightedMean => codes::POOL_WMEAN,
        Pooling::LastToken => codes::POOL_LAST,
    }
}

/// `out[b, :] = pool(x[cu_seqlens[b] .. cu_seqlens[b+1], :])`, optionally L2-normalised
/// (`x / max(|x|, 1e-12)`). `x` is `[tokens, hidden]`, `cu_seqlens` has `batch + 1` entries
/// (monotone, last <= tokens: trusted, as they come from the packer); empty sequences give 0.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn pool(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f32>,
    batch: usize,
    tokens: usize,
    hidden: usize,
    mode: Pooling,
    l2norm: bool,
) -> Result<()> {
    pool_skipping(dev, x, cu_seqlens, out, batch, tokens, hidden, mode, 0, l2norm)
}

/// [`pool`] with the first `skip` tokens of every sequence masked out (a prompt, with
/// sentence-transformers' `include_prompt = false`) in the modes that honour a mask (mean,
/// max, mean_sqrt_len, weightedmean; not cls or lasttoken). A sequence with no token left pools
/// to zeros (mean modes: sentence-transformers clamps the divisor) or to -1e9 (max).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn pool_skipping(
    dev: &Device,
    x: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f32>,
    batch: usize,
    tokens: usize,
    hidden: usize,
    mode: Pooling,
    skip: usize,
    l2norm: bool,
) -> Result<()> {
    const K: &str = "pool_f16";
    check_multiple(K, "hidden", hidden, 2)?;
    check_len(K, "x", x, tokens * hidden)?;
    check_len(K, "cu_seqlens", cu_seqlens, batch + 1)?;
    check_len(K, "out", out, batch * hidden)?;
    check_align(K, "x", x, 4)?;
    check_align(K, "out", out, 8)?;
    if batch == 0 {
        return Err(super::kerr(K, "batch must be positive"));
    }
    let args = [
        KernelArg::from(x),
        KernelArg::from(cu_seqlens),
        KernelArg::from(&*out),
        KernelArg::U32(check_u32(K, "hidden", hidden)?),
        KernelArg::U32(mode_code(mode)),
        KernelArg::U32(check_u32(K, "skip", skip)?),
        KernelArg::U32(l2norm as u32),
    ];
    let threads = (hidden / 2).clamp(32, 256).div_ceil(32) as u32 * 32;
    launch(dev, K, LaunchConfig::linear(batch as u32, threads, (hidden * 4) as u32), &args)
}
