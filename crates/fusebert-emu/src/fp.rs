//! Floating-point semantics: correctly rounded results in every rounding mode for f16/bf16/f32
//! (computed as an exact pair `r + e` in f64 with error-free transformations, then rounded),
//! f64 directed rounding, conversions with saturation, flush-to-zero.
use super::ir::Rnd;

/// A binary floating-point format of at most 32 bits, handled through f64.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fmt {
    F16,
    BF16,
    F32,
}

impl Fmt {
    #[inline]
    pub fn rn(self, x: f64) -> u32 {
        match self {
            Fmt::F32 => (x as f32).to_bits(),
            Fmt::F16 => f64_to_small(x, 5, 10),
            Fmt::BF16 => f64_to_small(x, 8, 7),
        }
    }
    #[inline]
    pub fn to_f64(self, b: u32) -> f64 {
        match self {
            Fmt::F32 => f32::from_bits(b) as f64,
            Fmt::F16 => half::f16::from_bits(b as u16).to_f64(),
            Fmt::BF16 => half::bf16::from_bits(b as u16).to_f64(),
        }
    }
    fn sign_bit(self) -> u32 {
        match self {
            Fmt::F32 => 1 << 31,
            _ => 1 << 15,
        }
    }
    fn max_finite(self) -> u32 {
        match self {
            Fmt::F32 => 0x7f7f_ffff,
            Fmt::F16 => 0x7bff,
            Fmt::BF16 => 0x7f7f,
        }
    }
    fn inf(self) -> u32 {
        match self {
            Fmt::F32 => 0x7f80_0000,
            Fmt::F16 => 0x7c00,
            Fmt::BF16 => 0x7f80,
        }
    }
    pub fn nan(self) -> u32 {
        match self {
            Fmt::F32 => 0x7fff_ffff,
            Fmt::F16 => 0x7fff,
            Fmt::BF16 => 0x7fff,
        }
    }
    /// Next representable value toward +inf (finite inputs).
    fn up(self, b: u32) -> u32 {
        let s = self.sign_bit();
        if b == s {
            1 // -0 -> smallest positive subnormal
        } else if b & s != 0 {
            b - 1
        } else {
            b + 1
        }
    }
    fn down(self, b: u32) -> u32 {
        let s = self.sign_bit();
        if b == 0 {
            s | 1
        } else if b & s != 0 {
            b + 1
        } else {
            b - 1
        }
    }
}

/// Rounds the exact value `r + e` (r = f64 nearest of the exact value, |e| tiny) to `fmt`.
pub fn round_pair(r: f64, e: f64, mode: Rnd, fmt: Fmt) -> u32 {
    if r.is_nan() {
        return fmt.nan();
    }
    let c = fmt.rn(r);
    if r.is_infinite() {
        return c;
    }
    let cv = fmt.to_f64(c);
    match mode {
        Rnd::Rz | Rnd::Rm | Rnd::Rp => {}
        _ => {
            // Round to nearest: `c` is wrong only when r sits exactly halfway between two
            // neighbours and the discarded error e breaks the tie.
            if e != 0.0 && cv.is_finite() && cv != r {
                let other = if r > cv { fmt.up(c) } else { fmt.down(c) };
                let ov = fmt.to_f64(other);
                if ov.is_finite() && cv * 0.5 + ov * 0.5 == r {
                    let (lo, hi) = if cv < ov { (c, other) } else { (other, c) };
                    return if e > 0.0 { hi } else { lo };
                }
            }
            return c;
        }
    }
    if cv.is_infinite() {
        // overflow of a finite value
        let neg = r < 0.0;
        let maxb = fmt.max_finite() | if neg { fmt.sign_bit() } else { 0 };
        let infb = fmt.inf() | if neg { fmt.sign_bit() } else { 0 };
        return match mode {
            Rnd::Rz => maxb,
            Rnd::Rm => {
                if neg {
                    infb
                } else {
                    maxb
                }
            }
            _ => {
                if neg {
                    maxb
                } else {
                    infb
                }
            }
        };
    }
    // sign of c - (r + e)
    let d = cv - r;
    let cmp = if d > e {
        1
    } else if d < e {
        -1
    } else {
        0
    };
    if cmp == 0 {
        return c;
    }
    let pos = r > 0.0 || (r == 0.0 && e > 0.0);
    match mode {
        Rnd::Rm if cmp > 0 => fmt.down(c),
        Rnd::Rp if cmp < 0 => fmt.up(c),
        Rnd::Rz if cmp > 0 && pos => fmt.down(c),
        Rnd::Rz if cmp < 0 && !pos => fmt.up(c),
        _ => c,
    }
}

/// Error-free sum: a + b = s + e exactly.
#[inline]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, if s.is_finite() { e } else { 0.0 })
}

/// Exact sum of two values of a narrow format (each fits in f64), rounded to `fmt` in `mode`.
#[inline]
pub fn add_n(a: f64, b: f64, mode: Rnd, fmt: Fmt) -> u32 {
    if matches!(mode, Rnd::None | Rnd::Rn) && fmt == Fmt::F32 {
        // double rounding through f64 is innocuous for +,-,*,/ of f32 (53 >= 2*24+2)
        return ((a + b) as f32).to_bits();
    }
    let (r, e) = two_sum(a, b);
    if r == 0.0 && e == 0.0 {
        // exact zero: IEEE sign rules (x + -x = +0, except -0 in round-down)
        let z = if a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative() {
            a
        } else if mode == Rnd::Rm {
            -0.0
        } else {
            0.0
        };
        return fmt.rn(z);
    }
    round_pair(r, e, mode, fmt)
}

#[inline]
pub fn mul_n(a: f64, b: f64, mode: Rnd, fmt: Fmt) -> u32 {
    // products of two <=24-bit significands are exact in f64
    let p = a * b;
    if matches!(mode, Rnd::None | Rnd::Rn) {
        return fmt.rn(p);
    }
    round_pair(p, 0.0, mode, fmt)
}

#[inline]
pub fn fma_n(a: f64, b: f64, c: f64, mode: Rnd, fmt: Fmt) -> u32 {
    let p = a * b; // exact
    if !p.is_finite() || !c.is_finite() {
        return fmt.rn(p + c);
    }
    let (r, e) = two_sum(p, c);
    if r == 0.0 && e == 0.0 {
        let z = if p == 0.0 && c == 0.0 && p.is_sign_negative() == c.is_sign_negative() {
            c
        } else if mode == Rnd::Rm {
            -0.0
        } else {
            0.0
        };
        return fmt.rn(z);
    }
    round_pair(r, e, mode, fmt)
}

#[inline]
pub fn div_n(a: f64, b: f64, mode: Rnd, fmt: Fmt) -> u32 {
    let q = a / b;
    if matches!(mode, Rnd::None | Rnd::Rn) || !q.is_finite() || q == 0.0 {
        return fmt.rn(q);
    }
    // residual a - q*b is exact with an fma; its sign (times sign of b) is the sign of e
    let rem = (-q).mul_add(b, a);
    let e = rem / b;
    round_pair(q, e, mode, fmt)
}

#[inline]
pub fn sqrt_n(a: f64, mode: Rnd, fmt: Fmt) -> u32 {
    let q = a.sqrt();
    if matches!(mode, Rnd::None | Rnd::Rn) || !q.is_finite() || q == 0.0 {
        return fmt.rn(q);
    }
    let rem = (-q).mul_add(q, a);
    let e = rem / (2.0 * q);
    round_pair(q, e, mode, fmt)
}

/// f64 result with directed rounding from an exact pair r + e.
#[inline]
pub fn dir64(r: f64, e: f64, mode: Rnd) -> f64 {
    if !r.is_finite() || e == 0.0 {
        return r;
    }
    match mode {
        Rnd::Rm if e < 0.0 => next_down64(r),
        Rnd::Rp if e > 0.0 => next_up64(r),
        Rnd::Rz if e < 0.0 && r > 0.0 => next_down64(r),
        Rnd::Rz if e > 0.0 && r < 0.0 => next_up64(r),
        _ => r,
    }
}

/// Next f64 toward +inf (finite input; `f64::next_up` needs Rust 1.86, above our MSRV).
fn next_up64(x: f64) -> f64 {
    let b = x.to_bits();
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(b + 1)
    } else {
        f64::from_bits(b - 1)
    }
}

fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

pub fn add64(a: f64, b: f64, mode: Rnd) -> f64 {
    let (r, e) = two_sum(a, b);
    // an exact zero sum is -0 in round-down unless both operands are +0
    if r == 0.0 && e == 0.0 && mode == Rnd::Rm && !(a.to_bits() == 0 && b.to_bits() == 0) {
        return -0.0;
    }
    dir64(r, e, mode)
}
pub fn mul64(a: f64, b: f64, mode: Rnd) -> f64 {
    let p = a * b;
    if !p.is_finite() {
        return p;
    }
    let e = a.mul_add(b, -p);
    dir64(p, e, mode)
}
pub fn div64(a: f64, b: f64, mode: Rnd) -> f64 {
    let q = a / b;
    if !q.is_finite() || q == 0.0 {
        return q;
    }
    let rem = (-q).mul_add(b, a);
    dir64(q, rem / b, mode)
}
pub fn sqrt64(a: f64, mode: Rnd) -> f64 {
    let q = a.sqrt();
    if !q.is_finite() || q == 0.0 {
        return q;
    }
    let rem = (-q).mul_add(q, a);
    dir64(q, rem, mode)
}
pub fn fma64(a: f64, b: f64, c: f64, mode: Rnd) -> f64 {
    let r = a.mul_add(b, c);
    if matches!(mode, Rnd::None | Rnd::Rn) || !r.is_finite() {
        return r;
    }
    // error of the fma: exact product split + two-sum (valid away from underflow)
    let p = a * b;
    let pe = a.mul_add(b, -p);
    let (s, se) = two_sum(p, c);
    let (s2, se2) = two_sum(s, pe);
    let e = (s2 - r) + se + se2;
    dir64(r, e, mode)
}

/// Flushes an f32 subnormal to a signed zero.
#[inline]
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        if x.is_sign_negative() {
            -0.0
        } else {
            0.0
        }
    } else {
        x
    }
}

/// `.sat` for float destinations: clamp to [0, 1], NaN -> +0.
#[inline]
pub fn sat01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Rounds to an integral value per `.rni/.rzi/.rmi/.rpi`.
#[inline]
pub fn round_int(x: f64, mode: Rnd) -> f64 {
    match mode {
        Rnd::Rzi | Rnd::Rz => x.trunc(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        Rnd::Rna => x.round(),
        _ => x.round_ties_even(),
    }
}

/// Float to integer: round per mode, saturate to the destination range, NaN -> 0.
pub fn f2i(x: f64, mode: Rnd, bits: u32, signed: bool) -> u64 {
    if x.is_nan() {
        return 0;
    }
    let r = round_int(x, mode);
    if signed {
        let (lo, hi) = (-(2f64.powi(bits as i32 - 1)), 2f64.powi(bits as i32 - 1) - 1.0);
        let v = if r < lo {
            lo
        } else if r > hi {
            hi
        } else {
            r
        };
        (v as i64) as u64
    } else {
        let hi = 2f64.powi(bits as i32) - 1.0;
        let v = if r < 0.0 {
            0.0
        } else if r > hi {
            hi
        } else {
            r
        };
        v as u64
    }
}

/// Integer to a narrow float format with a rounding mode (exact residual via i128).
pub fn i2f(x: i128, mode: Rnd, fmt: Fmt) -> u32 {
    let r = x as f64;
    let e = (x - r as i128) as f64;
    round_pair(r, e, if mode == Rnd::None { Rnd::Rn } else { mode }, fmt)
}

pub fn i2f64(x: i128, mode: Rnd) -> f64 {
    let r = x as f64;
    let e = (x - r as i128) as f64;
    dir64(r, e, mode)
}

/// Approximate transcendental functions, implemented as the correctly rounded (to f64 and then
/// f32) value of the exact function, with the ISA's special cases.
pub fn ex2(x: f32) -> f32 {
    (x as f64).exp2() as f32
}
pub fn lg2(x: f32) -> f32 {
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    (x as f64).log2() as f32
}
pub fn rcp_approx(x: f32) -> f32 {
    (1.0 / x as f64) as f32
}
pub fn rsqrt(x: f32) -> f32 {
    if x == 0.0 {
        return if x.is_sign_negative() { f32::NEG_INFINITY } else { f32::INFINITY };
    }
    (1.0 / (x as f64).sqrt()) as f32
}
pub fn tanh(x: f32) -> f32 {
    (x as f64).tanh() as f32
}
pub fn sin(x: f32) -> f32 {
    if x.is_infinite() {
        return f32::NAN;
    }
    (x as f64).sin() as f32
}
pub fn cos(x: f32) -> f32 {
    if x.is_infinite() {
        return f32::NAN;
    }
    (x as f64).cos() as f32
}

/// f16 -> f32 for every bit pattern (the hot path of mma and cvt.f32.f16; hot loops take the
/// table once).
pub fn f16_table() -> &'static [f32] {
    static T: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    T.get_or_init(|| (0..=u16::MAX).map(|b| half::f16::from_bits(b).to_f32()).collect())
}

#[inline]
pub fn f16_to_f64(b: u64) -> f64 {
    f16_to_f32(b) as f64
}
#[inline]
pub fn bf16_to_f64(b: u64) -> f64 {
    half::bf16::from_bits(b as u16).to_f64()
}
#[inline]
pub fn f16_to_f32(b: u64) -> f32 {
    f16_table()[(b & 0xffff) as usize]
}
#[inline]
pub fn bf16_to_f32(b: u64) -> f32 {
    f32::from_bits((b as u32 & 0xffff) << 16)
}

/// f64 -> a small binary format (ebits exponent, mbits mantissa bits), round to nearest even in
/// ONE rounding (the `half` crate goes through f32 on some targets: double rounding).
pub fn f64_to_small(x: f64, ebits: u32, mbits: u32) -> u32 {
    let sign = ((x.to_bits() >> 63) as u32) << (ebits + mbits);
    let exp_all = (1u32 << ebits) - 1;
    if x.is_nan() {
        return sign | (exp_all << mbits) | (1 << (mbits - 1));
    }
    let a = x.abs();
    if a.is_infinite() {
        return sign | (exp_all << mbits);
    }
    if a == 0.0 {
        return sign;
    }
    let bias = (1i32 << (ebits - 1)) - 1;
    let emin = 1 - bias;
    let fexp = ((a.to_bits() >> 52) & 0x7ff) as i32;
    let e = if fexp == 0 { -1100 } else { fexp - 1023 };
    let qexp = if e < emin { emin - mbits as i32 } else { e - mbits as i32 };
    let n = a * 2f64.powi(-qexp);
    let rn = n.round_ties_even() as u64;
    if e < emin {
        // subnormal (rn == 2^mbits rolls into the smallest normal by the encoding itself)
        return sign | rn as u32;
    }
    let (mut e2, mut m) = (e, rn);
    if m == 1u64 << (mbits + 1) {
        e2 += 1;
        m = 1u64 << mbits;
    }
    let ef = e2 + bias;
    if ef >= exp_all as i32 {
        return sign | (exp_all << mbits);
    }
    sign | ((ef as u32) << mbits) | (m as u32 - (1 << mbits))
}
