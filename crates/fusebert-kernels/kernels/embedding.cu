// Embedding gather (word + position + token type) fused with layernorm.
//
// out[t, :] = LN(word[ids[t]] + pos[pos_offset + pos_ids[t]] + type[type_ids[t]]) * gamma + beta
//
// pos_offset: 0 for BERT; RoBERTa / XLM-R number positions from pad_token_id + 1, so the packer's
// 0-based positions are shifted here. type == null: a model without token types (DistilBERT),
// nothing added (type_ids is then not read).
// Ids are validated on the host (the kernel trusts them to be in range).
//
// embedding_layernorm_f16 (hidden % 8 == 0, hidden <= 1024: every BERT size): one WARP per
//   token, 8 tokens per 256-thread block (src/kernels/embedding.rs mirrors the geometry; more
//   tokens per warp would only save the per-block gamma/beta read, 4 * hidden bytes per 8
//   tokens against 8 * hidden per token, and would cost blocks at small batches). Lane 0 reads
//   the token's three ids and shuffles them to the warp; each lane sums up to 4 vectors of 8
//   halves (16-byte loads) of the three rows in registers, so mean and centred variance are two
//   shuffle reductions, with no second pass and no barrier after the staging of gamma and beta
//   in shared memory (dynamic shared = 2 * hidden halves). At hidden 384 the block-per-token
//   kernel left 208 of its 256 threads idle.
// embedding_layernorm_f16_wide (any other hidden): one block per token; the summed row lives in
//   shared memory as f32 so the statistics are computed in two passes (mean, then centred
//   variance) without re-reading global memory. hidden % 8 == 0 (and 16-byte aligned tables):
//   16-byte vector loads/stores, the f32 row kept transposed in shared memory (element j of
//   vector v at j * hidden/8 + v: conflict-free); otherwise scalar.
#include "common.cuh"

constexpr int EMB_VPL = 4;  // vectors of 8 per lane: hidden <= 32 * 8 * 4 = 1024

// CPU reference: src/kernels/reference.rs (embedding_layernorm), tests/kernels_misc.rs.
extern "C" __global__ void __launch_bounds__(256) embedding_layernorm_f16(
    const uint32_t* __restrict__ ids, const uint32_t* __restrict__ pos_ids,
    const uint32_t* __restrict__ type_ids, const __half* __restrict__ word,
    const __half* __restrict__ pos, const __half* __restrict__ type,
    const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, uint32_t tokens, uint32_t hidden, float eps, uint32_t pos_offset) {
    extern __shared__ half8 params[];  // gamma | beta
    const uint32_t nvec = hidden / 8;
    for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        st_half8(&params[v], ld_half8(gamma + 8 * v));
        st_half8(&params[nvec + v], ld_half8(beta + 8 * v));
    }
    __syncthreads();
    const uint32_t lane = threadIdx.x & 31, t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const float inv_h = 1.f / (float)hidden;
    if (t >= tokens) return;  // whole warp; no block barrier below
    uint32_t id = 0, pid = 0, tid = 0;
    if (lane == 0) {
        id = ids[t];
        pid = pos_ids[t];
        if (type) tid = type_ids[t];
    }
    id = __shfl_sync(0xffffffffu, id, 0);
    pid = __shfl_sync(0xffffffffu, pid, 0);
    tid = __shfl_sync(0xffffffffu, tid, 0);
    const __half* w = word + (size_t)id * hidden;
    const __half* p = pos + ((size_t)pos_offset + pid) * hidden;
    const __half* y = type ? type + (size_t)tid * hidden : nullptr;
    float f[EMB_VPL][8];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < EMB_VPL; i++) {
        const uint32_t v = lane + 32 * i;
        if (v < nvec) {
            float b[8];
            half8_to_float(ld_half8(w + 8 * v), f[i]);
            half8_to_float(ld_half8(p + 8 * v), b);
#pragma unroll
            for (int j = 0; j < 8; j++) f[i][j] += b[j];
            if (y) {
                half8_to_float(ld_half8(y + 8 * v), b);
#pragma unroll
                for (int j = 0; j < 8; j++) f[i][j] += b[j];
            }
#pragma unroll
            for (int j = 0; j < 8; j++) sum += f[i][j];
        }
    }
    const float mean = warp_sum(sum) * inv_h;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < EMB_VPL; i++)
        if (lane + 32 * i < nvec)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float d = f[i][j] - mean;
                sq += d * d;
            }
    const float rstd = rsqrtf(warp_sum(sq) * inv_h + eps);
    __half* o = out + (size_t)t * hidden;
#pragma unroll
    for (int i = 0; i < EMB_VPL; i++) {
        const uint32_t v = lane + 32 * i;
        if (v < nvec) {
            float g[8], b[8];
            half8_to_float(ld_half8(&params[v]), g);
            half8_to_float(ld_half8(&params[nvec + v]), b);
#pragma unroll
            for (int j = 0; j < 8; j++) f[i][j] = (f[i][j] - mean) * rstd * g[j] + b[j];
            st_half8(o + 8 * v, float_to_half8(f[i]));
        }
    }
}

extern "C" __global__ void embedding_layernorm_f16_wide(
    const uint32_t* __restrict__ ids, const uint32_t* __restrict__ pos_ids,
    const uint32_t* __restrict__ type_ids, const __half* __restrict__ word,
    const __half* __restrict__ pos, const __half* __restrict__ type,
    const __half* __restrict__ gamma, const __half* __restrict__ beta,
    __half* __restrict__ out, uint32_t hidden, float eps, uint32_t pos_offset) {
    extern __shared__ float row[];  // [hidden] f32, then 32 floats of reduction scratch
    float* scratch = row + hidden;
    const uint32_t t = blockIdx.x;
    const __half* w = word + (size_t)ids[t] * hidden;
    const __half* p = pos + ((size_t)pos_offset + pos_ids[t]) * hidden;
    const __half* y = type ? type + (size_t)type_ids[t] * hidden : nullptr;

    float local = 0.f;
    const bool vec = (hidden & 7) == 0;  // 16-byte loads when rows are whole half8 vectors
    if (vec) {
        for (uint32_t v = threadIdx.x; v < hidden / 8; v += blockDim.x) {
            float a[8], b[8], c[8];
            half8_to_float(ld_half8(w + 8 * v), a);
            half8_to_float(ld_half8(p + 8 * v), b);
            if (y) half8_to_float(ld_half8(y + 8 * v), c);
            else for (int j = 0; j < 8; j++) c[j] = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float s = a[j] + b[j] + c[j];
                row[j * (hidden / 8) + v] = s;  // transposed: lanes hit consecutive banks
                local += s;
            }
        }
    } else {
        for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
            float v = __half2float(w[i]) + __half2float(p[i]) + (y ? __half2float(y[i]) : 0.f);
            row[i] = v;
            local += v;
        }
    }
    const float mean = block_sum(local, scratch) / (float)hidden;
    float sq = 0.f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float d = row[i] - mean;
        sq += d * d;
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / (float)hidden + eps);
    __half* o = out + (size_t)t * hidden;
    if (vec) {
        for (uint32_t v = threadIdx.x; v < hidden / 8; v += blockDim.x) {
            float a[8], g[8], b[8];
            half8_to_float(ld_half8(gamma + 8 * v), g);
            half8_to_float(ld_half8(beta + 8 * v), b);
#pragma unroll
            for (int j = 0; j < 8; j++) a[j] = (row[j * (hidden / 8) + v] - mean) * rstd * g[j] + b[j];
            st_half8(o + 8 * v, float_to_half8(a));
        }
    } else {
        for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
            float v = (row[i] - mean) * rstd * __half2float(gamma[i]) + __half2float(beta[i]);
            o[i] = __float2half_rn(v);
        }
    }
}
