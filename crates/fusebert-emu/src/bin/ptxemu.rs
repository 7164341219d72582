//! `ptxemu`: run one kernel of any PTX file on the emulator, with the sanitizers on, tensors in and
//! out as safetensors, and the launch counters as JSON.
use clap::{Parser, Subcommand};

use fusebert_emu::run_cli::{run, EmuRunArgs};

#[derive(Parser, Debug)]
#[command(name = "ptxemu", version, about = "Run and check CUDA kernels' PTX on the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Launch one kernel: tensors from --inputs, `out:` buffers to --output, counters with --counters.
    Run(EmuRunArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
