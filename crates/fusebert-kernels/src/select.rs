//! Which kernel family runs: the mma.sync kernels (sm_80 and later, the fallback everywhere) or
//! the Hopper-native `_sm90` ones (wgmma, TMA, mbarrier; compute capability 9.0 only).
//!
//! [`KernelFamily`] is the request (`FUSEBERT_KERNELS=auto|sm80|sm90`, or the library option);
//! [`select`] resolves it for a device. In `Auto` on a 9.0 device the first use runs
//! [`self_check`]: the Hopper GEMMs (fp16, int8) and attention against the mma.sync kernels on
//! random inputs at shapes that are not tile multiples, outputs poisoned first (and the int8
//! GEMM with its quantisation fused, `gemm_int8_sm90_qa` and its cluster entry, against
//! `quantize_i8` on the plain GEMM's output, and the fused layernorm's cluster entries against
//! its strip tail, bit for bit: the thread-block-cluster and distributed-shared-memory semantics
//! they rely on; the int8 passes' attention, which also writes the context's codes, against
//! `attention_sm90` and `quantize_i8` on its output, bit for bit; at head dims 64 and 32 the
//! fused QKV attention against the QKV GEMM and attention it replaces, and the int8 attention
//! block against those and the attention-out GEMM with its layernorm, bit for bit). On a mismatch it
//! warns once (stderr) and falls back to mma.sync: a misreading of the ISA may cost speed, never
//! answers. The verdict is cached per device (shared by its clones): the GEMMs once, attention
//! once per head dim.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use half::f16;

use crate::attention::{attention, AttentionLaunch, AttentionShape};
use crate::attention_sm90::{attention_sm90, Sm90Tiling};
use crate::gemm_f16::{gemm_f16, GemmF16};
use crate::gemm_int8::{gemm_int8, GemmInt8, GemmLaunch, GemmShape};
use crate::gemm_plan::SplitWorkspace;
use crate::gemm_sm90::{
    gemm_f16_sm90, gemm_int8_sm90, gemm_int8_sm90_qa, FusedQuantize, GemmSm90Launch, Sm90Cols, Sm90Qa,
};
use crate::{Device, DeviceBuffer, Epilogue, Error, Result};

/// The environment variable that selects the kernel family.
pub const ENV: &str = "FUSEBERT_KERNELS";

/// The requested kernel family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelFamily {
    /// `_sm90` on compute capability 9.0 when the self-check passes; mma.sync elsewhere.
    #[default]
    Auto,
    /// The mma.sync kernels on every device.
    Sm80,
    /// The `_sm90` kernels, no self-check; an error on a device that is not 9.0.
    Sm90,
}

impl std::str::FromStr for KernelFamily {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(KernelFamily::Auto),
            "sm80" | "sm_80" | "mma" => Ok(KernelFamily::Sm80),
            "sm90" | "sm_90" | "wgmma" => Ok(KernelFamily::Sm90),
            other => Err(Error::Input(format!("kernel family `{other}`: expected auto, sm80 or sm90"))),
        }
    }
}

impl std::fmt::Display for KernelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelFamily::Auto => "auto",
            KernelFamily::Sm80 => "sm80",
            KernelFamily::Sm90 => "sm90",
        })
    }
}

impl KernelFamily {
    /// `FUSEBERT_KERNELS` (unset or empty: `Auto`); a value that is none of the three is an
    /// error naming the variable.
    pub fn from_env() -> Result<KernelFamily> {
        match std::env::var(ENV) {
            Ok(v) => v.parse().map_err(|e: Error| Error::Input(format!("{ENV}: {e}"))),
            Err(_) => Ok(KernelFamily::Auto),
        }
    }
}

/// The family a device runs, as resolved by [`select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    Sm80,
    Sm90,
}

impl Selected {
    pub fn is_sm90(self) -> bool {
        self == Selected::Sm90
    }
}

/// One self-check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What was compared ("gemm", "attention d64").
    pub what: String,
    /// `None`: every output agreed; else the first disagreement (kernel, index, values).
    pub mismatch: Option<String>,
    /// Wall time of the check (launches, synchronisation, comparison).
    pub elapsed: Duration,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// A device's self-check verdicts (one per device, shared by its clones).
#[derive(Debug, Default)]
pub struct SelfCheckCache {
    gemm: OnceLock<Verdict>,
    attention: Mutex<HashMap<usize, Verdict>>,
    warned: OnceLock<()>,
}

impl SelfCheckCache {
    /// Every verdict so far (the GEMMs first, then attention by head dim).
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v: Vec<Verdict> = self.gemm.get().cloned().into_iter().collect();
        let att = self.attention.lock().unwrap_or_else(|e| e.into_inner());
        let mut dims: Vec<_> = att.keys().copied().collect();
        dims.sort_unstable();
        v.extend(dims.into_iter().map(|d| att[&d].clone()));
        v
    }
}

/// Whether `dev` can run the `_sm90` kernels: compute capability 9.0 (sm_90a code runs on
/// nothing else).
pub fn hopper(dev: &Device) -> bool {
    dev.compute_capability() == (9, 0)
}

/// Resolves `requested` on `dev` for a model with attention head dim `head_dim`: `Sm80` always
/// gives mma.sync; `Sm90` gives `_sm90` on a 9.0 device and an error elsewhere; `Auto` gives
/// `_sm90` on a 9.0 device whose self-check passes (run on first use, cached), else mma.sync.
pub fn select(dev: &Device, requested: KernelFamily, head_dim: usize) -> Result<Selected> {
    match requested {
        KernelFamily::Sm80 => Ok(Selected::Sm80),
        KernelFamily::Sm90 if hopper(dev) => Ok(Selected::Sm90),
        KernelFamily::Sm90 => {
            let (maj, min) = dev.compute_capability();
            Err(Error::Input(format!(
                "{ENV}=sm90: the _sm90 kernels need compute capability 9.0 (H100/H200); {} is {maj}.{min} \
                 (use auto or sm80)",
                dev.name()
            )))
        }
        KernelFamily::Auto if !hopper(dev) => Ok(Selected::Sm80),
        KernelFamily::Auto => {
            let cache = &dev.selection;
            let gemm = cache.gemm.get_or_init(|| check_gemms(dev)).clone();
            let att = {
                let mut map = cache.attention.lock().unwrap_or_else(|e| e.into_inner());
                map.entry(head_dim).or_insert_with(|| check_attention(dev, head_dim)).clone()
            };
            match [gemm, att].into_iter().find(|v| !v.passed()) {
                None => Ok(Selected::Sm90),
                Some(v) => {
                    if cache.warned.set(()).is_ok() {
                        eprintln!(
                            "fusebert: warning: the Hopper self-check failed on {} ({}: {}); using the mma.sync kernels",
                            dev.name(),
                            v.what,
                            v.mismatch.as_deref().unwrap_or("")
                        );
                    }
                    Ok(Selected::Sm80)
                }
            }
        }
    }
}

/// Runs the whole self-check now (the GEMMs and attention at `head_dims`), uncached: what
/// `fusebert info --self-check` and the tests call.
pub fn self_check(dev: &Device, head_dims: &[usize]) -> Vec<Verdict> {
    let mut v = vec![check_gemms(dev)];
    v.extend(head_dims.iter().map(|&d| check_attention(dev, d)));
    v
}

/// Deterministic inputs (the check must be reproducible: a failure is a bug report).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 30) as f32 - 1.0
    }
    fn f16s(&mut self, n: usize, scale: f32) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(scale * self.unit())).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 255) as i32 - 127).map(|v| v as i8).collect()
    }
    /// Dequantisation scales in `[0.5, 2.5) x scale`.
    fn scales(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * (1.5 + self.unit())).collect()
    }
}

/// Both kernels round one f32 sum to fp16 (the sums' order differs): they agree to about an
/// fp16 ulp. A misread layout or a lost stage gives errors of the outputs' own size.
fn agree(a: f16, b: f16) -> bool {
    let (a, b) = (a.to_f32(), b.to_f32());
    (a - b).abs() <= 2e-3 * b.abs().max(1.0)
}

/// The first index where `got` (the `_sm90` kernel's) and `want` (mma.sync's) disagree.
fn first_mismatch(kernel: &str, got: &[f16], want: &[f16]) -> Option<String> {
    got.iter()
        .zip(want)
        .position(|(&g, &w)| !agree(g, w))
        .map(|i| format!("{kernel}: output {i} is {} where the mma.sync kernel gives {}", got[i], want[i]))
}

fn timed(what: String, f: impl FnOnce() -> Result<Option<String>>) -> Verdict {
    let t0 = Instant::now();
    let mismatch = f().unwrap_or_else(|e| Some(format!("launch failed: {e}")));
    Verdict { what, mismatch, elapsed: t0.elapsed() }
}

/// Rows past one 128-row tile, columns past one 128-column tile, K past one 64-wide stage
/// (and not a multiple of it): the tails of the tile walk. fp16 K 336: 6 stages, two K chunks
/// (4 + 2 stages), so the split-K entry runs too (in the 192-column tile).
const GEMM_SHAPE: GemmShape = GemmShape { m: 136, n: 144, k: 336 };
const GEMM_SHAPE_INT8: GemmShape = GemmShape { m: 136, n: 144, k: 160 };

fn check_gemms(dev: &Device) -> Verdict {
    timed("gemm".into(), || {
        if let Some(m) = check_gemm_f16(dev)? {
            return Ok(Some(m));
        }
        if let Some(m) = check_gemm_int8(dev)? {
            return Ok(Some(m));
        }
        if let Some(m) = check_layernorm_cluster(dev)? {
            return Ok(Some(m));
        }
        check_ffn_block(dev)
    })
}

/// The FFN block (`ffn_block_f16_sm90_n64`: one persistent launch whose units wait on other
/// CTAs' TMA-stored tiles) against the chain it replaces, `gemm_f16_sm90` (GELU) then
/// `gemm_f16_sm90_ln` (residual): FFN1's output, FFN2's and LN2's rows bit for bit. 40 rows,
/// an FFN of 64 x 192 (FFN2's K in two chunks).
fn check_ffn_block(dev: &Device) -> Result<Option<String>> {
    use crate::ffn_block_sm90::{
        ffn_block_f16_sm90, ffn_chain_f16_sm90, FfnBlockF16, FfnBlockLaunch, FfnBlockWorkspace, KERNEL_N64,
    };
    let (m, h, i) = (40, 64, 192);
    let mut r = Lcg(0xff7b_10c0);
    let x = dev.upload(&r.f16s(m * h, 1.0))?;
    let (w1, b1) = (dev.upload(&r.f16s(i * h, 0.25))?, dev.upload(&r.f16s(i, 0.5))?);
    let (w2, b2) = (dev.upload(&r.f16s(h * i, 0.15))?, dev.upload(&r.f16s(h, 0.5))?);
    let (gamma, beta) = (dev.upload(&r.f16s(h, 1.0))?, dev.upload(&r.f16s(h, 0.5))?);
    // (f, y, LN2's rows) of the block or of the chain
    let run = |block: bool| -> Result<[Vec<f16>; 3]> {
        let (mut f, mut y, out) = (poisoned(dev, m * i)?, poisoned(dev, m * h)?, poisoned(dev, m * h)?);
        let ln = crate::FusedLayerNorm { gamma: &gamma, beta: &beta, out: &out, q8: None, eps: 1e-12 };
        let op = FfnBlockF16 { x: &x, w1: &w1, b1: &b1, act: Epilogue::Gelu, w2: &w2, b2: &b2, m, h, i };
        if block {
            let ws = FfnBlockWorkspace::new(dev, m, h, i)?;
            ffn_block_f16_sm90(dev, &op, &mut f, &mut y, &ln, &ws, FfnBlockLaunch { cols: 64, ctas: None })?;
        } else {
            let ws = SplitWorkspace::for_shapes(dev, &[(m, i, h, false), (m, h, i, false)])?;
            ffn_chain_f16_sm90(dev, &op, &mut f, &mut y, &ln, &ws)?;
        }
        Ok([f.to_host()?, y.to_host()?, out.to_host()?])
    };
    let (got, want) = (run(true)?, run(false)?);
    let same = |a: &[f16], b: &[f16]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
    let what = ["FFN1's output", "FFN2's output", "LN2's rows"];
    Ok((0..3)
        .find(|&j| !same(&got[j], &want[j]))
        .map(|j| format!("{KERNEL_N64}: {} differs from the chain's", what[j])))
}

/// The fused layernorm's cluster entries (thread-block clusters, distributed shared memory:
/// what the forward pass launches unsplit) against the strip tail (no cluster feature), bit for
/// bit on the normalised rows, fp16 and int8 with codes: N 520 (a cluster of 4, one rank idle,
/// a partial 64-column block), two strips.
fn check_layernorm_cluster(dev: &Device) -> Result<Option<String>> {
    use crate::gemm_int8::{FusedLayerNorm, FusedQ8};
    use crate::gemm_sm90::{gemm_f16_sm90_ln, gemm_int8_sm90_ln, Sm90Layernorm};
    let (m, n, k) = (136, 520, 160);
    let shape = GemmShape { m, n, k };
    let mut r = Lcg(0xc1a5_7e25);
    let a = dev.upload(&r.f16s(m * k, 1.0))?;
    let a8 = dev.upload(&r.i8s(m * k))?;
    let w = dev.upload(&r.f16s(n * k, 0.25))?;
    let w8 = dev.upload(&r.i8s(n * k))?;
    let a_scale = dev.upload(&r.scales(m, 1e-3))?;
    let w_scale = dev.upload(&r.scales(n, 1e-3))?;
    let bias = dev.upload(&r.f16s(n, 0.5))?;
    let residual = dev.upload(&r.f16s(m * n, 1.0))?;
    let gamma = dev.upload(&(0..n).map(|_| f16::from_f32(1.0 + 0.25 * r.unit())).collect::<Vec<_>>())?;
    let beta = dev.upload(&r.f16s(n, 0.25))?;
    let ws = SplitWorkspace::new(dev, 1, 1, m)?;
    let epilogue = Epilogue::Residual(&residual);
    let f16g = GemmF16 { a: &a, w: &w, bias: Some(&bias), epilogue, shape };
    let i8g = GemmInt8 {
        a: &a8,
        a_scale: &a_scale,
        zero_point: None,
        w: &w8,
        w_scale: &w_scale,
        bias: Some(&bias),
        epilogue,
        shape,
    };
    // (ln out, codes, scales) of one launch
    let run = |int8: bool, layernorm: Sm90Layernorm| -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let (out, q, s) =
            (poisoned(dev, m * n)?, dev.alloc_filled::<i8>(m * n, 0x55)?, dev.alloc_filled::<f32>(m, 0xff)?);
        let mut y = poisoned(dev, m * n)?;
        let how = GemmSm90Launch { layernorm, ..Default::default() };
        if int8 {
            let q8 = Some(FusedQ8 { q: &q, scale: &s, smooth: None });
            let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: &out, q8, eps: 1e-12 };
            gemm_int8_sm90_ln(dev, &i8g, &mut y, &ln, &ws, how)?;
        } else {
            let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: &out, q8: None, eps: 1e-12 };
            gemm_f16_sm90_ln(dev, &f16g, &mut y, &ln, &ws, how)?;
        }
        Ok((as_bytes(&out.to_host()?).to_vec(), as_bytes(&q.to_host()?).to_vec(), as_bytes(&s.to_host()?).to_vec()))
    };
    for int8 in [false, true] {
        let (strip, cluster) = (run(int8, Sm90Layernorm::Strip)?, run(int8, Sm90Layernorm::Cluster)?);
        let kernel = crate::gemm_sm90::cluster_kernel_name(int8, 4).unwrap_or("cluster layernorm");
        for (what, a, b) in [
            ("normalised rows", &cluster.0, &strip.0),
            ("codes", &cluster.1, &strip.1),
            ("scales", &cluster.2, &strip.2),
        ] {
            if a != b {
                return Ok(Some(format!("{kernel}: its {what} differ from the strip tail's (_ln) on the same GEMM")));
            }
        }
    }
    Ok(None)
}

fn poisoned(dev: &Device, n: usize) -> Result<DeviceBuffer<f16>> {
    dev.alloc_filled::<f16>(n, 0xff) // fp16 NaN: an unwritten output fails the comparison
}

fn check_gemm_f16(dev: &Device) -> Result<Option<String>> {
    let GemmShape { m, n, k } = GEMM_SHAPE;
    let mut r = Lcg(0x5e1f_c4ec);
    let a = dev.upload(&r.f16s(m * k, 1.0))?;
    let w = dev.upload(&r.f16s(n * k, 0.25))?;
    let bias = dev.upload(&r.f16s(n, 0.5))?;
    let g = GemmF16 { a: &a, w: &w, bias: Some(&bias), epilogue: Epilogue::Gelu, shape: GEMM_SHAPE };
    let (mut want, mut got) = (poisoned(dev, m * n)?, poisoned(dev, m * n)?);
    gemm_f16(dev, &g, &mut want, GemmLaunch::default())?;
    let narrow = GemmSm90Launch { cols: Sm90Cols::N128, ..Default::default() };
    gemm_f16_sm90(dev, &g, &mut got, narrow)?;
    let got = got.to_host()?;
    if let Some(m) = first_mismatch(crate::gemm_sm90::KERNEL, &got, &want.to_host()?) {
        return Ok(Some(m));
    }
    // the 192-column tile split over K: the same bits as unsplit 128 x 128 (every output sums
    // K in the same chunks, in the same order, whatever the tile or the split)
    let (words, counters) = crate::gemm_sm90::split_needs(m, n, 192, crate::gemm_sm90::k_chunks(k, false));
    let ws = SplitWorkspace::new(dev, words, counters, 0)?;
    let mut split = poisoned(dev, m * n)?;
    gemm_f16_sm90(
        dev,
        &g,
        &mut split,
        GemmSm90Launch { cols: Sm90Cols::N192, split: Some(&ws), ..Default::default() },
    )?;
    let split = split.to_host()?;
    let kernel = crate::gemm_sm90::kernel_name(crate::gemm_sm90::Sm90Entry::F16, 192, true);
    Ok(split
        .iter()
        .zip(&got)
        .position(|(x, y)| x.to_bits() != y.to_bits())
        .map(|i| format!("{kernel}: output {i} is {} where the unsplit 128-column kernel gives {}", split[i], got[i])))
}

fn check_gemm_int8(dev: &Device) -> Result<Option<String>> {
    let GemmShape { m, n, k } = GEMM_SHAPE_INT8;
    let mut r = Lcg(0x1a78_0001);
    let a = dev.upload(&r.i8s(m * k))?;
    let w = dev.upload(&r.i8s(n * k))?;
    let a_scale = dev.upload(&r.scales(m, 1e-3))?;
    let w_scale = dev.upload(&r.scales(n, 1e-3))?;
    let bias = dev.upload(&r.f16s(n, 0.5))?;
    let g = GemmInt8 {
        a: &a,
        a_scale: &a_scale,
        zero_point: None,
        w: &w,
        w_scale: &w_scale,
        bias: Some(&bias),
        epilogue: Epilogue::Gelu,
        shape: GEMM_SHAPE_INT8,
    };
    let (mut want, mut got) = (poisoned(dev, m * n)?, poisoned(dev, m * n)?);
    gemm_int8(dev, &g, &mut want, GemmLaunch::default())?;
    gemm_int8_sm90(dev, &g, &mut got, GemmSm90Launch::default())?;
    if let Some(m) = first_mismatch(crate::gemm_sm90::KERNEL_INT8, &got.to_host()?, &want.to_host()?) {
        return Ok(Some(m));
    }
    check_gemm_int8_qa(dev, &g, &got)
}

/// The fused quantisation (`gemm_int8_sm90_qa`, two strips, the strip tail and the cluster
/// entry): its codes, scales and zero points those `quantize_i8` gives on the plain entry's
/// output `plain`; the strip tail's output the same bits as `plain`, the cluster entry's (y kept
/// on chip at this N) left unwritten.
fn check_gemm_int8_qa(dev: &Device, g: &GemmInt8<'_>, plain: &DeviceBuffer<f16>) -> Result<Option<String>> {
    let GemmShape { m, n, .. } = g.shape;
    let (mut q0, mut s0, mut z0) = (dev.alloc::<i8>(m * n)?, dev.alloc::<f32>(m)?, dev.alloc::<i32>(m)?);
    let x = crate::quantize::QuantizeF16 { x: plain, smooth: None, rows: m, hidden: n };
    crate::quantize::quantize_i8(
        dev,
        &x,
        crate::quantize::QuantizedI8 { q: &mut q0, scale: &mut s0, zero: Some(&mut z0) },
    )?;
    let ws = SplitWorkspace::new(dev, 1, 1, m)?;
    for (kernel, qa_mode) in
        [(crate::gemm_sm90::KERNEL_INT8_QA, Sm90Qa::StripTail), (crate::gemm_sm90::KERNEL_INT8_CQA, Sm90Qa::Auto)]
    {
        let (q, s, z) = (
            dev.alloc_filled::<i8>(m * n, 0x55)?,
            dev.alloc_filled::<f32>(m, 0xff)?,
            dev.alloc_filled::<i32>(m, 0xff)?,
        );
        let mut out = poisoned(dev, m * n)?;
        let qa = FusedQuantize { q: &q, scale: &s, zero: &z, smooth: None };
        let how = GemmSm90Launch { cols: Sm90Cols::N128, qa: qa_mode, ..Default::default() };
        gemm_int8_sm90_qa(dev, g, &mut out, &qa, &ws, how)?;
        // the cluster entry keeps y on chip at N <= 3072: `out` is left as it was (the poison)
        let resident = qa_mode == Sm90Qa::Auto && crate::gemm_sm90::qa_resident(n);
        let (out_what, out_want) = if resident {
            ("fp16 outputs (y kept on chip: must stay unwritten)", poisoned(dev, m * n)?.to_host()?)
        } else {
            ("fp16 outputs (against gemm_int8_sm90's)", plain.to_host()?)
        };
        let checks = [
            (out_what, as_bytes(&out.to_host()?) == as_bytes(&out_want)),
            ("codes", as_bytes(&q.to_host()?) == as_bytes(&q0.to_host()?)),
            ("scales", as_bytes(&s.to_host()?) == as_bytes(&s0.to_host()?)),
            ("zero points", as_bytes(&z.to_host()?) == as_bytes(&z0.to_host()?)),
        ];
        if let Some((what, _)) = checks.iter().find(|c| !c.1) {
            return Ok(Some(format!("{kernel}: its {what} differ from quantize_i8's on the plain output")));
        }
    }
    Ok(None)
}

fn as_bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Two sequences (70 tokens: two 64-row tiles and a second key block; 5 tokens), two heads,
/// both tilings of the Hopper kernel against the mma.sync one.
fn check_attention(dev: &Device, head_dim: usize) -> Verdict {
    timed(format!("attention d{head_dim}"), || {
        let lens = [70usize, 5];
        let (heads, t) = (2, lens.iter().sum::<usize>());
        let h = heads * head_dim;
        let mut r = Lcg(0xa77e_0000 + head_dim as u64);
        let qkv = dev.upload(&r.f16s(t * 3 * h, 1.0))?;
        let cu: Vec<u32> = std::iter::once(0)
            .chain(lens.iter().scan(0u32, |s, &l| {
                *s += l as u32;
                Some(*s)
            }))
            .collect();
        let cu = dev.upload(&cu)?;
        let shape = AttentionShape { batch: lens.len(), tokens: t, max_seqlen: 70, heads, head_dim, scale: None };
        let mut want = poisoned(dev, t * h)?;
        attention(dev, &qkv, &cu, &mut want, shape, AttentionLaunch::default())?;
        let want = want.to_host()?;
        for tiling in [Sm90Tiling::PerSequence, Sm90Tiling::Packed] {
            let mut got = poisoned(dev, t * h)?;
            attention_sm90(dev, &qkv, &cu, &mut got, shape, tiling)?;
            let kernel = crate::attention_sm90::kernel(head_dim, tiling)?;
            if let Some(m) = first_mismatch(kernel, &got.to_host()?, &want) {
                return Ok(Some(m));
            }
            if let Some(m) = check_attention_codes(dev, &qkv, &cu, &got, shape, tiling)? {
                return Ok(Some(m));
            }
        }
        if !crate::qkv_attention_sm90::takes_heads(heads, head_dim) {
            return Ok(None);
        }
        for int8 in [false, true] {
            if let Some(m) = check_qkv_attention(dev, &cu, shape, int8)? {
                return Ok(Some(m));
            }
        }
        check_attention_block(dev, &cu, AttentionShape { heads: 192 / head_dim, ..shape })
    })
}

/// The int8 attention block (`attention_block_int8_sm90_*`, H = 192: one output tile) against
/// the chain it replaces, `qkv_attention_int8_sm90` then `gemm_int8_sm90_ln` with the residual
/// (the strip layernorm): LN1's rows, codes and scales bit for bit (the sequences' meeting, the
/// hand-over of the tiles to the producer, the TMA reads of other CTAs' codes).
fn check_attention_block(dev: &Device, cu: &DeviceBuffer<u32>, shape: AttentionShape) -> Result<Option<String>> {
    use crate::qkv_attention_sm90 as fused;
    if !fused::block_supports(&shape) {
        return Ok(None);
    }
    let (t, h, slots) = (shape.tokens, shape.heads * shape.head_dim, shape.batch * fused::SLOT_ROWS);
    let mut r = Lcg(0xb10c_0000 + shape.head_dim as u64);
    let qkv = Int8Qkv::random(dev, &mut r, t, h)?;
    let g = qkv.gemm();
    let x = dev.upload(&r.f16s(t * h, 1.0))?;
    let wo = dev.upload(&r.i8s(h * h))?;
    let wo_scale = dev.upload(&r.scales(h, 1e-3))?;
    let bo = dev.upload(&r.f16s(h, 0.5))?;
    let (gamma, beta) = (dev.upload(&r.f16s(h, 1.0))?, dev.upload(&r.f16s(h, 0.5))?);
    // (out, LN1's rows, codes, scales) of the block or of the chain
    let run = |block: bool| -> Result<(Vec<f16>, Vec<i8>, Vec<f32>)> {
        let rows = if block { slots } else { t };
        let (mut ctx, mut q, mut qs) =
            (dev.alloc_filled(rows * h, 0)?, dev.alloc_filled(rows * h, 0)?, dev.alloc_filled(rows, 0)?);
        let mut counters = dev.alloc_filled::<u32>(fused::CTX_COUNTERS * shape.batch, 0)?;
        let (mut y, h1) = (poisoned(dev, t * h)?, poisoned(dev, t * h)?);
        let (lq, ls) = (dev.alloc_filled::<i8>(t * h, 0xff)?, dev.alloc_filled::<f32>(t, 0xff)?);
        let ln = crate::FusedLayerNorm {
            gamma: &gamma,
            beta: &beta,
            out: &h1,
            q8: Some(crate::FusedQ8 { q: &lq, scale: &ls, smooth: None }),
            eps: 1e-12,
        };
        let codes = fused::ContextCodes { q: &mut q, scale: &mut qs, counters: &mut counters };
        if block {
            let mut fold = dev.alloc_filled::<u32>(fused::FOLD_COUNTERS * shape.batch, 0)?;
            let o = fused::AttentionOut {
                w: &wo,
                w_scale: Some(&wo_scale),
                bias: &bo,
                residual: &x,
                y: &mut y,
                ln,
                counters: &mut fold,
            };
            fused::attention_block_int8_sm90(dev, &g, cu, &mut ctx, codes, o, shape)?;
        } else {
            fused::qkv_attention_int8_sm90(dev, &g, cu, &mut ctx, codes, shape)?;
            let go = GemmInt8 {
                a: &q,
                a_scale: &qs,
                zero_point: None,
                w: &wo,
                w_scale: &wo_scale,
                bias: Some(&bo),
                epilogue: Epilogue::Residual(&x),
                shape: GemmShape { m: t, n: h, k: h },
            };
            let ws = SplitWorkspace::for_shapes(dev, &[(t, h, h, true)])?;
            let how = GemmSm90Launch { layernorm: crate::gemm_sm90::Sm90Layernorm::Strip, ..Default::default() };
            crate::gemm_int8_sm90_ln(dev, &go, &mut y, &ln, &ws, how)?;
        }
        Ok((h1.to_host()?, lq.to_host()?, ls.to_host()?))
    };
    let (got, want) = (run(true)?, run(false)?);
    let kernel = fused::block_kernel_name(true, shape.head_dim);
    if let Some(m) = first_mismatch(kernel, &got.0, &want.0) {
        return Ok(Some(m));
    }
    let same_scales = got.2.iter().zip(&want.2).all(|(a, b)| a.to_bits() == b.to_bits());
    Ok((got.1 != want.1 || !same_scales).then(|| format!("{kernel}: LN1's codes differ from the chain's")))
}

/// Random operands of an int8 QKV GEMM over `t` rows of `h`: codes, per-token and per-column
/// scales (symmetric, unsmoothed: the fused kernels' input), bias.
struct Int8Qkv {
    a: DeviceBuffer<i8>,
    w: DeviceBuffer<i8>,
    a_scale: DeviceBuffer<f32>,
    w_scale: DeviceBuffer<f32>,
    bias: DeviceBuffer<f16>,
    shape: GemmShape,
}

impl Int8Qkv {
    fn random(dev: &Device, r: &mut Lcg, t: usize, h: usize) -> Result<Self> {
        Ok(Int8Qkv {
            a: dev.upload(&r.i8s(t * h))?,
            w: dev.upload(&r.i8s(3 * h * h))?,
            a_scale: dev.upload(&r.scales(t, 2e-3))?,
            w_scale: dev.upload(&r.scales(3 * h, 2e-3))?,
            bias: dev.upload(&r.f16s(3 * h, 0.5))?,
            shape: GemmShape { m: t, n: 3 * h, k: h },
        })
    }

    fn gemm(&self) -> GemmInt8<'_> {
        GemmInt8 {
            a: &self.a,
            a_scale: &self.a_scale,
            zero_point: None,
            w: &self.w,
            w_scale: &self.w_scale,
            bias: Some(&self.bias),
            epilogue: Epilogue::None,
            shape: self.shape,
        }
    }
}

/// The int8 passes' attention (`attention_int8_sm90_*`) against `attention_sm90`'s output `fp16`
/// (the same bits) and `quantize_i8` on it (the context's codes and scales: the row tile's
/// counters and the read-back of the other heads' columns).
fn check_attention_codes(
    dev: &Device,
    qkv: &DeviceBuffer<f16>,
    cu: &DeviceBuffer<u32>,
    fp16: &DeviceBuffer<f16>,
    shape: AttentionShape,
    tiling: Sm90Tiling,
) -> Result<Option<String>> {
    use crate::attention_sm90::{attention_int8_sm90, codes_strips, kernel_int8, ContextCodes, CTX_COUNTERS};
    let (t, h) = (shape.tokens, shape.heads * shape.head_dim);
    let kernel = kernel_int8(shape.head_dim, tiling.resolve(shape.max_seqlen))?;
    let mut got = poisoned(dev, t * h)?;
    let (mut q, mut scale) = (dev.alloc(t * h)?, dev.alloc(t)?);
    let mut counters = dev.alloc_filled::<u32>(CTX_COUNTERS * codes_strips(shape, tiling), 0)?;
    let codes = ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
    attention_int8_sm90(dev, qkv, cu, &mut got, codes, shape, tiling)?;
    if let Some(m) = first_mismatch(kernel, &got.to_host()?, &fp16.to_host()?) {
        return Ok(Some(m));
    }
    codes_mismatch(dev, kernel, fp16, &q, &scale, t, h)
}

/// Whether `q` and `scale` are the bits `quantize_i8` (symmetric, no smoothing) gives from `ctx`
/// `[t, h]`: a message naming `kernel` where they are not.
fn codes_mismatch(
    dev: &Device,
    kernel: &str,
    ctx: &DeviceBuffer<f16>,
    q: &DeviceBuffer<i8>,
    scale: &DeviceBuffer<f32>,
    t: usize,
    h: usize,
) -> Result<Option<String>> {
    let (mut want_q, mut want_scale) = (dev.alloc(t * h)?, dev.alloc(t)?);
    crate::quantize_i8(
        dev,
        &crate::QuantizeF16 { x: ctx, smooth: None, rows: t, hidden: h },
        crate::QuantizedI8 { q: &mut want_q, scale: &mut want_scale, zero: None },
    )?;
    if q.to_host()? != want_q.to_host()? {
        return Ok(Some(format!("{kernel}: its context codes differ from quantize_i8's")));
    }
    let (got_s, want_s) = (scale.to_host()?, want_scale.to_host()?);
    Ok(got_s
        .iter()
        .zip(&want_s)
        .position(|(g, w)| g.to_bits() != w.to_bits())
        .map(|i| format!("{kernel}: context scale {i} is {} where quantize_i8 gives {}", got_s[i], want_s[i])))
}

/// The fused QKV attention (`qkv_attention_*_sm90`, head dims 64 and 32) against the two launches it
/// replaces, `gemm_*_sm90` then `attention_sm90` per sequence: the same bits (shared memory
/// written by the GEMM's epilogue and read by wgmma, the hand-over between the two); int8 also
/// its context codes and scales against `quantize_i8` on the chain's context (the arrival
/// counters and the read-back of other CTAs' rows).
fn check_qkv_attention(
    dev: &Device,
    cu: &DeviceBuffer<u32>,
    shape: AttentionShape,
    int8: bool,
) -> Result<Option<String>> {
    use crate::qkv_attention_sm90 as fused;
    let (t, h) = (shape.tokens, shape.heads * shape.head_dim);
    let gs = GemmShape { m: t, n: 3 * h, k: h };
    let mut r = Lcg(0x9a77_0000 + int8 as u64);
    let (mut qkv, mut want, mut got) = (poisoned(dev, t * 3 * h)?, poisoned(dev, t * h)?, poisoned(dev, t * h)?);
    if int8 {
        let operands = Int8Qkv::random(dev, &mut r, t, h)?;
        let g = operands.gemm();
        gemm_int8_sm90(dev, &g, &mut qkv, GemmSm90Launch::default())?;
        let (mut q, mut scale, mut counters) =
            (dev.alloc(t * h)?, dev.alloc(t)?, dev.alloc_filled::<u32>(fused::CTX_COUNTERS * shape.batch, 0)?);
        let codes = fused::ContextCodes { q: &mut q, scale: &mut scale, counters: &mut counters };
        fused::qkv_attention_int8_sm90(dev, &g, cu, &mut got, codes, shape)?;
        attention_sm90(dev, &qkv, cu, &mut want, shape, Sm90Tiling::PerSequence)?;
        let kernel = fused::kernel_name(true, shape.head_dim);
        if let Some(m) = codes_mismatch(dev, kernel, &want, &q, &scale, t, h)? {
            return Ok(Some(m));
        }
    } else {
        let bias = dev.upload(&r.f16s(3 * h, 0.5))?;
        let a = dev.upload(&r.f16s(t * h, 1.0))?;
        let w = dev.upload(&r.f16s(3 * h * h, 0.1))?;
        let g = GemmF16 { a: &a, w: &w, bias: Some(&bias), epilogue: Epilogue::None, shape: gs };
        gemm_f16_sm90(dev, &g, &mut qkv, GemmSm90Launch::default())?;
        fused::qkv_attention_f16_sm90(dev, &g, cu, &mut got, shape)?;
        attention_sm90(dev, &qkv, cu, &mut want, shape, Sm90Tiling::PerSequence)?;
    }
    let (got, want) = (got.to_host()?, want.to_host()?);
    let kernel = fused::kernel_name(int8, shape.head_dim);
    Ok(got
        .iter()
        .zip(&want)
        .position(|(g, w)| g.to_bits() != w.to_bits())
        .map(|i| format!("{kernel}: output {i} is {} where gemm_sm90 + attention_sm90 give {}", got[i], want[i])))
}
