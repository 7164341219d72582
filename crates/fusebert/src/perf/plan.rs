//! The forward pass's launch plan, computed from the config and the sequence lengths alone:
//! every launch `DeviceBert::forward` makes, in order, with its grid, block and shared memory
//! (the launch wrappers' rules, restated), its useful FLOPs, the tensor-core FLOPs it executes
//! (tiles padded past the matrix edges included), the bytes it must move at least, and the
//! global loads it issues (tile re-reads included). No weights, no device: BERT-large at
//! 32x384 plans in microseconds. `tests/perf_plan.rs` checks every field against the
//! emulator's counters on small shapes, launch by launch.
use serde::Serialize;

use crate::kernels::gemm_int8::{gemm_kernel, Tile};
use crate::kernels::gemm_plan::{fuses_layernorm, GemmPlan};
use crate::kernels::quantize as kq;
use crate::kernels::{attention as attn, embedding as emb, gather as kgather, ids, layernorm as kln, pooling as kpool};
use crate::model::forward::OutputSelection;
use crate::model::schedule::{
    fuses_qkv_attention, schedule, LayerGemm, LayerNorm, LayerNormOut, Quantized, ScheduleShape, Step,
};
use crate::model::{BertConfig, BertModel, Precision};

use super::sm90::{self, KernelFamily, Sm90Tile};
use crate::kernels::gemm_sm90::Sm90Entry;

/// What the forward pass runs besides the encoder and the pooling: the heads whose outputs
/// were asked for ([`Heads::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// The pooler runs (gather `[CLS]` rows + GEMM with tanh).
    pub pooler: bool,
    /// Labels of the classifier, which runs after the pooler when non-zero; padded to 16 on
    /// the device.
    pub labels: usize,
}

impl Heads {
    /// What `DeviceBert` runs for `model` when asked for `outputs`: the pooler for its own
    /// output or for the logits, the classifier for the logits, each only when the model has
    /// it. Embeddings (the default of `roofline`) run neither.
    pub fn of(model: &BertModel, outputs: OutputSelection) -> Heads {
        let pooler = model.weights.pooler.is_some();
        let labels = model.weights.classifier.as_ref().map_or(0, |c| c.labels.len());
        let classifier = outputs.logits && pooler && labels > 0;
        Heads { pooler: pooler && (outputs.pooler || classifier), labels: if classifier { labels } else { 0 } }
    }

    /// Neither the pooler nor a classifier: a pass asking for embeddings (or hidden states).
    pub const NONE: Heads = Heads { pooler: false, labels: 0 };
}

/// One planned kernel launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedLaunch {
    pub kernel: String,
    /// What it computes, e.g. `"qkv"`, `"attention"`, `"ln1"`.
    pub step: &'static str,
    /// Encoder layer, or `None` for the embeddings and the heads.
    pub layer: Option<usize>,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block.
    pub shared_mem_bytes: u32,
    /// `(m, n, k)` of a GEMM.
    pub gemm: Option<(usize, usize, usize)>,
    /// Useful FLOPs of the matrix products (2 per multiply-add): `2 m n k` for a GEMM,
    /// `4 heads d sum(len^2)` for attention; elementwise work is not counted.
    pub flops: u64,
    /// Tensor-core FLOPs executed: the matrix products over whole tiles (the emulator's
    /// `2 * tensor_macs`).
    pub tensor_flops: u64,
    /// The part of `tensor_flops` that is attention's in a launch that also runs a GEMM (the
    /// fused QKV attention: its GEMM and its attention reach different fractions of the
    /// peak); 0 elsewhere.
    pub attention_tensor_flops: u64,
    /// Least bytes loaded: each weight and input activation once.
    pub min_load_bytes: u64,
    /// Global loads issued by the kernel (what the emulator counts), tile re-reads included.
    pub load_bytes: u64,
    /// Bytes stored (each output once: the kernels store nothing twice).
    pub store_bytes: u64,
    /// Bytes that must stay in L2 for the re-reads (`load_bytes - min_load_bytes`) to hit,
    /// whatever the grid: a GEMM's weight matrix (blocks sweep N fastest, so a weight tile is
    /// next read one row block later); 0 elsewhere (per-block parameters are tiny).
    pub reuse_bytes: u64,
    /// Re-read bytes each resident block adds: a GEMM block's share of its A row strip
    /// (`bm k / grid_n`), an attention block's share of its sequence's K/V.
    pub reuse_bytes_per_block: u64,
    /// Bytes one block moves alone after the rest of the grid is done (a serial tail no other
    /// block overlaps): a split-K GEMM's last block per tile reading its tile's partial sums.
    pub tail_bytes: u64,
    /// Tensor FLOPs one CTA computes alone after the rest of the grid is done (the attention
    /// block's last sequence's output tile, on one SM's share of the peak).
    pub tail_tensor_flops: u64,
    /// Useful FLOPs of a GEMM the launch runs besides `gemm` (the attention block's
    /// attention-out projection: `2 t h h`); 0 elsewhere. In `flops` too.
    pub extra_gemm_flops: u64,
    /// An `_sm90` GEMM's tiling (what [`sm90::choose_gemm`] gave the launch); `None` elsewhere.
    pub sm90_tile: Option<Sm90Tile>,
    /// A persistent launch's phases, one after the other (the FFN block: FFN1's GEMM, FFN2's,
    /// LN2's rows), each planned as a launch of its own on the same grid; the launch's counts
    /// are their sums. Empty elsewhere.
    pub parts: Vec<PlannedLaunch>,
}

impl PlannedLaunch {
    pub fn blocks(&self) -> u64 {
        self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64
    }
    pub fn threads_per_block(&self) -> u32 {
        self.block.0 * self.block.1 * self.block.2
    }
    /// Bytes of the working set this launch touches once (inputs and outputs).
    pub fn min_bytes(&self) -> u64 {
        self.min_load_bytes + self.store_bytes
    }
    /// The launch's GEMMs: itself, or its parts.
    pub fn gemm_launches(&self) -> impl Iterator<Item = &PlannedLaunch> {
        let own = self.parts.is_empty().then_some(self);
        own.into_iter().chain(self.parts.iter())
    }
}

/// The launch plan of one forward pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchPlan {
    pub launches: Vec<PlannedLaunch>,
    pub tokens: usize,
    pub sequences: usize,
    /// The family of the GEMM and attention kernels (every other kernel is shared).
    pub kernel_family: KernelFamily,
}

impl LaunchPlan {
    pub fn flops(&self) -> u64 {
        self.launches.iter().map(|l| l.flops).sum()
    }
    /// FLOPs of the GEMMs only (a fused QKV attention launch counts its GEMM's).
    pub fn gemm_flops(&self) -> u64 {
        let of = |l: &PlannedLaunch| {
            let Some((m, n, k)) = l.gemm else { return 0 };
            (2 * m * n * k) as u64 + l.extra_gemm_flops
        };
        self.launches.iter().flat_map(|l| l.gemm_launches()).map(of).sum()
    }
    pub fn min_bytes(&self) -> u64 {
        self.launches.iter().map(|l| l.min_bytes()).sum()
    }
}

/// Element sizes and flags of the precision.
#[derive(Clone, Copy)]
struct Prec {
    int8: bool,
}

/// Builds the plan of `DeviceBert::forward` over sequences of `lengths` tokens: one planned
/// launch per step of the forward pass's schedule (`model::schedule`, the list the device
/// forward pass launches), with the launch wrappers' geometry. The calibrated int8 path (what
/// every front end builds) is assumed, with SmoothQuant multipliers on the QKV and FFN1 inputs.
pub fn forward_plan(c: &BertConfig, precision: Precision, lengths: &[usize], heads: Heads) -> LaunchPlan {
    forward_plan_for(c, precision, lengths, heads, KernelFamily::Sm80)
}

/// [`forward_plan`] with the GEMMs and the attention of `family`: for
/// [`KernelFamily::Sm80`] the `mma.sync` kernels (the same plan), for [`KernelFamily::Sm90`]
/// the Hopper kernels (`*_sm90`, see [`sm90`]) in place of each GEMM and attention launch, the
/// same schedule otherwise (the same fusions, quantize steps and layernorms: the `_sm90`
/// kernels replace launches one for one), except on the int8 path, where FFN1 quantises its
/// own output for FFN2 (`gemm_int8_sm90*_qa`, `fuse_quantize`) and no `quantize_ffn` launch
/// follows it, as in the forward pass.
pub fn forward_plan_for(
    c: &BertConfig,
    precision: Precision,
    lengths: &[usize],
    heads: Heads,
    family: KernelFamily,
) -> LaunchPlan {
    let p = Prec { int8: precision == Precision::Int8 };
    let t: usize = lengths.iter().sum();
    let b = lengths.len();
    let shape = ScheduleShape {
        layers: c.num_hidden_layers,
        precision,
        fuse_layernorm: fuses_layernorm(c.hidden_size),
        projection: c.embedding_size != c.hidden_size,
        pooler: heads.pooler,
        classifier: heads.pooler && heads.labels > 0,
        // the forward pass's rule (`DeviceBert::fuses_ffn_quantize`)
        fuse_ffn_quantize: family == KernelFamily::Sm90
            && p.int8
            && crate::kernels::gemm_sm90::supports(
                crate::kernels::GemmShape { m: 1, n: c.intermediate_size, k: c.hidden_size },
                true,
            ),
        // the forward pass's rule (`DeviceBert::fuses_qkv_attention`)
        fuse_qkv_attention: family == KernelFamily::Sm90
            && crate::kernels::gemm_sm90::supports(
                crate::kernels::GemmShape { m: 1, n: 3 * c.hidden_size, k: c.hidden_size },
                p.int8,
            )
            && fuses_qkv_attention(c.num_attention_heads, c.head_dim(), lengths),
        // the forward pass's rule (`DeviceBert::schedule`)
        attention_quantizes_context: family == KernelFamily::Sm90 && p.int8,
        // the forward pass's rule (`DeviceBert::attention_blocks`)
        attention_block: crate::model::schedule::takes_attention_blocks(precision, c.hidden_size),
        // the forward pass's rule (`DeviceBert::ffn_block_cols`)
        ffn_block: ffn_block_cols(c, t).filter(|_| family == KernelFamily::Sm90 && !p.int8),
    };
    let launches = schedule(shape)
        .into_iter()
        .map(|step| match family {
            KernelFamily::Sm80 => planned(c, p, lengths, heads, step),
            KernelFamily::Sm90 => planned_sm90(c, p, lengths, heads, step),
        })
        .collect();
    LaunchPlan { launches, tokens: t, sequences: b, kernel_family: family }
}

/// The planned launch of one step with the `_sm90` GEMMs and attention.
fn planned_sm90(c: &BertConfig, p: Prec, lengths: &[usize], heads: Heads, step: Step) -> PlannedLaunch {
    let (t, b) = (lengths.iter().sum::<usize>(), lengths.len());
    let (h, f, e) = (c.hidden_size, c.intermediate_size, c.embedding_size);
    let fp16 = Prec { int8: false };
    let not_last = |l: usize| l + 1 < c.num_hidden_layers;
    match step {
        Step::Projection => gemm_sm90(fp16, "projection", None, t, h, e, Epi::None, false, Sm90Tail::None),
        Step::Gemm { layer, gemm: g, layernorm, quantize } => {
            let (m, n, k, epi, asym) = match g {
                LayerGemm::Qkv => (t, 3 * h, h, Epi::None, false),
                LayerGemm::AttnOut => (t, h, h, Epi::Residual, false),
                LayerGemm::Ffn1 => (t, f, h, Epi::Gelu, false),
                LayerGemm::Ffn2 => (t, h, f, Epi::Residual, true),
            };
            let tail = match layernorm {
                // LN1's codes feed FFN1 (smoothed); LN2's the next layer's QKV (smoothed)
                Some(out) => Sm90Tail::LayerNorm { q8: out.q8, smooth: out.which == LayerNorm::Ln1 || not_last(layer) },
                // FFN2's input is not smoothed (see forward_plan)
                None if quantize => Sm90Tail::Quantize { smooth: false },
                None => Sm90Tail::None,
            };
            gemm_sm90(p, g.name(), Some(layer), m, n, k, epi, asym, tail)
        }
        Step::Attention { layer } => attention_sm90(p, lengths, c.num_attention_heads, c.head_dim(), Some(layer)),
        Step::QkvAttention { layer } => qkv_attention_sm90(p, lengths, c.num_attention_heads, c.head_dim(), layer),
        Step::AttentionBlock { layer, ln1 } => {
            attention_block_sm90(p, lengths, c.num_attention_heads, c.head_dim(), layer, ln1.q8)
        }
        Step::FfnBlock { layer, ln2, cols } => ffn_block_sm90(c, t, layer, cols, ln2),
        Step::Pooler => gemm_sm90(fp16, "pooler", None, b, h, h, Epi::Tanh, false, Sm90Tail::None),
        Step::Classifier => {
            let n = heads.labels.next_multiple_of(16);
            gemm_sm90(fp16, "classifier", None, b, n, h, Epi::None, false, Sm90Tail::None)
        }
        other => planned(c, p, lengths, heads, other),
    }
}

/// The planned launch of one step.
fn planned(c: &BertConfig, p: Prec, lengths: &[usize], heads: Heads, step: Step) -> PlannedLaunch {
    let (t, b) = (lengths.iter().sum::<usize>(), lengths.len());
    let (h, f, e) = (c.hidden_size, c.intermediate_size, c.embedding_size);
    let fp16 = Prec { int8: false };
    let not_last = |l: usize| l + 1 < c.num_hidden_layers;
    match step {
        Step::Embedding => embedding(c, lengths),
        Step::Projection => gemm(fp16, "projection", None, t, h, e, Epi::None, false),
        Step::Quantize { layer, what: Quantized::Embeddings } => quantize(t, h, false, true, layer),
        Step::Quantize { layer, what: Quantized::Context } => quantize(t, h, false, false, layer),
        Step::Quantize { layer, what: Quantized::Ffn } => quantize(t, f, true, false, layer),
        Step::Gemm { layer, gemm: g, layernorm, .. } => {
            let li = Some(layer);
            let (m, n, k, epi, asym) = match g {
                LayerGemm::Qkv => (t, 3 * h, h, Epi::None, false),
                LayerGemm::AttnOut => (t, h, h, Epi::Residual, false),
                LayerGemm::Ffn1 => (t, f, h, Epi::Gelu, false),
                LayerGemm::Ffn2 => (t, h, f, Epi::Residual, true),
            };
            match layernorm {
                None => layer_gemm(p, g.name(), li, m, n, k, epi, asym),
                Some(out) => {
                    let plan = GemmPlan::choose_with_layernorm(m, n, k, p.int8);
                    let planned = planned_gemm(p, g.name(), li, m, n, k, epi, asym, plan);
                    // LN1's codes feed FFN1 (smoothed); LN2's the next layer's QKV (smoothed)
                    let smooth = out.which == LayerNorm::Ln1 || not_last(layer);
                    with_layernorm(planned, plan, t, h, out.q8, smooth)
                }
            }
        }
        Step::Attention { layer } => attention(lengths, c.num_attention_heads, c.head_dim(), Some(layer)),
        // (only the Hopper plans schedule them: `fuse_qkv_attention`)
        Step::QkvAttention { layer } => qkv_attention_sm90(p, lengths, c.num_attention_heads, c.head_dim(), layer),
        Step::AttentionBlock { layer, ln1 } => {
            attention_block_sm90(p, lengths, c.num_attention_heads, c.head_dim(), layer, ln1.q8)
        }
        Step::FfnBlock { layer, ln2, cols } => ffn_block_sm90(c, t, layer, cols, ln2),
        Step::LayerNorm { layer, out } => {
            let smooth = out.which == LayerNorm::Ln1 || not_last(layer);
            layernorm(out.q8, smooth, t, h, out.which.name(), Some(layer))
        }
        Step::Pool => pool(b, t, h),
        Step::GatherCls => gather(b, h),
        Step::Pooler => gemm(fp16, "pooler", None, b, h, h, Epi::Tanh, false),
        Step::Classifier => gemm(fp16, "classifier", None, b, heads.labels.next_multiple_of(16), h, Epi::None, false),
    }
}

fn linear(grid: usize, threads: u32, shared: usize) -> ((u32, u32, u32), (u32, u32, u32), u32) {
    ((grid as u32, 1, 1), (threads, 1, 1), shared as u32)
}

/// A launch configuration of the kernels crate as the plan's (grid, block, shared) triple.
fn geom(c: &crate::LaunchConfig) -> ((u32, u32, u32), (u32, u32, u32), u32) {
    (c.grid, c.block, c.shared_mem_bytes)
}

#[allow(clippy::too_many_arguments)] // one record: every field of a launch
fn launch(
    kernel: &str,
    step: &'static str,
    layer: Option<usize>,
    cfg: ((u32, u32, u32), (u32, u32, u32), u32),
    flops: u64,
    min_load: usize,
    load: usize,
    store: usize,
) -> PlannedLaunch {
    PlannedLaunch {
        kernel: kernel.into(),
        step,
        layer,
        grid: cfg.0,
        block: cfg.1,
        shared_mem_bytes: cfg.2,
        gemm: None,
        flops,
        tensor_flops: 0,
        attention_tensor_flops: 0,
        min_load_bytes: min_load as u64,
        load_bytes: load as u64,
        store_bytes: store as u64,
        reuse_bytes: 0,
        reuse_bytes_per_block: 0,
        tail_bytes: 0,
        tail_tensor_flops: 0,
        extra_gemm_flops: 0,
        sm90_tile: None,
        parts: Vec::new(),
    }
}

/// Gather of word/position/type rows + layernorm, in the launch wrapper's geometry
/// (`embedding::geometry`): a warp per token, whose lane 0 reads the ids, and gamma/beta read
/// once per block (block per token on the wide path: all 256 threads read the ids, and each
/// block reads gamma and beta). The least bytes count each position row and token-type row
/// once (a batch uses `max_len` positions and at most `type_vocab_size` types: the same rows
/// for every sequence, which stay in L2).
fn embedding(c: &BertConfig, lengths: &[usize]) -> PlannedLaunch {
    let (t, h) = (lengths.iter().sum::<usize>(), c.hidden_size);
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let g = emb::geometry(t, h);
    let tables = if c.has_token_types { 3 } else { 2 };
    let type_rows = if c.has_token_types { c.type_vocab_size.min(t) } else { 0 };
    let shared_rows = (max_len + type_rows) * h * 2;
    let min = tables * 4 * t + t * h * 2 + shared_rows + 2 * h * 2;
    let ids = if g.warp_per_token { tables * 4 } else { g.threads as usize * tables * 4 };
    let params = if g.warp_per_token { g.blocks * 2 * h * 2 } else { t * 2 * h * 2 };
    let load = t * (ids + tables * h * 2) + params;
    let cfg = linear(g.blocks, g.threads, g.shared_bytes);
    let mut l = launch(g.kernel, "embedding", None, cfg, 0, min, load, t * h * 2);
    l.reuse_bytes = shared_rows as u64;
    l
}

/// Per-token int8 quantisation of `[t, k]` (asymmetric: + zero points).
fn quantize(t: usize, k: usize, asym: bool, smooth: bool, layer: Option<usize>) -> PlannedLaunch {
    let (name, cfg) = kq::geometry(t, k, asym);
    let min = t * k * 2 + if smooth { k * 2 } else { 0 };
    // each row's warp (or block) reads the multipliers again
    let load = t * k * 2 + if smooth { t * k * 2 } else { 0 };
    let store = t * k + 4 * t + if asym { 4 * t } else { 0 };
    let step = if asym {
        "quantize_ffn"
    } else if layer.is_some() {
        "quantize_ctx"
    } else {
        "quantize_emb"
    };
    launch(name, step, layer, geom(&cfg), 0, min, load, store)
}

/// Layernorm of `[t, h]`, optionally also emitting int8 codes + scales (with smoothing when
/// `smooth`: the next GEMM's multipliers).
fn layernorm(q8: bool, smooth: bool, t: usize, h: usize, step: &'static str, layer: Option<usize>) -> PlannedLaunch {
    let (name, cfg) = (kln::fast_kernel(h, q8), kln::geometry(t, h, q8));
    let grid = cfg.grid.0 as usize;
    let smooth_bytes = if q8 && smooth { h * 2 } else { 0 };
    let min = t * h * 2 + 2 * h * 2 + smooth_bytes;
    // every block stages gamma, beta (and the multipliers) in shared memory
    let load = t * h * 2 + grid * (2 * h * 2 + smooth_bytes);
    let store = t * h * 2 + if q8 { t * h + 4 * t } else { 0 };
    launch(name, step, layer, geom(&cfg), 0, min, load, store)
}

fn pool(b: usize, t: usize, h: usize) -> PlannedLaunch {
    let cfg = kpool::geometry(b, h);
    let threads = cfg.block.0;
    let min = t * h * 2 + 4 * (b + 1);
    // every thread reads its sequence's two offsets
    let load = t * h * 2 + b * threads as usize * 8;
    launch(ids::POOL_F16, "pool", None, geom(&cfg), 0, min, load, b * h * 4)
}

fn gather(b: usize, h: usize) -> PlannedLaunch {
    let cfg = kgather::geometry(b, h);
    let threads = cfg.block.0;
    let min = b * h * 2 + 4 * (b + 1);
    // the threads that copy a 16-byte vector read the two offsets
    let load = b * h * 2 + b * (h / 8).min(threads as usize) * 8;
    launch(ids::GATHER_FIRST_ROWS_F16, "gather_cls", None, geom(&cfg), 0, min, load, b * h * 2)
}

/// FlashAttention over packed sequences: a block per (query tile, head, sequence), in the
/// geometry the launch wrapper picks from the longest sequence (`attn::QueryTile::Auto`).
/// A head dim the device refuses (`DeviceBert` checks `attn::HEAD_DIMS`) is planned as
/// the next supported one.
fn attention(lengths: &[usize], heads: usize, d: usize, layer: Option<usize>) -> PlannedLaunch {
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let tile = attn::QueryTile::Auto.resolve(max_len);
    let supported = d.next_multiple_of(16).clamp(16, 128);
    let g = attn::geometry(tile, d).or_else(|_| attn::geometry(tile, supported)).expect("a supported head dim");
    let (tq, bn) = (g.tile_q, g.block_n);
    let (b, h, t) = (lengths.len(), heads * d, lengths.iter().sum::<usize>());
    let cfg = ((max_len.div_ceil(tq) as u32, heads as u32, b as u32), (g.threads, 1, 1), g.shared_bytes as u32);
    let flops: usize = lengths.iter().map(|&s| 4 * heads * d * s * s).sum();
    // executed: each live block runs QK^T and PV over whole query tiles and whole key tiles
    let tensor: usize = lengths.iter().map(|&s| s.div_ceil(tq) * heads * 4 * tq * s.next_multiple_of(bn) * d).sum();
    let min = t * 3 * h * 2 + 4 * (b + 1);
    let load = attention_loads(lengths, heads, d, max_len, &g);
    let mut l = launch(g.kernel, "attention", layer, cfg, flops as u64, min, load, t * h * 2);
    l.tensor_flops = tensor as u64;
    // a query tile's share of its (sequence, head)'s K and V
    l.reuse_bytes_per_block = (2 * tq * d * 2) as u64;
    l
}

/// Global loads of the attention kernel: every thread of every block reads its sequence's two
/// `cu_seqlens` entries; a live block loads its query rows once and all of its sequence's K and
/// V rows (one 16-byte chunk per 8 elements; rows past the end are zero-filled, not loaded).
fn attention_loads(lengths: &[usize], heads: usize, d: usize, max_len: usize, g: &attn::Geometry) -> usize {
    let blocks = max_len.div_ceil(g.tile_q) * heads * lengths.len();
    let per_block_cu = g.threads as usize * 8;
    let rows: usize = lengths
        .iter()
        .map(|&s| {
            let tiles = s.div_ceil(g.tile_q);
            heads * (s + tiles * 2 * s)
        })
        .sum();
    blocks * per_block_cu + rows * d * 2
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Epi {
    None,
    Gelu,
    Tanh,
    Residual,
}

/// A tensor-core GEMM `[m, k] x [n, k]^T` with bias and epilogue, unsplit (`kernels::gemm_f16`,
/// the heads); `asym` (int8 only): the input has per-token zero points.
#[allow(clippy::too_many_arguments)] // one GEMM: shape, precision and epilogue
fn gemm(
    p: Prec,
    step: &'static str,
    layer: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epi,
    asym: bool,
) -> PlannedLaunch {
    let plan = GemmPlan::unsplit(Tile::Auto, m, n, k, p.int8);
    planned_gemm(p, step, layer, m, n, k, epi, asym, plan)
}

/// An encoder layer's GEMM (`DeviceBert::gemm`): launched as [`GemmPlan::choose`] says, split
/// over K when that is predicted faster.
#[allow(clippy::too_many_arguments)] // one GEMM: shape, precision and epilogue
fn layer_gemm(
    p: Prec,
    step: &'static str,
    layer: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epi,
    asym: bool,
) -> PlannedLaunch {
    planned_gemm(p, step, layer, m, n, k, epi, asym, GemmPlan::choose(m, n, k, p.int8))
}

/// A GEMM launched as `plan` says. A split-K launch loads the operands once over its splits
/// like an unsplit one; the last block per tile runs the epilogue, after reading the tile's
/// partial sums, which every block stored (rows < m); its counter reset is an atomic (not a
/// store).
#[allow(clippy::too_many_arguments)] // one GEMM: shape, precision, epilogue and launch plan
fn planned_gemm(
    p: Prec,
    step: &'static str,
    layer: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epi,
    asym: bool,
    plan: GemmPlan,
) -> PlannedLaunch {
    let asym = asym && p.int8;
    let (bm, bn, threads, _) = plan.tile.dims();
    let base = if p.int8 { "gemm_int8_f16" } else { "gemm_f16" };
    let name = gemm_kernel(base, plan, false).unwrap_or(base);
    let (gm, gn) = (m.div_ceil(bm), n.div_ceil(bn));
    let e = if p.int8 { 1 } else { 2 };
    // per output column: bias (fp16), int8 weight scales (f32) and code sums (i32)
    let col_bytes = 2 + if p.int8 { 4 } else { 0 } + if asym { 4 } else { 0 };
    // per input row: int8 activation scale and zero point
    let row_bytes = if p.int8 { 4 } else { 0 } + if asym { 4 } else { 0 };
    let residual = if epi == Epi::Residual { m * n * 2 } else { 0 };
    let min = m * k * e + n * k * e + n * col_bytes + m * row_bytes + residual;
    // operand tiles: A once per column block, W once per row block; epilogue: each thread row
    // of a block (threads / (bn / 4): 8, or 4 on the 32x128 tile) reads its 4 columns'
    // parameters once, and every (row, 4 columns) its row's scale/zero point and residual
    let thread_rows = threads as usize / (bn / 4);
    let load = gn * m * k * e + gm * n * k * e + gm * thread_rows * n * col_bytes + m * (n / 4) * row_bytes + residual;
    let flops = 2 * m * n * k;
    let tensor = 2 * gm * bm * gn * bn * k;
    let partials = plan.partial_bytes(m, n);
    let store = m * n * 2 + partials;
    let cfg = geom(&plan.launch_config(m, n));
    let mut l = launch(name, step, layer, cfg, flops as u64, min, load + partials, store);
    if plan.splits > 1 {
        l.tail_bytes = (plan.splits * bm * bn * 4) as u64;
    }
    l.tensor_flops = tensor as u64;
    l.gemm = Some((m, n, k));
    l.reuse_bytes = (n * k * e + n * col_bytes) as u64;
    l.reuse_bytes_per_block = (bm * k * e).div_ceil(gn) as u64;
    l
}

/// `g` (a residual GEMM over rows of `h`, launched as `plan`) with the layernorm of its output
/// fused in (`*_ln`): the last tile of each row strip (the tile's rows) reads the strip's rows
/// back (`h` halves each, through L2), each of its warps with rows loads gamma and beta (and the
/// smoothing multipliers with `q8 && smooth`) once, and it stores the normalised rows (and
/// their int8 codes and scales with `q8`). The last strip's layernorm runs after every other
/// block is done: a serial tail of that strip's bytes at one SM's bandwidth.
fn with_layernorm(mut g: PlannedLaunch, plan: GemmPlan, t: usize, h: usize, q8: bool, smooth: bool) -> PlannedLaunch {
    let base = if g.kernel.starts_with("gemm_int8") { "gemm_int8_f16" } else { "gemm_f16" };
    g.kernel = gemm_kernel(base, plan, true).unwrap_or(base).to_string();
    g.step = match g.step {
        "attn_out" => "attn_out_ln1",
        _ => "ffn2_ln2",
    };
    let (strip, _, threads, _) = plan.tile.dims();
    fuse_layernorm(g, (strip, 1), threads as usize / 32, t, h, q8, smooth)
}

/// The byte counts of a layernorm over `h` columns fused into GEMM launch `g` whose row strips
/// are `strip` tokens and whose blocks have `warps` warps (see [`with_layernorm`]). The last
/// strip's rows are shared by `share` CTAs (1: its last tile's alone; an `_sm90` launch with a
/// unit per CTA: its tiles', [`sm90_strip_share`]).
#[allow(clippy::too_many_arguments)] // one fusion: the launch, its strips and the layernorm's output
fn fuse_layernorm(
    mut g: PlannedLaunch,
    (strip, share): (usize, usize),
    warps: usize,
    t: usize,
    h: usize,
    q8: bool,
    smooth: bool,
) -> PlannedLaunch {
    let params = (if q8 && smooth { 3 } else { 2 }) * h * 2;
    let strips: Vec<usize> = (0..t.div_ceil(strip)).map(|i| (t - i * strip).min(strip)).collect();
    let param_loads: usize = strips.iter().map(|&rows| rows.min(warps) * params).sum();
    let row_store = h * 2 + if q8 { h + 4 } else { 0 };
    g.load_bytes += (t * h * 2 + param_loads) as u64;
    g.store_bytes += (t * row_store) as u64;
    g.min_load_bytes += params as u64;
    let last = strips.first().copied().unwrap_or(0).div_ceil(share);
    g.tail_bytes += (last * (h * 2 + row_store) + last.min(warps) * params) as u64;
    g
}

/// The CTAs that share a strip's tail in an `_sm90` `_ln` / `_qa` launch (the kernels'
/// StripShare): with one work unit per CTA (units <= the grid) a strip's `tiles_n` tiles'
/// CTAs each normalise or code a share of its rows (every unit of the strip has started: the
/// grid is resident); otherwise the strip's last tile does all of them.
fn sm90_strip_share(tile: Sm90Tile, m: usize, n: usize) -> usize {
    if tile.units(m, n) <= tile.ctas(m, n) {
        n.div_ceil(tile.cols)
    } else {
        1
    }
}

/// What an `_sm90` GEMM runs on its row strips after their tiles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sm90Tail {
    None,
    /// The layernorm of its rows (`_ln`), with `q8` and `smooth` as in [`with_layernorm`].
    LayerNorm {
        q8: bool,
        smooth: bool,
    },
    /// The asymmetric int8 codes of its rows (`_qa`, [`fuse_quantize`]), times the next GEMM's
    /// multipliers when `smooth`.
    Quantize {
        smooth: bool,
    },
}

/// An `_sm90` GEMM `[m, k] x [n, k]^T` with bias and epilogue (`tail`: a layernorm or the int8
/// quantisation of its rows fused in), tiled as [`sm90::choose_gemm`] says or, where that
/// splits K ahead of a strip tail, as its cluster entry ([`sm90::cluster_alternative`]) if the
/// model predicts that faster: the same epilogue work as the `mma.sync` kernel's, operands by
/// TMA (A once per column tile, W once per row tile; TMA clips the edges, so nothing past them
/// is loaded), per-column parameters once per row tile and per-row ones once per column tile,
/// f32 partial sums stored by every split and read back by the last.
#[allow(clippy::too_many_arguments)] // one GEMM: shape, precision, epilogue and layernorm
fn gemm_sm90(
    p: Prec,
    step: &'static str,
    layer: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epi,
    asym: bool,
    tail: Sm90Tail,
) -> PlannedLaunch {
    let kind = match tail {
        Sm90Tail::None => Sm90Entry::of(p.int8, false),
        Sm90Tail::LayerNorm { .. } => Sm90Entry::of(p.int8, true),
        Sm90Tail::Quantize { .. } => Sm90Entry::Int8Qa,
    };
    let gemm = Sm90Gemm { p, step, layer, m, n, k, epi, asym, tail };
    let tiled = |tile| gemm_sm90_tiled(&gemm, kind, tile);
    let planned = tiled(sm90::choose_gemm(kind, m, n, k));
    // where the plan splits K and leaves the rows' layernorm or codes to the strip's last CTA,
    // the cluster entry gives the same bits: the faster of the two on an H100 runs
    match sm90::cluster_alternative(kind, m, n, k) {
        Some(tile) => {
            let cluster = tiled(tile);
            if predicted_kernel_us(&cluster) < predicted_kernel_us(&planned) {
                cluster
            } else {
                planned
            }
        }
        None => planned,
    }
}

/// The kernel time the roofline model predicts for `l` on an H100 SXM in a CUDA graph: what
/// decides between bit-identical `_sm90` launches of a GEMM ([`gemm_sm90`]). One GPU for every
/// device, as the kernels' own split rule (`gemm_sm90::SPLIT_SMS`): a launch is a function of
/// its shape alone.
fn predicted_kernel_us(l: &PlannedLaunch) -> f64 {
    static H100: std::sync::OnceLock<super::gpu::GpuSpec> = std::sync::OnceLock::new();
    let g = H100.get_or_init(|| super::gpu::gpu("h100-sxm").expect("a built-in GPU"));
    super::roofline::predict_launch(g, l, true).kernel_us
}

/// The predicted time of `l` on an H100 SXM in a CUDA graph (its kernel and graph node).
fn predicted_time_us(l: &PlannedLaunch) -> f64 {
    predicted_kernel_us(l) + super::gpu::gpu("h100-sxm").map_or(0.0, |g| g.graph_node_us)
}

/// The tile width of the FFN block (`ffn_block_f16_sm90*`) a pass over `t` tokens runs: the
/// width the roofline model predicts fastest on an H100 SXM in a CUDA graph, where that is
/// faster than the two launches it replaces (FFN1's and FFN2's + LN2's `_sm90` launches: the
/// same bits); `None` there, for an FFN the block does not take, and for int8 (fp16 only).
pub fn ffn_block_cols(c: &BertConfig, t: usize) -> Option<usize> {
    use crate::kernels::ffn_block_sm90 as kernel;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    if t == 0 || !kernel::supports(h, f) || !fuses_layernorm(h) {
        return None;
    }
    let p = Prec { int8: false };
    let ln2 = LayerNormOut { which: LayerNorm::Ln2, q8: false };
    let ffn = |gemm, layernorm| Step::Gemm { layer: 0, gemm, layernorm, quantize: false };
    let chain: f64 = [ffn(LayerGemm::Ffn1, None), ffn(LayerGemm::Ffn2, Some(ln2))]
        .into_iter()
        .map(|s| predicted_time_us(&planned_sm90(c, p, &[t], Heads::NONE, s)))
        .sum();
    kernel::COLS
        .into_iter()
        .map(|cols| (cols, predicted_time_us(&ffn_block_sm90(c, t, 0, cols, ln2))))
        .filter(|&(_, us)| us < chain)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(cols, _)| cols)
}

/// The tile the forward pass's `_sm90` launch of layer GEMM `step` over `tokens` tokens uses:
/// the plan's choice between a split and its cluster entry (a cluster when `cluster > 1`);
/// `None` for a step that is not a layer GEMM.
pub fn sm90_layer_tile(c: &BertConfig, precision: Precision, tokens: usize, step: Step) -> Option<Sm90Tile> {
    match step {
        Step::Gemm { .. } => {
            let p = Prec { int8: precision == Precision::Int8 };
            planned_sm90(c, p, &[tokens], Heads::NONE, step).sm90_tile
        }
        _ => None,
    }
}

/// The arguments of one [`gemm_sm90`] step.
#[derive(Clone, Copy)]
struct Sm90Gemm {
    p: Prec,
    step: &'static str,
    layer: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epi,
    asym: bool,
    tail: Sm90Tail,
}

/// [`gemm_sm90`]'s launch of `g` (PTX entry kind `kind`) in tiling `tile`.
fn gemm_sm90_tiled(g: &Sm90Gemm, kind: Sm90Entry, tile: Sm90Tile) -> PlannedLaunch {
    let Sm90Gemm { p, step, layer, m, n, k, epi, asym, tail } = *g;
    let asym = asym && p.int8;
    let name = sm90::gemm_kernel(kind, tile);
    let (gt, gw) = (m.div_ceil(tile.rows), n.div_ceil(tile.cols));
    let e = if p.int8 { 1 } else { 2 };
    let col_bytes = 2 + if p.int8 { 4 } else { 0 } + if asym { 4 } else { 0 };
    let row_bytes = if p.int8 { 4 } else { 0 } + if asym { 4 } else { 0 };
    let residual = if epi == Epi::Residual { m * n * 2 } else { 0 };
    let min = m * k * e + n * k * e + n * col_bytes + m * row_bytes + residual;
    let load = gw * m * k * e + gt * n * k * e + gt * n * col_bytes + gw * m * row_bytes + residual;
    // f32 partials of the warps with a row below m only (a short batch's tile is mostly empty)
    let live = crate::kernels::gemm_sm90::split_live_rows(m);
    let partials = if tile.splits > 1 { tile.splits * live * n * 4 } else { 0 };
    // whole tiles, K in whole 128-byte k-blocks (the wgmmas run over the last one's TMA zero
    // fill too); a strip's warpgroup with no row below m issues none
    let rows = crate::kernels::gemm_sm90::computed_rows(m);
    let tensor = 2 * rows * gw * tile.cols * k.next_multiple_of(128 / e);
    let cfg = ((tile.ctas(m, n) as u32, 1, 1), (tile.threads(), 1, 1), tile.shared_bytes());
    let mut l = launch(name, step, layer, cfg, (2 * m * n * k) as u64, min, load + partials, m * n * 2 + partials);
    if tile.splits > 1 {
        l.tail_bytes = (tile.splits * tile.rows.min(live) * tile.cols * 4) as u64;
    }
    l.tensor_flops = tensor as u64;
    l.gemm = Some((m, n, k));
    l.sm90_tile = Some(tile);
    l.reuse_bytes = (n * k * e + n * col_bytes) as u64;
    l.reuse_bytes_per_block = (tile.rows * k * e).div_ceil(gw) as u64;
    let warps = 4 * tile.consumers();
    match tail {
        Sm90Tail::None => l,
        Sm90Tail::LayerNorm { q8, smooth } => {
            let mut l = if tile.cluster > 1 {
                cluster_layernorm(l, tile, m, n, q8, smooth)
            } else {
                fuse_layernorm(l, (tile.rows.min(m), sm90_strip_share(tile, m, n)), warps, m, n, q8, smooth)
            };
            l.step = match l.step {
                "attn_out" => "attn_out_ln1",
                _ => "ffn2_ln2",
            };
            l
        }
        Sm90Tail::Quantize { smooth } if tile.cluster > 1 => cluster_quantize(l, tile, m, n, smooth),
        Sm90Tail::Quantize { smooth } => {
            fuse_quantize(l, (tile.rows.min(m), sm90_strip_share(tile, m, n)), tile.cols, m, n, smooth)
        }
    }
}

/// The byte counts of a layernorm over `n` columns fused into cluster launch `g` (`_cln`): each
/// CTA of a strip's cluster normalises its own tile from its accumulators once the cluster has
/// exchanged the rows' partial sums through distributed shared memory (on chip, not counted),
/// so the GEMM's output `y` is never stored or read back: the normalised rows (and their int8
/// codes and scales with `q8`) are the launch's only output. Each CTA loads its columns'
/// gamma and beta (and smoothing multipliers) once per strip. No serial tail.
fn cluster_layernorm(
    mut g: PlannedLaunch,
    tile: Sm90Tile,
    t: usize,
    n: usize,
    q8: bool,
    smooth: bool,
) -> PlannedLaunch {
    let params = (if q8 && smooth { 3 } else { 2 }) * n * 2;
    g.load_bytes += (t.div_ceil(tile.rows) * params) as u64;
    g.min_load_bytes += params as u64;
    // (store_bytes already has t x n fp16: the normalised rows instead of y)
    if q8 {
        g.store_bytes += (t * (n + 4)) as u64;
    }
    g
}

/// The byte counts of the asymmetric int8 quantisation of the `t x n` output fused into
/// cluster launch `g` (`_cqa`): the tiles' epilogues fold their rows' extremes, the cluster
/// exchanges them through distributed shared memory, then each CTA codes its own columns of
/// the strip and stores the codes; rank 0 the scales and zero points. At `n <= 3072`
/// ([`qa_resident`](crate::kernels::gemm_sm90::qa_resident)) y stays in shared memory: it is
/// neither stored (the `t x n` fp16 of `g` go) nor read back; else each CTA reads its columns
/// back (through L2: its own TMA stores). The multipliers (with `smooth`) are read by both
/// passes. The last strip's codes pass runs after the rest of the grid, but on all of its
/// cluster's CTAs at once: a tail of one CTA's columns.
fn cluster_quantize(mut g: PlannedLaunch, tile: Sm90Tile, t: usize, n: usize, smooth: bool) -> PlannedLaunch {
    let resident = crate::kernels::gemm_sm90::qa_resident(n);
    let strips = t.div_ceil(tile.rows);
    let smooth_bytes = if smooth { 2 * strips * n * 2 } else { 0 };
    let read_back = if resident { 0 } else { t * n * 2 };
    g.load_bytes += (read_back + smooth_bytes) as u64;
    if resident {
        g.store_bytes -= (t * n * 2) as u64;
    }
    g.store_bytes += (t * (n + 8)) as u64;
    g.min_load_bytes += if smooth { (n * 2) as u64 } else { 0 };
    let cols = n.div_ceil(tile.cols).div_ceil(tile.cluster) * tile.cols;
    g.tail_bytes += (t.min(tile.rows) * cols.min(n) * if resident { 1 } else { 3 }) as u64;
    g
}

/// The byte counts of the asymmetric int8 quantisation of the `t x n` output fused into `_sm90`
/// GEMM launch `g` (`gemm_int8_sm90*_qa`), whose row strips are `strip` tokens and whose tiles
/// are `cols` wide: the last tile of each strip reads the strip's rows back once (through L2;
/// the second pass over a row reads the copy its warp keeps in shared memory, `32 cols`
/// columns of it, and the rest from L2 again), with the multipliers once per row and pass when
/// `smooth`, and stores their codes, scales and zero points. As the layernorm's
/// ([`fuse_layernorm`]), the last strip's quantisation runs after every other CTA is done: a
/// serial tail of that strip's bytes at one SM's bandwidth.
fn fuse_quantize(
    mut g: PlannedLaunch,
    (strip, share): (usize, usize),
    cols: usize,
    t: usize,
    n: usize,
    smooth: bool,
) -> PlannedLaunch {
    let smooth_row = if smooth { 2 * n * 2 } else { 0 };
    let reread = n.saturating_sub(32 * cols) * 2;
    let row_load = n * 2 + reread + smooth_row;
    let row_store = n + 4 + 4;
    g.load_bytes += (t * row_load) as u64;
    g.store_bytes += (t * row_store) as u64;
    g.min_load_bytes += if smooth { (n * 2) as u64 } else { 0 };
    let last = t.min(strip).div_ceil(share);
    g.tail_bytes += (last * (row_load + row_store)) as u64;
    g
}

/// The tile `gemm_sm90` chose for launch `l` (an `_sm90` GEMM).
pub fn sm90_tile_of(l: &PlannedLaunch) -> Option<Sm90Tile> {
    l.sm90_tile
}

/// FA3-style attention (note 3.3) in the tiling the forward pass picks
/// (`Sm90Tiling::Auto`): per sequence (a CTA per 128 rows of one sequence and head, grid
/// `ceil(max_len / 128) x heads x batch`; CTAs past a shorter sequence's end exit at once), or,
/// for batches of short sequences, over packed tokens (a work item per 128 consecutive packed
/// tokens and head, its keys the union of the sequences those tokens belong to, scores across
/// sequences masked). Q, K and V by TMA (nothing past the last token is loaded: TMA
/// zero-fills), the kernel's geometry (`attention_sm90`: a producer warpgroup and two
/// consumers of 64 rows, its dynamic shared memory). Executed tensor FLOPs: each consumer with
/// rows computes its 64 rows against whole 64-key blocks of its CTA's keys (S = Q K^T is n64,
/// P V four k16 steps a block); a consumer with no rows computes nothing.
fn attention_sm90(p: Prec, lengths: &[usize], heads: usize, d: usize, layer: Option<usize>) -> PlannedLaunch {
    use crate::kernels::attention_sm90 as kernel;
    use crate::kernels::Sm90Tiling;
    let (b, t) = (lengths.len(), lengths.iter().sum::<usize>());
    let d = d.next_multiple_of(16).clamp(16, 128);
    let h = heads * d;
    let rows = kernel::BLOCK_M;
    let max_len = lengths.iter().copied().max().unwrap_or(1);
    let flops: usize = lengths.iter().map(|&s| 4 * heads * d * s * s).sum();
    let min = t * 3 * h * 2 + 4 * (b + 1);
    let shared = kernel::shared_bytes(d) as u32;
    let threads = kernel::THREADS;
    let name = sm90::attention_kernel(d, max_len, p.int8);
    let per_sequence = Sm90Tiling::Auto.resolve(max_len.max(1)) == Sm90Tiling::PerSequence;
    let (grid, tensor, load) = if per_sequence {
        // per (128-row tile, sequence): its rows, all of its sequence's keys, its two offsets
        let tiles = |len: usize| (0..len.div_ceil(rows)).map(move |i| (len - i * rows).min(rows));
        let tensor: usize = lengths
            .iter()
            .flat_map(|&len| {
                tiles(len).map(move |q| {
                    heads * 4 * q.next_multiple_of(kernel::WARPGROUP_M) * len.next_multiple_of(kernel::BLOCK_N) * d
                })
            })
            .sum();
        let load: usize =
            lengths.iter().flat_map(|&len| tiles(len).map(move |q| heads * (q * d * 2 + len * d * 2 * 2 + 8))).sum();
        ((max_len.div_ceil(rows) as u32, heads as u32, b as u32), tensor, load)
    } else {
        let items = t.div_ceil(rows);
        // sequence boundaries: seq i covers [starts[i], starts[i] + len)
        let mut starts = Vec::with_capacity(b);
        let mut acc = 0;
        for &s in lengths {
            starts.push(acc);
            acc += s;
        }
        let keys_of = |i: usize| -> usize {
            let (lo, hi) = (i * rows, ((i + 1) * rows).min(t));
            starts
                .iter()
                .zip(lengths)
                .filter(|&(&s0, &len)| len > 0 && s0 < hi && s0 + len > lo)
                .map(|(_, &len)| len)
                .sum()
        };
        let keys: Vec<usize> = (0..items).map(keys_of).collect();
        let tensor: usize = (0..items)
            .map(|i| {
                let q = ((i + 1) * rows).min(t) - i * rows;
                heads * 4 * q.next_multiple_of(kernel::WARPGROUP_M) * keys[i].next_multiple_of(kernel::BLOCK_N) * d
            })
            .sum();
        // per item and head: its query rows, its keys' K and V, its sequences' offsets
        let load: usize = (0..items)
            .map(|i| {
                let q = ((i + 1) * rows).min(t) - i * rows;
                heads * (q * d * 2 + keys[i] * d * 2 * 2 + 4 * (b + 1).min(keys[i] + 2))
            })
            .sum();
        ((items as u32, heads as u32, 1), tensor, load)
    };
    let mut l = launch(&name, "attention", layer, (grid, (threads, 1, 1), shared), flops as u64, min, load, t * h * 2);
    l.tensor_flops = tensor as u64;
    l.reuse_bytes_per_block = (2 * rows * d * 2) as u64;
    if p.int8 {
        // the context's codes, per row tile of the grid: the last tile's rows (a per-sequence
        // tile's share of its sequence, or a packed tile's tokens) over its heads' CTAs
        let last = if per_sequence { max_len.min(rows) } else { t - (t.max(1) - 1) / rows * rows };
        add_context_codes(&mut l, t, h, kernel::codes_slot_columns(d), last, heads);
    }
    l
}

/// The attention block (`attention_block_*_sm90`): the fused QKV attention's launch
/// ([`qkv_attention_sm90`]), then in it each sequence's attention-out GEMM (+ bias + residual)
/// and LN1. Once a sequence's CTAs have stored its context (int8: its codes, in the sequence's
/// 128-row slot), they claim the output's 128 x `OUT_COLS` (64) tiles: per tile the slot's
/// 128-row box of the context (codes) and Wo's 64 rows, the tensor work of its consumers with rows (64-row
/// halves), y stored for the sequence's rows; then they share LN1's rows (y read back through
/// L2, LN1's rows and int8 codes stored). The tiles' tensor FLOPs reach `wgmma_fraction` as the
/// QKV GEMM's do; the grid's last sequence adds a tail: its output tile computed on one SM
/// after everything else (its sequence's CTAs run its tiles side by side), then its LN rows
/// spread over its CTAs.
fn attention_block_sm90(
    p: Prec,
    lengths: &[usize],
    heads: usize,
    d: usize,
    layer: usize,
    ln_q8: bool,
) -> PlannedLaunch {
    use crate::kernels::qkv_attention_sm90 as kernel;
    let mut l = qkv_attention_sm90(p, lengths, heads, d, layer);
    let (b, t) = (lengths.len(), lengths.iter().sum::<usize>());
    let (h, e) = (heads * d, if p.int8 { 1 } else { 2 });
    let (tiles, cols) = (h / kernel::OUT_COLS, kernel::OUT_COLS);
    // whole k-blocks (128 bytes of K): the wgmmas run over the last one's zero fill too
    let k_steps = h.next_multiple_of(if p.int8 { 128 } else { 64 });
    let computed: usize = lengths.iter().map(|&len| len.next_multiple_of(64)).sum();
    l.kernel = kernel::block_kernel_name(p.int8, d).into();
    l.step = "attention_block";
    l.flops += (2 * t * h * h) as u64;
    l.extra_gemm_flops += (2 * t * h * h) as u64;
    l.tensor_flops += (2 * computed * h * k_steps) as u64;
    // Wo, its bias (int8: and scales), gamma, beta (int8: FFN1's smoothing), the residual rows
    let params = h * 2 + if p.int8 { h * 4 } else { 0 } + 2 * h * 2 + if ln_q8 { h * 2 } else { 0 };
    l.min_load_bytes += (h * h * e + params + t * h * 2) as u64;
    // per tile: the slot's box and Wo's rows (and their columns' parameters); per row: the
    // residual, y read back, gamma and beta
    let per_tile = kernel::SLOT_ROWS * h * e + cols * h * e + cols * (2 + if p.int8 { 4 } else { 0 });
    l.load_bytes += (b * tiles * per_tile + t * (h * 2 + h * 2 + 2 * h * 2)) as u64;
    // y, LN1's rows, int8 their codes and scales
    let row_store = h * 2 + h * 2 + if ln_q8 { h + 4 } else { 0 };
    l.store_bytes += (t * row_store) as u64;
    l.reuse_bytes += (h * h * e) as u64;
    let last = lengths.iter().copied().max().unwrap_or(0);
    l.tail_tensor_flops += (2 * last.next_multiple_of(64) * cols * k_steps) as u64;
    let groups = kernel::ctas_per_sequence(heads, d);
    l.tail_bytes += (last.div_ceil(groups) * (h * 2 + row_store - h * 2)) as u64;
    l
}

/// The FFN block (`ffn_block_f16_sm90`, `_n64`): FFN1's GEMM (+ activation), FFN2's (+ bias +
/// residual) and LN2's rows as the parts of one persistent launch on `cols`-wide tiles. Each GEMM
/// part is the split launch of its shape ([`gemm_sm90_tiled`]: every K chunk a unit, so its
/// partials and the tile's fold; one chunk is stored and read back too), priced with the wgmma
/// path's fixed cost each: the block is credited with one graph node, the layernorm's rows
/// spread over CTAs instead of a strip tail, and the narrower tiles' parallelism, not with the
/// overlap of FFN2's weight loads with FFN1 (to be measured). LN2's part: groups of
/// [`ffn_block_sm90::LN_ROWS`] rows, each row's y read back through L2, gamma and beta per row.
fn ffn_block_sm90(c: &BertConfig, t: usize, layer: usize, cols: usize, ln2: LayerNormOut) -> PlannedLaunch {
    use crate::kernels::ffn_block_sm90 as kernel;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let name = kernel::kernel_name(cols).expect("a compiled tile width");
    let cfg =
        linear(kernel::units(t, h, f, cols).min(sm90::SM90_CTAS), kernel::THREADS, kernel::shared_bytes(cols) as usize);
    let part = |step, n, k, epi| {
        let gemm = Sm90Gemm {
            p: Prec { int8: false },
            step,
            layer: Some(layer),
            m: t,
            n,
            k,
            epi,
            asym: false,
            tail: Sm90Tail::None,
        };
        let splits = crate::kernels::gemm_sm90::k_chunks(k, false);
        let mut l = gemm_sm90_tiled(&gemm, Sm90Entry::F16, Sm90Tile { rows: 128, cols, splits, cluster: 1 });
        if splits == 1 {
            // the block's one chunk still goes through its partial slot
            let partials = (crate::kernels::gemm_sm90::split_live_rows(t) * n * 4) as u64;
            l.load_bytes += partials;
            l.store_bytes += partials;
            l.tail_bytes += (128.min(crate::kernels::gemm_sm90::split_live_rows(t)) * cols * 4) as u64;
        }
        l.kernel = name.into();
        l
    };
    let ffn1 = part("ffn1", f, h, Epi::Gelu);
    let ffn2 = part("ffn2", h, f, Epi::Residual);
    let groups = t.div_ceil(128) * (128 / kernel::LN_ROWS);
    // gamma and beta (fp16: no next GEMM's smoothing multipliers)
    let params = 2 * h * 2;
    let row_out = h * 2 + if ln2.q8 { h + 4 } else { 0 };
    let mut ln = launch(
        name,
        "ln2",
        Some(layer),
        linear(groups, kernel::THREADS, 0),
        0,
        t * h * 2 + params,
        t * (h * 2 + params),
        t * row_out,
    );
    ln.reuse_bytes = params as u64;
    let sum = |f: fn(&PlannedLaunch) -> u64| f(&ffn1) + f(&ffn2) + f(&ln);
    let mut l = launch(name, "ffn_block", Some(layer), cfg, 0, 0, 0, 0);
    l.flops = sum(|p| p.flops);
    l.tensor_flops = sum(|p| p.tensor_flops);
    l.min_load_bytes = sum(|p| p.min_load_bytes);
    l.load_bytes = sum(|p| p.load_bytes);
    l.store_bytes = sum(|p| p.store_bytes);
    l.parts = vec![ffn1, ffn2, ln];
    l
}

/// The int8 attentions' context codes (`attention_int8_sm90`, the fused QKV attention): once a
/// strip's CTAs (a row tile's heads, or a sequence's column groups) have all stored their
/// columns, they read its rows back through L2 once (a warp keeps its row in shared memory for
/// the codes' pass, `slot_columns`; columns past it are read again) and store codes and scales,
/// each claiming rows (every CTA of a strip started by then: waves hold whole strips). The
/// grid's last strip does so after every other CTA is done: a serial tail of its `tail_rows`
/// spread over its `ctas`.
fn add_context_codes(l: &mut PlannedLaunch, t: usize, h: usize, slot_columns: usize, tail_rows: usize, ctas: usize) {
    let row_load = h * 2 + h.saturating_sub(slot_columns) * 2;
    let row_store = h + 4;
    l.load_bytes += (t * row_load) as u64;
    l.store_bytes += (t * row_store) as u64;
    l.tail_bytes += (tail_rows.div_ceil(ctas.max(1)) * (row_load + row_store)) as u64;
}

/// The QKV GEMM and attention in one launch (`qkv_attention_*_sm90`, research note 3.3's
/// "attention in the QKV GEMM's epilogue when tiles align with sequences"): a CTA per
/// (sequence, 64-column group: one head of 64 or two of 32) computes the sequence's 128-row x
/// 192-column tile of Q, K and V for its group (`_sm90` GEMM main loop; a consumer whose 64
/// rows are all past the sequence computes nothing), keeps it in shared memory and runs the
/// per-sequence attention of its head(s) on it. Loads: the sequence's 128-row box of the input
/// (TMA clips at the last token; rows past the sequence belong to the next one and are loaded)
/// once per group, the group's 3 x 64 weight rows once per sequence; stores: the context (int8:
/// and its codes, made by the last CTA of each sequence from the context read back through L2).
/// The GEMM's tensor FLOPs reach `wgmma_fraction`, the attention's (`attention_tensor_flops`)
/// the attention fraction, one after the other in a CTA; the grid is not persistent (`groups x
/// batch` CTAs in waves).
fn qkv_attention_sm90(p: Prec, lengths: &[usize], heads: usize, d: usize, layer: usize) -> PlannedLaunch {
    use crate::kernels::attention_sm90::{BLOCK_N, WARPGROUP_M};
    use crate::kernels::{gemm_sm90::BM, qkv_attention_sm90 as kernel};
    let (b, t) = (lengths.len(), lengths.iter().sum::<usize>());
    let (h, e) = (heads * d, if p.int8 { 1 } else { 2 });
    let n = 3 * h;
    // per-column bias (+ int8 weight scales), per-row int8 activation scales
    let col_bytes = 2 + if p.int8 { 4 } else { 0 };
    let row_bytes = if p.int8 { 4 } else { 0 };
    let cu = 4 * (b + 1);
    let mut starts = Vec::with_capacity(b);
    let mut acc = 0;
    for &len in lengths {
        starts.push(acc);
        acc += len;
    }
    // rows of the input box each CTA loads (TMA clips at T), rows its consumers compute
    let boxed: usize = starts.iter().map(|&s0| BM.min(t - s0)).sum();
    let computed: usize = lengths.iter().map(|&len| len.next_multiple_of(WARPGROUP_M)).sum();
    // whole k-blocks (128 bytes of K): the wgmmas run over the last one's zero fill too
    let k_steps = h.next_multiple_of(if p.int8 { 128 } else { 64 });
    let gemm_tensor = 2 * computed * 3 * d * k_steps * heads;
    // attention: each computing consumer's 64 rows against whole 64-key blocks (S = Q K^T is
    // n64, P V four k16 steps a block)
    let attention_tensor: usize = lengths
        .iter()
        .map(|&len| heads * 4 * len.next_multiple_of(WARPGROUP_M) * len.next_multiple_of(BLOCK_N) * d)
        .sum();
    let flops: usize = 2 * t * n * h + lengths.iter().map(|&len| 4 * heads * d * len * len).sum::<usize>();
    let min = t * h * e + t * row_bytes + n * h * e + n * col_bytes + cu;
    // a CTA per 64-column group (one head of 64, two of 32) and sequence
    let groups = kernel::ctas_per_sequence(heads, d);
    let load = groups * (boxed * (h * e + row_bytes) + cu) + b * (n * h * e + n * col_bytes);
    let cfg = ((groups as u32, b as u32, 1), (kernel::THREADS, 1, 1), kernel::shared_bytes(d) as u32);
    let name = kernel::kernel_name(p.int8, d);
    let mut l = launch(name, "qkv_attention", Some(layer), cfg, flops as u64, min, load, t * h * 2);
    l.gemm = Some((t, n, h));
    l.tensor_flops = (gemm_tensor + attention_tensor) as u64;
    l.attention_tensor_flops = attention_tensor as u64;
    // the weights are re-read by every sequence; an input strip by the sequence's heads
    l.reuse_bytes = (n * h * e + n * col_bytes) as u64;
    l.reuse_bytes_per_block = (BM * h * e).div_ceil(groups) as u64;
    if p.int8 {
        // the context's codes, a sequence for a strip: the longest sequence's share per CTA
        let last = lengths.iter().copied().max().unwrap_or(0);
        add_context_codes(&mut l, t, h, kernel::ctx_row_slot_columns(), last, groups);
    }
    l
}
