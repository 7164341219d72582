//! Sentence pooling: one vector from the final hidden states of one sequence.
//!
//! Below the model layer so that the device pooling kernels' CPU references and the model's
//! reference forward pass share one definition. The semantics are sentence-transformers'
//! `Pooling` module, on one unpadded sequence whose first `skip` tokens are masked out
//! (`include_prompt = false` masks `[CLS]` + the prompt's tokens; every mode but `cls` and
//! `lasttoken` honours it, as in sentence-transformers). Sums accumulate in f64.

/// A pooling mode (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The first token's state (`[CLS]` / `<s>`).
    Cls,
    /// Mean over the tokens.
    Mean,
    /// Elementwise maximum over the tokens.
    Max,
    /// Sum over the tokens divided by `sqrt(token count)`.
    MeanSqrtLen,
    /// Mean weighted by position (token `i`, counted from 0 at `[CLS]`, has weight `i + 1`).
    WeightedMean,
    /// The last token's state.
    LastToken,
}

impl Pooling {
    /// Every mode, in sentence-transformers' order.
    pub const ALL: [Pooling; 6] =
        [Pooling::Cls, Pooling::Mean, Pooling::Max, Pooling::MeanSqrtLen, Pooling::WeightedMean, Pooling::LastToken];

    /// The mode's name as sentence-transformers writes it (`pooling_mode` strings, `--pooling`).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::WeightedMean => "weightedmean",
            Pooling::LastToken => "lasttoken",
        }
    }

    /// Parses a mode name: [`name`](Self::name), or the aliases sentence-transformers accepts.
    pub fn parse(s: &str) -> Option<Pooling> {
        Some(match s {
            "cls" | "cls_token" => Pooling::Cls,
            "mean" | "mean_tokens" => Pooling::Mean,
            "max" | "max_tokens" => Pooling::Max,
            "mean_sqrt_len_tokens" | "mean_sqrt_len" => Pooling::MeanSqrtLen,
            "weightedmean" | "weightedmean_tokens" | "weighted_mean" => Pooling::WeightedMean,
            "lasttoken" | "last_token" => Pooling::LastToken,
            _ => return None,
        })
    }

    /// The names [`parse`](Self::parse) accepts, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Pooling::name).join(", ")
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Pools `rows` (`[len, h]` row-major, one sequence, `len >= 1`) with `mode`, masking the first
/// `skip` tokens for the modes that honour a mask. A fully masked sequence pools to zeros
/// (mean modes; sentence-transformers clamps the divisor) or to `-1e9` (max), as sentence-transformers.
pub fn pool(rows: &[f32], h: usize, mode: Pooling, skip: usize) -> Vec<f32> {
    assert!(h > 0 && rows.len() % h == 0 && !rows.is_empty(), "pool: rows are not [len >= 1, {h}]");
    let len = rows.len() / h;
    let skip = skip.min(len);
    let token = |i: usize| &rows[i * h..(i + 1) * h];
    match mode {
        Pooling::Cls => token(0).to_vec(),
        Pooling::LastToken => token(len - 1).to_vec(),
        Pooling::Max => {
            // sentence-transformers sets masked states to -1e9 before the max.
            let mut out = vec![-1e9f32; h];
            for i in skip..len {
                out.iter_mut().zip(token(i)).for_each(|(o, &v)| *o = o.max(v));
            }
            out
        }
        Pooling::Mean | Pooling::MeanSqrtLen | Pooling::WeightedMean => {
            let weight = |i: usize| if mode == Pooling::WeightedMean { (i + 1) as f64 } else { 1.0 };
            let mut sum = vec![0f64; h];
            let mut total = 0f64;
            for i in skip..len {
                let w = weight(i);
                total += w;
                sum.iter_mut().zip(token(i)).for_each(|(s, &v)| *s += w * v as f64);
            }
            // sentence-transformers clamps the divisor at 1e-9 (a fully masked sequence gives 0).
            let div = match mode {
                Pooling::MeanSqrtLen => total.max(1e-9).sqrt(),
                _ => total.max(1e-9),
            };
            sum.iter().map(|&s| (s / div) as f32).collect()
        }
    }
}

/// L2-normalises `v` in place (sentence-transformers' `Normalize`: divides by `max(|v|, 1e-12)`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three tokens of width 2.
    const ROWS: [f32; 6] = [1.0, -2.0, 3.0, 4.0, -5.0, 0.5];

    #[test]
    fn every_mode_by_hand() {
        let p = |m, skip| pool(&ROWS, 2, m, skip);
        assert_eq!(p(Pooling::Cls, 0), vec![1.0, -2.0]);
        assert_eq!(p(Pooling::LastToken, 0), vec![-5.0, 0.5]);
        assert_eq!(p(Pooling::Max, 0), vec![3.0, 4.0]);
        assert_eq!(p(Pooling::Mean, 0), vec![-1.0 / 3.0, 2.5 / 3.0]);
        let s3 = 3f64.sqrt();
        assert_eq!(p(Pooling::MeanSqrtLen, 0), vec![(-1.0 / s3) as f32, (2.5 / s3) as f32]);
        // weights 1, 2, 3
        assert_eq!(p(Pooling::WeightedMean, 0), vec![(1.0 + 6.0 - 15.0) / 6.0, (-2.0 + 8.0 + 1.5) / 6.0]);
        // skip masks the first tokens for mean/max, not for cls
        assert_eq!(p(Pooling::Mean, 1), vec![-1.0, 2.25]);
        assert_eq!(p(Pooling::Max, 2), vec![-5.0, 0.5]);
        assert_eq!(p(Pooling::Cls, 2), vec![1.0, -2.0]);
        assert_eq!(p(Pooling::Mean, 3), vec![0.0, 0.0]);
    }

    #[test]
    fn names_round_trip() {
        for m in Pooling::ALL {
            assert_eq!(Pooling::parse(m.name()), Some(m));
        }
        assert_eq!(Pooling::parse("median"), None);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
