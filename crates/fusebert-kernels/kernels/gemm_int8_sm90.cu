// The int8 entries of the Hopper GEMM family (gemm_sm90.cu has the design, the fp16 entries and
// the host-checked requirements): gemm_int8_sm90 (W8A8, s8 x s8 -> s32 in wgmma, dequantised in
// gemm_int8's float order: the same bits as gemm_int8), _ln fused layernorm, _qa fused
// asymmetric quantisation of the output, gemm_int8_i32_sm90 (the raw s32 accumulators), each
// unsplit and split over K (_sk) in 128- and 192-column tiles (_n192); the cluster entries
// (_n192_cln2, _cln3, _n192_cln4, _cln8: fused layernorm) and gemm_int8_sm90_n192_cqa (fused
// quantisation over a cluster of 8 CTAs).
#include "gemm_sm90.cuh"

using namespace sm90;

// The argument order of gemm_int8_f16 with the two operands as tensor maps (and, _ln, the
// layernorm with, given q_out, the next GEMM's codes).
#define GEMM_INT8(SUF, G, SPLIT, SPLIT_PARAMS, SPLIT_ARGS)                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_int8_sm90##SUF(                               \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale,                            \
        const int* __restrict__ a_zero, const __grid_constant__ CUtensorMap tma_w,                               \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,       \
        const __half* __restrict__ residual, const __grid_constant__ CUtensorMap tma_c, uint32_t M, uint32_t N,  \
        uint32_t K, uint32_t epi SPLIT_PARAMS) {                                                                \
        ws_gemm<S8Op, G, SPLIT>(&tma_a, &tma_w, &tma_c, M, N, K, SPLIT_ARGS,                                       \
                             S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, residual, (int)M, (int)N, epi});  \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_int8_sm90##SUF##_ln(                          \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale,                            \
        const int* __restrict__ a_zero, const __grid_constant__ CUtensorMap tma_w,                               \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,       \
        const __half* __restrict__ residual, const __grid_constant__ CUtensorMap tma_c, const __half* C,         \
        uint32_t M, uint32_t N, uint32_t K, uint32_t epi SPLIT_PARAMS, LN_PARAMS) {                             \
        ws_gemm<S8Op, G, SPLIT>(&tma_a, &tma_w, &tma_c, M, N, K, SPLIT_ARGS,                                       \
                             S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, residual, (int)M, (int)N, epi},   \
                             LnTail{LN_ARGS, C, (int)M, (int)N});                                                \
    }                                                                                                            \
    /* with the asymmetric int8 quantisation of its rows fused in (QaTail: the next GEMM's input) */            \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_int8_sm90##SUF##_qa(                          \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale,                            \
        const int* __restrict__ a_zero, const __grid_constant__ CUtensorMap tma_w,                               \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,       \
        const __half* __restrict__ residual, const __grid_constant__ CUtensorMap tma_c, const __half* C,         \
        uint32_t M, uint32_t N, uint32_t K, uint32_t epi SPLIT_PARAMS, QA_PARAMS) {                             \
        ws_gemm<S8Op, G, SPLIT>(&tma_a, &tma_w, &tma_c, M, N, K, SPLIT_ARGS,                                       \
                             S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, residual, (int)M, (int)N, epi},   \
                             QaTail{QA_ARGS, C, (int)M, (int)N});                                                \
    }                                                                                                            \
    /* the raw s32 accumulators (bit-exact checks of the integer path) */                                       \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_int8_i32_sm90##SUF(                           \
        const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,                    \
        int32_t* __restrict__ C, uint32_t M, uint32_t N, uint32_t K SPLIT_PARAMS) {                             \
        ws_gemm<S8Op, G, SPLIT>(&tma_a, &tma_w, nullptr, M, N, K, SPLIT_ARGS, RawEpilogue{C, (int)M, (int)N});     \
    }

ENTRIES(GEMM_INT8)

// The cluster entries (cln_gemm, CLN_ENTRIES in gemm_sm90.cuh: what they write and why _cln3).
#define GEMM_INT8_CLN(SUF, G, CS)                                                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) __cluster_dims__(CS, 1, 1) gemm_int8_sm90##SUF(       \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale,                               \
        const int* __restrict__ a_zero, const __grid_constant__ CUtensorMap tma_w,                                  \
        const float* __restrict__ w_scale, const int* __restrict__ w_sum, const __half* __restrict__ bias,          \
        const __half* __restrict__ residual, const __grid_constant__ CUtensorMap tma_ln, uint32_t M, uint32_t N,    \
        uint32_t K, uint32_t epi, CLN_PARAMS) {                                                                     \
        cln_gemm<S8Op, G, CS>(&tma_a, &tma_w, &tma_ln, M, N, K,                                                    \
                              S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, residual, (int)M, (int)N, epi},     \
                              CLN_ARGS);                                                                            \
    }
CLN_ENTRIES(GEMM_INT8_CLN)

// gemm_int8_sm90_n192_qa with the quantisation distributed over a cluster of 8 CTAs per strip
// (ws_gemm_cluster): the same outputs, codes, scales and zero points; no strip counters. The
// grid is a multiple of 8 CTAs (host: 8 x min(strips, 16)). resident != 0 (host: N <= 8 x 2 x
// 192, every CTA owns at most 2 column tiles of a strip): y stays in shared memory, C and
// tma_c are neither written nor read.
#define QA_CLUSTER_PARAMS \
    int8_t *q_out, float *q_scale, int32_t *q_zero, const __half *__restrict__ q_smooth, uint32_t resident
extern "C" __global__ void __cluster_dims__(CQA_CLUSTER, 1, 1) __launch_bounds__(THREADS, 1)
    gemm_int8_sm90_n192_cqa(const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale,
                            const int* __restrict__ a_zero, const __grid_constant__ CUtensorMap tma_w,
                            const float* __restrict__ w_scale, const int* __restrict__ w_sum,
                            const __half* __restrict__ bias, const __half* __restrict__ residual,
                            const __grid_constant__ CUtensorMap tma_c, const __half* C, uint32_t M, uint32_t N,
                            uint32_t K, uint32_t epi, QA_CLUSTER_PARAMS) {
    ws_gemm_cluster<Geom<192>>(&tma_a, &tma_w, &tma_c, M, N, K,
                               S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, residual, (int)M, (int)N, epi},
                               QaArgs{q_out, q_scale, q_zero, q_smooth, nullptr}, C, resident != 0);
}
