// Hopper (sm_90a) GEMMs on one warp-specialised skeleton (`ws_gemm` in gemm_sm90.cuh, templated
// on the operand type, the tile geometry and the epilogue). This file holds the fp16 entries,
// gemm_int8_sm90.cu the int8 ones (two files: nvcc and ptxas take minutes on each, in parallel):
// - gemm_f16_sm90: C[M,N] = A[M,K] . W[N,K]^T + bias[n] (+ activation or residual per the `epi`
//   codes of codes.cuh, the same semantics as gemm_f16: + bias, then the activation or the
//   residual add, in f32, one fp16 rounding), f32 accumulation in wgmma, fp16 out.
// - gemm_int8_sm90: the W8A8 GEMM of gemm_int8.cu, s8 x s8 -> s32 in wgmma (m64n128k32, exact),
//   C = (acc - a_zero[m] w_sum[n]) * a_scale[m] * w_scale[n] + bias[n], then the same `epi`
//   codes, fp16 out, with gemm_int8's float operations in gemm_int8's order (one mul, one fma:
//   see S8Epilogue), so both kernels give the same bits.
// - gemm_int8_i32_sm90: the same main loop, the raw s32 accumulators out (bit-exact checks).
// - Each comes split over K too (_sk: gemm_f16_sm90_sk, ..._sk_ln, gemm_int8_sm90_sk, ...): a
//   tile's K chunks on separate CTAs, for grids with fewer tiles than SMs (SplitK below); and
//   in two tile widths, 128 x 128 and 128 x 192 (_n192: Geom below), every combination the
//   same bits.
//
// Design (docs/research/hopper.md 3.2, CUTLASS's warp-specialised "cooperative" kernel):
// - 384 threads: warpgroup 0 is the producer (one elected thread issues every TMA load), warp
//   groups 1 and 2 are consumers, each owning 64 rows of a 128 x BN output tile.
//   `__launch_bounds__(384, 1)`; setmaxnreg gives the producer's registers to the consumers.
// - Persistent: gridDim.x CTAs (host: min(units, SMs)) walk the work units (tiles; _sk: tile x
//   K chunk) u = blockIdx.x, blockIdx.x + gridDim.x, ... in a static order (column blocks
//   outer, row blocks inner, so CTAs running at the same time share W's column strip). Producer and consumers walk the same
//   sequence, so the stage/phase counters agree without communication.
// - STAGES-deep ring of (A box 128 x BK, W box BN x BK), both K-major with the 128-byte swizzle:
//   a row is 128 bytes whatever the type (BK = 64 f16 or 128 s8), the canonical wgmma SW128
//   K-major layout (SBO = 1024); one wgmma's K is 32 bytes (k16 f16, k32 s8), so a stage is 4
//   wgmmas per consumer with the descriptor start advanced 32 bytes each, for both types (s8 is
//   K-major only on wgmma: A and W are both K-contiguous, which is what the GEMM is given).
//   full[s]: 1 arrival (the producer's arrive.expect_tx) + the boxes' bytes (TMA complete_tx).
//   empty[s]: 256 arrivals (every consumer thread, after the wgmma reading the stage has
//   completed: wait_group 1 after the next stage's commit, never before - sanitizer S4).
// - Tails: TMA zero-fills box elements outside [K, M] / [K, N] (and counts them in the
//   transaction bytes), so M, N and K need no multiple of the tile; the epilogue stores only
//   rows < M and columns < N.
// - Epilogue from the accumulator registers (wgmma D fragment, hopper.md 1.4): thread t of a
//   consumer warpgroup holds rows 16 (t/32) + (t%32)/4 + {0, 8} and column pairs 8c + 2 (t%4),
//   c < BN/8. The fp16 outputs leave through shared memory and TMA (the _sm90 GEMMs' store
//   epilogue): each consumer warpgroup writes its 64 x BN half as BN / 64 boxes of 64 x 64 in
//   the 128-byte swizzle (the pair stores of a warp hit 32 distinct banks: 8 rows whose 16-byte
//   chunks the swizzle spreads, 4 words each), fences them to the async proxy, and one thread
//   stores the boxes with cp.async.bulk.tensor (whole 32-byte sectors, clipped at M and N by
//   the tensor map); before the next tile overwrites the staging half it waits for the stores
//   to have read it (wait_group.read). gemm_int8_i32_sm90 stores its s32 pairs directly.
// - Fused layernorm (the _ln entries, LnTail): after a tile's y is stored, the consumers count it
//   in on its 128-row strip (one atomic); the last tile of a strip to arrive normalises the
//   strip's rows with the consumers' 8 warps, in the family's blocked reduction order
//   (ln_blocked.cuh: within fp16 rounding of layernorm_f16, no longer its bits), and the int8
//   codes of the next GEMM when asked. The cluster entries (_n192_cln2, _cln3, _n192_cln4, _cln8,
//   cln_gemm below) do the same without the serial tail: a cluster of CTAs per strip exchanges
//   the rows' block sums through distributed shared memory; the same bits as the tail.
// - Fused asymmetric quantisation (gemm_int8_sm90*_qa, QaTail): the same strip count; the last
//   tile of a strip quantises the strip's rows of y per row, asymmetrically (the FFN1 GELU
//   output for FFN2), with quantize_i8_asym_f16_wide's arithmetic: the same codes, scales and
//   zero points, without the quantize launch re-reading y from DRAM (here from L2).
// - Cluster-distributed quantisation (gemm_int8_sm90_n192_cqa, ws_gemm_cluster): the same
//   results without the strip tail's serial pass: a cluster of 8 CTAs owns a strip, each CTA
//   folds its tiles' per-row ranges as they are stored, the ranges meet through distributed
//   shared memory, and each CTA codes its own columns. When every CTA owns at most 2 column
//   tiles of a strip (N <= 3072, BERT-base's FFN1 included: the `resident` argument), y never
//   leaves the chip: each tile stays in its consumers' staging (tile j of the CTA at 24 KiB x j
//   of the 48 KiB regions), nothing is TMA-stored, and the codes are read from shared memory
//   (M x N x 2 bytes fewer stored and read back per launch); C is not written. Else y is
//   stored and read back through L2.
//
// Why BN = 128 and 192: 64 or 96 f32 accumulators per consumer thread leave the epilogue
// (erf-GELU, bias and residual) room without spills under the 168-register launch cap (256
// would not: 128 accumulators); 128 gives the most CTAs on short batches, 192 fills the last
// wave where 128 leaves it part-empty (BERT-base at 4096 tokens: QKV 384 tiles in 3 waves at
// 97%, against 576 in 5 at 87%). BERT's N (384, 768, 1152, 1536, 2304, 3072) are multiples
// of both, so no column tail at real shapes.
//
// Batch invariance: a row's result does not depend on M, the tile of the row, the CTA that
// computes it, or whether K is split: fp16 sums K in fixed chunks (a function of K alone), each
// chunk in k order from zero, then the chunks' sums in chunk order, in every entry (see SplitK);
// s32 sums are exact in any order.
//
// Host-checked requirements (src/gemm_sm90.rs): the row stride of A and W is a multiple of 16
// bytes (TMA: K % 8 == 0 for f16, K % 16 == 0 for s8), N % 8 == 0, 16-byte aligned A and W,
// 8-byte aligned C/bias/residual/w_scale/w_sum.
#include "gemm_sm90.cuh"

using namespace sm90;

// tma_c: C [M, N] fp16, boxes of 64 x 64 in the 128-byte swizzle (the store epilogue); C itself
// is read by the _ln entries' layernorm.
#define GEMM_F16(SUF, G, SPLIT, SPLIT_PARAMS, SPLIT_ARGS)                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                                      \
        gemm_f16_sm90##SUF(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,  \
                           const __half* __restrict__ bias, const __half* __restrict__ residual,                  \
                           const __grid_constant__ CUtensorMap tma_c, uint32_t M, uint32_t N, uint32_t K,         \
                           uint32_t epi SPLIT_PARAMS) {                                                          \
        ws_gemm<F16Op, G, SPLIT>(&tma_a, &tma_w, &tma_c, M, N, K, SPLIT_ARGS,                                       \
                              F16Epilogue{bias, residual, (int)M, (int)N, epi});                                 \
    }                                                                                                             \
    /* with the layernorm of its rows fused in (ln_out = LN(C); gemm_f16_ln's LN_PARAMS) */                       \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_f16_sm90##SUF##_ln(                            \
        const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,                     \
        const __half* __restrict__ bias, const __half* __restrict__ residual,                                     \
        const __grid_constant__ CUtensorMap tma_c, const __half* C, uint32_t M, uint32_t N, uint32_t K,           \
        uint32_t epi SPLIT_PARAMS, LN_PARAMS) {                                                                  \
        ws_gemm<F16Op, G, SPLIT>(&tma_a, &tma_w, &tma_c, M, N, K, SPLIT_ARGS,                                       \
                              F16Epilogue{bias, residual, (int)M, (int)N, epi}, LnTail{LN_ARGS, C, (int)M, (int)N}); \
    }

ENTRIES(GEMM_F16)

// The cluster entries (cln_gemm, CLN_ENTRIES in gemm_sm90.cuh: what they write and why _cln3).
#define GEMM_F16_CLN(SUF, G, CS)                                                                                   \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) __cluster_dims__(CS, 1, 1) gemm_f16_sm90##SUF(        \
        const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,                       \
        const __half* __restrict__ bias, const __half* __restrict__ residual,                                       \
        const __grid_constant__ CUtensorMap tma_ln, uint32_t M, uint32_t N, uint32_t K, uint32_t epi, CLN_PARAMS) { \
        cln_gemm<F16Op, G, CS>(&tma_a, &tma_w, &tma_ln, M, N, K, F16Epilogue{bias, residual, (int)M, (int)N, epi},  \
                               CLN_ARGS);                                                                           \
    }
CLN_ENTRIES(GEMM_F16_CLN)
