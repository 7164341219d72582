// Per-token symmetric int8 quantisation of fp16 activations:
//   scale[r] = absmax(x[r, :]) / 127,  q[r, i] = clamp(round_half_even(x * (127 / absmax)), -127, 127)
// (all-zero rows: scale 0, codes 0). hidden % 8 == 0, hidden <= 4096 (host-checked).
// With `smooth` (per-column fp16 multipliers, may be null) x[r, j] * smooth[j] is quantised
// instead (SmoothQuant-style smoothing; see layernorm.cu).
// A row is owned by a warp (quantize_i8_f16, hidden <= 1024: shuffle reductions, no barriers)
// or by the whole block (quantize_i8_f16_wide, e.g. the FFN's 3072); each thread keeps up to 4
// vectors of 8 halves (16-byte loads) in registers, so x is read once; codes leave as 8-byte
// stores.
#include "common.cuh"

template <bool WARP_ROW>
__device__ __forceinline__ void quantize_rows(const __half* __restrict__ x, int8_t* __restrict__ q,
                                              float* __restrict__ scale, const __half* __restrict__ smooth,
                                              uint32_t rows, uint32_t hidden) {
    constexpr int VPT = 4;
    __shared__ float scratch[32];
    const uint32_t nvec = hidden / 8;
    const uint32_t gt = WARP_ROW ? (threadIdx.x & 31) : threadIdx.x, gs = WARP_ROW ? 32 : blockDim.x;
    const uint32_t groups = WARP_ROW ? blockDim.x / 32 : 1, group = WARP_ROW ? threadIdx.x / 32 : 0;
    for (uint32_t row = blockIdx.x * groups + group; row < rows; row += gridDim.x * groups) {
        const half8* xr = reinterpret_cast<const half8*>(x + (size_t)row * hidden);
        float f[VPT][8];
        float amax = 0.f;
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
                for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(f[i][j]));
            }
        }
        amax = WARP_ROW ? warp_max(amax) : block_max(amax, scratch);
        const float inv = q8_inv_scale(amax);
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            const uint32_t v = gt + i * gs;
            if (v < nvec) {
                const float* h = f[i];
                reinterpret_cast<uint2*>(q + (size_t)row * hidden)[v] =
                    make_uint2(pack_s8x4(q8(h[0], inv), q8(h[1], inv), q8(h[2], inv), q8(h[3], inv)),
                               pack_s8x4(q8(h[4], inv), q8(h[5], inv), q8(h[6], inv), q8(h[7], inv)));
            }
        }
        if (gt == 0) scale[row] = amax / 127.f;
    }
}

extern "C" __global__ void quantize_i8_f16(const __half* __restrict__ x, int8_t* __restrict__ q,
                                           float* __restrict__ scale, const __half* __restrict__ smooth,
                                           uint32_t rows, uint32_t hidden) {
    quantize_rows<true>(x, q, scale, smooth, rows, hidden);
}

extern "C" __global__ void quantize_i8_f16_wide(const __half* __restrict__ x, int8_t* __restrict__ q,
                                                float* __restrict__ scale, const __half* __restrict__ smooth,
                                                uint32_t rows, uint32_t hidden) {
    quantize_rows<false>(x, q, scale, smooth, rows, hidden);
}
