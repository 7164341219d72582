// The tensor-core GEMM core shared by gemm_int8.cu and gemm_f16.cu.
//
// C[M,N] = A[M,K] . W[N,K]^T (W in PyTorch Linear layout, both operands K-contiguous).
// Four tile configurations (Cfg below), chosen by the host's wave/L2 model (GemmPlan in
// src/kernels/gemm_plan.rs), with or without a K split:
//   Small: block 64x64, 4 warps (2x2), warp tile 32x32, 24 KiB shared    (many small grids)
//   Large: block 128x128, 8 warps (2x4), warp tile 64x32, 48 KiB pipeline + 68 KiB epilogue
//          staging (dynamic shared), half the L2->SM traffic per MAC of Small.
//   Narrow: block 32x64, 4 warps (1x4), warp tile 32x16, 18 KiB shared (M of a few strips)
//   NarrowWide: block 32x128, 4 warps (1x4), warp tile 32x32, 30 KiB shared
// K is staged 64 BYTES at a time (64 int8 or 32 fp16), so both element types share one
// shared-memory layout: rows of 64 bytes = 4 chunks of 16 bytes. A k-step is 32 bytes (mma
// m16n8k32.s8 or m16n8k16.f16): 2 chunks per row.
//
// Pipeline: STAGES-deep cp.async ring, one __syncthreads per k-tile, over a range of k-tiles
// (K chunks and split-K: see the end of this file). Tail rows (m >= M, n >= N)
// and tail chunks (k >= K) are zero-filled by cp.async with src-size 0 (nothing is read).
//
// Bank conflicts: chunk c of row r is stored at chunk c ^ ((r >> 1) & 3). An 8x8 ldmatrix
// matrix reads 8 consecutive rows of one logical chunk; rows r and r+1 sit 64 bytes apart and
// the XOR spreads the 4 row pairs over the 4 chunk slots, so the 8 addresses cover all 32 banks.
// cp.async writes (8 lanes = 2 whole rows) are conflict-free too.
//
// Epilogue: accumulators go through shared memory (stride BN+8 words: conflict-free 64-bit
// writes) and leave as 8-byte vectors per thread, BN/4 threads per output row segment, so
// residual/bias reads and output writes are fully coalesced.
#pragma once
#include "codes.cuh"
#include "common.cuh"
#include "ln_fused.cuh"

namespace gemm {
constexpr int BKB = 64, STAGES = 3;

template <int BM_, int BN_, int WM_, int WN_>
struct Cfg {
    static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_;
    static constexpr int WARPS_N = BN / WN, WARPS = (BM / WM) * WARPS_N, THREADS = WARPS * 32;
    static constexpr int MI = WM / 16, NI = WN / 8;                 // mma tiles per warp
    static constexpr int TILE_A = BM * BKB, TILE_B = BN * BKB;      // bytes per stage
    static constexpr int PIPE = STAGES * (TILE_A + TILE_B);
    static constexpr int EPI_LD = BN + 8;                           // staging stride (words)
    static constexpr int EPI = BM * EPI_LD * 4;
    static constexpr int SMEM = PIPE > EPI ? PIPE : EPI;            // dynamic shared bytes
    static_assert((BM * BKB / 16) % THREADS == 0 && (BN * BKB / 16) % THREADS == 0, "load split");
    static_assert(THREADS % (BN / 4) == 0, "epilogue: fixed columns per thread");
    static_assert(NI % 2 == 0, "B fragments come in pairs of n8 tiles");
};
using Small = Cfg<64, 64, 32, 32>;
using Large = Cfg<128, 128, 64, 32>;
// 32-row strips for few tokens: twice the blocks of Small on a small grid, and half the rows in
// a fused layernorm's serial tail (the strip's last tile normalises it alone).
using Narrow = Cfg<32, 64, 32, 16>;
// 32-row strips with Small's warp tile: half Narrow's A re-reads (a weight-streaming GEMM whose
// A is re-read per column block) for the same short layernorm tail.
using NarrowWide = Cfg<32, 128, 32, 32>;

// Epilogue codes: codes.cuh.

// The activation of epilogue `epi` on one value (identity for NONE and RESIDUAL).
FB_DEVICE float activate(float v, uint32_t epi) {
    switch (epi) {
        case EPI_GELU: return gelu_erf(v);
        case EPI_TANH: return tanhf(v);
        case EPI_GELU_TANH: return gelu_tanh(v);
        case EPI_RELU: return fmaxf(v, 0.f);
        case EPI_SILU: return silu(v);
        default: return v;
    }
}

FB_DEVICE uint32_t swz(int row, int chunk) { return row * BKB + ((chunk ^ ((row >> 1) & 3)) << 4); }

// cp.async of k-tile `kt` of `ROWS` rows starting at r0 (rows >= R zero-filled) into one stage.
template <int ROWS, int THREADS>
FB_DEVICE void load_rows(uint32_t s, const char* X, int R, int Kb, int r0, int kt, int tid) {
#pragma unroll
    for (int i = 0; i < (ROWS * BKB / 16) / THREADS; i++) {
        const int c = tid + i * THREADS, row = c >> 2, ch = c & 3;
        const int kb = kt * BKB + ch * 16;
        const int gr = r0 + row;
        const bool ok = kb < Kb && gr < R;
        // clamp the address to a valid one even when nothing is read
        cp_async16(s + swz(row, ch), X + (size_t)(ok ? gr : 0) * Kb + (ok ? kb : 0), ok ? 16 : 0);
    }
}

// The main loop over k-tiles [kt0, kt1): acc[mi][ni][4] of the warp's WM x WN tile, from zero.
template <class C, bool INT8, typename Acc>
FB_DEVICE void mainloop(Acc (&acc)[C::MI][C::NI][4], char* smem, const char* A, const char* W, int M, int N,
                        int Kb, int m0, int n0, int kt0, int kt1) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp / C::WARPS_N) * C::WM, wn = (warp % C::WARPS_N) * C::WN;
    const uint32_t s0 = smem_u32(smem);
    auto sa = [&](int st) { return s0 + st * C::TILE_A; };
    auto sb = [&](int st) { return s0 + STAGES * C::TILE_A + st * C::TILE_B; };
    auto load = [&](int st, int kt) {
        load_rows<C::BM, C::THREADS>(sa(st), A, M, Kb, m0, kt, tid);
        load_rows<C::BN, C::THREADS>(sb(st), W, N, Kb, n0, kt, tid);
    };
#pragma unroll
    for (int mi = 0; mi < C::MI; mi++)
#pragma unroll
        for (int ni = 0; ni < C::NI; ni++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[mi][ni][j] = 0;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (kt0 + s < kt1) load(s, kt0 + s);
        cp_async_commit();
    }
    for (int kt = kt0; kt < kt1; kt++) {
        cp_async_wait<STAGES - 2>();
        // k-tile kt has landed for every thread, and every warp is done with k-tile kt-1,
        // whose stage the prefetch below overwrites.
        __syncthreads();
        const int pf = kt + STAGES - 1;
        if (pf < kt1) load((pf - kt0) % STAGES, pf);
        cp_async_commit();
        const int st = (kt - kt0) % STAGES;
        const uint32_t sA = sa(st), sB = sb(st);
#pragma unroll
        for (int ks = 0; ks < BKB / 32; ks++) {
            uint32_t a[C::MI][4], b[C::NI][2];
#pragma unroll
            for (int mi = 0; mi < C::MI; mi++)
                ldmatrix_x4(a[mi][0], a[mi][1], a[mi][2], a[mi][3],
                            sA + swz(wm + mi * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
            for (int p = 0; p < C::NI / 2; p++)
                ldmatrix_x4(b[2 * p][0], b[2 * p][1], b[2 * p + 1][0], b[2 * p + 1][1],
                            sB + swz(wn + p * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
            for (int mi = 0; mi < C::MI; mi++)
#pragma unroll
                for (int ni = 0; ni < C::NI; ni++) {
                    if constexpr (INT8)
                        mma_s8_16832(reinterpret_cast<int*>(acc[mi][ni]), a[mi], b[ni]);
                    else
                        mma_f16_16816(reinterpret_cast<float*>(acc[mi][ni]), a[mi], b[ni]);
                }
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // all warps done reading the pipeline buffers: the epilogue reuses them
}

// Writes the warp's accumulators (as raw 32-bit words) into the [BM][EPI_LD] staging tile.
template <class C, typename Acc>
FB_DEVICE void stage_acc(const Acc (&acc)[C::MI][C::NI][4], uint32_t* st) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = (warp / C::WARPS_N) * C::WM, wn = (warp % C::WARPS_N) * C::WN, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < C::MI; mi++)
#pragma unroll
        for (int ni = 0; ni < C::NI; ni++) {
            const uint32_t* w = reinterpret_cast<const uint32_t*>(acc[mi][ni]);
            const int r = wm + mi * 16 + g, c = wn + ni * 8 + 2 * t;
            st_shared_v2(smem_u32(&st[r * C::EPI_LD + c]), w[0], w[1]);
            st_shared_v2(smem_u32(&st[(r + 8) * C::EPI_LD + c]), w[2], w[3]);
        }
    __syncthreads();
}

// Elementwise epilogue on one value (f32), shared with the simple kernels.
FB_DEVICE float epilogue(float v, const __half* bias, const __half* residual, uint32_t epi, int m, int n, int N) {
    if (bias) v += __half2float(bias[n]);
    if (epi == EPI_RESIDUAL) return v + __half2float(residual[(size_t)m * N + n]);
    return activate(v, epi);
}

// Vectorised epilogue: 4 consecutive outputs per thread per step, BN/4 threads per row segment.
// A thread's columns are the same in every step (THREADS % (BN/4) == 0), so its w_scale (one
// float4) and bias (one 8-byte vector) are read once; a_scale once per row.
// INT8: staged words are s32 accumulators, v = (float)acc * a_scale[m] * w_scale[n];
// with asymmetric activations (a_zero non-null) acc - a_zero[m] * w_sum[n] first, exact in
// int32 (|acc| <= K * 128 * 127 and |zero * w_sum| <= 128 * K * 127, so K <= 65536 is safe);
// otherwise they are f32 sums. Then + bias, then the epilogue op, then one fp16 rounding.
template <class C, bool INT8>
FB_DEVICE void store_tile(const uint32_t* st, const float* a_scale, const float* w_scale, const int* a_zero,
                          const int* w_sum, const __half* bias, const __half* residual, uint32_t epi, __half* Cout,
                          int M, int N, int m0, int n0) {
    constexpr int TPR = C::BN / 4;  // threads per row
    const int c = (threadIdx.x % TPR) * 4, gn = n0 + c;
    if (gn >= N) return;  // no barrier follows
    float4 ws = make_float4(1.f, 1.f, 1.f, 1.f);
    if (INT8) ws = *reinterpret_cast<const float4*>(w_scale + gn);
    int4 wsum = make_int4(0, 0, 0, 0);
    if (INT8 && a_zero) wsum = *reinterpret_cast<const int4*>(w_sum + gn);
    float bv[4] = {0.f, 0.f, 0.f, 0.f};
    if (bias) {
        const uint2 b = *reinterpret_cast<const uint2*>(bias + gn);
        const float2 b0 = __half22float2(*reinterpret_cast<const __half2*>(&b.x));
        const float2 b1 = __half22float2(*reinterpret_cast<const __half2*>(&b.y));
        bv[0] = b0.x; bv[1] = b0.y; bv[2] = b1.x; bv[3] = b1.y;
    }
#pragma unroll 2
    for (int r = threadIdx.x / TPR; r < C::BM; r += C::THREADS / TPR) {
        const int gm = m0 + r;
        if (gm >= M) break;
        const uint4 w = *reinterpret_cast<const uint4*>(&st[r * C::EPI_LD + c]);
        float v[4];
        if (INT8) {
            const float as = a_scale[gm];
            const int z = a_zero ? a_zero[gm] : 0;
            v[0] = (float)((int)w.x - z * wsum.x) * as * ws.x;
            v[1] = (float)((int)w.y - z * wsum.y) * as * ws.y;
            v[2] = (float)((int)w.z - z * wsum.z) * as * ws.z;
            v[3] = (float)((int)w.w - z * wsum.w) * as * ws.w;
        } else {
            v[0] = __uint_as_float(w.x);
            v[1] = __uint_as_float(w.y);
            v[2] = __uint_as_float(w.z);
            v[3] = __uint_as_float(w.w);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] += bv[j];
        // one loop per activation (a switch inside the unrolled loop costs sm_90 a spill)
        if (epi == EPI_GELU) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = gelu_erf(v[j]);
        } else if (epi == EPI_TANH) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = tanhf(v[j]);
        } else if (epi == EPI_GELU_TANH) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = gelu_tanh(v[j]);
        } else if (epi == EPI_RELU) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = fmaxf(v[j], 0.f);
        } else if (epi == EPI_SILU) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = silu(v[j]);
        } else if (epi == EPI_RESIDUAL) {
            const uint2 q = *reinterpret_cast<const uint2*>(residual + (size_t)gm * N + gn);
            const float2 r0 = __half22float2(*reinterpret_cast<const __half2*>(&q.x));
            const float2 r1 = __half22float2(*reinterpret_cast<const __half2*>(&q.y));
            v[0] += r0.x; v[1] += r0.y; v[2] += r1.x; v[3] += r1.y;
        }
        *reinterpret_cast<uint2*>(Cout + (size_t)gm * N + gn) = make_uint2(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]));
    }
}

// Raw 32-bit accumulator words out (int32 bit-exact path), 16 bytes per thread per step.
template <class C>
FB_DEVICE void store_raw(const uint32_t* st, int32_t* Cout, int M, int N, int m0, int n0) {
    for (int i = threadIdx.x; i < C::BM * C::BN / 4; i += C::THREADS) {
        const int r = i / (C::BN / 4), c = (i % (C::BN / 4)) * 4, gm = m0 + r, gn = n0 + c;
        if (gm < M && gn < N)
            *reinterpret_cast<uint4*>(Cout + (size_t)gm * N + gn) = *reinterpret_cast<const uint4*>(&st[r * C::EPI_LD + c]);
    }
}
// ---- K chunks and split-K ----
// K's k-tiles are cut into chunks, a function of K alone (mirrored by `k_chunks` in
// src/kernels/gemm_int8.rs): at most MAX_SPLIT chunks of at least MIN_CHUNK_TILES k-tiles.
// fp16 (f32 accumulation, not associative) always sums in this order, whatever the launch:
// each chunk from fresh zero accumulators, then the chunk partials in chunk order
// (p0 + p1) + p2 ... — in registers when one block walks all of K (f16_gemm_chunked), through
// the workspace when blocks split K (split_k_reduce) — so a row's result does not depend on the
// split count, the tile, or the other rows of the batch. int32 sums are exact in any order.
constexpr int MAX_SPLIT = 4, MIN_CHUNK_TILES = 4;
FB_DEVICE int chunk_tiles(int KT) {
    const int c = (KT + MAX_SPLIT - 1) / MAX_SPLIT;
    return c > MIN_CHUNK_TILES ? c : MIN_CHUNK_TILES;
}

// fp16 over all of K in chunk order: tot = p0, then tot += p_c (see above).
template <class C>
FB_DEVICE void f16_chunked(float (&tot)[C::MI][C::NI][4], char* smem, const char* A, const char* W, int M, int N,
                           int Kb, int m0, int n0) {
    const int KT = (Kb + BKB - 1) / BKB, CT = chunk_tiles(KT);
    mainloop<C, false>(tot, smem, A, W, M, N, Kb, m0, n0, 0, CT < KT ? CT : KT);
    for (int kt0 = CT; kt0 < KT; kt0 += CT) {
        float acc[C::MI][C::NI][4];
        mainloop<C, false>(acc, smem, A, W, M, N, Kb, m0, n0, kt0, kt0 + CT < KT ? kt0 + CT : KT);
#pragma unroll
        for (int mi = 0; mi < C::MI; mi++)
#pragma unroll
            for (int ni = 0; ni < C::NI; ni++)
#pragma unroll
                for (int j = 0; j < 4; j++) tot[mi][ni][j] += acc[mi][ni][j];
    }
}

// Split-K in one launch: block z of gridDim.z = chunk count computes chunk z of its output tile.
// Every block stages its accumulators, writes them (rows < M) to its slot of `partials`
// ([tile][z][BM][BN] words), fences, and counts itself in with an atomic on counters[tile]; the
// last to arrive reads the slots in order z = 0..S-1, sums them (f32 or s32 adds: the chunk
// order above) into the staging tile, resets the counter to 0 with an atomic exchange (the next launch, or the next
// replay of a CUDA graph, starts from zero; the buffer is zeroed once at allocation) and
// returns true: it runs the epilogue. Partials bypass L1 (ld/st.cg): other blocks wrote them.
template <class C, bool INT8, typename Acc>
FB_DEVICE bool split_k_reduce(const Acc (&acc)[C::MI][C::NI][4], uint32_t* st, uint32_t* partials,
                              uint32_t* counters, int M, int m0) {
    constexpr int TILE = C::BM * C::BN, V = C::BN / 4;  // words per tile, uint4 per row
    stage_acc<C>(acc, st);
    const int S = gridDim.z, tile = blockIdx.y * gridDim.x + blockIdx.x;
    const int rows = M - m0 < C::BM ? M - m0 : C::BM;
    uint32_t* slots = partials + (size_t)tile * S * TILE;
    uint4* mine = reinterpret_cast<uint4*>(slots + (size_t)blockIdx.z * TILE);
    for (int i = threadIdx.x; i < rows * V; i += C::THREADS) {
        const int r = i / V, c = (i % V) * 4;
        __stcg(&mine[i], *reinterpret_cast<const uint4*>(&st[r * C::EPI_LD + c]));
    }
    __threadfence();  // release: this block's partial is visible before its arrival is
    // every thread's part of the partial is stored before thread 0 counts the block in (without
    // this barrier another block could see the count complete while this block's other warps
    // are still storing: the emulator, running blocks in parallel, caught exactly that)
    __syncthreads();
    const int last = __syncthreads_or(threadIdx.x == 0 && atomicAdd(&counters[tile], 1u) == (uint32_t)(S - 1));
    if (!last) return false;
    __threadfence();  // acquire: the other blocks' partials, after their arrivals
    for (int i = threadIdx.x; i < rows * V; i += C::THREADS) {
        const int r = i / V, c = (i % V) * 4;
        uint4 sum = __ldcg(reinterpret_cast<const uint4*>(slots) + i);
        for (int z = 1; z < S; z++) {
            const uint4 p = __ldcg(reinterpret_cast<const uint4*>(slots + (size_t)z * TILE) + i);
            if constexpr (INT8) {
                sum.x = (uint32_t)((int)sum.x + (int)p.x);
                sum.y = (uint32_t)((int)sum.y + (int)p.y);
                sum.z = (uint32_t)((int)sum.z + (int)p.z);
                sum.w = (uint32_t)((int)sum.w + (int)p.w);
            } else {
                sum.x = __float_as_uint(__uint_as_float(sum.x) + __uint_as_float(p.x));
                sum.y = __float_as_uint(__uint_as_float(sum.y) + __uint_as_float(p.y));
                sum.z = __float_as_uint(__uint_as_float(sum.z) + __uint_as_float(p.z));
                sum.w = __float_as_uint(__uint_as_float(sum.w) + __uint_as_float(p.w));
            }
        }
        *reinterpret_cast<uint4*>(&st[r * C::EPI_LD + c]) = sum;
    }
    if (threadIdx.x == 0) atomicExch(&counters[tile], 0u);  // (an atomic: no plain store races a block's read)
    __syncthreads();
    return true;
}
// After this tile's y is stored: arrival on the row strip; the last tile runs its layernorm.
template <class C>
FB_DEVICE void ln_strip_epilogue(const __half* y, const LnArgs& p, int M, int N, int m0) {
    __threadfence();  // release: this tile's y before its arrival
    __syncthreads();  // every thread's y stored before thread 0 counts the tile in
    const int last =
        __syncthreads_or(threadIdx.x == 0 && atomicAdd(&p.strips[blockIdx.y], 1u) == gridDim.x - 1);
    if (!last) return;
    __threadfence();  // acquire: the strip's other tiles
    const int end = m0 + C::BM < M ? m0 + C::BM : M;
    const int first = m0 + (threadIdx.x >> 5);
    if (first >= end) return;  // (no barrier follows; the counter reset is thread 0's, whose warp has rows)
    LnParams q;
    ln_load_params(q, p, N);
    for (int row = first; row < end; row += C::WARPS) ln_row(y, p, q, row, N);
    if (threadIdx.x == 0) atomicExch(&p.strips[blockIdx.y], 0u);
}
}  // namespace gemm
