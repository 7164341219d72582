//! Symmetric int8 quantization: weights per output channel (once, on load) and activations per
//! token (the CPU reference of the device's dynamic quantization).
//!
//! Scale = absmax / 127 and q = round_half_even(x / scale) clamped to [-127, 127], so the
//! representable range is symmetric and -128 never appears (keeps `-q` exact). An all-zero row
//! gets scale 0 and all-zero codes; dequantisation multiplies by the scale, giving exact zeros.
use rayon::prelude::*;

use super::weights::Linear;

/// An int8 matrix `[rows, cols]` with one f32 scale per row: `x[r][c] ≈ q[r][c] * scale[r]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedRows {
    pub rows: usize,
    pub cols: usize,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
}

impl QuantizedRows {
    /// The dequantised matrix, row-major f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.q.len());
        for r in 0..self.rows {
            let s = self.scale[r];
            out.extend(self.q[r * self.cols..(r + 1) * self.cols].iter().map(|&v| v as f32 * s));
        }
        out
    }
}

/// Quantises each row of a row-major [rows, cols] matrix (a weight [out, in] per output channel,
/// or an activation [tokens, hidden] per token). Deterministic.
pub fn quantize_rows(x: &[f32], rows: usize, cols: usize) -> QuantizedRows {
    assert_eq!(x.len(), rows * cols, "quantize_rows: {} values for [{rows}, {cols}]", x.len());
    let mut q = Vec::with_capacity(x.len());
    let mut scale = Vec::with_capacity(rows);
    for row in x.chunks_exact(cols.max(1)).take(rows) {
        let (s, codes) = quantize_row(row);
        scale.push(s);
        q.extend(codes);
    }
    QuantizedRows { rows, cols, q, scale }
}

/// One row: (scale, codes). The division uses the reciprocal-free form x / scale so that the
/// element holding the absmax maps to exactly ±127.
pub fn quantize_row(row: &[f32]) -> (f32, Vec<i8>) {
    let absmax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if absmax == 0.0 || !absmax.is_finite() {
        return (0.0, vec![0; row.len()]);
    }
    let scale = absmax / 127.0;
    let codes = row.iter().map(|&v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8).collect();
    (scale, codes)
}

/// The W8A8 GEMM in plain f32 arithmetic: activations quantised per token, weights per output
/// channel, exact integer dot products, dequantised, plus the f32 bias. With
/// [`crate::model::reference::forward_with_encoder_linear`] this simulates the device int8 path
/// on the CPU, separating what the int8 scheme costs (vs the f32 reference) from what the
/// kernels add (vs this simulation).
pub fn w8a8_linear(l: &Linear, x: &[f32]) -> Vec<f32> {
    let (inp, out) = (l.in_features(), l.out_features());
    let rows = x.len() / inp;
    let xq = quantize_rows(x, rows, inp);
    let wq = quantize_rows(&l.weight.data, out, inp);
    let mut y = vec![0f32; rows * out];
    y.par_chunks_mut(out).enumerate().for_each(|(r, yr)| {
        let a = &xq.q[r * inp..(r + 1) * inp];
        for (n, yv) in yr.iter_mut().enumerate() {
            let w = &wq.q[n * inp..(n + 1) * inp];
            let acc: i32 = a.iter().zip(w).map(|(&p, &q)| p as i32 * q as i32).sum();
            *yv = acc as f32 * xq.scale[r] * wq.scale[n] + l.bias.data[n];
        }
    });
    y
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
