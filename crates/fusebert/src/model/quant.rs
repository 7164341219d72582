//! int8 quantization: weights per output channel (once, on load) and activations per token
//! (the CPU reference of the device's dynamic quantization), and the calibration of the device's
//! int8 scheme.
//!
//! Symmetric (weights, and the activations of the QKV, attention-output and FFN1 GEMMs):
//! scale = absmax / 127 and q = round_half_even(x / scale) clamped to [-127, 127], so the
//! representable range is symmetric and -128 never appears (keeps `-q` exact). An all-zero row
//! gets scale 0 and all-zero codes; dequantisation multiplies by the scale, giving exact zeros.
use std::sync::Mutex;

use rayon::prelude::*;

use super::reference::{forward_with_encoder_linear, linear, Options};
use super::weights::Linear;
use super::BertModel;
use crate::error::Result;
pub use crate::numerics::int8::{quantize_row, quantize_row_asym, quantize_rows, QuantizedRows};
use crate::tokenize::Batch;

/// The W8A8 GEMM in plain f32 arithmetic: activations quantised per token, weights per output
/// channel, exact integer dot products, dequantised, plus the f32 bias. With
/// [`crate::model::reference::forward_with_encoder_linear`] this simulates the device int8 path
/// on the CPU, separating what the int8 scheme costs (vs the f32 reference) from what the
/// kernels add (vs this simulation).
pub fn w8a8_linear(l: &Linear, x: &[f32]) -> Vec<f32> {
    w8a8(x, &l.weight.data, &l.bias.data, l.in_features(), false)
}

/// `x W^T + b` with x quantised per row (symmetric, or asymmetric with `asym`) and W per output
/// channel (exact integer dot products).
fn w8a8(x: &[f32], w: &[f32], bias: &[f32], inp: usize, asym: bool) -> Vec<f32> {
    let (out, rows) = (bias.len(), x.len() / inp);
    let xq: Vec<(f32, i32, Vec<i8>)> = x
        .chunks_exact(inp)
        .map(|r| {
            if asym {
                quantize_row_asym(r)
            } else {
                let (scale, codes) = quantize_row(r);
                (scale, 0, codes)
            }
        })
        .collect();
    let wq = quantize_rows(w, out, inp);
    let w_sum = crate::kernels::weight_sums(&wq.q, out, inp);
    let mut y = vec![0f32; rows * out];
    y.par_chunks_mut(out).zip(&xq).for_each(|(yr, (xs, zero, a))| {
        for (n, yv) in yr.iter_mut().enumerate() {
            let w = &wq.q[n * inp..(n + 1) * inp];
            let acc: i32 = a.iter().zip(w).map(|(&p, &q)| p as i32 * q as i32).sum::<i32>() - zero * w_sum[n];
            *yv = acc as f32 * xs * wq.scale[n] + bias[n];
        }
    });
    y
}

/// The device's int8 scheme on the CPU (what [`crate::model::forward::DeviceBert`] computes, in
/// exact integer arithmetic on f32 activations): symmetric W8A8 for the QKV, attention-output and
/// FFN1 GEMMs, asymmetric activations for FFN2; with `ranges` (calibrated) the QKV and FFN1
/// inputs are smoothed by the multipliers the device derives from them (QKV multipliers
/// over the concatenated q|k|v weights, as the device's fused QKV GEMM uses them).
pub fn w8a8_device<'a>(
    model: &'a BertModel,
    ranges: Option<&[LayerInputRanges]>,
) -> impl Fn(&Linear, &[f32]) -> Vec<f32> + Sync + 'a {
    let mults: Vec<LayerMultipliers> = match ranges {
        Some(r) => model.weights.layers.iter().zip(r).map(|(l, r)| LayerMultipliers::new(l, r)).collect(),
        None => Vec::new(),
    };
    move |l: &Linear, x: &[f32]| {
        let (li, layer) = model
            .weights
            .layers
            .iter()
            .enumerate()
            .find(|(_, layer)| layer.linears().iter().any(|q| std::ptr::eq(l, *q)))
            .expect("w8a8_device: a linear layer of this model's encoder");
        let asym = std::ptr::eq(l, &layer.ffn2);
        let m = mults.get(li).and_then(|m| {
            if [&layer.query, &layer.key, &layer.value].iter().any(|q| std::ptr::eq(l, *q)) {
                Some(&m.qkv)
            } else if std::ptr::eq(l, &layer.ffn1) {
                Some(&m.ffn1)
            } else {
                None
            }
        });
        let inp = l.in_features();
        match m {
            None => w8a8(x, &l.weight.data, &l.bias.data, inp, asym),
            Some(m) => {
                let xs: Vec<f32> = x.iter().enumerate().map(|(i, v)| v * m[i % inp].to_f32()).collect();
                let ws: Vec<f32> = l.weight.data.iter().enumerate().map(|(i, v)| v / m[i % inp].to_f32()).collect();
                w8a8(&xs, &ws, &l.bias.data, inp, asym)
            }
        }
    }
}

/// The smoothing multipliers of one layer's QKV and FFN1 inputs.
struct LayerMultipliers {
    qkv: Vec<half::f16>,
    ffn1: Vec<half::f16>,
}

impl LayerMultipliers {
    fn new(l: &super::weights::EncoderLayerWeights, r: &LayerInputRanges) -> LayerMultipliers {
        let h = l.query.in_features();
        let wqkv: Vec<f32> = [&l.query, &l.key, &l.value].iter().flat_map(|x| x.weight.data.iter().copied()).collect();
        LayerMultipliers {
            qkv: smoothing_multipliers(&r.qkv, &wqkv, 3 * h, h),
            ffn1: smoothing_multipliers(&r.ffn1, &l.ffn1.weight.data, l.ffn1.out_features(), h),
        }
    }
}

/// Texts for int8 calibration (SmoothQuant scales): short and long, questions, code-like and
/// numeric text, with the special tokens the tokenizer adds (none of them a golden test text).
/// Kept in the crate so int8 results are deterministic; nine texts rather than three because
/// the column ranges of one text are noisy (the worst golden cosine moved by 0.002 between
/// three-text sets, by 0.0002 between nine-text ones).
pub const CALIBRATION_TEXTS: [&str; 9] = [
    "Hi.",
    "A short one.",
    "fusebert runs BERT encoders on fused CUDA kernels: flash-style attention over packed batches, \
     int8 and fp16 tensor-core GEMMs with fused epilogues, and fused residual plus layernorm.",
    "What is the capital of France? Paris, a city of 2.1 million people on the Seine, 450 km from London.",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Rust is a systems programming language focused on safety, speed and concurrency; it has no garbage collector.",
    "Machine learning models need careful numerical verification before deployment to production systems, \
     especially when quantized.",
    "Where is the nearest train station? Turn left at the bakery, then walk 300 meters north.",
    "Order #4821 shipped on 2024-03-05: 3 items, total $59.97 (tax included).",
];

/// Column absmax of the inputs of the two LayerNorm-fed GEMMs of every layer (QKV, FFN1), from
/// the f32 reference on a calibration batch. (Smoothing FFN2's input as well measured no better
/// once it is quantised asymmetrically, and is fragile: with an unrepresentative calibration
/// set it cost up to 0.03 of cosine.)
#[derive(Debug, Clone)]
pub struct LayerInputRanges {
    /// `[hidden]`
    pub qkv: Vec<f32>,
    /// `[hidden]`
    pub ffn1: Vec<f32>,
}

/// Runs the f32 reference on `batch`, recording [`LayerInputRanges`] per layer.
pub fn calibrate(model: &BertModel, batch: &Batch) -> Result<Vec<LayerInputRanges>> {
    let layers = &model.weights.layers;
    let h = model.config.hidden_size;
    let ranges = Mutex::new(vec![LayerInputRanges { qkv: vec![0.0; h], ffn1: vec![0.0; h] }; layers.len()]);
    let record = |l: &Linear, x: &[f32]| {
        for (li, layer) in layers.iter().enumerate() {
            let mut r = ranges.lock().unwrap();
            let r = &mut r[li];
            let slot = if std::ptr::eq(l, &layer.query) {
                Some(&mut r.qkv)
            } else if std::ptr::eq(l, &layer.ffn1) {
                Some(&mut r.ffn1)
            } else {
                None
            };
            if let Some(m) = slot {
                for row in x.chunks_exact(l.in_features()) {
                    m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
                }
            }
        }
        linear(x, l.in_features(), &l.weight.data, Some(&l.bias.data))
    };
    forward_with_encoder_linear(model, batch, &Options::default(), &record)?;
    Ok(ranges.into_inner().unwrap())
}

/// SmoothQuant multipliers (alpha = 0.5) for a GEMM with `[out, inp]` weights whose input
/// columns reach `amax`: the activations are quantised as `x[j] * m[j]` and the weights as
/// `W[n, j] / m[j]` with m_j = sqrt(wmax_j / amax_j), which balances the two ranges so a few
/// outlier input columns no longer set every token's scale. Rounded to fp16 (what the kernels
/// read); the weights must be divided by exactly these values.
pub fn smoothing_multipliers(amax: &[f32], w: &[f32], out: usize, inp: usize) -> Vec<half::f16> {
    (0..inp)
        .map(|j| {
            let wmax = (0..out).map(|n| w[n * inp + j].abs()).fold(0f32, f32::max);
            let m = if amax[j] > 0.0 && wmax > 0.0 { (wmax / amax[j]).sqrt().clamp(1e-3, 1e3) } else { 1.0 };
            half::f16::from_f32(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absmax_maps_to_127_and_error_is_within_half_a_step() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        let q = quantize_rows(&x, 3, 32);
        let d = q.dequantize();
        for r in 0..3 {
            let row = &x[r * 32..(r + 1) * 32];
            let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(q.q[r * 32..(r + 1) * 32].iter().any(|&c| c.abs() == 127));
            for c in 0..32 {
                let err = (d[r * 32 + c] - row[c]).abs();
                assert!(err <= absmax / 127.0 * 0.5 * (1.0 + 1e-6), "row {r} col {c}: err {err}");
            }
        }
    }

    #[test]
    fn zero_row_has_zero_scale_and_codes() {
        let q = quantize_rows(&[0.0; 8], 2, 4);
        assert_eq!(q.scale, vec![0.0, 0.0]);
        assert!(q.q.iter().all(|&c| c == 0));
        assert_eq!(q.dequantize(), vec![0.0; 8]);
    }

    #[test]
    fn never_emits_minus_128() {
        let x = [-1.0f32, 1.0, -0.999_999, 0.25];
        let (_, codes) = quantize_row(&x);
        assert_eq!(codes, vec![-127, 127, -127, 32]);
    }
}
