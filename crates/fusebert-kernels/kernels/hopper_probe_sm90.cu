// Hopper probe: the smallest warpgroup MMA, so the sm_90a build variant (files named *_sm90.cu
// compile for sm_90a only; see build.rs) has a kernel, and the emulator's wgmma can be checked
// against nvcc's own PTX for it. Test-only: no forward pass launches it.
//
// One warpgroup (128 threads, one block) computes D[64x8] = A[64x16] * B[16x8] + C[64x8] with
// `wgmma.mma_async.m64n8k16.f32.f16.f16`, both operands in shared memory, K-major (A row-major
// [m][k], B given as its transpose [n][k]), no swizzle: element (r, k) of an operand lives at
// `(r / 8) * SBO + (r % 8) * 16 + (k / 8) * LBO + (k % 8) * 2` bytes (8x16-byte core matrices,
// PTX ISA "Shared Memory Matrix Layout"), here with LBO = 128 (the next 8 k) and SBO = 256 (the
// next 8 rows).
#include <cuda_fp16.h>
#include <stdint.h>

namespace {

constexpr uint32_t kLbo = 128, kSbo = 256;

__device__ __forceinline__ uint32_t core_offset(uint32_t r, uint32_t k) {
    return (r / 8) * kSbo + (r % 8) * 16 + (k / 8) * kLbo + (k % 8) * 2;
}

// Matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address, LBO and SBO in 16-byte
// units (14 bits each at bits 0, 16, 32), base offset 0, swizzle mode 0 (none) in bits 62-63.
__device__ __forceinline__ uint64_t descriptor(const void* smem) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | static_cast<uint64_t>(kLbo >> 4) << 16 |
           static_cast<uint64_t>(kSbo >> 4) << 32;
}

// Ties a register to this point of the program (CUTLASS's warpgroup_fence_operand): without it
// the compiler may move the accumulator's initialising loads between `wgmma.fence` and the
// wgmma, which ptxas answers by serializing every wgmma of the kernel (warning C7515).
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

}  // namespace

extern "C" __global__ void __launch_bounds__(128)
    hopper_probe_wgmma_m64n8k16(const __half* __restrict__ a, const __half* __restrict__ b,
                                const float* __restrict__ c, float* __restrict__ d) {
    __shared__ __align__(128) __half sa[64 * 16];
    __shared__ __align__(128) __half sb[8 * 16];
    const uint32_t t = threadIdx.x;
    for (uint32_t i = t; i < 64 * 16; i += 128) sa[core_offset(i / 16, i % 16) / 2] = a[i];
    for (uint32_t i = t; i < 8 * 16; i += 128) sb[core_offset(i / 16, i % 16) / 2] = b[i];
    // generic-proxy stores, read by the async proxy (wgmma): fence, then make them block-wide
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();

    // the accumulator fragment: thread t = 32 w + 4 g + q holds
    // acc[i] = D[16 w + g + 8 (i / 2)][2 q + (i % 2)]
    const uint32_t w = t / 32, g = (t % 32) / 4, q = t % 4;
    float acc[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] = c[(16 * w + g + 8 * (i / 2)) * 8 + 2 * q + (i % 2)];
#pragma unroll
    for (int i = 0; i < 4; ++i) fence_operand(acc[i]);
    const uint64_t da = descriptor(sa), db = descriptor(sb);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    // scale-d = 1 (D = A B + D), no negation, both operands K-major (transpose flags 0)
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, 1, 1, 1, 0, 0;"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "l"(da), "l"(db)
        : "memory");
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
    for (int i = 0; i < 4; ++i) fence_operand(acc[i]);
#pragma unroll
    for (int i = 0; i < 4; ++i) d[(16 * w + g + 8 * (i / 2)) * 8 + 2 * q + (i % 2)] = acc[i];
}
