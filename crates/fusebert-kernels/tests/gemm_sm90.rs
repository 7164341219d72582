//! The Hopper fp16 GEMM (`kernels/gemm_sm90.cu`: TMA + mbarrier + wgmma, warp-specialised,
//! persistent) on the emulator at sm_90, against the CPU reference (`reference::gemm_f32`, f64
//! accumulation, and `reference::epilogue`) and against the mma.sync GEMM (`gemm_f16`), on
//! random non-zero inputs, outputs poisoned (NaN) before every launch, shapes that are not
//! multiples of the 128 x 128 tile or of the 64-wide K stage, every epilogue, in lazy, eager
//! and random completion of the asynchronous work (TMA copies, wgmma groups).
//!
//! Tolerances (as tests/kernels_gemm.rs, from precision): f32 accumulation in another order than
//! the f64 reference: 2 K 2^-24 sum_k |a_k w_k| (recursive summation), plus one fp16 rounding
//! |ref| 2^-11, plus 1e-5 for the f32 epilogue (erf/tanh implementations). Against gemm_f16 the
//! bound is the sum of both kernels' bounds (each is within its bound of the same reference).
mod kernels_util;
use fusebert_kernels::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert_kernels::device::{TensorMapDtype, TensorMapSwizzle, TiledTensorMap};
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Cols};
use fusebert_kernels::{reference, Device, DeviceBuffer, Epilogue, GemmF16, GemmLaunch, GemmShape};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(5)];

/// The kernel's embedded sm_90a PTX (its only variant).
fn sm90a_ptx() -> String {
    let m = fusebert_kernels::ptx::module(gemm_sm90::MODULE).expect("gemm_sm90 is embedded");
    assert_eq!(m.by_arch.len(), 1, "gemm_sm90 has one variant");
    let (arch, ptx) = m.by_arch[0];
    assert_eq!(arch, "sm_90a");
    ptx.to_string()
}

/// Random operands of one GEMM, on the host and the device.
struct Case {
    s: GemmShape,
    a: Vec<f16>,
    w: Vec<f16>,
    bias: Vec<f16>,
    res: Vec<f16>,
}

impl Case {
    fn new(r: &mut rand_chacha::ChaCha8Rng, m: usize, n: usize, k: usize) -> Case {
        Case {
            s: GemmShape { m, n, k },
            a: rand_f16(r, m * k, 1.0),
            w: rand_f16(r, n * k, 1.0),
            bias: rand_f16(r, n, 1.0),
            res: rand_f16(r, m * n, 1.0),
        }
    }
    /// Per output: the reference after the epilogue, and the accumulation-order bound.
    fn reference(&self, epi: u32) -> (Vec<f32>, Vec<f32>) {
        let GemmShape { m, n, k } = self.s;
        let acc = reference::gemm_f32(&self.a, &self.w, m, n, k);
        let want = reference::epilogue(&acc, Some(&self.bias), epi, Some(&self.res), n);
        let bound = (0..m * n)
            .map(|i| {
                let (mi, ni) = (i / n, i % n);
                let abs: f32 =
                    (0..k).map(|kk| (self.a[mi * k + kk].to_f32() * self.w[ni * k + kk].to_f32()).abs()).sum();
                2.0 * k as f32 * abs / 16_777_216.0
            })
            .collect();
        (want, bound)
    }
    /// Runs `which` GEMM (Hopper with `how`, or gemm_f16 when `how` is None) into a poisoned output.
    fn run(&self, dev: &Device, epi: u32, how: Option<GemmSm90Launch>) -> Vec<f32> {
        let GemmShape { m, n, .. } = self.s;
        let (da, dw) = (dev.upload(&self.a).unwrap(), dev.upload(&self.w).unwrap());
        let (db, dr) = (dev.upload(&self.bias).unwrap(), dev.upload(&self.res).unwrap());
        let mut c = poisoned::<f16>(dev, m * n);
        let g = GemmF16 { a: &da, w: &dw, bias: Some(&db), epilogue: epilogue_by_code(epi, &dr), shape: self.s };
        clear(dev);
        match how {
            Some(how) => fusebert_kernels::gemm_f16_sm90(dev, &g, &mut c, how).unwrap(),
            None => fusebert_kernels::gemm_f16(dev, &g, &mut c, GemmLaunch::default()).unwrap(),
        }
        to_f32(&c.to_host().unwrap())
    }
}

/// One Hopper GEMM vs the reference; returns the max |err| and the output.
fn check(dev: &Device, c: &Case, epi: u32, how: GemmSm90Launch, what: &str) -> (f32, Vec<f32>) {
    let got = c.run(dev, epi, Some(how));
    let (want, bound) = c.reference(epi);
    let GemmShape { m, n, k } = c.s;
    let what = format!("{what}: gemm_f16_sm90 M {m} N {n} K {k} epi {epi} {how:?}");
    let err = check_close(&what, &got, &want, |w, i| half_ulp(w) + bound[i] + 1e-5);
    if let Some(cn) = last_counters(dev) {
        assert_no_local(&cn, &what);
    }
    (err, got)
}

/// (M, N, K): tails in M (67, 130, 200), N (80, 144: a partial 128-column tile) and K (72, 136:
/// a partly zero-filled 64-wide stage; 64..192: one to three stages); the smallest legal GEMM
/// (one row, N = K = 8: a box mostly outside the matrix).
const SHAPES: [(usize, usize, usize); 5] = [(67, 80, 64), (130, 144, 136), (200, 80, 192), (96, 144, 72), (1, 8, 8)];

#[test]
fn hopper_gemm_matches_the_reference_with_every_epilogue_in_every_completion_mode() {
    let mut r = rng(90);
    let mut max = 0f32;
    for (mi, mode) in MODES.into_iter().enumerate() {
        let dev = sm90(mode);
        for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
            let c = Case::new(&mut r, m, n, k);
            // every epilogue in every mode, spread over the shapes
            for epi in (0..7u32).filter(|e| (*e as usize + si + mi) % 4 == 0 || si == 0) {
                max = max.max(check(&dev, &c, epi, GemmSm90Launch::default(), &format!("{mode:?}")).0);
            }
        }
    }
    eprintln!("gemm_f16_sm90: max |err| = {max:e}");
}

/// Fewer CTAs than tiles: each CTA walks several tiles through one stage ring, so the
/// mbarrier phases wrap several times and consumers release stages across tile boundaries.
#[test]
fn a_persistent_cta_walks_several_tiles_through_one_ring() {
    let mut r = rng(91);
    for mode in MODES {
        let dev = sm90(mode);
        // 3 x 2 tiles, 3 stages each: 18 stage fills over 4 stages with 1 CTA
        let c = Case::new(&mut r, 300, 144, 136);
        for ctas in [1, 4] {
            check(&dev, &c, 2, GemmSm90Launch { ctas: Some(ctas), ..Default::default() }, &format!("{mode:?}"));
        }
    }
}

/// The mma.sync GEMM and the wgmma GEMM agree within both kernels' bounds (f32 accumulation in
/// different orders, one fp16 rounding each).
#[test]
fn hopper_gemm_agrees_with_the_mma_sync_gemm() {
    let mut r = rng(92);
    let dev = sm90(AsyncMode::Lazy);
    let (mut same, mut total) = (0usize, 0usize);
    for &(m, n, k) in &[(67usize, 80usize, 64usize), (130, 144, 192)] {
        let c = Case::new(&mut r, m, n, k);
        for epi in [0u32, 1, 2] {
            let hopper = c.run(&dev, epi, Some(GemmSm90Launch::default()));
            let ampere = c.run(&dev, epi, None);
            let (want, bound) = c.reference(epi);
            let what = format!("gemm_f16_sm90 vs gemm_f16 M {m} N {n} K {k} epi {epi}");
            let tol = |i: usize| 2.0 * (half_ulp(want[i]) + bound[i] + 1e-5);
            for (i, (&h, &a)) in hopper.iter().zip(&ampere).enumerate() {
                assert!((h - a).abs() <= tol(i), "{what}: element {i}: {h} vs {a} (reference {})", want[i]);
            }
            same += hopper.iter().zip(&ampere).filter(|(h, a)| h.to_bits() == a.to_bits()).count();
            total += hopper.len();
        }
    }
    eprintln!("gemm_f16_sm90 vs gemm_f16: {same} of {total} outputs bit-identical");
}

/// A row's result does not depend on M (the rows batched with it, hence its tile and CTA).
#[test]
fn results_are_batch_invariant() {
    let mut r = rng(93);
    let dev = sm90(AsyncMode::Random(11));
    let big = Case::new(&mut r, 200, 80, 136);
    let m = 67;
    let small = Case {
        s: GemmShape { m, n: 80, k: 136 },
        a: big.a[..m * 136].to_vec(),
        w: big.w.clone(),
        bias: big.bias.clone(),
        res: big.res[..m * 80].to_vec(),
    };
    for epi in [1u32, 2] {
        let all = big.run(&dev, epi, Some(GemmSm90Launch::default()));
        let few = small.run(&dev, epi, Some(GemmSm90Launch { ctas: Some(1), ..Default::default() }));
        assert!(all[..m * 80].iter().zip(&few).all(|(x, y)| x.to_bits() == y.to_bits()), "epi {epi}");
    }
}

#[test]
fn bad_shapes_and_buffers_are_typed_errors() {
    let dev = sm90(AsyncMode::Lazy);
    let a = dev.upload(&vec![f16::ONE; 64 * 72 + 8]).unwrap();
    let w = dev.upload(&vec![f16::ONE; 80 * 72]).unwrap();
    let mut c = dev.alloc::<f16>(64 * 80).unwrap();
    let run = |a: &DeviceBuffer<f16>, c: &mut DeviceBuffer<f16>, s: GemmShape, how: GemmSm90Launch| {
        let g = GemmF16 { a, w: &w, bias: None, epilogue: Epilogue::None, shape: s };
        fusebert_kernels::gemm_f16_sm90(&dev, &g, c, how)
    };
    let ok = GemmShape { m: 64, n: 80, k: 72 };
    let k = gemm_sm90::KERNEL;
    assert_kernel_err(run(&a, &mut c, GemmShape { k: 68, ..ok }, Default::default()), k); // K % 8
    assert_kernel_err(run(&a, &mut c, GemmShape { n: 76, ..ok }, Default::default()), k); // N % 8
    assert_kernel_err(run(&a, &mut c, GemmShape { m: 0, ..ok }, Default::default()), k);
    assert_kernel_err(run(&a, &mut c, GemmShape { m: 65, ..ok }, Default::default()), k); // a too short
    assert_kernel_err(run(&a, &mut c, ok, GemmSm90Launch { ctas: Some(0), ..Default::default() }), k);
    let shifted = a.view(1, 64 * 72).unwrap(); // 2-byte aligned: TMA needs 16
    assert_kernel_err(run(&shifted, &mut c, ok, Default::default()), k);
    // the launch itself works on the same buffers
    run(&a, &mut c, ok, Default::default()).unwrap();
    // the device layer's own checks: rank, array lengths; the encoder's: box wider than the swizzle
    let map = |dims: &[u64], strides: &[u64], box_dims: &[u32]| {
        dev.encode_tensor_map(&TiledTensorMap {
            dtype: TensorMapDtype::F16,
            addr: a.addr(),
            dims,
            strides,
            box_dims,
            swizzle: TensorMapSwizzle::B128,
        })
    };
    assert_kernel_err(map(&[72], &[], &[64]), "cuTensorMapEncodeTiled");
    assert_kernel_err(map(&[72, 64], &[144, 1], &[64, 64]), "cuTensorMapEncodeTiled");
    assert_kernel_err(map(&[72, 64], &[144], &[128, 64]), "cuTensorMapEncodeTiled");
    assert_kernel_err(map(&[72, 64], &[100], &[64, 64]), "cuTensorMapEncodeTiled");
    map(&[72, 64], &[144], &[64, 64]).unwrap();
}

/// Arch-specific PTX runs on its exact architecture only: an sm_80 device refuses the module
/// (as the driver would), so the launch is an error, not an emulation of wgmma on an A100.
#[test]
fn an_sm_80_device_refuses_the_hopper_kernel() {
    let dev = Device::emulator().unwrap();
    assert!(matches!(dev.load_module(gemm_sm90::MODULE, &sm90a_ptx()), Err(fusebert_kernels::Error::PtxParse { .. })));
    let a = dev.upload(&vec![f16::ONE; 64 * 64]).unwrap();
    let mut c = dev.alloc::<f16>(64 * 64).unwrap();
    let g = GemmF16 { a: &a, w: &a, bias: None, epilogue: Epilogue::None, shape: GemmShape { m: 64, n: 64, k: 64 } };
    let r = fusebert_kernels::gemm_f16_sm90(&dev, &g, &mut c, GemmSm90Launch::default());
    assert!(r.is_err(), "{r:?}");
}

/// The sanitizer report of a launch of `ptx` (a mutation of the kernel's PTX) on a small GEMM,
/// or "clean" when it runs clean and matches the reference.
fn run_mutant(ptx: &str, mode: AsyncMode) -> String {
    let dev = Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() })
        .expect("emulator");
    // loaded under the module's name, it replaces the embedded one on this device
    dev.load_module(gemm_sm90::MODULE, ptx).unwrap();
    let c = Case::new(&mut rng(94), 130, 80, 192);
    let (da, dw) = (dev.upload(&c.a).unwrap(), dev.upload(&c.w).unwrap());
    let mut out = poisoned::<f16>(&dev, 130 * 80);
    let g = GemmF16 { a: &da, w: &dw, bias: None, epilogue: Epilogue::None, shape: c.s };
    match fusebert_kernels::gemm_f16_sm90(&dev, &g, &mut out, GemmSm90Launch { ctas: Some(1), ..Default::default() }) {
        Err(e) => e.to_string(),
        Ok(()) => {
            let got = to_f32(&out.to_host().unwrap());
            let acc = reference::gemm_f32(&c.a, &c.w, 130, 80, 192);
            let wrong = got.iter().zip(&acc).filter(|(g, w)| (*g - *w).abs() > half_ulp(**w) + 1e-2).count();
            if wrong == 0 {
                "clean".into()
            } else {
                format!("{wrong} wrong outputs")
            }
        }
    }
}

/// Bugs planted in the kernel's own PTX are caught (the unmutated PTX, the clean twin, runs
/// clean in every mode): a consumer releasing a stage while the wgmma reading it may still be in
/// flight (`wait_group 3` instead of 1: the producer's next TMA overwrites the operands) gives
/// wrong products or an S4 report under random completion; a wgmma descriptor whose swizzle
/// (64B) disagrees with the TMA box's (128B) gives wrong products in every mode. In the store
/// epilogue (one CTA walking 2 tiles): the output staging rewritten without waiting for the
/// previous tile's TMA store to read it (`wait_group.read` dropped), and the staging handed to the
/// TMA store without `fence.proxy.async.shared::cta`, are reported in every mode.
#[test]
fn planted_pipeline_bugs_are_caught() {
    let ptx = sm90a_ptx();
    for mode in MODES {
        assert_eq!(run_mutant(&ptx, mode), "clean", "{mode:?}");
    }
    let early_release = ptx.replace("wgmma.wait_group.sync.aligned 1;", "wgmma.wait_group.sync.aligned 3;");
    // the descriptor constant: LBO 16, SBO 1024, swizzle code 1 (128B) -> 2 (64B)
    let swizzle = ptx.replace("4611686293305360384", "9223372311732682752");
    assert!(early_release != ptx && swizzle != ptx, "the mutations must change the PTX");
    let r = run_mutant(&early_release, AsyncMode::Random(3));
    assert!(r != "clean", "early release: {r}");
    for mode in [AsyncMode::Lazy, AsyncMode::Random(3)] {
        let r = run_mutant(&swizzle, mode);
        assert!(r != "clean", "swizzle {mode:?}: {r}");
    }
    let no_read_wait = ptx.replace("cp.async.bulk.wait_group.read 0;", "");
    let no_fence = ptx.replace("fence.proxy.async.shared::cta;", "");
    assert!(no_read_wait != ptx && no_fence != ptx, "the mutations must change the PTX");
    for mode in MODES {
        let r = run_mutant(&no_read_wait, mode);
        assert!(r.contains("TMA store"), "staging reused before its store read it, {mode:?}: {r}");
        let r = run_mutant(&no_fence, mode);
        assert!(r.contains("fence.proxy.async"), "staging not fenced to the async proxy, {mode:?}: {r}");
    }
}

/// The emulator's counters of one launch (printed for the docs): the tensor work is the padded
/// tiles' (128 x 128 x 64 MACs per tile and stage), no local memory, no shared-memory bank
/// conflicts (threads touch shared memory only through mbarriers; TMA and wgmma move the tiles).
/// (The emulator counts a wgmma's 64 x N x 16 MACs once per warpgroup instruction: each warp
/// adds its 16 rows; emu_wgmma.rs `a_wgmma_counts_m_n_k_macs_once_per_warpgroup`.)
#[test]
fn counters_of_one_launch() {
    let mut r = rng(95);
    let dev = sm90(AsyncMode::Lazy);
    let (m, n, k) = (256, 256, 256);
    let c = Case::new(&mut r, m, n, k);
    for (name, how) in
        [("gemm_f16_sm90", Some(GemmSm90Launch { cols: Sm90Cols::N128, ..Default::default() })), ("gemm_f16", None)]
    {
        c.run(&dev, 1, how);
        let cn = last_counters(&dev).expect("emulator counters");
        eprintln!(
            "{name} {m}x{n}x{k} GELU: {} warp / {} thread instructions, {} tensor MACs, {} shared bank conflicts, \
             global store efficiency {:.2}",
            cn.warp_instructions,
            cn.thread_instructions,
            cn.tensor_macs,
            cn.shared_bank_conflicts,
            cn.global_store_bytes as f64 / (cn.global_store_sectors * 32) as f64,
        );
        if how.is_some() {
            let stages = k.div_ceil(gemm_sm90::BK);
            let want = gemm_sm90::tiles(m, n, 128) * gemm_sm90::BM * 128 * stages * gemm_sm90::BK;
            let want = want as u64;
            assert_eq!(cn.tensor_macs, want, "tensor MACs: the padded tiles' work, once");
            // every box in bounds, its 128-byte rows on 128-byte boundaries: no wasted sector
            assert!(cn.tma_load_requests > 0, "TMA loads counted");
            assert_eq!(cn.tma_load_efficiency(), 1.0, "TMA load efficiency");
            // the store epilogue: whole sectors through TMA (the pair stores of before: 0.5),
            // staged in shared memory without a bank conflict
            assert_eq!(cn.global_store_bytes, (m * n * 2) as u64, "each output written once");
            assert_eq!(cn.global_store_bytes, cn.global_store_sectors * 32, "store efficiency 1.0");
            assert_eq!(cn.shared_bank_conflicts, 0, "bank conflicts");
            assert_no_local(&cn, name);
        }
    }
}

/// The CUDA backend's half of the device layer, through the CUDA driver stand-in reporting an
/// sm_90 device: `cuTensorMapEncodeTiled` through cudarc, the 128-byte map passed by value
/// through `cuLaunchKernel`'s parameter pointers, the SM count attribute (the persistent grid).
#[test]
fn the_cuda_backend_encodes_and_passes_tensor_maps() {
    use fusebert_cuda_standin::{install, StandinOptions};
    install(StandinOptions { compute_capability: (9, 0), ..Default::default() }).expect("stand-in");
    let dev = Device::cuda(0).expect("the stand-in's sm_90 device");
    assert!(dev.multiprocessors() >= 1);
    let c = Case::new(&mut rng(96), 130, 144, 136);
    for epi in [1u32, 2] {
        check(&dev, &c, epi, GemmSm90Launch::default(), "CUDA stand-in");
        check(&dev, &c, epi, GemmSm90Launch { ctas: Some(1), ..Default::default() }, "CUDA stand-in");
    }
}
