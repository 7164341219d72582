//! Symmetric int8 quantization: weights per output channel (once, on load) and activations per
//! token (the CPU reference of the device's dynamic quantization).
//!
//! Scale = absmax / 127 and q = round_half_even(x / scale) clamped to [-127, 127], so the
//! representable range is symmetric and -128 never appears (keeps `-q` exact). An all-zero row
//! gets scale 0 and all-zero codes; dequantisation multiplies by the scale, giving exact zeros.

/// An int8 matrix [rows, cols] with one f32 scale per row: x[r][c] ≈ q[r][c] * scale[r].
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
