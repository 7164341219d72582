//! Per-lane arithmetic: every non-memory, non-collective instruction, as pure functions over the
//! raw register bits. The executor hoists the type dispatch out of the lane loop where it matters.
use super::fp::{self, Fmt};
use super::ir::*;

/// Extends a `ty`-typed value to the 64-bit register image: sign-extension for signed types,
/// zero-extension otherwise.
#[inline(always)]
pub fn ext(ty: Ty, v: u64) -> u64 {
    match ty {
        Ty::S8 => v as u8 as i8 as i64 as u64,
        Ty::S16 => v as u16 as i16 as i64 as u64,
        Ty::S32 => v as u32 as i32 as i64 as u64,
        Ty::S64 => v,
        Ty::Pred => v & 1,
        _ => v & ty.mask(),
    }
}

#[inline(always)]
fn sx(ty: Ty, v: u64) -> i64 {
    ext_signed(ty.bits(), v)
}
#[inline(always)]
fn ext_signed(bits: u32, v: u64) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

fn fmt_of(ty: Ty) -> Fmt {
    match ty {
        Ty::F16 | Ty::F16x2 => Fmt::F16,
        Ty::BF16 | Ty::BF16x2 => Fmt::BF16,
        _ => Fmt::F32,
    }
}

#[inline(always)]
fn to_f(fmt: Fmt, b: u64) -> f64 {
    match fmt {
        Fmt::F32 => f32::from_bits(b as u32) as f64,
        Fmt::F16 => fp::f16_to_f64(b),
        Fmt::BF16 => fp::bf16_to_f64(b),
    }
}

/// Applies `f` to each 16-bit element of a packed x2 value (or the single element).
#[inline(always)]
fn packed(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(u64, u64, u64) -> u64) -> u64 {
    match ty {
        Ty::F16x2 | Ty::BF16x2 => {
            let lo = f(a & 0xffff, b & 0xffff, c & 0xffff) & 0xffff;
            let hi = f((a >> 16) & 0xffff, (b >> 16) & 0xffff, (c >> 16) & 0xffff) & 0xffff;
            lo | (hi << 16)
        }
        _ => f(a, b, c),
    }
}

fn flush_in(ty: Ty, flags: u32, b: u64) -> f64 {
    if ty == Ty::F32 && flags & fl::FTZ != 0 {
        fp::ftz32(f32::from_bits(b as u32)) as f64
    } else {
        to_f(fmt_of(ty), b)
    }
}

/// Post-processing of a float result in a narrow format: .ftz (f32), .sat, .relu.
fn finish(ty: Ty, flags: u32, bits: u32) -> u64 {
    let fmt = fmt_of(ty);
    let mut b = bits;
    if ty == Ty::F32 && flags & fl::FTZ != 0 {
        b = fp::ftz32(f32::from_bits(b)).to_bits();
    }
    if flags & fl::SAT != 0 {
        let v = fmt.to_f64(b);
        b = fmt.rn(fp::sat01(v));
    }
    if flags & fl::RELU != 0 {
        let v = fmt.to_f64(b);
        if v < 0.0 {
            b = 0;
        }
    }
    b as u64
}

fn min_max(fmt: Fmt, a: u64, b: u64, is_max: bool, nan_prop: bool) -> u64 {
    let (x, y) = (to_f(fmt, a), to_f(fmt, b));
    let nan = fmt.nan() as u64;
    if x.is_nan() || y.is_nan() {
        if nan_prop || (x.is_nan() && y.is_nan()) {
            return nan;
        }
        return if x.is_nan() { b } else { a };
    }
    if x == y {
        // -0 < +0 for min/max
        let xneg = x.is_sign_negative();
        let yneg = y.is_sign_negative();
        return if is_max {
            if xneg {
                b
            } else {
                a
            }
        } else if xneg {
            a
        } else if yneg {
            b
        } else {
            a
        };
    }
    if (x < y) != is_max {
        a
    } else {
        b
    }
}

/// Floating binary op (add/sub/mul/div/min/max/copysign) for f16/bf16/f32 (+x2) and f64.
pub fn fbin(op: Op, ty: Ty, rnd: Rnd, flags: u32, a: u64, b: u64) -> u64 {
    if ty == Ty::F64 {
        let (x, y) = (f64::from_bits(a), f64::from_bits(b));
        let r = match op {
            Op::Add => fp::add64(x, y, rnd),
            Op::Sub => fp::add64(x, -y, rnd),
            Op::Mul => fp::mul64(x, y, rnd),
            Op::Div => fp::div64(x, y, rnd),
            Op::Min | Op::Max => return min_max64(x, y, op == Op::Max, flags & fl::NAN != 0),
            Op::Copysign => y.copysign(x),
            _ => f64::NAN,
        };
        let r = if flags & fl::SAT != 0 { fp::sat01(r) } else { r };
        return r.to_bits();
    }
    let fmt = fmt_of(ty);
    packed(ty, a, b, 0, |a, b, _| {
        let (x, y) = (flush_in(ty, flags, a), flush_in(ty, flags, b));
        let bits = match op {
            Op::Add => fp::add_n(x, y, rnd, fmt),
            Op::Sub => fp::add_n(x, -y, rnd, fmt),
            Op::Mul => fp::mul_n(x, y, rnd, fmt),
            Op::Div => {
                if flags & fl::APPROX != 0
                    && ty == Ty::F32
                    && y.abs() > 2f64.powi(126)
                    && y.abs() < 2f64.powi(128)
                    && x.is_finite()
                {
                    // ISA: div.approx.f32 computes a * (1/b); for 2^126 < |b| < 2^128 it gives 0
                    fmt.rn(0.0f64.copysign(x) * y.signum())
                } else if flags & (fl::APPROX | fl::FULL) != 0 {
                    fmt.rn(x / y)
                } else {
                    fp::div_n(x, y, rnd, fmt)
                }
            }
            Op::Min | Op::Max => {
                let (a2, b2) = (fmt.rn(x) as u64, fmt.rn(y) as u64);
                let (a2, b2) = if ty == Ty::F32 && flags & fl::FTZ == 0 { (a, b) } else { (a2, b2) };
                let r = min_max(fmt, a2, b2, op == Op::Max, flags & fl::NAN != 0) as u32;
                return finish(ty, flags & !fl::SAT, r);
            }
            Op::Copysign => fmt.rn(y.copysign(x)),
            _ => fmt.nan(),
        };
        finish(ty, flags, bits)
    })
}

fn min_max64(x: f64, y: f64, is_max: bool, nan_prop: bool) -> u64 {
    if x.is_nan() || y.is_nan() {
        if nan_prop || (x.is_nan() && y.is_nan()) {
            return f64::NAN.to_bits();
        }
        return if x.is_nan() { y.to_bits() } else { x.to_bits() };
    }
    if x == y {
        let r = if is_max {
            if x.is_sign_negative() {
                y
            } else {
                x
            }
        } else if x.is_sign_negative() {
            x
        } else {
            y
        };
        return r.to_bits();
    }
    (if (x < y) != is_max { x } else { y }).to_bits()
}

pub fn ffma(ty: Ty, rnd: Rnd, flags: u32, a: u64, b: u64, c: u64) -> u64 {
    if ty == Ty::F64 {
        let r = fp::fma64(f64::from_bits(a), f64::from_bits(b), f64::from_bits(c), rnd);
        let r = if flags & fl::SAT != 0 { fp::sat01(r) } else { r };
        return r.to_bits();
    }
    let fmt = fmt_of(ty);
    packed(ty, a, b, c, |a, b, c| {
        let bits = fp::fma_n(flush_in(ty, flags, a), flush_in(ty, flags, b), flush_in(ty, flags, c), rnd, fmt);
        finish(ty, flags, bits)
    })
}

/// Integer binary ops.
pub fn ibin(op: Op, ty: Ty, flags: u32, sub24: bool, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let signed = ty.is_signed();
    let m = ty.mask();
    let r: u64 = match op {
        Op::Add => {
            if flags & fl::SAT != 0 && ty == Ty::S32 {
                (a as i32).saturating_add(b as i32) as i64 as u64
            } else {
                a.wrapping_add(b)
            }
        }
        Op::Sub => {
            if flags & fl::SAT != 0 && ty == Ty::S32 {
                (a as i32).saturating_sub(b as i32) as i64 as u64
            } else {
                a.wrapping_sub(b)
            }
        }
        Op::Mul => {
            if sub24 {
                let (x, y) = if signed {
                    (ext_signed(24, a) as i128, ext_signed(24, b) as i128)
                } else {
                    ((a & 0xffffff) as i128, (b & 0xffffff) as i128)
                };
                let p = x * y;
                return ext(ty, if flags & fl::HI != 0 { (p >> 16) as u64 } else { p as u64 });
            }
            let (x, y) =
                if signed { (sx(ty, a) as i128, sx(ty, b) as i128) } else { ((a & m) as i128, (b & m) as i128) };
            let p = x.wrapping_mul(y);
            if flags & fl::WIDE != 0 {
                let wt = match ty {
                    Ty::S16 => Ty::S32,
                    Ty::U16 => Ty::U32,
                    Ty::S32 => Ty::S64,
                    _ => Ty::U64,
                };
                return ext(wt, p as u64);
            }
            if flags & fl::HI != 0 {
                (p >> bits) as u64
            } else {
                p as u64
            }
        }
        Op::Div => {
            if b & m == 0 {
                m
            } else if signed {
                sx(ty, a).wrapping_div(sx(ty, b)) as u64
            } else {
                (a & m) / (b & m)
            }
        }
        Op::Rem => {
            if b & m == 0 {
                a
            } else if signed {
                sx(ty, a).wrapping_rem(sx(ty, b)) as u64
            } else {
                (a & m) % (b & m)
            }
        }
        Op::Min => {
            if signed {
                sx(ty, a).min(sx(ty, b)) as u64
            } else {
                (a & m).min(b & m)
            }
        }
        Op::Max => {
            if signed {
                sx(ty, a).max(sx(ty, b)) as u64
            } else {
                (a & m).max(b & m)
            }
        }
        Op::And => a & b,
        Op::Or => a | b,
        Op::Xor => a ^ b,
        Op::Shl => {
            let s = b as u32;
            if s >= bits {
                0
            } else {
                a << s
            }
        }
        Op::Shr => {
            let s = (b as u32).min(bits);
            if signed {
                let v = sx(ty, a);
                (if s >= bits { v >> (bits - 1).min(63) >> 1 } else { v >> s }) as u64
            } else if s >= bits {
                0
            } else {
                (a & m) >> s
            }
        }
        _ => 0,
    };
    ext(ty, r)
}

/// add.cc/addc/sub.cc/subc on 32/64-bit: returns (result, carry-out).
pub fn add_carry(sub: bool, ty: Ty, a: u64, b: u64, cin: u64) -> (u64, u64) {
    let m = ty.mask() as u128;
    let (x, y, c) = ((a as u128) & m, (b as u128) & m, (cin & 1) as u128);
    if sub {
        let r = x.wrapping_sub(y).wrapping_sub(c);
        let borrow = (y + c > x) as u64;
        (ext(ty, r as u64), borrow)
    } else {
        let r = x + y + c;
        (ext(ty, r as u64), (r >> ty.bits()) as u64 & 1)
    }
}

pub fn bfe(ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    let w = ty.bits();
    let pos = (b & 0xff) as u32;
    let len = (c & 0xff) as u32;
    let msb = w - 1;
    let sbit = if ty.is_signed() && len > 0 { (a >> (pos + len - 1).min(msb)) & 1 } else { 0 };
    let mut d = 0u64;
    for i in 0..w {
        let bit = if i < len && pos + i <= msb { (a >> (pos + i)) & 1 } else { sbit };
        d |= bit << i;
    }
    ext(ty, d)
}

pub fn bfi(ty: Ty, f: u64, b: u64, c: u64, d: u64) -> u64 {
    let w = ty.bits();
    let pos = (c & 0xff) as u32;
    let len = (d & 0xff) as u32;
    let mut r = b;
    for i in 0..len {
        if pos + i >= w {
            break;
        }
        let bit = (f >> i) & 1;
        r = (r & !(1u64 << (pos + i))) | (bit << (pos + i));
    }
    ext(ty, r)
}

pub fn prmt(mode: u8, a: u64, b: u64, c: u64) -> u64 {
    let src = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let byte = |i: u64| (src >> (8 * (i & 7))) & 0xff;
    if mode == 0 {
        let mut d = 0u64;
        for i in 0..4 {
            let sel = (c >> (4 * i)) & 0xf;
            let v = byte(sel & 7);
            let v = if sel & 8 != 0 {
                if v & 0x80 != 0 {
                    0xff
                } else {
                    0
                }
            } else {
                v
            };
            d |= v << (8 * i);
        }
        return d;
    }
    let s = (c & 3) as usize;
    // byte indices for d.b0..d.b3
    let tab: [[u64; 4]; 4] = match mode {
        sub::PRMT_F4E => [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]],
        sub::PRMT_B4E => [[0, 7, 6, 5], [1, 0, 7, 6], [2, 1, 0, 7], [3, 2, 1, 0]],
        sub::PRMT_RC8 => [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]],
        sub::PRMT_ECL => [[0, 1, 2, 3], [1, 1, 2, 3], [2, 2, 2, 3], [3, 3, 3, 3]],
        sub::PRMT_ECR => [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 2, 2], [0, 1, 2, 3]],
        _ => [[0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]],
    };
    let mut d = 0u64;
    for (i, &sel) in tab[s].iter().enumerate() {
        d |= byte(sel) << (8 * i);
    }
    d
}

pub fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u64;
    for i in 0..8 {
        if lut >> i & 1 != 0 {
            let ta = if i & 4 != 0 { a } else { !a };
            let tb = if i & 2 != 0 { b } else { !b };
            let tc = if i & 1 != 0 { c } else { !c };
            r |= ta & tb & tc;
        }
    }
    r & 0xffff_ffff
}

pub fn dp4a(ty: Ty, ty2: Ty, a: u64, b: u64, c: u64) -> u64 {
    let mut acc = c as u32;
    for i in 0..4 {
        let x = (a >> (8 * i)) as u8;
        let y = (b >> (8 * i)) as u8;
        let xv = if ty.is_signed() { x as i8 as i32 } else { x as i32 };
        let yv = if ty2.is_signed() { y as i8 as i32 } else { y as i32 };
        acc = acc.wrapping_add(xv.wrapping_mul(yv) as u32);
    }
    acc as i32 as i64 as u64
}

pub fn dp2a(ty: Ty, ty2: Ty, hi: bool, a: u64, b: u64, c: u64) -> u64 {
    let mut acc = c as u32;
    for i in 0..2 {
        let x = (a >> (16 * i)) as u16;
        let y = (b >> (8 * (i + if hi { 2 } else { 0 }))) as u8;
        let xv = if ty.is_signed() { x as i16 as i32 } else { x as i32 };
        let yv = if ty2.is_signed() { y as i8 as i32 } else { y as i32 };
        acc = acc.wrapping_add(xv.wrapping_mul(yv) as u32);
    }
    acc as i32 as i64 as u64
}

/// Unary ops: neg abs not cnot popc clz brev bfind and the float functions.
pub fn unary(op: Op, ty: Ty, rnd: Rnd, flags: u32, a: u64) -> u64 {
    if ty.is_float() {
        return funary(op, ty, rnd, flags, a);
    }
    let w = ty.bits();
    let m = ty.mask();
    match op {
        Op::Neg => ext(ty, a.wrapping_neg()),
        Op::Abs => ext(ty, sx(ty, a).unsigned_abs()),
        Op::Not => {
            if ty == Ty::Pred {
                (!a) & 1
            } else {
                ext(ty, !a)
            }
        }
        Op::Cnot => (a & m == 0) as u64,
        Op::Popc => (a & m).count_ones() as u64,
        Op::Clz => ((a & m).leading_zeros() - (64 - w)) as u64,
        Op::Brev => ext(ty, (a & m).reverse_bits() >> (64 - w)),
        Op::Bfind => {
            let v = a & m;
            let pos: Option<u32> = if ty.is_signed() {
                let neg = (v >> (w - 1)) & 1 == 1;
                let x = if neg { !v & m } else { v };
                if x == 0 {
                    None
                } else {
                    Some(63 - x.leading_zeros())
                }
            } else if v == 0 {
                None
            } else {
                Some(63 - v.leading_zeros())
            };
            match pos {
                None => 0xffff_ffff,
                Some(p) => {
                    if flags & fl::SHIFTAMT != 0 {
                        (w - 1 - p) as u64
                    } else {
                        p as u64
                    }
                }
            }
        }
        _ => 0,
    }
}

fn funary(op: Op, ty: Ty, rnd: Rnd, flags: u32, a: u64) -> u64 {
    if ty == Ty::F64 {
        let x = f64::from_bits(a);
        let r = match op {
            Op::Neg => -x,
            Op::Abs => x.abs(),
            Op::Sqrt => fp::sqrt64(x, rnd),
            Op::Rcp => {
                if flags & fl::APPROX != 0 {
                    1.0 / x
                } else {
                    fp::div64(1.0, x, rnd)
                }
            }
            Op::Rsqrt => 1.0 / x.sqrt(),
            Op::Ex2 => x.exp2(),
            Op::Lg2 => x.log2(),
            Op::Sin => x.sin(),
            Op::Cos => x.cos(),
            Op::Tanh => x.tanh(),
            _ => f64::NAN,
        };
        return r.to_bits();
    }
    let fmt = fmt_of(ty);
    packed(ty, a, 0, 0, |a, _, _| {
        let sign = if fmt == Fmt::F32 { 1u64 << 31 } else { 1u64 << 15 };
        match op {
            Op::Neg => {
                return if ty == Ty::F32 && flags & fl::FTZ != 0 {
                    (-fp::ftz32(f32::from_bits(a as u32))).to_bits() as u64
                } else {
                    a ^ sign
                }
            }
            Op::Abs => {
                return if ty == Ty::F32 && flags & fl::FTZ != 0 {
                    fp::ftz32(f32::from_bits(a as u32)).abs().to_bits() as u64
                } else {
                    a & !sign
                }
            }
            _ => {}
        }
        let x = flush_in(ty, flags, a);
        let bits = match op {
            Op::Sqrt => {
                if flags & fl::APPROX != 0 {
                    fmt.rn(x.sqrt())
                } else {
                    fp::sqrt_n(x, rnd, fmt)
                }
            }
            Op::Rcp => {
                if flags & fl::APPROX != 0 {
                    fmt.rn(fp::rcp_approx(x as f32) as f64)
                } else {
                    fp::div_n(1.0, x, rnd, fmt)
                }
            }
            Op::Rsqrt => fmt.rn(fp::rsqrt(x as f32) as f64),
            Op::Ex2 => fmt.rn((x).exp2()),
            Op::Lg2 => fmt.rn(fp::lg2(x as f32) as f64),
            Op::Sin => fmt.rn(fp::sin(x as f32) as f64),
            Op::Cos => fmt.rn(fp::cos(x as f32) as f64),
            Op::Tanh => fmt.rn(x.tanh()),
            _ => fmt.nan(),
        };
        finish(ty, flags, bits)
    })
}

pub fn testp(ty: Ty, kind: u8, a: u64) -> u64 {
    let x = if ty == Ty::F64 { f64::from_bits(a) } else { f32::from_bits(a as u32) as f64 };
    let sub = if ty == Ty::F64 { x.is_subnormal() } else { f32::from_bits(a as u32).is_subnormal() };
    (match kind {
        0 => x.is_finite(),
        1 => x.is_infinite(),
        2 => !x.is_nan(),
        3 => x.is_nan(),
        4 => x.is_normal() && !sub,
        _ => sub,
    }) as u64
}

/// Comparison of setp/set/slct.
pub fn compare(cmp: Cmp, ty: Ty, flags: u32, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = match ty {
            Ty::F64 => (f64::from_bits(a), f64::from_bits(b)),
            _ => (flush_in(ty, flags, a), flush_in(ty, flags, b)),
        };
        let unord = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !unord && x == y,
            Cmp::Ne => !unord && x != y,
            Cmp::Lt => !unord && x < y,
            Cmp::Le => !unord && x <= y,
            Cmp::Gt => !unord && x > y,
            Cmp::Ge => !unord && x >= y,
            Cmp::Equ => unord || x == y,
            Cmp::Neu => unord || x != y,
            Cmp::Ltu => unord || x < y,
            Cmp::Leu => unord || x <= y,
            Cmp::Gtu => unord || x > y,
            Cmp::Geu => unord || x >= y,
            Cmp::Num => !unord,
            Cmp::Nan => unord,
            _ => false,
        };
    }
    let m = ty.mask();
    let (ua, ub) = (a & m, b & m);
    let (sa, sb) = (sx(ty, a), sx(ty, b));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt => {
            if signed {
                sa < sb
            } else {
                ua < ub
            }
        }
        Cmp::Le => {
            if signed {
                sa <= sb
            } else {
                ua <= ub
            }
        }
        Cmp::Gt => {
            if signed {
                sa > sb
            } else {
                ua > ub
            }
        }
        Cmp::Ge => {
            if signed {
                sa >= sb
            } else {
                ua >= ub
            }
        }
        Cmp::Lo => ua < ub,
        Cmp::Ls => ua <= ub,
        Cmp::Hi => ua > ub,
        Cmp::Hs => ua >= ub,
        _ => false,
    }
}

/// cvt between any two scalar types (not the packing forms).
pub fn cvt(dt: Ty, st: Ty, rnd: Rnd, flags: u32, a: u64) -> u64 {
    let sat = flags & fl::SAT != 0;
    let ftz = flags & fl::FTZ != 0;
    if !st.is_float() && !dt.is_float() {
        // integer -> integer
        let v: i128 = if st.is_signed() { sx(st, a) as i128 } else { (a & st.mask()) as i128 };
        if sat {
            let (lo, hi): (i128, i128) = if dt.is_signed() {
                (-(1i128 << (dt.bits() - 1)), (1i128 << (dt.bits() - 1)) - 1)
            } else {
                (0, (1i128 << dt.bits()) - 1)
            };
            return ext(dt, v.clamp(lo, hi) as u64);
        }
        return ext(dt, v as u64);
    }
    if st.is_float() && !dt.is_float() {
        let x = src_float(st, ftz, a);
        if x.is_nan() {
            // ISA (cvt, float to integer): NaN becomes 0, except from an f64 source or into a
            // 64-bit destination, where it becomes the most negative value (bit pattern 1 << (n-1))
            let v = if st == Ty::F64 || dt.bits() == 64 { 1u64 << (dt.bits() - 1) } else { 0 };
            return ext(dt, v);
        }
        return ext(dt, fp::f2i(x, rnd, dt.bits(), dt.is_signed()));
    }
    if !st.is_float() && dt.is_float() {
        let rnd = if rnd == Rnd::None { Rnd::Rn } else { rnd };
        if rnd == Rnd::Rn && flags == 0 && matches!(dt, Ty::F32 | Ty::F64) {
            // Rust's integer -> float `as` is round-to-nearest-even
            return match (dt, st.is_signed()) {
                (Ty::F32, true) => (sx(st, a) as f32).to_bits() as u64,
                (Ty::F32, false) => ((a & st.mask()) as f32).to_bits() as u64,
                (_, true) => (sx(st, a) as f64).to_bits(),
                (_, false) => ((a & st.mask()) as f64).to_bits(),
            };
        }
        let v: i128 = if st.is_signed() { sx(st, a) as i128 } else { (a & st.mask()) as i128 };
        if dt == Ty::F64 {
            let r = fp::i2f64(v, rnd);
            return (if sat { fp::sat01(r) } else { r }).to_bits();
        }
        let fmt = fmt_of(dt);
        let b = fp::i2f(v, rnd, fmt);
        return finish(dt, flags, b);
    }
    // float -> float
    if flags == 0 && matches!(rnd, Rnd::None | Rnd::Rn) {
        // fast paths (single correct rounding): f32 -> f16 in hardware, widenings exact
        match (dt, st) {
            (Ty::F16, Ty::F32) => return half::f16::from_f32(f32::from_bits(a as u32)).to_bits() as u64,
            (Ty::F32, Ty::F16) => return fp::f16_to_f32(a).to_bits() as u64,
            (Ty::F64, Ty::F32) => return (f32::from_bits(a as u32) as f64).to_bits(),
            (Ty::F32, Ty::F64) => return (f64::from_bits(a) as f32).to_bits() as u64,
            _ => {}
        }
    }
    let x = src_float(st, ftz, a);
    let int_round = matches!(rnd, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi);
    let x = if int_round { fp::round_int(x, rnd) } else { x };
    let rnd = if int_round || rnd == Rnd::None { Rnd::Rn } else { rnd };
    if dt == Ty::F64 {
        let r = if sat { fp::sat01(x) } else { x };
        return r.to_bits();
    }
    let fmt = fmt_of(dt);
    let mut b = fp::round_pair(x, 0.0, rnd, fmt);
    if flags & fl::SATFINITE != 0 {
        let v = fmt.to_f64(b);
        if v.is_infinite() {
            b = fmt.rn(if v > 0.0 { max_finite(fmt) } else { -max_finite(fmt) });
        }
    }
    if flags & fl::RELU != 0 {
        let v = fmt.to_f64(b);
        if v < 0.0 || (v == 0.0 && v.is_sign_negative()) {
            b = 0;
        } else if v.is_nan() {
            b = fmt.nan();
        }
    }
    finish(dt, flags & !fl::RELU, b)
}

fn max_finite(fmt: Fmt) -> f64 {
    match fmt {
        Fmt::F32 => f32::MAX as f64,
        Fmt::F16 => 65504.0,
        Fmt::BF16 => half::bf16::MAX.to_f64(),
    }
}

fn src_float(st: Ty, ftz: bool, a: u64) -> f64 {
    match st {
        Ty::F64 => f64::from_bits(a),
        Ty::F32 => {
            let f = f32::from_bits(a as u32);
            (if ftz { fp::ftz32(f) } else { f }) as f64
        }
        Ty::F16 => fp::f16_to_f64(a),
        Ty::BF16 => fp::bf16_to_f64(a),
        _ => f32::from_bits(a as u32) as f64,
    }
}

/// cvt.{rn,rz,...}{.relu}{.satfinite}.{f16x2,bf16x2}.f32 d, a, b: a -> high half, b -> low.
pub fn cvt_pack(dt: Ty, rnd: Rnd, flags: u32, a: u64, b: u64) -> u64 {
    let et = if dt == Ty::F16x2 { Ty::F16 } else { Ty::BF16 };
    let hi = cvt(et, Ty::F32, rnd, flags, a) & 0xffff;
    let lo = cvt(et, Ty::F32, rnd, flags, b) & 0xffff;
    (hi << 16) | lo
}

/// Atomic read-modify-write: returns the new value for op applied to `old`.
/// `atom_apply` for global memory: `atom.add.f32` there flushes subnormal inputs and results to
/// sign-preserving zero (ISA, atom: "atom.add.f32 on global memory flushes subnormal inputs and
/// results to sign-preserving zero"); shared-memory atomics keep subnormals.
pub fn atom_apply_global(op: u8, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    if op == sub::A_ADD && ty == Ty::F32 {
        let (x, y) = (fp::ftz32(f32::from_bits(old as u32)), fp::ftz32(f32::from_bits(b as u32)));
        return fp::ftz32(x + y).to_bits() as u64;
    }
    atom_apply(op, ty, old, b, c)
}

pub fn atom_apply(op: u8, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let m = ty.mask();
    match op {
        sub::A_ADD => match ty {
            Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64,
            Ty::F64 => (f64::from_bits(old) + f64::from_bits(b)).to_bits(),
            Ty::F16 | Ty::F16x2 | Ty::BF16 | Ty::BF16x2 => fbin(Op::Add, ty, Rnd::Rn, 0, old, b),
            _ => old.wrapping_add(b) & m,
        },
        sub::A_MIN | sub::A_MAX => {
            let is_max = op == sub::A_MAX;
            if ty.is_float() {
                return fbin(if is_max { Op::Max } else { Op::Min }, ty, Rnd::None, 0, old, b);
            }
            let r = ibin(if is_max { Op::Max } else { Op::Min }, ty, 0, false, old, b);
            r & m
        }
        sub::A_INC => {
            if (old & m) >= (b & m) {
                0
            } else {
                (old + 1) & m
            }
        }
        sub::A_DEC => {
            if (old & m) == 0 || (old & m) > (b & m) {
                b & m
            } else {
                (old - 1) & m
            }
        }
        sub::A_CAS => {
            if (old & m) == (b & m) {
                c & m
            } else {
                old & m
            }
        }
        sub::A_EXCH => b & m,
        sub::A_AND => old & b & m,
        sub::A_OR => (old | b) & m,
        sub::A_XOR => (old ^ b) & m,
        _ => old,
    }
}
