// The device code of the Hopper attention (attention_sm90.cu: its design comment), as a header so
// that other _sm90 kernels (qkv_attention_sm90.cu) run the same per-consumer arithmetic: the same
// bits. Include only from *_sm90.cu files.
#pragma once
#include <cuda.h>

#include "common.cuh"
#include "hopper_async.cuh"

namespace attn90 {
// BM query rows per consumer warpgroup (the wgmma M), BN keys per K/V block
constexpr int BM = 64, BN = 64, CONSUMERS = 2, STAGES = 2;
constexpr int CONSUMER_THREADS = 128 * CONSUMERS, THREADS = CONSUMER_THREADS + 128;  // + the producer warpgroup
constexpr int CTA_M = CONSUMERS * BM;

// d (64 x 64 f32) = A(64 x 16) . B(64 x 16)^T (+ d if scale_d), A and B K-major in shared memory.
FB_DEVICE void wgmma_ss_n64(float (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(scale_d));
}

// d (64 x N f32) += A(64 x 16, registers: the RS fragment of P) . B(16 x N), B MN-major in shared
// memory (imm-trans-b = 1). One specialisation per head dim N (generated: one asm operand list each).
template <int N>
struct WgmmaRs;

template <>
struct WgmmaRs<16> {
    static FB_DEVICE void run(float (&d)[8], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7}, "
            "{%8, %9, %10, %11}, %12, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<32> {
    static FB_DEVICE void run(float (&d)[16], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
            "{%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<48> {
    static FB_DEVICE void run(float (&d)[24], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n48k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, "
            "{%24, %25, %26, %27}, %28, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<64> {
    static FB_DEVICE void run(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
            "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<80> {
    static FB_DEVICE void run(float (&d)[40], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n80k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, "
            "{%40, %41, %42, %43}, %44, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<96> {
    static FB_DEVICE void run(float (&d)[48], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "
            "{%48, %49, %50, %51}, %52, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<112> {
    static FB_DEVICE void run(float (&d)[56], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %61, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n112k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55}, "
            "{%56, %57, %58, %59}, %60, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

template <>
struct WgmmaRs<128> {
    static FB_DEVICE void run(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1u));
    }
};

// wait_group 0; the registers of the in-flight wgmmas are asm operands on both sides so that the
// compiler neither reads nor reuses them across the wait (touching them before it is S1).
template <int N>
FB_DEVICE void wgmma_wait0(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// Layout of one head-dim-D tile (see the header): swizzle width W bytes = one column block row.
template <int D>
struct Lay {
    static constexpr int W = D % 64 == 0 ? 128 : D % 32 == 0 ? 64 : 32;
    static constexpr int CB = W / 2;  // halves per column block
    static constexpr uint64_t SWZ = W == 128 ? 1 : W == 64 ? 2 : 3;  // descriptor code (hopper.md 1.2)
    // the W-byte swizzle of an absolute shared address: 16-byte chunk ^= (address / 128) mod W/16
    static FB_DEVICE uint32_t swz(uint32_t a) { return a ^ (((a >> 7) & (W / 16 - 1)) << 4); }
    // address (unswizzled) of element (r, c) of a tile of `rows` rows starting at `base`
    static FB_DEVICE uint32_t at(uint32_t base, int rows, int r, int c) {
        return base + (c / CB) * rows * W + r * W + (c % CB) * 2;
    }
    // descriptor: start, LBO, SBO = 8 rows of W bytes, swizzle; base offset 0 (blocks on 1024)
    static FB_DEVICE uint64_t desc(uint32_t start, uint32_t lbo) {
        return (uint64_t)((start & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
               ((uint64_t)((8 * W) >> 4) << 32) | (SWZ << 62);
    }
};


FB_DEVICE void consumer_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(CONSUMER_THREADS) : "memory"); }

// TMA of one [64, D] tile of qkv (one head's D columns from column `col`, rows from `row`) into
// the layout above at `dst`: column block c is box {CB halves, 64 rows} at c * 64 * W, its rows
// W bytes that TMA swizzles with the same W-byte pattern.
template <int D>
FB_DEVICE void tma_tile(uint32_t dst, const CUtensorMap* map, int col, int row, uint32_t bar) {
    using L = Lay<D>;
#pragma unroll
    for (int c = 0; c < D / L::CB; c++) tma_load_2d(dst + c * 64 * L::W, map, col + c * L::CB, row, bar);
}
// Staging tile of the normalised O [64, D] for 16-byte stores: row r at r * RS (RS: the row
// rounded up to 128 bytes, so that a row's chunk k sits in bank group k mod 8 of its line), its
// 16-byte chunk c at c ^ s(r), s(r) = (r mod 8) rotated left by log2 CW in 3 bits. The fragment
// writes (8 rows, one chunk) see s bijective on r mod 8; a read phase (8 / CW rows, CW aligned
// chunks) sees the rows' s differ in exactly the bits the chunks do not vary: both conflict-free.
template <int D>
struct OStage {
    static constexpr int ND = D / 8;                                    // 16-byte chunks per row
    static constexpr int RS = 128 * ((ND + 7) / 8);                     // bytes per staged row
    static constexpr int CW = ND % 8 == 0 ? 8 : ND % 4 == 0 ? 4 : 2;  // chunks of a row per store
    static constexpr int LG = CW == 8 ? 3 : CW == 4 ? 2 : 1;          // log2 CW
    static FB_DEVICE uint32_t at(uint32_t base, int r, int c) {
        const int s = ((r << LG) | ((r & 7) >> (3 - LG))) & 7;
        return base + r * RS + ((c ^ s) << 4);
    }
};

FB_DEVICE void st_shared_b32(uint32_t a, uint32_t v) { asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory"); }
FB_DEVICE uint4 ld_shared_v4(uint32_t a) {
    uint4 v;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}
// as asm: nvcc 13.0 splits some `*(uint4*)p = v` into four st.global.u32 (store efficiency 0.5)
FB_DEVICE void st_global_v4(void* p, const uint4& v) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}

// The sequence holding packed token `tok` (< T): the largest b < batch with cu_seqlens[b] <= tok
// (the largest, so that empty sequences, cu[b] == cu[b + 1], are skipped).
FB_DEVICE int seq_of(const uint32_t* __restrict__ cu, int batch, int tok) {
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if ((int)cu[mid] <= tok) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Dynamic shared memory at head dim D: Q of each consumer, then the K/V ring; at the end the
// consumers' O staging tiles reuse it from the start; after it the mbarriers (full[STAGES],
// empty[STAGES], qfull: 8 bytes each, then the codes' flag: BARRIERS bytes reserved). No static shared memory: the
// launch's dynamic bytes are the whole (src/attention_sm90.rs: shared_bytes).
template <int D>
struct Smem {
    static constexpr uint32_t QB = BM * D * 2, KB = BN * D * 2;
    static constexpr uint32_t RING = CONSUMERS * QB;
    static constexpr uint32_t MAIN = RING + STAGES * 2 * KB, STAGED = CONSUMERS * BM * OStage<D>::RS;
    static constexpr uint32_t BYTES = MAIN > STAGED ? MAIN : STAGED, BARRIERS = 64;
    // after the mbarriers: a shared word the consumers agree through (the int8 entries' codes)
    static constexpr uint32_t FLAG = BYTES + 8 * (2 * STAGES + 1);
    static_assert(FLAG + 4 <= BYTES + BARRIERS, "the mbarriers and the flag fit their reservation");
    static_assert(QB % 1024 == 0 && KB % 1024 == 0, "every tile starts on the 1024-byte swizzle repeat");
    static FB_DEVICE uint32_t q(uint32_t base, int c) { return base + c * QB; }
    static FB_DEVICE uint32_t k(uint32_t base, int s) { return base + RING + 2 * s * KB; }
    static FB_DEVICE uint32_t v(uint32_t base, int s) { return base + RING + (2 * s + 1) * KB; }
    static FB_DEVICE uint32_t full(uint32_t base, int s) { return base + BYTES + 8 * s; }
    static FB_DEVICE uint32_t empty(uint32_t base, int s) { return base + BYTES + 8 * (STAGES + s); }
    static FB_DEVICE uint32_t qfull(uint32_t base) { return base + BYTES + 16 * STAGES; }
};

// A CTA's query rows and keys: qtok the first query token, qvalid the rows that exist, [kstart,
// kend) the keys (tokens).
struct Span {
    int qtok, qvalid, kstart, kend;
    FB_DEVICE int blocks() const { return (kend - kstart + BN - 1) / BN; }
};

// PACKED = false: CTA (x, h, b) is query rows 128 x .. of sequence b; keys: sequence b.
// PACKED = true: CTA (x, h) is packed tokens 128 x .. 128 x + 127, whatever sequences they
// belong to (hopper.md 3.3: no tile padded to a sequence end); keys: the union of those
// sequences. False when the CTA has no rows (the same answer in every thread).
template <bool PACKED>
FB_DEVICE bool cta_span(const uint32_t* __restrict__ cu, uint32_t batch, Span& sp) {
    if constexpr (PACKED) {
        const int T = cu[batch];
        sp.qtok = blockIdx.x * CTA_M;
        if (sp.qtok >= T) return false;
        sp.qvalid = min(CTA_M, T - sp.qtok);
        sp.kstart = cu[seq_of(cu, batch, sp.qtok)];
        sp.kend = cu[seq_of(cu, batch, sp.qtok + sp.qvalid - 1) + 1];
    } else {
        const int b = blockIdx.z, start = cu[b], len = (int)cu[b + 1] - start;
        if ((int)blockIdx.x * CTA_M >= len) return false;
        sp.qtok = start + blockIdx.x * CTA_M;
        sp.qvalid = min(CTA_M, start + len - sp.qtok);
        sp.kstart = start;
        sp.kend = start + len;
    }
    return true;
}

// The producer (one thread): both Q tiles on `qfull`, then every K/V block of the span
// into the ring, stage s = j mod STAGES once the consumers have released its previous lap.
template <int D>
FB_DEVICE void produce(const CUtensorMap* map, uint32_t base, const Span& sp, int col, int H) {
    using M = Smem<D>;
    const uint32_t qb = M::qfull(base);
    mbar_arrive_expect_tx(qb, CONSUMERS * M::QB);
#pragma unroll
    for (int c = 0; c < CONSUMERS; c++) tma_tile<D>(M::q(base, c), map, col, sp.qtok + c * BM, qb);
    const int blocks = sp.blocks();
    for (int j = 0; j < blocks; j++) {
        const int s = j % STAGES;
        // a fresh barrier passes parity 1 at once: the first lap does not wait
        mbar_wait(M::empty(base, s), ((j / STAGES) & 1) ^ 1);
        const uint32_t fb = M::full(base, s);
        // the whole boxes, out-of-bounds (zero-filled) rows included
        mbar_arrive_expect_tx(fb, 2 * M::KB);
        tma_tile<D>(M::k(base, s), map, H + col, sp.kstart + j * BN, fb);
        tma_tile<D>(M::v(base, s), map, 2 * H + col, sp.kstart + j * BN, fb);
    }
}

// Consumer warpgroup c: query rows 64 c .. 64 c + 63 of the span, every key block from the ring.
// Packed spans mask each row to its own sequence's keys (per-row segment [lo, hi)).
template <int D, bool PACKED>
FB_DEVICE void consume(const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out, uint32_t batch, int h,
                       int H, float scale_log2, uint32_t base, const Span& sp, int cw) {
    using L = Lay<D>;
    using M = Smem<D>;
    constexpr int NT = BN / 8, ND = D / 8;
    const int tid = threadIdx.x % 128, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const int qtok = sp.qtok + cw * BM, qvalid = sp.qvalid - cw * BM;  // this warpgroup's (qvalid may be <= 0)
    const int kstart = sp.kstart;
    // [lo0, hi0), [lo1, hi1): the keys rows g and g + 8 of this warp may see
    int lo0 = kstart, hi0 = sp.kend, lo1 = kstart, hi1 = sp.kend;
    if constexpr (PACKED) {
        const int r0 = warp * 16 + g, r1 = r0 + 8;
        // rows past T (not stored) see every key: finite, like the valid rows
        const int b0 = r0 < qvalid ? seq_of(cu_seqlens, batch, qtok + r0) : -1;
        const int b1 = r1 < qvalid ? seq_of(cu_seqlens, batch, qtok + r1) : -1;
        if (b0 >= 0) lo0 = cu_seqlens[b0], hi0 = cu_seqlens[b0 + 1];
        if (b1 >= 0) lo1 = cu_seqlens[b1], hi1 = cu_seqlens[b1 + 1];
    }
    const uint32_t sQ = M::q(base, cw);
    const int blocks = sp.blocks();
    if (qvalid <= 0) {
        // no row of this warpgroup exists (the CTA's last rows): take and release every block
        // (the empty barriers count all 256 consumer threads) without computing, then meet the
        // other consumer at its epilogue barrier. Waiting for full[s] first keeps each arrival in
        // the lap it belongs to.
        for (int j = 0; j < blocks; j++) {
            mbar_wait(M::full(base, j % STAGES), (j / STAGES) & 1);
            mbar_arrive(M::empty(base, j % STAGES));
        }
        consumer_sync();
        return;
    }

    float o[D / 2], sc[BN / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < BN / 2; i++) sc[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g and g + 8 of the warp

    mbar_wait(M::qfull(base), 0);
    for (int j = 0; j < blocks; j++) {
        const int s = j % STAGES, n0 = j * BN;
        mbar_wait(M::full(base, s), (j / STAGES) & 1);  // block j is in stage s

        // S = Q K^T: K steps of 16 inside a column block add 32 bytes to both starts
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c = kk * 16;
            const uint64_t da = L::desc(L::at(sQ, BM, 0, c), 16), db = L::desc(L::at(M::k(base, s), BN, 0, c), 16);
            wgmma_ss_n64(sc, da, db, kk > 0 ? 1u : 0u);
        }
        wgmma_commit();
        wgmma_wait0(sc);
        // online softmax (base 2): sc[4c + e] is row g + 8 (e >> 1), key n0 + 8c + 2q + (e & 1);
        // keys outside the row's sequence (past its end, or another sequence's) are -inf
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int c = 0; c < NT; c++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = kstart + n0 + 8 * c + 2 * q + (e & 1);
                const bool ok = e < 2 ? (key >= lo0 && key < hi0) : (key >= lo1 && key < hi1);
                sc[4 * c + e] = ok ? sc[4 * c + e] * scale_log2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(sc[4 * c], sc[4 * c + 1]));
            mx1 = fmaxf(mx1, fmaxf(sc[4 * c + 2], sc[4 * c + 3]));
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        // a row may have seen no visible key yet (packed tiles: a block of another sequence's
        // keys): then its max is -inf and it subtracts 0 instead, so that exp2 gives 0, not NaN
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float u0 = mn0 == -INFINITY ? 0.f : mn0, u1 = mn1 == -INFINITY ? 0.f : mn1;
        const float a0 = fast_exp2(m0 - u0), a1 = fast_exp2(m1 - u1);  // first visible keys: 0
        m0 = mn0;
        m1 = mn1;
        float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
        for (int c = 0; c < NT; c++) {
            sc[4 * c] = fast_exp2(sc[4 * c] - u0);
            sc[4 * c + 1] = fast_exp2(sc[4 * c + 1] - u0);
            sc[4 * c + 2] = fast_exp2(sc[4 * c + 2] - u1);
            sc[4 * c + 3] = fast_exp2(sc[4 * c + 3] - u1);
            rs0 += sc[4 * c] + sc[4 * c + 1];
            rs1 += sc[4 * c + 2] + sc[4 * c + 3];
        }
        l0 = l0 * a0 + rs0;
        l1 = l1 * a1 + rs1;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            o[4 * i] *= a0;
            o[4 * i + 1] *= a0;
            o[4 * i + 2] *= a1;
            o[4 * i + 3] *= a1;
        }

        // P (f16) as RS A fragments: reg 0 row g keys 2q.., 1 row g+8, 2 row g keys 8+2q.., 3 row g+8
        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int kb = 0; kb < BN / 16; kb++) {
            pa[kb][0] = pack_half2(sc[8 * kb], sc[8 * kb + 1]);
            pa[kb][1] = pack_half2(sc[8 * kb + 2], sc[8 * kb + 3]);
            pa[kb][2] = pack_half2(sc[8 * kb + 4], sc[8 * kb + 5]);
            pa[kb][3] = pack_half2(sc[8 * kb + 6], sc[8 * kb + 7]);
        }
        // O += P V: V read MN-major (N = head dim in column blocks LBO = BN * W apart), 16 keys a step
        wgmma_fence();
#pragma unroll
        for (int kb = 0; kb < BN / 16; kb++)
            WgmmaRs<D>::run(o, pa[kb], L::desc(M::v(base, s) + kb * 16 * L::W, BN * L::W));
        wgmma_commit();
#pragma unroll
        for (int kb = 0; kb < BN / 16; kb++)
#pragma unroll
            for (int i = 0; i < 4; i++) asm volatile("" : "+r"(pa[kb][i])::"memory");
        wgmma_wait0(o);
#pragma unroll
        for (int kb = 0; kb < BN / 16; kb++)
#pragma unroll
            for (int i = 0; i < 4; i++) asm volatile("" : "+r"(pa[kb][i])::"memory");
        // every wgmma reading stage s has completed (the wait above): the producer may refill it
        mbar_arrive(M::empty(base, s));
    }

    // normalise; o[4i + e] is row g + 8 (e >> 1), column 8i + 2q + (e & 1)
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float il0 = 1.f / l0, il1 = 1.f / l1;
    using S = OStage<D>;
    // every consumer thread is past its last wait_group 0 and every load was consumed: after the
    // barrier no wgmma reads Q or a stage and no TMA writes one
    consumer_sync();
    const uint32_t stage_o = base + cw * BM * S::RS;
    const int r0 = warp * 16 + g;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        st_shared_b32(S::at(stage_o, r0, i) + 4 * q, pack_half2(o[4 * i] * il0, o[4 * i + 1] * il0));
        st_shared_b32(S::at(stage_o, r0 + 8, i) + 4 * q, pack_half2(o[4 * i + 2] * il1, o[4 * i + 3] * il1));
    }
    __syncwarp();  // each warp stores the 16 rows it staged
    // per instruction 32 / CW rows x CW chunks: whole 32-byte sectors of each row, valid rows only
    constexpr int RPI = 32 / S::CW;
    const int rr = lane / S::CW, cc = lane % S::CW;
#pragma unroll
    for (int rb = 0; rb < 16; rb += RPI) {
#pragma unroll
        for (int cb = 0; cb < ND; cb += S::CW) {
            const int r = warp * 16 + rb + rr, c = cb + cc;
            const uint4 v = ld_shared_v4(S::at(stage_o, r, c));
            if (r < qvalid) st_global_v4(out + (size_t)(qtok + r) * H + h * D + 8 * c, v);
        }
    }
}

// What a CTA's consumers do besides the attention: nothing (the fp16 entries), or the int8
// entries' context codes (attention_sm90.cu: CtxCodes). begin: as a CTA with rows starts;
// operator(): after its stores; both by every consumer thread.
struct NoCodes {
    FB_DEVICE void begin() const {}
    FB_DEVICE void operator()(const __half*, const Span&, int, uint32_t, uint32_t*) const {}
};

template <int D, bool PACKED, class Codes = NoCodes>
FB_DEVICE void forward(const CUtensorMap* map, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,
                       uint32_t heads, uint32_t batch, float scale_log2, const Codes& codes = Codes{}) {
    using M = Smem<D>;
    extern __shared__ __align__(1024) uint8_t smem[];
    Span sp;
    if (!cta_span<PACKED>(cu_seqlens, batch, sp)) return;  // the whole CTA: before any barrier
    const int h = blockIdx.y, H = heads * D, wg = threadIdx.x / 128;
    const uint32_t base = smem_u32(smem);
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(M::full(base, s), 1);
            mbar_init(M::empty(base, s), CONSUMER_THREADS);
        }
        mbar_init(M::qfull(base), 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (wg == CONSUMERS) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (threadIdx.x / 32 == CONSUMER_THREADS / 32 && elect_one()) produce<D>(map, base, sp, h * D, H);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        codes.begin();
        consume<D, PACKED>(cu_seqlens, out, batch, h, H, scale_log2, base, sp, wg);
        codes(out, sp, H, base, reinterpret_cast<uint32_t*>(smem + M::FLAG));
    }
}
}  // namespace attn90
