// An nvcc-compiled sm_90a probe of thread block clusters (checked in with its PTX; the emulator
// test tests/emu_cluster.rs loads the PTX): __cluster_dims__, the cluster special registers,
// mapa + ld.shared::cluster (distributed shared memory) and barrier.cluster.arrive/wait, in
// the inline-asm forms the fused-layernorm GEMMs use. Each kernel has 64 threads per CTA and
// clusters of 4 CTAs; CTA r publishes buf[t] = 1000 r + t and reads rank (r + 1) % 4's.
// The BUG_* kernels each break one rule and must be reported.
// Build: nvcc -gencode arch=compute_90a,code=sm_90a -ptx -lineinfo cluster_probe.cu
#include <stdint.h>

__device__ __forceinline__ uint32_t special_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ uint32_t special(int which) {
    uint32_t r = 0;
    if (which == 0) asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
    if (which == 1) asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    if (which == 2) asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(r));
    if (which == 3) asm volatile("mov.u32 %0, %%cluster_ctaid.x;" : "=r"(r));
    if (which == 4)
        asm volatile("{\n.reg .pred p;\nmov.pred p, %%is_explicit_cluster;\nselp.u32 %0, 1, 0, p;\n}" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ float ld_peer(const float* p, uint32_t rank) {
    uint32_t a;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(smem_u32(p)), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(a) : "memory");
    return v;
}

// mode 0: correct; 1: no barrier between the writes and the peer reads; 2: no barrier before
// exit (a peer reads the memory of a CTA that has exited); 3: overwrites its buffer while
// peers may still read it (no barrier after the reads).
template <int MODE>
__device__ void exchange(float* out, uint32_t* info) {
    __shared__ float buf[64];
    const uint32_t t = threadIdx.x, r = special_rank(), n = special(0);
    buf[t] = 1000.f * r + t;
    if (MODE != 1) cluster_sync();
    const float v = ld_peer(&buf[t], (r + 1) % n);
    if (MODE == 3) buf[t] = -1.f;
    if (MODE != 2) cluster_sync();
    out[blockIdx.x * 64 + t] = v;
    if (t < 5) info[blockIdx.x * 5 + t] = special(t);
}

extern "C" __global__ void __cluster_dims__(4, 1, 1) cluster_exchange(float* out, uint32_t* info) {
    exchange<0>(out, info);
}
extern "C" __global__ void __cluster_dims__(4, 1, 1) BUG_no_barrier(float* out, uint32_t* info) {
    exchange<1>(out, info);
}
extern "C" __global__ void __cluster_dims__(4, 1, 1) BUG_exit_early(float* out, uint32_t* info) {
    exchange<2>(out, info);
}
extern "C" __global__ void __cluster_dims__(4, 1, 1) BUG_overwrite(float* out, uint32_t* info) {
    exchange<3>(out, info);
}
// a warp of rank 1 skips the cluster barrier and waits at __syncthreads for the warp that
// waits at the cluster barrier for it: a hang on hardware
extern "C" __global__ void __cluster_dims__(2, 1, 1) BUG_skipped_barrier(float* out) {
    if (threadIdx.x >= 32 || special_rank() == 0) cluster_sync();
    __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = 1.f;
}

// the cluster barrier orders the CTA's own threads too: thread t reads what thread 63 - t (of
// the other warp, or another lane of its own) wrote before it, with no __syncthreads
extern "C" __global__ void __cluster_dims__(2, 1, 1) cluster_orders_own_cta(float* out) {
    __shared__ float buf[64];
    const uint32_t t = threadIdx.x;
    buf[t] = (float)t;
    cluster_sync();
    out[blockIdx.x * 64 + t] = buf[63 - t] + 100.f * special_rank();
    cluster_sync();
}
