//! Pooling and the embedding+layernorm kernel vs CPU references.
//!
//! Pooling is f32 out: mean of fp16 values summed in f32 (<= 512 terms of magnitude <= 1):
//! |err| <= 1e-5 relative + 1e-6. Embedding: fp16 out, |err| <= |ref|*2^-11 + 2e-5 (as layernorm).
mod kernels_util;
use fusebert_kernels::{self, reference, EmbeddingTables, Pooling};
use half::f16;
use kernels_util::*;

const MODES: [Pooling; 6] =
    [Pooling::Mean, Pooling::Cls, Pooling::Max, Pooling::MeanSqrtLen, Pooling::WeightedMean, Pooling::LastToken];

/// Every mode, with and without L2 norm and a masked prompt (skip 0, 3: the 1-token sequence
/// is fully masked), on ragged sequences including an empty one.
#[test]
fn pooling_every_mode_ragged() {
    for dev in devices() {
        let mut r = rng(7);
        let (h, lens) = (384usize, [1u32, 17, 0, 130]);
        let mut cu = vec![0u32];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap() as usize;
        let x = rand_f16(&mut r, t * h, 1.0);
        let (dx, dc) = (dev.upload(&x).unwrap(), dev.upload(&cu).unwrap());
        for mode in MODES {
            for (skip, l2) in [(0, false), (0, true), (3, false), (3, true)] {
                let mut out = poisoned::<f32>(&dev, lens.len() * h);
                clear(&dev);
                fusebert_kernels::pool(
                    &dev,
                    &fusebert_kernels::PoolF16 {
                        x: &dx,
                        cu_seqlens: &dc,
                        batch: lens.len(),
                        tokens: t,
                        hidden: h,
                        mode,
                        skip,
                        l2norm: l2,
                    },
                    &mut out,
                )
                .unwrap();
                let want = reference::pool(&x, &cu, h, mode, skip, l2);
                check_close(&format!("pool {mode:?} skip {skip} l2 {l2}"), &out.to_host().unwrap(), &want, |w, _| {
                    w.abs() * 1e-5 + 1e-6
                });
                if let Some(c) = last_counters(&dev) {
                    assert_no_local(&c, "pool");
                }
            }
        }
    }
}

/// Hand-computed values, so the reference itself is pinned: tokens [1, -2], [3, 4], [-5, 0.5].
#[test]
fn pooling_reference_by_hand() {
    let x: Vec<f16> = [1.0, -2.0, 3.0, 4.0, -5.0, 0.5].map(f16::from_f32).to_vec();
    let p = |m, skip| reference::pool(&x, &[0, 3], 2, m, skip, false);
    assert_eq!(p(Pooling::Cls, 2), vec![1.0, -2.0]);
    assert_eq!(p(Pooling::LastToken, 0), vec![-5.0, 0.5]);
    assert_eq!(p(Pooling::Max, 0), vec![3.0, 4.0]);
    assert_eq!(p(Pooling::Max, 3), vec![-1e9, -1e9]);
    assert_eq!(p(Pooling::Mean, 1), vec![-1.0, 2.25]);
    assert_eq!(p(Pooling::Mean, 3), vec![0.0, 0.0]);
    let s3 = 3f64.sqrt();
    assert_eq!(p(Pooling::MeanSqrtLen, 0), vec![(-1.0 / s3) as f32, (2.5 / s3) as f32]);
    assert_eq!(p(Pooling::WeightedMean, 0), vec![(1.0 + 6.0 - 15.0) / 6.0, (-2.0 + 8.0 + 1.5) / 6.0]);
}

/// BERT (token types, positions from 0), RoBERTa (positions offset by pad_token_id + 1 = 2)
/// and DistilBERT (no token types: type_ids poisoned, so a read would be an out-of-bounds
/// report), on the warp-per-token kernel (hidden % 8 == 0, <= 1024: rows of 256, 264 (33
/// vectors: one lane holds two), 1024 (four vectors per lane)) and the wide block-per-token one
/// (vectorised at 1040, scalar at 100); 62 ragged packed tokens (8 per warp-kernel block: the
/// last block has 6).
#[test]
fn embedding_layernorm_matches_reference() {
    let cases = [
        (256usize, 0usize, true),
        (256, 2, true),
        (256, 0, false),
        (264, 0, true),
        (1024, 2, true),
        (100, 2, false),
        (1040, 0, true),
        (1040, 1, false),
    ];
    for dev in devices() {
        for (i, (h, offset, types)) in cases.into_iter().enumerate() {
            embedding_case(&dev, 8 + i as u64, h, offset, types);
        }
    }
}

fn embedding_case(dev: &fusebert_kernels::Device, seed: u64, h: usize, offset: usize, types: bool) {
    let mut r = rng(seed);
    let (vocab, lens) = (50usize, [1u32, 17, 5, 20, 19]);
    let pids: Vec<u32> = lens.iter().flat_map(|&l| 0..l).collect();
    let t = pids.len();
    let word = rand_f16(&mut r, vocab * h, 1.0);
    let pos = rand_f16(&mut r, (20 + offset) * h, 0.5);
    let typ = rand_f16(&mut r, 2 * h, 0.2);
    let gamma = rand_f16(&mut r, h, 1.0);
    let beta = rand_f16(&mut r, h, 0.5);
    let ids: Vec<u32> = (0..t as u32).map(|i| (i * 13 + 5) % vocab as u32).collect();
    let tids: Vec<u32> = (0..t as u32).map(|i| i % 2).collect();
    let d = |v: &[f16]| dev.upload(v).unwrap();
    let (dw, dp, dt, dg, db) = (d(&word), d(&pos), d(&typ), d(&gamma), d(&beta));
    let token_type = types.then_some(&dt);
    let tables = EmbeddingTables {
        word: &dw,
        position: &dp,
        token_type,
        position_offset: offset,
        gamma: &dg,
        beta: &db,
        eps: 1e-12,
    };
    let mut out = poisoned::<f16>(dev, t * h);
    clear(dev);
    let (di, dpi) = (dev.upload(&ids).unwrap(), dev.upload(&pids).unwrap());
    let dti = if types { dev.upload(&tids).unwrap() } else { poisoned::<u32>(dev, t) };
    let token_ids = fusebert_kernels::TokenIds { ids: &di, pos_ids: &dpi, type_ids: &dti };
    fusebert_kernels::embedding_layernorm(dev, &token_ids, &tables, &mut out, t, h).unwrap();
    let rows: Vec<u32> = pids.iter().map(|&p| p + offset as u32).collect();
    let typ_ref = types.then_some(&typ[..]);
    let ln = reference::LayerNormParams { gamma: &gamma, beta: &beta, eps: 1e-12 };
    let tables_ref = reference::EmbeddingTablesRef { word: &word, pos: &pos, typ: typ_ref, ln };
    let want = reference::embedding_layernorm([&ids, &rows, &tids], tables_ref, h);
    let what = format!("embedding h {h} offset {offset} types {types}");
    let err = check_close(&what, &to_f32(&out.to_host().unwrap()), &want, |w, _| half_ulp(w) + 2e-5);
    eprintln!("{what}: max |err| = {err:e}");
    if let Some(e) = dev.emulator_backend() {
        let want = fusebert_kernels::embedding::geometry(t, h).kernel;
        assert_eq!(e.launches().last().unwrap().kernel, want, "{what}");
        assert_eq!(want.ends_with("_wide"), h % 8 != 0 || h > 1024, "{what}");
    }
    if let Some(c) = last_counters(dev) {
        assert_no_local(&c, "embedding");
        assert_eq!(c.global_store_bytes, (t * h * 2) as u64, "{what}: store bytes = output size");
    }
}
