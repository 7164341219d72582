//! `fusebert kernels report`: every kernel on standard BERT shapes, on the emulator: counters,
//! FLOPs and minimum bytes. `fusebert kernels markdown`: the tables of docs/kernels.md (ptxas
//! resources of every kernel, the forward pass's launches), generated from the shipped PTX and
//! the launch schedule; scripts/check-docs.sh fails CI when the document differs.
//! `fusebert kernels time`: device time per kernel of one BERT layer, the Hopper `_sm90` kernels
//! beside mma.sync (CUDA events; gpu-check.sh step 4).
use clap::{Args, Subcommand};

use super::verify::EmuArch;

use fusebert::kernels::report;
use fusebert::model::{synthetic, Precision};
use fusebert::perf::{forward_plan, Heads};
use fusebert::{Device, Result};

#[derive(Debug, Args)]
pub struct KernelsArgs {
    #[command(subcommand)]
    pub command: KernelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum KernelsCommand {
    /// Counters (traffic, coalescing, bank conflicts, instruction mix) of every kernel.
    Report {
        /// JSON (one entry per kernel, counters under their names) instead of a table.
        #[arg(long)]
        json: bool,
        /// The architecture the emulator presents: sm_90 adds the Hopper `_sm90` kernels, each
        /// after its mma.sync twin on the same operands.
        #[arg(long, value_enum, default_value_t = EmuArch::Sm80)]
        arch: EmuArch,
    },
    /// The generated tables of docs/kernels.md (ptxas resources, launch schedule) as Markdown.
    Markdown,
    /// Device time (CUDA events over graph replays) of every GEMM of one BERT layer (fp16 and
    /// int8) and its attention: the mma.sync kernels, and on compute capability 9.0 the Hopper
    /// `_sm90` kernels beside them with their largest difference from mma.sync.
    Time(TimeArgs),
}

#[derive(Debug, Args)]
pub struct TimeArgs {
    /// cuda (the first GPU) or emu (runs and compares the kernels; the emulator has no clock).
    #[arg(long, default_value = "cuda", value_parser = ["cuda", "emu"])]
    pub device: String,
    /// The architecture the emulator presents (--device emu).
    #[arg(long, value_enum, default_value_t = EmuArch::Sm80)]
    pub arch: EmuArch,
    /// Sequences of the layer's batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Hidden size (BERT-base: 768).
    #[arg(long, default_value_t = 768)]
    pub hidden: usize,
    /// Attention heads (head dim = hidden / heads).
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    /// FFN inner size.
    #[arg(long, default_value_t = 3072)]
    pub ffn: usize,
    /// Graph replays averaged per kernel.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: KernelsArgs) -> Result<()> {
    match a.command {
        KernelsCommand::Report { json, arch } => {
            use fusebert::device::emulator::{Arch, EmulatorOptions};
            let arch = match arch {
                EmuArch::Sm80 => Arch::Sm80,
                EmuArch::Sm90 => Arch::Sm90,
            };
            let dev = Device::emulator_with(EmulatorOptions { arch, ..Default::default() })?;
            let reports = report::report(&dev)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report::to_json(&reports)).expect("JSON"));
            } else {
                print!("{}", report::render_table(&reports));
            }
            Ok(())
        }
        KernelsCommand::Markdown => {
            print!("{}", markdown()?);
            Ok(())
        }
        KernelsCommand::Time(t) => time(t),
    }
}

fn time(a: TimeArgs) -> Result<()> {
    use fusebert::device::emulator::{Arch, EmulatorOptions};
    use fusebert::kernels::timing::{render_table, time_layer, LayerShape};
    let dev = match (a.device.as_str(), a.arch) {
        ("cuda", EmuArch::Sm80) => Device::cuda(0)?,
        ("cuda", EmuArch::Sm90) => {
            return Err(fusebert::Error::Input(
                "--arch applies to --device emu (a CUDA device has its own compute capability)".into(),
            ))
        }
        (_, EmuArch::Sm80) => Device::emulator()?,
        (_, EmuArch::Sm90) => Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, ..Default::default() })?,
    };
    let shape = LayerShape { batch: a.batch, tokens: a.tokens, hidden: a.hidden, heads: a.heads, ffn: a.ffn };
    let times = time_layer(&dev, shape, a.iters)?;
    if a.json {
        println!("{}", serde_json::to_string(&times).expect("JSON"));
    } else {
        print!("{}", render_table(&times));
    }
    Ok(())
}

/// The generated part of docs/kernels.md.
fn markdown() -> Result<String> {
    let mut s = String::new();
    s += "### Registers and shared memory (`ptxas -v`, shipped PTX)\n\n";
    s += "| module | kernel | arch | registers | static shared (B) | stack (B) | spills (B, store/load) |\n";
    s += "|---|---|---|---:|---:|---:|---|\n";
    for r in fusebert::ptx::parse_ptxas_report(fusebert::ptx::PTXAS_REPORT) {
        s += &format!(
            "| {} | `{}` | {} | {} | {} | {} | {}/{} |\n",
            r.module,
            r.kernel,
            r.arch,
            r.registers,
            r.static_shared_bytes,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes
        );
    }
    s += "\n### Launches of one forward pass (the schedule)\n\n";
    s += "Launch counts per precision and requested outputs (embeddings only; with the pooler and a 2-label \
          classifier), from `model::schedule`:\n\n";
    s += "| model shape | precision | embeddings | + pooler + classifier |\n|---|---|---:|---:|\n";
    for name in ["minilm-l6", "bert-base", "bert-large"] {
        let c = synthetic::shape_config(name)?;
        for precision in [Precision::F16, Precision::Int8] {
            let count = |heads: Heads| forward_plan(&c, precision, &[128], heads).launches.len();
            let both = count(Heads { pooler: true, labels: 2 });
            s += &format!("| {name} | {precision:?} | {} | {both} |\n", count(Heads::NONE));
        }
    }
    for precision in [Precision::F16, Precision::Int8] {
        let c = synthetic::shape_config("minilm-l6")?;
        let plan = forward_plan(&c, precision, &[128], Heads::NONE);
        s += &format!("\nMiniLM-L6 {precision:?}, one sequence of 128 tokens (layer 0 and what is outside the layers; every layer repeats layer 0):\n\n");
        s += "| # | step | layer | kernel | grid | block | dyn. shared (B) | GFLOP | min. bytes |\n";
        s += "|---:|---|---:|---|---|---:|---:|---:|---:|\n";
        for (i, l) in plan.launches.iter().enumerate().filter(|(_, l)| l.layer.is_none_or(|x| x == 0)) {
            s += &format!(
                "| {i} | {} | {} | `{}` | {}x{}x{} | {} | {} | {:.3} | {} |\n",
                l.step,
                l.layer.map_or("-".to_string(), |x| x.to_string()),
                l.kernel,
                l.grid.0,
                l.grid.1,
                l.grid.2,
                l.threads_per_block(),
                l.shared_mem_bytes,
                l.flops as f64 / 1e9,
                l.min_bytes()
            );
        }
    }
    Ok(s)
}
