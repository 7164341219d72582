// Sentence pooling over packed sequences (sentence-transformers' Pooling module): out[b, :] (f32)
// from the tokens of sequence b (cu_seqlens[b] .. cu_seqlens[b+1]), optionally L2-normalised
// (x / max(||x||, 1e-12), as sentence-transformers' Normalize).
// Modes (codes.cuh):
//   0 mean, 3 mean_sqrt_len_tokens (sum / sqrt(n)), 4 weightedmean (token i, counted from 0 at
//   the sequence start, has weight i + 1), 2 max (elementwise; -1e9 when no token is left, as
//   sentence-transformers' masked fill): over tokens skip .. len, the first `skip` tokens (a
//   prompt, include_prompt = false) masked out; mean divisors are clamped at 1e-9, so a fully
//   masked sequence gives zeros.
//   1 cls (token 0), 5 lasttoken (token len-1): not masked. An empty sequence gives zeros.
// One block per sequence; each thread owns column pairs (half2 loads: a warp reads 128
// contiguous bytes per token); the pooled row waits in shared memory for the norm.
// hidden % 2 == 0 (host-checked); dynamic shared = hidden floats.
#include "codes.cuh"
#include "common.cuh"

extern "C" __global__ void pool_f16(const __half* __restrict__ x, const uint32_t* __restrict__ cu_seqlens,
                                    float* __restrict__ out, uint32_t hidden, uint32_t mode, uint32_t skip,
                                    uint32_t l2norm) {
    extern __shared__ float pooled[];
    __shared__ float scratch[32];
    const uint32_t b = blockIdx.x, start = cu_seqlens[b], end = cu_seqlens[b + 1];
    const uint32_t len = end > start ? end - start : 0;
    // tokens [t0, t1) of the sequence, and what their (weighted) sum is multiplied by
    uint32_t t0 = skip < len ? skip : len, t1 = len;
    if (mode == POOL_CLS) t0 = 0, t1 = len > 0 ? 1 : 0;
    if (mode == POOL_LAST) t0 = len > 0 ? len - 1 : 0;
    const float n = (float)(t1 - t0);
    float mul = 1.f;
    if (mode == POOL_MEAN) mul = 1.f / fmaxf(n, 1e-9f);
    if (mode == POOL_MEAN_SQRT) mul = 1.f / sqrtf(fmaxf(n, 1e-9f));
    // sum of weights i + 1 over [t0, t1), exact in f32 below 2^24
    if (mode == POOL_WMEAN) mul = 1.f / fmaxf(0.5f * ((float)t1 * (t1 + 1) - (float)t0 * (t0 + 1)), 1e-9f);
    const bool is_max = mode == POOL_MAX;
    const __half2* rows = reinterpret_cast<const __half2*>(x + (size_t)start * hidden);
    float sq = 0.f;
    for (uint32_t c = threadIdx.x; c < hidden / 2; c += blockDim.x) {
        // max of a sequence whose tokens are all masked: -1e9 (sentence-transformers' fill);
        // an empty sequence (len 0) gives zeros in every mode
        const float init = is_max && len > 0 ? -1e9f : 0.f;
        float2 s = make_float2(init, init);
        for (uint32_t t = t0; t < t1; t++) {
            const float2 v = __half22float2(rows[(size_t)t * (hidden / 2) + c]);
            if (is_max) {
                s.x = fmaxf(s.x, v.x);
                s.y = fmaxf(s.y, v.y);
            } else {
                const float w = mode == POOL_WMEAN ? (float)(t + 1) : 1.f;
                s.x = fmaf(w, v.x, s.x);
                s.y = fmaf(w, v.y, s.y);
            }
        }
        s.x *= mul;
        s.y *= mul;
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
