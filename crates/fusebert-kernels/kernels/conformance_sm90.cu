// Hopper conformance kernels (issue 22 item 5; research note shared/docs/research/hopper.md 2.3).
//
// Each `extern "C"` kernel is one small semantic case that writes raw 32-bit words to `out`; the
// runner (src/conformance.rs, `fusebert conformance`) runs every case on a real sm_90 GPU and,
// through the CUDA driver stand-in, on the PTX emulator, and compares the words bit for bit.
// Values are chosen so that every product and sum is exact (one-hot operands, f16 codes whose bit
// pattern is the element's slot index, small integers), except C7, which records the bits of
// Hopper's f32 accumulation. Nothing may hang on hardware: every mbarrier wait is bounded and
// records whether it completed.
//
// Build (done by build.rs for files whose stem ends in _sm90; by hand while iterating):
//   nvcc -gencode arch=compute_90a,code=sm_90a -ptx conformance_sm90.cu && ptxas -arch=sm_90a -v
#include <cuda.h>
#include <cuda_fp16.h>
#include <stdint.h>

// The dynamic shared memory of every case, aligned to the 1024-byte repeat of the 128-byte swizzle
// (C12 checks that the alignment holds on the absolute shared address).
extern __shared__ __align__(1024) uint8_t smem[];

// ---------------------------------------------------------------------------------------------
// wgmma (f32 += f16 x f16, both operands from shared memory; generated wrappers, one per N)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ void wg_f32_n8(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n8_nega(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, p, -1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n32(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n64(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_f32_n256(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(scale_d));
}

template <int N, int NEGA>
__device__ __forceinline__ void wg(float* d, uint64_t da, uint64_t db, uint32_t scale_d) {
    if constexpr (N == 8 && NEGA) wg_f32_n8_nega(d, da, db, scale_d);
    else if constexpr (N == 8) wg_f32_n8(d, da, db, scale_d);
    else if constexpr (N == 32) wg_f32_n32(d, da, db, scale_d);
    else if constexpr (N == 64) wg_f32_n64(d, da, db, scale_d);
    else wg_f32_n256(d, da, db, scale_d);
}

// Layout codes as in the descriptor's bits 62-63: 0 no swizzle (INTERLEAVE), 1 = 128B, 2 = 64B, 3 = 32B.
__device__ __forceinline__ uint32_t swz_width(int layout) { return layout == 1 ? 128 : layout == 2 ? 64 : 32; }

// 64-bit matrix descriptor: start, LBO, SBO encoded as (x & 0x3FFFF) >> 4, base offset 0.
__device__ __forceinline__ uint64_t make_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo, int layout) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) | ((uint64_t)layout << 62);
}

// Absolute shared address of element (r, k) of a K-major f16 operand at `base` (note 1.3):
// INTERLEAVE base + (r/8) SBO + (r%8) 16 + (k/8) LBO + (k%8) 2; swizzled swz(base + (r/8) SBO + (r%8) W + 2k).
__device__ __forceinline__ uint32_t kaddr(uint32_t base, int layout, uint32_t r, uint32_t k, uint32_t lbo, uint32_t sbo) {
    if (layout == 0) return base + (r / 8) * sbo + (r % 8) * 16 + (k / 8) * lbo + (k % 8) * 2;
    uint32_t w = swz_width(layout);
    uint32_t a = base + (r / 8) * sbo + (r % 8) * w + k * 2;
    uint32_t mask = layout == 1 ? 7 : layout == 2 ? 3 : 1;
    return a ^ (((a >> 7) & mask) << 4);
}

__device__ __forceinline__ uint16_t h(float x) { return __half_as_ushort(__float2half_rn(x)); }

// Shared memory of every wgmma case: A region [0, 8 KiB), B region [8 KiB, 24 KiB) of a
// 1024-aligned dynamic buffer (launched with exactly WG_SMEM dynamic bytes).
#define WG_A_BYTES 8192
#define WG_B_BYTES 16384
#define WG_SMEM (WG_A_BYTES + WG_B_BYTES)
// The code of f16 slot s of a code-filled region: the f16 whose bits are 0x0400 + s (a positive
// normal number, so one-hot products and their sums are exact and the result names the slot).
#define CODE(s) ((uint16_t)(0x0400 + (s)))

// Operand contents (VAR): 0 = B code-filled, A one-hot A[m][k] = (k == m % K);
// 1 = A code-filled, B one-hot B[k][n] = (k == n % K); 2 = fragment values A[m][0] = m + 1,
// A[m][1] = 1, B[0][n] = 1, B[1][n] = 128 n (D = m + 1 + 128 n); 3 = numerics (C7, bits only).
template <int N, int KB, int LA, int LBOA, int SBOA, int LB, int LBOB, int SBOB, int VAR, int SCALE_D, int NEGA, int PRE_BITS>
__device__ void wg_case(uint32_t* out) {
    const uint32_t t = threadIdx.x;
    const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const uint32_t a0 = s0, b0 = s0 + WG_A_BYTES;
    constexpr uint32_t K = KB * 16;
    uint16_t* sm16 = reinterpret_cast<uint16_t*>(smem);
    auto put = [&](uint32_t addr, uint16_t v) { sm16[(addr - s0) / 2] = v; };
    for (uint32_t i = t; i < WG_SMEM / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0;
    __syncthreads();
    if constexpr (VAR == 0) {
        for (uint32_t s = t; s < WG_B_BYTES / 2; s += blockDim.x) sm16[WG_A_BYTES / 2 + s] = CODE(s);
        if (t < 64) put(kaddr(a0, LA, t, t % K, LBOA, SBOA), h(1.0f));
    } else if constexpr (VAR == 1) {
        for (uint32_t s = t; s < WG_A_BYTES / 2; s += blockDim.x) sm16[s] = CODE(s);
        if (t < N) put(kaddr(b0, LB, t, t % K, LBOB, SBOB), h(1.0f));
    } else if constexpr (VAR == 2) {
        if (t < 64) {
            put(kaddr(a0, LA, t, 0, LBOA, SBOA), h(float(t + 1)));
            put(kaddr(a0, LA, t, 1, LBOA, SBOA), h(1.0f));
        }
        for (uint32_t n = t; n < N; n += blockDim.x) {
            put(kaddr(b0, LB, n, 0, LBOB, SBOB), h(1.0f));
            put(kaddr(b0, LB, n, 1, LBOB, SBOB), h(128.0f * n));
        }
    } else {
        // C7: row m: A[m][0] = +-1, A[m][k>0] = (m%16+1) 2^-14 (rows 48..63: 2^-24, subnormal);
        // B[0][n] = 1 - (n&1) 2^-11, B[k>0][n] = 2^-(8 + n%8): 15 products around one f32 ulp of 1.0.
        if (t < 64) {
            put(kaddr(a0, LA, t, 0, LBOA, SBOA), h(t < 32 ? 1.0f : -1.0f));
            for (uint32_t k = 1; k < 16; ++k)
                put(kaddr(a0, LA, t, k, LBOA, SBOA), h(float(t % 16 + 1) * (t >= 48 ? 0x1p-24f : 0x1p-14f)));
        }
        for (uint32_t n = t; n < N; n += blockDim.x) {
            put(kaddr(b0, LB, n, 0, LBOB, SBOB), h(1.0f - float(n & 1) * 0x1p-11f));
            for (uint32_t k = 1; k < 16; ++k) put(kaddr(b0, LB, n, k, LBOB, SBOB), h(ldexpf(1.0f, -(8 + int(n % 8)))));
        }
    }
    // generic stores -> async-proxy reads by wgmma: each writing thread fences, then the barrier
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = __uint_as_float(PRE_BITS);
    // pin the accumulator writes before wgmma.fence (CUTLASS warpgroup_fence_operand): otherwise
    // nvcc may sink them past the fence and ptxas injects its own (C7519)
#pragma unroll
    for (int i = 0; i < N / 2; ++i) asm volatile("" : "+f"(d[i])::"memory");
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int j = 0; j < KB; ++j) {
        // K step j: INTERLEAVE moves two 8-element core columns (2 LBO); swizzled rows move 32 B
        const uint32_t sa = LA == 0 ? a0 + j * 2 * LBOA : a0 + 32 * j;
        const uint32_t sb = LB == 0 ? b0 + j * 2 * LBOB : b0 + 32 * j;
        wg<N, NEGA>(d, make_desc(sa, LBOA, SBOA, LA), make_desc(sb, LBOB, SBOB, LB), j == 0 ? SCALE_D : 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < N / 2; ++i) out[t * (N / 2) + i] = __float_as_uint(d[i]);
}

#define WG_CASE(name, ...) \
    extern "C" __global__ void __launch_bounds__(128, 1) name(uint32_t* out) { wg_case<__VA_ARGS__>(out); }

//      name                             N   KB LA LBOA  SBOA  LB LBOB  SBOB VAR SC NEG PRE
// C1: the D fragment (every d[i] of every thread names its (m, n) as m + 1 + 128 n)
WG_CASE(conf_c1_frag_n8,                 8,   1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
WG_CASE(conf_c1_frag_n64,                64,  1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
WG_CASE(conf_c1_frag_n256,               256, 1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0)
// C3: K-major without swizzle, LBO != SBO both ways round, on B and on A (K = 64: 4 steps)
WG_CASE(conf_c3_kmajor_b_lbo128_sbo1024, 32,  4, 0, 128,  1024, 0, 128,  1024, 0, 1, 0, 0)
WG_CASE(conf_c3_kmajor_b_lbo512_sbo128,  32,  4, 0, 128,  1024, 0, 512,  128,  0, 1, 0, 0)
WG_CASE(conf_c3_kmajor_a_lbo1024_sbo128, 64,  4, 0, 1024, 128,  0, 128,  1024, 1, 1, 0, 0)
// C4: K-major swizzled, K advanced by start + 32 j inside the row (SBO = 8 rows of W bytes)
WG_CASE(conf_c4_sw128_b,                 32,  4, 1, 16,   1024, 1, 16,   1024, 0, 1, 0, 0)
WG_CASE(conf_c4_sw64_b,                  32,  2, 2, 16,   512,  2, 16,   512,  0, 1, 0, 0)
WG_CASE(conf_c4_sw32_b,                  32,  1, 3, 16,   256,  3, 16,   256,  0, 1, 0, 0)
WG_CASE(conf_c4_sw128_a,                 64,  4, 1, 16,   1024, 1, 16,   1024, 1, 1, 0, 0)
// C8: scale-d = 0 over accumulators holding 1000.0 with imm-scale-a = -1; scale-d = 1 over 0.5
WG_CASE(conf_c8_scale_d0_neg_a,          8,   1, 0, 128,  256,  0, 128,  256,  2, 0, 1, 0x447a0000)
WG_CASE(conf_c8_accumulate,              8,   1, 0, 128,  256,  0, 128,  256,  2, 1, 0, 0x3f000000)
// C7: f32 accumulation of f16 products around one ulp (bits recorded, no reference)
WG_CASE(conf_c7_numerics_n8,             8,   1, 0, 128,  256,  0, 128,  256,  3, 1, 0, 0)

// ---------------------------------------------------------------------------------------------
// mbarrier helpers (single-thread, instantaneous tests; waits bounded so hardware never hangs)
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t test_parity(uint32_t bar, uint32_t parity) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.test_wait.parity.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "r"(parity) : "memory");
    return r;
}
__device__ __forceinline__ uint32_t try_parity(uint32_t bar, uint32_t parity) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.try_wait.parity.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "r"(parity) : "memory");
    return r;
}
__device__ __forceinline__ uint32_t test_token(uint32_t bar, uint64_t token) {
    uint32_t r;
    asm volatile("{\n.reg .pred P;\nmbarrier.test_wait.shared::cta.b64 P, [%1], %2;\nselp.u32 %0, 1, 0, P;\n}\n"
                 : "=r"(r) : "r"(bar), "l"(token) : "memory");
    return r;
}
// Spins on try_wait.parity at most `tries` times; 1 if the phase completed, 0 if it gave up.
__device__ __forceinline__ uint32_t bounded_wait(uint32_t bar, uint32_t parity, uint32_t tries) {
    for (uint32_t i = 0; i < tries; ++i)
        if (try_parity(bar, parity)) return 1;
    return 0;
}
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// C11: the mbarrier state machine, driven by one thread; out[i] records each test in order
// (the expected values are in the comments: test_wait.parity p is true iff the phase of parity p,
// the current or the one before, has completed). State tokens are opaque: only tests of them
// are recorded, never their bits. out[31] = number of records.
extern "C" __global__ void conf_c11_mbarrier(uint32_t* out) {
    __shared__ __align__(8) uint64_t bar_storage;
    if (threadIdx.x != 0) return;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bar_storage));
    uint32_t n = 0;
    auto rec = [&](uint32_t v) { out[n++] = v; };
    mbar_init(bar, 2);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    rec(test_parity(bar, 0));  // 0: phase 0 pending
    rec(test_parity(bar, 1));  // 1: a fresh barrier passes parity 1
    uint64_t tok0;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(tok0) : "r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0: one of two arrivals
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], 16;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0: arrivals done, 16 bytes outstanding
    rec(test_token(bar, tok0));  // 0
    asm volatile("mbarrier.complete_tx.shared::cta.b64 [%0], 16;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 1: phase 0 completed
    rec(test_parity(bar, 1));  // 0: phase 1 pending
    rec(test_token(bar, tok0));  // 1
    // phase 1: bytes land before they are expected (tx goes negative), then two arrivals
    asm volatile("mbarrier.complete_tx.shared::cta.b64 [%0], 8;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 0
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], 8;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 0: tx back at 0, one arrival left
    uint64_t tok1;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(tok1) : "r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 1: phase 1 completed
    rec(test_parity(bar, 0));  // 0: phase 2 pending (parity 0 again)
    rec(test_token(bar, tok1));  // 1: tok1 was taken in phase 1 (its arrival completed it)
    // phase 2: noComplete with a count, then the arrival that completes it
    asm volatile("mbarrier.arrive.noComplete.shared::cta.b64 _, [%0], 1;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 0
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 0));  // 1: phase 2 completed
    rec(test_parity(bar, 1));  // 0: phase 3 pending
    rec(try_parity(bar, 0));   // 1: try_wait on a completed phase succeeds at once
    // phase 3: two arrivals in one instruction (count 2)
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], 2;\n" ::"r"(bar) : "memory");
    rec(test_parity(bar, 1));  // 1
    rec(test_parity(bar, 0));  // 0: phase 4 pending
    asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
    out[31] = n;
}

// ---------------------------------------------------------------------------------------------
// TMA (cp.async.bulk.tensor) loads and stores through a __grid_constant__ CUtensorMap
// ---------------------------------------------------------------------------------------------
// C9: one tile load of `bytes` bytes at the coordinates into 1024-aligned dynamic shared memory
// prefilled with 0xEEEEEEEE; out[0] = 1 when the mbarrier phase completed with expect_tx = the
// full box (out-of-bounds elements included), 0 if the bounded wait gave up; out[1..] = the
// shared bytes as words, exactly as the TMA left them (swizzle placement included).
template <int RANK>
__device__ void tma_load(const CUtensorMap& map, uint32_t* out, int c0, int c1, int c2, uint32_t bytes) {
    __shared__ __align__(8) uint64_t bar_storage;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&bar_storage));
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0xEEEEEEEEu;
    // the generic prefill must be ordered before the async-proxy writes of the TMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
        const uint64_t m = reinterpret_cast<uint64_t>(&map);
        if constexpr (RANK == 2)
            asm volatile(
                "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                ::"r"(s), "l"(m), "r"(c0), "r"(c1), "r"(bar) : "memory");
        else
            asm volatile(
                "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
                ::"r"(s), "l"(m), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
    }
    const uint32_t done = bounded_wait(bar, 0, 1u << 20);
    if (threadIdx.x == 0) out[0] = done;
    if (done)
        for (uint32_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) out[1 + i] = reinterpret_cast<uint32_t*>(smem)[i];
}

extern "C" __global__ void conf_c9_tma_load_2d(const __grid_constant__ CUtensorMap map, uint32_t* out, int c0, int c1, uint32_t bytes) {
    tma_load<2>(map, out, c0, c1, 0, bytes);
}
extern "C" __global__ void conf_c9_tma_load_3d(const __grid_constant__ CUtensorMap map, uint32_t* out, int c0, int c1, int c2, uint32_t bytes) {
    tma_load<3>(map, out, c0, c1, c2, bytes);
}

// C10: a tile store of the box (words 0xC0DE0000 + i, filled by the generic proxy and fenced)
// at the coordinates; the runner reads back the whole tensor, prefilled with a sentinel, so the
// words show which elements were written (in-bounds ones only) and which kept the sentinel.
extern "C" __global__ void conf_c10_tma_store_2d(const __grid_constant__ CUtensorMap map, int c0, int c1, uint32_t words) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0xC0DE0000u + i;
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n"
                     ::"l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(s) : "memory");
        asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
        asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
    }
}

// ---------------------------------------------------------------------------------------------
// C12: shared-memory addresses. out = [static array's shared address, dynamic buffer's shared
// address, dynamic & 1023, %dynamic_smem_size, %total_smem_size, generic(static) & 0x3FFFF,
// generic(dynamic) & 0x3FFFF, a second static array's shared address]
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void conf_c12_smem_addresses(uint32_t* out) {
    __shared__ __align__(16) uint32_t st[4];
    __shared__ __align__(8) uint64_t st2;
    if (threadIdx.x != 0) return;
    st[0] = 1;
    st2 = 2;
    smem[0] = 3;
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(st));
    const uint32_t b = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    uint32_t dyn, total;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dyn));
    asm volatile("mov.u32 %0, %%total_smem_size;\n" : "=r"(total));
    out[0] = a;
    out[1] = b;
    out[2] = b & 1023;
    out[3] = dyn;
    out[4] = total;
    out[5] = static_cast<uint32_t>(reinterpret_cast<uint64_t>(st) & 0x3FFFF);
    out[6] = static_cast<uint32_t>(reinterpret_cast<uint64_t>(smem) & 0x3FFFF);
    out[7] = static_cast<uint32_t>(__cvta_generic_to_shared(&st2));
}

// ---------------------------------------------------------------------------------------------
// C13: elect.sync under masks. Test j uses MASKS[j]; member lanes execute it and write
// out[32 j + lane] = 0x10000 | pred << 8 | elected lane; other lanes write 0.
// ---------------------------------------------------------------------------------------------
__constant__ uint32_t ELECT_MASKS[6] = {0xffffffffu, 0xfffffff0u, 0x0f0f0f00u, 0x80000001u, 0x00010000u, 0x7ffffffeu};

extern "C" __global__ void conf_c13_elect_sync(uint32_t* out) {
    const uint32_t lane = threadIdx.x & 31;
    for (int j = 0; j < 6; ++j) {
        const uint32_t mask = ELECT_MASKS[j];
        uint32_t v = 0;
        if ((mask >> lane) & 1) {
            uint32_t leader, pred;
            asm volatile("{\n.reg .pred P;\nelect.sync %0|P, %2;\nselp.u32 %1, 1, 0, P;\n}\n"
                         : "=r"(leader), "=r"(pred) : "r"(mask));
            v = 0x10000u | (pred << 8) | leader;
        }
        out[32 * j + lane] = v;
        __syncwarp();
    }
}

// ---------------------------------------------------------------------------------------------
// C14: a __grid_constant__ struct read through its parameter address (cvta.param), word by word
// at run-time indices (so the reads cannot be folded into ld.param of constant offsets).
// ---------------------------------------------------------------------------------------------
struct ConfParams {
    uint32_t a[5];
    uint64_t b;
    float c;
    uint16_t h[3];
    uint8_t tail[6];
};  // 40 bytes, 8-aligned

extern "C" __global__ void conf_c14_grid_constant(const __grid_constant__ ConfParams p, uint32_t* out, uint32_t words) {
    const uint32_t* w = reinterpret_cast<const uint32_t*>(&p);
    for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) out[i] = w[i];
}
