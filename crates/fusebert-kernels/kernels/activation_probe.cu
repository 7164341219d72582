// Activation probes: the GEMM epilogues' activation functions (common.cuh) applied elementwise
// to f32 and stored as f32, so tests can measure them at f32 resolution (the GEMMs round to
// fp16 first) and count their instructions (emulator counters, or the SASS of the entries).
// Test-only: no forward pass launches them. One entry per function, so an entry's count minus
// `probe_identity_f32`'s is the function's own. One element per thread, grid-stride.
#include "common.cuh"

template <float (*F)(float)>
FB_DEVICE void probe(const float* __restrict__ x, float* __restrict__ y, uint32_t n) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = F(x[i]);
}

FB_DEVICE float identity(float v) { return v; }

#define PROBE(NAME, F)                                                                                        \
    extern "C" __global__ void probe_##NAME##_f32(const float* __restrict__ x, float* __restrict__ y, uint32_t n) { \
        probe<F>(x, y, n);                                                                                    \
    }
PROBE(identity, identity)
PROBE(gelu_erf, gelu_erf)            // the epilogue's GELU
PROBE(gelu_erf_libm, gelu_erf_libm)  // the erff form it replaced
PROBE(gelu_tanh, gelu_tanh)
