//! Fused multi-head self-attention over packed variable-length sequences
//! (`kernels/attention.cu`, FlashAttention-2 style, tensor cores, online softmax).
use half::f16;

use super::{check_align, check_len, check_u32, kerr, launch, Variant};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// Query rows per block of the default geometry.
pub const TILE_Q: usize = 64;
/// Query rows per block of the short-sequence geometry (`attention_f16_short_d*`).
pub const SHORT_TILE_Q: usize = 32;
/// Longest sequence for which [`QueryTile::Auto`] picks the short geometry: one 32-row query tile and one
/// 32-key tile cover it, so a 20-token text pads to 32 x 32 (not 64 x 64) and no warp of the
/// block is past every sequence's end before its first row.
pub const SHORT_MAX_SEQLEN: usize = 32;

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Number of sequences (`cu_seqlens` has `batch + 1` entries).
    pub batch: usize,
    /// Total packed tokens `T` (= `cu_seqlens[batch]`).
    pub tokens: usize,
    /// Longest sequence (sizes the grid; blocks past a sequence's end exit at once).
    pub max_seqlen: usize,
    pub heads: usize,
    /// A multiple of 16 up to 128 (16, 32, 48, 64, 80, 96, 112, 128).
    pub head_dim: usize,
    /// Softmax scale; `None` = `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl AttentionShape {
    /// The shape of a packed batch from its host-side `cu_seqlens` (validated: starts at 0,
    /// non-decreasing, at least one sequence, no sequence longer than 65535 * 64).
    pub fn from_cu_seqlens(cu_seqlens: &[u32], heads: usize, head_dim: usize) -> Result<Self> {
        let k = "attention_f16";
        if cu_seqlens.len() < 2 || cu_seqlens[0] != 0 {
            return Err(kerr(k, format!("cu_seqlens must start at 0 and have >= 2 entries, got {cu_seqlens:?}")));
        }
        let mut max_seqlen = 0usize;
        for (i, w) in cu_seqlens.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(kerr(k, format!("cu_seqlens decreases at sequence {i}: {} -> {}", w[0], w[1])));
            }
            max_seqlen = max_seqlen.max((w[1] - w[0]) as usize);
        }
        Ok(AttentionShape {
            batch: cu_seqlens.len() - 1,
            tokens: *cu_seqlens.last().unwrap_or(&0) as usize,
            max_seqlen,
            heads,
            head_dim,
            scale: None,
        })
    }
}

/// Which attention kernel runs: the fast one in a query-tile geometry ([`QueryTile::Auto`]:
/// the one predicted faster for the batch's longest sequence), or [`Variant::Simple`] (one block
/// per (token, head), scores in shared memory, exact `expf`; `max_seqlen` <= 12288). Both
/// geometries compute the same thing for any lengths; only the padding and the grid differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttentionLaunch {
    pub variant: Variant,
    pub tile: QueryTile,
}

/// `out[T, H] = softmax(Q K^T * scale) V` per sequence and head, with `qkv` `[T, 3H]` holding
/// q | k | v (head `h` at columns `h*head_dim..` of each part), `H = heads * head_dim`.
/// `cu_seqlens` is trusted to be monotone with last entry `tokens` and no gap longer than
/// `max_seqlen` (the packer builds it).
/// The checks every attention kernel makes of its shape and buffers: positive sizes, the grid's
/// y/z limits, `qkv [T, 3H]` (16-byte aligned: 16-byte loads), `cu_seqlens [batch + 1]`,
/// `out [T, H]`.
pub(crate) fn check_io(
    kernel: &str,
    s: AttentionShape,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &DeviceBuffer<f16>,
) -> Result<()> {
    if s.batch == 0 || s.heads == 0 || s.max_seqlen == 0 || s.tokens == 0 {
        return Err(kerr(kernel, format!("batch, heads, tokens and max_seqlen must be positive: {s:?}")));
    }
    if s.batch > 65_535 || s.heads > 65_535 {
        return Err(kerr(kernel, format!("batch = {} and heads = {} must be <= 65535 (grid y/z)", s.batch, s.heads)));
    }
    let h = s.heads * s.head_dim;
    check_len(kernel, "qkv", qkv, s.tokens * 3 * h)?;
    check_len(kernel, "cu_seqlens", cu_seqlens, s.batch + 1)?;
    check_len(kernel, "out", out, s.tokens * h)?;
    check_align(kernel, "qkv", qkv, 16)
}

pub fn attention(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    s: AttentionShape,
    how: AttentionLaunch,
) -> Result<()> {
    if how.variant == Variant::Simple {
        return simple(dev, qkv, cu_seqlens, out, s);
    }
    let tile = how.tile;
    let g = geometry(tile.resolve(s.max_seqlen), s.head_dim)?;
    let kernel = g.kernel;
    check_io(kernel, s, qkv, cu_seqlens, out)?;
    check_align(kernel, "out", out, 16)?;
    let scale = s.scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt());
    let cfg = LaunchConfig {
        grid: (
            check_u32(kernel, "max_seqlen", s.max_seqlen.div_ceil(g.tile_q))?,
            check_u32(kernel, "heads", s.heads)?,
            check_u32(kernel, "batch", s.batch)?,
        ),
        block: (g.threads, 1, 1),
        shared_mem_bytes: g.shared_bytes as u32,
    };
    let args = [
        KernelArg::from(qkv),
        KernelArg::from(cu_seqlens),
        KernelArg::from(&*out),
        KernelArg::U32(s.heads as u32),
        KernelArg::F32(scale * std::f32::consts::LOG2_E),
    ];
    launch(dev, kernel, cfg, &args)
}

/// Head dims the fast kernel is compiled for (`ATTN_ENTRY` in `kernels/attention.cu`).
pub const HEAD_DIMS: [usize; 8] = [16, 32, 48, 64, 80, 96, 112, 128];

/// Query rows per block of the fast kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryTile {
    /// [`QueryTile::Rows32`] when the batch's longest sequence is at most
    /// [`SHORT_MAX_SEQLEN`] tokens, else [`QueryTile::Rows64`].
    #[default]
    Auto,
    /// 64 query rows, 4 warps, key tiles of 64 (head dim <= 64) or 32.
    Rows64,
    /// 32 query rows, 2 warps, key tiles of 32 (`attention_f16_short_d*`).
    Rows32,
}

impl QueryTile {
    /// The concrete tile for a batch whose longest sequence is `max_seqlen` tokens: the one
    /// selection rule, shared by the launch wrapper and `perf::plan`.
    pub fn resolve(self, max_seqlen: usize) -> QueryTile {
        match self {
            QueryTile::Auto if max_seqlen <= SHORT_MAX_SEQLEN => QueryTile::Rows32,
            QueryTile::Auto => QueryTile::Rows64,
            t => t,
        }
    }
}

/// Launch geometry of the fast kernel (mirrors `ATTN_ENTRY` in `kernels/attention.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Entry point (`attention_f16_d{D}` or `attention_f16_short_d{D}`).
    pub kernel: &'static str,
    /// Query rows per block (16 per warp).
    pub tile_q: usize,
    /// Keys per shared K/V tile.
    pub block_n: usize,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory: Q plus two stages of K and V, fp16.
    pub shared_bytes: usize,
}

/// The geometry of `tile` (resolved: `Auto` counts as `Rows64`) at `head_dim`: 64-row blocks
/// use 64-key tiles while Q plus two stages of K and V fit 48 KiB, else 32. A typed error for
/// a head dim the kernels are not compiled for.
pub fn geometry(tile: QueryTile, head_dim: usize) -> Result<Geometry> {
    let Some(i) = HEAD_DIMS.iter().position(|&d| d == head_dim) else {
        return Err(kerr(
            "attention_f16",
            format!("head_dim = {head_dim}, expected a multiple of 16 up to 128 {HEAD_DIMS:?}"),
        ));
    };
    let (kernel, tile_q, block_n, threads) = match tile {
        QueryTile::Rows32 => (SHORT_KERNELS[i], SHORT_TILE_Q, 32, 64),
        _ => (KERNELS[i], TILE_Q, if head_dim <= 64 { 64 } else { 32 }, 128),
    };
    Ok(Geometry { kernel, tile_q, block_n, threads, shared_bytes: (tile_q + 4 * block_n) * head_dim * 2 })
}

/// Entry points of the 64-row geometry, by [`HEAD_DIMS`] index (`ATTN_ENTRY` in `kernels/attention.cu`).
const KERNELS: [&str; 8] = [
    ids::ATTENTION_F16_D16,
    ids::ATTENTION_F16_D32,
    ids::ATTENTION_F16_D48,
    ids::ATTENTION_F16_D64,
    ids::ATTENTION_F16_D80,
    ids::ATTENTION_F16_D96,
    ids::ATTENTION_F16_D112,
    ids::ATTENTION_F16_D128,
];
/// Entry points of the short geometry, by [`HEAD_DIMS`] index.
const SHORT_KERNELS: [&str; 8] = [
    ids::ATTENTION_F16_SHORT_D16,
    ids::ATTENTION_F16_SHORT_D32,
    ids::ATTENTION_F16_SHORT_D48,
    ids::ATTENTION_F16_SHORT_D64,
    ids::ATTENTION_F16_SHORT_D80,
    ids::ATTENTION_F16_SHORT_D96,
    ids::ATTENTION_F16_SHORT_D112,
    ids::ATTENTION_F16_SHORT_D128,
];

fn simple(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu_seqlens: &DeviceBuffer<u32>,
    out: &mut DeviceBuffer<f16>,
    s: AttentionShape,
) -> Result<()> {
    const K: &str = ids::ATTENTION_F16_SIMPLE;
    if s.batch == 0 || s.heads == 0 || s.tokens == 0 || s.head_dim == 0 || s.max_seqlen == 0 || s.max_seqlen > 12288 {
        return Err(kerr(K, format!("batch, heads, tokens, head_dim positive and 0 < max_seqlen <= 12288: {s:?}")));
    }
    let h = s.heads * s.head_dim;
    check_len(K, "qkv", qkv, s.tokens * 3 * h)?;
    check_len(K, "cu_seqlens", cu_seqlens, s.batch + 1)?;
    check_len(K, "out", out, s.tokens * h)?;
    let cfg = LaunchConfig {
        grid: (check_u32(K, "tokens", s.tokens)?, check_u32(K, "heads", s.heads)?, 1),
        block: (128, 1, 1),
        shared_mem_bytes: (s.max_seqlen * 4) as u32,
    };
    let args = [
        KernelArg::from(qkv),
        KernelArg::from(cu_seqlens),
        KernelArg::U32(s.batch as u32),
        KernelArg::from(&*out),
        KernelArg::U32(s.heads as u32),
        KernelArg::U32(s.head_dim as u32),
        KernelArg::F32(s.scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt())),
    ];
    launch(dev, K, cfg, &args)
}
