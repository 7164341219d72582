// Shared helpers for fusebert kernels: reductions, vector types, fp16 packing.
// Every kernel is `extern "C"` so its PTX entry name is the plain function name.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

#define FB_DEVICE __device__ __forceinline__

// 16-byte vector of 8 halves, for 128-bit loads and stores.
struct __align__(16) half8 {
    __half2 h[4];
};

FB_DEVICE float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

FB_DEVICE float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32
// floats. Ends with a barrier, so scratch can be reused right after.
FB_DEVICE float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int nwarps = blockDim.x >> 5;
    float t = lane < nwarps ? scratch[lane] : 0.f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}
