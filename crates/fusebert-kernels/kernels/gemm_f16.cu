// fp16 GEMM: C[M,N] = A_f16[M,K] . W_f16[N,K]^T + bias[n] (+ GELU, + residual or tanh), f32
// accumulation on tensor cores (mma.sync m16n8k16), fp16 out. Core and layout: gemm_core.cuh.
//
// Entries: gemm_f16 (64x64 Small tile, 128 threads), gemm_f16_l (128x128 Large tile, 256
// threads), gemm_f16_n / gemm_f16_nw (32x64 Narrow / 32x128 NarrowWide tile, 128 threads), the
// split-K gemm_f16_sk / _n_sk / _nw_sk (split over gridDim.z = the K chunk count, f32 partials
// + per-tile arrival counters in a workspace), and each of them with a layernorm of the output
// rows fused in (gemm_f16_ln, _l_ln, _sk_ln, _n_ln, _n_sk_ln, _nw_ln, _nw_sk_ln; gemm_core.cuh),
// all with dynamic shared memory = Cfg::SMEM. All sum K in the same chunk order
// (gemm_core.cuh), so their results are bit-identical. gemm_f16_simple: one thread per output,
// f32 fma, the baseline. Requirements (host-checked): K % 16 == 0, N % 16 == 0; bias may be null.
#include "gemm_core.cuh"

using namespace gemm;

template <class C, bool LN = false>
__device__ __forceinline__ void f16_gemm(const __half* A, const __half* W, const __half* bias, const __half* residual,
                                         __half* Cout, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
                                         const LnArgs* ln = nullptr) {
    extern __shared__ __align__(128) char smem[];
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    float acc[C::MI][C::NI][4];
    f16_chunked<C>(acc, smem, (const char*)A, (const char*)W, M, N, K * 2, m0, n0);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    stage_acc<C>(acc, st);
    store_tile<C, false>(st, nullptr, nullptr, nullptr, nullptr, bias, residual, epi, Cout, M, N, m0, n0);
    if constexpr (LN) ln_strip_epilogue<C>(Cout, *ln, M, N, m0);
}

// Split-K (Small, Narrow or NarrowWide tile): block z sums K chunk z; the last block of a tile
// sums the chunks in order and runs the epilogue (gemm_core.cuh: split_k_reduce).
template <class C, bool LN = false>
__device__ __forceinline__ void f16_split(const __half* A, const __half* W, const __half* bias,
                                          const __half* residual, __half* Cout, uint32_t M, uint32_t N, uint32_t K,
                                          uint32_t epi, uint32_t* partials, uint32_t* counters,
                                          const LnArgs* ln = nullptr) {
    extern __shared__ __align__(128) char smem[];
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    const int KT = (K * 2 + BKB - 1) / BKB, CT = chunk_tiles(KT), kt0 = blockIdx.z * CT;
    float acc[C::MI][C::NI][4];
    mainloop<C, false>(acc, smem, (const char*)A, (const char*)W, M, N, K * 2, m0, n0, kt0,
                       kt0 + CT < KT ? kt0 + CT : KT);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    if (!split_k_reduce<C, false>(acc, st, partials, counters, M, m0)) return;
    store_tile<C, false>(st, nullptr, nullptr, nullptr, nullptr, bias, residual, epi, Cout, M, N, m0, n0);
    if constexpr (LN) ln_strip_epilogue<C>(Cout, *ln, M, N, m0);
}


// Entries of one tile (SUFFIX names it; BOUNDS are its launch bounds): the plain GEMM and the
// GEMM with the layernorm of its rows fused in (ln_out = LN(C)).
#define GEMM_F16_ENTRIES(SUFFIX, CFG, BOUNDS)                                                                    \
    extern "C" __global__ void __launch_bounds__ BOUNDS gemm_f16##SUFFIX(                                        \
        const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,            \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi) {                                                                                          \
        f16_gemm<CFG>(A, W, bias, residual, C, M, N, K, epi);                                                    \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__ BOUNDS gemm_f16##SUFFIX##_ln(                                   \
        const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,            \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi, LN_PARAMS) {                                                                               \
        const LnArgs ln = LN_ARGS;                                                                               \
        f16_gemm<CFG, true>(A, W, bias, residual, C, M, N, K, epi, &ln);                                         \
    }

// The split-K entries of one tile: plain (_sk) and with the fused layernorm (_sk_ln).
#define GEMM_F16_SPLIT_ENTRIES(SUFFIX, CFG)                                                                      \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS) gemm_f16##SUFFIX##_sk(                            \
        const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,            \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi, uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) {                        \
        f16_split<CFG>(A, W, bias, residual, C, M, N, K, epi, partials, counters);                               \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS) gemm_f16##SUFFIX##_sk_ln(                         \
        const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,            \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi, uint32_t* __restrict__ partials, uint32_t* __restrict__ counters, LN_PARAMS) {             \
        const LnArgs ln = LN_ARGS;                                                                               \
        f16_split<CFG, true>(A, W, bias, residual, C, M, N, K, epi, partials, counters, &ln);                    \
    }

GEMM_F16_ENTRIES(, Small, (Small::THREADS))
GEMM_F16_SPLIT_ENTRIES(, Small)
// One block per SM: the chunk-order fold (a second set of 64 accumulators per thread, the
// price of batch-invariant split-K) needs ~170 registers; capped at 128 for two blocks per SM,
// ptxas spills 464 bytes. The int8 kernels (exact, no fold) keep two blocks per SM. (No split-K
// entries for this tile: GemmPlan splits the small tiles only.)
GEMM_F16_ENTRIES(_l, Large, (Large::THREADS, 1))
// The 32-row tiles (32x64 Narrow, 32x128 NarrowWide; 128 threads) for a few row strips.
GEMM_F16_ENTRIES(_n, Narrow, (Narrow::THREADS))
GEMM_F16_SPLIT_ENTRIES(_n, Narrow)
GEMM_F16_ENTRIES(_nw, NarrowWide, (NarrowWide::THREADS))
GEMM_F16_SPLIT_ENTRIES(_nw, NarrowWide)

extern "C" __global__ void gemm_f16_simple(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    const uint32_t n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const __half2* a = reinterpret_cast<const __half2*>(A + (size_t)m * K);
    const __half2* w = reinterpret_cast<const __half2*>(W + (size_t)n * K);
    float acc = 0.f;
    for (uint32_t k = 0; k < K / 2; k++) {
        const float2 x = __half22float2(a[k]), y = __half22float2(w[k]);
        acc = fmaf(x.x, y.x, acc);
        acc = fmaf(x.y, y.y, acc);
    }
    C[(size_t)m * N + n] = __float2half_rn(epilogue(acc, bias, residual, epi, m, n, N));
}
