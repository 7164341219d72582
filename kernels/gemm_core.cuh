// The tensor-core GEMM core shared by gemm_int8.cu and gemm_f16.cu.
//
// C[M,N] = A[M,K] . W[N,K]^T (W in PyTorch Linear layout, both operands K-contiguous).
// Block tile 64x64, 4 warps in 2x2, warp tile 32x32; K is staged 64 BYTES at a time (64 int8 or
// 32 fp16), so both element types share one shared-memory layout: rows of 64 bytes = 4 chunks
// of 16 bytes. A k-step is 32 bytes (mma m16n8k32.s8 or m16n8k16.f16): 2 chunks per row.
//
// Pipeline: STAGES-deep cp.async ring, one __syncthreads per k-tile. Tail rows (m >= M, n >= N)
// and tail chunks (k >= K) are zero-filled by cp.async with src-size 0 (nothing is read).
//
// Bank conflicts: chunk c of row r is stored at chunk c ^ ((r >> 1) & 3). An 8x8 ldmatrix
// matrix reads 8 consecutive rows of one logical chunk; rows r and r+1 sit 64 bytes apart and
// the XOR spreads the 4 row pairs over the 4 chunk slots, so the 8 addresses cover all 32 banks.
// cp.async writes (8 lanes = 2 whole rows) are conflict-free too.
//
// Epilogue: accumulators go through shared memory (stride 72 words: conflict-free 64-bit
// writes) and leave as 8-byte vectors per thread, 16 threads per 128-byte output row segment,
// so residual/bias reads and output writes are fully coalesced.
#pragma once
#include "common.cuh"

namespace gemm {
constexpr int BM = 64, BN = 64, BKB = 64, STAGES = 3, THREADS = 128;
constexpr int TILE = BM * BKB;                       // bytes of one operand tile
constexpr int SMEM = 2 * STAGES * TILE;              // 24 KiB
constexpr int EPI_LD = BN + 8;                       // epilogue row stride in words
static_assert(BM * EPI_LD * 4 <= SMEM, "epilogue staging must fit the pipeline buffers");

enum Epilogue : uint32_t { EPI_NONE = 0, EPI_GELU = 1, EPI_RESIDUAL = 2, EPI_TANH = 3 };

FB_DEVICE uint32_t swz(int row, int chunk) { return row * BKB + ((chunk ^ ((row >> 1) & 3)) << 4); }

// Issues the cp.async copies of k-tile `kt` (A rows m0.., W rows n0..) into one stage.
FB_DEVICE void load_tile(uint32_t sA, uint32_t sB, const char* A, const char* W, int M, int N, int Kb,
                         int m0, int n0, int kt, int tid) {
#pragma unroll
    for (int i = 0; i < (BM * BKB / 16) / THREADS; i++) {
        const int c = tid + i * THREADS, row = c >> 2, ch = c & 3;
        const int kb = kt * BKB + ch * 16;
        const bool kok = kb < Kb;
        const int gm = m0 + row, gn = n0 + row;
        const bool aok = kok && gm < M, bok = kok && gn < N;
        // clamp the address to a valid one even when nothing is read
        const char* a = A + (size_t)(aok ? gm : 0) * Kb + (aok ? kb : 0);
        const char* w = W + (size_t)(bok ? gn : 0) * Kb + (bok ? kb : 0);
        cp_async16(sA + swz(row, ch), a, aok ? 16 : 0);
        cp_async16(sB + swz(row, ch), w, bok ? 16 : 0);
    }
}

// The main loop: acc[mi][ni][4] of the warp's 32x32 tile (2 m16 x 4 n8 mma tiles).
template <bool INT8, typename Acc>
FB_DEVICE void mainloop(Acc (&acc)[2][4][4], char* smem, const char* A, const char* W, int M, int N,
                        int Kb, int m0, int n0) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    const uint32_t s0 = smem_u32(smem);
    const int KT = (Kb + BKB - 1) / BKB;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[mi][ni][j] = 0;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < KT) load_tile(s0 + s * TILE, s0 + (STAGES + s) * TILE, A, W, M, N, Kb, m0, n0, s, tid);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<STAGES - 2>();
        // k-tile kt has landed for every thread, and every warp is done with k-tile kt-1,
        // whose stage the prefetch below overwrites.
        __syncthreads();
        const int pf = kt + STAGES - 1;
        if (pf < KT) {
            const int ps = pf % STAGES;
            load_tile(s0 + ps * TILE, s0 + (STAGES + ps) * TILE, A, W, M, N, Kb, m0, n0, pf, tid);
        }
        cp_async_commit();
        const int st = kt % STAGES;
        const uint32_t sA = s0 + st * TILE, sB = s0 + (STAGES + st) * TILE;
#pragma unroll
        for (int ks = 0; ks < BKB / 32; ks++) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
                ldmatrix_x4(a[mi][0], a[mi][1], a[mi][2], a[mi][3],
                            sA + swz(wm + mi * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
            for (int p = 0; p < 2; p++)
                ldmatrix_x4(b[2 * p][0], b[2 * p][1], b[2 * p + 1][0], b[2 * p + 1][1],
                            sB + swz(wn + p * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
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
template <typename Acc>
FB_DEVICE void stage_acc(const Acc (&acc)[2][4][4], uint32_t* st) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const uint32_t* w = reinterpret_cast<const uint32_t*>(acc[mi][ni]);
            const int r = wm + mi * 16 + g, c = wn + ni * 8 + 2 * t;
            st_shared_v2(smem_u32(&st[r * EPI_LD + c]), w[0], w[1]);
            st_shared_v2(smem_u32(&st[(r + 8) * EPI_LD + c]), w[2], w[3]);
        }
    __syncthreads();
}

// Elementwise epilogue on one value (f32), shared with the simple kernels.
FB_DEVICE float epilogue(float v, const __half* bias, const __half* residual, uint32_t epi, int m, int n, int N) {
    if (bias) v += __half2float(bias[n]);
    if (epi == EPI_GELU) v = gelu_erf(v);
    else if (epi == EPI_TANH) v = tanhf(v);
    else if (epi == EPI_RESIDUAL) v += __half2float(residual[(size_t)m * N + n]);
    return v;
}

// Vectorised epilogue: 4 consecutive outputs per thread per step, 16 threads per 64-column row
// segment. A thread's columns are the same in every step (THREADS % 16 == 0), so its w_scale
// (one float4) and bias (one 8-byte vector) are read once; a_scale once per row.
// INT8: staged words are s32 accumulators, v = (float)acc * a_scale[m] * w_scale[n];
// otherwise they are f32 sums. Then + bias, then the epilogue op, then one fp16 rounding.
template <bool INT8>
FB_DEVICE void store_tile(const uint32_t* st, const float* a_scale, const float* w_scale, const __half* bias,
                          const __half* residual, uint32_t epi, __half* C, int M, int N, int m0, int n0) {
    const int c = (threadIdx.x & 15) * 4, gn = n0 + c;
    if (gn >= N) return;  // no barrier follows
    float4 ws = make_float4(1.f, 1.f, 1.f, 1.f);
    if (INT8) ws = *reinterpret_cast<const float4*>(w_scale + gn);
    float bv[4] = {0.f, 0.f, 0.f, 0.f};
    if (bias) {
        const uint2 b = *reinterpret_cast<const uint2*>(bias + gn);
        const float2 b0 = __half22float2(*reinterpret_cast<const __half2*>(&b.x));
        const float2 b1 = __half22float2(*reinterpret_cast<const __half2*>(&b.y));
        bv[0] = b0.x; bv[1] = b0.y; bv[2] = b1.x; bv[3] = b1.y;
    }
#pragma unroll 2
    for (int r = threadIdx.x >> 4; r < BM; r += THREADS / 16) {
        const int gm = m0 + r;
        if (gm >= M) break;
        const uint4 w = *reinterpret_cast<const uint4*>(&st[r * EPI_LD + c]);
        float v[4];
        if (INT8) {
            const float as = a_scale[gm];
            v[0] = (float)(int)w.x * as * ws.x;
            v[1] = (float)(int)w.y * as * ws.y;
            v[2] = (float)(int)w.z * as * ws.z;
            v[3] = (float)(int)w.w * as * ws.w;
        } else {
            v[0] = __uint_as_float(w.x);
            v[1] = __uint_as_float(w.y);
            v[2] = __uint_as_float(w.z);
            v[3] = __uint_as_float(w.w);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] += bv[j];
        if (epi == EPI_GELU) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = gelu_erf(v[j]);
        } else if (epi == EPI_TANH) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = tanhf(v[j]);
        } else if (epi == EPI_RESIDUAL) {
            const uint2 q = *reinterpret_cast<const uint2*>(residual + (size_t)gm * N + gn);
            const float2 r0 = __half22float2(*reinterpret_cast<const __half2*>(&q.x));
            const float2 r1 = __half22float2(*reinterpret_cast<const __half2*>(&q.y));
            v[0] += r0.x; v[1] += r0.y; v[2] += r1.x; v[3] += r1.y;
        }
        *reinterpret_cast<uint2*>(C + (size_t)gm * N + gn) = make_uint2(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]));
    }
}
}  // namespace gemm
