//! Runs each kernel once on BERT-base-like shapes and reports its emulator counters, FLOPs and
//! the minimum bytes it must move (inputs read once + outputs written once).
//!
//! Shapes (each entry states its own in `shape`): BERT-base widths (hidden 768, 12 heads of 64,
//! FFN 3072) with the token count scaled down to 512 (four sequences of 128) so the whole report
//! runs in seconds on the emulator: int8 GEMM = FFN1 (N 3072, K 768, GELU), int32 GEMM = QKV
//! (N 2304, K 768), fp16 GEMM = FFN2 (N 768, K 3072, + residual), attention for every head dim
//! (heads * head_dim ~ 768); the two epilogue GEMMs run
//! with both block tiles (`..._l` = 128x128). On a compute-capability-9.0 device (the emulator
//! at sm_90) the Hopper kernels follow their mma.sync twins on the same operands:
//! `gemm_int8_sm90` (FFN1), `gemm_int8_i32_sm90` (QKV), `gemm_f16_sm90` (FFN2) and
//! `attention_sm90*` for every head dim. On a GPU the same launches run, without counters.
use half::f16;
use serde::Serialize;

use super::{AttentionShape, Epilogue, Pooling, Q8Out, Tile};
use crate::device::Device;
use fusebert_core::error::{Error, Result};
use fusebert_emu::Counters;

/// One kernel launch's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub kernel: String,
    pub shape: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
    /// Useful floating-point (or integer multiply-add x2) operations.
    pub flops: u64,
    /// Bytes a perfect kernel must move to/from global memory.
    pub min_bytes: u64,
    /// Emulator counters (empty on a GPU).
    pub counters: Option<Counters>,
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}
fn rand_f16(n: usize, seed: &mut u64) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(lcg(seed))).collect()
}
fn rand_i8(n: usize, seed: &mut u64) -> Vec<i8> {
    (0..n).map(|_| (lcg(seed) * 127.0) as i8).collect()
}

/// A GEMM's report shape (`M m, N n, K k` + `what`), FLOPs and minimum bytes.
fn gemm_figures(m: usize, n: usize, k: usize, what: &str, min_bytes: usize) -> (String, u64, u64) {
    (format!("M {m}, N {n}, K {k}{what}"), (2 * m * n * k) as u64, min_bytes as u64)
}

/// Runs every kernel once on `dev` and returns one report per kernel.
pub fn report(dev: &Device) -> Result<Vec<KernelReport>> {
    let mut out = Vec::new();
    let mut seed = 0x5eed_u64;
    let (t, h, ffn, seq) = (512usize, 768usize, 3072usize, 128usize);
    let batch = t / seq;
    let eps = 1e-12f32;
    let mut record = |dev: &Device, kernel: &str, shape: String, flops: u64, min_bytes: u64| -> Result<()> {
        // on the emulator, the kernel actually launched (e.g. the tile variant Auto picked)
        let (kernel, grid, block, smem, counters) = match dev.emulator_backend() {
            Some(e) => {
                let l = e
                    .launches()
                    .pop()
                    .ok_or_else(|| Error::Other(format!("report: no launch recorded for {kernel}")))?;
                (l.kernel, l.grid, l.block, l.shared_mem_bytes, Some(l.counters))
            }
            None => (kernel.to_string(), (0, 0, 0), (0, 0, 0), 0, None),
        };
        out.push(KernelReport { kernel, shape, grid, block, shared_mem_bytes: smem, flops, min_bytes, counters });
        Ok(())
    };

    // layernorm (+ residual + bias), and the q8 variant
    let x = dev.upload(&rand_f16(t * h, &mut seed))?;
    let res = dev.upload(&rand_f16(t * h, &mut seed))?;
    let bias = dev.upload(&rand_f16(h, &mut seed))?;
    let gamma = dev.upload(&rand_f16(h, &mut seed))?;
    let beta = dev.upload(&rand_f16(h, &mut seed))?;
    let mut y = dev.alloc::<f16>(t * h)?;
    let (th, th2) = ((t * h) as u64, (t * h * 2) as u64);
    super::layernorm_f16(
        dev,
        &super::LayerNormF16 {
            x: &x,
            residual: Some(&res),
            bias: Some(&bias),
            gamma: &gamma,
            beta: &beta,
            rows: t,
            hidden: h,
            eps,
        },
        &mut y,
        None,
        super::Variant::Fast,
    )?;
    record(dev, "layernorm_f16", format!("rows {t}, hidden {h}, + residual + bias"), 8 * th, 3 * th2 + 6 * h as u64)?;
    let mut q = dev.alloc::<i8>(t * h)?;
    let mut qs = dev.alloc::<f32>(t)?;
    super::layernorm_f16(
        dev,
        &super::LayerNormF16 {
            x: &x,
            residual: Some(&res),
            bias: Some(&bias),
            gamma: &gamma,
            beta: &beta,
            rows: t,
            hidden: h,
            eps,
        },
        &mut y,
        Some(Q8Out { q: &mut q, scale: &mut qs, smooth: None }),
        super::Variant::Fast,
    )?;
    record(
        dev,
        "layernorm_f16_q8",
        format!("rows {t}, hidden {h}, + residual + bias"),
        10 * th,
        3 * th2 + th + 4 * t as u64 + 6 * h as u64,
    )?;
    super::quantize_i8(
        dev,
        &super::QuantizeF16 { x: &y, smooth: None, rows: t, hidden: h },
        super::QuantizedI8 { q: &mut q, scale: &mut qs, zero: None },
    )?;
    record(dev, "quantize_i8_f16", format!("rows {t}, hidden {h}"), 2 * th, th2 + th + 4 * t as u64)?;
    let mut qz = dev.alloc::<i32>(t)?;
    super::quantize_i8(
        dev,
        &super::QuantizeF16 { x: &y, smooth: None, rows: t, hidden: h },
        super::QuantizedI8 { q: &mut q, scale: &mut qs, zero: Some(&mut qz) },
    )?;
    record(dev, "quantize_i8_asym_f16", format!("rows {t}, hidden {h}, zero points"), 3 * th, th2 + th + 8 * t as u64)?;

    // GEMMs: FFN1 int8 [t, 768] x [3072, 768]^T + GELU; QKV int32 [t, 768] x [2304, 768]^T;
    // FFN2 fp16 [t, 3072] x [768, 3072]^T + residual
    let w8 = dev.upload(&rand_i8(ffn * h, &mut seed))?;
    let ws = dev.upload(&(0..ffn).map(|_| 0.01 + lcg(&mut seed).abs() * 0.01).collect::<Vec<f32>>())?;
    let bias_ffn = dev.upload(&rand_f16(ffn, &mut seed))?;
    let mut c = dev.alloc::<f16>(t * ffn)?;
    // each GEMM's operands, shape and figures once: its mma.sync tiles, then (on sm_90) its
    // Hopper twin, on the same operands
    let hopper = crate::select::hopper(dev);
    let sm90 = super::GemmSm90Launch::default();
    let (m, n, k) = (t, ffn, h);
    let ffn1 = super::GemmInt8 {
        a: &q,
        a_scale: &qs,
        zero_point: None,
        w: &w8,
        w_scale: &ws,
        bias: Some(&bias_ffn),
        epilogue: Epilogue::Gelu,
        shape: super::GemmShape { m, n, k },
    };
    let (what, flops, min) = gemm_figures(m, n, k, ", bias + GELU (FFN1)", m * k + n * k + 2 * m * n + 4 * m + 6 * n);
    for tile in [Tile::Small, Tile::Large] {
        super::gemm_int8(dev, &ffn1, &mut c, super::GemmLaunch::tiled(tile))?;
        record(dev, "gemm_int8_f16", what.clone(), flops, min)?;
    }
    if hopper {
        super::gemm_int8_sm90(dev, &ffn1, &mut c, sm90)?;
        record(dev, "gemm_int8_sm90", what, flops, min)?;
    }
    let n = 3 * h;
    let qkv_shape = super::GemmShape { m, n, k };
    let (what, flops, min) = gemm_figures(m, n, k, " (QKV)", m * k + n * k + 4 * m * n);
    let mut c32 = dev.alloc::<i32>(m * n)?;
    super::gemm_int8_i32(dev, &q, &w8, &mut c32, qkv_shape, super::GemmLaunch::tiled(Tile::Small))?;
    record(dev, "gemm_int8_i32", what.clone(), flops, min)?;
    if hopper {
        super::gemm_int8_i32_sm90(dev, &q, &w8, &mut c32, qkv_shape, sm90)?;
        record(dev, "gemm_int8_i32_sm90", what, flops, min)?;
    }
    let (n, k) = (h, ffn);
    let w16 = dev.upload(&rand_f16(n * k, &mut seed))?;
    let ffn2 = super::GemmF16 {
        a: &c,
        w: &w16,
        bias: Some(&bias),
        epilogue: Epilogue::Residual(&res),
        shape: super::GemmShape { m, n, k },
    };
    let (what, flops, min) = gemm_figures(m, n, k, ", bias + residual (FFN2)", 2 * (m * k + n * k + 2 * m * n + n));
    for tile in [Tile::Small, Tile::Large] {
        super::gemm_f16(dev, &ffn2, &mut y, super::GemmLaunch::tiled(tile))?;
        record(dev, "gemm_f16", what.clone(), flops, min)?;
    }
    if hopper {
        super::gemm_f16_sm90(dev, &ffn2, &mut y, sm90)?;
        record(dev, "gemm_f16_sm90", what, flops, min)?;
    }

    // attention: four sequences of 128 over a [t, 3 * heads * d] qkv, every head dim, heads
    // chosen so that heads * d is close to BERT-base's 768 (12 heads of 64)
    let cu_host: Vec<u32> = (0..=batch as u32).map(|i| i * seq as u32).collect();
    let cu = dev.upload(&cu_host)?;
    for d in super::attention::HEAD_DIMS {
        let heads = (h + d / 2) / d;
        let hd = heads * d;
        let qkv = dev.upload(&rand_f16(t * 3 * hd, &mut seed))?;
        let mut o = dev.alloc::<f16>(t * hd)?;
        super::attention(
            dev,
            &qkv,
            &cu,
            &mut o,
            AttentionShape::from_cu_seqlens(&cu_host, heads, d)?,
            super::AttentionLaunch::default(),
        )?;
        let aflops = (batch * heads * 2 * 2 * seq * seq * d) as u64;
        let (what, min) = (
            format!("{batch} sequences x {seq} tokens, {heads} heads x {d}"),
            (t * 3 * hd * 2 + t * hd * 2 + 4 * (batch + 1)) as u64,
        );
        record(dev, &format!("attention_f16_d{d}"), what.clone(), aflops, min)?;
        if hopper {
            let shape = AttentionShape::from_cu_seqlens(&cu_host, heads, d)?;
            super::attention_sm90(dev, &qkv, &cu, &mut o, shape, super::Sm90Tiling::Auto)?;
            record(dev, &format!("attention_sm90_d{d}"), what, aflops, min)?;
        }
    }

    // pooling (mean + L2) and the embedding
    let mut pooled = dev.alloc::<f32>(batch * h)?;
    super::pool(
        dev,
        &super::PoolF16 {
            x: &y,
            cu_seqlens: &cu,
            batch,
            tokens: t,
            hidden: h,
            mode: Pooling::Mean,
            skip: 0,
            l2norm: true,
        },
        &mut pooled,
    )?;
    record(
        dev,
        "pool_f16",
        format!("{batch} sequences x {seq} tokens, hidden {h}, mean + L2"),
        th + 4 * (batch * h) as u64,
        th2 + 4 * (batch + 1) as u64 + 4 * (batch * h) as u64,
    )?;
    let vocab = 1000;
    let word = dev.upload(&rand_f16(vocab * h, &mut seed))?;
    let posv = dev.upload(&rand_f16(512 * h, &mut seed))?;
    let typ = dev.upload(&rand_f16(2 * h, &mut seed))?;
    let ids = dev.upload(&(0..t as u32).map(|i| (i * 7919) % vocab as u32).collect::<Vec<_>>())?;
    let pids = dev.upload(&(0..t as u32).map(|i| i % seq as u32).collect::<Vec<_>>())?;
    let tids = dev.upload(&vec![0u32; t])?;
    let tables = super::EmbeddingTables {
        word: &word,
        position: &posv,
        token_type: Some(&typ),
        position_offset: 0,
        gamma: &gamma,
        beta: &beta,
        eps,
    };
    let token_ids = super::TokenIds { ids: &ids, pos_ids: &pids, type_ids: &tids };
    super::embedding_layernorm(dev, &token_ids, &tables, &mut y, t, h)?;
    record(
        dev,
        "embedding_layernorm_f16",
        format!("tokens {t}, hidden {h}"),
        10 * th,
        4 * th2 + 12 * t as u64 + 4 * h as u64,
    )?;
    Ok(out)
}

/// A plain-text table of the reports (one row per kernel).
pub fn render_table(reports: &[KernelReport]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>8} {:>10} {:>8}  shape",
        "kernel", "MFLOP", "min KB", "gld KB", "gst KB", "ld eff", "st eff", "simt", "bank conf", "local B"
    );
    for r in reports {
        let c = r.counters.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<24} {:>10.2} {:>10.1} {:>12.1} {:>12.1} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>8}  {}",
            r.kernel,
            r.flops as f64 / 1e6,
            r.min_bytes as f64 / 1e3,
            c.global_load_bytes as f64 / 1e3,
            c.global_store_bytes as f64 / 1e3,
            c.global_load_efficiency(),
            c.global_store_efficiency(),
            c.simt_efficiency(),
            c.shared_bank_conflicts,
            c.local_load_bytes + c.local_store_bytes,
            r.shape
        );
    }
    s
}

/// The reports as JSON: one object per kernel, counters under their names (plus ratios).
pub fn to_json(reports: &[KernelReport]) -> serde_json::Value {
    serde_json::Value::Array(
        reports
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
                if let (Some(c), Some(obj)) = (&r.counters, v.as_object_mut()) {
                    obj.insert("counters".into(), c.to_json());
                }
                v
            })
            .collect(),
    )
}
