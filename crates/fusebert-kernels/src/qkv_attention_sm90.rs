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
use super::{check_align, check_len, check_u32, kerr, opt_ptr, Epilogue, GemmF16, GemmInt8, GemmShape};
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
    let (t, h) = check_common(k, g.shape, 8, &g.epilogue, cu_seqlens, out, s)?;
    check_len(k, "a", g.a, t * h)?;
    check_len(k, "w", g.w, 3 * h * h)?;
    check_epilogue(k, g.bias, &g.epilogue, t, 3 * h)?;
    check_align(k, "a", g.a, 16)?;
    check_align(k, "w", g.w, 16)?;
    let tma_a = operand_map(dev, g.a, TensorMapDtype::F16, t, h, BM)?;
    let tma_w = operand_map(dev, g.w, TensorMapDtype::F16, 3 * h, h, W_BOX_ROWS)?;
    let args = [
        KernelArg::TensorMap(tma_a),
        KernelArg::TensorMap(tma_w),
        opt_ptr(g.bias),
        KernelArg::from(cu_seqlens),
        KernelArg::from(&*out),
        KernelArg::U32(t as u32),
        KernelArg::U32(s.heads as u32),
        KernelArg::U32(s.batch as u32),
        KernelArg::F32(scale_log2(s)),
    ];
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
    let (t, h) = check_common(k, g.shape, 16, &g.epilogue, cu_seqlens, out, s)?;
    let n = 3 * h;
    check_int8_operands(k, g, t, n, h)?;
    check_codes(k, &codes, t, h, s.batch)?; // a sequence for a strip
    let tma_a = operand_map(dev, g.a, TensorMapDtype::S8, t, h, BM)?;
    let tma_w = operand_map(dev, g.w, TensorMapDtype::S8, n, h, W_BOX_ROWS)?;
    let args = [
        KernelArg::TensorMap(tma_a),
        KernelArg::from(g.a_scale),
        opt_ptr(g.zero_point.map(|z| z.zero)),
        KernelArg::TensorMap(tma_w),
        KernelArg::from(g.w_scale),
        opt_ptr(g.zero_point.map(|z| z.w_sum)),
        opt_ptr(g.bias),
        KernelArg::from(cu_seqlens),
        KernelArg::from(&*out),
        KernelArg::from(&*codes.q),
        KernelArg::from(&*codes.scale),
        KernelArg::from(&*codes.counters),
        KernelArg::U32(t as u32),
        KernelArg::U32(s.heads as u32),
        KernelArg::U32(s.batch as u32),
        KernelArg::F32(scale_log2(s)),
    ];
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}
