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
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The GEMM kernel of family `base` for `plan` (`<base><tile>[_sk][_ln]`), as the id of an
/// entry of the shipped PTX: a combination the kernels do not provide is a typed error here,
/// not a failed launch.
pub fn gemm_kernel(base: &str, plan: GemmPlan, layernorm: bool) -> Result<&'static str> {
    let name = format!("{base}{}{}", plan.suffix(), if layernorm { "_ln" } else { "" });
    crate::ptx::kernel_id(&name).ok_or_else(|| {
        kerr(&name, "no such kernel in the shipped PTX: this tile, split and fused layernorm do not combine")
    })
}

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
/// on `C`; with `q8`, also its int8 codes and scales as [`crate::layernorm_f16`] with a [`crate::Q8Out`]
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

/// Checks a fused layernorm of a GEMM whose row strips (`per_strip` counters each: 1 for the
/// mma.sync kernels, [`crate::gemm_sm90::STRIP_COUNTERS`] for the Hopper ones) are
/// `strip_rows` tall and returns its kernel arguments (after the split ones).
pub(crate) fn ln_args(
    kernel: &str,
    ln: &FusedLayerNorm<'_>,
    (strip_rows, per_strip): (usize, usize),
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
    let strips = m.div_ceil(strip_rows) * per_strip;
    if ws.strips.len() < strips {
        return Err(kerr(kernel, format!("workspace has {} strip counters, M {m} needs {strips}", ws.strips.len())));
    }
    let mut args = ln_operands(kernel, ln, m, n)?;
    args.extend([KernelArg::from(&ws.strips), KernelArg::F32(ln.eps)]);
    Ok(args)
}

/// Checks the operands of a fused layernorm of `m` rows of `n` and returns them as kernel
/// arguments: gamma, beta, out, q_out, q_scale, q_smooth.
pub(crate) fn ln_operands(kernel: &str, ln: &FusedLayerNorm<'_>, m: usize, n: usize) -> Result<Vec<KernelArg>> {
    if !fuses_layernorm(n) {
        return Err(kerr(
            kernel,
            format!("no fused layernorm for rows of {n} (at most {FUSED_LN_MAX}, a multiple of 8)"),
        ));
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

/// Zero points of asymmetric activations (from [`crate::quantize_i8`] with a zero-point buffer):
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

/// A GEMM's shape: `out[m, n] = a[m, k] . w[n, k]^T`. `n`, `k` multiples of 16; any `m >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// How a GEMM is launched: the implementation, the plan (block tile, split over K) and what the
/// plan needs, and an optional fused layernorm. The default is the fast kernel on the tile
/// [`Tile::Auto`] picks, unsplit.
#[derive(Clone, Copy, Default)]
pub struct GemmLaunch<'a> {
    pub variant: Variant,
    /// The block tile when `plan` is `None`.
    pub tile: Tile,
    /// The launch plan ([`GemmPlan::choose`] picks the fastest); `None`: unsplit on `tile`.
    pub plan: Option<GemmPlan>,
    /// Partial sums and counters of a split-K plan, strip counters of a fused layernorm.
    pub workspace: Option<&'a SplitWorkspace>,
    /// The layernorm of the output rows, fused into the epilogue (`ln.out` = LN(out)).
    pub layernorm: Option<&'a FusedLayerNorm<'a>>,
}

impl<'a> GemmLaunch<'a> {
    /// The plain, obviously-right kernel ([`Variant::Simple`]: one thread per output).
    pub fn simple() -> Self {
        GemmLaunch { variant: Variant::Simple, ..Default::default() }
    }
    /// `variant`, on the automatic tile.
    pub fn variant(variant: Variant) -> Self {
        GemmLaunch { variant, ..Default::default() }
    }
    /// The fast kernel on block tile `tile`, unsplit.
    pub fn tiled(tile: Tile) -> Self {
        GemmLaunch { tile, ..Default::default() }
    }
    /// As `plan` says (a split-K plan needs `workspace`).
    pub fn planned(plan: GemmPlan, workspace: Option<&'a SplitWorkspace>) -> Self {
        GemmLaunch { plan: Some(plan), workspace, ..Default::default() }
    }
    /// As `plan` says, with the layernorm of the output rows fused in.
    pub fn fused(plan: GemmPlan, workspace: &'a SplitWorkspace, layernorm: &'a FusedLayerNorm<'a>) -> Self {
        GemmLaunch { plan: Some(plan), workspace: Some(workspace), layernorm: Some(layernorm), ..Default::default() }
    }

    pub(crate) fn plan_for(&self, s: GemmShape, int8: bool) -> GemmPlan {
        self.plan.unwrap_or_else(|| GemmPlan::unsplit(self.tile, s.m, s.n, s.k, int8))
    }
}

/// The operands of the W8A8 GEMM:
/// `out = epilogue(((a - zero) . w^T) * a_scale[m] * w_scale[n] + bias[n])`.
/// `a` `[m, k]` int8 with per-token scales `a_scale` `[m]`; `w` `[n, k]` (Linear layout) with
/// per-channel scales `w_scale` `[n]`; `bias` `[n]`.
pub struct GemmInt8<'a> {
    pub a: &'a DeviceBuffer<i8>,
    pub a_scale: &'a DeviceBuffer<f32>,
    /// Asymmetric activations: per-token zero points and the weights' code sums (see [`ZeroPoint`]).
    pub zero_point: Option<ZeroPoint<'a>>,
    pub w: &'a DeviceBuffer<i8>,
    pub w_scale: &'a DeviceBuffer<f32>,
    pub bias: Option<&'a DeviceBuffer<f16>>,
    pub epilogue: Epilogue<'a>,
    pub shape: GemmShape,
}

/// The operand checks every int8 GEMM entry shares (each adds the alignments its loads need):
/// the lengths of `g`'s buffers for an `m x n x k` GEMM, its epilogue, and with zero points
/// their lengths and K's int32 limit.
pub(crate) fn check_int8_lengths(kernel: &str, g: &GemmInt8<'_>, m: usize, n: usize, k: usize) -> Result<()> {
    check_len(kernel, "a", g.a, m * k)?;
    check_len(kernel, "a_scale", g.a_scale, m)?;
    check_len(kernel, "w", g.w, n * k)?;
    check_len(kernel, "w_scale", g.w_scale, n)?;
    check_epilogue(kernel, g.bias, &g.epilogue, m, n)?;
    if let Some(zp) = g.zero_point {
        // |acc| and |zero * w_sum| are each at most 128 * 128 * K: their difference fits int32
        if k > 65536 {
            return Err(kerr(kernel, format!("K = {k} must be <= 65536 with zero points (int32 accumulators)")));
        }
        check_len(kernel, "zero", zp.zero, m)?;
        check_len(kernel, "w_sum", zp.w_sum, n)?;
    }
    Ok(())
}

/// The W8A8 GEMM on tensor cores into `out` `[m, n]` (fp16), launched as `how` says. Same result
/// whatever the tile or split (int32 sums are exact).
pub fn gemm_int8(dev: &Device, g: &GemmInt8<'_>, out: &mut DeviceBuffer<f16>, how: GemmLaunch<'_>) -> Result<()> {
    let GemmShape { m, n, k } = g.shape;
    let plan = how.plan_for(g.shape, true);
    let fast = how.variant == Variant::Fast;
    let kernel =
        if fast { gemm_kernel("gemm_int8_f16", plan, how.layernorm.is_some())? } else { ids::GEMM_INT8_SIMPLE };
    let (m32, n32, k32) = check_shape(kernel, m, n, k)?;
    check_int8_lengths(kernel, g, m, n, k)?;
    check_len(kernel, "out", out, m * n)?;
    for (name, addr) in [("a", g.a.addr()), ("w", g.w.addr())] {
        if addr % 16 != 0 {
            return Err(kerr(kernel, format!("buffer `{name}` at {addr:#x} is not 16-byte aligned")));
        }
    }
    check_align(kernel, "w_scale", g.w_scale, 16)?;
    check_align(kernel, "out", out, 8)?;
    if let Some(zp) = g.zero_point {
        check_align(kernel, "w_sum", zp.w_sum, 16)?;
    }
    let ws = how.workspace;
    let split = if fast { split_args(kernel, plan, m, n, k, true, ws)? } else { Vec::new() };
    let mut args = vec![
        KernelArg::from(g.a),
        KernelArg::from(g.a_scale),
        opt_ptr(g.zero_point.map(|z| z.zero)),
        KernelArg::from(g.w),
        KernelArg::from(g.w_scale),
        opt_ptr(g.zero_point.map(|z| z.w_sum)),
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

/// The same tensor-core main loop writing the raw int32 accumulators `out[m, n] = a . w^T` (for
/// bit-exact verification of the integer path), launched as `how` says (no fused layernorm).
pub fn gemm_int8_i32(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    w: &DeviceBuffer<i8>,
    out: &mut DeviceBuffer<i32>,
    shape: GemmShape,
    how: GemmLaunch<'_>,
) -> Result<()> {
    let GemmShape { m, n, k } = shape;
    let (plan, ws) = (how.plan_for(shape, true), how.workspace);
    let kernel = gemm_kernel("gemm_int8_i32", plan, false)?;
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
