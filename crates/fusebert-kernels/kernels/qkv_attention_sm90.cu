// Hopper (sm_90a) QKV projection and multi-head self-attention of a BERT layer in one launch, for
// head dim 64 and packed batches whose sequences are at most 128 tokens (docs/research/hopper.md
// 3.3: "fuse attention into the QKV GEMM epilogue when tiles align with sequences"): the
// QKV output [T, 3H] (19 MB per layer at 4096 tokens) never goes to memory.
// - qkv_attention_f16_sm90_d64: x [T, H] fp16, Wqkv [3H, H] fp16 (rows q 0..H, k H..2H, v
//   2H..3H; head h's rows h*64.. of each part), bias [3H] -> ctx [T, H] fp16, ctx[:, h*64..] =
//   softmax(q k^T / 8) v of head h per sequence.
// - qkv_attention_int8_sm90_d64: the same from gemm_int8_sm90's W8A8 GEMM (s8 codes of x with
//   per-row a_scale (and a_zero), s8 W with per-column w_scale (and w_sum), bias), and also
//   ctx's per-token symmetric int8 codes q [T, H] and scales [T], the bits quantize_i8_f16
//   (no smoothing) gives from ctx: the attention-out GEMM's input, without a quantize launch.
//
// The results are the bits of the unfused chain, gemm_f16_sm90 / gemm_int8_sm90 (+ bias, no
// activation) writing qkv, then attention_sm90_d64 (per-sequence tiles), for every sequence,
// so the forward pass may take the fused kernel for some batches only (batch invariance):
// - The GEMM is the _sm90 family's own device code (gemm_sm90.cuh): its 128 x 192 tile
//   (Geom<192>: the 3-stage ring of A 128 x 64 and W 192 x 64 boxes, K-major, 128-byte swizzle,
//   m64n192k16 f16 / m64n192k32 s8 wgmmas, 4 per stage), ConsumerRing and sum_unsplit (K in
//   the family's fixed chunks, each from zero in k order, then the chunk sums in chunk order),
//   and F16Epilogue / S8Epilogue's store with EPI_NONE (+ bias, one fp16 rounding) - called per
//   64-column third of the tile, as the same code at the columns the unfused GEMM gives them.
// - The attention is attention_sm90's consumer (attention_sm90.cuh: attn90::consume<64,
//   false>) on the shared-memory layout attention_sm90 loads Q, K and V into, unchanged.
//
// Design:
// - A CTA per (head h, sequence b): grid (heads, batch), 384 threads; warpgroup 0 is the
//   producer (one elected thread issues every TMA), warpgroups 1 and 2 the consumers (rows
//   0-63 and 64-127 of the sequence); setmaxnreg 40 / 232 as in the other _sm90 kernels. A
//   sequence of length 0 exits at once, before any barrier (CTA-uniform). Host: max_seqlen <=
//   128 (one CTA holds the whole sequence: its queries and its keys).
// - Main loop: the GEMM tile of rows cu_seqlens[b] .. +128 of x (TMA at any row; rows past T
//   zero-filled; rows past the sequence end inside T are the next sequence's tokens: computed,
//   masked as keys, never stored) by the 192 rows h*64, H + h*64, 2H + h*64 (64 each) of Wqkv:
//   three 64-row TMA boxes stacked in the stage, which is the 128-byte swizzled K-major layout
//   of one 192-row box, so the weights need no reordering. A consumer with no row (len <= 64:
//   consumer 1) computes nothing: its q, k, v would never be read; it only takes and releases
//   every stage (the empty barriers count it), as attention_sm90's idle consumer does.
// - Epilogue: after a consumer barrier (every wgmma of both consumers complete, every stage
//   consumed: the ring and the fold regions are free), consumer c writes its fragment + bias as
//   fp16 into three 64 x 64 boxes in the 128-byte swizzle - exactly the boxes attention_sm90's
//   TMA loads: Q_c at attention Smem<64>::q(c), its 64 rows as key block c, K_c at k(c) and V_c at
//   v(c) (stage c of attention_sm90's two-stage ring: a sequence of <= 128 keys has at most two
//   key blocks, block j in stage j, lap 0). The fp16 of rows past T is 0, as TMA's zero fill gives
//   the unfused attention. The region is the attention's area (Smem<64>::BYTES = 48 KiB) at the
//   end of the GEMM's shared memory (consumer 1's fold region), its mbarriers right after.
//   The writes are generic-proxy and the wgmmas reading them async-proxy: each writer fences
//   (fence.proxy.async.shared::cta), then the consumers meet at their named barrier (consumer c
//   reads the other consumer's K and V block); then one thread arrives once on the attention's
//   qfull and full[0], full[1] (count 1 each, no transaction bytes), which the unchanged
//   consumer code waits on as if the producer's TMA had completed them.
// - Attention: attn90::consume: S = Q K^T (SS wgmma), online base-2 softmax with ex2.approx and
//   the scale * log2 e multiply, keys >= len masked to -inf, P in registers as the RS operand,
//   O += P V (V MN-major), normalise, O staged through shared memory (reusing the attention
//   area's Q tiles) and stored for rows < len only. A consumer with no row (len <= 64: consumer
//   1) takes and releases its blocks without computing and joins the epilogue barrier.
// - Registers: the GEMM's 96 accumulators are dead once stored; the attention's live after.
// - Context codes (int8 entry): a token's scale is the absmax of its whole ctx row, all heads,
//   and a CTA holds one column group (one head of 64, two of 32). So the sequence's `groups`
//   CTAs share the codes' pass through four per-sequence counters, the GEMMs' strip-tail
//   protocol with a sequence for a strip (gemm_sm90.cuh's StripShare, as SharedRowCodes): each CTA counts
//   itself in on `started` as it begins and, its ctx rows stored, on `arrived` (fence, atomic,
//   fence). A CTA that arrives last, or that finds every CTA of its
//   sequence started, then quantises rows: each consumer warp claims the next row on `claimed`
//   until the rows run out (absmax exact in any order, q8_inv_scale, q8, absmax / 127:
//   quantize_i8_f16's arithmetic; the warp reads the row back once through L2, __ldcg: other
//   SMs wrote it, keeping it in a slot of the idle shared memory for the codes' pass). A CTA
//   that is not last waits for the sequence's last arrival first (polling `arrived`), but only
//   when every CTA of the sequence has started: a started CTA reaches its arrival without
//   waiting on anything, so the wait always ends, however few CTAs the GPU holds at once; when
//   some have not started (they may need this SM) it leaves the rows to the others. The last
//   CTA to count itself in on `done` resets the four counters for the next launch or graph
//   replay. A sequence's rows are thus spread over its CTAs (a wave holds whole sequences:
//   132 SMs = 11 x 12 BERT-base CTAs, 22 x 6 MiniLM ones), instead of one CTA's serial pass.
//   The fp16 ctx is still stored (read back from L2 at once).
// Dynamic shared memory: Geom<192>::SMEM (the ring and the two fold regions, 216 KiB) + 64 bytes
// of the attention's mbarriers (src/qkv_attention_sm90.rs: shared_bytes); the ring's mbarriers
// are static, as in ws_gemm.
#include <cuda.h>

#include "attention_sm90.cuh"
#include "gemm_sm90.cuh"

namespace qkva {
using G = sm90::Geom<192>;
// Columns a CTA takes from each of q, k and v: one head of 64, or two heads of 32 (a head pair,
// whose q, k and v columns are again 64 consecutive ones of each part: the same three 64-row W
// boxes, the same 128 x 192 GEMM tile).
constexpr int GROUP = 64;
// Columns of an attention-out tile of the attention blocks: 128 x 64 (m64n64 wgmmas on the
// first 64 rows of a stage's W part), one per CTA of a BERT-base sequence.
constexpr int COLS = 64, OUT_ACC = COLS / 2;
// the attention areas: from consumer 1's fold region (the last 48 KiB of the GEMM's shared memory) on
constexpr uint32_t ATTN = G::RING_BYTES + G::REGION_BYTES;
static_assert(ATTN % 1024 == 0, "every attention box starts on the 1024-byte swizzle repeat");
static_assert(attn90::CONSUMER_THREADS == sm90::CONSUMER_THREADS, "one consumer barrier for both");

// A CTA's attention areas at head dim D: one per head of its column group (GROUP / D), each
// attention_sm90's layout (attn90::Smem<D>) with its mbarriers right after it, areas 1024 apart.
template <int D>
struct Areas {
    using AM = attn90::Smem<D>;
    static constexpr int N = GROUP / D;
    static constexpr uint32_t STRIDE = (AM::BYTES + AM::BARRIERS + 1023) / 1024 * 1024;
    static constexpr uint32_t SMEM = ATTN + (N - 1) * STRIDE + AM::BYTES + AM::BARRIERS;  // dynamic shared bytes
    static FB_DEVICE uint32_t at(uint32_t s0, int i) { return s0 + ATTN + i * STRIDE; }
};
static_assert(Areas<64>::N == 1 && Areas<64>::SMEM == G::SMEM + 64, "d64: consumer 1's region and 64 barrier bytes");
static_assert(Areas<32>::SMEM + 1024 <= 227 * 1024, "the GEMM, two d32 areas and the ring barriers fit");

// The fragment's third B (0: q, 1: k, 2: v) as the accumulator array of a 64-column tile.
template <int B, typename Acc>
FB_DEVICE const Acc (&third(const Acc (&d)[G::ACC]))[G::ACC / 3] {
    return *reinterpret_cast<const Acc(*)[G::ACC / 3]>(&d[B * G::ACC / 3]);
}

// A consumer thread's view of a 64-column third as two heads' [64, 32] tiles in attention's d32
// layout (attn90::Lay<32>: 64-byte rows, the 64-byte swizzle on absolute addresses, tiles on
// 1024-byte boundaries): column pair (c, h) of the fragment (columns 8 c + 2 (lane % 4), row r0 +
// 8 h) sits in head c / 4's tile, row r0 + 8 h, 16-byte chunk (c % 4) ^ ((r0 / 2) % 4).
struct PairStaging {
    uint32_t base0, base1;  // head 0's / head 1's tile + r0 * 64 + 4 (lane % 4)
    uint32_t swz;           // ((r0 / 2) % 4) * 16: the same for row r0 + 8
    template <int C, int H>
    FB_DEVICE void put(uint32_t pair) const {
        const uint32_t a = (C < 4 ? base0 : base1) + H * 8 * 64 + (((C % 4) * 16) ^ swz);
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(pair) : "memory");
    }
};

// Consumer warpgroup cw's epilogue: its 64 x 192 fragment d (the q, k and v columns of column
// group g) + bias, fp16, into Q_cw, K_cw, V_cw of the CTA's attention area(s), with the unfused
// GEMM's epilogue code E (columns B * H + g * 64 + ...: the columns qkv gives them).
template <int D, class E, typename Acc>
FB_DEVICE void store_qkv(const E& e, const Acc (&d)[G::ACC], uint32_t s0, int cw, int row0, int H, int g) {
    using A = Areas<D>;
    using AM = typename A::AM;
    const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
    const int r0 = warp * 16 + lane / 4;
    const int col = g * GROUP + 2 * (lane % 4);
    if constexpr (D == 64) {
        const uint32_t ab = A::at(s0, 0);
        const uint32_t off = r0 * sm90::ROW_BYTES + 4 * (lane % 4), swz = (uint32_t)(r0 % 8) * 16;
        e.template store<EPI_NONE>(third<0>(d), row0, col, sm90::Staging{AM::q(ab, cw) + off, swz});
        e.template store<EPI_NONE>(third<1>(d), row0, H + col, sm90::Staging{AM::k(ab, cw) + off, swz});
        e.template store<EPI_NONE>(third<2>(d), row0, 2 * H + col, sm90::Staging{AM::v(ab, cw) + off, swz});
    } else {
        static_assert(D == 32, "head dims 64 and 32");
        const uint32_t a0 = A::at(s0, 0), a1 = A::at(s0, 1);
        const uint32_t off = r0 * 64 + 4 * (lane % 4), swz = (uint32_t)((r0 / 2) % 4) * 16;
        e.template store<EPI_NONE>(third<0>(d), row0, col, PairStaging{AM::q(a0, cw) + off, AM::q(a1, cw) + off, swz});
        e.template store<EPI_NONE>(third<1>(d), row0, H + col, PairStaging{AM::k(a0, cw) + off, AM::k(a1, cw) + off, swz});
        e.template store<EPI_NONE>(third<2>(d), row0, 2 * H + col,
                                   PairStaging{AM::v(a0, cw) + off, AM::v(a1, cw) + off, swz});
    }
}

// Each consumer warp's slot for a ctx row in the (then idle) dynamic shared memory: 27 KiB,
// rows of up to 13,824 columns (src/qkv_attention_sm90.rs: ctx_row_slot_columns).
constexpr uint32_t CTX_SLOT_BYTES = G::SMEM / 8;
static_assert(CTX_SLOT_BYTES % 16 == 0, "16-byte vectors in each slot");

// ---- The attention blocks (attention_block_*_sm90): + the attention-out GEMM and LN1 ----
// Per sequence, FOLD_COUNTERS words ([FOLD_COUNTERS][batch], zero between launches): the CTAs
// begun, the CTAs whose context (int8: codes) is stored, the output tiles claimed, the tiles
// stored, the layernorm rows claimed, the CTAs done.
enum FoldCounter { BEGUN, READY, TILE, STORED, LN_ROWS, DONE, FOLD_COUNTERS };

// A consumer thread's fragment pairs stored straight to global memory: rows below the
// sequence's end only (a TMA box would write the next sequence's rows).
struct RowStore {
    __half* p;  // the thread's first pair: y + row0 * N + col0
    int N;
    bool live0, live1;  // rows row0 and row0 + 8 inside the sequence
    template <int C, int H>
    FB_DEVICE void put(uint32_t pair) const {
        if (H ? live1 : live0) *reinterpret_cast<uint32_t*>(p + (size_t)H * 8 * N + 8 * C) = pair;
    }
};

// The attention-out GEMM (y = ctx . Wo^T + bias + x, E2 with EPI_RESIDUAL) and LN1 of the
// sequence's rows, after its attention: the attention block's second half.
template <class E2>
struct Fold {
    const CUtensorMap* tma_a;  // [T, H]: the context (fp16) or its codes (int8), box 128 rows
    const CUtensorMap* tma_w;  // Wo [H, H], box 64 rows
    E2 epilogue;               // + bias + residual, M = T, N = H
    __half* y;                 // [T, H]: the pre-layernorm rows
    gemm::LnArgs ln;           // LN1: h1 and (int8) its codes
    uint32_t* counters;        // [FOLD_COUNTERS][batch]
    int batch;
    FB_DEVICE uint32_t* at(FoldCounter c, int b) const { return counters + (int)c * batch + b; }
};
// The A operand's row m of the epilogue (its a_scale[m]) at row m + delta: the int8 codes'
// scales sit in the sequence's slot (fp16 has none).
FB_DEVICE void a_rows_at(sm90::F16Epilogue&, int) {}
FB_DEVICE void a_rows_at(sm90::S8Epilogue& e, int delta) { e.a_scale += delta; }

// The fp16 and int8 entries without the fold.
struct NoFold {};
template <class F>
constexpr bool FOLDS = !std::is_same<F, NoFold>::value;

// The next row for the calling warp from counter `c` (lane 0 claims, the warp agrees).
FB_DEVICE int claim_row(uint32_t* c) {
    int r = 0;
    if ((threadIdx.x & 31) == 0) r = (int)atomicAdd(c, 1u);
    return __shfl_sync(0xffffffffu, r, 0);
}

// The consumers' half of the fold (every consumer thread, after the sequence's context, and in
// int8 its codes, are stored by this CTA). The sequence's `groups` CTAs meet (READY); as the
// context codes' StripShare, a CTA waits for the others only when all of them have begun (then
// each reaches READY without waiting, so the wait ends on any GPU), and otherwise leaves the
// rest to the others (the last to arrive always stays). The staying CTAs claim the output
// tiles (TILE) one at a time, hand each to the producer (task, task_full), sum it from the ring
// (the GEMM tile's own K order: the unfused attention-out GEMM's bits) and store y = + bias +
// residual for the sequence's rows (STORED); once a claim comes back past the last tile every
// tile is being computed by a running CTA, so they wait for STORED and share LN1's rows
// (LN_ROWS; ln_blocked's order: the unfused strip and cluster layernorms' bits). The last CTA
// out (DONE) zeroes the counters for the next launch. `flag`: a shared word for the choice.
template <class Op, class E2>
FB_DEVICE void attention_out(const Fold<E2>& f, sm90::ConsumerRing<Op, G>& ring, uint32_t s0, int cw, int b,
                             int start, int len, int H, int groups, uint32_t* task, uint64_t* task_full,
                             uint32_t* flag) {
    using Acc = typename Op::Acc;
    const int tid = threadIdx.x, t = tid % 128, tiles = H / COLS;
    const int kblocks = (H + Op::BK - 1) / Op::BK, ckb = sm90::chunk_kblocks(kblocks);
    sm90::fence_proxy_async_global();  // this thread's context (codes) to the TMA loads of them
    sm90::fence_proxy_async_shared();  // its generic writes of the shared memory (the codes'
                                       // slots) before the ring's TMA writes
    __threadfence();                   // release: ... before the arrival
    sm90::consumer_sync();             // every consumer thread's stores before it
    if (tid == 128) {
        const bool last = atomicAdd(f.at(READY, b), 1u) == (uint32_t)groups - 1;
        const bool stay = last || sm90::ld_acquire(f.at(BEGUN, b)) == (uint32_t)groups;
        if (stay && !last)
            while (sm90::ld_acquire(f.at(READY, b)) != (uint32_t)groups) {
            }
        *flag = stay;
    }
    sm90::consumer_sync();
    const bool stay = *flag;
    if (stay) __threadfence();  // acquire: the other CTAs' context
    E2 e = f.epilogue;
    e.M = start + len;  // rows past the sequence: 0, and not stored
    a_rows_at(e, b * sm90::BM - start);  // (int8: the codes' scales in the sequence's slot)
    for (;;) {
        if (tid == 128) {
            const int c = stay ? (int)atomicAdd(f.at(TILE, b), 1u) : tiles;
            *task = c < tiles ? c : tiles;
            mbar_arrive(smem_u32(task_full));  // (the producer stops at `tiles`)
        }
        sm90::consumer_sync();
        const int tile = *reinterpret_cast<volatile uint32_t*>(task);
        if (tile >= tiles) break;
        if (cw * 64 < len) {
            Acc d[OUT_ACC];
#pragma unroll
            for (int i = 0; i < OUT_ACC; i++) d[i] = 0;
            sm90::sum_unsplit(ring, d, s0, cw, sm90::KRange{0, kblocks}, ckb);
            const int row0 = start + cw * 64 + (t / 32) * 16 + (t % 32) / 4, col0 = tile * COLS + 2 * (t % 4);
            const RowStore rs{f.y + (size_t)row0 * H + col0, H, row0 < start + len, row0 + 8 < start + len};
            e.template store<EPI_RESIDUAL>(d, row0, col0, rs);
        } else {
            ring.release(0, kblocks);
        }
        __threadfence();  // release: this tile's rows of y
        sm90::consumer_sync();
        if (tid == 128) atomicAdd(f.at(STORED, b), 1u);
    }
    if (stay) {
        if (tid == 128)
            while (sm90::ld_acquire(f.at(STORED, b)) != (uint32_t)tiles) {
            }
        sm90::consumer_sync();
        __threadfence();  // acquire: every tile's rows of y
        for (int r; (r = claim_row(f.at(LN_ROWS, b))) < len;) lnb::ln_row(f.y, f.ln, start + r, H);
    }
    sm90::consumer_sync();  // every warp's rows are done (and every read of the counters)
    if (tid == 128 && atomicAdd(f.at(DONE, b), 1u) == (uint32_t)groups - 1)
        for (int c = 0; c < FOLD_COUNTERS; c++) atomicExch(f.at((FoldCounter)c, b), 0u);
}

template <int D, class Op, bool CODES, class E, class F = NoFold>
FB_DEVICE void forward(const CUtensorMap* tma_a, const CUtensorMap* tma_w, const E& e,
                       const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out, uint32_t heads,
                       uint32_t batch, float scale_log2, const sm90::SharedRowCodes& cc, const F& fold = F{}) {
    using Acc = typename Op::Acc;
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[G::STAGES], empty[G::STAGES], task_full;
    __shared__ uint32_t join;  // the context codes: whether this CTA quantises rows of its sequence
    __shared__ uint32_t task;  // the fold: the output tile the consumers hand the producer
    using A = Areas<D>;
    using AM = typename A::AM;
    const int g = blockIdx.x, b = blockIdx.y;  // column group g: heads g * A::N ..
    const int start = cu_seqlens[b], len = (int)cu_seqlens[b + 1] - start;
    if (len <= 0) return;  // the whole CTA: before any barrier
    const int H = heads * D, kblocks = (H + Op::BK - 1) / Op::BK, ckb = sm90::chunk_kblocks(kblocks);
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    if (tid == 0) {
        sm90::init_ring_barriers<G>(full, empty);
        for (int i = 0; i < A::N; i++) {
            const uint32_t ab = A::at(s0, i);
            for (int s = 0; s < attn90::STAGES; s++) {
                mbar_init(AM::full(ab, s), 1);
                mbar_init(AM::empty(ab, s), attn90::CONSUMER_THREADS);
            }
            mbar_init(AM::qfull(ab), 1);
        }
        if constexpr (FOLDS<F>) mbar_init(smem_u32(&task_full), 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        // producer: one elected thread of warp 0 issues the loads
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid < 32 && elect_one()) {
            sm90::ProducerRing<G> ring{s0, full, empty};
            for (int kb = 0; kb < kblocks; kb++) {
                const int k = kb * Op::BK;
                ring.load(tma_a, k, start, [&](uint32_t sb, uint32_t fb) {
#pragma unroll
                    for (int p = 0; p < 3; p++)  // q, k, v rows of column group g: one 192-row B tile
                        tma_load_2d(sb + p * GROUP * sm90::ROW_BYTES, tma_w, k, p * H + g * GROUP, fb);
                });
            }
            if constexpr (FOLDS<F>) {
                // the attention-out tiles the consumers claim, one after the other, into the same
                // ring: the sequence's rows of the context (codes) by Wo's 192 rows of the tile
                const int tiles = H / COLS;
                for (uint32_t tp = 0;; tp ^= 1) {
                    mbar_wait(smem_u32(&task_full), tp);
                    const int t = *reinterpret_cast<volatile uint32_t*>(&task);
                    if (t >= tiles) break;
                    // other CTAs' generic stores wrote the context: ordered before this thread's
                    // async-proxy reads (the consumers' acquire, then task_full's arrival)
                    sm90::fence_proxy_async_global();
                    for (int kb = 0; kb < kblocks; kb++) {
                        const int k = kb * Op::BK;
                        ring.load(
                            fold.tma_a, k, (int)b * sm90::BM,
                            [&](uint32_t sb, uint32_t fb) { tma_load_2d(sb, fold.tma_w, k, t * COLS, fb); },
                            sm90::A_BYTES + COLS * sm90::ROW_BYTES);
                    }
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        if constexpr (CODES) cc.begin(b);  // (the context codes: this CTA started)
        if constexpr (FOLDS<F>) {
            if (tid == 128) atomicAdd(fold.at(BEGUN, b), 1u);
        }
        const int cw = wg - 1, t = tid % 128;
        sm90::ConsumerRing<Op, G> ring{s0, full, empty, cw};
        if (cw * 64 >= len) {
            // no row of this warpgroup exists (len <= 64: consumer 1): its q, k, v are never
            // read (the attention has one key block, and no query row here), so it computes
            // nothing; it takes and releases every stage (the empty barriers count all 256
            // consumer threads), waiting for full[s] first to keep each arrival in its lap
            ring.release(0, kblocks);
            sm90::consumer_sync();  // the other consumer's main loop is complete
        } else {
            Acc d[G::ACC];
#pragma unroll
            for (int i = 0; i < G::ACC; i++) d[i] = 0;
            sm90::sum_unsplit(ring, d, s0, cw, sm90::KRange{0, kblocks}, ckb);
            // both consumers' wgmmas are complete and every stage consumed: the ring and the
            // fold regions (the attention area among them) are free
            sm90::consumer_sync();
            store_qkv<D>(e, d, s0, cw, start + cw * 64 + (t / 32) * 16 + (t % 32) / 4, H, g);
        }
        sm90::fence_proxy_async_shared();  // the fp16 q, k, v to the wgmmas (async proxy)
        sm90::consumer_sync();             // both consumers' blocks written (each reads the other's K, V)
        if (t == 0 && cw == 0) {
            // Q and both key blocks of every head are in place: what the producer's TMA completes
            // in attention_sm90
            for (int i = 0; i < A::N; i++) {
                mbar_arrive(AM::qfull(A::at(s0, i)));
                for (int s = 0; s < attn90::STAGES; s++) mbar_arrive(AM::full(A::at(s0, i), s));
            }
        }
        // the blocks store the context (and its codes) in the sequence's slot of 128 rows
        const int row0 = FOLDS<F> ? b * sm90::BM : start;
        const attn90::Span sp{row0, len, start, start + len};
        // the heads one after the other, each on its own area and mbarriers (lap 0 of each)
        for (int i = 0; i < A::N; i++)
            attn90::consume<D, false>(cu_seqlens, out, batch, g * A::N + i, H, scale_log2, A::at(s0, i), sp, cw);
        // the context codes (int8 entry), a sequence for a strip: by then no wgmma or TMA of
        // this CTA touches shared memory (StripShare's barriers follow the attention's last
        // reads and stores), so the warps' slots may take all of it
        if constexpr (CODES)
            cc(out, b, (int)gridDim.x, row0, len, H, s0 + ((tid - 128) >> 5) * CTX_SLOT_BYTES, CTX_SLOT_BYTES, &join);
        if constexpr (FOLDS<F>) attention_out<Op>(fold, ring, s0, cw, b, start, len, H, (int)gridDim.x, &task, &task_full, &join);
    }
}
}  // namespace qkva

// THREADS = 384, grid (H / 64, batch): a CTA per column group of 64 (one head of 64, two of 32)
// and sequence; dynamic shared memory qkva::Areas<D>::SMEM (src/qkv_attention_sm90.rs:
// shared_bytes). tma_a: x [T, H] (box 64 f16 / 128 s8 x 128 rows), tma_w: Wqkv [3H, H] (box
// 64 f16 / 128 s8 x 64 rows), both in the 128-byte swizzle; `out` [T, H] 16-byte aligned;
// scale_log2 = scale * log2 e as attention_sm90 takes it. int8 entry: q_out [T, H] 8-byte aligned,
// q_scale [T], counters [4][batch] zero (each launch leaves them zero).
#define QKVA_ENTRIES(D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1) qkv_attention_f16_sm90_d##D(                    \
        const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,                      \
        const __half* __restrict__ bias, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,         \
        uint32_t T, uint32_t heads, uint32_t batch, float scale_log2) {                                             \
        qkva::forward<D, sm90::F16Op, false>(&tma_a, &tma_w,                                                        \
                                             sm90::F16Epilogue{bias, nullptr, (int)T, (int)(3 * heads * D), EPI_NONE}, \
                                             cu_seqlens, out, heads, batch, scale_log2,                             \
                                             sm90::SharedRowCodes{nullptr, nullptr, nullptr, 0});                    \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1) qkv_attention_int8_sm90_d##D(                   \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale, const int* __restrict__ a_zero, \
        const __grid_constant__ CUtensorMap tma_w, const float* __restrict__ w_scale, const int* __restrict__ w_sum, \
        const __half* __restrict__ bias, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,         \
        int8_t* __restrict__ q_out, float* __restrict__ q_scale, uint32_t* __restrict__ counters, uint32_t T,        \
        uint32_t heads, uint32_t batch, float scale_log2) {                                                         \
        qkva::forward<D, sm90::S8Op, true>(                                                                         \
            &tma_a, &tma_w,                                                                                         \
            sm90::S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, nullptr, (int)T, (int)(3 * heads * D), EPI_NONE}, \
            cu_seqlens, out, heads, batch, scale_log2, sm90::SharedRowCodes{q_out, q_scale, counters, (int)batch});  \
    }

QKVA_ENTRIES(64)
QKVA_ENTRIES(32)

// The attention blocks: the entries above, then the attention-out GEMM (+ bias + residual) and
// LN1 of each sequence's rows (qkva::attention_out): tma_ctx the context [T, H] (fp16: `out`;
// int8: its codes `q_out`), box 64 f16 / 128 s8 x 128 rows, tma_wo Wo [H, H] (box 64 f16 / 128
// s8 x 64 rows), bo [H], residual [T, H] (the layer's input), y [T, H] the pre-layernorm rows,
// LN1's operands (ln_out [T, H], its codes and scales, or null), fold [6][batch] zero (each
// launch leaves them zero); H a multiple of 192.
#define BLOCK_LN_PARAMS                                                                                             \
    const __half *__restrict__ gamma, const __half *__restrict__ beta, __half *__restrict__ ln_out,                \
        int8_t *__restrict__ ln_q, float *__restrict__ ln_scale, const __half *__restrict__ ln_smooth, float eps
#define BLOCK_LN_ARGS gemm::LnArgs{gamma, beta, ln_out, ln_q, ln_scale, ln_smooth, nullptr, eps}
#define BLOCK_ENTRIES(D)                                                                                             \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1) attention_block_f16_sm90_d##D(                  \
        const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,                      \
        const __half* __restrict__ bias, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,         \
        const __grid_constant__ CUtensorMap tma_ctx, const __grid_constant__ CUtensorMap tma_wo,                   \
        const __half* __restrict__ bo, const __half* __restrict__ residual, __half* __restrict__ y,                 \
        BLOCK_LN_PARAMS, uint32_t* __restrict__ fold, uint32_t T, uint32_t heads, uint32_t batch, float scale_log2) { \
        const int H = (int)(heads * D);                                                                             \
        qkva::forward<D, sm90::F16Op, false>(                                                                       \
            &tma_a, &tma_w, sm90::F16Epilogue{bias, nullptr, (int)T, 3 * H, EPI_NONE}, cu_seqlens, out, heads,      \
            batch, scale_log2, sm90::SharedRowCodes{nullptr, nullptr, nullptr, 0},                                  \
            qkva::Fold<sm90::F16Epilogue>{&tma_ctx, &tma_wo, sm90::F16Epilogue{bo, residual, (int)T, H, EPI_RESIDUAL}, \
                                          y, BLOCK_LN_ARGS, fold, (int)batch});                                    \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1) attention_block_int8_sm90_d##D(                 \
        const __grid_constant__ CUtensorMap tma_a, const float* __restrict__ a_scale, const int* __restrict__ a_zero, \
        const __grid_constant__ CUtensorMap tma_w, const float* __restrict__ w_scale, const int* __restrict__ w_sum, \
        const __half* __restrict__ bias, const uint32_t* __restrict__ cu_seqlens, __half* __restrict__ out,         \
        int8_t* __restrict__ q_out, float* __restrict__ q_scale, uint32_t* __restrict__ counters,                   \
        const __grid_constant__ CUtensorMap tma_ctx, const __grid_constant__ CUtensorMap tma_wo,                   \
        const float* __restrict__ wo_scale, const __half* __restrict__ bo, const __half* __restrict__ residual,     \
        __half* __restrict__ y, BLOCK_LN_PARAMS, uint32_t* __restrict__ fold, uint32_t T, uint32_t heads,           \
        uint32_t batch, float scale_log2) {                                                                         \
        const int H = (int)(heads * D);                                                                             \
        qkva::forward<D, sm90::S8Op, true>(                                                                         \
            &tma_a, &tma_w, sm90::S8Epilogue{a_scale, a_zero, w_scale, w_sum, bias, nullptr, (int)T, 3 * H, EPI_NONE}, \
            cu_seqlens, out, heads, batch, scale_log2, sm90::SharedRowCodes{q_out, q_scale, counters, (int)batch},  \
            qkva::Fold<sm90::S8Epilogue>{                                                                           \
                &tma_ctx, &tma_wo,                                                                                  \
                sm90::S8Epilogue{q_scale, nullptr, wo_scale, nullptr, bo, residual, (int)T, H, EPI_RESIDUAL}, y,    \
                BLOCK_LN_ARGS, fold, (int)batch});                                                                  \
    }

BLOCK_ENTRIES(64)
BLOCK_ENTRIES(32)
