//! The GPUs the stand-in can present: the name the real driver reports and the attributes a
//! program may read (`cuDeviceGetAttribute`, `cuDeviceTotalMem_v2`). The kernels run on the
//! emulator either way; only what the host sees changes. Keys are `fusebert::perf::gpu`'s names.
//!
//! Sources (none of these was read from a GPU by this project; each is a published or widely
//! logged figure):
//! - names and total memory: `nvidia-smi` as logged on such machines ("NVIDIA A100-SXM4-80GB"
//!   81920 MiB, "NVIDIA H100 80GB HBM3" 81559 MiB, "NVIDIA H200" 143771 MiB); nvidia-smi's
//!   total is the driver's total memory in MiB;
//! - SMs, boost clocks, shared memory per SM / per block, L2 of A100 and H100: the NVIDIA A100
//!   and H100 (SXM5) whitepapers and the Ampere / Hopper tuning guides (164 KB / 163 KB per
//!   SM / block on 8.0, 228 KB / 227 KB on 9.0, 1 KB reserved per block since 8.0, 32 blocks
//!   per SM); the same figures as `crates/fusebert/src/perf/gpu.rs`;
//! - memory clock and bus width: HBM2e 1593 MHz x 5120 bit (2.04 TB/s, A100 80GB), HBM3
//!   2619 MHz x 5120 bit (3.35 TB/s, H100 SXM), HBM3e 3201 MHz x 6144 bit (4.92 TB/s, H200:
//!   the 4.8 TB/s of the product brief, and the 4.915 TB/s cited in research/anchors.md);
//! - H200 L2: 60 MiB, what PyTorch reported on an H200 machine (research/hopper.md 3;
//!   `perf/gpu.rs` still assumes H100's 50 MB);
//! - cluster launch: supported from compute capability 9.0 (CUDA programming guide, thread
//!   block clusters).

/// One GPU as the driver describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuModel {
    /// `fusebert::perf::gpu` name, also the value of `FUSEBERT_CUDA_STANDIN_GPU`.
    pub key: &'static str,
    /// `cuDeviceGetName`.
    pub name: &'static str,
    pub compute_capability: (u32, u32),
    /// `cuDeviceTotalMem_v2`, bytes.
    pub total_mem: u64,
    /// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
    pub sms: i32,
    /// `CLOCK_RATE`: the boost clock, kHz.
    pub clock_khz: i32,
    /// `MEMORY_CLOCK_RATE`, kHz.
    pub memory_clock_khz: i32,
    /// `GLOBAL_MEMORY_BUS_WIDTH`, bits.
    pub bus_width_bits: i32,
    /// `L2_CACHE_SIZE`, bytes.
    pub l2_bytes: i32,
    /// `MAX_SHARED_MEMORY_PER_MULTIPROCESSOR`, bytes.
    pub shared_per_sm: i32,
    /// `MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`, bytes (static + dynamic of one block).
    pub shared_per_block_optin: i32,
    /// `RESERVED_SHARED_MEMORY_PER_BLOCK`, bytes (the runtime's per-block reservation).
    pub reserved_shared_per_block: i32,
    /// `MAX_BLOCKS_PER_MULTIPROCESSOR`.
    pub max_blocks_per_sm: i32,
    /// `CLUSTER_LAUNCH`.
    pub cluster_launch: bool,
}

const MIB: u64 = 1 << 20;

pub const A100_80GB: GpuModel = GpuModel {
    key: "a100-80gb",
    name: "NVIDIA A100-SXM4-80GB",
    compute_capability: (8, 0),
    total_mem: 81920 * MIB,
    sms: 108,
    clock_khz: 1_410_000,
    memory_clock_khz: 1_593_000,
    bus_width_bits: 5120,
    l2_bytes: 40 << 20,
    shared_per_sm: 164 * 1024,
    shared_per_block_optin: 163 * 1024,
    reserved_shared_per_block: 1024,
    max_blocks_per_sm: 32,
    cluster_launch: false,
};

pub const H100_SXM: GpuModel = GpuModel {
    key: "h100-sxm",
    name: "NVIDIA H100 80GB HBM3",
    compute_capability: (9, 0),
    total_mem: 81559 * MIB,
    sms: 132,
    clock_khz: 1_980_000,
    memory_clock_khz: 2_619_000,
    bus_width_bits: 5120,
    l2_bytes: 50 << 20,
    shared_per_sm: 228 * 1024,
    shared_per_block_optin: 227 * 1024,
    reserved_shared_per_block: 1024,
    max_blocks_per_sm: 32,
    cluster_launch: true,
};

pub const H200: GpuModel = GpuModel {
    key: "h200",
    name: "NVIDIA H200",
    total_mem: 143771 * MIB,
    memory_clock_khz: 3_201_000,
    bus_width_bits: 6144,
    l2_bytes: 60 << 20,
    ..H100_SXM
};

/// Every GPU the stand-in can present.
pub const GPUS: [GpuModel; 3] = [A100_80GB, H100_SXM, H200];

/// The GPU with this key (`a100-80gb`, `h100-sxm`, `h200`).
pub fn gpu(key: &str) -> Option<GpuModel> {
    GPUS.iter().copied().find(|g| g.key == key)
}

/// The attributes of a stand-in that presents no particular GPU: those of the A100 (8.0) or
/// the H100 SXM (9.0).
pub fn default_for(compute_capability: (u32, u32)) -> GpuModel {
    if compute_capability.0 >= 9 {
        H100_SXM
    } else {
        A100_80GB
    }
}
