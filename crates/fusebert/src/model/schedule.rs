//! The forward pass as a list of launches, built once from the model's shape, the precision, the
//! fusions and the requested outputs. The device forward pass launches these steps in order,
//! and everything that counts or models that pass derives from the same list: the launch count,
//! the minimum-traffic walk, and the performance plan (`perf::plan`). Change the forward pass
//! here and all of them follow.
use serde::Serialize;

use super::Precision;

/// The four GEMMs of an encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerGemm {
    /// `[t, h] x [3h, h]^T`: the fused Q, K and V projections.
    Qkv,
    /// `[t, h] x [h, h]^T` + the residual (the layer's input).
    AttnOut,
    /// `[t, h] x [i, h]^T` with the activation epilogue.
    Ffn1,
    /// `[t, i] x [h, i]^T` + the residual (LN1's output).
    Ffn2,
}

impl LayerGemm {
    pub fn name(self) -> &'static str {
        match self {
            LayerGemm::Qkv => "qkv",
            LayerGemm::AttnOut => "attn_out",
            LayerGemm::Ffn1 => "ffn1",
            LayerGemm::Ffn2 => "ffn2",
        }
    }
}

/// The two layernorms of an encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerNorm {
    /// After attention's output GEMM.
    Ln1,
    /// After FFN2: the layer's output.
    Ln2,
}

impl LayerNorm {
    pub fn name(self) -> &'static str {
        match self {
            LayerNorm::Ln1 => "ln1",
            LayerNorm::Ln2 => "ln2",
        }
    }
}

/// A layernorm's outputs besides the fp16 rows: on the int8 path, the codes and scales the next
/// GEMM reads (smoothed for it), except after the last layer, whose output only the fp16 heads
/// and pooling read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerNormOut {
    pub which: LayerNorm,
    /// Also writes int8 codes + per-token scales.
    pub q8: bool,
}

/// What a quantisation launch quantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Quantized {
    /// The embedding output, for layer 0's QKV GEMM (symmetric, smoothed).
    Embeddings,
    /// Attention's output, for the output GEMM (symmetric).
    Context,
    /// The activation's output, for FFN2 (asymmetric: GELU's range is lopsided; smoothed).
    Ffn,
}

/// One kernel launch of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    /// Word + position (+ token type) rows, then the embedding layernorm.
    Embedding,
    /// ELECTRA-style projection from `embedding_size` to `hidden_size` (fp16 GEMM).
    Projection,
    Quantize {
        layer: Option<usize>,
        what: Quantized,
    },
    /// A layer GEMM; `layernorm` when the following layernorm runs in its epilogue;
    /// `quantize` when it also writes the int8 codes of its own output for the next GEMM (the
    /// Hopper int8 FFN1, `gemm_int8_sm90*_qa`, in place of a `quantize_ffn` launch).
    Gemm {
        layer: usize,
        gemm: LayerGemm,
        layernorm: Option<LayerNormOut>,
        quantize: bool,
    },
    /// Fused multi-head attention over the packed sequences (int8 on the Hopper kernels: also
    /// the context's codes, where [`ScheduleShape::attention_quantizes_context`] holds).
    Attention {
        layer: usize,
    },
    /// The QKV GEMM and attention in one launch (the Hopper `qkv_attention_*_sm90` kernels,
    /// where [`fuses_qkv_attention`] holds): the context out, Q, K and V never stored; int8 also
    /// the context's codes (no `quantize_ctx` launch).
    QkvAttention {
        layer: usize,
    },
    /// The QKV GEMM, attention, attention-out GEMM (+ residual) and LN1 in one launch (the
    /// Hopper `attention_block_*_sm90` kernels, where the QKV attention is fused and
    /// [`ScheduleShape::attention_block`] holds): LN1's rows (and int8 their codes) out.
    AttentionBlock {
        layer: usize,
        ln1: LayerNormOut,
    },
    /// FFN1 (+ activation), FFN2 (+ residual) and LN2 in one launch (the Hopper fp16
    /// `ffn_block_f16_sm90*` kernels, where [`ScheduleShape::ffn_block`] gives a width): LN2's
    /// rows out; `cols` its tiles' width.
    FfnBlock {
        layer: usize,
        ln2: LayerNormOut,
        cols: usize,
    },
    /// A layernorm on its own (when the row is too wide to fuse into the GEMM).
    LayerNorm {
        layer: usize,
        out: LayerNormOut,
    },
    /// The sentence pooling (any mode) of the last hidden state.
    Pool,
    /// The `[CLS]` row of every sequence, for the pooler.
    GatherCls,
    /// The pooler GEMM (tanh epilogue).
    Pooler,
    /// The classifier GEMM on the pooler's output.
    Classifier,
}

impl Step {
    /// The step's name as the launch plan shows it (`"qkv"`, `"attention"`, `"ln1"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Embedding => "embedding",
            Step::Projection => "projection",
            Step::Quantize { what: Quantized::Embeddings, .. } => "quantize_emb",
            Step::Quantize { what: Quantized::Context, .. } => "quantize_ctx",
            Step::Quantize { what: Quantized::Ffn, .. } => "quantize_ffn",
            Step::Gemm { gemm, .. } => gemm.name(),
            Step::Attention { .. } => "attention",
            Step::QkvAttention { .. } => "qkv_attention",
            Step::AttentionBlock { .. } => "attention_block",
            Step::FfnBlock { .. } => "ffn_block",
            Step::LayerNorm { out, .. } => out.which.name(),
            Step::Pool => "pool",
            Step::GatherCls => "gather_cls",
            Step::Pooler => "pooler",
            Step::Classifier => "classifier",
        }
    }

    /// The encoder layer the step belongs to (`None`: embeddings and heads).
    pub fn layer(&self) -> Option<usize> {
        match *self {
            Step::Quantize { layer, .. } => layer,
            Step::Gemm { layer, .. }
            | Step::Attention { layer }
            | Step::QkvAttention { layer }
            | Step::AttentionBlock { layer, .. }
            | Step::FfnBlock { layer, .. }
            | Step::LayerNorm { layer, .. } => Some(layer),
            _ => None,
        }
    }
}

/// What decides the launch sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleShape {
    pub layers: usize,
    pub precision: Precision,
    /// The layernorms run in the residual GEMMs' epilogue (`gemm_plan::fuses_layernorm`).
    pub fuse_layernorm: bool,
    /// `embedding_size != hidden_size`: a projection GEMM follows the embeddings.
    pub projection: bool,
    /// The pooler runs (for its output, or for the classifier).
    pub pooler: bool,
    /// The classifier runs (after the pooler).
    pub classifier: bool,
    /// FFN1 quantises its own output for FFN2 (int8 on the Hopper kernels): no `quantize_ffn`
    /// launch.
    pub fuse_ffn_quantize: bool,
    /// Each layer's QKV GEMM and attention run as one launch ([`Step::QkvAttention`]; the
    /// Hopper kernels, for batches [`fuses_qkv_attention`] takes).
    pub fuse_qkv_attention: bool,
    /// The attention writes the int8 context's codes itself (the Hopper kernels:
    /// `attention_int8_sm90_*`): no `quantize_ctx` launch after a separate attention either.
    pub attention_quantizes_context: bool,
    /// Where the QKV attention is fused, it also runs the attention-out GEMM and LN1
    /// ([`Step::AttentionBlock`]; the row width the blocks take).
    pub attention_block: bool,
    /// fp16 with fused layernorms: each layer's FFN1, FFN2 and LN2 run as one launch
    /// ([`Step::FfnBlock`]; the Hopper kernels, for the token counts the roofline model
    /// predicts it faster at, on the tiles' width it predicts fastest: `perf::plan::ffn_block_cols`).
    pub ffn_block: Option<usize>,
}

/// Whether the Hopper pass runs a layer's QKV GEMM and attention as one launch for sequences
/// of `lengths` tokens with `heads` heads of `head_dim`: heads the fused kernel takes (head dim
/// 64, or 32 in pairs), every sequence of at most its 128 rows; the rows it computes (a CTA per
/// sequence and 64-column group: each sequence rounded up to its 64-row consumer tiles) at most
/// 5/4 of the tokens, so that short sequences, which the separate GEMM packs, do not multiply
/// the QKV GEMM's work; and its `groups x sequences` CTAs more than a quarter of the SMs,
/// where the separate GEMM would split K over more CTAs instead (`gemm_sm90::plan`'s rule; the fused kernel cannot). The
/// fused kernel gives the same bits as the separate launches (the per-sequence attention
/// tiles), so this choice changes speed, never a result.
pub fn fuses_qkv_attention(heads: usize, head_dim: usize, lengths: &[usize]) -> bool {
    use crate::kernels::{attention_sm90::WARPGROUP_M, gemm_sm90::SPLIT_SMS, qkv_attention_sm90 as fused};
    let tokens: usize = lengths.iter().sum();
    let rows: usize = lengths.iter().map(|&l| l.next_multiple_of(WARPGROUP_M)).sum();
    fused::takes_heads(heads, head_dim)
        && lengths.iter().all(|&l| l <= fused::MAX_SEQLEN)
        && 4 * rows <= 5 * tokens
        && 4 * fused::ctas_per_sequence(heads, head_dim) * lengths.len() > SPLIT_SMS
}

/// Whether the passes of `precision` over rows of `hidden` take the attention blocks where the
/// QKV attention is fused: rows the blocks take (`qkv_attention_sm90::block_takes_hidden`).
/// With 128 x 64 output tiles the last sequence's tile tail is 1.0 us int8, 2.1 fp16, and the
/// block is predicted faster than the two launches in both precisions (BERT-base 32x128 on an
/// H100: 0.628 ms int8, 1.082 fp16).
pub fn takes_attention_blocks(precision: Precision, hidden: usize) -> bool {
    let _ = precision;
    crate::kernels::qkv_attention_sm90::block_takes_hidden(hidden)
}

/// Every launch of one forward pass, in order.
pub fn schedule(s: ScheduleShape) -> Vec<Step> {
    let int8 = s.precision == Precision::Int8;
    let mut v = vec![Step::Embedding];
    if s.projection {
        v.push(Step::Projection);
    }
    if int8 {
        v.push(Step::Quantize { layer: None, what: Quantized::Embeddings });
    }
    for layer in 0..s.layers {
        let last = layer + 1 == s.layers;
        let ln1 = LayerNormOut { which: LayerNorm::Ln1, q8: int8 };
        // the last layer's output feeds only pooling and the fp16 heads: no int8 codes
        let ln2 = LayerNormOut { which: LayerNorm::Ln2, q8: int8 && !last };
        let block = s.fuse_qkv_attention && s.attention_block && s.fuse_layernorm;
        if block {
            v.push(Step::AttentionBlock { layer, ln1 });
        } else if s.fuse_qkv_attention {
            v.push(Step::QkvAttention { layer });
        } else {
            v.push(Step::Gemm { layer, gemm: LayerGemm::Qkv, layernorm: None, quantize: false });
            v.push(Step::Attention { layer });
        }
        // the fused int8 kernel (and the Hopper attention) writes the context's codes itself
        if int8 && !s.fuse_qkv_attention && !s.attention_quantizes_context {
            v.push(Step::Quantize { layer: Some(layer), what: Quantized::Context });
        }
        if !block {
            residual_and_layernorm(&mut v, s.fuse_layernorm, layer, LayerGemm::AttnOut, ln1);
        }
        if let Some(cols) = s.ffn_block.filter(|_| s.fuse_layernorm && !int8) {
            v.push(Step::FfnBlock { layer, ln2, cols });
            continue;
        }
        let fused_quantize = int8 && s.fuse_ffn_quantize;
        v.push(Step::Gemm { layer, gemm: LayerGemm::Ffn1, layernorm: None, quantize: fused_quantize });
        if int8 && !fused_quantize {
            v.push(Step::Quantize { layer: Some(layer), what: Quantized::Ffn });
        }
        residual_and_layernorm(&mut v, s.fuse_layernorm, layer, LayerGemm::Ffn2, ln2);
    }
    v.push(Step::Pool);
    if s.pooler {
        v.extend([Step::GatherCls, Step::Pooler]);
        if s.classifier {
            v.push(Step::Classifier);
        }
    }
    v
}

/// A residual GEMM and its layernorm: one launch when fused, else two.
fn residual_and_layernorm(v: &mut Vec<Step>, fuse: bool, layer: usize, gemm: LayerGemm, out: LayerNormOut) {
    if fuse {
        v.push(Step::Gemm { layer, gemm, layernorm: Some(out), quantize: false });
    } else {
        v.push(Step::Gemm { layer, gemm, layernorm: None, quantize: false });
        v.push(Step::LayerNorm { layer, out });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(precision: Precision, fuse_layernorm: bool) -> ScheduleShape {
        ScheduleShape {
            layers: 3,
            precision,
            fuse_layernorm,
            projection: false,
            pooler: false,
            classifier: false,
            fuse_ffn_quantize: false,
            fuse_qkv_attention: false,
            attention_quantizes_context: false,
            attention_block: false,
            ffn_block: None,
        }
    }

    /// fp16 with fused layernorms: one FFN block per layer in place of FFN1 and FFN2 + LN2,
    /// right after the layer's LN1 (blocks or not); never for int8 or unfused layernorms.
    #[test]
    fn an_ffn_block_replaces_the_ffn_launches() {
        let plain = schedule(shape(Precision::F16, true));
        for attention_block in [false, true] {
            let s = ScheduleShape {
                ffn_block: Some(64),
                fuse_qkv_attention: true,
                attention_block,
                ..shape(Precision::F16, true)
            };
            let with = schedule(s);
            let without = schedule(ScheduleShape { ffn_block: None, ..s });
            assert_eq!(with.len(), without.len() - 3, "one launch a layer fewer");
            assert!(!with.iter().any(|s| matches!(s, Step::Gemm { gemm: LayerGemm::Ffn1 | LayerGemm::Ffn2, .. })));
            let blocks: Vec<_> = with
                .iter()
                .filter_map(|s| {
                    if let Step::FfnBlock { layer, ln2, cols } = s {
                        Some((*layer, *ln2, *cols))
                    } else {
                        None
                    }
                })
                .collect();
            let ln2 = LayerNormOut { which: LayerNorm::Ln2, q8: false };
            assert_eq!(blocks, (0..3).map(|l| (l, ln2, 64)).collect::<Vec<_>>());
            assert_eq!(with.last(), without.last());
        }
        assert!(plain.iter().all(|s| !matches!(s, Step::FfnBlock { .. })));
        for s in [
            ScheduleShape { ffn_block: Some(64), ..shape(Precision::Int8, true) },
            ScheduleShape { ffn_block: Some(64), ..shape(Precision::F16, false) },
        ] {
            assert!(!schedule(s).iter().any(|s| matches!(s, Step::FfnBlock { .. })), "{:?}", s.precision);
        }
    }

    /// The counts the module docs of `model::forward` state: 2 + 7 L (fp16), 3 + 9 L (int8), two
    /// fewer per layer with the layernorms fused, + 1 projection, + 2 pooler, + 1 classifier.
    #[test]
    fn launch_counts_follow_the_shape() {
        for (p, fuse, per_layer, fixed) in [
            (Precision::F16, false, 7, 2),
            (Precision::F16, true, 5, 2),
            (Precision::Int8, false, 9, 3),
            (Precision::Int8, true, 7, 3),
        ] {
            assert_eq!(schedule(shape(p, fuse)).len(), fixed + 3 * per_layer, "{p:?} fused {fuse}");
            let all = ScheduleShape { projection: true, pooler: true, classifier: true, ..shape(p, fuse) };
            assert_eq!(schedule(all).len(), fixed + 3 * per_layer + 4);
            // FFN1 quantising its own output: one launch fewer per layer on the int8 path only
            let fused = ScheduleShape { fuse_ffn_quantize: true, ..shape(p, fuse) };
            let fewer = if p == Precision::Int8 { 3 } else { 0 };
            assert_eq!(schedule(fused).len(), fixed + 3 * per_layer - fewer, "{p:?} fused {fuse}, FFN1 quantises");
        }
    }

    #[test]
    fn a_quantizing_attention_replaces_the_context_quantize_launch() {
        for p in [Precision::F16, Precision::Int8] {
            let plain = schedule(shape(p, true));
            let own = schedule(ScheduleShape { attention_quantizes_context: true, ..shape(p, true) });
            let fewer = if p == Precision::Int8 { 3 } else { 0 };
            assert_eq!(own.len(), plain.len() - fewer, "{p:?}");
            assert!(!own.iter().any(|s| matches!(s, Step::Quantize { what: Quantized::Context, .. })));
            // the output GEMM right after each attention
            for (i, _) in own.iter().enumerate().filter(|(_, s)| matches!(s, Step::Attention { .. })) {
                assert!(matches!(own[i + 1], Step::Gemm { gemm: LayerGemm::AttnOut, .. }), "{p:?}");
            }
        }
    }

    #[test]
    fn an_attention_block_also_takes_the_attention_out_gemm() {
        for p in [Precision::F16, Precision::Int8] {
            let fused = schedule(ScheduleShape { fuse_qkv_attention: true, ..shape(p, true) });
            let block = schedule(ScheduleShape { fuse_qkv_attention: true, attention_block: true, ..shape(p, true) });
            assert_eq!(block.len(), fused.len() - 3, "{p:?}");
            let layers: Vec<_> =
                block.iter().filter(|s| matches!(s, Step::AttentionBlock { .. })).map(|s| s.layer()).collect();
            assert_eq!(layers, [Some(0), Some(1), Some(2)]);
            assert!(!block
                .iter()
                .any(|s| matches!(s, Step::QkvAttention { .. } | Step::Gemm { gemm: LayerGemm::AttnOut, .. })));
            // FFN1 right after each block, which wrote LN1 (int8: and its codes)
            for (i, s) in block.iter().enumerate() {
                if let Step::AttentionBlock { ln1, .. } = s {
                    assert_eq!((ln1.which, ln1.q8), (LayerNorm::Ln1, p == Precision::Int8));
                    assert!(matches!(block[i + 1], Step::Gemm { gemm: LayerGemm::Ffn1, .. }), "{p:?}");
                }
            }
            // not without the fused QKV attention, nor without fused layernorms
            assert_eq!(schedule(ScheduleShape { attention_block: true, ..shape(p, true) }), schedule(shape(p, true)));
            let unfused = ScheduleShape { fuse_qkv_attention: true, attention_block: true, ..shape(p, false) };
            assert!(!schedule(unfused).iter().any(|s| matches!(s, Step::AttentionBlock { .. })));
        }
    }

    #[test]
    fn a_fused_qkv_attention_replaces_two_launches_per_layer() {
        for p in [Precision::F16, Precision::Int8] {
            let plain = schedule(shape(p, true));
            let fused = schedule(ScheduleShape { fuse_qkv_attention: true, ..shape(p, true) });
            // int8: the context's quantisation too
            let fewer = if p == Precision::Int8 { 6 } else { 3 };
            assert_eq!(fused.len(), plain.len() - fewer, "{p:?}");
            assert!(!fused
                .iter()
                .any(|s| matches!(s, Step::Attention { .. } | Step::Gemm { gemm: LayerGemm::Qkv, .. })));
            let layers: Vec<_> =
                fused.iter().filter(|s| matches!(s, Step::QkvAttention { .. })).map(|s| s.layer()).collect();
            assert_eq!(layers, [Some(0), Some(1), Some(2)]);
            // the output GEMM right after (the int8 context's codes come from the fused kernel)
            let at = fused.iter().position(|s| matches!(s, Step::QkvAttention { .. })).unwrap();
            assert!(matches!(fused[at + 1], Step::Gemm { gemm: LayerGemm::AttnOut, .. }), "{p:?}");
            assert!(!fused.iter().any(|s| matches!(s, Step::Quantize { what: Quantized::Context, .. })));
        }
    }

    #[test]
    fn qkv_and_attention_fuse_for_head_dim_64_and_sequences_that_fill_their_tiles() {
        assert!(fuses_qkv_attention(12, 64, &[128; 32]));
        assert!(fuses_qkv_attention(12, 64, &[100, 128, 65, 120]));
        assert!(fuses_qkv_attention(16, 64, &[64, 64, 64]));
        // a sequence past one 128-row tile, another head dim, nothing to do
        assert!(!fuses_qkv_attention(12, 64, &[129, 128, 128]));
        // head dim 32 in pairs (MiniLM: 6 CTAs a sequence, 4 x 6 x 6 > 132), not 16 nor an odd
        // number of 32s
        assert!(fuses_qkv_attention(12, 32, &[128; 6]));
        assert!(!fuses_qkv_attention(12, 32, &[128; 5]));
        assert!(!fuses_qkv_attention(11, 32, &[128; 40]));
        assert!(!fuses_qkv_attention(12, 16, &[128; 40]));
        assert!(!fuses_qkv_attention(12, 64, &[]));
        // short texts: 64 rows computed per 20 tokens, the packed GEMM does 3x less
        assert!(!fuses_qkv_attention(12, 64, &[20; 32]));
        // 5/4 exactly: 4 x 64 rows for 4 x 52 = 208 tokens is 256 <= 260
        assert!(fuses_qkv_attention(12, 64, &[52; 4]));
        assert!(!fuses_qkv_attention(12, 64, &[51; 4]));
        // too few CTAs (12 x 2 = 24 <= 132 / 4): the separate GEMM splits K instead
        assert!(!fuses_qkv_attention(12, 64, &[128; 2]));
        assert!(fuses_qkv_attention(12, 64, &[128; 3]));
    }

    #[test]
    fn a_quantising_ffn1_replaces_the_ffn_quantize_launch() {
        let s = ScheduleShape { fuse_ffn_quantize: true, ..shape(Precision::Int8, true) };
        let steps = schedule(s);
        assert!(!steps.iter().any(|s| matches!(s, Step::Quantize { what: Quantized::Ffn, .. })));
        let quantizing: Vec<_> = steps.iter().filter(|s| matches!(s, Step::Gemm { quantize: true, .. })).collect();
        assert_eq!(quantizing.len(), 3);
        assert!(quantizing.iter().all(|s| matches!(s, Step::Gemm { gemm: LayerGemm::Ffn1, .. })));
    }

    #[test]
    fn only_the_last_layernorm_has_no_int8_codes() {
        let steps = schedule(shape(Precision::Int8, true));
        let q8: Vec<(usize, bool)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Gemm { layer, layernorm: Some(o), .. } if o.which == LayerNorm::Ln2 => Some((*layer, o.q8)),
                _ => None,
            })
            .collect();
        assert_eq!(q8, vec![(0, true), (1, true), (2, false)]);
    }
}
