//! Split-K and the 192-column tile on the Hopper GEMMs (`kernels/gemm_sm90.cu`: the `_sk`
//! entries, a tile's K chunks on separate CTAs, the last to finish adding their partial sums in
//! chunk order; the `_n192` entries, 128 x 192 tiles in a 3-stage ring) on the emulator at
//! sm_90, in lazy, eager and random completion, outputs poisoned, sanitizers on:
//! - the s32 accumulators of `gemm_int8_i32_sm90_sk` / `_n192` / `_n192_sk` equal the exact CPU
//!   product;
//! - every result, split or not, in either width, equals the unsplit 128-column kernel's bit for
//!   bit (fp16: all sum K in the same fixed chunks and add the chunks in order, and a wgmma's
//!   output element does not depend on its N; int8: s32 is exact), with every kind of epilogue,
//!   zero points, and the fused layernorm with its int8 codes;
//! - batch invariance: a row split in a short batch equals the same row unsplit in a long one;
//! - a short batch stores and reads partial sums only for the warps with a row below M, and a
//!   warpgroup with no row below M issues no wgmma (tensor MACs counted);
//! - fewer CTAs than work units (each walks several tiles' chunks), two launches on one
//!   workspace (the tile counters are left at zero), a workspace too small (typed error), K of
//!   one chunk (no split: the unsplit entry runs).
//!
//! K chunks: 4 k-blocks of 128 bytes at least, at most 4 chunks. The shapes: fp16 K 1024 (16
//! k-blocks: 4 chunks), K 600 (a partly zero-filled tenth k-block: chunks of 4, 4, 2); int8 K 1040
//! (9 k-blocks: 4, 4, 1), K 2048 (4 chunks); M and N off the 128 x 128 tile.
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Cols, Sm90Plan};
use fusebert_kernels::{reference, Device, Epilogue, FusedLayerNorm, FusedQ8, GemmF16, GemmInt8, GemmShape, ZeroPoint};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;
use rand::Rng;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(7)];

const WIDTHS: [(Sm90Cols, usize); 2] = [(Sm90Cols::N128, 128), (Sm90Cols::N192, 192)];

fn narrow() -> GemmSm90Launch<'static> {
    GemmSm90Launch { cols: Sm90Cols::N128, ..Default::default() }
}

/// The kernel of the last launch, after its counters' sanity (no spills, no bank conflicts).
fn last_kernel(dev: &Device, what: &str) -> String {
    last_launch(dev, what).0
}

fn split(ws: &SplitWorkspace, ctas: Option<u32>, cols: Sm90Cols) -> GemmSm90Launch<'_> {
    GemmSm90Launch { ctas, cols, split: Some(ws), ..Default::default() }
}

#[test]
fn chunk_counts_and_the_split_choice_follow_k_and_the_grid() {
    // fp16: 128 bytes of K = 64 elements a k-block
    assert_eq!(gemm_sm90::k_chunks(1024, false), 4);
    assert_eq!(gemm_sm90::k_chunks(600, false), 3);
    assert_eq!(gemm_sm90::k_chunks(256, false), 1);
    assert_eq!(gemm_sm90::k_chunks(768, false), 3);
    assert_eq!(gemm_sm90::k_chunks(3072, false), 4);
    // int8: 128 elements a k-block
    assert_eq!(gemm_sm90::k_chunks(1040, true), 3);
    assert_eq!(gemm_sm90::k_chunks(768, true), 2);
    assert_eq!(gemm_sm90::k_chunks(384, true), 1);
    // BERT-base at 128 tokens: 6 to 24 tiles, split; at 4096 tokens: hundreds of tiles, not
    assert_eq!(gemm_sm90::splits(128, 768, 768, false), 3);
    assert_eq!(gemm_sm90::splits(128, 768, 3072, true), 4);
    assert_eq!(gemm_sm90::splits(128, 3072, 768, false), 3);
    assert_eq!(gemm_sm90::splits(4096, 768, 768, false), 1);
    // one chunk: nothing to split
    assert_eq!(gemm_sm90::splits(1, 384, 384, true), 1);
    // the width: 192 where it fills the last wave better (BERT-base at 4096 tokens: QKV 384
    // tiles in 3 waves against 576 in 5; attention-out 128 in 1 against 192 in 2), 192 on a tie
    // (FFN1: 512 tiles in 4 waves of 192 columns = 768 in 6 of 128: A is re-read by 16 column
    // tiles instead of 24), 128 on small grids
    let plan = |m, n, k| gemm_sm90::plan(m, n, k, false);
    assert_eq!(plan(4096, 2304, 768), Sm90Plan { cols: 192, splits: 1 });
    assert_eq!(plan(4096, 768, 768), Sm90Plan { cols: 192, splits: 1 });
    assert_eq!(plan(4096, 3072, 768), Sm90Plan { cols: 192, splits: 1 });
    assert_eq!(plan(128, 768, 768), Sm90Plan { cols: 128, splits: 3 });
}

#[test]
fn int8_i32_split_is_the_exact_product() {
    let mut r = rng(71);
    for (i, &(m, n, k)) in [(70, 144, 1040), (130, 80, 2048)].iter().enumerate() {
        let dev = sm90(MODES[i]);
        let (a, w) = (rand_i8(&mut r, m * k), rand_i8(&mut r, n * k));
        let want = reference::gemm_i32(&a, &w, m, n, k);
        let (da, dw) = (dev.upload(&a).unwrap(), dev.upload(&w).unwrap());
        let ws = split_workspace(&dev, m, n, k, true);
        let s = GemmShape { m, n, k };
        for (ctas, cols, split_ws) in
            [(None, Sm90Cols::N128, true), (Some(3), Sm90Cols::N192, true), (None, Sm90Cols::N192, false)]
        {
            let how = GemmSm90Launch { ctas, cols, split: split_ws.then_some(&ws), ..Default::default() };
            let mut c = poisoned::<i32>(&dev, m * n);
            clear(&dev);
            fusebert_kernels::gemm_int8_i32_sm90(&dev, &da, &dw, &mut c, s, how).unwrap();
            let what = format!("gemm_int8_i32_sm90 M {m} N {n} K {k} {how:?}");
            let kernel = last_kernel(&dev, &what);
            assert_eq!(kernel.contains("_n192"), cols == Sm90Cols::N192, "{what}: {kernel}");
            assert_eq!(kernel.ends_with("_sk"), split_ws, "{what}: {kernel}");
            assert!(bits(&c) == want, "{what}: not the exact product");
        }
    }
}

/// Runs the fp16 GEMM of `a [m, k]` with epilogue `epi` (0 none, 1 GELU, 2 residual) into a
/// poisoned output.
#[allow(clippy::too_many_arguments)]
fn f16_gemm(
    dev: &Device,
    a: &[f16],
    w: &[f16],
    bias: &[f16],
    res: &[f16],
    s: GemmShape,
    epi: u32,
    how: GemmSm90Launch<'_>,
) -> Vec<f16> {
    let up = |v: &[f16]| dev.upload(v).unwrap();
    let (da, dw, db, dr) = (up(a), up(w), up(bias), up(&res[..s.m * s.n]));
    let epilogue = match epi {
        1 => Epilogue::Gelu,
        2 => Epilogue::Residual(&dr),
        _ => Epilogue::None,
    };
    let g = GemmF16 { a: &da, w: &dw, bias: Some(&db), epilogue, shape: s };
    let mut c = poisoned::<f16>(dev, s.m * s.n);
    clear(dev);
    fusebert_kernels::gemm_f16_sm90(dev, &g, &mut c, how).unwrap();
    bits(&c)
}

#[test]
fn f16_split_equals_unsplit_bit_for_bit_and_the_reference() {
    let mut r = rng(72);
    for (i, &(m, n, k)) in [(70, 136, 1024), (130, 96, 600), (1, 264, 1024)].iter().enumerate() {
        let dev = sm90(MODES[i]);
        let (a, w) = (rand_f16(&mut r, m * k, 1.0), rand_f16(&mut r, n * k, 1.0));
        let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
        let s = GemmShape { m, n, k };
        let epi = i as u32;
        let whole = f16_gemm(&dev, &a, &w, &bias, &res, s, epi, narrow());
        assert_eq!(last_kernel(&dev, "unsplit"), gemm_sm90::KERNEL);
        // the reference: f64 sums, one fp16 rounding, f32 accumulation-order bound
        let acc = reference::gemm_f32(&a, &w, m, n, k);
        let want = reference::epilogue(&acc, Some(&bias), epi, Some(&res), n);
        let bound: Vec<f32> = (0..m * n)
            .map(|j| {
                let (mi, ni) = (j / n, j % n);
                let abs: f32 = (0..k).map(|kk| (a[mi * k + kk].to_f32() * w[ni * k + kk].to_f32()).abs()).sum();
                2.0 * k as f32 * abs / 16_777_216.0
            })
            .collect();
        let what = format!("gemm_f16_sm90 M {m} N {n} K {k} epi {epi}");
        check_close(&what, &to_f32(&whole), &want, |v, j| half_ulp(v) + bound[j] + 1e-5);
        let ws = split_workspace(&dev, m, n, k, false);
        for (cols, width) in WIDTHS {
            // unsplit in this width, then split: fewer CTAs than units, then two launches on
            // one workspace (its counters back at 0)
            let unsplit = GemmSm90Launch { cols, ..Default::default() };
            // one CTA walking every tile: each tile's K-chunk fold reuses the shared region the
            // previous tile's output was staged in (and TMA-stored from)
            let walk = GemmSm90Launch { ctas: Some(1), cols, ..Default::default() };
            for how in [unsplit, walk, split(&ws, Some(2), cols), split(&ws, None, cols), split(&ws, None, cols)] {
                let got = f16_gemm(&dev, &a, &w, &bias, &res, s, epi, how);
                let what = format!("{what} {how:?}");
                assert_eq!(
                    last_kernel(&dev, &what),
                    gemm_sm90::kernel_name(gemm_sm90::Sm90Entry::F16, width, how.split.is_some())
                );
                let same = got.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what}: not the unsplit 128-column bits");
            }
        }
    }
}

#[test]
fn f16_rows_are_the_same_split_in_a_short_batch_or_unsplit_in_a_long_one() {
    let mut r = rng(73);
    let (n, k) = (136, 1024);
    let dev = sm90(AsyncMode::Random(3));
    let long = 260; // 3 row strips x 2 column tiles: unsplit by the planner's rule too
    let (a, w) = (rand_f16(&mut r, long * k, 1.0), rand_f16(&mut r, n * k, 1.0));
    let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, long * n, 1.0));
    let all = f16_gemm(&dev, &a, &w, &bias, &res, GemmShape { m: long, n, k }, 1, narrow());
    for (m, cols) in [(1, Sm90Cols::N128), (70, Sm90Cols::N192)] {
        let ws = split_workspace(&dev, m, n, k, false);
        let got = f16_gemm(&dev, &a[..m * k], &w, &bias, &res, GemmShape { m, n, k }, 1, split(&ws, None, cols));
        assert!(last_kernel(&dev, "short batch").ends_with("_sk"));
        let same = got.iter().zip(&all[..m * n]).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "M {m} split ({cols:?}) differs from the same rows of M {long} unsplit");
    }
}

/// The forward pass's launch: the plan's split, dropped for a chosen cluster entry, and never
/// added where the plan does not split (BERT-base's QKV at 4096 tokens, K 768 in 3 chunks: a
/// workspace passed there would split it, beyond the workspace sized for the planned splits).
#[test]
fn the_planned_launch_splits_only_where_the_plan_does() {
    let dev = sm90(AsyncMode::Lazy);
    let ws = split_workspace(&dev, 128, 768, 768, false);
    for (m, n, k, int8) in
        [(128, 768, 768, false), (829, 1152, 384, false), (4096, 2304, 768, false), (128, 3072, 768, true)]
    {
        let splits = gemm_sm90::plan(m, n, k, int8).splits;
        assert!(gemm_sm90::k_chunks(k, int8) > 1, "{m} x {n} x {k}: K of several chunks");
        for cluster in [false, true] {
            let how = GemmSm90Launch::planned_or_cluster(m, n, k, int8, &ws, cluster);
            let want = splits > 1 && !cluster;
            assert_eq!(how.split.is_some(), want, "{m} x {n} x {k} (plan: {splits} splits), cluster {cluster}");
            assert_eq!(how.cols, GemmSm90Launch::planned(m, n, k, int8, &ws).cols);
        }
    }
}

#[test]
fn a_short_batch_moves_partials_and_computes_only_for_the_warps_with_live_rows() {
    // a split tile's partial sums travel per consumer warp of 16 rows: at M 20 two of the
    // tile's 8 warps hold a row below M, at M 128 all 8; the rest hold zeros and move nothing
    let mut r = rng(76);
    let (n, k) = (128, 1024); // one column tile, 4 chunks
    let dev = sm90(AsyncMode::Random(5));
    let (a, w) = (rand_f16(&mut r, 128 * k, 1.0), rand_f16(&mut r, n * k, 1.0));
    let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, 128 * n, 1.0));
    for (m, warps) in [(20, 2), (128, 8)] {
        let s = GemmShape { m, n, k };
        let whole = f16_gemm(&dev, &a[..m * k], &w, &bias, &res, s, 1, narrow());
        let (_, unsplit) = last_launch(&dev, "unsplit");
        let ws = split_workspace(&dev, m, n, k, false);
        let got = f16_gemm(&dev, &a[..m * k], &w, &bias, &res, s, 1, split(&ws, None, Sm90Cols::N128));
        let (kernel, split) = last_launch(&dev, "split");
        assert_eq!(kernel, gemm_sm90::KERNEL_SK);
        assert!(got.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()), "M {m}: not the unsplit bits");
        assert_eq!(gemm_sm90::split_live_rows(m), warps * gemm_sm90::WARP_ROWS);
        // every chunk stores its live warps' fragments; the tile's last CTA reads all 4 back
        let partials = (4 * warps * gemm_sm90::WARP_ROWS * n * 4) as u64;
        assert_eq!(split.global_store_bytes - unsplit.global_store_bytes, partials, "M {m}: partial stores");
        assert_eq!(split.global_load_bytes - unsplit.global_load_bytes, partials, "M {m}: partial loads");
        // wgmmas only for the consumer warpgroups with a row below M: 64 rows at M 20, split or not
        let macs = (gemm_sm90::computed_rows(m) * n * k) as u64;
        assert_eq!(gemm_sm90::computed_rows(m), if m <= 64 { 64 } else { 128 });
        assert_eq!((unsplit.tensor_macs, split.tensor_macs), (macs, macs), "M {m}: tensor work");
    }
}

#[test]
fn int8_split_equals_unsplit_with_zero_points_and_residual() {
    let mut r = rng(74);
    let (m, n, k) = (70, 144, 1040);
    let dev = sm90(AsyncMode::Lazy);
    let a: Vec<i8> = (0..m * k).map(|_| r.gen_range(-128..=127)).collect();
    let w = rand_i8(&mut r, n * k);
    let w_sum = fusebert_kernels::weight_sums(&w, n, k);
    let zero: Vec<i32> = (0..m).map(|_| r.gen_range(-128..=127)).collect();
    let asc: Vec<f32> = (0..m).map(|_| r.gen_range(0.0005f32..0.003)).collect();
    let wsc: Vec<f32> = (0..n).map(|_| r.gen_range(0.0002f32..0.001)).collect();
    let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
    let (da, dw, dsum, dz) =
        (dev.upload(&a).unwrap(), dev.upload(&w).unwrap(), dev.upload(&w_sum).unwrap(), dev.upload(&zero).unwrap());
    let (das, dws, db, dr) =
        (dev.upload(&asc).unwrap(), dev.upload(&wsc).unwrap(), dev.upload(&bias).unwrap(), dev.upload(&res).unwrap());
    let g = GemmInt8 {
        a: &da,
        a_scale: &das,
        zero_point: Some(ZeroPoint { zero: &dz, w_sum: &dsum }),
        w: &dw,
        w_scale: &dws,
        bias: Some(&db),
        epilogue: Epilogue::Residual(&dr),
        shape: GemmShape { m, n, k },
    };
    let run = |how: GemmSm90Launch<'_>| {
        let mut c = poisoned::<f16>(&dev, m * n);
        clear(&dev);
        fusebert_kernels::gemm_int8_sm90(&dev, &g, &mut c, how).unwrap();
        (bits(&c), last_kernel(&dev, "gemm_int8_sm90"))
    };
    let (whole, kernel) = run(narrow());
    assert_eq!(kernel, gemm_sm90::KERNEL_INT8);
    let ws = split_workspace(&dev, m, n, k, true);
    for (cols, width) in WIDTHS {
        for how in [GemmSm90Launch { cols, ..Default::default() }, split(&ws, Some(2), cols)] {
            let (got, kernel) = run(how);
            assert_eq!(kernel, gemm_sm90::kernel_name(gemm_sm90::Sm90Entry::Int8, width, how.split.is_some()));
            assert!(got.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()), "int8 {how:?} differs");
        }
    }
    // K of one chunk: a split launch runs the unsplit entry (nothing to split)
    let g1 = GemmInt8 { shape: GemmShape { m, n, k: 384 }, ..g };
    let mut c = poisoned::<f16>(&dev, m * n);
    fusebert_kernels::gemm_int8_sm90(&dev, &g1, &mut c, split(&ws, None, Sm90Cols::N128)).unwrap();
    assert_eq!(last_kernel(&dev, "one chunk"), gemm_sm90::KERNEL_INT8);
}

#[test]
fn split_with_fused_layernorm_equals_unsplit_bit_for_bit() {
    let mut r = rng(75);
    let (m, n, k) = (130, 264, 1024);
    let dev = sm90(AsyncMode::Random(9));
    let (a, w) = (rand_f16(&mut r, m * k, 1.0), rand_f16(&mut r, n * k, 1.0));
    let (bias, res) = (rand_f16(&mut r, n, 1.0), rand_f16(&mut r, m * n, 1.0));
    let gamma: Vec<f16> = rand_f16(&mut r, n, 0.5).iter().map(|g| f16::from_f32(1.0 + g.to_f32())).collect();
    let beta = rand_f16(&mut r, n, 0.5);
    let up = |v: &[f16]| dev.upload(v).unwrap();
    let (da, dw, db, dr, dg, dbe) = (up(&a), up(&w), up(&bias), up(&res), up(&gamma), up(&beta));
    let g =
        GemmF16 { a: &da, w: &dw, bias: Some(&db), epilogue: Epilogue::Residual(&dr), shape: GemmShape { m, n, k } };
    let ws = split_workspace(&dev, m, n, k, false);
    let run = |how: GemmSm90Launch<'_>| {
        // the strip tail, which stores y too (tests/gemm_sm90_cln.rs: the cluster entries)
        let how = GemmSm90Launch { layernorm: gemm_sm90::Sm90Layernorm::Strip, ..how };
        let mut y = poisoned::<f16>(&dev, m * n);
        let x = poisoned::<f16>(&dev, m * n);
        let q = poisoned::<i8>(&dev, m * n);
        let qs = poisoned::<f32>(&dev, m);
        let ln = FusedLayerNorm {
            gamma: &dg,
            beta: &dbe,
            out: &x,
            q8: Some(FusedQ8 { q: &q, scale: &qs, smooth: None }),
            eps: 1e-12,
        };
        clear(&dev);
        fusebert_kernels::gemm_f16_sm90_ln(&dev, &g, &mut y, &ln, &ws, how).unwrap();
        let kernel = last_kernel(&dev, "gemm_f16_sm90_ln");
        let f = |v: Vec<f16>| v.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
        (f(bits(&y)), f(bits(&x)), bits(&q), bits(&qs).iter().map(|s| s.to_bits()).collect::<Vec<u32>>(), kernel)
    };
    let whole = run(narrow());
    assert_eq!(whole.4, gemm_sm90::KERNEL_LN);
    let wide = GemmSm90Launch { cols: Sm90Cols::N192, ..Default::default() };
    for how in
        [split(&ws, Some(5), Sm90Cols::N128), split(&ws, None, Sm90Cols::N128), wide, split(&ws, None, Sm90Cols::N192)]
    {
        let got = run(how);
        let width = if how.cols == Sm90Cols::N192 { 192 } else { 128 };
        assert_eq!(got.4, gemm_sm90::kernel_name(gemm_sm90::Sm90Entry::F16Ln, width, how.split.is_some()));
        assert!(got.0 == whole.0 && got.1 == whole.1, "GEMM or layernorm output differs: {how:?}");
        assert!(got.2 == whole.2 && got.3 == whole.3, "int8 codes or scales differ: {how:?}");
    }
}

#[test]
fn a_split_workspace_too_small_is_a_typed_error() {
    let dev = sm90(AsyncMode::Lazy);
    let (m, n, k) = (70, 136, 1024);
    let mut r = rng(76);
    let (da, dw) = (dev.upload(&rand_i8(&mut r, m * k)).unwrap(), dev.upload(&rand_i8(&mut r, n * k)).unwrap());
    let (words, counters) = gemm_sm90::split_needs(m, n, 128, gemm_sm90::k_chunks(k, true));
    for (w, c) in [(words - 1, counters), (words, counters - 1)] {
        let ws = SplitWorkspace::new(&dev, w, c, m).unwrap();
        let mut out = poisoned::<i32>(&dev, m * n);
        let how = split(&ws, None, Sm90Cols::N128);
        let e = fusebert_kernels::gemm_int8_i32_sm90(&dev, &da, &dw, &mut out, GemmShape { m, n, k }, how);
        assert_kernel_err(e, gemm_sm90::KERNEL_INT8_I32);
    }
}
