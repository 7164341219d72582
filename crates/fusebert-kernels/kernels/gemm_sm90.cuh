// The device code of the Hopper GEMM family (gemm_sm90.cu: its design comment), as a header so
// that other _sm90 kernels (qkv_attention_sm90.cu) run the same main loop and epilogue arithmetic:
// the same bits. Include only from *_sm90.cu files.
#pragma once
#include <cuda.h>

#include <type_traits>

#include "codes.cuh"
#include "common.cuh"
#include "hopper_async.cuh"
#include "ln_blocked.cuh"
#include "ln_fused.cuh"

namespace sm90 {
constexpr int BM = 128, ROW_BYTES = 128;  // a K row of a box: 64 f16 or 128 s8, swizzled
constexpr int THREADS = 384, CONSUMER_THREADS = 256, WG_THREADS = 128;
constexpr int A_BYTES = BM * ROW_BYTES;
// one 64 x 64 fp16 output box: 64 rows of 128 bytes in the 128-byte swizzle
constexpr int OUT_BOX_BYTES = 64 * ROW_BYTES;

// The geometry of a BM x BN tile (the entries without a suffix: BN 128; _n192: 192).
// - ACC: accumulators per consumer thread (a warpgroup's 64 x BN f32 or s32 over 128 threads).
// - The ring: STAGES of (A box, W box); 4 at BN 128, 3 at 192, so that everything fits 227 KiB.
// - A region per consumer warpgroup after the ring, its K-chunk fold (the fp16 entries: word i
//   of warpgroup thread t at (i * 128 + t) * 4, a warp's accesses one 128-byte line) and, from
//   the epilogue on, its output staging (BN / 64 boxes of 64 x 64 fp16): the two never live at
//   once, and each warpgroup touches only its own region, so a warpgroup barrier orders them.
template <int BN_>
struct Geom {
    static constexpr int BN = BN_, ACC = BN / 2, PAIRS = BN / 8, BOXES = BN / 64;
    static constexpr int B_BYTES = BN * ROW_BYTES, STAGE_BYTES = A_BYTES + B_BYTES;
    static constexpr int STAGES = BN <= 128 ? 4 : 3;
    static constexpr int RING_BYTES = STAGES * STAGE_BYTES;
    static constexpr int REGION_BYTES = ACC * WG_THREADS * 4;
    static constexpr int SMEM = RING_BYTES + 2 * REGION_BYTES;  // dynamic shared bytes (src/gemm_sm90.rs: smem)
    static_assert(SMEM + 1024 <= 227 * 1024, "the ring, the regions and the barriers fit an sm_90 block");
    static_assert(B_BYTES % 1024 == 0 && RING_BYTES % 1024 == 0 && REGION_BYTES % 1024 == 0,
                  "every box starts on the 1024-byte swizzle repeat");
    static_assert(BOXES * OUT_BOX_BYTES <= REGION_BYTES, "the staging fits the region");
};
static_assert(A_BYTES % 1024 == 0, "every box starts on the 1024-byte swizzle repeat");

// 2-D TMA tile store of the box at shared `src` to {c0 (columns), c1 (rows)}, in a bulk group.
FB_DEVICE void tma_store_2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(src)
                 : "memory");
}
FB_DEVICE void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// This thread's bulk stores have read their shared sources (the staging may be rewritten).
FB_DEVICE void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// This thread's bulk stores are complete: their global writes are performed.
FB_DEVICE void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
// Generic-proxy shared-memory writes before this fence are visible to the async proxy after it.
FB_DEVICE void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Orders async-proxy global writes (TMA stores) with this thread's later generic accesses.
FB_DEVICE void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;\n" ::: "memory"); }

// K-major, 128-byte-swizzled matrix descriptor (hopper.md 1.2): start >> 4, LBO 16 (encoded 1;
// unused by swizzled K-major layouts), SBO 1024 (8 rows of 128 bytes), swizzle code 1 = 128B.
FB_DEVICE uint64_t desc_sw128(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

// The 64 accumulator registers of a 64 x 128 wgmma, as asm operands (f32: "+f", s32: "+r").
#define WGMMA_D64(C)                                                                                           \
    C(d[0]), C(d[1]), C(d[2]), C(d[3]), C(d[4]), C(d[5]), C(d[6]), C(d[7]), C(d[8]), C(d[9]), C(d[10]),        \
        C(d[11]), C(d[12]), C(d[13]), C(d[14]), C(d[15]), C(d[16]), C(d[17]), C(d[18]), C(d[19]), C(d[20]),    \
        C(d[21]), C(d[22]), C(d[23]), C(d[24]), C(d[25]), C(d[26]), C(d[27]), C(d[28]), C(d[29]), C(d[30]),    \
        C(d[31]), C(d[32]), C(d[33]), C(d[34]), C(d[35]), C(d[36]), C(d[37]), C(d[38]), C(d[39]), C(d[40]),    \
        C(d[41]), C(d[42]), C(d[43]), C(d[44]), C(d[45]), C(d[46]), C(d[47]), C(d[48]), C(d[49]), C(d[50]),    \
        C(d[51]), C(d[52]), C(d[53]), C(d[54]), C(d[55]), C(d[56]), C(d[57]), C(d[58]), C(d[59]), C(d[60]),    \
        C(d[61]), C(d[62]), C(d[63])
#define WGMMA_REGS64                                                                                           \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                  \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                         \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                         \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define F32_ACC(x) "+f"(x)
#define S32_ACC(x) "+r"(x)

// d += A(64 x 16) . B(16 x 128)^T (f16, f32 accumulation), A and B from shared memory;
// scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WGMMA_REGS64 ", %64, %65, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_D64(F32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}
// d += A(64 x 32) . B(32 x 128)^T (s8, exact s32 accumulation; integer wgmma has no scale or
// transpose immediates: K-major only), A and B from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n128k32_s8(int (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " WGMMA_REGS64 ", %64, %65, p;\n"
        "}\n"
        : WGMMA_D64(S32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}

// The 96 accumulator registers of a 64 x 192 wgmma.
#define WGMMA_D96(C) C(d[0]), C(d[1]), C(d[2]), C(d[3]), C(d[4]), C(d[5]), C(d[6]), C(d[7]), C(d[8]), C(d[9]), C(d[10]), C(d[11]), C(d[12]), C(d[13]), C(d[14]), C(d[15]), C(d[16]), C(d[17]), C(d[18]), C(d[19]), C(d[20]), C(d[21]), C(d[22]), C(d[23]), C(d[24]), C(d[25]), C(d[26]), C(d[27]), C(d[28]), C(d[29]), C(d[30]), C(d[31]), C(d[32]), C(d[33]), C(d[34]), C(d[35]), C(d[36]), C(d[37]), C(d[38]), C(d[39]), C(d[40]), C(d[41]), C(d[42]), C(d[43]), C(d[44]), C(d[45]), C(d[46]), C(d[47]), C(d[48]), C(d[49]), C(d[50]), C(d[51]), C(d[52]), C(d[53]), C(d[54]), C(d[55]), C(d[56]), C(d[57]), C(d[58]), C(d[59]), C(d[60]), C(d[61]), C(d[62]), C(d[63]), C(d[64]), C(d[65]), C(d[66]), C(d[67]), C(d[68]), C(d[69]), C(d[70]), C(d[71]), C(d[72]), C(d[73]), C(d[74]), C(d[75]), C(d[76]), C(d[77]), C(d[78]), C(d[79]), C(d[80]), C(d[81]), C(d[82]), C(d[83]), C(d[84]), C(d[85]), C(d[86]), C(d[87]), C(d[88]), C(d[89]), C(d[90]), C(d[91]), C(d[92]), C(d[93]), C(d[94]), C(d[95])
#define WGMMA_REGS96 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"
// d += A(64 x 16) . B(16 x 192)^T (f16, f32 accumulation) from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n192k16(float (&d)[96], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 " WGMMA_REGS96 ", %96, %97, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_D96(F32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}
// d += A(64 x 32) . B(32 x 192)^T (s8, exact s32) from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n192k32_s8(int (&d)[96], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k32.s32.s8.s8 " WGMMA_REGS96 ", %96, %97, p;\n"
        "}\n"
        : WGMMA_D96(S32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}

// The 32 accumulator registers of a 64 x 64 wgmma (the attention blocks' output tiles).
#define WGMMA_D32(C) C(d[0]), C(d[1]), C(d[2]), C(d[3]), C(d[4]), C(d[5]), C(d[6]), C(d[7]), C(d[8]), C(d[9]), C(d[10]), C(d[11]), C(d[12]), C(d[13]), C(d[14]), C(d[15]), C(d[16]), C(d[17]), C(d[18]), C(d[19]), C(d[20]), C(d[21]), C(d[22]), C(d[23]), C(d[24]), C(d[25]), C(d[26]), C(d[27]), C(d[28]), C(d[29]), C(d[30]), C(d[31])
#define WGMMA_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
// d += A(64 x 16) . B(16 x 64)^T (f16, f32 accumulation) from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n64k16(float (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " WGMMA_REGS32 ", %32, %33, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_D32(F32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}
// d += A(64 x 32) . B(32 x 64)^T (s8, exact s32) from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n64k32_s8(int (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 " WGMMA_REGS32 ", %32, %33, p;\n"
        "}\n"
        : WGMMA_D32(S32_ACC)
        : "l"(da), "l"(db), "r"(scale_d));
}

// The operand types: accumulator type, elements per 128-byte K row (the TMA box's inner
// extent and the K of a stage), and the wgmma of one 32-byte K step (N = 2 x the accumulators).
struct F16Op {
    using Acc = float;
    static constexpr int BK = 64;
    static constexpr bool CHUNKED = true;  // f32 sums are folded in K-chunk order (see SplitK)
    FB_DEVICE static void mma(float (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n64k16(d, da, db, scale_d);
    }
    FB_DEVICE static void mma(float (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n128k16(d, da, db, scale_d);
    }
    FB_DEVICE static void mma(float (&d)[96], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n192k16(d, da, db, scale_d);
    }
};
struct S8Op {
    using Acc = int;
    static constexpr int BK = 128;
    static constexpr bool CHUNKED = false;  // s32 sums are exact in any order
    FB_DEVICE static void mma(int (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n64k32_s8(d, da, db, scale_d);
    }
    FB_DEVICE static void mma(int (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n128k32_s8(d, da, db, scale_d);
    }
    FB_DEVICE static void mma(int (&d)[96], uint64_t da, uint64_t db, uint32_t scale_d) {
        wgmma_m64n192k32_s8(d, da, db, scale_d);
    }
};

// Pins an accumulator register across an asm statement (the compiler neither reads nor moves it).
FB_DEVICE void pin(float& x) { asm volatile("" : "+f"(x)::"memory"); }
FB_DEVICE void pin(int& x) { asm volatile("" : "+r"(x)::"memory"); }
template <int N, typename Acc, int A>
FB_DEVICE void wgmma_wait(Acc (&d)[A]) {
    // the accumulators are operands so that the compiler neither reads nor moves them across the
    // wait (reading them before it is sanitizer S1)
#pragma unroll
    for (int i = 0; i < A; i++) pin(d[i]);
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#pragma unroll
    for (int i = 0; i < A; i++) pin(d[i]);
}

// Applies epilogue code EPI to one column pair after + bias (f32): the activation, or the
// residual's pair at `idx` (an even element index) added; NONE leaves it.
template <uint32_t EPI>
FB_DEVICE void finish_pair(float& v0, float& v1, const __half* __restrict__ residual, size_t idx) {
    if constexpr (EPI == EPI_GELU) {
        v0 = gelu_erf(v0);
        v1 = gelu_erf(v1);
    } else if constexpr (EPI == EPI_TANH) {
        v0 = tanhf(v0);
        v1 = tanhf(v1);
    } else if constexpr (EPI == EPI_GELU_TANH) {
        v0 = gelu_tanh(v0);
        v1 = gelu_tanh(v1);
    } else if constexpr (EPI == EPI_RELU) {
        v0 = fmaxf(v0, 0.f);
        v1 = fmaxf(v1, 0.f);
    } else if constexpr (EPI == EPI_SILU) {
        v0 = silu(v0);
        v1 = silu(v1);
    } else if constexpr (EPI == EPI_RESIDUAL) {
        const float2 r = __half22float2(*reinterpret_cast<const __half2*>(residual + idx));
        v0 += r.x;
        v1 += r.y;
    }
}

// Runs e.store<EPI>(d, row0, col0) for the launch's epilogue code e.epi: one instantiation per
// code, so the unrolled store loop holds no switch.
template <class E, typename Acc, int A, class S>
FB_DEVICE void dispatch_epi(const E& e, const Acc (&d)[A], int row0, int col0, const S& st) {
    switch (e.epi) {
        case EPI_GELU: e.template store<EPI_GELU>(d, row0, col0, st); break;
        case EPI_RESIDUAL: e.template store<EPI_RESIDUAL>(d, row0, col0, st); break;
        case EPI_TANH: e.template store<EPI_TANH>(d, row0, col0, st); break;
        case EPI_GELU_TANH: e.template store<EPI_GELU_TANH>(d, row0, col0, st); break;
        case EPI_RELU: e.template store<EPI_RELU>(d, row0, col0, st); break;
        case EPI_SILU: e.template store<EPI_SILU>(d, row0, col0, st); break;
        default: e.template store<EPI_NONE>(d, row0, col0, st); break;
    }
}

// The accumulator fragment (hopper.md 1.4) of a consumer thread: rows row0 + {0, 8} (h), column
// pairs col0 + 8 c (c < BN/8 = A/4); d[4c + 2h + {0, 1}] is the pair (row0 + 8h, col0 + 8c + {0, 1}).

// A consumer thread's view of its warpgroup's output staging: the warpgroup's 64 x BN half of
// the tile as BN / 64 boxes of 64 x 64, 128-byte rows in the 128-byte swizzle (the layout TMA reads
// with CU_TENSOR_MAP_SWIZZLE_128B: 16-byte chunk j of row r at chunk j ^ (r % 8), on absolute
// addresses, so every box starts on a 1024-byte boundary). The thread's fragment rows are
// r0 = 16 warp + lane / 4 and r0 + 8 (the same r % 8), its column pairs 8 c + 2 (lane % 4): pair
// (c, h) sits in box c / 8, row r0 + 8 h, chunk (c % 8) ^ (r0 % 8), word lane % 4. `base` holds
// the row and word, `swz` the chunk's XOR, so a pair's address is one XOR and an immediate.
struct Staging {
    uint32_t base;  // half + r0 * 128 + 4 (lane % 4)
    uint32_t swz;   // (r0 % 8) * 16
    template <int C, int H>
    FB_DEVICE void put(uint32_t pair) const {
        const uint32_t a = (base + (C / 8) * OUT_BOX_BYTES + H * 8 * ROW_BYTES) + (((C % 8) * 16) ^ swz);
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(pair) : "memory");
    }
    // The pair put<C, H> wrote (the cluster entries keep y, then the output, in the staging).
    template <int C, int H>
    FB_DEVICE uint32_t get() const {
        const uint32_t a = (base + (C / 8) * OUT_BOX_BYTES + H * 8 * ROW_BYTES) + (((C % 8) * 16) ^ swz);
        uint32_t pair;
        asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(pair) : "r"(a) : "memory");
        return pair;
    }
};

// Unrolls f(integral_constant<C>) over the PAIRS column pairs of a fragment (BN / 8).
template <int PAIRS, int C = 0, class F>
FB_DEVICE void for_pairs(F&& f) {
    if constexpr (C < PAIRS) {
        f(std::integral_constant<int, C>{});
        for_pairs<PAIRS, C + 1>(f);
    }
}

// gemm_f16_sm90's epilogue: + bias, then EPI, one fp16 rounding, pairs into the staging (outputs
// past M or N are written as 0 there, and clipped by the TMA store).
struct F16Epilogue {
    static constexpr bool STAGED = true;
    const __half* __restrict__ bias;
    const __half* __restrict__ residual;
    int M, N;
    uint32_t epi;

    template <uint32_t EPI, int A, class S>
    FB_DEVICE void store(const float (&d)[A], int row0, int col0, const S& st) const {
        for_pairs<A / 4>([&](auto cc) {
            constexpr int c = decltype(cc)::value;
            const int n = col0 + 8 * c;
            const bool in_n = n < N;  // N % 8 == 0: a column pair is wholly inside or outside
            float b0 = 0.f, b1 = 0.f;
            if (bias && in_n) {
                const float2 b = __half22float2(*reinterpret_cast<const __half2*>(bias + n));
                b0 = b.x;
                b1 = b.y;
            }
            uint32_t pair[2] = {0, 0};
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int m = row0 + 8 * h;
                if (in_n && m < M) {
                    float v0 = d[4 * c + 2 * h] + b0, v1 = d[4 * c + 2 * h + 1] + b1;
                    finish_pair<EPI>(v0, v1, residual, (size_t)m * N + n);
                    pair[h] = pack_half2(v0, v1);
                }
            }
            st.template put<c, 0>(pair[0]);
            st.template put<c, 1>(pair[1]);
        });
    }
    template <int A, class S>
    FB_DEVICE void operator()(const float (&d)[A], int row0, int col0, const S& st) const {
        dispatch_epi(*this, d, row0, col0, st);
    }
};

// gemm_int8_sm90's epilogue, gemm_int8's arithmetic (gemm_core.cuh store_tile) operation for
// operation: x = acc - a_zero[m] w_sum[n] (s32, exact; the zero point's term is 0 when a_zero is
// null), v = fma(float(x) * a_scale[m], w_scale[n], bias[n]) (gemm_int8's PTX contracts its
// `x * as * ws + b` into exactly this mul and fma; spelled out here with the _rn intrinsics so no
// compiler choice can change it; bias 0 when null, as there), then EPI, one fp16 rounding, pairs
// into the staging (0 past M or N).
struct S8Epilogue {
    static constexpr bool STAGED = true;
    const float* __restrict__ a_scale;
    const int* __restrict__ a_zero;
    const float* __restrict__ w_scale;
    const int* __restrict__ w_sum;
    const __half* __restrict__ bias;
    const __half* __restrict__ residual;
    int M, N;
    uint32_t epi;

    template <uint32_t EPI, int A, class S>
    FB_DEVICE void store(const int (&d)[A], int row0, int col0, const S& st) const {
        float as[2];
        int z[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = row0 + 8 * h;
            as[h] = m < M ? a_scale[m] : 0.f;
            z[h] = a_zero && m < M ? a_zero[m] : 0;
        }
        for_pairs<A / 4>([&](auto cc) {
            constexpr int c = decltype(cc)::value;
            const int n = col0 + 8 * c;
            const bool in_n = n < N;  // N % 8 == 0: a column pair is wholly inside or outside
            float2 ws = make_float2(0.f, 0.f);
            int2 wsum = make_int2(0, 0);
            float b0 = 0.f, b1 = 0.f;
            if (in_n) {
                ws = *reinterpret_cast<const float2*>(w_scale + n);
                if (a_zero) wsum = *reinterpret_cast<const int2*>(w_sum + n);
                if (bias) {
                    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(bias + n));
                    b0 = b.x;
                    b1 = b.y;
                }
            }
            uint32_t pair[2] = {0, 0};
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int m = row0 + 8 * h;
                if (in_n && m < M) {
                    const int x0 = d[4 * c + 2 * h] - z[h] * wsum.x, x1 = d[4 * c + 2 * h + 1] - z[h] * wsum.y;
                    float v0 = __fmaf_rn(__fmul_rn((float)x0, as[h]), ws.x, b0);
                    float v1 = __fmaf_rn(__fmul_rn((float)x1, as[h]), ws.y, b1);
                    finish_pair<EPI>(v0, v1, residual, (size_t)m * N + n);
                    pair[h] = pack_half2(v0, v1);
                }
            }
            st.template put<c, 0>(pair[0]);
            st.template put<c, 1>(pair[1]);
        });
    }
    template <int A, class S>
    FB_DEVICE void operator()(const int (&d)[A], int row0, int col0, const S& st) const {
        dispatch_epi(*this, d, row0, col0, st);
    }
};

// gemm_int8_i32_sm90's epilogue: the raw s32 accumulators, 8-byte pair stores straight to
// global memory (no staging: a verification kernel).
struct RawEpilogue {
    static constexpr bool STAGED = false;
    int32_t* __restrict__ C;
    int M, N;
    template <int A>
    FB_DEVICE void operator()(const int (&d)[A], int row0, int col0, const Staging&) const {
#pragma unroll
        for (int c = 0; c < A / 4; c++) {
            const int n = col0 + 8 * c;
            if (n >= N) break;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int m = row0 + 8 * h;
                if (m < M) *reinterpret_cast<int2*>(C + (size_t)m * N + n) = make_int2(d[4 * c + 2 * h], d[4 * c + 2 * h + 1]);
            }
        }
    }
};

// Synchronises the two consumer warpgroups only (named barrier 1; the producer never joins).
FB_DEVICE void consumer_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(CONSUMER_THREADS) : "memory"); }

// Synchronises one consumer warpgroup (named barrier 2 + cw; immediate ids, so ptxas reserves 4
// barriers, not all 16).
FB_DEVICE void warpgroup_sync(int cw) {
    if (cw == 0)
        asm volatile("bar.sync 2, 128;\n" ::: "memory");
    else
        asm volatile("bar.sync 3, 128;\n" ::: "memory");
}

// A consumer warpgroup's region (its staging) as scratch for a tail: free once the tile's TMA
// stores have completed (READS_OUTPUT tails), until the warpgroup's next epilogue, which every
// warp of it reaches only after its tail.
struct Scratch {
    uint32_t base;   // shared address
    uint32_t bytes;
};

// Where a tile's strip stands: its strip, the strip's tiles, and whether its tail may be shared
// (StripShare below).
struct StripAt {
    int strip, tiles_n;
    int units;    // work units of the strip (tiles_n x the split's chunks)
    bool spread;  // every CTA of the grid has one unit: a CTA's tail holds up no later unit of its own
};

// After-tile step of the plain entries: nothing.
struct NoTail {
    static constexpr bool READS_OUTPUT = false;
    FB_DEVICE void begin(int) const {}
    FB_DEVICE void operator()(int, StripAt, uint32_t*, Scratch) const {}
};

FB_DEVICE uint32_t ld_acquire(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// The strip tails' counters ([4][strips] words, zero between launches): per strip, the units
// started, the tiles arrived, the rows claimed, and the tail's CTAs done.
struct StripCounters {
    uint32_t* base;
    int strips;
    FB_DEVICE uint32_t* arrived(int s) const { return base + s; }
    FB_DEVICE uint32_t* started(int s) const { return base + strips + s; }
    FB_DEVICE uint32_t* claimed(int s) const { return base + 2 * strips + s; }
    FB_DEVICE uint32_t* done(int s) const { return base + 3 * strips + s; }
};

// A strip's tail (its rows' layernorm or codes, once all its tiles are stored), shared by the
// CTAs of its tiles. Each CTA counts every unit it starts in on `started` (begin) and each tile
// it finishes on `arrived` (every consumer thread's output stored first: fence, atomic, fence).
// The strip's last tile takes part in the tail; so does any other tile's CTA, after waiting for
// the last arrival, when the launch gives each CTA one unit (`spread`) and every unit of the
// strip has started: then each of them reaches its arrival without waiting on anything, so the
// wait ends however few CTAs the GPU holds at once (and a CTA whose strip siblings have not all
// started never waits: they might need its SM). Taking part, each consumer warp claims the
// strip's next row until none is left; the same bits whoever takes a row. The last of the
// strip's tiles to finish its part resets the four counters for the next launch (atomics: no
// plain store races another CTA's). `flag` is a shared word the consumers agree through.
struct StripShare {
    StripCounters c;
    FB_DEVICE void begin(int strip) const {
        if (threadIdx.x == 128) atomicAdd(c.started(strip), 1u);
    }
    // Whether this CTA takes part in strip `at.strip`'s tail (every consumer thread).
    FB_DEVICE bool join(StripAt at, uint32_t* flag) const {
        __threadfence();  // release: this thread's output before the tile's arrival
        consumer_sync();  // every consumer thread's output stored before the arrival
        if (threadIdx.x == 128) {
            const bool last = atomicAdd(c.arrived(at.strip), 1u) == (uint32_t)at.tiles_n - 1;
            const bool join = last || (at.spread && ld_acquire(c.started(at.strip)) == (uint32_t)at.units);
            if (join && !last)
                while (ld_acquire(c.arrived(at.strip)) != (uint32_t)at.tiles_n) {
                }
            *flag = join;
        }
        consumer_sync();
        // (the next write of *flag follows this tile's `leave`, which every consumer reaches
        // only after this read)
        if (!*flag) return false;
        __threadfence();  // acquire: the strip's other tiles
        return true;
    }
    // The next row of the strip for the calling warp (rows m0 + 0, 1, ...), or -1 past `end`.
    FB_DEVICE int claim(int strip, int m0, int end) const {
        int r = 0;
        if ((threadIdx.x & 31) == 0) r = m0 + (int)atomicAdd(c.claimed(strip), 1u);
        r = __shfl_sync(0xffffffffu, r, 0);
        return r < end ? r : -1;
    }
    // This CTA is done with the strip's tail (every consumer thread, taking part or not).
    FB_DEVICE void leave(StripAt at) const {
        consumer_sync();  // every warp's claims and reads are over
        if (threadIdx.x == 128 && atomicAdd(c.done(at.strip), 1u) == (uint32_t)at.tiles_n - 1) {
            atomicExch(c.arrived(at.strip), 0u);
            atomicExch(c.started(at.strip), 0u);
            atomicExch(c.claimed(at.strip), 0u);
            atomicExch(c.done(at.strip), 0u);
        }
    }
};

// After-tile step of the _ln entries: the strip's layernorm once its tiles are stored
// (StripShare: a consumer warp per row, rows claimed), in the blocked order (lnb::ln_row).
struct LnTail {
    static constexpr bool READS_OUTPUT = true;  // the tile's TMA stores must be complete first
    gemm::LnArgs ln;
    const __half* y;
    int M, N;
    FB_DEVICE StripShare share() const { return StripShare{StripCounters{ln.strips, (M + BM - 1) / BM}}; }
    FB_DEVICE void begin(int strip) const { share().begin(strip); }
    FB_DEVICE void operator()(int m0, StripAt at, uint32_t* flag, Scratch) const {
        const StripShare sh = share();
        if (sh.join(at, flag)) {
            const int end = m0 + BM < M ? m0 + BM : M;
            for (int row; (row = sh.claim(at.strip, m0, end)) >= 0;) lnb::ln_row(y, ln, row, N);
        }
        sh.leave(at);
    }
};

// The operands of the _qa entries' fused quantisation (QaTail): the next GEMM's asymmetric int8
// input, as quantize_i8_asym_f16_wide writes it from the GEMM's fp16 output. q_scale and q_zero
// may be the GEMM's own a_scale / a_zero (a strip's rows are written after every tile reading
// them is done); q_out must not overlap the GEMM's A.
struct QaArgs {
    int8_t* q;              // [M, N] codes
    float* scale;           // [M] scales
    int32_t* zero;          // [M] zero points
    const __half* smooth;   // [N] smoothing multipliers of the next GEMM, or null
    uint32_t* strips;       // [strips] arrival counters, zero between launches
};
#define QA_PARAMS                                                                                  \
    int8_t *q_out, float *q_scale, int32_t *q_zero, const __half *__restrict__ q_smooth,          \
        uint32_t *__restrict__ strips
#define QA_ARGS QaArgs{q_out, q_scale, q_zero, q_smooth, strips}

// 16 bytes to / from shared memory.
FB_DEVICE void st_shared_v4(uint32_t a, const uint4& v) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
FB_DEVICE uint4 ld_shared_v4(uint32_t a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}

// 8 fp16 of y as f32, times the smoothing multipliers of vector v when given (quantize_rows'
// order: round to f32, then one multiply).
FB_DEVICE void qa_f32(float (&f)[8], const uint4& raw, const __half* smooth, uint32_t v) {
    half8_to_float(*reinterpret_cast<const half8*>(&raw), f);
    if (smooth) {
        float m[8];
        half8_to_float(ld_half8(smooth + 8 * v), m);
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] *= m[j];
    }
}

// Where a row's codes go: q [rows, N], scale [rows], zero [rows] (asymmetric only), and the
// smoothing multipliers [N] of the next GEMM, or null.
struct RowCodes {
    int8_t* q;
    float* scale;
    int32_t* zero;
    const __half* smooth;
};

// One row's int8 quantisation by one warp, quantize_rows' arithmetic: asymmetric (ASYM: the
// row's max(0, max x) and max(0, -min x), q8_asym_params, q8_asym) or symmetric (the absmax,
// q8_inv_scale, q8, absmax / 127); the extremes are exact, so the reduction order does not
// matter. y is read once, through L2 (other CTAs wrote it, bypassing L1); the warp keeps its
// first `slot_vecs` vectors in its shared `slot` for the codes' pass (the caller's idle shared
// memory: no room for the row in registers), and reads any beyond from L2 again. Each lane
// reads back only the vectors it wrote.
template <bool ASYM>
FB_DEVICE void row_codes(const RowCodes& rc, const __half* y, int row, int N, uint32_t slot, uint32_t slot_vecs) {
    const int lane = threadIdx.x & 31;
    const uint32_t nvec = N / 8;
    const uint4* yr = reinterpret_cast<const uint4*>(y + (size_t)row * N);
    float pmax = 0.f, nmin = 0.f;  // max(0, max x) (absmax when symmetric), max(0, -min x)
    for (uint32_t v = lane; v < nvec; v += 32) {
        const uint4 raw = __ldcg(yr + v);
        if (v < slot_vecs) st_shared_v4(slot + 16 * v, raw);
        float f[8];
        qa_f32(f, raw, rc.smooth, v);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            if (ASYM) {
                pmax = fmaxf(pmax, f[j]);
                nmin = fmaxf(nmin, -f[j]);
            } else {
                pmax = fmaxf(pmax, fabsf(f[j]));
            }
        }
    }
    pmax = warp_max(pmax);
    const Q8Asym p = ASYM ? q8_asym_params(pmax, warp_max(nmin)) : Q8Asym{q8_inv_scale(pmax), pmax / 127.f, 0};
    uint2* qr = reinterpret_cast<uint2*>(rc.q + (size_t)row * N);
    for (uint32_t v = lane; v < nvec; v += 32) {
        const uint4 raw = v < slot_vecs ? ld_shared_v4(slot + 16 * v) : __ldcg(yr + v);
        float f[8];
        qa_f32(f, raw, rc.smooth, v);
        int c[8];
#pragma unroll
        for (int j = 0; j < 8; j++) c[j] = ASYM ? q8_asym(f[j], p.inv, p.zero) : q8(f[j], p.inv);
        qr[v] = make_uint2(pack_s8x4(c[0], c[1], c[2], c[3]), pack_s8x4(c[4], c[5], c[6], c[7]));
    }
    if (lane == 0) {
        rc.scale[row] = p.scale;
        if (ASYM) rc.zero[row] = p.zero;
    }
}

// The per-token symmetric int8 codes (quantize_i8_f16's, no smoothing) of an fp16 output
// whose columns several CTAs store, a head or a head pair each (the fused attentions' context,
// the attention-out GEMM's input): a token's scale is the absmax of its whole row, so the
// strip's CTAs (one unit each: the grid is not persistent) meet through StripShare, counters
// [4][strips] (zero between launches; the last CTA out resets them). Each CTA calls begin as
// it starts and, its columns of the strip's rows stored, operator(): the last to arrive, and
// any that finds every CTA of the strip started, quantises rows, a consumer warp per claimed
// row, keeping the row in its shared `slot` (the CTA's idle shared memory) for the codes'
// pass. Same bits whoever takes a row.
struct SharedRowCodes {
    int8_t* q;           // [rows, N]
    float* scale;        // [rows]
    uint32_t* counters;  // [4][strips]
    int strips;
    FB_DEVICE StripShare share() const { return StripShare{StripCounters{counters, strips}}; }
    FB_DEVICE void begin(int strip) const { share().begin(strip); }
    // (every consumer thread) rows row0 .. row0 + rows of y [.., N] of `strip`, stored by `ctas`
    // CTAs; `flag` a shared word the consumers agree through
    FB_DEVICE void operator()(const __half* y, int strip, int ctas, int row0, int rows, int N, uint32_t slot,
                              uint32_t slot_bytes, uint32_t* flag) const {
        const StripShare sh = share();
        const StripAt at{strip, ctas, ctas, true};
        if (sh.join(at, flag)) {
            const RowCodes rc{q, scale, nullptr, nullptr};
            for (int r; (r = sh.claim(strip, 0, rows)) >= 0;) row_codes<false>(rc, y, row0 + r, N, slot, slot_bytes / 16);
        }
        sh.leave(at);
    }
};

// After-tile step of the _qa entries: the last tile of a strip (strip_arrive) quantises the
// strip's rows of the GEMM output (a consumer warp per row, each warp a quarter of its
// warpgroup's region as its row's slot: 8 KiB, rows of up to 4096 columns, at 128-column
// tiles), in place of a quantize launch re-reading the output from DRAM.
struct QaTail {
    static constexpr bool READS_OUTPUT = true;  // the tile's TMA stores must be complete first
    QaArgs qa;
    const __half* y;
    int M, N;
    FB_DEVICE StripShare share() const { return StripShare{StripCounters{qa.strips, (M + BM - 1) / BM}}; }
    FB_DEVICE void begin(int strip) const { share().begin(strip); }
    FB_DEVICE void operator()(int m0, StripAt at, uint32_t* flag, Scratch scratch) const {
        const StripShare sh = share();
        if (sh.join(at, flag)) {
            const int warp = (threadIdx.x - 128) >> 5;  // consumer warp 0..7, warpgroup warp % 4
            const uint32_t slot_bytes = scratch.bytes / 4, slot = scratch.base + (warp % 4) * slot_bytes;
            const int end = m0 + BM < M ? m0 + BM : M;
            const RowCodes rc{qa.q, qa.scale, qa.zero, qa.smooth};
            for (int row; (row = sh.claim(at.strip, m0, end)) >= 0;) row_codes<true>(rc, y, row, N, slot, slot_bytes / 16);
        }
        sh.leave(at);
    }
};

// ---- K chunks and split-K ----
// K's k-blocks are cut into at most MAX_CHUNKS chunks of at least MIN_CHUNK_KBLOCKS k-blocks, a
// function of K alone (mirrored by `k_chunks` in src/gemm_sm90.rs). fp16 always sums in this
// order, whatever the launch: each chunk from fresh accumulators (scale-d = 0), then the chunk
// partials in chunk order, tot = p0, tot += p1, ... - in registers when one CTA walks all of K,
// through the workspace when a split launch gives each chunk its own CTA. So a row's result does
// not depend on the split, the tile or the other rows of the batch. s32 sums are exact in any
// order: the int8 kernels accumulate across chunks and add split partials as they come.
constexpr int MAX_CHUNKS = 4, MIN_CHUNK_KBLOCKS = 4;
FB_DEVICE int chunk_kblocks(int kblocks) {
    const int c = (kblocks + MAX_CHUNKS - 1) / MAX_CHUNKS;
    return c > MIN_CHUNK_KBLOCKS ? c : MIN_CHUNK_KBLOCKS;
}

// Split-K in one launch (the _sk entries): `splits` = K's chunk count, work unit u is chunk
// u % splits of tile u / splits, so a tile's chunks go to neighbouring CTAs and run at once.
// A unit's consumers store their fragment to the tile's slot for the chunk (word i of consumer
// thread ct at i * 256 + ct: a warp's stores are one 128-byte line) and count the unit in on
// counters[tile]; the last to arrive adds the slots in chunk order and runs the epilogue, and
// leaves the counter at zero for the next launch or graph replay. Partials bypass L1 (st/ld.cg):
// other CTAs wrote them. A warp whose 16 rows all lie past M (a short batch's only tile: 20
// tokens live in 2 of 8 warps) neither stores nor reads partials: its rows' A is TMA's zero
// fill, so every chunk's sum there is 0, as its own chunk's already is, and no row past M is
// stored. The serial tail (the last CTA's reads) and the partial traffic shrink with M.
struct SplitK {
    uint32_t splits;  // set by ws_gemm
    uint32_t* partials;  // [tile][chunk][ACC][256] words
    uint32_t* counters;  // [tile]
};

// The k-blocks [begin, end) of chunk z (splits > 1) or of all of K (splits == 1).
struct KRange {
    int begin, end;
};
FB_DEVICE KRange k_range(int z, int splits, int kblocks, int ckb) {
    if (splits == 1) return {0, kblocks};
    const int end = (z + 1) * ckb;
    return {z * ckb, end < kblocks ? end : kblocks};
}

// Whether the calling consumer thread's warp (rows m0 + 64 cw + 16 warp .. + 15 of its tile,
// hopper.md 1.4) has a row below M: the warp-uniform condition for its split partials.
FB_DEVICE bool split_live(int M, int m0, int cw) {
    return m0 + 64 * cw + 16 * ((threadIdx.x % 128) / 32) < M;
}

FB_DEVICE void st_shared_f32(uint32_t a, float v) { asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(a), "f"(v) : "memory"); }
FB_DEVICE float ld_shared_f32(uint32_t a) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(a) : "memory");
    return v;
}
// v = the f32 at shared `a` when p (a predicated load: no branch), else v unchanged.
FB_DEVICE void ld_shared_if(bool p, float& v, uint32_t a) {
    asm volatile("{\n.reg .pred q;\nsetp.ne.b32 q, %1, 0;\n@q ld.shared.f32 %0, [%2];\n}\n"
                 : "+f"(v)
                 : "r"((uint32_t)p), "r"(a)
                 : "memory");
}
// An accumulator to a partial slot, bypassing L1, straight from its register: storing
// __float_as_uint(x) instead makes ptxas serialise the fp16 wgmmas (C7520).
FB_DEVICE void st_cg(uint32_t* p, float v) { asm volatile("st.global.cg.f32 [%0], %1;\n" ::"l"(p), "f"(v) : "memory"); }
FB_DEVICE void st_cg(uint32_t* p, int v) { asm volatile("st.global.cg.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory"); }
FB_DEVICE void acc_from_bits(float& x, uint32_t b) { x = __uint_as_float(b); }
FB_DEVICE void acc_from_bits(int& x, uint32_t b) { x = (int)b; }

// Word i of consumer thread ct of chunk c's slot among `slots` (slots of A x 256 words;
// bypassing L1: other CTAs wrote it).
template <int A>
FB_DEVICE uint32_t ld_partial(const uint32_t* slots, int c, int i, int ct) {
    return __ldcg(slots + (size_t)c * A * CONSUMER_THREADS + i * CONSUMER_THREADS + ct);
}

// Publishes a split unit's partial (chunk z of `tile`, the fragment d) and returns whether this
// CTA arrived last: then every other chunk's partial is visible to it (and the counter is reset).
// `live`: whether this thread's warp has a row below M (split_live).
template <typename Acc, int A>
FB_DEVICE bool split_arrive(const Acc (&d)[A], const SplitK& sk, int tile, int z, bool live, uint32_t* flag) {
    const int ct = threadIdx.x - 128, S = (int)sk.splits;
    uint32_t* slots = sk.partials + (size_t)tile * S * A * CONSUMER_THREADS;
    if (live) {
#pragma unroll
        for (int i = 0; i < A; i++) st_cg(slots + (size_t)z * A * CONSUMER_THREADS + i * CONSUMER_THREADS + ct, d[i]);
    }
    __threadfence();  // release: this thread's partial before the unit's arrival
    consumer_sync();  // every consumer thread's partial stored before the arrival
    if (ct == 0) *flag = atomicAdd(&sk.counters[tile], 1u) == (uint32_t)S - 1;
    consumer_sync();
    // (the next write of *flag follows the next split unit's first consumer_sync, which every
    // consumer reaches only after this read)
    if (!*flag) return false;
    __threadfence();  // acquire: the other chunks' partials, after their arrivals
    if (ct == 0) atomicExch(&sk.counters[tile], 0u);  // (an atomic: no plain store races a read)
    return true;
}

// The last CTA of a split tile: d becomes the tile's sum, the chunks' partials (its own among
// them, as stored) added in chunk order, t = p0, t += p1, ... (s32: exact in any order).
template <class Op, typename Acc, int A>
FB_DEVICE void split_fold(Acc (&d)[A], const SplitK& sk, int tile, bool live) {
    if (!live) return;  // rows past M: d (this chunk's zeros) is already the sum
    const int ct = threadIdx.x - 128, S = (int)sk.splits;
    const uint32_t* slots = sk.partials + (size_t)tile * S * A * CONSUMER_THREADS;
#pragma unroll
    for (int i = 0; i < A; i++) {
        Acc t, p;
        acc_from_bits(t, ld_partial<A>(slots, 0, i, ct));
        for (int c = 1; c < S; c++) {
            acc_from_bits(p, ld_partial<A>(slots, c, i, ct));
            t += p;
        }
        d[i] = t;
    }
}

// The stage ring's barriers: full[s] completes on the producer's one arrival and the stage's
// transaction bytes, empty[s] on every consumer thread's release.
template <class G>
FB_DEVICE void init_ring_barriers(uint64_t* full, uint64_t* empty) {
    for (int s = 0; s < G::STAGES; s++) {
        mbar_init(smem_u32(&full[s]), 1);
        mbar_init(smem_u32(&empty[s]), CONSUMER_THREADS);
    }
}
// The ring's barriers, initialised by thread 0 and visible to the whole CTA (and to the async
// proxy: the TMA completes on them) before any thread uses them.
template <class G>
FB_DEVICE void init_ring(uint64_t* full, uint64_t* empty) {
    if (threadIdx.x == 0) {
        init_ring_barriers<G>(full, empty);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
}

// The producer's side of the stage ring (its elected thread only): where it is in the ring, and
// the load of one k-block into the next stage.
template <class G>
struct ProducerRing {
    uint32_t s0;  // shared address of the ring
    uint64_t* full;
    uint64_t* empty;
    int stage = 0;
    uint32_t phase = 0;

    // The A box at (k, m0) and the stage's B part by `load_w(sb, fb)` (its shared address, the
    // stage's full barrier), once the consumers have released the stage.
    // `bytes`: the boxes' (the stage's, or A and a narrower W part).
    template <class LoadW>
    FB_DEVICE void load(const CUtensorMap* tma_a, int k, int m0, const LoadW& load_w, uint32_t bytes = G::STAGE_BYTES) {
        // a fresh barrier passes parity 1 at once: the first lap does not wait
        mbar_wait(smem_u32(&empty[stage]), phase ^ 1);
        const uint32_t fb = smem_u32(&full[stage]), sa = s0 + stage * G::STAGE_BYTES;
        // the whole boxes, out-of-bounds (zero-filled) elements included
        mbar_arrive_expect_tx(fb, bytes);
        tma_load_2d(sa, tma_a, k, m0, fb);
        load_w(sa + A_BYTES, fb);
        if (++stage == G::STAGES) {
            stage = 0;
            phase ^= 1;
        }
    }
    // The A box at (k, m0) and the W box at (k, n0).
    FB_DEVICE void load(const CUtensorMap* tma_a, const CUtensorMap* tma_w, int k, int m0, int n0) {
        load(tma_a, k, m0, [&](uint32_t sb, uint32_t fb) { tma_load_2d(sb, tma_w, k, n0, fb); });
    }
};

// A consumer warpgroup's side of the stage ring: where it is in the ring, and the sum of a run
// of k-blocks from it.
template <class Op, class G>
struct ConsumerRing {
    using Acc = typename Op::Acc;
    uint32_t s0;  // shared address of the ring
    uint64_t* full;
    uint64_t* empty;
    int cw;  // consumer warpgroup 0 or 1: rows 64 cw.. of the A box
    int stage = 0;
    uint32_t phase = 0;

    // d = the sum over k-blocks [kb0, kb1) from fresh accumulators; every stage read is released.
    // (A = G::ACC, or fewer: the first 2 A rows of the stage's W box, a narrower wgmma)
    template <int A>
    FB_DEVICE void sum(Acc (&d)[A], int kb0, int kb1) {
        int prev = -1;  // the stage whose wgmmas may still be reading it
        for (int kb = kb0; kb < kb1; kb++) {
            mbar_wait(smem_u32(&full[stage]), phase);
            const uint32_t base = s0 + stage * G::STAGE_BYTES, sa = base + cw * (64 * ROW_BYTES), sb = base + A_BYTES;
            wgmma_fence();
#pragma unroll
            for (int j = 0; j < ROW_BYTES / 32; j++)  // 32-byte K steps inside the swizzled row
                Op::mma(d, desc_sw128(sa + 32 * j), desc_sw128(sb + 32 * j), (kb > kb0 || j > 0) ? 1u : 0u);
            wgmma_commit();
            // the previous k-block's wgmmas are complete: its stage may be refilled
            wgmma_wait<1>(d);
            if (prev >= 0) mbar_arrive(smem_u32(&empty[prev]));
            prev = stage;
            if (++stage == G::STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
        wgmma_wait<0>(d);
        if (prev >= 0) mbar_arrive(smem_u32(&empty[prev]));
    }

    // The stages of k-blocks [kb0, kb1) released unread (a warpgroup with no row below M), each
    // once its load completed: that needs the other warpgroup's release of the stage's previous
    // fill, so this warpgroup never arrives twice in one phase of an empty barrier.
    FB_DEVICE void release(int kb0, int kb1) {
        for (int kb = kb0; kb < kb1; kb++) {
            mbar_wait(smem_u32(&full[stage]), phase);
            mbar_arrive(smem_u32(&empty[stage]));
            if (++stage == G::STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
    }
};

// The sum of one tile over k-blocks r (all of K) by one CTA: fp16 in K-chunk order, s32 at once.
template <class Op, class G, int A>
FB_DEVICE void sum_unsplit(ConsumerRing<Op, G>& ring, typename Op::Acc (&d)[A], uint32_t s0, int cw, KRange r,
                            int ckb) {
    static_assert(A <= G::ACC, "the fold fits the warpgroup's region");
    if constexpr (Op::CHUNKED) {
        const int t = threadIdx.x % 128;
        // The chunks before the last are folded in the warpgroup's region (fold = p0,
        // fold += p1, ...: a second set of accumulators would not fit the registers); the
        // last chunk is summed in d and added to the fold. (d is written on every path,
        // + 0 when K is one chunk, whose zero sign the epilogue's + bias drops anyway:
        // accumulators written in a branch make ptxas serialise the wgmmas, C7520.)
        const uint32_t fold = s0 + G::RING_BYTES + cw * G::REGION_BYTES + 4 * t;
        int c0 = r.begin;
        if (c0 + ckb < r.end) {
            // the region holds the previous tile's staging: its TMA stores must have read it
            if (t == 0) bulk_wait_read();
            warpgroup_sync(cw);
        }
        for (; c0 + ckb < r.end; c0 += ckb) {
            ring.sum(d, c0, c0 + ckb);
#pragma unroll
            for (int i = 0; i < A; i++) {
                const uint32_t a = fold + i * 4 * WG_THREADS;
                st_shared_f32(a, c0 == r.begin ? d[i] : ld_shared_f32(a) + d[i]);
            }
        }
        ring.sum(d, c0, r.end);
        const bool folded = c0 > r.begin;
#pragma unroll
        for (int i = 0; i < A; i++) {
            float pre = 0.f;
            ld_shared_if(folded, pre, fold + i * 4 * WG_THREADS);
            d[i] = pre + d[i];
        }
    } else {
        ring.sum(d, r.begin, r.end);  // s32: exact, no chunk order needed
    }
}

// A consumer warpgroup's end of a tile: the epilogue from the tile's sums `d`, through the
// output staging and TMA stores, then the tail (the _ln entries' strip layernorm).
template <class Epilogue, class Tail, class G>
struct TileOut {
    const Epilogue& epilogue;
    const Tail& tail;
    const CUtensorMap* tma_c;
    uint32_t s0;  // shared address of the ring (the staging follows it)
    int cw, M, N, tiles_m, tiles_n;
    uint32_t* tail_flag;
    int strip_units;  // units of a strip (tiles_n x the split's chunks)
    bool spread;      // one unit per CTA (StripShare)

    FB_DEVICE StripAt at(int tile) const { return StripAt{tile % tiles_m, tiles_n, strip_units, spread}; }

    // `off`: the staging's byte offset in the warpgroup's region; !store (the resident cluster
    // quantisation, ws_gemm_cluster): the tile stays staged, no TMA store (the caller orders
    // the staging's reuse).
    template <typename Acc>
    FB_DEVICE void tile(const Acc (&d)[G::ACC], int tile, uint32_t off = 0, bool store = true) const {
        const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
        const int m0 = (tile % tiles_m) * BM, n0 = (tile / tiles_m) * G::BN;
        const int mh = m0 + cw * 64;  // this warpgroup's rows
        const uint32_t half = s0 + G::RING_BYTES + cw * G::REGION_BYTES;
        const int r0 = warp * 16 + lane / 4;
        const Staging st{half + off + r0 * ROW_BYTES + 4 * (lane % 4), (uint32_t)(r0 % 8) * 16};
        if constexpr (Epilogue::STAGED) {
            if (store) {
                if (t == 0) bulk_wait_read();  // the previous tile's stores have read the staging
                warpgroup_sync(cw);
            }
        }
        epilogue(d, mh + warp * 16 + lane / 4, n0 + 2 * (lane % 4), st);
        if constexpr (Epilogue::STAGED) {
            if (store) {
                fence_proxy_async_shared();
                warpgroup_sync(cw);
                if (t == 0 && mh < M) {
#pragma unroll
                    for (int b = 0; b < G::BOXES; b++)
                        if (n0 + 64 * b < N) tma_store_2d(tma_c, half + off + b * OUT_BOX_BYTES, n0 + 64 * b, mh);
                    bulk_commit();
                    if constexpr (Tail::READS_OUTPUT) {
                        bulk_wait();                 // the tile's output is in global memory
                        fence_proxy_async_global();  // before this thread's release (tail)
                    }
                }
            }
        }
        tail(m0, at(tile), tail_flag, Scratch{half, (uint32_t)G::REGION_BYTES});
    }

    // The end of a tile for a warpgroup with no row below M: nothing to store (its epilogue's
    // barriers are its own warpgroup's), only its part in the tail's strip arrival.
    FB_DEVICE void rows_past_m(int tile) const {
        const int m0 = (tile % tiles_m) * BM;
        tail(m0, at(tile), tail_flag, Scratch{s0 + G::RING_BYTES + cw * G::REGION_BYTES, (uint32_t)G::REGION_BYTES});
    }
};

// One work unit of a consumer warpgroup: tile `tile` summed from the ring over k-blocks r (SPLIT:
// its chunk z; the tile's last CTA then adds the other chunks' partials), then the epilogue and
// tail through `out`. (ws_gemm's unit, and the FFN block's GEMM units: the same bits.)
template <class Op, class G, bool SPLIT, class Epilogue, class Tail>
FB_DEVICE void consume_unit(ConsumerRing<Op, G>& ring, const TileOut<Epilogue, Tail, G>& out, const SplitK& sk,
                            int tile, int z, KRange r, int ckb, uint32_t* split_flag) {
    using Acc = typename Op::Acc;
    const int cw = ring.cw, M = out.M, m0 = (tile % out.tiles_m) * BM;
    out.tail.begin(tile % out.tiles_m);  // (StripShare: the strip's units started)
    if (m0 + 64 * cw < M) {
        // the accumulators live in this branch only: a dead-warpgroup path that shares
        // them makes ptxas serialise the wgmmas (C7515 / C7520)
        Acc d[G::ACC];
#pragma unroll
        for (int i = 0; i < G::ACC; i++) d[i] = 0;
        if constexpr (SPLIT) {
            // one chunk; the last CTA of the tile adds the others' partials to it
            ring.sum(d, r.begin, r.end);
            const bool live = split_live(M, m0, cw);
            if (!split_arrive(d, sk, tile, z, live, split_flag)) return;
            split_fold<Op>(d, sk, tile, live);
        } else {
            sum_unsplit(ring, d, out.s0, cw, r, ckb);
        }
        out.tile(d, tile);
    } else {
        // the warpgroup's 64 rows all lie past M (a 1..64-row tile): TMA's zero fill,
        // so no wgmma (half the tile's tensor work) and nothing to store; its stages are
        // released unread and it takes its part in the split arrival (publishing no
        // partials) and in the tail's
        ring.release(r.begin, r.end);
        if constexpr (SPLIT) {
            Acc none[G::ACC];  // (not stored: split_arrive's `live` is false)
            if (!split_arrive(none, sk, tile, z, false, split_flag)) return;
        }
        out.rows_past_m(tile);
    }
}

// The warp-specialised persistent GEMM (see the top of the file) on operand type Op, handing
// each finished tile's accumulators to `epilogue(d, row0, col0)` in the consumer threads, then
// running `tail(m0, strip, tiles_n, flag)` in all of them. SPLIT (the _sk entries): each tile is
// split over K's chunks (SplitK); only the tile's last CTA to finish runs the epilogue and tail.
template <class Op, class G, bool SPLIT, class Epilogue, class Tail = NoTail>
FB_DEVICE void ws_gemm(const CUtensorMap* tma_a, const CUtensorMap* tma_w, const CUtensorMap* tma_c, uint32_t M,
                       uint32_t N, uint32_t K, SplitK sk, const Epilogue& epilogue, const Tail& tail = Tail{}) {
    constexpr int BK = Op::BK;
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[G::STAGES], empty[G::STAGES];
    __shared__ uint32_t tail_flag, split_flag;
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + G::BN - 1) / G::BN, tiles = tiles_m * tiles_n;
    const int kblocks = (K + BK - 1) / BK, ckb = chunk_kblocks(kblocks);
    // split-K: a unit per (tile, chunk) (the host launches the _sk entries only for K of several chunks)
    const int S = SPLIT ? (kblocks + ckb - 1) / ckb : 1, units = tiles * S;
    if constexpr (SPLIT) sk.splits = S;
    init_ring<G>(full, empty);

    if (wg == 0) {
        // producer: one elected thread of warp 0 issues the loads
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid < 32 && elect_one()) {
            ProducerRing<G> ring{s0, full, empty};
            for (int u = blockIdx.x; u < units; u += gridDim.x) {
                const int t = u / S, m0 = (t % tiles_m) * BM, n0 = (t / tiles_m) * G::BN;
                const KRange r = k_range(u % S, S, kblocks, ckb);
                for (int kb = r.begin; kb < r.end; kb++) ring.load(tma_a, tma_w, kb * BK, m0, n0);
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int cw = wg - 1, t = tid % 128;
        ConsumerRing<Op, G> ring{s0, full, empty, cw};
        const TileOut<Epilogue, Tail, G> out{epilogue, tail,    tma_c,   s0,         cw, (int)M, (int)N, tiles_m,
                                             tiles_n,  &tail_flag, tiles_n * S, units <= (int)gridDim.x};
        for (int u = blockIdx.x; u < units; u += gridDim.x) {
            const int tile = u / S, z = u % S;
            consume_unit<Op, G, SPLIT>(ring, out, sk, tile, z, k_range(z, S, kblocks, ckb), ckb, &split_flag);
        }
        if constexpr (Epilogue::STAGED) {
            if (t == 0) bulk_wait();  // the staging outlives the stores reading it
        }
    }
}

// ---- The cluster entries (_n192_cln2, _cln3, _n192_cln4, _cln8): the fused layernorm without a tail ----
// A cluster of CS CTAs (__cluster_dims__(CS, 1, 1)) owns one 128-row strip at a time: rank r
// computes the strip's column tile r (ranks past the last column tile compute nothing but take
// part in every cluster barrier), unsplit over K; clusters walk the strips s = %clusterid.x,
// + %nclusterid.x, .... Each CTA keeps y (the fp16-rounded GEMM output) in its accumulator
// registers, publishes per row and 64-column block its block sums (ln_blocked.cuh) in its own
// shared memory, and after a cluster barrier reads every rank's, rank by rank (so the row sum
// is the serial tail's sequential block order: the same bits), from the peers' shared memory
// (mapa + ld.shared::cluster); then the same for the squares and, for the int8 codes, the row's
// amax. It normalises its fragment and writes only ln_out (staging + TMA store through the
// tensor map tma_ln) and the codes / scales: y itself is never stored.
// Barriers per strip: after the sums (B1), after the squares (B2), after the amax (B3, int8
// codes only). A partial array is rewritten one strip later only after a barrier every peer
// passes after its reads of it (sums: rewritten after B2, read before it; squares: rewritten
// after the next B1, read before it; amax: rewritten after the next B2, read before the next
// B1), so no barrier of its own guards reuse; a final barrier keeps every CTA's shared memory
// alive until its peers' last reads.
// The producer warpgroup takes part in every barrier too: its elected thread issues a strip's
// loads and the next strip's first STAGES (whose ring slots the consumers release in this
// strip's main loop, before any barrier), then the whole warpgroup passes the strip's barriers.

FB_DEVICE uint32_t cluster_ctarank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
FB_DEVICE uint32_t cluster_id_x() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%clusterid.x;\n" : "=r"(r));
    return r;
}
FB_DEVICE uint32_t cluster_nid_x() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%nclusterid.x;\n" : "=r"(r));
    return r;
}
// Every thread of the cluster: shared writes before it are visible to the peers' reads after it
// (and to the other threads of this CTA, lanes of one warp included).
FB_DEVICE void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The f32 at this CTA's shared address `a` in the shared memory of cluster rank `rank`.
FB_DEVICE float ld_peer_f32(uint32_t a, uint32_t rank) {
    uint32_t p;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(p) : "r"(a), "r"(rank));
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(p) : "memory");
    return v;
}

// The layernorm operands of the cluster entries (ln_out is the tensor map tma_ln).
struct ClnArgs {
    const __half* gamma;
    const __half* beta;
    int8_t* q_out;           // [M, N] int8 codes of ln_out (* q_smooth), or null
    float* q_scale;          // [M]
    const __half* q_smooth;  // [N] or null
    float eps;
};
#define CLN_PARAMS                                                                                  \
    const __half *__restrict__ gamma, const __half *__restrict__ beta, int8_t *q_out, float *q_scale, \
        const __half *__restrict__ q_smooth, float eps
#define CLN_ARGS ClnArgs{gamma, beta, q_out, q_scale, q_smooth, eps}

// The row sum (in block order) of the partials `part` (words [row][BPT]) of blocks 0..nb-1
// over the cluster's ranks (block b at rank b / BPT).
template <int BPT>
FB_DEVICE float gather_blocks(const float* part, int row, int nb) {
    const uint32_t base = smem_u32(part + row * BPT);
    float t = 0.f;
    for (int b = 0; b < nb; b++) t = __fadd_rn(t, ld_peer_f32(base + 4 * (b % BPT), b / BPT));
    return t;
}

template <class Op, class G, int CS, class Epilogue>
FB_DEVICE void cln_gemm(const CUtensorMap* tma_a, const CUtensorMap* tma_w, const CUtensorMap* tma_ln, uint32_t M,
                        uint32_t N, uint32_t K, const Epilogue& epilogue, const ClnArgs& ln) {
    constexpr int BK = Op::BK, BPT = G::BN / lnb::BLOCK;
    using Acc = typename Op::Acc;
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[G::STAGES], empty[G::STAGES];
    // this CTA's partials of the strip: per row and block of its tile, per row
    __shared__ float red_sum[BM * BPT], red_sq[BM * BPT], red_amax[BM];
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    const int rank = (int)cluster_ctarank(), cid = (int)cluster_id_x(), ncl = (int)cluster_nid_x();
    const int strips = (M + BM - 1) / BM, tiles_n = (N + G::BN - 1) / G::BN;
    const bool active = rank < tiles_n;  // (uniform over the CTA)
    const int kblocks = (K + BK - 1) / BK, ckb = chunk_kblocks(kblocks);
    const bool q8out = ln.q_out != nullptr;
    const int syncs = q8out ? 3 : 2;  // cluster barriers per strip
    init_ring<G>(full, empty);

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        bool leader = false;
        if (tid < 32) leader = elect_one();
        const int n0 = rank * G::BN, per = active ? kblocks : 0;
        const int mine = cid < strips ? (strips - cid + ncl - 1) / ncl : 0;  // strips this cluster walks
        const int total = mine * per;
        int next = 0;
        ProducerRing<G> ring{s0, full, empty};
        for (int i = 0; i < mine; i++) {
            if (leader) {
                const int ahead = per < G::STAGES ? per : G::STAGES;
                const int lim = (i + 1) * per + ahead < total ? (i + 1) * per + ahead : total;
                for (; next < lim; next++) {
                    const int m0 = (cid + (next / per) * ncl) * BM, kb = next % per;
                    ring.load(tma_a, tma_w, kb * BK, m0, n0);
                }
            }
            __syncwarp();
            for (int b = 0; b < syncs; b++) cluster_sync();
        }
        cluster_sync();
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int cw = wg - 1, t = tid % 128, warp = t / 32, lane = t % 32, q = lane % 4;
        ConsumerRing<Op, G> ring{s0, full, empty, cw};
        const uint32_t half = s0 + G::RING_BYTES + cw * G::REGION_BYTES;
        const int r0 = warp * 16 + lane / 4;
        const Staging st{half + r0 * ROW_BYTES + 4 * q, (uint32_t)(r0 % 8) * 16};
        const int n0 = rank * G::BN, col0 = n0 + 2 * q, nb = lnb::blocks(N);
        const float inv = lnb::inv_h(N);
        int rl[2];  // the thread's rows in the strip
        rl[0] = cw * 64 + r0;
        rl[1] = rl[0] + 8;
        for (int strip = cid; strip < strips; strip += ncl) {
            const int m0 = strip * BM;
            const bool in_m[2] = {m0 + rl[0] < (int)M, m0 + rl[1] < (int)M};
            float mu[2] = {0.f, 0.f}, amax[2] = {0.f, 0.f};
            // a warpgroup with no row below M (ws_gemm's rule) releases its stages unread and
            // sits out the strip but for the cluster barriers: peers read only rows below M
            const bool live = active && m0 + 64 * cw < (int)M;
            if (active && !live) ring.release(0, kblocks);
            if (live) {
                Acc d[G::ACC];  // (in this branch only: see ws_gemm)
#pragma unroll
                for (int i = 0; i < G::ACC; i++) d[i] = 0;
                sum_unsplit(ring, d, s0, cw, KRange{0, kblocks}, ckb);
                if (t == 0) bulk_wait_read();  // the previous strip's stores have read the staging
                warpgroup_sync(cw);
                // y into the staging (each thread reads back only the pairs it wrote, until
                // the TMA store: no barrier), then its block sums
                epilogue(d, m0 + rl[0], col0, st);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    float s = 0.f;
                    for_pairs<G::PAIRS>([&](auto cc) {
                        constexpr int c = decltype(cc)::value;
                        if (c % 8 == 0) s = 0.f;
                        if (col0 + 8 * c < (int)N) {
                            const float2 y = lnb::half2_bits_to_float2(h ? st.get<c, 1>() : st.get<c, 0>());
                            s = lnb::add_pair(s, y.x, y.y);
                        }
                        if (c % 8 == 7) {
                            const float b = lnb::quad_sum(s);
                            if (q == 0) red_sum[rl[h] * BPT + c / 8] = b;
                        }
                    });
                }
            }
            cluster_sync();  // B1: the block sums
            if (live) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    mu[h] = lnb::mean(in_m[h] ? gather_blocks<BPT>(red_sum, rl[h], nb) : 0.f, inv);
                    float s = 0.f;
                    for_pairs<G::PAIRS>([&](auto cc) {
                        constexpr int c = decltype(cc)::value;
                        if (c % 8 == 0) s = 0.f;
                        if (col0 + 8 * c < (int)N) {
                            const float2 y = lnb::half2_bits_to_float2(h ? st.get<c, 1>() : st.get<c, 0>());
                            s = lnb::add_sq_pair(s, y.x, y.y, mu[h]);
                        }
                        if (c % 8 == 7) {
                            const float b = lnb::quad_sum(s);
                            if (q == 0) red_sq[rl[h] * BPT + c / 8] = b;
                        }
                    });
                }
            }
            cluster_sync();  // B2: the square sums
            if (live) {
                float rs[2];
#pragma unroll
                for (int h = 0; h < 2; h++) rs[h] = lnb::rstd(in_m[h] ? gather_blocks<BPT>(red_sq, rl[h], nb) : 0.f, inv, ln.eps);
                const __half* smooth = q8out ? ln.q_smooth : nullptr;
                // the output over y in the staging
                for_pairs<G::PAIRS>([&](auto cc) {
                    constexpr int c = decltype(cc)::value;
                    const int n = col0 + 8 * c;
                    if (n < (int)N) {
                        const float2 g = lnb::ld_half2_f32(ln.gamma + n), b = lnb::ld_half2_f32(ln.beta + n);
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            if (!in_m[h]) continue;
                            const float2 y = lnb::half2_bits_to_float2(h ? st.get<c, 1>() : st.get<c, 0>());
                            float f0, f1;
                            const uint32_t o = lnb::out_pair(lnb::norm(y.x, mu[h], rs[h], g.x, b.x),
                                                             lnb::norm(y.y, mu[h], rs[h], g.y, b.y),
                                                             smooth ? smooth + n : nullptr, f0, f1);
                            if (h) st.put<c, 1>(o);
                            else st.put<c, 0>(o);
                            amax[h] = fmaxf(amax[h], fmaxf(fabsf(f0), fabsf(f1)));
                        }
                    }
                });
                fence_proxy_async_shared();
                warpgroup_sync(cw);
                const int mh = m0 + cw * 64;
                if (t == 0 && mh < (int)M) {
#pragma unroll
                    for (int b = 0; b < G::BOXES; b++)
                        if (n0 + 64 * b < (int)N) tma_store_2d(tma_ln, half + b * OUT_BOX_BYTES, n0 + 64 * b, mh);
                    bulk_commit();
                }
            }
            if (q8out) {
                if (live) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const float a = lnb::quad_max(amax[h]);
                        if (q == 0) red_amax[rl[h]] = a;
                    }
                }
                cluster_sync();  // B3: the tiles' amax
                if (live) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        if (!in_m[h]) continue;
                        const int m = m0 + rl[h];
                        float a = 0.f;
                        for (int r = 0; r < tiles_n; r++) a = fmaxf(a, ld_peer_f32(smem_u32(&red_amax[rl[h]]), r));
                        const float qi = q8_inv_scale(a);
                        // the codes of the staged output (the TMA store only reads it too)
                        for_pairs<G::PAIRS>([&](auto cc) {
                            constexpr int c = decltype(cc)::value;
                            const int n = col0 + 8 * c;
                            if (n < (int)N) {
                                float f0, f1;
                                const uint32_t o = h ? st.get<c, 1>() : st.get<c, 0>();
                                const float2 v = lnb::half2_bits_to_float2(o);
                                f0 = v.x;
                                f1 = v.y;
                                if (ln.q_smooth) {
                                    const float2 sm = lnb::ld_half2_f32(ln.q_smooth + n);
                                    f0 = __fmul_rn(f0, sm.x);
                                    f1 = __fmul_rn(f1, sm.y);
                                }
                                *reinterpret_cast<uint16_t*>(ln.q_out + (size_t)m * N + n) = lnb::code_pair(f0, f1, qi);
                            }
                        });
                        if (rank == 0 && q == 0) ln.q_scale[m] = a / 127.f;
                    }
                }
            }
        }
        cluster_sync();  // the peers' last reads of this CTA's partials are done
        if (t == 0) bulk_wait();  // the staging outlives the stores reading it
    }
}

// ---- Cluster-distributed quantisation (gemm_int8_sm90_n192_cqa) ----
// The _qa entries' strip tail (QaTail) has one CTA re-read a whole 128-row strip of y and
// quantise it alone after the strip's last tile. Here a cluster of CQA_CLUSTER CTAs owns a
// strip at a time (strips clusterid, clusterid + nclusterid, ...), CTA rank r computing the
// strip's column tiles r, r + 8, ... (ranks with none still take part in every cluster
// barrier). Each tile's consumer threads fold the tile's fp16 outputs (read back from their own
// staging, times the smoothing multipliers: qa_f32's arithmetic) into running max(0, max x)
// and max(0, -min x) of their two fragment rows; after the CTA's last tile of the strip a quad
// shuffle gives each row's pair (a row of a tile lies in one quad of one warp), written to the
// CTA's slot; a cluster barrier; each CTA combines the 8 ranks' pairs of a row (mapa +
// ld.shared::cluster), q8_asym_params, and codes its own columns of the strip from y (its TMA
// stores completed: bulk_wait + fence.proxy.async.global before the barrier), rank 0 writing
// the scales and zero points. max is exact and order-free, so the codes are quantize_rows'.
// The slots are double-buffered by strip parity: a strip's slot is rewritten two strips later,
// after the next strip's barrier, which every peer reaches only after reading it; a last
// cluster barrier keeps every CTA's shared memory alive until its peers' reads are done.
// Resident (`resident`, the host's choice when N <= CQA_CLUSTER x CQA_RESIDENT_TILES x 192, so
// every CTA owns at most 2 tiles of a strip: BERT-base's FFN1 at N = 3072): y never leaves the
// chip. Tile j of the CTA's tiles of the strip stays in its consumers' staging at byte j x
// TILE_STAGE (24 KiB) of each 48 KiB region (rows 64c..64c+63 in consumer c's), no TMA store,
// and the codes pass reads the 8 values of a step from that staging (box lv / 8, 16-byte chunk
// (lv % 8) ^ (row % 8): the 128-byte swizzle) instead of global memory; the cluster barrier
// orders the CTA's own staging writes before those reads, and a consumer barrier after the
// codes pass orders the reads before the next strip's staging writes. y (C) is not written.
constexpr int CQA_CLUSTER = 8;
// Column tiles of a strip a CTA keeps resident (N <= CQA_CLUSTER x 2 x 192: the host's choice).
constexpr int CQA_RESIDENT_TILES = 2;

// (cluster_ctarank, cluster_id_x, cluster_nid_x, cluster_sync, ld_peer_f32: above)

// The cluster walk (see above) of the int8 GEMM with the quantisation of its rows: the
// producer and the consumers of ws_gemm (ConsumerRing, TileOut), K unsplit.
template <class G, class Epilogue>
FB_DEVICE void ws_gemm_cluster(const CUtensorMap* tma_a, const CUtensorMap* tma_w, const CUtensorMap* tma_c,
                               uint32_t M, uint32_t N, uint32_t K, const Epilogue& epilogue, const QaArgs& qa,
                               const __half* y, bool resident) {
    using Op = S8Op;
    constexpr int BK = Op::BK, CL = CQA_CLUSTER;
    // resident: a tile's staging (BOXES boxes) at TILE_STAGE x its index among the CTA's tiles
    constexpr int TILE_STAGE = G::BOXES * OUT_BOX_BYTES;
    static_assert(CQA_RESIDENT_TILES * TILE_STAGE <= G::REGION_BYTES, "the resident tiles fit the region");
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[G::STAGES], empty[G::STAGES];
    // [strip parity][max, -min][tile row]: the CTA's per-row pair, read by its peers
    __shared__ __align__(16) float pair_slot[2][2][BM];
    __shared__ float row_inv[BM];
    __shared__ int row_zero[BM];
    static_assert(G::SMEM + 1024 + (int)(sizeof(pair_slot) + sizeof(row_inv) + sizeof(row_zero)) <= 227 * 1024,
                  "the ring, the regions, the slots and the barriers fit an sm_90 block");
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + G::BN - 1) / G::BN;
    const int kblocks = (K + BK - 1) / BK;
    const int rank = (int)cluster_ctarank(), cid = (int)cluster_id_x(), ncl = (int)cluster_nid_x();
    // resident only where each CTA owns at most CQA_RESIDENT_TILES tiles of a strip (the host asks
    // for it only then; a larger N falls back to the stored path)
    resident = resident && tiles_n <= CL * CQA_RESIDENT_TILES;
    init_ring<G>(full, empty);

    if (wg == 0) {
        // producer: one elected thread of warp 0 issues the loads, in the consumers' order, and
        // the whole warpgroup takes part in the consumers' cluster barriers (one per strip, one
        // last): a barrier.cluster waits for every non-exited thread, so a producer blocked on
        // an empty stage that the consumers free only after a strip's barrier would deadlock
        // it. Before strip i's barrier it loads strip i's blocks and at most STAGES (and at
        // most one strip's) of the next: every stage it waits for is freed by then (cln_gemm's
        // rule).
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        bool leader = false;
        if (tid < 32) leader = elect_one();
        const int mine_tiles = rank < tiles_n ? (tiles_n - rank + CL - 1) / CL : 0;  // per strip
        const int per = mine_tiles * kblocks;
        const int mine = cid < tiles_m ? (tiles_m - cid + ncl - 1) / ncl : 0;  // strips this cluster walks
        const int total = mine * per;
        int next = 0;
        ProducerRing<G> ring{s0, full, empty};
        for (int i = 0; i < mine; i++) {
            if (leader) {
                const int ahead = per < G::STAGES ? per : G::STAGES;
                const int lim = (i + 1) * per + ahead < total ? (i + 1) * per + ahead : total;
                for (; next < lim; next++) {
                    const int j = next / kblocks;  // the CTA's j-th tile of the walk
                    const int sp = cid + (j / mine_tiles) * ncl, tn = rank + (j % mine_tiles) * CL;
                    const int m0 = sp * BM, n0 = tn * G::BN, kb = next % kblocks;
                    ring.load(tma_a, tma_w, kb * BK, m0, n0);
                }
            }
            __syncwarp();
            cluster_sync();  // the consumers' barrier of strip i
        }
        cluster_sync();  // the consumers' last barrier
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int cw = wg - 1, t = tid % 128, ct = tid - 128, warp = t / 32, lane = t % 32;
        ConsumerRing<Op, G> ring{s0, full, empty, cw};
        const NoTail none{};
        const TileOut<Epilogue, NoTail, G> out{epilogue, none, tma_c, s0, cw, (int)M, (int)N, tiles_m, tiles_n, nullptr, 0, false};
        // this thread's fragment rows (tile rows r0 + {0, 8}) and its words of the staging
        const int r0 = cw * 64 + warp * 16 + lane / 4;
        const uint32_t half = s0 + G::RING_BYTES + cw * G::REGION_BYTES;
        const uint32_t sbase = half + (warp * 16 + lane / 4) * ROW_BYTES + 4 * (lane % 4);
        const uint32_t swz = (uint32_t)((lane / 4) % 8) * 16;
        int par = 0;
        for (int sp = cid; sp < tiles_m; sp += ncl, par ^= 1) {
            const int m0 = sp * BM;
            float pmax[2] = {0.f, 0.f}, nmin[2] = {0.f, 0.f};
            // a warpgroup with no row below M (ws_gemm's rule): its stages released unread, no
            // tile, and zero pairs published (its peers combine every row's pairs)
            const bool live = m0 + 64 * cw < (int)M;
            for (int tn = rank, j = 0; tn < tiles_n; tn += CL, j++) {
                if (!live) {
                    ring.release(0, kblocks);
                    continue;
                }
                int d[G::ACC];  // (in this branch only: see ws_gemm)
#pragma unroll
                for (int i = 0; i < G::ACC; i++) d[i] = 0;
                ring.sum(d, 0, kblocks);
                const uint32_t joff = resident ? (uint32_t)(j * TILE_STAGE) : 0u;
                out.tile(d, tn * tiles_m + sp, joff, !resident);
                // fold the tile's fp16 outputs (this thread's staged pairs; 0 past M and N)
                const int n0 = tn * G::BN + 2 * (lane % 4);
#pragma unroll
                for (int c = 0; c < G::PAIRS; c++) {
                    const int n = n0 + 8 * c;
                    float2 m2 = make_float2(1.f, 1.f);
                    if (qa.smooth && n < (int)N) m2 = __half22float2(*reinterpret_cast<const __half2*>(qa.smooth + n));
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const uint32_t a =
                            sbase + joff + (c / 8) * OUT_BOX_BYTES + h * 8 * ROW_BYTES + (((c % 8) * 16) ^ swz);
                        uint32_t raw;
                        asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(raw) : "r"(a) : "memory");
                        float2 f = __half22float2(*reinterpret_cast<const __half2*>(&raw));
                        if (qa.smooth) {
                            f.x *= m2.x;
                            f.y *= m2.y;
                        }
                        pmax[h] = fmaxf(pmax[h], fmaxf(f.x, f.y));
                        nmin[h] = fmaxf(nmin[h], fmaxf(-f.x, -f.y));
                    }
                }
            }
            if (t == 0 && !resident) {
                bulk_wait();                 // this warpgroup's stores of the strip are in global memory
                fence_proxy_async_global();  // before the cluster barrier's release
            }
            // a tile row lies in the 4 lanes of a quad
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int o = 1; o < 4; o <<= 1) {
                    pmax[h] = fmaxf(pmax[h], __shfl_xor_sync(0xffffffffu, pmax[h], o));
                    nmin[h] = fmaxf(nmin[h], __shfl_xor_sync(0xffffffffu, nmin[h], o));
                }
                if (lane % 4 == 0) {
                    pair_slot[par][0][r0 + 8 * h] = pmax[h];
                    pair_slot[par][1][r0 + 8 * h] = nmin[h];
                }
            }
            cluster_sync();  // (orders the CTA's own threads too: no consumer_sync needed)
            const int rows = (int)M - m0 < BM ? (int)M - m0 : BM;
            if (ct < BM) {
                float px = 0.f, nx = 0.f;
                const uint32_t ap = smem_u32(&pair_slot[par][0][ct]), an = smem_u32(&pair_slot[par][1][ct]);
#pragma unroll
                for (int p = 0; p < CL; p++) {
                    px = fmaxf(px, ld_peer_f32(ap, p));
                    nx = fmaxf(nx, ld_peer_f32(an, p));
                }
                const Q8Asym q = q8_asym_params(px, nx);
                row_inv[ct] = q.inv;
                row_zero[ct] = q.zero;
                if (rank == 0 && ct < rows) {
                    qa.scale[m0 + ct] = q.scale;
                    qa.zero[m0 + ct] = q.zero;
                }
            }
            consumer_sync();
            // this CTA's columns of the strip's rows, 8 codes per thread and step
            for (int tn = rank, j = 0; tn < tiles_n; tn += CL, j++) {
                const int v0 = tn * (G::BN / 8), nv = (int)N / 8 - v0 < G::BN / 8 ? (int)N / 8 - v0 : G::BN / 8;
                // resident: rows padded to whole 8-step groups (a quarter warp's 16-byte loads
                // then read one row's 8 chunks of a box: distinct banks, also in a partial tile)
                const int nvp = resident ? (nv + 7) / 8 * 8 : nv;
                for (int i = ct; i < rows * nvp; i += CONSUMER_THREADS) {
                    const int r = i / nvp, lv = i % nvp, v = v0 + lv;
                    if (lv >= nv) continue;
                    const size_t row = (size_t)(m0 + r);
                    uint4 raw;
                    if (resident) {
                        // tile row r: consumer r / 64's region, staging row r % 64; the 16-byte
                        // chunk of the 8 values: box lv / 8, chunk (lv % 8) ^ (row % 8) (swizzle)
                        const int rr = r % 64;
                        const uint32_t a = s0 + G::RING_BYTES + (r / 64) * G::REGION_BYTES + j * TILE_STAGE +
                                           (lv / 8) * OUT_BOX_BYTES + rr * ROW_BYTES + (((lv % 8) ^ (rr % 8)) * 16);
                        asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                                     : "=r"(raw.x), "=r"(raw.y), "=r"(raw.z), "=r"(raw.w)
                                     : "r"(a)
                                     : "memory");
                    } else {
                        raw = __ldcg(reinterpret_cast<const uint4*>(y + row * N) + v);
                    }
                    float f[8];
                    qa_f32(f, raw, qa.smooth, v);
                    const float inv = row_inv[r];
                    const int zero = row_zero[r];
                    int c[8];
#pragma unroll
                    for (int j = 0; j < 8; j++) c[j] = q8_asym(f[j], inv, zero);
                    reinterpret_cast<uint2*>(qa.q + row * N)[v] =
                        make_uint2(pack_s8x4(c[0], c[1], c[2], c[3]), pack_s8x4(c[4], c[5], c[6], c[7]));
                }
            }
            // resident: every consumer's reads of both regions before the next strip's staging
            if (resident) consumer_sync();
        }
        // no CTA exits (its shared memory gone) while a peer may still read its slots
        cluster_sync();
    }
}
}  // namespace sm90

// The entries of gemm_sm90.cu (fp16) and gemm_int8_sm90.cu (int8) are instantiated by these.
// Every GEMM comes unsplit and split over K (_sk: SplitK, with the workspace's partial slots and
// per-tile counters), in two tile widths (BN 128, and 192: _n192); ENTRIES(X) instantiates
// X(suffix, geometry, SPLIT, the split parameters, SplitK).
#define NO_SK_PARAMS
#define NO_SK_ARGS \
    SplitK { 1, nullptr, nullptr }
#define SK_PARAMS , uint32_t *__restrict__ partials, uint32_t *__restrict__ counters
#define SK_ARGS \
    SplitK { 1, partials, counters }
#define ENTRIES(X)                            \
    X(, Geom<128>, false, NO_SK_PARAMS, NO_SK_ARGS) \
    X(_sk, Geom<128>, true, SK_PARAMS, SK_ARGS) \
    X(_n192, Geom<192>, false, NO_SK_PARAMS, NO_SK_ARGS) \
    X(_n192_sk, Geom<192>, true, SK_PARAMS, SK_ARGS)

// The cluster entries (cln_gemm): a cluster of CS CTAs per 128-row strip, BN x CS >= N. They
// write ln_out (through tma_ln: the same 64 x 64 swizzled boxes as tma_c) and the codes only,
// never y: there is no C argument.
// _cln3: 128-column tiles for rows of 257..384 (hidden 384: MiniLM, bge-small, e5-small), 3 CTAs
// per strip instead of _n192_cln2's 2, so a 32-strip grid keeps 96 SMs busy instead of 64.
// CLN_ENTRIES(X) instantiates X(suffix, geometry, CS).
#define CLN_ENTRIES(X) \
    X(_n192_cln2, Geom<192>, 2) X(_cln3, Geom<128>, 3) X(_n192_cln4, Geom<192>, 4) X(_cln8, Geom<128>, 8)
