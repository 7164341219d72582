//! `fusebert info`: the embedded kernels, their ptxas resource usage, and CUDA devices.
use clap::Args;

use fusebert::{ptx, Device, Error, Result};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print nothing; exit 0 only if a CUDA device opens (1 otherwise, with the reason on stderr).
    #[arg(long)]
    pub cuda_available: bool,
}

pub fn run(a: InfoArgs) -> Result<i32> {
    if a.cuda_available {
        return Ok(match Device::cuda(0) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        });
    }
    let mut out = String::new();
    report(&mut out);
    // Written in one go; a closed pipe is an error, not a panic.
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()).map_err(|e| Error::io("<stdout>", e))?;
    Ok(0)
}

/// The human-readable report of `fusebert info`.
fn report(out: &mut String) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    macro_rules! w {
        ($($t:tt)*) => {{ let _ = writeln!(out, $($t)*); }};
    }
    w!("fusebert {}", env!("CARGO_PKG_VERSION"));
    w!("PTX arch: {}", ptx::PTX_ARCH);
    w!("kernel modules ({}):", ptx::MODULES.len());
    for m in ptx::MODULES {
        w!("  {}: {}", m.name, m.kernels.join(", "));
    }
    w!("ptxas (per kernel and target):");
    for r in ptx::parse_ptxas_report(ptx::PTXAS_REPORT) {
        w!(
            "  {:<40} {}: {:>3} registers, {} B stack, {} B spill stores, {} B spill loads{}",
            format!("{}::{}", r.module, r.kernel),
            r.arch,
            r.registers,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes,
            if r.spill_store_bytes + r.spill_load_bytes > 0 { "  <- SPILLS" } else { "" }
        );
    }
    match fusebert::device::cuda::device_count() {
        Ok(0) => w!("CUDA: driver present, no device found"),
        Ok(n) => {
            w!("CUDA: {n} device(s)");
            for i in 0..n {
                match Device::cuda(i) {
                    Ok(d) => w!("  {i}: {}", d.name()),
                    Err(e) => w!("  {i}: cannot open: {e}"),
                }
            }
        }
        Err(e) => w!("CUDA: none ({e})"),
    }
}
