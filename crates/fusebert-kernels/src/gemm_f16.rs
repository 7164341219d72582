//! fp16 GEMM (`kernels/gemm_f16.cu`): `C[M,N] = A[M,K] . W[N,K]^T + bias[n]` then the
//! [`Epilogue`], f32 accumulation on tensor cores (mma m16n8k16), fp16 out. Same tiles
//! ([`Tile`](super::Tile)) and pipeline as the int8 GEMM (`kernels/gemm_core.cuh`).
use half::f16;

use super::gemm_int8::{
    check_epilogue, check_shape, gemm_kernel, ln_args, simple_grid, split_args, GemmLaunch, GemmShape,
};
use super::{check_align, check_len, launch, opt_ptr, Epilogue, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The operands of the fp16 GEMM: `out = epilogue(a . w^T + bias[n])`, `a` `[m, k]`, `w`
/// `[n, k]` (Linear layout), `bias` `[n]`, f32 accumulation.
pub struct GemmF16<'a> {
    pub a: &'a DeviceBuffer<f16>,
    pub w: &'a DeviceBuffer<f16>,
    pub bias: Option<&'a DeviceBuffer<f16>>,
    pub epilogue: Epilogue<'a>,
    pub shape: GemmShape,
}

/// The fp16 GEMM on tensor cores into `out` `[m, n]`, launched as `how` says. K is summed in
/// fixed chunks in every kernel: the result is bit-identical across tiles, splits and batches.
pub fn gemm_f16(dev: &Device, g: &GemmF16<'_>, out: &mut DeviceBuffer<f16>, how: GemmLaunch<'_>) -> Result<()> {
    let GemmShape { m, n, k } = g.shape;
    let plan = how.plan_for(g.shape, false);
    let fast = how.variant == Variant::Fast;
    let kernel = if fast { gemm_kernel("gemm_f16", plan, how.layernorm.is_some())? } else { ids::GEMM_F16_SIMPLE };
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_len(kernel, "a", g.a, m * k)?;
    check_len(kernel, "w", g.w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_epilogue(kernel, g.bias, &g.epilogue, m, n)?;
    check_align(kernel, "a", g.a, 16)?;
    check_align(kernel, "w", g.w, 16)?;
    check_align(kernel, "out", out, 8)?;
    let ws = how.workspace;
    let split = if fast { split_args(kernel, plan, m, n, k, false, ws)? } else { Vec::new() };
    let mut args = vec![
        KernelArg::from(g.a),
        KernelArg::from(g.w),
        opt_ptr(g.bias),
        g.epilogue.residual_arg(),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
        KernelArg::U32(g.epilogue.code()),
    ];
    args.extend(split);
    if let Some(ln) = how.layernorm {
        args.extend(ln_args(kernel, ln, (plan.tile.dims().0, 1), m, n, ws)?);
    }
    let cfg = if fast { plan.launch_config(m, n) } else { simple_grid(m, n) };
    launch(dev, kernel, cfg, &args)
}
