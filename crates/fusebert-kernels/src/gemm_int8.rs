//! W8A8 GEMM (`kernels/gemm_int8.cu`), fp16 out, int32 accumulation on tensor cores:
//! `C[M,N] = (A[M,K] . W[N,K]^T) * a_scale[m] * w_scale[n] + bias[n]`, then the [`Epilogue`].
//! 3-stage cp.async pipeline, ldmatrix, swizzled conflict-free shared tiles; block tile 64x64
//! (128 threads), 128x128 (256 threads) or 32x64 (128 threads), 64x64 or 32x64 split over K, see [`GemmPlan`] and
//! `kernels/gemm_core.cuh`.
use half::f16;

pub use super::gemm_plan::Tile;
use super::gemm_plan::{fuses_layernorm, k_chunks, GemmPlan, SplitWorkspace, FUSED_LN_MAX};
use super::{check_align, check_len, check_multiple, check_u32, kerr, launch, opt_ptr, Epilogue, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use fusebert_core::error::Result;

pub(crate) fn check_shape(kernel: &str, m: usize, n: usize, k: usize) -> Result<(u32, u32, u32)> {
    if m == 0 {
        return Err(kerr(kernel, "M (tokens) must be positive"));
    }
    check_multiple(kernel, "N", n, 16)?;
    check_multiple(kernel, "K", k, 16)?;
    Ok((check_u32(kernel, "M", m)?, check_u32(kernel, "N", n)?, check_u32(kernel, "K", k)?))
}

/// Checks `plan` for an `m x n x k` launch of `kernel` and returns the split-K arguments
/// (partials, counters) its `_sk` kernel takes; none unsplit.
pub(crate) fn split_args(
    kernel: &str,
    plan: GemmPlan,
    m: usize,
    n: usize,
    k: usize,
    int8: bool,
    ws: Option<&SplitWorkspace>,
) -> Result<Vec<KernelArg>> {
    if plan.tile == Tile::Auto {
        return Err(kerr(kernel, "the plan's tile must be concrete (GemmPlan::choose or GemmPlan::unsplit)"));
    }
    if plan.splits <= 1 {
        return Ok(Vec::new());
    }
    let chunks = k_chunks(k, int8);
    if !plan.tile.splits_k() || plan.splits != chunks {
        return Err(kerr(
            kernel,
            format!(
                "split-K runs the Small or Narrow tile over the {chunks} K chunks of K = {k}, not {:?} x {}",
                plan.tile, plan.splits
            ),
        ));
    }
    let Some(ws) = ws else { return Err(kerr(kernel, "a split-K launch needs a SplitWorkspace")) };
    if !ws.fits(&plan, m, n) {
        return Err(kerr(
            kernel,
            format!(
                "split workspace holds {} partial words and {} counters; M {m} N {n} needs {} and {}",
                ws.partials.len(),
                ws.counters.len(),
                plan.partial_words(m, n),
                plan.counters(m, n)
            ),
        ));
    }
    Ok(vec![KernelArg::from(&ws.partials), KernelArg::from(&ws.counters)])
}

/// A layernorm fused into a residual GEMM's epilogue (`*_ln` kernels): `out = LN(C) * gamma +
/// beta` over rows of `n` ([`fuses_layernorm`]), bit-identical to [`crate::layernorm_f16`]
/// on `C`; with `q8`, also its int8 codes and scales as [`crate::layernorm_f16_q8`]
/// writes them (for the next W8A8 GEMM). `q8` must not alias the GEMM's own int8 input unless
/// it has the same `[m, n]` layout (each row strip is normalised after its own tiles are done).
pub struct FusedLayerNorm<'a> {
    pub gamma: &'a DeviceBuffer<f16>,
    pub beta: &'a DeviceBuffer<f16>,
    /// `[m, n]`
    pub out: &'a DeviceBuffer<f16>,
    /// The int8 copy of `out` for the next W8A8 GEMM, if wanted.
    pub q8: Option<FusedQ8<'a>>,
    pub eps: f32,
}

/// Int8 output of a [`FusedLayerNorm`] (as [`crate::Q8Out`]).
#[derive(Clone, Copy)]
pub struct FusedQ8<'a> {
    /// `[m, n]` codes.
    pub q: &'a DeviceBuffer<i8>,
    /// `[m]` scales (absmax / 127).
    pub scale: &'a DeviceBuffer<f32>,
    /// The next GEMM's smoothing multipliers `[n]` (optional).
    pub smooth: Option<&'a DeviceBuffer<f16>>,
}

/// Checks a fused layernorm of a GEMM launched as `plan` and returns its kernel arguments
/// (after the split ones).
pub(crate) fn ln_args(
    kernel: &str,
    ln: &FusedLayerNorm<'_>,
    plan: GemmPlan,
    m: usize,
    n: usize,
    ws: Option<&SplitWorkspace>,
) -> Result<Vec<KernelArg>> {
    if !fuses_layernorm(n) {
        return Err(kerr(
            kernel,
            format!("no fused layernorm for rows of {n} (at most {FUSED_LN_MAX}, a multiple of 8)"),
        ));
    }
    let Some(ws) = ws else { return Err(kerr(kernel, "a fused layernorm needs a SplitWorkspace (strip counters)")) };
    let strips = m.div_ceil(plan.tile.dims().0);
    if ws.strips.len() < strips {
        return Err(kerr(kernel, format!("workspace has {} strip counters, M {m} needs {strips}", ws.strips.len())));
    }
    check_len(kernel, "gamma", ln.gamma, n)?;
    check_len(kernel, "beta", ln.beta, n)?;
    check_len(kernel, "ln_out", ln.out, m * n)?;
    check_align(kernel, "gamma", ln.gamma, 16)?;
    check_align(kernel, "beta", ln.beta, 16)?;
    check_align(kernel, "ln_out", ln.out, 16)?;
    if let Some(FusedQ8 { q, scale, smooth }) = ln.q8 {
        check_len(kernel, "q_out", q, m * n)?;
        check_align(kernel, "q_out", q, 8)?;
        check_len(kernel, "q_scale", scale, m)?;
        if let Some(sm) = smooth {
            check_len(kernel, "q_smooth", sm, n)?;
            check_align(kernel, "q_smooth", sm, 16)?;
        }
    }
    Ok(vec![
        KernelArg::from(ln.gamma),
        KernelArg::from(ln.beta),
        KernelArg::from(ln.out),
        opt_ptr(ln.q8.map(|q| q.q)),
        opt_ptr(ln.q8.map(|q| q.scale)),
        opt_ptr(ln.q8.and_then(|q| q.smooth)),
        KernelArg::from(&ws.strips),
        KernelArg::F32(ln.eps),
    ])
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

/// Zero points of asymmetric activations (from [`crate::quantize_i8_asym`]):
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
    int8_impl(
        dev,
        a,
        a_scale,
        None,
        w,
        w_scale,
        bias,
        epilogue,
        out,
        m,
        n,
        k,
        variant,
        GemmPlan::unsplit(Tile::Auto, m, n, k, true),
        None,
        None,
    )
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
    int8_impl(
        dev,
        a,
        a_scale,
        Some(zp),
        w,
        w_scale,
        bias,
        epilogue,
        out,
        m,
        n,
        k,
        variant,
        GemmPlan::unsplit(tile, m, n, k, true),
        None,
        None,
    )
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
    int8_impl(
        dev,
        a,
        a_scale,
        None,
        w,
        w_scale,
        bias,
        epilogue,
        out,
        m,
        n,
        k,
        Variant::Fast,
        GemmPlan::unsplit(tile, m, n, k, true),
        None,
        None,
    )
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
    plan: GemmPlan,
    ws: Option<&SplitWorkspace>,
    ln: Option<&FusedLayerNorm<'_>>,
) -> Result<()> {
    let name = format!("gemm_int8_f16{}{}", plan.suffix(), if ln.is_some() { "_ln" } else { "" });
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
    let split = if variant == Variant::Fast { split_args(kernel, plan, m, n, k, true, ws)? } else { Vec::new() };
    let mut args = vec![
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
    args.extend(split);
    if let Some(ln) = ln {
        args.extend(ln_args(kernel, ln, plan, m, n, ws)?);
    }
    let cfg = if variant == Variant::Fast { plan.launch_config(m, n) } else { simple_grid(m, n) };
    launch(dev, kernel, cfg, &args)
}

/// [`gemm_int8_planned`] with the layernorm of its output rows fused in (see [`FusedLayerNorm`]):
/// `out` = the GEMM (+ epilogue), `ln.out` = its layernorm; one launch.
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_ln(
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
    plan: GemmPlan,
    ws: &SplitWorkspace,
    ln: &FusedLayerNorm<'_>,
) -> Result<()> {
    int8_impl(dev, a, a_scale, zp, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast, plan, Some(ws), Some(ln))
}

/// The W8A8 GEMM launched as `plan` says ([`GemmPlan::choose`] picks the fastest; a split-K
/// plan needs `ws`), symmetric or, with `zp`, asymmetric activations. Same result whatever the
/// plan (int32 sums are exact).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_planned(
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
    plan: GemmPlan,
    ws: Option<&SplitWorkspace>,
) -> Result<()> {
    int8_impl(dev, a, a_scale, zp, w, w_scale, bias, epilogue, out, m, n, k, Variant::Fast, plan, ws, None)
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
    gemm_int8_i32_planned(dev, a, w, out, m, n, k, GemmPlan::unsplit(tile, m, n, k, true), None)
}

/// [`gemm_int8_i32`] launched as `plan` says (a split-K plan needs `ws`).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn gemm_int8_i32_planned(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    w: &DeviceBuffer<i8>,
    out: &mut DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
    plan: GemmPlan,
    ws: Option<&SplitWorkspace>,
) -> Result<()> {
    let name = format!("gemm_int8_i32{}", plan.suffix());
    let kernel: &str = &name;
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_len(kernel, "a", a, m * k)?;
    check_len(kernel, "w", w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_align(kernel, "a", a, 16)?;
    check_align(kernel, "w", w, 16)?;
    check_align(kernel, "out", out, 16)?;
    let split = split_args(kernel, plan, m, n, k, true, ws)?;
    let mut args = vec![
        KernelArg::from(a),
        KernelArg::from(w),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
    ];
    args.extend(split);
    launch(dev, kernel, plan.launch_config(m, n), &args)
}
