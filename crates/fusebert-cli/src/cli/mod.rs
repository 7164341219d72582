//! Subcommands of the `fusebert` binary. Each lives in its own module and returns
//! `fusebert::Result<()>`; [`main`] prints errors as `error: <message>` and maps them to exit
//! code 1 (clap's usage errors exit with 2).
//!
//! To add a subcommand: a variant in [`Command`], a module with its `run`, a match arm in
//! [`dispatch`].
use clap::{Parser, Subcommand};

mod bench;
mod conformance;
mod emu;
mod encode;
mod forward;
mod info;
mod input;
mod kernels;
mod roofline;
mod serve;
mod stream;
mod verify;

/// BERT-family encoder inference on hand-written CUDA kernels, with a PTX emulator.
#[derive(Debug, Parser)]
#[command(name = "fusebert", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sentence embeddings (the folder's pooling / Dense / Normalize), one JSON object per input.
    Embed(encode::EmbedArgs),
    /// Sequence classification with the model's classifier head (texts or pairs), one JSON object per input.
    Classify(encode::ClassifyArgs),
    /// Score texts against a query with a cross-encoder, best first (TEI's /rerank).
    Rerank(encode::RerankArgs),
    /// Compiled kernels, ptxas resource usage and CUDA devices.
    Info(info::InfoArgs),
    /// Device forward pass vs the f32 CPU reference, per layer; non-zero exit past tolerance.
    Verify(verify::VerifyArgs),
    /// Time the device forward pass over a matrix of shapes, with per-kernel counts.
    Bench(bench::BenchArgs),
    /// Predicted time of one forward pass on a named GPU (roofline model), per kernel.
    Roofline(roofline::RooflineArgs),
    /// Kernel reports on the emulator.
    Kernels(kernels::KernelsArgs),
    /// The PTX emulator as a tool: run any kernel of any PTX file.
    Emu(emu::EmuArgs),
    /// Hopper conformance kernels (sm_90a) on the GPU or the stand-in: raw words, compare two runs.
    Conformance(conformance::ConformanceArgs),
    /// HTTP embedding server (TEI's API and OpenAI's /v1/embeddings).
    Serve(serve::ServeArgs),
}

/// Parses the command line, runs it, returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help / --version print and exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    // The one place a program opts into the CUDA driver stand-in (FUSEBERT_CUDA_DRIVER=emulator).
    match fusebert_cuda_standin::install_from_env().and_then(|()| dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}{}", flag_hint(&e));
            1
        }
    }
}

/// The command-line way out of a library error, where there is one.
fn flag_hint(e: &fusebert::Error) -> &'static str {
    match e {
        fusebert::Error::InputTooLong { .. } => {
            "; pass --truncate to cut it, or --max-length N up to the position limit"
        }
        _ => "",
    }
}

/// Runs one subcommand; `Ok` carries the exit code (`info --cuda-available` uses 1 for "no").
fn dispatch(cmd: Command) -> fusebert::Result<i32> {
    match cmd {
        Command::Embed(a) => encode::embed(a).map(|()| 0),
        Command::Classify(a) => encode::classify(a).map(|()| 0),
        Command::Rerank(a) => encode::rerank(a).map(|()| 0),
        Command::Info(a) => info::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Bench(a) => bench::run(a).map(|()| 0),
        Command::Roofline(a) => roofline::run(a).map(|()| 0),
        Command::Kernels(a) => kernels::run(a).map(|()| 0),
        Command::Emu(a) => emu::run(a).map(|()| 0),
        Command::Serve(a) => serve::run(a).map(|()| 0),
        Command::Conformance(a) => conformance::run(a),
    }
}
