//! int8 rounding shared by the kernels' CPU references and the model's int8 simulation.
//!
//! Symmetric (weights, and the activations of the QKV, attention-output and FFN1 GEMMs):
//! scale = absmax / 127 and q = round_half_even(x / scale) clamped to [-127, 127], so the
//! representable range is symmetric and -128 never appears (keeps `-q` exact). An all-zero row
//! gets scale 0 and all-zero codes; dequantisation multiplies by the scale, giving exact zeros.

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

/// One row, asymmetric (the inputs of FFN2, GELU outputs in [-0.17, max]): the range
/// `[min(0, x), max(0, x)]` onto all 256 codes, `x ≈ (q - zero) * scale`. Returns
/// `(scale, zero, codes)`; the same f32 operations as `kernels/quantize.cu` (`inv = 255 / range`,
/// `zero = round_half_even(-min * inv - 128)`, `q = clamp(round_half_even(x * inv) + zero)`).
pub fn quantize_row_asym(row: &[f32]) -> (f32, i32, Vec<i8>) {
    let max = row.iter().fold(0f32, |m, &v| m.max(v));
    let nmin = row.iter().fold(0f32, |m, &v| m.max(-v));
    let range = max + nmin;
    if range == 0.0 || !range.is_finite() {
        return (0.0, 0, vec![0; row.len()]);
    }
    let inv = 255.0f32 / range;
    let zero = (nmin * inv - 128.0).round_ties_even() as i32;
    let codes = row.iter().map(|&v| ((v * inv).round_ties_even() as i32 + zero).clamp(-128, 127) as i8).collect();
    (range / 255.0, zero, codes)
}
