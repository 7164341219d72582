//! Layernorm fused into the Hopper GEMMs (`gemm_f16_sm90_ln`, `gemm_int8_sm90_ln`) by the serial
//! strip tail ([`Sm90Layernorm::Strip`]) on the emulator at sm_90: the GEMM output equals the plain
//! `_sm90` GEMM's bit for bit; the layernorm output is the Hopper family's blocked reduction order
//! (`kernels/ln_blocked.cuh`), so it is no longer `layernorm_f16`'s bits: it agrees with
//! `layernorm_f16` run on the GEMM output within an fp16 ulp (|err| <= (|want| + 1) 2^-10: the
//! two differ only in the f32 summation order of the mean and variance), and the int8 codes and
//! scales (with and without smoothing) are exactly those `layernorm_f16_q8` defines on the
//! layernorm output. Ragged shapes (M 1, 70, 130, 200: one, two and partial 128-row strips; N 96,
//! 136, 264, 384: partial column tiles; K off the stage), persistent grids of one CTA per tile and
//! of 2 CTAs (each walking several tiles of a strip, so the strip's last arrival is a CTA that did
//! other work first), lazy / eager / random completion, outputs poisoned, sanitizers on, every
//! launch twice (the strip counters reset); int8 a third time by the cluster entry, the same bits.
//! The int8 attention-output case writes its codes over its own input (`n == k`), as the forward
//! pass does (the cluster entry too). The cluster entries and the split tail
//! against this one, bit for bit: tests/gemm_sm90_cln.rs.
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Layernorm};
use fusebert_kernels::{Device, DeviceBuffer, Epilogue, FusedLayerNorm, FusedQ8, GemmShape, LayerNormF16, Q8Out};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;

const EPS: f32 = 1e-12;
const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(11)];

/// gamma around 1, beta around 0, smoothing multipliers around 1 (`[n]` each).
fn ln_params(r: &mut rand_chacha::ChaCha8Rng, n: usize) -> (Vec<f16>, Vec<f16>, Vec<f16>) {
    (rand_around_one(r, n, 0.5), rand_f16(r, n, 0.5), rand_around_one(r, n, 0.4))
}

/// `layernorm_f16` (with codes when `q8`) of `y`: the unfused second half.
fn layernorm(
    dev: &Device,
    y: &DeviceBuffer<f16>,
    g: &DeviceBuffer<f16>,
    b: &DeviceBuffer<f16>,
    q8: Option<Q8Out<'_>>,
    m: usize,
    n: usize,
) -> DeviceBuffer<f16> {
    let mut x = poisoned::<f16>(dev, m * n);
    let ln = LayerNormF16 { x: y, residual: None, bias: None, gamma: g, beta: b, rows: m, hidden: n, eps: EPS };
    fusebert_kernels::layernorm_f16(dev, &ln, &mut x, q8, fusebert_kernels::Variant::Fast).unwrap();
    x
}

fn launches(i: usize) -> GemmSm90Launch<'static> {
    GemmSm90Launch { ctas: (i % 2 == 1).then_some(2), layernorm: Sm90Layernorm::Strip, ..Default::default() }
}

/// The layernorm output against layernorm_f16's: within an fp16 ulp; the max |err|.
fn check_ln(what: &str, got: &DeviceBuffer<f16>, want: &DeviceBuffer<f16>) -> f32 {
    let (g, w) = (to_f32(&bits(got)), to_f32(&bits(want)));
    check_close(what, &g, &w, |w, _| (w.abs() + 1.0) / 1024.0)
}

#[test]
fn f16_sm90_fused_layernorm_is_gemm_then_layernorm_to_an_ulp() {
    let mut r = rng(61);
    for (i, &(m, n, k)) in [(200, 264, 80), (1, 384, 64), (130, 136, 72), (70, 96, 96)].iter().enumerate() {
        let dev = sm90(MODES[i % 3]);
        let (a, w, bias, res) = (
            rand_f16(&mut r, m * k, 1.0),
            rand_f16(&mut r, n * k, 1.0),
            rand_f16(&mut r, n, 1.0),
            rand_f16(&mut r, m * n, 1.0),
        );
        let (gamma, beta, _) = ln_params(&mut r, n);
        let up = |v: &[f16]| dev.upload(v).unwrap();
        let (da, dw, db, dr, dg, dbe) = (up(&a), up(&w), up(&bias), up(&res), up(&gamma), up(&beta));
        let g = fusebert_kernels::GemmF16 {
            a: &da,
            w: &dw,
            bias: Some(&db),
            epilogue: Epilogue::Residual(&dr),
            shape: GemmShape { m, n, k },
        };
        let how = launches(i);
        let mut y0 = poisoned::<f16>(&dev, m * n);
        fusebert_kernels::gemm_f16_sm90(&dev, &g, &mut y0, how).unwrap();
        let x0 = layernorm(&dev, &y0, &dg, &dbe, None, m, n);
        let ws = SplitWorkspace::new(&dev, 1, 1, m).unwrap();
        for rep in 0..2 {
            let mut y = poisoned::<f16>(&dev, m * n);
            let x = poisoned::<f16>(&dev, m * n);
            let ln = FusedLayerNorm { gamma: &dg, beta: &dbe, out: &x, q8: None, eps: EPS };
            clear(&dev);
            fusebert_kernels::gemm_f16_sm90_ln(&dev, &g, &mut y, &ln, &ws, how).unwrap();
            let cn = last_counters(&dev).expect("emulator counters");
            assert_eq!(cn.shared_bank_conflicts, 0);
            assert_no_local(&cn, "gemm_f16_sm90_ln");
            let what = format!("gemm_f16_sm90_ln M {m} N {n} K {k} {how:?} launch {rep}");
            assert_eq!(bits(&y), bits(&y0), "{what}: GEMM output");
            let err = check_ln(&what, &x, &x0);
            eprintln!("{what}: max |err| vs layernorm_f16 {err:.2e}");
        }
    }
}

#[test]
fn int8_sm90_fused_layernorm_with_codes_is_gemm_then_layernorm_q8_to_an_ulp() {
    use rand::Rng;
    let mut r = rng(62);
    for (i, &(m, n, k)) in [(200, 264, 160), (1, 384, 64), (130, 136, 48), (70, 96, 96)].iter().enumerate() {
        let dev = sm90(MODES[i % 3]);
        let a: Vec<i8> = (0..m * k).map(|_| r.gen_range(-127..=127)).collect();
        let w = rand_i8(&mut r, n * k);
        let asc: Vec<f32> = (0..m).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect();
        let wsc: Vec<f32> = (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect();
        let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
        let (gamma, beta, smooth) = ln_params(&mut r, n);
        let (da, dw, das, dws) =
            (dev.upload(&a).unwrap(), dev.upload(&w).unwrap(), dev.upload(&asc).unwrap(), dev.upload(&wsc).unwrap());
        let up = |v: &[f16]| dev.upload(v).unwrap();
        let (db, dr, dg, dbe, dsm) = (up(&bias), up(&res), up(&gamma), up(&beta), up(&smooth));
        let sm = (i % 2 == 0).then_some(&dsm);
        let how = launches(i);
        let g = fusebert_kernels::GemmInt8 {
            a: &da,
            a_scale: &das,
            zero_point: None,
            w: &dw,
            w_scale: &dws,
            bias: Some(&db),
            epilogue: Epilogue::Residual(&dr),
            shape: GemmShape { m, n, k },
        };
        let mut y0 = poisoned::<f16>(&dev, m * n);
        fusebert_kernels::gemm_int8_sm90(&dev, &g, &mut y0, how).unwrap();
        let (mut q0, mut s0) = (poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m));
        let x0 = layernorm(&dev, &y0, &dg, &dbe, Some(Q8Out { q: &mut q0, scale: &mut s0, smooth: sm }), m, n);
        let ws = SplitWorkspace::new(&dev, 1, 1, m).unwrap();
        // n == k: the codes overwrite the GEMM's own input, as LN1's do in the forward pass
        let in_place = n == k;
        // launches 0 and 1: the strip tail (its counters reset); 2: the cluster entry, which
        // gives the same bits (and, in place, reads its input rows before overwriting them)
        let mut first: Option<(Vec<f16>, Vec<i8>, Vec<u32>)> = None;
        for rep in 0..3 {
            let how = if rep == 2 { GemmSm90Launch { layernorm: Sm90Layernorm::Cluster, ..how } } else { how };
            let a_run = dev.upload(&a).unwrap();
            let g = fusebert_kernels::GemmInt8 { a: &a_run, ..g };
            let mut y = poisoned::<f16>(&dev, m * n);
            let (x, q_own, s) = (poisoned::<f16>(&dev, m * n), poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m));
            let q = if in_place { &a_run } else { &q_own };
            let ln = FusedLayerNorm {
                gamma: &dg,
                beta: &dbe,
                out: &x,
                q8: Some(FusedQ8 { q, scale: &s, smooth: sm }),
                eps: EPS,
            };
            fusebert_kernels::gemm_int8_sm90_ln(&dev, &g, &mut y, &ln, &ws, how).unwrap();
            let what = format!("gemm_int8_sm90_ln M {m} N {n} K {k} {how:?} smooth {} launch {rep}", sm.is_some());
            if rep < 2 {
                assert_eq!(bits(&y), bits(&y0), "{what}: GEMM output");
            } else {
                assert!(bits(&y).iter().all(|v| v.to_bits() == 0xFFFF), "{what}: the cluster entry wrote y");
            }
            let got = (bits(&x), bits(q), f32_bits(&s));
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f == &got, "{what}: not the bits of launch 0"),
            }
            let err = check_ln(&what, &x, &x0);
            eprintln!("{what}: max |err| vs layernorm_f16_q8 {err:.2e}");
            let (wq, ws) = layernorm_q8_codes(&bits(&x), sm.map(|_| &smooth[..]), m, n);
            assert_eq!(bits(q), wq, "{what}: codes");
            assert_eq!(f32_bits(&s), ws, "{what}: scales");
            // layernorm_f16_q8's codes of its own output differ only where the outputs do
            let diff = bits(q).iter().zip(bits(&q0)).filter(|(a, b)| (**a as i32 - *b as i32).abs() > 1).count();
            assert_eq!(diff, 0, "{what}: codes more than 1 apart from layernorm_f16_q8's");
        }
    }
}

/// The strip's layernorm is shared by its tiles' CTAs where each CTA has one unit (here one
/// strip of 100 rows, 3 column tiles, unsplit and split over K's 4 chunks): with the grid
/// resident (the emulator's H100) every tile's CTA joins and its 8 consumer warps claim rows
/// until none is left; with one CTA resident at a time, a tile's CTA whose strip siblings have
/// not all started must not wait for them (on a GPU they might need its SM), so only the last
/// tile normalises. Counted by the atomics: split arrivals (a unit each) and resets (a tile
/// each), then per strip: started (a unit each), arrived and done (a tile each), a claim per row
/// and a last, empty one per joined warp, 4 resets. The same bits every way, every mode.
#[test]
fn sm90_strip_layernorm_is_shared_by_the_strips_ctas() {
    let (m, n, k) = (100, 264, 1024);
    let mut r = rng(62);
    let (a, w, bias, res) = (
        rand_f16(&mut r, m * k, 1.0),
        rand_f16(&mut r, n * k, 0.1),
        rand_f16(&mut r, n, 1.0),
        rand_f16(&mut r, m * n, 1.0),
    );
    let (gamma, beta, _) = ln_params(&mut r, n);
    let tiles = n.div_ceil(128) as u64;
    let chunks = gemm_sm90::k_chunks(k, false) as u64;
    let mut want: Option<(Vec<f16>, Vec<f16>)> = None;
    for split in [false, true] {
        for (resident, joined) in [(None, tiles), (Some(1), 1)] {
            for mode in MODES {
                let dev =
                    fusebert_kernels::Device::emulator_with(fusebert_kernels::device::emulator::EmulatorOptions {
                        arch: fusebert_kernels::device::emulator::Arch::Sm90,
                        async_mode: mode,
                        resident_blocks: resident,
                        ..Default::default()
                    })
                    .unwrap();
                let up = |v: &[f16]| dev.upload(v).unwrap();
                let (da, dw, db, dr, dg, dbe) = (up(&a), up(&w), up(&bias), up(&res), up(&gamma), up(&beta));
                let g = fusebert_kernels::GemmF16 {
                    a: &da,
                    w: &dw,
                    bias: Some(&db),
                    epilogue: Epilogue::Residual(&dr),
                    shape: GemmShape { m, n, k },
                };
                let ws = split_workspace(&dev, m, n, k, false);
                let how = GemmSm90Launch {
                    cols: gemm_sm90::Sm90Cols::N128,
                    split: split.then_some(&ws),
                    layernorm: Sm90Layernorm::Strip,
                    ..Default::default()
                };
                let mut y = poisoned::<f16>(&dev, m * n);
                let x = poisoned::<f16>(&dev, m * n);
                let ln = FusedLayerNorm { gamma: &dg, beta: &dbe, out: &x, q8: None, eps: EPS };
                clear(&dev);
                fusebert_kernels::gemm_f16_sm90_ln(&dev, &g, &mut y, &ln, &ws, how).unwrap();
                let what = format!("split {split}, resident {resident:?}, {mode:?}");
                let (_, c) = last_launch(&dev, &what);
                let units = tiles * if split { chunks } else { 1 };
                let split_atomics = if split { units + tiles } else { 0 };
                let strip_atomics = units + 2 * tiles + m as u64 + 8 * joined + 4;
                assert_eq!(c.atomics, split_atomics + strip_atomics, "{what}: atomics");
                let got = (bits(&y), bits(&x));
                match &want {
                    None => want = Some(got),
                    Some(w) => assert!(
                        w.0.iter().zip(&got.0).chain(w.1.iter().zip(&got.1)).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: not the same bits"
                    ),
                }
            }
        }
    }
}

#[test]
fn sm90_fused_layernorm_refuses_wide_rows_and_short_workspaces() {
    let dev = sm90(AsyncMode::Lazy);
    let one = |n: usize| dev.upload(&vec![f16::ONE; n]).unwrap();
    let (m, k) = (300, 64);
    for (n, strips_for, why) in [(1040, m, "at most 1024"), (96, 32, "strip counters")] {
        let (a, w, g) = (one(m * k), one(n * k), one(n));
        let x = dev.alloc::<f16>(m * n).unwrap();
        let mut y = dev.alloc::<f16>(m * n).unwrap();
        let ws = SplitWorkspace::new(&dev, 1, 1, strips_for).unwrap();
        let ln = FusedLayerNorm { gamma: &g, beta: &g, out: &x, q8: None, eps: EPS };
        let gemm = fusebert_kernels::GemmF16 {
            a: &a,
            w: &w,
            bias: None,
            epilogue: Epilogue::None,
            shape: GemmShape { m, n, k },
        };
        let how = GemmSm90Launch { layernorm: Sm90Layernorm::Strip, ..Default::default() };
        let err = fusebert_kernels::gemm_f16_sm90_ln(&dev, &gemm, &mut y, &ln, &ws, how).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(gemm_sm90::KERNEL_LN) && text.contains(why), "{text}");
    }
}
