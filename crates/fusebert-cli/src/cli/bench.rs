//! `fusebert bench`: latency and throughput of the device forward pass over a matrix of
//! shapes (`--batch` x `--tokens`), for a model folder or a built-in shape with random weights
//! (`--config bert-base`), with per-kernel counts: the emulator's counters on `--device emu`,
//! the analytic launch plan (`fusebert::perf::plan`) on CUDA. On the emulator the times are
//! the emulator's (useful for its own speed, not the GPU's). Each pass asks for the default
//! outputs (the pooled embeddings, and the logits of a model with a classifier) and reports
//! the bytes it copied each way (`h2d_bytes`, `d2h_bytes`), counted by the device layer.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use fusebert::device::Transfers;
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::{synthetic, BertModel, Precision};
use fusebert::perf::{self, Heads, LaunchPlan};
use fusebert::{Device, Error, Result};

use super::forward::{DeviceKind, PrecisionArg};
use super::input;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A model folder (default: --config, else $FUSEBERT_MODEL or the bundled model).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub model: Option<PathBuf>,
    /// Built-in shape with random weights: bert-base, bert-large, minilm-l6.
    #[arg(long, value_name = "NAME")]
    pub config: Option<String>,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cuda)]
    pub device: DeviceKind,
    #[arg(long, value_enum, default_value_t = PrecisionArg::F16)]
    pub precision: PrecisionArg,
    /// Sequences per batch; a comma-separated list makes a matrix with --tokens.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Tokens per sequence ([CLS] first, ids cycling through the vocabulary); a list too.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub tokens: Vec<usize>,
    /// Untimed passes before timing (the first also sizes the workspace).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed passes per shape.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// One JSON object per shape, one per line.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG of latency and tokens/s against batch size.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Launch kernel by kernel instead of replaying a CUDA graph (graphs are on by default on
    /// CUDA; the emulator never uses them).
    #[arg(long)]
    pub no_graph: bool,
    /// Emulator only: after each shape, where the host time went: per kernel (launches,
    /// seconds) and per instruction class (warp and thread instructions, seconds).
    #[arg(long)]
    pub profile: bool,
    /// Emulator only: worker threads for blocks (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Serialize, Clone, Copy)]
struct Latency {
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
}

/// Per kernel name, summed over one forward pass.
#[derive(Serialize)]
struct KernelLine {
    name: String,
    launches: u64,
    /// Tensor-core FLOPs executed (emulator: its counter, 2 per MAC; CUDA: the plan's).
    flops: u64,
    /// Useful matrix-product FLOPs (analytic: 2mnk per GEMM).
    useful_flops: u64,
    load_bytes: u64,
    store_bytes: u64,
    /// Per-kernel GPU time: needs CUDA events in the device API (not there yet): null.
    time_ms: Option<f64>,
}

#[derive(Serialize)]
struct BenchLine {
    device: String,
    model: String,
    precision: &'static str,
    batch: usize,
    tokens: usize,
    iterations: usize,
    latency_ms: Latency,
    sequences_per_s: f64,
    tokens_per_s: f64,
    /// Where the kernel counts come from: "emulator counters" or "analytic plan".
    counts: &'static str,
    kernels: Vec<KernelLine>,
    /// Useful FLOPs and global bytes of the pass over the mean latency.
    achieved_tflops: f64,
    achieved_gbps: f64,
    /// On a known GPU (`fusebert::perf::gpu`): achieved over the dense tensor peak of the
    /// precision, and over the DRAM bandwidth, in %; null elsewhere (the emulator included).
    percent_of_peak_flops: Option<f64>,
    percent_of_dram_bandwidth: Option<f64>,
    /// Whether each forward pass replayed a CUDA graph (one host call) instead of launching
    /// every kernel.
    cuda_graph: bool,
    /// Bytes copied host to device per forward pass (the packed ids, positions, token types
    /// and `cu_seqlens`: one copy) and device to host (the outputs asked for: for an
    /// embedding model the pooled f32 embeddings, `batch * hidden * 4`).
    h2d_bytes: u64,
    d2h_bytes: u64,
    /// Copies per forward pass each way.
    h2d_copies: u64,
    d2h_copies: u64,
}

/// Percentile `q` (0..=1) of sorted `v`, nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(times: &[f64]) -> Latency {
    let mut s = times.to_vec();
    s.sort_by(f64::total_cmp);
    Latency {
        mean: s.iter().sum::<f64>() / s.len() as f64,
        p50: percentile(&s, 0.5),
        p90: percentile(&s, 0.9),
        p99: percentile(&s, 0.99),
        min: s[0],
    }
}

fn load_model(a: &BenchArgs) -> Result<(BertModel, String)> {
    if let Some(name) = &a.config {
        let c = synthetic::shape_config(name)?;
        return Ok((synthetic::random_model(&c, 0), name.clone()));
    }
    let dir = input::model_dir(a.model.clone())?;
    Ok((BertModel::load(&dir)?, dir.display().to_string()))
}

/// The model on the device as every command sets it up (the pipeline's; a synthetic shape has
/// no tokenizer, so its int8 is calibrated on random ids).
fn upload(dev: &Device, model: &BertModel, precision: Precision) -> Result<DeviceBert> {
    fusebert::pipeline::device_model(dev, model, precision)
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch.contains(&0) || a.tokens.contains(&0) || a.iters == 0 {
        return Err(Error::Input("--batch, --tokens and --iters must be positive".into()));
    }
    let dev = match a.device {
        DeviceKind::Cuda => Device::cuda(0)?,
        DeviceKind::Emu => Device::emulator_with(fusebert_emu::EmulatorOptions {
            profile: a.profile,
            threads: a.threads.unwrap_or(0),
            ..Default::default()
        })?,
        DeviceKind::Cpu => return Err(Error::Input("bench measures a device: --device cuda|emu".into())),
    };
    if (a.profile || a.threads.is_some()) && !dev.is_emulator() {
        return Err(Error::Input("--profile and --threads are emulator options (--device emu)".into()));
    }
    let (model, name) = load_model(&a)?;
    let precision: Precision = a.precision.into();
    let mut bert = upload(&dev, &model, precision)?;
    bert.set_graphs(dev.native_graphs() && !a.no_graph);
    let shapes: Vec<(usize, usize)> = a.batch.iter().flat_map(|&b| a.tokens.iter().map(move |&t| (b, t))).collect();
    let mut progress = Progress::new(shapes.len() * (a.warmup + a.iters));
    let mut points = Vec::new();
    if !a.json {
        println!("{}", header());
    }
    for &(b, t) in &shapes {
        if t > model.config.max_position_embeddings {
            return Err(Error::Input(format!(
                "--tokens {t} exceeds the model's max_position_embeddings {}",
                model.config.max_position_embeddings
            )));
        }
        let batch = synthetic::id_batch(&model.config, b, t, 0)?;
        let opts = ForwardOptions::default();
        for _ in 0..a.warmup {
            bert.forward(&batch, opts)?;
            progress.tick(b, t);
        }
        let mut times = Vec::with_capacity(a.iters);
        let mut moved = Transfers::default();
        if let Some(e) = dev.emulator_backend() {
            e.take_profile();
        }
        for _ in 0..a.iters {
            if let Some(e) = dev.emulator_backend() {
                e.clear_launches();
            }
            let before = dev.transfers();
            let start = Instant::now();
            bert.forward(&batch, opts)?;
            dev.synchronize()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            // the last pass's (the first may also size the workspace: no copies there either)
            moved = dev.transfers() - before;
            progress.tick(b, t);
        }
        let plan = perf::forward_plan(&model.config, precision, &vec![t; b], Heads::of(&model, opts.outputs));
        let mut line = bench_line(&dev, &name, precision, b, t, &times, &plan);
        line.cuda_graph = bert.graphs_enabled() && bert.graph_stats().replays > 0;
        (line.h2d_bytes, line.d2h_bytes) = (moved.h2d_bytes, moved.d2h_bytes);
        (line.h2d_copies, line.d2h_copies) = (moved.h2d_copies, moved.d2h_copies);
        points.push(perf::svg::BenchPoint {
            batch: b,
            tokens: t,
            latency_ms: line.latency_ms.mean,
            tokens_per_s: line.tokens_per_s,
        });
        progress.clear();
        if a.json {
            println!("{}", serde_json::to_string(&line).map_err(|e| Error::Other(e.to_string()))?);
        } else {
            println!("{}", row(&line));
        }
        if a.profile && !a.json {
            print_profile(&dev, a.iters);
        }
    }
    if let Some(path) = &a.plot {
        let title = format!("{name} {} on {}", if precision == Precision::Int8 { "int8" } else { "f16" }, dev.name());
        std::fs::write(path, perf::svg::bench_svg(&points, &title)).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

fn bench_line(
    dev: &Device,
    name: &str,
    precision: Precision,
    b: usize,
    t: usize,
    times: &[f64],
    plan: &LaunchPlan,
) -> BenchLine {
    let lat = latency(times);
    let mut kernels: Vec<KernelLine> = Vec::new();
    let entry = |kernels: &mut Vec<KernelLine>, name: &str| -> usize {
        kernels.iter().position(|k| k.name == name).unwrap_or_else(|| {
            kernels.push(KernelLine {
                name: name.into(),
                launches: 0,
                flops: 0,
                useful_flops: 0,
                load_bytes: 0,
                store_bytes: 0,
                time_ms: None,
            });
            kernels.len() - 1
        })
    };
    let counts = match dev.emulator_backend() {
        Some(e) => {
            for r in e.launches() {
                let i = entry(&mut kernels, &r.kernel);
                let k = &mut kernels[i];
                k.launches += r.counters.launches.max(1);
                k.flops += 2 * r.counters.tensor_macs;
                k.load_bytes += r.counters.global_load_bytes;
                k.store_bytes += r.counters.global_store_bytes;
            }
            "emulator counters"
        }
        None => {
            for l in &plan.launches {
                let i = entry(&mut kernels, &l.kernel);
                let k = &mut kernels[i];
                k.launches += 1;
                k.flops += l.tensor_flops;
                k.load_bytes += l.load_bytes;
                k.store_bytes += l.store_bytes;
            }
            "analytic plan"
        }
    };
    for l in &plan.launches {
        let i = entry(&mut kernels, &l.kernel);
        kernels[i].useful_flops += l.flops;
    }
    let secs = lat.mean / 1e3;
    let bytes: u64 = kernels.iter().map(|k| k.load_bytes + k.store_bytes).sum();
    let (tflops, gbps) = (plan.flops() as f64 / secs / 1e12, bytes as f64 / secs / 1e9);
    let spec = if dev.is_emulator() { None } else { perf::gpu::gpu_for_device_name(&dev.name()) };
    let peak = |g: &perf::GpuSpec| if precision == Precision::Int8 { g.peak_tops_int8 } else { g.peak_tflops_f16 };
    BenchLine {
        device: dev.name(),
        model: name.into(),
        precision: if precision == Precision::Int8 { "int8" } else { "f16" },
        batch: b,
        tokens: t,
        iterations: times.len(),
        latency_ms: lat,
        sequences_per_s: b as f64 / secs,
        tokens_per_s: (b * t) as f64 / secs,
        counts,
        achieved_tflops: tflops,
        achieved_gbps: gbps,
        percent_of_peak_flops: spec.as_ref().map(|g| 100.0 * tflops / peak(g)),
        percent_of_dram_bandwidth: spec.as_ref().map(|g| 100.0 * gbps / g.dram_gbps),
        kernels,
        cuda_graph: false,
        h2d_bytes: 0,
        d2h_bytes: 0,
        h2d_copies: 0,
        d2h_copies: 0,
    }
}

fn header() -> String {
    format!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9} {:>10} {:>10}",
        "batch", "tokens", "mean ms", "p50 ms", "p99 ms", "min ms", "tokens/s", "TFLOP/s", "h2d B", "d2h B"
    )
}

fn row(l: &BenchLine) -> String {
    format!(
        "{:>5} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0} {:>9.4} {:>10} {:>10}",
        l.batch,
        l.tokens,
        l.latency_ms.mean,
        l.latency_ms.p50,
        l.latency_ms.p99,
        l.latency_ms.min,
        l.tokens_per_s,
        l.achieved_tflops,
        l.h2d_bytes,
        l.d2h_bytes
    )
}

/// A one-line progress counter on stderr, drawn only when stderr is a terminal (so piped and
/// test output stays clean). Plain text rather than the indicatif crate: one line does not
/// justify a new dependency.
struct Progress {
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, done: 0, on: std::io::stderr().is_terminal() && total > 1 }
    }
    fn tick(&mut self, b: usize, t: usize) {
        self.done += 1;
        if self.on {
            eprint!("\r[{}/{}] batch {b} x {t} tokens ", self.done, self.total);
        }
    }
    fn clear(&self) {
        if self.on {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// Host time per kernel (the last pass's launches) and per instruction class (every timed pass).
fn print_profile(dev: &Device, passes: usize) {
    let Some(emu) = dev.emulator_backend() else { return };
    let per_kernel = emu.time_per_kernel();
    let total: f64 = per_kernel.iter().map(|k| k.2).sum();
    println!("\nemulator host time per kernel (last pass, wall clock):");
    println!("{:<36} {:>8} {:>10} {:>7}", "kernel", "launches", "seconds", "share");
    for (k, n, secs) in &per_kernel {
        println!("{k:<36} {n:>8} {secs:>10.3} {:>6.1}%", 100.0 * secs / total.max(f64::MIN_POSITIVE));
    }
    let p = emu.take_profile();
    println!("\nper instruction class ({passes} timed pass(es); seconds summed over worker threads):\n{p}\n");
}
