//! Hopper QKV projection fused with multi-head attention (`kernels/qkv_attention_sm90.cu`,
//! sm_90a only): `ctx = attention(x . Wqkv^T + bias)` of a BERT layer in one launch, for head dims
//! [`HEAD_DIMS`] (64: BERT-base, -large; 32: MiniLM, bge-small, e5-small) and packed batches whose
//! sequences are at most [`MAX_SEQLEN`] tokens. A CTA per (column group, sequence) computes the
//! 128 x 192 GEMM tile of the sequence's rows by the q, k and v weight rows of its 64-column
//! group (one head of 64, or a pair of heads of 32), keeps q, k, v (fp16, + bias) in shared
//! memory, and runs the attention of its head(s) on them, one after the other: the `[T, 3H]` QKV
//! activation never goes to memory.
//!
//! The output is **bit-identical** to the unfused chain the forward pass runs otherwise:
//! [`gemm_f16_sm90`](crate::gemm_f16_sm90()) (or [`gemm_int8_sm90`](crate::gemm_int8_sm90()))
//! writing `qkv` `[T, 3H]` with the bias and no activation, then
//! [`attention_sm90`](crate::attention_sm90()) with [`Sm90Tiling::PerSequence`](crate::Sm90Tiling)
//! (`attention_sm90_d64` / `_d32`): the kernel runs those kernels' own device code (the GEMM's K-chunk
//! order, wgmmas and epilogue arithmetic, the attention consumer's softmax and P V), so a batch
//! may take either path (batch invariance).
//!
//! The int8 entry also writes the context's per-token int8 codes and scales, the bits
//! [`quantize_i8`](crate::quantize_i8()) (symmetric, no smoothing) gives from `ctx`: the
//! attention-out GEMM's input without a quantize launch. A token's scale needs its whole row (all
//! heads), so the last of a sequence's CTAs to finish (an arrival counter per sequence) quantises
//! the sequence's rows, read back through L2.
use half::f16;

use super::attention_sm90::{check_codes, scale_log2};
pub use super::attention_sm90::{ContextCodes, CTX_COUNTERS};
use super::gemm_int8::check_epilogue;
use super::gemm_sm90::{check_int8_operands, check_shape, operand_map, smem, BM};
use super::{check_align, check_len, check_u32, kerr, opt_ptr, Epilogue, FusedLayerNorm, GemmF16, GemmInt8, GemmShape};
use crate::attention::AttentionShape;
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The module (`kernels/qkv_attention_sm90.cu`).
pub const MODULE: &str = "qkv_attention_sm90";
/// The head dims the kernel is compiled for.
pub const HEAD_DIMS: [usize; 2] = [32, 64];
/// Columns of each of q, k and v one CTA computes: one head of 64 or two of 32, so `H` must be a
/// multiple of it.
pub const GROUP: usize = 64;
/// Longest sequence: one CTA holds a whole sequence (its 128-row GEMM tile).
pub const MAX_SEQLEN: usize = 128;
/// The fp16 entry at head dim 64.
pub const KERNEL: &str = ids::QKV_ATTENTION_F16_SM90_D64;
/// The int8 (W8A8 QKV GEMM) entry at head dim 64.
pub const KERNEL_INT8: &str = ids::QKV_ATTENTION_INT8_SM90_D64;
/// The fp16 and int8 entries at head dim 32.
pub const KERNEL_D32: &str = ids::QKV_ATTENTION_F16_SM90_D32;
pub const KERNEL_INT8_D32: &str = ids::QKV_ATTENTION_INT8_SM90_D32;
/// Threads per CTA: the producer warpgroup and two consumer warpgroups.
pub const THREADS: u32 = 384;
/// Columns of a CTA's GEMM tile: the q, k and v columns of its group.
const COLS: usize = 3 * GROUP;
/// Weight rows per TMA box: one of the three parts of a group's tile.
const W_BOX_ROWS: usize = GROUP;

/// Whether the fused kernel takes `heads` heads of `head_dim`: a head dim it is compiled for,
/// and `H` whole column groups (an even number of heads at 32).
pub fn takes_heads(heads: usize, head_dim: usize) -> bool {
    HEAD_DIMS.contains(&head_dim) && heads > 0 && (heads * head_dim) % GROUP == 0
}

/// Whether the fused kernel takes this batch: [`takes_heads`], 0 < max_seqlen <= 128.
pub fn supports(s: &AttentionShape) -> bool {
    takes_heads(s.heads, s.head_dim) && s.max_seqlen > 0 && s.max_seqlen <= MAX_SEQLEN
}

/// The entry point: fp16 or int8, at head dim 64 or 32 (any other: the d64 name, which
/// [`supports`] refuses).
pub fn kernel_name(int8: bool, head_dim: usize) -> &'static str {
    match (int8, head_dim) {
        (false, 32) => KERNEL_D32,
        (true, 32) => KERNEL_INT8_D32,
        (false, _) => KERNEL,
        (true, _) => KERNEL_INT8,
    }
}

/// CTAs per sequence: one per column group.
pub fn ctas_per_sequence(heads: usize, head_dim: usize) -> usize {
    (heads * head_dim).div_ceil(GROUP)
}

/// Dynamic shared memory of one CTA at `head_dim` (the kernel's `qkva::Areas<D>::SMEM`): the
/// 128 x 192 GEMM's ring and its two consumer regions (`gemm_sm90::smem(192)`), the attention
/// area(s) from the second region on: one per head of the group (attention_sm90's layout and
/// its mbarriers, [`crate::attention_sm90::shared_bytes`]), 1024 bytes apart. d64: the region
/// and 64 bytes; d32: two areas of 24 KiB + 64, 25 KiB apart.
pub fn shared_bytes(head_dim: usize) -> usize {
    let region = crate::gemm_sm90::BM / 2 * COLS * 4;
    let area = crate::attention_sm90::shared_bytes(head_dim);
    let areas = GROUP / head_dim.clamp(1, GROUP);
    smem(COLS) as usize - region + (areas - 1) * area.next_multiple_of(1024) + area
}

/// Columns of a context row the int8 entry's quantising warp keeps in shared memory (its slot:
/// an eighth of the GEMM's dynamic shared memory, the kernel's `CTX_SLOT_BYTES`); the codes'
/// pass reads any further columns from L2 again.
pub fn ctx_row_slot_columns() -> usize {
    smem(COLS) as usize / 8 / 2
}

/// The checks common to both entries: the attention shape, `g.shape == [T, 3H, H]`, the
/// epilogue, `cu_seqlens` and `out`. Returns `(T, H)`.
fn check_common(
    k: &str,
    shape: GemmShape,
    k_mult: usize,
    epilogue: &Epilogue<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &DeviceBuffer<f16>,
    s: AttentionShape,
) -> Result<(usize, usize)> {
    if !HEAD_DIMS.contains(&s.head_dim) {
        return Err(kerr(k, format!("head_dim = {}, expected one of {HEAD_DIMS:?}", s.head_dim)));
    }
    if !takes_heads(s.heads, s.head_dim) {
        return Err(kerr(
            k,
            format!(
                "heads = {} of {}: H must be a multiple of {GROUP} (one CTA per {GROUP} columns)",
                s.heads, s.head_dim
            ),
        ));
    }
    if s.max_seqlen == 0 || s.max_seqlen > MAX_SEQLEN {
        return Err(kerr(
            k,
            format!("max_seqlen = {}, expected 1..={MAX_SEQLEN} (one CTA per sequence)", s.max_seqlen),
        ));
    }
    if s.batch == 0 || s.heads == 0 || s.tokens == 0 {
        return Err(kerr(k, format!("batch, heads and tokens must be positive: {s:?}")));
    }
    if s.batch > 65_535 || s.heads > 65_535 {
        return Err(kerr(k, format!("batch = {} and heads = {} must be <= 65535 (grid x/y)", s.batch, s.heads)));
    }
    let h = s.heads * s.head_dim;
    let want = GemmShape { m: s.tokens, n: 3 * h, k: h };
    if shape != want {
        return Err(kerr(
            k,
            format!("g.shape = {shape:?}, expected m = tokens, n = 3H, k = H (H = heads x head_dim): {want:?}"),
        ));
    }
    check_shape(k, shape, k_mult)?;
    // the kernel's row offsets are 32-bit ints
    if s.tokens.checked_mul(3 * h).is_none_or(|n| n > i32::MAX as usize) {
        return Err(kerr(k, format!("tokens = {} x 3H = {} exceeds 2^31 elements", s.tokens, 3 * h)));
    }
    if !matches!(epilogue, Epilogue::None) {
        return Err(kerr(
            k,
            format!("epilogue {epilogue:?}, expected Epilogue::None (the QKV projection: + bias only)"),
        ));
    }
    check_len(k, "cu_seqlens", cu_seqlens, s.batch + 1)?;
    check_len(k, "out", out, s.tokens * h)?;
    // the attention epilogue stores 16-byte chunks of ctx rows
    check_align(k, "out", out, 16)?;
    Ok((s.tokens, h))
}

fn launch_cfg(k: &str, s: AttentionShape) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: (ctas_per_sequence(s.heads, s.head_dim) as u32, check_u32(k, "batch", s.batch)?, 1),
        block: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes(s.head_dim) as u32,
    })
}

/// Checks the fp16 entries' QKV operands and returns their arguments up to `out`, and `T`.
fn f16_args(
    dev: &Device,
    k: &str,
    g: &GemmF16<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &DeviceBuffer<f16>,
    s: AttentionShape,
) -> Result<(Vec<KernelArg>, usize)> {
    let (t, h) = check_common(k, g.shape, 8, &g.epilogue, cu_seqlens, out, s)?;
    check_len(k, "a", g.a, t * h)?;
    check_len(k, "w", g.w, 3 * h * h)?;
    check_epilogue(k, g.bias, &g.epilogue, t, 3 * h)?;
    check_align(k, "a", g.a, 16)?;
    check_align(k, "w", g.w, 16)?;
    let args = vec![
        KernelArg::TensorMap(operand_map(dev, g.a, TensorMapDtype::F16, t, h, BM)?),
        KernelArg::TensorMap(operand_map(dev, g.w, TensorMapDtype::F16, 3 * h, h, W_BOX_ROWS)?),
        opt_ptr(g.bias),
        KernelArg::from(cu_seqlens),
        KernelArg::from(out),
    ];
    Ok((args, t))
}

/// Checks the int8 entries' QKV operands and the context's codes (`code_rows` rows) and returns
/// their arguments up to the codes' counters, and `T`.
#[allow(clippy::too_many_arguments)] // the QKV GEMM, offsets, output and codes of one launch
fn int8_args(
    dev: &Device,
    k: &str,
    g: &GemmInt8<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &DeviceBuffer<f16>,
    codes: &ContextCodes<'_>,
    code_rows: usize,
    s: AttentionShape,
) -> Result<(Vec<KernelArg>, usize)> {
    let (t, h) = check_common(k, g.shape, 16, &g.epilogue, cu_seqlens, out, s)?;
    let n = 3 * h;
    check_int8_operands(k, g, t, n, h)?;
    check_codes(k, codes, code_rows, h, s.batch)?; // a sequence for a strip
    let args = vec![
        KernelArg::TensorMap(operand_map(dev, g.a, TensorMapDtype::S8, t, h, BM)?),
        KernelArg::from(g.a_scale),
        opt_ptr(g.zero_point.map(|z| z.zero)),
        KernelArg::TensorMap(operand_map(dev, g.w, TensorMapDtype::S8, n, h, W_BOX_ROWS)?),
        KernelArg::from(g.w_scale),
        opt_ptr(g.zero_point.map(|z| z.w_sum)),
        opt_ptr(g.bias),
        KernelArg::from(cu_seqlens),
        KernelArg::from(out),
        KernelArg::from(&*codes.q),
        KernelArg::from(&*codes.scale),
        KernelArg::from(&*codes.counters),
    ];
    Ok((args, t))
}

/// Every entry's last arguments: T, heads, batch and the softmax scale.
fn shape_args(t: usize, s: AttentionShape) -> [KernelArg; 4] {
    [
        KernelArg::U32(t as u32),
        KernelArg::U32(s.heads as u32),
        KernelArg::U32(s.batch as u32),
        KernelArg::F32(scale_log2(s)),
    ]
}

/// `out[T, H]` = the attention of `g.a . g.w^T + g.bias` (fp16 QKV projection) per sequence and
/// head, bit-identical to [`gemm_f16_sm90`](crate::gemm_f16_sm90()) into `qkv` then
/// [`attention_sm90`](crate::attention_sm90()) per sequence. `g.shape` must be `m = T`, `n =
/// 3H`, `k = H` (`H = heads * head_dim`), `g.w` the `[3H, H]` q | k | v weight, `g.epilogue`
/// `None`; `s.head_dim` 64 or 32 with `H` a multiple of 64, and `s.max_seqlen <= 128`
/// ([`supports`]). `cu_seqlens` is
/// trusted as by [`attention`](crate::attention()). Needs an sm_90 device.
pub fn qkv_attention_f16_sm90(
    dev: &Device,
    g: &GemmF16<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    s: AttentionShape,
) -> Result<()> {
    let k = kernel_name(false, s.head_dim);
    let (mut args, t) = f16_args(dev, k, g, cu_seqlens, out, s)?;
    args.extend(shape_args(t, s));
    // by module: a device that did not load the sm_90a module (not an sm_90) says so
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}

/// [`qkv_attention_f16_sm90`] on the W8A8 QKV projection: `out` bit-identical to
/// [`gemm_int8_sm90`](crate::gemm_int8_sm90()) into `qkv` then
/// [`attention_sm90`](crate::attention_sm90()) per sequence (the same int32 sums, zero-point
/// correction, scales and bias in the same float operations). `g.a` `[T, H]` codes with
/// `g.a_scale` (and zero points), `g.w` `[3H, H]` with `g.w_scale` (and `w_sum`). Also `codes`:
/// `out`'s per-token codes and scales, bit-identical to [`quantize_i8`](crate::quantize_i8())
/// on `out` (symmetric, no smoothing). `codes.q` must not overlap `g.a` (other sequences'
/// CTAs may still read it).
pub fn qkv_attention_int8_sm90(
    dev: &Device,
    g: &GemmInt8<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    codes: ContextCodes<'_>,
    s: AttentionShape,
) -> Result<()> {
    let k = kernel_name(true, s.head_dim);
    let (mut args, t) = int8_args(dev, k, g, cu_seqlens, out, &codes, s.tokens, s)?;
    args.extend(shape_args(t, s));
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}

/// The attention blocks (`attention_block_{f16,int8}_sm90_d{64,32}`): the fused QKV attention
/// above, then in the same launch the attention-out GEMM of each sequence's rows, `y = ctx .
/// w^T + bias + residual`, and LN1 of `y`, the sequence's CTAs meeting once its context (int8:
/// its codes) is stored and claiming the output's 128 x 64 tiles, then LN1's rows. `y` and
/// `ln.out` (and `ln.q8`) bit-identical to the chain: [`qkv_attention_f16_sm90`] (or int8), then
/// [`gemm_f16_sm90_ln`](crate::gemm_f16_sm90_ln()) (or int8) with `Epilogue::Residual`.
///
/// The context (and its codes and scales) are the kernel's scratch, stored in a slot of
/// [`SLOT_ROWS`] rows per sequence (`[batch x 128, H]`: sequence b's row r at `128 b + r`), so
/// that the attention-out GEMM's 128-row TMA box of a sequence reads no row another sequence's
/// CTAs are writing; rows past a sequence's length are never written (zero them once, e.g.
/// [`Device::alloc_filled`]: they are read, and unused).
pub struct AttentionOut<'a, W: bytemuck::Pod> {
    /// `[H, H]` output projection (fp16, or int8 codes with `w_scale`).
    pub w: &'a DeviceBuffer<W>,
    /// `[H]` per-output-column scales of int8 `w` (`None` for fp16).
    pub w_scale: Option<&'a DeviceBuffer<f32>>,
    /// `[H]`
    pub bias: &'a DeviceBuffer<f16>,
    /// `[T, H]` the residual (the layer's input).
    pub residual: &'a DeviceBuffer<f16>,
    /// `[T, H]` the pre-layernorm rows (written, then read back by LN1).
    pub y: &'a mut DeviceBuffer<f16>,
    /// LN1: `out` `[T, H]`, and (int8) its codes for FFN1; `ln.q8` may be the QKV GEMM's own
    /// input codes (a sequence's rows are normalised once all of its CTAs are past the GEMM;
    /// other sequences' CTAs only read them past their own rows, unused).
    pub ln: FusedLayerNorm<'a>,
    /// [`FOLD_COUNTERS`] x batch per-sequence counters, zero before the first launch; every
    /// launch leaves them zero.
    pub counters: &'a mut DeviceBuffer<u32>,
}

/// Rows of a sequence's slot in the attention blocks' context scratch.
pub const SLOT_ROWS: usize = BM;

/// Counters [`AttentionOut::counters`] holds per sequence.
pub const FOLD_COUNTERS: usize = 6;
/// Columns of an attention-out tile (128 x 64: m64n64 wgmmas, one tile per CTA of a BERT-base
/// sequence): `H` must be a multiple of it.
pub const OUT_COLS: usize = 64;

/// Whether the attention blocks take this batch: [`supports`], `H` a multiple of [`OUT_COLS`]
/// and a row the fused layernorm takes.
pub fn block_supports(s: &AttentionShape) -> bool {
    supports(s) && block_takes_hidden(s.heads * s.head_dim)
}

/// Whether the attention blocks take rows of `h`: whole attention-out tiles ([`OUT_COLS`]) and
/// a row the fused layernorm takes (BERT-base's 768, BERT-large's 1024 and MiniLM's 384 among them).
pub fn block_takes_hidden(h: usize) -> bool {
    h > 0 && h % OUT_COLS == 0 && crate::gemm_plan::fuses_layernorm(h)
}

/// The attention block's entry point: fp16 or int8, at head dim 64 or 32.
pub fn block_kernel_name(int8: bool, head_dim: usize) -> &'static str {
    match (int8, head_dim) {
        (false, 32) => ids::ATTENTION_BLOCK_F16_SM90_D32,
        (true, 32) => ids::ATTENTION_BLOCK_INT8_SM90_D32,
        (false, _) => ids::ATTENTION_BLOCK_F16_SM90_D64,
        (true, _) => ids::ATTENTION_BLOCK_INT8_SM90_D64,
    }
}

/// Checks the second half's operands and returns its kernel arguments after the first half's:
/// the context's tensor map (`ctx` as `dtype`), Wo's, (int8: w_scale,) bias, residual, y, LN1's
/// operands and eps, the counters.
fn block_args<C: bytemuck::Pod, W: bytemuck::Pod>(
    dev: &Device,
    k: &str,
    ctx: &DeviceBuffer<C>,
    o: &AttentionOut<'_, W>,
    dtype: TensorMapDtype,
    s: AttentionShape,
) -> Result<Vec<KernelArg>> {
    let (t, h) = (s.tokens, s.heads * s.head_dim);
    if !block_supports(&s) {
        return Err(kerr(
            k,
            format!("H = {h}: the attention block needs H a multiple of {OUT_COLS} and a fused layernorm's row"),
        ));
    }
    check_len(k, "wo", o.w, h * h)?;
    check_align(k, "wo", o.w, 16)?;
    check_len(k, "bo", o.bias, h)?;
    check_len(k, "residual", o.residual, t * h)?;
    check_len(k, "y", o.y, t * h)?;
    check_len(k, "fold counters", o.counters, FOLD_COUNTERS * s.batch)?;
    let slots = s.batch * SLOT_ROWS;
    check_len(k, "ctx (slots of 128 rows a sequence)", ctx, slots * h)?;
    let mut args = vec![
        KernelArg::TensorMap(operand_map(dev, ctx, dtype, slots, h, BM)?),
        KernelArg::TensorMap(operand_map(dev, o.w, dtype, h, h, W_BOX_ROWS)?),
    ];
    if dtype == TensorMapDtype::S8 {
        let Some(ws) = o.w_scale else { return Err(kerr(k, "int8 wo needs its w_scale")) };
        check_len(k, "wo_scale", ws, h)?;
        check_align(k, "wo_scale", ws, 8)?;
        args.push(KernelArg::from(ws));
    }
    args.extend([KernelArg::from(o.bias), KernelArg::from(o.residual), KernelArg::from(&*o.y)]);
    args.extend(crate::gemm_int8::ln_operands(k, &o.ln, t, h)?);
    args.extend([KernelArg::F32(o.ln.eps), KernelArg::from(&*o.counters)]);
    Ok(args)
}

/// The fp16 attention block: [`qkv_attention_f16_sm90`]'s context into `out` (`[batch x 128, H]`
/// slots), then `o.y` and LN1 into `o.ln` (see [`AttentionOut`]). Needs an sm_90 device;
/// [`block_supports`].
pub fn attention_block_f16_sm90(
    dev: &Device,
    g: &GemmF16<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    o: AttentionOut<'_, f16>,
    s: AttentionShape,
) -> Result<()> {
    let k = block_kernel_name(false, s.head_dim);
    let (mut args, t) = f16_args(dev, k, g, cu_seqlens, out, s)?;
    args.extend(block_args(dev, k, &*out, &o, TensorMapDtype::F16, s)?);
    args.extend(shape_args(t, s));
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}

/// The int8 attention block: [`qkv_attention_int8_sm90`]'s context and codes into `out` and
/// `codes` (`[batch x 128, H]` slots; scales `[batch x 128]`; counters per sequence), then the
/// W8A8 attention-out GEMM on the codes (`o.w` int8 with `o.w_scale`), `o.y` and LN1 into
/// `o.ln` (see [`AttentionOut`]). Needs an sm_90 device; [`block_supports`].
pub fn attention_block_int8_sm90(
    dev: &Device,
    g: &GemmInt8<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    codes: ContextCodes<'_>,
    o: AttentionOut<'_, i8>,
    s: AttentionShape,
) -> Result<()> {
    let k = block_kernel_name(true, s.head_dim);
    let slots = s.batch * SLOT_ROWS;
    let (mut args, t) = int8_args(dev, k, g, cu_seqlens, out, &codes, slots, s)?;
    check_len(k, "out (slots of 128 rows a sequence)", out, slots * s.heads * s.head_dim)?;
    args.extend(block_args(dev, k, &*codes.q, &o, TensorMapDtype::S8, s)?);
    args.extend(shape_args(t, s));
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}
