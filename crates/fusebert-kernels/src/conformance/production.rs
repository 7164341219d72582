//! C16 (research note 2.3): fusebert's own shipped Hopper kernels (modules `gemm_sm90` and
//! `attention_sm90`) end to end at tiny shapes that are not multiples of their tiles, launched
//! through the crate's own launch API ([`crate::Device::cuda_modules`], the same primary context
//! as the rest of the kit), so that what runs on the GPU and on the stand-in is exactly what the
//! forward pass launches: host checks, tensor maps, grids and the kernels.
//!
//! Inputs come from a fixed LCG. References are computed here in f64 from the definitions, not
//! from the crate's reference module or the emulator:
//! - `gemm_int8_i32_sm90` (full-range s8 codes): the exact s32 products (`reference`).
//! - `gemm_int8_sm90` (fp16 out): small codes, zero points and power-of-two scales so that every
//!   output is an exactly representable fp16 (see [`int8_f16_inputs`]): exact too.
//! - `gemm_f16_sm90`, `gemm_f16_sm90_ln` and `attention_sm90_*`: the exact bits depend on how
//!   Hopper accumulates (C7, unknown until it runs on hardware), so the words are recorded and a
//!   property is checked instead: every output within a stated error bound of the f64 value.
use half::f16;

use fusebert_core::error::Result;

use crate::{Device, DeviceBuffer};

/// Which shipped GEMM entry a case launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmOp {
    /// `gemm_int8_i32_sm90`: the raw s32 accumulators.
    Int8I32,
    /// `gemm_int8_sm90`: zero points, scales, bias, fp16 out.
    Int8F16,
    /// `gemm_f16_sm90`: + bias, fp16 out.
    F16,
    /// `gemm_f16_sm90_ln`: + bias, fp16 out and its layernorm.
    F16Ln,
}

impl GemmOp {
    /// The module defining the op's entry.
    pub fn module(self) -> &'static str {
        match self {
            GemmOp::Int8I32 | GemmOp::Int8F16 => crate::gemm_sm90::MODULE_INT8,
            GemmOp::F16 | GemmOp::F16Ln => crate::gemm_sm90::MODULE,
        }
    }
}

/// A C16 GEMM case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmSpec {
    pub op: GemmOp,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// CTAs of the persistent grid (`None`: one per SM, at most one per tile).
    pub ctas: Option<u32>,
    /// LCG seed of the inputs.
    pub seed: u64,
}

/// A C16 attention case: packed sequences, `heads` heads of `head_dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnSpec {
    pub seqlens: [usize; 2],
    pub heads: usize,
    pub head_dim: usize,
    /// `Sm90Tiling::Packed` (else per sequence).
    pub packed: bool,
    pub seed: u64,
}

/// The layernorm epsilon of the `_ln` case (BERT's).
pub const LN_EPS: f32 = 1e-12;

/// A 64-bit LCG (Knuth's MMIX constants); the high bits are the output.
#[derive(Debug, Clone)]
pub struct Lcg(u64);
impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u32() % (hi - lo + 1) as u32) as i32
    }
    /// An fp16 in [-r, r): a uniform f32 rounded to fp16 (any mantissa bits).
    pub fn f16(&mut self, r: f32) -> f16 {
        f16::from_f32((self.next_u32() as f32 / 4294967296.0 * 2.0 - 1.0) * r)
    }
}

/// `gemm_int8_i32_sm90`'s inputs: `a [m, k]`, `w [n, k]`, full-range s8 codes.
pub fn int8_i32_inputs(s: &GemmSpec) -> (Vec<i8>, Vec<i8>) {
    let mut r = Lcg::new(s.seed);
    let a = (0..s.m * s.k).map(|_| r.int(-128, 127) as i8).collect();
    let w = (0..s.n * s.k).map(|_| r.int(-128, 127) as i8).collect();
    (a, w)
}

/// `gemm_int8_sm90`'s inputs, chosen so that every output is an exact fp16:
/// codes in [-2, 2], zero points in [-1, 1], `a_scale[m] = 2^-(m % 2)`, `w_scale[n] = 2^-(1 + n %
/// 2)`, bias a multiple of 1/8 in [-2, 2]. With K <= 80, x = acc - zero w_sum has |x| <= 4 K + 2
/// K = 480, and the output x 2^-e + bias (e in 1..=3) is a multiple of 1/8 below 2048/8 in
/// magnitude: 11 significant bits at most, an fp16 exactly (and every float step on the way,
/// in any order, is exact in f32). The unit tests check that bound.
pub struct Int8F16Inputs {
    pub a: Vec<i8>,
    pub w: Vec<i8>,
    pub zero: Vec<i32>,
    pub w_sum: Vec<i32>,
    pub a_scale: Vec<f32>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<f16>,
}

pub fn int8_f16_inputs(s: &GemmSpec) -> Int8F16Inputs {
    let mut r = Lcg::new(s.seed);
    let a = (0..s.m * s.k).map(|_| r.int(-2, 2) as i8).collect();
    let w: Vec<i8> = (0..s.n * s.k).map(|_| r.int(-2, 2) as i8).collect();
    let zero = (0..s.m).map(|_| r.int(-1, 1)).collect();
    let w_sum = w.chunks_exact(s.k).map(|row| row.iter().map(|&c| c as i32).sum()).collect();
    let a_scale = (0..s.m).map(|m| if m % 2 == 0 { 1.0 } else { 0.5 }).collect();
    let w_scale = (0..s.n).map(|n| if n % 2 == 0 { 0.5 } else { 0.25 }).collect();
    let bias = (0..s.n).map(|_| f16::from_f32(r.int(-16, 16) as f32 / 8.0)).collect();
    Int8F16Inputs { a, w, zero, w_sum, a_scale, w_scale, bias }
}

/// The fp16 GEMMs' inputs: `a [m, k]`, `w [n, k]`, `bias [n]` with general fp16 values in
/// [-1, 1), and (for `_ln`) gamma in [0.5, 1.5), beta in [-0.5, 0.5).
pub struct F16Inputs {
    pub a: Vec<f16>,
    pub w: Vec<f16>,
    pub bias: Vec<f16>,
    pub gamma: Vec<f16>,
    pub beta: Vec<f16>,
}

pub fn f16_inputs(s: &GemmSpec) -> F16Inputs {
    let mut r = Lcg::new(s.seed);
    let a = (0..s.m * s.k).map(|_| r.f16(1.0)).collect();
    let w = (0..s.n * s.k).map(|_| r.f16(1.0)).collect();
    let bias = (0..s.n).map(|_| r.f16(1.0)).collect();
    let gamma = (0..s.n).map(|_| f16::from_f32(1.0 + r.f16(0.5).to_f32())).collect();
    let beta = (0..s.n).map(|_| r.f16(0.5)).collect();
    F16Inputs { a, w, bias, gamma, beta }
}

/// Attention inputs: `qkv [T, 3H]` general fp16 in [-1, 1), `cu_seqlens`.
pub fn attn_inputs(s: &AttnSpec) -> (Vec<f16>, Vec<u32>) {
    let t = s.seqlens[0] + s.seqlens[1];
    let mut r = Lcg::new(s.seed);
    let qkv = (0..t * 3 * s.heads * s.head_dim).map(|_| r.f16(1.0)).collect();
    (qkv, vec![0, s.seqlens[0] as u32, t as u32])
}

/// Number of 32-bit words a C16 GEMM case writes: s32 outputs, or fp16 pairs (the `_ln` case:
/// the GEMM output, then its layernorm).
pub fn gemm_words(s: &GemmSpec) -> usize {
    match s.op {
        GemmOp::Int8I32 => s.m * s.n,
        GemmOp::Int8F16 | GemmOp::F16 => s.m * s.n / 2,
        GemmOp::F16Ln => s.m * s.n,
    }
}

pub fn attn_words(s: &AttnSpec) -> usize {
    (s.seqlens[0] + s.seqlens[1]) * s.heads * s.head_dim / 2
}

/// fp16 values as little-endian pairs in u32 words (element 2i low, 2i + 1 high).
pub fn pack_f16(v: &[f16]) -> Vec<u32> {
    v.chunks(2).map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |h| h.to_bits() as u32) << 16)).collect()
}

/// The fp16 elements of words written by [`pack_f16`].
pub fn unpack_f16(w: &[u32]) -> Vec<f16> {
    w.iter().flat_map(|&x| [f16::from_bits(x as u16), f16::from_bits((x >> 16) as u16)]).collect()
}

/// `a [m, k] . w [n, k]^T` in i64 (exact).
fn matmul_i64(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i64> {
    let mut out = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|x| a[i * k + x] as i64 * w[j * k + x] as i64).sum();
        }
    }
    out
}

/// The exact words of the int8 cases (`None` for the others).
pub fn gemm_reference(s: &GemmSpec) -> Option<Vec<u32>> {
    match s.op {
        GemmOp::Int8I32 => {
            let (a, w) = int8_i32_inputs(s);
            Some(matmul_i64(&a, &w, s.m, s.n, s.k).iter().map(|&v| v as i32 as u32).collect())
        }
        GemmOp::Int8F16 => Some(pack_f16(&int8_f16_values(s).iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>())),
        GemmOp::F16 | GemmOp::F16Ln => None,
    }
}

/// `gemm_int8_sm90`'s outputs in f64 (exact: fp16 values, see [`int8_f16_inputs`]).
pub fn int8_f16_values(s: &GemmSpec) -> Vec<f64> {
    let p = int8_f16_inputs(s);
    let acc = matmul_i64(&p.a, &p.w, s.m, s.n, s.k);
    let mut out = vec![0f64; s.m * s.n];
    for i in 0..s.m {
        for j in 0..s.n {
            let x = acc[i * s.n + j] - p.zero[i] as i64 * p.w_sum[j] as i64;
            out[i * s.n + j] = x as f64 * p.a_scale[i] as f64 * p.w_scale[j] as f64 + p.bias[j].to_f64();
        }
    }
    out
}

/// One fp16 ulp at magnitude `x` (2^-24 among the subnormals).
pub fn ulp16(x: f64) -> f64 {
    let x = x.abs();
    if x < 2f64.powi(-14) {
        2f64.powi(-24)
    } else {
        2f64.powi(x.log2().floor() as i32 - 10)
    }
}

/// The fp16 GEMM in f64 and its error bound per output: `(exact, bound)`. `y = sum_k a w + bias`
/// summed in f32 (wgmma, any order, with or without rounding to nearest inside: at most K + 1
/// additions each off by 2^-23 of the running magnitude, bounded by sum |a w| + |bias|), then one
/// fp16 rounding (half an ulp of the result, taken at the bound's upper end):
/// `bound = acc + ulp16(|y| + acc) / 2`, `acc = (K + 1) 2^-23 (sum_k |a w| + |bias|)`.
pub fn f16_gemm_bounds(a: &[f16], w: &[f16], bias: &[f16], m: usize, n: usize, k: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut y, mut mag) = (bias[j].to_f64(), bias[j].to_f64().abs());
            for x in 0..k {
                let p = a[i * k + x].to_f64() * w[j * k + x].to_f64();
                y += p;
                mag += p.abs();
            }
            let acc = (k + 1) as f64 * 2f64.powi(-23) * mag;
            out.push((y, acc + ulp16(y.abs() + acc) / 2.0));
        }
    }
    out
}

/// The layernorm of the kernel's own fp16 output rows `y [m, n]` in f64 and its bound:
/// `LN(y) gamma + beta`, then one fp16 rounding. The kernel's f32 statistics over n values and
/// the normalisation add at most (n + 8) 2^-23 relative to |x̂ gamma| (x̂ = (y - mean) / std),
/// plus 2^-23 |beta| for the last addition: `bound = e + ulp16(|z| + e) / 2`, `e = (n + 8) 2^-23
/// (|x̂ gamma| + 1) + 2^-23 |beta|`. (A few f32 ulps of a value of magnitude ~1 against half an
/// fp16 ulp: the bound is dominated by the final rounding.)
pub fn ln_bounds(y: &[f16], gamma: &[f16], beta: &[f16], m: usize, n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        let row: Vec<f64> = (0..n).map(|j| y[i * n + j].to_f64()).collect();
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + LN_EPS as f64).sqrt();
        for j in 0..n {
            let xg = (row[j] - mean) * rstd * gamma[j].to_f64();
            let z = xg + beta[j].to_f64();
            let e = (n + 8) as f64 * 2f64.powi(-23) * (xg.abs() + 1.0) + 2f64.powi(-23) * beta[j].to_f64().abs();
            out.push((z, e + ulp16(z.abs() + e) / 2.0));
        }
    }
    out
}

/// Attention in f64 and its bound per output `[T, H]`: `o = sum_j p_j v_j / sum_j p_j` over the
/// row's own sequence, `p_j = exp(s_j - max)`, `s = q.k / sqrt(D)`. The kernel rounds each p_j
/// to fp16 for the P V wgmma (relative 2^-11, or 2^-25 absolute among the subnormals) but sums
/// l in f32 from the unrounded p: the weights are each off by at most 2^-11 relative, so o is
/// off by at most 2^-11 E_p|v| + L 2^-25 max|v| / l (l >= 1: the max key weighs 1). S is
/// summed in f32 over D products (|δs| <= (D + 2) 2^-23 sum |q k| scale), ex2.approx adds 2^-22
/// relative and the f32 rescales, sums and the final 1/l a few 2^-24 each: together a relative
/// weight error η = 2^-11 + 2 |δs|max + 2^-19, doubled for the numerator and the denominator:
/// `bound = 2 η E_p|v| + L 2^-25 max|v| + ulp16(|o| + that) / 2`.
pub fn attn_bounds(s: &AttnSpec, qkv: &[f16], cu: &[u32]) -> Vec<(f64, f64)> {
    let (h, d) = (s.heads * s.head_dim, s.head_dim);
    let t = cu[cu.len() - 1] as usize;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![(0f64, 0f64); t * h];
    let at = |tok: usize, part: usize, head: usize, x: usize| qkv[tok * 3 * h + part * h + head * d + x].to_f64();
    for b in 0..cu.len() - 1 {
        let (lo, hi) = (cu[b] as usize, cu[b + 1] as usize);
        for head in 0..s.heads {
            for qt in lo..hi {
                let sc: Vec<f64> = (lo..hi)
                    .map(|kt| (0..d).map(|x| at(qt, 0, head, x) * at(kt, 1, head, x)).sum::<f64>() * scale)
                    .collect();
                let mag = (lo..hi)
                    .map(|kt| (0..d).map(|x| (at(qt, 0, head, x) * at(kt, 1, head, x)).abs()).sum::<f64>() * scale)
                    .fold(0f64, f64::max);
                let ds = (d + 2) as f64 * 2f64.powi(-23) * mag;
                let eta = 2f64.powi(-11) + 2.0 * ds + 2f64.powi(-19);
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = sc.iter().map(|v| (v - mx).exp()).collect();
                let l: f64 = p.iter().sum();
                for x in 0..d {
                    let v: Vec<f64> = (lo..hi).map(|kt| at(kt, 2, head, x)).collect();
                    let o = p.iter().zip(&v).map(|(p, v)| p * v).sum::<f64>() / l;
                    let ev = p.iter().zip(&v).map(|(p, v)| p * v.abs()).sum::<f64>() / l;
                    let vmax = v.iter().fold(0f64, |a, b| a.max(b.abs()));
                    let e = 2.0 * eta * ev + (hi - lo) as f64 * 2f64.powi(-25) * vmax;
                    out[qt * h + head * d + x] = (o, e + ulp16(o.abs() + e) / 2.0);
                }
            }
        }
    }
    out
}

/// The first element of `got` outside its `(exact, bound)`, described by `what`.
fn check_within(got: &[f16], want: &[(f64, f64)], what: impl Fn(usize) -> String) -> std::result::Result<(), String> {
    // NaN (a poisoned output never written) is outside every bound
    let within = |i: usize| (got[i].to_f64() - want[i].0).abs().partial_cmp(&want[i].1).is_some_and(|o| o.is_le());
    let bad: Vec<usize> = (0..want.len()).filter(|&i| !within(i)).collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{} of {} outputs outside the bound; first: {} = {} (bits {:#06x}), f64 {} +- {:.3e}",
            bad.len(),
            want.len(),
            what(i),
            got[i].to_f64(),
            got[i].to_bits(),
            want[i].0,
            want[i].1
        )),
    }
}

/// The property of the fp16 GEMM cases: every output within [`f16_gemm_bounds`] of the f64
/// value, and (`_ln`) every layernorm output within [`ln_bounds`] of the layernorm of the
/// kernel's own fp16 output.
pub fn gemm_property(s: &GemmSpec, words: &[u32]) -> Option<std::result::Result<(), String>> {
    if !matches!(s.op, GemmOp::F16 | GemmOp::F16Ln) {
        return None;
    }
    let (m, n) = (s.m, s.n);
    if words.len() != gemm_words(s) {
        return Some(Err(format!("{} words, want {}", words.len(), gemm_words(s))));
    }
    let p = f16_inputs(s);
    let all = unpack_f16(words);
    let y = &all[..m * n];
    Some((|| {
        check_within(y, &f16_gemm_bounds(&p.a, &p.w, &p.bias, m, n, s.k), |i| {
            format!("out(m {}, n {})", i / n, i % n)
        })?;
        if s.op == GemmOp::F16Ln {
            check_within(&all[m * n..], &ln_bounds(y, &p.gamma, &p.beta, m, n), |i| {
                format!("ln.out(m {}, n {})", i / n, i % n)
            })?;
        }
        Ok(())
    })())
}

/// The property of the attention cases: every output within [`attn_bounds`] of the f64 value.
pub fn attn_property(s: &AttnSpec, words: &[u32]) -> std::result::Result<(), String> {
    if words.len() != attn_words(s) {
        return Err(format!("{} words, want {}", words.len(), attn_words(s)));
    }
    let (qkv, cu) = attn_inputs(s);
    check_within(&unpack_f16(words), &attn_bounds(s, &qkv, &cu), |i| attn_element(s, i))
}

/// Output element `i` of an attention case: token, its sequence and position, head, dim.
fn attn_element(s: &AttnSpec, i: usize) -> String {
    let h = s.heads * s.head_dim;
    let (t, c) = (i / h, i % h);
    let (b, pos) = if t < s.seqlens[0] { (0, t) } else { (1, t - s.seqlens[0]) };
    format!("out(token {t} = sequence {b} position {pos}, head {}, dim {})", c / s.head_dim, c % s.head_dim)
}

/// What word `index` of a GEMM case is.
pub fn describe_gemm(s: &GemmSpec, index: usize) -> String {
    let n = s.n;
    match s.op {
        GemmOp::Int8I32 => format!("C(m {}, n {}) (s32)", index / n, index % n),
        _ => {
            let half = s.m * n / 2;
            let (what, e) = if index >= half { ("ln.out", 2 * (index - half)) } else { ("out", 2 * index) };
            format!("{what}(m {}, n {}..{}) (f16x2)", e / n, e % n, e % n + 1)
        }
    }
}

/// What word `index` of an attention case is.
pub fn describe_attn(s: &AttnSpec, index: usize) -> String {
    let e = attn_element(s, 2 * index);
    format!("{e} and the next dim (f16x2)")
}

/// Opens CUDA device 0 through the crate's launch API (the process's primary context, where the
/// kit's own launches run too) with only `module` loaded: the driver then JIT-compiles that PTX
/// alone, not every module's (seconds per process under `--isolate`, on a cold JIT cache).
pub fn open(module: &str) -> Result<Device> {
    Device::cuda_modules(0, &[module])
}

fn poisoned<T: bytemuck::Pod>(dev: &Device, len: usize) -> Result<DeviceBuffer<T>> {
    dev.alloc_filled(len, 0xff)
}

/// Runs a GEMM case through the crate's launch functions; its words.
pub fn run_gemm(dev: &Device, s: &GemmSpec) -> Result<Vec<u32>> {
    use crate::gemm_sm90::GemmSm90Launch;
    use crate::{Epilogue, GemmShape};
    let shape = GemmShape { m: s.m, n: s.n, k: s.k };
    let how = GemmSm90Launch { ctas: s.ctas, ..Default::default() };
    match s.op {
        GemmOp::Int8I32 => {
            let (a, w) = int8_i32_inputs(s);
            let (da, dw) = (dev.upload(&a)?, dev.upload(&w)?);
            let mut out = poisoned::<i32>(dev, s.m * s.n)?;
            crate::gemm_int8_i32_sm90(dev, &da, &dw, &mut out, shape, how)?;
            Ok(out.to_host()?.iter().map(|&v| v as u32).collect())
        }
        GemmOp::Int8F16 => {
            let p = int8_f16_inputs(s);
            let (da, dw) = (dev.upload(&p.a)?, dev.upload(&p.w)?);
            let (dz, dws) = (dev.upload(&p.zero)?, dev.upload(&p.w_sum)?);
            let (das, dwsc, db) = (dev.upload(&p.a_scale)?, dev.upload(&p.w_scale)?, dev.upload(&p.bias)?);
            let g = crate::GemmInt8 {
                a: &da,
                a_scale: &das,
                zero_point: Some(crate::ZeroPoint { zero: &dz, w_sum: &dws }),
                w: &dw,
                w_scale: &dwsc,
                bias: Some(&db),
                epilogue: Epilogue::None,
                shape,
            };
            let mut out = poisoned::<f16>(dev, s.m * s.n)?;
            crate::gemm_int8_sm90(dev, &g, &mut out, how)?;
            Ok(pack_f16(&out.to_host()?))
        }
        GemmOp::F16 | GemmOp::F16Ln => {
            let p = f16_inputs(s);
            let (da, dw, db) = (dev.upload(&p.a)?, dev.upload(&p.w)?, dev.upload(&p.bias)?);
            let g = crate::GemmF16 { a: &da, w: &dw, bias: Some(&db), epilogue: Epilogue::None, shape };
            let mut out = poisoned::<f16>(dev, s.m * s.n)?;
            if s.op == GemmOp::F16 {
                crate::gemm_f16_sm90(dev, &g, &mut out, how)?;
                return Ok(pack_f16(&out.to_host()?));
            }
            let (dg, dbe) = (dev.upload(&p.gamma)?, dev.upload(&p.beta)?);
            let ln_out = poisoned::<f16>(dev, s.m * s.n)?;
            let ws = crate::SplitWorkspace::new(dev, 0, 0, s.m)?;
            let ln = crate::FusedLayerNorm { gamma: &dg, beta: &dbe, out: &ln_out, q8: None, eps: LN_EPS };
            // the strip tail: y is stored too (the cluster entries write ln.out only)
            let how = GemmSm90Launch { layernorm: crate::gemm_sm90::Sm90Layernorm::Strip, ..how };
            crate::gemm_f16_sm90_ln(dev, &g, &mut out, &ln, &ws, how)?;
            let mut v = pack_f16(&out.to_host()?);
            v.extend(pack_f16(&ln_out.to_host()?));
            Ok(v)
        }
    }
}

/// Runs an attention case through [`crate::attention_sm90()`]; its words.
pub fn run_attn(dev: &Device, s: &AttnSpec) -> Result<Vec<u32>> {
    let (qkv, cu) = attn_inputs(s);
    let t = cu[2] as usize;
    let (dq, dc) = (dev.upload(&qkv)?, dev.upload(&cu)?);
    let mut out = poisoned::<f16>(dev, t * s.heads * s.head_dim)?;
    let shape = crate::AttentionShape {
        batch: 2,
        tokens: t,
        max_seqlen: s.seqlens[0].max(s.seqlens[1]),
        heads: s.heads,
        head_dim: s.head_dim,
        scale: None,
    };
    let tiling = if s.packed { crate::Sm90Tiling::Packed } else { crate::Sm90Tiling::PerSequence };
    crate::attention_sm90(dev, &dq, &dc, &mut out, shape, tiling)?;
    Ok(pack_f16(&out.to_host()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::cases::Kind;

    fn spec(op: GemmOp, k: usize) -> GemmSpec {
        GemmSpec { op, m: 70, n: 136, k, ctas: None, seed: 16 }
    }

    /// `compare` names a C16 word by its output element(s).
    #[test]
    fn words_name_their_elements() {
        let find = |n| crate::conformance::cases::find(n).unwrap();
        let d = |n, i| crate::conformance::cases::describe(&find(n), i);
        assert_eq!(d("c16_gemm_int8_i32", 136 * 5 + 7), "C(m 5, n 7) (s32)");
        assert_eq!(d("c16_gemm_f16", 68 * 3 + 4), "out(m 3, n 8..9) (f16x2)");
        assert_eq!(d("c16_gemm_f16_ln", 70 * 68 + 68 + 1), "ln.out(m 1, n 2..3) (f16x2)");
        // d32, sequences 5 + 19, H = 64: word 300 is element 600, token 9 = sequence 1 position 4
        assert_eq!(
            d("c16_attn_d32_packed", 300),
            "out(token 9 = sequence 1 position 4, head 0, dim 24) and the next dim (f16x2)"
        );
        // d64, H = 128: word 97 is element 194, token 1, column 66 = head 1 dim 2
        assert_eq!(
            d("c16_attn_d64_perseq", 97),
            "out(token 1 = sequence 0 position 1, head 1, dim 2) and the next dim (f16x2)"
        );
        for c in crate::conformance::cases::all() {
            if matches!(c.kind, Kind::Sm90Gemm(_) | Kind::Sm90Attention(_)) {
                assert!(c.name.starts_with("c16_"), "{}", c.name);
            }
        }
    }

    /// The int8 fp16-out case's values are fp16s exactly (the premise of its exact reference).
    #[test]
    fn int8_f16_outputs_are_exact_fp16() {
        let s = spec(GemmOp::Int8F16, 80);
        for v in int8_f16_values(&s) {
            assert_eq!(f16::from_f64(v).to_f64(), v);
        }
    }

    /// A reference planted with W transposed (`w` read as `[k, n]`), with rows of A shifted by
    /// one, or with heads swapped / sequences not masked, is caught by the C16 checks, while
    /// the f64 value rounded once to fp16 passes them.
    #[test]
    fn planted_wrong_results_are_caught() {
        // fp16 GEMM: correct rounding passes, W^T fails
        let s = spec(GemmOp::F16, 80);
        let p = f16_inputs(&s);
        let (m, n, k) = (s.m, s.n, s.k);
        let good: Vec<f16> = f16_gemm_bounds(&p.a, &p.w, &p.bias, m, n, k).iter().map(|v| f16::from_f64(v.0)).collect();
        assert_eq!(gemm_property(&s, &pack_f16(&good)), Some(Ok(())));
        let wt: Vec<f16> = (0..n * k).map(|i| p.w[(i % k) * n + i / k]).collect();
        let bad: Vec<f16> = f16_gemm_bounds(&p.a, &wt, &p.bias, m, n, k).iter().map(|v| f16::from_f64(v.0)).collect();
        let e = gemm_property(&s, &pack_f16(&bad)).unwrap().unwrap_err();
        assert!(e.contains("outside the bound"), "{e}");
        // two ulps off in the largest output is caught too (there the bound is about half an
        // ulp: the accumulation term is ~2^-12 against an ulp of 2^-8 or more)
        let big = (0..m * n).max_by(|&i, &j| good[i].to_f64().abs().total_cmp(&good[j].to_f64().abs())).unwrap();
        assert!(good[big].to_f64().abs() >= 4.0);
        let mut off = good.clone();
        off[big] = f16::from_bits(off[big].to_bits() + 2);
        let e = gemm_property(&s, &pack_f16(&off)).unwrap().unwrap_err();
        assert!(e.starts_with("1 of") && e.contains(&format!("out(m {}, n {})", big / n, big % n)), "{e}");

        // an output never written (the 0xffff poison: NaN) is outside every bound
        let mut nan = good.clone();
        nan[3] = f16::from_bits(0xffff);
        assert!(gemm_property(&s, &pack_f16(&nan)).unwrap().unwrap_err().starts_with("1 of"));

        // s32 GEMM: the transposed W differs from the reference
        let case = crate::conformance::cases::find("c16_gemm_int8_i32").unwrap();
        let Kind::Sm90Gemm(s) = case.kind else { unreachable!() };
        let (a, w) = int8_i32_inputs(&s);
        let want = gemm_reference(&s).unwrap();
        let wt: Vec<i8> = (0..s.n * s.k).map(|i| w[(i % s.k) * s.n + i / s.k]).collect();
        let planted: Vec<u32> = matmul_i64(&a, &wt, s.m, s.n, s.k).iter().map(|&v| v as i32 as u32).collect();
        assert_ne!(planted, want);
        assert_eq!(crate::conformance::judge(&case, &want).0, crate::conformance::Verdict::Pass);
        let (v, why) = crate::conformance::judge(&case, &planted);
        assert_eq!(v, crate::conformance::Verdict::Fail);
        assert!(why.unwrap().contains("word 0 (C(m 0, n 0) (s32))"));
        // the int8 fp16-out case: exact words pass, W^T words fail
        let case = crate::conformance::cases::find("c16_gemm_int8_f16").unwrap();
        let Kind::Sm90Gemm(s) = case.kind else { unreachable!() };
        let good = pack_f16(&int8_f16_values(&s).iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>());
        assert_eq!(crate::conformance::judge(&case, &good).0, crate::conformance::Verdict::Pass);
        let mut q = int8_f16_inputs(&s);
        q.w = (0..s.n * s.k).map(|i| q.w[(i % s.k) * s.n + i / s.k]).collect();
        let acc = matmul_i64(&q.a, &q.w, s.m, s.n, s.k);
        let bad: Vec<f16> = (0..s.m * s.n)
            .map(|i| {
                let (r, c) = (i / s.n, i % s.n);
                let x = acc[i] - q.zero[r] as i64 * q.w_sum[c] as i64;
                f16::from_f64(x as f64 * q.a_scale[r] as f64 * q.w_scale[c] as f64 + q.bias[c].to_f64())
            })
            .collect();
        assert_eq!(crate::conformance::judge(&case, &pack_f16(&bad)).0, crate::conformance::Verdict::Fail);

        // _ln: a layernorm over the wrong rows is caught
        let s = spec(GemmOp::F16Ln, 160);
        let p = f16_inputs(&s);
        let y: Vec<f16> = f16_gemm_bounds(&p.a, &p.w, &p.bias, m, n, s.k).iter().map(|v| f16::from_f64(v.0)).collect();
        let z: Vec<f16> = ln_bounds(&y, &p.gamma, &p.beta, m, n).iter().map(|v| f16::from_f64(v.0)).collect();
        let mut words = pack_f16(&y);
        words.extend(pack_f16(&z));
        assert_eq!(gemm_property(&s, &words), Some(Ok(())));
        let mut shifted = pack_f16(&y);
        shifted.extend(pack_f16(&[&z[n..], &z[..n]].concat()));
        let e = gemm_property(&s, &shifted).unwrap().unwrap_err();
        assert!(e.contains("ln.out"), "{e}");

        // attention: heads swapped, or both sequences seen by every token
        let s = AttnSpec { seqlens: [19, 5], heads: 2, head_dim: 32, packed: true, seed: 3 };
        let (qkv, cu) = attn_inputs(&s);
        let round = |b: Vec<(f64, f64)>| pack_f16(&b.iter().map(|v| f16::from_f64(v.0)).collect::<Vec<_>>());
        let good = round(attn_bounds(&s, &qkv, &cu));
        assert_eq!(attn_property(&s, &good), Ok(()));
        let (h, d) = (s.heads * s.head_dim, s.head_dim);
        let mut swapped = unpack_f16(&good);
        for t in 0..24 {
            for x in 0..d {
                swapped.swap(t * h + x, t * h + d + x);
            }
        }
        assert!(attn_property(&s, &pack_f16(&swapped)).is_err());
        let unmasked = round(attn_bounds(&s, &qkv, &[0, 24]));
        let e = attn_property(&s, &unmasked).unwrap_err();
        assert!(e.contains("out(token"), "{e}");
    }
}
