//! The device forward pass: weights uploaded once, a reusable workspace, and a fixed sequence
//! of kernel launches over a packed batch (sequences concatenated, `cu_seqlens` offsets, no
//! padding anywhere).
//!
//! Per layer (fp16): QKV GEMM (+bias) -> attention -> output GEMM (+bias +residual) ->
//! layernorm -> FFN1 GEMM (+bias, GELU) -> FFN2 GEMM (+bias +residual) -> layernorm:
//! 7 launches, plus embedding+layernorm before the layers and mean pooling after (2 + 7 L).
//! The int8 path (W8A8 on the four GEMMs) also needs int8 activations: the layernorms emit them
//! directly (`layernorm_f16_q8`; not the last one, whose output only the heads read), the
//! attention output and the GELU output are quantised by a separate launch each (the GELU output
//! asymmetrically, `quantize_i8_asym`: it spans [-0.17, max], so a symmetric scale would waste
//! half the codes), and the embedding output once: 3 + 9 L launches.
//! The pooler (gather `[CLS]` rows + GEMM with tanh) and the classifier GEMM add 2 and 1, when
//! the caller asks for their outputs ([`OutputSelection`]).
//!
//! Host path: the ids, positions, token types and `cu_seqlens` go up in one copy (one packed
//! buffer, viewed per input); only the requested outputs come back ([`OutputSelection`]: pooled
//! embeddings and logits by default, hidden states on request), with one synchronisation
//! ([`Device::read_back`]: on CUDA, asynchronous copies into pinned memory), converted from
//! fp16 with the `half` crate's vectorised slice conversion.
//!
//! The model config drives the variants: the FFN1 epilogue is the model's `hidden_act` (GELU,
//! its tanh form, ReLU, SiLU); attention takes any head dim that is a multiple of 16 up to 128;
//! models without token types (DistilBERT) skip that table; positions come from the batch, which
//! carries the model's offset (RoBERTa: `pad_token_id + 1`, checked by `check_batch`); ELECTRA's
//! embedding projection (`embedding_size != hidden_size`) is one more fp16 GEMM after the
//! embedding layernorm (+1 launch); the pooling is any sentence-transformers mode
//! ([`DeviceBert::forward_pooled`]). A RoBERTa classification head (dense + tanh + out_proj)
//! runs as the pooler + classifier pair, which the weights hold it as.
//!
//! Kernel family ([`kernels::select`]): on a compute capability 9.0 device (H100/H200, or the
//! emulator at sm_90) the GEMMs and attention run on the Hopper `_sm90` kernels (wgmma, TMA,
//! mbarrier) when `FUSEBERT_KERNELS` (or [`DeviceBert::set_kernel_family`]) says `auto` and the
//! device's self-check passed, or says `sm90`. The schedule is the same on both families: the
//! two residual GEMMs fuse their layernorm (`gemm_*_sm90_ln` on Hopper), except that on the
//! int8 path the Hopper FFN1 quantises its own output for FFN2 (`gemm_int8_sm90*_qa`: the same
//! codes as `quantize_i8_asym` on it) and the Hopper attention writes the context's codes
//! (`attention_int8_sm90_*`: the same codes as `quantize_i8` on it), two launches fewer per
//! layer, and that a batch whose
//! sequences fill the fused kernel's tiles (head dim 64, at most 128 tokens each:
//! [`schedule::fuses_qkv_attention`]) runs each layer's QKV GEMM and attention as one launch
//! (`qkv_attention_*_sm90`, the same bits), one launch fewer again (with the attention-out
//! GEMM and LN1: `attention_block_*_sm90_*`, one more); and an fp16 pass over the token counts
//! the roofline model predicts it faster at (short batches) runs each layer's FFN1, FFN2 and
//! LN2 as one persistent launch (`ffn_block_f16_sm90*`, the same bits). Shapes the `_sm90`
//! GEMMs refuse (`K` or `N` not a multiple of 8 / 16) and the heads' tiny GEMMs of other shapes
//! run on mma.sync.
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::config::BertConfig;
use super::quant::{self, quantize_rows};
use super::reference::{check_batch, softmax, Output, SequenceOutput};
use super::schedule::{self, LayerGemm, LayerNorm, LayerNormOut, Quantized, ScheduleShape, Step};
use super::sentence::SentenceConfig;
use super::weights::{LayerNormWeights, Linear};
use super::{BertModel, Precision};
use crate::device::{as_elements, Device, DeviceBuffer, GraphCache, GraphStats, ReadPart};
use crate::error::{Error, Result};
use crate::kernels::{
    self, AttentionShape, EmbeddingTables, Epilogue, FusedLayerNorm, FusedQ8, FusedQuantize, GemmPlan, Pooling, Q8Out,
    SplitWorkspace, TokenIds,
};
use crate::tokenize::Batch;

/// GEMM N and K must be multiples of this (the kernels' contract); the classifier's label count
/// is padded up to it with zero rows.
const GEMM_ALIGN: usize = 16;

/// A GEMM weight on the device in the precision of the forward pass, with its fp16 bias.
enum DeviceLinear {
    F16 {
        w: DeviceBuffer<f16>,
        b: DeviceBuffer<f16>,
    },
    /// Per-output-channel symmetric int8 weights and their f32 scales; `smooth` are the
    /// per-input-column multipliers its int8 activations are quantised with (SmoothQuant,
    /// see [`quant::smoothing_multipliers`]), already divided out of `w`; `w_sum` (the code
    /// sums of each output channel) is present when the input is quantised asymmetrically.
    Int8 {
        w: DeviceBuffer<i8>,
        scale: DeviceBuffer<f32>,
        b: DeviceBuffer<f16>,
        smooth: Option<DeviceBuffer<f16>>,
        w_sum: Option<DeviceBuffer<i32>>,
    },
}

impl DeviceLinear {
    /// Bytes the GEMM itself reads: weights, scales, bias, code sums (not the smoothing
    /// multipliers, which the kernel producing its input reads).
    fn gemm_bytes(&self) -> usize {
        match self {
            DeviceLinear::F16 { w, b } => w.bytes() + b.bytes(),
            DeviceLinear::Int8 { w, scale, b, w_sum, .. } => {
                w.bytes() + scale.bytes() + b.bytes() + w_sum.as_ref().map_or(0, |s| s.bytes())
            }
        }
    }

    /// Bytes of the GEMM's input activations for `tokens` rows of `k`: fp16 rows, or int8
    /// codes with per-token scales (and zero points when asymmetric).
    fn input_bytes(&self, tokens: usize, k: usize) -> usize {
        match self {
            DeviceLinear::F16 { .. } => tokens * k * 2,
            DeviceLinear::Int8 { w_sum, .. } => tokens * k + 4 * tokens + if w_sum.is_some() { 4 * tokens } else { 0 },
        }
    }

    /// The int8 GEMM of these weights on input codes `q8` (per-row `q8_scale`, and `q8_zero`
    /// where the weights carry code sums: an asymmetric input); `None` for fp16 weights.
    fn int8_gemm<'a>(
        &'a self,
        q8: &'a DeviceBuffer<i8>,
        q8_scale: &'a DeviceBuffer<f32>,
        q8_zero: &'a DeviceBuffer<i32>,
        epilogue: Epilogue<'a>,
        shape: kernels::GemmShape,
    ) -> Option<kernels::GemmInt8<'a>> {
        let DeviceLinear::Int8 { w, scale, b, w_sum, .. } = self else { return None };
        Some(kernels::GemmInt8 {
            a: q8,
            a_scale: q8_scale,
            zero_point: w_sum.as_ref().map(|w_sum| kernels::ZeroPoint { zero: q8_zero, w_sum }),
            w,
            w_scale: scale,
            bias: Some(b),
            epilogue,
            shape,
        })
    }

    fn smooth(&self) -> Option<&DeviceBuffer<f16>> {
        match self {
            DeviceLinear::Int8 { smooth, .. } => smooth.as_ref(),
            DeviceLinear::F16 { .. } => None,
        }
    }
}

struct DeviceLayerNorm {
    gamma: DeviceBuffer<f16>,
    beta: DeviceBuffer<f16>,
}

impl DeviceLayerNorm {
    fn bytes(&self) -> usize {
        self.gamma.bytes() + self.beta.bytes()
    }
}

/// Global memory traffic of kernels, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    pub load_bytes: u64,
    pub store_bytes: u64,
}

impl Traffic {
    fn add(&mut self, load: usize, store: usize) {
        self.load_bytes += load as u64;
        self.store_bytes += store as u64;
    }
}

struct DeviceLayer {
    qkv: DeviceLinear,
    attn_out: DeviceLinear,
    ln1: DeviceLayerNorm,
    ffn1: DeviceLinear,
    ffn2: DeviceLinear,
    ln2: DeviceLayerNorm,
}

/// Activation buffers sized for `tokens` packed tokens and `batch` sequences; grown, never
/// shrunk, so steady-state forward passes allocate nothing on the device.
struct Workspace {
    tokens: usize,
    batch: usize,
    /// The inputs of a forward pass packed for one upload: ids, positions, token types (`T`
    /// each) and `cu_seqlens` (`B + 1`) of the current batch, back to back; the four buffers
    /// below are views into it, laid out for the current batch by `upload_inputs`.
    inputs: DeviceBuffer<u32>,
    /// Host side of `inputs`, reused.
    host_inputs: Vec<u32>,
    ids: DeviceBuffer<u32>,
    pos_ids: DeviceBuffer<u32>,
    type_ids: DeviceBuffer<u32>,
    cu_seqlens: DeviceBuffer<u32>,
    x: DeviceBuffer<f16>,
    qkv: DeviceBuffer<f16>,
    ctx: DeviceBuffer<f16>,
    y: DeviceBuffer<f16>,
    h: DeviceBuffer<f16>,
    ffn: DeviceBuffer<f16>,
    /// int8 activations (largest K: intermediate size) and their per-token scales.
    q8: DeviceBuffer<i8>,
    /// Where a fused FFN2 + LN2 writes LN2's int8 codes (FFN2 still reads its own
    /// `[T, intermediate]` input from `q8`); swapped with `q8` after the layer.
    q8_next: DeviceBuffer<i8>,
    q8_scale: DeviceBuffer<f32>,
    /// Zero points of the asymmetric int8 activations (FFN2 input).
    q8_zero: DeviceBuffer<i32>,
    /// The context's per-token scales (its codes go to `q8_next`): apart from `q8_scale`,
    /// which the fused QKV attention still reads (other sequences' rows) while it writes these.
    ctx_scale: DeviceBuffer<f32>,
    /// The fused int8 QKV attention's per-sequence arrival counters (zero between launches).
    ctx_counters: DeviceBuffer<u32>,
    /// The attention blocks' scratch: the context (and int8 its codes and scales) in a slot of
    /// 128 rows a sequence (zeroed once: rows past a sequence are read, unused), their
    /// per-sequence counters, and LN1's codes and scales (apart from `q8`, which other
    /// sequences' CTAs still read while a sequence's LN1 writes these).
    block_ctx: DeviceBuffer<f16>,
    block_q8: DeviceBuffer<i8>,
    block_scale: DeviceBuffer<f32>,
    block_counters: DeviceBuffer<u32>,
    ln1_q8: DeviceBuffer<i8>,
    ln1_scale: DeviceBuffer<f32>,
    /// The FFN blocks' scratch (split-K slots, counters) for the most tokens a pass runs them at.
    ffn_block: Option<kernels::FfnBlockWorkspace>,
    /// ELECTRA: the embedding layernorm's `[T, embedding_size]` output, before the projection.
    emb: Option<DeviceBuffer<f16>>,
    /// Partial sums and arrival counters of the split-K layer GEMMs (`GemmPlan::choose`).
    split: SplitWorkspace,
    pooled: DeviceBuffer<f32>,
    cls: DeviceBuffer<f16>,
    pooler_out: DeviceBuffer<f16>,
    logits: DeviceBuffer<f16>,
}

/// A BERT model resident on a device.
pub struct DeviceBert {
    dev: Device,
    precision: Precision,
    config: BertConfig,
    word: DeviceBuffer<f16>,
    position: DeviceBuffer<f16>,
    /// `None` for models without token types (DistilBERT): nothing is added.
    token_type: Option<DeviceBuffer<f16>>,
    emb_ln: DeviceLayerNorm,
    /// ELECTRA's `embeddings_project` (fp16 in both precisions: `[hidden, embedding_size]`).
    projection: Option<DeviceLinear>,
    /// The FFN1 epilogue: the model's `hidden_act`.
    ffn_act: Epilogue<'static>,
    layers: Vec<DeviceLayer>,
    pooler: Option<DeviceLinear>,
    /// Classifier (always fp16: tiny), label count before padding.
    classifier: Option<(DeviceLinear, usize)>,
    workspace: Option<Workspace>,
    /// Replay the launch sequence as a graph (one host call on CUDA) instead of launching
    /// kernel by kernel. Default: on where the device has native graphs (CUDA).
    use_graphs: bool,
    /// Graphs of the launch sequences seen, keyed by the exact sequence (so by batch shape);
    /// emptied whenever the workspace they point into is reallocated.
    graphs: std::sync::Mutex<GraphCache>,
    /// The kernel family the launches use (mma.sync, or Hopper's `_sm90` kernels).
    kernels: kernels::Selected,
}

/// Graphs kept per model: a server's few recurring batch shapes.
const GRAPH_CACHE: usize = 8;

/// Which results a device forward pass returns. Only these are copied back to the host, and
/// the pooler and classifier launches run only when their outputs are asked for. A result
/// not asked for is left empty in [`SequenceOutput`] (an empty `Vec`, or `None`); one the
/// model has no head for is `None`, as in the reference.
///
/// The default is what an application usually wants: the pooled embeddings and, for a model
/// with a classifier, the logits. [`OutputSelection::POOLED`] and [`OutputSelection::LOGITS`] ask for one of
/// them; verification asks for [`OutputSelection::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSelection {
    /// `SequenceOutput::pooled`: the embedding pooled as [`DevicePooling`] says, f32,
    /// `[hidden]` per sequence (`B * hidden * 4` bytes read back).
    pub pooled: bool,
    /// `SequenceOutput::pooler_output` (models with a pooler): runs the pooler.
    pub pooler: bool,
    /// `SequenceOutput::logits` and `scores` (models with a classifier): runs the pooler and
    /// the classifier (`B * labels * 2` bytes read back, the labels padded to 16).
    pub logits: bool,
    /// `SequenceOutput::last_hidden_state`, `[len, hidden]` per sequence (`T * hidden * 2`
    /// bytes read back).
    pub last_hidden_state: bool,
    /// The hidden states after the embeddings and after every layer ([`DeviceHiddenStates`]);
    /// read between launches, so the pass is not replayed as a graph.
    pub hidden_states: bool,
}

impl OutputSelection {
    /// Nothing but the pooled embeddings (`sentence_embeddings`, `embed`).
    pub const POOLED: OutputSelection =
        OutputSelection { pooled: true, pooler: false, logits: false, last_hidden_state: false, hidden_states: false };
    /// Nothing but the logits and scores (`classify`, `rerank`).
    pub const LOGITS: OutputSelection =
        OutputSelection { pooled: false, pooler: false, logits: true, last_hidden_state: false, hidden_states: false };
    /// Everything the model can give, per-layer hidden states included (`verify`).
    pub const ALL: OutputSelection =
        OutputSelection { pooled: true, pooler: true, logits: true, last_hidden_state: true, hidden_states: true };
    /// Nothing: the encoder runs, nothing is read back (a warm-up).
    pub const NONE: OutputSelection =
        OutputSelection { pooled: false, pooler: false, logits: false, last_hidden_state: false, hidden_states: false };
}

impl std::ops::BitOr for OutputSelection {
    type Output = OutputSelection;
    /// Everything either asks for (a server batch serving several requests).
    fn bitor(self, o: OutputSelection) -> OutputSelection {
        OutputSelection {
            pooled: self.pooled || o.pooled,
            pooler: self.pooler || o.pooler,
            logits: self.logits || o.logits,
            last_hidden_state: self.last_hidden_state || o.last_hidden_state,
            hidden_states: self.hidden_states || o.hidden_states,
        }
    }
}

impl Default for OutputSelection {
    /// The pooled embeddings, and the logits when the model has a classifier.
    fn default() -> Self {
        OutputSelection { logits: true, ..OutputSelection::POOLED }
    }
}

/// Options of one device forward pass.
///
/// ```no_run
/// # use fusebert::model::{BertModel, Precision, forward::{DeviceBert, ForwardOptions, OutputSelection}};
/// # fn f(bert: &mut DeviceBert, batch: &fusebert::tokenize::Batch) -> fusebert::Result<()> {
/// // sentence embeddings, L2-normalised: B x hidden floats come back, nothing else
/// let (out, _) = bert.forward(batch, ForwardOptions::embeddings(true))?;
/// // logits of a cross-encoder
/// let (out, _) = bert.forward(batch, ForwardOptions::classification())?;
/// // the last hidden state too
/// let opts = ForwardOptions { outputs: OutputSelection { last_hidden_state: true, ..OutputSelection::POOLED }, ..Default::default() };
/// let (out, _) = bert.forward(batch, opts)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// L2-normalise the pooled embedding.
    pub normalize: bool,
    /// What to compute and read back.
    pub outputs: OutputSelection,
}

impl ForwardOptions {
    /// The pooled embeddings only ([`OutputSelection::POOLED`]), L2-normalised when `normalize`.
    pub fn embeddings(normalize: bool) -> Self {
        ForwardOptions { normalize, outputs: OutputSelection::POOLED }
    }
    /// The logits (and scores) only ([`OutputSelection::LOGITS`]).
    pub fn classification() -> Self {
        ForwardOptions { normalize: false, outputs: OutputSelection::LOGITS }
    }
    /// Every output, per-layer hidden states included ([`OutputSelection::ALL`]).
    pub fn all() -> Self {
        ForwardOptions { normalize: false, outputs: OutputSelection::ALL }
    }
}

/// How [`DeviceBert::forward_pooled`] pools each sequence into `SequenceOutput::pooled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePooling {
    pub mode: Pooling,
    /// Leading tokens of every sequence masked out of the modes that honour a mask (a prompt's
    /// tokens, `[CLS]` included, when the folder says `include_prompt: false`).
    pub skip: usize,
}

impl Default for DevicePooling {
    /// Mean over all tokens (what [`DeviceBert::forward`] does).
    fn default() -> Self {
        DevicePooling { mode: Pooling::Mean, skip: 0 }
    }
}

/// Per-layer hidden states of a device forward pass: `layers[0]` is the embedding output,
/// `layers[l]` the output of layer `l`, each packed `[T, H]`, converted to f32.
#[derive(Debug, Clone)]
pub struct DeviceHiddenStates {
    pub layers: Vec<Vec<f32>>,
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn upload_f16(dev: &Device, v: &[f32]) -> Result<DeviceBuffer<f16>> {
    dev.upload(&to_f16(v))
}

fn upload_ln(dev: &Device, ln: &LayerNormWeights) -> Result<DeviceLayerNorm> {
    Ok(DeviceLayerNorm { gamma: upload_f16(dev, &ln.gamma.data)?, beta: upload_f16(dev, &ln.beta.data)? })
}

/// How the int8 path quantises a GEMM's input.
#[derive(Clone, Copy)]
struct Int8Input<'a> {
    /// Calibrated column ranges: the weights are smoothed against them.
    amax: Option<&'a [f32]>,
    /// Asymmetric per-token activations (the GEMM needs the weights' code sums).
    asym: bool,
}

const SYMMETRIC: Int8Input<'static> = Int8Input { amax: None, asym: false };

/// Uploads `[out, in]` weights (concatenated along `out` when several) in `precision`; int8
/// weights are quantised per output channel for an input quantised as `input` says.
fn upload_linear(
    dev: &Device,
    parts: &[&Linear],
    precision: Precision,
    pad_out_to: usize,
    input: Int8Input<'_>,
) -> Result<DeviceLinear> {
    let inp = parts[0].in_features();
    let mut w: Vec<f32> = parts.iter().flat_map(|l| l.weight.data.iter().copied()).collect();
    let mut b: Vec<f32> = parts.iter().flat_map(|l| l.bias.data.iter().copied()).collect();
    let out = b.len().next_multiple_of(pad_out_to);
    w.resize(out * inp, 0.0);
    b.resize(out, 0.0);
    let b = upload_f16(dev, &b)?;
    Ok(match precision {
        Precision::F16 => DeviceLinear::F16 { w: upload_f16(dev, &w)?, b },
        Precision::Int8 => {
            let smooth = input.amax.map(|a| quant::smoothing_multipliers(a, &w, out, inp));
            if let Some(m) = &smooth {
                for row in w.chunks_exact_mut(inp) {
                    row.iter_mut().zip(m).for_each(|(v, m)| *v /= m.to_f32());
                }
            }
            let q = quantize_rows(&w, out, inp);
            let smooth = smooth.map(|m| dev.upload(&m)).transpose()?;
            let w_sum = input.asym.then(|| dev.upload(&kernels::weight_sums(&q.q, out, inp))).transpose()?;
            DeviceLinear::Int8 { w: dev.upload(&q.q)?, scale: dev.upload(&q.scale)?, b, smooth, w_sum }
        }
    })
}

impl DeviceBert {
    /// Uploads `model` to `dev` (int8: weights quantised per output channel, deterministically,
    /// without smoothing; see [`DeviceBert::new_calibrated`]).
    pub fn new(dev: &Device, model: &BertModel, precision: Precision) -> Result<DeviceBert> {
        Self::build(dev, model, precision, None)
    }

    /// As [`DeviceBert::new`]; for int8, first runs the f32 reference on `calibration` to find
    /// the column ranges of the LayerNorm-fed GEMMs' inputs (QKV, FFN1) and smooths them
    /// (SmoothQuant, alpha 0.5): on all-MiniLM-L6-v2 this lifts the worst int8 cosine on the
    /// golden cases from 0.987 to 0.996. fp16 ignores the calibration.
    pub fn new_calibrated(
        dev: &Device,
        model: &BertModel,
        precision: Precision,
        calibration: &Batch,
    ) -> Result<DeviceBert> {
        if precision != Precision::Int8 || calibration.is_empty() {
            return Self::build(dev, model, precision, None);
        }
        let ranges = quant::calibrate(model, calibration)?;
        Self::build(dev, model, precision, Some(&ranges))
    }

    fn build(
        dev: &Device,
        model: &BertModel,
        precision: Precision,
        ranges: Option<&[quant::LayerInputRanges]>,
    ) -> Result<DeviceBert> {
        let c = &model.config;
        if !kernels::attention::HEAD_DIMS.contains(&c.head_dim()) {
            return Err(Error::Input(format!(
                "the device forward pass needs a head dim that is a multiple of 16 up to 128 {:?}; this model's is {} \
                 (hidden_size {} / num_attention_heads {}); use --device cpu",
                kernels::attention::HEAD_DIMS,
                c.head_dim(),
                c.hidden_size,
                c.num_attention_heads
            )));
        }
        let family = kernels::KernelFamily::from_env()?;
        let selected = dev.kernel_family(family, c.head_dim())?;
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let r = ranges.map(|r| &r[i]);
                // smoothed LayerNorm outputs (when calibrated); the GELU output asymmetric
                let qkv_in = Int8Input { amax: r.map(|r| &r.qkv[..]), asym: false };
                let ffn1_in = Int8Input { amax: r.map(|r| &r.ffn1[..]), asym: false };
                let ffn2_in = Int8Input { amax: None, asym: true };
                Ok(DeviceLayer {
                    qkv: upload_linear(dev, &[&l.query, &l.key, &l.value], precision, 1, qkv_in)?,
                    attn_out: upload_linear(dev, &[&l.attn_output], precision, 1, SYMMETRIC)?,
                    ln1: upload_ln(dev, &l.attn_layer_norm)?,
                    ffn1: upload_linear(dev, &[&l.ffn1], precision, 1, ffn1_in)?,
                    ffn2: upload_linear(dev, &[&l.ffn2], precision, 1, ffn2_in)?,
                    ln2: upload_ln(dev, &l.ffn_layer_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = w.pooler.as_ref().map(|p| upload_linear(dev, &[p], Precision::F16, 1, SYMMETRIC)).transpose()?;
        let classifier = match &w.classifier {
            Some(cl) => Some((
                upload_linear(dev, &[&cl.linear], Precision::F16, GEMM_ALIGN, SYMMETRIC)?,
                cl.linear.out_features(),
            )),
            None => None,
        };
        Ok(DeviceBert {
            dev: dev.clone(),
            precision,
            config: c.clone(),
            word: upload_f16(dev, &w.embeddings.word.data)?,
            position: upload_f16(dev, &w.embeddings.position.data)?,
            token_type: c.has_token_types.then(|| upload_f16(dev, &w.embeddings.token_type.data)).transpose()?,
            emb_ln: upload_ln(dev, &w.embeddings.layer_norm)?,
            projection: w
                .embeddings
                .projection
                .as_ref()
                .map(|p| upload_linear(dev, &[p], Precision::F16, 1, SYMMETRIC))
                .transpose()?,
            ffn_act: Epilogue::activation(c.hidden_act),
            layers,
            pooler,
            classifier,
            workspace: None,
            use_graphs: dev.native_graphs(),
            graphs: std::sync::Mutex::new(GraphCache::new(GRAPH_CACHE)),
            kernels: selected,
        })
    }

    /// Selects the kernel family (the library form of `FUSEBERT_KERNELS`, which `new` reads):
    /// `Auto` runs the device's Hopper self-check on first use (cached per device), `Sm90` is
    /// an error off compute capability 9.0. Later passes use the new family (graphs captured
    /// with the old one are dropped).
    pub fn set_kernel_family(&mut self, family: kernels::KernelFamily) -> Result<()> {
        let selected = self.dev.kernel_family(family, self.config.head_dim())?;
        if selected != self.kernels {
            self.graph_cache().invalidate();
            self.kernels = selected;
            // the workspace's Hopper scratch depends on the family: sized anew on next use
            self.workspace = None;
        }
        Ok(())
    }

    /// The kernel family this model's launches use.
    pub fn kernel_family(&self) -> kernels::Selected {
        self.kernels
    }

    /// Turns graph replay of the forward pass on or off (on by default on CUDA). OutputSelection are
    /// bit-identical either way; only the number of host calls changes.
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
        if !on {
            self.graph_cache().invalidate();
        }
    }

    pub fn graphs_enabled(&self) -> bool {
        self.use_graphs
    }

    /// What the graph cache has done so far.
    pub fn graph_stats(&self) -> GraphStats {
        self.graph_cache().stats()
    }

    fn graph_cache(&self) -> std::sync::MutexGuard<'_, GraphCache> {
        // the cache holds no invariant a panic could break: keep using it
        self.graphs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of every weight resident on the device (what one forward pass must read at least).
    pub fn weight_bytes(&self) -> u64 {
        let lin = |l: &DeviceLinear| l.gemm_bytes() + l.smooth().map_or(0, |m| m.bytes());
        let layers: usize = self
            .layers
            .iter()
            .map(|l| lin(&l.qkv) + lin(&l.attn_out) + lin(&l.ffn1) + lin(&l.ffn2) + l.ln1.bytes() + l.ln2.bytes())
            .sum();
        let heads = self.pooler.as_ref().map_or(0, lin) + self.classifier.as_ref().map_or(0, |(l, _)| lin(l));
        let tables = self.word.bytes() + self.position.bytes() + self.token_type.as_ref().map_or(0, |y| y.bytes());
        (tables + self.emb_ln.bytes() + self.projection.as_ref().map_or(0, lin) + layers + heads) as u64
    }

    /// The least global traffic this launch sequence can have on `batch`: every kernel reads
    /// each weight, scale and bias it uses once and its input activations once, and writes its
    /// outputs once (the embedding reads each token's three table rows). The emulator's counters
    /// give the real traffic (`fusebert verify --counters`): stores match this exactly (tested);
    /// loads exceed it by the GEMM tiles' re-reads of activations and weights, attention's K/V
    /// re-reads per query tile, and per-block parameter reloads (served by L1/L2 on a GPU).
    ///
    /// For the default [`OutputSelection`]; see [`DeviceBert::minimum_traffic_for`].
    pub fn minimum_traffic(&self, batch: &Batch) -> Traffic {
        self.minimum_traffic_for(batch, OutputSelection::default())
    }

    /// [`DeviceBert::minimum_traffic`] of a pass asking for `outputs` (which decide whether the
    /// pooler and the classifier run).
    pub fn minimum_traffic_for(&self, batch: &Batch, outputs: OutputSelection) -> Traffic {
        let mut tr = Traffic::default();
        for step in self.schedule(batch, outputs) {
            let (load, store) = self.step_traffic(step, batch);
            tr.add(load, store);
        }
        tr
    }

    /// The least bytes one step loads and stores: each weight and activation once. A residual
    /// GEMM with its layernorm fused counts both halves (the same bytes as unfused: the
    /// counters show the fusion's savings against this).
    fn step_traffic(&self, step: Step, batch: &Batch) -> (usize, usize) {
        let (t, b) = (batch.total_tokens(), batch.len());
        let (h, i, e) = (self.config.hidden_size, self.config.intermediate_size, self.config.embedding_size);
        let (cu, int8) = (4 * (b + 1), self.precision == Precision::Int8);
        let smooth_bytes = |m: Option<&DeviceBuffer<f16>>| m.map_or(0, |m| m.bytes());
        // int8 copy of [t, k] written next to an fp16 output (layernorm_q8) or by quantize
        let q8_out = |k: usize, asym: bool| if int8 { t * k + 4 * t + if asym { 4 * t } else { 0 } } else { 0 };
        let layer = |l: usize| &self.layers[l];
        // the layernorm after a residual GEMM: its input rows, gamma/beta and the multipliers
        // of the GEMM its int8 codes feed
        let ln = |l: usize, out: LayerNormOut| -> (usize, usize) {
            let (w, smooth) = match out.which {
                LayerNorm::Ln1 => (&layer(l).ln1, layer(l).ffn1.smooth()),
                LayerNorm::Ln2 => (&layer(l).ln2, self.layers.get(l + 1).and_then(|n| n.qkv.smooth())),
            };
            (t * h * 2 + w.bytes() + smooth_bytes(smooth), t * h * 2 + if out.q8 { q8_out(h, false) } else { 0 })
        };
        let plus = |(a, b): (usize, usize), (c, d): (usize, usize)| (a + c, b + d);
        match step {
            // ids, positions (and token types) of each token, and one row of each table
            Step::Embedding => {
                let tables = if self.token_type.is_some() { 3 } else { 2 };
                (tables * 4 * t + tables * t * e * 2 + self.emb_ln.bytes(), t * e * 2)
            }
            Step::Projection => (t * e * 2 + self.projection.as_ref().map_or(0, DeviceLinear::gemm_bytes), t * h * 2),
            Step::Quantize { what: Quantized::Embeddings, .. } => {
                (t * h * 2 + smooth_bytes(self.layers.first().and_then(|l| l.qkv.smooth())), q8_out(h, false))
            }
            Step::Quantize { what: Quantized::Context, .. } => (t * h * 2, q8_out(h, false)),
            Step::Quantize { layer: l, what: Quantized::Ffn } => {
                let smooth = l.and_then(|l| layer(l).ffn2.smooth());
                (t * i * 2 + smooth_bytes(smooth), q8_out(i, true))
            }
            Step::Gemm { layer: l, gemm, layernorm, quantize } => {
                let (lin, k, n, residual) = match gemm {
                    LayerGemm::Qkv => (&layer(l).qkv, h, 3 * h, 0),
                    LayerGemm::AttnOut => (&layer(l).attn_out, h, h, t * h * 2),
                    LayerGemm::Ffn1 => (&layer(l).ffn1, h, i, 0),
                    LayerGemm::Ffn2 => (&layer(l).ffn2, i, h, t * h * 2),
                };
                let g = (lin.input_bytes(t, k) + lin.gemm_bytes() + residual, t * n * 2);
                // a quantising FFN1: FFN2's multipliers in, its codes out (its output is not re-read)
                let g = if quantize { plus(g, (smooth_bytes(layer(l).ffn2.smooth()), q8_out(n, true))) } else { g };
                layernorm.map_or(g, |out| plus(g, ln(l, out)))
            }
            Step::Attention { .. } => (t * 3 * h * 2 + cu, t * h * 2),
            // the QKV GEMM's inputs and attention's offsets in, the context (int8: + its codes) out
            Step::QkvAttention { layer: l } => {
                let lin = &layer(l).qkv;
                (lin.input_bytes(t, h) + lin.gemm_bytes() + cu, t * h * 2 + q8_out(h, false))
            }
            // the fused QKV attention's inputs, then the attention-out GEMM's weights and residual
            // in, LN1's (context's scratch out, as the fused kernel's)
            Step::AttentionBlock { layer: l, ln1 } => {
                let (lin, out) = (&layer(l).qkv, &layer(l).attn_out);
                let qkv = (lin.input_bytes(t, h) + lin.gemm_bytes() + cu, t * h * 2 + q8_out(h, false));
                plus(plus(qkv, (out.gemm_bytes() + t * h * 2, t * h * 2)), ln(l, ln1))
            }
            // the chain's: FFN1's launch, then FFN2's with LN2
            Step::FfnBlock { layer: l, ln2, .. } => {
                let (w1, w2) = (&layer(l).ffn1, &layer(l).ffn2);
                let ffn1 = (w1.input_bytes(t, h) + w1.gemm_bytes(), t * i * 2);
                let ffn2 = (w2.input_bytes(t, i) + w2.gemm_bytes() + t * h * 2, t * h * 2);
                plus(plus(ffn1, ffn2), ln(l, ln2))
            }
            Step::LayerNorm { layer: l, out } => ln(l, out),
            // pooling (mean: every row; the counters show the other modes' less)
            Step::Pool => (t * h * 2 + cu, b * h * 4),
            Step::GatherCls => (b * h * 2 + cu, b * h * 2),
            Step::Pooler => (b * h * 2 + self.pooler.as_ref().map_or(0, DeviceLinear::gemm_bytes), b * h * 2),
            Step::Classifier => {
                let c = self.classifier.as_ref().map_or(0, |(c, _)| c.gemm_bytes());
                (b * h * 2 + c, b * self.classifier_padded() * 2)
            }
        }
    }

    /// Kernel launches of one forward pass over `batch` with the default [`OutputSelection`]
    /// (see the module docs).
    pub fn launches_per_forward(&self, batch: &Batch) -> usize {
        self.launches_for(batch, OutputSelection::default())
    }

    /// Kernel launches of one forward pass over `batch` asking for `outputs`. The batch
    /// matters only on the Hopper kernels, where the QKV GEMM and attention of a batch of
    /// sequences that fill their tiles run as one launch ([`schedule::fuses_qkv_attention`]).
    pub fn launches_for(&self, batch: &Batch, outputs: OutputSelection) -> usize {
        self.schedule(batch, outputs).len()
    }

    /// Every launch of a pass over `batch` asking for `outputs`, in order: what
    /// [`DeviceBert::forward`] launches, and what the launch count and the minimum traffic are
    /// counted over.
    pub fn schedule(&self, batch: &Batch, outputs: OutputSelection) -> Vec<Step> {
        let (pooler, classifier) = self.heads_run(outputs);
        schedule::schedule(ScheduleShape {
            layers: self.layers.len(),
            precision: self.precision,
            fuse_layernorm: kernels::gemm_plan::fuses_layernorm(self.config.hidden_size),
            projection: self.projection.is_some(),
            pooler,
            classifier,
            fuse_ffn_quantize: self.fuses_ffn_quantize(),
            fuse_qkv_attention: self.fuses_qkv_attention(batch),
            attention_quantizes_context: self.kernels.is_sm90() && self.precision == Precision::Int8,
            attention_block: self.takes_attention_blocks(),
            ffn_block: self.ffn_block_cols(batch.total_tokens()),
        })
    }

    /// Whether some pass may run the FFN blocks (`ffn_block_f16_sm90*`): fp16 on the Hopper
    /// kernels, fp16 FFN weights, an FFN the block takes (a fused layernorm's row).
    fn may_run_ffn_block(&self) -> bool {
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        self.kernels.is_sm90()
            && self.precision == Precision::F16
            && kernels::ffn_block_sm90::supports(h, i)
            && kernels::gemm_plan::fuses_layernorm(h)
            && self
                .layers
                .iter()
                .all(|l| matches!((&l.ffn1, &l.ffn2), (DeviceLinear::F16 { .. }, DeviceLinear::F16 { .. })))
    }

    /// The tile width of the FFN block a pass over `t` tokens runs, or `None` where it runs FFN1
    /// and FFN2 + LN2 as two launches: [`Self::may_run_ffn_block`], and the roofline model's
    /// choice between the bit-identical launches ([`crate::perf::plan::ffn_block_cols`]).
    fn ffn_block_cols(&self, t: usize) -> Option<usize> {
        if !self.may_run_ffn_block() {
            return None;
        }
        crate::perf::plan::ffn_block_cols(&self.config, t)
    }

    /// Whether a fused QKV attention also runs the attention-out GEMM and LN1
    /// (`attention_block_*_sm90_*`): [`schedule::takes_attention_blocks`], on an fp16
    /// attention-out GEMM or an int8 one of symmetric, unsmoothed codes (the context's).
    fn takes_attention_blocks(&self) -> bool {
        schedule::takes_attention_blocks(self.precision, self.config.hidden_size)
            && self.layers.iter().all(|l| {
                matches!(&l.attn_out, DeviceLinear::F16 { .. } | DeviceLinear::Int8 { smooth: None, w_sum: None, .. })
            })
    }

    /// Whether some batch's pass runs the attention blocks: the kernel family, the model's
    /// shapes and weights allow them ([`Self::fuses_qkv_attention`] less the batch's rule).
    fn may_run_attention_blocks(&self) -> bool {
        let (h, int8) = (self.config.hidden_size, self.precision == Precision::Int8);
        self.kernels.is_sm90()
            && self.takes_attention_blocks()
            && kernels::gemm_sm90::supports(kernels::GemmShape { m: 1, n: 3 * h, k: h }, int8)
            && kernels::qkv_attention_sm90::takes_heads(self.config.num_attention_heads, self.config.head_dim())
    }

    /// Whether each layer's QKV GEMM and attention run as one launch over `batch`
    /// (`qkv_attention_*_sm90`): on the Hopper kernels, where the QKV GEMM runs on them (its
    /// shape), for the batches [`schedule::fuses_qkv_attention`] takes. The same bits as the two
    /// launches.
    fn fuses_qkv_attention(&self, batch: &Batch) -> bool {
        let h = self.config.hidden_size;
        let int8 = self.precision == Precision::Int8;
        self.kernels.is_sm90()
            && kernels::gemm_sm90::supports(kernels::GemmShape { m: 1, n: 3 * h, k: h }, int8)
            && schedule::fuses_qkv_attention(self.config.num_attention_heads, self.config.head_dim(), &batch.lengths)
    }

    /// Whether the Hopper launch of layer GEMM `step` over `t` tokens is a cluster entry
    /// (`_cln`, `_cqa`) where [`kernels::gemm_sm90::plan`] would split K ahead of a strip tail:
    /// the roofline model's choice between the two bit-identical launches
    /// ([`crate::perf::plan::sm90_layer_tile`], the launch the performance plan prices). The
    /// cluster entry is launched by passing no split workspace.
    fn sm90_cluster(&self, step: Step, t: usize) -> bool {
        self.kernels.is_sm90()
            && crate::perf::plan::sm90_layer_tile(&self.config, self.precision, t, step)
                .is_some_and(|tile| tile.cluster > 1)
    }

    /// Whether FFN1 quantises its own output for FFN2 (`gemm_int8_sm90*_qa`, no `quantize_ffn`
    /// launch): int8 on the Hopper kernels, which take FFN1's shape (a function of the model:
    /// every token count gives the same schedule).
    fn fuses_ffn_quantize(&self) -> bool {
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        self.precision == Precision::Int8
            && self.kernels.is_sm90()
            && kernels::gemm_sm90::supports(kernels::GemmShape { m: 1, n: i, k: h }, true)
    }

    /// Whether a pass asking for `outputs` runs the pooler and the classifier: the pooler for
    /// its own output or for the logits, the classifier for the logits, each only when the
    /// model has it (the classifier reads the pooler's output, so it needs both).
    fn heads_run(&self, o: OutputSelection) -> (bool, bool) {
        let classifier = o.logits && self.pooler.is_some() && self.classifier.is_some();
        (self.pooler.is_some() && (o.pooler || classifier), classifier)
    }

    /// Makes sure the workspace holds `tokens` tokens and `batch` sequences.
    fn reserve(&mut self, tokens: usize, batch: usize) -> Result<()> {
        if let Some(ws) = &self.workspace {
            if ws.tokens >= tokens && ws.batch >= batch {
                return Ok(());
            }
        }
        let (old_t, old_b) = self.workspace.as_ref().map_or((0, 0), |w| (w.tokens, w.batch));
        let (t, b) = (tokens.max(old_t), batch.max(old_b));
        // Captured graphs hold the old workspace's addresses: drop them before it goes.
        self.graph_cache().invalidate();
        self.workspace = None; // free before allocating the larger one
        let d = &self.dev;
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        let labels = self.classifier_padded();
        // laid out for a full workspace here; `upload_inputs` lays them out per batch
        let inputs = d.alloc::<u32>(3 * t + b + 1)?;
        let (ids, pos_ids, type_ids) = (inputs.view(0, t)?, inputs.view(t, t)?, inputs.view(2 * t, t)?);
        let cu_seqlens = inputs.view(3 * t, b + 1)?;
        let int8 = self.precision == Precision::Int8;
        // every token count up to t may run: size for the largest split launch of each shape
        // (and the fp16 heads: the projection, the classifier)
        let (e, np) = (self.config.embedding_size, labels);
        let split_shapes: Vec<_> = (1..=t)
            .flat_map(|m| {
                [
                    (m, 3 * h, h, int8),
                    (m, h, h, int8),
                    (m, i, h, int8),
                    (m, h, i, int8),
                    (m, h, e, false),
                    (m, np.max(8), h, false),
                ]
            })
            .collect();
        let split = SplitWorkspace::for_shapes(d, &split_shapes)?;
        // the attention blocks' scratch only where a pass may run them (empty elsewhere)
        let (block_t, block_b) = if self.may_run_attention_blocks() { (t, b) } else { (0, 0) };
        let slots = block_b * fusebert_kernels::qkv_attention_sm90::SLOT_ROWS;
        // the FFN blocks' scratch for the most tokens a pass runs them at (short batches only)
        let ffn_block_rows = (1..=t).rev().find(|&m| self.ffn_block_cols(m).is_some());
        self.workspace = Some(Workspace {
            tokens: t,
            batch: b,
            inputs,
            host_inputs: Vec::with_capacity(3 * t + b + 1),
            ids,
            pos_ids,
            type_ids,
            cu_seqlens,
            x: d.alloc(t * h)?,
            qkv: d.alloc(t * 3 * h)?,
            ctx: d.alloc(t * h)?,
            y: d.alloc(t * h)?,
            h: d.alloc(t * h)?,
            ffn: d.alloc(t * i)?,
            q8: d.alloc(t * i.max(h))?,
            q8_next: d.alloc(t * i.max(h))?,
            q8_scale: d.alloc(t)?,
            q8_zero: d.alloc(t)?,
            ctx_scale: d.alloc(t)?,
            block_ctx: d.alloc_filled(slots * h, 0)?,
            block_q8: d.alloc_filled(if int8 { slots * h } else { 0 }, 0)?,
            block_scale: d.alloc_filled(if int8 { slots } else { 0 }, 0)?,
            block_counters: d.alloc_filled(fusebert_kernels::qkv_attention_sm90::FOLD_COUNTERS * block_b, 0)?,
            ln1_q8: d.alloc(if int8 { block_t * h } else { 0 })?,
            ln1_scale: d.alloc(if int8 { block_t } else { 0 })?,
            ffn_block: ffn_block_rows.map(|m| kernels::FfnBlockWorkspace::new(d, m, h, i)).transpose()?,
            // per sequence (the fused QKV attention) or per row tile (attention_int8_sm90)
            ctx_counters: d.alloc_filled(
                fusebert_kernels::CTX_COUNTERS * b.max(fusebert_kernels::attention_sm90::max_codes_strips(b, t)),
                0,
            )?,
            emb: self.projection.as_ref().map(|_| d.alloc(t * self.config.embedding_size)).transpose()?,
            split,
            pooled: d.alloc(b * h)?,
            cls: d.alloc(b * h)?,
            pooler_out: d.alloc(b * h)?,
            logits: d.alloc(b * labels.max(1))?,
        });
        Ok(())
    }

    fn classifier_padded(&self) -> usize {
        self.classifier.as_ref().map_or(0, |(_, n)| n.next_multiple_of(GEMM_ALIGN))
    }

    /// Runs the encoder on `batch`, mean pooling; an empty batch gives an empty output. Only
    /// the outputs `opts.outputs` asks for are computed and read back; the per-layer hidden
    /// states come back when asked for.
    pub fn forward(&mut self, batch: &Batch, opts: ForwardOptions) -> Result<(Output, Option<DeviceHiddenStates>)> {
        self.forward_pooled(batch, opts, DevicePooling::default())
    }

    /// The sentence embedding of every sequence of `batch` as `SentenceTransformer.encode` gives
    /// it for a folder with this `sentence` pipeline: pooling (and, when no Dense module
    /// follows, the Normalize module) on the device, then the Dense modules and Normalize on the
    /// host (a `[hidden] x [out, hidden]` product per text). `prompt_tokens` is how many leading
    /// tokens (`[CLS]` included) belong to a prompt (0 without one).
    pub fn sentence_embeddings(
        &mut self,
        batch: &Batch,
        sentence: &SentenceConfig,
        prompt_tokens: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let skip = if sentence.include_prompt { 0 } else { prompt_tokens };
        let on_device = sentence.dense.is_empty();
        let opts = ForwardOptions::embeddings(sentence.normalize && on_device);
        let (out, _) = self.forward_pooled(batch, opts, DevicePooling { mode: sentence.pooling, skip })?;
        Ok(out
            .sequences
            .into_iter()
            .map(|s| if on_device { s.pooled } else { sentence.after_pooling(&s.pooled) })
            .collect())
    }

    /// [`DeviceBert::forward`] with another pooling: `SequenceOutput::pooled` then holds
    /// the `pooling.mode` vector (L2-normalised when `opts.normalize`).
    pub fn forward_pooled(
        &mut self,
        batch: &Batch,
        opts: ForwardOptions,
        pooling: DevicePooling,
    ) -> Result<(Output, Option<DeviceHiddenStates>)> {
        let h = self.config.hidden_size;
        if batch.is_empty() {
            return Ok((Output { hidden_size: h, sequences: Vec::new() }, None));
        }
        check_batch(&self.config, batch)?;
        let (t, b) = (batch.total_tokens(), batch.len());
        self.reserve(t, b)?;
        let mut ws = self.workspace.take().expect("reserved");
        let result = self.run(&mut ws, batch, opts, pooling);
        self.workspace = Some(ws);
        result
    }

    fn run(
        &self,
        ws: &mut Workspace,
        batch: &Batch,
        opts: ForwardOptions,
        pooling: DevicePooling,
    ) -> Result<(Output, Option<DeviceHiddenStates>)> {
        let (t, h) = (batch.total_tokens(), self.config.hidden_size);
        upload_inputs(ws, batch)?;
        if opts.outputs.hidden_states {
            // The hidden states are read between launches: no graph.
            let mut states = DeviceHiddenStates { layers: Vec::new() };
            self.launch_all(ws, batch, opts, pooling, |x| {
                states.layers.push(read_f32(x, t * h)?);
                Ok(())
            })?;
            let out = self.read_outputs(ws, batch, opts.outputs)?;
            return Ok((out, Some(states)));
        }
        if self.use_graphs {
            let ((), launches) = self.dev.record(|| self.launch_all(ws, batch, opts, pooling, |_| Ok(())))?;
            self.graph_cache().replay(&self.dev, launches)?;
        } else {
            self.launch_all(ws, batch, opts, pooling, |_| Ok(()))?;
        }
        Ok((self.read_outputs(ws, batch, opts.outputs)?, None))
    }

    /// Every launch of one forward pass, in order (the inputs are already in the workspace);
    /// `after` sees ws.x after the embeddings and after each layer.
    fn launch_all(
        &self,
        ws: &mut Workspace,
        batch: &Batch,
        opts: ForwardOptions,
        pooling: DevicePooling,
        mut after: impl FnMut(&DeviceBuffer<f16>) -> Result<()>,
    ) -> Result<()> {
        let steps = self.schedule(batch, opts.outputs);
        // FFN1 then reads LN1's codes where the attention blocks wrote them
        let blocks = steps.iter().any(|s| matches!(s, Step::AttentionBlock { .. }));
        for step in steps {
            // a layer's first launch and pooling read the hidden state the steps before made
            if matches!(
                step,
                Step::Gemm { gemm: LayerGemm::Qkv, .. }
                    | Step::QkvAttention { .. }
                    | Step::AttentionBlock { .. }
                    | Step::Pool
            ) {
                after(&ws.x)?;
            }
            self.launch_step(ws, batch, opts, pooling, step, blocks)?;
        }
        Ok(())
    }

    /// One step of the schedule. Buffers: ws.x holds the hidden state between layers (and, for
    /// int8, ws.q8 its quantised copy); qkv, ctx, y (residual sums), h (LN1's output) and ffn
    /// are a layer's intermediates.
    fn launch_step(
        &self,
        ws: &mut Workspace,
        batch: &Batch,
        opts: ForwardOptions,
        pooling: DevicePooling,
        step: Step,
        blocks: bool,
    ) -> Result<()> {
        let d = &self.dev;
        let (t, b) = (batch.total_tokens(), batch.len());
        let (h, i, eps) = (self.config.hidden_size, self.config.intermediate_size, self.config.layer_norm_eps);
        match step {
            Step::Embedding => self.embedding(ws, t),
            Step::Projection => match (&self.projection, &ws.emb) {
                (Some(DeviceLinear::F16 { w, b }), Some(emb)) => self.gemm_f16_head(
                    &kernels::GemmF16 {
                        a: emb,
                        w,
                        bias: Some(b),
                        epilogue: Epilogue::None,
                        shape: kernels::GemmShape { m: t, n: h, k: self.config.embedding_size },
                    },
                    &ws.split,
                    &mut ws.x,
                ),
                _ => Err(Error::Other("DeviceBert: projection without its weights or workspace buffer".into())),
            },
            Step::Quantize { layer: _, what: Quantized::Embeddings } => {
                let smooth = self.layers.first().and_then(|l| l.qkv.smooth());
                kernels::quantize_i8(
                    d,
                    &kernels::QuantizeF16 { x: &ws.x, smooth, rows: t, hidden: h },
                    kernels::QuantizedI8 { q: &mut ws.q8, scale: &mut ws.q8_scale, zero: None },
                )
            }
            // into q8_next and ctx_scale, where the fused QKV attention writes them too
            Step::Quantize { layer: _, what: Quantized::Context } => kernels::quantize_i8(
                d,
                &kernels::QuantizeF16 { x: &ws.ctx, smooth: None, rows: t, hidden: h },
                kernels::QuantizedI8 { q: &mut ws.q8_next, scale: &mut ws.ctx_scale, zero: None },
            ),
            Step::Quantize { layer, what: Quantized::Ffn } => {
                let smooth = layer.and_then(|l| self.layers[l].ffn2.smooth());
                kernels::quantize_i8(
                    d,
                    &kernels::QuantizeF16 { x: &ws.ffn, smooth, rows: t, hidden: i },
                    kernels::QuantizedI8 { q: &mut ws.q8, scale: &mut ws.q8_scale, zero: Some(&mut ws.q8_zero) },
                )
            }
            Step::Attention { .. } => {
                let shape = self.attention_shape(batch);
                if self.kernels.is_sm90() && self.precision == Precision::Int8 {
                    // the context's codes too, as Step::Quantize would write them (no quantize launch)
                    let Workspace { qkv, ctx, q8_next, ctx_scale, ctx_counters, cu_seqlens, .. } = ws;
                    let codes = kernels::ContextCodes { q: q8_next, scale: ctx_scale, counters: ctx_counters };
                    kernels::attention_int8_sm90(d, qkv, cu_seqlens, ctx, codes, shape, kernels::Sm90Tiling::Auto)
                } else if self.kernels.is_sm90() {
                    kernels::attention_sm90(d, &ws.qkv, &ws.cu_seqlens, &mut ws.ctx, shape, kernels::Sm90Tiling::Auto)
                } else {
                    kernels::attention(
                        d,
                        &ws.qkv,
                        &ws.cu_seqlens,
                        &mut ws.ctx,
                        shape,
                        kernels::AttentionLaunch::default(),
                    )
                }
            }
            Step::QkvAttention { layer } => self.qkv_attention(ws, batch, layer),
            Step::AttentionBlock { layer, ln1 } => self.attention_block(ws, batch, layer, ln1),
            Step::Gemm { .. } => self.layer_gemm(ws, step, t, blocks),
            Step::FfnBlock { layer, cols, .. } => self.ffn_block(ws, layer, cols, t),
            Step::LayerNorm { layer, out } => {
                let l = &self.layers[layer];
                let Workspace { x, y, h: hbuf, q8, q8_scale, .. } = ws;
                match out.which {
                    LayerNorm::Ln1 => self.layernorm(&l.ln1, y, hbuf, out.q8, q8, q8_scale, l.ffn1.smooth(), t, h, eps),
                    LayerNorm::Ln2 => {
                        let smooth = self.layers.get(layer + 1).and_then(|n| n.qkv.smooth());
                        self.layernorm(&l.ln2, y, x, out.q8, q8, q8_scale, smooth, t, h, eps)
                    }
                }
            }
            Step::Pool => {
                let (mode, skip, normalize) = (pooling.mode, pooling.skip, opts.normalize);
                kernels::pool(
                    d,
                    &kernels::PoolF16 {
                        x: &ws.x,
                        cu_seqlens: &ws.cu_seqlens,
                        batch: b,
                        tokens: t,
                        hidden: h,
                        mode,
                        skip,
                        l2norm: normalize,
                    },
                    &mut ws.pooled,
                )
            }
            Step::GatherCls => kernels::gather_first_rows(d, &ws.x, &ws.cu_seqlens, &mut ws.cls, b, t, h),
            Step::Pooler => match &self.pooler {
                Some(DeviceLinear::F16 { w, b: bias }) => self.gemm_f16_head(
                    &kernels::GemmF16 {
                        a: &ws.cls,
                        w,
                        bias: Some(bias),
                        epilogue: Epilogue::Tanh,
                        shape: kernels::GemmShape { m: b, n: h, k: h },
                    },
                    &ws.split,
                    &mut ws.pooler_out,
                ),
                _ => Err(Error::Other("DeviceBert: the schedule runs a pooler the model does not have".into())),
            },
            Step::Classifier => match &self.classifier {
                Some((DeviceLinear::F16 { w, b: bias }, _)) => {
                    let np = self.classifier_padded();
                    self.gemm_f16_head(
                        &kernels::GemmF16 {
                            a: &ws.pooler_out,
                            w,
                            bias: Some(bias),
                            epilogue: Epilogue::None,
                            shape: kernels::GemmShape { m: b, n: np, k: h },
                        },
                        &ws.split,
                        &mut ws.logits,
                    )
                }
                _ => Err(Error::Other("DeviceBert: the schedule runs a classifier the model does not have".into())),
            },
        }
    }

    /// Word/position/type rows + layernorm into ws.x (or into ws.emb when a projection follows).
    fn embedding(&self, ws: &mut Workspace, t: usize) -> Result<()> {
        let tables = EmbeddingTables {
            word: &self.word,
            position: &self.position,
            token_type: self.token_type.as_ref(),
            // the batch's position ids already carry the model's offset (check_batch)
            position_offset: 0,
            gamma: &self.emb_ln.gamma,
            beta: &self.emb_ln.beta,
            eps: self.config.layer_norm_eps,
        };
        let Workspace { ids, pos_ids, type_ids, x, emb, .. } = ws;
        match emb {
            Some(emb) => {
                let e = self.config.embedding_size;
                kernels::embedding_layernorm(&self.dev, &TokenIds { ids, pos_ids, type_ids }, &tables, emb, t, e)
            }
            None => {
                let token_ids = TokenIds { ids, pos_ids, type_ids };
                kernels::embedding_layernorm(&self.dev, &token_ids, &tables, x, t, self.config.hidden_size)
            }
        }
    }

    /// One of a layer's four GEMMs, with its layernorm fused in when `layernorm` says so (and
    /// FFN1 quantising its output for FFN2 when `quantize` does).
    ///
    /// int8 codes: LN1's go to q8, which FFN1 reads. When FFN1 quantises its own output, FFN2's
    /// codes go to q8_next (q8 is still read by other row strips while a strip's codes are
    /// written), FFN2 reads them there and LN2's go to q8 (free again), where the next layer
    /// reads them. Otherwise the quantize launch writes FFN2's into q8, LN2's go to q8_next
    /// (FFN2 reads q8 while they are written) and the two are swapped. Where the pass runs the
    /// attention blocks (`blocks`), LN1's codes are in ln1_q8 instead.
    fn layer_gemm(&self, ws: &mut Workspace, step: Step, t: usize, blocks: bool) -> Result<()> {
        let Step::Gemm { layer, gemm, layernorm, quantize } = step else {
            return Err(Error::Other(format!("DeviceBert::layer_gemm: {step:?} is not a layer GEMM")));
        };
        let (h, i, eps) = (self.config.hidden_size, self.config.intermediate_size, self.config.layer_norm_eps);
        let l = &self.layers[layer];
        let next = self.layers.get(layer + 1);
        let cluster = self.sm90_cluster(step, t);
        let Workspace {
            x,
            qkv,
            ctx,
            y,
            h: hbuf,
            ffn,
            q8,
            q8_next,
            q8_scale,
            q8_zero,
            ctx_scale,
            split,
            ln1_q8,
            ln1_scale,
            ..
        } = ws;
        let sp = &*split;
        // LN1's codes: where the attention block wrote them, else where the layernorm did
        let (ln1_codes, ln1_scales) = if blocks { (&*ln1_q8, &*ln1_scale) } else { (&*q8, &*q8_scale) };
        match (gemm, layernorm) {
            (LayerGemm::Qkv, _) => {
                self.gemm(&l.qkv, x, q8, q8_scale, q8_zero, sp, Epilogue::None, qkv, t, 3 * h, h, None, false)
            }
            // int8: the context's codes are in q8_next and ctx_scale (Step::Quantize or the fused
            // QKV attention)
            (LayerGemm::AttnOut, None) => {
                let res = Epilogue::Residual(x);
                self.gemm(&l.attn_out, ctx, q8_next, ctx_scale, q8_zero, sp, res, y, t, h, h, None, false)
            }
            (LayerGemm::AttnOut, Some(out)) => {
                // LN1's int8 codes go to q8 (the layer's input codes, read by nothing after
                // the QKV projection)
                let q = out.q8.then_some(FusedQ8 { q: q8, scale: q8_scale, smooth: l.ffn1.smooth() });
                let ln = FusedLayerNorm { gamma: &l.ln1.gamma, beta: &l.ln1.beta, out: hbuf, q8: q, eps };
                let res = Epilogue::Residual(x);
                self.gemm(&l.attn_out, ctx, q8_next, ctx_scale, q8_zero, sp, res, y, t, h, h, Some(&ln), cluster)
            }
            (LayerGemm::Ffn1, _) if quantize => {
                let codes = FusedQuantize { q: q8_next, scale: q8_scale, zero: q8_zero, smooth: l.ffn2.smooth() };
                self.ffn1_quantized(&l.ffn1, ln1_codes, ln1_scales, q8_zero, &codes, sp, ffn, t, i, h, cluster)
            }
            (LayerGemm::Ffn1, _) => {
                self.gemm(&l.ffn1, hbuf, ln1_codes, ln1_scales, q8_zero, sp, self.ffn_act, ffn, t, i, h, None, false)
            }
            (LayerGemm::Ffn2, ln2) => {
                // FFN2's codes and where LN2's go (see above)
                let fused = self.fuses_ffn_quantize();
                let (input, ln2_codes) = if fused { (&*q8_next, &*q8) } else { (&*q8, &*q8_next) };
                let res = Epilogue::Residual(hbuf);
                match ln2 {
                    None => self.gemm(&l.ffn2, ffn, input, q8_scale, q8_zero, sp, res, y, t, h, i, None, false)?,
                    Some(out) => {
                        // int8: LN2's codes are smoothed for the next layer's QKV; its scales
                        // overwrite q8_scale rows only after their strip's tiles read them
                        let q = next.filter(|_| out.q8).map(|n| FusedQ8 {
                            q: ln2_codes,
                            scale: q8_scale,
                            smooth: n.qkv.smooth(),
                        });
                        let ln = FusedLayerNorm { gamma: &l.ln2.gamma, beta: &l.ln2.beta, out: x, q8: q, eps };
                        self.gemm(&l.ffn2, ffn, input, q8_scale, q8_zero, sp, res, y, t, h, i, Some(&ln), cluster)?
                    }
                }
                // the next layer reads LN2's codes from q8; an even number of swaps per pass
                // keeps every pass's launch sequence (and so its captured graph) the same
                let swaps = self.layers.len() - 1;
                if self.precision == Precision::Int8
                    && !fused
                    && layernorm.is_some()
                    && (next.is_some() || swaps % 2 == 1)
                {
                    std::mem::swap(&mut ws.q8, &mut ws.q8_next);
                }
                Ok(())
            }
        }
    }

    /// Layer `layer`'s FFN1, FFN2 (+ residual) and LN2 in one Hopper launch
    /// (`ffn_block_f16_sm90*`, on the width the schedule carries: [`DeviceBert::ffn_block_cols`]):
    /// ws.h (LN1's rows) in, FFN1's output in ws.ffn, FFN2's in ws.y, LN2's rows in ws.x: the
    /// chain's buffers and bits.
    fn ffn_block(&self, ws: &mut Workspace, layer: usize, cols: usize, t: usize) -> Result<()> {
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        let l = &self.layers[layer];
        let what = |s: &str| Error::Other(format!("DeviceBert: an FFN block of layer {layer} {s}"));
        let (DeviceLinear::F16 { w: w1, b: b1 }, DeviceLinear::F16 { w: w2, b: b2 }) = (&l.ffn1, &l.ffn2) else {
            return Err(what("on int8 weights"));
        };
        let Workspace { x, h: hbuf, ffn, y, ffn_block: Some(scratch), .. } = ws else {
            return Err(what("without its workspace"));
        };
        let op = kernels::FfnBlockF16 { x: hbuf, w1, b1, act: self.ffn_act, w2, b2, m: t, h, i };
        let ln = FusedLayerNorm {
            gamma: &l.ln2.gamma,
            beta: &l.ln2.beta,
            out: x,
            q8: None,
            eps: self.config.layer_norm_eps,
        };
        let how = kernels::FfnBlockLaunch { cols, ctas: None };
        kernels::ffn_block_f16_sm90(&self.dev, &op, ffn, y, &ln, scratch, how)
    }

    /// Layer `layer`'s QKV GEMM and attention in one Hopper launch (`qkv_attention_*_sm90`,
    /// scheduled where [`DeviceBert::fuses_qkv_attention`] holds): ws.x (or its int8 codes in
    /// ws.q8) in, the context in ws.ctx; Q, K and V stay on chip (ws.qkv is not written).
    fn qkv_attention(&self, ws: &mut Workspace, batch: &Batch, layer: usize) -> Result<()> {
        use kernels::qkv_attention_sm90 as fused;
        let h = self.config.hidden_size;
        let t = batch.total_tokens();
        let shape = self.attention_shape(batch);
        let gemm_shape = kernels::GemmShape { m: t, n: 3 * h, k: h };
        let Workspace { x, ctx, q8, q8_next, q8_scale, q8_zero, ctx_scale, ctx_counters, cu_seqlens, .. } = ws;
        let lin = &self.layers[layer].qkv;
        match lin {
            DeviceLinear::F16 { w, b } => {
                let g = kernels::GemmF16 { a: x, w, bias: Some(b), epilogue: Epilogue::None, shape: gemm_shape };
                fused::qkv_attention_f16_sm90(&self.dev, &g, cu_seqlens, ctx, shape)
            }
            DeviceLinear::Int8 { .. } => {
                let g = lin.int8_gemm(q8, q8_scale, q8_zero, Epilogue::None, gemm_shape).expect("int8 weights");
                // the context's codes, as Step::Quantize would write them (no quantize launch)
                let codes = fused::ContextCodes { q: q8_next, scale: ctx_scale, counters: ctx_counters };
                fused::qkv_attention_int8_sm90(&self.dev, &g, cu_seqlens, ctx, codes, shape)
            }
        }
    }

    /// The attention's shape over `batch` (the model's heads, the default scale).
    fn attention_shape(&self, batch: &Batch) -> AttentionShape {
        AttentionShape {
            batch: batch.len(),
            tokens: batch.total_tokens(),
            max_seqlen: batch.max_len(),
            heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
            scale: None,
        }
    }

    /// The attention block of `layer` (`attention_block_*_sm90`): as [`DeviceBert::qkv_attention`],
    /// the context into the block's slot scratch, then ws.y = ctx . Wo^T + bias + ws.x and LN1
    /// into ws.h (int8: and its codes into ws.ln1_q8 / ln1_scale, which FFN1 reads).
    fn attention_block(&self, ws: &mut Workspace, batch: &Batch, layer: usize, ln1: LayerNormOut) -> Result<()> {
        use kernels::qkv_attention_sm90 as fused;
        let h = self.config.hidden_size;
        let t = batch.total_tokens();
        let shape = self.attention_shape(batch);
        let gemm_shape = kernels::GemmShape { m: t, n: 3 * h, k: h };
        let l = &self.layers[layer];
        let Workspace {
            x,
            y,
            h: hbuf,
            q8,
            q8_scale,
            q8_zero,
            block_ctx,
            block_q8,
            block_scale,
            block_counters,
            ctx_counters,
            ln1_q8,
            ln1_scale,
            cu_seqlens,
            ..
        } = ws;
        let q = ln1.q8.then_some(FusedQ8 { q: ln1_q8, scale: ln1_scale, smooth: l.ffn1.smooth() });
        let ln = FusedLayerNorm {
            gamma: &l.ln1.gamma,
            beta: &l.ln1.beta,
            out: hbuf,
            q8: q,
            eps: self.config.layer_norm_eps,
        };
        match (&l.qkv, &l.attn_out) {
            (DeviceLinear::F16 { w, b }, DeviceLinear::F16 { w: wo, b: bo }) => {
                let g = kernels::GemmF16 { a: x, w, bias: Some(b), epilogue: Epilogue::None, shape: gemm_shape };
                let o = fused::AttentionOut {
                    w: wo,
                    w_scale: None,
                    bias: bo,
                    residual: x,
                    y,
                    ln,
                    counters: block_counters,
                };
                fused::attention_block_f16_sm90(&self.dev, &g, cu_seqlens, block_ctx, o, shape)
            }
            (lin @ DeviceLinear::Int8 { .. }, DeviceLinear::Int8 { w: wo, scale: wo_scale, b: bo, .. }) => {
                let g = lin.int8_gemm(q8, q8_scale, q8_zero, Epilogue::None, gemm_shape).expect("int8 weights");
                let codes = fused::ContextCodes { q: block_q8, scale: block_scale, counters: ctx_counters };
                let o = fused::AttentionOut {
                    w: wo,
                    w_scale: Some(wo_scale),
                    bias: bo,
                    residual: x,
                    y,
                    ln,
                    counters: block_counters,
                };
                fused::attention_block_int8_sm90(&self.dev, &g, cu_seqlens, block_ctx, codes, o, shape)
            }
            _ => Err(Error::Other("DeviceBert: an attention block over mixed-precision weights".into())),
        }
    }

    /// out = LN(y); with `with_q8` also its int8 copy into q8 (for the next GEMM).
    #[allow(clippy::too_many_arguments)] // one layernorm step: input, weights, outputs and their smoothing
    fn layernorm(
        &self,
        ln: &DeviceLayerNorm,
        y: &DeviceBuffer<f16>,
        out: &mut DeviceBuffer<f16>,
        with_q8: bool,
        q8: &mut DeviceBuffer<i8>,
        q8_scale: &mut DeviceBuffer<f32>,
        smooth: Option<&DeviceBuffer<f16>>,
        t: usize,
        h: usize,
        eps: f32,
    ) -> Result<()> {
        if with_q8 {
            let q8 = Q8Out { q: q8, scale: q8_scale, smooth };
            kernels::layernorm_f16(
                &self.dev,
                &kernels::LayerNormF16 {
                    x: y,
                    residual: None,
                    bias: None,
                    gamma: &ln.gamma,
                    beta: &ln.beta,
                    rows: t,
                    hidden: h,
                    eps,
                },
                out,
                Some(q8),
                kernels::Variant::Fast,
            )
        } else {
            kernels::layernorm_f16(
                &self.dev,
                &kernels::LayerNormF16 {
                    x: y,
                    residual: None,
                    bias: None,
                    gamma: &ln.gamma,
                    beta: &ln.beta,
                    rows: t,
                    hidden: h,
                    eps,
                },
                out,
                None,
                kernels::Variant::Fast,
            )
        }
    }

    /// out[m, n] = epilogue(a[m, :] . W[n, :] + bias[n]), launched as `GemmPlan::choose` says
    /// (split over K into `split` when that is faster). The int8 path reads `q8`/`q8_scale`
    /// (and `q8_zero` for an asymmetric input), the quantised copy of `a` made by the previous
    /// launch, instead of `a`.
    #[allow(clippy::too_many_arguments)] // one GEMM step: inputs, weights, outputs and the epilogue operands
    fn gemm(
        &self,
        lin: &DeviceLinear,
        a: &DeviceBuffer<f16>,
        q8: &DeviceBuffer<i8>,
        q8_scale: &DeviceBuffer<f32>,
        q8_zero: &DeviceBuffer<i32>,
        split: &SplitWorkspace,
        epilogue: Epilogue<'_>,
        out: &mut DeviceBuffer<f16>,
        m: usize,
        n: usize,
        k: usize,
        ln: Option<&FusedLayerNorm<'_>>,
        cluster: bool,
    ) -> Result<()> {
        let d = &self.dev;
        let shape = kernels::GemmShape { m, n, k };
        // Hopper: split over K where the planner splits, unless the layernorm's cluster entry
        // was chosen (the same bits either way)
        let how90 = |int8: bool| kernels::GemmSm90Launch::planned_or_cluster(m, n, k, int8, split, cluster);
        // mma.sync: the planner's tile and split, with the layernorm fused when asked
        let mma = |int8: bool| match ln {
            None => kernels::GemmLaunch::planned(GemmPlan::choose(m, n, k, int8), Some(split)),
            Some(ln) => kernels::GemmLaunch::fused(GemmPlan::choose_with_layernorm(m, n, k, int8), split, ln),
        };
        match lin {
            DeviceLinear::F16 { w, b } => {
                let g = kernels::GemmF16 { a, w, bias: Some(b), epilogue, shape };
                match ln {
                    _ if !(self.kernels.is_sm90() && kernels::gemm_sm90::supports(shape, false)) => {
                        kernels::gemm_f16(d, &g, out, mma(false))
                    }
                    None => kernels::gemm_f16_sm90(d, &g, out, how90(false)),
                    Some(ln) => kernels::gemm_f16_sm90_ln(d, &g, out, ln, split, how90(false)),
                }
            }
            DeviceLinear::Int8 { .. } => {
                let g = lin.int8_gemm(q8, q8_scale, q8_zero, epilogue, shape).expect("int8 weights");
                match ln {
                    _ if !(self.kernels.is_sm90() && kernels::gemm_sm90::supports(shape, true)) => {
                        kernels::gemm_int8(d, &g, out, mma(true))
                    }
                    None => kernels::gemm_int8_sm90(d, &g, out, how90(true)),
                    Some(ln) => kernels::gemm_int8_sm90_ln(d, &g, out, ln, split, how90(true)),
                }
            }
        }
    }

    /// The Hopper int8 FFN1 quantising its own output (`gemm_int8_sm90*_qa`): `out` = the
    /// activation of `q8 . W^T`, and `codes` = FFN2's asymmetric int8 input, the same bits as
    /// the `quantize_ffn` launch it replaces. No mma.sync fallback: the schedule planned no
    /// quantize launch ([`DeviceBert::fuses_ffn_quantize`]).
    #[allow(clippy::too_many_arguments)] // one GEMM step: inputs, weights, outputs and the codes
    fn ffn1_quantized(
        &self,
        lin: &DeviceLinear,
        q8: &DeviceBuffer<i8>,
        q8_scale: &DeviceBuffer<f32>,
        q8_zero: &DeviceBuffer<i32>,
        codes: &FusedQuantize<'_>,
        split: &SplitWorkspace,
        out: &mut DeviceBuffer<f16>,
        m: usize,
        n: usize,
        k: usize,
        cluster: bool,
    ) -> Result<()> {
        let shape = kernels::GemmShape { m, n, k };
        let Some(g) = lin.int8_gemm(q8, q8_scale, q8_zero, self.ffn_act, shape) else {
            return Err(Error::Other("DeviceBert: a quantising FFN1 needs int8 weights".into()));
        };
        // no split workspace: the cluster entry (`_cqa`) where it was chosen
        let how = kernels::GemmSm90Launch::planned_or_cluster(m, n, k, true, split, cluster);
        kernels::gemm_int8_sm90_qa(&self.dev, &g, out, codes, split, how)
    }

    /// A head's fp16 GEMM (projection, pooler, classifier): on the Hopper kernel when selected
    /// and the shape allows, else mma.sync.
    fn gemm_f16_head(
        &self,
        g: &kernels::GemmF16<'_>,
        split: &SplitWorkspace,
        out: &mut DeviceBuffer<f16>,
    ) -> Result<()> {
        if self.kernels.is_sm90() && kernels::gemm_sm90::supports(g.shape, false) {
            let kernels::GemmShape { m, n, k } = g.shape;
            kernels::gemm_f16_sm90(&self.dev, g, out, kernels::GemmSm90Launch::planned(m, n, k, false, split))
        } else {
            kernels::gemm_f16(&self.dev, g, out, kernels::GemmLaunch::default())
        }
    }

    /// Downloads what `o` asks for, in one [`Device::read_back`] (one synchronisation), and
    /// converts it straight from the read buffer into each sequence's vectors.
    fn read_outputs(&self, ws: &Workspace, batch: &Batch, o: OutputSelection) -> Result<Output> {
        let (t, b, h) = (batch.total_tokens(), batch.len(), self.config.hidden_size);
        let (pooler, classifier) = self.heads_run(o);
        let np = self.classifier_padded();
        let labels = self.classifier.as_ref().map_or(0, |(_, n)| *n);
        let mut parts: Vec<ReadPart> = Vec::new();
        let mut part = |want: bool, p: Result<ReadPart>| -> Result<Option<usize>> {
            Ok(if want {
                parts.push(p?);
                Some(parts.len() - 1)
            } else {
                None
            })
        };
        let pooled = part(o.pooled, ws.pooled.read_part(b * h))?;
        let pooler_out = part(o.pooler && pooler, ws.pooler_out.read_part(b * h))?;
        let logits = part(classifier, ws.logits.read_part(b * np))?;
        let hidden = part(o.last_hidden_state, ws.x.read_part(t * h))?;
        let cu = &batch.packed.cu_seqlens;
        self.dev.read_back(&parts, |bytes| {
            let f32s = |i: Option<usize>| i.map(|i| as_elements::<f32>(bytes[i])).transpose();
            let f16s = |i: Option<usize>| i.map(|i| as_elements::<f16>(bytes[i])).transpose();
            let (pooled, pooler_out, logits, hidden) = (f32s(pooled)?, f16s(pooler_out)?, f16s(logits)?, f16s(hidden)?);
            let sequences = (0..b)
                .map(|s| {
                    let lg = logits.map(|l| to_f32(&l[s * np..s * np + labels]));
                    SequenceOutput {
                        len: batch.lengths[s],
                        last_hidden_state: hidden
                            .map_or_else(Vec::new, |x| to_f32(&x[cu[s] as usize * h..cu[s + 1] as usize * h])),
                        pooled: pooled.map_or_else(Vec::new, |p| p[s * h..(s + 1) * h].to_vec()),
                        pooler_output: pooler_out.map(|p| to_f32(&p[s * h..(s + 1) * h])),
                        scores: lg.as_deref().map(softmax),
                        logits: lg,
                    }
                })
                .collect();
            Ok(Output { hidden_size: h, sequences })
        })
    }
}

/// Packs the batch's ids, positions, token types and `cu_seqlens` into `ws.inputs` with one
/// host-to-device copy, and points the four input views at their parts.
fn upload_inputs(ws: &mut Workspace, batch: &Batch) -> Result<()> {
    let (t, b, p) = (batch.total_tokens(), batch.len(), &batch.packed);
    let host = &mut ws.host_inputs;
    host.clear();
    for part in [&p.input_ids, &p.position_ids, &p.token_type_ids, &p.cu_seqlens] {
        host.extend_from_slice(part);
    }
    if host.len() != 3 * t + b + 1 {
        return Err(Error::Input(format!(
            "packed batch: {} ids, {} positions, {} token types and {} cu_seqlens for {t} tokens in {b} sequences",
            p.input_ids.len(),
            p.position_ids.len(),
            p.token_type_ids.len(),
            p.cu_seqlens.len()
        )));
    }
    ws.inputs.write_prefix(host)?;
    ws.ids = ws.inputs.view(0, t)?;
    ws.pos_ids = ws.inputs.view(t, t)?;
    ws.type_ids = ws.inputs.view(2 * t, t)?;
    ws.cu_seqlens = ws.inputs.view(3 * t, b + 1)?;
    Ok(())
}

/// fp16 to f32 with the `half` crate's vectorised conversion (F16C where the CPU has it).
fn to_f32(v: &[f16]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    v.convert_to_f32_slice(&mut out);
    out
}

/// The first `n` elements of `buf`, read back (one synchronisation) and converted to f32.
fn read_f32(buf: &DeviceBuffer<f16>, n: usize) -> Result<Vec<f32>> {
    buf.device().read_back(&[buf.read_part(n)?], |bytes| Ok(to_f32(as_elements(bytes[0])?)))
}
