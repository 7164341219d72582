//! Floating-point instructions [PTX ISA 9.7.3 (f32/f64), 9.7.4 (f16/bf16), 9.7.3.x approx]:
//! IEEE correctly rounded ops compared BIT-EXACTLY with references built from error-free
//! transformations (directed roundings included); approximate ops within the hardware error
//! bounds of docs/ptx-semantics.md; min/max NaN rule; .ftz; setp on NaN.
mod common;
use common::*;
use rand::Rng;

const N: usize = 300;

fn f32s(seed: u64, lo: i32, hi: i32) -> Vec<u32> {
    let mut r = rng(seed);
    (0..N).map(|_| rand_f32(&mut r, lo, hi).to_bits()).collect()
}

fn fcheck(ck: &mut Check, op: &str, body: &str, a: &[u32], b: &[u32], c: &[u32], f: impl Fn(f32, f32, f32) -> f32) {
    let want: Vec<u32> =
        (0..a.len()).map(|i| f(f32::from_bits(a[i]), f32::from_bits(b[i]), f32::from_bits(c[i])).to_bits()).collect();
    let got = run32(body, a, b, c);
    ck.cmp(
        op,
        got,
        &want,
        |i| format!("a={:e} b={:e} c={:e}", f32::from_bits(a[i]), f32::from_bits(b[i]), f32::from_bits(c[i])),
        same_f32,
    );
}

/// Body for an f32 op on %r10 %r11 %r12 bit patterns.
fn fbody(op: &str, nargs: usize) -> String {
    let args = ["%f1", "%f2", "%f3"][..nargs].join(", ");
    format!("\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\tmov.b32 \t%f3, %r12;\n\t{op} \t%f4, {args};\n\tmov.b32 \t%r20, %f4;")
}

#[test]
fn f32_add_sub_mul_all_roundings() {
    let (a, b, c) = (f32s(1, -8, 8), f32s(2, -8, 8), f32s(3, -8, 8));
    let mut ck = Check::new();
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        fcheck(&mut ck, &format!("add.{m}.f32"), &fbody(&format!("add.{m}.f32"), 2), &a, &b, &c, move |a, b, _| {
            add32(a, b, rnd)
        });
        fcheck(&mut ck, &format!("sub.{m}.f32"), &fbody(&format!("sub.{m}.f32"), 2), &a, &b, &c, move |a, b, _| {
            add32(a, -b, rnd)
        });
        fcheck(&mut ck, &format!("mul.{m}.f32"), &fbody(&format!("mul.{m}.f32"), 2), &a, &b, &c, move |a, b, _| {
            mul32(a, b, rnd)
        });
    }
    // sanity of the reference itself: directed results bracket the exact value
    for i in 0..N {
        let (x, y) = (f32::from_bits(a[i]), f32::from_bits(b[i]));
        let exact = x as f64 + y as f64;
        assert!(add32(x, y, Rnd::M) as f64 <= exact && add32(x, y, Rnd::P) as f64 >= exact);
    }
    ck.finish();
}

#[test]
fn f32_fma_all_roundings() {
    let (a, b, c) = (f32s(4, -6, 6), f32s(5, -6, 6), f32s(6, -6, 6));
    let mut ck = Check::new();
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        fcheck(&mut ck, &format!("fma.{m}.f32"), &fbody(&format!("fma.{m}.f32"), 3), &a, &b, &c, move |a, b, c| {
            fma32(a, b, c, rnd)
        });
    }
    // mad.rn.f32 is fma.rn.f32 [9.7.3.5]
    fcheck(&mut ck, "mad.rn.f32", &fbody("mad.rn.f32", 3), &a, &b, &c, |a, b, c| fma32(a, b, c, Rnd::N));
    // the rounding must really be of the fused value: rm < rp wherever the result is inexact
    let inexact = (0..N)
        .filter(|&i| {
            let (x, y, z) = (f32::from_bits(a[i]), f32::from_bits(b[i]), f32::from_bits(c[i]));
            fma32(x, y, z, Rnd::M) != fma32(x, y, z, Rnd::P)
        })
        .count();
    assert!(inexact > N / 2, "test inputs should be mostly inexact");
    ck.finish();
}

#[test]
fn f32_div_sqrt_rcp() {
    let (a, b, c) = (f32s(7, -20, 20), f32s(8, -20, 20), f32s(9, -3, 3));
    let mut ck = Check::new();
    fcheck(&mut ck, "div.rn.f32", &fbody("div.rn.f32", 2), &a, &b, &c, |a, b, _| a / b);
    fcheck(
        &mut ck,
        "sqrt.rn.f32",
        "\tmov.b32 \t%f1, %r10;\n\tabs.f32 \t%f2, %f1;\n\tsqrt.rn.f32 \t%f4, %f2;\n\tmov.b32 \t%r20, %f4;",
        &a,
        &b,
        &c,
        |a, _, _| a.abs().sqrt(),
    );
    fcheck(&mut ck, "rcp.rn.f32", &fbody("rcp.rn.f32", 1), &a, &b, &c, |a, _, _| 1.0 / a);
    // div.full / div.approx: within 2 ulp [9.7.3.8]
    for op in ["div.full.f32", "div.approx.f32"] {
        let want: Vec<u32> = (0..N).map(|i| (f32::from_bits(a[i]) / f32::from_bits(b[i])).to_bits()).collect();
        let got = run32(&fbody(op, 2), &a, &b, &c);
        ck.cmp(
            op,
            got,
            &want,
            |i| format!("a={:e} b={:e}", f32::from_bits(a[i]), f32::from_bits(b[i])),
            |g, w| (g as i64 - w as i64).abs() <= 2,
        );
    }
    fcheck(&mut ck, "abs.f32", &fbody("abs.f32", 1), &a, &b, &c, |a, _, _| a.abs());
    fcheck(&mut ck, "neg.f32", &fbody("neg.f32", 1), &a, &b, &c, |a, _, _| -a);
    // copysign d, a, b: b's magnitude with a's sign [9.7.3.3]
    fcheck(&mut ck, "copysign.f32", &fbody("copysign.f32", 2), &a, &b, &c, |a, b, _| b.copysign(a));
    ck.finish();
}

#[test]
fn f32_min_max_nan_rule() {
    let mut a = f32s(10, -4, 4);
    let mut b = f32s(11, -4, 4);
    let nans = [0x7fc0_0000u32, 0xffc0_0000, 0x7f80_0001, 0x7fff_ffff];
    for i in 0..N {
        match i % 5 {
            0 => a[i] = nans[i % 4],
            1 => b[i] = nans[(i / 5) % 4],
            2 if i % 3 == 0 => {
                a[i] = nans[0];
                b[i] = nans[1];
            }
            _ => {}
        }
    }
    let c = b.clone();
    // min/max return the non-NaN operand; NaN only when both are NaN [9.7.3.10-11]
    let fmin = |a: f32, b: f32| {
        if a.is_nan() || (!b.is_nan() && b <= a) {
            b
        } else {
            a
        }
    };
    let fmax = |a: f32, b: f32| {
        if a.is_nan() || (!b.is_nan() && b >= a) {
            b
        } else {
            a
        }
    };
    let mut ck = Check::new();
    fcheck(&mut ck, "min.f32", &fbody("min.f32", 2), &a, &b, &c, move |a, b, _| fmin(a, b));
    fcheck(&mut ck, "max.f32", &fbody("max.f32", 2), &a, &b, &c, move |a, b, _| fmax(a, b));
    fcheck(&mut ck, "min.ftz.f32", &fbody("min.ftz.f32", 2), &a, &b, &c, move |a, b, _| fmin(a, b));
    // min.NaN propagates NaN [sm_80]
    fcheck(&mut ck, "max.NaN.f32", &fbody("max.NaN.f32", 2), &a, &b, &c, move |a, b, _| {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else {
            fmax(a, b)
        }
    });
    // f64 forms
    let a64: Vec<u64> = a.iter().map(|&x| (f32::from_bits(x) as f64).to_bits()).collect();
    let b64: Vec<u64> = b.iter().map(|&x| (f32::from_bits(x) as f64).to_bits()).collect();
    let want: Vec<u64> = (0..N)
        .map(|i| {
            let (x, y) = (f64::from_bits(a64[i]), f64::from_bits(b64[i]));
            (if x.is_nan() {
                y
            } else if y.is_nan() {
                x
            } else {
                x.min(y)
            })
            .to_bits()
        })
        .collect();
    let got = run64(
        "\tmov.b64 \t%fd1, %rd10;\n\tmov.b64 \t%fd2, %rd11;\n\tmin.f64 \t%fd3, %fd1, %fd2;\n\tmov.b64 \t%rd20, %fd3;",
        &a64,
        &b64,
        &b64,
    );
    ck.cmp("min.f64", got, &want, |i| format!("a={} b={}", f64::from_bits(a64[i]), f64::from_bits(b64[i])), same_f64);
    ck.finish();
}

#[test]
fn f32_ftz_flushes_subnormals() {
    let mut r = rng(12);
    // subnormal operands (exponent field 0) mixed with normal ones; products landing subnormal
    let sub = |r: &mut rand_chacha::ChaCha8Rng| -> u32 {
        (if r.gen::<bool>() { 1u32 << 31 } else { 0 }) | r.gen_range(1..(1 << 23))
    };
    let a: Vec<u32> =
        (0..N).map(|i| if i % 2 == 0 { sub(&mut r) } else { rand_f32(&mut r, -70, -60).to_bits() }).collect();
    let b: Vec<u32> =
        (0..N).map(|i| if i % 3 == 0 { sub(&mut r) } else { rand_f32(&mut r, -70, 2).to_bits() }).collect();
    let c: Vec<u32> = (0..N).map(|_| rand_f32(&mut r, -130, -120).to_bits()).collect();
    let mut ck = Check::new();
    fcheck(&mut ck, "add.rn.ftz.f32", &fbody("add.rn.ftz.f32", 2), &a, &b, &c, |a, b, _| ftz(ftz(a) + ftz(b)));
    fcheck(&mut ck, "mul.rn.ftz.f32", &fbody("mul.rn.ftz.f32", 2), &a, &b, &c, |a, b, _| ftz(ftz(a) * ftz(b)));
    fcheck(&mut ck, "fma.rn.ftz.f32", &fbody("fma.rn.ftz.f32", 3), &a, &b, &c, |a, b, c| {
        ftz(ftz(a).mul_add(ftz(b), ftz(c)))
    });
    // without .ftz subnormals are kept (IEEE)
    fcheck(&mut ck, "add.rn.f32 (subnormal)", &fbody("add.rn.f32", 2), &a, &b, &c, |a, b, _| a + b);
    fcheck(&mut ck, "mul.rn.f32 (subnormal)", &fbody("mul.rn.f32", 2), &a, &b, &c, |a, b, _| a * b);
    ck.finish();
}

#[test]
fn f32_setp_ordered_unordered() {
    let mut a = f32s(13, -2, 2);
    let mut b = f32s(14, -2, 2);
    for i in 0..N {
        match i % 6 {
            0 => a[i] = 0x7fc0_0000,
            1 => b[i] = 0xffc0_0000,
            2 => b[i] = a[i],
            3 => b[i] = a[i] ^ 0x8000_0000, // x vs -x
            _ => {}
        }
    }
    let c = a.clone();
    let mut ck = Check::new();
    type Cmp = fn(f32, f32) -> bool;
    let cmps: [(&str, Cmp); 14] = [
        ("eq", |a, b| a == b),
        ("ne", |a, b| !(a.is_nan() || b.is_nan()) && a != b),
        ("lt", |a, b| a < b),
        ("le", |a, b| a <= b),
        ("gt", |a, b| a > b),
        ("ge", |a, b| a >= b),
        ("equ", |a, b| a.is_nan() || b.is_nan() || a == b),
        ("neu", |a, b| a != b),
        ("ltu", |a, b| a.is_nan() || b.is_nan() || a < b),
        ("leu", |a, b| a.is_nan() || b.is_nan() || a <= b),
        ("gtu", |a, b| a.is_nan() || b.is_nan() || a > b),
        ("geu", |a, b| a.is_nan() || b.is_nan() || a >= b),
        ("num", |a, b| !(a.is_nan() || b.is_nan())),
        ("nan", |a, b| a.is_nan() || b.is_nan()),
    ];
    for (cmp, f) in cmps {
        let body = format!("\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\tsetp.{cmp}.f32 \t%p1, %f1, %f2;\n\tselp.u32 \t%r20, 1, 0, %p1;");
        let want: Vec<u32> = (0..N).map(|i| f(f32::from_bits(a[i]), f32::from_bits(b[i])) as u32).collect();
        ck.cmp(
            &format!("setp.{cmp}.f32"),
            run32(&body, &a, &b, &c),
            &want,
            |i| format!("a={} b={}", f32::from_bits(a[i]), f32::from_bits(b[i])),
            |g, w| g == w,
        );
    }
    ck.finish();
}

#[test]
fn f64_arith_and_roundings() {
    let mut r = rng(15);
    let a: Vec<u64> = (0..N).map(|_| rand_f64(&mut r, -30, 30).to_bits()).collect();
    let b: Vec<u64> = (0..N).map(|_| rand_f64(&mut r, -30, 30).to_bits()).collect();
    let c: Vec<u64> = (0..N).map(|_| rand_f64(&mut r, -30, 30).to_bits()).collect();
    let mut ck = Check::new();
    let body = |op: &str, n: usize| {
        let args = ["%fd1", "%fd2", "%fd3"][..n].join(", ");
        format!("\tmov.b64 \t%fd1, %rd10;\n\tmov.b64 \t%fd2, %rd11;\n\tmov.b64 \t%fd3, %rd12;\n\t{op} \t%fd4, {args};\n\tmov.b64 \t%rd20, %fd4;")
    };
    let chk = |ck: &mut Check, op: &str, n: usize, f: &dyn Fn(f64, f64, f64) -> f64| {
        let want: Vec<u64> =
            (0..N).map(|i| f(f64::from_bits(a[i]), f64::from_bits(b[i]), f64::from_bits(c[i])).to_bits()).collect();
        ck.cmp(
            op,
            run64(&body(op, n), &a, &b, &c),
            &want,
            |i| format!("a={:e} b={:e} c={:e}", f64::from_bits(a[i]), f64::from_bits(b[i]), f64::from_bits(c[i])),
            same_f64,
        );
    };
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        chk(&mut ck, &format!("add.{m}.f64"), 2, &move |a, b, _| add64(a, b, rnd));
        chk(&mut ck, &format!("mul.{m}.f64"), 2, &move |a, b, _| mul64(a, b, rnd));
    }
    chk(&mut ck, "sub.rn.f64", 2, &|a, b, _| a - b);
    chk(&mut ck, "fma.rn.f64", 3, &|a, b, c| a.mul_add(b, c));
    chk(&mut ck, "div.rn.f64", 2, &|a, b, _| a / b);
    chk(&mut ck, "rcp.rn.f64", 1, &|a, _, _| 1.0 / a);
    chk(&mut ck, "neg.f64", 1, &|a, _, _| -a);
    chk(&mut ck, "abs.f64", 1, &|a, _, _| a.abs());
    let sq = "\tmov.b64 \t%fd1, %rd10;\n\tabs.f64 \t%fd2, %fd1;\n\tsqrt.rn.f64 \t%fd4, %fd2;\n\tmov.b64 \t%rd20, %fd4;";
    let want: Vec<u64> = a.iter().map(|&x| f64::from_bits(x).abs().sqrt().to_bits()).collect();
    ck.cmp("sqrt.rn.f64", run64(sq, &a, &b, &c), &want, |i| format!("a={:e}", f64::from_bits(a[i])), same_f64);
    ck.finish();
}

/// Random f16 with exponent in [lo, hi] (normal numbers).
fn rand_h(r: &mut impl Rng, lo: i32, hi: i32) -> u16 {
    let e = r.gen_range(lo..=hi);
    (if r.gen::<bool>() { 0x8000 } else { 0 }) | (((e + 15) as u16) << 10) | r.gen_range(0..1024u16)
}
fn rand_bh(r: &mut impl Rng, lo: i32, hi: i32) -> u16 {
    let e = r.gen_range(lo..=hi);
    (if r.gen::<bool>() { 0x8000 } else { 0 }) | (((e + 127) as u16) << 7) | r.gen_range(0..128u16)
}

/// Checks a packed 2x16-bit op: `f(lane_of_a, lane_of_b, lane_of_c) -> bits` on each half.
#[allow(clippy::too_many_arguments)] // one checker for every packed op: op, operands, expectation
fn check_x2(
    ck: &mut Check,
    op: &str,
    body: &str,
    a: &[u32],
    b: &[u32],
    c: &[u32],
    target: &str,
    bf: bool,
    f: impl Fn(u16, u16, u16) -> u16,
) {
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let lo = f(a[i] as u16, b[i] as u16, c[i] as u16) as u32;
            let hi = f((a[i] >> 16) as u16, (b[i] >> 16) as u16, (c[i] >> 16) as u16) as u32;
            lo | (hi << 16)
        })
        .collect();
    let same = if bf { same_bf16 } else { same_f16 };
    ck.cmp(
        op,
        run32_target(body, a, b, c, target),
        &want,
        |i| format!("a={:#010x} b={:#010x} c={:#010x}", a[i], b[i], c[i]),
        move |g, w| same(g as u16, w as u16) && same((g >> 16) as u16, (w >> 16) as u16),
    );
}

#[test]
fn f16_and_bf16_arith() {
    let mut r = rng(16);
    let pack = |r: &mut rand_chacha::ChaCha8Rng, bf: bool| -> u32 {
        if bf {
            rand_bh(r, -10, 10) as u32 | ((rand_bh(r, -10, 10) as u32) << 16)
        } else {
            rand_h(r, -6, 6) as u32 | ((rand_h(r, -6, 6) as u32) << 16)
        }
    };
    let (ha, hb, hc): (Vec<u32>, Vec<u32>, Vec<u32>) = (
        (0..N).map(|_| pack(&mut r, false)).collect(),
        (0..N).map(|_| pack(&mut r, false)).collect(),
        (0..N).map(|_| pack(&mut r, false)).collect(),
    );
    let (ba, bb, bc): (Vec<u32>, Vec<u32>, Vec<u32>) = (
        (0..N).map(|_| pack(&mut r, true)).collect(),
        (0..N).map(|_| pack(&mut r, true)).collect(),
        (0..N).map(|_| pack(&mut r, true)).collect(),
    );
    let h = f16_val;
    let hb16 = |x: f64| f16_bits(x, Rnd::N);
    let bv = bf16_val;
    let bb16 = |x: f64| bf16_bits(x, Rnd::N);
    let x2 = |op: &str, n: usize| format!("\t{op} \t%r20, {};", ["%r10", "%r11", "%r12"][..n].join(", "));
    let mut ck = Check::new();
    // products of two f16 (22 bits) and the sums below are exact in f64, so one rounding
    check_x2(&mut ck, "add.rn.f16x2", &x2("add.rn.f16x2", 2), &ha, &hb, &hc, "sm_80", false, |a, b, _| {
        hb16(h(a) + h(b))
    });
    check_x2(&mut ck, "sub.rn.f16x2", &x2("sub.rn.f16x2", 2), &ha, &hb, &hc, "sm_80", false, |a, b, _| {
        hb16(h(a) - h(b))
    });
    check_x2(&mut ck, "mul.rn.f16x2", &x2("mul.rn.f16x2", 2), &ha, &hb, &hc, "sm_80", false, |a, b, _| {
        hb16(h(a) * h(b))
    });
    check_x2(&mut ck, "fma.rn.f16x2", &x2("fma.rn.f16x2", 3), &ha, &hb, &hc, "sm_80", false, |a, b, c| {
        hb16(h(a) * h(b) + h(c))
    });
    check_x2(
        &mut ck,
        "min.f16x2",
        &x2("min.f16x2", 2),
        &ha,
        &hb,
        &hc,
        "sm_80",
        false,
        |a, b, _| if h(a) < h(b) { a } else { b },
    );
    check_x2(
        &mut ck,
        "max.f16x2",
        &x2("max.f16x2", 2),
        &ha,
        &hb,
        &hc,
        "sm_80",
        false,
        |a, b, _| if h(a) > h(b) { a } else { b },
    );
    check_x2(&mut ck, "neg.f16x2", &x2("neg.f16x2", 1), &ha, &hb, &hc, "sm_80", false, |a, _, _| a ^ 0x8000);
    check_x2(&mut ck, "abs.f16x2", &x2("abs.f16x2", 1), &ha, &hb, &hc, "sm_80", false, |a, _, _| a & 0x7fff);
    // scalar f16 on the low halves: result in the low half, high half zero
    let scalar = "\tmov.b32 \t{%rs1, %rs2}, %r10;\n\tmov.b32 \t{%rs3, %rs4}, %r11;\n\tmov.b32 \t{%rs5, %rs6}, %r12;\n\tfma.rn.f16 \t%rs7, %rs1, %rs3, %rs5;\n\tmul.rn.f16 \t%rs8, %rs2, %rs4;\n\tmov.b32 \t%r20, {%rs7, %rs8};";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let lo = hb16(h(ha[i] as u16) * h(hb[i] as u16) + h(hc[i] as u16)) as u32;
            let hi = hb16(h((ha[i] >> 16) as u16) * h((hb[i] >> 16) as u16)) as u32;
            lo | (hi << 16)
        })
        .collect();
    ck.cmp(
        "fma.rn.f16+mul.rn.f16 (scalar)",
        run32(scalar, &ha, &hb, &hc),
        &want,
        |i| format!("a={:#x} b={:#x} c={:#x}", ha[i], hb[i], hc[i]),
        |g, w| same_f16(g as u16, w as u16) && same_f16((g >> 16) as u16, (w >> 16) as u16),
    );
    // bf16: sm_80 has fma.rn.bf16(x2) and min/max; add/mul.bf16 need sm_90
    check_x2(&mut ck, "fma.rn.bf16x2", &x2("fma.rn.bf16x2", 3), &ba, &bb, &bc, "sm_80", true, |a, b, c| {
        bb16(bv(a) * bv(b) + bv(c))
    });
    check_x2(&mut ck, "min.bf16x2", &x2("min.bf16x2", 2), &ba, &bb, &bc, "sm_80", true, |a, b, _| {
        if bv(a) < bv(b) {
            a
        } else {
            b
        }
    });
    check_x2(&mut ck, "max.bf16x2", &x2("max.bf16x2", 2), &ba, &bb, &bc, "sm_80", true, |a, b, _| {
        if bv(a) > bv(b) {
            a
        } else {
            b
        }
    });
    // scalar bf16 fma on the low halves (high half of the result: a second fma on the highs)
    let sb = "\tmov.b32 \t{%rs1, %rs2}, %r10;\n\tmov.b32 \t{%rs3, %rs4}, %r11;\n\tmov.b32 \t{%rs5, %rs6}, %r12;\n\tfma.rn.bf16 \t%rs7, %rs1, %rs3, %rs5;\n\tfma.rn.bf16 \t%rs8, %rs2, %rs4, %rs6;\n\tmov.b32 \t%r20, {%rs7, %rs8};";
    check_x2(&mut ck, "fma.rn.bf16 (scalar)", sb, &ba, &bb, &bc, "sm_80", true, |a, b, c| bb16(bv(a) * bv(b) + bv(c)));
    check_x2(&mut ck, "add.rn.bf16x2 (sm_90)", &x2("add.rn.bf16x2", 2), &ba, &bb, &bc, "sm_90", true, |a, b, _| {
        bb16(bv(a) + bv(b))
    });
    check_x2(&mut ck, "mul.rn.bf16x2 (sm_90)", &x2("mul.rn.bf16x2", 2), &ba, &bb, &bc, "sm_90", true, |a, b, _| {
        bb16(bv(a) * bv(b))
    });
    ck.finish();
}

/// Approximate transcendental ops within the bounds listed in docs/ptx-semantics.md (hardware error
/// bounds; an emulator that rounds the exact value correctly is well inside them).
#[test]
fn f32_approx_math_within_tolerance() {
    let mut r = rng(17);
    let mut ck = Check::new();
    let run1 = |op: &str, xs: &[f32]| -> Result<Vec<u32>, String> {
        let a: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
        run32(&fbody(op, 1), &a, &a, &a)
    };
    type Exact = fn(f64) -> f64;
    // (op, inputs, exact function, absolute tolerance, relative tolerance)
    let uni = |r: &mut rand_chacha::ChaCha8Rng, lo: f32, hi: f32| -> Vec<f32> {
        (0..N).map(|_| r.gen_range(lo..hi)).collect()
    };
    let cases: Vec<(&str, Vec<f32>, Exact, f64, f64)> = vec![
        ("ex2.approx.f32", uni(&mut r, -20.0, 20.0), |x| x.exp2(), 0.0, 2f64.powf(-22.0)),
        ("ex2.approx.ftz.f32", uni(&mut r, -20.0, 20.0), |x| x.exp2(), 0.0, 2f64.powf(-22.0)),
        ("lg2.approx.f32", uni(&mut r, 1e-6, 1e6), |x| x.log2(), 2f64.powf(-22.6), 2f64.powf(-22.0)),
        ("rcp.approx.f32", (0..N).map(|_| rand_f32(&mut r, -20, 20)).collect(), |x| 1.0 / x, 0.0, 2f64.powf(-23.0)),
        ("rcp.approx.ftz.f32", (0..N).map(|_| rand_f32(&mut r, -20, 20)).collect(), |x| 1.0 / x, 0.0, 2f64.powf(-23.0)),
        (
            "rsqrt.approx.f32",
            (0..N).map(|_| rand_f32(&mut r, -20, 20).abs()).collect(),
            |x| 1.0 / x.sqrt(),
            0.0,
            2f64.powf(-22.4),
        ),
        (
            "sin.approx.f32",
            uni(&mut r, -std::f32::consts::PI, std::f32::consts::PI),
            |x| x.sin(),
            2f64.powf(-20.9),
            0.0,
        ),
        (
            "cos.approx.f32",
            uni(&mut r, -std::f32::consts::PI, std::f32::consts::PI),
            |x| x.cos(),
            2f64.powf(-20.9),
            0.0,
        ),
        ("tanh.approx.f32", uni(&mut r, -6.0, 6.0), |x| x.tanh(), 0.0, 1.2e-5),
        (
            "sqrt.approx.f32",
            (0..N).map(|_| rand_f32(&mut r, -20, 20).abs()).collect(),
            |x| x.sqrt(),
            0.0,
            2f64.powf(-22.0),
        ),
    ];
    for (op, xs, exact, abs_tol, rel_tol) in cases {
        let want: Vec<u32> = xs.iter().map(|&x| (exact(x as f64) as f32).to_bits()).collect();
        ck.cmp(
            op,
            run1(op, &xs),
            &want,
            |i| format!("x={:e} exact={:e}", xs[i], exact(xs[i] as f64)),
            |g, w| {
                let (g, w) = (f32::from_bits(g) as f64, f32::from_bits(w) as f64);
                (g - w).abs() <= abs_tol + rel_tol * w.abs() + 0.5 * f32::EPSILON as f64 * w.abs()
            },
        );
    }
    // special values [ISA tables of each instruction]
    let inf = f32::INFINITY;
    let specials: Vec<(&str, f32, f32)> = vec![
        ("ex2.approx.f32", -inf, 0.0),
        ("ex2.approx.f32", inf, inf),
        ("ex2.approx.f32", f32::NAN, f32::NAN),
        ("lg2.approx.f32", 0.0, -inf),
        ("lg2.approx.f32", inf, inf),
        ("lg2.approx.f32", -1.0, f32::NAN),
        ("rcp.approx.f32", 0.0, inf),
        ("rcp.approx.f32", -0.0, -inf),
        ("rcp.approx.f32", inf, 0.0),
        ("rcp.approx.f32", -inf, -0.0),
        ("rsqrt.approx.f32", 0.0, inf),
        ("rsqrt.approx.f32", inf, 0.0),
        ("rsqrt.approx.f32", -4.0, f32::NAN),
        ("sin.approx.f32", inf, f32::NAN),
        ("cos.approx.f32", -inf, f32::NAN),
        ("sin.approx.f32", 0.0, 0.0),
        ("tanh.approx.f32", inf, 1.0),
        ("tanh.approx.f32", -inf, -1.0),
        ("tanh.approx.f32", f32::NAN, f32::NAN),
        ("rcp.rn.f32", 0.0, inf),
        ("sqrt.rn.f32", -1.0, f32::NAN),
        ("div.rn.f32", 0.0, f32::NAN), // 0/0 (b = a below)
    ];
    for (op, x, want) in specials {
        let nargs = if op.starts_with("div") { 2 } else { 1 };
        let a = vec![x.to_bits(); 3];
        let got = run32(&fbody(op, nargs), &a, &a, &a);
        ck.cmp(&format!("{op}({x})"), got, &[want.to_bits(); 3], |_| format!("x={x}"), same_f32);
    }
    ck.finish();
}

#[test]
fn ftz_applies_to_compares_and_special_functions() {
    let mut r = rng(18);
    // pairs of subnormals: without .ftz they compare by value, with .ftz both are zero
    let a: Vec<u32> =
        (0..N).map(|_| r.gen_range(1..(1u32 << 23)) | if r.gen::<bool>() { 1 << 31 } else { 0 }).collect();
    let b: Vec<u32> = (0..N)
        .map(|i| {
            if i % 4 == 0 {
                rand_f32(&mut r, -3, 3).to_bits()
            } else {
                r.gen_range(1..(1u32 << 23)) | if r.gen::<bool>() { 1 << 31 } else { 0 }
            }
        })
        .collect();
    let mut ck = Check::new();
    for (ftz_on, op) in [(false, "setp.lt.f32"), (true, "setp.lt.ftz.f32")] {
        let body = format!(
            "\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\t{op} \t%p1, %f1, %f2;\n\tselp.u32 \t%r20, 1, 0, %p1;"
        );
        let want: Vec<u32> = (0..N)
            .map(|i| {
                let (x, y) = (f32::from_bits(a[i]), f32::from_bits(b[i]));
                (if ftz_on { ftz(x) < ftz(y) } else { x < y }) as u32
            })
            .collect();
        ck.cmp(
            op,
            run32(&body, &a, &b, &b),
            &want,
            |i| format!("a={:e} b={:e}", f32::from_bits(a[i]), f32::from_bits(b[i])),
            |g, w| g == w,
        );
    }
    // lg2.approx.ftz of a subnormal: input flushed to zero -> -inf; rcp.approx.ftz -> +-inf
    let want: Vec<u32> = a.iter().map(|_| f32::NEG_INFINITY.to_bits()).collect();
    let pos: Vec<u32> = a.iter().map(|x| x & 0x7fff_ffff).collect();
    ck.cmp(
        "lg2.approx.ftz.f32(subnormal)",
        run32(&fbody("lg2.approx.ftz.f32", 1), &pos, &pos, &pos),
        &want,
        |i| format!("x={:e}", f32::from_bits(pos[i])),
        same_f32,
    );
    let want: Vec<u32> =
        a.iter().map(|&x| if x >> 31 == 1 { f32::NEG_INFINITY } else { f32::INFINITY }.to_bits()).collect();
    ck.cmp(
        "rcp.approx.ftz.f32(subnormal)",
        run32(&fbody("rcp.approx.ftz.f32", 1), &a, &a, &a),
        &want,
        |i| format!("x={:e}", f32::from_bits(a[i])),
        same_f32,
    );
    ck.finish();
}

#[test]
fn f16_compares_and_relu() {
    let mut r = rng(19);
    let pair = |r: &mut rand_chacha::ChaCha8Rng| rand_h(r, -4, 4) as u32 | ((rand_h(r, -4, 4) as u32) << 16);
    let a: Vec<u32> = (0..N).map(|_| pair(&mut r)).collect();
    let mut b: Vec<u32> = (0..N).map(|_| pair(&mut r)).collect();
    let c: Vec<u32> = (0..N).map(|_| pair(&mut r)).collect();
    for i in (0..N).step_by(5) {
        b[i] = (b[i] & 0xffff0000) | (a[i] & 0xffff); // some equal low halves
    }
    let h = f16_val;
    let mut ck = Check::new();
    // setp.f16x2 sets two predicates: low half -> first, high half -> second
    let body = "\tsetp.lt.f16x2 \t%p1|%p2, %r10, %r11;\n\tselp.u32 \t%r21, 1, 0, %p1;\n\tselp.u32 \t%r22, 2, 0, %p2;\n\tor.b32 \t%r20, %r21, %r22;";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            (h(a[i] as u16) < h(b[i] as u16)) as u32 | (((h((a[i] >> 16) as u16) < h((b[i] >> 16) as u16)) as u32) << 1)
        })
        .collect();
    ck.cmp("setp.lt.f16x2", run32(body, &a, &b, &c), &want, |i| format!("a={:#x} b={:#x}", a[i], b[i]), |g, w| g == w);
    let body = "\tmov.b32 \t{%rs1, %rs2}, %r10;\n\tmov.b32 \t{%rs3, %rs4}, %r11;\n\tsetp.ge.f16 \t%p1, %rs1, %rs3;\n\tselp.u32 \t%r20, 1, 0, %p1;";
    let want: Vec<u32> = (0..N).map(|i| (h(a[i] as u16) >= h(b[i] as u16)) as u32).collect();
    ck.cmp("setp.ge.f16", run32(body, &a, &b, &c), &want, |i| format!("a={:#x} b={:#x}", a[i], b[i]), |g, w| g == w);
    // fma.rn.relu.f16x2: negative results clamp to +0
    let body = "\tfma.rn.relu.f16x2 \t%r20, %r10, %r11, %r12;";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let one = |x: u16, y: u16, z: u16| {
                let v = f16_bits(h(x) * h(y) + h(z), Rnd::N);
                if v & 0x8000 != 0 {
                    0
                } else {
                    v
                }
            };
            one(a[i] as u16, b[i] as u16, c[i] as u16) as u32
                | ((one((a[i] >> 16) as u16, (b[i] >> 16) as u16, (c[i] >> 16) as u16) as u32) << 16)
        })
        .collect();
    ck.cmp(
        "fma.rn.relu.f16x2",
        run32(body, &a, &b, &c),
        &want,
        |i| format!("a={:#x} b={:#x} c={:#x}", a[i], b[i], c[i]),
        |g, w| g == w,
    );
    ck.finish();
}
