//! The fused layernorm of the Hopper residual GEMMs three ways, on the emulator at sm_90: the
//! cluster entries (`gemm_*_sm90_n192_cln2`, `_cln3`, `_n192_cln4`, `_cln8`: a cluster of CTAs per
//! 128-row strip, the row statistics exchanged through distributed shared memory), the serial
//! strip tail (`_ln`) and the split strip tail (`_sk_ln`) give the same bits (ln_out, int8 codes
//! and scales, with and without smoothing): one reduction order for the family
//! (`kernels/ln_blocked.cuh`). M 1, 70, 130, 300 (one, two, three partial strips); N 200 (a
//! partial 64-column block, CS 2), 384 (CS 3 of 128 columns), 264 (CS 3, the last rank's tile 8
//! columns), 520 (CS 4, one rank idle), 768 (CS 4), 1000 (CS 8, a partial 128-column tile); grids of one cluster (walking every strip) and of one cluster
//! per strip; lazy, eager and random async completion; outputs poisoned. Each ln_out is checked
//! against an f64 layernorm of the f64 GEMM: within one fp16 rounding of the output plus the
//! fp16 rounding of y (what the kernel normalises) carried through the normalisation (into the
//! element, its row's mean and rstd), doubled: |err| <= 2^-10 (|want| + rstd |gamma| (|y| +
//! mean |y|) + |want - beta|) + 1e-6. Rows of a smaller M are the same bits as the first rows of
//! M 300 (batch invariance).
mod kernels_util;
use fusebert_kernels::device::emulator::AsyncMode;
use fusebert_kernels::gemm_plan::SplitWorkspace;
use fusebert_kernels::gemm_sm90::{self, GemmSm90Launch, Sm90Layernorm};
use fusebert_kernels::{Device, Epilogue, FusedLayerNorm, FusedQ8, GemmShape};
use half::f16;
use kernels_util::hopper::*;
use kernels_util::*;
use rand::Rng;

const EPS: f32 = 1e-12;
const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(23)];

/// The last launch's kernel and CTAs, its counters checked: no local memory, no bank conflicts.
fn last_kernel(dev: &Device) -> (String, u32, u64) {
    let e = dev.emulator_backend().expect("emulator");
    let l = e.launches().last().expect("a launch").clone();
    assert_no_local(&l.counters, &l.kernel);
    assert_eq!(l.counters.shared_bank_conflicts, 0, "{}: bank conflicts", l.kernel);
    (l.kernel, l.grid.0, l.counters.dsmem_bytes)
}

/// The operands of one N: gamma around 1, beta around 0, smoothing around 1, bias and the
/// residual of M 300 rows.
struct Params {
    gamma: Vec<f16>,
    beta: Vec<f16>,
    smooth: Vec<f16>,
    bias: Vec<f16>,
    res: Vec<f16>,
}

fn params(r: &mut rand_chacha::ChaCha8Rng, n: usize, m: usize) -> Params {
    Params {
        gamma: rand_around_one(r, n, 0.5),
        beta: rand_f16(r, n, 0.5),
        smooth: rand_around_one(r, n, 0.4),
        bias: rand_f16(r, n, 1.0),
        res: rand_f16(r, m * n, 1.0),
    }
}

/// f64 layernorm of rows `y` (`[m, n]`): the outputs and each row's rstd.
fn layernorm_f64(y: &[f64], g: &[f16], b: &[f16], m: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; m * n];
    let mut rstds = vec![0.0; m];
    for i in 0..m {
        let row = &y[i * n..(i + 1) * n];
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + EPS as f64).sqrt();
        rstds[i] = rstd;
        for j in 0..n {
            out[i * n + j] = (row[j] - mean) * rstd * g[j].to_f64() + b[j].to_f64();
        }
    }
    (out, rstds)
}

/// Checks ln_out against the f64 layernorm of the f64 GEMM output `y`; the max |err|.
fn check_vs_f64(what: &str, got: &[f16], y: &[f64], p: &Params, m: usize, n: usize) -> f64 {
    let (want, rstd) = layernorm_f64(y, &p.gamma, &p.beta, m, n);
    // each row's mean |y|: the most the fp16 rounding of y moves its mean
    let mean_abs: Vec<f64> =
        (0..m).map(|i| y[i * n..(i + 1) * n].iter().map(|v| v.abs()).sum::<f64>() / n as f64).collect();
    let mut max = 0f64;
    for i in 0..m * n {
        let (row, col) = (i / n, i % n);
        let (g, b) = (p.gamma[col].to_f64(), p.beta[col].to_f64());
        // fp16 rounding of the output, of y and of the mean it shifts by, and of rstd (relative)
        let tol = 2.0 * (want[i].abs() + rstd[row] * g.abs() * (y[i].abs() + mean_abs[row]) + (want[i] - b).abs())
            / 2048.0
            + 1e-6;
        let err = (got[i].to_f64() - want[i]).abs();
        assert!(err <= tol, "{what}: element ({row}, {col}): got {}, want {}, |err| {err} > {tol}", got[i], want[i]);
        max = max.max(err);
    }
    max
}

/// One layernorm launch's outputs: ln_out, and with codes the codes and scales.
struct LnOut {
    x: Vec<f16>,
    q: Option<(Vec<i8>, Vec<u32>)>,
}

/// The three ways: the cluster entries on a grid of `cluster_ctas` CTAs (None: one cluster per
/// strip up to 128 CTAs), the strip tail, the split strip tail.
#[derive(Debug, Clone, Copy)]
enum Way {
    Cluster(Option<u32>),
    Strip,
    Split,
}

/// The layernorm of the residual GEMM `m x n x k` (fp16 operands `a`, `w`, or int8 when
/// `int8`), run `way`, with codes when `codes` (`smooth`: with smoothing).
#[allow(clippy::too_many_arguments)]
fn run(
    dev: &Device,
    int8: bool,
    ops: &Operands,
    p: &Params,
    m: usize,
    n: usize,
    k: usize,
    codes: Option<bool>,
    way: Way,
) -> LnOut {
    let up = |v: &[f16]| dev.upload(v).unwrap();
    let (dg, dbe, dsm, db) = (up(&p.gamma), up(&p.beta), up(&p.smooth), up(&p.bias));
    let dr = up(&p.res[..m * n]);
    let x = poisoned::<f16>(dev, m * n);
    let (q, s) = (poisoned::<i8>(dev, m * n), poisoned::<f32>(dev, m));
    let q8 = codes.map(|smooth| FusedQ8 { q: &q, scale: &s, smooth: smooth.then_some(&dsm) });
    let ln = FusedLayerNorm { gamma: &dg, beta: &dbe, out: &x, q8, eps: EPS };
    let ws = SplitWorkspace::new(dev, 1 << 22, 64, 300).unwrap();
    let how = match way {
        Way::Cluster(ctas) => GemmSm90Launch { ctas, layernorm: Sm90Layernorm::Cluster, ..Default::default() },
        Way::Strip => GemmSm90Launch { ctas: Some(3), layernorm: Sm90Layernorm::Strip, ..Default::default() },
        Way::Split => GemmSm90Launch { split: Some(&ws), layernorm: Sm90Layernorm::Strip, ..Default::default() },
    };
    let mut y = poisoned::<f16>(dev, m * n);
    clear(dev);
    if int8 {
        let (da, das, dw, dws) = (
            dev.upload(&ops.a8[..m * k]).unwrap(),
            dev.upload(&ops.a_scale[..m]).unwrap(),
            dev.upload(&ops.w8).unwrap(),
            dev.upload(&ops.w_scale).unwrap(),
        );
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
        fusebert_kernels::gemm_int8_sm90_ln(dev, &g, &mut y, &ln, &ws, how).unwrap();
    } else {
        let (da, dw) = (dev.upload(&ops.a[..m * k]).unwrap(), dev.upload(&ops.w).unwrap());
        let g = fusebert_kernels::GemmF16 {
            a: &da,
            w: &dw,
            bias: Some(&db),
            epilogue: Epilogue::Residual(&dr),
            shape: GemmShape { m, n, k },
        };
        fusebert_kernels::gemm_f16_sm90_ln(dev, &g, &mut y, &ln, &ws, how).unwrap();
    }
    let (kernel, ctas, dsmem) = last_kernel(dev);
    let kind = if int8 { "int8" } else { "f16" };
    match way {
        Way::Cluster(_) => {
            let cs = gemm_sm90::cluster_size(n).unwrap();
            assert_eq!(Some(kernel.as_str()), gemm_sm90::cluster_kernel_name(int8, cs), "{kind} N {n}");
            assert_eq!(ctas as usize % cs, 0, "{kernel}: {ctas} CTAs");
            assert!(dsmem > 0, "{kernel}: no distributed shared memory traffic");
            // y is never stored
            assert!(bits(&y).iter().all(|v| v.to_bits() == 0xFFFF), "{kernel} wrote out");
        }
        Way::Strip => assert!(kernel.ends_with("_ln") && !kernel.contains("_sk_"), "{kernel}"),
        Way::Split => assert!(kernel.ends_with("_sk_ln"), "{kernel}"),
    }
    LnOut { x: bits(&x), q: codes.map(|_| (bits(&q), f32_bits(&s))) }
}

/// Inputs for M up to 300: fp16 A and W, and int8 A, W and scales.
struct Operands {
    a: Vec<f16>,
    w: Vec<f16>,
    a8: Vec<i8>,
    w8: Vec<i8>,
    a_scale: Vec<f32>,
    w_scale: Vec<f32>,
}

fn operands(r: &mut rand_chacha::ChaCha8Rng, m: usize, n: usize, k: usize) -> Operands {
    Operands {
        a: rand_f16(r, m * k, 1.0),
        w: rand_f16(r, n * k, 1.0),
        a8: (0..m * k).map(|_| r.gen_range(-127..=127)).collect(),
        w8: rand_i8(r, n * k),
        a_scale: (0..m).map(|i| 0.002 + 0.0001 * (i % 7) as f32).collect(),
        w_scale: (0..n).map(|i| 0.0005 + 0.00003 * (i % 11) as f32).collect(),
    }
}

/// The f64 GEMM + bias + residual of the first `m` rows.
fn y_f64(int8: bool, ops: &Operands, p: &Params, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: f64 = if int8 {
                let s: i64 = (0..k).map(|l| ops.a8[i * k + l] as i64 * ops.w8[j * k + l] as i64).sum();
                s as f64 * ops.a_scale[i] as f64 * ops.w_scale[j] as f64
            } else {
                (0..k).map(|l| ops.a[i * k + l].to_f64() * ops.w[j * k + l].to_f64()).sum()
            };
            y[i * n + j] = acc + p.bias[j].to_f64() + p.res[i * n + j].to_f64();
        }
    }
    y
}

/// Every N with its M values, K of two chunks (the fp16 fold and the split both run), codes
/// with smoothing, without, or none.
fn check_family(int8: bool, seed: u64) {
    let k = if int8 { 640 } else { 320 };
    assert_eq!(gemm_sm90::k_chunks(k, int8), 2);
    let mut r = rng(seed);
    let cases: [(usize, &[usize]); 6] = [
        (200, &[1, 130, 300]),
        (384, &[70, 300]),
        (520, &[130, 300]),
        (768, &[1, 300]),
        (1000, &[70, 300]),
        (264, &[130]),
    ];
    let mut worst = 0f64;
    for (ci, &(n, ms)) in cases.iter().enumerate() {
        let m_max = *ms.iter().max().unwrap();
        let ops = operands(&mut r, m_max, n, k);
        let p = params(&mut r, n, m_max);
        let codes = [Some(true), Some(false), None][ci % 3];
        let mut full: Option<LnOut> = None;
        for (mi, &m) in ms.iter().rev().enumerate() {
            let dev = sm90(MODES[(ci + mi) % 3]);
            let what = format!("{} M {m} N {n} K {k} codes {codes:?}", if int8 { "int8" } else { "f16" });
            // one cluster walking every strip, and one per strip
            let c1 = run(&dev, int8, &ops, &p, m, n, k, codes, Way::Cluster(Some(1)));
            let c2 = run(&dev, int8, &ops, &p, m, n, k, codes, Way::Cluster(None));
            let strip = run(&dev, int8, &ops, &p, m, n, k, codes, Way::Strip);
            let split = run(&dev, int8, &ops, &p, m, n, k, codes, Way::Split);
            for (o, way) in [(&c2, "cluster per strip"), (&strip, "strip tail"), (&split, "split strip tail")] {
                assert!(o.x == c1.x, "{what}: {way} ln_out differs from one cluster's");
                assert!(o.q == c1.q, "{what}: {way} codes differ from one cluster's");
            }
            if let Some((q, s)) = &c1.q {
                let sm = (codes == Some(true)).then_some(&p.smooth[..]);
                let (wq, ws) = layernorm_q8_codes(&c1.x, sm, m, n);
                assert!(q == &wq && s == &ws, "{what}: codes are not those of ln_out");
            }
            let y = y_f64(int8, &ops, &p, m, n, k);
            let err = check_vs_f64(&what, &c1.x, &y, &p, m, n);
            eprintln!("{what}: max |err| vs f64 {err:.2e}");
            worst = worst.max(err);
            // batch invariance: M's rows are the first rows of the largest M
            match &full {
                None => full = Some(c1),
                Some(f) => {
                    assert!(c1.x[..] == f.x[..m * n], "{what}: ln_out differs from M {m_max}'s rows");
                    if let (Some((q, s)), Some((fq, fs))) = (&c1.q, &f.q) {
                        assert!(q[..] == fq[..m * n] && s[..] == fs[..m], "{what}: codes differ from M {m_max}'s");
                    }
                }
            }
        }
    }
    eprintln!("{}: worst max |err| vs f64 {worst:.2e}", if int8 { "int8" } else { "f16" });
}

#[test]
fn f16_cluster_strip_and_split_layernorms_agree_bit_for_bit() {
    check_family(false, 71);
}

#[test]
fn int8_cluster_strip_and_split_layernorms_agree_bit_for_bit() {
    check_family(true, 72);
}

/// The forward pass's choice ([`gemm_sm90::ln_cluster`]) and the names.
#[test]
fn cluster_choice_and_names() {
    assert_eq!(gemm_sm90::cluster_size(200), Some(2));
    assert_eq!(gemm_sm90::cluster_size(256), Some(2));
    assert_eq!(gemm_sm90::cluster_size(264), Some(3));
    assert_eq!(gemm_sm90::cluster_size(384), Some(3));
    assert_eq!(gemm_sm90::cluster_size(392), Some(4));
    assert_eq!(gemm_sm90::cluster_size(768), Some(4));
    assert_eq!(gemm_sm90::cluster_size(776), Some(8));
    assert_eq!(gemm_sm90::cluster_size(1024), Some(8));
    assert_eq!(gemm_sm90::cluster_size(1032), None);
    assert_eq!(gemm_sm90::cluster_kernel_name(false, 2), Some("gemm_f16_sm90_n192_cln2"));
    assert_eq!(gemm_sm90::cluster_kernel_name(true, 4), Some("gemm_int8_sm90_n192_cln4"));
    assert_eq!(gemm_sm90::cluster_kernel_name(false, 8), Some("gemm_f16_sm90_cln8"));
    assert_eq!(gemm_sm90::cluster_kernel_name(true, 3), Some("gemm_int8_sm90_cln3"));
    assert_eq!((gemm_sm90::cluster_cols(3), gemm_sm90::cluster_cols(2)), (128, 192));
    assert_eq!(gemm_sm90::cluster_kernel_name(true, 5), None);
    // whole clusters per GPC (8 GPCs of at least 16 SMs): the grid's cap
    let caps: Vec<usize> = [2, 3, 4, 8].iter().map(|&cs| gemm_sm90::max_clusters(cs)).collect();
    assert_eq!(caps, [64, 40, 32, 16]);
    // BERT-base: unsplit at 4096 tokens, split (strip tail) at 1 token with K 3072
    assert_eq!(gemm_sm90::ln_cluster(4096, 768, 3072, false), Some(4));
    assert_eq!(gemm_sm90::ln_cluster(4096, 1024, 4096, true), Some(8));
    for (m, n, k, int8) in [(16, 768, 3072, false), (16, 768, 768, true), (4096, 1536, 768, false)] {
        let want = if gemm_sm90::plan(m, n, k, int8).splits > 1 { None } else { gemm_sm90::cluster_size(n) };
        assert_eq!(gemm_sm90::ln_cluster(m, n, k, int8), want, "{m} x {n} x {k}");
    }
}

/// `Cluster` where the cluster entries do not apply is an error naming the entry.
#[test]
fn cluster_layernorm_refuses_split_launches_and_wide_rows() {
    let dev = sm90(AsyncMode::Lazy);
    let one = |n: usize| dev.upload(&vec![f16::ONE; n]).unwrap();
    let (m, k) = (70, 320);
    let ws = SplitWorkspace::new(&dev, 1 << 22, 64, 300).unwrap();
    for (n, split) in [(1040, false), (384, true)] {
        let (a, w, g) = (one(m * k), one(n * k), one(n));
        let x = dev.alloc::<f16>(m * n).unwrap();
        let mut y = dev.alloc::<f16>(m * n).unwrap();
        let ln = FusedLayerNorm { gamma: &g, beta: &g, out: &x, q8: None, eps: EPS };
        let gemm = fusebert_kernels::GemmF16 {
            a: &a,
            w: &w,
            bias: None,
            epilogue: Epilogue::None,
            shape: GemmShape { m, n, k },
        };
        let how =
            GemmSm90Launch { layernorm: Sm90Layernorm::Cluster, split: split.then_some(&ws), ..Default::default() };
        let err = fusebert_kernels::gemm_f16_sm90_ln(&dev, &gemm, &mut y, &ln, &ws, how).unwrap_err().to_string();
        assert!(err.contains("cluster layernorm") || err.contains("at most 1024"), "{err}");
    }
}
