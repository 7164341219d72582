//! How far a result is from a reference: the two measures `verify`, the tests and the README
//! report (max abs error and cosine similarity, accumulated in f64).

/// Cosine similarity of two vectors of equal length; 1 for two zero vectors, 0 for one.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

/// Largest `|a[i] - b[i]|` (NaN anywhere gives NaN, so it never passes a `<=` bound).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff of vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m: f32, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_max_abs_diff() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0; 3], &[0.0; 3]), 1.0);
        assert_eq!(max_abs_diff(&[1.0, -2.0], &[1.5, -1.0]), 1.0);
        assert!(max_abs_diff(&[f32::NAN, 0.0], &[0.0, 0.0]).is_nan());
    }
}
