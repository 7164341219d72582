// Hopper (sm_90a) fp16 GEMM: C[M,N] = A[M,K] . W[N,K]^T + bias[n] (+ activation or residual per
// the `epi` codes of codes.cuh, the same semantics as gemm_f16: + bias, then the activation or
// the residual add, in f32, one fp16 rounding), f32 accumulation in wgmma, fp16 out.
//
// Design (docs/research/hopper.md 3.2, CUTLASS's warp-specialised "cooperative" kernel):
// - 384 threads: warpgroup 0 is the producer (one elected thread issues every TMA load), warp
//   groups 1 and 2 are consumers, each owning 64 rows of a 128 x BN output tile.
//   `__launch_bounds__(384, 1)`; setmaxnreg gives the producer's registers to the consumers.
// - Persistent: gridDim.x CTAs (host: min(tiles, SMs)) walk the tiles t = blockIdx.x,
//   blockIdx.x + gridDim.x, ... in a static order (column blocks outer, row blocks inner, so CTAs
//   running at the same time share W's column strip). Producer and consumers walk the same
//   sequence, so the stage/phase counters agree without communication.
// - STAGES-deep ring of (A box 128 x 64, W box BN x 64) f16, both K-major with the 128-byte
//   swizzle (rows of 64 f16 = 128 bytes, the canonical wgmma SW128 K-major layout: SBO = 1024).
//   full[s]: 1 arrival (the producer's arrive.expect_tx) + the boxes' bytes (TMA complete_tx).
//   empty[s]: 256 arrivals (every consumer thread, after the wgmma reading the stage has
//   completed: wait_group 1 after the next stage's commit, never before - sanitizer S4).
// - Tails: TMA zero-fills box elements outside [K, M] / [K, N] (and counts them in the
//   transaction bytes), so M, N and K need no multiple of the tile; the epilogue stores only
//   rows < M and columns < N.
// - Epilogue from the accumulator registers (wgmma D fragment, hopper.md 1.4): thread t of a
//   consumer warpgroup holds rows 16 (t/32) + (t%32)/4 + {0, 8} and column pairs 8c + 2 (t%4),
//   c < BN/8; pairs leave as 4-byte stores, guarded. (TMA store through smem: later.)
//
// Why BN = 128: 64 f32 accumulators per consumer thread leave the epilogue (erf-GELU, bias and
// residual) room without spills under the 168-register launch cap; 4 stages of 32 KiB fit with
// room to spare; BERT's N (768, 2304, 3072, 384, 1536) are multiples of 128, so no column tail
// at real shapes; and a 128 x 128 tile gives twice the CTAs of 128 x 256 on the short batches
// (T <= 512) where the grid, not the SM, is the limit.
//
// Batch invariance: a row's result is its dot products summed over K in k order, 16 at a time,
// by the same instruction sequence whatever M, the tile of the row, or the CTA that computes it.
//
// Host-checked requirements (src/gemm_sm90.rs): K % 8 == 0 (TMA: the row stride of A and W is a
// multiple of 16 bytes), N % 8 == 0, 16-byte aligned A and W, 4-byte aligned C/bias/residual.
#include <cuda.h>

#include "codes.cuh"
#include "common.cuh"

namespace sm90 {
constexpr int BM = 128, BN = 128, BK = 64;  // BK: f16 per 128-byte swizzled row
constexpr int STAGES = 4;
constexpr int THREADS = 384;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM = STAGES * STAGE_BYTES;  // dynamic shared bytes (src/gemm_sm90.rs: SMEM)
static_assert(SMEM + 1024 <= 227 * 1024, "the ring and the barriers fit an sm_90 block");
constexpr int CONSUMER_THREADS = 256;
static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "every box starts on the 1024-byte swizzle repeat");

FB_DEVICE void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
// Blocks until the phase of parity `parity` of the barrier has completed.
FB_DEVICE void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile(
        "{\n"
        ".reg .pred P1;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
        "@!P1 bra WAIT;\n"
        "}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}
FB_DEVICE void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
FB_DEVICE void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// 2-D TMA tile load of box {c0 (inner, K), c1 (rows)} into shared `dst`, completing on `bar`.
FB_DEVICE void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
            dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
FB_DEVICE bool elect_one() {
    uint32_t leader;
    asm volatile("{\n.reg .pred P;\nelect.sync _|P, 0xffffffff;\nselp.u32 %0, 1, 0, P;\n}\n" : "=r"(leader));
    return leader != 0;
}

// K-major, 128-byte-swizzled matrix descriptor (hopper.md 1.2): start >> 4, LBO 16 (encoded 1;
// unused by swizzled K-major layouts), SBO 1024 (8 rows of 128 bytes), swizzle code 1 = 128B.
FB_DEVICE uint64_t desc_sw128(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

// d += A(64 x 16) . B(16 x 128)^T, A and B from shared memory; scale_d = 0: d = A . B.
FB_DEVICE void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(scale_d));
}
FB_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
FB_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
FB_DEVICE void wgmma_wait(float (&d)[64]) {
    // the accumulators are operands so that the compiler neither reads nor moves them across the
    // wait (reading them before it is sanitizer S1)
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// The epilogue of one consumer warpgroup's 64 x BN accumulators: rows m (< M), columns n (< N).
template <uint32_t EPI>
FB_DEVICE void store_acc(const float (&d)[64], const __half* __restrict__ bias, const __half* __restrict__ residual,
                         __half* __restrict__ C, int M, int N, int row0, int col0) {
#pragma unroll
    for (int c = 0; c < BN / 8; c++) {
        const int n = col0 + 8 * c;
        if (n >= N) break;  // N % 8 == 0: a column pair is wholly inside or outside
        float b0 = 0.f, b1 = 0.f;
        if (bias) {
            const float2 b = __half22float2(*reinterpret_cast<const __half2*>(bias + n));
            b0 = b.x;
            b1 = b.y;
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = row0 + 8 * h;
            if (m < M) {
                float v0 = d[4 * c + 2 * h] + b0, v1 = d[4 * c + 2 * h + 1] + b1;
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
                    const float2 r = __half22float2(*reinterpret_cast<const __half2*>(residual + (size_t)m * N + n));
                    v0 += r.x;
                    v1 += r.y;
                }
                *reinterpret_cast<uint32_t*>(C + (size_t)m * N + n) = pack_half2(v0, v1);
            }
        }
    }
}
}  // namespace sm90

using namespace sm90;

extern "C" __global__ void __launch_bounds__(THREADS, 1)
    gemm_f16_sm90(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,
                  const __half* __restrict__ bias, const __half* __restrict__ residual, __half* __restrict__ C,
                  uint32_t M, uint32_t N, uint32_t K, uint32_t epi) {
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    const uint32_t s0 = smem_u32(smem);
    const int tid = threadIdx.x, wg = tid / 128;
    const int tiles_m = (M + BM - 1) / BM, tiles = tiles_m * ((N + BN - 1) / BN);
    const int kblocks = (K + BK - 1) / BK;
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(smem_u32(&full[s]), 1);
            mbar_init(smem_u32(&empty[s]), CONSUMER_THREADS);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        // producer: one elected thread of warp 0 issues the loads
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid < 32 && elect_one()) {
            int stage = 0;
            uint32_t phase = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const int m0 = (t % tiles_m) * BM, n0 = (t / tiles_m) * BN;
                for (int kb = 0; kb < kblocks; kb++) {
                    // a fresh barrier passes parity 1 at once: the first lap does not wait
                    mbar_wait(smem_u32(&empty[stage]), phase ^ 1);
                    const uint32_t fb = smem_u32(&full[stage]), sa = s0 + stage * STAGE_BYTES;
                    // the whole boxes, out-of-bounds (zero-filled) elements included
                    mbar_arrive_expect_tx(fb, STAGE_BYTES);
                    tma_load_2d(sa, &tma_a, kb * BK, m0, fb);
                    tma_load_2d(sa + A_BYTES, &tma_w, kb * BK, n0, fb);
                    if (++stage == STAGES) {
                        stage = 0;
                        phase ^= 1;
                    }
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int cw = wg - 1, t = tid % 128, warp = t / 32, lane = t % 32;
        float d[64];
#pragma unroll
        for (int i = 0; i < 64; i++) d[i] = 0.f;
        int stage = 0;
        uint32_t phase = 0;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const int m0 = (tile % tiles_m) * BM, n0 = (tile / tiles_m) * BN;
            int prev = 0;
            for (int kb = 0; kb < kblocks; kb++) {
                mbar_wait(smem_u32(&full[stage]), phase);
                const uint32_t sa = s0 + stage * STAGE_BYTES + cw * (64 * BK * 2), sb = s0 + stage * STAGE_BYTES + A_BYTES;
                wgmma_fence();
#pragma unroll
                for (int j = 0; j < BK / 16; j++)  // k16 steps: +32 bytes inside the swizzled row
                    wgmma_m64n128k16(d, desc_sw128(sa + 32 * j), desc_sw128(sb + 32 * j), (kb > 0 || j > 0) ? 1u : 0u);
                wgmma_commit();
                // the previous k-block's wgmmas are complete: its stage may be refilled
                wgmma_wait<1>(d);
                if (kb > 0) mbar_arrive(smem_u32(&empty[prev]));
                prev = stage;
                if (++stage == STAGES) {
                    stage = 0;
                    phase ^= 1;
                }
            }
            wgmma_wait<0>(d);
            mbar_arrive(smem_u32(&empty[prev]));
            const int row0 = m0 + cw * 64 + warp * 16 + lane / 4, col0 = n0 + 2 * (lane % 4);
            switch (epi) {
                case EPI_GELU: store_acc<EPI_GELU>(d, bias, residual, C, M, N, row0, col0); break;
                case EPI_RESIDUAL: store_acc<EPI_RESIDUAL>(d, bias, residual, C, M, N, row0, col0); break;
                case EPI_TANH: store_acc<EPI_TANH>(d, bias, residual, C, M, N, row0, col0); break;
                case EPI_GELU_TANH: store_acc<EPI_GELU_TANH>(d, bias, residual, C, M, N, row0, col0); break;
                case EPI_RELU: store_acc<EPI_RELU>(d, bias, residual, C, M, N, row0, col0); break;
                case EPI_SILU: store_acc<EPI_SILU>(d, bias, residual, C, M, N, row0, col0); break;
                default: store_acc<EPI_NONE>(d, bias, residual, C, M, N, row0, col0); break;
            }
        }
    }
}
