//! fp16 GEMM (`kernels/gemm_f16.cu`): `C[M,N] = A[M,K] . W[N,K]^T + bias[n]` then the
//! [`Epilogue`], f32 accumulation on tensor cores (mma m16n8k16), fp16 out. Same tiles
//! ([`Tile`]) and pipeline as the int8 GEMM (`kernels/gemm_core.cuh`).
use half::f16;

use super::gemm_int8::{check_epilogue, check_shape, ln_args, simple_grid, split_args, FusedLayerNorm, Tile};
use super::gemm_plan::{GemmPlan, SplitWorkspace};
use super::{check_align, check_len, launch, opt_ptr, Epilogue, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg};
use fusebert_core::error::Result;

/// `a` `[m, k]`, `w` `[n, k]` (Linear layout), `bias` `[n]`, `out` `[m, n]`; `n`, `k` multiples
/// of 16, any `m >= 1`.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_f16(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    gemm_f16_with(dev, a, w, bias, epilogue, out, m, n, k, Variant::Fast)
}

/// [`gemm_f16`] with a choice of implementation ([`Variant::Simple`]: one thread per output).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_f16_with(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    variant: Variant,
) -> Result<()> {
    f16_impl(
        dev,
        a,
        w,
        bias,
        epilogue,
        out,
        m,
        n,
        k,
        variant,
        GemmPlan::unsplit(Tile::Auto, m, n, k, false),
        None,
        None,
    )
}

/// [`gemm_f16`] with an explicit block tile.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_f16_tiled(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    tile: Tile,
) -> Result<()> {
    f16_impl(
        dev,
        a,
        w,
        bias,
        epilogue,
        out,
        m,
        n,
        k,
        Variant::Fast,
        GemmPlan::unsplit(tile, m, n, k, false),
        None,
        None,
    )
}

#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
fn f16_impl(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    variant: Variant,
    plan: GemmPlan,
    ws: Option<&SplitWorkspace>,
    ln: Option<&FusedLayerNorm<'_>>,
) -> Result<()> {
    let name = format!("gemm_f16{}{}", plan.suffix(), if ln.is_some() { "_ln" } else { "" });
    let kernel = if variant == Variant::Fast { name.as_str() } else { "gemm_f16_simple" };
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_len(kernel, "a", a, m * k)?;
    check_len(kernel, "w", w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_epilogue(kernel, bias, &epilogue, m, n)?;
    check_align(kernel, "a", a, 16)?;
    check_align(kernel, "w", w, 16)?;
    check_align(kernel, "out", out, 8)?;
    let split = if variant == Variant::Fast { split_args(kernel, plan, m, n, k, false, ws)? } else { Vec::new() };
    let mut args = vec![
        KernelArg::from(a),
        KernelArg::from(w),
        opt_ptr(bias),
        epilogue.residual_arg(),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
        KernelArg::U32(epilogue.code()),
    ];
    args.extend(split);
    if let Some(ln) = ln {
        args.extend(ln_args(kernel, ln, plan, m, n, ws)?);
    }
    let cfg = if variant == Variant::Fast { plan.launch_config(m, n) } else { simple_grid(m, n) };
    launch(dev, kernel, cfg, &args)
}

/// [`gemm_f16`] launched as `plan` says ([`GemmPlan::choose`] picks the fastest; a split-K plan
/// needs `ws`). Bit-identical whatever the plan: every variant sums K in the same chunk order.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_f16_planned(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    plan: GemmPlan,
    ws: Option<&SplitWorkspace>,
) -> Result<()> {
    f16_impl(dev, a, w, bias, epilogue, out, m, n, k, Variant::Fast, plan, ws, None)
}

/// [`gemm_f16_planned`] with the layernorm of its output rows fused in (see [`FusedLayerNorm`]):
/// `out` = the GEMM (+ epilogue), `ln.out` = its layernorm; one launch.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_f16_ln(
    dev: &Device,
    a: &DeviceBuffer<f16>,
    w: &DeviceBuffer<f16>,
    bias: Option<&DeviceBuffer<f16>>,
    epilogue: Epilogue<'_>,
    out: &mut DeviceBuffer<f16>,
    m: usize,
    n: usize,
    k: usize,
    plan: GemmPlan,
    ws: &SplitWorkspace,
    ln: &FusedLayerNorm<'_>,
) -> Result<()> {
    f16_impl(dev, a, w, bias, epilogue, out, m, n, k, Variant::Fast, plan, Some(ws), Some(ln))
}
