//! The CPU reference forward pass: plain f32 BERT, the oracle every device path is tested
//! against.
//!
//! Activations are packed (`[total_tokens, hidden]`, sequences end to end, no padding), and
//! attention runs per sequence, which is exactly the padded computation with its mask. Matmuls
//! use `matrixmultiply::sgemm`, split over rows with rayon; each output row is computed by the
//! same arithmetic whatever else is in the batch, so a text gives bit-identical results alone or
//! batched. Statistics (LayerNorm, softmax sums, pooling) accumulate in f64.
//!
//! The small building blocks ([`linear`], [`layernorm_rows`], [`gelu_erf`], [`attention`], ...)
//! are public: kernel tests use them as their CPU references.
use rayon::prelude::*;

use super::config::{BertConfig, HiddenAct};
use super::weights::{EmbeddingWeights, EncoderLayerWeights, LayerNormWeights, Linear};
use super::BertModel;
use crate::error::{Error, Result};
use crate::tokenize::{Batch, PackedBatch};

/// What to compute besides the hidden states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// L2-normalise `pooled` (what sentence-transformers' `encode()` returns).
    pub normalize: bool,
}

/// The outputs for one sequence of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceOutput {
    /// Tokens in this sequence, `[CLS]` and `[SEP]` included.
    pub len: usize,
    /// Final hidden states, `[len, hidden]` row-major.
    pub last_hidden_state: Vec<f32>,
    /// The sentence embedding: `last_hidden_state` pooled (mean here; any sentence-transformers
    /// mode on the device path and in a `Pipeline`), `[hidden]`; L2-normalised when
    /// [`Options::normalize`].
    pub pooled: Vec<f32>,
    /// `tanh(W h_cls + b)` on the `[CLS]` state, `[hidden]`; `None` when the model has no pooler.
    pub pooler_output: Option<Vec<f32>>,
    /// Classifier logits, `[num_labels]`; `None` when the model has no classifier head.
    pub logits: Option<Vec<f32>>,
    /// `softmax(logits)`.
    pub scores: Option<Vec<f32>>,
}

/// The outputs for a batch, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub hidden_size: usize,
    pub sequences: Vec<SequenceOutput>,
}

/// Hidden states after the embeddings and after every encoder layer, packed.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenStates {
    pub hidden_size: usize,
    /// The batch's `cu_seqlens` (`B + 1` offsets into the token rows).
    pub cu_seqlens: Vec<u32>,
    /// `num_hidden_layers + 1` entries, each `[total_tokens, hidden]`: entry 0 is the
    /// embedding LayerNorm output, entry `i + 1` the output of encoder layer `i`.
    pub layers: Vec<Vec<f32>>,
}

impl HiddenStates {
    /// `[len, hidden]` rows of sequence `seq` in entry `layer`.
    pub fn sequence(&self, layer: usize, seq: usize) -> &[f32] {
        let (a, b) = (self.cu_seqlens[seq] as usize, self.cu_seqlens[seq + 1] as usize);
        &self.layers[layer][a * self.hidden_size..b * self.hidden_size]
    }
}

/// Runs the model on `batch`.
pub fn forward(model: &BertModel, batch: &Batch, opts: &Options) -> Result<Output> {
    check_batch(&model.config, batch)?;
    let mut x = embed(&model.weights.embeddings, model.config.layer_norm_eps, &batch.packed);
    for layer in &model.weights.layers {
        x = encoder_layer(layer, &model.config, &x, &batch.packed.cu_seqlens);
    }
    Ok(heads(model, &x, batch, opts))
}

/// As [`forward`], also returning the hidden states after the embeddings and every layer
/// (for per-layer comparisons with the device forward pass).
pub fn forward_with_hidden_states(model: &BertModel, batch: &Batch, opts: &Options) -> Result<(Output, HiddenStates)> {
    forward_with_encoder_linear(model, batch, opts, &linear_layer)
}

/// The encoder's linear layers (QKV, attention output, FFN1, FFN2) as a function, so that
/// other numerics can be simulated on top of this reference (e.g. `quant::w8a8_linear`).
pub type EncoderLinear<'a> = &'a (dyn Fn(&Linear, &[f32]) -> Vec<f32> + Sync);

/// [`forward_with_hidden_states`] with the encoder's four GEMMs computed by `encoder_linear`
/// (the pooler and classifier stay f32).
pub fn forward_with_encoder_linear(
    model: &BertModel,
    batch: &Batch,
    opts: &Options,
    encoder_linear: EncoderLinear<'_>,
) -> Result<(Output, HiddenStates)> {
    check_batch(&model.config, batch)?;
    let mut layers = Vec::with_capacity(model.weights.layers.len() + 1);
    layers.push(embed(&model.weights.embeddings, model.config.layer_norm_eps, &batch.packed));
    for layer in &model.weights.layers {
        let next =
            encoder_layer_with(layer, &model.config, layers.last().unwrap(), &batch.packed.cu_seqlens, encoder_linear);
        layers.push(next);
    }
    let out = heads(model, layers.last().unwrap(), batch, opts);
    let states =
        HiddenStates { hidden_size: model.config.hidden_size, cu_seqlens: batch.packed.cu_seqlens.clone(), layers };
    Ok((out, states))
}

/// Token ids, types and lengths must fit the model's tables (user input: typed errors).
pub fn check_batch(config: &BertConfig, batch: &Batch) -> Result<()> {
    for (i, (ids, types)) in batch.input_ids.iter().zip(&batch.token_type_ids).enumerate() {
        if ids.is_empty() {
            return Err(Error::Input(format!("sequence {i} has no tokens")));
        }
        if ids.len() > config.max_input_tokens() {
            return Err(Error::InputTooLong { index: i, tokens: ids.len(), limit: config.max_input_tokens() });
        }
        // Position ids come from the batch: a RoBERTa model needs them offset (Tokenizer::for_model does it).
        let first_pos = batch.packed.position_ids[batch.packed.cu_seqlens[i] as usize] as usize;
        if first_pos != config.position_offset {
            return Err(Error::Input(format!(
                "sequence {i}: position ids start at {first_pos}, this model's start at {} (build the batch with Tokenizer::for_model or Batch::with_position_offset)",
                config.position_offset
            )));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
            return Err(Error::Input(format!("sequence {i}: token id {id} >= vocab_size {}", config.vocab_size)));
        }
        if let Some(&t) = types.iter().find(|&&t| t as usize >= config.type_vocab_size) {
            return Err(Error::Input(format!(
                "sequence {i}: token type {t} >= type_vocab_size {}",
                config.type_vocab_size
            )));
        }
    }
    Ok(())
}

/// Pooling, pooler and classifier over the final packed hidden states.
fn heads(model: &BertModel, x: &[f32], batch: &Batch, opts: &Options) -> Output {
    let h = model.config.hidden_size;
    let cu = &batch.packed.cu_seqlens;
    // [CLS] is the first token of each sequence.
    let cls: Vec<f32> = (0..batch.len()).flat_map(|i| x[cu[i] as usize * h..][..h].iter().copied()).collect();
    let pooled = model.weights.pooler.as_ref().map(|p| pooler(p, &cls));
    let logits = match (&model.weights.classifier, &pooled) {
        (Some(c), Some(p)) => Some(linear_layer(&c.linear, p)),
        _ => None,
    };
    let sequences = (0..batch.len())
        .map(|i| {
            let rows = &x[cu[i] as usize * h..cu[i + 1] as usize * h];
            let mut embedding = mean_pool(rows, h);
            if opts.normalize {
                l2_normalize(&mut embedding);
            }
            let logits = logits.as_ref().map(|l| {
                let n = l.len() / batch.len();
                l[i * n..(i + 1) * n].to_vec()
            });
            SequenceOutput {
                len: batch.lengths[i],
                last_hidden_state: rows.to_vec(),
                pooled: embedding,
                pooler_output: pooled.as_ref().map(|p| p[i * h..(i + 1) * h].to_vec()),
                scores: logits.as_deref().map(softmax),
                logits,
            }
        })
        .collect();
    Output { hidden_size: h, sequences }
}

/// Word + token type + position embeddings of every packed token, then LayerNorm (and
/// ELECTRA's projection, when the model has one): `[T, H]`.
pub fn embed(w: &EmbeddingWeights, eps: f32, packed: &PackedBatch) -> Vec<f32> {
    let x = embed_tables(w, eps, packed);
    match &w.projection {
        Some(p) => linear_layer(p, &x),
        None => x,
    }
}

/// The embedding sum and LayerNorm, `[T, embedding_size]`.
fn embed_tables(w: &EmbeddingWeights, eps: f32, packed: &PackedBatch) -> Vec<f32> {
    let h = w.word.shape[1];
    let mut x = vec![0f32; packed.input_ids.len() * h];
    for (t, row) in x.chunks_exact_mut(h).enumerate() {
        let word = &w.word.data[packed.input_ids[t] as usize * h..][..h];
        let typ = &w.token_type.data[packed.token_type_ids[t] as usize * h..][..h];
        let pos = &w.position.data[packed.position_ids[t] as usize * h..][..h];
        // Same summation order as transformers: (word + type) + position.
        for j in 0..h {
            row[j] = (word[j] + typ[j]) + pos[j];
        }
    }
    layernorm(&x, &w.layer_norm, eps)
}

/// One post-LN encoder layer on packed rows `x` (`[T, H]`).
pub fn encoder_layer(w: &EncoderLayerWeights, config: &BertConfig, x: &[f32], cu_seqlens: &[u32]) -> Vec<f32> {
    encoder_layer_with(w, config, x, cu_seqlens, &linear_layer)
}

/// [`encoder_layer`] with its four linear layers computed by `lin`.
pub fn encoder_layer_with(
    w: &EncoderLayerWeights,
    config: &BertConfig,
    x: &[f32],
    cu_seqlens: &[u32],
    lin: EncoderLinear<'_>,
) -> Vec<f32> {
    let (heads, d) = (config.num_attention_heads, config.head_dim());
    let q = lin(&w.query, x);
    let k = lin(&w.key, x);
    let v = lin(&w.value, x);
    let ctx = attention_packed(&q, &k, &v, cu_seqlens, heads, d);
    let mut attn = lin(&w.attn_output, &ctx);
    add_assign(&mut attn, x);
    let h1 = layernorm(&attn, &w.attn_layer_norm, config.layer_norm_eps);
    let mut inter = lin(&w.ffn1, &h1);
    activation_in_place(config.hidden_act, &mut inter);
    let mut out = lin(&w.ffn2, &inter);
    add_assign(&mut out, &h1);
    layernorm(&out, &w.ffn_layer_norm, config.layer_norm_eps)
}

fn add_assign(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

fn linear_layer(l: &Linear, x: &[f32]) -> Vec<f32> {
    linear(x, l.in_features(), &l.weight.data, Some(&l.bias.data))
}

fn layernorm(x: &[f32], ln: &LayerNormWeights, eps: f32) -> Vec<f32> {
    layernorm_rows(x, &ln.gamma.data, &ln.beta.data, eps)
}

/// `y = x W^T + b` for row-major `x` (`[rows, in_features]`) and `weight` (`[out, in_features]`,
/// PyTorch layout): returns `[rows, out]`. Panics if the slices do not fit together.
pub fn linear(x: &[f32], in_features: usize, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert!(in_features > 0 && x.len() % in_features == 0, "linear: x is not [rows, {in_features}]");
    assert!(weight.len() % in_features == 0, "linear: weight is not [out, {in_features}]");
    let (rows, out) = (x.len() / in_features, weight.len() / in_features);
    if let Some(b) = bias {
        assert_eq!(b.len(), out, "linear: bias length");
    }
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 {
        return y;
    }
    // Row blocks in parallel, one per thread: the GEMM packs the whole weight for every call, so
    // small blocks would spend their time packing. Every row's arithmetic is the same whatever
    // block it is in (see `gemm_rows`), so a text's result does not depend on its batch.
    let block = rows.div_ceil(rayon::current_num_threads()).max(8);
    y.par_chunks_mut(block * out).zip(x.par_chunks(block * in_features)).for_each(|(yc, xc)| {
        if let Some(b) = bias {
            yc.chunks_exact_mut(out).for_each(|r| r.copy_from_slice(b));
        }
        gemm_rows(xc, in_features, weight, yc, out);
    });
    y
}

/// `y += x W^T` for one block of rows (`x`: `[m, k]`, `weight`: `[n, k]`, `y`: `[m, n]`).
///
/// Batch invariance: each output's summation order must not depend on `m`. The `gemm` crate
/// (AVX2/AVX-512 micro-kernels) keeps its k blocking independent of `m` when `n > 64` and
/// `m >= 4`; fewer rows take other paths (gemv for one row, another order for two or three), so
/// such a block is computed as a four-row block (pinned by `linear_rows_do_not_depend_on_the_batch`). Narrow outputs (`n <= 64`: classifier heads) go through `matrixmultiply`, whose
/// order never depends on `m`; their cost is negligible.
fn gemm_rows(x: &[f32], k: usize, weight: &[f32], y: &mut [f32], n: usize) {
    let m = x.len() / k;
    if n <= 64 {
        // SAFETY: x ([m, k] row-major), weight^T ([k, n]: column j is row j of weight) and y
        // ([m, n] row-major) as pointers and strides, all in bounds.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                weight.as_ptr(),
                1,
                k as isize,
                1.0,
                y.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        return;
    }
    if m < 4 {
        let (x4, mut y4) = (x.repeat(4 / m + 1), y.repeat(4 / m + 1));
        gemm_rows(&x4[..4 * k], k, weight, &mut y4[..4 * n], n);
        y.copy_from_slice(&y4[..m * n]);
        return;
    }
    // SAFETY: as above; gemm computes dst = alpha * dst + beta * lhs * rhs with column stride
    // 1 and row stride n for dst, (1, k) for lhs and (k, 1) for rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            weight.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// LayerNorm of every row of `x` (row length `gamma.len()`), statistics in f64, biased
/// variance as PyTorch.
pub fn layernorm_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let h = gamma.len();
    assert!(h > 0 && beta.len() == h && x.len() % h == 0, "layernorm_rows: shapes");
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(yr, xr)| {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..h {
            yr[j] = ((xr[j] as f64 - mean) * rstd) as f32 * gamma[j] + beta[j];
        }
    });
    y
}

pub use crate::numerics::activation::{gelu_erf, gelu_tanh};

/// The configured FFN activation.
pub fn activation(act: HiddenAct, x: f32) -> f32 {
    act.apply(x)
}

/// Applies the FFN activation to every element, in parallel chunks whose inner loops the compiler
/// vectorises. GELU uses [`gelu_erf_f32`] (f32 throughout, as PyTorch's CPU kernel); the other
/// activations are [`activation`] itself.
pub fn activation_in_place(act: HiddenAct, x: &mut [f32]) {
    const CHUNK: usize = 16 * 1024;
    x.par_chunks_mut(CHUNK).for_each(|c| match act {
        HiddenAct::Gelu => c.iter_mut().for_each(|v| *v = gelu_erf_f32(*v)),
        _ => c.iter_mut().for_each(|v| *v = activation(act, *v)),
    });
}

/// GELU `0.5 x (1 + erf(x / sqrt 2))` in f32 arithmetic with a branch-free rational erf (odd
/// degree-13 numerator over degree-12 denominator on `[-4, 4]`, where `erf` is 1 to f32 precision
/// beyond), the form vectorising math libraries use. Within `eps (2 |x| + 4 |gelu(x)|)` of the
/// exact GELU (four ulps of `1 + erf` times `x/2`: any f32 `1 + erf` GELU, PyTorch's included,
/// loses one; tested against [`gelu_erf`] on a dense grid), far below the f32 reference's other
/// roundings at the model's outputs.
#[inline(always)]
pub fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` in f32, branch-free (see [`gelu_erf_f32`]). Plain multiply-adds, not `mul_add`: without
/// a target FMA feature `mul_add` is a libm call per element and the loop does not vectorise.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    for c in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_600_1e-3, -1.609_603_3e-2] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329_3e-3, -1.426_473_9e-2] {
        q = q * x2 + c;
    }
    (x * p / q).clamp(-1.0, 1.0)
}

/// Multi-head self-attention of one sequence, no mask: `q`, `k`, `v` are `[seq_len, heads *
/// head_dim]` row-major (head `h` in columns `h*head_dim ..`), the result has the same layout:
/// `softmax(q k^T / sqrt(head_dim)) v` per head.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], seq_len: usize, num_heads: usize, head_dim: usize) -> Vec<f32> {
    attention_packed(q, k, v, &[0, seq_len as u32], num_heads, head_dim)
}

/// [`attention`] for every sequence of a packed batch (`[T, heads * head_dim]` inputs,
/// sequence `i` in rows `cu_seqlens[i] .. cu_seqlens[i + 1]`); tokens attend only within their
/// own sequence.
pub fn attention_packed(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cu_seqlens: &[u32],
    num_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let hid = num_heads * head_dim;
    let total = *cu_seqlens.last().unwrap_or(&0) as usize;
    assert!(q.len() == total * hid && k.len() == q.len() && v.len() == q.len(), "attention: q/k/v are not [T, H]");
    let tasks: Vec<(usize, usize)> =
        (0..cu_seqlens.len().saturating_sub(1)).flat_map(|s| (0..num_heads).map(move |h| (s, h))).collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, h)| {
            let (a, b) = (cu_seqlens[s] as usize, cu_seqlens[s + 1] as usize);
            let off = a * hid + h * head_dim;
            head_attention(&q[off..], &k[off..], &v[off..], b - a, hid, head_dim)
        })
        .collect();
    let mut out = vec![0f32; q.len()];
    for (&(s, h), r) in tasks.iter().zip(&results) {
        let a = cu_seqlens[s] as usize;
        for (i, row) in r.chunks_exact(head_dim).enumerate() {
            out[(a + i) * hid + h * head_dim..][..head_dim].copy_from_slice(row);
        }
    }
    out
}

/// One head of one sequence: rows of `q`, `k`, `v` are `stride` apart, `d` wide. Returns `[n, d]`.
fn head_attention(q: &[f32], k: &[f32], v: &[f32], n: usize, stride: usize, d: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let need = (n - 1) * stride + d;
    assert!(q.len() >= need && k.len() >= need && v.len() >= need);
    let scale = 1.0 / (d as f32).sqrt();
    let mut p = vec![0f32; n * n];
    // SAFETY: q, k, v hold n rows of d values `stride` apart (checked above); p is [n, n].
    unsafe {
        // p = scale * q k^T ; k^T read with row stride 1 and column stride `stride`.
        matrixmultiply::sgemm(
            n,
            d,
            n,
            scale,
            q.as_ptr(),
            stride as isize,
            1,
            k.as_ptr(),
            1,
            stride as isize,
            0.0,
            p.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    p.chunks_exact_mut(n).for_each(softmax_in_place);
    let mut o = vec![0f32; n * d];
    // SAFETY: p is [n, n], v is n rows of d values `stride` apart, o is [n, d].
    unsafe {
        matrixmultiply::sgemm(
            n,
            n,
            d,
            1.0,
            p.as_ptr(),
            n as isize,
            1,
            v.as_ptr(),
            stride as isize,
            1,
            0.0,
            o.as_mut_ptr(),
            d as isize,
            1,
        );
    }
    o
}

/// Numerically stable softmax (max subtracted, f64 sum).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    softmax_in_place(&mut y);
    y
}

fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let sum = sum as f32;
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Mean over the rows of `x` (`[n, h]`), f64 sums; empty input gives zeros.
pub fn mean_pool(x: &[f32], h: usize) -> Vec<f32> {
    let n = x.len() / h;
    let mut acc = vec![0f64; h];
    for row in x.chunks_exact(h) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    acc.iter().map(|&a| (a / n.max(1) as f64) as f32).collect()
}

pub use crate::numerics::pooling::l2_normalize;

/// BERT pooler on `[B, H]` `[CLS]` rows: `tanh(cls W^T + b)`.
pub fn pooler(w: &Linear, cls: &[f32]) -> Vec<f32> {
    let mut y = linear_layer(w, cls);
    y.iter_mut().for_each(|v| *v = v.tanh());
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf against values computed with mpmath at 30 digits (kept in full as the source).
    #[allow(clippy::excessive_precision)] // reference values kept as printed by mpmath
    #[test]
    fn erf_matches_high_precision_values() {
        let cases = [
            (0.1, 0.112462916018284892203275071744),
            (0.5, 0.520499877813046537682746653892),
            (1.0, 0.842700792949714869341220635083),
            (1.5, 0.966105146475310713936933729949),
            (2.0, 0.995322265018952734162069256367),
            (3.0, 0.999977909503001414558627223870),
            (-0.7, -0.677801193837418472975628809245),
        ];
        for (x, want) in cases {
            let got = crate::numerics::erf::erf(x);
            assert!((got - want).abs() <= 2e-16, "erf({x}) = {got}, want {want}");
        }
        // erfc(5) = 1.5374597944280348502e-12: relative accuracy where 1 - erf underflows in f64.
        let got = crate::numerics::erf::erfc(5.0);
        assert!((got / 1.5374597944280348502e-12 - 1.0).abs() < 1e-14, "erfc(5) = {got}");
    }

    #[test]
    fn gelu_f32_is_within_its_stated_bound_of_the_exact_gelu() {
        let mut worst = 0f64;
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4; // [-12, 12]
            let (exact, fast) = (gelu_erf(x) as f64, gelu_erf_f32(x) as f64);
            // four f32 ulps of `1 + erf` scaled by x/2, plus the final roundings
            let bound = f32::EPSILON as f64 * (2.0 * x.abs() as f64 + 4.0 * exact.abs());
            assert!((fast - exact).abs() <= bound, "gelu({x}): {fast} vs exact {exact}");
            worst = worst.max((fast - exact).abs());
        }
        assert!(worst > 0.0, "the approximation is not exact: the bound must have been exercised");
    }

    #[test]
    #[allow(clippy::excessive_precision)] // reference values kept as printed by mpmath
    fn gelu_values() {
        // 0.5 x (1 + erf(x / sqrt 2)) at 30 digits.
        let cases = [
            (1.0f32, 0.841344746068542948585232545632f64),
            (-1.0, -0.158655253931457051414767454368),
            (3.0, 2.99595049822839109366931046478),
        ];
        for (x, want) in cases {
            let got = gelu_erf(x);
            assert!((got as f64 - want).abs() <= 1e-7 * want.abs(), "gelu({x}) = {got}, want {want}");
        }
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!(gelu_erf(-10.0).abs() < 1e-20);
    }

    /// `linear` against a naive triple loop, on ragged shapes with and without bias.
    #[test]
    fn linear_matches_naive() {
        let (rows, inf, outf) = (37, 13, 11);
        let x: Vec<f32> = (0..rows * inf).map(|i| ((i * 7 % 23) as f32 - 11.0) / 7.0).collect();
        let w: Vec<f32> = (0..outf * inf).map(|i| ((i * 5 % 17) as f32 - 8.0) / 9.0).collect();
        let b: Vec<f32> = (0..outf).map(|i| i as f32 * 0.25 - 1.0).collect();
        for bias in [None, Some(&b[..])] {
            let y = linear(&x, inf, &w, bias);
            for r in 0..rows {
                for o in 0..outf {
                    let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                    for i in 0..inf {
                        acc += x[r * inf + i] as f64 * w[o * inf + i] as f64;
                    }
                    assert!((y[r * outf + o] as f64 - acc).abs() < 1e-4, "row {r} col {o}");
                }
            }
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The wide (gemm-crate) path against f64 sums, on shapes that are not multiples of its tiles
    /// and with k past one k-block (f32 summation: |err| <= k eps sum|terms|).
    #[test]
    fn linear_wide_matches_f64() {
        for (rows, inf, outf) in [(1, 384, 65), (2, 100, 384), (77, 1536, 130), (300, 64, 97)] {
            let x = pseudo_random(rows * inf, 1);
            let w = pseudo_random(outf * inf, 2);
            let b = pseudo_random(outf, 3);
            let y = linear(&x, inf, &w, Some(&b));
            for r in 0..rows {
                for o in 0..outf {
                    let terms = (0..inf).map(|i| x[r * inf + i] as f64 * w[o * inf + i] as f64);
                    let (sum, abs) = terms.fold((b[o] as f64, b[o].abs() as f64), |(s, a), t| (s + t, a + t.abs()));
                    let bound = (inf + 1) as f64 * f32::EPSILON as f64 * abs;
                    assert!((y[r * outf + o] as f64 - sum).abs() <= bound, "[{rows}x{inf}x{outf}] row {r} col {o}");
                }
            }
        }
    }

    /// Batch invariance of `linear`: every row computed inside a batch of any size (one row, a
    /// tile tail, several thread blocks) is bit-identical to that row computed alone, on both
    /// the narrow and the wide path.
    #[test]
    fn linear_rows_do_not_depend_on_the_batch() {
        for (inf, outf) in [(384, 3), (96, 64), (384, 65), (1536, 384)] {
            let w = pseudo_random(outf * inf, 5);
            let b = pseudo_random(outf, 6);
            for rows in [2, 7, 65, 301] {
                let x = pseudo_random(rows * inf, rows as u64);
                let all = linear(&x, inf, &w, Some(&b));
                for r in [0, rows / 2, rows - 1] {
                    let alone = linear(&x[r * inf..(r + 1) * inf], inf, &w, Some(&b));
                    assert_eq!(alone, all[r * outf..(r + 1) * outf], "[{inf}->{outf}] row {r} of {rows}");
                }
            }
        }
    }

    /// `attention` against a naive per-head loop (3 heads of 5, 7 tokens).
    #[test]
    fn attention_matches_naive() {
        let (n, heads, d) = (7, 3, 5);
        let hid = heads * d;
        let gen = |s: usize| -> Vec<f32> { (0..n * hid).map(|i| (((i + s) * 31 % 41) as f32 - 20.0) / 13.0).collect() };
        let (q, k, v) = (gen(1), gen(2), gen(3));
        let got = attention(&q, &k, &v, n, heads, d);
        for h in 0..heads {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d).map(|c| q[i * hid + h * d + c] as f64 * k[j * hid + h * d + c] as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..n).map(|j| e[j] / z * v[j * hid + h * d + c] as f64).sum();
                    assert!((got[i * hid + h * d + c] as f64 - want).abs() < 1e-5, "head {h} row {i} col {c}");
                }
            }
        }
    }

    #[test]
    fn layernorm_rows_normalises() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0];
        let y = layernorm_rows(&x, &[1.0; 4], &[0.0; 4], 1e-12);
        for row in y.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        }
    }
}
