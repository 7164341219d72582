//! Emulator speed in thread-instructions per second, on one worker thread:
//! a memory-bound kernel (saxpy) and a tensor-core GEMM tile (cp.async + ldmatrix + mma.sync).
//! Run: `cargo bench -p fusebert-emu --bench emulator`. Throughput is reported as elements =
//! thread-instructions. After each kernel's timing, one profiled launch prints where the time
//! goes per instruction class (`EmulatorOptions::profile`), so a regression shows its class.
//! The MiniLM forward pass on the emulator, with the same breakdown, is
//! `cargo bench -p fusebert --bench emulator_forward`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fusebert_kernels::device::emulator::EmulatorOptions;
use fusebert_kernels::device::{Device, KernelArg, LaunchConfig};
use half::f16;

const PTX: &str = include_str!("ptx/bench_kernels.ptx");

fn device(sanitize: bool) -> Device {
    device_with(sanitize, false)
}

fn device_with(sanitize: bool, profile: bool) -> Device {
    let dev = Device::emulator_with(EmulatorOptions { threads: 1, sanitize, profile, ..Default::default() }).unwrap();
    dev.load_module("bench", PTX).unwrap();
    dev
}

/// One more launch with the per-class profile on, printed under the benchmark's name.
fn print_profile(name: &str, sanitize: bool, launch: impl Fn(&Device)) {
    let dev = device_with(sanitize, true);
    launch(&dev);
    dev.emulator_backend().unwrap().take_profile();
    launch(&dev);
    let p = dev.emulator_backend().unwrap().take_profile();
    eprintln!(
        "\n{name} ({}), per instruction class, one worker thread:\n{p}\n",
        if sanitize { "sanitize" } else { "no_sanitize" }
    );
}

fn thread_insts(dev: &Device) -> u64 {
    dev.emulator_backend().unwrap().last_counters().unwrap().thread_instructions
}

fn saxpy(c: &mut Criterion) {
    for sanitize in [true, false] {
        let dev = device(sanitize);
        let n = 1 << 18;
        let x = dev.upload(&vec![1.5f32; n]).unwrap();
        let y = dev.upload(&vec![0.5f32; n]).unwrap();
        let cfg = LaunchConfig::linear(256, 256, 0);
        let args = [KernelArg::from(&x), KernelArg::from(&y), KernelArg::F32(2.0), KernelArg::I32(n as i32)];
        dev.launch_in("bench", "saxpy_f32", cfg, &args).unwrap();
        let mut g = c.benchmark_group("saxpy_f32");
        g.throughput(Throughput::Elements(thread_insts(&dev)));
        g.sample_size(10);
        g.bench_function(if sanitize { "sanitize" } else { "no_sanitize" }, |b| {
            b.iter(|| dev.launch_in("bench", "saxpy_f32", cfg, &args).unwrap())
        });
        g.finish();
        print_profile("saxpy_f32", sanitize, |d| {
            let x = d.upload(&vec![1.5f32; n]).unwrap();
            let y = d.upload(&vec![0.5f32; n]).unwrap();
            let args = [KernelArg::from(&x), KernelArg::from(&y), KernelArg::F32(2.0), KernelArg::I32(n as i32)];
            d.launch_in("bench", "saxpy_f32", cfg, &args).unwrap();
        });
    }
}

fn gemm(c: &mut Criterion) {
    for sanitize in [true, false] {
        let dev = device(sanitize);
        let (m, n, k) = (256usize, 128usize, 384usize);
        let a = dev.upload(&vec![f16::from_f32(0.5); m * k]).unwrap();
        let b = dev.upload(&vec![f16::from_f32(0.25); n * k]).unwrap();
        let out = dev.alloc::<f32>(m * n).unwrap();
        let cfg = LaunchConfig { grid: ((n / 32) as u32, (m / 64) as u32, 1), block: (128, 1, 1), shared_mem_bytes: 0 };
        let args = [
            KernelArg::from(&a),
            KernelArg::from(&b),
            KernelArg::from(&out),
            KernelArg::I32(m as i32),
            KernelArg::I32(n as i32),
            KernelArg::I32(k as i32),
        ];
        dev.launch_in("bench", "gemm_tile_f16", cfg, &args).unwrap();
        let mut g = c.benchmark_group("gemm_tile_f16");
        g.throughput(Throughput::Elements(thread_insts(&dev)));
        g.sample_size(10);
        g.bench_function(if sanitize { "sanitize" } else { "no_sanitize" }, |b| {
            b.iter(|| dev.launch_in("bench", "gemm_tile_f16", cfg, &args).unwrap())
        });
        g.finish();
        print_profile("gemm_tile_f16", sanitize, |d| {
            let a = d.upload(&vec![f16::from_f32(0.5); m * k]).unwrap();
            let b = d.upload(&vec![f16::from_f32(0.25); n * k]).unwrap();
            let out = d.alloc::<f32>(m * n).unwrap();
            let args = [
                KernelArg::from(&a),
                KernelArg::from(&b),
                KernelArg::from(&out),
                KernelArg::I32(m as i32),
                KernelArg::I32(n as i32),
                KernelArg::I32(k as i32),
            ];
            d.launch_in("bench", "gemm_tile_f16", cfg, &args).unwrap();
        });
    }
}

criterion_group!(benches, saxpy, gemm);
criterion_main!(benches);
