//! Roofline prediction of one forward pass on a named GPU, per launch:
//!
//! `time = max(tensor FLOPs / (peak * mma_sync_fraction) * wave factor,
//!             DRAM bytes / min(DRAM bandwidth * efficiency, SM bandwidth),
//!             L2 bytes / min(L2 bandwidth, SM bandwidth), minimum kernel time)`
//!
//! then launch overhead: every kernel pays the GPU's dependent-launch gap `graph_node_us`;
//! without a graph a launch also costs at least `launch_us` (the host enqueues one kernel while
//! the previous runs, so short kernels are launch bound); a graph replay adds a fixed
//! `GRAPH_REPLAY_US` instead.
//!
//! - **Wave quantisation**: blocks per SM from ptxas' register count (sm_90 for Hopper, sm_80
//!   otherwise), the block's shared memory and threads; a grid of `B` blocks on `S` SMs of `k`
//!   resident blocks runs `ceil(B / (S k))` waves; the compute term is stretched by
//!   `ceil(B / S) * S / B` (the busiest SM's blocks; see [`waves`]).
//! - **Small grids**: a grid of fewer blocks than SMs cannot pull the whole memory bandwidth;
//!   its memory terms use at most `min(B, S) * sm_gbps` (64 bytes per clock per SM).
//! - **L2 estimate** (not a simulation): every issued global load and store goes through L2
//!   (the plan's load bytes, tile re-reads included); DRAM sees each byte once (the plan's
//!   minimum) when the set of bytes that are re-read while one wave runs (a GEMM's weights
//!   and the activation rows of its resident blocks, attention's K/V) fits in L2, and the re-reads in proportion to the
//!   part that does not fit otherwise. Reuse *between* launches (an activation still in L2
//!   when the next kernel reads it, MiniLM's weights staying resident across passes) is not
//!   counted, so DRAM time is an upper estimate.
//! - **Serial tails**: bytes one block moves alone after the rest of its grid is done (the plan's
//!   `tail_bytes`: a split-K GEMM's last block per tile reading the tile's partial sums, a
//!   fused layernorm's last row strip) add their time at one SM's bandwidth `sm_gbps` to the
//!   parallel part's, overlapping nothing; the minimum kernel time bounds the sum.
//! - **Bound**: the largest of the terms: `compute`, `memory` (DRAM or L2), or `latency` (the
//!   minimum kernel time or the launch cost).
//!
//! **The Hopper path** (`*_sm90` kernels, [`super::sm90`]; research note `hopper.md` 3.4):
//! - GEMMs: the compute term uses `wgmma_fraction` (0.80) instead of `mma_sync_fraction`, over
//!   the persistent grid's work units (`ceil(units / SMs) * SMs / units`, units = tiles x
//!   splits of [`super::sm90::choose_gemm`]), and the memory terms use `min(units, SMs)` SMs'
//!   bandwidth. Then a fixed `wgmma_gemm_fixed_us` (~2 us: pipeline fill + the last tile's
//!   epilogue + the graph node) per launch. The graph node is in that 2 us and every launch is
//!   already charged `graph_node_us`, so the kernel time gets `fixed - graph_node_us` (1.4 us)
//!   added **after** the largest term: `kernel = max(largest term + tails + 1.4 us, 2 us
//!   minimum)`, `time = kernel + 0.6 us` in a graph (on a stream, at least `launch_us`). A
//!   compute-bound `_sm90` GEMM thus costs its compute + 2 us, as the note derives.
//!   Cluster entries (`_cln`, `_cqa`): a cluster per 128-row strip, at most
//!   [`super::sm90::CLUSTER_CTAS`] CTAs; the compute term is stretched by the busiest CTA's
//!   tiles over the machine's fair share, and they have no serial strip tail.
//! - Attention: tensor FLOPs at `wgmma_attention_fraction` (0.35) of the fp16 peak, with the
//!   wave factor and launch costs of every other kernel (no fixed GEMM cost: the fraction is a
//!   measured whole-kernel throughput).
//! - The fused QKV attention (`qkv_attention_*_sm90`): its GEMM's tensor FLOPs at
//!   `wgmma_fraction` of the precision's peak plus its attention's (`attention_tensor_flops`) at
//!   `wgmma_attention_fraction` of the fp16 peak, one after the other (a CTA runs its GEMM, then
//!   attention on the tile it kept), a grid of `heads x batch` CTAs in waves, and a GEMM's fixed
//!   cost.
//! - Every other kernel (embedding, layernorm, quantize, pooling) is the same in both families.
//!
//! Blind spots: instruction issue (epilogues, softmax, layernorm arithmetic are not counted),
//! latency hiding and pipeline depth, clocks under power limits, cache hit rates measured.
use serde::Serialize;

use super::gpu::GpuSpec;
use super::plan::{sm90_tile_of, LaunchPlan, PlannedLaunch};
use super::sm90::{self, KernelFamily, Sm90Tile};
use crate::model::Precision;
use crate::ptx;

/// Shortest time any launch takes on the GPU (dispatch, ramp-up, drain), microseconds.
pub const MIN_KERNEL_US: f64 = 2.0;

/// What bounds a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
    Latency,
}

/// Resident blocks per SM from threads, registers and shared memory (the CUDA occupancy
/// rules: registers allocated per warp in units of 256, 1 KiB of shared memory reserved per
/// block).
pub fn blocks_per_sm(g: &GpuSpec, threads: u32, regs_per_thread: u32, shared_bytes: u32) -> u32 {
    let warps = threads.div_ceil(32).max(1);
    let by_threads = g.max_threads_per_sm / (warps * 32);
    let regs_per_warp = (regs_per_thread.max(1) * 32).div_ceil(256) * 256;
    let by_regs = (g.regs_per_sm / regs_per_warp) / warps;
    let by_smem = if shared_bytes == 0 { u32::MAX } else { g.smem_per_sm / (shared_bytes + 1024) };
    g.max_blocks_per_sm.min(by_threads).min(by_regs).min(by_smem)
}

/// `(waves, wave factor)`: waves of `sms * per_sm` resident blocks needed for `blocks`, and how
/// much longer than a perfectly divided grid the work takes (>= 1). Blocks resident on one SM
/// share its tensor cores, so the busiest SM's `ceil(blocks / sms)` blocks set the time
/// whatever the occupancy: the factor is `ceil(B / S) * S / B`. (Occupancy buys latency
/// hiding, which this model does not see; it sets the wave count reported.)
pub fn waves(blocks: u64, sms: u32, per_sm: u32) -> (u64, f64) {
    let slots = (sms as u64 * per_sm.max(1) as u64).max(1);
    let w = blocks.div_ceil(slots).max(1);
    let per_sm_blocks = blocks.max(1).div_ceil(sms.max(1) as u64);
    (w, (per_sm_blocks * sms as u64) as f64 / blocks.max(1) as f64)
}

/// DRAM bytes of a launch under the L2 estimate (see the module docs): the compulsory bytes,
/// plus the re-reads in the proportion of the reused set that does not fit in L2.
pub fn dram_bytes(min_bytes: u64, issued_bytes: u64, reuse_bytes: u64, l2_bytes: u64) -> u64 {
    let rereads = issued_bytes.saturating_sub(min_bytes);
    if reuse_bytes <= l2_bytes {
        return min_bytes;
    }
    let spill = 1.0 - l2_bytes as f64 / reuse_bytes as f64;
    min_bytes + (rereads as f64 * spill) as u64
}

/// One launch's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchPrediction {
    pub kernel: String,
    pub step: &'static str,
    pub layer: Option<usize>,
    pub blocks: u64,
    pub threads: u32,
    pub registers: u32,
    pub blocks_per_sm: u32,
    pub waves: u64,
    pub wave_factor: f64,
    pub flops: u64,
    pub tensor_flops: u64,
    pub dram_bytes: u64,
    pub l2_bytes: u64,
    pub compute_us: f64,
    pub dram_us: f64,
    pub l2_us: f64,
    /// GPU time (the largest term).
    pub kernel_us: f64,
    /// Time it adds to the pass, launch overhead included.
    pub time_us: f64,
    pub bound: Bound,
    /// An `_sm90` GEMM's tiling (recomputed from its shape: [`sm90::choose_gemm`]); `None`
    /// for every other kernel.
    pub sm90_tile: Option<Sm90Tile>,
}

/// Launches of one kernel name and step summed over layers (what the plot and tables show).
#[derive(Debug, Clone, Serialize)]
pub struct KernelSummary {
    pub name: String,
    pub step: &'static str,
    pub launches: usize,
    pub flops: u64,
    pub dram_bytes: u64,
    pub l2_bytes: u64,
    pub time_us: f64,
    /// The bound of most of its time.
    pub bound: Bound,
    /// Useful FLOPs per DRAM byte.
    pub intensity: f64,
    /// Useful TFLOP/s at the predicted time.
    pub tflops: f64,
    /// The roof at its intensity: min(dense peak, intensity x DRAM bandwidth), TFLOP/s.
    pub roof_tflops: f64,
    /// Time at its roof (useful FLOPs at the dense peak or its DRAM bytes at full bandwidth,
    /// whichever is longer) over the predicted time: 1.0 is on the roofline.
    pub fraction_of_roof: f64,
}

/// Prediction of one forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub gpu: GpuSpec,
    /// The family of the plan's GEMM and attention kernels.
    pub kernel_family: KernelFamily,
    pub precision: &'static str,
    pub graphs: bool,
    pub tokens: usize,
    pub sequences: usize,
    pub total_ms: f64,
    /// All useful FLOPs at the dense peak, or the weights and the output once at the DRAM
    /// bandwidth, whichever is larger.
    pub floor_ms: f64,
    pub flop_floor_ms: f64,
    pub byte_floor_ms: f64,
    pub flops: u64,
    pub floor_bytes: u64,
    pub kernels: Vec<KernelSummary>,
    pub launches: Vec<LaunchPrediction>,
}

/// The dense tensor peak of `precision`'s GEMMs in FLOP/s (attention is fp16 in both).
fn peak(g: &GpuSpec, int8: bool) -> f64 {
    if int8 {
        g.peak_tops_int8 * 1e12
    } else {
        g.peak_tflops_f16 * 1e12
    }
}

fn registers(kernel: &str, g: &GpuSpec) -> u32 {
    if sm90::is_sm90(kernel) {
        return sm90::SM90_REGISTERS;
    }
    let arch = if g.mma_sync_fraction < 1.0 { "sm_90" } else { "sm_80" };
    ptx::kernel_resources(kernel, arch).map_or(64, |r| r.registers)
}

/// Whether `kernel` multiplies int8 operands (its GEMM reaches the int8 peak).
fn int8_gemm(kernel: &str) -> bool {
    kernel.starts_with("gemm_int8")
        || kernel.starts_with("qkv_attention_int8")
        || kernel.starts_with("attention_block_int8")
}

/// The time terms of one launch's body (or of one part of a persistent launch).
struct Body {
    per_sm: u32,
    waves: u64,
    factor: f64,
    dram: u64,
    l2: u64,
    compute_us: f64,
    dram_us: f64,
    l2_us: f64,
    /// Serial tails and the wgmma path's fixed cost, after the largest term.
    after_us: f64,
}

impl Body {
    fn us(&self) -> f64 {
        self.compute_us.max(self.dram_us).max(self.l2_us) + self.after_us
    }
}

/// Predicts one launch. A launch with parts (a persistent kernel running phases that wait on
/// each other, `PlannedLaunch::parts`) takes the sum of its parts' bodies, each priced as a
/// launch of its own (its grid, bytes, tails and, a GEMM, the fixed cost), with one launch's
/// minimum time and graph node.
pub fn predict_launch(g: &GpuSpec, l: &PlannedLaunch, graphs: bool) -> LaunchPrediction {
    let b = if l.parts.is_empty() {
        body(g, l)
    } else {
        let parts: Vec<Body> = l.parts.iter().map(|p| body(g, p)).collect();
        let sum = |f: fn(&Body) -> f64| parts.iter().map(f).sum::<f64>();
        Body {
            per_sm: parts.iter().map(|p| p.per_sm).min().unwrap_or(1),
            waves: parts.iter().map(|p| p.waves).sum(),
            factor: parts.iter().map(|p| p.factor).fold(1.0, f64::max),
            dram: parts.iter().map(|p| p.dram).sum(),
            l2: parts.iter().map(|p| p.l2).sum(),
            compute_us: sum(|p| p.compute_us),
            dram_us: sum(|p| p.dram_us),
            l2_us: sum(|p| p.l2_us),
            // (each part's largest term in full, not the largest of the sums)
            after_us: sum(|p| p.us()) - sum(|p| p.compute_us).max(sum(|p| p.dram_us)).max(sum(|p| p.l2_us)),
        }
    };
    let Body { per_sm, waves: w, factor, dram, l2, compute_us, dram_us, l2_us, .. } = b;
    let kernel_us = b.us().max(MIN_KERNEL_US);
    // the GPU's gap between dependent kernels (graph_node_us) is paid either way; on a stream
    // the host must also enqueue each launch, which bounds short kernels
    let time_us = if graphs { kernel_us + g.graph_node_us } else { (kernel_us + g.graph_node_us).max(g.launch_us) };
    let launch_bound = !graphs && g.launch_us > kernel_us + g.graph_node_us;
    let bound = if launch_bound || kernel_us == MIN_KERNEL_US {
        Bound::Latency
    } else if compute_us >= dram_us.max(l2_us) {
        Bound::Compute
    } else {
        Bound::Memory
    };
    LaunchPrediction {
        kernel: l.kernel.clone(),
        step: l.step,
        layer: l.layer,
        blocks: l.blocks(),
        threads: l.threads_per_block(),
        registers: registers(&l.kernel, g),
        blocks_per_sm: per_sm,
        waves: w,
        wave_factor: factor,
        flops: l.flops,
        tensor_flops: l.tensor_flops,
        dram_bytes: dram,
        l2_bytes: l2,
        compute_us,
        dram_us,
        l2_us,
        kernel_us,
        time_us,
        bound,
        sm90_tile: sm90_tile_of(l),
    }
}

/// The body of one launch (or part): the roofline terms, tails and fixed cost.
fn body(g: &GpuSpec, l: &PlannedLaunch) -> Body {
    let int8 = int8_gemm(&l.kernel);
    let regs = registers(&l.kernel, g);
    let threads = l.threads_per_block();
    let per_sm = blocks_per_sm(g, threads, regs, l.shared_mem_bytes);
    let blocks = l.blocks();
    let sm90_tile = sm90_tile_of(l);
    // an _sm90 GEMM's persistent CTAs share out its work units: the busiest CTA's units set the
    // time, and only min(units, SMs) SMs pull bandwidth
    let (work, active) = match (sm90_tile, l.gemm) {
        (Some(t), Some((m, n, _))) => (t.units(m, n) as u64, t.ctas(m, n) as u64),
        _ => (blocks, blocks),
    };
    let (w, factor) = match (sm90_tile, l.gemm) {
        // clusters: the busiest CTA's units over the machine's fair share
        (Some(t), Some((m, n, _))) if t.cluster > 1 => {
            let busiest = t.busiest(m, n) as u64;
            (
                m.div_ceil(t.rows).div_ceil(t.ctas(m, n) / t.cluster) as u64,
                (busiest * g.sms as u64) as f64 / work as f64,
            )
        }
        _ => waves(work, g.sms, per_sm),
    };
    // a grid smaller than the GPU pulls at most its SMs' own bandwidth
    let active_gbps = active.min(g.sms as u64) as f64 * g.sm_gbps;
    let resident = blocks.min(g.sms as u64 * per_sm as u64);
    let reuse = l.reuse_bytes + resident * l.reuse_bytes_per_block;
    let dram = dram_bytes(l.min_bytes(), l.load_bytes + l.store_bytes, reuse, g.l2_bytes);
    let l2 = l.load_bytes + l.store_bytes;
    // the tensor path: wgmma for the _sm90 kernels (a GPU without it never gets them from
    // sm90::resolve; the note's constants stand in if a caller builds such a plan)
    let fraction = if !sm90::is_sm90(&l.kernel) {
        g.mma_sync_fraction
    } else if l.gemm.is_some() {
        g.wgmma_fraction.unwrap_or(super::gpu::WGMMA_FRACTION)
    } else {
        g.wgmma_attention_fraction.unwrap_or(super::gpu::WGMMA_ATTENTION_FRACTION)
    };
    // a fused QKV attention runs its attention after its GEMM, at the attention's fraction of
    // the fp16 peak
    let attention_fraction = g.wgmma_attention_fraction.unwrap_or(super::gpu::WGMMA_ATTENTION_FRACTION);
    let gemm_flops = l.tensor_flops - l.attention_tensor_flops;
    let compute_us = (gemm_flops as f64 / (peak(g, int8) * fraction)
        + l.attention_tensor_flops as f64 / (peak(g, false) * attention_fraction))
        * factor
        * 1e6;
    let dram_us = dram as f64 / ((g.dram_gbps * g.dram_efficiency).min(active_gbps) * 1e9) * 1e6;
    let l2_us = l2 as f64 / (g.l2_gbps.min(active_gbps) * 1e9) * 1e6;
    // a serial tail (one block alone after the grid, e.g. a split-K reduction) at one SM's bandwidth
    let tail_us = l.tail_bytes as f64 / (g.sm_gbps * 1e9) * 1e6
        + l.tail_tensor_flops as f64 / (peak(g, int8) * fraction / g.sms as f64) * 1e6;
    // an _sm90 GEMM's fixed cost less the graph node every launch pays below
    let fixed_us = if sm90_tile.is_some() || (sm90::is_sm90(&l.kernel) && l.gemm.is_some()) {
        (g.wgmma_gemm_fixed_us.unwrap_or(super::gpu::WGMMA_GEMM_FIXED_US) - g.graph_node_us).max(0.0)
    } else {
        0.0
    };
    Body { per_sm, waves: w, factor, dram, l2, compute_us, dram_us, l2_us, after_us: tail_us + fixed_us }
}

/// Bytes no implementation can avoid: every GEMM weight (with its per-column parameters) once,
/// the embedding rows of the tokens, and the final hidden states written once.
pub fn floor_bytes(plan: &LaunchPlan, int8: bool) -> u64 {
    let e = if int8 { 1 } else { 2 };
    let weights: usize = plan
        .launches
        .iter()
        .flat_map(|l| l.gemm_launches())
        .filter_map(|l| {
            l.gemm.map(|(_, n, k)| if int8_gemm(&l.kernel) { n * k * e + 6 * n } else { n * k * 2 + 2 * n })
        })
        .sum();
    let emb = plan.launches.first().map_or(0, |l| l.min_load_bytes + l.store_bytes);
    (weights as u64) + emb
}

/// Predicts the whole pass of `plan` on `g`.
pub fn predict(g: &GpuSpec, plan: &LaunchPlan, precision: Precision, graphs: bool) -> Prediction {
    let int8 = precision == Precision::Int8;
    let launches: Vec<LaunchPrediction> = plan.launches.iter().map(|l| predict_launch(g, l, graphs)).collect();
    let graph_fixed_us = if graphs { GRAPH_REPLAY_US } else { 0.0 };
    let total_ms = (launches.iter().map(|l| l.time_us).sum::<f64>() + graph_fixed_us) / 1e3;
    let flops = plan.flops();
    let flop_floor_ms = flops as f64 / peak(g, int8) * 1e3;
    let fb = floor_bytes(plan, int8);
    let byte_floor_ms = fb as f64 / (g.dram_gbps * 1e9) * 1e3;
    Prediction {
        gpu: g.clone(),
        kernel_family: plan.kernel_family,
        precision: if int8 { "int8" } else { "f16" },
        graphs,
        tokens: plan.tokens,
        sequences: plan.sequences,
        total_ms,
        floor_ms: flop_floor_ms.max(byte_floor_ms),
        flop_floor_ms,
        byte_floor_ms,
        flops,
        floor_bytes: fb,
        kernels: summarize(g, &launches, int8),
        launches,
    }
}

/// Fixed cost of one CUDA graph replay (host launch of the graph), microseconds.
pub const GRAPH_REPLAY_US: f64 = 10.0;

/// Sums launches by (kernel, step), in first-launch order.
pub fn summarize(g: &GpuSpec, launches: &[LaunchPrediction], int8: bool) -> Vec<KernelSummary> {
    let mut out: Vec<(KernelSummary, [f64; 3])> = Vec::new();
    for l in launches {
        let i = match out.iter().position(|(k, _)| k.name == l.kernel && k.step == l.step) {
            Some(i) => i,
            None => {
                out.push((
                    KernelSummary {
                        name: l.kernel.clone(),
                        step: l.step,
                        launches: 0,
                        flops: 0,
                        dram_bytes: 0,
                        l2_bytes: 0,
                        time_us: 0.0,
                        bound: l.bound,
                        intensity: 0.0,
                        tflops: 0.0,
                        roof_tflops: 0.0,
                        fraction_of_roof: 0.0,
                    },
                    [0.0; 3],
                ));
                out.len() - 1
            }
        };
        let (k, by_bound) = &mut out[i];
        k.launches += 1;
        k.flops += l.flops;
        k.dram_bytes += l.dram_bytes;
        k.l2_bytes += l.l2_bytes;
        k.time_us += l.time_us;
        by_bound[l.bound as usize] += l.time_us;
    }
    out.into_iter()
        .map(|(mut k, by_bound)| {
            let top = (0..3).max_by(|&a, &b| by_bound[a].total_cmp(&by_bound[b])).unwrap_or(0);
            k.bound = [Bound::Compute, Bound::Memory, Bound::Latency][top];
            let p = if int8_gemm(&k.name) && int8 { g.peak_tops_int8 } else { g.peak_tflops_f16 };
            k.intensity = k.flops as f64 / k.dram_bytes.max(1) as f64;
            k.tflops = k.flops as f64 / (k.time_us * 1e-6) / 1e12;
            k.roof_tflops = p.min(k.intensity * g.dram_gbps * 1e9 / 1e12);
            let roof_us = (k.flops as f64 / (p * 1e12)).max(k.dram_bytes as f64 / (g.dram_gbps * 1e9)) * 1e6;
            k.fraction_of_roof = roof_us / k.time_us;
            k
        })
        .collect()
}

/// One step of the pass (e.g. `qkv`, summed over layers) in both kernel families.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyRow {
    pub step: &'static str,
    pub launches: usize,
    /// The `mma.sync` kernel(s) (`+`-joined when layers differ).
    pub sm80_kernel: String,
    pub sm80_us: f64,
    /// The `_sm90` kernel(s), or the shared kernel for steps both families run alike.
    pub sm90_kernel: String,
    pub sm90_us: f64,
    /// The `_sm90` GEMM's tiling (the first layer's), e.g. `128x192`.
    pub sm90_tile: Option<String>,
}

/// The predicted time per step of the same pass in both families: `sm80` and `sm90` are
/// predictions of plans of the two families (same config, lengths, GPU and graphs), whose
/// launches are paired by step and layer. A step the `_sm90` pass fuses into another launch
/// (the int8 `quantize_ffn`, which the Hopper FFN1 does; `attention`, which the fused QKV
/// attention does) has no `_sm90` launch: its row shows `-` and 0 us there, and the launch that
/// took it over carries its time (the fused `qkv_attention` launch in the `qkv` row, the FFN
/// block in the `ffn1` row). Steps in first-launch order.
pub fn compare_families(sm80: &Prediction, sm90: &Prediction) -> Vec<FamilyRow> {
    let mut rows: Vec<FamilyRow> = Vec::new();
    let join = |names: &mut String, k: &str| {
        if !names.split('+').any(|n| n == k) {
            if !names.is_empty() {
                names.push('+');
            }
            names.push_str(k);
        }
    };
    for a in &sm80.launches {
        // the fused QKV attention stands in the QKV GEMM's row, the FFN block in FFN1's
        fn twin(step: &str) -> &str {
            match step {
                "qkv_attention" | "attention_block" => "qkv",
                "ffn_block" => "ffn1",
                _ => step,
            }
        }
        let b = sm90.launches.iter().find(|b| twin(b.step) == a.step && b.layer == a.layer);
        let i = match rows.iter().position(|r| r.step == a.step) {
            Some(i) => i,
            None => {
                rows.push(FamilyRow {
                    step: a.step,
                    launches: 0,
                    sm80_kernel: String::new(),
                    sm80_us: 0.0,
                    sm90_kernel: String::new(),
                    sm90_us: 0.0,
                    sm90_tile: b.and_then(|b| match b.sm90_tile {
                        Some(t) => Some(t.describe()),
                        None if b.step == "qkv_attention" || b.step == "attention_block" => {
                            Some("128x192 per seq".into())
                        }
                        None if b.step == "ffn_block" => {
                            Some(if b.kernel.ends_with("_n64") { "128x64 block" } else { "128x128 block" }.into())
                        }
                        None => None,
                    }),
                });
                rows.len() - 1
            }
        };
        let r = &mut rows[i];
        r.launches += 1;
        r.sm80_us += a.time_us;
        r.sm90_us += b.map_or(0.0, |b| b.time_us);
        join(&mut r.sm80_kernel, &a.kernel);
        join(&mut r.sm90_kernel, b.map_or("-", |b| b.kernel.as_str()));
    }
    rows
}
