// Hopper (sm_90a) fused multi-head self-attention forward over packed variable-length sequences,
// FlashAttention-3 style on wgmma: the same inputs, outputs and semantics as `attention.cu`.
// Sequence b owns tokens cu_seqlens[b] .. cu_seqlens[b+1] (no padding); qkv [T, 3H] fp16 holds
// q | k | v (head h at columns h*D .. h*D+D of each part); out [T, H] fp16; H = heads * D.
//
// Design (docs/research/hopper.md 3.3):
// - Warp-specialised CTA of 384 threads: consumer warpgroups 0 and 1 own query rows 0-63 and
//   64-127 of a 128-row tile of one head; warpgroup 2 is the producer (one elected thread of its
//   first warp issues every load). Each K/V block is loaded once for both consumers: half the K/V traffic
//   per query row of 64-row CTAs. `attention_sm90_d*`: 128 rows of one sequence, grid
//   (ceil(max_seqlen / 128), heads, batch); `attention_sm90_packed_d*`: 128 consecutive packed
//   tokens of any sequences, grid (ceil(T / 128), heads), keys the union of their sequences,
//   each row masked to its own. CTAs with no rows exit at once, before any barrier (the exit is
//   CTA-uniform). A consumer whose 64 rows are all past the end computes nothing: it only takes
//   and releases every block (the `empty` barriers count it) and joins the epilogue barrier.
//   A whole producer warpgroup, not one warp: wgmma needs a block of whole warpgroups (the
//   emulator refuses 9 warps). As in gemm_sm90.cu, setmaxnreg gives the producer's registers to
//   the consumers (40 / 232; ptxas fits every entry under the 168 of 384 threads anyway, the
//   largest, packed d112, in ~156).
// - Loads by TMA (cp.async.bulk.tensor.2d, one tensor map over qkv as [T, 3H], box {W / 2
//   halves, 64 rows} in the W-byte swizzle): a box is exactly one column block of the layout
//   below, so Q, K and V land in the layout the wgmma descriptors read, a tile being D / (W / 2)
//   boxes. Q: 2 x 64 rows on `qfull`; K/V: a ring of STAGES = 2 stages of (K [64, D], V [64, D])
//   with full[s] (1 arrival, the producer's arrive.expect_tx, + the boxes' bytes) and empty[s]
//   (256 arrivals: every consumer thread once its P V wgmmas, the last to read stage s, have
//   completed, wait_group 0: sanitizer S4). Stage s, lap n: full parity n & 1; the producer waits
//   empty parity (n & 1) ^ 1 (a fresh barrier passes parity 1 at once: the first lap does not
//   wait). TMA writes shared memory through the async proxy, which the wgmmas read: no proxy
//   fence (v1's cp.async needed fence.proxy.async). Rows past T are zero-filled by TMA (counted in
//   the transaction bytes). Rows past a sequence end but inside T hold the next sequence's
//   tokens: keys there are masked to -inf in S, so P is exactly 0, and 0 * v = 0 for the finite
//   v of valid inputs (as in v1's packed tiles, whose key range already spanned sequences; a
//   non-finite v in a neighbouring sequence would reach the rows through 0 * inf = NaN); query
//   rows there are never stored. Not 1-D cp.async.bulk row copies: those cannot swizzle.
// - Shared layout of Q [64, D] (one per consumer), K [64, D], V [64, D]: rows split in column
//   blocks of CB halves (CB = W / 2, W = 128 bytes when 64 | D, 64 when 32 | D, else 32), block c
//   of row r at c * rows * W + r * W, swizzled on the absolute address with the W-byte pattern
//   (hopper.md 1.3, TMA's swizzle). That is the canonical K-major SW-W layout for Q (A) and K (B)
//   (SBO = 8 W, K steps of 16 inside a block add 32 bytes to the start), and the same bytes read
//   as an MN-major SW-W B operand are V with N = head dim, K = keys (LBO = rows * W between
//   column blocks, SBO = 8 W), so V is used as stored (imm-trans-b = 1). Every block starts on a
//   1024-byte boundary. The only other shared accesses are the epilogue's staging (below): no
//   bank conflicts at any head dim. (The emulator counts no wgmma operand or TMA shared traffic:
//   how the tensor core reads SW32/SW64 operands on hardware is unmeasured.)
// - Per consumer warpgroup, per key block (v1's arithmetic, unchanged: per-sequence tiles give
//   v1's outputs bit for bit; packed tiles start their key blocks at the first key of the
//   128-row tile instead of the 64-row one, so the online softmax sums in other blocks, within
//   the fp16 tolerance): S = Q K^T: D/16 SS wgmmas m64n64k16 (f32). Online softmax in registers
//   in base 2 (scale * log2 e folded into one multiply, ex2.approx), keys outside the row's
//   sequence masked to -inf; row max and sum reduced over the 4 threads (quad) that share a row.
// - P -> f16x2 in registers: the S accumulator of thread t (rows 16w + g, +8; columns 8c + 2q,
//   +1) *is* the RS A fragment of P (hopper.md 1.4): k-block kb takes accumulator n-blocks 2kb,
//   2kb+1. O += P V: 4 RS wgmmas m64nDk16 per key block (f32 accumulators in registers).
// - Ordering: wgmma.fence before the first wgmma of each batch (the accumulators and P were
//   written by ordinary instructions), commit, wait_group 0 before the softmax touches S and
//   before O is rescaled or P rewritten (S1), then the arrival on empty[s] (S4).
// - Epilogue: normalise by the row sum; column pairs from the accumulator layout stored to
//   global memory directly would be 4-byte stores touching half of each 32-byte sector per
//   instruction (store efficiency 0.5). So the consumers wait at a named barrier (every wgmma
//   of both done: Q and the stages are free; every load was consumed, so no TMA is in flight),
//   each warp writes its 16 rows into a swizzled staging tile (OStage: conflict-free for the
//   fragment writes and the 16-byte reads; consumer c's at c * 64 RS from the start of shared
//   memory), and reads them back as 16-byte chunks, whole sectors of each row per instruction,
//   stored for valid rows only (rows past the sequence end, or past T when packed, are never
//   written). A warp reads only the rows it wrote, so __syncwarp orders the two.
//
// FA3 now: the TMA producer, the mbarrier ring, two consumer warpgroups sharing each K/V
// stage. Not (yet): the intra-warpgroup overlap of the next block's S = Q K^T with this block's
// softmax, and the ping-pong of the two consumers (named barriers ordering one's softmax
// against the other's wgmmas).
#include "attention_sm90.cuh"
#include "gemm_sm90.cuh"

namespace attn90 {
// The int8 entries' context codes (gemm_sm90.cuh's SharedRowCodes: the per-token symmetric codes
// and scales quantize_i8_f16 gives, for the attention-out GEMM, without a quantize launch): a
// token's scale is the absmax of its whole row, all heads, and a CTA stores one head. A strip is
// a CTA row tile's rows (per-sequence: tile blockIdx.x of sequence blockIdx.z; packed:
// blockIdx.x), shared by its heads' CTAs (gridDim.y), which meet once their rows are stored;
// each consumer warp keeps a claimed row in an eighth of the then idle shared memory (rows of up
// to Smem<D>::BYTES / 16 columns; columns past it are read from L2 again). A tile with no rows
// exits in all of its CTAs before counting in.
template <int D, bool PACKED>
struct CtxCodes {
    sm90::SharedRowCodes rc;
    static constexpr uint32_t SLOT = Smem<D>::BYTES / 8 / 16 * 16;
    static FB_DEVICE int strip() { return PACKED ? blockIdx.x : blockIdx.z * gridDim.x + blockIdx.x; }
    FB_DEVICE void begin() const { rc.begin(strip()); }
    // after the attention's stores: every wgmma, TMA and staging read of this CTA is over once
    // StripShare's first barrier has passed, so the slots may take the shared memory
    FB_DEVICE void operator()(const __half* out, const Span& sp, int H, uint32_t base, uint32_t* flag) const {
        rc(out, strip(), (int)gridDim.y, sp.qtok, sp.qvalid, H, base + (threadIdx.x >> 5) * SLOT, SLOT, flag);
    }
};
}  // namespace attn90

// Four entries per head dim (per-sequence tiles, packed-token tiles `_packed`; each also as
// `attention_int8_sm90*`, which writes the context's codes too), THREADS = 384 threads, dynamic
// shared memory Smem<D>::BYTES + BARRIERS (src/attention_sm90.rs: shared_bytes); `tma_qkv` the
// tensor map of qkv [T, 3H], boxes {W / 2, 64} in the W-byte swizzle (Lay<D>::W); `out` 16-byte
// aligned (the stores). int8: q_out [T, H] 8-byte aligned, q_scale [T], counters [4][strips]
// zero (strips: the grid's row tiles, x * z; each launch leaves them zero).
#define ATTN90_ENTRY(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_sm90_d##D(                     \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, uint32_t heads, uint32_t batch, float scale_log2) {                        \
        attn90::forward<D, false>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2);                      \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_sm90_packed_d##D(              \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, uint32_t heads, uint32_t batch, float scale_log2) {                        \
        attn90::forward<D, true>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2);                       \
    }                                                                                                         \
    /* int8 forward passes: also the context's per-token codes and scales (CtxCodes) */                      \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_int8_sm90_d##D(                \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, int8_t* __restrict__ q_out, float* __restrict__ q_scale,                    \
        uint32_t* __restrict__ counters, uint32_t heads, uint32_t batch, float scale_log2) {                  \
        const int strips = gridDim.x * gridDim.z;                                                            \
        attn90::forward<D, false>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2,                        \
                                  attn90::CtxCodes<D, false>{{q_out, q_scale, counters, strips}});            \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_int8_sm90_packed_d##D(         \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, int8_t* __restrict__ q_out, float* __restrict__ q_scale,                    \
        uint32_t* __restrict__ counters, uint32_t heads, uint32_t batch, float scale_log2) {                  \
        attn90::forward<D, true>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2,                         \
                                 attn90::CtxCodes<D, true>{{q_out, q_scale, counters, (int)gridDim.x}});      \
    }
ATTN90_ENTRY(16)
ATTN90_ENTRY(32)
ATTN90_ENTRY(48)
ATTN90_ENTRY(64)
ATTN90_ENTRY(80)
ATTN90_ENTRY(96)
ATTN90_ENTRY(112)
ATTN90_ENTRY(128)
