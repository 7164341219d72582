// Small kernels with deliberate bugs (and one legal corner case) for the emulator's sanitizer
// tests (tests/emu_smoke.rs). PTX checked in: sanitize_cases.ptx (nvcc -ptx -arch=sm_80 -lineinfo -O3).
#include <stdint.h>
#include <assert.h>
#include <cuda_fp16.h>
#include <cstdio>

extern "C" __global__ void oob_store(float* p, int n) {
    p[threadIdx.x] = (float)n;  // no bounds check: threads >= n write past the end
}

extern "C" __global__ void smem_race(float* out) {
    __shared__ float s[64];
    s[threadIdx.x] = 0.0f;
    __syncthreads();
    s[threadIdx.x] = (float)threadIdx.x;
    // missing __syncthreads(): reads a word the other warp writes in the same interval
    out[threadIdx.x] = s[(threadIdx.x + 32) & 63];
}

extern "C" __global__ void smem_uninit(float* out) {
    __shared__ float s[64];
    if (threadIdx.x < 32) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];  // words 32..63 were never written
}

extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x & 1) __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Legal: threads past n return before the barrier; exited threads do not hold it up.
extern "C" __global__ void early_exit_barrier(float* out, int n) {
    __shared__ float s[128];
    if ((int)threadIdx.x >= n) return;
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[n - 1 - threadIdx.x];
}

extern "C" __global__ void shfl_partial(float* out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

extern "C" __global__ void misaligned_load(const char* p, float* out) {
    out[threadIdx.x] = *(const float*)(p + 4 * threadIdx.x + 2);
}

extern "C" __global__ void cp_async_hazard(const float* in, float* out) {
    __shared__ __align__(16) float s[32];
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(&s[threadIdx.x]);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(in + threadIdx.x));
    asm volatile("cp.async.commit_group;\n");
    out[threadIdx.x] = s[threadIdx.x];  // read before cp.async.wait_group
    asm volatile("cp.async.wait_group 0;\n");
}

extern "C" __global__ void spin_forever(volatile int* flag) {
    while (*flag == 0) {
    }
}

// Warp 0 waits at barrier 0, warp 1 at barrier 1 expecting 64 threads: nobody can proceed.
extern "C" __global__ void barrier_deadlock(float* out) {
    if (threadIdx.x < 32) {
        asm volatile("bar.sync 0, 64;\n");
    } else {
        asm volatile("bar.sync 1, 64;\n");
    }
    out[threadIdx.x] = 1.0f;
}

// Divergence and reconvergence: nested branches and a data-dependent loop, then a warp reduction.
extern "C" __global__ void diverge_reconverge(const int* in, int* out) {
    int x = in[threadIdx.x];
    int acc = 0;
    if (x & 1) {
        for (int i = 0; i < (x & 7); ++i) acc += i * x;
        if (x & 2) acc ^= 0x55;
    } else {
        acc = x * 3;
        if (x & 4) {
            for (int i = 0; i < 3; ++i) acc -= i;
        }
    }
    unsigned b = __ballot_sync(0xffffffffu, acc & 1);
    int s = acc;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    out[threadIdx.x] = acc + (int)(b & 0xff) + s;
}

// Plain y = a * x (for the CLI test).
extern "C" __global__ void scale_f32(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}

// A device function nvcc keeps out of line (a real call in the emulator) and an assert.
__device__ __noinline__ float weighted_sum(float x, int k) {
    float s = 0.f;
    for (int i = 0; i < k; ++i) s += x * (float)i;
    return s;
}

extern "C" __global__ void call_and_assert(float* y, int n) {
    int i = threadIdx.x;
    assert(i < n);
    y[i] = weighted_sum(y[i], i & 7) + weighted_sum(1.f, 3);
}

// wmma 16x16x16: D = A (row-major, lda) * B (col-major, ldb) + C; D stored column-major.
#include <mma.h>
extern "C" __global__ void wmma_tile(const half* a, const half* b, const float* c, float* d, int lda, int ldb) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, a, lda);
    wmma::load_matrix_sync(fb, b, ldb);
    wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d, fc, 16, wmma::mem_col_major);
}

// Producer/consumer with a named barrier: warp 0 fills shared memory and arrives on barrier 1;
// warp 1 waits on it (bar.sync 1, 64) and consumes.
extern "C" __global__ void named_barrier_pc(float* out) {
    __shared__ float buf[32];
    int lane = threadIdx.x & 31;
    if (threadIdx.x < 32) {
        buf[lane] = (float)(lane * 3);
        asm volatile("bar.arrive 1, 64;\n" ::: "memory");
    } else {
        asm volatile("bar.sync 1, 64;\n" ::: "memory");
        out[lane] = buf[31 - lane] + 1.0f;
    }
}

// Device printf (the emulator formats and prints it).
extern "C" __global__ void hello_printf(int k) {
    if (threadIdx.x < 2) printf("thread %d of %d: k=%d x=%.2f %s\n", threadIdx.x, blockDim.x, k, 1.5f * threadIdx.x, "ok");
}
