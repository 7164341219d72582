// Per-token symmetric int8 quantisation of fp16 activations:
//   scale[r] = absmax(x[r, :]) / 127,  q[r, i] = clamp(round_half_even(x * (127 / absmax)), -127, 127)
// (all-zero rows: scale 0, codes 0). hidden % 8 == 0, hidden <= 4096 (host-checked).
// With `smooth` (per-column fp16 multipliers, may be null) x[r, j] * smooth[j] is quantised
// instead (SmoothQuant-style smoothing; see layernorm.cu).
// Asymmetric entries (quantize_i8_asym_f16[_wide], for one-sided inputs such as GELU outputs,
// which span [-0.17, max]): the row's range [min(0, x), max(0, x)] is mapped onto all 256 codes,
//   range = max - min,  inv = 255 / range,  zero[r] = round_half_even(-min * inv - 128),
//   q = clamp(round_half_even(x * inv) + zero, -128, 127),  scale[r] = range / 255,
// so x ~ (q - zero[r]) * scale[r] (all-zero rows: scale 0, zero 0, codes 0). A symmetric scale
// would leave half the codes unused on such rows; this halves the step. The GEMM removes the
// offset exactly in its epilogue: acc - zero[m] * sum_k w[n, k].
// A row is owned by a warp (quantize_i8_f16, hidden <= 1024: shuffle reductions, no barriers)
// or by the whole block (quantize_i8_f16_wide, e.g. the FFN's 3072); each thread keeps up to 4
// vectors of 8 halves (16-byte loads) in registers, so x is read once; codes leave as 8-byte
// stores.
#include "common.cuh"

template <bool WARP_ROW, bool ASYM>
__device__ __forceinline__ void quantize_rows(const __half* __restrict__ x, int8_t* __restrict__ q,
                                              float* __restrict__ scale, int32_t* __restrict__ zero,
                                              const __half* __restrict__ smooth, uint32_t rows, uint32_t hidden) {
    constexpr int VPT = 4;
    __shared__ float scratch[32];
    const uint32_t nvec = hidden / 8;
    const uint32_t gt = WARP_ROW ? (threadIdx.x & 31) : threadIdx.x, gs = WARP_ROW ? 32 : blockDim.x;
    const uint32_t groups = WARP_ROW ? blockDim.x / 32 : 1, group = WARP_ROW ? threadIdx.x / 32 : 0;
    for (uint32_t row = blockIdx.x * groups + group; row < rows; row += gridDim.x * groups) {
        const half8* xr = reinterpret_cast<const half8*>(x + (size_t)row * hidden);
        float f[VPT][8];
        float amax = 0.f, nmin = 0.f;  // max(0, max x) (absmax when symmetric), max(0, -min x)
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            const uint32_t v = gt + i * gs;
            if (v < nvec) {
                half8_to_float(ld_half8(&xr[v]), f[i]);
                if (smooth) {
                    float m[8];
                    half8_to_float(ld_half8(smooth + 8 * v), m);
#pragma unroll
                    for (int j = 0; j < 8; j++) f[i][j] *= m[j];
                }
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (ASYM) {
                        amax = fmaxf(amax, f[i][j]);
                        nmin = fmaxf(nmin, -f[i][j]);
                    } else {
                        amax = fmaxf(amax, fabsf(f[i][j]));
                    }
                }
            }
        }
        amax = WARP_ROW ? warp_max(amax) : block_max(amax, scratch);
        if (ASYM) nmin = WARP_ROW ? warp_max(nmin) : block_max(nmin, scratch);
        const Q8Asym asym = q8_asym_params(amax, nmin);  // (common.cuh: shared with gemm_sm90's _qa)
        const float inv = ASYM ? asym.inv : q8_inv_scale(amax);
        const int z = ASYM ? asym.zero : 0;
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            const uint32_t v = gt + i * gs;
            if (v < nvec) {
                int c[8];
#pragma unroll
                for (int j = 0; j < 8; j++) c[j] = ASYM ? q8_asym(f[i][j], inv, z) : q8(f[i][j], inv);
                reinterpret_cast<uint2*>(q + (size_t)row * hidden)[v] =
                    make_uint2(pack_s8x4(c[0], c[1], c[2], c[3]), pack_s8x4(c[4], c[5], c[6], c[7]));
            }
        }
        if (gt == 0) {
            scale[row] = ASYM ? asym.scale : amax / 127.f;
            if (ASYM) zero[row] = z;
        }
    }
}

extern "C" __global__ void quantize_i8_f16(const __half* __restrict__ x, int8_t* __restrict__ q,
                                           float* __restrict__ scale, const __half* __restrict__ smooth,
                                           uint32_t rows, uint32_t hidden) {
    quantize_rows<true, false>(x, q, scale, nullptr, smooth, rows, hidden);
}

extern "C" __global__ void quantize_i8_f16_wide(const __half* __restrict__ x, int8_t* __restrict__ q,
                                                float* __restrict__ scale, const __half* __restrict__ smooth,
                                                uint32_t rows, uint32_t hidden) {
    quantize_rows<false, false>(x, q, scale, nullptr, smooth, rows, hidden);
}

extern "C" __global__ void quantize_i8_asym_f16(const __half* __restrict__ x, int8_t* __restrict__ q,
                                                float* __restrict__ scale, int32_t* __restrict__ zero,
                                                const __half* __restrict__ smooth, uint32_t rows, uint32_t hidden) {
    quantize_rows<true, true>(x, q, scale, zero, smooth, rows, hidden);
}

extern "C" __global__ void quantize_i8_asym_f16_wide(const __half* __restrict__ x, int8_t* __restrict__ q,
                                                     float* __restrict__ scale, int32_t* __restrict__ zero,
                                                     const __half* __restrict__ smooth, uint32_t rows,
                                                     uint32_t hidden) {
    quantize_rows<false, true>(x, q, scale, zero, smooth, rows, hidden);
}
