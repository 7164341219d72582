// Kernels for benches/emulator.rs (compiled once with
// nvcc -ptx -arch=sm_80 -lineinfo -O3 bench_kernels.cu -o bench_kernels.ptx; the PTX is checked in
// so the bench needs no toolchain).
#include <cuda_fp16.h>
#include <stdint.h>

// Memory-bound: y = a*x + y over a grid-stride loop.
extern "C" __global__ void saxpy_f32(const float* __restrict__ x, float* __restrict__ y, float a, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = a * x[i] + y[i];
}

// Tensor-core GEMM tile: C[M][N] (f32) = A[M][K] (f16, row-major) * B[N][K]^T (f16, [N][K]).
// Block = 4 warps computes a 64x32 tile; each warp a 16x32 strip (4 mma n-tiles). K step 32,
// tiles staged in shared memory with cp.async, fragments loaded with ldmatrix.
// Requires M % 64 == 0, N % 32 == 0, K % 32 == 0.
extern "C" __global__ void gemm_tile_f16(const half* __restrict__ A, const half* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ __align__(16) half sa[64][40];  // +8 halves padding against bank conflicts
    __shared__ __align__(16) half sb[32][40];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 32;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += 32) {
        // 64x32 A halves = 256 chunks of 8 halves; 32x32 B = 128 chunks
        for (int c = threadIdx.x; c < 256 + 128; c += blockDim.x) {
            const half* src;
            uint32_t dst;
            if (c < 256) {
                int r = c >> 2, col = (c & 3) * 8;
                src = A + (size_t)(m0 + r) * K + k0 + col;
                dst = (uint32_t)__cvta_generic_to_shared(&sa[r][col]);
            } else {
                int cc = c - 256, r = cc >> 2, col = (cc & 3) * 8;
                src = B + (size_t)(n0 + r) * K + k0 + col;
                dst = (uint32_t)__cvta_generic_to_shared(&sb[r][col]);
            }
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
        }
        asm volatile("cp.async.commit_group;\n");
        asm volatile("cp.async.wait_group 0;\n");
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 32; kk += 16) {
            uint32_t a0, a1, a2, a3;
            uint32_t aaddr = (uint32_t)__cvta_generic_to_shared(&sa[warp * 16 + (lane & 15)][kk + (lane >> 4) * 8]);
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(a0), "=r"(a1), "=r"(a2), "=r"(a3) : "r"(aaddr));
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                uint32_t b0, b1;
                uint32_t baddr = (uint32_t)__cvta_generic_to_shared(&sb[nt * 8 + (lane & 7)][kk + ((lane >> 3) & 1) * 8]);
                asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(baddr));
                asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                             : "+f"(acc[nt][0]), "+f"(acc[nt][1]), "+f"(acc[nt][2]), "+f"(acc[nt][3])
                             : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
            }
        }
        __syncthreads();
    }
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
        int row = m0 + warp * 16 + g, col = n0 + nt * 8 + 2 * t;
        C[(size_t)row * N + col] = acc[nt][0];
        C[(size_t)row * N + col + 1] = acc[nt][1];
        C[(size_t)(row + 8) * N + col] = acc[nt][2];
        C[(size_t)(row + 8) * N + col + 1] = acc[nt][3];
    }
}
