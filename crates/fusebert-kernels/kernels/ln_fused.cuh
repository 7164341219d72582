// The layernorm of a residual GEMM's output rows, fused into its epilogue (hidden = N <= 1024,
// N % 8 == 0), as the mma.sync GEMMs run it (gemm_core.cuh, ln_strip_epilogue): layernorm_f16's
// bits. The Hopper GEMMs (gemm_sm90.cu) use only LnArgs from here: their strip tail and cluster
// entries share another reduction order (ln_blocked.cuh), within fp16 rounding of this one.
#pragma once
#include "common.cuh"

namespace gemm {
// ---- Layernorm fused into a residual GEMM (hidden = N <= 1024, N % 8 == 0) ----
// y = GEMM + bias + residual is stored by every output tile as usual; the tile then counts itself
// in on its row strip (strips[blockIdx.y], atomic). The last tile of a strip to arrive runs the
// layernorm of the strip's rows (a warp per row, rows walked in order) exactly as layernorm_f16
// / layernorm_f16_q8 do (same per-lane vectors, reductions and rounding: bit-identical output;
// each warp loads its lanes' gamma/beta/smoothing vectors once per strip),
// reading y through L2 (other blocks wrote it), and resets the strip counter for the next launch.
struct LnArgs {
    const __half* gamma;
    const __half* beta;
    __half* out;         // [M, N] fp16 layernorm output
    int8_t* q_out;       // [M, N] int8 codes of out (* q_smooth), or null: no int8 output
    float* q_scale;      // [M] their scales
    const __half* q_smooth;  // [N] smoothing multipliers of the next GEMM, or null
    uint32_t* strips;    // [grid rows] arrival counters, zero between launches
    float eps;
};
constexpr int LN_FUSED_VPT = 4;  // vectors of 8 per lane: N <= 1024
// The layernorm operands of the _ln entries (LnArgs). q_out/q_scale are not __restrict__: the
// int8 attention-output GEMM writes LN1's codes over its own input rows (after reading them).
#define LN_PARAMS                                                                                                \
    const __half *__restrict__ gamma, const __half *__restrict__ beta, __half *__restrict__ ln_out,             \
        int8_t *q_out, float *q_scale, const __half *__restrict__ q_smooth,                                    \
        uint32_t *__restrict__ strips, float eps
#define LN_ARGS gemm::LnArgs{gamma, beta, ln_out, q_out, q_scale, q_smooth, strips, eps}

// gamma, beta (and the smoothing multipliers) of one lane: the same vectors for every row, so a
// warp loads them once per strip.
struct LnParams {
    half8 g[LN_FUSED_VPT], b[LN_FUSED_VPT], sm[LN_FUSED_VPT];  // halves: a third of the registers
};

FB_DEVICE void ln_load_params(LnParams& q, const LnArgs& p, int N) {
    const int lane = threadIdx.x & 31;
    const uint32_t nvec = N / 8;
#pragma unroll
    for (int i = 0; i < LN_FUSED_VPT; i++) {
        const uint32_t v = lane + i * 32;
        const half8 zero = {};
        q.g[i] = q.b[i] = q.sm[i] = zero;  // (lanes past the row keep defined registers)
        if (v < nvec) {
            q.g[i] = ld_half8(p.gamma + 8 * v);
            q.b[i] = ld_half8(p.beta + 8 * v);
            if (p.q_out && p.q_smooth) q.sm[i] = ld_half8(p.q_smooth + 8 * v);
        }
    }
}

FB_DEVICE void ln_row(const __half* y, const LnArgs& p, const LnParams& q, int row, int N) {
    const int lane = threadIdx.x & 31;
    const uint32_t nvec = N / 8;
    const float inv_h = 1.f / (float)N;
    const uint4* yr = reinterpret_cast<const uint4*>(y + (size_t)row * N);
    float f[LN_FUSED_VPT][8];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < LN_FUSED_VPT; i++) {
        const uint32_t v = lane + i * 32;
        if (v < nvec) {
            const uint4 raw = __ldcg(&yr[v]);
            half8_to_float(*reinterpret_cast<const half8*>(&raw), f[i]);
#pragma unroll
            for (int j = 0; j < 8; j++) sum += f[i][j];
        }
    }
    const float mean = warp_sum(sum) * inv_h;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < LN_FUSED_VPT; i++)
        if (lane + i * 32 < nvec)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float d = f[i][j] - mean;
                sq += d * d;
            }
    const float rstd = rsqrtf(warp_sum(sq) * inv_h + p.eps);
    const bool q8out = p.q_out != nullptr;
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < LN_FUSED_VPT; i++) {
        const uint32_t v = lane + i * 32;
        if (v < nvec) {
            float gf[8], bf[8];
            half8_to_float(q.g[i], gf);
            half8_to_float(q.b[i], bf);
#pragma unroll
            for (int j = 0; j < 8; j++) f[i][j] = (f[i][j] - mean) * rstd * gf[j] + bf[j];
            const half8 h = float_to_half8(f[i]);
            st_half8(p.out + (size_t)row * N + 8 * v, h);
            if (q8out) {
                half8_to_float(h, f[i]);  // quantise what was stored
                if (p.q_smooth) {
                    float m[8];
                    half8_to_float(q.sm[i], m);
#pragma unroll
                    for (int j = 0; j < 8; j++) f[i][j] *= m[j];
                }
#pragma unroll
                for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(f[i][j]));
            }
        }
    }
    if (q8out) {
        amax = warp_max(amax);
        const float inv = q8_inv_scale(amax);
#pragma unroll
        for (int i = 0; i < LN_FUSED_VPT; i++) {
            const uint32_t v = lane + i * 32;
            if (v < nvec) {
                const float* h = f[i];
                uint2 qv = make_uint2(pack_s8x4(q8(h[0], inv), q8(h[1], inv), q8(h[2], inv), q8(h[3], inv)),
                                      pack_s8x4(q8(h[4], inv), q8(h[5], inv), q8(h[6], inv), q8(h[7], inv)));
                reinterpret_cast<uint2*>(p.q_out + (size_t)row * N)[v] = qv;
            }
        }
        if (lane == 0) p.q_scale[row] = amax / 127.f;
    }
}
}  // namespace gemm
