//! `fusebert roofline`: predicted time of one forward pass on a named GPU, per kernel, from the
//! analytic launch plan (no GPU, no emulator run: see `fusebert::perf`).
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use fusebert::model::{synthetic, BertConfig, Precision};
use fusebert::perf::{self, gpu, Heads, KernelChoice, KernelFamily};
use fusebert::{Error, Result};

use super::forward::PrecisionArg;

#[derive(Debug, Args)]
pub struct RooflineArgs {
    /// GPU: a100-80gb, h100-sxm, h200, l40s.
    #[arg(long, default_value = "h100-sxm")]
    pub gpu: String,
    /// Built-in model shape: bert-base, bert-large, minilm-l6 (default bert-base).
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    pub config: Option<String>,
    /// A model folder (only its config.json is read). The pass predicted is an embedding pass:
    /// the encoder and the pooling; no pooler, no classifier (nobody asked for their outputs).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    #[arg(long, value_enum, default_value_t = PrecisionArg::F16)]
    pub precision: PrecisionArg,
    /// Replay the pass as a CUDA graph (per-node cost instead of per-launch overhead).
    #[arg(long)]
    pub graphs: bool,
    /// GEMM and attention kernels: `sm90` (TMA + wgmma, compute capability 9.0 only), `sm80`
    /// (mma.sync, every GPU), `auto` (sm90 on h100-sxm and h200, else sm80), as
    /// FUSEBERT_KERNELS selects them at run time.
    #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
    pub kernels: KernelsArg,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG roofline plot here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelsArg {
    Auto,
    Sm80,
    Sm90,
}

impl From<KernelsArg> for KernelChoice {
    fn from(k: KernelsArg) -> KernelChoice {
        match k {
            KernelsArg::Auto => KernelChoice::Auto,
            KernelsArg::Sm80 => KernelChoice::Sm80,
            KernelsArg::Sm90 => KernelChoice::Sm90,
        }
    }
}

/// The config of `--config` or `--model` (default: bert-base), and its display name.
pub fn config_of(config: Option<&str>, model: Option<&PathBuf>) -> Result<(BertConfig, String)> {
    match (config, model) {
        (_, Some(dir)) => Ok((BertConfig::from_file(&dir.join("config.json"))?, dir.display().to_string())),
        (name, None) => {
            let name = name.unwrap_or("bert-base");
            Ok((synthetic::shape_config(name)?, name.to_string()))
        }
    }
}

pub fn run(a: RooflineArgs) -> Result<()> {
    if a.batch == 0 || a.tokens == 0 {
        return Err(Error::Input("--batch and --tokens must be positive".into()));
    }
    let g = gpu::gpu(&a.gpu)?;
    let (c, name) = config_of(a.config.as_deref(), a.model.as_ref())?;
    if a.tokens > c.max_position_embeddings {
        return Err(Error::Input(format!(
            "--tokens {} exceeds the model's max_position_embeddings {}",
            a.tokens, c.max_position_embeddings
        )));
    }
    let family = perf::sm90::resolve(KernelChoice::from(a.kernels), &g)?;
    let lengths = vec![a.tokens; a.batch];
    let precision: Precision = a.precision.into();
    let predict = |f: KernelFamily| {
        let plan = perf::forward_plan_for(&c, precision, &lengths, Heads::NONE, f);
        perf::predict(&g, &plan, precision, a.graphs)
    };
    let p = predict(family);
    // on a GPU with both families: the same pass in each, step by step
    let comparison = (g.compute_capability == (9, 0)).then(|| {
        let (sm80, sm90) = match family {
            KernelFamily::Sm80 => (p.clone(), predict(KernelFamily::Sm90)),
            KernelFamily::Sm90 => (predict(KernelFamily::Sm80), p.clone()),
        };
        (perf::compare_families(&sm80, &sm90), sm80.total_ms, sm90.total_ms)
    });
    if let Some(path) = &a.plot {
        let title = format!("{name} {}x{} {} on {} (predicted)", a.batch, a.tokens, p.precision, g.name);
        std::fs::write(path, perf::svg::roofline_svg(&p, &title)).map_err(|e| Error::io(path, e))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&p).map_err(|e| Error::Other(e.to_string()))?;
        v["model"] = name.into();
        v["batch"] = a.batch.into();
        v["tokens_per_sequence"] = a.tokens.into();
        v["family_comparison"] = match &comparison {
            Some((rows, sm80_ms, sm90_ms)) => serde_json::json!({
                "sm80_total_ms": sm80_ms,
                "sm90_total_ms": sm90_ms,
                "steps": rows,
            }),
            None => serde_json::Value::Null,
        };
        println!("{v}");
    } else {
        print!("{}", table(&p, &name, a.batch, a.tokens));
        if let Some((rows, sm80_ms, sm90_ms)) = &comparison {
            print!("{}", family_table(rows, *sm80_ms, *sm90_ms));
        }
    }
    Ok(())
}

/// Predicted time per step in both kernel families (the `_sm90` figures are predictions of
/// kernels verified only on the emulator).
fn family_table(rows: &[perf::FamilyRow], sm80_ms: f64, sm90_ms: f64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "mma.sync (sm80) vs wgmma (_sm90), PREDICTED; _sm90 kernels verified only on the emulator:");
    let _ = writeln!(
        s,
        "{:<13} {:>4} {:<24} {:>9} {:<26} {:<18} {:>9}",
        "step", "n", "sm80 kernel", "sm80 us", "sm90 kernel", "sm90 tile", "sm90 us"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<13} {:>4} {:<24} {:>9.1} {:<26} {:<18} {:>9.1}",
            r.step,
            r.launches,
            r.sm80_kernel,
            r.sm80_us,
            r.sm90_kernel,
            r.sm90_tile.as_deref().unwrap_or("-"),
            r.sm90_us
        );
    }
    let _ = writeln!(s, "total sm80 {sm80_ms:.3} ms, sm90 {sm90_ms:.3} ms");
    s
}

fn table(p: &perf::Prediction, name: &str, batch: usize, tokens: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{name} {batch}x{tokens} {} on {}, {} kernels (PREDICTED by the roofline model, not measured){}",
        p.precision,
        p.gpu.name,
        p.kernel_family.name(),
        if p.graphs { ", CUDA graph" } else { "" }
    );
    let _ = writeln!(
        s,
        "{:<26} {:<13} {:>4} {:>10} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "kernel", "step", "n", "GFLOP", "DRAM MB", "time us", "TFLOP/s", "bound", "of roof"
    );
    for k in &p.kernels {
        let _ = writeln!(
            s,
            "{:<26} {:<13} {:>4} {:>10.2} {:>9.2} {:>9.1} {:>9.1} {:>8} {:>6.0}%",
            k.name,
            k.step,
            k.launches,
            k.flops as f64 / 1e9,
            k.dram_bytes as f64 / 1e6,
            k.time_us,
            k.tflops,
            format!("{:?}", k.bound).to_lowercase(),
            k.fraction_of_roof * 100.0
        );
    }
    let _ = writeln!(
        s,
        "total {:.3} ms; floor {:.3} ms (FLOPs at dense peak {:.3} ms, weights+I/O at DRAM bandwidth {:.3} ms); {} launches",
        p.total_ms,
        p.floor_ms,
        p.flop_floor_ms,
        p.byte_floor_ms,
        p.launches.len()
    );
    s
}
