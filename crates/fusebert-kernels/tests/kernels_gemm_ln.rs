//! Layernorm fused into the residual GEMMs (`gemm_f16_ln`, `gemm_f16_l_ln`, `gemm_f16_sk_ln`,
//! `gemm_int8_f16_ln`, `gemm_int8_f16_l_ln`, `gemm_int8_f16_sk_ln`, and the 32-row `_n_ln`,
//! `_n_sk_ln`, `_nw_ln`, `_nw_sk_ln` of both): the GEMM output equals the unfused GEMM's and
//! the layernorm output (and, for int8, its codes and scales) equals `layernorm_f16` /
//! `layernorm_f16_q8` run on that output, bit for bit — so the fused forward pass is the unfused
//! one, whose accuracy `tests/forward_*.rs` checks against the CPU reference. Ragged shapes
//! (M = 1, 17, 33, 70, 129: partial and several row strips of 32, 64 and 128 rows; N = 48, 96,
//! 384; K not a multiple of the split chunk), outputs poisoned, sanitizers on; every launch
//! twice (the strip counters reset).
mod kernels_util;
use fusebert_kernels::gemm_plan::{fuses_layernorm, k_chunks, GemmPlan, SplitWorkspace, Tile};
use fusebert_kernels::Device;
use fusebert_kernels::{self, Epilogue, FusedLayerNorm, FusedQ8, Q8Out};
use half::f16;
use kernels_util::*;

const SHAPES: [(usize, usize, usize); 6] =
    [(1, 96, 400), (17, 384, 400), (70, 48, 784), (129, 96, 96), (17, 384, 96), (33, 96, 400)];
const EPS: f32 = 1e-12;

fn plans(k: usize, int8: bool) -> Vec<GemmPlan> {
    let mut p: Vec<GemmPlan> = [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide]
        .iter()
        .map(|&tile| GemmPlan { tile, splits: 1 })
        .collect();
    if k_chunks(k, int8) > 1 {
        for tile in [Tile::Small, Tile::Narrow, Tile::NarrowWide] {
            p.push(GemmPlan { tile, splits: k_chunks(k, int8) });
        }
    }
    p
}

#[test]
fn f16_fused_layernorm_equals_gemm_then_layernorm_bit_for_bit() {
    let mut r = rng(51);
    for dev in devices() {
        for &(m, n, k) in &SHAPES {
            let (a, w, bias, res) = (
                rand_f16(&mut r, m * k, 1.0),
                rand_f16(&mut r, n * k, 1.0),
                rand_f16(&mut r, n, 1.0),
                rand_f16(&mut r, m * n, 1.0),
            );
            let gamma = rand_around_one(&mut r, n, 0.5);
            let beta = rand_f16(&mut r, n, 0.5);
            let (da, dw, db, dr, dg, dbe) = (
                dev.upload(&a).unwrap(),
                dev.upload(&w).unwrap(),
                dev.upload(&bias).unwrap(),
                dev.upload(&res).unwrap(),
                dev.upload(&gamma).unwrap(),
                dev.upload(&beta).unwrap(),
            );
            let g = fusebert_kernels::GemmF16 {
                a: &da,
                w: &dw,
                bias: Some(&db),
                epilogue: Epilogue::Residual(&dr),
                shape: fusebert_kernels::GemmShape { m, n, k },
            };
            for plan in plans(k, false) {
                assert!(fuses_layernorm(n));
                let ws = SplitWorkspace::new(&dev, plan.partial_words(m, n), plan.counters(m, n), m).unwrap();
                // unfused: GEMM, then layernorm_f16
                let mut y0 = poisoned::<f16>(&dev, m * n);
                fusebert_kernels::gemm_f16(&dev, &g, &mut y0, fusebert_kernels::GemmLaunch::planned(plan, Some(&ws)))
                    .unwrap();
                let mut x0 = poisoned::<f16>(&dev, m * n);
                fusebert_kernels::layernorm_f16(
                    &dev,
                    &fusebert_kernels::LayerNormF16 {
                        x: &y0,
                        residual: None,
                        bias: None,
                        gamma: &dg,
                        beta: &dbe,
                        rows: m,
                        hidden: n,
                        eps: EPS,
                    },
                    &mut x0,
                    None,
                    fusebert_kernels::Variant::Fast,
                )
                .unwrap();
                for _ in 0..2 {
                    let mut y = poisoned::<f16>(&dev, m * n);
                    let x = poisoned::<f16>(&dev, m * n);
                    let ln = FusedLayerNorm { gamma: &dg, beta: &dbe, out: &x, q8: None, eps: EPS };
                    clear(&dev);
                    fusebert_kernels::gemm_f16(&dev, &g, &mut y, fusebert_kernels::GemmLaunch::fused(plan, &ws, &ln))
                        .unwrap();
                    if let Some(cn) = last_counters(&dev) {
                        assert_eq!(cn.shared_bank_conflicts, 0, "{plan:?} M {m} N {n} K {k}");
                        assert_no_local(&cn, "gemm_f16 ln");
                    }
                    let what = format!("gemm_f16 ln {plan:?} M {m} N {n} K {k}");
                    assert_eq!(bits(&y), bits(&y0), "{what}: GEMM output");
                    assert_eq!(bits(&x), bits(&x0), "{what}: layernorm output");
                }
            }
        }
    }
}

#[test]
fn int8_fused_layernorm_with_codes_equals_gemm_then_layernorm_q8_bit_for_bit() {
    use rand::Rng;
    let mut r = rng(52);
    for dev in devices() {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let a: Vec<i8> = (0..m * k).map(|_| r.gen_range(-127..=127)).collect();
            let w = rand_i8(&mut r, n * k);
            let asc: Vec<f32> = (0..m).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect();
            let wsc: Vec<f32> = (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect();
            let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
            let gamma = rand_around_one(&mut r, n, 0.5);
            let beta = rand_f16(&mut r, n, 0.5);
            let smooth = rand_around_one(&mut r, n, 0.4);
            let (da, dw, das, dws) = (
                dev.upload(&a).unwrap(),
                dev.upload(&w).unwrap(),
                dev.upload(&asc).unwrap(),
                dev.upload(&wsc).unwrap(),
            );
            let (db, dr, dg, dbe, dsm) = (
                dev.upload(&bias).unwrap(),
                dev.upload(&res).unwrap(),
                dev.upload(&gamma).unwrap(),
                dev.upload(&beta).unwrap(),
                dev.upload(&smooth).unwrap(),
            );
            let sm = (i % 2 == 0).then_some(&dsm);
            let g = fusebert_kernels::GemmInt8 {
                a: &da,
                a_scale: &das,
                zero_point: None,
                w: &dw,
                w_scale: &dws,
                bias: Some(&db),
                epilogue: Epilogue::Residual(&dr),
                shape: fusebert_kernels::GemmShape { m, n, k },
            };
            for plan in plans(k, true) {
                let ws = SplitWorkspace::new(&dev, plan.partial_words(m, n), plan.counters(m, n), m).unwrap();
                let mut y0 = poisoned::<f16>(&dev, m * n);
                fusebert_kernels::gemm_int8(&dev, &g, &mut y0, fusebert_kernels::GemmLaunch::planned(plan, Some(&ws)))
                    .unwrap();
                let (mut x0, mut q0, mut s0) =
                    (poisoned::<f16>(&dev, m * n), poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m));
                let q8 = Q8Out { q: &mut q0, scale: &mut s0, smooth: sm };
                fusebert_kernels::layernorm_f16(
                    &dev,
                    &fusebert_kernels::LayerNormF16 {
                        x: &y0,
                        residual: None,
                        bias: None,
                        gamma: &dg,
                        beta: &dbe,
                        rows: m,
                        hidden: n,
                        eps: EPS,
                    },
                    &mut x0,
                    Some(q8),
                    fusebert_kernels::Variant::Fast,
                )
                .unwrap();
                for _ in 0..2 {
                    let mut y = poisoned::<f16>(&dev, m * n);
                    let (x, q, s) =
                        (poisoned::<f16>(&dev, m * n), poisoned::<i8>(&dev, m * n), poisoned::<f32>(&dev, m));
                    let ln = FusedLayerNorm {
                        gamma: &dg,
                        beta: &dbe,
                        out: &x,
                        q8: Some(FusedQ8 { q: &q, scale: &s, smooth: sm }),
                        eps: EPS,
                    };
                    fusebert_kernels::gemm_int8(&dev, &g, &mut y, fusebert_kernels::GemmLaunch::fused(plan, &ws, &ln))
                        .unwrap();
                    let what = format!("gemm_int8 ln {plan:?} M {m} N {n} K {k} smooth {}", sm.is_some());
                    assert_eq!(bits(&y), bits(&y0), "{what}: GEMM output");
                    assert_eq!(bits(&x), bits(&x0), "{what}: layernorm output");
                    assert_eq!(bits(&q), bits(&q0), "{what}: codes");
                    assert_eq!(f32_bits(&s), f32_bits(&s0), "{what}: scales");
                }
            }
        }
    }
}

#[test]
fn fused_layernorm_refuses_wide_rows_and_missing_counters() {
    let dev = Device::emulator().unwrap();
    let (m, n, k) = (3, 1040, 64);
    let a = dev.upload(&vec![f16::ONE; m * k]).unwrap();
    let w = dev.upload(&vec![f16::ONE; n * k]).unwrap();
    let g = dev.upload(&vec![f16::ONE; n]).unwrap();
    let x = dev.alloc::<f16>(m * n).unwrap();
    let mut y = dev.alloc::<f16>(m * n).unwrap();
    let ws = SplitWorkspace::new(&dev, 1, 1, m).unwrap();
    let ln = FusedLayerNorm { gamma: &g, beta: &g, out: &x, q8: None, eps: EPS };
    let gemm = fusebert_kernels::GemmF16 {
        a: &a,
        w: &w,
        bias: None,
        epilogue: Epilogue::None,
        shape: fusebert_kernels::GemmShape { m, n, k },
    };
    let small = GemmPlan { tile: Tile::Small, splits: 1 };
    assert!(!fuses_layernorm(n) && fuses_layernorm(1024) && !fuses_layernorm(1020));
    assert_kernel_err(
        fusebert_kernels::gemm_f16(&dev, &gemm, &mut y, fusebert_kernels::GemmLaunch::fused(small, &ws, &ln)),
        "gemm_f16_ln",
    );
    let large = GemmPlan { tile: Tile::Large, splits: 1 };
    assert_kernel_err(
        fusebert_kernels::gemm_f16(&dev, &gemm, &mut y, fusebert_kernels::GemmLaunch::fused(large, &ws, &ln)),
        "gemm_f16_l_ln",
    );
    let (m, n) = (400, 64);
    let a = dev.upload(&vec![f16::ONE; m * k]).unwrap();
    let w = dev.upload(&vec![f16::ONE; n * k]).unwrap();
    let g = dev.upload(&vec![f16::ONE; n]).unwrap();
    let x = dev.alloc::<f16>(m * n).unwrap();
    let mut y = dev.alloc::<f16>(m * n).unwrap();
    let ln = FusedLayerNorm { gamma: &g, beta: &g, out: &x, q8: None, eps: EPS };
    // 400 rows need 7 strip counters of 64 rows; the workspace for 3 rows has 4 (the Hopper
    // kernels' 4 per 128-row strip: gemm_plan::strip_counters)
    assert_kernel_err(
        fusebert_kernels::gemm_f16(
            &dev,
            &fusebert_kernels::GemmF16 {
                a: &a,
                w: &w,
                bias: None,
                epilogue: Epilogue::None,
                shape: fusebert_kernels::GemmShape { m, n, k },
            },
            &mut y,
            fusebert_kernels::GemmLaunch::fused(small, &ws, &ln),
        ),
        "gemm_f16_ln",
    );
}
