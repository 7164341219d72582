//! Device time per kernel on one BERT layer's shapes: every Hopper `_sm90` kernel beside the
//! mma.sync kernel it replaces, each timed with device events over graph replays
//! (`fusebert kernels time`; step 4 of `scripts/gpu-check.sh`).
//!
//! Both families launch as the forward pass does (their planned tiles, K split where planned)
//! and compute the same outputs from the same inputs: the four GEMMs alone, then the fused
//! steps the forward pass runs (the residual GEMMs with their layernorm, in fp16 and int8 with
//! codes: on Hopper the cluster entries where the host picks them; the int8 FFN1 with FFN2's
//! codes: `_qa` against the mma.sync GEMM + quantize launch), so each `_sm90` row also says
//! how far its output is from the mma.sync one (int8: exactly equal; fp16: accumulation order
//! only). On a backend without a device clock (the emulator) the launches run and the outputs
//! are compared, but no time is reported: the emulator's measure is its counters.
use half::f16;
use serde::Serialize;

use crate::device::{Device, DeviceBuffer};
use crate::gemm_plan::{GemmPlan, SplitWorkspace};
use crate::gemm_sm90::Sm90Entry;
use crate::select::hopper;
use crate::{AttentionLaunch, AttentionShape, Epilogue, GemmF16, GemmInt8, GemmLaunch, GemmShape};
use crate::{GemmSm90Launch, Sm90Tiling};
use fusebert_core::error::{Error, Result};

/// The layer being timed: `batch` sequences of `tokens`, BERT widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerShape {
    pub batch: usize,
    pub tokens: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
}

impl LayerShape {
    /// BERT-base (hidden 768, 12 heads of 64, FFN 3072) at `batch x tokens`.
    pub fn bert_base(batch: usize, tokens: usize) -> LayerShape {
        LayerShape { batch, tokens, hidden: 768, heads: 12, ffn: 3072 }
    }

    fn rows(&self) -> usize {
        self.batch * self.tokens
    }

    fn check(&self) -> Result<()> {
        let positive = [self.batch, self.tokens, self.hidden, self.heads, self.ffn].iter().all(|&v| v > 0);
        if !positive || self.hidden % self.heads != 0 || self.hidden % 16 != 0 || self.ffn % 16 != 0 {
            return Err(Error::Input(format!(
                "kernel timing: batch, tokens, hidden, heads and ffn must be positive, hidden a multiple of heads \
                 and hidden, ffn multiples of 16: {self:?}"
            )));
        }
        Ok(())
    }
}

/// One kernel's row.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTime {
    /// The layer operation ("FFN1 fp16 (bias + GELU)").
    pub op: String,
    /// `sm80` (mma.sync) or `sm90` (wgmma/TMA).
    pub family: &'static str,
    /// The kernels one run launches (names as in the PTX).
    pub kernels: Vec<String>,
    /// `M x N x K` of a GEMM; sequences, heads and head dim of attention.
    pub shape: String,
    /// Useful operations per run (2 per multiply-add).
    pub flops: u64,
    /// Mean device time per run; `None` without a device clock.
    pub mean_ms: Option<f64>,
    /// `flops / mean_ms`, in TFLOP/s (or TOP/s for int8).
    pub tflops: Option<f64>,
    /// `sm90` rows: the largest `|sm90 - sm80| / max(1, |sm80|)` over the output.
    pub max_rel_diff_vs_sm80: Option<f64>,
    /// Why the row has no measurement (the `_sm90` kernel needs compute capability 9.0, or
    /// does not take this shape).
    pub skipped: Option<String>,
}

/// The figures of [`time_layer`]: the device, the shape, and one row per kernel and family.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTimes {
    pub device: String,
    pub compute_capability: (u32, u32),
    pub shape: LayerShape,
    /// Graph replays averaged per row (after one warm-up replay).
    pub iters: usize,
    pub rows: Vec<KernelTime>,
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn f16s(&mut self, n: usize, scale: f32) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(self.next() * scale)).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() * 127.0) as i8).collect()
    }
}

/// The four GEMMs of a BERT layer.
#[derive(Clone, Copy)]
enum LayerGemm {
    Qkv,
    AttentionOutput,
    Ffn1,
    Ffn2,
}

impl LayerGemm {
    const ALL: [LayerGemm; 4] = [LayerGemm::Qkv, LayerGemm::AttentionOutput, LayerGemm::Ffn1, LayerGemm::Ffn2];

    fn name(self) -> &'static str {
        match self {
            LayerGemm::Qkv => "QKV",
            LayerGemm::AttentionOutput => "attention output",
            LayerGemm::Ffn1 => "FFN1",
            LayerGemm::Ffn2 => "FFN2",
        }
    }

    /// `N` and `K`.
    fn nk(self, s: &LayerShape) -> (usize, usize) {
        match self {
            LayerGemm::Qkv => (3 * s.hidden, s.hidden),
            LayerGemm::AttentionOutput => (s.hidden, s.hidden),
            LayerGemm::Ffn1 => (s.ffn, s.hidden),
            LayerGemm::Ffn2 => (s.hidden, s.ffn),
        }
    }

    /// The epilogue (`residual` is `[M, hidden]`) and its description.
    fn epilogue<'a>(self, residual: &'a DeviceBuffer<f16>) -> (Epilogue<'a>, &'static str) {
        match self {
            LayerGemm::Qkv => (Epilogue::None, "bias"),
            LayerGemm::Ffn1 => (Epilogue::Gelu, "bias + GELU"),
            LayerGemm::AttentionOutput | LayerGemm::Ffn2 => (Epilogue::Residual(residual), "bias + residual"),
        }
    }
}

/// Times every GEMM of a BERT layer (fp16 and int8) and its attention, on mma.sync and, on a
/// compute-capability-9.0 device, on the `_sm90` kernels; `iters` graph replays per row.
pub fn time_layer(dev: &Device, s: LayerShape, iters: usize) -> Result<LayerTimes> {
    s.check()?;
    let iters = iters.max(1);
    let sm90 = hopper(dev);
    let mut rows = Vec::new();
    let mut rng = Lcg(0x71e5_5eed);
    let m = s.rows();
    // inputs as wide as the widest K (A) and N (residual) of the four GEMMs
    let residual = dev.upload(&rng.f16s(m * s.hidden, 1.0))?;
    let a16 = dev.upload(&rng.f16s(m * s.hidden.max(s.ffn), 1.0))?;
    let a8 = dev.upload(&rng.i8s(m * s.hidden.max(s.ffn)))?;
    let a_scale = dev.upload(&(0..m).map(|_| 0.01 + rng.next().abs() * 0.01).collect::<Vec<f32>>())?;
    // both families launch as the forward pass does: planned tiles, K split where planned
    let shapes: Vec<_> =
        LayerGemm::ALL.iter().flat_map(|g| [false, true].map(|i| (m, g.nk(&s).0, g.nk(&s).1, i))).collect();
    let ws = SplitWorkspace::for_shapes(dev, &shapes)?;
    for gemm in LayerGemm::ALL {
        let (name, (n, k)) = (gemm.name(), gemm.nk(&s));
        let shape = GemmShape { m, n, k };
        let w16 = dev.upload(&rng.f16s(n * k, 0.05))?;
        let w8 = dev.upload(&rng.i8s(n * k))?;
        let w_scale = dev.upload(&(0..n).map(|_| 0.001 + rng.next().abs() * 0.001).collect::<Vec<f32>>())?;
        let bias = dev.upload(&rng.f16s(n, 0.1))?;
        let (epilogue, what) = gemm.epilogue(&residual);
        let dims = format!("{m} x {n} x {k}");
        let flops = (2 * m * n * k) as u64;
        let a = a16.view(0, m * k)?;
        let g = GemmF16 { a: &a, w: &w16, bias: Some(&bias), epilogue, shape };
        let mut out = dev.alloc::<f16>(m * n)?;
        let op = Op { name: format!("{name} fp16 ({what})"), shape: dims.clone(), flops, iters };
        let why_not = unavailable(dev, sm90, crate::gemm_sm90::supports(shape, false), "gemm_f16_sm90");
        rows.extend(time_pair(
            dev,
            &op,
            &mut out,
            |o| crate::gemm_f16(dev, &g, o, GemmLaunch::planned(GemmPlan::choose(m, n, k, false), Some(&ws))),
            why_not,
            |o| crate::gemm_f16_sm90(dev, &g, o, GemmSm90Launch::planned(m, n, k, false, &ws)),
        )?);
        let a = a8.view(0, m * k)?;
        let g = GemmInt8 {
            a: &a,
            a_scale: &a_scale,
            zero_point: None,
            w: &w8,
            w_scale: &w_scale,
            bias: Some(&bias),
            epilogue,
            shape,
        };
        let op = Op { name: format!("{name} int8 ({what})"), shape: dims, flops, iters };
        let why_not = unavailable(dev, sm90, crate::gemm_sm90::supports(shape, true), "gemm_int8_sm90");
        rows.extend(time_pair(
            dev,
            &op,
            &mut out,
            |o| crate::gemm_int8(dev, &g, o, GemmLaunch::planned(GemmPlan::choose(m, n, k, true), Some(&ws))),
            why_not,
            |o| crate::gemm_int8_sm90(dev, &g, o, GemmSm90Launch::planned(m, n, k, true, &ws)),
        )?);
    }
    rows.extend(time_fused(dev, s, iters, sm90, &mut rng, &ws, &residual)?);
    rows.extend(time_attention(dev, s, iters, sm90, &mut rng)?);
    rows.extend(time_qkv_attention(dev, s, iters, sm90, &mut rng, (&a16, &a8, &a_scale), &ws)?);
    rows.extend(time_ffn_block(dev, s, iters, sm90, &mut rng, &residual, &ws)?);
    Ok(LayerTimes { device: dev.name(), compute_capability: dev.compute_capability(), shape: s, iters, rows })
}

/// The fused steps the forward pass launches: the residual GEMMs with their layernorm (fp16;
/// int8 with the next GEMM's codes), compared on the normalised rows, and the int8 FFN1 with
/// FFN2's asymmetric codes (mma.sync: the GEMM, then the quantize launch; Hopper: one `_qa`
/// launch), compared on the GEMM output. Nothing without a fused layernorm (hidden > 1024).
fn time_fused(
    dev: &Device,
    s: LayerShape,
    iters: usize,
    sm90: bool,
    rng: &mut Lcg,
    ws: &SplitWorkspace,
    residual: &DeviceBuffer<f16>,
) -> Result<Vec<KernelTime>> {
    use crate::{FusedLayerNorm, FusedQ8, FusedQuantize};
    let mut rows = Vec::new();
    let (m, h) = (s.rows(), s.hidden);
    if !crate::gemm_plan::fuses_layernorm(h) {
        return Ok(rows);
    }
    let gamma = dev.upload(&(0..h).map(|_| f16::from_f32(1.0 + 0.1 * rng.next())).collect::<Vec<_>>())?;
    let beta = dev.upload(&rng.f16s(h, 0.1))?;
    let a16 = dev.upload(&rng.f16s(m * s.ffn, 1.0))?;
    let a8 = dev.upload(&rng.i8s(m * s.ffn))?;
    let a_scale = dev.upload(&(0..m).map(|_| 0.01 + rng.next().abs() * 0.01).collect::<Vec<f32>>())?;
    // the GEMM outputs y (the mma.sync `_ln` stores y; the Hopper cluster entries do not) and
    // the normalised rows, compared
    let (mut y80, mut y90, mut lnout) = (dev.alloc::<f16>(m * h)?, dev.alloc::<f16>(m * h)?, dev.alloc::<f16>(m * h)?);
    let (q80, q90) = (dev.alloc::<i8>(m * s.ffn)?, dev.alloc::<i8>(m * s.ffn)?);
    let (qs80, qs90) = (dev.alloc::<f32>(m)?, dev.alloc::<f32>(m)?);
    let mut out = dev.alloc::<f16>(m * s.ffn)?;
    for gemm in [LayerGemm::AttentionOutput, LayerGemm::Ffn2] {
        let (n, k) = gemm.nk(&s);
        let shape = GemmShape { m, n, k };
        let dims = format!("{m} x {n} x {k}");
        let flops = (2 * m * n * k) as u64;
        let bias = dev.upload(&rng.f16s(n, 0.1))?;
        let (w16, w8) = (dev.upload(&rng.f16s(n * k, 0.05))?, dev.upload(&rng.i8s(n * k))?);
        let w_scale = dev.upload(&(0..n).map(|_| 0.001 + rng.next().abs() * 0.001).collect::<Vec<f32>>())?;
        let epilogue = Epilogue::Residual(residual);
        let a = a16.view(0, m * k)?;
        let g = GemmF16 { a: &a, w: &w16, bias: Some(&bias), epilogue, shape };
        let op = Op { name: format!("{} + layernorm fp16", gemm.name()), shape: dims.clone(), flops, iters };
        let why_not = unavailable(dev, sm90, crate::gemm_sm90::supports(shape, false), "gemm_f16_sm90_ln");
        rows.extend(time_pair(
            dev,
            &op,
            &mut lnout,
            |o| {
                let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8: None, eps: 1e-12 };
                let plan = GemmPlan::choose_with_layernorm(m, n, k, false);
                crate::gemm_f16(dev, &g, &mut y80, GemmLaunch::fused(plan, ws, &ln))
            },
            why_not,
            |o| {
                let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8: None, eps: 1e-12 };
                let how = GemmSm90Launch::planned(m, n, k, false, ws);
                crate::gemm_f16_sm90_ln(dev, &g, &mut y90, &ln, ws, how)
            },
        )?);
        if crate::gemm_sm90::cluster_alternative(Sm90Entry::F16Ln, m, n, k).is_some() {
            let split = rows.last().expect("the pair's sm90 row").clone();
            rows.extend(time_cluster_alternative(
                dev,
                &op,
                &mut lnout,
                &split,
                true,
                || Ok(Vec::new()),
                |o| {
                    let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8: None, eps: 1e-12 };
                    let how = GemmSm90Launch { split: None, ..GemmSm90Launch::planned(m, n, k, false, ws) };
                    crate::gemm_f16_sm90_ln(dev, &g, &mut y90, &ln, ws, how)
                },
            )?);
        }
        let a = a8.view(0, m * k)?;
        let g = GemmInt8 {
            a: &a,
            a_scale: &a_scale,
            zero_point: None,
            w: &w8,
            w_scale: &w_scale,
            bias: Some(&bias),
            epilogue,
            shape,
        };
        let op = Op { name: format!("{} + layernorm int8 (+ codes)", gemm.name()), shape: dims, flops, iters };
        let why_not = unavailable(dev, sm90, crate::gemm_sm90::supports(shape, true), "gemm_int8_sm90_ln");
        rows.extend(time_pair(
            dev,
            &op,
            &mut lnout,
            |o| {
                let q8 = Some(FusedQ8 { q: &q80, scale: &qs80, smooth: None });
                let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8, eps: 1e-12 };
                let plan = GemmPlan::choose_with_layernorm(m, n, k, true);
                crate::gemm_int8(dev, &g, &mut y80, GemmLaunch::fused(plan, ws, &ln))
            },
            why_not,
            |o| {
                let q8 = Some(FusedQ8 { q: &q90, scale: &qs90, smooth: None });
                let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8, eps: 1e-12 };
                let how = GemmSm90Launch::planned(m, n, k, true, ws);
                crate::gemm_int8_sm90_ln(dev, &g, &mut y90, &ln, ws, how)
            },
        )?);
        if crate::gemm_sm90::cluster_alternative(Sm90Entry::Int8Ln, m, n, k).is_some() {
            let split = rows.last().expect("the pair's sm90 row").clone();
            let codes = || Ok([bytes(&q90.to_host()?), bytes(&qs90.to_host()?)].concat());
            rows.extend(time_cluster_alternative(dev, &op, &mut lnout, &split, true, codes, |o| {
                let q8 = Some(FusedQ8 { q: &q90, scale: &qs90, smooth: None });
                let ln = FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8, eps: 1e-12 };
                let how = GemmSm90Launch { split: None, ..GemmSm90Launch::planned(m, n, k, true, ws) };
                crate::gemm_int8_sm90_ln(dev, &g, &mut y90, &ln, ws, how)
            })?);
        }
    }
    // FFN1 int8 with FFN2's asymmetric codes
    let (n, k) = LayerGemm::Ffn1.nk(&s);
    let shape = GemmShape { m, n, k };
    let bias = dev.upload(&rng.f16s(n, 0.1))?;
    let w8 = dev.upload(&rng.i8s(n * k))?;
    let w_scale = dev.upload(&(0..n).map(|_| 0.001 + rng.next().abs() * 0.001).collect::<Vec<f32>>())?;
    let a = a8.view(0, m * k)?;
    let g = GemmInt8 {
        a: &a,
        a_scale: &a_scale,
        zero_point: None,
        w: &w8,
        w_scale: &w_scale,
        bias: Some(&bias),
        epilogue: Epilogue::Gelu,
        shape,
    };
    let (mut z80, z90) = (dev.alloc::<i32>(m)?, dev.alloc::<i32>(m)?);
    let (mut q80, mut qs80) = (q80, qs80);
    let op = Op {
        name: "FFN1 int8 (bias + GELU + FFN2's asymmetric codes)".into(),
        shape: format!("{m} x {n} x {k}"),
        flops: (2 * m * n * k) as u64,
        iters,
    };
    let why_not = unavailable(dev, sm90, crate::gemm_sm90::supports(shape, true), "gemm_int8_sm90_qa");
    let mut pair = time_pair(
        dev,
        &op,
        &mut out,
        |o| {
            let plan = GemmPlan::choose(m, n, k, true);
            crate::gemm_int8(dev, &g, o, GemmLaunch::planned(plan, Some(ws)))?;
            let x = crate::QuantizeF16 { x: o, smooth: None, rows: m, hidden: n };
            crate::quantize_i8(dev, &x, crate::QuantizedI8 { q: &mut q80, scale: &mut qs80, zero: Some(&mut z80) })
        },
        why_not,
        |o| {
            let qa = FusedQuantize { q: &q90, scale: &qs90, zero: &z90, smooth: None };
            crate::gemm_int8_sm90_qa(dev, &g, o, &qa, ws, GemmSm90Launch::planned(m, n, k, true, ws))
        },
    )?;
    if let Some(diff) = pair[1].max_rel_diff_vs_sm80.as_mut() {
        // the codes, scales and zero points, exactly; the cluster entry keeps y on chip at N <=
        // 3072 (`out` unwritten), where they are the only outputs compared
        let same = bytes(&q80.to_host()?) == bytes(&q90.to_host()?)
            && bytes(&qs80.to_host()?) == bytes(&qs90.to_host()?)
            && z80.to_host()? == z90.to_host()?;
        let resident = crate::gemm_sm90::qa_cluster(m, n, k).is_some() && crate::gemm_sm90::qa_resident(n);
        *diff = match (same, resident) {
            (false, _) => f64::INFINITY,
            (true, true) => 0.0,
            (true, false) => *diff,
        };
    }
    let split = pair[1].clone();
    rows.extend(pair);
    if crate::gemm_sm90::cluster_alternative(Sm90Entry::Int8Qa, m, n, k).is_some() {
        // the cluster entry keeps y on chip at N <= 3072: the codes are what is compared
        let codes = || Ok([bytes(&q90.to_host()?), bytes(&qs90.to_host()?), bytes(&z90.to_host()?)].concat());
        let y = !crate::gemm_sm90::qa_resident(n);
        rows.extend(time_cluster_alternative(dev, &op, &mut out, &split, y, codes, |o| {
            let qa = FusedQuantize { q: &q90, scale: &qs90, zero: &z90, smooth: None };
            let how = GemmSm90Launch { split: None, ..GemmSm90Launch::planned(m, n, k, true, ws) };
            crate::gemm_int8_sm90_qa(dev, &g, o, &qa, ws, how)
        })?);
    }
    Ok(rows)
}

/// The cluster entry in place of a split `_sk_ln` / `_sk_qa` launch (`gemm_sm90::
/// cluster_alternative`: what the forward pass launches where the roofline model predicts it
/// faster), timed as a row of its own after the split's (`split`, whose outputs `out` and
/// `codes()` still hold): its outputs must be the split's bits (`out` compared where `check_out`;
/// the cluster `_cqa` keeps y on chip), so its difference from mma.sync is the split's, and
/// infinite if any bit differs. Nothing where the split's row was skipped.
fn time_cluster_alternative(
    dev: &Device,
    op: &Op,
    out: &mut DeviceBuffer<f16>,
    split: &KernelTime,
    check_out: bool,
    codes: impl Fn() -> Result<Vec<u8>>,
    run: impl FnMut(&mut DeviceBuffer<f16>) -> Result<()>,
) -> Result<Option<KernelTime>> {
    if split.skipped.is_some() {
        return Ok(None);
    }
    let (want_out, want_codes) = (out.to_host()?, codes()?);
    let op = Op {
        name: format!("{} (cluster entry for the split)", op.name),
        shape: op.shape.clone(),
        flops: op.flops,
        iters: op.iters,
    };
    let mut row = time_op(dev, &op, "sm90", out, run)?;
    let same_out = !check_out || bytes(&out.to_host()?) == bytes(&want_out);
    let same = same_out && codes()? == want_codes;
    row.max_rel_diff_vs_sm80 = if same { split.max_rel_diff_vs_sm80 } else { Some(f64::INFINITY) };
    Ok(Some(row))
}

/// Attention over `batch` sequences of `tokens` (every sequence full length: the mma.sync and
/// Hopper kernels on the same packed input).
fn time_attention(dev: &Device, s: LayerShape, iters: usize, sm90: bool, rng: &mut Lcg) -> Result<Vec<KernelTime>> {
    let d = s.hidden / s.heads;
    let m = s.rows();
    let cu_host: Vec<u32> = (0..=s.batch as u32).map(|i| i * s.tokens as u32).collect();
    let cu = dev.upload(&cu_host)?;
    let qkv = dev.upload(&rng.f16s(m * 3 * s.hidden, 1.0))?;
    let shape = AttentionShape::from_cu_seqlens(&cu_host, s.heads, d)?;
    let dims = format!("{} x {} tokens, {} heads x {d}", s.batch, s.tokens, s.heads);
    let flops = (s.batch * s.heads * 4 * s.tokens * s.tokens * d) as u64;
    let op = Op { name: format!("attention fp16 (d{d})"), shape: dims, flops, iters };
    let mut out = dev.alloc::<f16>(m * s.hidden)?;
    let has_kernel = crate::attention_sm90::kernel(d, Sm90Tiling::Auto.resolve(shape.max_seqlen)).is_ok();
    let mut rows = time_pair(
        dev,
        &op,
        &mut out,
        |o| crate::attention(dev, &qkv, &cu, o, shape, AttentionLaunch::default()),
        unavailable(dev, sm90, has_kernel, "attention_sm90"),
        |o| crate::attention_sm90(dev, &qkv, &cu, o, shape, Sm90Tiling::Auto),
    )?
    .to_vec();
    // the int8 passes: attention and the context's codes for the output GEMM (the Hopper kernel
    // writes them itself; mma.sync quantises in a launch of its own)
    let op = Op { name: format!("attention + ctx codes int8 (d{d})"), ..op };
    let (mut q80, mut s80) = (dev.alloc::<i8>(m * s.hidden)?, dev.alloc::<f32>(m)?);
    let (mut q90, mut s90) = (dev.alloc::<i8>(m * s.hidden)?, dev.alloc::<f32>(m)?);
    let strips = crate::attention_sm90::codes_strips(shape, Sm90Tiling::Auto);
    let mut counters = dev.alloc_filled::<u32>(crate::CTX_COUNTERS * strips, 0)?;
    rows.extend(time_pair(
        dev,
        &op,
        &mut out,
        |o| {
            crate::attention(dev, &qkv, &cu, o, shape, AttentionLaunch::default())?;
            let x = crate::QuantizeF16 { x: o, smooth: None, rows: m, hidden: s.hidden };
            crate::quantize_i8(dev, &x, crate::QuantizedI8 { q: &mut q80, scale: &mut s80, zero: None })
        },
        unavailable(dev, sm90, has_kernel, "attention_int8_sm90"),
        |o| {
            let codes = crate::ContextCodes { q: &mut q90, scale: &mut s90, counters: &mut counters };
            crate::attention_int8_sm90(dev, &qkv, &cu, o, codes, shape, Sm90Tiling::Auto)
        },
    )?);
    Ok(rows)
}

/// The FFN, fp16: mma.sync's two launches (FFN1 with GELU, FFN2 with the residual and LN2)
/// against the Hopper FFN block's one (`ffn_block_f16_sm90_n64`, the width the forward pass's
/// short batches take), compared on LN2's rows. (The `_sm90` chain's two launches are the FFN1
/// and FFN2 + layernorm rows.) Nothing without a fused layernorm.
fn time_ffn_block(
    dev: &Device,
    s: LayerShape,
    iters: usize,
    sm90: bool,
    rng: &mut Lcg,
    residual: &DeviceBuffer<f16>,
    ws: &SplitWorkspace,
) -> Result<Vec<KernelTime>> {
    use crate::ffn_block_sm90::{self as fb, FfnBlockF16, FfnBlockLaunch, FfnBlockWorkspace};
    let (m, h, i) = (s.rows(), s.hidden, s.ffn);
    if !crate::gemm_plan::fuses_layernorm(h) {
        return Ok(Vec::new());
    }
    let x = residual.view(0, m * h)?;
    let (w1, b1) = (dev.upload(&rng.f16s(i * h, 0.05))?, dev.upload(&rng.f16s(i, 0.1))?);
    let (w2, b2) = (dev.upload(&rng.f16s(h * i, 0.05))?, dev.upload(&rng.f16s(h, 0.1))?);
    let gamma = dev.upload(&(0..h).map(|_| f16::from_f32(1.0 + 0.1 * rng.next())).collect::<Vec<_>>())?;
    let beta = dev.upload(&rng.f16s(h, 0.1))?;
    // each family's own intermediates (the two closures live at once)
    let (mut f80, mut y80) = (dev.alloc::<f16>(m * i)?, dev.alloc::<f16>(m * h)?);
    let (mut f90, mut y90) = (dev.alloc::<f16>(m * i)?, dev.alloc::<f16>(m * h)?);
    let mut lnout = dev.alloc::<f16>(m * h)?;
    let scratch = if sm90 && fb::supports(h, i) { Some(FfnBlockWorkspace::new(dev, m, h, i)?) } else { None };
    let op = Op {
        name: "FFN1 + FFN2 + LN2 fp16 (FFN block)".into(),
        shape: format!("{m} x {h} x {i}"),
        flops: (4 * m * h * i) as u64,
        iters,
    };
    let rows = time_pair(
        dev,
        &op,
        &mut lnout,
        |o| {
            let g1 = GemmF16 {
                a: &x,
                w: &w1,
                bias: Some(&b1),
                epilogue: Epilogue::Gelu,
                shape: GemmShape { m, n: i, k: h },
            };
            crate::gemm_f16(dev, &g1, &mut f80, GemmLaunch::planned(GemmPlan::choose(m, i, h, false), Some(ws)))?;
            let res = Epilogue::Residual(&x);
            let g2 = GemmF16 { a: &f80, w: &w2, bias: Some(&b2), epilogue: res, shape: GemmShape { m, n: h, k: i } };
            let ln = crate::FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8: None, eps: 1e-12 };
            crate::gemm_f16(
                dev,
                &g2,
                &mut y80,
                GemmLaunch::fused(GemmPlan::choose_with_layernorm(m, h, i, false), ws, &ln),
            )
        },
        unavailable(dev, sm90, fb::supports(h, i), fb::KERNEL_N64),
        |o| {
            let op = FfnBlockF16 { x: &x, w1: &w1, b1: &b1, act: Epilogue::Gelu, w2: &w2, b2: &b2, m, h, i };
            let ln = crate::FusedLayerNorm { gamma: &gamma, beta: &beta, out: o, q8: None, eps: 1e-12 };
            let scratch = scratch.as_ref().expect("the block's workspace where it runs");
            let how = FfnBlockLaunch { cols: 64, ctas: None };
            fb::ffn_block_f16_sm90(dev, &op, &mut f90, &mut y90, &ln, scratch, how)
        },
    )?;
    Ok(rows.to_vec())
}

/// The QKV GEMM and attention, fp16: mma.sync's two launches against the Hopper pass's one
/// (`qkv_attention_f16_sm90_d64` / `_d32`, where it takes the shape: head dim 64, or 32 with an
/// even number of heads, sequences of at most 128 tokens), which keeps Q, K and V on chip.
fn time_qkv_attention(
    dev: &Device,
    s: LayerShape,
    iters: usize,
    sm90: bool,
    rng: &mut Lcg,
    (a16, a8, a_scale): (&DeviceBuffer<f16>, &DeviceBuffer<i8>, &DeviceBuffer<f32>),
    ws: &SplitWorkspace,
) -> Result<Vec<KernelTime>> {
    let (d, m, h) = (s.hidden / s.heads, s.rows(), s.hidden);
    let cu_host: Vec<u32> = (0..=s.batch as u32).map(|i| i * s.tokens as u32).collect();
    let cu = dev.upload(&cu_host)?;
    let shape = AttentionShape::from_cu_seqlens(&cu_host, s.heads, d)?;
    let gs = GemmShape { m, n: 3 * h, k: h };
    let w = dev.upload(&rng.f16s(3 * h * h, 0.05))?;
    let bias = dev.upload(&rng.f16s(3 * h, 0.1))?;
    let a = a16.view(0, m * h)?;
    let g = GemmF16 { a: &a, w: &w, bias: Some(&bias), epilogue: Epilogue::None, shape: gs };
    let mut qkv = dev.alloc::<f16>(m * 3 * h)?;
    let attention_flops = s.batch * s.heads * 4 * s.tokens * s.tokens * d;
    let op = Op {
        name: format!("QKV + attention fp16 (d{d})"),
        shape: format!("{m} x {} x {h}, {} x {} tokens", 3 * h, s.batch, s.tokens),
        flops: (2 * m * 3 * h * h + attention_flops) as u64,
        iters,
    };
    let mut out = dev.alloc::<f16>(m * h)?;
    let takes = |int8| crate::gemm_sm90::supports(gs, int8) && crate::qkv_attention_sm90::supports(&shape);
    let mut rows = time_pair(
        dev,
        &op,
        &mut out,
        |o| {
            let plan = GemmPlan::choose(m, 3 * h, h, false);
            crate::gemm_f16(dev, &g, &mut qkv, GemmLaunch::planned(plan, Some(ws)))?;
            crate::attention(dev, &qkv, &cu, o, shape, AttentionLaunch::default())
        },
        unavailable(dev, sm90, takes(false), crate::qkv_attention_sm90::kernel_name(false, d)),
        |o| crate::qkv_attention_sm90::qkv_attention_f16_sm90(dev, &g, &cu, o, shape),
    )?
    .to_vec();
    // int8: the W8A8 projection, attention and the context's codes for the output GEMM (the
    // fused kernel writes them itself; mma.sync quantises in a launch of its own)
    let w8 = dev.upload(&rng.i8s(3 * h * h))?;
    let w_scale = dev.upload(&(0..3 * h).map(|_| 0.001 + rng.next().abs() * 0.001).collect::<Vec<f32>>())?;
    let a = a8.view(0, m * h)?;
    let g = GemmInt8 {
        a: &a,
        a_scale,
        zero_point: None,
        w: &w8,
        w_scale: &w_scale,
        bias: Some(&bias),
        epilogue: Epilogue::None,
        shape: gs,
    };
    let op = Op { name: format!("QKV + attention + ctx codes int8 (d{d})"), ..op };
    let (mut q80, mut s80) = (dev.alloc::<i8>(m * h)?, dev.alloc::<f32>(m)?);
    let (mut q90, mut s90) = (dev.alloc::<i8>(m * h)?, dev.alloc::<f32>(m)?);
    let mut counters = dev.alloc_filled::<u32>(crate::qkv_attention_sm90::CTX_COUNTERS * s.batch, 0)?;
    rows.extend(time_pair(
        dev,
        &op,
        &mut out,
        |o| {
            let plan = GemmPlan::choose(m, 3 * h, h, true);
            crate::gemm_int8(dev, &g, &mut qkv, GemmLaunch::planned(plan, Some(ws)))?;
            crate::attention(dev, &qkv, &cu, o, shape, AttentionLaunch::default())?;
            let x = crate::QuantizeF16 { x: o, smooth: None, rows: m, hidden: h };
            crate::quantize_i8(dev, &x, crate::QuantizedI8 { q: &mut q80, scale: &mut s80, zero: None })
        },
        unavailable(dev, sm90, takes(true), crate::qkv_attention_sm90::kernel_name(true, d)),
        |o| {
            let codes = crate::ContextCodes { q: &mut q90, scale: &mut s90, counters: &mut counters };
            crate::qkv_attention_sm90::qkv_attention_int8_sm90(dev, &g, &cu, o, codes, shape)
        },
    )?);
    Ok(rows)
}

/// What a pair of rows times: the operation, its shape, its work and the replays.
struct Op {
    name: String,
    shape: String,
    flops: u64,
    iters: usize,
}

/// Why the `_sm90` kernel `kernel` cannot run here, if it cannot: not a 9.0 device, or a shape
/// it does not take.
fn unavailable(dev: &Device, hopper: bool, takes_shape: bool, kernel: &str) -> Option<String> {
    if !hopper {
        let (major, minor) = dev.compute_capability();
        Some(format!("the _sm90 kernels need compute capability 9.0; this device is {major}.{minor}"))
    } else if !takes_shape {
        Some(format!("{kernel} does not take this shape"))
    } else {
        None
    }
}

/// Times `sm80`, then `sm90` on the same inputs and output buffer (or a skipped row saying why
/// not), the `sm90` row with its output's difference from `sm80`'s.
fn time_pair(
    dev: &Device,
    op: &Op,
    out: &mut DeviceBuffer<f16>,
    sm80: impl FnMut(&mut DeviceBuffer<f16>) -> Result<()>,
    unavailable: Option<String>,
    sm90: impl FnMut(&mut DeviceBuffer<f16>) -> Result<()>,
) -> Result<[KernelTime; 2]> {
    let mma = time_op(dev, op, "sm80", out, sm80)?;
    let base = out.to_host()?;
    let hopper = match unavailable {
        Some(why) => KernelTime {
            op: op.name.clone(),
            family: "sm90",
            kernels: Vec::new(),
            shape: op.shape.clone(),
            flops: op.flops,
            mean_ms: None,
            tflops: None,
            max_rel_diff_vs_sm80: None,
            skipped: Some(why),
        },
        None => {
            let mut row = time_op(dev, op, "sm90", out, sm90)?;
            row.max_rel_diff_vs_sm80 = Some(max_rel_diff(&out.to_host()?, &base));
            row
        }
    };
    Ok([mma, hopper])
}

/// Records `run`'s launches into a graph, replays it once (warm-up, and the output the caller
/// compares), then `op.iters` times between two device events.
fn time_op(
    dev: &Device,
    op: &Op,
    family: &'static str,
    out: &mut DeviceBuffer<f16>,
    mut run: impl FnMut(&mut DeviceBuffer<f16>) -> Result<()>,
) -> Result<KernelTime> {
    out.fill_bytes(0xff)?;
    let ((), launches) = dev.record(|| run(out))?;
    let kernels = launches.iter().map(|l| l.kernel.clone()).collect();
    let graph = dev.graph(launches)?;
    graph.launch()?;
    dev.synchronize()?;
    let total = dev.device_time_ms(|| (0..op.iters).try_for_each(|_| graph.launch()))?;
    let mean_ms = total.map(|t| t / op.iters as f64);
    Ok(KernelTime {
        op: op.name.clone(),
        family,
        kernels,
        shape: op.shape.clone(),
        flops: op.flops,
        mean_ms,
        tflops: mean_ms.filter(|&t| t > 0.0).map(|t| op.flops as f64 / (t * 1e9)),
        max_rel_diff_vs_sm80: None,
        skipped: None,
    })
}

/// Largest `|a - b| / max(1, |b|)`; NaN anywhere is infinitely far.
fn max_rel_diff(a: &[f16], b: &[f16]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let (x, y) = (x.to_f64(), y.to_f64());
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs() / y.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max)
}

/// The rows as a Markdown table (op, family, kernels, ms, TFLOP/s, difference).
pub fn render_table(t: &LayerTimes) -> String {
    let (major, minor) = t.compute_capability;
    let mut s = format!(
        "{} (compute capability {major}.{minor}); batch {} x {} tokens, hidden {}, {} heads, FFN {}; mean of {} graph replays\n\n",
        t.device, t.shape.batch, t.shape.tokens, t.shape.hidden, t.shape.heads, t.shape.ffn, t.iters
    );
    s += "| op | family | kernels | shape | ms | TFLOP/s | max rel diff vs sm80 |\n|---|---|---|---|---:|---:|---:|\n";
    for r in &t.rows {
        let ms = match (r.mean_ms, &r.skipped) {
            (Some(ms), _) => format!("{ms:.4}"),
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "no device clock".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.op,
            r.family,
            r.kernels.join(", "),
            r.shape,
            ms,
            r.tflops.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
            r.max_rel_diff_vs_sm80.map(|v| format!("{v:.2e}")).unwrap_or_else(|| "-".into()),
        );
    }
    s
}

fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}
