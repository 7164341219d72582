// Row gather for packed batches: out[b, :] = x[cu_seqlens[b], :] (the [CLS] row of each
// sequence), so the pooler and classifier GEMMs get a contiguous [B, H] operand.
//
// One block per sequence, 16-byte copies (hidden % 8 == 0, host-checked); empty sequences
// write zeros.
#include "common.cuh"

// CPU reference: out[b] = x[cu_seqlens[b]] (tests/forward_*.rs via the pooler output).
extern "C" __global__ void gather_first_rows_f16(const __half* __restrict__ x, const uint32_t* __restrict__ cu_seqlens,
                                                 __half* __restrict__ out, uint32_t hidden) {
    const uint32_t b = blockIdx.x, start = cu_seqlens[b], end = cu_seqlens[b + 1];
    const uint4* src = reinterpret_cast<const uint4*>(x + (size_t)start * hidden);
    uint4* dst = reinterpret_cast<uint4*>(out + (size_t)b * hidden);
    for (uint32_t i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
        dst[i] = end > start ? src[i] : make_uint4(0, 0, 0, 0);
    }
}
