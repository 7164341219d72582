//! `fusebert emu run`: the same as `ptxemu run` (fusebert-emu), run any PTX kernel on the emulator.
use clap::{Args, Subcommand};

use fusebert::Result;
use fusebert_emu::run_cli::EmuRunArgs;

#[derive(Debug, Args)]
pub struct EmuArgs {
    #[command(subcommand)]
    pub command: EmuCommand,
}

#[derive(Debug, Subcommand)]
pub enum EmuCommand {
    /// Run one kernel of a PTX file on the emulator (sanitizers on; a finding exits non-zero).
    Run(EmuRunArgs),
}

pub fn run(a: EmuArgs) -> Result<()> {
    match a.command {
        EmuCommand::Run(r) => Ok(fusebert_emu::run_cli::run(&r)?),
    }
}
