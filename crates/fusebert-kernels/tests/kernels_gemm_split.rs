//! Split-K GEMMs (`*_sk` kernels, `GemmPlan` with `splits > 1`) and batch invariance.
//!
//! - Split-K in one launch: every split block stores f32/int32 partials, the last to arrive per
//!   tile (atomic counter) sums them in split order and runs the epilogue. Checked against the
//!   CPU references with the bounds of `tests/kernels_gemm.rs` (fp16: recursive-summation bound
//!   plus one fp16 rounding; int8: exact int32 accumulators, one fp16 rounding after the f32
//!   epilogue), on ragged shapes: M = 1, 17, 33, 70; N not a multiple of 64; K not a multiple of
//!   the chunk (nor of the 64-byte k-tile); outputs poisoned; the emulator's sanitizers on.
//!   Every tile with split kernels (64x64, 32x64, 32x128) is split and checked.
//! - fp16 sums K in the same chunk order in every kernel, so split and unsplit launches on every
//!   tile (64x64, 128x128, 32x64, 32x128) are bit-identical, and a row's result does not depend on the other rows of its GEMM.
//! - The counters are left at zero: the same launch twice in a row (a graph replay) writes the
//!   same output again (a stale counter would leave the poisoned output unwritten).
mod kernels_util;
use fusebert_kernels::gemm_plan::{k_chunks, GemmPlan, SplitWorkspace, Tile};
use fusebert_kernels::Device;
use fusebert_kernels::GemmShape;
use fusebert_kernels::{self, reference, Epilogue};
use half::f16;
use kernels_util::*;

/// (m, n, k) fp16: K = 400 is 12.5 k-tiles (chunks of 4: the last is half a k-tile), 784 =
/// 24.5, 3072 = 96 (4 chunks of 24); N = 48 and 80 leave partial 64-column tiles.
const F16_SHAPES: [(usize, usize, usize); 6] =
    [(1, 48, 400), (17, 80, 784), (70, 64, 400), (1, 96, 3072), (17, 48, 656), (33, 80, 400)];
/// (m, n, k) int8: K = 784 is 12.25 k-tiles (4 chunks: 4, 4, 4, 0.25), 656 = 10.25 (3 chunks).
const I8_SHAPES: [(usize, usize, usize); 5] =
    [(1, 48, 784), (17, 80, 656), (70, 64, 784), (1, 96, 3072), (33, 80, 656)];
/// The tiles with split-K kernels, and every concrete tile.
const SPLIT_TILES: [Tile; 3] = [Tile::Small, Tile::Narrow, Tile::NarrowWide];
const TILES: [Tile; 4] = [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide];

fn split_plan(k: usize, int8: bool) -> GemmPlan {
    split_plan_on(Tile::Small, k, int8)
}

fn split_plan_on(tile: Tile, k: usize, int8: bool) -> GemmPlan {
    let s = k_chunks(k, int8);
    assert!(s > 1, "K = {k} must have several chunks for this test");
    GemmPlan { tile, splits: s }
}

struct F16Case {
    a: Vec<f16>,
    w: Vec<f16>,
    bias: Vec<f16>,
    res: Vec<f16>,
}

fn f16_case(r: &mut rand_chacha::ChaCha8Rng, m: usize, n: usize, k: usize) -> F16Case {
    F16Case {
        a: rand_f16(r, m * k, 1.0),
        w: rand_f16(r, n * k, 1.0),
        bias: rand_f16(r, n, 1.0),
        res: rand_f16(r, m * n, 1.0),
    }
}

/// Runs `plan` on `case` (epilogue `residual` or GELU), returns the fp16 bits.
fn run_f16(dev: &Device, c: &F16Case, s: GemmShape, residual: bool, plan: GemmPlan, ws: &SplitWorkspace) -> Vec<u16> {
    let GemmShape { m, n, k } = s;
    let (da, dw, db, dr) = (
        dev.upload(&c.a).unwrap(),
        dev.upload(&c.w).unwrap(),
        dev.upload(&c.bias).unwrap(),
        dev.upload(&c.res).unwrap(),
    );
    let e = if residual { Epilogue::Residual(&dr) } else { Epilogue::Gelu };
    let mut out = poisoned::<f16>(dev, m * n);
    clear(dev);
    fusebert_kernels::gemm_f16(
        dev,
        &fusebert_kernels::GemmF16 {
            a: &da,
            w: &dw,
            bias: Some(&db),
            epilogue: e,
            shape: fusebert_kernels::GemmShape { m, n, k },
        },
        &mut out,
        fusebert_kernels::GemmLaunch::planned(plan, Some(ws)),
    )
    .unwrap();
    if let Some(cn) = last_counters(dev) {
        assert_eq!(cn.shared_bank_conflicts, 0, "{plan:?} M {m} N {n} K {k}: bank conflicts");
        assert_no_local(&cn, "gemm_f16 split");
    }
    f16_bits(&out)
}

#[test]
fn f16_split_k_matches_the_reference_and_every_unsplit_tile_bit_for_bit() {
    let mut r = rng(41);
    let mut max = 0f32;
    for dev in devices() {
        for (i, &(m, n, k)) in F16_SHAPES.iter().enumerate() {
            let c = f16_case(&mut r, m, n, k);
            let residual = i % 2 == 0;
            let plan = split_plan(k, false);
            let ws = SplitWorkspace::new(&dev, plan.partial_words(m, n), plan.counters(m, n), m).unwrap();
            let split = run_f16(&dev, &c, GemmShape { m, n, k }, residual, plan, &ws);
            // the counters were reset: the same launch again writes the same output
            assert_eq!(
                run_f16(&dev, &c, GemmShape { m, n, k }, residual, plan, &ws),
                split,
                "second split launch M {m} N {n} K {k}"
            );
            for tile in [Tile::Narrow, Tile::NarrowWide] {
                let p = split_plan_on(tile, k, false);
                let pws = SplitWorkspace::new(&dev, p.partial_words(m, n), p.counters(m, n), m).unwrap();
                for _ in 0..2 {
                    let got = run_f16(&dev, &c, GemmShape { m, n, k }, residual, p, &pws);
                    assert_eq!(got, split, "{} {tile:?} split vs Small split: M {m} N {n} K {k}", dev.name());
                }
            }
            for tile in TILES {
                let unsplit = run_f16(&dev, &c, GemmShape { m, n, k }, residual, GemmPlan { tile, splits: 1 }, &ws);
                assert_eq!(unsplit, split, "{} {tile:?} vs split x{}: M {m} N {n} K {k}", dev.name(), plan.splits);
            }
            let acc = reference::gemm_f32(&c.a, &c.w, m, n, k);
            let abs: Vec<f32> = (0..m * n)
                .map(|i| (0..k).map(|kk| (c.a[(i / n) * k + kk].to_f32() * c.w[(i % n) * k + kk].to_f32()).abs()).sum())
                .collect();
            let want = reference::epilogue(&acc, Some(&c.bias), if residual { 2 } else { 1 }, Some(&c.res), n);
            let got: Vec<f32> = split.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
            let what = format!("gemm_f16_sk x{} M {m} N {n} K {k}", plan.splits);
            max = max.max(check_close(&what, &got, &want, |w, i| {
                half_ulp(w) + 2.0 * k as f32 * abs[i] / 16_777_216.0 + 1e-5
            }));
        }
    }
    eprintln!("gemm_f16_sk: max |err| = {max:e}");
}

#[test]
fn int8_split_k_accumulators_are_exact_and_fp16_output_matches_unsplit() {
    use rand::Rng;
    let mut r = rng(42);
    let mut max = 0f32;
    for dev in devices() {
        for (i, &(m, n, k)) in I8_SHAPES.iter().enumerate() {
            let asym = i % 2 == 1;
            let a: Vec<i8> = (0..m * k).map(|_| r.gen_range(-128..=127)).collect();
            let w = rand_i8(&mut r, n * k);
            let zero: Vec<i32> = (0..m).map(|_| if asym { r.gen_range(-128..=127) } else { 0 }).collect();
            let w_sum = fusebert_kernels::weight_sums(&w, n, k);
            let asc: Vec<f32> = (0..m).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect();
            let wsc: Vec<f32> = (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect();
            let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
            let (da, dw) = (dev.upload(&a).unwrap(), dev.upload(&w).unwrap());
            let (das, dws, db, dr) = (
                dev.upload(&asc).unwrap(),
                dev.upload(&wsc).unwrap(),
                dev.upload(&bias).unwrap(),
                dev.upload(&res).unwrap(),
            );
            let (dz, dsum) = (dev.upload(&zero).unwrap(), dev.upload(&w_sum).unwrap());
            let plan = split_plan(k, true);
            // room for the split plans of both tiles (the Narrow one has more, smaller tiles)
            let plans = SPLIT_TILES.map(|t| split_plan_on(t, k, true));
            let words = plans.iter().map(|p| p.partial_words(m, n)).max().unwrap();
            let counters = plans.iter().map(|p| p.counters(m, n)).max().unwrap();
            let ws = SplitWorkspace::new(&dev, words, counters, m).unwrap();
            let exact = reference::gemm_i32(&a, &w, m, n, k);
            for p in plans {
                for _ in 0..2 {
                    let mut c = poisoned::<i32>(&dev, m * n);
                    fusebert_kernels::gemm_int8_i32(
                        &dev,
                        &da,
                        &dw,
                        &mut c,
                        fusebert_kernels::GemmShape { m, n, k },
                        fusebert_kernels::GemmLaunch::planned(p, Some(&ws)),
                    )
                    .unwrap();
                    assert_eq!(c.to_host().unwrap(), exact, "gemm_int8_i32 {p:?} M {m} N {n} K {k}");
                }
            }
            let run = |plan: GemmPlan| {
                let zp = asym.then_some(fusebert_kernels::ZeroPoint { zero: &dz, w_sum: &dsum });
                let mut c = poisoned::<f16>(&dev, m * n);
                clear(&dev);
                fusebert_kernels::gemm_int8(
                    &dev,
                    &fusebert_kernels::GemmInt8 {
                        a: &da,
                        a_scale: &das,
                        zero_point: zp,
                        w: &dw,
                        w_scale: &dws,
                        bias: Some(&db),
                        epilogue: Epilogue::Residual(&dr),
                        shape: fusebert_kernels::GemmShape { m, n, k },
                    },
                    &mut c,
                    fusebert_kernels::GemmLaunch::planned(plan, Some(&ws)),
                )
                .unwrap();
                if let Some(cn) = last_counters(&dev) {
                    assert_eq!(cn.shared_bank_conflicts, 0, "{plan:?} M {m} N {n} K {k}: bank conflicts");
                    assert_no_local(&cn, "gemm_int8 split");
                }
                f16_bits(&c)
            };
            let split = run(plan);
            assert_eq!(run(plan), split, "second split launch M {m} N {n} K {k}");
            for tile in [Tile::Narrow, Tile::NarrowWide] {
                for _ in 0..2 {
                    let got = run(split_plan_on(tile, k, true));
                    assert_eq!(got, split, "{tile:?} split vs Small split: M {m} N {n} K {k}");
                }
            }
            for tile in TILES {
                assert_eq!(run(GemmPlan { tile, splits: 1 }), split, "{tile:?} vs split: M {m} N {n} K {k}");
                // the raw int32 entries of the unsplit tiles too
                let mut c = poisoned::<i32>(&dev, m * n);
                fusebert_kernels::gemm_int8_i32(
                    &dev,
                    &da,
                    &dw,
                    &mut c,
                    fusebert_kernels::GemmShape { m, n, k },
                    fusebert_kernels::GemmLaunch::planned(GemmPlan { tile, splits: 1 }, None),
                )
                .unwrap();
                assert_eq!(c.to_host().unwrap(), exact, "gemm_int8_i32 {tile:?} M {m} N {n} K {k}");
            }
            let acc = reference::dequant_asym(&exact, &zero, &w_sum, &asc, &wsc, n);
            let want = reference::epilogue(&acc, Some(&bias), 2, Some(&res), n);
            let got: Vec<f32> = split.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
            let what = format!("gemm_int8_f16_sk asym {asym} M {m} N {n} K {k}");
            max = max.max(check_close(&what, &got, &want, |w, _| half_ulp(w) + 1e-5));
        }
    }
    eprintln!("gemm_int8_f16_sk: max |err| = {max:e}");
}

/// A row's result does not depend on the GEMM it is in: the first rows of a 300-row GEMM on
/// 128x128 tiles equal the same rows alone (1, 17, 33, 70) on 64x64, 32x64 and 32x128 tiles,
/// unsplit and split over K, bit for bit, fp16 and int8 (`GemmPlan::choose` picks by M; every
/// pick must agree).
#[test]
fn rows_give_the_same_bits_alone_and_inside_a_larger_gemm() {
    let dev = Device::emulator().unwrap();
    let mut r = rng(43);
    let (n, k, big) = (96, 1536, 300);
    let plans = [
        GemmPlan { tile: Tile::Large, splits: 1 },
        GemmPlan { tile: Tile::Small, splits: 1 },
        split_plan(k, false),
        GemmPlan { tile: Tile::Narrow, splits: 1 },
        split_plan_on(Tile::Narrow, k, false),
        GemmPlan { tile: Tile::NarrowWide, splits: 1 },
        split_plan_on(Tile::NarrowWide, k, false),
    ];
    let c = f16_case(&mut r, big, n, k);
    let narrow = split_plan_on(Tile::Narrow, k, false);
    let ws = SplitWorkspace::new(&dev, narrow.partial_words(big, n), narrow.counters(big, n), big).unwrap();
    let whole = run_f16(&dev, &c, GemmShape { m: big, n, k }, true, plans[0], &ws);
    for (m, plan) in
        [(17, plans[1]), (1, plans[2]), (33, plans[3]), (33, plans[4]), (70, plans[4]), (17, plans[5]), (70, plans[6])]
    {
        let part =
            F16Case { a: c.a[..m * k].to_vec(), w: c.w.clone(), bias: c.bias.clone(), res: c.res[..m * n].to_vec() };
        assert_eq!(
            run_f16(&dev, &part, GemmShape { m, n, k }, true, plan, &ws),
            whole[..m * n],
            "fp16 {m} rows ({plan:?}) vs {big} ({:?})",
            plans[0]
        );
    }
    // int8 (exact accumulators): the same with asymmetric activations
    use rand::Rng;
    let a: Vec<i8> = (0..big * k).map(|_| r.gen_range(-128..=127)).collect();
    let w = rand_i8(&mut r, n * k);
    let zero: Vec<i32> = (0..big).map(|_| r.gen_range(-128..=127)).collect();
    let w_sum = fusebert_kernels::weight_sums(&w, n, k);
    let asc: Vec<f32> = (0..big).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect();
    let wsc: Vec<f32> = (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect();
    let (dw, dws, dsum, db) =
        (dev.upload(&w).unwrap(), dev.upload(&wsc).unwrap(), dev.upload(&w_sum).unwrap(), dev.upload(&c.bias).unwrap());
    let run = |m: usize, plan: GemmPlan| {
        let (da, das, dz) =
            (dev.upload(&a[..m * k]).unwrap(), dev.upload(&asc[..m]).unwrap(), dev.upload(&zero[..m]).unwrap());
        let zp = Some(fusebert_kernels::ZeroPoint { zero: &dz, w_sum: &dsum });
        let mut out = poisoned::<f16>(&dev, m * n);
        fusebert_kernels::gemm_int8(
            &dev,
            &fusebert_kernels::GemmInt8 {
                a: &da,
                a_scale: &das,
                zero_point: zp,
                w: &dw,
                w_scale: &dws,
                bias: Some(&db),
                epilogue: Epilogue::Gelu,
                shape: fusebert_kernels::GemmShape { m, n, k },
            },
            &mut out,
            fusebert_kernels::GemmLaunch::planned(plan, Some(&ws)),
        )
        .unwrap();
        (plan, f16_bits(&out))
    };
    let i8_plans = [
        GemmPlan { tile: Tile::Large, splits: 1 },
        GemmPlan { tile: Tile::Small, splits: 1 },
        split_plan(k, true),
        GemmPlan { tile: Tile::Narrow, splits: 1 },
        split_plan_on(Tile::Narrow, k, true),
        split_plan_on(Tile::NarrowWide, k, true),
    ];
    let (big_plan, whole) = run(big, i8_plans[0]);
    for (m, plan) in [(17, i8_plans[1]), (1, i8_plans[2]), (33, i8_plans[3]), (70, i8_plans[4]), (33, i8_plans[5])] {
        let (plan, part) = run(m, plan);
        assert_eq!(part, whole[..m * n], "int8 {m} rows ({plan:?}) vs {big} ({big_plan:?})");
    }
}

#[test]
fn bad_split_plans_are_typed_errors_naming_the_kernel() {
    let dev = Device::emulator().unwrap();
    let (m, n, k) = (5, 32, 512);
    let a = dev.upload(&vec![f16::ONE; m * k]).unwrap();
    let w = dev.upload(&vec![f16::ONE; n * k]).unwrap();
    let mut out = dev.alloc::<f16>(m * n).unwrap();
    let plan = split_plan(k, false);
    let small = SplitWorkspace::new(&dev, 16, 1, 1).unwrap();
    let g = fusebert_kernels::GemmF16 {
        a: &a,
        w: &w,
        bias: None,
        epilogue: Epilogue::None,
        shape: fusebert_kernels::GemmShape { m, n, k },
    };
    let mut launch = |plan: GemmPlan, ws: Option<&SplitWorkspace>| {
        fusebert_kernels::gemm_f16(&dev, &g, &mut out, fusebert_kernels::GemmLaunch::planned(plan, ws))
    };
    assert_kernel_err(launch(plan, None), "gemm_f16_sk");
    assert_kernel_err(launch(plan, Some(&small)), "gemm_f16_sk");
    let wrong = GemmPlan { tile: Tile::Small, splits: plan.splits + 1 };
    assert_kernel_err(launch(wrong, Some(&small)), "gemm_f16_sk");
    let large = GemmPlan { tile: Tile::Large, splits: plan.splits };
    assert_kernel_err(launch(large, Some(&small)), "gemm_f16_sk");
    let auto = GemmPlan { tile: Tile::Auto, splits: 1 };
    assert_kernel_err(launch(auto, None), "gemm_f16");
}

/// The plan splits weight-streaming shapes (few output tiles, long K) and leaves large grids
/// and short K alone.
#[test]
fn plan_splits_small_grids_with_long_k_only() {
    use fusebert_kernels::gemm_plan::plan_clocks;
    for int8 in [false, true] {
        // bert-base 1x128 FFN2: fp16 splits the 64x64 tile; int8 (half the operand bytes) runs
        // the 32x64 tile unsplit; either way the cheapest candidate
        let p = GemmPlan::choose(128, 768, 3072, int8);
        let want = if int8 { (Tile::Narrow, 1) } else { (Tile::Small, k_chunks(3072, int8)) };
        assert_eq!((p.tile, p.splits), want, "bert-base 1x128 ffn2 int8 {int8}");
        let mut all: Vec<GemmPlan> = TILES.iter().map(|&tile| GemmPlan { tile, splits: 1 }).collect();
        all.extend(SPLIT_TILES.map(|t| split_plan_on(t, 3072, int8)));
        for q in all {
            assert!(plan_clocks(p, 128, 768, 3072, int8) <= plan_clocks(q, 128, 768, 3072, int8), "{p:?} vs {q:?}");
        }
        assert_eq!(GemmPlan::choose(4096, 768, 3072, int8).splits, 1, "32x128 ffn2 int8 {int8}");
        assert_eq!(GemmPlan::choose(4096, 768, 3072, int8).tile, Tile::Large);
        assert_eq!(GemmPlan::choose(128, 768, 64, int8).splits, 1, "K of one chunk");
    }
    assert_eq!(k_chunks(3072, false), 4);
    assert_eq!(k_chunks(400, false), 4); // 12.5 k-tiles: chunks of 4
    assert_eq!(k_chunks(64, false), 1);
}

/// With a fused layernorm the strip's serial tail counts: the plan is one with a fused kernel
/// (never a split 128x128 tile), Large for large grids, and the cheapest under that model.
#[test]
fn layernorm_aware_plan_is_a_fused_variant_and_the_cheapest() {
    use fusebert_kernels::gemm_plan::plan_clocks_with_layernorm;
    for int8 in [false, true] {
        for (m, n, k) in [(1, 384, 1536), (20, 384, 384), (128, 768, 768), (128, 768, 3072), (4096, 768, 3072)] {
            let p = GemmPlan::choose_with_layernorm(m, n, k, int8);
            assert!(p.splits == 1 || p.tile.splits_k(), "{p:?}");
            let best = plan_clocks_with_layernorm(p, m, n, k, int8);
            let s = k_chunks(k, int8);
            let mut others: Vec<GemmPlan> = TILES.iter().map(|&tile| GemmPlan { tile, splits: 1 }).collect();
            if s > 1 {
                others.extend(SPLIT_TILES.map(|tile| GemmPlan { tile, splits: s }));
            }
            for q in others {
                assert!(
                    best <= plan_clocks_with_layernorm(q, m, n, k, int8),
                    "{m}x{n}x{k} int8 {int8}: {p:?} vs {q:?}"
                );
            }
        }
        assert_eq!(GemmPlan::choose_with_layernorm(4096, 768, 3072, int8).tile, Tile::Large);
    }
}
