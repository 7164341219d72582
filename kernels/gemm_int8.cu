// W8A8 GEMM: C[M,N] = (A_s8[M,K] . W_s8[N,K]^T) * a_scale[m] * w_scale[n] + bias[n]
// (+ GELU, + residual or tanh), fp16 out; int32 accumulation on tensor cores
// (mma.sync m16n8k32.s8). Core and layout notes: gemm_core.cuh.
//
// Entries:
//  - gemm_int8_f16:    the pipelined tensor-core kernel, fp16 out with the epilogue.
//  - gemm_int8_i32:    the same main loop, raw int32 accumulators out (bit-exact checks).
//  - gemm_int8_simple: one thread per output with dp4a: the obviously-right baseline.
// Requirements (checked on the host): K % 16 == 0, N % 16 == 0, M >= 1; bias may be null.
#include "gemm_core.cuh"

using namespace gemm;

extern "C" __global__ void __launch_bounds__(THREADS) gemm_int8_f16(
    const int8_t* __restrict__ A, const float* __restrict__ a_scale, const int8_t* __restrict__ W,
    const float* __restrict__ w_scale, const __half* __restrict__ bias, const __half* __restrict__ residual,
    __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    __shared__ __align__(128) char smem[SMEM];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int acc[2][4][4];
    mainloop<true>(acc, smem, (const char*)A, (const char*)W, M, N, K, m0, n0);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    stage_acc(acc, st);
    store_tile<true>(st, a_scale, w_scale, bias, residual, epi, C, M, N, m0, n0);
}

extern "C" __global__ void __launch_bounds__(THREADS) gemm_int8_i32(
    const int8_t* __restrict__ A, const int8_t* __restrict__ W, int32_t* __restrict__ C, uint32_t M,
    uint32_t N, uint32_t K) {
    __shared__ __align__(128) char smem[SMEM];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int acc[2][4][4];
    mainloop<true>(acc, smem, (const char*)A, (const char*)W, M, N, K, m0, n0);
    uint32_t* st = reinterpret_cast<uint32_t*>(smem);
    stage_acc(acc, st);
    for (int i = threadIdx.x; i < BM * BN / 4; i += THREADS) {
        const int r = i >> 4, c = (i & 15) * 4, gm = m0 + r, gn = n0 + c;
        if (gm < (int)M && gn < (int)N)
            *reinterpret_cast<uint4*>(C + (size_t)gm * N + gn) = *reinterpret_cast<const uint4*>(&st[r * EPI_LD + c]);
    }
}

// Baseline: one thread per output, 4 int8 per dp4a. Block 16x16 over (n, m).
extern "C" __global__ void gemm_int8_simple(
    const int8_t* __restrict__ A, const float* __restrict__ a_scale, const int8_t* __restrict__ W,
    const float* __restrict__ w_scale, const __half* __restrict__ bias, const __half* __restrict__ residual,
    __half* __restrict__ C, uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    const uint32_t n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const int* a = reinterpret_cast<const int*>(A + (size_t)m * K);
    const int* w = reinterpret_cast<const int*>(W + (size_t)n * K);
    int acc = 0;
    for (uint32_t k = 0; k < K / 4; k++) acc = __dp4a(a[k], w[k], acc);
    const float v = epilogue((float)acc * a_scale[m] * w_scale[n], bias, residual, epi, m, n, N);
    C[(size_t)m * N + n] = __float2half_rn(v);
}
