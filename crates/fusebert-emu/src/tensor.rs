//! Tensor-core accumulation models for floating-point `mma` (`arch::TensorAccum`).
//!
//! The PTX ISA leaves the order and rounding of the accumulation unspecified. Fasi, Higham,
//! Mikaitis and Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ Comput. Sci. 7:e330
//! (2021), measured V100, T4 and A100 and found: the products are exact; each block of products
//! is added to the accumulator in one fused operation, its terms aligned to the largest exponent
//! among them (accumulator included) with the bits that fall off the aligned significand
//! truncated (a few extra bits kept); the result is normalised with truncation (round toward
//! zero), not round-to-nearest. On A100 a block is 8 products for f16/bf16 inputs (V100/T4: 4).
//! `fused_truncate` implements exactly that model; see docs/emulator-fidelity.md for where the
//! study is unsure (the number of extra bits, carries, and anything newer than A100).

/// `c + sum(products)` as one A100-style block fused multiply-add: every term is truncated
/// toward zero to a multiple of 2^(emax - 23 - extra_bits), where emax is the largest exponent
/// among the nonzero terms; the sum of those is exact and is normalised to f32 by truncation.
/// NaN or infinite terms give the IEEE result (the study did not characterise them).
pub fn fused_truncate(c: f32, products: &[f64], extra_bits: u32) -> f32 {
    let c = c as f64;
    let mut emax = if c != 0.0 { exponent(c) } else { i32::MIN };
    let mut special = !c.is_finite();
    for &x in products {
        special |= !x.is_finite();
        if x != 0.0 {
            emax = emax.max(exponent(x));
        }
    }
    if special || emax == i32::MIN {
        // IEEE: specials propagate; all-zero terms keep the sign rules of ordinary addition
        return products.iter().fold(c, |s, &x| s + x) as f32;
    }
    // q = 2^(emax - 23 - extra) and 1/q, built from their exponent bits (both are normal f64:
    // emax >= -300 for f16/bf16 products and f32 accumulators)
    let e = emax - 23 - extra_bits as i32;
    let (q, inv_q) = (pow2(e), pow2(-e));
    // multiples of q below 2^(emax+1) have at most 25 + extra_bits significant bits, and nine of
    // them sum exactly in f64's 53 bits
    let s = products.iter().fold((c * inv_q).trunc() * q, |s, &x| s + (x * inv_q).trunc() * q);
    truncate_to_f32(s)
}

/// 2^e for a normal f64 exponent.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The unbiased binary exponent of a finite nonzero f64 (products of f16/bf16 are normal in f64).
fn exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// f64 -> f32 rounding toward zero; past the f32 range, infinity (what an IEEE overflow gives).
fn truncate_to_f32(s: f64) -> f32 {
    let f = s as f32;
    if f.is_infinite() {
        return f;
    }
    if (f as f64).abs() > s.abs() {
        // one step toward zero (bits - 1 shrinks the magnitude for either sign)
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sums_are_exact() {
        assert_eq!(fused_truncate(1.0, &[2.0, 3.0, 0.5], 3), 6.5);
        assert_eq!(fused_truncate(0.0, &[], 3), 0.0);
        assert_eq!(fused_truncate(-2.0, &[2.0], 3), 0.0);
    }

    #[test]
    fn small_terms_are_truncated_not_rounded() {
        // 1 + 2^-30: far below the aligned grid (2^-26 with 3 extra bits): dropped entirely
        assert_eq!(fused_truncate(1.0, &[2f64.powi(-30)], 3), 1.0);
        // 1 + 3 * 2^-25 rounds to 1 + 2^-23 under IEEE, truncates to 1 here
        let r = fused_truncate(1.0, &[3.0 * 2f64.powi(-25)], 3);
        assert_eq!(r, 1.0);
        assert_eq!(1.0f32 + (3.0 * 2f64.powi(-25)) as f32, 1.0 + f32::EPSILON);
        // negative results truncate toward zero too
        assert_eq!(fused_truncate(-1.0, &[-3.0 * 2f64.powi(-25)], 3), -1.0);
    }

    #[test]
    fn specials_follow_ieee() {
        assert!(fused_truncate(1.0, &[f64::NAN], 3).is_nan());
        assert_eq!(fused_truncate(1.0, &[f64::INFINITY], 3), f32::INFINITY);
    }
}
