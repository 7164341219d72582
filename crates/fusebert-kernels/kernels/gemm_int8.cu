// W8A8 GEMM: C[M,N] = (A_s8[M,K] . W_s8[N,K]^T) * a_scale[m] * w_scale[n] + bias[n]
// (+ GELU, + residual or tanh), fp16 out; int32 accumulation on tensor cores
// (mma.sync m16n8k32.s8). Core, tiles and layout notes: gemm_core.cuh.
// Asymmetric activations (a_zero non-null, see quantize.cu): the accumulator becomes
// acc[m,n] - a_zero[m] * w_sum[n] with w_sum[n] = sum_k W[n,k]; a_zero = null for symmetric.
//
// Entries (suffix _l = the 128x128 Large tile, 256 threads; _n / _nw = the 32x64 Narrow / 32x128
// NarrowWide tile, 128 threads; none = 64x64 Small, 128 threads; dynamic shared = Cfg::SMEM):
//  - gemm_int8_f16[_l|_n|_nw]: the pipelined tensor-core kernel, fp16 out with the epilogue.
//  - gemm_int8_i32[_l|_n|_nw]: the same main loop, raw int32 accumulators out (bit-exact checks).
//  - gemm_int8_f16[_n|_nw]_sk / gemm_int8_i32[_n|_nw]_sk: Small (Narrow, NarrowWide) tile,
//    split-K over gridDim.z = the K chunk count (int32 partials + per-tile arrival counters in
//    a workspace; gemm_core.cuh).
//  - gemm_int8_f16_ln / _l_ln / _sk_ln / _n[w]_ln / _n[w]_sk_ln: the entries above with a
//    layernorm of the output rows fused in (and its int8 codes for the next GEMM; gemm_core.cuh).
//  - gemm_int8_simple:  one thread per output with dp4a: the obviously-right baseline.
// Requirements (checked on the host): K % 16 == 0, N % 16 == 0, M >= 1; bias may be null.
#include "gemm_core.cuh"

using namespace gemm;

template <class C, bool LN = false>
__device__ __forceinline__ void int8_f16(const int8_t* A, const float* a_scale, const int* a_zero, const int8_t* W,
                                         const float* w_scale, const int* w_sum, const __half* bias,
                                         const __half* residual, __half* Cout, uint32_t M,
                                         uint32_t N, uint32_t K, uint32_t epi, const LnArgs* ln = nullptr) {
    extern __shared__ __align__(128) char smem[];
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    int acc[C::MI][C::NI][4];
    mainloop<C, true>(acc, smem, (const char*)A, (const char*)W, M, N, K, m0, n0, 0, (K + BKB - 1) / BKB);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    stage_acc<C>(acc, st);
    store_tile<C, true>(st, a_scale, w_scale, a_zero, w_sum, bias, residual, epi, Cout, M, N, m0, n0);
    if constexpr (LN) ln_strip_epilogue<C>(Cout, *ln, M, N, m0);
}

template <class C>
__device__ __forceinline__ void int8_i32(const int8_t* A, const int8_t* W, int32_t* Cout, uint32_t M, uint32_t N,
                                         uint32_t K) {
    extern __shared__ __align__(128) char smem[];
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    int acc[C::MI][C::NI][4];
    mainloop<C, true>(acc, smem, (const char*)A, (const char*)W, M, N, K, m0, n0, 0, (K + BKB - 1) / BKB);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    stage_acc<C>(acc, st);
    store_raw<C>(st, Cout, M, N, m0, n0);
}

// Split-K (Small, Narrow or NarrowWide tile): block z sums K chunk z (exact in int32); the last
// block of a tile adds the chunks and runs the epilogue (gemm_core.cuh: split_k_reduce). False: not the last block.
template <class C>
__device__ __forceinline__ bool int8_split(int (&acc)[C::MI][C::NI][4], char* smem, const int8_t* A,
                                           const int8_t* W, uint32_t M, uint32_t N, uint32_t K, uint32_t* partials,
                                           uint32_t* counters) {
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    const int KT = (K + BKB - 1) / BKB, CT = chunk_tiles(KT), kt0 = blockIdx.z * CT;
    mainloop<C, true>(acc, smem, (const char*)A, (const char*)W, M, N, K, m0, n0, kt0, kt0 + CT < KT ? kt0 + CT : KT);
    return split_k_reduce<C, true>(acc, reinterpret_cast<uint32_t*>(smem), partials, counters, M, m0);
}

template <class C, bool LN = false>
__device__ __forceinline__ void int8_f16_sk(const int8_t* A, const float* a_scale, const int* a_zero,
                                            const int8_t* W, const float* w_scale, const int* w_sum,
                                            const __half* bias, const __half* residual, __half* Cout, uint32_t M,
                                            uint32_t N, uint32_t K, uint32_t epi, uint32_t* partials,
                                            uint32_t* counters, const LnArgs* ln = nullptr) {
    extern __shared__ __align__(128) char smem[];
    int acc[C::MI][C::NI][4];
    if (!int8_split<C>(acc, smem, A, W, M, N, K, partials, counters)) return;
    store_tile<C, true>(reinterpret_cast<uint32_t*>(smem), a_scale, w_scale, a_zero, w_sum, bias, residual, epi, Cout,
                        M, N, blockIdx.y * C::BM, blockIdx.x * C::BN);
    if constexpr (LN) ln_strip_epilogue<C>(Cout, *ln, M, N, blockIdx.y * C::BM);
}

template <class C>
__device__ __forceinline__ void int8_i32_sk(const int8_t* A, const int8_t* W, int32_t* Cout, uint32_t M, uint32_t N,
                                            uint32_t K, uint32_t* partials, uint32_t* counters) {
    extern __shared__ __align__(128) char smem[];
    int acc[C::MI][C::NI][4];
    if (!int8_split<C>(acc, smem, A, W, M, N, K, partials, counters)) return;
    store_raw<C>(reinterpret_cast<uint32_t*>(smem), Cout, M, N, blockIdx.y * C::BM, blockIdx.x * C::BN);
}

// The layernorm-fused entry of one tile (_ln: residual GEMM + layernorm of its rows, with the
// layernorm's int8 output when q_out is non-null). A and a_scale are not __restrict__: LN1's
// int8 codes overwrite the GEMM's own input rows once their strip is done.
#define GEMM_INT8_LN_ENTRY(SUFFIX, CFG, BOUNDS)                                                                  \
    extern "C" __global__ void __launch_bounds__ BOUNDS gemm_int8_f16##SUFFIX##_ln(                              \
        const int8_t* A, const float* a_scale, const int* __restrict__ a_zero, const int8_t* __restrict__ W,     \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,      \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi, LN_PARAMS) {                                                                               \
        const LnArgs ln = LN_ARGS;                                                                               \
        int8_f16<CFG, true>(A, a_scale, a_zero, W, w_scale, w_sum, bias, residual, C, M, N, K, epi, &ln);        \
    }

// The split-K entries of one tile: fp16 out (_sk), raw int32 out (i32 _sk), and with the fused
// layernorm (_sk_ln).
#define GEMM_INT8_SPLIT_ENTRIES(SUFFIX, CFG)                                                                     \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS) gemm_int8_f16##SUFFIX##_sk(                       \
        const int8_t* __restrict__ A, const float* __restrict__ a_scale, const int* __restrict__ a_zero,         \
        const int8_t* __restrict__ W, const float* __restrict__ w_scale, const int* __restrict__ w_sum,          \
        const __half* __restrict__ bias, const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, \
        uint32_t N, uint32_t K, uint32_t epi, uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) { \
        int8_f16_sk<CFG>(A, a_scale, a_zero, W, w_scale, w_sum, bias, residual, C, M, N, K, epi, partials,       \
                         counters);                                                                              \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS) gemm_int8_i32##SUFFIX##_sk(                       \
        const int8_t* __restrict__ A, const int8_t* __restrict__ W, int32_t* __restrict__ C, uint32_t M,         \
        uint32_t N, uint32_t K, uint32_t* __restrict__ partials, uint32_t* __restrict__ counters) {              \
        int8_i32_sk<CFG>(A, W, C, M, N, K, partials, counters);                                                  \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS) gemm_int8_f16##SUFFIX##_sk_ln(                    \
        const int8_t* A, const float* a_scale, const int* __restrict__ a_zero, const int8_t* __restrict__ W,     \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,      \
        const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K,        \
        uint32_t epi, uint32_t* __restrict__ partials, uint32_t* __restrict__ counters, LN_PARAMS) {             \
        const LnArgs ln = LN_ARGS;                                                                               \
        int8_f16_sk<CFG, true>(A, a_scale, a_zero, W, w_scale, w_sum, bias, residual, C, M, N, K, epi, partials, \
                               counters, &ln);                                                                   \
    }

#define GEMM_INT8_ENTRIES(SUFFIX, CFG, MINB)                                                                     \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS, MINB) gemm_int8_f16##SUFFIX(                     \
        const int8_t* __restrict__ A, const float* __restrict__ a_scale, const int* __restrict__ a_zero,         \
        const int8_t* __restrict__ W, const float* __restrict__ w_scale, const int* __restrict__ w_sum,          \
        const __half* __restrict__ bias, const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M, \
        uint32_t N, uint32_t K, uint32_t epi) {                                                                  \
        int8_f16<CFG>(A, a_scale, a_zero, W, w_scale, w_sum, bias, residual, C, M, N, K, epi);                   \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS, MINB) gemm_int8_i32##SUFFIX(                     \
        const int8_t* __restrict__ A, const int8_t* __restrict__ W, int32_t* __restrict__ C, uint32_t M,         \
        uint32_t N, uint32_t K) {                                                                                \
        int8_i32<CFG>(A, W, C, M, N, K);                                                                         \
    }

GEMM_INT8_ENTRIES(, Small, 1)
GEMM_INT8_SPLIT_ENTRIES(, Small)
GEMM_INT8_LN_ENTRY(, Small, (Small::THREADS))
// two 128x128 blocks per SM: caps ptxas at 128 registers (checked: no spills, `fusebert kernels report`)
GEMM_INT8_ENTRIES(_l, Large, 2)
// one block per SM: the layernorm's cached parameters spill at 128 registers
GEMM_INT8_LN_ENTRY(_l, Large, (Large::THREADS, 1))
// The 32-row tiles (32x64 Narrow, 32x128 NarrowWide; 128 threads) for a few row strips.
GEMM_INT8_ENTRIES(_n, Narrow, 1)
GEMM_INT8_SPLIT_ENTRIES(_n, Narrow)
GEMM_INT8_LN_ENTRY(_n, Narrow, (Narrow::THREADS))
GEMM_INT8_ENTRIES(_nw, NarrowWide, 1)
GEMM_INT8_SPLIT_ENTRIES(_nw, NarrowWide)
GEMM_INT8_LN_ENTRY(_nw, NarrowWide, (NarrowWide::THREADS))

// Baseline: one thread per output, 4 int8 per dp4a. Block 16x16 over (n, m).
extern "C" __global__ void gemm_int8_simple(
    const int8_t* __restrict__ A, const float* __restrict__ a_scale, const int* __restrict__ a_zero,
    const int8_t* __restrict__ W, const float* __restrict__ w_scale, const int* __restrict__ w_sum,
    const __half* __restrict__ bias, const __half* __restrict__ residual, __half* __restrict__ C, uint32_t M,
    uint32_t N, uint32_t K, uint32_t epi) {
    const uint32_t n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const int* a = reinterpret_cast<const int*>(A + (size_t)m * K);
    const int* w = reinterpret_cast<const int*>(W + (size_t)n * K);
    int acc = 0;
    for (uint32_t k = 0; k < K / 4; k++) acc = __dp4a(a[k], w[k], acc);
    if (a_zero) acc -= a_zero[m] * w_sum[n];
    const float v = epilogue((float)acc * a_scale[m] * w_scale[n], bias, residual, epi, m, n, N);
    C[(size_t)m * N + n] = __float2half_rn(v);
}
