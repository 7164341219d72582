//! Execution of one non-control instruction for the executing lanes of a warp: a dispatcher on
//! the opcode and one function per opcode family. Control flow (branches, calls, barriers,
//! exits) is the scheduler's ([`super`]); memory and warp-wide instructions live in
//! [`crate::mem`] and [`crate::warp`].

use super::*;

/// Register-file offsets (slot * 32) of an instruction's destination and first three sources,
/// and the lanes it runs on: what the per-lane `map` loops need.
#[derive(Clone, Copy)]
struct Lanes {
    d: usize,
    a: usize,
    b: usize,
    c: usize,
    mask: u32,
}

/// `d = f(a)` for the lanes of `o.mask` (a plain loop when the whole warp runs: vectorises).
macro_rules! map1 {
    ($regs:ident, $o:ident, |$x:ident| $e:expr) => {{
        if $o.mask == FULL {
            for l in 0..32 {
                let $x = $regs[$o.a + l];
                $regs[$o.d + l] = $e;
            }
        } else {
            lanes!($o.mask, l, {
                let $x = $regs[$o.a + l];
                $regs[$o.d + l] = $e;
            });
        }
    }};
}

/// `d = f(a, b)` for the lanes of `o.mask`.
macro_rules! map2 {
    ($regs:ident, $o:ident, |$x:ident, $y:ident| $e:expr) => {{
        if $o.mask == FULL {
            for l in 0..32 {
                let $x = $regs[$o.a + l];
                let $y = $regs[$o.b + l];
                $regs[$o.d + l] = $e;
            }
        } else {
            lanes!($o.mask, l, {
                let $x = $regs[$o.a + l];
                let $y = $regs[$o.b + l];
                $regs[$o.d + l] = $e;
            });
        }
    }};
}

/// `d = f(a, b, c)` for the lanes of `o.mask`.
macro_rules! map3 {
    ($regs:ident, $o:ident, |$x:ident, $y:ident, $z:ident| $e:expr) => {{
        if $o.mask == FULL {
            for l in 0..32 {
                let $x = $regs[$o.a + l];
                let $y = $regs[$o.b + l];
                let $z = $regs[$o.c + l];
                $regs[$o.d + l] = $e;
            }
        } else {
            lanes!($o.mask, l, {
                let $x = $regs[$o.a + l];
                let $y = $regs[$o.b + l];
                let $z = $regs[$o.c + l];
                $regs[$o.d + l] = $e;
            });
        }
    }};
}

impl Block<'_, '_> {
    /// Executes one non-control instruction for the lanes in `mask`.
    pub(super) fn exec(&mut self, w: &mut Warp, i: &Inst, mask: u32, active: u32) -> Result<(), Error> {
        let envelope = self.l.opts.math == crate::arch::MathMode::Envelope;
        let o = Lanes {
            d: i.d[0] as usize * 32,
            a: i.s[0] as usize * 32,
            b: i.s[1] as usize * 32,
            c: i.s[2] as usize * 32,
            mask,
        };
        let regs = &mut w.regs;
        match i.op {
            Op::Nop | Op::Membar | Op::Prefetch => {}
            Op::Mov | Op::Pack | Op::Unpack => moves(regs, o, i),
            Op::ReadClock => {
                self.clock += 1;
                let t = self.c.warp_instructions;
                lanes!(mask, l, {
                    regs[o.d + l] = ext(i.ty, t);
                });
            }
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Rem
            | Op::Min
            | Op::Max
            | Op::And
            | Op::Or
            | Op::Xor
            | Op::Shl
            | Op::Shr
            | Op::Copysign => binary(regs, o, i, envelope),
            Op::Fma | Op::Mad => fma(regs, o, i),
            Op::Neg
            | Op::Abs
            | Op::Not
            | Op::Cnot
            | Op::Popc
            | Op::Clz
            | Op::Brev
            | Op::Bfind
            | Op::Rcp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Ex2
            | Op::Lg2
            | Op::Sin
            | Op::Cos
            | Op::Tanh
            | Op::Testp => unary(regs, o, i, envelope),
            Op::Sad | Op::Bfe | Op::Bfi | Op::Shf | Op::Prmt | Op::Dp4a | Op::Dp2a | Op::Lop3 | Op::Selp | Op::Slct => {
                bits(regs, o, i)
            }
            Op::Setp | Op::Set => compare(regs, o, i),
            Op::Cvt | Op::CvtPack | Op::Cvta | Op::CvtaTo => convert(regs, o, i),
            Op::Ld | Op::St | Op::Atom | Op::Red | Op::CpAsync | Op::CpAsyncCommit | Op::CpAsyncWait => {
                return self.mem_op(w, i, mask);
            }
            Op::Printf => return self.printf(w, i, mask),
            Op::Ldmatrix
            | Op::Stmatrix
            | Op::Mma
            | Op::Wmma
            | Op::Shfl
            | Op::Vote
            | Op::Match
            | Op::Redux
            | Op::Activemask
            | Op::BarWarp => {
                return self.warp_op(w, i, mask, active);
            }
            Op::Bra
            | Op::Call
            | Op::Ret
            | Op::Exit
            | Op::Bar
            | Op::BarRed
            | Op::Trap
            | Op::Elect
            | Op::Mapa
            | Op::ClusterBar
            | Op::SetMaxNReg
            | Op::FenceProxyAsync
            | Op::Mbar
            | Op::BulkTensor
            | Op::BulkGroup
            | Op::Wgmma => {
                unreachable!("control and Hopper instructions are handled by run_warp")
            }
        }
        Ok(())
    }
}

/// `mov`, vector pack and unpack.
fn moves(regs: &mut [u64], o: Lanes, i: &Inst) {
    let Lanes { d, a, mask, .. } = o;
    let ty = i.ty;
    match i.op {
        Op::Mov => {
            let m = if ty == Ty::Pred { 1 } else { ty.mask() };
            map1!(regs, o, |x| x & m)
        }
        Op::Pack => {
            let n = i.n as usize;
            let ew = ty.bits() / n as u32;
            let em = if ew >= 64 { u64::MAX } else { (1u64 << ew) - 1 };
            lanes!(mask, l, {
                let mut v = 0u64;
                for k in 0..n {
                    v |= (regs[i.s[k] as usize * 32 + l] & em) << (ew * k as u32);
                }
                regs[d + l] = v;
            });
        }
        Op::Unpack => {
            let n = i.n as usize;
            let ew = ty.bits() / n as u32;
            let em = if ew >= 64 { u64::MAX } else { (1u64 << ew) - 1 };
            lanes!(mask, l, {
                let v = regs[a + l];
                for k in 0..n {
                    regs[i.d[k] as usize * 32 + l] = (v >> (ew * k as u32)) & em;
                }
            });
        }
        _ => unreachable!("`{:?}` is not handled by `moves`", i.op),
    }
}

/// Two-source arithmetic and logic. The guarded arms keep their order: float fast paths, then
/// the general float form, carries, integer fast paths, the general integer form.
fn binary(regs: &mut [u64], o: Lanes, i: &Inst, envelope: bool) {
    let Lanes { d, a, b, mask, .. } = o;
    let ty = i.ty;
    let plain_f32 = ty == Ty::F32 && i.flags & (fl::FTZ | fl::SAT) == 0 && matches!(i.rnd, Rnd::None | Rnd::Rn);
    match i.op {
        Op::Add | Op::Sub if plain_f32 => {
            let neg = if i.op == Op::Sub { 0x8000_0000u64 } else { 0 };
            map2!(regs, o, |x, y| (f32::from_bits(x as u32) + f32::from_bits((y ^ neg) as u32)).to_bits() as u64)
        }
        Op::Mul if plain_f32 => {
            map2!(regs, o, |x, y| (f32::from_bits(x as u32) * f32::from_bits(y as u32)).to_bits() as u64)
        }
        Op::Div if ty == Ty::F32 && envelope && crate::envelope::bound_of(i.op, i.flags).is_some() => {
            let (rnd, f) = (i.rnd, i.flags);
            let bound = crate::envelope::bound_of(i.op, f).unwrap_or(crate::envelope::Bound::Ulps(0.0));
            map2!(regs, o, |x, y| {
                let exact = alu::fbin(Op::Div, ty, rnd, f, x, y);
                match crate::envelope::true_div(f, x as u32, y as u32) {
                    Some(t) => crate::envelope::perturb(Op::Div, f, bound, x as u32, y as u32, t, exact as u32) as u64,
                    None => exact,
                }
            })
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Min | Op::Max | Op::Copysign if ty.is_float() => {
            let (op, rnd, f) = (i.op, i.rnd, i.flags);
            map2!(regs, o, |x, y| alu::fbin(op, ty, rnd, f, x, y))
        }
        Op::Add | Op::Sub if i.flags & (fl::CC | fl::CARRY_IN) != 0 => {
            let cc = i.d[1] as usize * 32;
            let use_cin = i.has(fl::CARRY_IN);
            lanes!(mask, l, {
                let cin = if use_cin { regs[cc + l] } else { 0 };
                let (r, cout) = alu::add_carry(i.op == Op::Sub, ty, regs[a + l], regs[b + l], cin);
                regs[d + l] = r;
                if i.has(fl::CC) {
                    regs[cc + l] = cout;
                }
            });
        }
        Op::Add if ty == Ty::S32 || ty == Ty::U32 || ty == Ty::B32 => {
            if i.has(fl::SAT) {
                map2!(regs, o, |x, y| alu::ibin(Op::Add, ty, i.flags, false, x, y))
            } else {
                map2!(regs, o, |x, y| ext(ty, (x as u32).wrapping_add(y as u32) as u64))
            }
        }
        Op::Add if ty == Ty::S64 || ty == Ty::U64 || ty == Ty::B64 => map2!(regs, o, |x, y| x.wrapping_add(y)),
        // fast paths of the most frequent integer forms
        Op::And | Op::Or | Op::Xor if ty != Ty::Pred => {
            let m = ty.mask();
            match i.op {
                Op::And => map2!(regs, o, |x, y| ext(ty, x & y & m)),
                Op::Or => map2!(regs, o, |x, y| ext(ty, (x | y) & m)),
                _ => map2!(regs, o, |x, y| ext(ty, (x ^ y) & m)),
            }
        }
        Op::Shl if ty.bits() == 32 => {
            map2!(regs, o, |x, y| if y as u32 >= 32 { 0 } else { ((x as u32) << (y as u32)) as u64 })
        }
        Op::Shr if ty == Ty::U32 || ty == Ty::B32 => {
            map2!(regs, o, |x, y| if y as u32 >= 32 { 0 } else { ((x as u32) >> (y as u32)) as u64 })
        }
        Op::Shl if ty.bits() == 64 => map2!(regs, o, |x, y| if y as u32 >= 64 { 0 } else { x << (y as u32) }),
        Op::Mul if i.flags & (fl::HI | fl::WIDE) == 0 && i.sub != 24 && (ty == Ty::S32 || ty == Ty::U32) => {
            map2!(regs, o, |x, y| ext(ty, (x as u32).wrapping_mul(y as u32) as u64))
        }
        Op::Mul if i.flags & fl::WIDE != 0 && ty == Ty::U32 => {
            map2!(regs, o, |x, y| (x as u32 as u64) * (y as u32 as u64))
        }
        Op::Mul if i.flags & fl::WIDE != 0 && ty == Ty::S32 => {
            map2!(regs, o, |x, y| ((x as u32 as i32 as i64) * (y as u32 as i32 as i64)) as u64)
        }
        Op::Sub if ty == Ty::S32 || ty == Ty::U32 || ty == Ty::B32 => {
            if i.has(fl::SAT) {
                map2!(regs, o, |x, y| alu::ibin(Op::Sub, ty, i.flags, false, x, y))
            } else {
                map2!(regs, o, |x, y| ext(ty, (x as u32).wrapping_sub(y as u32) as u64))
            }
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Rem
        | Op::Min
        | Op::Max
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::Shl
        | Op::Shr => {
            let (op, f, s24) = (i.op, i.flags, i.sub == 24);
            map2!(regs, o, |x, y| alu::ibin(op, ty, f, s24, x, y))
        }
        Op::Copysign => map2!(regs, o, |x, y| alu::fbin(Op::Copysign, Ty::F32, Rnd::None, 0, x, y)),
        _ => unreachable!("`{:?}` is not handled by `binary`", i.op),
    }
}

/// `fma` and `mad` (float, integer, wide, carry).
fn fma(regs: &mut [u64], o: Lanes, i: &Inst) {
    let Lanes { d, a, b, c, mask, .. } = o;
    let ty = i.ty;
    let plain_f32 = ty == Ty::F32 && i.flags & (fl::FTZ | fl::SAT) == 0 && matches!(i.rnd, Rnd::None | Rnd::Rn);
    match i.op {
        Op::Fma | Op::Mad if plain_f32 => map3!(regs, o, |x, y, z| {
            // the host's fused multiply-add is the correctly rounded one; NaN results take the
            // general form (the canonical NaN the GPU returns)
            let (x, y, z) = (f32::from_bits(x as u32), f32::from_bits(y as u32), f32::from_bits(z as u32));
            let r = x.mul_add(y, z);
            if r.is_nan() {
                crate::fp::fma_n(x as f64, y as f64, z as f64, Rnd::Rn, crate::fp::Fmt::F32) as u64
            } else {
                r.to_bits() as u64
            }
        }),
        Op::Fma => {
            let (rnd, f) = (i.rnd, i.flags);
            map3!(regs, o, |x, y, z| alu::ffma(ty, rnd, f, x, y, z))
        }
        Op::Mad => {
            if ty.is_float() {
                let (rnd, f) = (i.rnd, i.flags);
                map3!(regs, o, |x, y, z| alu::ffma(ty, rnd, f, x, y, z))
            } else if i.flags & (fl::CC | fl::CARRY_IN) != 0 {
                let cc = i.d[1] as usize * 32;
                let wide = i.has(fl::WIDE);
                lanes!(mask, l, {
                    let p =
                        alu::ibin(Op::Mul, ty, i.flags & (fl::HI | fl::WIDE), i.sub == 24, regs[a + l], regs[b + l]);
                    let rt = if wide { wide_of(ty) } else { ty };
                    let cin = if i.has(fl::CARRY_IN) { regs[cc + l] } else { 0 };
                    let (r, cout) = alu::add_carry(false, rt, p, regs[c + l], cin);
                    regs[d + l] = r;
                    if i.has(fl::CC) {
                        regs[cc + l] = cout;
                    }
                });
            } else {
                let f = i.flags;
                let s24 = i.sub == 24;
                let rt = if i.has(fl::WIDE) { wide_of(ty) } else { ty };
                if ty == Ty::S32 && f & (fl::HI | fl::WIDE | fl::SAT) == 0 && !s24
                    || (ty == Ty::U32 && f & (fl::HI | fl::WIDE) == 0 && !s24)
                {
                    map3!(regs, o, |x, y, z| ext(ty, (x as u32).wrapping_mul(y as u32).wrapping_add(z as u32) as u64))
                } else {
                    map3!(regs, o, |x, y, z| {
                        let p = alu::ibin(Op::Mul, ty, f & (fl::HI | fl::WIDE | fl::LO), s24, x, y);
                        if f & fl::SAT != 0 && ty == Ty::S32 {
                            ((p as i32 as i64) + (z as i32 as i64)).clamp(i32::MIN as i64, i32::MAX as i64) as u64
                        } else {
                            ext(rt, p.wrapping_add(z))
                        }
                    })
                }
            }
        }
        _ => unreachable!("`{:?}` is not handled by `fma`", i.op),
    }
}

/// One-source operations and `testp`; approximate f32 math within its envelope when asked.
fn unary(regs: &mut [u64], o: Lanes, i: &Inst, envelope: bool) {
    let ty = i.ty;
    match i.op {
        Op::Neg
        | Op::Abs
        | Op::Not
        | Op::Cnot
        | Op::Popc
        | Op::Clz
        | Op::Brev
        | Op::Bfind
        | Op::Rcp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Ex2
        | Op::Lg2
        | Op::Sin
        | Op::Cos
        | Op::Tanh => {
            let (op, rnd, f) = (i.op, i.rnd, i.flags);
            match crate::envelope::bound_of(op, f).filter(|_| envelope && ty == Ty::F32) {
                Some(bound) => map1!(regs, o, |x| {
                    let exact = alu::unary(op, ty, rnd, f, x);
                    match crate::envelope::true_unary(op, f, x as u32) {
                        Some(t) => crate::envelope::perturb(op, f, bound, x as u32, 0, t, exact as u32) as u64,
                        None => exact,
                    }
                }),
                None => map1!(regs, o, |x| alu::unary(op, ty, rnd, f, x)),
            }
        }
        Op::Testp => {
            let k = i.sub;
            map1!(regs, o, |x| alu::testp(ty, k, x))
        }
        _ => unreachable!("`{:?}` is not handled by `unary`", i.op),
    }
}

/// Three- and four-source bit and select operations.
fn bits(regs: &mut [u64], o: Lanes, i: &Inst) {
    let Lanes { d, a, b, c, mask, .. } = o;
    let ty = i.ty;
    match i.op {
        Op::Sad => map3!(regs, o, |x, y, z| {
            let diff = if ty.is_signed() {
                (alu_sx(ty, x) - alu_sx(ty, y)).unsigned_abs() as u64
            } else {
                (x & ty.mask()).abs_diff(y & ty.mask())
            };
            ext(ty, diff.wrapping_add(z))
        }),
        Op::Bfe => map3!(regs, o, |x, y, z| alu::bfe(ty, x, y, z)),
        Op::Bfi => {
            let e = i.s[3] as usize * 32;
            lanes!(mask, l, {
                regs[d + l] = alu::bfi(ty, regs[a + l], regs[b + l], regs[c + l], regs[e + l]);
            });
        }
        Op::Shf => {
            let left = i.has(fl::LEFT);
            let clamp = i.has(fl::CLAMP);
            map3!(regs, o, |x, y, z| {
                let n = if clamp { (z as u32).min(32) } else { z as u32 & 31 };
                let v = ((y & 0xffff_ffff) << 32) | (x & 0xffff_ffff);
                if left {
                    ((v << n) >> 32) & 0xffff_ffff
                } else {
                    (v >> n) & 0xffff_ffff
                }
            })
        }
        Op::Prmt => {
            let mode = i.sub;
            map3!(regs, o, |x, y, z| alu::prmt(mode, x, y, z))
        }
        Op::Dp4a => {
            let t2 = i.ty2;
            map3!(regs, o, |x, y, z| alu::dp4a(ty, t2, x, y, z))
        }
        Op::Dp2a => {
            let (t2, hi) = (i.ty2, i.sub == 1);
            map3!(regs, o, |x, y, z| alu::dp2a(ty, t2, hi, x, y, z))
        }
        Op::Lop3 => {
            let lut = i.off as u8;
            map3!(regs, o, |x, y, z| alu::lop3(x, y, z, lut))
        }
        Op::Selp => {
            let neg = i.has(fl::NEG_PRED_SRC);
            let m = ty.mask();
            map3!(regs, o, |x, y, z| if (z & 1 != 0) != neg { x & m } else { y & m })
        }
        Op::Slct => {
            let t2 = i.ty2;
            let m = ty.mask();
            let f = i.flags;
            map3!(regs, o, |x, y, z| {
                let ge = if t2 == Ty::F32 {
                    let v = if f & fl::FTZ != 0 {
                        crate::fp::ftz32(f32::from_bits(z as u32))
                    } else {
                        f32::from_bits(z as u32)
                    };
                    v >= 0.0
                } else {
                    z as u32 as i32 >= 0
                };
                if ge {
                    x & m
                } else {
                    y & m
                }
            })
        }
        _ => unreachable!("`{:?}` is not handled by `bits`", i.op),
    }
}

/// `setp` and `set`, with an integer fast path for the plain compares.
fn compare(regs: &mut [u64], o: Lanes, i: &Inst) {
    let Lanes { d, a, b, c, mask, .. } = o;
    let ty = i.ty;
    match i.op {
        Op::Setp
            if i.sub2 == sub::B_NONE
                && i.d[1] == NONE
                && matches!(ty, Ty::S32 | Ty::U32 | Ty::B32 | Ty::S64 | Ty::U64) =>
        {
            macro_rules! cmpfast {
                ($t:ty) => {
                    match i.cmp {
                        Cmp::Eq => map2!(regs, o, |x, y| (x as $t == y as $t) as u64),
                        Cmp::Ne => map2!(regs, o, |x, y| (x as $t != y as $t) as u64),
                        Cmp::Lt | Cmp::Lo => map2!(regs, o, |x, y| ((x as $t) < (y as $t)) as u64),
                        Cmp::Le | Cmp::Ls => map2!(regs, o, |x, y| (x as $t <= y as $t) as u64),
                        Cmp::Gt | Cmp::Hi => map2!(regs, o, |x, y| (x as $t > y as $t) as u64),
                        _ => map2!(regs, o, |x, y| (x as $t >= y as $t) as u64),
                    }
                };
            }
            match ty {
                Ty::S32 => cmpfast!(i32),
                Ty::U32 | Ty::B32 => cmpfast!(u32),
                Ty::S64 => cmpfast!(i64),
                _ => cmpfast!(u64),
            }
        }
        Op::Setp | Op::Set => {
            let (cmp, f, bop) = (i.cmp, i.flags, i.sub2);
            let negc = i.has(fl::NEG_PRED_SRC);
            let d2 = if i.d[1] != NONE { Some(i.d[1] as usize * 32) } else { None };
            let is_set = i.op == Op::Set;
            let dty = i.ty2;
            let x2 = matches!(ty, Ty::F16x2 | Ty::BF16x2);
            lanes!(mask, l, {
                let (x, y) = (regs[a + l], regs[b + l]);
                let (t, t_hi) = if x2 {
                    let et = if ty == Ty::F16x2 { Ty::F16 } else { Ty::BF16 };
                    (
                        alu::compare(cmp, et, f, x & 0xffff, y & 0xffff),
                        alu::compare(cmp, et, f, (x >> 16) & 0xffff, (y >> 16) & 0xffff),
                    )
                } else {
                    let t = alu::compare(cmp, ty, f, x, y);
                    (t, !t)
                };
                let cv = bop != sub::B_NONE && ((regs[c + l] & 1 != 0) != negc);
                let comb = |t: bool| -> bool {
                    match bop {
                        sub::B_NONE => t,
                        sub::B_AND => t && cv,
                        sub::B_OR => t || cv,
                        _ => t ^ cv,
                    }
                };
                let p = comb(t);
                if is_set {
                    regs[d + l] = if dty == Ty::F32 {
                        if p {
                            1.0f32.to_bits() as u64
                        } else {
                            0
                        }
                    } else if p {
                        ext(dty, u64::MAX)
                    } else {
                        0
                    };
                } else {
                    regs[d + l] = p as u64;
                    if let Some(d2) = d2 {
                        // x2 forms: d = low-half result, second dest = high half
                        regs[d2 + l] = comb(t_hi) as u64;
                    }
                }
            });
        }
        _ => unreachable!("`{:?}` is not handled by `compare`", i.op),
    }
}

/// `cvt`, the f32 pair pack and `cvta`.
fn convert(regs: &mut [u64], o: Lanes, i: &Inst) {
    let ty = i.ty;
    match i.op {
        Op::Cvt => {
            let (t2, rnd, f) = (i.ty2, i.rnd, i.flags);
            if ty == Ty::F32 && t2 == Ty::F16 && f == 0 {
                map1!(regs, o, |x| crate::fp::f16_to_f32(x).to_bits() as u64)
            } else {
                map1!(regs, o, |x| alu::cvt(ty, t2, rnd, f, x))
            }
        }
        Op::CvtPack => {
            let (rnd, f) = (i.rnd, i.flags);
            map2!(regs, o, |x, y| alu::cvt_pack(ty, rnd, f, x, y))
        }
        Op::Cvta | Op::CvtaTo => {
            let base = match i.space {
                Space::Shared => SHARED_WIN,
                Space::Local => LOCAL_WIN,
                Space::Const => CONST_WIN,
                Space::Param => PARAM_WIN,
                _ => 0,
            };
            let m = ty.mask();
            if i.op == Op::Cvta {
                map1!(regs, o, |x| (x & 0xffff_ffff_u64.max(m)).wrapping_add(base) & m)
            } else {
                map1!(regs, o, |x| x.wrapping_sub(base) & m)
            }
        }
        _ => unreachable!("`{:?}` is not handled by `convert`", i.op),
    }
}

#[inline(always)]
fn alu_sx(ty: Ty, v: u64) -> i128 {
    let b = ty.bits();
    (((v << (64 - b)) as i64) >> (64 - b)) as i128
}
