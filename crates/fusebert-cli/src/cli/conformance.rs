//! `fusebert conformance run --out DIR`: the Hopper conformance kernels on CUDA device 0 (a real
//! sm_90 GPU, or the emulator behind the driver stand-in with `FUSEBERT_CUDA_DRIVER=emulator
//! FUSEBERT_CUDA_STANDIN_ARCH=sm_90`), raw words to `DIR/<case>.bin` and `DIR/conformance.json`.
//! `fusebert conformance compare A B`: the two folders word for word (hardware vs emulator), each
//! differing word named (thread, d[i], m, n; box element; record). docs/testing.md, "Hopper conformance".
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        /// Each case in its own process (this binary again, `--case NAME`), killed after
        /// `--case-timeout` seconds: a fault that kills a GPU context, or a hang, costs one case,
        /// not the run (what scripts/gpu-check.sh uses on hardware).
        #[arg(long)]
        isolate: bool,
        /// Exactly this case (the child processes of `--isolate`).
        #[arg(long, conflicts_with_all = ["filter", "isolate"])]
        case: Option<String>,
        /// Seconds a case may take under `--isolate`.
        #[arg(long, default_value_t = 20)]
        case_timeout: u64,
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
        ConformanceCommand::Run { out, ptx, filter, isolate, case, case_timeout } => {
            if isolate {
                return run_isolated(&out, ptx.as_deref(), &filter, case_timeout);
            }
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
            let report = match &case {
                Some(name) => {
                    if conformance::cases::find(name).is_none() {
                        return Err(Error::Input(format!(
                            "no conformance case {name:?} (see `fusebert conformance list`)"
                        )));
                    }
                    conformance::run(&text, |c| c.name == name)?
                }
                None => conformance::run(&text, |c| c.name.contains(filter.as_str()))?,
            };
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

/// `run --isolate`: every selected case in a child process of this binary (same environment, so
/// the stand-in selection carries over), each given `timeout_s`; the children's folders are merged
/// into `out`. A child that crashes, times out or writes nothing is that case's failure.
fn run_isolated(out: &Path, ptx: Option<&Path>, filter: &str, timeout_s: u64) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("cannot find this program: {e}")))?;
    let scratch = out.join(".cases");
    let mut results = Vec::new();
    let (mut device, mut cc) = (String::new(), String::new());
    for case in conformance::cases::all().into_iter().filter(|c| c.name.contains(filter)) {
        let dir = scratch.join(case.name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(&exe);
        cmd.args(["conformance", "run", "--case", case.name, "--out"]).arg(&dir);
        if let Some(p) = ptx {
            cmd.arg("--ptx").arg(p);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Other(format!("cannot start {}: {e}", exe.display())))?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() > Duration::from_secs(timeout_s) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::Other(format!("waiting for case {}: {e}", case.name))),
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        match (status, conformance::read_dir(&dir)) {
            (None, _) => results.push(conformance::failed_case(&case, format!("timed out after {timeout_s} s"))),
            (Some(_), Ok(mut r)) if r.cases.len() == 1 => {
                device = r.device;
                cc = r.compute_capability;
                results.push(r.cases.remove(0));
            }
            (Some(s), _) => results.push(conformance::failed_case(
                &case,
                format!("its process ended with {s} and no results: {}", stderr.trim()),
            )),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let report = conformance::Report::new(device, cc, results);
    conformance::write_dir(out, &report)?;
    print!("{}", conformance::summary(&report));
    println!("raw words in {} (each case in its own process)", out.display());
    Ok(if report.failed == 0 { 0 } else { 1 })
}
