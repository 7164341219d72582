//! The epilogue GELU (`gelu_erf` in kernels/common.cuh) against the exact GELU in f64, over a
//! dense sweep of f32 inputs, through the activation probe kernels (f32 in and out, so the
//! error is seen at f32 resolution rather than through the GEMMs' fp16 rounding), beside the
//! erff form it replaced. (Instruction counts: see the comment on `gelu_erf`; the emulator
//! counts PTX, where NVVM materialises each FFMA constant with a `mov` that ptxas folds, so
//! the SASS is the figure that compares.)
//!
//! Error budget of `gelu_erf` (relative to |GELU(x)|): the polynomial fit 4.8e-7, rcp.approx
//! (1 ulp) and ex2.approx (2 ulp) ~3.6e-7, f32 rounding of the Horner steps and products
//! ~3e-7, and the two roundings of the exponent u = -a^2 log2(e) / 2 (2^-23 |u|, times ln 2 on
//! the result): 6e-8 a^2. Bound used: (1.5e-6 + 6e-8 a^2) |GELU(x)| + 1e-37 (f32 underflow
//! of the far negative tail, where GELU(x) < 1e-37). The fp16 output rounds at 2^-12 relative,
//! 160x coarser.
mod kernels_util;
use fusebert_core::numerics::erf::erfc;
use fusebert_kernels::device::{KernelArg, LaunchConfig};
use fusebert_kernels::Device;
use kernels_util::*;
use rand::Rng;

const GELU_ERF: &str = "probe_gelu_erf_f32";
const GELU_ERF_LIBM: &str = "probe_gelu_erf_libm_f32";
const GELU_TANH: &str = "probe_gelu_tanh_f32";

fn exact_gelu(x: f32) -> f64 {
    let x = x as f64;
    0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

fn exact_gelu_tanh(x: f32) -> f64 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// Runs probe kernel `probe` over `xs`.
fn probe(dev: &Device, xs: &[f32], probe: &str) -> Vec<f32> {
    let x = dev.upload(xs).unwrap();
    let y = poisoned::<f32>(dev, xs.len());
    clear(dev);
    let blocks = xs.len().div_ceil(256).min(1024) as u32;
    let args = [KernelArg::from(&x), KernelArg::from(&y), KernelArg::U32(xs.len() as u32)];
    dev.launch(probe, LaunchConfig::linear(blocks, 256, 0), &args).unwrap();
    y.to_host().unwrap()
}

/// Every f32 step of 2^-12 over [-10, 10], random points over [-40, 40], and the values where
/// the formula changes branch or saturates.
fn sweep() -> Vec<f32> {
    let mut xs: Vec<f32> = (-40960..=40960).map(|i| i as f32 / 4096.0).collect();
    let mut r = rng(14);
    xs.extend((0..20000).map(|_| r.gen_range(-40.0f32..40.0)));
    xs.extend([0.0, -0.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-30, -1e-30, 13.0, -13.0, 14.0, -14.0, 1e30, -1e30]);
    xs
}

#[test]
fn gelu_erf_matches_exact_gelu_dense_sweep() {
    let xs = sweep();
    for dev in devices() {
        let got = probe(&dev, &xs, GELU_ERF);
        let libm = probe(&dev, &xs, GELU_ERF_LIBM);
        let (mut max_abs, mut max_rel, mut max_ulp) = (0f64, 0f64, 0f64);
        let (mut libm_abs, mut libm_rel) = (0f64, 0f64);
        for ((&x, &g), &l) in xs.iter().zip(&got).zip(&libm) {
            let w = exact_gelu(x);
            let a = x.abs() as f64;
            let err = (g as f64 - w).abs();
            let tol = (1.5e-6 + 6e-8 * a * a) * w.abs() + 1e-37;
            assert!(err <= tol, "gelu_erf({x:e}) = {g:e}, exact {w:e}, |err| {err:e} > {tol:e}");
            if x.abs() <= 10.0 {
                max_abs = max_abs.max(err);
                libm_abs = libm_abs.max((l as f64 - w).abs());
            }
            // relative and ulp error where the output is a normal fp16 number
            if w.abs() >= 2f64.powi(-14) {
                max_rel = max_rel.max(err / w.abs());
                libm_rel = libm_rel.max((l as f64 - w).abs() / w.abs());
                let ulp = 2f64.powi((w.abs() as f32).to_bits() as i32 / (1 << 23) - 127 - 23);
                max_ulp = max_ulp.max(err / ulp);
            }
        }
        eprintln!(
            "gelu_erf vs f64 GELU, {} inputs: max |err| {max_abs:.3e} on [-10, 10]; where |GELU| >= 2^-14: max rel \
             {max_rel:.3e} = {max_ulp:.1} f32 ulp. erff form: max |err| {libm_abs:.3e}, max rel {libm_rel:.3e}",
            xs.len()
        );
        // no less accurate than the erff form it replaced, anywhere the fp16 output can see
        assert!(max_rel <= libm_rel, "rel {max_rel:e} > erff form's {libm_rel:e}");
        assert!(max_abs <= 2.0 * libm_abs, "abs {max_abs:e} vs erff form's {libm_abs:e}");
        // special values: NaN propagates, +inf stays, zero signs as x * Phi(x)
        let sp = probe(&dev, &[f32::NAN, f32::INFINITY, 0.0, -0.0], GELU_ERF);
        assert!(sp[0].is_nan() && sp[1] == f32::INFINITY, "{sp:?}");
        assert_eq!((sp[2].to_bits(), sp[3].to_bits()), (0.0f32.to_bits(), (-0.0f32).to_bits()));
    }
}

/// `gelu_tanh` (the model's `gelu_new`) is its formula in f32 (libm tanhf): within a few f32
/// ulps of the f64 formula where the output is fp16-normal (tanhf: 2 ulp; the products and
/// 1 + tanh: 3 roundings), absolute 2^-24 |x| where 1 + tanh cancels.
#[test]
fn gelu_tanh_is_its_formula() {
    let xs = sweep();
    for dev in devices() {
        let got = probe(&dev, &xs, GELU_TANH);
        let mut max_rel = 0f64;
        for (&x, &g) in xs.iter().zip(&got) {
            let w = exact_gelu_tanh(x);
            let err = (g as f64 - w).abs();
            let tol = 6.0 * 2f64.powi(-24) * w.abs() + 2f64.powi(-24) * (x.abs() as f64) + 1e-37;
            assert!(err <= tol, "gelu_tanh({x:e}) = {g:e}, formula {w:e}, |err| {err:e} > {tol:e}");
            if w.abs() >= 2f64.powi(-14) {
                max_rel = max_rel.max(err / w.abs());
            }
        }
        eprintln!("gelu_tanh vs its f64 formula: max rel {max_rel:.3e} where |y| >= 2^-14");
    }
}
