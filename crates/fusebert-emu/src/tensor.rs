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

/// `fused_truncate` for eight accumulators at once (one row of an m16n8 tile): `acc[n] +=
/// sum over j of products[j][n]`, bit for bit what `fused_truncate` gives each column. The
/// columns run side by side in branch-free f64 arithmetic (the largest magnitude gives the
/// exponent; truncation to the grid is a round-to-nearest by adding and subtracting a constant
/// whose ulp is the grid step, then one step back toward zero where it rounded up), so the loops
/// vectorise with plain SSE2 and no libm call is left.
pub fn fused_truncate_cols(acc: &mut [f32; 8], products: &[[f64; 8]], extra_bits: u32) {
    let c: [f64; 8] = acc.map(|x| x as f64);
    // largest magnitude per column (its exponent is the alignment exponent) and a NaN marker
    // for non-finite terms (x - x is 0 for finite x, NaN for infinities and NaN)
    let mut big = c.map(f64::abs);
    let mut special = c.map(special_marker);
    for row in products {
        for n in 0..8 {
            let ax = row[n].abs();
            big[n] = if ax > big[n] { ax } else { big[n] };
            special[n] += special_marker(row[n]);
        }
    }
    // per column: the grid step q = 2^(emax - 23 - extra) and the rounding constant
    // 1.5 * 2^(emax + 29 - extra), whose ulp is q (built from the exponent bits; garbage for
    // the all-zero and special columns, which take the IEEE path below)
    let mut q = [0f64; 8];
    let mut round = [0f64; 8];
    for n in 0..8 {
        let e = big[n].to_bits() >> 52;
        q[n] = f64::from_bits(e.wrapping_sub(23 + extra_bits as u64) << 52);
        round[n] = f64::from_bits((e.wrapping_add(29 - extra_bits as u64) << 52) | (1 << 51));
    }
    let mut sum = [0f64; 8];
    for n in 0..8 {
        sum[n] = truncate_to_grid(c[n], q[n], round[n]);
    }
    for row in products {
        for n in 0..8 {
            sum[n] += truncate_to_grid(row[n], q[n], round[n]);
        }
    }
    for n in 0..8 {
        acc[n] = if big[n] == 0.0 || special[n] != 0.0 {
            // all zero, or a special: the IEEE rules, as `fused_truncate`
            products.iter().fold(c[n], |s, row| s + row[n]) as f32
        } else {
            truncate_to_f32(sum[n])
        };
    }
}

/// Whether the f16 fast form (`f16_tile_fused`) is exact for blocks of `block` products: the
/// grid integers of the accumulator and the products (each below 2^(24 + extra)) must sum in i32.
pub fn f16_fast_fits(block: usize, extra_bits: u32) -> bool {
    extra_bits <= 6 && ((block as u64 + 1) << (24 + extra_bits)) < 1 << 31
}

/// A whole m16n8 `mma` with f16 inputs under the block model (`fused_truncate` on every output,
/// `block` products at a time) in f32 and i32 lanes: f16 products are exact in f32 (22-bit
/// significands, exponents 2^-48 to 2^32); each term scaled by 1/q (a power of two: exact) and
/// truncated by the float-to-int conversion gives its grid integer, below 2^(24 + extra) in
/// magnitude, and their sum is exact in i32; products recomputed instead of stored. `a`, `b` and `c` must be finite (the caller checks);
/// returns None when a block leaves the fast form's range (an accumulator overflowing to
/// infinity, or a nonzero one below 2^(-103 + extra)): the caller then takes the general path,
/// which handles everything. Requires `f16_fast_fits(block, extra_bits)`.
pub fn f16_tile_fused(
    a: &[[f32; 16]; 16],
    b: &[[f32; 8]; 16],
    c: &[[f32; 8]; 16],
    k: usize,
    block: usize,
    extra_bits: u32,
) -> Option<[[f32; 8]; 16]> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512cd") {
            // SAFETY: the CPU has AVX-512F and CD (checked above); the same safe code compiled
            // for them (CD: the lanes' leading-zero counts)
            return unsafe { f16_tile_avx512(a, b, c, k, block, extra_bits) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above); the same safe code compiled for it
            return unsafe { f16_tile_avx2(a, b, c, k, block, extra_bits) };
        }
    }
    f16_tile(a, b, c, k, block, extra_bits)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512cd")]
unsafe fn f16_tile_avx512(
    a: &[[f32; 16]; 16],
    b: &[[f32; 8]; 16],
    c: &[[f32; 8]; 16],
    k: usize,
    block: usize,
    extra_bits: u32,
) -> Option<[[f32; 8]; 16]> {
    f16_tile(a, b, c, k, block, extra_bits)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn f16_tile_avx2(
    a: &[[f32; 16]; 16],
    b: &[[f32; 8]; 16],
    c: &[[f32; 8]; 16],
    k: usize,
    block: usize,
    extra_bits: u32,
) -> Option<[[f32; 8]; 16]> {
    f16_tile(a, b, c, k, block, extra_bits)
}

/// Two rows of the tile side by side: 16 lanes (row m in 0..8, row m + 1 in 8..16), so one
/// AVX-512 register or two AVX2 ones hold a step of the loops.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // the lane loops are the vector lanes
fn f16_tile(
    a: &[[f32; 16]; 16],
    b: &[[f32; 8]; 16],
    c: &[[f32; 8]; 16],
    k: usize,
    block: usize,
    extra_bits: u32,
) -> Option<[[f32; 8]; 16]> {
    let tiny = f32::from_bits((24 + extra_bits) << 23);
    let top = f32::from_bits(254 << 23);
    // B's rows twice over (the two rows' lanes)
    let mut b2 = [[0f32; 16]; 16];
    for kk in 0..k {
        b2[kk][..8].copy_from_slice(&b[kk]);
        b2[kk][8..].copy_from_slice(&b[kk]);
    }
    let mut out = *c;
    let mut bad = 0u32;
    for m in (0..16).step_by(2) {
        let mut acc = [0f32; 16];
        acc[..8].copy_from_slice(&c[m]);
        acc[8..].copy_from_slice(&c[m + 1]);
        // A's values for the two rows, each over its eight lanes
        let mut a2 = [[0f32; 16]; 16];
        for kk in 0..k {
            a2[kk] = std::array::from_fn(|j| a[m + j / 8][kk]);
        }
        for k0 in (0..k).step_by(block) {
            let k1 = (k0 + block).min(k);
            // largest magnitude per lane
            let mut big = acc.map(f32::abs);
            for kk in k0..k1 {
                for j in 0..16 {
                    let ap = (a2[kk][j] * b2[kk][j]).abs();
                    big[j] = if ap > big[j] { ap } else { big[j] };
                }
            }
            // lanes whose terms are all zero take the IEEE sum (zero signs by the rules of
            // addition); rare outside padding, so summed only when there are some
            let mut ieee = acc;
            if big.contains(&0.0) {
                for kk in k0..k1 {
                    for j in 0..16 {
                        ieee[j] += a2[kk][j] * b2[kk][j];
                    }
                }
            }
            let mut inv_q = [0f32; 16];
            let mut sum = [0i32; 16];
            for j in 0..16 {
                let e = big[j].to_bits() >> 23;
                inv_q[j] = f32::from_bits((277 + extra_bits).wrapping_sub(e).min(254) << 23);
                sum[j] = grid_int(acc[j], inv_q[j]);
            }
            for kk in k0..k1 {
                for j in 0..16 {
                    sum[j] = sum[j].wrapping_add(grid_int(a2[kk][j] * b2[kk][j], inv_q[j]));
                }
            }
            for j in 0..16 {
                // the sum times q, toward zero, in integers: the magnitude cut to 24 significant
                // bits converts exactly, and q = 1 / inv_q is a normal f32 here (emax >= -100)
                let q = f32::from_bits(254u32.wrapping_sub(inv_q[j].to_bits() >> 23) << 23);
                let mag = sum[j].unsigned_abs();
                let cut = 8u32.saturating_sub(mag.leading_zeros());
                let r = ((mag >> cut << cut) as f32) * q;
                let r = if sum[j] < 0 { -r } else { r };
                let zero = big[j] == 0.0;
                // (at 2^127 and above the general path decides: where rounding would overflow,
                // the model gives infinity)
                bad |= ((!zero & (big[j] < tiny)) | (r.abs() >= top)) as u32;
                acc[j] = if zero { ieee[j] } else { r };
            }
        }
        out[m].copy_from_slice(&acc[..8]);
        out[m + 1].copy_from_slice(&acc[8..]);
    }
    (bad == 0).then_some(out)
}

/// `trunc(x / q)` as an integer, for |x / q| < 2^31; anything else (the columns that take the
/// exact path: infinities, NaN, out of range) gives 0. A plain truncating conversion, where
/// `as i32` would add saturation that keeps the loop from vectorising.
#[inline(always)]
fn grid_int(x: f32, inv_q: f32) -> i32 {
    let y = x * inv_q;
    let y = if y.abs() < 2_147_483_648.0 { y } else { 0.0 };
    // SAFETY: y is finite and |y| < 2^31, so its truncation is representable in i32
    unsafe { y.to_int_unchecked::<i32>() }
}

/// `trunc(x / q) * q` (a zero of x's sign below q): |x| rounded to the nearest multiple of q by
/// `round` (whose ulp is q, and |x| is far below it), one q back where that rounded up, and x's
/// sign put back.
#[inline(always)]
fn truncate_to_grid(x: f64, q: f64, round: f64) -> f64 {
    let ax = x.abs();
    let r = (ax + round) - round;
    let r = if r > ax { r - q } else { r };
    f64::from_bits(r.to_bits() | (x.to_bits() & (1 << 63)))
}

/// 0 for a finite value, NaN for an infinity or NaN (x - x): summed over terms, it says whether
/// any was special without a branch.
#[inline(always)]
#[allow(clippy::eq_op)] // x - x is the point: 0 when finite, NaN otherwise
fn special_marker<T: std::ops::Sub<Output = T> + Copy>(x: T) -> T {
    x - x
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

    /// The column form equals the scalar model bit for bit, on random f16-exact products, zeros
    /// of both signs, wide exponent spreads, cancellation and specials.
    #[test]
    fn columns_equal_the_scalar_model() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rand::RngCore::next_u64(&mut rng);
        let f16 = |bits: u64| crate::fp::f16_to_f32(bits) as f64;
        for case in 0..20_000 {
            let mut prods = [[0f64; 8]; 8];
            for row in prods.iter_mut() {
                for p in row.iter_mut() {
                    let (a, b) = (next() & 0xffff, next() & 0xffff);
                    // mostly finite; zeros and small exponent spreads often
                    let a = match next() % 16 {
                        0 => 0,
                        1 => 0x8000,
                        _ => a & !0x7c00 | ((next() % 30 + 1) << 10) & 0x7c00,
                    };
                    *p = f16(a) * f16(if case % 97 == 0 { b } else { b & !0x4000 });
                }
            }
            if case % 5 == 0 {
                // columns with no product: the accumulator alone (tiny ones included)
                for row in prods.iter_mut() {
                    row[1] = 0.0;
                    row[6] = -0.0;
                }
            }
            let mut acc = [0f32; 8];
            for (n, x) in acc.iter_mut().enumerate() {
                *x = match next() % 8 {
                    0 => 0.0,
                    1 => -0.0,
                    // cancels the first product exactly
                    2 => -(prods[0][n] as f32),
                    // subnormal or tiny accumulators
                    3 => f32::from_bits(next() as u32 & 0x81ff_ffff),
                    _ => f32::from_bits((next() as u32 & 0x807f_ffff) | ((next() as u32 % 60 + 100) << 23)),
                };
            }
            for extra in [0, 3] {
                for len in [8, 4, 1] {
                    let mut cols = acc;
                    fused_truncate_cols(&mut cols, &prods[..len], extra);

                    for n in 0..8 {
                        let col: Vec<f64> = prods[..len].iter().map(|r| r[n]).collect();
                        let want = fused_truncate(acc[n], &col, extra);
                        let got = cols[n];
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "case {case} column {n}: {got} vs {want} (c {}, products {col:?})",
                            acc[n]
                        );
                    }
                }
            }
        }
    }

    /// The whole-tile f16 form equals the row form of the general model, on random f16 tiles
    /// with zero rows and columns, negative zeros and wide exponent spreads.
    #[test]
    fn f16_tile_equals_the_rows() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let mut next = move || rand::RngCore::next_u64(&mut rng);
        let mut f16 = |zero_odds: u64| -> f32 {
            let r = next();
            match r % zero_odds {
                0 => 0.0,
                1 => -0.0,
                // finite f16: exponent field 0..30
                _ => crate::fp::f16_to_f32((r >> 8) & 0x83ff | (((r >> 20) % 31) << 10)),
            }
        };
        let mut checked = 0;
        for case in 0..3000 {
            let zero_odds = [3, 8, 1000][case % 3];
            let mut a = [[0f32; 16]; 16];
            let mut b = [[0f32; 8]; 16];
            let mut c = [[0f32; 8]; 16];
            a.iter_mut().flatten().for_each(|x| *x = f16(zero_odds));
            b.iter_mut().flatten().for_each(|x| *x = f16(zero_odds));
            c.iter_mut().flatten().for_each(|x| *x = f16(zero_odds) * 64.0);
            if case % 7 == 0 {
                a[3] = [0.0; 16];
                c[3] = [-0.0; 8];
            }
            for k in [8, 16] {
                let Some(tile) = f16_tile_fused(&a, &b, &c, k, 8, 3) else { continue };
                checked += 1;
                for m in 0..16 {
                    let mut acc = c[m];
                    for k0 in (0..k).step_by(8) {
                        let prods: Vec<[f64; 8]> =
                            (k0..k0 + 8).map(|kk| b[kk].map(|x| a[m][kk] as f64 * x as f64)).collect();
                        fused_truncate_cols(&mut acc, &prods, 3);
                    }
                    for n in 0..8 {
                        assert_eq!(tile[m][n].to_bits(), acc[n].to_bits(), "case {case} k {k} ({m}, {n})");
                    }
                }
            }
        }
        // the fast form must take (nearly) every case, or this test proves little
        assert!(checked > 5900, "only {checked} of 6000 tiles took the fast form");
    }

    #[test]
    fn specials_follow_ieee() {
        assert!(fused_truncate(1.0, &[f64::NAN], 3).is_nan());
        assert_eq!(fused_truncate(1.0, &[f64::INFINITY], 3), f32::INFINITY);
    }
}
