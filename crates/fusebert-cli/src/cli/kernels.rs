//! `fusebert kernels report`: every kernel on standard BERT shapes, on the emulator: counters,
//! FLOPs and minimum bytes.
use clap::{Args, Subcommand};

use fusebert::kernels::report;
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
    },
}

pub fn run(a: KernelsArgs) -> Result<()> {
    match a.command {
        KernelsCommand::Report { json } => {
            let dev = Device::emulator()?;
            let reports = report::report(&dev)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report::to_json(&reports)).expect("JSON"));
            } else {
                print!("{}", report::render_table(&reports));
            }
            Ok(())
        }
    }
}
