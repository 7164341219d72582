// Fused multi-head self-attention forward over packed variable-length sequences
// (FlashAttention-2 style). No padding: sequence b owns tokens cu_seqlens[b] .. cu_seqlens[b+1].
//
// Input qkv [T, 3H] fp16, read in place: q | k | v, head h at columns h*D .. h*D+D of each part.
// Output out [T, H] fp16 (head h at columns h*D..). H = heads * D.
//
// Head dim D: any multiple of 16 up to 128.
// Grid (ceil(max_seqlen / BM), heads, batch), 32 * WARPS threads. Block = BM = 16 * WARPS query
// rows of one (sequence, head); each warp owns 16 query rows. Blocks past their sequence's end
// exit at once. Two geometries (the host picks one per batch, src/kernels/attention.rs
// `geometry`): 4 warps / 64 rows, and for batches whose longest sequence fits 32 tokens 2 warps /
// 32 rows with 32-key tiles (`_short`), so a 20-token text pads to 32x32 instead of 64x64.
// K/V tiles of BN keys stream through shared memory by cp.async, double-buffered, K and V in
// separate groups (K(j+1) loads during this tile's softmax and P V, V(j+1) during P V; V(j)
// may still be landing while S = Q K(j)^T is computed). S = Q K^T and O += P V run on tensor cores (mma m16n8k16,
// f32 accumulation); the softmax is online in registers in base 2 (scale * log2(e) folded into
// one multiply, ex2.approx), P is re-packed from the S accumulators straight into A fragments.
// The score matrix never leaves registers. Shared rows are XOR-swizzled by 16-byte chunk, so
// ldmatrix (plain for Q, K; .trans for V), cp.async and the output staging are conflict-free.
// The output tile is staged in the Q buffer and leaves as 16-byte stores of valid rows only.
#include "common.cuh"

namespace attn {

// Byte offset of 16-byte chunk `ch` of row `row` in a tile whose rows hold NCH chunks
// (NCH = D / 8, even). XOR swizzle inside aligned groups of G chunks, G the largest power of two
// dividing NCH (capped at 8), so the XOR never leaves the row: consecutive rows start in
// 8 / G different bank groups (stride NCH = G * odd, or a multiple of 8), and XORing the low
// bits with row / (8 / G) separates the rows that would share one. So the 8 aligned rows an
// ldmatrix phase reads hit 8 different bank groups, and 8 consecutive chunks of the row-major
// order (cp.async, output stores) stay a permutation of 8 consecutive positions: no conflicts
// for every D that is a multiple of 16. (D = 32, 64, 128: the classic swizzles.)
template <int NCH>
FB_DEVICE uint32_t swz(int row, int ch) {
    constexpr int G = NCH % 8 == 0 ? 8 : NCH % 4 == 0 ? 4 : 2;
    const int x = ch ^ ((row / (8 / G)) & (G - 1));
    return (uint32_t)((row * NCH + x) << 4);
}

// cp.async of `rows` rows (D halves each) starting at token `tok0`; rows at or past `valid`
// are zero-filled without reading. THREADS: the block size.
template <int D, int THREADS>
FB_DEVICE void load_rows(uint32_t dst, const __half* src, size_t ld, int rows, int valid) {
    constexpr int NCH = D / 8;
    for (int c = threadIdx.x; c < rows * NCH; c += THREADS) {
        const int r = c / NCH, ch = c % NCH;
        const bool ok = r < valid;
        cp_async16(dst + swz<NCH>(r, ch), src + (size_t)(ok ? r : 0) * ld + ch * 8, ok ? 16 : 0);
    }
}

template <int D, int BN, int WARPS>
FB_DEVICE void forward(const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens,
                       __half* __restrict__ out, uint32_t heads, float scale_log2) {
    constexpr int BM = 16 * WARPS, THREADS = 32 * WARPS;
    constexpr int NCH = D / 8, KD = D / 16, NT = BN / 8, ND = D / 8;
    extern __shared__ __align__(128) char smem[];
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM;
    const int start = cu_seqlens[b], len = (int)cu_seqlens[b + 1] - start;
    if (q0 >= len) return;  // whole block: before any barrier
    const int H = heads * D;
    const size_t ld = 3 * (size_t)H;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

    constexpr int ROW = D * 2;  // bytes per shared row
    const uint32_t sQ = smem_u32(smem);
    const uint32_t sKV = sQ + BM * ROW;  // [stage][K|V][BN][row]
    auto sK = [&](int s) { return sKV + (2 * s) * BN * ROW; };
    auto sV = [&](int s) { return sKV + (2 * s + 1) * BN * ROW; };
    const __half* qbase = qkv + (size_t)start * ld + h * D;
    const __half* kbase = qbase + H;
    const __half* vbase = qbase + 2 * H;

    // cp.async groups, in commit order: {Q, K0}, {V0}, then per tile j: {K(j+1)}, {V(j+1)}.
    // K and V travel in separate groups so V(j) can still be landing while S = Q K(j)^T runs.
    const int ntiles = (len + BN - 1) / BN;
    load_rows<D, THREADS>(sQ, qbase + (size_t)q0 * ld, ld, BM, len - q0);
    load_rows<D, THREADS>(sK(0), kbase, ld, BN, len);
    cp_async_commit();
    load_rows<D, THREADS>(sV(0), vbase, ld, BN, len);
    cp_async_commit();

    uint32_t qf[KD][4];
    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g and g+8

    for (int j = 0; j < ntiles; j++) {
        cp_async_wait<1>();  // K(j) (and Q) landed; V(j) may still be in flight
        __syncthreads();     // ... for every thread; and every warp is done with tile j-1
        if (j == 0) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++)
                ldmatrix_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3],
                            sQ + swz<NCH>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
        }
        const int n1 = (j + 1) * BN, s1 = (j + 1) & 1;
        if (j + 1 < ntiles) load_rows<D, THREADS>(sK(s1), kbase + (size_t)n1 * ld, ld, BN, len - n1);
        cp_async_commit();
        const int s = j & 1, n0 = j * BN;

        // S = Q K^T (16 x BN per warp)
        float sc[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int p = 0; p < NT / 2; p++) {
                uint32_t b0[2], b1[2];
                ldmatrix_x4(b0[0], b0[1], b1[0], b1[1],
                            sK(s) + swz<NCH>(p * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
                mma_f16_16816(sc[2 * p], qf[kk], b0);
                mma_f16_16816(sc[2 * p + 1], qf[kk], b1);
            }

        // online softmax (base 2), masking keys past the sequence end
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            const int c = n0 + i * 8 + 2 * t;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const bool ok = c + (e & 1) < len;
                sc[i][e] = ok ? sc[i][e] * scale_log2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(sc[i][0], sc[i][1]));
            mx1 = fmaxf(mx1, fmaxf(sc[i][2], sc[i][3]));
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);  // finite: tile has a valid key
        const float a0 = fast_exp2(m0 - mn0), a1 = fast_exp2(m1 - mn1);
        m0 = mn0;
        m1 = mn1;
        float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            sc[i][0] = fast_exp2(sc[i][0] - mn0);
            sc[i][1] = fast_exp2(sc[i][1] - mn0);
            sc[i][2] = fast_exp2(sc[i][2] - mn1);
            sc[i][3] = fast_exp2(sc[i][3] - mn1);
            rs0 += sc[i][0] + sc[i][1];
            rs1 += sc[i][2] + sc[i][3];
        }
        l0 = l0 * a0 + rs0;
        l1 = l1 * a1 + rs1;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            o[i][0] *= a0;
            o[i][1] *= a0;
            o[i][2] *= a1;
            o[i][3] *= a1;
        }

        cp_async_wait<1>();  // V(j) landed (only K(j+1) may be pending)
        __syncthreads();
        if (j + 1 < ntiles) load_rows<D, THREADS>(sV(s1), vbase + (size_t)n1 * ld, ld, BN, len - n1);
        cp_async_commit();

        // O += P V: P's accumulator layout is the A fragment layout (two n8 tiles = one k16)
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const uint32_t pa[4] = {pack_half2(sc[2 * kk][0], sc[2 * kk][1]), pack_half2(sc[2 * kk][2], sc[2 * kk][3]),
                                    pack_half2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                                    pack_half2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t b0[2], b1[2];
                ldmatrix_x4_trans(b0[0], b0[1], b1[0], b1[1],
                                  sV(s) + swz<NCH>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
                mma_f16_16816(o[2 * dp], pa, b0);
                mma_f16_16816(o[2 * dp + 1], pa, b1);
            }
        }
    }

    // normalise, stage this warp's 16 rows in its own part of the Q buffer, store valid rows
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float il0 = 1.f / l0, il1 = 1.f / l1;
    char* sq = smem;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int r = warp * 16 + g, ch = i, within = 4 * t;
        *reinterpret_cast<uint32_t*>(sq + swz<NCH>(r, ch) + within) = pack_half2(o[i][0] * il0, o[i][1] * il0);
        *reinterpret_cast<uint32_t*>(sq + swz<NCH>(r + 8, ch) + within) = pack_half2(o[i][2] * il1, o[i][3] * il1);
    }
    __syncwarp();
    for (int c = lane; c < 16 * NCH; c += 32) {
        const int r = c / NCH, ch = c % NCH, q = q0 + warp * 16 + r;
        if (q < len)
            *reinterpret_cast<uint4*>(out + (size_t)(start + q) * H + h * D + ch * 8) =
                *reinterpret_cast<const uint4*>(sq + swz<NCH>(warp * 16 + r, ch));
    }
}
}  // namespace attn

// Both geometries keep the register ceiling at 255 (65536 / (threads * min blocks)).
#define ATTN_ENTRY(D, BN)                                                                                     \
    extern "C" __global__ void __launch_bounds__(128, 2) attention_f16_d##D(                                     \
        const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,   \
        uint32_t heads, float scale_log2) {                                                                   \
        attn::forward<D, BN, 4>(qkv, cu_seqlens, out, heads, scale_log2);                                     \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(64, 4) attention_f16_short_d##D(                                \
        const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,   \
        uint32_t heads, float scale_log2) {                                                                   \
        attn::forward<D, 32, 2>(qkv, cu_seqlens, out, heads, scale_log2);                                     \
    }
// Every head dim that is a multiple of 16 up to 128, each in both geometries. Key tile sizes
// keep shared memory (Q + 2 stages of K and V) within 48 KiB: BN below for the 64-row blocks,
// 32 for the short ones ((32 + 4 * 32) * 128 * 2 = 40 KiB at D = 128); src/kernels/attention.rs
// mirrors this table (`geometry`).
ATTN_ENTRY(16, 64)
ATTN_ENTRY(32, 64)
ATTN_ENTRY(48, 64)
ATTN_ENTRY(64, 64)
ATTN_ENTRY(80, 32)
ATTN_ENTRY(96, 32)
ATTN_ENTRY(112, 32)
ATTN_ENTRY(128, 32)

// Baseline: one block per (token, head), any head_dim <= 256 (even) and seqlen <= smem.
// Scores of the token's row in shared f32 (dynamic: max_seqlen floats), exact expf softmax,
// then each thread owns output columns. Grid (tokens, heads), blockDim 128.
extern "C" __global__ void attention_f16_simple(const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens,
                                                uint32_t batch, __half* __restrict__ out, uint32_t heads,
                                                uint32_t head_dim, float scale) {
    extern __shared__ float sc[];
    __shared__ float scratch[32];
    const uint32_t t = blockIdx.x, h = blockIdx.y, H = heads * head_dim;
    uint32_t b = 0;
    while (b + 1 < batch && cu_seqlens[b + 1] <= t) b++;  // the sequence holding token t
    const uint32_t s0 = cu_seqlens[b], len = cu_seqlens[b + 1] - s0;
    const __half* q = qkv + (size_t)t * 3 * H + h * head_dim;
    float mx = -INFINITY;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
        const __half* k = qkv + (size_t)(s0 + j) * 3 * H + H + h * head_dim;
        float s = 0.f;
        for (uint32_t c = 0; c < head_dim; c++) s += __half2float(q[c]) * __half2float(k[c]);
        sc[j] = s * scale;
        mx = fmaxf(mx, sc[j]);
    }
    mx = block_max(mx, scratch);  // scores visible to all after its barrier
    float l = 0.f;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
        sc[j] = expf(sc[j] - mx);
        l += sc[j];
    }
    l = block_sum(l, scratch);
    for (uint32_t c = threadIdx.x; c < head_dim; c += blockDim.x) {
        float o = 0.f;
        for (uint32_t j = 0; j < len; j++) o += sc[j] * __half2float(qkv[(size_t)(s0 + j) * 3 * H + 2 * H + h * head_dim + c]);
        out[(size_t)t * H + h * head_dim + c] = __float2half_rn(o / l);
    }
}
