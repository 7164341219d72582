//! Sentence pooling over packed sequences (`kernels/pooling.cu`), f32 out.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, codes, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
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

/// The inputs of sentence pooling: `x` `[tokens, hidden]` (packed sequences, `cu_seqlens`
/// `[batch + 1]`), the mode, the leading tokens of each sequence masked out (`skip`: a prompt's
/// tokens; 0 for none), and whether to L2-normalise.
pub struct PoolF16<'a> {
    pub x: &'a DeviceBuffer<f16>,
    pub cu_seqlens: &'a DeviceBuffer<u32>,
    pub batch: usize,
    pub tokens: usize,
    pub hidden: usize,
    pub mode: Pooling,
    pub skip: usize,
    pub l2norm: bool,
}

/// Pools every sequence into `out` `[batch, hidden]` (f32).
pub fn pool(dev: &Device, p: &PoolF16<'_>, out: &mut DeviceBuffer<f32>) -> Result<()> {
    let PoolF16 { x, cu_seqlens, batch, tokens, hidden, mode, skip, l2norm } = *p;
    const K: &str = ids::POOL_F16;
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
    launch(dev, K, geometry(batch, hidden), &args)
}

/// The launch geometry of pooling `batch` sequences of `hidden` columns (the launch's and the
/// performance plan's): a block per sequence, a thread per column pair (whole warps, <= 256),
/// the pooled row in shared memory.
pub fn geometry(batch: usize, hidden: usize) -> LaunchConfig {
    let threads = (hidden / 2).clamp(32, 256).div_ceil(32) as u32 * 32;
    LaunchConfig::linear(batch as u32, threads, (hidden * 4) as u32)
}
