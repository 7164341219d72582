//! The Hopper path of the model: which kernel family a pass runs ([`KernelFamily`],
//! [`KernelChoice`]) and the `_sm90` GEMM's tile, orientation and K split ([`choose_gemm`]).
//!
//! The `_sm90` kernels (TMA + warp-specialised `wgmma`, research note `hopper.md` 3.1-3.3) are
//! **not measured anywhere**: what this module models is their design in the note, verified
//! (where written) only on the emulator. Their tile choice is the model's, made the way the
//! `mma.sync` planner makes its own (`GemmPlan::choose`): the fastest candidate under a small
//! cost model on one reference machine (here the H100 SXM, whose compute the H200 shares), a
//! pure function of the shape, so the launch plan and the prediction agree.
//!
//! Candidates (note 3.1, 3.2):
//! - **Tiles**: 128 token rows (two consumer warpgroups of 64, `wgmma`'s fixed M) or 64 (one),
//!   by 256, 192, 128, 96 or 64 output columns; a persistent grid of `min(units, 132)` CTAs
//!   walks the tiles in a static order, so the busiest CTA's `ceil(units / 132)` tiles set the
//!   compute time (the same wave factor as the `mma.sync` path's, over work units).
//! - **Swap-AB** for `m < 64` tokens: `C^T = W A^T`, the weight's rows take M (tiles of 128 or
//!   64 weight rows) and the tokens take N (`m` rounded up to `wgmma`'s N step), so the
//!   weights are read once by many CTAs instead of one padded 64-row tile.
//! - **Split-K** (stream-K's effect on a small grid): `s` CTAs per tile over K (at least 4
//!   k-blocks of 128 bytes each, so the 4-stage pipeline fills), only while the units fit one
//!   wave; every split stores f32 partial sums, the last one per tile reads them back and runs
//!   the epilogue: a serial tail of `s * tile * 4` bytes at one SM's bandwidth, as the
//!   `mma.sync` path's `_sk` kernels are modelled.
//! - A fused layernorm (attention-out, FFN2) keeps the `mma.sync` kernels' scheme (note 3.2 v1:
//!   the last tile of a row strip normalises it): its last strip is a serial tail too.
//!
//! Ties go to the first candidate in the order above (128 rows, wider tiles, fewer splits):
//! fewer operand re-reads for the same time.
use serde::Serialize;

use super::gpu::GpuSpec;
use crate::error::{Error, Result};

/// Which kernels run the GEMMs and the attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFamily {
    /// The `mma.sync` kernels (sm_80, 86, 89; the fallback on Hopper).
    Sm80,
    /// The Hopper kernels (`*_sm90`: TMA + `wgmma`), compute capability 9.0 only.
    Sm90,
}

impl KernelFamily {
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Sm80 => "sm80",
            KernelFamily::Sm90 => "sm90",
        }
    }
}

/// What `--kernels` asks for: the run-time request type (`FUSEBERT_KERNELS`), resolved here
/// against a GPU spec instead of a device.
pub use crate::kernels::KernelFamily as KernelChoice;

/// The family that runs on `g` for `choice`: a typed error for `Sm90` on a GPU without `wgmma`.
pub fn resolve(choice: KernelChoice, g: &GpuSpec) -> Result<KernelFamily> {
    let hopper = g.compute_capability == (9, 0);
    match choice {
        KernelChoice::Auto if hopper => Ok(KernelFamily::Sm90),
        KernelChoice::Auto | KernelChoice::Sm80 => Ok(KernelFamily::Sm80),
        KernelChoice::Sm90 if hopper => Ok(KernelFamily::Sm90),
        KernelChoice::Sm90 => Err(Error::Input(format!(
            "the sm90 kernels need compute capability 9.0 (wgmma); {} is {}.{}",
            g.name, g.compute_capability.0, g.compute_capability.1
        ))),
    }
}

/// CTAs of the persistent `_sm90` GEMM grid (the H100/H200's SMs): the work is split into
/// units for this many CTAs on every GPU, as the kernels' own tile choice must not depend on
/// the device.
pub const SM90_CTAS: usize = 132;

/// Registers per thread of an `_sm90` kernel: `__launch_bounds__(384, 1)` gives one CTA the
/// whole register file (65,536 / 384, rounded down to the allocation step of 8); the producer's
/// `setmaxnreg.dec` hands its share to the consumers. One CTA per SM either way.
pub const SM90_REGISTERS: u32 = 168;

/// Bytes of K per pipeline stage (one 128-byte swizzle row: 64 f16 or 128 s8 elements).
const K_BLOCK_BYTES: usize = 128;
/// Fewest k-blocks per split: the 4-stage pipeline must fill.
const MIN_SPLIT_KBLOCKS: usize = 4;
/// Shared memory one block may have on Hopper.
const SMEM_PER_BLOCK: usize = 232_448;

/// One `_sm90` GEMM launch's tiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sm90Tile {
    /// Token rows per tile (`wgmma` M without swap-AB, N with it).
    pub rows: usize,
    /// Output columns (weight rows) per tile.
    pub cols: usize,
    /// `C^T = W A^T`: the weight rows take `wgmma`'s M.
    pub swap_ab: bool,
    /// CTAs per tile along K.
    pub splits: usize,
}

impl Sm90Tile {
    /// Output tiles of an `m x n` result.
    pub fn tiles(&self, m: usize, n: usize) -> usize {
        m.div_ceil(self.rows) * n.div_ceil(self.cols)
    }
    /// Work units the persistent grid shares out: tiles times splits.
    pub fn units(&self, m: usize, n: usize) -> usize {
        self.tiles(m, n) * self.splits
    }
    /// CTAs launched: `min(units, SM90_CTAS)`.
    pub fn ctas(&self, m: usize, n: usize) -> usize {
        self.units(m, n).min(SM90_CTAS)
    }
    /// Consumer warpgroups of a CTA: one per 64 rows of `wgmma` M.
    pub fn consumers(&self) -> usize {
        (if self.swap_ab { self.cols } else { self.rows } / 64).max(1)
    }
    /// Threads: the producer warpgroup and the consumers.
    pub fn threads(&self) -> u32 {
        128 * (1 + self.consumers() as u32)
    }
    /// Dynamic shared memory: up to 4 stages of both operands' k-blocks plus the f16 epilogue
    /// tile (note 3.2: 128x192 -> 4 stages of 40 KB + 48 KB).
    pub fn shared_bytes(&self) -> u32 {
        let stage = (self.rows + self.cols) * K_BLOCK_BYTES;
        let epilogue = self.rows * self.cols * 2;
        let stages = ((SMEM_PER_BLOCK - epilogue) / stage).clamp(2, 4);
        (stages * stage + epilogue) as u32
    }
    /// Short description for tables: `128x192`, `64x96 split 3`, `swap-AB 128x24`.
    pub fn describe(&self) -> String {
        let split = if self.splits > 1 { format!(" split {}", self.splits) } else { String::new() };
        if self.swap_ab {
            format!("swap-AB {}x{}{split}", self.cols, self.rows)
        } else {
            format!("{}x{}{split}", self.rows, self.cols)
        }
    }
}

/// The candidates of an `m x n x k` GEMM, in tie-break order.
fn candidates(m: usize, n: usize, k: usize, int8: bool) -> Vec<Sm90Tile> {
    let e = if int8 { 1 } else { 2 };
    let kblocks = (k * e).div_ceil(K_BLOCK_BYTES);
    let max_splits = (kblocks / MIN_SPLIT_KBLOCKS).max(1);
    let shapes: Vec<(usize, usize, bool)> = if m < 64 {
        // wgmma N: multiples of 8 (s8: multiples of 16 above 32)
        let step = if int8 && m > 32 { 16 } else { 8 };
        let tokens = m.max(1).next_multiple_of(step);
        [128, 64].iter().map(|&w| (tokens, w, true)).collect()
    } else {
        let mut v = Vec::new();
        for rows in [128, 64] {
            for cols in [256, 192, 128, 96, 64] {
                v.push((rows, cols, false));
            }
        }
        v
    };
    let mut out = Vec::new();
    for (rows, cols, swap_ab) in shapes {
        for splits in 1..=max_splits {
            let t = Sm90Tile { rows, cols, swap_ab, splits };
            if splits > 1 && t.units(m, n) > SM90_CTAS {
                break;
            }
            out.push(t);
        }
    }
    out
}

/// Reference machine of the choice: the H100 SXM's published figures (`perf::gpu`), with
/// the `wgmma` fraction of the note.
mod reference {
    pub const SMS: f64 = 132.0;
    pub const PEAK_F16: f64 = 989.4e12 * super::super::gpu::WGMMA_FRACTION;
    pub const DRAM: f64 = 3350e9 * 0.85;
    pub const L2: f64 = 12000e9;
    pub const SM: f64 = 64.0 * 1.98e9;
}

/// Predicted seconds of `t` on the reference machine: the roofline of `perf::roofline`
/// restated for one GEMM (compute over the busiest CTA's units, DRAM with every operand once,
/// L2 with the tile re-reads, small grids at their SMs' bandwidth) plus the serial tails (split
/// partials, the fused layernorm's last strip).
fn cost(t: Sm90Tile, m: usize, n: usize, k: usize, int8: bool, layernorm: bool) -> f64 {
    let e = if int8 { 1.0 } else { 2.0 };
    let (mf, nf, kf) = (m as f64, n as f64, k as f64);
    let (gt, gw) = (m.div_ceil(t.rows) as f64, n.div_ceil(t.cols) as f64);
    let units = t.units(m, n) as f64;
    let busiest = (units / reference::SMS).ceil();
    let unit_flops = 2.0 * (t.rows * t.cols) as f64 * kf / t.splits as f64;
    // one SM's share of the peak per unit
    let compute = busiest * unit_flops * reference::SMS / (reference::PEAK_F16 * if int8 { 2.0 } else { 1.0 });
    let active = units.min(reference::SMS) * reference::SM;
    let partials = if t.splits > 1 { 2.0 * t.splits as f64 * mf * nf * 4.0 } else { 0.0 };
    let dram = (mf * kf * e + nf * kf * e + mf * nf * 2.0) / reference::DRAM.min(active);
    let l2 = (gw * mf * kf * e + gt * nf * kf * e + mf * nf * 2.0 + partials) / reference::L2.min(active);
    let split_tail = if t.splits > 1 { (t.splits * t.rows * t.cols * 4) as f64 } else { 0.0 };
    // the last strip's rows read back and written normalised (int8: with their codes)
    let strip = t.rows.min(m) as f64;
    let ln_tail = if layernorm { strip * nf * (if int8 { 5.0 } else { 4.0 }) } else { 0.0 };
    compute.max(dram).max(l2) + (split_tail + ln_tail) / reference::SM
}

/// The tiling of an `_sm90` GEMM `[m, k] x [n, k]^T` (`layernorm`: over its `n` columns fused
/// into the epilogue): the cheapest candidate on the reference machine, the first on a tie.
/// A pure function of the shape: `perf::plan` and `perf::roofline` both call it.
pub fn choose_gemm(m: usize, n: usize, k: usize, int8: bool, layernorm: bool) -> Sm90Tile {
    let mut best: Option<(Sm90Tile, f64)> = None;
    for t in candidates(m, n, k, int8) {
        let c = cost(t, m, n, k, int8, layernorm);
        // relative tolerance: equal work in a different tiling must tie, not win on rounding
        if best.is_none_or(|(_, b)| c < b * (1.0 - 1e-9)) {
            best = Some((t, c));
        }
    }
    best.map_or(Sm90Tile { rows: 128, cols: 128, swap_ab: false, splits: 1 }, |(t, _)| t)
}

/// Query rows per `_sm90` attention work item (note 3.3: 64 or 128 packed tokens per
/// (tile, head)): 128 when that still gives every SM of the reference machine one item, else
/// 64 (twice the items for small batches).
pub fn attention_rows(tokens: usize, heads: usize) -> usize {
    if tokens.div_ceil(128) * heads >= SM90_CTAS {
        128
    } else {
        64
    }
}

/// The PTX entry an `_sm90` GEMM step launches (as the forward pass does): `gemm_f16_sm90`,
/// `gemm_int8_sm90`, `_ln` when the layernorm is fused. The same names as the emulator's
/// counters and `fusebert kernels time`, so predictions and measurements meet by name.
pub fn gemm_kernel(int8: bool, layernorm: bool) -> &'static str {
    use crate::kernels::gemm_sm90::{KERNEL, KERNEL_INT8, KERNEL_INT8_LN, KERNEL_LN};
    match (int8, layernorm) {
        (false, false) => KERNEL,
        (false, true) => KERNEL_LN,
        (true, false) => KERNEL_INT8,
        (true, true) => KERNEL_INT8_LN,
    }
}

/// The PTX entry of `_sm90` attention at head dim `d` for a batch whose longest sequence has
/// `max_len` tokens (the tiling `Sm90Tiling::Auto` picks, as the forward pass does).
pub fn attention_kernel(d: usize, max_len: usize) -> String {
    use crate::kernels::{attention_sm90, Sm90Tiling};
    attention_sm90::kernel(d, Sm90Tiling::Auto.resolve(max_len.max(1)))
        .map_or_else(|_| format!("attention_sm90_d{d}"), str::to_string)
}

/// Whether `kernel` is one of the `_sm90` kernels.
pub fn is_sm90(kernel: &str) -> bool {
    kernel.contains("_sm90")
}
