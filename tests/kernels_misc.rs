//! Pooling and the embedding+layernorm kernel vs CPU references.
//!
//! Pooling is f32 out: mean of fp16 values summed in f32 (<= 512 terms of magnitude <= 1):
//! |err| <= 1e-5 relative + 1e-6. Embedding: fp16 out, |err| <= |ref|*2^-11 + 2e-5 (as layernorm).
mod kernels_util;
use fusebert::kernels::{self, reference, EmbeddingTables, Pooling};
use half::f16;
use kernels_util::*;

#[test]
fn pooling_mean_cls_l2() {
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
        for (mode, l2) in [(Pooling::Mean, false), (Pooling::Mean, true), (Pooling::Cls, false), (Pooling::Cls, true)] {
            let mut out = poisoned::<f32>(&dev, lens.len() * h);
            clear(&dev);
            kernels::pool(&dev, &dx, &dc, &mut out, lens.len(), t, h, mode, l2).unwrap();
            let want = reference::pool(&x, &cu, h, mode == Pooling::Cls, l2);
            check_close(&format!("pool {mode:?} l2 {l2}"), &out.to_host().unwrap(), &want, |w, _| {
                w.abs() * 1e-5 + 1e-6
            });
            if let Some(c) = last_counters(&dev) {
                assert_no_local(&c, "pool");
            }
        }
    }
}

#[test]
fn embedding_layernorm_matches_reference() {
    for dev in devices() {
        let mut r = rng(8);
        let (h, vocab, t) = (256usize, 50usize, 23usize);
        let word = rand_f16(&mut r, vocab * h, 1.0);
        let pos = rand_f16(&mut r, 64 * h, 0.5);
        let typ = rand_f16(&mut r, 2 * h, 0.2);
        let gamma = rand_f16(&mut r, h, 1.0);
        let beta = rand_f16(&mut r, h, 0.5);
        let ids: Vec<u32> = (0..t as u32).map(|i| (i * 13 + 5) % vocab as u32).collect();
        let pids: Vec<u32> = (0..t as u32).collect();
        let tids: Vec<u32> = (0..t as u32).map(|i| i % 2).collect();
        let d = |v: &[f16]| dev.upload(v).unwrap();
        let (dw, dp, dt, dg, db) = (d(&word), d(&pos), d(&typ), d(&gamma), d(&beta));
        let tables = EmbeddingTables { word: &dw, position: &dp, token_type: &dt, gamma: &dg, beta: &db };
        let mut out = poisoned::<f16>(&dev, t * h);
        clear(&dev);
        let (di, dpi, dti) = (dev.upload(&ids).unwrap(), dev.upload(&pids).unwrap(), dev.upload(&tids).unwrap());
        kernels::embedding_layernorm(&dev, &di, &dpi, &dti, &tables, &mut out, t, h, 1e-12).unwrap();
        let want = reference::embedding_layernorm(&ids, &pids, &tids, &word, &pos, &typ, &gamma, &beta, h, 1e-12);
        check_close("embedding", &to_f32(&out.to_host().unwrap()), &want, |w, _| half_ulp(w) + 2e-5);
        if let Some(c) = last_counters(&dev) {
            assert_no_local(&c, "embedding");
        }
    }
}
