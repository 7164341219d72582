//! GPU constants for the roofline, from vendor spec sheets (dense figures, no 2:4 sparsity),
//! with the source of each. `mma_sync_fraction` is the share of the dense tensor peak that
//! `mma.sync` (the `sm80` kernel family, on every GPU) can reach; `wgmma_fraction` (Hopper
//! only) the share the `_sm90` kernels' `wgmma` path is assumed to reach (research note
//! `hopper.md` 3.4).
use serde::Serialize;

use crate::error::{Error, Result};

/// One GPU's published limits. Every field is printed in `roofline --json` so a reader can
/// check them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSpec {
    pub name: &'static str,
    pub sms: u32,
    /// Dense fp16 tensor-core peak (fp32 accumulation), TFLOP/s.
    pub peak_tflops_f16: f64,
    /// Dense int8 tensor-core peak, TOP/s.
    pub peak_tops_int8: f64,
    /// Fraction of the tensor peak `mma.sync` reaches (1.0 before Hopper; see [`H100_MMA_SYNC`]).
    pub mma_sync_fraction: f64,
    /// Compute capability `(major, minor)`: 9.0 selects the `_sm90` kernels under
    /// `--kernels auto` (as `FUSEBERT_KERNELS=auto` does at run time).
    pub compute_capability: (u32, u32),
    /// Fraction of the dense tensor peak the `_sm90` GEMMs' `wgmma` reaches, f16 and int8
    /// alike; `None` where there is no `wgmma` (before Hopper). See [`WGMMA_FRACTION`].
    pub wgmma_fraction: Option<f64>,
    /// Fraction of the dense fp16 peak the `_sm90` attention reaches (S <= 512); see
    /// [`WGMMA_ATTENTION_FRACTION`].
    pub wgmma_attention_fraction: Option<f64>,
    /// Fixed time per `_sm90` GEMM launch, microseconds, the graph node's gap included; see
    /// [`WGMMA_GEMM_FIXED_US`].
    pub wgmma_gemm_fixed_us: Option<f64>,
    /// HBM / GDDR bandwidth, GB/s.
    pub dram_gbps: f64,
    /// L2 capacity, bytes.
    pub l2_bytes: u64,
    /// L2 bandwidth, GB/s (an estimate where no figure is published; see `sources`).
    pub l2_gbps: f64,
    /// Bandwidth one SM can pull from L2/DRAM, GB/s: 64 bytes per clock (the L2-to-SM path)
    /// at the boost clock. Caps small grids: `blocks < sms` use only their SMs' share.
    pub sm_gbps: f64,
    /// Shared memory per SM usable by blocks, bytes.
    pub smem_per_sm: u32,
    /// Most shared memory one block may have, bytes.
    pub smem_per_block: u32,
    pub regs_per_sm: u32,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    /// Cost of one kernel launch on a stream, microseconds (host enqueue + GPU dispatch of
    /// back-to-back launches).
    pub launch_us: f64,
    /// Cost per kernel node when replayed from a CUDA graph, microseconds.
    pub graph_node_us: f64,
    /// Fraction of the DRAM bandwidth a streaming kernel attains.
    pub dram_efficiency: f64,
    /// Where the numbers come from.
    pub sources: &'static str,
}

/// `mma.sync` on Hopper: ~63-65% of the dense fp16 peak in an instruction microbenchmark
/// (Luo et al., "Dissecting the NVIDIA Hopper Architecture through Microbenchmarking",
/// arXiv:2501.12084, quoted second-hand; `wgmma` reaches ~96%). We use 0.64, and the same for
/// int8 (not measured anywhere we found).
pub const H100_MMA_SYNC: f64 = 0.64;

/// `wgmma` GEMMs on Hopper: 0.80 of the dense peak, the instruction-level ceiling of a
/// warp-specialised TMA + `wgmma` GEMM (research note `hopper.md` 3.4: hand-written ladder
/// 799-808 TFLOPS = 81-82% at 8192^3, pranjalssh/fast.cu; PyTorch bf16 8192^3 on an H200
/// 78-81%; DeepGEMM 84%, ThunderKittens 78%). int8 is assumed to reach the same fraction of its
/// own (2x) peak: **unverified**, no int8 `wgmma` measurement was found. Not fitted to any
/// target.
pub const WGMMA_FRACTION: f64 = 0.80;

/// `_sm90` attention (FA3-style) on Hopper: 0.35 of the dense fp16 peak. The note
/// (`hopper.md` 3.4) gives 0.35-0.45 for S <= 512; we take its low end, which is FA3's own
/// forward figure at the shortest length measured, bf16 head dim 64 at S = 512: 333 TFLOPS =
/// 0.34 of 989 (FA3 paper arXiv:2407.08608, via research/perf-anchors.md 1.4); FA3 gets
/// faster with S (392 at 1k, 460 at 2k), and BERT's S is 128-512, so the higher values of the
/// range are not ours.
pub const WGMMA_ATTENTION_FRACTION: f64 = 0.35;

/// Fixed cost of one `_sm90` GEMM launch: ~2 us for pipeline fill + the last tile's epilogue +
/// the graph node (`hopper.md` 3.4). It includes the graph node: the roofline charges
/// `graph_node_us` to every launch already, so an `_sm90` GEMM's kernel time gets the rest,
/// `WGMMA_GEMM_FIXED_US - graph_node_us` (see `perf::roofline`).
pub const WGMMA_GEMM_FIXED_US: f64 = 2.0;

const LAUNCH_US: f64 = 4.0;
const GRAPH_NODE_US: f64 = 0.6;

/// The GPUs `roofline --gpu` knows.
pub const GPU_NAMES: [&str; 4] = ["a100-80gb", "h100-sxm", "h200", "l40s"];

/// The spec matching a CUDA device name such as "NVIDIA H100 80GB HBM3", if it is one of ours
/// (H100 PCIe and other variants are not: their clocks and bandwidths differ).
pub fn gpu_for_device_name(device: &str) -> Option<GpuSpec> {
    let d = device.to_ascii_uppercase();
    let name = if d.contains("H200") {
        "h200"
    } else if d.contains("H100") && (d.contains("SXM") || d.contains("HBM3")) {
        "h100-sxm"
    } else if d.contains("A100") && d.contains("80GB") {
        "a100-80gb"
    } else if d.contains("L40S") {
        "l40s"
    } else {
        return None;
    };
    gpu(name).ok()
}

/// The spec of `name` (one of [`GPU_NAMES`]).
pub fn gpu(name: &str) -> Result<GpuSpec> {
    let base = GpuSpec {
        name: "",
        sms: 0,
        peak_tflops_f16: 0.0,
        peak_tops_int8: 0.0,
        mma_sync_fraction: 1.0,
        compute_capability: (8, 0),
        wgmma_fraction: None,
        wgmma_attention_fraction: None,
        wgmma_gemm_fixed_us: None,
        dram_gbps: 0.0,
        l2_bytes: 0,
        l2_gbps: 0.0,
        sm_gbps: 0.0,
        smem_per_sm: 0,
        smem_per_block: 0,
        regs_per_sm: 65536,
        max_threads_per_sm: 2048,
        max_blocks_per_sm: 32,
        launch_us: LAUNCH_US,
        graph_node_us: GRAPH_NODE_US,
        dram_efficiency: 0.85,
        sources: "",
    };
    Ok(match name {
        // NVIDIA A100 Tensor Core GPU datasheet / Ampere whitepaper: 108 SMs, 312 TFLOPS fp16,
        // 624 TOPS int8 (dense), 2,039 GB/s HBM2e (80 GB SXM), 40 MB L2, 164 KB smem per SM.
        "a100-80gb" => GpuSpec {
            name: "a100-80gb",
            sms: 108,
            peak_tflops_f16: 312.0,
            peak_tops_int8: 624.0,
            dram_gbps: 2039.0,
            l2_bytes: 40 << 20,
            l2_gbps: 5000.0,
            sm_gbps: 64.0 * 1.41, // boost clock 1.41 GHz
            smem_per_sm: 164 << 10,
            smem_per_block: 163 << 10,
            sources: "NVIDIA A100 datasheet and Ampere GA100 whitepaper (SMs, fp16/int8 dense peaks, HBM2e 2039 GB/s, \
                      40 MB L2, 164 KB smem/SM); L2 bandwidth ~5 TB/s is an estimate (not published); launch 4 us \
                      and graph node 0.6 us from community measurements (docs/perf-anchors.md 2.2); DRAM efficiency 0.85 \
                      (Accel-Sim: 85% attained on Volta HBM)",
            ..base
        },
        // NVIDIA H100 datasheet / Hopper whitepaper (SXM5): 132 SMs, 989.4 TFLOPS fp16, 1,978.9
        // TOPS int8 (dense), 3.35 TB/s HBM3, 50 MB L2 (12 TB/s per Hazy Research), 228 KB smem/SM.
        "h100-sxm" => GpuSpec {
            name: "h100-sxm",
            sms: 132,
            peak_tflops_f16: 989.4,
            peak_tops_int8: 1978.9,
            mma_sync_fraction: H100_MMA_SYNC,
            compute_capability: (9, 0),
            wgmma_fraction: Some(WGMMA_FRACTION),
            wgmma_attention_fraction: Some(WGMMA_ATTENTION_FRACTION),
            wgmma_gemm_fixed_us: Some(WGMMA_GEMM_FIXED_US),
            dram_gbps: 3350.0,
            l2_bytes: 50 << 20,
            l2_gbps: 12000.0,
            sm_gbps: 64.0 * 1.98, // boost clock 1.98 GHz
            smem_per_sm: 228 << 10,
            smem_per_block: 227 << 10,
            sources: "NVIDIA H100 datasheet and Hopper whitepaper (SXM5: SMs, dense peaks, HBM3 3.35 TB/s, 50 MB L2, \
                      228 KB smem/SM); L2 12 TB/s (hazyresearch.stanford.edu/blog/2024-05-12-tk); mma.sync 0.64 of \
                      peak (arXiv:2501.12084, secondary); wgmma path (_sm90 kernels): 0.80 of peak, f16 and int8 \
                      (int8 unverified), attention 0.35 (FA3 hd64 S=512), 2 us fixed per GEMM (research note \
                      hopper.md 3.4); launch/graph costs as for A100",
            ..base
        },
        // H200 SXM: the same GH100 compute as H100 SXM, 4.8 TB/s HBM3e, 141 GB; L2 60 MB as
        // PyTorch reported on an H200 machine (research note hopper.md 3.4 and 4: the device
        // attribute read there; not on NVIDIA's spec sheet).
        "h200" => GpuSpec {
            name: "h200",
            sms: 132,
            peak_tflops_f16: 989.4,
            peak_tops_int8: 1978.9,
            mma_sync_fraction: H100_MMA_SYNC,
            compute_capability: (9, 0),
            wgmma_fraction: Some(WGMMA_FRACTION),
            wgmma_attention_fraction: Some(WGMMA_ATTENTION_FRACTION),
            wgmma_gemm_fixed_us: Some(WGMMA_GEMM_FIXED_US),
            dram_gbps: 4800.0,
            l2_bytes: 60 << 20,
            l2_gbps: 12000.0,
            sm_gbps: 64.0 * 1.98, // boost clock 1.98 GHz
            smem_per_sm: 228 << 10,
            smem_per_block: 227 << 10,
            sources: "NVIDIA H200 product brief (HBM3e 4.8 TB/s, same GH100 compute as H100 SXM); L2 60 MB as PyTorch \
                      reported on an H200 machine (research note hopper.md 3.4); L2 bandwidth assumed equal to H100 SXM \
                      (not published); mma.sync 0.64 and the wgmma path as for H100",
            ..base
        },
        // NVIDIA L40S datasheet: 142 SMs (AD102), fp16 tensor with fp32 accumulation 362.05
        // TFLOPS and int8 733 TOPS dense (733 / 1,466 with sparsity), 864 GB/s GDDR6, 96 MB L2.
        "l40s" => GpuSpec {
            name: "l40s",
            sms: 142,
            peak_tflops_f16: 362.05,
            peak_tops_int8: 733.0,
            dram_gbps: 864.0,
            l2_bytes: 96 << 20,
            l2_gbps: 4000.0,
            sm_gbps: 64.0 * 2.52, // boost clock 2.52 GHz
            smem_per_sm: 100 << 10,
            smem_per_block: 99 << 10,
            compute_capability: (8, 9),
            regs_per_sm: 65536,
            max_threads_per_sm: 1536,
            max_blocks_per_sm: 24,
            sources: "NVIDIA L40S datasheet (142 SMs, fp16 tensor 362.05 TFLOPS / int8 733 TOPS dense; \
                      864 GB/s GDDR6, 96 MB L2); Ada tuning guide (100 KB smem/SM, 1536 threads/SM, 24 blocks/SM); \
                      L2 bandwidth ~4 TB/s an estimate",
            ..base
        },
        other => return Err(Error::Input(format!("unknown GPU `{other}`, expected one of {}", GPU_NAMES.join(", ")))),
    })
}
