//! Shared helpers of the kernel tests: devices, random data, counters, error checks.
#![allow(dead_code)] // shared by several test binaries; each uses a subset
use fusebert_emu::Counters;
use fusebert_kernels::{Device, DeviceBuffer};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
