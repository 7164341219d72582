// LayerNorm over rows of fp16: y = LN(x + residual + bias) * gamma + beta, f32 statistics.
//
// The fast path, hidden % 8 == 0: a row is owned by a group of threads, each holding up to
//   VPT=4 vectors of 8 halves (16-byte loads/stores) at columns (gt + i*gs)*8, so a row is read
//   once and kept in registers; mean and centred variance are two reductions over registers
//   (no second pass over memory).
//   layernorm_f16 / layernorm_f16_q8 (hidden <= 1024, BERT-base/large): one WARP per row,
//   shuffle reductions, no barriers in the row loop, 8 warps per block walking rows.
//   layernorm_f16_wide / layernorm_f16_q8_wide (hidden <= 4096): the whole block per row,
//   block reductions. bias/gamma/beta are loaded once per block into shared memory (dynamic
//   shared = 3 * hidden halves), so the global traffic is the row data plus one parameter read
//   per block.
//   _q8 also writes int8 codes of the fp16-rounded output and a per-row scale absmax/127
//   (what quantize_i8_f16 would compute from `out`), for the next W8A8 GEMM. With `q_smooth`
//   (per-column fp16 multipliers, may be null) the codes quantise out[r, j] * q_smooth[j]:
//   SmoothQuant-style smoothing, whose inverse the host folds into the next GEMM's weights.
// layernorm_f16_simple: one block per row, scalar loads, the row in shared f32: any hidden;
//   the baseline and the path for hidden % 8 != 0. q_out may be null.
// residual and bias may be null (0).
#include "common.cuh"

constexpr int LN_VPT = 4;

template <bool Q8, bool WARP_ROW>
__device__ __forceinline__ void layernorm_vec(const __half* __restrict__ x, const __half* __restrict__ residual,
                                              const __half* __restrict__ bias, const __half* __restrict__ gamma,
                                              const __half* __restrict__ beta, __half* __restrict__ out,
                                              int8_t* __restrict__ q_out, float* __restrict__ q_scale,
                                              const __half* __restrict__ q_smooth, uint32_t rows, uint32_t hidden,
                                              float eps) {
    __shared__ float scratch[32];
    // gamma | beta | bias | q_smooth, read from global once per block (dynamic shared: 3 * hidden
    // halves, 4 * hidden for the _q8 kernels)
    extern __shared__ half8 params[];
    const uint32_t nvec = hidden / 8;
    half8* sg = params;
    half8* sb = params + nvec;
    half8* sbi = params + 2 * nvec;
    half8* ssm = params + 3 * nvec;
    for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        st_half8(&sg[v], ld_half8(gamma + 8 * v));
        st_half8(&sb[v], ld_half8(beta + 8 * v));
        if (bias) st_half8(&sbi[v], ld_half8(bias + 8 * v));
        if (Q8 && q_smooth) st_half8(&ssm[v], ld_half8(q_smooth + 8 * v));
    }
    __syncthreads();
    const float inv_h = 1.f / (float)hidden;
    // a row belongs to one warp (WARP_ROW) or to the whole block; gt/gs: index/size in the group
    const uint32_t gt = WARP_ROW ? (threadIdx.x & 31) : threadIdx.x, gs = WARP_ROW ? 32 : blockDim.x;
    const uint32_t groups = WARP_ROW ? blockDim.x / 32 : 1, group = WARP_ROW ? threadIdx.x / 32 : 0;
    auto red_sum = [&](float v) { return WARP_ROW ? warp_sum(v) : block_sum(v, scratch); };
    auto red_max = [&](float v) { return WARP_ROW ? warp_max(v) : block_max(v, scratch); };
    // no block barrier below in the WARP_ROW case: warps may walk different numbers of rows
    for (uint32_t row = blockIdx.x * groups + group; row < rows; row += gridDim.x * groups) {
        const half8* xr = reinterpret_cast<const half8*>(x + (size_t)row * hidden);
        const half8* rr = reinterpret_cast<const half8*>(residual + (size_t)row * hidden);
        float f[LN_VPT][8];
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < LN_VPT; i++) {
            const uint32_t v = gt + i * gs;
            if (v < nvec) {
                half8_to_float(ld_half8(&xr[v]), f[i]);
                float t[8];
                if (residual) {
                    half8_to_float(ld_half8(&rr[v]), t);
#pragma unroll
                    for (int j = 0; j < 8; j++) f[i][j] += t[j];
                }
                if (bias) {
                    half8_to_float(ld_half8(&sbi[v]), t);
#pragma unroll
                    for (int j = 0; j < 8; j++) f[i][j] += t[j];
                }
#pragma unroll
                for (int j = 0; j < 8; j++) sum += f[i][j];
            }
        }
        const float mean = red_sum(sum) * inv_h;
        float sq = 0.f;
#pragma unroll
        for (int i = 0; i < LN_VPT; i++)
            if (gt + i * gs < nvec)
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const float d = f[i][j] - mean;
                    sq += d * d;
                }
        const float rstd = rsqrtf(red_sum(sq) * inv_h + eps);
        half8 y[LN_VPT];
        float amax = 0.f;
#pragma unroll
        for (int i = 0; i < LN_VPT; i++) {
            const uint32_t v = gt + i * gs;
            if (v < nvec) {
                float gf[8], bf[8];
                half8_to_float(ld_half8(&sg[v]), gf);
                half8_to_float(ld_half8(&sb[v]), bf);
#pragma unroll
                for (int j = 0; j < 8; j++) f[i][j] = (f[i][j] - mean) * rstd * gf[j] + bf[j];
                y[i] = float_to_half8(f[i]);
                st_half8(out + (size_t)row * hidden + 8 * v, y[i]);
                if (Q8) {
                    half8_to_float(y[i], f[i]);  // quantise what was stored
                    if (q_smooth) {
                        float m[8];
                        half8_to_float(ld_half8(&ssm[v]), m);
#pragma unroll
                        for (int j = 0; j < 8; j++) f[i][j] *= m[j];
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(f[i][j]));
                }
            }
        }
        if (Q8) {
            amax = red_max(amax);
            const float inv = q8_inv_scale(amax);
#pragma unroll
            for (int i = 0; i < LN_VPT; i++) {
                const uint32_t v = gt + i * gs;
                if (v < nvec) {
                    const float* h = f[i];
                    uint2 q = make_uint2(pack_s8x4(q8(h[0], inv), q8(h[1], inv), q8(h[2], inv), q8(h[3], inv)),
                                         pack_s8x4(q8(h[4], inv), q8(h[5], inv), q8(h[6], inv), q8(h[7], inv)));
                    reinterpret_cast<uint2*>(q_out + (size_t)row * hidden)[v] = q;
                }
            }
            if (gt == 0) q_scale[row] = amax / 127.f;
        }
    }
}

extern "C" __global__ void layernorm_f16(const __half* __restrict__ x, const __half* __restrict__ residual,
    const __half* __restrict__ bias, const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, uint32_t rows, uint32_t hidden, float eps) {
    layernorm_vec<false, true>(x, residual, bias, gamma, beta, out, nullptr, nullptr, nullptr, rows, hidden, eps);
}

extern "C" __global__ void layernorm_f16_wide(const __half* __restrict__ x, const __half* __restrict__ residual,
    const __half* __restrict__ bias, const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, uint32_t rows, uint32_t hidden, float eps) {
    layernorm_vec<false, false>(x, residual, bias, gamma, beta, out, nullptr, nullptr, nullptr, rows, hidden, eps);
}

extern "C" __global__ void layernorm_f16_q8(const __half* __restrict__ x, const __half* __restrict__ residual,
    const __half* __restrict__ bias, const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, int8_t* __restrict__ q_out, float* __restrict__ q_scale, const __half* __restrict__ q_smooth,
    uint32_t rows, uint32_t hidden, float eps) {
    layernorm_vec<true, true>(x, residual, bias, gamma, beta, out, q_out, q_scale, q_smooth, rows, hidden, eps);
}

extern "C" __global__ void layernorm_f16_q8_wide(const __half* __restrict__ x, const __half* __restrict__ residual,
    const __half* __restrict__ bias, const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, int8_t* __restrict__ q_out, float* __restrict__ q_scale, const __half* __restrict__ q_smooth,
    uint32_t rows, uint32_t hidden, float eps) {
    layernorm_vec<true, false>(x, residual, bias, gamma, beta, out, q_out, q_scale, q_smooth, rows, hidden, eps);
}

// Baseline / any hidden: one block per row; dynamic shared = hidden floats.
extern "C" __global__ void layernorm_f16_simple(const __half* __restrict__ x, const __half* __restrict__ residual,
                                                const __half* __restrict__ bias, const __half* __restrict__ gamma,
                                                const __half* __restrict__ beta, __half* __restrict__ out,
                                                int8_t* __restrict__ q_out, float* __restrict__ q_scale,
                                                const __half* __restrict__ q_smooth, uint32_t hidden, float eps) {
    extern __shared__ float rowbuf[];
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * hidden;
    float sum = 0.f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float v = __half2float(x[base + i]);
        if (residual) v += __half2float(residual[base + i]);
        if (bias) v += __half2float(bias[i]);
        rowbuf[i] = v;
        sum += v;
    }
    const float mean = block_sum(sum, scratch) / (float)hidden;
    float sq = 0.f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float d = rowbuf[i] - mean;
        sq += d * d;
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)hidden + eps);
    float amax = 0.f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        const __half h = __float2half_rn((rowbuf[i] - mean) * rstd * __half2float(gamma[i]) + __half2float(beta[i]));
        out[base + i] = h;
        rowbuf[i] = __half2float(h) * (q_smooth ? __half2float(q_smooth[i]) : 1.f);
        amax = fmaxf(amax, fabsf(rowbuf[i]));
    }
    if (q_out) {
        amax = block_max(amax, scratch);
        const float inv = q8_inv_scale(amax);
        for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) q_out[base + i] = (int8_t)q8(rowbuf[i], inv);
        if (threadIdx.x == 0) q_scale[blockIdx.x] = amax / 127.f;
    }
}
