//! Envelope math: approximate f32 instructions return a deterministic value anywhere inside the
//! PTX ISA's documented error bound instead of the correctly rounded one, so a kernel is tested
//! against what hardware may return (`MathMode::Envelope`).
//!
//! The deviation is a hash of (instruction, input bits): the same input always gives the same
//! output (tests are repeatable, packing invariance still holds), different inputs spread over
//! the whole bound, and half of them sit at its edge (the worst case is what matters).
//!
//! Bounds (PTX ISA 9.x, the instruction's "Notes"/"Description"): `rcp.approx.f32` 1 ulp;
//! `ex2.approx.f32` 2 ulp; `div.approx.f32` / `div.full.f32` 2 ulp; `sqrt.approx.f32` relative
//! 2^-23; `rsqrt.approx.f32` relative 2^-22.9; `tanh.approx.f32` relative 2^-11;
//! `lg2.approx.f32` absolute 2^-22.6; `sin/cos.approx.f32` absolute 2^-20.9 (documented for
//! |x| <= 100 pi; larger arguments are left exact, the ISA gives no bound there).
//! Special values (NaN, infinities, zeros and results that are exactly zero or infinite) keep
//! their exact, ISA-tabulated result; tanh/sin/cos stay within [-1, 1]; where a bound is
//! narrower than the f32 spacing (lg2 of large results) the correctly rounded value is used.
//! The f16/bf16 forms (`ex2.approx.f16`, `tanh.approx.f16`, ...) stay exact.
use super::fp;
use super::ir::{fl, Op};

/// The error bound of an approximate instruction around the true value `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Ulps(f64),
    Relative(f64),
    Absolute(f64),
}

impl Bound {
    fn width(self, t: f64) -> f64 {
        match self {
            Bound::Ulps(n) => n * ulp32(t),
            Bound::Relative(r) => r * t.abs(),
            Bound::Absolute(a) => a,
        }
    }
}

/// The unit in the last place of the f32 nearest `t` (at least the smallest subnormal).
fn ulp32(t: f64) -> f64 {
    let a = (t.abs() as f32).max(f32::MIN_POSITIVE);
    let e = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
    2f64.powi(e - 23)
}

/// The documented bound of `op` with `flags` on f32, if it is an approximate instruction.
pub fn bound_of(op: Op, flags: u32) -> Option<Bound> {
    let approx = flags & fl::APPROX != 0;
    Some(match op {
        Op::Rcp if approx => Bound::Ulps(1.0),
        Op::Ex2 => Bound::Ulps(2.0),
        Op::Div if flags & (fl::APPROX | fl::FULL) != 0 => Bound::Ulps(2.0),
        Op::Sqrt if approx => Bound::Relative(2f64.powi(-23)),
        Op::Rsqrt => Bound::Relative(2f64.powf(-22.9)),
        Op::Tanh => Bound::Relative(2f64.powi(-11)),
        Op::Lg2 => Bound::Absolute(2f64.powf(-22.6)),
        Op::Sin | Op::Cos => Bound::Absolute(2f64.powf(-20.9)),
        _ => return None,
    })
}

/// splitmix64: a cheap, well-mixed hash of the instruction and its inputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deviation in [-1, 1] for these inputs: half of the inputs get -1 or +1 (the edge of the
/// bound), the rest spread uniformly.
fn deviation(op: Op, a: u32, b: u32) -> f64 {
    let h = mix(((op as u64) << 56) ^ ((b as u64) << 32) ^ a as u64);
    let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
    if h & 2 == 0 {
        sign
    } else {
        sign * ((h >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// The f32 result of an approximate instruction in envelope mode: `t` is the true value
/// (computed in f64 from the instruction's f32 inputs `a`, `b`), `exact` the bits exact mode
/// returns. Returns bits within `bound` of `t`.
pub fn perturb(op: Op, flags: u32, bound: Bound, a: u32, b: u32, t: f64, exact: u32) -> u32 {
    let e = f32::from_bits(exact);
    if !t.is_finite() || t == 0.0 || !e.is_finite() || e == 0.0 {
        return exact;
    }
    let w = bound.width(t);
    let mut c = (t + deviation(op, a, b) * w) as f32;
    // tanh, sin and cos never leave [-1, 1]
    if matches!(op, Op::Tanh | Op::Sin | Op::Cos) {
        c = c.clamp(-1.0, 1.0);
    }
    // the f32 rounding may carry the value past the bound: step back toward t; the correctly
    // rounded value is the last resort (an absolute bound can be narrower than an ulp)
    while (c as f64 - t).abs() > w && c.to_bits() != exact {
        c = step_toward(c, t);
    }
    if c == 0.0 || !c.is_finite() {
        return exact;
    }
    if flags & fl::FTZ != 0 {
        c = fp::ftz32(c);
    }
    c.to_bits()
}

/// The neighbour of `c` one ulp closer to `t`.
fn step_toward(c: f32, t: f64) -> f32 {
    let bits = c.to_bits();
    let away = (c as f64).abs() > t.abs() && (c >= 0.0) == (t >= 0.0);
    // same sign and larger magnitude: shrink; otherwise move toward t through the number line
    if away {
        f32::from_bits(bits - 1)
    } else if (c as f64) < t {
        if c >= 0.0 {
            f32::from_bits(bits + 1)
        } else {
            f32::from_bits(bits - 1)
        }
    } else if c > 0.0 {
        f32::from_bits(bits - 1)
    } else {
        f32::from_bits(bits + 1)
    }
}

/// The true value of a unary approximate instruction on f32 input bits `a` (flushed first
/// under `.ftz`), in f64. `None` where the envelope does not apply (sin/cos beyond 100 pi).
pub fn true_unary(op: Op, flags: u32, a: u32) -> Option<f64> {
    let mut x = f32::from_bits(a);
    if flags & fl::FTZ != 0 {
        x = fp::ftz32(x);
    }
    let x = x as f64;
    Some(match op {
        Op::Rcp => 1.0 / x,
        Op::Ex2 => x.exp2(),
        Op::Sqrt => x.sqrt(),
        Op::Rsqrt => 1.0 / x.sqrt(),
        Op::Tanh => x.tanh(),
        Op::Lg2 => x.log2(),
        Op::Sin | Op::Cos if x.abs() > 100.0 * std::f64::consts::PI => return None,
        Op::Sin => x.sin(),
        Op::Cos => x.cos(),
        _ => return None,
    })
}

/// The true value of `div.approx/full.f32 a / b`, where the 2-ulp bound holds (|b| in
/// [2^-126, 2^126]).
pub fn true_div(flags: u32, a: u32, b: u32) -> Option<f64> {
    let (mut x, mut y) = (f32::from_bits(a), f32::from_bits(b));
    if flags & fl::FTZ != 0 {
        x = fp::ftz32(x);
        y = fp::ftz32(y);
    }
    let ay = y.abs() as f64;
    if !(2f64.powi(-126)..=2f64.powi(126)).contains(&ay) {
        return None;
    }
    Some(x as f64 / y as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unary approximate op stays within its bound over many inputs, and hits the bound's
    /// edge region for some.
    #[test]
    fn stays_inside_and_reaches_the_bound() {
        let ops = [Op::Ex2, Op::Rsqrt, Op::Tanh, Op::Lg2, Op::Sin, Op::Cos];
        for op in ops {
            let bound = bound_of(op, fl::APPROX).unwrap();
            let mut widest: f64 = 0.0;
            for k in 1..4000u32 {
                let x = 0.37f32 + k as f32 * 0.0123;
                let t = true_unary(op, fl::APPROX, x.to_bits()).unwrap();
                let exact = (t as f32).to_bits();
                let r = f32::from_bits(perturb(op, fl::APPROX, bound, x.to_bits(), 0, t, exact));
                let w = bound.width(t);
                // (the correctly rounded value where the bound is narrower than the f32 spacing)
                let ok = (r as f64 - t).abs() <= w || r.to_bits() == exact;
                assert!(ok, "{op:?}({x}) = {r}, true {t}, bound {w}");
                widest = widest.max((r as f64 - t).abs() / w);
            }
            assert!(widest > 0.9, "{op:?}: largest deviation only {widest} of the bound");
        }
    }

    #[test]
    fn deterministic_and_specials_exact() {
        let b = bound_of(Op::Ex2, fl::APPROX).unwrap();
        let t = 1.5f64.exp2();
        let x = 1.5f32.to_bits();
        assert_eq!(
            perturb(Op::Ex2, 0, b, x, 0, t, (t as f32).to_bits()),
            perturb(Op::Ex2, 0, b, x, 0, t, (t as f32).to_bits())
        );
        assert_eq!(perturb(Op::Ex2, 0, b, 0, 0, f64::INFINITY, f32::INFINITY.to_bits()), f32::INFINITY.to_bits());
        assert_eq!(perturb(Op::Tanh, 0, b, 0, 0, 0.0, 0), 0);
    }
}
