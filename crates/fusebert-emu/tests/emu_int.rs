//! Integer and bit instructions [PTX ISA 9.7.1 integer arithmetic, 9.7.7 logic and shift,
//! 9.7.8.7 prmt, 9.7.1.23 dp4a], compare/select [9.7.6]: each op runs over random operands
//! (plus edge values) on a 5-block grid and is compared with a plain-Rust reference.
mod common;
use common::*;
use rand::Rng;

const N: usize = 300; // 5 blocks of 64, last one partial

/// Random 32-bit operands: mostly uniform, some small, plus edge values.
fn operands(seed: u64) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut r = rng(seed);
    let edge = [0u32, 1, 2, 0xffff_ffff, 0x8000_0000, 0x7fff_ffff, 0x8000_0001, 31, 32, 33];
    let mut gen = |i: usize| -> u32 {
        match i % 4 {
            0 | 1 => r.gen(),
            2 => r.gen_range(0..100),
            _ => edge[r.gen_range(0..edge.len())],
        }
    };
    let a: Vec<u32> = (0..N).map(&mut gen).collect();
    let b: Vec<u32> = (0..N).map(|i| gen(i + 1)).collect();
    let c: Vec<u32> = (0..N).map(|i| gen(i + 3)).collect();
    (a, b, c)
}

fn check32(ck: &mut Check, op: &str, body: &str, a: &[u32], b: &[u32], c: &[u32], f: impl Fn(u32, u32, u32) -> u32) {
    let want: Vec<u32> = (0..a.len()).map(|i| f(a[i], b[i], c[i])).collect();
    let got = run32(body, a, b, c);
    ck.cmp(op, got, &want, |i| format!("a={:#x} b={:#x} c={:#x}", a[i], b[i], c[i]), |g, w| g == w);
}

fn check64(ck: &mut Check, op: &str, body: &str, a: &[u64], b: &[u64], c: &[u64], f: impl Fn(u64, u64, u64) -> u64) {
    let want: Vec<u64> = (0..a.len()).map(|i| f(a[i], b[i], c[i])).collect();
    let got = run64(body, a, b, c);
    ck.cmp(op, got, &want, |i| format!("a={:#x} b={:#x} c={:#x}", a[i], b[i], c[i]), |g, w| g == w);
}

/// Single-instruction body `OP %r20, %r10, %r11[, %r12];`
fn bin(op: &str) -> String {
    format!("\t{op} \t%r20, %r10, %r11;")
}
fn tern(op: &str) -> String {
    format!("\t{op} \t%r20, %r10, %r11, %r12;")
}

#[test]
fn int_add_sub_mul_mad() {
    let (a, b, c) = operands(1);
    let mut ck = Check::new();
    check32(&mut ck, "add.s32", &bin("add.s32"), &a, &b, &c, |a, b, _| a.wrapping_add(b));
    check32(&mut ck, "sub.s32", &bin("sub.s32"), &a, &b, &c, |a, b, _| a.wrapping_sub(b));
    check32(&mut ck, "add.sat.s32", &bin("add.sat.s32"), &a, &b, &c, |a, b, _| {
        (a as i32).saturating_add(b as i32) as u32
    });
    check32(&mut ck, "sub.sat.s32", &bin("sub.sat.s32"), &a, &b, &c, |a, b, _| {
        (a as i32).saturating_sub(b as i32) as u32
    });
    check32(&mut ck, "mul.lo.s32", &bin("mul.lo.s32"), &a, &b, &c, |a, b, _| a.wrapping_mul(b));
    check32(&mut ck, "mul.lo.u32", &bin("mul.lo.u32"), &a, &b, &c, |a, b, _| a.wrapping_mul(b));
    check32(&mut ck, "mul.hi.s32", &bin("mul.hi.s32"), &a, &b, &c, |a, b, _| {
        ((a as i32 as i64 * b as i32 as i64) >> 32) as u32
    });
    check32(&mut ck, "mul.hi.u32", &bin("mul.hi.u32"), &a, &b, &c, |a, b, _| ((a as u64 * b as u64) >> 32) as u32);
    check32(&mut ck, "mad.lo.s32", &tern("mad.lo.s32"), &a, &b, &c, |a, b, c| a.wrapping_mul(b).wrapping_add(c));
    check32(&mut ck, "mad.hi.u32", &tern("mad.hi.u32"), &a, &b, &c, |a, b, c| {
        (((a as u64 * b as u64) >> 32) as u32).wrapping_add(c)
    });
    check32(&mut ck, "mad.hi.s32", &tern("mad.hi.s32"), &a, &b, &c, |a, b, c| {
        (((a as i32 as i64 * b as i32 as i64) >> 32) as u32).wrapping_add(c)
    });
    check32(&mut ck, "sad.u32", &tern("sad.u32"), &a, &b, &c, |a, b, c| a.abs_diff(b).wrapping_add(c));
    check32(&mut ck, "sad.s32", &tern("sad.s32"), &a, &b, &c, |a, b, c| (a as i32).abs_diff(b as i32).wrapping_add(c));
    check32(&mut ck, "neg.s32", "\tneg.s32 \t%r20, %r10;", &a, &b, &c, |a, _, _| (a as i32).wrapping_neg() as u32);
    check32(&mut ck, "abs.s32", "\tabs.s32 \t%r20, %r10;", &a, &b, &c, |a, _, _| (a as i32).wrapping_abs() as u32);
    // 16-bit arithmetic through %rs registers: truncation of the 32-bit loads, zero-extension back
    let b16 = "\tcvt.u16.u32 \t%rs1, %r10;\n\tcvt.u16.u32 \t%rs2, %r11;\n\tmul.lo.s16 \t%rs3, %rs1, %rs2;\n\tadd.s16 \t%rs4, %rs3, %rs1;\n\tcvt.u32.u16 \t%r20, %rs4;";
    check32(&mut ck, "mul.lo.s16+add.s16", b16, &a, &b, &c, |a, b, _| {
        let (x, y) = (a as u16, b as u16);
        x.wrapping_mul(y).wrapping_add(x) as u32
    });
    ck.finish();
}

#[test]
fn int_wide_and_64bit() {
    let (a32, b32, c32) = operands(2);
    let mut r = rng(22);
    let a: Vec<u64> = (0..N).map(|i| if i % 5 == 0 { a32[i] as u64 } else { r.gen() }).collect();
    let b: Vec<u64> =
        (0..N).map(|i| if i % 7 == 0 { b32[i] as u64 | 0xffff_ffff_0000_0000 } else { r.gen() }).collect();
    let c: Vec<u64> = (0..N).map(|i| ((c32[i] as u64) << 17) ^ r.gen::<u64>()).collect();
    let lo = |x: u64| x as u32;
    let mut ck = Check::new();
    let w = |op: &str| format!("\t{op} \t%rd20, %r10, %r11;");
    check64(&mut ck, "mul.wide.s32", &w("mul.wide.s32"), &a, &b, &c, |a, b, _| {
        (lo(a) as i32 as i64 * lo(b) as i32 as i64) as u64
    });
    check64(&mut ck, "mul.wide.u32", &w("mul.wide.u32"), &a, &b, &c, |a, b, _| lo(a) as u64 * lo(b) as u64);
    check64(&mut ck, "mad.wide.s32", "\tmad.wide.s32 \t%rd20, %r10, %r11, %rd12;", &a, &b, &c, |a, b, c| {
        ((lo(a) as i32 as i64 * lo(b) as i32 as i64) as u64).wrapping_add(c)
    });
    let b64 = |op: &str| format!("\t{op} \t%rd20, %rd10, %rd11;");
    check64(&mut ck, "add.s64", &b64("add.s64"), &a, &b, &c, |a, b, _| a.wrapping_add(b));
    check64(&mut ck, "sub.s64", &b64("sub.s64"), &a, &b, &c, |a, b, _| a.wrapping_sub(b));
    check64(&mut ck, "mul.lo.s64", &b64("mul.lo.s64"), &a, &b, &c, |a, b, _| a.wrapping_mul(b));
    check64(&mut ck, "mul.hi.u64", &b64("mul.hi.u64"), &a, &b, &c, |a, b, _| ((a as u128 * b as u128) >> 64) as u64);
    check64(&mut ck, "mul.hi.s64", &b64("mul.hi.s64"), &a, &b, &c, |a, b, _| {
        ((a as i64 as i128 * b as i64 as i128) >> 64) as u64
    });
    check64(&mut ck, "mad.lo.s64", "\tmad.lo.s64 \t%rd20, %rd10, %rd11, %rd12;", &a, &b, &c, |a, b, c| {
        a.wrapping_mul(b).wrapping_add(c)
    });
    check64(&mut ck, "min.s64", &b64("min.s64"), &a, &b, &c, |a, b, _| (a as i64).min(b as i64) as u64);
    check64(&mut ck, "max.u64", &b64("max.u64"), &a, &b, &c, |a, b, _| a.max(b));
    // shift amount is a u32 operand; amounts beyond the width clamp to the width [9.7.7.7-8]
    let sh = |op: &str| format!("\tand.b32 \t%r21, %r12, 127;\n\t{op} \t%rd20, %rd10, %r21;");
    let amt = |c: u64| (c as u32 & 127).min(64);
    check64(&mut ck, "shl.b64", &sh("shl.b64"), &a, &b, &c, |a, _, c| if amt(c) >= 64 { 0 } else { a << amt(c) });
    check64(&mut ck, "shr.u64", &sh("shr.u64"), &a, &b, &c, |a, _, c| if amt(c) >= 64 { 0 } else { a >> amt(c) });
    check64(&mut ck, "shr.s64", &sh("shr.s64"), &a, &b, &c, |a, _, c| ((a as i64) >> amt(c).min(63)) as u64);
    let u = |op: &str| format!("\t{op} \t%r21, %rd10;\n\tcvt.u64.u32 \t%rd20, %r21;");
    check64(&mut ck, "popc.b64", &u("popc.b64"), &a, &b, &c, |a, _, _| a.count_ones() as u64);
    check64(&mut ck, "clz.b64", &u("clz.b64"), &a, &b, &c, |a, _, _| a.leading_zeros() as u64);
    check64(&mut ck, "bfind.u64", &u("bfind.u64"), &a, &b, &c, |a, _, _| {
        if a == 0 {
            0xffff_ffff
        } else {
            63 - a.leading_zeros() as u64
        }
    });
    check64(&mut ck, "bfind.s64", &u("bfind.s64"), &a, &b, &c, |a, _, _| {
        let x = if (a as i64) < 0 { !a } else { a };
        if x == 0 {
            0xffff_ffff
        } else {
            63 - x.leading_zeros() as u64
        }
    });
    check64(&mut ck, "brev.b64", "\tbrev.b64 \t%rd20, %rd10;", &a, &b, &c, |a, _, _| a.reverse_bits());
    // vector pack/unpack of 64-bit registers: {lo32, hi32}
    check64(
        &mut ck,
        "mov.b64 unpack/pack",
        "\tmov.b64 \t{%r21, %r22}, %rd10;\n\tmov.b64 \t%rd20, {%r22, %r21};",
        &a,
        &b,
        &c,
        |a, _, _| a.rotate_left(32),
    );
    check64(&mut ck, "cvt.s64.s32", "\tcvt.s64.s32 \t%rd20, %r10;", &a, &b, &c, |a, _, _| lo(a) as i32 as i64 as u64);
    check64(&mut ck, "cvt.u64.u32", "\tcvt.u64.u32 \t%rd20, %r10;", &a, &b, &c, |a, _, _| lo(a) as u64);
    ck.finish();
}

#[test]
fn int_div_rem() {
    let (a, b0, c) = operands(3);
    // divisors never 0, and never the overflowing MIN / -1 pair (both undefined in the ISA)
    let b: Vec<u32> = b0
        .iter()
        .zip(&a)
        .map(|(&b, &a)| if b == 0 || (a == 0x8000_0000 && b == 0xffff_ffff) { 7 } else { b })
        .collect();
    let mut ck = Check::new();
    check32(&mut ck, "div.s32", &bin("div.s32"), &a, &b, &c, |a, b, _| (a as i32).wrapping_div(b as i32) as u32);
    check32(&mut ck, "div.u32", &bin("div.u32"), &a, &b, &c, |a, b, _| a / b);
    check32(&mut ck, "rem.s32", &bin("rem.s32"), &a, &b, &c, |a, b, _| (a as i32).wrapping_rem(b as i32) as u32);
    check32(&mut ck, "rem.u32", &bin("rem.u32"), &a, &b, &c, |a, b, _| a % b);
    let mut r = rng(33);
    let a64: Vec<u64> = (0..N).map(|_| r.gen()).collect();
    let b64: Vec<u64> = (0..N)
        .map(|i| if i % 3 == 0 { r.gen_range(1..1000) } else { r.gen::<u64>() >> r.gen_range(0..60) | 1 })
        .collect();
    let bb = |op: &str| format!("\t{op} \t%rd20, %rd10, %rd11;");
    check64(&mut ck, "div.s64", &bb("div.s64"), &a64, &b64, &a64, |a, b, _| (a as i64).wrapping_div(b as i64) as u64);
    check64(&mut ck, "div.u64", &bb("div.u64"), &a64, &b64, &a64, |a, b, _| a / b);
    check64(&mut ck, "rem.s64", &bb("rem.s64"), &a64, &b64, &a64, |a, b, _| (a as i64).wrapping_rem(b as i64) as u64);
    check64(&mut ck, "rem.u64", &bb("rem.u64"), &a64, &b64, &a64, |a, b, _| a % b);
    ck.finish();
}

#[test]
fn int_min_max_logic() {
    let (a, b, c) = operands(4);
    let mut ck = Check::new();
    check32(&mut ck, "min.s32", &bin("min.s32"), &a, &b, &c, |a, b, _| (a as i32).min(b as i32) as u32);
    check32(&mut ck, "max.s32", &bin("max.s32"), &a, &b, &c, |a, b, _| (a as i32).max(b as i32) as u32);
    check32(&mut ck, "min.u32", &bin("min.u32"), &a, &b, &c, |a, b, _| a.min(b));
    check32(&mut ck, "max.u32", &bin("max.u32"), &a, &b, &c, |a, b, _| a.max(b));
    check32(&mut ck, "and.b32", &bin("and.b32"), &a, &b, &c, |a, b, _| a & b);
    check32(&mut ck, "or.b32", &bin("or.b32"), &a, &b, &c, |a, b, _| a | b);
    check32(&mut ck, "xor.b32", &bin("xor.b32"), &a, &b, &c, |a, b, _| a ^ b);
    check32(&mut ck, "not.b32", "\tnot.b32 \t%r20, %r10;", &a, &b, &c, |a, _, _| !a);
    check32(&mut ck, "cnot.b32", "\tcnot.b32 \t%r20, %r10;", &a, &b, &c, |a, _, _| (a == 0) as u32);
    // lop3: result bit = immLut[(a<<2)|(b<<1)|c] with a->0xF0, b->0xCC, c->0xAA [9.7.7.6]
    for imm in [0x96u32, 0xE8, 0x80, 0xFE, 0x40, 0x1A, 0x3C, 0x5A, 0xCA, 0x01] {
        check32(
            &mut ck,
            &format!("lop3.b32 {imm:#x}"),
            &format!("\tlop3.b32 \t%r20, %r10, %r11, %r12, {imm};"),
            &a,
            &b,
            &c,
            move |a, b, c| {
                (0..32)
                    .map(|k| {
                        let idx = (((a >> k) & 1) << 2) | (((b >> k) & 1) << 1) | ((c >> k) & 1);
                        ((imm >> idx) & 1) << k
                    })
                    .sum()
            },
        );
    }
    ck.finish();
}

#[test]
fn int_shifts_and_funnel_shift() {
    let (a, b, c0) = operands(5);
    let mut r = rng(55);
    // shift amounts 0..=40 (beyond the width: clamped to the width), plus a few larger ones
    let c: Vec<u32> = c0.iter().map(|&x| if x % 5 == 0 { x } else { r.gen_range(0..=40) }).collect();
    let mut ck = Check::new();
    let sh = |op: &str| format!("\t{op} \t%r20, %r10, %r12;");
    let n = |c: u32| c.min(32);
    check32(&mut ck, "shl.b32", &sh("shl.b32"), &a, &b, &c, |a, _, c| if n(c) >= 32 { 0 } else { a << n(c) });
    check32(&mut ck, "shr.u32", &sh("shr.u32"), &a, &b, &c, |a, _, c| if n(c) >= 32 { 0 } else { a >> n(c) });
    check32(&mut ck, "shr.b32", &sh("shr.b32"), &a, &b, &c, |a, _, c| if n(c) >= 32 { 0 } else { a >> n(c) });
    check32(&mut ck, "shr.s32", &sh("shr.s32"), &a, &b, &c, |a, _, c| ((a as i32) >> n(c).min(31)) as u32);
    // shf [9.7.7.9]: {b:a} 64-bit; wrap: n = c & 31; clamp: n = min(c, 32)
    let shf_l = |a: u32, b: u32, n: u32| ((((b as u64) << 32 | a as u64) << n) >> 32) as u32;
    let shf_r = |a: u32, b: u32, n: u32| ((((b as u64) << 32 | a as u64) >> n) & 0xffff_ffff) as u32;
    check32(&mut ck, "shf.l.wrap.b32", &tern("shf.l.wrap.b32"), &a, &b, &c, move |a, b, c| shf_l(a, b, c & 31));
    check32(&mut ck, "shf.r.wrap.b32", &tern("shf.r.wrap.b32"), &a, &b, &c, move |a, b, c| shf_r(a, b, c & 31));
    check32(&mut ck, "shf.l.clamp.b32", &tern("shf.l.clamp.b32"), &a, &b, &c, move |a, b, c| shf_l(a, b, c.min(32)));
    check32(&mut ck, "shf.r.clamp.b32", &tern("shf.r.clamp.b32"), &a, &b, &c, move |a, b, c| shf_r(a, b, c.min(32)));
    ck.finish();
}

/// bfe [9.7.7.1]: pos = b & 0xff, len = c & 0xff; sign bit = a[min(pos+len-1, msb)] (signed,
/// len > 0); d[i] = (i < len && pos+i <= msb) ? a[pos+i] : sbit.
fn bfe_ref(a: u64, b: u32, c: u32, bits: u32, signed: bool) -> u64 {
    let msb = bits - 1;
    let (pos, len) = (b & 0xff, c & 0xff);
    let sbit = if !signed || len == 0 { 0 } else { (a >> (pos + len - 1).min(msb)) & 1 };
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb { (a >> (pos + i)) & 1 } else { sbit };
        d |= bit << i;
    }
    d
}

/// bfi [9.7.7.2]: f = b; for i < len && pos+i <= msb: f[pos+i] = a[i].
fn bfi_ref(a: u64, b: u64, pos: u32, len: u32, bits: u32) -> u64 {
    let mut f = b;
    let mut i = 0;
    while i < len && pos + i < bits {
        f = (f & !(1u64 << (pos + i))) | (((a >> i) & 1) << (pos + i));
        i += 1;
    }
    f
}

#[test]
fn int_bitfield_ops() {
    let (a, b0, c0) = operands(6);
    let mut r = rng(66);
    // field positions/lengths 0..=40, sometimes with garbage above bit 7 (must be ignored)
    let b: Vec<u32> = b0.iter().map(|&x| r.gen_range(0..=40) | if x % 3 == 0 { 0x1200 } else { 0 }).collect();
    let c: Vec<u32> = c0.iter().map(|&x| r.gen_range(0..=40) | if x % 4 == 0 { 0x300 } else { 0 }).collect();
    let mut ck = Check::new();
    check32(&mut ck, "bfe.u32", &tern("bfe.u32"), &a, &b, &c, |a, b, c| bfe_ref(a as u64, b, c, 32, false) as u32);
    check32(&mut ck, "bfe.s32", &tern("bfe.s32"), &a, &b, &c, |a, b, c| bfe_ref(a as u64, b, c, 32, true) as u32);
    // bfi f, a, b, pos, len with pos = b's field above, len = c's (masked to 8 bits by the ISA)
    let body = "\tbfi.b32 \t%r20, %r10, %r12, %r11, %r12;";
    check32(&mut ck, "bfi.b32", body, &a, &b, &c, |a, b, c| bfi_ref(a as u64, c as u64, b & 0xff, c & 0xff, 32) as u32);
    check32(&mut ck, "brev.b32", "\tbrev.b32 \t%r20, %r10;", &a, &b, &c, |a, _, _| a.reverse_bits());
    check32(&mut ck, "clz.b32", "\tclz.b32 \t%r20, %r10;", &a, &b, &c, |a, _, _| a.leading_zeros());
    check32(&mut ck, "popc.b32", "\tpopc.b32 \t%r20, %r10;", &a, &b, &c, |a, _, _| a.count_ones());
    check32(&mut ck, "bfind.u32", "\tbfind.u32 \t%r20, %r10;", &a, &b, &c, |a, _, _| {
        if a == 0 {
            u32::MAX
        } else {
            31 - a.leading_zeros()
        }
    });
    check32(&mut ck, "bfind.s32", "\tbfind.s32 \t%r20, %r10;", &a, &b, &c, |a, _, _| {
        let x = if (a as i32) < 0 { !a } else { a };
        if x == 0 {
            u32::MAX
        } else {
            31 - x.leading_zeros()
        }
    });
    check32(&mut ck, "bfind.shiftamt.u32", "\tbfind.shiftamt.u32 \t%r20, %r10;", &a, &b, &c, |a, _, _| {
        if a == 0 {
            u32::MAX
        } else {
            a.leading_zeros()
        }
    });
    let mut r2 = rng(67);
    let a64: Vec<u64> = (0..N).map(|_| r2.gen()).collect();
    let b64: Vec<u64> = (0..N).map(|_| r2.gen_range(0..=70)).collect();
    let c64: Vec<u64> = (0..N).map(|_| r2.gen_range(0..=70)).collect();
    check64(&mut ck, "bfe.u64", "\tbfe.u64 \t%rd20, %rd10, %r11, %r12;", &a64, &b64, &c64, |a, b, c| {
        bfe_ref(a, b as u32, c as u32, 64, false)
    });
    check64(&mut ck, "bfe.s64", "\tbfe.s64 \t%rd20, %rd10, %r11, %r12;", &a64, &b64, &c64, |a, b, c| {
        bfe_ref(a, b as u32, c as u32, 64, true)
    });
    check64(&mut ck, "bfi.b64", "\tbfi.b64 \t%rd20, %rd10, %rd11, %r12, %r11;", &a64, &b64, &c64, |a, b, c| {
        bfi_ref(a, b, c as u32 & 0xff, b as u32 & 0xff, 64)
    });
    ck.finish();
}

/// prmt [9.7.8.7]: generic selector nibbles (bit 3 = replicate the byte's sign), and the named
/// modes, whose byte-index tables (d.b0..d.b3 per c[1:0]) are the ISA's.
fn prmt_ref(a: u32, b: u32, c: u32, mode: Option<&str>) -> u32 {
    let src = ((b as u64) << 32) | a as u64;
    let byte = |i: u32| ((src >> (8 * i)) & 0xff) as u32;
    let mut d = 0u32;
    for i in 0..4u32 {
        let v = match mode {
            None => {
                let sel = (c >> (4 * i)) & 0xf;
                let x = byte(sel & 7);
                if sel & 8 != 0 {
                    if x & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    x
                }
            }
            Some(m) => {
                let s = c & 3;
                let idx = match m {
                    "f4e" => s + i,
                    "b4e" => (s + 8 - i) % 8,
                    "rc8" => s,
                    "ecl" => s.max(i),
                    "ecr" => s.min(i),
                    "rc16" => (i & 1) + 2 * (s & 1),
                    _ => unreachable!(),
                };
                byte(idx)
            }
        };
        d |= v << (8 * i);
    }
    d
}

#[test]
fn int_prmt_generic_and_modes() {
    let (a, b, c) = operands(7);
    let mut r = rng(77);
    let sel: Vec<u32> = c.iter().map(|&x| x ^ r.gen::<u32>()).collect();
    let mut ck = Check::new();
    check32(&mut ck, "prmt.b32", &tern("prmt.b32"), &a, &b, &sel, |a, b, c| prmt_ref(a, b, c, None));
    // the sign-replicate idiom nvcc emits for s8 unpacking (selectors 0x8880, 0x9991, ...)
    for imm in [0x8880u32, 0x9991, 0xAAA2, 0xBBB3, 0x3210, 0x7654, 0x0123, 0x5140] {
        check32(
            &mut ck,
            &format!("prmt.b32 imm {imm:#x}"),
            &format!("\tprmt.b32 \t%r20, %r10, %r11, {imm};"),
            &a,
            &b,
            &c,
            move |a, b, _| prmt_ref(a, b, imm, None),
        );
    }
    for m in ["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"] {
        check32(&mut ck, &format!("prmt.b32.{m}"), &tern(&format!("prmt.b32.{m}")), &a, &b, &sel, move |a, b, c| {
            prmt_ref(a, b, c, Some(m))
        });
    }
    ck.finish();
}

#[test]
fn int_dp4a() {
    let (a, b, c) = operands(8);
    let dp = |a: u32, b: u32, c: u32, sa: bool, sb: bool| -> u32 {
        let ext = |x: u32, i: u32, s: bool| -> i64 {
            let v = (x >> (8 * i)) & 0xff;
            if s {
                v as u8 as i8 as i64
            } else {
                v as i64
            }
        };
        let mut d = c as i64;
        for i in 0..4 {
            d += ext(a, i, sa) * ext(b, i, sb);
        }
        d as u32 // wrapping 32-bit
    };
    let mut ck = Check::new();
    check32(&mut ck, "dp4a.s32.s32", &tern("dp4a.s32.s32"), &a, &b, &c, move |a, b, c| dp(a, b, c, true, true));
    check32(&mut ck, "dp4a.u32.u32", &tern("dp4a.u32.u32"), &a, &b, &c, move |a, b, c| dp(a, b, c, false, false));
    check32(&mut ck, "dp4a.s32.u32", &tern("dp4a.s32.u32"), &a, &b, &c, move |a, b, c| dp(a, b, c, true, false));
    check32(&mut ck, "dp4a.u32.s32", &tern("dp4a.u32.s32"), &a, &b, &c, move |a, b, c| dp(a, b, c, false, true));
    ck.finish();
}

#[test]
fn int_setp_selp_pred_logic() {
    let (a, b0, c) = operands(9);
    // make equality frequent
    let b: Vec<u32> = b0.iter().zip(&a).enumerate().map(|(i, (&b, &a))| if i % 6 == 0 { a } else { b }).collect();
    let mut ck = Check::new();
    type Cmp = (&'static str, fn(u32, u32) -> bool);
    let cmps: [Cmp; 14] = [
        ("eq.s32", |a, b| a == b),
        ("ne.s32", |a, b| a != b),
        ("lt.s32", |a, b| (a as i32) < (b as i32)),
        ("le.s32", |a, b| (a as i32) <= (b as i32)),
        ("gt.s32", |a, b| (a as i32) > (b as i32)),
        ("ge.s32", |a, b| (a as i32) >= (b as i32)),
        ("lt.u32", |a, b| a < b),
        ("ge.u32", |a, b| a >= b),
        ("lo.u32", |a, b| a < b),
        ("ls.u32", |a, b| a <= b),
        ("hi.u32", |a, b| a > b),
        ("hs.u32", |a, b| a >= b),
        ("eq.b32", |a, b| a == b),
        ("ne.b32", |a, b| a != b),
    ];
    for (cmp, f) in cmps {
        let body = format!("\tsetp.{cmp} \t%p1, %r10, %r11;\n\tselp.b32 \t%r20, %r12, 12345, %p1;");
        check32(
            &mut ck,
            &format!("setp.{cmp}+selp"),
            &body,
            &a,
            &b,
            &c,
            move |a, b, c| if f(a, b) { c } else { 12345 },
        );
    }
    // combining form: setp.CmpOp.BoolOp d|q, a, b, c  =>  d = cmp BoolOp c, q = !cmp BoolOp c
    let pc = "\tand.b32 \t%r21, %r12, 1;\n\tsetp.ne.u32 \t%p3, %r21, 0;\n";
    for (bop, f) in
        [("and", (|x: bool, y: bool| x && y) as fn(bool, bool) -> bool), ("or", |x, y| x || y), ("xor", |x, y| x ^ y)]
    {
        let body = format!("{pc}\tsetp.lt.{bop}.s32 \t%p1|%p2, %r10, %r11, %p3;\n\tselp.u32 \t%r22, 1, 0, %p1;\n\tselp.u32 \t%r23, 2, 0, %p2;\n\tor.b32 \t%r20, %r22, %r23;");
        check32(&mut ck, &format!("setp.lt.{bop}.s32 p|q"), &body, &a, &b, &c, move |a, b, c| {
            let t = (a as i32) < (b as i32);
            let p = c & 1 != 0;
            f(t, p) as u32 | ((f(!t, p) as u32) << 1)
        });
    }
    // predicate logic: and/or/xor/not .pred
    let body = format!("{pc}\tsetp.gt.u32 \t%p4, %r10, %r11;\n\tand.pred \t%p5, %p3, %p4;\n\tor.pred \t%p6, %p3, %p4;\n\txor.pred \t%p7, %p3, %p4;\n\tnot.pred \t%p8, %p4;\n\tselp.u32 \t%r21, 1, 0, %p5;\n\tselp.u32 \t%r22, 2, 0, %p6;\n\tselp.u32 \t%r23, 4, 0, %p7;\n\tselp.u32 \t%r24, 8, 0, %p8;\n\tor.b32 \t%r20, %r21, %r22;\n\tor.b32 \t%r20, %r20, %r23;\n\tor.b32 \t%r20, %r20, %r24;");
    check32(&mut ck, "and/or/xor/not.pred", &body, &a, &b, &c, |a, b, c| {
        let (p, q) = (c & 1 != 0, a > b);
        (p && q) as u32 | (((p || q) as u32) << 1) | (((p ^ q) as u32) << 2) | (((!q) as u32) << 3)
    });
    // guarded execution: @p / @!p
    let body =
        format!("{pc}\tmov.u32 \t%r20, %r10;\n\t@%p3 add.s32 \t%r20, %r20, %r11;\n\t@!%p3 sub.s32 \t%r20, %r20, 7;");
    check32(&mut ck, "@p/@!p guards", &body, &a, &b, &c, |a, b, c| {
        if c & 1 != 0 {
            a.wrapping_add(b)
        } else {
            a.wrapping_sub(7)
        }
    });
    // mov.b32 {lo16, hi16} unpack / pack
    check32(
        &mut ck,
        "mov.b32 unpack/pack",
        "\tmov.b32 \t{%rs1, %rs2}, %r10;\n\tmov.b32 \t%r20, {%rs2, %rs1};",
        &a,
        &b,
        &c,
        |a, _, _| a.rotate_left(16),
    );
    ck.finish();
}

/// Odd corners the project's kernels use: 16-bit and/shr, mul.wide.u16, 64-bit or, setp on
/// 64-bit values, selp.b64 / selp.f32.
#[test]
fn int_16bit_ops_wide_u16_and_64bit_selects() {
    let (a, b, c) = operands(10);
    let mut ck = Check::new();
    let body = "\tcvt.u16.u32 \t%rs1, %r10;\n\tcvt.u16.u32 \t%rs2, %r11;\n\tand.b16 \t%rs3, %rs1, %rs2;\n\tand.b32 \t%r21, %r12, 15;\n\tshr.u16 \t%rs4, %rs1, %r21;\n\tmul.wide.u16 \t%r22, %rs1, %rs2;\n\tcvt.u32.u16 \t%r23, %rs3;\n\tcvt.u32.u16 \t%r24, %rs4;\n\tshl.b32 \t%r25, %r24, 16;\n\tor.b32 \t%r26, %r23, %r25;\n\txor.b32 \t%r20, %r26, %r22;";
    check32(&mut ck, "and.b16/shr.u16/mul.wide.u16", body, &a, &b, &c, |a, b, c| {
        let (x, y) = (a as u16, b as u16);
        let and = (x & y) as u32;
        let shr = (x >> (c & 15)) as u32;
        (and | (shr << 16)) ^ (x as u32 * y as u32)
    });
    let mut r = rng(11);
    let a64: Vec<u64> = (0..N).map(|i| if i % 3 == 0 { 42 } else { r.gen() }).collect();
    let b64: Vec<u64> = (0..N).map(|i| if i % 3 == 0 { 42 } else { r.gen() }).collect();
    let c64: Vec<u64> = (0..N).map(|_| r.gen()).collect();
    let body =
        "\tsetp.eq.s64 \t%p1, %rd10, %rd11;\n\tor.b64 \t%rd21, %rd10, %rd12;\n\tselp.b64 \t%rd20, %rd21, %rd12, %p1;";
    check64(&mut ck, "setp.eq.s64/or.b64/selp.b64", body, &a64, &b64, &c64, |a, b, c| if a == b { a | c } else { c });
    let body = "\tsetp.lt.s64 \t%p1, %rd10, %rd11;\n\tmov.b32 \t%f1, %r12;\n\tmov.f32 \t%f2, 0fBF800000;\n\tselp.f32 \t%f3, %f1, %f2, %p1;\n\tmov.b32 \t%r21, %f3;\n\tcvt.u64.u32 \t%rd20, %r21;";
    check64(&mut ck, "setp.lt.s64/selp.f32", body, &a64, &b64, &c64, |a, b, c| {
        if (a as i64) < (b as i64) {
            c as u32 as u64
        } else {
            (-1.0f32).to_bits() as u64
        }
    });
    ck.finish();
}
