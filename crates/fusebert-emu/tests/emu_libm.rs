//! nvcc's single-precision math library through the emulator: precise `expf`, `logf`,
//! `tanhf`, `erff` (GELU), `rsqrtf`, `sinf`, `cosf`, ... compile to sequences of fma.rm,
//! ex2.approx.ftz, lg2.approx, rcp.approx and friends. Each result must stay within the maximum
//! ulp error the CUDA C++ Programming Guide documents for that function (Mathematical Functions
//! appendix, single precision), measured against an f64 reference. This checks that the
//! emulator's instruction semantics compose into what real kernels compute.
mod common;
use common::*;
use fusebert_kernels::KernelArg;
use rand::Rng;
use std::sync::OnceLock;

const LIBM_CU: &str = r#"
#define K(name, expr) extern "C" __global__ void name(const float* x, const float* y, float* out, int n) { \
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) { float a = x[i]; float b = y[i]; out[i] = (expr); } }
K(k_expf, expf(a))
K(k_exp2f, exp2f(a))
K(k_logf, logf(a))
K(k_log2f, log2f(a))
K(k_tanhf, tanhf(a))
K(k_erff, erff(a))
K(k_rsqrtf, rsqrtf(a))
K(k_sqrtf, sqrtf(a))
K(k_div, a / b)
K(k_sinf, sinf(a))
K(k_cosf, cosf(a))
K(k_powf, powf(a, b))
K(k_gelu, 0.5f * a * (1.0f + erff(a * 0.70710678118654752f)))
K(k_fast_expf, __expf(a))
"#;

fn ptx() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| compile_cu("libm", LIBM_CU))
}

/// erf by its Maclaurin series in f64 (|x| <= 3.5: the alternating series keeps > 10 digits).
fn erf64(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    assert!(x.abs() <= 3.5);
    let mut term = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let t = term / (2 * n + 1) as f64;
        sum += t;
        if t.abs() < 1e-18 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// Distance from `got` to the exact value in units of the f32 ulp at the exact value.
fn ulps(got: f32, exact: f64) -> f64 {
    if got.is_nan() || exact.is_nan() {
        return if got.is_nan() && exact.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if exact == 0.0 {
        return if got == 0.0 { 0.0 } else { (got as f64).abs() / 2f64.powi(-149) };
    }
    let e = exact.abs().log2().floor() as i32;
    let ulp = 2f64.powi((e - 23).max(-149));
    ((got as f64) - exact).abs() / ulp
}

fn check(kernel: &str, xs: &[f32], ys: &[f32], exact: impl Fn(f64, f64) -> f64, max_ulps: f64) -> f64 {
    let dev = emu();
    dev.load_module("libm", ptx()).unwrap_or_else(|e| panic!("load: {e}"));
    let n = xs.len();
    let (dx, dy) = (dev.upload(xs).unwrap(), dev.upload(ys).unwrap());
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    launch_ok(
        &dev,
        "libm",
        kernel,
        lin((n as u32).div_ceil(128), 128),
        &[ptr(&dx), ptr(&dy), ptr(&out), KernelArg::I32(n as i32)],
    );
    let got = out.to_host().unwrap();
    let mut worst = 0f64;
    for i in 0..n {
        let ex = exact(xs[i] as f64, ys[i] as f64);
        let u = ulps(got[i], ex);
        assert!(
            u <= max_ulps,
            "{kernel}(x={:e}, y={:e}) = {:e}, exact {:e}: {u:.2} ulp > {max_ulps}",
            xs[i],
            ys[i],
            got[i],
            ex
        );
        worst = worst.max(u);
    }
    eprintln!("{kernel}: worst {worst:.3} ulp over {n} inputs");
    worst
}

fn uni(seed: u64, lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

const N: usize = 700;

#[test]
fn expf_exp2f_fast_expf() {
    let x = uni(1, -80.0, 80.0, N);
    check("k_expf", &x, &x, |a, _| a.exp(), 2.0);
    check("k_exp2f", &x, &x, |a, _| a.exp2(), 2.0);
    // __expf: 2 + floor(|1.16 x|) ulp
    let x = uni(2, -10.0, 10.0, N);
    let dev_bound = x.iter().map(|&a| 2.0 + (1.16 * a.abs() as f64).floor()).fold(0.0, f64::max);
    check("k_fast_expf", &x, &x, |a, _| a.exp(), dev_bound);
}

#[test]
fn logf_log2f() {
    let mut r = rng(3);
    let x: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -60, 60).abs()).collect();
    check("k_logf", &x, &x, |a, _| a.ln(), 1.0);
    check("k_log2f", &x, &x, |a, _| a.log2(), 1.0);
}

#[test]
fn tanhf_erff_gelu() {
    let x = uni(4, -9.0, 9.0, N);
    check("k_tanhf", &x, &x, |a, _| a.tanh(), 2.0);
    let x = uni(5, -3.5, 3.5, N);
    check("k_erff", &x, &x, |a, _| erf64(a), 2.0);
    // GELU as BERT computes it: a few roundings on top of erff; relative 1e-6 of |x|
    let dev = emu();
    dev.load_module("libm", ptx()).unwrap();
    let (dx, out) = (dev.upload(&x).unwrap(), dev.alloc_filled::<f32>(N, 0xFF).unwrap());
    launch_ok(
        &dev,
        "libm",
        "k_gelu",
        lin((N as u32).div_ceil(128), 128),
        &[ptr(&dx), ptr(&dx), ptr(&out), KernelArg::I32(N as i32)],
    );
    for (i, g) in out.to_host().unwrap().into_iter().enumerate() {
        let a = x[i] as f64;
        let exact = 0.5 * a * (1.0 + erf64(a / 2f64.sqrt()));
        assert!((g as f64 - exact).abs() <= 1e-6 * a.abs() + 1e-7, "gelu({a}) = {g}, exact {exact}");
    }
}

#[test]
fn rsqrtf_sqrtf_division() {
    let mut r = rng(6);
    // exponents kept so that quotients stay normal (no overflow/underflow)
    let x: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -60, 60).abs()).collect();
    let y: Vec<f32> = (0..N).map(|_| rand_f32(&mut r, -60, 60)).collect();
    check("k_rsqrtf", &x, &x, |a, _| 1.0 / a.sqrt(), 2.0);
    check("k_sqrtf", &x, &x, |a, _| a.sqrt(), 0.5); // IEEE (default -prec-sqrt=true)
    check("k_div", &x, &y, |a, b| a / b, 0.5); // IEEE (default -prec-div=true)
}

#[test]
fn sinf_cosf_powf() {
    let x = uni(7, -100.0, 100.0, N);
    check("k_sinf", &x, &x, |a, _| a.sin(), 2.0);
    check("k_cosf", &x, &x, |a, _| a.cos(), 2.0);
    let a = uni(8, 0.01, 20.0, N);
    let b = uni(9, -8.0, 8.0, N);
    check("k_powf", &a, &b, |a, b| a.powf(b), 4.0);
}
