//! The FFN block (`ffn_block_f16_sm90`: FFN1 + activation, FFN2 + bias + residual and LN2 in one
//! persistent launch) on the emulator at sm_90: bit for bit the chain it replaces
//! (`gemm_f16_sm90` with the activation, then `gemm_f16_sm90_ln` with the residual), every output
//! (FFN1's `f`, FFN2's `y`, LN2's rows), on random non-zero inputs, outputs poisoned before every
//! launch, shapes off every tile (h 192: a half column tile; i 320: FFN2's K in two chunks, one
//! partial; 150 rows: a second strip of 22 rows, one consumer warpgroup idle; 20 rows: one),
//! in lazy, eager and random completion, with the grid resident (units waiting on other CTAs'
//! tiles), three CTAs and one CTA at a time (every unit in ticket order in one CTA), and twice
//! on one device (the counters left zero).
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::ffn_block_sm90::{self as fb, FfnBlockF16, FfnBlockLaunch, FfnBlockWorkspace};
use fusebert_kernels::{Device, Epilogue, FusedLayerNorm, SplitWorkspace};
use half::f16;
use kernels_util::*;

const H: usize = 192;
const I: usize = 320;

struct Case {
    m: usize,
    x: Vec<f16>,
    w1: Vec<f16>,
    b1: Vec<f16>,
    w2: Vec<f16>,
    b2: Vec<f16>,
    gamma: Vec<f16>,
    beta: Vec<f16>,
}

/// (f, y, LN2's rows) as bits.
type Outputs = (Vec<u16>, Vec<u16>, Vec<u16>);

impl Case {
    fn new(seed: u64, m: usize) -> Case {
        let r = &mut rng(seed);
        Case {
            m,
            x: rand_f16(r, m * H, 1.0),
            w1: rand_f16(r, I * H, 2.0 / (H as f32).sqrt()),
            b1: rand_f16(r, I, 0.5),
            w2: rand_f16(r, H * I, 2.0 / (I as f32).sqrt()),
            b2: rand_f16(r, H, 0.5),
            gamma: rand_around_one(r, H, 0.2),
            beta: rand_f16(r, H, 0.3),
        }
    }

    /// `launches` runs of the block (launched as `how`) or of the chain, on `dev`.
    fn run(&self, dev: &Device, block: Option<FfnBlockLaunch>, launches: usize) -> Outputs {
        let m = self.m;
        let up = |v: &[f16]| dev.upload(v).unwrap();
        let (x, w1, b1, w2, b2) = (up(&self.x), up(&self.w1), up(&self.b1), up(&self.w2), up(&self.b2));
        let (gamma, beta) = (up(&self.gamma), up(&self.beta));
        let ws = FfnBlockWorkspace::new(dev, m, H, I).unwrap();
        let split = SplitWorkspace::for_shapes(dev, &[(m, I, H, false), (m, H, I, false)]).unwrap();
        let mut outs = None;
        for _ in 0..launches {
            let (mut f, mut y, out) = (poisoned(dev, m * I), poisoned(dev, m * H), poisoned(dev, m * H));
            let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: &out, q8: None, eps: 1e-12 };
            let op = FfnBlockF16 { x: &x, w1: &w1, b1: &b1, act: Epilogue::Gelu, w2: &w2, b2: &b2, m, h: H, i: I };
            match block {
                Some(how) => fb::ffn_block_f16_sm90(dev, &op, &mut f, &mut y, &ln, &ws, how).unwrap(),
                None => fb::ffn_chain_f16_sm90(dev, &op, &mut f, &mut y, &ln, &split).unwrap(),
            }
            outs = Some((f16_bits(&f), f16_bits(&y), f16_bits(&out)));
        }
        outs.unwrap()
    }
}

fn emu(mode: AsyncMode, resident: Option<u32>) -> Device {
    kernels_util::hopper::sm90_resident(mode, resident)
}

/// The tile width `cols` against the chain, in every completion mode (twice in lazy: the
/// counters left zero), on three CTAs and one at a time.
fn block_equals_chain(case: &Case, cols: usize) {
    let chain = case.run(&emu(AsyncMode::Lazy, None), None, 1);
    block_equals_chain_on(case, &chain, cols);
}

fn block_equals_chain_on(case: &Case, chain: &Outputs, cols: usize) {
    let runs = [
        (None, None, AsyncMode::Lazy, 2),
        (None, None, AsyncMode::Eager, 1),
        (None, None, AsyncMode::Random(17), 1),
        (None, Some(3), AsyncMode::Random(18), 1),
        (Some(1), None, AsyncMode::Lazy, 1),
        (Some(1), None, AsyncMode::Random(19), 1),
    ];
    for (resident, ctas, mode, launches) in runs {
        let got = case.run(&emu(mode, resident), Some(FfnBlockLaunch { cols, ctas }), launches);
        let what = format!("m {}, cols {cols}, resident {resident:?}, ctas {ctas:?}, {mode:?}", case.m);
        assert!(got.0 == chain.0, "{what}: FFN1's output differs from the chain's");
        assert!(got.1 == chain.1, "{what}: FFN2's output differs from the chain's");
        assert!(got.2 == chain.2, "{what}: LN2's rows differ from the chain's");
    }
}

// one test per tile width, so the two test threads share them

#[test]
fn two_strips_are_the_chains_bits_on_128_wide_tiles() {
    assert_eq!(fb::COLS, [128, 64], "a test per compiled width");
    block_equals_chain(&Case::new(51, 150), 128);
}

#[test]
fn two_strips_are_the_chains_bits_on_64_wide_tiles() {
    block_equals_chain(&Case::new(51, 150), 64);
}

#[test]
fn one_short_strip_is_the_chains_bits_on_128_wide_tiles() {
    block_equals_chain(&Case::new(52, 20), 128);
}

#[test]
fn one_short_strip_is_the_chains_bits_on_64_wide_tiles() {
    block_equals_chain(&Case::new(52, 20), 64);
}

/// Bad operands are typed errors naming the kernel, never a launch.
#[test]
fn bad_operands_are_errors() {
    let dev = emu(AsyncMode::Lazy, None);
    let case = Case::new(53, 20);
    let up = |v: &[f16]| dev.upload(v).unwrap();
    let (x, w1, b1, w2, b2) = (up(&case.x), up(&case.w1), up(&case.b1), up(&case.w2), up(&case.b2));
    let (gamma, beta) = (up(&case.gamma), up(&case.beta));
    let ws = FfnBlockWorkspace::new(&dev, 20, H, I).unwrap();
    let (mut f, mut y, out) = (poisoned(&dev, 20 * I), poisoned(&dev, 20 * H), poisoned(&dev, 20 * H));
    let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: &out, q8: None, eps: 1e-12 };
    let op = FfnBlockF16 { x: &x, w1: &w1, b1: &b1, act: Epilogue::Gelu, w2: &w2, b2: &b2, m: 20, h: H, i: I };
    let residual = FfnBlockF16 { act: Epilogue::Residual(&x), ..op };
    assert_kernel_err(
        fb::ffn_block_f16_sm90(&dev, &residual, &mut f, &mut y, &ln, &ws, FfnBlockLaunch::default()),
        fb::KERNEL,
    );
    let longer = FfnBlockF16 { m: 21, ..op };
    assert_kernel_err(
        fb::ffn_block_f16_sm90(&dev, &longer, &mut f, &mut y, &ln, &ws, FfnBlockLaunch::default()),
        fb::KERNEL,
    );
    let wide = FfnBlockF16 { h: 1032, ..op };
    assert_kernel_err(
        fb::ffn_block_f16_sm90(&dev, &wide, &mut f, &mut y, &ln, &ws, FfnBlockLaunch::default()),
        fb::KERNEL,
    );
    let none = FfnBlockLaunch { ctas: Some(0), ..Default::default() };
    assert_kernel_err(fb::ffn_block_f16_sm90(&dev, &op, &mut f, &mut y, &ln, &ws, none), fb::KERNEL);
    let cols = FfnBlockLaunch { cols: 192, ..Default::default() };
    assert_kernel_err(fb::ffn_block_f16_sm90(&dev, &op, &mut f, &mut y, &ln, &ws, cols), fb::KERNEL);
}
