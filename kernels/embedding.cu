// Embedding gather (word + position + token type) fused with layernorm.
//
// out[t, :] = LN(word[ids[t]] + pos[pos_offset + pos_ids[t]] + type[type_ids[t]]) * gamma + beta
//
// pos_offset: 0 for BERT; RoBERTa / XLM-R number positions from pad_token_id + 1, so the packer's
// 0-based positions are shifted here. type == null: a model without token types (DistilBERT),
// nothing added (type_ids is then not read).
//
// One block per token; the summed row lives in shared memory as f32 so the statistics are
// computed in two passes (mean, then centred variance) without re-reading global memory.
// Ids are validated on the host (the kernel trusts them to be in range).
// hidden % 8 == 0 (and 16-byte aligned tables): 16-byte vector loads/stores, the f32 row kept
// transposed in shared memory (element j of vector v at j * hidden/8 + v: conflict-free);
// otherwise scalar.
#include "common.cuh"

// CPU reference: src/model/reference.rs (embeddings) and kernels.rs tests.
extern "C" __global__ void embedding_layernorm_f16(
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
