// Hopper (sm_90a) fused multi-head self-attention forward over packed variable-length sequences,
// FlashAttention-3 style on wgmma: the same inputs, outputs and semantics as `attention.cu`.
// Sequence b owns tokens cu_seqlens[b] .. cu_seqlens[b+1] (no padding); qkv [T, 3H] fp16 holds
// q | k | v (head h at columns h*D .. h*D+D of each part); out [T, H] fp16; H = heads * D.
//
// Design (docs/research/hopper.md 3.3):
// - Warp-specialised CTA of 384 threads: consumer warpgroups 0 and 1 own query rows 0-63 and
//   64-127 of a 128-row tile of one head; warpgroup 2 is the producer (one elected thread of its
//   first warp issues every load). Each K/V block is loaded once for both consumers: half the K/V traffic
//   per query row of 64-row CTAs. `attention_sm90_d*`: 128 rows of one sequence, grid
//   (ceil(max_seqlen / 128), heads, batch); `attention_sm90_packed_d*`: 128 consecutive packed
//   tokens of any sequences, grid (ceil(T / 128), heads), keys the union of their sequences,
//   each row masked to its own. CTAs with no rows exit at once, before any barrier (the exit is
//   CTA-uniform). A consumer whose 64 rows are all past the end computes nothing: it only takes
//   and releases every block (the `empty` barriers count it) and joins the epilogue barrier.
//   A whole producer warpgroup, not one warp: wgmma needs a block of whole warpgroups (the
//   emulator refuses 9 warps). As in gemm_sm90.cu, setmaxnreg gives the producer's registers to
//   the consumers (40 / 232; ptxas fits every entry under the 168 of 384 threads anyway, the
//   largest, packed d112, in ~156).
// - Loads by TMA (cp.async.bulk.tensor.2d, one tensor map over qkv as [T, 3H], box {W / 2
//   halves, 64 rows} in the W-byte swizzle): a box is exactly one column block of the layout
//   below, so Q, K and V land in the layout the wgmma descriptors read, a tile being D / (W / 2)
//   boxes. Q: 2 x 64 rows on `qfull`; K/V: a ring of STAGES = 2 stages of (K [64, D], V [64, D])
//   with full[s] (1 arrival, the producer's arrive.expect_tx, + the boxes' bytes) and empty[s]
//   (256 arrivals: every consumer thread once its P V wgmmas, the last to read stage s, have
//   completed, wait_group 0: sanitizer S4). Stage s, lap n: full parity n & 1; the producer waits
//   empty parity (n & 1) ^ 1 (a fresh barrier passes parity 1 at once: the first lap does not
//   wait). TMA writes shared memory through the async proxy, which the wgmmas read: no proxy
//   fence (v1's cp.async needed fence.proxy.async). Rows past T are zero-filled by TMA (counted in
//   the transaction bytes). Rows past a sequence end but inside T hold the next sequence's
//   tokens: keys there are masked to -inf in S, so P is exactly 0, and 0 * v = 0 for the finite
//   v of valid inputs (as in v1's packed tiles, whose key range already spanned sequences; a
//   non-finite v in a neighbouring sequence would reach the rows through 0 * inf = NaN); query
//   rows there are never stored. Not 1-D cp.async.bulk row copies: those cannot swizzle.
// - Shared layout of Q [64, D] (one per consumer), K [64, D], V [64, D]: rows split in column
//   blocks of CB halves (CB = W / 2, W = 128 bytes when 64 | D, 64 when 32 | D, else 32), block c
//   of row r at c * rows * W + r * W, swizzled on the absolute address with the W-byte pattern
//   (hopper.md 1.3, TMA's swizzle). That is the canonical K-major SW-W layout for Q (A) and K (B)
//   (SBO = 8 W, K steps of 16 inside a block add 32 bytes to the start), and the same bytes read
//   as an MN-major SW-W B operand are V with N = head dim, K = keys (LBO = rows * W between
//   column blocks, SBO = 8 W), so V is used as stored (imm-trans-b = 1). Every block starts on a
//   1024-byte boundary. The only other shared accesses are the epilogue's staging (below): no
//   bank conflicts at any head dim. (The emulator counts no wgmma operand or TMA shared traffic:
//   how the tensor core reads SW32/SW64 operands on hardware is unmeasured.)
// - Per consumer warpgroup, per key block (v1's arithmetic, unchanged: per-sequence tiles give
//   v1's outputs bit for bit; packed tiles start their key blocks at the first key of the
//   128-row tile instead of the 64-row one, so the online softmax sums in other blocks, within
//   the fp16 tolerance): S = Q K^T: D/16 SS wgmmas m64n64k16 (f32). Online softmax in registers
//   in base 2 (scale * log2 e folded into one multiply, ex2.approx), keys outside the row's
//   sequence masked to -inf; row max and sum reduced over the 4 threads (quad) that share a row.
// - P -> f16x2 in registers: the S accumulator of thread t (rows 16w + g, +8; columns 8c + 2q,
//   +1) *is* the RS A fragment of P (hopper.md 1.4): k-block kb takes accumulator n-blocks 2kb,
//   2kb+1. O += P V: 4 RS wgmmas m64nDk16 per key block (f32 accumulators in registers).
// - Ordering: wgmma.fence before the first wgmma of each batch (the accumulators and P were
//   written by ordinary instructions), commit, wait_group 0 before the softmax touches S and
//   before O is rescaled or P rewritten (S1), then the arrival on empty[s] (S4).
// - Epilogue: normalise by the row sum; column pairs from the accumulator layout stored to
//   global memory directly would be 4-byte stores touching half of each 32-byte sector per
//   instruction (store efficiency 0.5). So the consumers wait at a named barrier (every wgmma
//   of both done: Q and the stages are free; every load was consumed, so no TMA is in flight),
//   each warp writes its 16 rows into a swizzled staging tile (OStage: conflict-free for the
//   fragment writes and the 16-byte reads; consumer c's at c * 64 RS from the start of shared
//   memory), and reads them back as 16-byte chunks, whole sectors of each row per instruction,
//   stored for valid rows only (rows past the sequence end, or past T when packed, are never
//   written). A warp reads only the rows it wrote, so __syncwarp orders the two.
//
// FA3 now: the TMA producer, the mbarrier ring, two consumer warpgroups sharing each K/V
// stage. Not (yet): the intra-warpgroup overlap of the next block's S = Q K^T with this block's
// softmax, and the ping-pong of the two consumers (named barriers ordering one's softmax
// against the other's wgmmas).
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
// empty[STAGES], qfull: 8 bytes each, BARRIERS bytes reserved). No static shared memory: the
// launch's dynamic bytes are the whole (src/attention_sm90.rs: shared_bytes).
template <int D>
struct Smem {
    static constexpr uint32_t QB = BM * D * 2, KB = BN * D * 2;
    static constexpr uint32_t RING = CONSUMERS * QB;
    static constexpr uint32_t MAIN = RING + STAGES * 2 * KB, STAGED = CONSUMERS * BM * OStage<D>::RS;
    static constexpr uint32_t BYTES = MAIN > STAGED ? MAIN : STAGED, BARRIERS = 64;
    static_assert(8 * (2 * STAGES + 1) <= BARRIERS, "the mbarriers fit their reservation");
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

template <int D, bool PACKED>
FB_DEVICE void forward(const CUtensorMap* map, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,
                       uint32_t heads, uint32_t batch, float scale_log2) {
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
        consume<D, PACKED>(cu_seqlens, out, batch, h, H, scale_log2, base, sp, wg);
    }
}
}  // namespace attn90

// Two entries per head dim (per-sequence tiles, packed-token tiles `_packed`), THREADS = 384
// threads, dynamic shared memory Smem<D>::BYTES + BARRIERS (src/attention_sm90.rs: shared_bytes); `tma_qkv`
// the tensor map of qkv [T, 3H], boxes {W / 2, 64} in the W-byte swizzle (Lay<D>::W); `out`
// 16-byte aligned (the stores).
#define ATTN90_ENTRY(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_sm90_d##D(                     \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, uint32_t heads, uint32_t batch, float scale_log2) {                        \
        attn90::forward<D, false>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2);                      \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(attn90::THREADS, 1) attention_sm90_packed_d##D(              \
        const __grid_constant__ CUtensorMap tma_qkv, const uint32_t* __restrict__ cu_seqlens,                 \
        __half* __restrict__ out, uint32_t heads, uint32_t batch, float scale_log2) {                        \
        attn90::forward<D, true>(&tma_qkv, cu_seqlens, out, heads, batch, scale_log2);                       \
    }
ATTN90_ENTRY(16)
ATTN90_ENTRY(32)
ATTN90_ENTRY(48)
ATTN90_ENTRY(64)
ATTN90_ENTRY(80)
ATTN90_ENTRY(96)
ATTN90_ENTRY(112)
ATTN90_ENTRY(128)
