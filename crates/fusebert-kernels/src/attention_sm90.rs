//! Hopper fused attention (`kernels/attention_sm90.cu`, sm_90a only): `out = softmax(Q K^T *
//! scale) V` per packed sequence and head, as [`attention`](crate::attention()) computes it, on
//! wgmma, FlashAttention-3 style: a CTA is 128 query rows of one head ([`Sm90Tiling`]: 128 rows
//! of one sequence, or 128 consecutive packed tokens of any sequences with a per-row sequence
//! mask), two consumer warpgroups of 64 rows each sharing every K/V block of 64 keys, which a
//! producer warpgroup loads by TMA into a two-stage mbarrier ring. Per consumer: S = Q K^T by SS
//! wgmma, online softmax in registers, P in registers as the RS A operand of O += P V with V
//! read MN-major.
//!
//! Inputs and checks are those of [`attention`](crate::attention()): `qkv` `[T, 3H]` (q | k | v,
//! head `h` at columns `h*head_dim..`), `cu_seqlens` `[batch + 1]`, `out` `[T, H]`; head dims
//! 16..128 in steps of 16. `qkv` reaches the kernel as a tensor map (boxes of one swizzled
//! column block by 64 rows). Results are not bit-identical to the mma.sync kernel's (the
//! products of a wgmma are summed in another order): the two agree within the fp16 tolerance of
//! the softmax and the output rounding.
use half::f16;

use super::{check_align, check_len, check_u32, kerr};
use crate::attention::AttentionShape;
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype, TensorMapSwizzle, TiledTensorMap};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The module (`kernels/attention_sm90.cu`).
pub const MODULE: &str = "attention_sm90";
/// Query rows per consumer warpgroup (its wgmma M).
pub const WARPGROUP_M: usize = 64;
/// Consumer warpgroups per CTA, sharing every K/V block.
pub const CONSUMERS: usize = 2;
/// Query rows per CTA.
pub const BLOCK_M: usize = CONSUMERS * WARPGROUP_M;
/// Keys per shared K/V block (the N of S = Q K^T).
pub const BLOCK_N: usize = 64;
/// K/V blocks in flight: the depth of the ring.
pub const STAGES: usize = 2;
/// Threads per CTA: the consumer warpgroups and the producer warpgroup.
pub const THREADS: u32 = 128 * (CONSUMERS as u32 + 1);
/// Head dims the kernel is compiled for (`ATTN90_ENTRY` in the kernel).
pub const HEAD_DIMS: [usize; 8] = [16, 32, 48, 64, 80, 96, 112, 128];
const PACKED_KERNELS: [&str; 8] = [
    ids::ATTENTION_SM90_PACKED_D16,
    ids::ATTENTION_SM90_PACKED_D32,
    ids::ATTENTION_SM90_PACKED_D48,
    ids::ATTENTION_SM90_PACKED_D64,
    ids::ATTENTION_SM90_PACKED_D80,
    ids::ATTENTION_SM90_PACKED_D96,
    ids::ATTENTION_SM90_PACKED_D112,
    ids::ATTENTION_SM90_PACKED_D128,
];
const KERNELS: [&str; 8] = [
    ids::ATTENTION_SM90_D16,
    ids::ATTENTION_SM90_D32,
    ids::ATTENTION_SM90_D48,
    ids::ATTENTION_SM90_D64,
    ids::ATTENTION_SM90_D80,
    ids::ATTENTION_SM90_D96,
    ids::ATTENTION_SM90_D112,
    ids::ATTENTION_SM90_D128,
];

const INT8_KERNELS: [&str; 8] = [
    ids::ATTENTION_INT8_SM90_D16,
    ids::ATTENTION_INT8_SM90_D32,
    ids::ATTENTION_INT8_SM90_D48,
    ids::ATTENTION_INT8_SM90_D64,
    ids::ATTENTION_INT8_SM90_D80,
    ids::ATTENTION_INT8_SM90_D96,
    ids::ATTENTION_INT8_SM90_D112,
    ids::ATTENTION_INT8_SM90_D128,
];
const INT8_PACKED_KERNELS: [&str; 8] = [
    ids::ATTENTION_INT8_SM90_PACKED_D16,
    ids::ATTENTION_INT8_SM90_PACKED_D32,
    ids::ATTENTION_INT8_SM90_PACKED_D48,
    ids::ATTENTION_INT8_SM90_PACKED_D64,
    ids::ATTENTION_INT8_SM90_PACKED_D80,
    ids::ATTENTION_INT8_SM90_PACKED_D96,
    ids::ATTENTION_INT8_SM90_PACKED_D112,
    ids::ATTENTION_INT8_SM90_PACKED_D128,
];

/// How query rows are grouped into CTAs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sm90Tiling {
    /// [`Sm90Tiling::Packed`] when the batch's longest sequence is at most
    /// [`PACKED_MAX_SEQLEN`] tokens, else [`Sm90Tiling::PerSequence`].
    #[default]
    Auto,
    /// A CTA per (128 rows of one sequence, head): grid `ceil(max_seqlen / 128) x heads x batch`;
    /// a 20-token text fills 20 of its CTA's 128 rows.
    PerSequence,
    /// A CTA per (128 consecutive packed tokens, head): grid `ceil(T / 128) x heads`; its keys
    /// are the union of the sequences of its tokens (at most 128 + 2 (max_seqlen - 1) tokens),
    /// each row seeing only its own sequence's. No row is padded except in the last tile.
    Packed,
}

/// Longest sequence for which [`Sm90Tiling::Auto`] packs tokens: a 128-row tile's key range then
/// spans at most 128 + 2 x 63 keys (4 blocks), against a CTA of 128 rows per sequence whose
/// rows past 64 are all padding.
pub const PACKED_MAX_SEQLEN: usize = 64;

impl Sm90Tiling {
    /// The concrete tiling for a batch whose longest sequence is `max_seqlen` tokens.
    pub fn resolve(self, max_seqlen: usize) -> Sm90Tiling {
        match self {
            Sm90Tiling::Auto if max_seqlen <= PACKED_MAX_SEQLEN => Sm90Tiling::Packed,
            Sm90Tiling::Auto => Sm90Tiling::PerSequence,
            t => t,
        }
    }
}

/// The entry point for `head_dim` and `tiling` (resolved: `Auto` counts as per-sequence), or a
/// typed error for a head dim the kernel is not compiled for.
pub fn kernel(head_dim: usize, tiling: Sm90Tiling) -> Result<&'static str> {
    match HEAD_DIMS.iter().position(|&d| d == head_dim) {
        Some(i) if tiling == Sm90Tiling::Packed => Ok(PACKED_KERNELS[i]),
        Some(i) => Ok(KERNELS[i]),
        None => Err(kerr(
            "attention_sm90",
            format!("head_dim = {head_dim}, expected a multiple of 16 up to 128 {HEAD_DIMS:?}"),
        )),
    }
}

/// Dynamic shared memory of one CTA (the kernel's `Smem<D>::BYTES + BARRIERS`; it has no static
/// shared memory): the consumers' Q tiles plus the ring's K and V blocks, fp16 (96 KiB at head
/// dim 128), or the consumers' O staging tiles (rows rounded up to 128 bytes) that reuse it at
/// the end, whichever is larger; then 64 bytes of mbarriers.
pub fn shared_bytes(head_dim: usize) -> usize {
    let main = (BLOCK_M + 2 * STAGES * BLOCK_N) * head_dim * 2;
    let staged = BLOCK_M * 128 * head_dim.div_ceil(64);
    main.max(staged) + 64
}

/// The swizzle of head dim `head_dim`'s shared tiles (the kernel's `Lay<D>::W`): 128 bytes when
/// 64 divides it, 64 when 32 does, else 32; a TMA box is one such row wide.
fn swizzle(head_dim: usize) -> (TensorMapSwizzle, usize) {
    match head_dim {
        d if d % 64 == 0 => (TensorMapSwizzle::B128, 128),
        d if d % 32 == 0 => (TensorMapSwizzle::B64, 64),
        _ => (TensorMapSwizzle::B32, 32),
    }
}

/// The tensor map of `qkv` `[tokens, 3H]` the producer loads Q, K and V through: boxes of one
/// swizzled column block (`W / 2` halves) by 64 rows; rows past `tokens` read as zeros.
fn qkv_map(dev: &Device, qkv: &DeviceBuffer<f16>, s: AttentionShape) -> Result<crate::device::TensorMap> {
    let (swz, w) = swizzle(s.head_dim);
    let cols = 3 * s.heads * s.head_dim;
    dev.encode_tensor_map(&TiledTensorMap {
        dtype: TensorMapDtype::F16,
        addr: qkv.addr(),
        dims: &[cols as u64, s.tokens as u64],
        strides: &[(cols * 2) as u64],
        box_dims: &[(w / 2) as u32, WARPGROUP_M as u32],
        swizzle: swz,
    })
}

/// The softmax scale the kernels take: `scale` (default `1 / sqrt(head_dim)`) times `log2 e`
/// (they exponentiate in base 2).
pub(crate) fn scale_log2(s: AttentionShape) -> f32 {
    s.scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt()) * std::f32::consts::LOG2_E
}

/// `out[T, H] = softmax(Q K^T * scale) V` per sequence and head on the Hopper kernel. Needs an
/// sm_90 device (an H100/H200, or the emulator with `Arch::Sm90`): elsewhere the module does not
/// load and the launch is an error. `cu_seqlens` is trusted as by [`attention`](crate::attention())
/// (monotone, last entry `tokens`, no gap longer than `max_seqlen`).
pub fn attention_sm90(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    s: AttentionShape,
    tiling: Sm90Tiling,
) -> Result<()> {
    launch(dev, qkv, cu_seqlens, out, None, s, tiling)
}

/// The context's per-token symmetric int8 codes, as [`quantize_i8`](crate::quantize_i8())
/// writes them into a [`QuantizedI8`](crate::QuantizedI8) with no zero points: the second output
/// of the int8 attentions ([`attention_int8_sm90`], and the fused QKV attention's
/// [`qkv_attention_int8_sm90`](crate::qkv_attention_int8_sm90())).
pub struct ContextCodes<'a> {
    /// `[T, H]` codes.
    pub q: &'a mut DeviceBuffer<i8>,
    /// `[T]` scales (`absmax / 127`).
    pub scale: &'a mut DeviceBuffer<f32>,
    /// [`CTX_COUNTERS`] words per strip of rows whose CTAs share the rows' codes (the kernels'
    /// started, arrived, claimed rows and done): per sequence for the fused QKV attention, per
    /// row tile for [`attention_int8_sm90`] ([`codes_strips`]). Zero before the first launch
    /// (e.g. [`Device::alloc_filled`]); every launch leaves them zero, so CUDA-graph replays
    /// need no memset.
    pub counters: &'a mut DeviceBuffer<u32>,
}

/// Counters [`ContextCodes::counters`] holds per strip.
pub const CTX_COUNTERS: usize = 4;

/// The strips of [`attention_int8_sm90`]'s codes: the grid's row tiles (`ceil(max_seqlen / 128)
/// x batch` per sequence, `ceil(T / 128)` packed), each shared by its heads' CTAs.
pub fn codes_strips(s: AttentionShape, tiling: Sm90Tiling) -> usize {
    match tiling.resolve(s.max_seqlen) {
        Sm90Tiling::Packed => s.tokens.div_ceil(BLOCK_M),
        _ => s.max_seqlen.div_ceil(BLOCK_M) * s.batch,
    }
}

/// The most [`codes_strips`] of any batch of at most `batch` sequences and `tokens` tokens (a
/// workspace's counters hold `CTX_COUNTERS` times this).
pub fn max_codes_strips(batch: usize, tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_M).max(1) * batch.max(1)
}

/// Columns of a context row the int8 entries' quantising warp keeps in shared memory (its slot:
/// an eighth of the CTA's idle dynamic shared memory, the kernel's `CtxCodes::SLOT`); the codes'
/// pass reads any further columns from L2 again.
pub fn codes_slot_columns(head_dim: usize) -> usize {
    (shared_bytes(head_dim) - 64) / 8 / 16 * 16 / 2
}

pub(crate) fn check_codes(k: &str, c: &ContextCodes<'_>, t: usize, h: usize, strips: usize) -> Result<()> {
    check_len(k, "ctx codes q", c.q, t * h)?;
    check_len(k, "ctx codes scale", c.scale, t)?;
    check_len(k, "ctx codes counters", c.counters, CTX_COUNTERS * strips)?;
    // a warp writes a row's codes in 8-byte stores
    check_align(k, "ctx codes q", c.q, 8)
}

/// [`attention_sm90`] for int8 forward passes (`attention_int8_sm90_*`): `out` the same bits,
/// and also `codes`: `out`'s per-token codes and scales, bit-identical to
/// [`quantize_i8`](crate::quantize_i8()) on `out` (symmetric, no smoothing), the attention-out
/// GEMM's input without a quantize launch. A token's scale needs its whole row (all heads): the
/// heads' CTAs of a row tile meet once their rows are stored (a counter per tile) and share the
/// tile's rows, read back through L2.
pub fn attention_int8_sm90(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    codes: ContextCodes<'_>,
    s: AttentionShape,
    tiling: Sm90Tiling,
) -> Result<()> {
    launch(dev, qkv, cu_seqlens, out, Some(codes), s, tiling)
}

/// The int8 entry for `head_dim` and `tiling` (resolved), or a typed error.
pub fn kernel_int8(head_dim: usize, tiling: Sm90Tiling) -> Result<&'static str> {
    match HEAD_DIMS.iter().position(|&d| d == head_dim) {
        Some(i) if tiling == Sm90Tiling::Packed => Ok(INT8_PACKED_KERNELS[i]),
        Some(i) => Ok(INT8_KERNELS[i]),
        // the fp16 entry's error names the head dims
        None => kernel(head_dim, tiling),
    }
}

fn launch(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    codes: Option<ContextCodes<'_>>,
    s: AttentionShape,
    tiling: Sm90Tiling,
) -> Result<()> {
    let tiling = tiling.resolve(s.max_seqlen);
    let k = if codes.is_some() { kernel_int8(s.head_dim, tiling)? } else { kernel(s.head_dim, tiling)? };
    // the kernel's row offsets are 32-bit ints
    let h = s.heads * s.head_dim;
    if s.tokens.checked_mul(3 * h).is_none_or(|n| n > i32::MAX as usize) {
        return Err(kerr(k, format!("tokens = {} x 3H = {} exceeds 2^31 elements", s.tokens, 3 * h)));
    }
    // TMA reads qkv: 16-byte aligned, rows of 6 H bytes (a multiple of 16 for head dims of 16 | D)
    crate::attention::check_io(k, s, qkv, cu_seqlens, out)?;
    // the epilogue stores 16-byte chunks of O rows (H x 2 bytes, a multiple of 32)
    check_align(k, "out", out, 16)?;
    let cfg = LaunchConfig {
        grid: match tiling {
            Sm90Tiling::Packed => (check_u32(k, "tokens", s.tokens.div_ceil(BLOCK_M))?, s.heads as u32, 1),
            _ => (check_u32(k, "max_seqlen", s.max_seqlen.div_ceil(BLOCK_M))?, s.heads as u32, s.batch as u32),
        },
        block: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes(s.head_dim) as u32,
    };
    let mut args =
        vec![KernelArg::TensorMap(qkv_map(dev, qkv, s)?), KernelArg::from(cu_seqlens), KernelArg::from(&*out)];
    if let Some(c) = &codes {
        check_codes(k, c, s.tokens, h, codes_strips(s, tiling))?;
        args.extend([KernelArg::from(&*c.q), KernelArg::from(&*c.scale), KernelArg::from(&*c.counters)]);
    }
    args.extend([KernelArg::U32(s.heads as u32), KernelArg::U32(s.batch as u32), KernelArg::F32(scale_log2(s))]);
    // by module: a device that did not load the sm_90a module (not an sm_90) says so
    dev.launch_in(MODULE, k, cfg, &args)
}
