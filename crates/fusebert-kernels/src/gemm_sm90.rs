//! Hopper GEMMs (`kernels/gemm_sm90.cu` fp16, `kernels/gemm_int8_sm90.cu` int8, sm_90a only) on one
//! warp-specialised wgmma kernel: a TMA producer warpgroup and two wgmma consumer warpgroups over a
//! 128 x 128 output tile, a 4-stage mbarrier ring, a persistent grid; optionally split over K
//! ([`GemmSm90Launch::split`], the `_sk` entries: a tile's K chunks on separate CTAs, the last
//! adding their partial sums).
//!
//! - [`gemm_f16_sm90`]: `C[M,N] = A[M,K] . W[N,K]^T + bias[n]` then the
//!   [`Epilogue`](crate::Epilogue), as [`gemm_f16`](crate::gemm_f16()) computes it. K is
//!   summed in fixed chunks ([`k_chunks`], a function of K alone), each in k order, then the
//!   chunks' sums in order, whether one CTA or a split computes the tile: results are
//!   batch-invariant and the same bits split or not. They are not bit-identical to `gemm_f16`'s
//!   (other chunks, other instruction): the two agree to f32 accumulation rounding, i.e. within
//!   an fp16 ulp of the output.
//! - [`gemm_f16_sm90_ln`], [`gemm_int8_sm90_ln`]: the layernorm of the output rows fused in,
//!   either by the last tile of each 128-row strip (the serial strip tail, `_ln` / `_sk_ln`) or,
//!   unsplit with `N <= 1024`, by thread-block clusters owning a strip each (`_n192_cln2`, `_cln3`,
//!   `_n192_cln4`, `_cln8`: the row statistics exchanged through distributed shared memory, y
//!   never stored); one reduction order for all, so the same bits ([`Sm90Layernorm`]).
//! - [`gemm_int8_sm90_qa`]: [`gemm_int8_sm90`] with the asymmetric per-row int8 quantisation
//!   of its output fused in (the FFN1 GELU output for FFN2): the codes, scales and zero points
//!   [`crate::quantize_i8`] gives on the output, bit for bit, without re-reading it from DRAM.
//!   Unsplit, by default ([`Sm90Qa::Auto`]), a cluster of [`QA_CLUSTER`] CTAs owns each 128-row
//!   strip and quantises it together ([`KERNEL_INT8_CQA`]; at N <= 3072, [`qa_resident`], the
//!   output stays in shared memory and `out` is not written); else the strip's last tile does
//!   it alone.
//! - [`gemm_int8_sm90`]: the W8A8 GEMM of [`gemm_int8`](crate::gemm_int8()) (s8 x s8 -> s32 in
//!   `wgmma m64n128k32.s32.s8.s8`, zero points, per-token and per-channel scales, bias, the same
//!   epilogues), with gemm_int8's float operations in gemm_int8's order: s32 sums are exact, so
//!   the two give the same bits. [`gemm_int8_i32_sm90`]: the raw s32 accumulators.
//!
//! A and W reach the kernel as tensor maps (TMA descriptors, [`Device::encode_tensor_map`])
//! with boxes of one 128-byte K row (64 f16 or 128 s8) by 128 rows in the 128-byte swizzle; TMA
//! zero-fills what lies past M, N or K, so no dimension needs a multiple of the tile.
//! Host-checked: a row of A and W is a multiple of 16 bytes (TMA: `K % 8 == 0` f16, `K % 16 ==
//! 0` s8), `N % 8 == 0`, A, W and the fp16 output 16-byte aligned (the output leaves through a
//! tensor map too: 64 x 64 boxes stored by TMA from a swizzled shared-memory staging tile).
use half::f16;

use super::gemm_int8::{check_epilogue, check_int8_lengths, ln_args, ln_operands};
use super::SplitWorkspace;
use super::{check_align, check_len, check_u32, kerr, opt_ptr, FusedLayerNorm, GemmF16, GemmInt8, GemmShape};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig, TensorMapDtype, TensorMapSwizzle, TiledTensorMap};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// The modules: the fp16 entries (`kernels/gemm_sm90.cu`) and the int8 ones
/// (`kernels/gemm_int8_sm90.cu`), and the entries.
pub const MODULE: &str = "gemm_sm90";
pub const MODULE_INT8: &str = "gemm_int8_sm90";
pub const KERNEL: &str = ids::GEMM_F16_SM90;
pub const KERNEL_INT8: &str = ids::GEMM_INT8_SM90;
pub const KERNEL_INT8_I32: &str = ids::GEMM_INT8_I32_SM90;
/// The entries with the layernorm of the output rows fused in.
pub const KERNEL_LN: &str = ids::GEMM_F16_SM90_LN;
pub const KERNEL_INT8_LN: &str = ids::GEMM_INT8_SM90_LN;
/// The int8 entry with the asymmetric quantisation of the output rows fused in.
pub const KERNEL_INT8_QA: &str = ids::GEMM_INT8_SM90_QA;
/// [`KERNEL_INT8_QA`] with the quantisation distributed over a cluster of [`QA_CLUSTER`] CTAs
/// per 128-row strip (128 x 192 tiles, K unsplit): what [`gemm_int8_sm90_qa`] launches
/// unsplit ([`qa_cluster`]).
pub const KERNEL_INT8_CQA: &str = ids::GEMM_INT8_SM90_N192_CQA;
/// The split-K entries ([`GemmSm90Launch::split`]): each tile's K chunks on separate CTAs.
pub const KERNEL_SK: &str = ids::GEMM_F16_SM90_SK;
pub const KERNEL_SK_LN: &str = ids::GEMM_F16_SM90_SK_LN;
pub const KERNEL_INT8_SK: &str = ids::GEMM_INT8_SM90_SK;
pub const KERNEL_INT8_SK_LN: &str = ids::GEMM_INT8_SM90_SK_LN;
pub const KERNEL_INT8_I32_SK: &str = ids::GEMM_INT8_I32_SM90_SK;

/// Every entry of a kind, by tile width and split: `[128, 128 _sk, 192 (_n192), 192 _sk]`.
const F16_ENTRIES: [&str; 4] = [KERNEL, KERNEL_SK, ids::GEMM_F16_SM90_N192, ids::GEMM_F16_SM90_N192_SK];
const F16_LN_ENTRIES: [&str; 4] = [KERNEL_LN, KERNEL_SK_LN, ids::GEMM_F16_SM90_N192_LN, ids::GEMM_F16_SM90_N192_SK_LN];
const INT8_ENTRIES: [&str; 4] = [KERNEL_INT8, KERNEL_INT8_SK, ids::GEMM_INT8_SM90_N192, ids::GEMM_INT8_SM90_N192_SK];
const INT8_LN_ENTRIES: [&str; 4] =
    [KERNEL_INT8_LN, KERNEL_INT8_SK_LN, ids::GEMM_INT8_SM90_N192_LN, ids::GEMM_INT8_SM90_N192_SK_LN];
const INT8_QA_ENTRIES: [&str; 4] =
    [KERNEL_INT8_QA, ids::GEMM_INT8_SM90_SK_QA, ids::GEMM_INT8_SM90_N192_QA, ids::GEMM_INT8_SM90_N192_SK_QA];
const I32_ENTRIES: [&str; 4] =
    [KERNEL_INT8_I32, KERNEL_INT8_I32_SK, ids::GEMM_INT8_I32_SM90_N192, ids::GEMM_INT8_I32_SM90_N192_SK];

/// The entry of `entries` (one kind) for a tile of `cols` columns, split or not.
fn entry(entries: &[&'static str; 4], cols: usize, split: bool) -> &'static str {
    entries[2 * usize::from(cols == 192) + usize::from(split)]
}

/// The kinds of fp16-output `_sm90` GEMM entry: the operand type and what runs after the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sm90Entry {
    /// `gemm_f16_sm90`
    F16,
    /// `gemm_f16_sm90_ln`: the layernorm of the output rows fused in.
    F16Ln,
    /// `gemm_int8_sm90`
    Int8,
    /// `gemm_int8_sm90_ln`
    Int8Ln,
    /// `gemm_int8_sm90_qa`: the asymmetric int8 codes of the output rows fused in.
    Int8Qa,
}

impl Sm90Entry {
    /// The plain or layernorm-fused entry of an fp16 or int8 GEMM.
    pub fn of(int8: bool, layernorm: bool) -> Self {
        match (int8, layernorm) {
            (false, false) => Sm90Entry::F16,
            (false, true) => Sm90Entry::F16Ln,
            (true, false) => Sm90Entry::Int8,
            (true, true) => Sm90Entry::Int8Ln,
        }
    }
}

/// The PTX entry of a launch of kind `kind`, a tile of `cols` columns (128 or 192), split over
/// K or not. The same names as the emulator's counters, the roofline plan and `fusebert kernels
/// time`.
pub fn kernel_name(kind: Sm90Entry, cols: usize, split: bool) -> &'static str {
    let entries = match kind {
        Sm90Entry::F16 => &F16_ENTRIES,
        Sm90Entry::F16Ln => &F16_LN_ENTRIES,
        Sm90Entry::Int8 => &INT8_ENTRIES,
        Sm90Entry::Int8Ln => &INT8_LN_ENTRIES,
        Sm90Entry::Int8Qa => &INT8_QA_ENTRIES,
    };
    entry(entries, cols, split)
}

/// The cluster entries of the fused layernorm (`_cln*`: a cluster of CTAs per 128-row strip,
/// the row statistics exchanged through distributed shared memory, no serial strip tail), by
/// cluster size: 2 and 4 CTAs of 192 columns, 3 and 8 of 128 (N <= 1024).
const F16_CLN_ENTRIES: [(usize, &str); 4] = [
    (2, ids::GEMM_F16_SM90_N192_CLN2),
    (3, ids::GEMM_F16_SM90_CLN3),
    (4, ids::GEMM_F16_SM90_N192_CLN4),
    (8, ids::GEMM_F16_SM90_CLN8),
];
const INT8_CLN_ENTRIES: [(usize, &str); 4] = [
    (2, ids::GEMM_INT8_SM90_N192_CLN2),
    (3, ids::GEMM_INT8_SM90_CLN3),
    (4, ids::GEMM_INT8_SM90_N192_CLN4),
    (8, ids::GEMM_INT8_SM90_CLN8),
];

/// The most columns a cluster entry normalises (8 CTAs of 128 columns).
pub const CLUSTER_LN_MAX: usize = 1024;

/// The cluster size of the cluster entry for rows of `n` columns: 2 (`_n192_cln2`) for `n <=
/// 256`, 3 (`_cln3`, 128-column tiles) for `n <= 384`, 4 (`_n192_cln4`) for `n <= 768`, 8
/// (`_cln8`, 128-column tiles) for `n <= 1024`; `None` beyond (or for `n` not a positive
/// multiple of 8). At 257..384 columns (hidden 384: MiniLM, bge-small, e5-small) three CTAs of
/// 128 columns instead of two of 192: a strip's busiest CTA has a third less work and a grid of
/// strips keeps 1.5 times the SMs busy (the result is the same bits: K's chunk order and the
/// layernorm's block order do not depend on the tile width).
pub fn cluster_size(n: usize) -> Option<usize> {
    if n == 0 || n % 8 != 0 {
        return None;
    }
    match n {
        1..=256 => Some(2),
        257..=384 => Some(3),
        385..=768 => Some(4),
        769..=CLUSTER_LN_MAX => Some(8),
        _ => None,
    }
}

/// Output columns per CTA of the cluster entry of `cs` CTAs: 192 for 2 and 4, 128 for 3 and 8.
pub fn cluster_cols(cs: usize) -> usize {
    if cs == 3 || cs == 8 {
        COLS[0]
    } else {
        COLS[1]
    }
}

/// The PTX entry of the cluster layernorm GEMM of `cs` CTAs (2, 4 or 8; fp16 or int8); `None`
/// for another size.
pub fn cluster_kernel_name(int8: bool, cs: usize) -> Option<&'static str> {
    let entries = if int8 { &INT8_CLN_ENTRIES } else { &F16_CLN_ENTRIES };
    entries.iter().find(|(c, _)| *c == cs).map(|(_, e)| *e)
}

/// The cluster size the forward pass's `_ln` launch of the `m x n x k` GEMM uses
/// ([`GemmSm90Launch::planned`], [`Sm90Layernorm::Auto`]): [`cluster_size`] when [`plan`] does
/// not split K; `None`: the serial strip tail (`_ln` / `_sk_ln`).
pub fn ln_cluster(m: usize, n: usize, k: usize, int8: bool) -> Option<usize> {
    if plan(m, n, k, int8).splits > 1 {
        None
    } else {
        cluster_size(n)
    }
}

/// The cluster entry (tile width, cluster size) that can replace the [`plan`] of a fused
/// layernorm or quantisation launch of kind `kind` that splits K (`_sk_ln`, `_sk_qa`: the
/// strip's last CTA normalises or codes its rows alone): the same bits (K summed in the same
/// chunks, rows reduced in the same order), no serial tail, the whole of K on each CTA. The
/// host launches it by passing no split workspace. `None` where the plan does not split (it is
/// then the cluster entry already, where one applies) or the kind has none (plain GEMMs, rows
/// wider than the cluster layernorm's). Which of the two is faster is the caller's question
/// (the forward pass asks the roofline model, `perf::plan`).
pub fn cluster_alternative(kind: Sm90Entry, m: usize, n: usize, k: usize) -> Option<(usize, usize)> {
    let int8 = matches!(kind, Sm90Entry::Int8 | Sm90Entry::Int8Ln | Sm90Entry::Int8Qa);
    if plan(m, n, k, int8).splits == 1 {
        return None;
    }
    match kind {
        Sm90Entry::F16Ln | Sm90Entry::Int8Ln => cluster_size(n).map(|cs| (cluster_cols(cs), cs)),
        Sm90Entry::Int8Qa => Some((COLS[1], QA_CLUSTER)),
        Sm90Entry::F16 | Sm90Entry::Int8 => None,
    }
}

/// Output tile rows, the two tile widths (columns) the kernels come in, K per pipeline stage
/// (fp16; int8: [`BK_INT8`]), threads (`kernels/gemm_sm90.cu`).
pub const BM: usize = 128;

/// Counters the `_ln` and `_qa` entries keep per 128-row strip in a [`SplitWorkspace`]'s strip
/// counters (the kernels' StripShare: units started, tiles arrived, rows claimed, tail done):
/// the strip's tail is shared by its tiles' CTAs where each CTA has one unit.
pub const STRIP_COUNTERS: usize = 4;
pub const COLS: [usize; 2] = [128, 192];
pub const BK: usize = 64;
/// K per pipeline stage of the int8 kernels: a 128-byte row of s8.
pub const BK_INT8: usize = 128;
pub const THREADS: u32 = 384;
/// Bytes of a box row: one 128-byte swizzle row, whatever the element type.
const ROW_BYTES: usize = 128;
/// Output rows and columns of one TMA store box (fp16: a 128-byte swizzled row).
const OUT_BOX: usize = 64;

/// Pipeline stages of a tile `cols` wide (`Geom::STAGES` in the kernel): 4 at 128, 3 at 192.
pub fn stages(cols: usize) -> usize {
    if cols <= 128 {
        4
    } else {
        3
    }
}

/// Dynamic shared memory of a tile `cols` wide (`Geom::SMEM`): the stage ring and, per consumer
/// warpgroup, a region of 64 x `cols` words (its fp16 K-chunk fold, then its output staging).
pub fn smem(cols: usize) -> u32 {
    (stages(cols) * (BM + cols) * ROW_BYTES + BM * cols * 4) as u32
}

/// Which tile width a launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sm90Cols {
    /// The width [`plan`] picks for the shape.
    #[default]
    Auto,
    /// 128 x 128 tiles (64 accumulators per consumer thread).
    N128,
    /// 128 x 192 tiles (the `_n192` entries; 96 accumulators, 3 stages): fewer, larger tiles,
    /// a fuller last wave where 128 wastes one (BERT-base at 4096 tokens: QKV 384 tiles, 3 waves
    /// at 97%, against 576 tiles, 5 waves at 87%).
    N192,
}

/// How [`gemm_int8_sm90_qa`] quantises the output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sm90Qa {
    /// The cluster entry ([`KERNEL_INT8_CQA`], 128 x 192 tiles whatever [`Sm90Cols`] says) when
    /// the launch is unsplit, else the strip tail. The cluster entry keeps the output on chip
    /// at N <= 3072 ([`qa_resident`]): `out` is then not written.
    #[default]
    Auto,
    /// The strip-tail entries (`gemm_int8_sm90*_qa`: the last tile of a strip quantises it
    /// alone), at the requested width and split.
    StripTail,
    /// The cluster entry as [`Sm90Qa::Auto`] launches it, but with y stored to `out` and read
    /// back for the codes whatever N (what `Auto` does only where [`qa_resident`] is false):
    /// the same codes, scales and zero points, for comparing the two paths.
    ClusterStored,
}

/// CTAs per cluster of the cluster-quantising entry ([`KERNEL_INT8_CQA`]): each cluster owns a
/// 128-row strip at a time, rank r computing its column tiles r, r + 8, ...
pub const QA_CLUSTER: usize = 8;
/// Clusters of [`QA_CLUSTER`] CTAs an H100 / H200 holds at once (its GPCs: 16 x 8 = 128 of 132
/// SMs): the cluster entry's grid, at most one cluster per strip.
pub const QA_CLUSTERS: usize = 16;
/// Column tiles (192 wide) of a strip each CTA of the cluster entry keeps in shared memory at
/// most: two per consumer warpgroup's region.
pub const QA_RESIDENT_TILES: usize = 2;

/// Whether the cluster entry ([`KERNEL_INT8_CQA`]) keeps the fp16 output y of an `n`-column
/// launch on chip (`n <= QA_CLUSTER x QA_RESIDENT_TILES x 192` = 3072, BERT-base's FFN1
/// included): every CTA owns at most [`QA_RESIDENT_TILES`] tiles of a strip, keeps them staged
/// in shared memory and codes them from there; y is neither stored (`out` is not written) nor
/// read back. Else y is stored to `out` and the codes read it back through L2.
pub fn qa_resident(n: usize) -> bool {
    n <= QA_CLUSTER * QA_RESIDENT_TILES * COLS[1]
}

/// The cluster size of the fused quantisation of the `m x n x k` int8 GEMM as an
/// [`Sm90Qa::Auto`] launch of [`plan`]'s split makes it: `Some(QA_CLUSTER)` when [`plan`]
/// leaves K unsplit (the cluster entry), `None` for the strip tail: what
/// [`GemmSm90Launch::planned`] (the forward pass) launches and the roofline model prices.
pub fn qa_cluster(m: usize, n: usize, k: usize) -> Option<usize> {
    (plan(m, n, k, true).splits == 1).then_some(QA_CLUSTER)
}

/// The PTX entry of an [`Sm90Qa::Auto`] fused-quantisation launch of `m x n x k` with [`plan`]'s
/// width and split (for the perf model and the emulator's counters): [`KERNEL_INT8_CQA`] where
/// [`qa_cluster`] says so, else the strip-tail entry of the plan.
pub fn qa_kernel_name(m: usize, n: usize, k: usize) -> &'static str {
    let p = plan(m, n, k, true);
    if qa_cluster(m, n, k).is_some() {
        KERNEL_INT8_CQA
    } else {
        kernel_name(Sm90Entry::Int8Qa, p.cols, p.splits > 1)
    }
}

/// CTAs of the cluster entry's grid for `m` rows: [`QA_CLUSTER`] x the clusters (`ctas` / 8
/// rounded up, or [`QA_CLUSTERS`]), at most one cluster per 128-row strip.
pub fn qa_cluster_ctas(m: usize, ctas: Option<u32>) -> usize {
    let clusters = ctas.map_or(QA_CLUSTERS, |c| (c as usize).div_ceil(QA_CLUSTER));
    clusters.min(m.div_ceil(BM)).max(1) * QA_CLUSTER
}

/// Most K chunks (`MAX_CHUNKS` in the kernel), so the most CTAs a split tile is spread over.
pub const MAX_CHUNKS: usize = 4;
/// Fewest k-blocks (128 bytes of K: one pipeline stage) per chunk (`MIN_CHUNK_KBLOCKS`).
const MIN_CHUNK_KBLOCKS: usize = 4;
/// SMs the split choice ([`splits`]) fills: the H100's and H200's, on every device, so that a
/// launch is a function of its shape alone (as the roofline model, which predicts it, needs).
pub const SPLIT_SMS: usize = 132;

/// K chunks of a GEMM of depth `k` (`chunk_kblocks` in the kernel): at most [`MAX_CHUNKS`] of
/// at least 4 k-blocks, a function of K alone. The fp16 kernels sum K chunk by chunk and add the
/// chunks' sums in order whether one CTA or `k_chunks` CTAs compute a tile, so splitting K does
/// not change a bit (int8: s32, exact in any order).
pub fn k_chunks(k: usize, int8: bool) -> usize {
    let kblocks = (k * if int8 { 1 } else { 2 }).div_ceil(ROW_BYTES).max(1);
    let per_chunk = kblocks.div_ceil(MAX_CHUNKS).max(MIN_CHUNK_KBLOCKS);
    kblocks.div_ceil(per_chunk)
}

/// The tile width and K split of an `_sm90` GEMM launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sm90Plan {
    /// Output columns per tile: 128 or 192.
    pub cols: usize,
    /// CTAs per tile along K: 1, or K's chunks ([`k_chunks`]).
    pub splits: usize,
}

/// How the forward pass launches the `m x n x k` GEMM (a function of the shape alone, as the
/// roofline model, which predicts it, needs). Per width, K is split over its chunks when the
/// tiles would keep at most a quarter of [`SPLIT_SMS`] busy and the split work still fits one
/// wave (between a quarter and a half, the partial sums' traffic costs about what the idle SMs
/// would give);
/// then the width whose busiest CTA has the least work (`ceil(units / 132)` units of `cols / splits`
/// columns' worth of K each) wins, 192 on a tie (the same work in fewer, wider tiles: A is
/// re-read by a third fewer column tiles, less L2 traffic).
pub fn plan(m: usize, n: usize, k: usize, int8: bool) -> Sm90Plan {
    let chunks = k_chunks(k, int8);
    let for_cols = |cols: usize| {
        let t = tiles(m, n, cols);
        let splits = if chunks > 1 && 4 * t <= SPLIT_SMS && t * chunks <= SPLIT_SMS { chunks } else { 1 };
        // the busiest CTA's work, in units of (128-column tile x one chunk)'s: exact integers
        let work = (t * splits).div_ceil(SPLIT_SMS) * cols * chunks / splits;
        (Sm90Plan { cols, splits }, work)
    };
    let (narrow, wide) = (for_cols(COLS[0]), for_cols(COLS[1]));
    if wide.1 <= narrow.1 {
        wide.0
    } else {
        narrow.0
    }
}

/// CTAs per output tile of the `m x n x k` GEMM as the forward pass launches it ([`plan`]).
pub fn splits(m: usize, n: usize, k: usize, int8: bool) -> usize {
    plan(m, n, k, int8).splits
}

/// Partial-sum words and tile counters a split launch of `m x n` in tiles `cols` wide over
/// `splits` chunks needs from its [`SplitWorkspace`] (`[tile][chunk][128 x cols]` words; none
/// unsplit).
pub fn split_needs(m: usize, n: usize, cols: usize, splits: usize) -> (usize, usize) {
    if splits > 1 {
        (tiles(m, n, cols) * splits * BM * cols, tiles(m, n, cols))
    } else {
        (0, 0)
    }
}

/// Rows per consumer warp of a tile (a wgmma m64 fragment spans 16 rows per warp): the unit in
/// which a split launch skips partial sums.
pub const WARP_ROWS: usize = 16;

/// Rows of an `m`-row tile strip whose partial sums a split launch stores and reads back: those
/// of the warps with a row below `m` (`split_live` in `kernels/gemm_sm90.cuh`); a warp wholly past
/// `m` holds zeros (its A rows are TMA's zero fill) and skips both. 20 tokens: 32 rows, a quarter
/// of a 128-row tile's partial traffic.
pub fn split_live_rows(m: usize) -> usize {
    m.next_multiple_of(WARP_ROWS)
}

/// Rows per consumer warpgroup of a tile (one m64 wgmma): a warpgroup whose rows all lie past
/// M issues no wgmma.
pub const WARPGROUP_ROWS: usize = 64;

/// Rows whose wgmmas a launch of `m` rows (split, unsplit or cluster) runs per tile column, over
/// all its 128-row strips: a strip's consumer warpgroups with a row below `m` compute, so every
/// strip but the last computes 128 rows and the last `64` or `128` (a 1..64-row batch does half
/// a tile's tensor work, and so does the last strip of 513 rows).
pub fn computed_rows(m: usize) -> usize {
    m / BM * BM + (m % BM).next_multiple_of(WARPGROUP_ROWS)
}

/// How an `_ln` launch normalises its rows. Every way gives the same bits (ln_out, codes and
/// scales): one reduction order for the family (`kernels/ln_blocked.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sm90Layernorm {
    /// The cluster entries where they apply (an unsplit launch, `N <= 1024`), else the strip
    /// tail.
    #[default]
    Auto,
    /// The serial strip tail (`_ln`, `_sk_ln`): y is stored, and the last tile of each 128-row
    /// strip normalises it.
    Strip,
    /// The cluster entries (`_n192_cln2`, `_cln3`, `_n192_cln4`, `_cln8`); an error where they do not
    /// apply (a split launch, `N > 1024`). They do not write `out`.
    Cluster,
}

/// How to launch the Hopper GEMM.
#[derive(Clone, Copy, Default)]
pub struct GemmSm90Launch<'a> {
    /// CTAs of the persistent grid; `None`: one per SM, at most one per work unit. (Tests set
    /// fewer to make each CTA walk several units.)
    pub ctas: Option<u32>,
    /// The tile width; `Auto`: [`plan`]'s for the shape.
    pub cols: Sm90Cols,
    /// Split K over its chunks ([`k_chunks`]; the `_sk` entries) with this workspace's partial
    /// sums and tile counters; `None`, or K of one chunk: unsplit. The result is the same bits
    /// either way.
    pub split: Option<&'a SplitWorkspace>,
    /// How an `_ln` launch normalises its rows (ignored by the other entries); `Auto`: the
    /// cluster entries where they apply.
    pub layernorm: Sm90Layernorm,
    /// [`gemm_int8_sm90_qa`] only: the cluster entry or the strip tail ([`Sm90Qa`]).
    pub qa: Sm90Qa,
}

impl std::fmt::Debug for GemmSm90Launch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmSm90Launch")
            .field("ctas", &self.ctas)
            .field("cols", &self.cols)
            .field("split", &self.split.is_some())
            .field("layernorm", &self.layernorm)
            .field("qa", &self.qa)
            .finish()
    }
}

impl<'a> GemmSm90Launch<'a> {
    /// The launch [`plan`] makes of an `m x n x k` GEMM (the forward pass's, the roofline's):
    /// its tile width, split over K on `split` where it splits, and the cluster entries of the
    /// fused layernorm and quantisation where they apply ([`ln_cluster`], [`qa_cluster`]).
    pub fn planned(m: usize, n: usize, k: usize, int8: bool, split: &'a SplitWorkspace) -> Self {
        let p = plan(m, n, k, int8);
        let cols = if p.cols == COLS[1] { Sm90Cols::N192 } else { Sm90Cols::N128 };
        GemmSm90Launch {
            ctas: None,
            cols,
            split: (p.splits > 1).then_some(split),
            layernorm: Sm90Layernorm::Auto,
            qa: Sm90Qa::Auto,
        }
    }

    /// [`planned`](Self::planned), or its cluster entry (`_cln`, `_cqa`) with `cluster`: the
    /// same launch unsplit (the entries run where a launch has no split and its rows fit a
    /// cluster). A plan that does not split stays unsplit either way: passing the workspace
    /// would make every K of several chunks split.
    pub fn planned_or_cluster(
        m: usize,
        n: usize,
        k: usize,
        int8: bool,
        split: &'a SplitWorkspace,
        cluster: bool,
    ) -> Self {
        let p = Self::planned(m, n, k, int8, split);
        GemmSm90Launch { split: p.split.filter(|_| !cluster), ..p }
    }

    /// The tile width of an `m x n x k` launch: the requested one, or [`plan`]'s.
    pub fn resolve_cols(&self, m: usize, n: usize, k: usize, int8: bool) -> usize {
        match self.cols {
            Sm90Cols::Auto => plan(m, n, k, int8).cols,
            Sm90Cols::N128 => 128,
            Sm90Cols::N192 => 192,
        }
    }
}

/// Output tiles of an `m x n` GEMM in tiles `cols` wide.
pub fn tiles(m: usize, n: usize, cols: usize) -> usize {
    m.div_ceil(BM) * n.div_ceil(cols)
}

/// The chunks a launch splits K into (1: unsplit) and, split, the workspace's arguments (the
/// partial sums and the tile counters, checked to be large enough).
fn split_args(
    kernel: &str,
    s: GemmShape,
    int8: bool,
    cols: usize,
    how: &GemmSm90Launch,
) -> Result<(usize, Vec<KernelArg>)> {
    let Some(ws) = how.split else { return Ok((1, Vec::new())) };
    let chunks = k_chunks(s.k, int8);
    if chunks == 1 {
        return Ok((1, Vec::new()));
    }
    let (words, counters) = split_needs(s.m, s.n, cols, chunks);
    if ws.partials.len() < words || ws.counters.len() < counters {
        return Err(kerr(
            kernel,
            format!(
                "split workspace holds {} partial words and {} tile counters; {} x {} over {chunks} K chunks needs {words} and {counters}",
                ws.partials.len(),
                ws.counters.len(),
                s.m,
                s.n
            ),
        ));
    }
    Ok((chunks, vec![KernelArg::from(&ws.partials), KernelArg::from(&ws.counters)]))
}

/// Whether the Hopper GEMMs take an `m x n x k` shape (fp16, or int8 when `int8`): what
/// `check_shape` requires, so that a caller can fall back to the mma.sync GEMM instead of
/// failing. Buffer alignment is checked at launch (whole allocations always pass).
pub fn supports(s: GemmShape, int8: bool) -> bool {
    let kernel = if int8 { KERNEL_INT8 } else { KERNEL };
    check_shape(kernel, s, if int8 { 16 } else { 8 }).is_ok()
}

/// The shape checks of the kernels: `M > 0`, `N` a positive multiple of 8, `K` a positive
/// multiple of `k_mult` (the elements of 16 bytes: a TMA row stride), all fitting u32 (and a TMA
/// dimension: at most 2^32).
pub(crate) fn check_shape(kernel: &str, s: GemmShape, k_mult: usize) -> Result<(u32, u32, u32)> {
    let GemmShape { m, n, k } = s;
    if m == 0 {
        return Err(kerr(kernel, "M (tokens) must be positive"));
    }
    if n == 0 || n % 8 != 0 {
        return Err(kerr(kernel, format!("N = {n} must be a positive multiple of 8 (column-pair stores)")));
    }
    if k == 0 || k % k_mult != 0 {
        return Err(kerr(
            kernel,
            format!(
                "K = {k} must be a positive multiple of {k_mult} (TMA: a row of A and W is a multiple of 16 bytes)"
            ),
        ));
    }
    let m32 = check_u32(kernel, "M", m)?;
    let n32 = check_u32(kernel, "N", n)?;
    let k32 = check_u32(kernel, "K", k)?;
    // the tile walk computes work-unit indices (tile x K chunk) in 32-bit ints
    if m.div_ceil(BM).checked_mul(n.div_ceil(COLS[0]) * MAX_CHUNKS).is_none_or(|t| t > i32::MAX as usize) {
        return Err(kerr(kernel, format!("{m} x {n} has more than 2^29 output tiles")));
    }
    Ok((m32, n32, k32))
}

/// The tensor map of a K-major `[rows, k]` operand: boxes of one 128-byte swizzled K row by
/// `box_rows` rows.
pub(crate) fn operand_map<T: bytemuck::Pod>(
    dev: &Device,
    buf: &DeviceBuffer<T>,
    dtype: TensorMapDtype,
    rows: usize,
    k: usize,
    box_rows: usize,
) -> Result<crate::device::TensorMap> {
    let e = std::mem::size_of::<T>();
    dev.encode_tensor_map(&TiledTensorMap {
        dtype,
        addr: buf.addr(),
        dims: &[k as u64, rows as u64],
        strides: &[(k * e) as u64],
        box_dims: &[(ROW_BYTES / e) as u32, box_rows as u32],
        swizzle: TensorMapSwizzle::B128,
    })
}

/// The tensor map of the fp16 output `[m, n]` the store epilogue writes: boxes of 64 x 64 in the
/// 128-byte swizzle, clipped at `m` and `n`.
pub(crate) fn output_map(
    dev: &Device,
    out: &DeviceBuffer<f16>,
    m: usize,
    n: usize,
) -> Result<crate::device::TensorMap> {
    dev.encode_tensor_map(&TiledTensorMap {
        dtype: TensorMapDtype::F16,
        addr: out.addr(),
        dims: &[n as u64, m as u64],
        strides: &[(n * 2) as u64],
        box_dims: &[OUT_BOX as u32, OUT_BOX as u32],
        swizzle: TensorMapSwizzle::B128,
    })
}

/// What a launch runs on its row strips after their tiles (the `_ln` and `_qa` entries), with
/// the workspace holding the strip counters.
#[derive(Clone, Copy)]
enum Tail<'a> {
    None,
    LayerNorm(&'a FusedLayerNorm<'a>, &'a SplitWorkspace),
    Quantize(&'a FusedQuantize<'a>, &'a SplitWorkspace),
}

/// The asymmetric per-row int8 quantisation fused into [`gemm_int8_sm90_qa`]: what
/// [`crate::quantize_i8`] with a zero point writes from the GEMM's fp16 output (`x * smooth`
/// with multipliers), the next GEMM's int8 input.
#[derive(Clone, Copy)]
pub struct FusedQuantize<'a> {
    /// `[m, n]` codes; must not overlap the GEMM's int8 input `a` (other strips still read it).
    pub q: &'a DeviceBuffer<i8>,
    /// `[m]` scales (`(max - min) / 255`); may be the GEMM's own `a_scale` (a strip's rows are
    /// written after every tile reading them).
    pub scale: &'a DeviceBuffer<f32>,
    /// `[m]` zero points; may be the GEMM's own zero points, as `scale`.
    pub zero: &'a DeviceBuffer<i32>,
    /// The next GEMM's smoothing multipliers `[n]` (optional).
    pub smooth: Option<&'a DeviceBuffer<f16>>,
}

/// Checks a fused quantisation of an `m x n` output read from int8 input `a` (`[m, k]`) and
/// returns its kernel arguments (after the split ones).
fn qa_args(
    kernel: &str,
    qa: &FusedQuantize<'_>,
    a: &DeviceBuffer<i8>,
    s: GemmShape,
    ws: Option<&SplitWorkspace>,
) -> Result<Vec<KernelArg>> {
    let GemmShape { m, n, k } = s;
    let strips = m.div_ceil(BM) * STRIP_COUNTERS;
    if let Some(ws) = ws.filter(|ws| ws.strips.len() < strips) {
        return Err(kerr(kernel, format!("workspace has {} strip counters, M {m} needs {strips}", ws.strips.len())));
    }
    check_len(kernel, "q_out", qa.q, m * n)?;
    check_align(kernel, "q_out", qa.q, 8)?;
    check_len(kernel, "q_scale", qa.scale, m)?;
    check_align(kernel, "q_scale", qa.scale, 4)?;
    check_len(kernel, "q_zero", qa.zero, m)?;
    check_align(kernel, "q_zero", qa.zero, 4)?;
    if let Some(sm) = qa.smooth {
        check_len(kernel, "q_smooth", sm, n)?;
        check_align(kernel, "q_smooth", sm, 16)?;
    }
    // the codes of a finished strip would overwrite A rows that other strips' tiles still read
    let (q0, a0) = (qa.q.addr(), a.addr());
    if q0 < a0 + (m * k) as u64 && a0 < q0 + (m * n) as u64 {
        return Err(kerr(kernel, "q_out overlaps the GEMM's input a (the codes need their own buffer)"));
    }
    let mut args = vec![KernelArg::from(qa.q), KernelArg::from(qa.scale), KernelArg::from(qa.zero), opt_ptr(qa.smooth)];
    // (the cluster entry counts no strips)
    args.extend(ws.map(|ws| KernelArg::from(&ws.strips)));
    Ok(args)
}

/// The arguments after the operands of every fp16-output entry: the output's tensor map, the
/// output itself (what an `_ln` entry's layernorm and an `_qa` entry's quantisation read), M,
/// N, K, the epilogue code, then the split's and the tail's (`tail_args`).
fn output_args(
    dev: &Device,
    out: &DeviceBuffer<f16>,
    s: GemmShape,
    epi: u32,
    split: Vec<KernelArg>,
    tail_args: Vec<KernelArg>,
) -> Result<Vec<KernelArg>> {
    let GemmShape { m, n, k } = s;
    let mut args = vec![KernelArg::TensorMap(output_map(dev, out, m, n)?)];
    if !tail_args.is_empty() {
        args.push(KernelArg::from(out));
    }
    // (check_shape has made sure each fits u32)
    args.extend([KernelArg::U32(m as u32), KernelArg::U32(n as u32), KernelArg::U32(k as u32), KernelArg::U32(epi)]);
    args.extend(split);
    args.extend(tail_args);
    Ok(args)
}

/// The persistent grid of an `m x n` launch in tiles `cols` wide over `splits` K chunks: one
/// CTA per SM (or `how.ctas`), at most one per work unit (tile x chunk).
fn grid(
    kernel: &str,
    dev: &Device,
    m: usize,
    n: usize,
    cols: usize,
    splits: usize,
    how: &GemmSm90Launch,
) -> Result<LaunchConfig> {
    if how.ctas == Some(0) {
        return Err(kerr(kernel, "a launch needs at least one CTA"));
    }
    let units = (tiles(m, n, cols) * splits).min(u32::MAX as usize) as u32;
    let ctas = how.ctas.unwrap_or_else(|| dev.multiprocessors()).min(units);
    Ok(LaunchConfig::linear(ctas, THREADS, smem(cols)))
}

/// The cluster size of an `_ln` launch of rows of `n` columns over `splits` K chunks as `how`
/// asks ([`Sm90Layernorm`]); `None`: the serial strip tail.
fn ln_cluster_of(kernel: &str, n: usize, splits: usize, how: &GemmSm90Launch) -> Result<Option<usize>> {
    let cs = if splits > 1 { None } else { cluster_size(n) };
    match how.layernorm {
        Sm90Layernorm::Strip => Ok(None),
        Sm90Layernorm::Auto => Ok(cs),
        Sm90Layernorm::Cluster => cs.map(Some).ok_or_else(|| {
            kerr(
                kernel,
                format!(
                    "the cluster layernorm needs an unsplit launch and N <= {CLUSTER_LN_MAX} (N = {n}, {splits} K chunks)"
                ),
            )
        }),
    }
}

/// An H100's GPCs and the fewest SMs one of them has (132 SMs in 8 GPCs of 16 to 18).
const GPCS: usize = 8;
const MIN_GPC_SMS: usize = 16;

/// Clusters of `cs` CTAs (one CTA per SM) that run at once, at most: a cluster never spans GPCs,
/// so each GPC holds `16 / cs` whole clusters: 64 of 2, 40 of 3, 32 of 4, 16 of 8. **To confirm
/// on a GPU** (`cudaOccupancyMaxActiveClusters`); a larger grid would run its extra clusters after
/// the rest.
pub fn max_clusters(cs: usize) -> usize {
    GPCS * (MIN_GPC_SMS / cs.max(1))
}

/// The grid of a cluster entry of `cs` CTAs: `cs` x min(strips, [`max_clusters`]) CTAs, or `how.ctas`
/// rounded down to a multiple of `cs` (at least one cluster, at most one per strip); the
/// clusters walk the 128-row strips.
fn cluster_grid(kernel: &str, m: usize, cs: usize, how: &GemmSm90Launch) -> Result<LaunchConfig> {
    if how.ctas == Some(0) {
        return Err(kerr(kernel, "a launch needs at least one CTA"));
    }
    let strips = m.div_ceil(BM);
    let clusters = match how.ctas {
        Some(c) => (c as usize / cs).max(1),
        None => max_clusters(cs),
    }
    .min(strips);
    Ok(LaunchConfig::linear((clusters * cs) as u32, THREADS, smem(cluster_cols(cs))))
}

/// The arguments of a cluster entry after the operands: the tensor map of `ln.out` (the 64 x
/// 64 boxes of the store epilogue), M, N, K, the epilogue code, then the layernorm's (as
/// [`ln_args`] less `ln.out` and the strip counters: the cluster entries need none).
fn cluster_args(dev: &Device, kernel: &str, ln: &FusedLayerNorm<'_>, s: GemmShape, epi: u32) -> Result<Vec<KernelArg>> {
    let GemmShape { m, n, k } = s;
    let mut args = ln_operands(kernel, ln, m, n)?;
    // gamma, beta, ln_out, q_out, q_scale, q_smooth: ln_out goes as the tensor map
    args.remove(2);
    args.push(KernelArg::F32(ln.eps));
    let mut all = vec![
        KernelArg::TensorMap(output_map(dev, ln.out, m, n)?),
        KernelArg::U32(m as u32),
        KernelArg::U32(n as u32),
        KernelArg::U32(k as u32),
        KernelArg::U32(epi),
    ];
    all.extend(args);
    Ok(all)
}

/// The fp16 GEMM on the Hopper kernel into `out` `[m, n]`. Needs an sm_90 device (a CUDA
/// H100/H200, or the emulator with `Arch::Sm90`): elsewhere the module does not load.
pub fn gemm_f16_sm90(
    dev: &Device,
    g: &GemmF16<'_>,
    out: &mut DeviceBuffer<f16>,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    f16_launch(dev, g, out, None, how)
}

/// [`gemm_f16_sm90`] with the layernorm of the output rows fused in: `ln.out = LN(out)` (and its
/// int8 codes with `ln.q8`) in the Hopper family's blocked reduction order
/// (`kernels/ln_blocked.cuh`): within fp16 rounding of [`crate::layernorm_f16`] on `out`, and the
/// same bits whichever way the launch runs ([`Sm90Layernorm`]: the cluster entries, the serial
/// strip tail, split or not) and whatever M. `N <= 1024`, a multiple of 8.
///
/// With the cluster entries ([`Sm90Layernorm::Auto`] on an unsplit launch, or `Cluster`) `out`
/// is NOT written: y = GEMM + bias + residual stays on chip. The strip tail stores it, and `ws`
/// holds its row-strip counters (one per 128 rows; zero between launches, as every launch leaves
/// them).
pub fn gemm_f16_sm90_ln(
    dev: &Device,
    g: &GemmF16<'_>,
    out: &mut DeviceBuffer<f16>,
    ln: &FusedLayerNorm<'_>,
    ws: &SplitWorkspace,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    f16_launch(dev, g, out, Some((ln, ws)), how)
}

fn f16_launch(
    dev: &Device,
    g: &GemmF16<'_>,
    out: &mut DeviceBuffer<f16>,
    ln: Option<(&FusedLayerNorm<'_>, &SplitWorkspace)>,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    let base = if ln.is_some() { KERNEL_LN } else { KERNEL };
    check_shape(base, g.shape, 8)?;
    let GemmShape { m, n, k } = g.shape;
    let mut cols = how.resolve_cols(m, n, k, false);
    let (splits, mut split) = split_args(base, g.shape, false, cols, &how)?;
    let cluster = match ln {
        Some(_) => ln_cluster_of(base, n, splits, &how)?,
        None => None,
    };
    let kernel = match cluster {
        Some(cs) => {
            cols = cluster_cols(cs);
            split = Vec::new();
            cluster_kernel_name(false, cs).expect("a cluster size of cluster_size")
        }
        None => kernel_name(Sm90Entry::of(false, ln.is_some()), cols, splits > 1),
    };
    check_len(kernel, "a", g.a, m * k)?;
    check_len(kernel, "w", g.w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_epilogue(kernel, g.bias, &g.epilogue, m, n)?;
    check_align(kernel, "a", g.a, 16)?;
    check_align(kernel, "w", g.w, 16)?;
    check_align(kernel, "out", out, 16)?;
    let cfg = match cluster {
        Some(cs) => cluster_grid(kernel, m, cs, &how)?,
        None => grid(kernel, dev, m, n, cols, splits, &how)?,
    };
    let tma_a = operand_map(dev, g.a, TensorMapDtype::F16, m, k, BM)?;
    let tma_w = operand_map(dev, g.w, TensorMapDtype::F16, n, k, cols)?;
    let mut args =
        vec![KernelArg::TensorMap(tma_a), KernelArg::TensorMap(tma_w), opt_ptr(g.bias), g.epilogue.residual_arg()];
    if let (Some(_), Some((ln, _))) = (cluster, ln) {
        args.extend(cluster_args(dev, kernel, ln, g.shape, g.epilogue.code())?);
        return dev.launch_in(MODULE, kernel, cfg, &args);
    }
    let tail = match ln {
        Some((ln, ws)) => ln_args(kernel, ln, (BM, STRIP_COUNTERS), m, n, Some(ws))?,
        None => Vec::new(),
    };
    args.extend(output_args(dev, out, g.shape, g.epilogue.code(), split, tail)?);
    // by module: a device that did not load the sm_90a module (not an sm_90) says so
    dev.launch_in(MODULE, kernel, cfg, &args)
}

/// The checks of a W8A8 `_sm90` launch's operands (`g.a` `[m, k]` codes with per-row scales and
/// zero points, `g.w` `[n, k]` with per-column scales and sums, the epilogue's vectors): lengths,
/// the alignments TMA and the epilogue's vector loads need, and K's int32 limit with zero points.
pub(crate) fn check_int8_operands(kernel: &str, g: &GemmInt8<'_>, m: usize, n: usize, k: usize) -> Result<()> {
    check_int8_lengths(kernel, g, m, n, k)?;
    check_align(kernel, "a", g.a, 16)?;
    check_align(kernel, "w", g.w, 16)?;
    check_align(kernel, "a_scale", g.a_scale, 4)?;
    check_align(kernel, "w_scale", g.w_scale, 8)?;
    if let Some(zp) = g.zero_point {
        check_align(kernel, "zero", zp.zero, 4)?;
        check_align(kernel, "w_sum", zp.w_sum, 8)?;
    }
    Ok(())
}

/// The W8A8 GEMM on the Hopper kernel into `out` `[m, n]` (fp16): what
/// [`gemm_int8`](crate::gemm_int8()) computes, bit for bit (same zero-point correction, scales,
/// bias and epilogue, in the same float operations). Needs an sm_90 device. Requirements: `K %
/// 16 == 0`, `N % 8 == 0`, `a`, `w` and `out` 16-byte aligned, `w_scale` (and `w_sum`) 8-byte aligned;
/// with zero points `K <= 65536` (int32 accumulators, as gemm_int8).
pub fn gemm_int8_sm90(
    dev: &Device,
    g: &GemmInt8<'_>,
    out: &mut DeviceBuffer<f16>,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    int8_launch(dev, g, out, Tail::None, how)
}

/// [`gemm_int8_sm90`] with the asymmetric per-row int8 quantisation of the output fused in:
/// `qa` receives the codes, scales and zero points [`crate::quantize_i8`] (with a zero point,
/// and `qa.smooth`) gives on [`gemm_int8_sm90`]'s fp16 output y, bit for bit. Unsplit (and
/// [`Sm90Qa::Auto`]), a cluster of [`QA_CLUSTER`] CTAs computes each 128-row strip's tiles and
/// quantises the strip together ([`KERNEL_INT8_CQA`]: per-row ranges combined through
/// distributed shared memory, each CTA coding its own columns); else the last tile of each
/// strip quantises the strip (its rows read back through L2), with `ws`'s strip counters (one
/// per 128 rows, zero between launches, as every launch leaves them). `qa.q` must not overlap
/// `g.a`.
///
/// `out` receives y with the strip-tail entries, and with the cluster entry where N > 3072
/// (or with [`Sm90Qa::ClusterStored`]). With the cluster entry at N <= 3072 ([`qa_resident`]:
/// BERT-base's FFN1 included) y stays in shared memory and `out` is NOT written (it must
/// still be `m x n` and 16-byte aligned): only the codes, scales and zero points are outputs.
pub fn gemm_int8_sm90_qa(
    dev: &Device,
    g: &GemmInt8<'_>,
    out: &mut DeviceBuffer<f16>,
    qa: &FusedQuantize<'_>,
    ws: &SplitWorkspace,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    int8_launch(dev, g, out, Tail::Quantize(qa, ws), how)
}

/// [`gemm_int8_sm90`] with the layernorm of the output rows fused in, as
/// [`gemm_f16_sm90_ln`] (the cluster entries do not write `out`); `ln.q8` may overwrite the GEMM's own int8 input `a` when it has the same
/// `[m, n]` layout (a strip is normalised only after every tile reading its rows is done).
pub fn gemm_int8_sm90_ln(
    dev: &Device,
    g: &GemmInt8<'_>,
    out: &mut DeviceBuffer<f16>,
    ln: &FusedLayerNorm<'_>,
    ws: &SplitWorkspace,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    int8_launch(dev, g, out, Tail::LayerNorm(ln, ws), how)
}

fn int8_launch(
    dev: &Device,
    g: &GemmInt8<'_>,
    out: &mut DeviceBuffer<f16>,
    tail: Tail<'_>,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    let kind = match tail {
        Tail::None => Sm90Entry::Int8,
        Tail::LayerNorm(..) => Sm90Entry::Int8Ln,
        Tail::Quantize(..) => Sm90Entry::Int8Qa,
    };
    let base = kernel_name(kind, COLS[0], false);
    check_shape(base, g.shape, 16)?;
    let GemmShape { m, n, k } = g.shape;
    let mut cols = how.resolve_cols(m, n, k, true);
    let (splits, mut split) = split_args(base, g.shape, true, cols, &how)?;
    let ln_cluster = match tail {
        Tail::LayerNorm(..) => ln_cluster_of(base, n, splits, &how)?,
        _ => None,
    };
    // the quantising cluster entry: unsplit launches (128 x 192 tiles)
    let qa_cluster = matches!(tail, Tail::Quantize(..))
        && ((splits == 1 && how.qa == Sm90Qa::Auto) || how.qa == Sm90Qa::ClusterStored);
    // y kept on chip (`out` not written) where every CTA owns at most QA_RESIDENT_TILES tiles
    let resident = qa_cluster && how.qa == Sm90Qa::Auto && qa_resident(n);
    let kernel = match ln_cluster {
        Some(cs) => {
            cols = cluster_cols(cs);
            split = Vec::new();
            cluster_kernel_name(true, cs).expect("a cluster size of cluster_size")
        }
        None if qa_cluster => {
            cols = COLS[1];
            split = Vec::new(); // K unsplit (ClusterStored whatever the split asked)
            KERNEL_INT8_CQA
        }
        None => kernel_name(kind, cols, splits > 1),
    };
    check_int8_operands(kernel, g, m, n, k)?;
    check_len(kernel, "out", out, m * n)?;
    check_align(kernel, "out", out, 16)?;
    let cfg = match ln_cluster {
        Some(cs) => cluster_grid(kernel, m, cs, &how)?,
        None if qa_cluster => {
            if how.ctas == Some(0) {
                return Err(kerr(kernel, "a launch needs at least one CTA"));
            }
            LaunchConfig::linear(qa_cluster_ctas(m, how.ctas) as u32, THREADS, smem(cols))
        }
        None => grid(kernel, dev, m, n, cols, splits, &how)?,
    };
    let tma_a = operand_map(dev, g.a, TensorMapDtype::S8, m, k, BM)?;
    let tma_w = operand_map(dev, g.w, TensorMapDtype::S8, n, k, cols)?;
    let mut args = vec![
        KernelArg::TensorMap(tma_a),
        KernelArg::from(g.a_scale),
        opt_ptr(g.zero_point.map(|z| z.zero)),
        KernelArg::TensorMap(tma_w),
        KernelArg::from(g.w_scale),
        opt_ptr(g.zero_point.map(|z| z.w_sum)),
        opt_ptr(g.bias),
        g.epilogue.residual_arg(),
    ];
    if let (Some(_), Tail::LayerNorm(ln, _)) = (ln_cluster, tail) {
        args.extend(cluster_args(dev, kernel, ln, g.shape, g.epilogue.code())?);
        return dev.launch_in(MODULE_INT8, kernel, cfg, &args);
    }
    let tail = match tail {
        Tail::None => Vec::new(),
        Tail::LayerNorm(ln, ws) => ln_args(kernel, ln, (BM, STRIP_COUNTERS), m, n, Some(ws))?,
        Tail::Quantize(qa, ws) => {
            let mut args = qa_args(kernel, qa, g.a, g.shape, (!qa_cluster).then_some(ws))?;
            if qa_cluster {
                args.push(KernelArg::U32(u32::from(resident)));
            }
            args
        }
    };
    args.extend(output_args(dev, out, g.shape, g.epilogue.code(), split, tail)?);
    dev.launch_in(MODULE_INT8, kernel, cfg, &args)
}

/// The int8 Hopper main loop writing the raw s32 accumulators `out[m, n] = a . w^T` (bit-exact
/// verification of the integer path). Requirements as [`gemm_int8_sm90`], `out` 8-byte aligned.
pub fn gemm_int8_i32_sm90(
    dev: &Device,
    a: &DeviceBuffer<i8>,
    w: &DeviceBuffer<i8>,
    out: &mut DeviceBuffer<i32>,
    shape: GemmShape,
    how: GemmSm90Launch<'_>,
) -> Result<()> {
    let (m32, n32, k32) = check_shape(KERNEL_INT8_I32, shape, 16)?;
    let GemmShape { m, n, k } = shape;
    let cols = how.resolve_cols(m, n, k, true);
    let (splits, split) = split_args(KERNEL_INT8_I32, shape, true, cols, &how)?;
    let kernel = entry(&I32_ENTRIES, cols, splits > 1);
    check_len(kernel, "a", a, m * k)?;
    check_len(kernel, "w", w, n * k)?;
    check_len(kernel, "out", out, m * n)?;
    check_align(kernel, "a", a, 16)?;
    check_align(kernel, "w", w, 16)?;
    check_align(kernel, "out", out, 8)?;
    let cfg = grid(kernel, dev, m, n, cols, splits, &how)?;
    let tma_a = operand_map(dev, a, TensorMapDtype::S8, m, k, BM)?;
    let tma_w = operand_map(dev, w, TensorMapDtype::S8, n, k, cols)?;
    let mut args = vec![
        KernelArg::TensorMap(tma_a),
        KernelArg::TensorMap(tma_w),
        KernelArg::from(&*out),
        KernelArg::U32(m32),
        KernelArg::U32(n32),
        KernelArg::U32(k32),
    ];
    args.extend(split);
    dev.launch_in(MODULE_INT8, kernel, cfg, &args)
}
