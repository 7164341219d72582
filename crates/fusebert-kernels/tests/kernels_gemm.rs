//! W8A8 and fp16 tensor-core GEMMs vs CPU references on ragged shapes.
//!
//! Tolerances:
//! - int8: the int32 accumulators are compared bit-exactly (`gemm_int8_i32`); the fp16 output
//!   is compared with the f32 epilogue applied to the exact accumulators: |err| <= |ref|*2^-11
//!   (one fp16 rounding) + 1e-5 (f32 evaluation-order/fma differences and erf/tanh
//!   implementations, ~1e-6 relative on unit-scale values).
//! - fp16: f32 accumulation in a different order than the f64 reference: the recursive-summation
//!   bound 2*K*2^-24*sum_k|a_k w_k| plus one fp16 rounding |ref|*2^-11 (+1e-5 for the epilogue).
mod kernels_util;
use fusebert_kernels::GemmShape;
use fusebert_kernels::{self, reference, Epilogue, Tile, Variant};
use half::f16;
use kernels_util::*;

const MS: [usize; 4] = [1, 7, 129, 300];
const NKS: [(usize, usize); 3] = [(64, 96), (96, 384), (384, 64)];
/// K tails inside a 64-byte stage (int8 K 16/48/80; fp16 K 16 = one 32-byte k-step) and N = 16, 48.
const TAILS: [(usize, usize); 3] = [(16, 16), (48, 80), (16, 48)];

/// Epilogue codes: 0 none, 1 GELU, 2 residual, 3 tanh, 4 GELU (tanh form), 5 ReLU, 6 SiLU.
const EPILOGUES: u32 = 7;

#[test]
fn int8_accumulators_bit_exact_on_ragged_shapes() {
    let mut r = rng(1);
    for dev in devices() {
        for &m in &MS {
            for &(n, k) in NKS.iter().chain(&TAILS) {
                let a = rand_i8(&mut r, m * k);
                let w = rand_i8(&mut r, n * k);
                let (da, dw) = (dev.upload(&a).unwrap(), dev.upload(&w).unwrap());
                let want = reference::gemm_i32(&a, &w, m, n, k);
                for tile in [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide] {
                    let mut c = poisoned::<i32>(&dev, m * n);
                    clear(&dev);
                    fusebert_kernels::gemm_int8_i32(
                        &dev,
                        &da,
                        &dw,
                        &mut c,
                        fusebert_kernels::GemmShape { m, n, k },
                        fusebert_kernels::GemmLaunch::tiled(tile),
                    )
                    .unwrap();
                    assert_eq!(c.to_host().unwrap(), want, "{} {tile:?} M {m} N {n} K {k}", dev.name());
                    if let Some(cn) = last_counters(&dev) {
                        assert_eq!(cn.shared_bank_conflicts, 0, "bank conflicts {tile:?} M {m} N {n} K {k}");
                        // rows whose pitch is a whole number of 32-byte sectors (K = 16/48/80 int8
                        // rows straddle sectors whatever the kernel does)
                        if k % 32 == 0 {
                            assert!(cn.global_load_efficiency() >= 0.9, "load efficiency {tile:?} M {m} N {n} K {k}");
                        }
                        assert_no_local(&cn, "gemm_int8_i32");
                    }
                }
            }
        }
    }
}

/// One W8A8 GEMM vs the exact reference; with `asym`, activations use the full code range
/// [-128, 127] with per-row zero points (`gemm_int8_asym`), and the reference is
/// `(acc - zero[m] * w_sum[n]) * a_scale * w_scale`. Same bound either way.
fn int8_case(
    dev: &fusebert_kernels::Device,
    r: &mut rand_chacha::ChaCha8Rng,
    s: GemmShape,
    epi: u32,
    variant: Variant,
    tile: Tile,
    asym: bool,
) -> f32 {
    use rand::Rng;
    let GemmShape { m, n, k } = s;
    let a: Vec<i8> = if asym { (0..m * k).map(|_| r.gen_range(-128..=127)).collect() } else { rand_i8(r, m * k) };
    let w = rand_i8(r, n * k);
    let zero: Vec<i32> = (0..m).map(|_| if asym { r.gen_range(-128..=127) } else { 0 }).collect();
    let w_sum = fusebert_kernels::weight_sums(&w, n, k);
    let asc: Vec<f32> = (0..m).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect();
    let wsc: Vec<f32> = (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect();
    let bias = rand_f16(r, n, 1.0);
    let res = rand_f16(r, m * n, 1.0);
    let (da, dw, das, dws) =
        (dev.upload(&a).unwrap(), dev.upload(&w).unwrap(), dev.upload(&asc).unwrap(), dev.upload(&wsc).unwrap());
    let (db, dr) = (dev.upload(&bias).unwrap(), dev.upload(&res).unwrap());
    let (dz, dsum) = (dev.upload(&zero).unwrap(), dev.upload(&w_sum).unwrap());
    let mut c = poisoned::<f16>(dev, m * n);
    let e = epilogue_by_code(epi, &dr);
    clear(dev);
    let zp = fusebert_kernels::ZeroPoint { zero: &dz, w_sum: &dsum };
    let g = fusebert_kernels::GemmInt8 {
        a: &da,
        a_scale: &das,
        zero_point: asym.then_some(zp),
        w: &dw,
        w_scale: &dws,
        bias: Some(&db),
        epilogue: e,
        shape: s,
    };
    let how = fusebert_kernels::GemmLaunch { variant, tile, ..Default::default() };
    fusebert_kernels::gemm_int8(dev, &g, &mut c, how).unwrap();
    let acc = reference::dequant_asym(&reference::gemm_i32(&a, &w, m, n, k), &zero, &w_sum, &asc, &wsc, n);
    let want = reference::epilogue(&acc, Some(&bias), epi, Some(&res), n);
    let got = to_f32(&c.to_host().unwrap());
    let what = format!("gemm_int8 asym {asym} {variant:?} {tile:?} M {m} N {n} K {k} epi {epi}");
    let err = check_close(&what, &got, &want, |w, _| half_ulp(w) + 1e-5);
    assert_fast_gemm_counters(dev, variant, k, &what);
    err
}

/// The fast GEMMs' counter invariants: no bank conflicts, no local memory, and (when K keeps
/// rows sector-aligned) >= 90% load efficiency.
fn assert_fast_gemm_counters(dev: &fusebert_kernels::Device, variant: Variant, k: usize, what: &str) {
    if let (Some(cn), Variant::Fast) = (last_counters(dev), variant) {
        assert_eq!(cn.shared_bank_conflicts, 0, "{what}: bank conflicts");
        // (K = 16/48/80 int8 rows straddle 32-byte sectors whatever the kernel does)
        if k % 32 == 0 {
            assert!(cn.global_load_efficiency() >= 0.9, "{what}: load efficiency {}", cn.global_load_efficiency());
        }
        assert_no_local(&cn, what);
    }
}

#[test]
fn int8_fp16_output_with_every_epilogue() {
    let mut r = rng(2);
    let mut max = 0f32;
    for dev in devices() {
        for &m in &MS {
            for (i, &(n, k)) in NKS.iter().enumerate() {
                for tile in [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide] {
                    max = max.max(int8_case(
                        &dev,
                        &mut r,
                        GemmShape { m, n, k },
                        ((m + i) % EPILOGUES as usize) as u32,
                        Variant::Fast,
                        tile,
                        false,
                    ));
                }
            }
        }
        // a BERT-FFN-sized reduction
        max = max.max(int8_case(
            &dev,
            &mut r,
            GemmShape { m: 129, n: 768, k: 1536 },
            2,
            Variant::Fast,
            Tile::Large,
            false,
        ));
        for epi in 0..EPILOGUES {
            max = max.max(int8_case(
                &dev,
                &mut r,
                GemmShape { m: 7, n: 96, k: 384 },
                epi,
                Variant::Fast,
                Tile::Auto,
                false,
            ));
            max = max.max(int8_case(
                &dev,
                &mut r,
                GemmShape { m: 7, n: 96, k: 384 },
                epi,
                Variant::Simple,
                Tile::Auto,
                false,
            ));
        }
    }
    eprintln!("gemm_int8 fp16 out: max |err| = {max:e}");
}

#[test]
fn int8_asymmetric_activations_with_every_epilogue() {
    let mut r = rng(5);
    let mut max = 0f32;
    for dev in devices() {
        for (i, &m) in MS.iter().enumerate() {
            for tile in [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide] {
                let (n, k) = NKS[i % NKS.len()];
                max =
                    max.max(int8_case(&dev, &mut r, GemmShape { m, n, k }, (i % 4) as u32, Variant::Fast, tile, true));
            }
        }
        // the FFN2 shape of MiniLM (K = 1536) and a K tail
        max =
            max.max(int8_case(&dev, &mut r, GemmShape { m: 33, n: 384, k: 1536 }, 2, Variant::Fast, Tile::Auto, true));
        max = max.max(int8_case(&dev, &mut r, GemmShape { m: 9, n: 48, k: 80 }, 0, Variant::Fast, Tile::Auto, true));
        for epi in 0..EPILOGUES {
            max = max.max(int8_case(
                &dev,
                &mut r,
                GemmShape { m: 7, n: 96, k: 384 },
                epi,
                Variant::Simple,
                Tile::Auto,
                true,
            ));
        }
        // zero points need w_sum for every column
        let a = dev.upload(&[1i8; 8 * 32]).unwrap();
        let s = dev.upload(&[1f32; 32]).unwrap();
        let short = dev.upload(&[0i32; 16]).unwrap();
        let z = dev.upload(&[0i32; 8]).unwrap();
        let mut c = dev.alloc::<f16>(8 * 32).unwrap();
        let zp = fusebert_kernels::ZeroPoint { zero: &z, w_sum: &short };
        let w = dev.upload(&[1i8; 32 * 32]).unwrap();
        assert_kernel_err(
            fusebert_kernels::gemm_int8(
                &dev,
                &fusebert_kernels::GemmInt8 {
                    a: &a,
                    a_scale: &s,
                    zero_point: Some(zp),
                    w: &w,
                    w_scale: &s,
                    bias: None,
                    epilogue: Epilogue::None,
                    shape: fusebert_kernels::GemmShape { m: 8, n: 32, k: 32 },
                },
                &mut c,
                fusebert_kernels::GemmLaunch::default(),
            ),
            "gemm_int8_f16",
        );
    }
    eprintln!("gemm_int8_asym fp16 out: max |err| = {max:e}");
}

fn f16_case(
    dev: &fusebert_kernels::Device,
    r: &mut rand_chacha::ChaCha8Rng,
    s: GemmShape,
    epi: u32,
    variant: Variant,
    tile: Tile,
) -> f32 {
    let GemmShape { m, n, k } = s;
    let a = rand_f16(r, m * k, 1.0);
    let w = rand_f16(r, n * k, 1.0);
    let bias = rand_f16(r, n, 1.0);
    let res = rand_f16(r, m * n, 1.0);
    let (da, dw, db, dr) =
        (dev.upload(&a).unwrap(), dev.upload(&w).unwrap(), dev.upload(&bias).unwrap(), dev.upload(&res).unwrap());
    let mut c = poisoned::<f16>(dev, m * n);
    let e = epilogue_by_code(epi, &dr);
    clear(dev);
    let g = fusebert_kernels::GemmF16 { a: &da, w: &dw, bias: Some(&db), epilogue: e, shape: s };
    let how = fusebert_kernels::GemmLaunch { variant, tile, ..Default::default() };
    fusebert_kernels::gemm_f16(dev, &g, &mut c, how).unwrap();
    let acc = reference::gemm_f32(&a, &w, m, n, k);
    // sum_k |a w| per output, for the accumulation-order bound
    let abs: Vec<f32> = (0..m * n)
        .map(|i| {
            let (mi, ni) = (i / n, i % n);
            (0..k).map(|kk| (a[mi * k + kk].to_f32() * w[ni * k + kk].to_f32()).abs()).sum()
        })
        .collect();
    let want = reference::epilogue(&acc, Some(&bias), epi, Some(&res), n);
    let got = to_f32(&c.to_host().unwrap());
    let what = format!("gemm_f16 {variant:?} {tile:?} M {m} N {n} K {k} epi {epi}");
    let err = check_close(&what, &got, &want, |w, i| half_ulp(w) + 2.0 * k as f32 * abs[i] / 16_777_216.0 + 1e-5);
    assert_fast_gemm_counters(dev, variant, k, &what);
    err
}

#[test]
fn f16_gemm_with_every_epilogue() {
    let mut r = rng(3);
    let mut max = 0f32;
    for dev in devices() {
        for &m in &MS {
            for (i, &(n, k)) in NKS.iter().enumerate() {
                for tile in [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide] {
                    max = max.max(f16_case(
                        &dev,
                        &mut r,
                        GemmShape { m, n, k },
                        ((m + i) % EPILOGUES as usize) as u32,
                        Variant::Fast,
                        tile,
                    ));
                }
            }
        }
        max = max.max(f16_case(&dev, &mut r, GemmShape { m: 129, n: 768, k: 1536 }, 1, Variant::Fast, Tile::Large));
        for &(n, k) in &TAILS {
            max = max.max(f16_case(&dev, &mut r, GemmShape { m: 7, n, k }, 0, Variant::Fast, Tile::Small));
            max = max.max(f16_case(&dev, &mut r, GemmShape { m: 65, n, k }, 2, Variant::Fast, Tile::Large));
        }
        for epi in 0..EPILOGUES {
            max = max.max(f16_case(&dev, &mut r, GemmShape { m: 7, n: 96, k: 384 }, epi, Variant::Fast, Tile::Auto));
            max = max.max(f16_case(&dev, &mut r, GemmShape { m: 7, n: 96, k: 384 }, epi, Variant::Simple, Tile::Auto));
        }
    }
    eprintln!("gemm_f16: max |err| = {max:e}");
}

#[test]
fn gemm_shape_errors_name_the_kernel() {
    let dev = fusebert_kernels::Device::emulator().unwrap();
    let a = dev.upload(&[1i8; 8 * 40]).unwrap();
    let w = dev.upload(&[1i8; 40 * 40]).unwrap();
    let s = dev.upload(&[1f32; 40]).unwrap();
    let mut c = dev.alloc::<f16>(8 * 40).unwrap();
    // all-one operands of the given shape
    let ones = |shape| fusebert_kernels::GemmInt8 {
        a: &a,
        a_scale: &s,
        zero_point: None,
        w: &w,
        w_scale: &s,
        bias: None,
        epilogue: Epilogue::None,
        shape,
    };
    // N = 40 is not a multiple of 16
    assert_kernel_err(
        fusebert_kernels::gemm_int8(
            &dev,
            &ones(GemmShape { m: 8, n: 40, k: 32 }),
            &mut c,
            fusebert_kernels::GemmLaunch::default(),
        ),
        "gemm_int8_f16",
    );
    // output too short
    let mut small = dev.alloc::<f16>(10).unwrap();
    assert_kernel_err(
        fusebert_kernels::gemm_int8(
            &dev,
            &ones(GemmShape { m: 8, n: 32, k: 32 }),
            &mut small,
            fusebert_kernels::GemmLaunch::default(),
        ),
        "gemm_int8_f16",
    );
    let a16 = dev.upload(&[f16::ONE; 8 * 40]).unwrap();
    let w16 = dev.upload(&[f16::ONE; 40 * 40]).unwrap();
    // K = 40 not a multiple of 16
    assert_kernel_err(
        fusebert_kernels::gemm_f16(
            &dev,
            &fusebert_kernels::GemmF16 {
                a: &a16,
                w: &w16,
                bias: None,
                epilogue: Epilogue::None,
                shape: fusebert_kernels::GemmShape { m: 8, n: 32, k: 40 },
            },
            &mut c,
            fusebert_kernels::GemmLaunch::default(),
        ),
        "gemm_f16",
    );
    let mut c32 = dev.alloc::<i32>(1).unwrap();
    assert_kernel_err(
        fusebert_kernels::gemm_int8_i32(
            &dev,
            &a,
            &w,
            &mut c32,
            fusebert_kernels::GemmShape { m: 0, n: 32, k: 32 },
            fusebert_kernels::GemmLaunch::default(),
        ),
        "gemm_int8_i32",
    );
}

/// The tile model: large grids that re-read operands through L2 get the 128x128 tile (BERT-base
/// at 32x128: FFN2 and the attention output included, which the old fixed 256-block threshold
/// left on 64x64); weight-streaming small grids keep 64x64 (more blocks, less padding). Both
/// tiles fit on an SM, and the 128x128 tile fits twice (launch bounds cap it at 128 registers).
#[test]
fn tile_model_picks_large_for_big_grids_and_small_for_streaming_shapes() {
    use fusebert_kernels::gemm_plan::{choose_tile, tile_blocks_per_sm, tile_clocks};
    for int8 in [false, true] {
        // int8: two 128x128 blocks per SM; fp16: one (the chunk-order fold of batch-invariant
        // split-K keeps a second accumulator set: ~210 registers)
        assert_eq!(tile_blocks_per_sm(Tile::Large, int8), if int8 { 2 } else { 1 }, "int8 {int8}");
        assert!(tile_blocks_per_sm(Tile::Small, int8) >= 4, "int8 {int8}");
        assert!(tile_blocks_per_sm(Tile::Narrow, int8) >= 4, "int8 {int8}");
        assert!(tile_blocks_per_sm(Tile::NarrowWide, int8) >= 4, "int8 {int8}");
        for (n, k) in [(2304, 768), (768, 768), (3072, 768), (768, 3072)] {
            assert_eq!(choose_tile(4096, n, k, int8), Tile::Large, "4096 x {n} x {k} int8 {int8}");
            // few tokens: a small tile (Narrow where twice the blocks beat its extra weight reads)
            for (m, n, k) in [(128, n, k), (20, n / 2, k / 2)] {
                let t = choose_tile(m, n, k, int8);
                assert_ne!(t, Tile::Large, "{m} x {n} x {k} int8 {int8}");
                for other in [Tile::Small, Tile::Large, Tile::Narrow, Tile::NarrowWide] {
                    assert!(
                        tile_clocks(t, m, n, k, int8) <= tile_clocks(other, m, n, k, int8),
                        "{m}x{n}x{k} {other:?}"
                    );
                }
            }
            // the choice is the cheaper prediction, and Auto resolves to it
            let (s, l) = (tile_clocks(Tile::Small, 4096, n, k, int8), tile_clocks(Tile::Large, 4096, n, k, int8));
            assert!(l < s, "4096 x {n} x {k}: large {l} small {s}");
            assert_eq!(Tile::Auto.resolve(4096, n, k, int8), Tile::Large);
        }
    }
}

/// ptxas' figures for the tensor-core kernels: no spills on either target; the int8 128x128
/// kernels within 128 registers (two 256-thread blocks per SM), the fp16 one within 255 (one);
/// the fused-layernorm variants within their stated budgets.
#[test]
fn large_tile_kernels_fit_two_blocks_per_sm_without_spills() {
    let kernels = [
        ("gemm_f16_l", 255),
        ("gemm_int8_f16_l", 128),
        ("gemm_int8_i32_l", 128),
        ("gemm_f16", 128),
        ("gemm_f16_sk", 128),
        ("gemm_int8_f16_sk", 128),
        ("gemm_int8_i32_sk", 128),
        // fused layernorm: one block per SM for the 128x128 tiles, the 64x64 ones within 3 per SM
        ("gemm_f16_l_ln", 255),
        ("gemm_int8_f16_l_ln", 255),
        ("gemm_f16_ln", 168),
        ("gemm_f16_sk_ln", 168),
        ("gemm_int8_f16_ln", 168),
        ("gemm_int8_f16_sk_ln", 168),
        // the 32x64 tile: at most 4 blocks per SM by registers, 3 with a fused layernorm
        ("gemm_f16_n", 128),
        ("gemm_f16_n_sk", 128),
        ("gemm_int8_f16_n", 128),
        ("gemm_int8_i32_n", 128),
        ("gemm_int8_f16_n_sk", 128),
        ("gemm_int8_i32_n_sk", 128),
        ("gemm_f16_n_ln", 168),
        ("gemm_f16_n_sk_ln", 168),
        ("gemm_int8_f16_n_ln", 168),
        ("gemm_int8_f16_n_sk_ln", 168),
        // the 32x128 tile (Small's warp tile)
        ("gemm_f16_nw", 128),
        ("gemm_f16_nw_sk", 128),
        ("gemm_int8_f16_nw", 128),
        ("gemm_int8_i32_nw", 128),
        ("gemm_int8_f16_nw_sk", 128),
        ("gemm_int8_i32_nw_sk", 128),
        ("gemm_f16_nw_ln", 168),
        ("gemm_f16_nw_sk_ln", 168),
        ("gemm_int8_f16_nw_ln", 168),
        ("gemm_int8_f16_nw_sk_ln", 168),
    ];
    for (kernel, max_regs) in kernels {
        for arch in ["sm_80", "sm_90"] {
            let r = fusebert_kernels::ptx::kernel_resources(kernel, arch).unwrap_or_else(|| panic!("{kernel} {arch}"));
            assert!(r.registers <= max_regs, "{kernel} {arch}: {} registers", r.registers);
            assert_eq!((r.spill_store_bytes, r.spill_load_bytes, r.stack_bytes), (0, 0, 0), "{kernel} {arch}");
        }
    }
}
