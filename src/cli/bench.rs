//! `fusebert bench`: latency and throughput of the device forward pass on synthetic batches of
//! the bundled (or given) model. On CUDA this is the GPU benchmark; on the emulator it measures
//! the emulator (useful for its own speed, not the GPU's).
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use fusebert::model::bert::ForwardOptions;
use fusebert::model::BertModel;
use fusebert::tokenize::Batch;
use fusebert::{Device, Error, Result};

use super::forward::{DeviceKind, PrecisionArg};
use super::input;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cuda)]
    pub device: DeviceKind,
    #[arg(long, value_enum, default_value_t = PrecisionArg::F16)]
    pub precision: PrecisionArg,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence (ids cycle through the vocabulary; [CLS] first).
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Timed iterations (after one warm-up pass).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Launch kernel by kernel instead of replaying a CUDA graph (graphs are on by default on
    /// CUDA; the emulator never uses them).
    #[arg(long)]
    pub no_graph: bool,
}

#[derive(Serialize)]
struct BenchLine {
    device: String,
    precision: String,
    batch: usize,
    tokens_per_sequence: usize,
    iterations: usize,
    mean_ms: f64,
    min_ms: f64,
    tokens_per_second: f64,
    /// Whether each forward pass replayed a CUDA graph (one host call) instead of launching
    /// every kernel.
    cuda_graph: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch == 0 || a.tokens == 0 || a.iters == 0 {
        return Err(Error::Input("--batch, --tokens and --iters must be positive".into()));
    }
    let dir = input::model_dir(a.model)?;
    let model = BertModel::load(&dir)?;
    let dev = match a.device {
        DeviceKind::Cuda => Device::cuda(0)?,
        DeviceKind::Emu => Device::emulator()?,
        DeviceKind::Cpu => return Err(Error::Input("bench measures a device: --device cuda|emu".into())),
    };
    let vocab = model.config.vocab_size as u32;
    let ids: Vec<Vec<u32>> = (0..a.batch)
        .map(|b| {
            (0..a.tokens).map(|i| if i == 0 { 101 % vocab } else { (1000 + 7 * i as u32 + b as u32) % vocab }).collect()
        })
        .collect();
    let batch = Batch::from_ids(ids)?;
    let mut bert = super::forward::device_bert(&dev, &model, a.precision.into())?;
    bert.set_graphs(dev.native_graphs() && !a.no_graph);
    bert.forward(&batch, ForwardOptions::default())?; // warm-up: workspace, module load
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        bert.forward(&batch, ForwardOptions::default())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let line = BenchLine {
        device: dev.name(),
        precision: format!("{:?}", a.precision),
        batch: a.batch,
        tokens_per_sequence: a.tokens,
        iterations: a.iters,
        mean_ms: mean,
        min_ms: min,
        tokens_per_second: (a.batch * a.tokens) as f64 / (mean / 1e3),
        cuda_graph: bert.graphs_enabled() && bert.graph_stats().replays > 0,
    };
    println!("{}", serde_json::to_string(&line).expect("JSON"));
    Ok(())
}
