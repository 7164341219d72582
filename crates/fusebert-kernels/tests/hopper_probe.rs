//! The shipped sm_90a PTX of `kernels/hopper_probe_sm90.cu` (nvcc's own wgmma code, the build's
//! sm_90a variant) in the emulator as an sm_90 device, under lazy, eager and random async
//! completion, against a CPU reference: D = A B + C with A 64x16, B 16x8 (given as its transpose
//! 8x16), f16 operands holding small integers (so every product and sum is exact in f32 and the
//! comparison is bitwise, whatever the accumulation order), C random f32 multiples of 1/4.
//! Only the emulator runs it here: no GPU on the build machine.
mod kernels_util;
use fusebert_emu::arch::{Arch, AsyncMode};
use fusebert_kernels::device::emulator::EmulatorOptions;
use fusebert_kernels::device::{KernelArg, LaunchConfig};
use fusebert_kernels::Device;
use half::f16;
use kernels_util::rng;
use rand::Rng;

const KERNEL: &str = "hopper_probe_wgmma_m64n8k16";
const MODES: [AsyncMode; 4] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(1), AsyncMode::Random(7)];

fn device(arch: Arch, mode: AsyncMode) -> Device {
    Device::emulator_with(EmulatorOptions { arch, async_mode: mode, ..Default::default() }).unwrap()
}

/// The inputs and the expected D (row-major 64x8), from plain loops.
fn case(seed: u64) -> (Vec<f16>, Vec<f16>, Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let a: Vec<i32> = (0..64 * 16).map(|_| r.gen_range(-8..=8)).collect();
    let bt: Vec<i32> = (0..8 * 16).map(|_| r.gen_range(-8..=8)).collect();
    let c: Vec<f32> = (0..64 * 8).map(|_| r.gen_range(-64..=64) as f32 / 4.0).collect();
    let mut d = vec![0f32; 64 * 8];
    for m in 0..64 {
        for n in 0..8 {
            let dot: i32 = (0..16).map(|k| a[m * 16 + k] * bt[n * 16 + k]).sum();
            d[m * 8 + n] = dot as f32 + c[m * 8 + n];
        }
    }
    let h = |v: &[i32]| v.iter().map(|&x| f16::from_f32(x as f32)).collect::<Vec<_>>();
    (h(&a), h(&bt), c, d)
}

fn launch(dev: &Device, seed: u64) -> fusebert_kernels::Result<(Vec<f32>, Vec<f32>)> {
    let (a, bt, c, want) = case(seed);
    let (a, bt, c) = (dev.upload(&a)?, dev.upload(&bt)?, dev.upload(&c)?);
    let d = dev.alloc_filled::<f32>(64 * 8, 0xFF)?;
    let args = [KernelArg::from(&a), KernelArg::from(&bt), KernelArg::from(&c), KernelArg::from(&d)];
    dev.launch(KERNEL, LaunchConfig::linear(1, 128, 0), &args)?;
    Ok((d.to_host()?, want))
}

#[test]
fn shipped_sm90a_wgmma_matches_the_cpu_reference_in_every_completion_mode() {
    let m = fusebert_kernels::ptx::module("hopper_probe_sm90").unwrap();
    assert_eq!(m.by_arch.iter().map(|(a, _)| *a).collect::<Vec<_>>(), ["sm_90a"]);
    assert!(m.ptx.lines().any(|l| l.trim() == ".target sm_90a"));
    for mode in MODES {
        for seed in [1, 2] {
            let dev = device(Arch::Sm90, mode);
            let (got, want) = launch(&dev, seed).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{mode:?} seed {seed}: D[{}][{}] = {g}, want {w}", i / 8, i % 8);
            }
        }
    }
}

/// sm_90a PTX is arch-specific: an emulated A100 refuses the module with an error, not a panic.
#[test]
fn an_sm80_device_refuses_the_sm90a_module() {
    let e = launch(&device(Arch::Sm80, AsyncMode::Lazy), 1).unwrap_err().to_string();
    assert!(e.contains("sm_90a") && e.contains("arch-specific"), "{e}");
}
