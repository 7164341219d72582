// An nvcc-compiled probe of blocks that wait on each other through global memory (checked in
// with its PTX; tests/emu_coresident.rs loads it): a grid-wide barrier, a chain of blocks
// that each wait for the previous one (with tickets, so in any start order), and a spin lock
// on atom.cas. The emulator runs such launches co-scheduled (src/exec/resident.rs). The BUG_
// kernel waits on a block by blockIdx, which hangs when that block cannot be resident yet.
// Build: nvcc -gencode arch=compute_80,code=sm_80 -ptx -lineinfo coresident_probe.cu
#include <stdint.h>

__device__ __forceinline__ uint32_t ld_acquire(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release(uint32_t* p, uint32_t v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// Every block publishes blockIdx + 1, meets the others at a grid-wide barrier (a counter and
// a poll), then sums what all of them published: every thread of every block writes the sum.
extern "C" __global__ void grid_barrier(uint32_t* published, uint32_t* count, uint32_t* sums) {
    if (threadIdx.x == 0) {
        published[blockIdx.x] = blockIdx.x + 1;
        __threadfence();
        atomicAdd(count, 1u);
        while (ld_acquire(count) < gridDim.x) {
        }
    }
    __syncthreads();
    uint32_t s = 0;
    for (uint32_t b = 0; b < gridDim.x; b++) s += ((volatile uint32_t*)published)[b];
    sums[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// A running prefix over tiles in ticket order: a block takes the next ticket, waits until the
// previous tile's prefix is published, and publishes its own (prefix[t] = prefix[t-1] + t + 1).
// Tickets come from an atomic counter, so a tile only ever waits for a block already running:
// correct whatever order blocks start in.
extern "C" __global__ void ticket_chain(uint32_t* ticket, uint32_t* ready, uint32_t* prefix) {
    __shared__ uint32_t t;
    if (threadIdx.x == 0) t = atomicAdd(ticket, 1u);
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t before = 0;
        if (t > 0) {
            while (ld_acquire(&ready[t - 1]) == 0) {
            }
            before = prefix[t - 1];
        }
        prefix[t] = before + t + 1;
        st_release(&ready[t], 1u);
    }
}

// The same chain by blockIdx: block b waits for block b - 1, which need not have started (or be
// able to start: the resident blocks may all be waiting). Hangs on a GPU when the blocks start
// out of order with too few of them resident.
extern "C" __global__ void BUG_blockidx_chain(uint32_t* ready, uint32_t* prefix) {
    if (threadIdx.x == 0) {
        const uint32_t t = blockIdx.x;
        uint32_t before = 0;
        if (t > 0) {
            while (ld_acquire(&ready[t - 1]) == 0) {
            }
            before = prefix[t - 1];
        }
        prefix[t] = before + t + 1;
        st_release(&ready[t], 1u);
    }
}

// A spin lock (atom.cas to take it, atom.exch to give it back) around a plain read-modify-write:
// every block adds blockIdx + 1 once.
extern "C" __global__ void cas_lock(uint32_t* lock, uint32_t* total) {
    if (threadIdx.x == 0) {
        while (atomicCAS(lock, 0u, 1u) != 0u) {
        }
        __threadfence();
        volatile uint32_t* v = total;
        *v = *v + blockIdx.x + 1;
        __threadfence();
        atomicExch(lock, 0u);
    }
}
