//! Hopper QKV projection fused with multi-head attention (`kernels/qkv_attention_sm90.cu`,
//! sm_90a only): `ctx = attention(x . Wqkv^T + bias)` of a BERT layer in one launch, for head dim
//! [`HEAD_DIM`] and packed batches whose sequences are at most [`MAX_SEQLEN`] tokens. A CTA per
//! (head, sequence) computes the 128 x 192 GEMM tile of the sequence's rows by the head's q, k
//! and v weight rows, keeps q, k, v (fp16, + bias) in shared memory, and runs the attention of
//! the head on them: the `[T, 3H]` QKV activation never goes to memory.
//!
//! The output is **bit-identical** to the unfused chain the forward pass runs otherwise:
//! [`gemm_f16_sm90`](crate::gemm_f16_sm90()) (or [`gemm_int8_sm90`](crate::gemm_int8_sm90()))
//! writing `qkv` `[T, 3H]` with the bias and no activation, then
//! [`attention_sm90`](crate::attention_sm90()) with [`Sm90Tiling::PerSequence`](crate::Sm90Tiling)
//! (`attention_sm90_d64`): the kernel runs those kernels' own device code (the GEMM's K-chunk
//! order, wgmmas and epilogue arithmetic, the attention consumer's softmax and P V), so a batch
//! may take either path (batch invariance).
//!
//! The int8 entry also writes the context's per-token int8 codes and scales, the bits
//! [`quantize_i8`](crate::quantize_i8()) (symmetric, no smoothing) gives from `ctx`: the
//! attention-out GEMM's input without a quantize launch. A token's scale needs its whole row (all
//! heads), so the last of a sequence's CTAs to finish (an arrival counter per sequence) quantises
//! the sequence's rows, read back through L2.
use half::f16;

use super::attention_sm90::scale_log2;
use super::gemm_int8::check_epilogue;
use super::gemm_sm90::{check_int8_operands, check_shape, operand_map, smem, BM};
use super::{check_align, check_len, check_u32, kerr, opt_ptr, Epilogue, GemmF16, GemmInt8, GemmShape};
use crate::attention::AttentionShape;
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The module (`kernels/qkv_attention_sm90.cu`).
pub const MODULE: &str = "qkv_attention_sm90";
/// The only head dim the kernel is compiled for.
pub const HEAD_DIM: usize = 64;
/// Longest sequence: one CTA holds a whole sequence (its 128-row GEMM tile).
pub const MAX_SEQLEN: usize = 128;
/// The fp16 entry.
pub const KERNEL: &str = ids::QKV_ATTENTION_F16_SM90_D64;
/// The int8 (W8A8 QKV GEMM) entry.
pub const KERNEL_INT8: &str = ids::QKV_ATTENTION_INT8_SM90_D64;
/// Threads per CTA: the producer warpgroup and two consumer warpgroups.
pub const THREADS: u32 = 384;
/// Columns of a CTA's GEMM tile: the q, k and v columns of one head.
const COLS: usize = 3 * HEAD_DIM;
/// Weight rows per TMA box: one of the three parts of a head's tile.
const W_BOX_ROWS: usize = HEAD_DIM;

/// Whether the fused kernel takes this batch: head_dim 64, 0 < max_seqlen <= 128.
pub fn supports(s: &AttentionShape) -> bool {
    s.head_dim == HEAD_DIM && s.max_seqlen > 0 && s.max_seqlen <= MAX_SEQLEN
}

/// The entry point: fp16 or int8.
pub fn kernel_name(int8: bool) -> &'static str {
    if int8 {
        KERNEL_INT8
    } else {
        KERNEL
    }
}

/// Dynamic shared memory of one CTA (the kernel's `qkva::SMEM`): the 128 x 192 GEMM's ring and
/// its two consumer regions (`gemm_sm90::smem(192)`; the attention's q, k, v reuse the second
/// region), then 64 bytes of the attention's mbarriers.
pub fn shared_bytes() -> usize {
    smem(COLS) as usize + 64
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
    if s.head_dim != HEAD_DIM {
        return Err(kerr(k, format!("head_dim = {}, expected {HEAD_DIM}", s.head_dim)));
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
    let h = s.heads * HEAD_DIM;
    let want = GemmShape { m: s.tokens, n: 3 * h, k: h };
    if shape != want {
        return Err(kerr(
            k,
            format!("g.shape = {shape:?}, expected m = tokens, n = 3H, k = H (H = heads x 64): {want:?}"),
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
        grid: (check_u32(k, "heads", s.heads)?, check_u32(k, "batch", s.batch)?, 1),
        block: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes() as u32,
    })
}

/// `out[T, H]` = the attention of `g.a . g.w^T + g.bias` (fp16 QKV projection) per sequence and
/// head, bit-identical to [`gemm_f16_sm90`](crate::gemm_f16_sm90()) into `qkv` then
/// [`attention_sm90`](crate::attention_sm90()) per sequence. `g.shape` must be `m = T`, `n =
/// 3H`, `k = H` (`H = heads * 64`), `g.w` the `[3H, H]` q | k | v weight, `g.epilogue`
/// `None`; `s.head_dim == 64` and `s.max_seqlen <= 128` ([`supports`]). `cu_seqlens` is
/// trusted as by [`attention`](crate::attention()). Needs an sm_90 device.
pub fn qkv_attention_f16_sm90(
    dev: &Device,
    g: &GemmF16<'_>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    s: AttentionShape,
) -> Result<()> {
    let k = KERNEL;
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

/// The int8 entry's second output: the context's per-token symmetric int8 codes, as
/// [`quantize_i8`](crate::quantize_i8()) writes them into a [`QuantizedI8`](crate::QuantizedI8) with no zero points.
pub struct ContextCodes<'a> {
    /// `[T, H]` codes.
    pub q: &'a mut DeviceBuffer<i8>,
    /// `[T]` scales (`absmax / 127`).
    pub scale: &'a mut DeviceBuffer<f32>,
    /// `[batch]` (or more) per-sequence arrival counters, zero before the first launch (e.g.
    /// [`Device::alloc_filled`]); every launch leaves them zero, so CUDA-graph replays need no
    /// memset.
    pub arrivals: &'a mut DeviceBuffer<u32>,
}

fn check_codes(k: &str, c: &ContextCodes<'_>, t: usize, h: usize, batch: usize) -> Result<()> {
    check_len(k, "ctx codes q", c.q, t * h)?;
    check_len(k, "ctx codes scale", c.scale, t)?;
    check_len(k, "ctx codes arrivals", c.arrivals, batch)?;
    // a warp writes a row's codes in 8-byte stores
    check_align(k, "ctx codes q", c.q, 8)
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
    let k = KERNEL_INT8;
    let (t, h) = check_common(k, g.shape, 16, &g.epilogue, cu_seqlens, out, s)?;
    let n = 3 * h;
    check_int8_operands(k, g, t, n, h)?;
    check_codes(k, &codes, t, h, s.batch)?;
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
        KernelArg::from(&*codes.arrivals),
        KernelArg::U32(t as u32),
        KernelArg::U32(s.heads as u32),
        KernelArg::U32(s.batch as u32),
        KernelArg::F32(scale_log2(s)),
    ];
    dev.launch_in(MODULE, k, launch_cfg(k, s)?, &args)
}
