//! The stand-in presenting a real GPU (`StandinOptions::gpu`, `FUSEBERT_CUDA_STANDIN_GPU`): what
//! cudarc reads through the driver API, as the CUDA backend reads it, against the table of
//! `gpus.rs` written out here again (so a typo in one place fails); the backend's device name
//! finds the right `perf::gpu` spec; sm_90a modules load on the 9.0 GPUs only.
use std::sync::{Mutex, MutexGuard};

use cudarc::driver::sys::CUdevice_attribute as A;
use cudarc::driver::CudaContext;
use fusebert::perf::gpu::gpu_for_device_name;
use fusebert::{Device, KernelArg, LaunchConfig};
use fusebert_cuda_standin::gpus::{self, GpuModel};
use fusebert_cuda_standin::{self as standin, parse_arch_and_gpu, Mode, StandinOptions};

static LOCK: Mutex<()> = Mutex::new(());

fn setup(gpu: Option<GpuModel>, cc: (u32, u32)) -> MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    standin::install(StandinOptions { mode: Mode::Deferred, compute_capability: cc, gpu, ..StandinOptions::default() })
        .expect("stand-in installs");
    g
}

/// What each GPU must report: (key, name, cc, MiB, SMs, clock kHz, mem clock kHz, bus bits,
/// L2 bytes, smem/SM, smem/block opt-in, cluster launch).
#[allow(clippy::type_complexity)]
const EXPECTED: [(&str, &str, (i32, i32), u64, i32, i32, i32, i32, i32, i32, i32, i32); 3] = [
    (
        "a100-80gb",
        "NVIDIA A100-SXM4-80GB",
        (8, 0),
        81920,
        108,
        1_410_000,
        1_593_000,
        5120,
        41_943_040,
        167_936,
        166_912,
        0,
    ),
    (
        "h100-sxm",
        "NVIDIA H100 80GB HBM3",
        (9, 0),
        81559,
        132,
        1_980_000,
        2_619_000,
        5120,
        52_428_800,
        233_472,
        232_448,
        1,
    ),
    ("h200", "NVIDIA H200", (9, 0), 143771, 132, 1_980_000, 3_201_000, 6144, 62_914_560, 233_472, 232_448, 1),
];

#[test]
fn cudarc_reads_each_presented_gpu_and_perf_finds_its_spec() {
    for (key, name, cc, mib, sms, clock, mem_clock, bus, l2, smem_sm, optin, cluster) in EXPECTED {
        let model = gpus::gpu(key).unwrap();
        let _g = setup(Some(model), (model.compute_capability.0, model.compute_capability.1));
        {
            let ctx = CudaContext::new(0).unwrap();
            assert_eq!(ctx.name().unwrap(), name);
            assert_eq!(ctx.compute_capability().unwrap(), cc, "{key}");
            assert_eq!(ctx.total_mem().unwrap() as u64, mib << 20, "{key}");
            for (attr, want) in [
                (A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, sms),
                (A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE, clock),
                (A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, mem_clock),
                (A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, bus),
                (A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, l2),
                (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, smem_sm),
                (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, optin),
                (A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, 1024),
                (A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, 48 * 1024),
                (A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR, 32),
                (A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH, cluster),
                (A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, 65536),
            ] {
                assert_eq!(ctx.attribute(attr).unwrap(), want, "{key}: {attr:?}");
            }
            // the per-SM shared memory holds one opt-in block plus its reservation
            assert_eq!(smem_sm, optin + 1024, "{key}");
            let (free, total) = cudarc::driver::result::mem_get_info().unwrap();
            assert_eq!(total as u64, mib << 20, "{key}");
            assert!(free <= total);
        }
        // the backend: the real name, marked as the stand-in, and the perf model's spec
        let dev = Device::cuda(0).unwrap();
        let n = dev.name();
        assert!(n.starts_with(name) && n.contains("stand-in") && n.contains(&format!("sm_{}{}", cc.0, cc.1)), "{n}");
        assert_eq!(gpu_for_device_name(&n).map(|g| g.name), Some(key), "{n}");
    }
}

/// The stand-in's own name (no GPU presented) matches no spec; its attributes are the A100's
/// or the H100 SXM's, with 80 GiB.
#[test]
fn without_a_gpu_the_stand_in_keeps_its_name_and_the_reference_attributes() {
    for (cc, sms, optin) in [((8, 0), 108, 163 * 1024), ((9, 0), 132, 227 * 1024)] {
        let _g = setup(None, cc);
        let ctx = CudaContext::new(0).unwrap();
        assert!(ctx.name().unwrap().contains("stand-in"));
        assert_eq!(ctx.total_mem().unwrap() as u64, 80 << 30);
        assert_eq!(ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap(), sms);
        assert_eq!(ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).unwrap(), optin);
        drop(ctx);
        let dev = Device::cuda(0).unwrap();
        assert_eq!(gpu_for_device_name(&dev.name()).map(|g| g.name), None, "{}", dev.name());
    }
}

/// The sm_90a probe module (kernels/hopper_probe_sm90.cu) runs on the H100/H200 stand-ins and is
/// skipped on the A100 (its kernel is then not loaded: an error, not a crash).
#[test]
fn sm90a_modules_run_on_9_0_gpus_only() {
    for key in ["h100-sxm", "h200", "a100-80gb"] {
        let model = gpus::gpu(key).unwrap();
        let _g = setup(Some(model), model.compute_capability);
        let dev = Device::cuda(0).unwrap();
        // A = 1 everywhere, B^T = k-th column 1 for n == k % 8 ..., C = 0: D[m][n] = #k with k % 8 == n
        let a = dev.upload(&vec![half::f16::ONE; 64 * 16]).unwrap();
        let bt: Vec<half::f16> =
            (0..8 * 16).map(|i| if (i % 16) % 8 == i / 16 { half::f16::ONE } else { half::f16::ZERO }).collect();
        let bt = dev.upload(&bt).unwrap();
        let c = dev.upload(&vec![0.5f32; 64 * 8]).unwrap();
        let d = dev.alloc_filled::<f32>(64 * 8, 0xFF).unwrap();
        let args = [KernelArg::from(&a), KernelArg::from(&bt), KernelArg::from(&c), KernelArg::from(&d)];
        let r = dev.launch("hopper_probe_wgmma_m64n8k16", LaunchConfig::linear(1, 128, 0), &args);
        if model.compute_capability == (9, 0) {
            r.unwrap();
            // each n has two k in 0..16 with k % 8 == n
            assert_eq!(d.to_host().unwrap(), vec![2.5f32; 64 * 8], "{key}");
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("not loaded"), "{key}: {e}");
        }
    }
}

#[test]
fn the_gpu_variable_is_parsed_and_checked_against_the_arch() {
    assert_eq!(parse_arch_and_gpu("", "").unwrap(), ((8, 0), None));
    assert_eq!(parse_arch_and_gpu("sm_90", "").unwrap(), ((9, 0), None));
    assert_eq!(parse_arch_and_gpu("", "h200").unwrap(), ((9, 0), Some(gpus::H200)));
    assert_eq!(parse_arch_and_gpu("sm_80", " a100-80gb ").unwrap(), ((8, 0), Some(gpus::A100_80GB)));
    let e = parse_arch_and_gpu("sm_80", "h100-sxm").unwrap_err().to_string();
    assert!(e.contains("contradicts") && e.contains("h100-sxm"), "{e}");
    let e = parse_arch_and_gpu("", "v100").unwrap_err().to_string();
    assert!(e.contains("v100") && e.contains("h200"), "{e}");
}
