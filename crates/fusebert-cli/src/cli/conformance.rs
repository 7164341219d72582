//! `fusebert conformance run --out DIR`: the Hopper conformance kernels on CUDA device 0 (a real
//! sm_90 GPU, or the emulator behind the driver stand-in with `FUSEBERT_CUDA_DRIVER=emulator
//! FUSEBERT_CUDA_STANDIN_ARCH=sm_90`), raw words to `DIR/<case>.bin` and `DIR/conformance.json`.
//! `fusebert conformance compare A B`: the two folders word for word (hardware vs emulator), each
//! differing word named (thread, d[i], m, n; box element; record). docs/testing.md, "Hopper conformance".
use std::path::PathBuf;

use clap::{Args, Subcommand};

use fusebert::kernels::conformance;
use fusebert::{Error, Result};

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    #[command(subcommand)]
    pub command: ConformanceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConformanceCommand {
    /// Run every case; exit 1 when a case fails its reference or does not run.
    Run {
        /// Folder for `<case>.bin` (little-endian u32 words) and `conformance.json`.
        #[arg(long)]
        out: PathBuf,
        /// The sm_90a PTX of kernels/conformance_sm90.cu (default: the one compiled in).
        #[arg(long)]
        ptx: Option<PathBuf>,
        /// Only cases whose name contains this.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Compare two result folders; exit 1 when any case differs.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Differing words listed per case.
        #[arg(long, default_value_t = 8)]
        max_words: usize,
    },
    /// The cases and what each pins down.
    List,
}

pub fn run(a: ConformanceArgs) -> Result<i32> {
    match a.command {
        ConformanceCommand::Run { out, ptx, filter } => {
            let text = match ptx {
                Some(p) => std::fs::read_to_string(&p).map_err(|e| Error::Io { path: p, source: e })?,
                None => conformance::embedded_ptx()
                    .ok_or_else(|| {
                        Error::Input(
                            "this build has no conformance_sm90 PTX compiled in; pass --ptx FILE (nvcc -gencode arch=compute_90a,code=sm_90a -ptx kernels/conformance_sm90.cu)"
                                .into(),
                        )
                    })?
                    .to_string(),
            };
            let report = conformance::run(&text, &filter)?;
            conformance::write_dir(&out, &report)?;
            print!("{}", conformance::summary(&report));
            println!("raw words in {}", out.display());
            Ok(if report.failed == 0 { 0 } else { 1 })
        }
        ConformanceCommand::Compare { a, b, max_words } => {
            let c = conformance::compare_dirs(&a, &b, max_words)?;
            print!("{}", c.text(&a.display().to_string(), &b.display().to_string()));
            Ok(if c.identical() { 0 } else { 1 })
        }
        ConformanceCommand::List => {
            for c in conformance::cases::all() {
                println!("{:<28} {:<32} {}", c.name, c.kernel, c.pins);
            }
            Ok(0)
        }
    }
}
