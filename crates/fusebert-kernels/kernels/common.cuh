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

// ---------------------------------------------------------------------------------------------
// Async copies, ldmatrix and tensor-core mma (inline PTX; fragment layouts: docs/ptx-semantics.md).

// Shared-window address of a shared-memory pointer (what cp.async/ldmatrix .shared take).
FB_DEVICE uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte global->shared copy; src_bytes < 16 zero-fills the rest (0 = read nothing: the
// predicated tail idiom). .cg bypasses L1 (operands are streamed once per block).
FB_DEVICE void cp_async16(uint32_t dst, const void* src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
FB_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
FB_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// 64-bit shared store, explicit so the compiler cannot split it into two 32-bit stores (which
// would turn a conflict-free 16-lane phase into a 2-way conflicted 32-lane one).
FB_DEVICE void st_shared_v2(uint32_t addr, uint32_t a, uint32_t b) {
    asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(addr), "r"(a), "r"(b) : "memory");
}

FB_DEVICE void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
FB_DEVICE void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

// D = A(16x32 s8) . B(32x8 s8) + D, s32 accumulators.
FB_DEVICE void mma_s8_16832(int* d, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// D = A(16x16 f16) . B(16x8 f16) + D, f32 accumulators.
FB_DEVICE void mma_f16_16816(float* d, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

FB_DEVICE float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

FB_DEVICE uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

// 1 / x to 1 ulp (MUFU.RCP; subnormals flushed).
FB_DEVICE float fast_rcp(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// GELU, erf form (what BERT's `gelu` is): x * Phi(x), Phi the normal CDF, in f32 without erff.
// With a = |x| and q = Phi(-a) = 0.5 erfc(a / sqrt 2): Phi(x) = 1 - q for x >= 0, q below.
// q = t * S(t) * exp(-a^2 / 2) with t = 1 / (1 + 0.35 a), S a degree-8 polynomial fitted for
// relative error (Lawson-weighted least squares to mpmath's erfc, scripts/fit-gelu-erf.py; max
// 4.8e-7 on all of t in [0, 1], i.e. every a >= 0): unlike 1 + erff(x / sqrt 2), the negative
// tail keeps its relative accuracy (no cancellation). Measured on the emulator against the f64 GELU
// (tests/kernels_gelu.rs, 1e5 inputs): max rel 1.1e-6 where |GELU| >= 2^-14 (the erff form:
// 2e-3, from 1 + erf cancelling for x < 0), max abs 3.8e-7 on [-10, 10]; far below the fp16
// output's 2^-12. SASS per element (ptxas 13.0, sm_80 and sm_90): 20 instructions (MUFU.RCP,
// MUFU.EX2, 9 FFMA, 5 FMUL, FSETP, FADD, 2 constant moves) against 33 for the erff form (two
// coefficient sets picked by FSEL, a predicated MUFU.EX2 tail). NaN propagates, +inf -> +inf,
// -inf -> NaN (as the erff form). gelu_erf_libm keeps the erff form as the activation probes'
// baseline.
FB_DEVICE float gelu_erf(float x) {
    const float a = fabsf(x);
    const float t = fast_rcp(fmaf(0.35f, a, 1.f));
    float s = -0.019550152f;
    s = fmaf(s, t, 0.103236943f);
    s = fmaf(s, t, -0.183936387f);
    s = fmaf(s, t, 0.0911546052f);
    s = fmaf(s, t, 0.0144494455f);
    s = fmaf(s, t, 0.0932635143f);
    s = fmaf(s, t, 0.122109570f);
    s = fmaf(s, t, 0.139642984f);
    s = fmaf(s, t, 0.139629737f);
    const float e = fast_exp2(a * -0.72134752f * a);  // exp(-a^2 / 2)
    const float q = t * e * s;
    return x * (x >= 0.f ? 1.f - q : q);
}
// The erff form, 0.5 x (1 + erf(x / sqrt 2)): the previous epilogue GELU, kept as the baseline
// of the activation probe.
FB_DEVICE float gelu_erf_libm(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
// GELU, tanh approximation (gelu_new / gelu_pytorch_tanh): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
FB_DEVICE float gelu_tanh(float x) {
    return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
// SiLU, x * sigmoid(x); x -> -inf gives x / inf = -0, no NaN.
FB_DEVICE float silu(float x) { return x / (1.f + expf(-x)); }

// Per-token symmetric int8: q = round_half_even(v * (127 / absmax)), scale = absmax / 127.
// The CPU references compute the same f32 operations, so the int8 codes match exactly.
FB_DEVICE float q8_inv_scale(float absmax) { return absmax > 0.f ? 127.f / absmax : 0.f; }
FB_DEVICE int q8(float v, float inv) {
    int q = __float2int_rn(v * inv);
    return max(-127, min(127, q));
}
// Asymmetric code: x * inv rounded, shifted by the row's zero point, all 256 codes usable.
FB_DEVICE int q8_asym(float v, float inv, int zero) {
    const int q = __float2int_rn(v * inv) + zero;
    return max(-128, min(127, q));
}
// A row's asymmetric quantisation from max(0, max x) and max(0, -min x) (quantize.cu's formula,
// shared with the Hopper GEMM's fused quantisation so both give the same bits): code step
// `inv`, zero point and scale (an all-zero row: 0, 0, 0).
struct Q8Asym {
    float inv, scale;
    int zero;
};
FB_DEVICE Q8Asym q8_asym_params(float pmax, float nmin) {
    const float range = pmax + nmin;
    const float inv = range > 0.f ? 255.f / range : 0.f;
    // __fmul_rn: no fma contraction, so the host reference reproduces the zero point exactly
    const int z = range > 0.f ? __float2int_rn(__fmul_rn(nmin, inv) - 128.f) : 0;
    return {inv, range / 255.f, z};
}
FB_DEVICE uint32_t pack_s8x4(int a, int b, int c, int d) {
    return (uint32_t)(a & 0xff) | ((uint32_t)(b & 0xff) << 8) | ((uint32_t)(c & 0xff) << 16) | ((uint32_t)d << 24);
}

// Max over the whole block; same contract as block_sum.
FB_DEVICE float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int nwarps = blockDim.x >> 5;
    float t = lane < nwarps ? scratch[lane] : 0.f;
    t = warp_max(t);
    __syncthreads();
    return t;
}

// 128-bit load/store of a half8 (a plain struct copy compiles to four 32-bit accesses).
FB_DEVICE half8 ld_half8(const void* p) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    half8 h;
    *reinterpret_cast<uint4*>(&h) = u;
    return h;
}
FB_DEVICE void st_half8(void* p, const half8& h) { *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&h); }

FB_DEVICE void half8_to_float(const half8& h, float* f) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 p = __half22float2(h.h[j]);
        f[2 * j] = p.x;
        f[2 * j + 1] = p.y;
    }
}
FB_DEVICE half8 float_to_half8(const float* f) {
    half8 h;
#pragma unroll
    for (int j = 0; j < 4; j++) h.h[j] = __floats2half2_rn(f[2 * j], f[2 * j + 1]);
    return h;
}
