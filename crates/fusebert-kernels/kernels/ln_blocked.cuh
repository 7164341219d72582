// The Hopper GEMMs' fused-layernorm reduction order ("blocked"; gemm_sm90.cu only: the mma.sync
// family keeps ln_fused.cuh's, layernorm_f16's). One order for every path of the sm90 family, the
// serial strip tail (LnTail: a warp per row, y read back) and the cluster entries (_cln*: y in
// the wgmma accumulator fragments, block sums exchanged through distributed shared memory), so
// that all give the same bits whatever CTA, cluster or split computes a row:
// - a row of N columns (N % 8 == 0, N <= 1024) is cut into 64-column blocks b (the last partial
//   when N % 64 != 0);
// - block b's sum is (s0 + s1) + (s2 + s3), s_q = ((0 + y[64b + 8c + 2q]) + y[64b + 8c + 2q + 1])
//   + ... over c = 0..7 in order (columns >= N skipped): what the lane q of a wgmma fragment
//   quad holds (column pairs 8c + 2q), reduced by shfl_xor 1 then shfl_xor 2 (a + b == b + a
//   bitwise, so every lane of the quad gets the same bits);
// - the row's sum is ((0 + blk0) + blk1) + ... in block order; mean = sum * (1 / N);
// - the variance the same over d * d, d = y - mean (s = fma(d, d, s)); rstd = rsqrt(fma(var,
//   1 / N, eps)); out = fma((y - mean) * rstd, gamma, beta), rounded to fp16;
// - the int8 codes (q_out, q_scale, optional q_smooth) as ln_row: f = float(out) (* smooth),
//   amax = max |f| (a max: order-free), code = q8(f, 127 / amax), scale = amax / 127.
// Every operation is spelled with an _rn intrinsic, so no fma contraction differs between paths.
// y is the fp16-rounded GEMM output (what the tile stores), as f32.
#pragma once
#include "common.cuh"
#include "ln_fused.cuh"  // LnArgs

namespace lnb {
constexpr int BLOCK = 64;       // columns per block
constexpr int MAX_BLOCKS = 16;  // N <= 1024

FB_DEVICE int blocks(int N) { return (N + BLOCK - 1) / BLOCK; }
FB_DEVICE float inv_h(int N) { return 1.f / (float)N; }
// s + y0 + y1, left to right: one column pair into a lane's block partial.
FB_DEVICE float add_pair(float s, float y0, float y1) { return __fadd_rn(__fadd_rn(s, y0), y1); }
// s + (y0 - mean)^2 + (y1 - mean)^2, as two fmas.
FB_DEVICE float add_sq_pair(float s, float y0, float y1, float mean) {
    const float d0 = __fsub_rn(y0, mean), d1 = __fsub_rn(y1, mean);
    return __fmaf_rn(d1, d1, __fmaf_rn(d0, d0, s));
}
// (s0 + s1) + (s2 + s3) over a quad (lanes 4k..4k+3), in every lane of the quad. Every lane of
// the warp must call it.
FB_DEVICE float quad_sum(float s) {
    const float a = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, 1));
    return __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 2));
}
FB_DEVICE float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
FB_DEVICE float mean(float sum, float inv) { return __fmul_rn(sum, inv); }
FB_DEVICE float rstd(float var_sum, float inv, float eps) { return rsqrtf(__fmaf_rn(var_sum, inv, eps)); }
FB_DEVICE float norm(float y, float mean, float rstd, float g, float b) {
    return __fmaf_rn(__fmul_rn(__fsub_rn(y, mean), rstd), g, b);
}
FB_DEVICE float2 half2_bits_to_float2(uint32_t bits) {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}
FB_DEVICE float2 ld_half2_f32(const __half* p) { return __half22float2(*reinterpret_cast<const __half2*>(p)); }
// The output pair (o0, o1) rounded to fp16 (the bits stored), and, for the codes, its f32 values
// times the smoothing pair at `smooth` (null: none) in f.
FB_DEVICE uint32_t out_pair(float o0, float o1, const __half* smooth, float& f0, float& f1) {
    const uint32_t h = pack_half2(o0, o1);
    const float2 v = half2_bits_to_float2(h);
    f0 = v.x;
    f1 = v.y;
    if (smooth) {
        const float2 m = ld_half2_f32(smooth);
        f0 = __fmul_rn(f0, m.x);
        f1 = __fmul_rn(f1, m.y);
    }
    return h;
}
// The two codes of a pair, as the 2 bytes stored.
FB_DEVICE uint16_t code_pair(float f0, float f1, float inv) {
    return (uint16_t)((q8(f0, inv) & 0xff) | ((q8(f1, inv) & 0xff) << 8));
}

// One row of y (fp16 [M, N], written by other CTAs: read through L2) normalised by one warp in the
// blocked order (the serial strip tail of the _ln and _sk_ln entries): lane 4k + q holds the
// column pairs 8c + 2q of blocks k and k + 8, as a wgmma fragment quad holds a block's; the
// quads' block sums are then gathered in block order by shuffles. Writes p.out's row and, given
// p.q_out, its codes and scale.
FB_DEVICE void ln_row(const __half* y, const gemm::LnArgs& p, int row, int N) {
    const int lane = threadIdx.x & 31, quad = lane >> 2, q = lane & 3;
    const int nb = blocks(N);
    const float inv = inv_h(N);
    const __half* yr = y + (size_t)row * N;
    float f[2][8][2];
    float part[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const int n = BLOCK * (8 * i + quad) + 8 * c + 2 * q;
            f[i][c][0] = f[i][c][1] = 0.f;
            if (n < N) {
                const float2 v = half2_bits_to_float2(__ldcg(reinterpret_cast<const unsigned int*>(yr + n)));
                f[i][c][0] = v.x;
                f[i][c][1] = v.y;
                s = add_pair(s, v.x, v.y);
            }
        }
        part[i] = quad_sum(s);
    }
    float sum = 0.f;
    for (int b = 0; b < nb; b++) sum = __fadd_rn(sum, __shfl_sync(0xffffffffu, b < 8 ? part[0] : part[1], 4 * (b & 7)));
    const float mu = mean(sum, inv);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < 8; c++)
            if (BLOCK * (8 * i + quad) + 8 * c + 2 * q < N) s = add_sq_pair(s, f[i][c][0], f[i][c][1], mu);
        part[i] = quad_sum(s);
    }
    float var = 0.f;
    for (int b = 0; b < nb; b++) var = __fadd_rn(var, __shfl_sync(0xffffffffu, b < 8 ? part[0] : part[1], 4 * (b & 7)));
    const float rs = rstd(var, inv, p.eps);
    const bool q8out = p.q_out != nullptr;
    const __half* smooth = q8out ? p.q_smooth : nullptr;
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const int n = BLOCK * (8 * i + quad) + 8 * c + 2 * q;
            if (n < N) {
                const float2 g = ld_half2_f32(p.gamma + n), b = ld_half2_f32(p.beta + n);
                const uint32_t h = out_pair(norm(f[i][c][0], mu, rs, g.x, b.x), norm(f[i][c][1], mu, rs, g.y, b.y),
                                            smooth ? smooth + n : nullptr, f[i][c][0], f[i][c][1]);
                *reinterpret_cast<uint32_t*>(p.out + (size_t)row * N + n) = h;
                amax = fmaxf(amax, fmaxf(fabsf(f[i][c][0]), fabsf(f[i][c][1])));
            }
        }
    if (q8out) {
        amax = warp_max(amax);
        const float qi = q8_inv_scale(amax);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const int n = BLOCK * (8 * i + quad) + 8 * c + 2 * q;
                if (n < N)
                    *reinterpret_cast<uint16_t*>(p.q_out + (size_t)row * N + n) = code_pair(f[i][c][0], f[i][c][1], qi);
            }
        if (lane == 0) p.q_scale[row] = amax / 127.f;
    }
}
}  // namespace lnb
