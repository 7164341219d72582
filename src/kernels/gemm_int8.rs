//! W8A8 GEMM (`kernels/gemm_int8.cu`), fp16 out, int32 accumulation on tensor cores:
//! `C[M,N] = (A[M,K] . W[N,K]^T) * a_scale[m] * w_scale[n] + bias[n]`, then the [`Epilogue`].
//! Tiles 64x64x64 bytes, 3-stage cp.async pipeline, 128 threads (see `kernels/gemm_core.cuh`).
use half::f16;

use super::{check_align, check_len, check_multiple, check_u32, kerr, launch, opt_ptr, Epilogue, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::error::Result;

/// Block tile of the tensor-core kernels (rows, columns).
pub const TILE_M: usize = 64;
pub const TILE_N: usize = 64;

pub(crate) fn check_shape(kernel: &str, m: usize, n: usize, k: usize) -> Result<(u32, u32, u32)> {
    if m == 0 {
        return Err(kerr(kernel, "M (tokens) must be positive"));
    }
    check_multiple(kernel, "N", n, 16)?;
    check_multiple(kernel, "K", k, 16)?;
    Ok((check_u32(kernel, "M", m)?, check_u32(kernel, "N", n)?, check_u32(kernel, "K", k)?))
}

pub(crate) fn tiled_grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig { grid: (n.div_ceil(TILE_N) as u32, m.div_ceil(TILE_M) as u32, 1), block: (128, 1, 1), shared_mem_bytes: 0 }
}

pub(crate) fn simple_grid(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig { grid: (n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1), block: (16, 16, 1), shared_mem_bytes: 0 }
}

pub(crate) fn check_epilogue(kernel: &str, bias: Option<&DeviceBuffer<f16>>, epi: &Epilogue<'_>, m: usize, n: usize) -> Result<()> {
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

/// The W8A8 GEMM on tensor cores. `a` `[m, k]`, `a_scale` `[m]`, `w` `[n, k]` (Linear layout),
/// `w_scale` `[n]`, `bias` `[n]`, `out` `[m, n]`. `n`, `k` multiples of 16; any `m >= 1`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_int8(
    dev: &Device, a: &DeviceBuffer<i8>, a_scale: &DeviceBuffer<f32>, w: &DeviceBuffer<i8>, w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>, epilogue: Epilogue<'_>, out: &mut DeviceBuffer<f16>, m: usize, n: usize, k: usize,
) -> Result<()> {
    gemm_int8_with(dev, a, a_scale, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast)
}

/// [`gemm_int8`] with a choice of implementation ([`Variant::Simple`]: one thread per output, dp4a).
#[allow(clippy::too_many_arguments)]
pub fn gemm_int8_with(
    dev: &Device, a: &DeviceBuffer<i8>, a_scale: &DeviceBuffer<f32>, w: &DeviceBuffer<i8>, w_scale: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f16>>, epilogue: Epilogue<'_>, out: &mut DeviceBuffer<f16>, m: usize, n: usize, k: usize,
    variant: Variant,
) -> Result<()> {
    let kernel = if variant == Variant::Fast { "gemm_int8_f16" } else { "gemm_int8_simple" };
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
    let args = [
        KernelArg::from(a),
        KernelArg::from(a_scale),
        KernelArg::from(w),
        KernelArg::from(w_scale),
        opt_ptr(bias),
        epilogue.residual_arg(),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
        KernelArg::U32(epilogue.code()),
    ];
    let cfg = if variant == Variant::Fast { tiled_grid(m, n) } else { simple_grid(m, n) };
    launch(dev, kernel, cfg, &args)
}

/// The same tensor-core main loop writing the raw int32 accumulators `out[m, n] = A . W^T`
/// (for bit-exact verification of the integer path).
pub fn gemm_int8_i32(
    dev: &Device, a: &DeviceBuffer<i8>, w: &DeviceBuffer<i8>, out: &mut DeviceBuffer<i32>, m: usize, n: usize, k: usize,
) -> Result<()> {
    const K: &str = "gemm_int8_i32";
    let (m32, n32, k32) = check_shape(K, m, n, k)?;
    check_len(K, "a", a, m * k)?;
    check_len(K, "w", w, n * k)?;
    check_len(K, "out", out, m * n)?;
    check_align(K, "a", a, 16)?;
    check_align(K, "w", w, 16)?;
    check_align(K, "out", out, 16)?;
    let args = [KernelArg::from(a), KernelArg::from(w), KernelArg::from(&*out), KernelArg::U32(m32), KernelArg::U32(n32), KernelArg::U32(k32)];
    launch(dev, K, tiled_grid(m, n), &args)
}
