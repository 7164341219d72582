//! cvt [PTX ISA 9.7.9.21]: every rounding mode and saturation rule our kernels rely on.
//! - float -> int: round (.rni ties-to-even, .rzi, .rmi, .rpi), then clamp to the destination
//!   range (saturation is the default for float -> int), NaN -> 0 from f32 into 32 bits or
//!   fewer, the most negative value (`1 << (bits-1)`) from f64 or into 64 bits (ISA 9.7.9.21);
//! - .sat with a float destination clamps to [0, 1], NaN -> +0;
//! - cvt.rn.f16x2.f32 d, a, b: a -> d[31:16] (HIGH half), b -> d[15:0];
//! - f32 -> f16: .rn overflows to inf, .rz clamps to 65504 (IEEE directed-rounding overflow);
//! - integer narrowing truncates, .sat clamps; widening sign-/zero-extends.
mod common;
use common::*;
use rand::Rng;

const N: usize = 300;

/// Float inputs that exercise rounding: fractions, exact .5 ties, huge values, NaN, inf, -0.
fn float_inputs(seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..N)
        .map(|i| match i % 10 {
            0 => (r.gen_range(-300i32..300) as f32) + 0.5, // exact ties
            1 => r.gen_range(-1e12f32..1e12),              // saturates 32-bit
            2 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, -0.5, 0.5, 1.5, -1.5, 2.5][r.gen_range(0..10)],
            3 => r.gen_range(-3e9f32..5e9), // around u32/i32 limits
            _ => r.gen_range(-300.0f32..300.0),
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn round_int(x: f64, m: &str) -> f64 {
    match m {
        "rni" => x.round_ties_even(),
        "rzi" => x.trunc(),
        "rmi" => x.floor(),
        "rpi" => x.ceil(),
        _ => unreachable!(),
    }
}

/// Saturating float -> integer of `bits` width from an f32 source (NaN -> 0, or the most
/// negative value into 64 bits).
fn f2i(x: f64, m: &str, signed: bool, width: u32) -> i128 {
    f2i_from(x, m, signed, width, false)
}

/// `f2i` from an f64 source when `f64_src`: NaN gives the most negative value at any width.
fn f2i_from(x: f64, m: &str, signed: bool, width: u32, f64_src: bool) -> i128 {
    if x.is_nan() {
        return match (f64_src || width == 64, signed) {
            (false, _) => 0,
            (true, true) => -(1i128 << (width - 1)),
            (true, false) => 1i128 << (width - 1),
        };
    }
    let v = round_int(x, m);
    let (lo, hi) =
        if signed { (-(1i128 << (width - 1)), (1i128 << (width - 1)) - 1) } else { (0, (1i128 << width) - 1) };
    if v <= lo as f64 {
        lo
    } else if v >= hi as f64 {
        hi
    } else {
        v as i128
    }
}

#[test]
fn cvt_float_to_int_rounding_saturation_nan() {
    let xs = float_inputs(1);
    let a = bits(&xs);
    let mut ck = Check::new();
    for m in ["rni", "rzi", "rmi", "rpi"] {
        for (ty, signed, width) in [("s32", true, 32u32), ("u32", false, 32)] {
            let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.{ty}.f32 \t%r20, %f1;");
            let want: Vec<u32> = xs.iter().map(|&x| f2i(x as f64, m, signed, width) as u32).collect();
            ck.cmp(
                &format!("cvt.{m}.{ty}.f32"),
                run32(&body, &a, &a, &a),
                &want,
                |i| format!("x={:e}", xs[i]),
                |g, w| g == w,
            );
        }
        // 8- and 16-bit destinations (in a .b16 register, then zero-extended to 32 bits)
        for (ty, signed, width) in [("s8", true, 8u32), ("u8", false, 8), ("s16", true, 16), ("u16", false, 16)] {
            let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.{ty}.f32 \t%rs1, %f1;\n\tcvt.u32.u16 \t%r20, %rs1;");
            // a signed 8-bit result in a 16-bit register is sign-extended to 16 bits
            let want: Vec<u32> = xs.iter().map(|&x| (f2i(x as f64, m, signed, width) as i16 as u16) as u32).collect();
            ck.cmp(
                &format!("cvt.{m}.{ty}.f32"),
                run32(&body, &a, &a, &a),
                &want,
                |i| format!("x={:e}", xs[i]),
                |g, w| g == w,
            );
        }
        // 64-bit destinations, and an f64 source
        for (ty, signed) in [("s64", true), ("u64", false)] {
            let a64: Vec<u64> = a.iter().map(|&x| x as u64).collect();
            let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.{ty}.f32 \t%rd20, %f1;");
            let want: Vec<u64> = xs.iter().map(|&x| f2i(x as f64, m, signed, 64) as u64).collect();
            ck.cmp(
                &format!("cvt.{m}.{ty}.f32"),
                run64(&body, &a64, &a64, &a64),
                &want,
                |i| format!("x={:e}", xs[i]),
                |g, w| g == w,
            );
        }
        let d: Vec<f64> = xs.iter().map(|&x| x as f64 * 3.0 + 0.25).collect();
        let d64: Vec<u64> = d.iter().map(|x| x.to_bits()).collect();
        let body = format!("\tmov.b64 \t%fd1, %rd10;\n\tcvt.{m}.s32.f64 \t%r21, %fd1;\n\tcvt.s64.s32 \t%rd20, %r21;");
        let want: Vec<u64> = d.iter().map(|&x| f2i_from(x, m, true, 32, true) as i64 as u64).collect();
        ck.cmp(
            &format!("cvt.{m}.s32.f64"),
            run64(&body, &d64, &d64, &d64),
            &want,
            |i| format!("x={:e}", d[i]),
            |g, w| g == w,
        );
    }
    ck.finish();
}

#[test]
fn cvt_float_round_to_integral_and_sat() {
    let xs = float_inputs(2);
    let a = bits(&xs);
    let mut ck = Check::new();
    for m in ["rni", "rzi", "rmi", "rpi"] {
        let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.f32.f32 \t%f2, %f1;\n\tmov.b32 \t%r20, %f2;");
        let want: Vec<u32> = xs.iter().map(|&x| (round_int(x as f64, m) as f32).to_bits()).collect();
        ck.cmp(&format!("cvt.{m}.f32.f32"), run32(&body, &a, &a, &a), &want, |i| format!("x={:e}", xs[i]), same_f32);
    }
    // .sat on a float destination: clamp to [0, 1], NaN -> +0
    let mut r = rng(3);
    let ys: Vec<f32> = (0..N)
        .map(|i| {
            if i % 7 == 0 {
                f32::NAN
            } else if i % 11 == 0 {
                f32::NEG_INFINITY
            } else {
                r.gen_range(-2.0f32..2.0)
            }
        })
        .collect();
    let y = bits(&ys);
    let sat = |x: f32| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    let body = "\tmov.b32 \t%f1, %r10;\n\tcvt.sat.f32.f32 \t%f2, %f1;\n\tmov.b32 \t%r20, %f2;";
    let want: Vec<u32> = ys.iter().map(|&x| sat(x).to_bits()).collect();
    ck.cmp("cvt.sat.f32.f32", run32(body, &y, &y, &y), &want, |i| format!("x={}", ys[i]), |g, w| g == w);
    // arithmetic .sat: add.rn.sat.f32
    let zs: Vec<f32> = (0..N).map(|_| r.gen_range(-1.5f32..1.5)).collect();
    let z = bits(&zs);
    let body =
        "\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\tadd.rn.sat.f32 \t%f3, %f1, %f2;\n\tmov.b32 \t%r20, %f3;";
    let want: Vec<u32> = (0..N).map(|i| sat(ys[i] + zs[i]).to_bits()).collect();
    ck.cmp("add.rn.sat.f32", run32(body, &y, &z, &z), &want, |i| format!("a={} b={}", ys[i], zs[i]), |g, w| g == w);
    ck.finish();
}

#[test]
fn cvt_f32_to_f16_and_bf16_all_roundings() {
    let mut r = rng(4);
    // in range, subnormal-f16 range, overflow range (|x| > 65504), exact halfway cases, specials
    let xs: Vec<f32> = (0..N)
        .map(|i| match i % 6 {
            0 => rand_f32(&mut r, -14, 15),
            1 => rand_f32(&mut r, -26, -15),
            2 => rand_f32(&mut r, 16, 40),
            3 => {
                let h = rand_f32(&mut r, -5, 5);
                f32::from_bits((h.to_bits() & !0x1fff) | 0x1000) // exactly between two f16
            }
            4 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 65504.0, 65520.0, -65520.0, 65519.0, -0.0]
                [r.gen_range(0..8)],
            _ => rand_f32(&mut r, -30, 40),
        })
        .collect();
    let a = bits(&xs);
    let mut ck = Check::new();
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.f16.f32 \t%rs1, %f1;\n\tcvt.u32.u16 \t%r20, %rs1;");
        let want: Vec<u32> = xs.iter().map(|&x| f16_bits(x as f64, rnd) as u32).collect();
        ck.cmp(
            &format!("cvt.{m}.f16.f32"),
            run32(&body, &a, &a, &a),
            &want,
            |i| format!("x={:e}", xs[i]),
            |g, w| same_f16(g as u16, w as u16) && g >> 16 == 0,
        );
    }
    // the overflow rule spelled out: .rn -> inf, .rz -> 65504 (0x7bff)
    assert_eq!(f16_bits(1e6, Rnd::N), 0x7c00);
    assert_eq!(f16_bits(1e6, Rnd::Z), 0x7bff);
    assert_eq!(f16_bits(-1e6, Rnd::Z), 0xfbff);
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z)] {
        let body = format!("\tmov.b32 \t%f1, %r10;\n\tcvt.{m}.bf16.f32 \t%rs1, %f1;\n\tcvt.u32.u16 \t%r20, %rs1;");
        let ys: Vec<f32> = xs.iter().map(|&x| x * 1e30).collect(); // also overflow bf16
        let y = bits(&ys);
        let want: Vec<u32> = ys.iter().map(|&x| bf16_bits(x as f64, rnd) as u32).collect();
        ck.cmp(
            &format!("cvt.{m}.bf16.f32"),
            run32(&body, &y, &y, &y),
            &want,
            |i| format!("x={:e}", ys[i]),
            |g, w| same_bf16(g as u16, w as u16),
        );
    }
    ck.finish();
}

#[test]
fn cvt_packed_x2_first_source_goes_high() {
    let mut r = rng(5);
    let xs: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -10, 10)).collect();
    let ys: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -10, 10)).collect();
    let (a, b) = (bits(&xs), bits(&ys));
    let mut ck = Check::new();
    let body = "\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\tcvt.rn.f16x2.f32 \t%r20, %f1, %f2;";
    let want: Vec<u32> = (0..N)
        .map(|i| ((f16_bits(xs[i] as f64, Rnd::N) as u32) << 16) | f16_bits(ys[i] as f64, Rnd::N) as u32)
        .collect();
    ck.cmp("cvt.rn.f16x2.f32", run32(body, &a, &b, &a), &want, |i| format!("a={} b={}", xs[i], ys[i]), |g, w| g == w);
    let body = "\tmov.b32 \t%f1, %r10;\n\tmov.b32 \t%f2, %r11;\n\tcvt.rn.bf16x2.f32 \t%r20, %f1, %f2;";
    let want: Vec<u32> = (0..N)
        .map(|i| ((bf16_bits(xs[i] as f64, Rnd::N) as u32) << 16) | bf16_bits(ys[i] as f64, Rnd::N) as u32)
        .collect();
    ck.cmp("cvt.rn.bf16x2.f32", run32(body, &a, &b, &a), &want, |i| format!("a={} b={}", xs[i], ys[i]), |g, w| g == w);
    // f16 -> f32 is exact, for every f16 class (normal, subnormal, inf, NaN)
    let hs: Vec<u32> = (0..N)
        .map(|i| match i % 5 {
            0 => r.gen_range(1..0x400u32) | if r.gen::<bool>() { 0x8000 } else { 0 }, // subnormal
            1 => [0x7c00u32, 0xfc00, 0x7e00, 0x8000][r.gen_range(0..4)],
            _ => r.gen_range(0..0x7c00u32) | if r.gen::<bool>() { 0x8000 } else { 0 },
        })
        .collect();
    let body = "\tcvt.u16.u32 \t%rs1, %r10;\n\tcvt.f32.f16 \t%f1, %rs1;\n\tmov.b32 \t%r20, %f1;";
    let want: Vec<u32> = hs.iter().map(|&h| (f16_val(h as u16) as f32).to_bits()).collect();
    ck.cmp("cvt.f32.f16", run32(body, &hs, &hs, &hs), &want, |i| format!("h={:#06x}", hs[i]), same_f32);
    ck.finish();
}

#[test]
fn cvt_f64_f32_and_int_to_float() {
    let mut r = rng(6);
    let ds: Vec<f64> = (0..N)
        .map(|i| match i % 5 {
            0 => rand_f64(&mut r, 120, 135),   // around f32 overflow
            1 => rand_f64(&mut r, -155, -120), // f32 subnormal range
            _ => rand_f64(&mut r, -60, 60),
        })
        .collect();
    let d: Vec<u64> = ds.iter().map(|x| x.to_bits()).collect();
    let mut ck = Check::new();
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        let body = format!("\tmov.b64 \t%fd1, %rd10;\n\tcvt.{m}.f32.f64 \t%f1, %fd1;\n\tmov.b32 \t%r21, %f1;\n\tcvt.u64.u32 \t%rd20, %r21;");
        let want: Vec<u64> = ds.iter().map(|&x| round_bits(x, F32, rnd) as u64).collect();
        ck.cmp(
            &format!("cvt.{m}.f32.f64"),
            run64(&body, &d, &d, &d),
            &want,
            |i| format!("x={:e}", ds[i]),
            |g, w| same_f32(g as u32, w as u32),
        );
    }
    // f32 -> f64 exact
    let xs: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -140, 127)).collect();
    let x64: Vec<u64> = xs.iter().map(|x| x.to_bits() as u64).collect();
    let want: Vec<u64> = xs.iter().map(|&x| (x as f64).to_bits()).collect();
    ck.cmp(
        "cvt.f64.f32",
        run64("\tmov.b32 \t%f1, %r10;\n\tcvt.f64.f32 \t%fd1, %f1;\n\tmov.b64 \t%rd20, %fd1;", &x64, &x64, &x64),
        &want,
        |i| format!("x={:e}", xs[i]),
        |g, w| g == w,
    );
    // int -> f32 with each rounding (32-bit integers are exact in f64, so round_bits is exact)
    let is: Vec<u32> = (0..N).map(|i| if i % 3 == 0 { r.gen::<u32>() | 0x0100_0001 } else { r.gen() }).collect();
    for (m, rnd) in [("rn", Rnd::N), ("rz", Rnd::Z), ("rm", Rnd::M), ("rp", Rnd::P)] {
        for (ty, signed) in [("s32", true), ("u32", false)] {
            let body = format!("\tcvt.{m}.f32.{ty} \t%f1, %r10;\n\tmov.b32 \t%r20, %f1;");
            let want: Vec<u32> =
                is.iter().map(|&v| round_bits(if signed { v as i32 as f64 } else { v as f64 }, F32, rnd)).collect();
            ck.cmp(
                &format!("cvt.{m}.f32.{ty}"),
                run32(&body, &is, &is, &is),
                &want,
                |i| format!("v={:#x}", is[i]),
                |g, w| g == w,
            );
        }
    }
    // 64-bit integers -> f64 (round to nearest even, as Rust's `as`)
    let ls: Vec<u64> = (0..N).map(|_| r.gen()).collect();
    let want: Vec<u64> = ls.iter().map(|&v| (v as i64 as f64).to_bits()).collect();
    ck.cmp(
        "cvt.rn.f64.s64",
        run64("\tcvt.rn.f64.s64 \t%fd1, %rd10;\n\tmov.b64 \t%rd20, %fd1;", &ls, &ls, &ls),
        &want,
        |i| format!("v={:#x}", ls[i]),
        |g, w| g == w,
    );
    let want: Vec<u64> = ls.iter().map(|&v| (v as f64).to_bits()).collect();
    ck.cmp(
        "cvt.rn.f64.u64",
        run64("\tcvt.rn.f64.u64 \t%fd1, %rd10;\n\tmov.b64 \t%rd20, %fd1;", &ls, &ls, &ls),
        &want,
        |i| format!("v={:#x}", ls[i]),
        |g, w| g == w,
    );
    ck.finish();
}

#[test]
fn cvt_integer_widen_narrow_sat() {
    let mut r = rng(7);
    let edge =
        [0u32, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff_ff80];
    let a: Vec<u32> = (0..N).map(|i| if i % 3 == 0 { edge[r.gen_range(0..edge.len())] } else { r.gen() }).collect();
    let mut ck = Check::new();
    type F = fn(u32) -> u32;
    let cases: [(&str, F); 12] = [
        ("cvt.s32.s8", |a| a as u8 as i8 as i32 as u32),
        ("cvt.u32.u8", |a| a & 0xff),
        ("cvt.s32.s16", |a| a as u16 as i16 as i32 as u32),
        ("cvt.u32.u16", |a| a & 0xffff),
        ("cvt.sat.s32.u32", |a| a.min(i32::MAX as u32)),
        ("cvt.sat.u32.s32", |a| (a as i32).max(0) as u32),
        ("cvt.s32.u8", |a| a & 0xff),
        ("cvt.u32.s8", |a| a as u8 as i8 as i32 as u32),
        ("cvt.sat.s8.s32", |a| (a as i32).clamp(-128, 127) as u32),
        ("cvt.sat.u8.s32", |a| (a as i32).clamp(0, 255) as u32),
        ("cvt.sat.s16.s32", |a| (a as i32).clamp(-32768, 32767) as u32),
        ("cvt.sat.u16.u32", |a| a.min(65535)),
    ];
    for (op, f) in cases {
        let body = format!("\t{op} \t%r20, %r10;");
        let want: Vec<u32> = a.iter().map(|&x| f(x)).collect();
        ck.cmp(op, run32(&body, &a, &a, &a), &want, |i| format!("a={:#x}", a[i]), |g, w| g == w);
    }
    // through 16-bit registers: truncation then sign-/zero-extension on the way back
    let body = "\tcvt.u16.u32 \t%rs1, %r10;\n\tcvt.s32.s16 \t%r20, %rs1;";
    let want: Vec<u32> = a.iter().map(|&x| x as u16 as i16 as i32 as u32).collect();
    ck.cmp("cvt.u16.u32 + cvt.s32.s16", run32(body, &a, &a, &a), &want, |i| format!("a={:#x}", a[i]), |g, w| g == w);
    let a64: Vec<u64> = a.iter().map(|&x| ((x as u64) << 29) ^ r.gen::<u64>()).collect();
    let want: Vec<u64> =
        a64.iter().map(|&x| (x as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32 as i64 as u64).collect();
    ck.cmp(
        "cvt.sat.s32.s64",
        run64("\tcvt.sat.s32.s64 \t%r21, %rd10;\n\tcvt.s64.s32 \t%rd20, %r21;", &a64, &a64, &a64),
        &want,
        |i| format!("a={:#x}", a64[i]),
        |g, w| g == w,
    );
    let want: Vec<u64> = a64.iter().map(|&x| x as u32 as u64).collect();
    ck.cmp(
        "cvt.u32.u64",
        run64("\tcvt.u32.u64 \t%r21, %rd10;\n\tcvt.u64.u32 \t%rd20, %r21;", &a64, &a64, &a64),
        &want,
        |i| format!("a={:#x}", a64[i]),
        |g, w| g == w,
    );
    ck.finish();
}
