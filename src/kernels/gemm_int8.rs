//! W8A8 GEMM (`kernels/gemm_int8.cu`), fp16 out, int32 accumulation on tensor cores:
//! `C[M,N] = (A[M,K] . W[N,K]^T) * a_scale[m] * w_scale[n] + bias[n]`, then the [`Epilogue`].
//! 3-stage cp.async pipeline, ldmatrix, swizzled conflict-free shared tiles; block tile 64x64
//! (128 threads) or 128x128 (256 threads), see [`Tile`] and `kernels/gemm_core.cuh`.
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, kerr, launch, opt_ptr, Epilogue, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::error::Result;

/// Block tile of the tensor-core GEMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tile {
    /// The tile [`choose_tile`] predicts fastest for the shape.
    #[default]
    Auto,
    /// 64x64 block tile, 4 warps of 32x32, 24 KiB shared memory.
    Small,
    /// 128x128 block tile, 8 warps of 64x32, 68 KiB dynamic shared memory (epilogue staging;
    /// the pipeline itself is 48 KiB): half the operand traffic per MAC of `Small`. Compiled
    /// with `__launch_bounds__(256, 2)` (at most 128 registers) so two blocks fit on an SM.
    Large,
}

impl Tile {
    /// The concrete tile: [`choose_tile`] for [`Tile::Auto`], else `self`.
    pub fn resolve(self, m: usize, n: usize, k: usize, int8: bool) -> Tile {
        match self {
            Tile::Auto => choose_tile(m, n, k, int8),
            t => t,
        }
    }
    /// (block rows, block cols, threads, dynamic shared bytes) — must match `gemm_core.cuh`
    /// (`Cfg::BM`, `BN`, `THREADS`, `SMEM`).
    pub fn dims(self) -> (usize, usize, u32, u32) {
        match self {
            Tile::Large => (128, 128, 256, 128 * 136 * 4),
            _ => (64, 64, 128, 3 * 2 * 64 * 64),
        }
    }
    /// Kernel name suffix.
    pub fn suffix(self) -> &'static str {
        if self == Tile::Large {
            "_l"
        } else {
            ""
        }
    }
}

/// The reference machine of the tile model: an A100-class GPU in clocks (108 SMs; per SM and
/// clock 1024 fp16 / 2048 int8 tensor MACs, 64 bytes from L2; the whole L2 ~3500 bytes per
/// clock; 64 K registers, 164 KiB shared memory and 2048 threads per SM). The choice must not
/// depend on the device (the launch plan, the emulator and a real GPU must agree, and a text's
/// tile must be a function of the shape alone), so one machine stands for all; H100's ratios
/// (more SMs, higher L2 bandwidth per SM) make the same choices on the shapes that matter.
mod reference_gpu {
    pub const SMS: u64 = 108;
    pub const MACS_PER_CLK_F16: u64 = 1024;
    pub const L2_BYTES_PER_CLK: u64 = 3500;
    pub const SM_BYTES_PER_CLK: u64 = 64;
    pub const REGS_PER_SM: u32 = 65536;
    pub const SMEM_PER_SM: u32 = 164 << 10;
    pub const THREADS_PER_SM: u32 = 2048;
    /// Shortest kernel: ~2 us at 1.41 GHz (dispatch, ramp-up, drain).
    pub const MIN_CLK: u64 = 2800;
}

/// Resident blocks per SM of `tile` on the reference machine, from ptxas' register count of its
/// kernel (`sm_80`), its threads and its shared memory (1 KiB reserved per block); 0 when a
/// block does not fit.
pub fn tile_blocks_per_sm(tile: Tile, int8: bool) -> u32 {
    let (_, _, threads, smem) = tile.dims();
    let kernel = format!("{}{}", if int8 { "gemm_int8_f16" } else { "gemm_f16" }, tile.suffix());
    let regs = crate::ptx::kernel_registers(if int8 { "gemm_int8" } else { "gemm_f16" }, &kernel, "sm_80").unwrap_or(128);
    let warps = threads / 32;
    let regs_per_warp = (regs.max(1) * 32).div_ceil(256) * 256;
    let by_regs = reference_gpu::REGS_PER_SM / regs_per_warp / warps;
    let by_smem = reference_gpu::SMEM_PER_SM / (smem + 1024);
    let by_threads = reference_gpu::THREADS_PER_SM / threads;
    by_regs.min(by_smem).min(by_threads)
}

/// Predicted clocks of an `m x n x k` GEMM on `tile` on the reference machine (`reference_gpu` in this module):
/// the larger of
/// - compute: the busiest SM's blocks (`ceil(blocks / SMs)`, the wave quantisation) times one
///   block's MACs (whole tiles, the padding past the matrix edges included) at the SM's rate;
/// - L2 traffic: every block loads its A row strip and W column strip once
///   (`grid_n m k + grid_m n k` elements: a smaller tile re-reads more), at the whole L2's
///   bandwidth or, for a grid smaller than the GPU, its SMs' share;
///
/// and the shortest kernel time. `u64::MAX` when a block does not fit on an SM.
pub fn tile_clocks(tile: Tile, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    if tile_blocks_per_sm(tile, int8) == 0 {
        return u64::MAX;
    }
    let (bm, bn, _, _) = tile.dims();
    // saturating: the wrappers resolve the tile before they reject bad shapes (M = 0, huge K)
    let (gm, gn) = (m.div_ceil(bm) as u64, n.div_ceil(bn) as u64);
    let blocks = gm.saturating_mul(gn).max(1);
    let (m, n, k) = (m as u64, n as u64, k as u64);
    let macs_per_clk = reference_gpu::MACS_PER_CLK_F16 * if int8 { 2 } else { 1 };
    let block_macs = ((bm * bn) as u64).saturating_mul(k.next_multiple_of(32));
    let compute = blocks.div_ceil(reference_gpu::SMS).saturating_mul(block_macs) / macs_per_clk;
    let e = if int8 { 1 } else { 2 };
    let operands = gn.saturating_mul(m).saturating_add(gm.saturating_mul(n)).saturating_mul(k).saturating_mul(e);
    let bytes = operands.saturating_add(m.saturating_mul(n).saturating_mul(2));
    let bandwidth = reference_gpu::L2_BYTES_PER_CLK.min(blocks.min(reference_gpu::SMS) * reference_gpu::SM_BYTES_PER_CLK);
    let l2 = bytes.div_ceil(bandwidth);
    compute.max(l2).max(reference_gpu::MIN_CLK)
}

/// The block tile of an `m x n x k` GEMM (`int8`: the W8A8 kernel, else fp16): the candidate
/// with the fewest predicted clocks ([`tile_clocks`]), `Small` on a tie (less padding, more
/// blocks to hide latency). A pure function of the shape and precision: the launch wrappers
/// ([`Tile::Auto`]) and the launch plan (`perf::plan`) both call it.
pub fn choose_tile(m: usize, n: usize, k: usize, int8: bool) -> Tile {
    let small = tile_clocks(Tile::Small, m, n, k, int8);
    let large = tile_clocks(Tile::Large, m, n, k, int8);
    if large < small {
        Tile::Large
    } else {
        Tile::Small
    }
}

pub(crate) fn check_shape(kernel: &str, m: usize, n: usize, k: usize) -> Result<(u32, u32, u32)> {
    if m == 0 {
        return Err(kerr(kernel, "M (tokens) must be positive"));
    }
    check_multiple(kernel, "N", n, 16)?;
    check_multiple(kernel, "K", k, 16)?;
    Ok((check_u32(kernel, "M", m)?, check_u32(kernel, "N", n)?, check_u32(kernel, "K", k)?))
}

pub(crate) fn tiled_grid(m: usize, n: usize, tile: Tile) -> LaunchConfig {
    let (bm, bn, threads, smem) = tile.dims();
    LaunchConfig {
        grid: (n.div_ceil(bn) as u32, m.div_ceil(bm) as u32, 1),
        block: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

pub(crate) fn simple_grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig { grid: (n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1), block: (16, 16, 1), shared_mem_bytes: 0 }
}

pub(crate) fn check_epilogue(
    kernel: &str,
    bias: Option<&DeviceBuffer<f16>>,
    epi: &Epilogue<'_>,
    m: usize,
    n: usize,
) -> Result<()> {
    if let Some(b) = bias {
        check_len(kernel, "bias", b, n)?;
        check_align(kernel, "bias", b, 8)?;
    }
    if let Epilogue::Residual(r) = epi {
        check_len(kernel, "residual", r, m * n)?;
        check_align(kernel, "residual", r, 8)?;
    }
    Ok(())
}

/// Zero points of asymmetric activations (from [`crate::kernels::quantize_i8_asym`]):
/// `a[m, k] ≈ (q[m, k] - zero[m]) * a_scale[m]`. The GEMM subtracts `zero[m] * w_sum[n]` from
/// its int32 accumulators (exact), with `w_sum` the per-output-channel code sums of the weights
/// ([`weight_sums`], computed once on load).
#[derive(Debug, Clone, Copy)]
pub struct ZeroPoint<'a> {
    /// `[m]`
    pub zero: &'a DeviceBuffer<i32>,
    /// `[n]`
    pub w_sum: &'a DeviceBuffer<i32>,
}

/// `w_sum[n] = Σ_k w[n, k]` of an int8 weight `[n, k]` (for [`ZeroPoint`]).
pub fn weight_sums(w: &[i8], n: usize, k: usize) -> Vec<i32> {
    assert_eq!(w.len(), n * k, "weight_sums: {} codes for [{n}, {k}]", w.len());
    w.chunks_exact(k.max(1)).take(n).map(|r| r.iter().map(|&c| c as i32).sum()).collect()
}

/// The W8A8 GEMM on tensor cores. `a` `[m, k]`, `a_scale` `[m]`, `w` `[n, k]` (Linear layout),
/// `w_scale` `[n]`, `bias` `[n]`, `out` `[m, n]`. `n`, `k` multiples of 16; any `m >= 1`.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    gemm_int8_with(dev, a, a_scale, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast)
}

/// [`gemm_int8`] with a choice of implementation ([`Variant::Simple`]: one thread per output, dp4a).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_with(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    variant: Variant,
) -> Result<()> {
    int8_impl(dev, a, a_scale, None, w, w_scale, bias, epilogue, out, m, n, k, variant, Tile::Auto)
}

/// [`gemm_int8`] on asymmetric activations:
/// `C = ((q - zero[m]) . W^T) * a_scale[m] * w_scale[n] + bias[n]`, then the epilogue (see [`ZeroPoint`]).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_asym(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    zp: ZeroPoint<'_>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    gemm_int8_asym_with(dev, a, a_scale, zp, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast, Tile::Auto)
}

/// [`gemm_int8_asym`] with a choice of implementation and block tile (the tile only applies to
/// [`Variant::Fast`]).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_asym_with(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    zp: ZeroPoint<'_>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    variant: Variant,
    tile: Tile,
) -> Result<()> {
    int8_impl(dev, a, a_scale, Some(zp), w, w_scale, bias, epilogue, out, m, n, k, variant, tile)
}

/// [`gemm_int8`] with an explicit block tile.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_tiled(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    tile: Tile,
) -> Result<()> {
    int8_impl(dev, a, a_scale, None, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast, tile)
}

#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
fn int8_impl(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    a_scale: &DeviceBuffer<f32>,
    zp: Option<ZeroPoint<'_>>,
    w: &DeviceBuffer<i8>,
    w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    variant: Variant,
    tile: Tile,
) -> Result<()> {
    let tile = tile.resolve(m, n, k, true);
    let name = format!("gemm_int8_f16{}", tile.suffix());
    let kernel = if variant == Variant::Fast { name.as_str() } else { "gemm_int8_simple" };
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_len(kernel, "a", a, m * k)?;
    check_len(kernel, "a_scale", a_scale, m)?;
    check_len(kernel, "w", w, n * k)?;
    check_len(kernel, "w_scale", w_scale, n)?;
    check_len(kernel, "out", out, m * n)?;
    check_epilogue(kernel, bias, &epilogue, m, n)?;
    for (name, addr) in [("a", a.addr()), ("w", w.addr())] {
        if addr % 16 != 0 {
            return Err(kerr(kernel, format!("buffer `{name}` at {addr:#x} is not 16-byte aligned")));
        }
    }
    check_align(kernel, "w_scale", w_scale, 16)?;
    check_align(kernel, "out", out, 8)?;
    if let Some(zp) = zp {
        // |acc| and |zero * w_sum| are each at most 128 * 128 * K: their difference fits int32
        if k > 65536 {
            return Err(kerr(kernel, format!("K = {k} must be <= 65536 with zero points (int32 accumulators)")));
        }
        check_len(kernel, "zero", zp.zero, m)?;
        check_len(kernel, "w_sum", zp.w_sum, n)?;
        check_align(kernel, "w_sum", zp.w_sum, 16)?;
    }
    let args = [
        KernelArg::from(a),
        KernelArg::from(a_scale),
        opt_ptr(zp.map(|z| z.zero)),
        KernelArg::from(w),
        KernelArg::from(w_scale),
        opt_ptr(zp.map(|z| z.w_sum)),
        opt_ptr(bias),
        epilogue.residual_arg(),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
        KernelArg::U32(epilogue.code()),
    ];
    let cfg = if variant == Variant::Fast { tiled_grid(m, n, tile) } else { simple_grid(m, n) };
    launch(dev, kernel, cfg, &args)
}

/// The same tensor-core main loop writing the raw int32 accumulators `out[m, n] = A . W^T`
/// (for bit-exact verification of the integer path).
pub fn gemm_int8_i32(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    w: &DeviceBuffer<i8>,
    out: &mut DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    gemm_int8_i32_tiled(dev, a, w, out, m, n, k, Tile::Auto)
}

/// [`gemm_int8_i32`] with an explicit block tile.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_i32_tiled(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    w: &DeviceBuffer<i8>,
    out: &mut DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
    tile: Tile,
) -> Result<()> {
    let tile = tile.resolve(m, n, k, true);
    let name = format!("gemm_int8_i32{}", tile.suffix());
    let kernel: &str = &name;
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_len(kernel, "a", a, m * k)?;
    check_len(kernel, "w", w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_align(kernel, "a", a, 16)?;
    check_align(kernel, "w", w, 16)?;
    check_align(kernel, "out", out, 16)?;
    let args = [
        KernelArg::from(a),
        KernelArg::from(w),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
    ];
    launch(dev, kernel, tiled_grid(m, n, tile), &args)
}
