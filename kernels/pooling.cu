// Sentence pooling over packed sequences: out[b, :] (f32) = mean of x[t, :] over the tokens of
// sequence b (cu_seqlens[b] .. cu_seqlens[b+1]) or the first (CLS) token, optionally L2-normalised
// (x / max(||x||, 1e-12), as sentence-transformers does). Empty sequences give zeros.
// One block per sequence; each thread sums column pairs (half2 loads: a warp reads 128
// contiguous bytes per token); the pooled row waits in shared memory for the norm.
// hidden % 2 == 0 (host-checked); dynamic shared = hidden floats.
#include "common.cuh"

extern "C" __global__ void pool_f16(const __half* __restrict__ x, const uint32_t* __restrict__ cu_seqlens,
                                    float* __restrict__ out, uint32_t hidden, uint32_t mode_cls, uint32_t l2norm) {
    extern __shared__ float pooled[];
    __shared__ float scratch[32];
    const uint32_t b = blockIdx.x, start = cu_seqlens[b], end = cu_seqlens[b + 1];
    const uint32_t len = end > start ? end - start : 0;
    const uint32_t ntok = mode_cls ? (len > 0 ? 1 : 0) : len;
    const float inv_n = ntok ? 1.f / (float)ntok : 0.f;
    float sq = 0.f;
    for (uint32_t c = threadIdx.x; c < hidden / 2; c += blockDim.x) {
        float2 s = make_float2(0.f, 0.f);
        for (uint32_t t = 0; t < ntok; t++) {
            const float2 v = __half22float2(reinterpret_cast<const __half2*>(x + (size_t)(start + t) * hidden)[c]);
            s.x += v.x;
            s.y += v.y;
        }
        s.x *= inv_n;
        s.y *= inv_n;
        pooled[2 * c] = s.x;
        pooled[2 * c + 1] = s.y;
        sq += s.x * s.x + s.y * s.y;
    }
    float scale = 1.f;
    if (l2norm) scale = 1.f / fmaxf(sqrtf(block_sum(sq, scratch)), 1e-12f);
    for (uint32_t c = threadIdx.x; c < hidden / 2; c += blockDim.x) {
        reinterpret_cast<float2*>(out + (size_t)b * hidden)[c] = make_float2(pooled[2 * c] * scale, pooled[2 * c + 1] * scale);
    }
}
