//! Fused attention vs the f64-softmax CPU reference, every head dim, ragged packed sequences.
//!
//! Tolerance 1e-3 absolute on unit-scale data (q, k, v uniform in [-1, 1]): the output is a
//! convex combination of v; the kernel rounds P to fp16 before P.V (relative 2^-11 on each
//! weight, while the normaliser l sums the unrounded weights: <= 2^-11 * max|v| = 4.9e-4) and
//! rounds O to fp16 (<= 2^-11 * |o| <= 4.9e-4); ex2.approx (2^-22) and f32 accumulation add
//! ~1e-6. Measured max: ~2.2e-4.
mod kernels_util;
use fusebert_kernels::attention::{attention, AttentionLaunch, QueryTile, HEAD_DIMS, SHORT_MAX_SEQLEN};
use fusebert_kernels::{self, reference, AttentionShape};
use half::f16;
use kernels_util::*;

fn case(dev: &fusebert_kernels::Device, seed: u64, d: usize, heads: usize, lens: &[u32]) -> f32 {
    case_tiled(dev, seed, d, heads, lens, QueryTile::Auto)
}

/// One ragged batch through the fast kernel in geometry `tile`, against the reference; checks
/// the entry point the geometry names was the one launched.
fn case_tiled(dev: &fusebert_kernels::Device, seed: u64, d: usize, heads: usize, lens: &[u32], tile: QueryTile) -> f32 {
    let mut r = rng(seed);
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    let t = *cu.last().unwrap() as usize;
    let h = heads * d;
    let qkv = rand_f16(&mut r, t * 3 * h, 1.0);
    let (dq, dc) = (dev.upload(&qkv).unwrap(), dev.upload(&cu).unwrap());
    let mut out = poisoned::<f16>(dev, t * h);
    clear(dev);
    let shape = AttentionShape::from_cu_seqlens(&cu, heads, d).unwrap();
    assert_eq!((shape.batch, shape.tokens, shape.max_seqlen), (lens.len(), t, *lens.iter().max().unwrap() as usize));
    attention(dev, &dq, &dc, &mut out, shape, AttentionLaunch { tile, ..Default::default() }).unwrap();
    let want = reference::attention(&qkv, &cu, heads, d, 1.0 / (d as f32).sqrt());
    let what = format!("attention {tile:?} d {d} heads {heads} lens {lens:?}");
    let err = check_close(&what, &to_f32(&out.to_host().unwrap()), &want, |_, _| 1e-3);
    if let Some(emu) = dev.emulator_backend() {
        let short = tile.resolve(shape.max_seqlen) == QueryTile::Rows32;
        let want = format!("attention_f16{}_d{d}", if short { "_short" } else { "" });
        assert_eq!(emu.launches().last().unwrap().kernel, want, "{what}: entry point");
    }
    if let Some(c) = last_counters(dev) {
        assert_no_local(&c, &what);
        assert_eq!(c.global_store_bytes, (t * h * 2) as u64, "{what}: store bytes = output size");
        assert_eq!(c.shared_bank_conflicts, 0, "{what}: bank conflicts");
        eprintln!("{what}: load eff {:.3}, store eff {:.3}", c.global_load_efficiency(), c.global_store_efficiency());
    }
    err
}

#[test]
fn attention_d64_ragged() {
    let mut max = 0f32;
    for dev in devices() {
        max = max.max(case(&dev, 1, 64, 4, &[1, 17, 128, 500]));
        max = max.max(case(&dev, 4, 64, 3, &[64, 65, 63, 2]));
    }
    eprintln!("attention d64: max |err| = {max:e}");
}

#[test]
fn attention_d32_ragged() {
    let mut max = 0f32;
    for dev in devices() {
        max = max.max(case(&dev, 2, 32, 2, &[1, 17, 128, 500]));
    }
    eprintln!("attention d32: max |err| = {max:e}");
}

#[test]
fn attention_d128_ragged() {
    let mut max = 0f32;
    for dev in devices() {
        max = max.max(case(&dev, 3, 128, 1, &[1, 17, 128, 500]));
    }
    eprintln!("attention d128: max |err| = {max:e}");
}

/// The head dims beyond 32/64/128 (real small models use 16; 48, 80, 96, 112 exist too): ragged
/// lengths crossing the 64-row query tile and the key tile (32 or 64), several heads.
#[test]
fn attention_other_head_dims_ragged() {
    for dev in devices() {
        for (i, d) in [16usize, 48, 80, 96, 112].into_iter().enumerate() {
            let err = case(&dev, 20 + i as u64, d, 3, &[1, 17, 130, 65]);
            eprintln!("attention d{d}: max |err| = {err:e}");
        }
    }
}

#[test]
fn attention_simple_baseline_matches_reference() {
    for dev in devices() {
        let mut r = rng(9);
        let (d, heads, lens) = (64usize, 2usize, [1u32, 17, 130]);
        let mut cu = vec![0u32];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap() as usize;
        let qkv = rand_f16(&mut r, t * 3 * heads * d, 1.0);
        let (dq, dc) = (dev.upload(&qkv).unwrap(), dev.upload(&cu).unwrap());
        let mut out = poisoned::<f16>(&dev, t * heads * d);
        let shape = AttentionShape::from_cu_seqlens(&cu, heads, d).unwrap();
        fusebert_kernels::attention(
            &dev,
            &dq,
            &dc,
            &mut out,
            shape,
            fusebert_kernels::AttentionLaunch { variant: fusebert_kernels::Variant::Simple, ..Default::default() },
        )
        .unwrap();
        let want = reference::attention(&qkv, &cu, heads, d, 1.0 / (d as f32).sqrt());
        // exact-exp f32 softmax, one fp16 rounding of O: 2^-11 |o| + 1e-5
        check_close("attention simple", &to_f32(&out.to_host().unwrap()), &want, |w, _| half_ulp(w) + 1e-5);
    }
}

#[test]
fn attention_rejects_bad_head_dim() {
    let dev = fusebert_kernels::Device::emulator().unwrap();
    let qkv = dev.upload(&[f16::ONE; 3 * 144]).unwrap();
    let cu = dev.upload(&[0u32, 1]).unwrap();
    let mut out = dev.alloc::<f16>(144).unwrap();
    for head_dim in [8, 40, 144] {
        let s = AttentionShape { batch: 1, tokens: 1, max_seqlen: 1, heads: 1, head_dim, scale: None };
        assert_kernel_err(
            fusebert_kernels::attention(&dev, &qkv, &cu, &mut out, s, fusebert_kernels::AttentionLaunch::default()),
            "attention",
        );
    }
    let s = AttentionShape { batch: 1, tokens: 1, max_seqlen: 1, heads: 1, head_dim: 48, scale: None };
    let s = AttentionShape { head_dim: 32, tokens: 5, ..s };
    assert_kernel_err(
        fusebert_kernels::attention(&dev, &qkv, &cu, &mut out, s, fusebert_kernels::AttentionLaunch::default()),
        "attention_f16_short_d32",
    );
    let s = AttentionShape { max_seqlen: 40, ..s };
    assert_kernel_err(
        fusebert_kernels::attention(&dev, &qkv, &cu, &mut out, s, fusebert_kernels::AttentionLaunch::default()),
        "attention_f16_d32",
    );
    assert_kernel_err(AttentionShape::from_cu_seqlens(&[0, 5, 3], 1, 32), "attention");
    assert_kernel_err(AttentionShape::from_cu_seqlens(&[1, 5], 1, 32), "attention");
}

/// Batches whose longest text fits 32 tokens run the short geometry (32 query rows, 2 warps,
/// 32-key tiles): every head dim, ragged lengths 1..32 (warp 1 idle for the shorter ones).
#[test]
fn attention_short_geometry_every_head_dim() {
    for dev in devices() {
        for (i, d) in HEAD_DIMS.into_iter().enumerate() {
            let err = case(&dev, 40 + i as u64, d, 2, &[1, 3, 17, 31, SHORT_MAX_SEQLEN as u32, 9]);
            eprintln!("attention short d{d}: max |err| = {err:e}");
        }
    }
}

/// The short geometry forced onto lengths past one tile (several 32-row query tiles and 32-key
/// tiles, the online softmax across them) and the 64-row geometry onto short batches: both
/// match the reference on the same ragged batches.
#[test]
fn attention_both_geometries_on_ragged_lengths() {
    for dev in devices() {
        for (i, d) in [16usize, 32, 64, 128].into_iter().enumerate() {
            let lens: &[u32] = &[1, 3, 17, 31, 33, 70, 2];
            let seed = 60 + i as u64;
            let a = case_tiled(&dev, seed, d, 2, lens, QueryTile::Rows32);
            let b = case_tiled(&dev, seed, d, 2, lens, QueryTile::Rows64);
            let c = case_tiled(&dev, seed, d, 3, &[5, 20, 1, 12], QueryTile::Rows64);
            eprintln!("attention d{d} lens {lens:?}: rows32 {a:e}, rows64 {b:e}; short batch rows64 {c:e}");
        }
    }
}

/// `Auto` picks the short geometry exactly up to `SHORT_MAX_SEQLEN` (one function decides for
/// the launch and for `perf::plan`).
#[test]
fn attention_geometry_selection_rule() {
    use fusebert_kernels::attention::geometry;
    for (max_len, rows) in [(1, 32), (20, 32), (32, 32), (33, 64), (128, 64)] {
        let g = geometry(QueryTile::Auto.resolve(max_len), 64).unwrap();
        assert_eq!(g.tile_q, rows, "max_len {max_len}");
        assert_eq!(g.threads as usize, rows * 2, "one warp per 16 rows");
    }
    let g = geometry(QueryTile::Rows32, 128).unwrap();
    assert_eq!((g.kernel, g.block_n, g.shared_bytes), ("attention_f16_short_d128", 32, 160 * 128 * 2));
    assert_kernel_err(geometry(QueryTile::Rows32, 40), "attention");
}
