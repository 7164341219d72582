// ffn_block_f16_sm90: a transformer layer's feed-forward half in one persistent Hopper launch:
//   f = act(x W1^T + b1)          (FFN1, [T, I])
//   y = f W2^T + b2 + x           (FFN2 with the residual, [T, H])
//   out = LayerNorm(y)            (LN2)
// the chain gemm_f16_sm90(_sk) (act) -> gemm_f16_sm90(_sk)_ln (residual, strip layernorm) gives,
// bit for bit: the GEMM units are gemm_sm90.cuh's (consume_unit: the same K chunks, split-K folds
// and epilogues) and the layernorm rows are ln_blocked.cuh's ln_row.
//
// Why one launch: at small batches each of the two launches is a few microseconds of fixed
// cost (the wgmma pipeline's fill and drain, the graph node) around a short body; here FFN2's
// weights stream into the ring while FFN1 still runs, and the layernorm's rows spread over CTAs
// instead of one strip tail.
//
// Work units, handed out in ticket order (an atomic counter, claimed by each CTA's producer
// thread and passed to its consumers through a two-slot shared ring):
//   [0, U1)             FFN1: tile t = u / S1 (strip t % strips), K chunk u % S1
//   [U1, U1 + U2)       FFN2: likewise over [T, H], K = I; waits until its strip's FFN1 tiles
//                       are stored
//   [U1 + U2, U)        LN2: 8 rows of a strip (one per consumer warp); waits until the
//                       strip's FFN2 tiles are stored
// A unit waits only on units of lower tickets, which CTAs already running hold and finish
// without waiting on later ones: the launch completes however few CTAs the GPU holds at once
// (the emulator's one-CTA-at-a-time mode runs every unit in one CTA).
//
// Stored tiles are published per strip: each consumer warpgroup of a tile's finishing CTA, after
// its TMA stores completed (bulk wait) and fence.proxy.async.global, adds 1 with release
// semantics (2 per tile). An FFN2 unit's producer acquires its strip's count, fences the async
// proxy, then TMA-loads f; W2's boxes of its first stages are loaded before the wait (they
// depend on nothing). The last CTA to leave resets every counter for the next launch.
#include "gemm_sm90.cuh"

using namespace sm90;

namespace ffnb {
constexpr int LN_ROWS = CONSUMER_THREADS / 32;  // rows of an LN2 unit: one per consumer warp

// The launch's counters (zero between launches): the ticket, the CTAs out, then per strip the
// FFN1 and FFN2 warpgroups that stored their rows; then the split tiles' arrival counters.
struct Counters {
    uint32_t* base;
    int strips;
    FB_DEVICE uint32_t* ticket() const { return base; }
    FB_DEVICE uint32_t* exits() const { return base + 1; }
    FB_DEVICE uint32_t* stored(int gemm, int strip) const { return base + 2 + gemm * strips + strip; }
};

FB_DEVICE void red_release_add(uint32_t* p, uint32_t v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
FB_DEVICE void wait_count(const uint32_t* p, uint32_t want) {
    while (ld_acquire(p) != want) {
    }
}

// After-tile step of the GEMM units: this warpgroup's rows of the tile are stored (READS_OUTPUT:
// its TMA stores complete and fenced by TileOut) - published on the strip's count.
struct Publish {
    static constexpr bool READS_OUTPUT = true;
    Counters c;
    int gemm;
    FB_DEVICE void begin(int) const {}
    FB_DEVICE void operator()(int, StripAt at, uint32_t*, Scratch) const {
        if (threadIdx.x % WG_THREADS == 0) red_release_add(c.stored(gemm, at.strip), 1u);
    }
};

// One of the two GEMMs on tiles of G: its maps, shape, K chunks and split-K state.
template <class G>
struct Gemm {
    const CUtensorMap* a;
    const CUtensorMap* w;
    const CUtensorMap* c;
    int M, N, K;
    int tiles_m, tiles_n, kblocks, ckb, S, units;
    SplitK sk;
    FB_DEVICE Gemm(const CUtensorMap* a_, const CUtensorMap* w_, const CUtensorMap* c_, int M_, int N_, int K_,
                   uint32_t* partials, uint32_t* counters)
        : a(a_), w(w_), c(c_), M(M_), N(N_), K(K_) {
        tiles_m = (M + BM - 1) / BM;
        tiles_n = (N + G::BN - 1) / G::BN;
        kblocks = (K + F16Op::BK - 1) / F16Op::BK;
        ckb = chunk_kblocks(kblocks);
        S = (kblocks + ckb - 1) / ckb;
        units = tiles_m * tiles_n * S;
        sk = SplitK{(uint32_t)S, partials, counters};
    }
    FB_DEVICE int tile(int u) const { return u / S; }
    FB_DEVICE int m0(int u) const { return (tile(u) % tiles_m) * BM; }
    FB_DEVICE int n0(int u) const { return (tile(u) / tiles_m) * G::BN; }
    FB_DEVICE KRange range(int u) const { return k_range(u % S, S, kblocks, ckb); }
};

// The producer's loads of GEMM unit u; `dep` (FFN2): the strip count to acquire before any A box,
// W's boxes of the first stages loaded before the wait.
template <class G>
FB_DEVICE void produce(ProducerRing<G>& ring, const Gemm<G>& g, int u, const uint32_t* dep, uint32_t want) {
    constexpr int BK = F16Op::BK;
    const KRange r = g.range(u);
    const int m0 = g.m0(u), n0 = g.n0(u);
    int kb = r.begin;
    if (dep) {
        const int ahead = r.end - r.begin < G::STAGES ? r.end - r.begin : G::STAGES;
        const int stage0 = ring.stage;
        for (int j = 0; j < ahead; j++) {
            mbar_wait(smem_u32(&ring.empty[ring.stage]), ring.phase ^ 1);
            const uint32_t fb = smem_u32(&ring.full[ring.stage]), sa = ring.s0 + ring.stage * G::STAGE_BYTES;
            mbar_arrive_expect_tx(fb, G::STAGE_BYTES);
            tma_load_2d(sa + A_BYTES, g.w, (kb + j) * BK, n0, fb);
            if (++ring.stage == G::STAGES) {
                ring.stage = 0;
                ring.phase ^= 1;
            }
        }
        wait_count(dep, want);
        // the strip's f was written by other CTAs' TMA stores (published after their fence):
        // ordered before this thread's async-proxy reads of it
        fence_proxy_async_global();
        for (int j = 0; j < ahead; j++) {
            const int s = (stage0 + j) % G::STAGES;
            tma_load_2d(ring.s0 + s * G::STAGE_BYTES, g.a, (kb + j) * BK, m0, smem_u32(&ring.full[s]));
        }
        kb += ahead;
    }
    for (; kb < r.end; kb++) ring.load(g.a, g.w, kb * BK, m0, n0);
}

template <class G, class Tail>
FB_DEVICE TileOut<F16Epilogue, Tail, G> tile_out(const Gemm<G>& g, const F16Epilogue& e, const Tail& tail, uint32_t s0,
                                                  int cw, uint32_t* tail_flag) {
    // spread = false: the tails here never wait
    return TileOut<F16Epilogue, Tail, G>{e, tail, g.c, s0, cw, g.M, g.N, g.tiles_m, g.tiles_n, tail_flag,
                                         g.tiles_n * g.S, false};
}

template <class G>
FB_DEVICE void ffn_block(const Gemm<G>& g1, const Gemm<G>& g2, const F16Epilogue& e1, const F16Epilogue& e2,
                         const __half* y, const gemm::LnArgs& ln, Counters c) {
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[G::STAGES], empty[G::STAGES];
    __shared__ __align__(8) uint64_t unit_full[2], unit_empty[2];
    __shared__ uint32_t unit_slot[2], tail_flag, split_flag;
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    const int M = g1.M, H = g2.N, strips = g1.tiles_m;
    const int groups = (BM + LN_ROWS - 1) / LN_ROWS;
    const int u1 = g1.units, u2 = u1 + g2.units, total = u2 + strips * groups;
    if (tid == 0) {
        for (int i = 0; i < 2; i++) {
            mbar_init(smem_u32(&unit_full[i]), 1);
            mbar_init(smem_u32(&unit_empty[i]), CONSUMER_THREADS);
        }
    }
    init_ring<G>(full, empty);  // (its __syncthreads also publishes the unit ring's barriers)

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid < 32 && elect_one()) {
            ProducerRing<G> ring{s0, full, empty};
            for (int i = 0;; i++) {
                const int slot = i & 1;
                mbar_wait(smem_u32(&unit_empty[slot]), ((i >> 1) & 1) ^ 1);
                const int u = (int)atomicAdd(c.ticket(), 1u);
                unit_slot[slot] = (uint32_t)u;
                mbar_arrive(smem_u32(&unit_full[slot]));
                if (u >= total) break;
                if (u < u1) {
                    produce(ring, g1, u, nullptr, 0);
                } else if (u < u2) {
                    const int v = u - u1;
                    produce(ring, g2, v, c.stored(0, g2.tile(v) % strips), 2u * g1.tiles_n);
                }  // (LN2 units load nothing)
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int cw = wg - 1, t = tid % 128;
        ConsumerRing<F16Op, G> ring{s0, full, empty, cw};
        const auto out1 = tile_out(g1, e1, Publish{c, 0}, s0, cw, &tail_flag);
        const auto out2 = tile_out(g2, e2, Publish{c, 1}, s0, cw, &tail_flag);
        for (int i = 0;; i++) {
            const int slot = i & 1;
            mbar_wait(smem_u32(&unit_full[slot]), (i >> 1) & 1);
            const int u = (int)*reinterpret_cast<volatile uint32_t*>(&unit_slot[slot]);
            mbar_arrive(smem_u32(&unit_empty[slot]));
            if (u >= total) break;
            if (u < u1) {
                consume_unit<F16Op, G, true>(ring, out1, g1.sk, g1.tile(u), u % g1.S, g1.range(u), g1.ckb,
                                             &split_flag);
            } else if (u < u2) {
                const int v = u - u1;
                consume_unit<F16Op, G, true>(ring, out2, g2.sk, g2.tile(v), v % g2.S, g2.range(v), g2.ckb,
                                             &split_flag);
            } else {
                const int v = u - u2, strip = v / groups, row = strip * BM + (v % groups) * LN_ROWS + (tid - 128) / 32;
                if (tid == 128) wait_count(c.stored(1, strip), 2u * g2.tiles_n);
                consumer_sync();
                __threadfence();  // acquire: the strip's rows of y
                if (row < M && row < (strip + 1) * BM) lnb::ln_row(y, ln, row, H);
            }
        }
        if (t == 0) bulk_wait();  // the staging outlives the stores reading it
        consumer_sync();
        if (tid == 128 && atomicAdd(c.exits(), 1u) == gridDim.x - 1) {
            // every CTA is out: no unit waits on a count, nothing claims a ticket
            for (int s = 0; s < strips; s++) {
                atomicExch(c.stored(0, s), 0u);
                atomicExch(c.stored(1, s), 0u);
            }
            atomicExch(c.ticket(), 0u);
            atomicExch(c.exits(), 0u);
        }
    }
}
}  // namespace ffnb

// x [M, H] (tma_x: FFN1's A; `residual`: the same rows), W1 [I, H], W2 [H, I]; f [M, I] through
// tma_f_out (stores) and tma_f (FFN2's A); y [M, H] through tma_y and `y`; LN2 into ln_out
// (LN_PARAMS; `strips` unused). partials1/2: the split-K slots of the two GEMMs ([tile][chunk]
// [ACC][256] words each), split1/2 their tiles' counters, counters: ffnb::Counters (2 + 2 x
// strips words); all counters zero between launches. Tiles of 128 x 128 (the entry without a
// suffix) or 128 x 64 (_n64: twice the units, for the batches too short to fill the GPU).
#define FFN_BLOCK(SUF, G)                                                                                           \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) ffn_block_f16_sm90##SUF(                               \
        const __grid_constant__ CUtensorMap tma_x, const __grid_constant__ CUtensorMap tma_w1,                      \
        const __half* __restrict__ b1, const __grid_constant__ CUtensorMap tma_f_out,                               \
        const __grid_constant__ CUtensorMap tma_f, const __grid_constant__ CUtensorMap tma_w2,                      \
        const __half* __restrict__ b2, const __half* __restrict__ residual, const __grid_constant__ CUtensorMap tma_y, \
        const __half* y, uint32_t M, uint32_t H, uint32_t I, uint32_t epi1, uint32_t* partials1, uint32_t* split1,   \
        uint32_t* partials2, uint32_t* split2, uint32_t* counters, LN_PARAMS) {                                     \
        const ffnb::Gemm<G> g1(&tma_x, &tma_w1, &tma_f_out, (int)M, (int)I, (int)H, partials1, split1);             \
        const ffnb::Gemm<G> g2(&tma_f, &tma_w2, &tma_y, (int)M, (int)H, (int)I, partials2, split2);                  \
        ffnb::ffn_block(g1, g2, F16Epilogue{b1, nullptr, (int)M, (int)I, epi1},                                       \
                        F16Epilogue{b2, residual, (int)M, (int)H, EPI_RESIDUAL}, y, LN_ARGS,                          \
                        ffnb::Counters{counters, g1.tiles_m});                                                         \
    }
FFN_BLOCK(, Geom<128>)
FFN_BLOCK(_n64, Geom<64>)
