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


extern "C" __global__ void __launch_bounds__(Small::THREADS) gemm_f16(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    f16_gemm<Small>(A, W, bias, residual, C, M, N, K, epi);
}

// One block per SM: the chunk-order fold (a second set of 64 accumulators per thread, the
// price of batch-invariant split-K) needs ~170 registers; capped at 128 for two blocks per SM,
// ptxas spills 464 bytes. The int8 kernels (exact, no fold) keep two blocks per SM.
extern "C" __global__ void __launch_bounds__(Large::THREADS, 1) gemm_f16_l(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    f16_gemm<Large>(A, W, bias, residual, C, M, N, K, epi);
}

extern "C" __global__ void __launch_bounds__(Small::THREADS) gemm_f16_sk(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) {
    f16_split<Small>(A, W, bias, residual, C, M, N, K, epi, partials, counters);
}

// Residual GEMM + layernorm of its rows (_ln: Small tile, _l_ln: Large, _sk_ln: Small split over
// K): ln_out = LN(C).
extern "C" __global__ void __launch_bounds__(Small::THREADS) gemm_f16_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_gemm<Small, true>(A, W, bias, residual, C, M, N, K, epi, &ln);
}

extern "C" __global__ void __launch_bounds__(Large::THREADS, 1) gemm_f16_l_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_gemm<Large, true>(A, W, bias, residual, C, M, N, K, epi, &ln);
}

extern "C" __global__ void __launch_bounds__(Small::THREADS) gemm_f16_sk_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters, LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_split<Small, true>(A, W, bias, residual, C, M, N, K, epi, partials, counters, &ln);
}

// The Narrow tile (32x64, 128 threads): the same four entries for a few row strips.
extern "C" __global__ void __launch_bounds__(Narrow::THREADS) gemm_f16_n(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    f16_gemm<Narrow>(A, W, bias, residual, C, M, N, K, epi);
}

extern "C" __global__ void __launch_bounds__(Narrow::THREADS) gemm_f16_n_sk(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) {
    f16_split<Narrow>(A, W, bias, residual, C, M, N, K, epi, partials, counters);
}

extern "C" __global__ void __launch_bounds__(Narrow::THREADS) gemm_f16_n_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_gemm<Narrow, true>(A, W, bias, residual, C, M, N, K, epi, &ln);
}

extern "C" __global__ void __launch_bounds__(Narrow::THREADS) gemm_f16_n_sk_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters, LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_split<Narrow, true>(A, W, bias, residual, C, M, N, K, epi, partials, counters, &ln);
}

// The NarrowWide tile (32x128, 128 threads): the same four entries.
extern "C" __global__ void __launch_bounds__(NarrowWide::THREADS) gemm_f16_nw(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    f16_gemm<NarrowWide>(A, W, bias, residual, C, M, N, K, epi);
}

extern "C" __global__ void __launch_bounds__(NarrowWide::THREADS) gemm_f16_nw_sk(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) {
    f16_split<NarrowWide>(A, W, bias, residual, C, M, N, K, epi, partials, counters);
}

extern "C" __global__ void __launch_bounds__(NarrowWide::THREADS) gemm_f16_nw_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_gemm<NarrowWide, true>(A, W, bias, residual, C, M, N, K, epi, &ln);
}

extern "C" __global__ void __launch_bounds__(NarrowWide::THREADS) gemm_f16_nw_sk_ln(
    const __half* __restrict__ A, const __half* __restrict__ W, const __half* __restrict__ bias,
    const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi,
    uint32_t* __restrict__ partials, uint32_t* __restrict__ counters, LN_PARAMS) {
    const LnArgs ln = LN_ARGS;
    f16_split<NarrowWide, true>(A, W, bias, residual, C, M, N, K, epi, partials, counters, &ln);
}

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
