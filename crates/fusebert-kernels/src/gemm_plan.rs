//! How a tensor-core GEMM is launched: its block [`Tile`] and its K split ([`GemmPlan`]), chosen
//! by a small wave/L2 model from `(m, n, k, precision)` alone ([`GemmPlan::choose`]; the launch
//! wrappers and `perf::plan` both call it), and the [`SplitWorkspace`] of split-K launches.
//!
//! **K chunks** (`kernels/gemm_core.cuh`): K's 64-byte k-tiles are cut into at most
//! [`MAX_SPLIT`] chunks of at least 4 k-tiles, a function of K alone ([`k_chunks`]). The fp16
//! kernels always sum in chunk order — each chunk from fresh accumulators, the chunk partials
//! then added in order — whether one block walks all chunks or `S` blocks split them (split-K:
//! the last block to arrive adds the partials). So a row's fp16 result does not depend on the
//! tile, the split, or the rows it is batched with; int8 accumulates exactly in int32.
use crate::device::{Device, DeviceBuffer, LaunchConfig};
use crate::gemm_sm90 as sm90;
use fusebert_core::error::Result;

/// Block tile of the tensor-core GEMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tile {
    /// The tile [`choose_tile`] predicts fastest for the shape.
    #[default]
    Auto,
    /// 64x64 block tile, 4 warps of 32x32, 24 KiB shared memory.
    Small,
    /// 128x128 block tile, 8 warps of 64x32, 68 KiB dynamic shared memory (epilogue staging;
    /// the pipeline itself is 48 KiB): half the operand traffic per MAC of `Small`. Compiled
    /// with `__launch_bounds__(256, 2)` (at most 128 registers) so two blocks fit on an SM.
    Large,
    /// 32x64 block tile, 4 warps of 32x16, 18 KiB shared memory: for a few row strips, twice
    /// the blocks of `Small` on a small grid and half the rows in a fused layernorm's serial
    /// tail (the last tile of a row strip normalises the strip alone).
    Narrow,
    /// 32x128 block tile, 4 warps of 32x32 (Small's warp tile), 30 KiB shared memory: 32-row
    /// strips that re-read the activations half as often as `Narrow` (weight-streaming GEMMs
    /// with a fused layernorm, split over K).
    NarrowWide,
}

impl Tile {
    /// The concrete tile: [`choose_tile`] for [`Tile::Auto`], else `self`.
    pub fn resolve(self, m: usize, n: usize, k: usize, int8: bool) -> Tile {
        match self {
            Tile::Auto => choose_tile(m, n, k, int8),
            t => t,
        }
    }
    /// (block rows, block cols, threads, dynamic shared bytes) — must match `gemm_core.cuh`
    /// (`Cfg::BM`, `BN`, `THREADS`, `SMEM`).
    pub fn dims(self) -> (usize, usize, u32, u32) {
        match self {
            Tile::Large => (128, 128, 256, 128 * 136 * 4),
            Tile::Narrow => (32, 64, 128, 3 * (32 + 64) * 64),
            Tile::NarrowWide => (32, 128, 128, 3 * (32 + 128) * 64),
            _ => (64, 64, 128, 3 * 2 * 64 * 64),
        }
    }
    /// Kernel name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Tile::Large => "_l",
            Tile::Narrow => "_n",
            Tile::NarrowWide => "_nw",
            _ => "",
        }
    }
    /// Whether the tile has split-K kernels (`*_sk`).
    pub fn splits_k(self) -> bool {
        matches!(self, Tile::Small | Tile::Narrow | Tile::NarrowWide)
    }
}

/// The reference machine of the tile model: an A100-class GPU in clocks (108 SMs; per SM and
/// clock 1024 fp16 / 2048 int8 tensor MACs, 64 bytes from L2; the whole L2 ~3500 bytes per
/// clock; 64 K registers, 164 KiB shared memory and 2048 threads per SM). The choice must not
/// depend on the device (the launch plan, the emulator and a real GPU must agree, and a text's
/// tile must be a function of the shape alone), so one machine stands for all; H100's ratios
/// (more SMs, higher L2 bandwidth per SM) make the same choices on the shapes that matter.
mod reference_gpu {
    pub const SMS: u64 = 108;
    pub const MACS_PER_CLK_F16: u64 = 1024;
    pub const L2_BYTES_PER_CLK: u64 = 3500;
    pub const SM_BYTES_PER_CLK: u64 = 64;
    pub const REGS_PER_SM: u32 = 65536;
    pub const SMEM_PER_SM: u32 = 164 << 10;
    pub const THREADS_PER_SM: u32 = 2048;
    /// Shortest kernel: ~2 us at 1.41 GHz (dispatch, ramp-up, drain).
    pub const MIN_CLK: u64 = 2800;
}

/// Resident blocks per SM of `tile` on the reference machine, from ptxas' register count of its
/// kernel (`sm_80`), its threads and its shared memory (1 KiB reserved per block); 0 when a
/// block does not fit.
pub fn tile_blocks_per_sm(tile: Tile, int8: bool) -> u32 {
    let (_, _, threads, smem) = tile.dims();
    let kernel = format!("{}{}", if int8 { "gemm_int8_f16" } else { "gemm_f16" }, tile.suffix());
    let regs =
        crate::ptx::kernel_registers(if int8 { "gemm_int8" } else { "gemm_f16" }, &kernel, "sm_80").unwrap_or(128);
    let warps = threads / 32;
    let regs_per_warp = (regs.max(1) * 32).div_ceil(256) * 256;
    let by_regs = reference_gpu::REGS_PER_SM / regs_per_warp / warps;
    let by_smem = reference_gpu::SMEM_PER_SM / (smem + 1024);
    let by_threads = reference_gpu::THREADS_PER_SM / threads;
    by_regs.min(by_smem).min(by_threads)
}

/// Predicted clocks of an `m x n x k` GEMM on `tile` on the reference machine (`reference_gpu` in this module):
/// the larger of
/// - compute: the busiest SM's blocks (`ceil(blocks / SMs)`, the wave quantisation) times one
///   block's MACs (whole tiles, the padding past the matrix edges included) at the SM's rate;
/// - L2 traffic: every block loads its A row strip and W column strip once
///   (`grid_n m k + grid_m n k` elements: a smaller tile re-reads more), at the whole L2's
///   bandwidth or, for a grid smaller than the GPU, its SMs' share;
///
/// and the shortest kernel time. `u64::MAX` when a block does not fit on an SM.
pub fn tile_clocks(tile: Tile, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    tile_work_clocks(tile, m, n, k, int8).max(reference_gpu::MIN_CLK)
}

/// [`tile_clocks`] without the shortest kernel time.
fn tile_work_clocks(tile: Tile, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    if tile_blocks_per_sm(tile, int8) == 0 {
        return u64::MAX;
    }
    let (bm, bn, _, _) = tile.dims();
    // saturating: the wrappers resolve the tile before they reject bad shapes (M = 0, huge K)
    let (gm, gn) = (m.div_ceil(bm) as u64, n.div_ceil(bn) as u64);
    let blocks = gm.saturating_mul(gn).max(1);
    let (m, n, k) = (m as u64, n as u64, k as u64);
    let macs_per_clk = reference_gpu::MACS_PER_CLK_F16 * if int8 { 2 } else { 1 };
    let block_macs = ((bm * bn) as u64).saturating_mul(k.next_multiple_of(32));
    let compute = blocks.div_ceil(reference_gpu::SMS).saturating_mul(block_macs) / macs_per_clk;
    let e = if int8 { 1 } else { 2 };
    let operands = gn.saturating_mul(m).saturating_add(gm.saturating_mul(n)).saturating_mul(k).saturating_mul(e);
    let bytes = operands.saturating_add(m.saturating_mul(n).saturating_mul(2));
    let bandwidth =
        reference_gpu::L2_BYTES_PER_CLK.min(blocks.min(reference_gpu::SMS) * reference_gpu::SM_BYTES_PER_CLK);
    let l2 = bytes.div_ceil(bandwidth);
    compute.max(l2)
}

/// The block tile of an `m x n x k` GEMM (`int8`: the W8A8 kernel, else fp16): the candidate
/// with the fewest predicted clocks ([`tile_clocks`]), the first of `Small`, `Large`, `Narrow`,
/// `NarrowWide` on a tie (`Small`: less padding than `Large`, fewer weight re-reads than the
/// 32-row tiles). A pure function of the shape and precision: the launch wrappers
/// ([`Tile::Auto`]) and the launch plan (`perf::plan`) both call it.
pub fn choose_tile(m: usize, n: usize, k: usize, int8: bool) -> Tile {
    UNSPLIT_TILES.into_iter().min_by_key(|&t| tile_clocks(t, m, n, k, int8)).unwrap_or(Tile::Small)
}

/// The concrete tiles, in tie-break order.
const UNSPLIT_TILES: [Tile; 4] = [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide];
/// The tiles with split-K kernels, in tie-break order.
const SPLIT_TILES: [Tile; 3] = [Tile::Small, Tile::Narrow, Tile::NarrowWide];

/// Most K chunks, so the most blocks one output tile is split over — `MAX_SPLIT` in
/// `gemm_core.cuh`.
pub const MAX_SPLIT: usize = 4;
/// Fewest 64-byte k-tiles per chunk — `MIN_CHUNK_TILES` in `gemm_core.cuh`.
const MIN_CHUNK_TILES: usize = 4;

/// 64-byte k-tiles per K chunk (`chunk_tiles` in `gemm_core.cuh`).
fn chunk_tiles(k: usize, int8: bool) -> usize {
    let kt = (k * if int8 { 1 } else { 2 }).div_ceil(64);
    kt.div_ceil(MAX_SPLIT).max(MIN_CHUNK_TILES)
}

/// K chunks of a GEMM of depth `k`: the split count of a split-K launch (1: K too short to split).
pub fn k_chunks(k: usize, int8: bool) -> usize {
    let kt = (k * if int8 { 1 } else { 2 }).div_ceil(64);
    kt.div_ceil(chunk_tiles(k, int8)).max(1)
}

/// Block tile and K split of one GEMM launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmPlan {
    /// A concrete tile (never [`Tile::Auto`]).
    pub tile: Tile,
    /// Blocks per output tile along K (`gridDim.z`): 1, or [`k_chunks`] with a tile that has
    /// split-K kernels ([`Tile::splits_k`]: the `*_sk` kernels).
    pub splits: usize,
}

impl GemmPlan {
    /// The fastest plan on the reference machine ([`plan_clocks`]): the best unsplit tile
    /// ([`choose_tile`]) or a tile with split-K kernels split over the K chunks (the first of
    /// the cheapest: unsplit, then `Small`, `Narrow`, `NarrowWide`). A pure function of the
    /// shape and precision, shared by the launch wrappers and `perf::plan`.
    pub fn choose(m: usize, n: usize, k: usize, int8: bool) -> GemmPlan {
        let unsplit = GemmPlan { tile: choose_tile(m, n, k, int8), splits: 1 };
        let cost = |p: GemmPlan| plan_clocks(p, m, n, k, int8);
        GemmPlan::split_candidates(k, int8)
            .into_iter()
            .fold(unsplit, |best, p| if cost(p) < cost(best) { p } else { best })
    }
    /// The split-K plans of a GEMM of depth `k` (none when K is one chunk).
    fn split_candidates(k: usize, int8: bool) -> Vec<GemmPlan> {
        let s = k_chunks(k, int8);
        if s > 1 {
            SPLIT_TILES.iter().map(|&tile| GemmPlan { tile, splits: s }).collect()
        } else {
            Vec::new()
        }
    }
    /// The fastest plan of a GEMM with a layernorm over its rows fused in
    /// ([`plan_clocks_with_layernorm`]: the strip's serial tail counts, so a smaller tile or a
    /// split that finishes the parallel part sooner can win where [`GemmPlan::choose`], under
    /// the shortest kernel time, sees no difference). Pure, shared like [`GemmPlan::choose`].
    pub fn choose_with_layernorm(m: usize, n: usize, k: usize, int8: bool) -> GemmPlan {
        let mut candidates: Vec<GemmPlan> = UNSPLIT_TILES.iter().map(|&tile| GemmPlan { tile, splits: 1 }).collect();
        candidates.extend(GemmPlan::split_candidates(k, int8));
        // first of the cheapest: unsplit before split, each in tile order
        candidates
            .into_iter()
            .min_by_key(|&p| plan_clocks_with_layernorm(p, m, n, k, int8))
            .unwrap_or(GemmPlan { tile: Tile::Small, splits: 1 })
    }
    /// The plan without a K split: `tile` resolved with [`Tile::resolve`].
    pub fn unsplit(tile: Tile, m: usize, n: usize, k: usize, int8: bool) -> GemmPlan {
        GemmPlan { tile: tile.resolve(m, n, k, int8), splits: 1 }
    }
    /// Kernel name suffix after `gemm_f16` / `gemm_int8_f16` / `gemm_int8_i32`.
    pub fn suffix(&self) -> &'static str {
        match (self.splits > 1, self.tile) {
            (true, Tile::Narrow) => "_n_sk",
            (true, Tile::NarrowWide) => "_nw_sk",
            (true, _) => "_sk",
            (false, t) => t.suffix(),
        }
    }
    /// Grid (column blocks, row blocks, splits), block and dynamic shared memory.
    pub fn launch_config(&self, m: usize, n: usize) -> LaunchConfig {
        let (bm, bn, threads, smem) = self.tile.dims();
        LaunchConfig {
            grid: (n.div_ceil(bn) as u32, m.div_ceil(bm) as u32, self.splits as u32),
            block: (threads, 1, 1),
            shared_mem_bytes: smem,
        }
    }
    /// Output tiles (one arrival counter each) of a split launch; 0 unsplit.
    pub fn counters(&self, m: usize, n: usize) -> usize {
        let (bm, bn, _, _) = self.tile.dims();
        if self.splits > 1 {
            m.div_ceil(bm) * n.div_ceil(bn)
        } else {
            0
        }
    }
    /// 32-bit words of partial sums a split launch needs (`[tile][split][bm][bn]`); 0 unsplit.
    pub fn partial_words(&self, m: usize, n: usize) -> usize {
        let (bm, bn, _, _) = self.tile.dims();
        self.counters(m, n) * self.splits * bm * bn
    }
    /// Partial-sum bytes a split launch stores and loads back (rows past M are skipped), each.
    pub fn partial_bytes(&self, m: usize, n: usize) -> usize {
        let (_, bn, _, _) = self.tile.dims();
        if self.splits > 1 {
            self.splits * m * n.div_ceil(bn) * bn * 4
        } else {
            0
        }
    }
}

/// Predicted clocks of `plan` for an `m x n x k` GEMM on the reference machine: [`tile_clocks`]'s
/// terms with the blocks multiplied by the split and each block's K cut to one chunk, the
/// partial sums written and read back through L2, plus the serial tail of a split launch: the
/// last block of a tile reads all its partials alone, at one SM's bandwidth.
pub fn plan_clocks(plan: GemmPlan, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    plan_work_clocks(plan, m, n, k, int8).max(reference_gpu::MIN_CLK)
}

/// [`plan_clocks`] without the shortest kernel time.
fn plan_work_clocks(plan: GemmPlan, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    if plan.splits <= 1 {
        return tile_work_clocks(plan.tile, m, n, k, int8);
    }
    let (bm, bn, _, _) = plan.tile.dims();
    let (gm, gn) = (m.div_ceil(bm) as u64, n.div_ceil(bn) as u64);
    let s = plan.splits as u64;
    let blocks = (gm * gn * s).max(1);
    let chunk_bytes = chunk_tiles(k, int8) as u64 * 64;
    let macs_per_clk = reference_gpu::MACS_PER_CLK_F16 * if int8 { 2 } else { 1 };
    let e = if int8 { 1 } else { 2 };
    let compute = blocks.div_ceil(reference_gpu::SMS) * (bm * bn) as u64 * (chunk_bytes / e) / macs_per_clk;
    let (m64, n64, k64) = (m as u64, n as u64, k as u64);
    let partials = 2 * plan.partial_bytes(m, n) as u64;
    let bytes = (gn * m64 * k64 + gm * n64 * k64) * e + m64 * n64 * 2 + partials;
    let bandwidth =
        reference_gpu::L2_BYTES_PER_CLK.min(blocks.min(reference_gpu::SMS) * reference_gpu::SM_BYTES_PER_CLK);
    let tail = (s * (bm * bn) as u64 * 4).div_ceil(reference_gpu::SM_BYTES_PER_CLK);
    compute.max(bytes.div_ceil(bandwidth)) + tail
}

/// Predicted clocks of `plan` with a layernorm over rows of `n` fused in: [`plan_clocks`] plus
/// the serial tail of the last row strip (the tile's rows: 32, 64 or 128): its rows read back
/// and written (4 bytes per element) at one SM's bandwidth, under the shortest kernel time.
pub fn plan_clocks_with_layernorm(plan: GemmPlan, m: usize, n: usize, k: usize, int8: bool) -> u64 {
    let rows = m.min(plan.tile.dims().0) as u64;
    let tail = (rows * n as u64 * 4).div_ceil(reference_gpu::SM_BYTES_PER_CLK);
    plan_work_clocks(plan, m, n, k, int8).saturating_add(tail).max(reference_gpu::MIN_CLK)
}

/// Partial sums and arrival counters of split-K launches, reusable by any launch it is large
/// enough for (launches on one stream run one after the other). The counters are zeroed once
/// here; every split launch leaves them at zero (its last block per tile resets its counter),
/// so CUDA-graph replays need no memset.
/// It also holds the row-strip counters of the GEMMs with a fused layernorm or quantisation
/// ([`strip_counters`]; same reset rule).
pub struct SplitWorkspace {
    pub(crate) partials: DeviceBuffer<u32>,
    pub(crate) counters: DeviceBuffer<u32>,
    pub(crate) strips: DeviceBuffer<u32>,
}

impl SplitWorkspace {
    /// Room for `partial_words` partial sums and `counters` output tiles, and layernorm-fused
    /// GEMMs of up to `max_rows` rows.
    pub fn new(dev: &Device, partial_words: usize, counters: usize, max_rows: usize) -> Result<Self> {
        Ok(SplitWorkspace {
            partials: dev.alloc(partial_words.max(1))?,
            counters: dev.alloc_filled(counters.max(1), 0)?,
            strips: dev.alloc_filled(strip_counters(max_rows), 0)?,
        })
    }
    /// Room for the plans of every `(m, n, k, int8)` shape in `shapes` ([`GemmPlan::choose`]
    /// and, a layernorm fused in, [`GemmPlan::choose_with_layernorm`]), and for the Hopper GEMMs'
    /// split of each ([`crate::gemm_sm90::plan`]).
    pub fn for_shapes(dev: &Device, shapes: &[(usize, usize, usize, bool)]) -> Result<Self> {
        let plans = shapes.iter().flat_map(|&(m, n, k, i)| {
            [(GemmPlan::choose(m, n, k, i), m, n), (GemmPlan::choose_with_layernorm(m, n, k, i), m, n)]
        });
        let needs = plans.map(|(p, m, n)| (p.partial_words(m, n), p.counters(m, n))).chain(shapes.iter().map(
            |&(m, n, k, i)| {
                let p = sm90::plan(m, n, k, i);
                sm90::split_needs(m, n, p.cols, p.splits)
            },
        ));
        let (words, counters) = needs.fold((0, 0), |(w, c), (pw, pc)| (w.max(pw), c.max(pc)));
        let rows = shapes.iter().map(|s| s.0).max().unwrap_or(0);
        SplitWorkspace::new(dev, words, counters, rows)
    }
    /// Whether `plan` fits on an `m x n` output.
    pub fn fits(&self, plan: &GemmPlan, m: usize, n: usize) -> bool {
        self.partials.len() >= plan.partial_words(m, n) && self.counters.len() >= plan.counters(m, n)
    }
}

/// Rows of the shortest tile (`Narrow`): one strip counter per this many rows covers every tile.
pub const MIN_STRIP_ROWS: usize = 32;

/// Strip counters for layernorm- or quantisation-fused GEMMs of up to `rows` rows: one per
/// strip of [`MIN_STRIP_ROWS`] (mma.sync), or [`crate::gemm_sm90::STRIP_COUNTERS`] per 128-row
/// strip (Hopper), whichever is more.
pub fn strip_counters(rows: usize) -> usize {
    let sm90 = rows.div_ceil(crate::gemm_sm90::BM) * crate::gemm_sm90::STRIP_COUNTERS;
    rows.div_ceil(MIN_STRIP_ROWS).max(sm90).max(1)
}

/// Largest row a layernorm fused into a GEMM handles (a warp per row, 4 vectors of 8 per lane:
/// `LN_FUSED_VPT` in `gemm_core.cuh`).
pub const FUSED_LN_MAX: usize = 1024;

/// Whether a layernorm over rows of `n` fits the fused GEMM epilogue (`*_ln` kernels, every
/// plan: the last tile of a row strip normalises the strip).
pub fn fuses_layernorm(n: usize) -> bool {
    n % 8 == 0 && n <= FUSED_LN_MAX
}
