//! Shared helpers of the kernel tests: devices, random data, counters, error checks; the
//! Hopper (sm_90) tests' own in `hopper`.
#![allow(dead_code)] // shared by several test binaries; each uses a subset
use fusebert_emu::Counters;
use fusebert_kernels::{Device, DeviceBuffer};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod hopper;

/// The emulator (all sanitizers on) always; a CUDA device too when one opens.
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::emulator().expect("emulator")];
    if let Ok(d) = fusebert_cuda_standin::cuda_device(0) {
        v.push(d);
    }
    v
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in [-a, a], never exactly zero.
pub fn rand_f16(r: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f16> {
    (0..n)
        .map(|_| {
            let v: f32 = r.gen_range(-a..a);
            f16::from_f32(if v == 0.0 { a * 0.5 } else { v })
        })
        .collect()
}

pub fn rand_i8(r: &mut ChaCha8Rng, n: usize) -> Vec<i8> {
    (0..n).map(|_| r.gen_range(-127..=127)).collect()
}

/// A poisoned (0xFF: NaN for f16/f32, -1 for ints) output buffer.
pub fn poisoned<T: bytemuck::Pod>(dev: &Device, n: usize) -> DeviceBuffer<T> {
    dev.alloc_filled::<T>(n, 0xFF).expect("alloc")
}

/// Counters of the last launch on the emulator (None on a GPU).
pub fn last_counters(dev: &Device) -> Option<Counters> {
    dev.emulator_backend().map(|e| e.launches().last().expect("a launch was recorded").counters.clone())
}

pub fn clear(dev: &Device) {
    if let Some(e) = dev.emulator_backend() {
        e.clear_launches();
    }
}

/// Asserts no local memory traffic (no spills, no local arrays).
pub fn assert_no_local(c: &Counters, what: &str) {
    assert_eq!(c.local_load_bytes, 0, "{what}: local loads");
    assert_eq!(c.local_store_bytes, 0, "{what}: local stores");
}

/// Max |got - want| and asserts each element is within `tol(want, index)`.
pub fn check_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(f32, usize) -> f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut max = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        assert!(e <= tol(w, i), "{what}: element {i}: got {g}, want {w}, |err| {e} > tol {}", tol(w, i));
        max = max.max(e);
    }
    max
}

pub fn to_f32(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Half an fp16 ulp of `v` bound: |v| * 2^-11 (one round-to-nearest to fp16).
pub fn half_ulp(v: f32) -> f32 {
    v.abs() * (1.0 / 2048.0)
}

/// The error must be `Error::Kernel` naming `kernel`.
pub fn assert_kernel_err<T: std::fmt::Debug>(r: fusebert_kernels::Result<T>, kernel: &str) {
    match r {
        Err(fusebert_kernels::Error::Kernel { kernel: k, msg }) => {
            assert!(k.contains(kernel), "error names `{k}`, expected `{kernel}` ({msg})")
        }
        other => panic!("expected Error::Kernel for {kernel}, got {other:?}"),
    }
}

/// A device buffer's contents on the host (the tests compare them bit for bit).
pub fn bits<T: bytemuck::Pod>(b: &DeviceBuffer<T>) -> Vec<T> {
    b.to_host().unwrap()
}

/// An fp16 buffer's bit patterns: equality without NaN != NaN, and poison (0xFFFF) visible.
pub fn f16_bits(b: &DeviceBuffer<f16>) -> Vec<u16> {
    bits(b).iter().map(|v| v.to_bits()).collect()
}

/// An f32 buffer's bit patterns (scales compared bit for bit).
pub fn f32_bits(b: &DeviceBuffer<f32>) -> Vec<u32> {
    bits(b).iter().map(|v| v.to_bits()).collect()
}

/// `rand_f16` in [-1, 1] mapped to 1 + spread * v: gamma or smoothing multipliers around 1.
pub fn rand_around_one(r: &mut ChaCha8Rng, n: usize, spread: f32) -> Vec<f16> {
    rand_f16(r, n, 1.0).iter().map(|g| f16::from_f32(1.0 + spread * g.to_f32())).collect()
}

/// Non-zero int8 codes in `[lo, 127]` (a zero would hide a dropped product).
pub fn nonzero_codes(r: &mut ChaCha8Rng, n: usize, lo: i32) -> Vec<i8> {
    (0..n)
        .map(|_| loop {
            let c = r.gen_range(lo..=127);
            if c != 0 {
                break c as i8;
            }
        })
        .collect()
}

/// The GEMM tests' epilogue codes: 0 none, 1 GELU, 2 residual, 3 tanh, 4 GELU (tanh form),
/// 5 ReLU, 6 SiLU (a loop over 0..7 covers every epilogue).
pub fn epilogue_by_code(code: u32, residual: &DeviceBuffer<f16>) -> fusebert_kernels::Epilogue<'_> {
    use fusebert_kernels::Epilogue;
    match code {
        1 => Epilogue::Gelu,
        2 => Epilogue::Residual(residual),
        3 => Epilogue::Tanh,
        4 => Epilogue::GeluTanh,
        5 => Epilogue::Relu,
        6 => Epilogue::Silu,
        _ => Epilogue::None,
    }
}

/// The int8 codes and scales layernorm_f16_q8 defines on the fp16 output `x` (`[m, n]`): f = x
/// (* smooth) in f32, amax = max |f|, code = round-half-even(f * (127 / amax)) clamped to 127,
/// scale = amax / 127 (the device's f32 operations, so the same bits). The fused layernorms'
/// codes are checked against it on their own fp16 output.
pub fn layernorm_q8_codes(x: &[f16], smooth: Option<&[f16]>, m: usize, n: usize) -> (Vec<i8>, Vec<u32>) {
    let mut q = vec![0i8; m * n];
    let mut s = vec![0u32; m];
    for i in 0..m {
        let f: Vec<f32> = (0..n).map(|j| x[i * n + j].to_f32() * smooth.map_or(1.0, |sm| sm[j].to_f32())).collect();
        let amax = f.iter().fold(0f32, |a, v| a.max(v.abs()));
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for j in 0..n {
            q[i * n + j] = ((f[j] * inv).round_ties_even() as i32).clamp(-127, 127) as i8;
        }
        s[i] = (amax / 127.0).to_bits();
    }
    (q, s)
}
