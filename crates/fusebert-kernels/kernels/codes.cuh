// The codes a launch passes to select a kernel's behaviour, defined once: build.rs reads this
// file and generates the Rust constants of the launch API from it (`fusebert_kernels::codes`),
// so the host and the device cannot disagree on a number.
#pragma once
#include <stdint.h>

// GEMM epilogues. Every code but NONE and RESIDUAL is an activation applied after + bias (FFN1:
// GELU and its tanh form, ReLU, SiLU; pooler: tanh).
enum Epilogue : uint32_t {
    EPI_NONE = 0,
    EPI_GELU = 1,
    EPI_RESIDUAL = 2,
    EPI_TANH = 3,
    EPI_GELU_TANH = 4,
    EPI_RELU = 5,
    EPI_SILU = 6
};

// Sentence pooling modes (sentence-transformers' Pooling module).
enum PoolMode : uint32_t {
    POOL_MEAN = 0,
    POOL_CLS = 1,
    POOL_MAX = 2,
    POOL_MEAN_SQRT = 3,
    POOL_WMEAN = 4,
    POOL_LAST = 5
};
