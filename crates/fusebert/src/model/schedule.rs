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
    /// Fused multi-head attention over the packed sequences.
    Attention {
        layer: usize,
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
            Step::Gemm { layer, .. } | Step::Attention { layer } | Step::LayerNorm { layer, .. } => Some(layer),
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
        v.push(Step::Gemm { layer, gemm: LayerGemm::Qkv, layernorm: None, quantize: false });
        v.push(Step::Attention { layer });
        if int8 {
            v.push(Step::Quantize { layer: Some(layer), what: Quantized::Context });
        }
        residual_and_layernorm(&mut v, s.fuse_layernorm, layer, LayerGemm::AttnOut, ln1);
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
