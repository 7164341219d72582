//! The Hopper path of the model: which kernel family a pass runs ([`KernelFamily`],
//! [`KernelChoice`]) and the `_sm90` GEMM's tiling and K split ([`choose_gemm`]).
//!
//! The `_sm90` kernels (TMA + warp-specialised `wgmma`, research note `hopper.md` 3.1-3.3) are
//! **not measured anywhere**: they are verified only on the emulator. What this module models
//! is the launch the forward pass makes, no other ([`crate::kernels::gemm_sm90::plan`]): a
//! 128 x 128 or 128 x 192 tile (two consumer warpgroups of 64 rows, `wgmma`'s fixed M), a
//! persistent grid of `min(units, 132)` CTAs walking the work units in a static order (the
//! busiest CTA's `ceil(units / 132)` units set the compute time, the wave factor of the
//! `mma.sync` path over work units), and split-K on small grids (a tile's K chunks on separate
//! CTAs while the tiles would keep at most a quarter of the SMs busy and the split fits one
//! wave; every split stores f32 partial sums, the last per tile reads them back: a serial tail
//! of `splits * tile * 4` bytes at one SM's bandwidth, as the `mma.sync` path's `_sk` kernels
//! are modelled). A fused layernorm keeps the `mma.sync` kernels' scheme (the last tile of a
//! row strip normalises it): its last strip is a serial tail too, except where the host launches
//! the cluster entries (`_cln`, `_cqa`: a thread-block cluster per strip whose CTAs exchange
//! their rows' statistics through distributed shared memory; no serial tail, and the
//! layernorm's input never leaves the chip). Tilings the research note
//! proposes and the kernels do not have (64-row and 256-column tiles, swap-AB for a handful of
//! tokens) are not modelled: the prediction is of the kernels that run.
use serde::Serialize;

use super::gpu::GpuSpec;
use crate::error::{Error, Result};
use crate::kernels::gemm_sm90::Sm90Entry;

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

/// CTAs of a cluster-launched `_sm90` grid at most (`_cln` / `_cqa` entries): an H100's GPCs
/// of 16 to 18 SMs hold 64 clusters of 2, 40 of 3, 32 of 4, 16 of 8 with one CTA per SM (the
/// grid the host launches: `cluster * min(strips, gemm_sm90::max_clusters(cluster))`). **To
/// confirm on a GPU** with `cudaOccupancyMaxActiveClusters`; a larger grid would run its extra
/// clusters after the rest.
pub const CLUSTER_CTAS: usize = 128;

/// One `_sm90` GEMM launch's tiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sm90Tile {
    /// Token rows per tile (`wgmma` M).
    pub rows: usize,
    /// Output columns (weight rows) per tile.
    pub cols: usize,
    /// CTAs per tile along K (the `_sk` kernels when more than 1).
    pub splits: usize,
    /// CTAs per thread-block cluster (1: no cluster): the `_cln` / `_cqa` entries, whose
    /// clusters each own a 128-row strip and share its rows' statistics through distributed
    /// shared memory instead of a serial strip tail.
    pub cluster: usize,
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
    /// CTAs launched: `min(units, SM90_CTAS)`, or whole clusters of at most [`CLUSTER_CTAS`].
    pub fn ctas(&self, m: usize, n: usize) -> usize {
        if self.cluster > 1 {
            self.cluster * m.div_ceil(self.rows).min(crate::kernels::gemm_sm90::max_clusters(self.cluster)).max(1)
        } else {
            self.units(m, n).min(SM90_CTAS)
        }
    }
    /// Work units (tile x split) of the busiest CTA: `ceil(units / 132)`, or with clusters
    /// its strips' share (`ceil(strips / clusters)`) times its tiles per strip.
    pub fn busiest(&self, m: usize, n: usize) -> usize {
        if self.cluster > 1 {
            let clusters = self.ctas(m, n) / self.cluster;
            m.div_ceil(self.rows).div_ceil(clusters) * n.div_ceil(self.cols).div_ceil(self.cluster)
        } else {
            self.units(m, n).div_ceil(SM90_CTAS)
        }
    }
    /// Consumer warpgroups of a CTA: one per 64 rows of `wgmma` M.
    pub fn consumers(&self) -> usize {
        (self.rows / 64).max(1)
    }
    /// Threads: the producer warpgroup and the consumers.
    pub fn threads(&self) -> u32 {
        128 * (1 + self.consumers() as u32)
    }
    /// Dynamic shared memory, as the kernel allocates it (`gemm_sm90::smem`).
    pub fn shared_bytes(&self) -> u32 {
        crate::kernels::gemm_sm90::smem(self.cols)
    }
    /// Short description for tables: `128x192`, `128x128 split 3`, `128x192 cluster 4`.
    pub fn describe(&self) -> String {
        let split = if self.splits > 1 { format!(" split {}", self.splits) } else { String::new() };
        let cluster = if self.cluster > 1 { format!(" cluster {}", self.cluster) } else { String::new() };
        format!("{}x{}{split}{cluster}", self.rows, self.cols)
    }
}

/// The tiling of an `_sm90` GEMM `[m, k] x [n, k]^T` of entry kind `kind` as the forward pass
/// launches it: [`crate::kernels::gemm_sm90::plan`]'s tile width (128 or 192 columns) and K
/// split, or, for a fused layernorm or quantisation the host gives a cluster, the cluster
/// entry's width and cluster size. A pure function of the shape and kind: `perf::plan`,
/// `perf::roofline` and the forward pass agree.
pub fn choose_gemm(kind: Sm90Entry, m: usize, n: usize, k: usize) -> Sm90Tile {
    use crate::kernels::gemm_sm90::{plan, BM};
    let int8 = matches!(kind, Sm90Entry::Int8 | Sm90Entry::Int8Ln | Sm90Entry::Int8Qa);
    if let Some((cols, cluster)) = cluster_of(kind, m, n, k) {
        return Sm90Tile { rows: BM, cols, splits: 1, cluster };
    }
    let p = plan(m, n, k, int8);
    Sm90Tile { rows: BM, cols: p.cols, splits: p.splits, cluster: 1 }
}

/// The cluster entry that can replace the plan of a fused layernorm or quantisation launch
/// that splits K (`_sk_ln`, `_sk_qa`), as a tiling
/// ([`crate::kernels::gemm_sm90::cluster_alternative`]: the same bits, no serial strip tail,
/// the whole of K on each CTA). Which of the two runs is the model's choice
/// (`perf::plan::sm90_layer_tile`).
pub fn cluster_alternative(kind: Sm90Entry, m: usize, n: usize, k: usize) -> Option<Sm90Tile> {
    use crate::kernels::gemm_sm90 as g;
    g::cluster_alternative(kind, m, n, k).map(|(cols, cluster)| Sm90Tile { rows: g::BM, cols, splits: 1, cluster })
}

/// The (tile width, cluster size) of the cluster entry the host launches for `kind` at this
/// shape, if any.
fn cluster_of(kind: Sm90Entry, m: usize, n: usize, k: usize) -> Option<(usize, usize)> {
    use crate::kernels::gemm_sm90 as g;
    match kind {
        Sm90Entry::F16Ln => g::ln_cluster(m, n, k, false).map(|cs| (g::cluster_cols(cs), cs)),
        Sm90Entry::Int8Ln => g::ln_cluster(m, n, k, true).map(|cs| (g::cluster_cols(cs), cs)),
        Sm90Entry::Int8Qa => g::qa_cluster(m, n, k).map(|cs| (g::COLS[1], cs)),
        _ => None,
    }
}

/// The PTX entry an `_sm90` GEMM step of kind `kind` launches with tiling `t` (as the forward
/// pass does): `gemm_f16_sm90` / `gemm_int8_sm90`, `_n192` for 192-column tiles, `_sk` split
/// over K, `_ln` when the layernorm is fused, `_qa` when the int8 codes of the output are, and
/// the cluster entries (`_cln{N}`, `_cqa`). The same names as the emulator's counters and
/// `fusebert kernels time`, so predictions and measurements meet by name.
pub fn gemm_kernel(kind: Sm90Entry, t: Sm90Tile) -> &'static str {
    use crate::kernels::gemm_sm90 as g;
    match kind {
        Sm90Entry::Int8Qa if t.cluster > 1 => g::KERNEL_INT8_CQA,
        Sm90Entry::F16Ln | Sm90Entry::Int8Ln if t.cluster > 1 => {
            g::cluster_kernel_name(kind == Sm90Entry::Int8Ln, t.cluster).unwrap_or(g::KERNEL_LN)
        }
        _ => g::kernel_name(kind, t.cols, t.splits > 1),
    }
}

/// The PTX entry of `_sm90` attention at head dim `d` for a batch whose longest sequence has
/// `max_len` tokens (the tiling `Sm90Tiling::Auto` picks, as the forward pass does); `int8`: the
/// entry that also writes the context's codes.
pub fn attention_kernel(d: usize, max_len: usize, int8: bool) -> String {
    use crate::kernels::{attention_sm90, Sm90Tiling};
    let tiling = Sm90Tiling::Auto.resolve(max_len.max(1));
    let k = if int8 { attention_sm90::kernel_int8(d, tiling) } else { attention_sm90::kernel(d, tiling) };
    k.map_or_else(|_| format!("attention{}_sm90_d{d}", if int8 { "_int8" } else { "" }), str::to_string)
}

/// Whether `kernel` is one of the `_sm90` kernels.
pub fn is_sm90(kernel: &str) -> bool {
    kernel.contains("_sm90")
}
