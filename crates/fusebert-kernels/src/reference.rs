//! Plain f32 CPU references of every kernel (inputs are the exact fp16/int8 values the kernels
//! read). Tests and the report compare device results against these.
use half::f16;

use crate::codes;

use super::Pooling;
use fusebert_core::numerics::pooling;

fn f(x: &[f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// A layernorm's parameters on the host.
#[derive(Clone, Copy)]
pub struct LayerNormParams<'a> {
    pub gamma: &'a [f16],
    pub beta: &'a [f16],
    pub eps: f32,
}

/// `LN(x + residual + bias) * gamma + beta` per row, f32 (two-pass statistics in f64).
pub fn layernorm(
    x: &[f16],
    residual: Option<&[f16]>,
    bias: Option<&[f16]>,
    p: LayerNormParams<'_>,
    rows: usize,
    hidden: usize,
) -> Vec<f32> {
    let LayerNormParams { gamma, beta, eps } = p;
    let mut out = vec![0f32; rows * hidden];
    for r in 0..rows {
        let v: Vec<f64> = (0..hidden)
            .map(|i| {
                let mut s = x[r * hidden + i].to_f32() as f64;
                if let Some(res) = residual {
                    s += res[r * hidden + i].to_f32() as f64;
                }
                if let Some(b) = bias {
                    s += b[i].to_f32() as f64;
                }
                s
            })
            .collect();
        let mean = v.iter().sum::<f64>() / hidden as f64;
        let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / hidden as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for i in 0..hidden {
            out[r * hidden + i] = ((v[i] - mean) * rstd * gamma[i].to_f32() as f64 + beta[i].to_f32() as f64) as f32;
        }
    }
    out
}

/// The kernels' per-row int8 rule on already-fp16 values: `(codes, scales)`; exact f32 ops.
pub fn quantize(x: &[f16], rows: usize, hidden: usize) -> (Vec<i8>, Vec<f32>) {
    quantize_smoothed(x, None, rows, hidden)
}

/// [`quantize`] of `x[r, j] * smooth[j]` (one f32 product, as the kernels compute it).
pub fn quantize_smoothed(x: &[f16], smooth: Option<&[f16]>, rows: usize, hidden: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; rows * hidden];
    let mut s = vec![0f32; rows];
    let m = |i: usize| smooth.map_or(1.0, |m| m[i].to_f32());
    for r in 0..rows {
        let row: Vec<f32> =
            x[r * hidden..(r + 1) * hidden].iter().enumerate().map(|(i, v)| v.to_f32() * m(i)).collect();
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if amax > 0.0 { 127.0f32 / amax } else { 0.0 };
        for (i, v) in row.iter().enumerate() {
            q[r * hidden + i] = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        s[r] = amax / 127.0;
    }
    (q, s)
}

/// The kernels' asymmetric per-row rule (`quantize_i8_asym`) on `x[r, j] * smooth[j]`:
/// `(codes, scales, zero points)`, exact f32 ops in the kernel's order.
pub fn quantize_asym(x: &[f16], smooth: Option<&[f16]>, rows: usize, hidden: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let m = |i: usize| smooth.map_or(1.0, |m| m[i].to_f32());
    let (mut q, mut s, mut z) = (Vec::with_capacity(rows * hidden), Vec::with_capacity(rows), Vec::with_capacity(rows));
    for r in 0..rows {
        let row: Vec<f32> =
            x[r * hidden..(r + 1) * hidden].iter().enumerate().map(|(i, v)| v.to_f32() * m(i)).collect();
        let (scale, zero, codes) = fusebert_core::numerics::int8::quantize_row_asym(&row);
        q.extend(codes);
        s.push(scale);
        z.push(zero);
    }
    (q, s, z)
}

/// Exact int32 `A[m,k] . W[n,k]^T`.
pub fn gemm_i32(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let (ar, wr) = (&a[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            c[i * n + j] = ar.iter().zip(wr).map(|(&x, &y)| x as i32 * y as i32).sum();
        }
    }
    c
}

/// `A[m,k] . W[n,k]^T` in f64 accumulation, returned as f32.
pub fn gemm_f32(a: &[f16], w: &[f16], m: usize, n: usize, k: usize) -> Vec<f32> {
    let (a, w) = (f(a), f(w));
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let (ar, wr) = (&a[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            c[i * n + j] = ar.iter().zip(wr).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32;
        }
    }
    c
}

/// The GEMM epilogue of the kernels (after + bias), by its code (`kernels/codes.cuh`,
/// [`crate::codes`]).
pub fn epilogue(acc: &[f32], bias: Option<&[f16]>, epi: u32, residual: Option<&[f16]>, n: usize) -> Vec<f32> {
    acc.iter()
        .enumerate()
        .map(|(idx, &v)| {
            let mut v = v + bias.map_or(0.0, |b| b[idx % n].to_f32());
            match epi {
                codes::EPI_GELU => v = gelu(v),
                codes::EPI_RESIDUAL => v += residual.expect("residual epilogue needs a residual")[idx].to_f32(),
                codes::EPI_TANH => v = v.tanh(),
                codes::EPI_GELU_TANH => v = fusebert_core::numerics::activation::gelu_tanh(v),
                codes::EPI_RELU => v = v.max(0.0),
                codes::EPI_SILU => v = fusebert_core::numerics::activation::silu(v),
                _ => {}
            }
            v
        })
        .collect()
}

/// Dequantised int8 GEMM before the epilogue: `acc * a_scale[m] * w_scale[n]` (same f32 ops
/// as the kernel).
pub fn dequant(acc: &[i32], a_scale: &[f32], w_scale: &[f32], n: usize) -> Vec<f32> {
    acc.iter().enumerate().map(|(i, &c)| c as f32 * a_scale[i / n] * w_scale[i % n]).collect()
}

/// [`dequant`] of asymmetric activations: `(acc - zero[m] * w_sum[n]) * a_scale[m] * w_scale[n]`.
pub fn dequant_asym(acc: &[i32], zero: &[i32], w_sum: &[i32], a_scale: &[f32], w_scale: &[f32], n: usize) -> Vec<f32> {
    let acc: Vec<i32> = acc.iter().enumerate().map(|(i, &c)| c - zero[i / n] * w_sum[i % n]).collect();
    dequant(&acc, a_scale, w_scale, n)
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, in f64 (erf from `numerics::erf`, the reference's).
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + fusebert_core::numerics::erf::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Attention over packed sequences, f64 softmax; `qkv` `[T, 3H]`, returns `[T, H]`.
pub fn attention(qkv: &[f16], cu_seqlens: &[u32], heads: usize, d: usize, scale: f32) -> Vec<f32> {
    let h = heads * d;
    let t = *cu_seqlens.last().unwrap() as usize;
    let x = f(qkv);
    let mut out = vec![0f32; t * h];
    for w in cu_seqlens.windows(2) {
        let (s0, s1) = (w[0] as usize, w[1] as usize);
        for hd in 0..heads {
            for qi in s0..s1 {
                let q = &x[qi * 3 * h + hd * d..][..d];
                let sc: Vec<f64> = (s0..s1)
                    .map(|ki| {
                        let k = &x[ki * 3 * h + h + hd * d..][..d];
                        q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let l: f64 = p.iter().sum();
                for c in 0..d {
                    let mut acc = 0f64;
                    for (j, ki) in (s0..s1).enumerate() {
                        acc += p[j] * x[ki * 3 * h + 2 * h + hd * d + c] as f64;
                    }
                    out[qi * h + hd * d + c] = (acc / l) as f32;
                }
            }
        }
    }
    out
}

/// Pooling per sequence, optional L2 norm, f32 `[batch, hidden]`: the model layer's
/// definition ([`numerics::pooling::pool`](fusebert_core::numerics::pooling::pool), f64 sums: the first
/// `skip` tokens masked in the mean/max modes, divisors clamped at 1e-9, max of nothing = -1e9)
/// on each sequence; an empty sequence gives zeros (the kernel's contract).
pub fn pool(x: &[f16], cu_seqlens: &[u32], hidden: usize, mode: Pooling, skip: usize, l2norm: bool) -> Vec<f32> {
    let mut out = Vec::new();
    for w in cu_seqlens.windows(2) {
        let rows = f(&x[w[0] as usize * hidden..w[1] as usize * hidden]);
        let mut v = if rows.is_empty() { vec![0.0; hidden] } else { pooling::pool(&rows, hidden, mode, skip) };
        if l2norm {
            pooling::l2_normalize(&mut v);
        }
        out.extend(v);
    }
    out
}

/// Embedding sum + layernorm (the three fp16 rows are summed without intermediate rounding).
/// `pos_ids` are the table rows (any position offset already added); `typ: None` adds nothing
/// (models without token types).
/// The embedding tables on the host (`typ: None`: no token-type table).
#[derive(Clone, Copy)]
pub struct EmbeddingTablesRef<'a> {
    pub word: &'a [f16],
    pub pos: &'a [f16],
    pub typ: Option<&'a [f16]>,
    pub ln: LayerNormParams<'a>,
}

pub fn embedding_layernorm(
    [ids, pos_ids, type_ids]: [&[u32]; 3],
    tables: EmbeddingTablesRef<'_>,
    hidden: usize,
) -> Vec<f32> {
    let EmbeddingTablesRef { word, pos, typ, ln: LayerNormParams { gamma, beta, eps } } = tables;
    let mut out = Vec::with_capacity(ids.len() * hidden);
    for i in 0..ids.len() {
        let row: Vec<f64> = (0..hidden)
            .map(|c| {
                word[ids[i] as usize * hidden + c].to_f32() as f64
                    + pos[pos_ids[i] as usize * hidden + c].to_f32() as f64
                    + typ.map_or(0.0, |y| y[type_ids[i] as usize * hidden + c].to_f32() as f64)
            })
            .collect();
        let mean = row.iter().sum::<f64>() / hidden as f64;
        let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / hidden as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        out.extend(
            (0..hidden).map(|c| ((row[c] - mean) * rstd * gamma[c].to_f32() as f64 + beta[c].to_f32() as f64) as f32),
        );
    }
    out
}
