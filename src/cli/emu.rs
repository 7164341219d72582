//! `fusebert emu run`: run any PTX kernel on the emulator (the kernel researcher's tool).
use clap::{Args, Subcommand};

use super::emu_run::EmuRunArgs;
use fusebert::Result;

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
        EmuCommand::Run(r) => super::emu_run::run(&r),
    }
}
