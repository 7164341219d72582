//! LayerNorm (fast vectorised and simple variants, with and without the int8 side output) and
//! per-token quantisation vs CPU references.
//!
//! Tolerance: the kernel computes in f32 (rsqrt.approx: 2^-22 relative) and rounds once to
//! fp16, so |out - ref| <= |ref| * 2^-11 (half an fp16 ulp) + 2e-5 (f32 statistics error on
//! unit-scale rows, amplified by |gamma| <= 1 and rstd ~ 1.7). Int8 codes are compared exactly
//! with `reference::quantize` of the kernel's own fp16 output (the rule is exact f32 math).
mod kernels_util;
use fusebert_kernels::{self, reference, Q8Out, Variant};
use half::f16;
use kernels_util::*;

const ROWS: usize = 37;
const EPS: f32 = 1e-12;

fn case(dev: &fusebert_kernels::Device, seed: u64, hidden: usize, with_res: bool, q8: bool, variant: Variant) -> f32 {
    let mut r = rng(seed);
    let n = ROWS * hidden;
    let x = rand_f16(&mut r, n, 2.0);
    let res = rand_f16(&mut r, n, 1.0);
    let bias = rand_f16(&mut r, hidden, 0.5);
    let gamma = rand_f16(&mut r, hidden, 1.0);
    let beta = rand_f16(&mut r, hidden, 0.5);
    let (dx, dr, db, dg, dbe) = (
        dev.upload(&x).unwrap(),
        dev.upload(&res).unwrap(),
        dev.upload(&bias).unwrap(),
        dev.upload(&gamma).unwrap(),
        dev.upload(&beta).unwrap(),
    );
    let mut out = poisoned::<f16>(dev, n);
    let mut q = poisoned::<i8>(dev, n);
    let mut qs = poisoned::<f32>(dev, ROWS);
    let (ro, bo) = if with_res { (Some(&dr), Some(&db)) } else { (None, None) };
    clear(dev);
    if q8 {
        fusebert_kernels::layernorm_f16(
            dev,
            &fusebert_kernels::LayerNormF16 {
                x: &dx,
                residual: ro,
                bias: bo,
                gamma: &dg,
                beta: &dbe,
                rows: ROWS,
                hidden,
                eps: EPS,
            },
            &mut out,
            Some(Q8Out { q: &mut q, scale: &mut qs, smooth: None }),
            variant,
        )
        .unwrap();
    } else {
        fusebert_kernels::layernorm_f16(
            dev,
            &fusebert_kernels::LayerNormF16 {
                x: &dx,
                residual: ro,
                bias: bo,
                gamma: &dg,
                beta: &dbe,
                rows: ROWS,
                hidden,
                eps: EPS,
            },
            &mut out,
            None,
            variant,
        )
        .unwrap();
    }
    let what = format!("layernorm {variant:?} hidden {hidden} residual {with_res} q8 {q8}");
    let params = reference::LayerNormParams { gamma: &gamma, beta: &beta, eps: EPS };
    let want =
        reference::layernorm(&x, with_res.then_some(&res[..]), with_res.then_some(&bias[..]), params, ROWS, hidden);
    let got_h = out.to_host().unwrap();
    let err = check_close(&what, &to_f32(&got_h), &want, |w, _| half_ulp(w) + 2e-5);
    if q8 {
        let (wq, ws) = reference::quantize(&got_h, ROWS, hidden);
        assert_eq!(q.to_host().unwrap(), wq, "{what}: int8 codes");
        assert_eq!(qs.to_host().unwrap(), ws, "{what}: scales");
    }
    if let (Some(c), true) = (last_counters(dev), variant == Variant::Fast && hidden % 8 == 0) {
        assert_no_local(&c, &what);
        assert!(c.global_load_efficiency() >= 0.9, "{what}: load efficiency {}", c.global_load_efficiency());
        // minimum traffic: rows of x (+ residual) read once, out (+ q8 + scales) written once,
        // the parameter vectors read once
        let row_bytes = (n * 2 * if with_res { 2 } else { 1 }) as u64;
        let params = (hidden * 2 * if with_res { 3 } else { 2 }) as u64;
        let out_bytes = (n * 2) as u64 + if q8 { (n + ROWS * 4) as u64 } else { 0 };
        let min = row_bytes + params + out_bytes;
        let got = c.global_load_bytes + c.global_store_bytes;
        assert!(got as f64 <= 1.05 * min as f64, "{what}: global bytes {got} > 1.05 x minimum {min}");
        assert_eq!(c.global_store_bytes, out_bytes, "{what}: store bytes");
    }
    err
}

#[test]
fn layernorm_fast_matches_reference() {
    let mut max = 0f32;
    for dev in devices() {
        for (i, &h) in [128usize, 384, 768].iter().enumerate() {
            max = max.max(case(&dev, i as u64, h, true, false, Variant::Fast));
            max = max.max(case(&dev, 10 + i as u64, h, false, false, Variant::Fast));
        }
        // the largest register-resident row: 4 vectors of 8 per thread, 128 threads
        max = max.max(case(&dev, 13, 4096, true, false, Variant::Fast));
    }
    eprintln!("layernorm fast: max |err| = {max:e}");
}

#[test]
fn layernorm_q8_codes_are_exact() {
    for dev in devices() {
        for (i, &h) in [128usize, 768].iter().enumerate() {
            case(&dev, 20 + i as u64, h, true, true, Variant::Fast);
            case(&dev, 30 + i as u64, h, true, true, Variant::Simple);
        }
        // block-per-row (`_wide`) kernel
        case(&dev, 32, 2048, true, true, Variant::Fast);
    }
}

#[test]
fn layernorm_simple_and_odd_hidden() {
    for dev in devices() {
        case(&dev, 40, 384, true, false, Variant::Simple);
        // 100 % 8 != 0: the fast entry point falls back to the scalar kernel
        case(&dev, 41, 100, true, false, Variant::Fast);
        case(&dev, 42, 100, false, true, Variant::Fast);
    }
}

#[test]
fn quantize_matches_reference_exactly() {
    for dev in devices() {
        for (i, &h) in [128usize, 384, 768, 3072].iter().enumerate() {
            let mut r = rng(50 + i as u64);
            let rows = 19;
            let mut x = rand_f16(&mut r, rows * h, 3.0);
            x[h..2 * h].iter_mut().for_each(|v| *v = f16::ZERO); // an all-zero row: scale 0
            let dx = dev.upload(&x).unwrap();
            let mut q = poisoned::<i8>(&dev, rows * h);
            let mut s = poisoned::<f32>(&dev, rows);
            clear(&dev);
            fusebert_kernels::quantize_i8(
                &dev,
                &fusebert_kernels::QuantizeF16 { x: &dx, smooth: None, rows, hidden: h },
                fusebert_kernels::QuantizedI8 { q: &mut q, scale: &mut s, zero: None },
            )
            .unwrap();
            let (wq, ws) = reference::quantize(&x, rows, h);
            assert_eq!(q.to_host().unwrap(), wq, "hidden {h}");
            assert_eq!(s.to_host().unwrap(), ws, "hidden {h}");
            if let Some(c) = last_counters(&dev) {
                assert_no_local(&c, "quantize");
                assert!(c.global_load_efficiency() >= 0.9);
            }
        }
        let x = dev.upload(&[f16::ONE; 30]).unwrap();
        let mut q = dev.alloc::<i8>(30).unwrap();
        let mut s = dev.alloc::<f32>(3).unwrap();
        assert_kernel_err(
            fusebert_kernels::quantize_i8(
                &dev,
                &fusebert_kernels::QuantizeF16 { x: &x, smooth: None, rows: 3, hidden: 10 },
                fusebert_kernels::QuantizedI8 { q: &mut q, scale: &mut s, zero: None },
            ),
            "quantize_i8_f16",
        );
    }
}

#[test]
fn layernorm_errors_name_the_kernel() {
    let dev = fusebert_kernels::Device::emulator().unwrap();
    let x = dev.upload(&[f16::ONE; 64]).unwrap();
    let g = dev.upload(&[f16::ONE; 32]).unwrap();
    let mut out = dev.alloc::<f16>(64).unwrap();
    // 3 rows of 32 need 96 elements
    assert_kernel_err(
        fusebert_kernels::layernorm_f16(
            &dev,
            &fusebert_kernels::LayerNormF16 {
                x: &x,
                residual: None,
                bias: None,
                gamma: &g,
                beta: &g,
                rows: 3,
                hidden: 32,
                eps: 1e-5,
            },
            &mut out,
            None,
            fusebert_kernels::Variant::Fast,
        ),
        "layernorm_f16",
    );
    assert_kernel_err(
        fusebert_kernels::layernorm_f16(
            &dev,
            &fusebert_kernels::LayerNormF16 {
                x: &x,
                residual: None,
                bias: None,
                gamma: &g,
                beta: &g,
                rows: 2,
                hidden: 32,
                eps: 0.0,
            },
            &mut out,
            None,
            fusebert_kernels::Variant::Fast,
        ),
        "layernorm_f16",
    );
}

/// SmoothQuant-style multipliers: layernorm_q8 (warp, wide and simple kernels) and quantize
/// quantise `out[r, j] * smooth[j]`; codes and scales exact against the reference rule.
#[test]
fn smoothed_q8_codes_are_exact() {
    for dev in devices() {
        for (i, (h, variant)) in
            [(384usize, Variant::Fast), (2048, Variant::Fast), (384, Variant::Simple)].into_iter().enumerate()
        {
            let mut r = rng(70 + i as u64);
            let n = ROWS * h;
            let x = rand_f16(&mut r, n, 2.0);
            let gamma = rand_f16(&mut r, h, 1.0);
            let beta = rand_f16(&mut r, h, 0.5);
            // positive multipliers spanning two decades, like real smoothing factors
            let smooth: Vec<f16> =
                rand_f16(&mut r, h, 1.0).iter().map(|v| f16::from_f32(10f32.powf(v.to_f32()))).collect();
            let (dx, dg, dbe, dm) = (
                dev.upload(&x).unwrap(),
                dev.upload(&gamma).unwrap(),
                dev.upload(&beta).unwrap(),
                dev.upload(&smooth).unwrap(),
            );
            let mut out = poisoned::<f16>(&dev, n);
            let mut q = poisoned::<i8>(&dev, n);
            let mut qs = poisoned::<f32>(&dev, ROWS);
            let q8 = Q8Out { q: &mut q, scale: &mut qs, smooth: Some(&dm) };
            fusebert_kernels::layernorm_f16(
                &dev,
                &fusebert_kernels::LayerNormF16 {
                    x: &dx,
                    residual: None,
                    bias: None,
                    gamma: &dg,
                    beta: &dbe,
                    rows: ROWS,
                    hidden: h,
                    eps: EPS,
                },
                &mut out,
                Some(q8),
                variant,
            )
            .unwrap();
            let got_h = out.to_host().unwrap();
            let (wq, ws) = reference::quantize_smoothed(&got_h, Some(&smooth), ROWS, h);
            assert_eq!(q.to_host().unwrap(), wq, "layernorm {variant:?} hidden {h}: smoothed codes");
            assert_eq!(qs.to_host().unwrap(), ws, "layernorm {variant:?} hidden {h}: smoothed scales");
            // the same multipliers through the standalone quantize kernel
            let mut q2 = poisoned::<i8>(&dev, n);
            let mut qs2 = poisoned::<f32>(&dev, ROWS);
            fusebert_kernels::quantize_i8(
                &dev,
                &fusebert_kernels::QuantizeF16 { x: &dx, smooth: Some(&dm), rows: ROWS, hidden: h },
                fusebert_kernels::QuantizedI8 { q: &mut q2, scale: &mut qs2, zero: None },
            )
            .unwrap();
            let (wq2, ws2) = reference::quantize_smoothed(&x, Some(&smooth), ROWS, h);
            assert_eq!(q2.to_host().unwrap(), wq2, "quantize hidden {h}: smoothed codes");
            assert_eq!(qs2.to_host().unwrap(), ws2, "quantize hidden {h}: smoothed scales");
        }
    }
}

/// Asymmetric per-token quantisation (the FFN2 input): codes, scales and zero points exact
/// against the reference rule, on the warp-per-row and block-per-row kernels, with and without
/// smoothing, on rows that are one-sided like GELU outputs, all negative, all positive, all zero
/// and a single non-zero value; and every row dequantises to within one step of its input.
#[test]
fn asymmetric_quantize_is_exact_and_uses_the_whole_code_range() {
    for dev in devices() {
        for (i, (h, smoothed)) in [(384usize, false), (1536, true), (3072, false), (128, true)].into_iter().enumerate()
        {
            let mut r = rng(90 + i as u64);
            let rows = 13;
            // GELU-like rows: mostly in [-0.17, 0] with a positive tail
            let mut x: Vec<f16> =
                rand_f16(&mut r, rows * h, 2.0).iter().map(|v| f16::from_f32(reference::gelu(v.to_f32()))).collect();
            x[h..2 * h].iter_mut().for_each(|v| *v = f16::ZERO);
            x[2 * h..3 * h].iter_mut().for_each(|v| *v = f16::from_f32(-v.to_f32().abs() - 0.01));
            x[3 * h..4 * h].iter_mut().for_each(|v| *v = f16::from_f32(v.to_f32().abs() + 0.01));
            x[4 * h..5 * h]
                .iter_mut()
                .enumerate()
                .for_each(|(j, v)| *v = if j == 7 { f16::from_f32(-0.5) } else { f16::ZERO });
            let smooth: Option<Vec<f16>> = smoothed
                .then(|| rand_f16(&mut r, h, 1.0).iter().map(|v| f16::from_f32(10f32.powf(v.to_f32()))).collect());
            let dx = dev.upload(&x).unwrap();
            let dm = smooth.as_ref().map(|m| dev.upload(m).unwrap());
            let mut q = poisoned::<i8>(&dev, rows * h);
            let mut s = poisoned::<f32>(&dev, rows);
            let mut z = poisoned::<i32>(&dev, rows);
            clear(&dev);
            fusebert_kernels::quantize_i8(
                &dev,
                &fusebert_kernels::QuantizeF16 { x: &dx, smooth: dm.as_ref(), rows, hidden: h },
                fusebert_kernels::QuantizedI8 { q: &mut q, scale: &mut s, zero: Some(&mut z) },
            )
            .unwrap();
            let what = format!("{} hidden {h} smoothed {smoothed}", dev.name());
            let (wq, ws, wz) = reference::quantize_asym(&x, smooth.as_deref(), rows, h);
            let (gq, gs, gz) = (q.to_host().unwrap(), s.to_host().unwrap(), z.to_host().unwrap());
            assert_eq!(gq, wq, "{what}: codes");
            assert_eq!(gs, ws, "{what}: scales");
            assert_eq!(gz, wz, "{what}: zero points");
            assert_eq!((gs[1], gz[1]), (0.0, 0), "{what}: all-zero row");
            assert!(gq[h..2 * h].iter().all(|&c| c == 0), "{what}: all-zero row codes");
            for row in 0..rows {
                let codes = &gq[row * h..(row + 1) * h];
                // the range is [min(0, x), max(0, x)]: a row's negative extreme takes the lowest
                // code and its positive extreme the highest (within a rounding of the zero point)
                let xr = &x[row * h..(row + 1) * h];
                if xr.iter().any(|v| v.to_f32() < 0.0) {
                    assert!(*codes.iter().min().unwrap() <= -127, "{what}: row {row} lowest code");
                }
                if xr.iter().any(|v| v.to_f32() > 0.0) {
                    assert!(*codes.iter().max().unwrap() >= 126, "{what}: row {row} highest code");
                }
                for (j, &c) in codes.iter().enumerate() {
                    let v = x[row * h + j].to_f32() * smooth.as_ref().map_or(1.0, |m| m[j].to_f32());
                    let d = (c as i32 - gz[row]) as f32 * gs[row];
                    assert!((d - v).abs() <= gs[row] * 1.0001, "{what}: row {row} col {j}: {d} vs {v}");
                }
            }
            if let Some(c) = last_counters(&dev) {
                assert_no_local(&c, "quantize_i8_asym");
                assert!(c.global_load_efficiency() >= 0.9);
            }
        }
        let x = dev.upload(&[f16::ONE; 32]).unwrap();
        let mut q = dev.alloc::<i8>(32).unwrap();
        let mut s = dev.alloc::<f32>(4).unwrap();
        let mut z = dev.alloc::<i32>(3).unwrap();
        // 4 rows need 4 zero points
        assert_kernel_err(
            fusebert_kernels::quantize_i8(
                &dev,
                &fusebert_kernels::QuantizeF16 { x: &x, smooth: None, rows: 4, hidden: 8 },
                fusebert_kernels::QuantizedI8 { q: &mut q, scale: &mut s, zero: Some(&mut z) },
            ),
            "quantize_i8_asym_f16",
        );
    }
}
