// An nvcc-compiled sm_90a probe of the Hopper ground rules (checked in with its PTX; the
// emulator test tests/emu_hopper.rs `nvcc_sm90a_probe_runs` loads the PTX): a
// __grid_constant__ CUtensorMap parameter, extern shared memory aligned to 1024, an mbarrier
// with expect_tx, a 2-D TMA tile load, elect.sync, setmaxnreg, try_wait loops from inline asm.
// Build: nvcc -gencode arch=compute_90a,code=sm_90a -ptx -lineinfo tma_probe.cu
#include <cuda.h>
#include <stdint.h>

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile(
        "{\n"
        ".reg .pred P1;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
        "@!P1 bra WAIT;\n"
        "}\n" ::"r"(bar),
        "r"(parity));
}

extern "C" __global__ void __launch_bounds__(256, 1)
    tma_probe(const __grid_constant__ CUtensorMap map, uint8_t* out, int c0, int c1, uint32_t bytes) {
    extern __shared__ __align__(1024) uint8_t smem[];
    __shared__ __align__(8) uint64_t bar;
    uint32_t b = static_cast<uint32_t>(__cvta_generic_to_shared(&bar));
    uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    // warpgroup 0 (the producer) gives registers up, warpgroup 1 takes them
    if (threadIdx.x < 128) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 32;\n");
    }
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(b));
        asm volatile("fence.mbarrier_init.release.cluster;\n");
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        uint32_t leader;
        asm volatile(
            "{\n.reg .pred P;\nelect.sync _|P, 0xffffffff;\nselp.u32 %0, 1, 0, P;\n}\n" : "=r"(leader));
        if (leader) {
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(bytes));
            asm volatile(
                "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(s),
                "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(b)
                : "memory");
        }
    }
    mbar_wait(b, 0);
    mbar_wait(b, 0);
    for (uint32_t i = threadIdx.x; i < bytes; i += blockDim.x) out[i] = smem[i];
}
