//! The Hopper attention (`kernels/attention_sm90.cu`: SS wgmma for S = Q K^T, online softmax in
//! registers, RS wgmma for O += P V with V MN-major) on the emulator at sm_90, against the f64
//! CPU reference (`reference::attention`) and against the mma.sync kernel (`attention`), on
//! random non-zero inputs, outputs poisoned (NaN) before every launch, ragged packed sequences
//! whose lengths are not multiples of the 64-row query tile or the 64-key block, in lazy, eager
//! and random completion of the asynchronous work (wgmma groups).
//!
//! Tolerance 1e-3 absolute on unit-scale data (q, k, v uniform in [-1, 1]), from precision as in
//! tests/kernels_attention.rs: the output is a convex combination of v; P is rounded to fp16
//! before P V (relative 2^-11 on each weight while the normaliser sums the unrounded weights:
//! <= 2^-11 max|v| = 4.9e-4), O is rounded to fp16 (<= 2^-11 |o| <= 4.9e-4), ex2.approx (2^-22)
//! and f32 accumulation add ~1e-6. Against the mma.sync kernel: both bounds, 2e-3.
mod kernels_util;
use fusebert_kernels::attention_sm90::{self, attention_int8_sm90, attention_sm90, codes_strips, Sm90Tiling};
use fusebert_kernels::device::emulator::{Arch, AsyncMode, EmulatorOptions};
use fusebert_kernels::{
    quantize_i8, reference, AttentionLaunch, AttentionShape, ContextCodes, Device, DeviceBuffer, QuantizeF16,
    QuantizedI8, CTX_COUNTERS,
};
use half::f16;
use kernels_util::*;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(7)];
const TOL: f32 = 1e-3;

/// The emulator as an H100 (sm_90: arch-specific sm_90a PTX loads), all sanitizers on.
fn sm90(mode: AsyncMode) -> Device {
    Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() })
        .expect("emulator")
}

/// cu_seqlens of `lens`.
fn cu(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// One ragged batch: random qkv, the reference output.
struct Case {
    cu: Vec<u32>,
    heads: usize,
    d: usize,
    qkv: Vec<f16>,
}

impl Case {
    fn new(seed: u64, d: usize, heads: usize, lens: &[u32]) -> Case {
        let cu = cu(lens);
        let t = *cu.last().unwrap() as usize;
        Case { qkv: rand_f16(&mut rng(seed), t * 3 * heads * d, 1.0), cu, heads, d }
    }
    fn shape(&self) -> AttentionShape {
        AttentionShape::from_cu_seqlens(&self.cu, self.heads, self.d).unwrap()
    }
    fn reference(&self) -> Vec<f32> {
        reference::attention(&self.qkv, &self.cu, self.heads, self.d, 1.0 / (self.d as f32).sqrt())
    }
    /// The Hopper kernel per sequence (or the mma.sync one when `hopper` is false) into a
    /// poisoned output.
    fn run(&self, dev: &Device, hopper: bool) -> fusebert_kernels::Result<Vec<f32>> {
        self.run_tiled(dev, hopper, Sm90Tiling::PerSequence)
    }
    fn run_tiled(&self, dev: &Device, hopper: bool, tiling: Sm90Tiling) -> fusebert_kernels::Result<Vec<f32>> {
        let s = self.shape();
        let (dq, dc) = (dev.upload(&self.qkv).unwrap(), dev.upload(&self.cu).unwrap());
        let mut out = poisoned::<f16>(dev, s.tokens * self.heads * self.d);
        clear(dev);
        if hopper {
            attention_sm90(dev, &dq, &dc, &mut out, s, tiling)?;
        } else {
            fusebert_kernels::attention(dev, &dq, &dc, &mut out, s, AttentionLaunch::default())?;
        }
        Ok(to_f32(&out.to_host().unwrap()))
    }
    /// The Hopper kernel against the reference; checks the entry launched, no local memory, and
    /// that exactly the output was stored. Returns the max |err|.
    fn check(&self, dev: &Device, what: &str) -> f32 {
        self.check_tiled(dev, what, Sm90Tiling::PerSequence)
    }
    fn check_tiled(&self, dev: &Device, what: &str, tiling: Sm90Tiling) -> f32 {
        let lens: Vec<u32> = self.cu.windows(2).map(|w| w[1] - w[0]).collect();
        let what = format!("{what}: attention_sm90 {tiling:?} d {} heads {} lens {lens:?}", self.d, self.heads);
        let got = self.run_tiled(dev, true, tiling).unwrap();
        let err = check_close(&what, &got, &self.reference(), |_, _| TOL);
        let emu = dev.emulator_backend().expect("emulator");
        let packed = tiling.resolve(self.shape().max_seqlen) == Sm90Tiling::Packed;
        let entry = format!("attention_sm90{}_d{}", if packed { "_packed" } else { "" }, self.d);
        assert_eq!(emu.launches().last().unwrap().kernel, entry, "{what}");
        let c = last_counters(dev).unwrap();
        assert_no_local(&c, &what);
        assert_eq!(c.global_store_bytes, (got.len() * 2) as u64, "{what}: store bytes = output size");
        err
    }
}

/// Lengths 1, 19, 63, 67 (cu_seqlens [0, 1, 20, 83, 150]): a one-token text, tiles with mostly
/// padded rows and keys, one key past a block, a second query tile with 3 valid rows.
const LENS: [u32; 4] = [1, 19, 63, 67];

#[test]
fn hopper_attention_d32_d64_match_the_reference_in_every_completion_mode() {
    let mut max = 0f32;
    for (mi, mode) in MODES.into_iter().enumerate() {
        let dev = sm90(mode);
        for (di, d) in [32usize, 64].into_iter().enumerate() {
            let c = Case::new(10 * mi as u64 + di as u64, d, 2, &LENS);
            max = max.max(c.check(&dev, &format!("{mode:?}")));
        }
    }
    eprintln!("attention_sm90 d32/d64: max |err| = {max:e}");
}

/// Three key blocks (the online softmax rescales twice) and three query tiles.
#[test]
fn hopper_attention_three_key_blocks() {
    for (i, mode) in [AsyncMode::Lazy, AsyncMode::Random(3)].into_iter().enumerate() {
        let dev = sm90(mode);
        let err = Case::new(30 + i as u64, 64, 2, &[150, 5]).check(&dev, &format!("{mode:?}"));
        eprintln!("attention_sm90 d64 lens [150, 5] {mode:?}: max |err| = {err:e}");
    }
}

/// Head dim 128 (two 128-byte swizzled column blocks: V's LBO is used), once.
#[test]
fn hopper_attention_d128() {
    let dev = sm90(AsyncMode::Random(5));
    let err = Case::new(40, 128, 1, &[20, 70]).check(&dev, "Random");
    eprintln!("attention_sm90 d128: max |err| = {err:e}");
}

/// The other head dims: 16 (32-byte swizzle), 48, 80, 112 (32-byte swizzle, 3, 5, 7 column
/// blocks), 96 (64-byte swizzle, 3 blocks), one small batch each.
#[test]
fn hopper_attention_other_head_dims() {
    let dev = sm90(AsyncMode::Lazy);
    for (i, d) in [16usize, 48, 80, 96, 112].into_iter().enumerate() {
        let err = Case::new(50 + i as u64, d, 1, &[3, 66]).check(&dev, "Lazy");
        eprintln!("attention_sm90 d{d}: max |err| = {err:e}");
    }
}

/// The wgmma kernel and the mma.sync kernel agree within both kernels' bounds.
#[test]
fn hopper_attention_agrees_with_the_mma_sync_kernel() {
    let dev = sm90(AsyncMode::Lazy);
    let (mut same, mut total, mut max) = (0usize, 0usize, 0f32);
    for (i, d) in [32usize, 64].into_iter().enumerate() {
        let c = Case::new(60 + i as u64, d, 2, &LENS);
        let hopper = c.run(&dev, true).unwrap();
        let ampere = c.run(&dev, false).unwrap();
        max = max.max(check_close(&format!("attention_sm90 vs attention d {d}"), &hopper, &ampere, |_, _| 2.0 * TOL));
        same += hopper.iter().zip(&ampere).filter(|(h, a)| h.to_bits() == a.to_bits()).count();
        total += hopper.len();
    }
    eprintln!("attention_sm90 vs attention: max |diff| {max:e}, {same} of {total} outputs bit-identical");
}

/// Packed-token tiles: 64 consecutive tokens of any sequences per CTA, each row masked to its
/// own sequence. LENS forced packed (a tile spans 3 sequences; the 67-token one crosses a tile
/// boundary) in every mode; many short texts with empty sequences among them (Auto packs:
/// longest 64); key ranges of several blocks where some rows see no key of the first block
/// (the -inf row max guard); d128 once.
#[test]
fn hopper_attention_packed_tiles_match_the_reference() {
    let mut max = 0f32;
    for (mi, mode) in MODES.into_iter().enumerate() {
        let dev = sm90(mode);
        for (di, d) in [32usize, 64].into_iter().enumerate() {
            let c = Case::new(110 + 10 * mi as u64 + di as u64, d, 2, &LENS);
            max = max.max(c.check_tiled(&dev, &format!("{mode:?}"), Sm90Tiling::Packed));
        }
        let c = Case::new(120 + mi as u64, 64, 2, &[5, 0, 20, 1, 64, 3, 33, 0, 17, 2]);
        max = max.max(c.check_tiled(&dev, &format!("{mode:?}"), Sm90Tiling::Auto));
        let c = Case::new(130 + mi as u64, 32, 1, &[100, 30, 90]);
        max = max.max(c.check_tiled(&dev, &format!("{mode:?}"), Sm90Tiling::Packed));
    }
    let dev = sm90(AsyncMode::Random(9));
    let c = Case::new(140, 128, 1, &[10, 50, 7]);
    max = max.max(c.check_tiled(&dev, "Random", Sm90Tiling::Packed));
    eprintln!("attention_sm90 packed: max |err| = {max:e}");
}

/// Two consumer warpgroups per 128-row CTA at the edges of their halves: a one-token text, 63 /
/// 64 / 65 rows (the second consumer with no row or one), 129 (a second CTA whose second consumer
/// has no row: it still takes every block from the ring and releases it), per sequence and
/// packed, at d16, d32, d64 and d128, in lazy and random completion.
#[test]
fn two_consumers_at_the_edges_of_their_halves() {
    let mut max = 0f32;
    for (mi, mode) in [AsyncMode::Lazy, AsyncMode::Random(11)].into_iter().enumerate() {
        let dev = sm90(mode);
        for (di, d) in [16usize, 32, 64, 128].into_iter().enumerate() {
            let c = Case::new(200 + 10 * mi as u64 + di as u64, d, 1, &[1, 63, 64, 65, 129]);
            for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
                max = max.max(c.check_tiled(&dev, &format!("{mode:?}"), tiling));
            }
        }
    }
    eprintln!("attention_sm90 lens [1, 63, 64, 65, 129]: max |err| = {max:e}");
}

/// Key ranges of many blocks through the 2-stage ring (each stage refilled several times: 517
/// keys are 9 blocks, 5 laps of stage 0), per sequence and packed, in every completion mode.
#[test]
fn long_sequences_cycle_the_ring() {
    let mut max = 0f32;
    for (mi, mode) in MODES.into_iter().enumerate() {
        let dev = sm90(mode);
        for (di, d) in [32usize, 128].into_iter().enumerate() {
            let c = Case::new(230 + 10 * mi as u64 + di as u64, d, 1, &[300, 517, 3]);
            for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
                max = max.max(c.check_tiled(&dev, &format!("{mode:?}"), tiling));
            }
        }
    }
    eprintln!("attention_sm90 lens [300, 517, 3]: max |err| = {max:e}");
}

/// Where a packed tile's key blocks start at its rows' sequence start (one sequence; or lengths
/// that are multiples of the 128-row tile before the last), every row sees the same blocks in
/// the same order as per sequence: the two entries agree bit for bit. (Elsewhere packed tiles
/// start their blocks at the tile's first sequence, and agree within the tolerance.)
#[test]
fn packed_and_per_sequence_tiles_agree_bitwise_where_their_blocks_align() {
    let dev = sm90(AsyncMode::Random(13));
    for (i, d) in [16usize, 32, 64, 128].into_iter().enumerate() {
        for lens in [&[300u32][..], &[128, 200][..], &[256, 1, 0][..]] {
            let c = Case::new(260 + i as u64, d, 2, lens);
            let per_seq = c.run_tiled(&dev, true, Sm90Tiling::PerSequence).unwrap();
            let packed = c.run_tiled(&dev, true, Sm90Tiling::Packed).unwrap();
            let differ = per_seq.iter().zip(&packed).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "d{d} lens {lens:?}: {differ} outputs differ between the two tilings");
            check_close(&format!("d{d} lens {lens:?}"), &packed, &c.reference(), |_, _| TOL);
        }
    }
}

/// `Auto` packs exactly up to `PACKED_MAX_SEQLEN`.
#[test]
fn tiling_selection_rule() {
    use attention_sm90::PACKED_MAX_SEQLEN;
    assert_eq!(Sm90Tiling::Auto.resolve(1), Sm90Tiling::Packed);
    assert_eq!(Sm90Tiling::Auto.resolve(PACKED_MAX_SEQLEN), Sm90Tiling::Packed);
    assert_eq!(Sm90Tiling::Auto.resolve(PACKED_MAX_SEQLEN + 1), Sm90Tiling::PerSequence);
    assert_eq!(Sm90Tiling::Packed.resolve(500), Sm90Tiling::Packed);
    assert_eq!(attention_sm90::kernel(32, Sm90Tiling::Packed).unwrap(), "attention_sm90_packed_d32");
    assert_eq!(attention_sm90::kernel(32, Sm90Tiling::PerSequence).unwrap(), "attention_sm90_d32");
}

/// The int8 entries (`attention_int8_sm90*`, int8 forward passes): the fp16 entry's output bits,
/// and the context's codes and scales bit for bit what quantize_i8 (symmetric, no smoothing)
/// gives from it, a row tile's heads' CTAs meeting once their rows are stored and sharing the
/// tile's rows. Per-sequence tiles (a sequence of 150 tokens: two tiles; one of 0) and packed
/// tiles, 3 heads of 48 (rows of 144 columns: 18 vectors, not a multiple of a warp's 32), with
/// the grid resident (every CTA of a tile takes part) and with one CTA at a time (only a tile's
/// last CTA does: it never waits), every completion mode, twice per device (the counters left zero for the next
/// launch). Atomics counted: per tile with rows, each CTA counts in 3 times, the last resets 4
/// counters, every row is claimed once, and each of a taking-part CTA's 8 consumer warps
/// claims once past the end.
#[test]
fn int8_entries_write_the_context_codes() {
    let case = Case::new(72, 48, 3, &[150, 0, 19, 63, 5]);
    let s = case.shape();
    let (t, h) = (s.tokens, case.heads * case.d);
    let lens: Vec<usize> = case.cu.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
        let plain = sm90(AsyncMode::Lazy);
        let dq = plain.upload(&case.qkv).unwrap();
        let dc = plain.upload(&case.cu).unwrap();
        let mut want = poisoned::<f16>(&plain, t * h);
        attention_sm90(&plain, &dq, &dc, &mut want, s, tiling).unwrap();
        let (mut wq, mut ws) = (poisoned::<i8>(&plain, t * h), poisoned::<f32>(&plain, t));
        let x = QuantizeF16 { x: &want, smooth: None, rows: t, hidden: h };
        quantize_i8(&plain, &x, QuantizedI8 { q: &mut wq, scale: &mut ws, zero: None }).unwrap();
        // rows per tile with rows
        let tiles: Vec<u64> = match tiling {
            Sm90Tiling::Packed => (0..t.div_ceil(128)).map(|i| (t - 128 * i).min(128) as u64).collect(),
            _ => lens.iter().flat_map(|&l| (0..l.div_ceil(128)).map(move |i| (l - 128 * i).min(128) as u64)).collect(),
        };
        let atomics = |joined: u64| tiles.iter().map(|&rows| 3 * 3 + 4 + rows + 8 * joined).sum::<u64>();
        for resident in [None, Some(1)] {
            for mode in MODES {
                let what = format!("{tiling:?}, resident {resident:?}, {mode:?}");
                let dev = Device::emulator_with(EmulatorOptions {
                    arch: Arch::Sm90,
                    async_mode: mode,
                    resident_blocks: resident,
                    ..Default::default()
                })
                .unwrap();
                let (dq, dc) = (dev.upload(&case.qkv).unwrap(), dev.upload(&case.cu).unwrap());
                let mut counters = dev.alloc_filled::<u32>(CTX_COUNTERS * codes_strips(s, tiling), 0).unwrap();
                for launch in 0..2 {
                    let mut out = poisoned::<f16>(&dev, t * h);
                    let (mut q, mut scale) = (poisoned::<i8>(&dev, t * h), poisoned::<f32>(&dev, t));
                    clear(&dev);
                    let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
                    attention_int8_sm90(&dev, &dq, &dc, &mut out, codes, s, tiling).unwrap();
                    let what = format!("{what}, launch {launch}");
                    let packed = if tiling == Sm90Tiling::Packed { "_packed" } else { "" };
                    let entry = format!("attention_int8_sm90{packed}_d48");
                    assert_eq!(dev.emulator_backend().unwrap().launches().last().unwrap().kernel, entry);
                    assert_eq!(bits(&out), bits(&want), "{what}: context");
                    assert_eq!(bits(&q), bits(&wq), "{what}: codes");
                    assert_eq!(f32_bits(&scale), f32_bits(&ws), "{what}: scales");
                    assert!(counters.to_host().unwrap().iter().all(|&c| c == 0), "{what}: counters left non-zero");
                    let c = last_counters(&dev).unwrap();
                    assert_no_local(&c, &what);
                    // one CTA at a time: only each tile's last CTA takes part; the grid resident
                    // (every CTA counted in on `started` before the first arrival): all of them
                    let joined = if resident.is_some() { 1 } else { 3 };
                    assert_eq!(c.atomics, atomics(joined), "{what}: atomics");
                }
            }
        }
    }
}

/// CTAs of the last launch on the emulator.
fn last_grid_ctas(dev: &Device) -> u32 {
    let l = dev.emulator_backend().unwrap().launches().last().unwrap().clone();
    l.grid.0 * l.grid.1 * l.grid.2
}

/// The emulator's counters of one launch (printed for the docs): the tensor work is the padded
/// tiles', no bank conflicts, no local memory.
#[test]
fn counters_of_one_launch() {
    let dev = sm90(AsyncMode::Lazy);
    let c = Case::new(70, 64, 2, &LENS);
    for (name, hopper) in [("attention_sm90", true), ("attention (mma.sync)", false)] {
        c.run(&dev, hopper).unwrap();
        let cn = last_counters(&dev).unwrap();
        eprintln!(
            "{name} d64 heads 2 lens {LENS:?}: {} warp / {} thread instructions, {} tensor MACs, {} shared bank \
             conflicts, global load efficiency {:.2}, store efficiency {:.2}",
            cn.warp_instructions,
            cn.thread_instructions,
            cn.tensor_macs,
            cn.shared_bank_conflicts,
            cn.global_load_efficiency(),
            cn.global_store_efficiency(),
        );
        assert_no_local(&cn, name);
        if hopper {
            // (consumer warpgroup with rows, key block) pairs per head: 1 + 1 + 1 + 2 x 2 (a consumer
            // with no row computes nothing); each 64 x 64 x d twice
            let pairs: u64 = LENS.iter().map(|&l| (l as u64).div_ceil(64).pow(2)).sum::<u64>() * 2;
            assert_eq!(cn.tensor_macs, pairs * 2 * 64 * 64 * 64, "tensor MACs: the padded tiles'");
            assert_eq!(cn.shared_bank_conflicts, 0, "bank conflicts");
        }
    }
    // many short texts: packed tiles against per-sequence tiles (tensor work of the padding)
    let short = Case::new(71, 64, 2, &[5, 0, 20, 1, 64, 3, 33, 0, 17, 2]);
    for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
        short.run_tiled(&dev, true, tiling).unwrap();
        let cn = last_counters(&dev).unwrap();
        eprintln!(
            "attention_sm90 {tiling:?} d64 heads 2, 10 texts of 0-64 tokens (145): {} CTAs, {} warp instructions, \
             {} tensor MACs",
            last_grid_ctas(&dev),
            cn.warp_instructions,
            cn.tensor_macs
        );
        assert_no_local(&cn, "short texts");
    }
}

#[test]
fn bad_shapes_and_buffers_are_typed_errors() {
    let dev = sm90(AsyncMode::Lazy);
    let qkv = dev.upload(&vec![f16::ONE; 3 * 128 * 5 + 8]).unwrap();
    let cu = dev.upload(&[0u32, 5]).unwrap();
    let mut out = dev.alloc::<f16>(128 * 5).unwrap();
    let ok = AttentionShape { batch: 1, tokens: 5, max_seqlen: 5, heads: 2, head_dim: 64, scale: None };
    let run = |q: &DeviceBuffer<f16>, out: &mut DeviceBuffer<f16>, s: AttentionShape| {
        attention_sm90(&dev, q, &cu, out, s, Sm90Tiling::Auto)
    };
    for head_dim in [0, 8, 40, 144] {
        assert_kernel_err(run(&qkv, &mut out, AttentionShape { head_dim, ..ok }), "attention_sm90");
    }
    let k = "attention_sm90_packed_d64"; // max_seqlen 5: Auto packs
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { tokens: 0, ..ok }), k);
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { heads: 0, ..ok }), k);
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { max_seqlen: 0, ..ok }), k);
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { batch: 2, ..ok }), k); // cu_seqlens too short
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { heads: 70_000, ..ok }), k);
    assert_kernel_err(run(&qkv, &mut out, AttentionShape { tokens: 6, ..ok }), k); // qkv too short
    let shifted = qkv.view(4, 3 * 128 * 5).unwrap(); // 8-byte aligned: cp.async needs 16
    assert_kernel_err(run(&shifted, &mut out, ok), k);
    let per_seq =
        attention_sm90(&dev, &qkv, &cu, &mut out, AttentionShape { tokens: 6, ..ok }, Sm90Tiling::PerSequence);
    assert_kernel_err(per_seq, "attention_sm90_d64");
    // the launch itself works on the same buffers
    run(&qkv, &mut out, ok).unwrap();
}

/// Arch-specific PTX runs on its exact architecture only: an sm_80 device does not load the
/// module, so the launch is an error, not an emulation of wgmma on an A100.
#[test]
fn an_sm_80_device_refuses_the_hopper_kernel() {
    let dev = Device::emulator().unwrap();
    let c = Case::new(80, 32, 1, &[5]);
    assert!(c.run(&dev, true).is_err());
}

/// The kernel's embedded sm_90a PTX (its only variant).
fn sm90a_ptx() -> String {
    let m = fusebert_kernels::ptx::module(attention_sm90::MODULE).expect("attention_sm90 is embedded");
    assert_eq!(m.by_arch.len(), 1, "attention_sm90 has one variant");
    assert_eq!(m.by_arch[0].0, "sm_90a");
    m.by_arch[0].1.to_string()
}

/// The sanitizer report of a launch of `ptx` (a mutation of the kernel's PTX) on `lens` at d32,
/// or "clean" when it runs clean and matches the reference.
fn run_mutant_on(ptx: &str, mode: AsyncMode, lens: &[u32]) -> String {
    let dev = sm90(mode);
    // loaded under the module's name, it replaces the embedded one on this device
    dev.load_module(attention_sm90::MODULE, ptx).unwrap();
    let c = Case::new(90, 32, 1, lens);
    match c.run(&dev, true) {
        Err(e) => e.to_string(),
        Ok(got) => {
            let wrong = got.iter().zip(&c.reference()).filter(|(g, w)| (*g - *w).abs() > TOL).count();
            if wrong == 0 {
                "clean".into()
            } else {
                format!("{wrong} wrong outputs")
            }
        }
    }
}

fn run_mutant(ptx: &str, mode: AsyncMode) -> String {
    run_mutant_on(ptx, mode, &[70, 9])
}

/// Ordering bugs planted in the kernel's own PTX are reported (the unmutated PTX, the clean
/// twin, runs clean in every mode): no wgmma.fence before the wgmmas (S2: the rescaled O and the
/// freshly packed P are registers written by ordinary instructions), and the wait before the
/// softmax dropped (S1: the S accumulators read while their wgmmas may be in flight).
///
/// A V operand read K-major instead of MN-major (imm-trans-b 0) is caught too (out of bounds).
///
/// And a stage released too early (S4): the consumers' arrival on `empty[s]` moved before the
/// wait_group of the P V wgmmas that read stage s, on a sequence of 200 keys (4 blocks through a
/// 2-stage ring: stages refilled twice), so the producer's TMA may overwrite V while a wgmma
/// still reads it.
#[test]
fn planted_ordering_bugs_are_reported() {
    let ptx = sm90a_ptx();
    for mode in MODES {
        assert_eq!(run_mutant(&ptx, mode), "clean", "{mode:?}");
        assert_eq!(run_mutant_on(&ptx, mode, &[200, 9]), "clean", "{mode:?}");
    }
    let no_wg_fence = ptx.replace("wgmma.fence.sync.aligned;", "");
    // the first wait of the d32 entry (the one the mutant runs): the wait after S = Q K^T
    let d32 = ptx.find(".entry attention_sm90_d32").expect("the d32 entry");
    let at = d32 + ptx[d32..].find("wgmma.wait_group.sync.aligned 0;").expect("a wait in d32");
    let no_wait = format!("{}{}", &ptx[..at], &ptx[at..].replacen("wgmma.wait_group.sync.aligned 0;", "", 1));
    for (name, m) in [("wgmma.fence", &no_wg_fence), ("wait_group", &no_wait)] {
        assert!(*m != ptx, "{name}: the mutation must change the PTX");
        for mode in [AsyncMode::Lazy, AsyncMode::Random(3)] {
            let r = run_mutant(m, mode);
            assert!(r != "clean", "missing {name} {mode:?}: {r}");
            eprintln!("missing {name} {mode:?}: {}", r.lines().next().unwrap_or(""));
        }
    }
    // V read K-major (imm-trans-b 0): its descriptor's strides then reach past the block's shared
    // memory (an out-of-bounds report) or give wrong outputs
    let v_k_major = ptx.replace("p, 1, 1, 1;", "p, 1, 1, 0;");
    assert!(v_k_major != ptx);
    for mode in MODES {
        let r = run_mutant(&v_k_major, mode);
        assert!(r != "clean", "V K-major {mode:?}: {r}");
    }
    // early release: the P V wait (the last wait before the d32 consumer's empty arrival)
    // dropped, so the arrival precedes the completion of the wgmmas reading the stage (the next
    // block's wait_group 0 would complete them, after the producer may have refilled it)
    const WAIT: &str = "wgmma.wait_group.sync.aligned 0;";
    let arrive = d32 + ptx[d32..].find("mbarrier.arrive.shared::cta.b64 _,").expect("the empty arrival in d32");
    let wait = d32 + ptx[d32..arrive].rfind(WAIT).expect("the P V wait");
    let early = format!("{}{}", &ptx[..wait], &ptx[wait + WAIT.len()..]);
    for mode in MODES {
        let r = run_mutant_on(&early, mode, &[200, 9]);
        assert!(
            r.contains("TMA load writes") && r.contains("still in flight"),
            "early release of a stage {mode:?}: {r}"
        );
        eprintln!("early empty arrival {mode:?}: {}", r.lines().next().unwrap_or(""));
    }
}

/// The CUDA backend's half of the device layer, through the CUDA driver stand-in reporting an
/// sm_90 device: the module's sm_90a variant chosen for compute capability 9.0, and the dynamic
/// shared memory above 48 KiB (80 KiB at head dim 128) raised by the function attribute.
#[test]
fn the_cuda_backend_launches_it() {
    use fusebert_cuda_standin::{install, StandinOptions};
    install(StandinOptions { compute_capability: (9, 0), ..Default::default() }).expect("stand-in");
    let dev = Device::cuda(0).expect("the stand-in's sm_90 device");
    for (seed, d, lens) in [(100, 128usize, &[20u32, 70][..]), (101, 64, &LENS[..])] {
        let c = Case::new(seed, d, 2, lens);
        let got = c.run(&dev, true).unwrap();
        check_close(&format!("CUDA stand-in: attention_sm90 d {d}"), &got, &c.reference(), |_, _| TOL);
    }
}

/// At every head dim, per-sequence and packed tiles on ragged lengths: no shared-memory bank
/// conflicts (the cp.async copies go column block by column block, so a 16-byte store phase
/// fills one 128-byte line even where a row is several 32- or 64-byte swizzle blocks: d48, d80,
/// d96, d112 had 51,200 / 70,400 / 20,480 / 76,160 extra wavefronts in the report's shape) and
/// global store efficiency 1.0 (O staged in shared memory and stored as 16-byte chunks, whole
/// 32-byte sectors per instruction; the 4-byte column-pair stores were 0.5), against the
/// reference, exactly the output's bytes stored. An `out` that is not 16-byte aligned is a typed
/// error (the stores are 16 bytes).
#[test]
fn every_head_dim_is_free_of_bank_conflicts_and_stores_whole_sectors() {
    let dev = sm90(AsyncMode::Lazy);
    for (i, d) in (16..=128).step_by(16).enumerate() {
        for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
            let c = Case::new(150 + i as u64, d, 2, &LENS);
            c.check_tiled(&dev, "Lazy", tiling);
            let cn = last_counters(&dev).unwrap();
            let what = format!("attention_sm90 {tiling:?} d{d}");
            eprintln!(
                "{what}: {} warp instructions, {} shared wavefronts, {} bank conflicts, store efficiency {:.3}",
                cn.warp_instructions,
                cn.shared_wavefronts,
                cn.shared_bank_conflicts,
                cn.global_store_efficiency()
            );
            assert_eq!(cn.shared_bank_conflicts, 0, "{what}: bank conflicts");
            assert_eq!(cn.global_store_efficiency(), 1.0, "{what}: store efficiency");
        }
    }
    let c = Case::new(160, 64, 2, &LENS);
    let s = c.shape();
    let (dq, dc) = (dev.upload(&c.qkv).unwrap(), dev.upload(&c.cu).unwrap());
    let out = dev.alloc::<f16>(s.tokens * 2 * 64 + 8).unwrap();
    let mut shifted = out.view(4, s.tokens * 2 * 64).unwrap(); // 8-byte aligned
    assert_kernel_err(attention_sm90(&dev, &dq, &dc, &mut shifted, s, Sm90Tiling::PerSequence), "attention_sm90_d64");
}
