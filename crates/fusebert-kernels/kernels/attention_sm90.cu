// Hopper (sm_90a) fused multi-head self-attention forward over packed variable-length sequences,
// FlashAttention-3 style on wgmma: the same inputs, outputs and semantics as `attention.cu`.
// Sequence b owns tokens cu_seqlens[b] .. cu_seqlens[b+1] (no padding); qkv [T, 3H] fp16 holds
// q | k | v (head h at columns h*D .. h*D+D of each part); out [T, H] fp16; H = heads * D.
//
// Design (docs/research/hopper.md 3.3, simplified v1):
// - A CTA is 64 query rows of one head, one warpgroup of 128 threads (no producer: see loads):
//   `attention_sm90_d*` 64 rows of one sequence, grid (ceil(max_seqlen / 64), heads, batch);
//   `attention_sm90_packed_d*` 64 consecutive packed tokens of any sequences, grid
//   (ceil(T / 64), heads), keys the union of their sequences, each row masked to its own.
//   CTAs with no rows exit at once, before any barrier or wgmma (the exit is CTA-uniform).
// - Loads: plain cp.async (16 bytes a thread, zero-fill past the sequence end), not TMA: a box of
//   one head's q/k/v columns is a strided 2-D slice that a tensor map could describe, but the
//   sequence boundaries inside the packed T dimension would still need the mask, and v1 keeps
//   one warpgroup that does everything. K/V blocks of 64 keys are double-buffered: block j+1
//   loads while block j is computed. cp.async writes through the generic proxy, so every thread
//   issues fence.proxy.async after its copies land and before the barrier that publishes them to
//   the wgmmas (sanitizer S3).
// - Shared layout of Q [64, D], K [64, D], V [64, D]: rows split in column blocks of CB halves
//   (CB = W / 2, W = 128 bytes when 64 | D, 64 when 32 | D, else 32), block c of row r at
//   c * rows * W + r * W, swizzled on the absolute address with the W-byte pattern (hopper.md
//   1.3). That is the canonical K-major SW-W layout for Q (A) and K (B) (SBO = 8 W, K steps of 16
//   inside a block add 32 bytes to the start), and the same bytes read as an MN-major SW-W B
//   operand are V with N = head dim, K = keys (LBO = rows * W between column blocks, SBO = 8 W),
//   so V is used as stored (imm-trans-b = 1). Every block starts on a 1024-byte boundary.
// - Bank conflicts: the only shared accesses besides the wgmma operand reads are the cp.async
//   stores and the epilogue's staging. v1 copied row by row, and at D = 48, 80, 96, 112 (rows of
//   several 32- or 64-byte blocks) a 16-byte store phase straddled blocks that start in the same
//   banks. The copies now go column block by column block (load_rows), which removes every
//   conflict without touching the layout. Restaging every D in the 128-byte swizzle would remove
//   them too, but pads rows to 64 halves (d48 +33%, d80 +60% shared memory), changes Q/K/V
//   descriptors, and splits V's N across partial blocks, for no gain: the layout, the
//   descriptors and every wgmma are v1's, so the outputs are v1's bit for bit. (The emulator
//   counts no wgmma operand reads: how the tensor core reads SW32/SW64 operands on hardware is
//   unmeasured, and the one reason left to revisit SW128 there.)
// - S = Q K^T: D/16 SS wgmmas m64n64k16 (f32). Online softmax in registers in base 2 (scale *
//   log2 e folded into one multiply, ex2.approx), keys past the sequence end masked to -inf;
//   the row max and sum are reduced over the 4 threads (quad) that share a row.
// - P -> f16x2 in registers: the S accumulator of thread t (rows 16w + g, +8; columns 8c + 2q,
//   +1) *is* the RS A fragment of P (hopper.md 1.4): k-block kb takes accumulator n-blocks 2kb,
//   2kb+1. O += P V: 4 RS wgmmas m64nDk16 per key block (f32 accumulators in registers).
// - Ordering: wgmma.fence before the first wgmma of each batch (the accumulators and P were
//   written by ordinary instructions), commit, wait_group 0 before the softmax touches S and
//   before O is rescaled or P rewritten (S1); the barrier at the top of the next iteration
//   comes after every thread's wait_group 0, so no wgmma still reads a stage when it is refilled
//   (S4).
// - Epilogue: normalise by the row sum; column pairs from the accumulator layout stored to
//   global memory directly would be 4-byte stores touching half of each 32-byte sector per
//   instruction (store efficiency 0.5). So the warpgroup waits at a barrier (every wgmma done:
//   Q and the K/V stages are free), each warp writes its 16 rows into a swizzled staging tile
//   (OStage: conflict-free for the fragment writes and the 16-byte reads), and reads them back
//   as 16-byte chunks, whole sectors of each row per instruction, stored for valid rows only
//   (rows past the sequence end, or past T when packed, are never written). A warp reads only
//   the rows it wrote, so __syncwarp orders the two.
//
// Not (yet) FA3: no TMA producer warp, no intra-warpgroup overlap of the next S with this
// block's softmax, no ping-pong of two consumer warpgroups.
#include "common.cuh"

namespace attn90 {
constexpr int BM = 64, BN = 64, THREADS = 128;

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

FB_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
FB_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
FB_DEVICE void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
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

// cp.async of `rows` rows (D halves each) starting at `src`, row stride `ld`; rows at or past
// `valid` are zero-filled without reading (finite V rows: masked P is 0 and 0 * 0 = 0).
// Column block by column block (header: bank conflicts): consecutive threads take consecutive
// 16-byte chunks of one block (rows x W bytes, contiguous), so the 8 threads of a 16-byte store
// phase fill one 128-byte line, which the swizzle only permutes. In global memory a phase still
// reads whole 32-byte sectors (W >= 32; block and head offsets are multiples of 32 bytes).
template <int D>
FB_DEVICE void load_rows(uint32_t dst, const __half* src, size_t ld, int rows, int valid) {
    using L = Lay<D>;
    constexpr uint32_t CPR = L::W / 16;  // 16-byte chunks per block row
    const uint32_t per_block = rows * CPR;
    // in this order chunk c of the tile is at dst + 16 c (before the swizzle)
    for (uint32_t c = threadIdx.x; c < rows * (D / 8); c += THREADS) {
        const int r = (c % per_block) / CPR, col = (c / per_block) * L::CB + (c % CPR) * 8;
        const bool ok = r < valid;
        cp_async16(L::swz(dst + 16 * c), src + (size_t)(ok ? r : 0) * ld + col, ok ? 16 : 0);
    }
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

// PACKED = false: CTA (x, h, b) is query rows 64 x .. of sequence b; keys: sequence b.
// PACKED = true: CTA (x, h) is packed tokens 64 x .. 64 x + 63, whatever sequences they belong
// to (hopper.md 3.3: no tile padded to a sequence end); keys: the union of those sequences,
// key k visible to row r iff both lie in one sequence (per-row segment [lo, hi)).
template <int D, bool PACKED>
FB_DEVICE void forward(const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens,
                       __half* __restrict__ out, uint32_t heads, uint32_t batch, float scale_log2) {
    using L = Lay<D>;
    constexpr int NT = BN / 8, ND = D / 8;
    constexpr uint32_t QB = BM * D * 2, KB = BN * D * 2;
    static_assert(QB % 1024 == 0 && KB % 1024 == 0, "every tile starts on the 1024-byte swizzle repeat");
    extern __shared__ __align__(1024) uint8_t smem[];
    const int h = blockIdx.y;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    // qtok: first query token; qvalid: query rows that exist; [kstart, kend): the keys (tokens);
    // [lo0, hi0), [lo1, hi1): the keys rows g and g + 8 of this warp may see
    int qtok, qvalid, kstart, kend, lo0, hi0, lo1, hi1;
    if constexpr (PACKED) {
        const int T = cu_seqlens[batch];
        qtok = blockIdx.x * BM;
        if (qtok >= T) return;  // the whole CTA: before any barrier or wgmma
        qvalid = min(BM, T - qtok);
        kstart = cu_seqlens[seq_of(cu_seqlens, batch, qtok)];
        kend = cu_seqlens[seq_of(cu_seqlens, batch, qtok + qvalid - 1) + 1];
        const int r0 = warp * 16 + g, r1 = r0 + 8;
        // rows past T (not stored) see every key: finite, like the valid rows
        const int b0 = r0 < qvalid ? seq_of(cu_seqlens, batch, qtok + r0) : -1;
        const int b1 = r1 < qvalid ? seq_of(cu_seqlens, batch, qtok + r1) : -1;
        lo0 = b0 < 0 ? kstart : cu_seqlens[b0];
        hi0 = b0 < 0 ? kend : cu_seqlens[b0 + 1];
        lo1 = b1 < 0 ? kstart : cu_seqlens[b1];
        hi1 = b1 < 0 ? kend : cu_seqlens[b1 + 1];
    } else {
        const int b = blockIdx.z, start = cu_seqlens[b], len = (int)cu_seqlens[b + 1] - start;
        if ((int)blockIdx.x * BM >= len) return;  // the whole CTA: before any barrier or wgmma
        qtok = start + blockIdx.x * BM;
        qvalid = min(BM, start + len - qtok);
        kstart = lo0 = lo1 = start;
        kend = hi0 = hi1 = start + len;
    }
    const int klen = kend - kstart;
    const int H = heads * D;
    const size_t ld = 3 * (size_t)H;

    const uint32_t sQ = smem_u32(smem);
    auto sK = [&](int s) { return sQ + QB + 2 * s * KB; };
    auto sV = [&](int s) { return sQ + QB + (2 * s + 1) * KB; };
    const __half* qbase = qkv + (size_t)qtok * ld + h * D;
    const __half* kbase = qkv + (size_t)kstart * ld + H + h * D;
    const __half* vbase = kbase + H;

    const int ntiles = (klen + BN - 1) / BN;
    load_rows<D>(sQ, qbase, ld, BM, qvalid);
    load_rows<D>(sK(0), kbase, ld, BN, klen);
    load_rows<D>(sV(0), vbase, ld, BN, klen);
    cp_async_commit();

    float o[D / 2], sc[BN / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < BN / 2; i++) sc[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g and g + 8 of the warp

    for (int j = 0; j < ntiles; j++) {
        const int s = j & 1, n0 = j * BN;
        cp_async_wait<0>();   // this thread's copies of block j (and Q) landed
        fence_proxy_async();  // ... and are visible to the async proxy (wgmma operands)
        __syncthreads();      // every thread's; and every wgmma of block j - 1 completed (wait 0)
        if (j + 1 < ntiles) {
            const int n1 = n0 + BN;
            load_rows<D>(sK(s ^ 1), kbase + (size_t)n1 * ld, ld, BN, klen - n1);
            load_rows<D>(sV(s ^ 1), vbase + (size_t)n1 * ld, ld, BN, klen - n1);
        }
        cp_async_commit();

        // S = Q K^T: K steps of 16 inside a column block add 32 bytes to both starts
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c = kk * 16;
            const uint64_t da = L::desc(L::at(sQ, BM, 0, c), 16), db = L::desc(L::at(sK(s), BN, 0, c), 16);
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
            WgmmaRs<D>::run(o, pa[kb], L::desc(sV(s) + kb * 16 * L::W, BN * L::W));
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
    }

    // normalise; o[4i + e] is row g + 8 (e >> 1), column 8i + 2q + (e & 1)
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float il0 = 1.f / l0, il1 = 1.f / l1;
    using S = OStage<D>;
    static_assert(BM * S::RS <= QB + 4 * KB, "the staged O fits in the Q and K/V tiles");
    // every thread is past its last wait_group 0: after the barrier no wgmma reads Q or a stage
    __syncthreads();
    const int r0 = warp * 16 + g;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        st_shared_b32(S::at(sQ, r0, i) + 4 * q, pack_half2(o[4 * i] * il0, o[4 * i + 1] * il0));
        st_shared_b32(S::at(sQ, r0 + 8, i) + 4 * q, pack_half2(o[4 * i + 2] * il1, o[4 * i + 3] * il1));
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
            const uint4 v = ld_shared_v4(S::at(sQ, r, c));
            if (r < qvalid) st_global_v4(out + (size_t)(qtok + r) * H + h * D + 8 * c, v);
        }
    }
}
}  // namespace attn90

// Two entries per head dim (per-sequence tiles, packed-token tiles `_packed`); dynamic shared
// memory (BM + 4 BN) * D * 2 bytes (src/attention_sm90.rs); `out` 16-byte aligned (the stores).
#define ATTN90_ENTRY(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128, 1) attention_sm90_d##D(                                  \
        const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,   \
        uint32_t heads, uint32_t batch, float scale_log2) {                                                   \
        attn90::forward<D, false>(qkv, cu_seqlens, out, heads, batch, scale_log2);                            \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(128, 1) attention_sm90_packed_d##D(                           \
        const __half* __restrict__ qkv, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,   \
        uint32_t heads, uint32_t batch, float scale_log2) {                                                   \
        attn90::forward<D, true>(qkv, cu_seqlens, out, heads, batch, scale_log2);                             \
    }
ATTN90_ENTRY(16)
ATTN90_ENTRY(32)
ATTN90_ENTRY(48)
ATTN90_ENTRY(64)
ATTN90_ENTRY(80)
ATTN90_ENTRY(96)
ATTN90_ENTRY(112)
ATTN90_ENTRY(128)
