//! Helpers of the Hopper (sm_90) GEMM tests: the emulator as an H100, the last launch with its
//! counters' sanity, split workspaces for either tile width, and the int8 GEMM operands the
//! fused-quantisation tests (tests/gemm_sm90_qa.rs, tests/gemm_sm90_cqa.rs) share.
use super::{assert_no_local, rand_around_one, rand_f16, rand_i8};
use fusebert_emu::Counters;
use fusebert_kernels::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::{gemm_sm90, Device, DeviceBuffer, Epilogue, GemmInt8, GemmShape};
use half::f16;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The emulator as an H100 (sm_90: arch-specific sm_90a PTX loads), all sanitizers on, the
/// asynchronous copies completing in `mode`'s order.
pub fn sm90(mode: AsyncMode) -> Device {
    sm90_resident(mode, None)
}

/// `sm90(mode)` holding at most `resident` CTAs at once (`Some(1)`: one CTA at a time).
pub fn sm90_resident(mode: AsyncMode, resident: Option<u32>) -> Device {
    let options =
        EmulatorOptions { arch: Arch::Sm90, async_mode: mode, resident_blocks: resident, ..Default::default() };
    Device::emulator_with(options).expect("emulator")
}

/// The last launch: its kernel and counters, after their sanity (no local memory, no bank
/// conflicts).
pub fn last_launch(dev: &Device, what: &str) -> (String, Counters) {
    let e = dev.emulator_backend().expect("emulator");
    let l = e.launches().last().expect("a launch").clone();
    assert_no_local(&l.counters, what);
    assert_eq!(l.counters.shared_bank_conflicts, 0, "{what}: bank conflicts");
    (l.kernel, l.counters)
}

/// A workspace exactly as large as a split `m x n x k` launch needs in either tile width (and
/// strip counters for `m` rows), so one workspace serves both widths.
pub fn split_workspace(dev: &Device, m: usize, n: usize, k: usize, int8: bool) -> SplitWorkspace {
    let chunks = gemm_sm90::k_chunks(k, int8);
    let (a, b) = (gemm_sm90::split_needs(m, n, 128, chunks), gemm_sm90::split_needs(m, n, 192, chunks));
    SplitWorkspace::new(dev, a.0.max(b.0), a.1.max(b.1), m).unwrap()
}

/// The host operands of an int8 GEMM with the GELU epilogue whose output is quantised: codes,
/// scales that put the GELU input around +-2 (the output spans both signs, so every row gets a
/// real zero point), bias, smoothing multipliers around 1, zero points with their weight sums.
pub struct GeluInt8Operands {
    pub a: Vec<i8>,
    pub w: Vec<i8>,
    pub a_scale: Vec<f32>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<f16>,
    pub smooth: Vec<f16>,
    pub zero: Vec<i32>,
    pub w_sum: Vec<i32>,
}

/// Draws the operands of an `m x n x k` GEMM from `r`, always in this order (the tests' seeds
/// pin their data).
pub fn gelu_int8_operands(r: &mut ChaCha8Rng, m: usize, n: usize, k: usize) -> GeluInt8Operands {
    let a: Vec<i8> = (0..m * k).map(|_| r.gen_range(-128..=127)).collect();
    let w = rand_i8(r, n * k);
    // |acc| ~ 73^2 sqrt(k): a_scale * w_scale ~ 3e-5 sqrt(160 / k) gives pre-activations of a few units
    let s = 0.006 * (160.0 / k as f32).sqrt();
    let a_scale = (0..m).map(|_| r.gen_range(0.5 * s..1.5 * s)).collect();
    let w_scale = (0..n).map(|_| r.gen_range(0.003f32..0.007)).collect();
    let smooth = rand_around_one(r, n, 0.4);
    let zero = (0..m).map(|_| r.gen_range(-128..=127)).collect();
    let w_sum = fusebert_kernels::weight_sums(&w, n, k);
    GeluInt8Operands { a, w, a_scale, w_scale, bias: rand_f16(r, n, 1.0), smooth, zero, w_sum }
}

/// An int8 GEMM of all-one codes and scales (GELU, no bias) on the device: the operands of the
/// fused quantisation's refusal tests, whose A can pose as an overlapping output.
pub struct OnesInt8 {
    pub a: DeviceBuffer<i8>,
    pub w: DeviceBuffer<i8>,
    pub a_scale: DeviceBuffer<f32>,
    pub w_scale: DeviceBuffer<f32>,
    pub shape: GemmShape,
}

impl OnesInt8 {
    pub fn upload(dev: &Device, shape: GemmShape) -> OnesInt8 {
        let GemmShape { m, n, k } = shape;
        let a = dev.upload(&vec![1i8; m * k]).unwrap();
        let w = dev.upload(&vec![1i8; n * k]).unwrap();
        let ones = |len: usize| dev.upload(&vec![1f32; len]).unwrap();
        let (a_scale, w_scale) = (ones(m), ones(n));
        OnesInt8 { a, w, a_scale, w_scale, shape }
    }

    pub fn gemm(&self) -> GemmInt8<'_> {
        GemmInt8 {
            a: &self.a,
            a_scale: &self.a_scale,
            zero_point: None,
            w: &self.w,
            w_scale: &self.w_scale,
            bias: None,
            epilogue: Epilogue::Gelu,
            shape: self.shape,
        }
    }
}
