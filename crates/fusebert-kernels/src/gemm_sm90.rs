//! Hopper fp16 GEMM (`kernels/gemm_sm90.cu`, sm_90a only): `C[M,N] = A[M,K] . W[N,K]^T +
//! bias[n]` then the [`Epilogue`](crate::Epilogue), as [`gemm_f16`](crate::gemm_f16()) computes
//! it, on a warp-specialised wgmma kernel: a TMA producer warpgroup and two wgmma consumer warpgroups
//! over a 128 x 128 output tile, a 4-stage mbarrier ring, a persistent grid.
//!
//! A and W reach the kernel as tensor maps (TMA descriptors, [`Device::encode_tensor_map`])
//! with 64 x 128 and 64 x 128 boxes (K x rows) in the 128-byte swizzle; TMA zero-fills what lies
//! past M, N or K, so no dimension needs a multiple of the tile. Host-checked: `K % 8 == 0`
//! (a TMA row stride is a multiple of 16 bytes), `N % 8 == 0`, A and W 16-byte aligned.
//!
//! Each row is summed over K in k order by the same instruction sequence whatever M or the
//! tile: results are batch-invariant. They are not bit-identical to `gemm_f16`'s (which sums K
//! in chunks): the two agree to f32 accumulation rounding, i.e. within an fp16 ulp of the output.
use half::f16;

use super::gemm_int8::check_epilogue;
use super::{check_align, check_len, check_u32, kerr, opt_ptr, GemmF16, GemmShape};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype, TensorMapSwizzle, TiledTensorMap};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The module (`kernels/gemm_sm90.cu`) and its entry.
pub const MODULE: &str = "gemm_sm90";
pub const KERNEL: &str = ids::GEMM_F16_SM90;

/// Output tile rows and columns, K per pipeline stage, stages, threads (`kernels/gemm_sm90.cu`).
pub const BM: usize = 128;
pub const BN: usize = 128;
pub const BK: usize = 64;
pub const STAGES: usize = 4;
pub const THREADS: u32 = 384;
/// Dynamic shared memory: the stage ring (`SMEM` in the kernel).
pub const SMEM: u32 = (STAGES * (BM + BN) * BK * 2) as u32;

/// How to launch the Hopper GEMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemmSm90Launch {
    /// CTAs of the persistent grid; `None`: one per SM, at most one per output tile. (Tests set
    /// fewer to make each CTA walk several tiles.)
    pub ctas: Option<u32>,
}

/// Output tiles of an `m x n` GEMM.
pub fn tiles(m: usize, n: usize) -> usize {
    m.div_ceil(BM) * n.div_ceil(BN)
}

/// The shape checks of the kernel: `M > 0`, `N` and `K` positive multiples of 8, all fitting
/// u32 (and a TMA dimension: at most 2^32).
fn check_shape(s: GemmShape) -> Result<(u32, u32, u32)> {
    let GemmShape { m, n, k } = s;
    if m == 0 {
        return Err(kerr(KERNEL, "M (tokens) must be positive"));
    }
    if n == 0 || n % 8 != 0 {
        return Err(kerr(KERNEL, format!("N = {n} must be a positive multiple of 8 (4-byte column-pair stores)")));
    }
    if k == 0 || k % 8 != 0 {
        return Err(kerr(
            KERNEL,
            format!("K = {k} must be a positive multiple of 8 (TMA: a row of A and W is a multiple of 16 bytes)"),
        ));
    }
    let m32 = check_u32(KERNEL, "M", m)?;
    let n32 = check_u32(KERNEL, "N", n)?;
    let k32 = check_u32(KERNEL, "K", k)?;
    // the tile walk computes tile indices in 32-bit ints
    if m.div_ceil(BM).checked_mul(n.div_ceil(BN)).is_none_or(|t| t > i32::MAX as usize) {
        return Err(kerr(KERNEL, format!("{m} x {n} has more than 2^31 output tiles")));
    }
    Ok((m32, n32, k32))
}

/// The fp16 GEMM on the Hopper kernel into `out` `[m, n]`. Needs an sm_90 device (a CUDA
/// H100/H200, or the emulator with `Arch::Sm90`): elsewhere the module does not load.
pub fn gemm_f16_sm90(dev: &Device, g: &GemmF16<'_>, out: &mut DeviceBuffer<f16>, how: GemmSm90Launch) -> Result<()> {
    let (m32, n32, k32) = check_shape(g.shape)?;
    let GemmShape { m, n, k } = g.shape;
    check_len(KERNEL, "a", g.a, m * k)?;
    check_len(KERNEL, "w", g.w, n * k)?;
    check_len(KERNEL, "out", out, m * n)?;
    check_epilogue(KERNEL, g.bias, &g.epilogue, m, n)?;
    check_align(KERNEL, "a", g.a, 16)?;
    check_align(KERNEL, "w", g.w, 16)?;
    check_align(KERNEL, "out", out, 8)?;
    if how.ctas == Some(0) {
        return Err(kerr(KERNEL, "a launch needs at least one CTA"));
    }
    // K-major boxes of 64 f16 (one 128-byte swizzled row) by BM (A) or BN (W) rows
    let row_bytes = k as u64 * 2;
    let map = |buf: &DeviceBuffer<f16>, rows: usize, box_rows: usize| {
        dev.encode_tensor_map(&TiledTensorMap {
            dtype: TensorMapDtype::F16,
            addr: buf.addr(),
            dims: &[k as u64, rows as u64],
            strides: &[row_bytes],
            box_dims: &[BK as u32, box_rows as u32],
            swizzle: TensorMapSwizzle::B128,
        })
    };
    let tma_a = map(g.a, m, BM)?;
    let tma_w = map(g.w, n, BN)?;
    let args = [
        KernelArg::TensorMap(tma_a),
        KernelArg::TensorMap(tma_w),
        opt_ptr(g.bias),
        g.epilogue.residual_arg(),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
        KernelArg::U32(g.epilogue.code()),
    ];
    let t = tiles(m, n);
    let ctas = how.ctas.unwrap_or_else(|| dev.multiprocessors()).min(t as u32);
    let cfg = LaunchConfig::linear(ctas, THREADS, SMEM);
    // by module: a device that did not load the sm_90a module (not an sm_90) says so
    dev.launch_in(MODULE, ids::GEMM_F16_SM90, cfg, &args)
}
