//! A CUDA driver stand-in on the PTX emulator: the `cu*` entry points cudarc calls, so that the
//! CUDA backend (`fusebert_kernels::device::cuda`) and everything above it run, unchanged, on a
//! machine with no GPU. A dev-only crate: product code never installs it; tests and the `fusebert`
//! binary opt in ([`install_from_env`], [`cuda_device`]).
//!
//! How it is wired (see `trampoline.rs` and build.rs):
//! - build.rs compiles a tiny dependency-free library, `libfusebert_cudaemu.so`, whose ELF SONAME
//!   is `libcuda.so` and which exports every driver symbol we need, each forwarding to one
//!   dispatch function that [`install`] registers: [`driver`]'s model, in this process.
//! - [`install`] opens that library **by absolute path** before cudarc's first driver call.
//!   glibc then answers cudarc's `dlopen("libcuda.so")` with the already loaded object (a
//!   loaded object's SONAME is matched before any file search). Nothing is put on a search
//!   path and no file is named like a driver, so a real `libcuda` can never be shadowed by
//!   accident: the stand-in exists in a process only when that process asked for it.
//! - The choice is process-wide and permanent (cudarc keeps the first library it opened).
//!
//! Selection: `FUSEBERT_CUDA_DRIVER=emulator` (= `emulator:deferred`), `emulator:eager` or
//! `emulator:deferred` makes [`install_from_env`] (called by the `fusebert` binary at start-up
//! and by the tests) install it; `FUSEBERT_CUDA_STANDIN_ARCH=sm_90`
//! reports an sm_90 device (default sm_80); `FUSEBERT_CUDA_STANDIN_GPU=a100-80gb|h100-sxm|h200`
//! presents that GPU (its driver name, memory and attributes, [`gpus`]; the compute capability
//! follows); `FUSEBERT_CUDA_STANDIN_DEVICES=N` reports N devices
//! (default 1), each with its own emulator; `FUSEBERT_CUDA_STANDIN_FAIL=DEVICE:AFTER` makes
//! device DEVICE fail for good (the sticky `CUDA_ERROR_ILLEGAL_ADDRESS`) once it has run AFTER
//! kernels; `CUDA_VISIBLE_DEVICES` chooses among the reported devices as with a real driver.
//! Unset, nothing changes.
//!
//! What it cannot tell you: timing (events measure a modelled clock, see [`driver`]), the real
//! memory model (one global FIFO: streams never overlap, so missing cross-stream waits go
//! unnoticed), and anything the emulator does not model (L2, clocks, occupancy).
use std::sync::OnceLock;

use fusebert_core::{Error, Result};
use fusebert_kernels::Device;

pub mod driver;
pub mod gpus;

/// When queued work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At enqueue, on the calling thread (the emulator backend's semantics).
    Eager,
    /// Only when the host must observe it: a synchronisation, a blocking copy, an event or
    /// stream query, a free. The laziest a GPU may legally be, so host code that reads results
    /// before synchronising sees stale (poisoned) data instead of the right answer.
    Deferred,
}

/// What the stand-in reports and how it schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandinOptions {
    pub mode: Mode,
    /// Compute capability reported: (8, 0) or (9, 0) (the GPU's when `gpu` is set).
    pub compute_capability: (u32, u32),
    /// The GPU presented (name, total memory, attributes); `None`: a device named as the
    /// stand-in, with the attributes of the A100 (8.0) or H100 SXM (9.0) and 80 GiB.
    pub gpu: Option<gpus::GpuModel>,
    /// Devices reported (1 to [`driver::MAX_DEVICES`]), each with its own emulator.
    pub devices: usize,
    /// `(device, after)`: that device fails for good once it has run `after` kernels (every
    /// later kernel faults: the sticky `CUDA_ERROR_ILLEGAL_ADDRESS`), as a GPU that dies.
    pub fail: Option<(usize, u64)>,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions { mode: Mode::Deferred, compute_capability: (8, 0), gpu: None, devices: 1, fail: None }
    }
}

/// The trampoline library build.rs made (absolute path; opened by [`install`]).
pub const TRAMPOLINE: &str = env!("FUSEBERT_STANDIN_TRAMPOLINE");

/// The environment variable that selects the stand-in.
pub const DRIVER_ENV: &str = "FUSEBERT_CUDA_DRIVER";
/// The environment variable that selects the reported architecture (`sm_80` or `sm_90`).
pub const ARCH_ENV: &str = "FUSEBERT_CUDA_STANDIN_ARCH";
/// The environment variable that selects the GPU presented (`a100-80gb`, `h100-sxm`, `h200`).
pub const GPU_ENV: &str = "FUSEBERT_CUDA_STANDIN_GPU";
/// The environment variable that sets the number of devices reported.
pub const DEVICES_ENV: &str = "FUSEBERT_CUDA_STANDIN_DEVICES";
/// The environment variable that makes a device fail: `DEVICE:AFTER_LAUNCHES`.
pub const FAIL_ENV: &str = "FUSEBERT_CUDA_STANDIN_FAIL";

/// Parses `FUSEBERT_CUDA_DRIVER` (and `FUSEBERT_CUDA_STANDIN_ARCH`): `None` when unset or empty
/// (the real driver), the options for `emulator[:eager|:deferred]`, a typed error otherwise.
pub fn options_from_env() -> Result<Option<StandinOptions>> {
    let v = std::env::var(DRIVER_ENV).unwrap_or_default();
    let mode = match v.trim() {
        "" => return Ok(None),
        "emulator" | "emulator:deferred" => Mode::Deferred,
        "emulator:eager" => Mode::Eager,
        other => {
            return Err(Error::Input(format!(
                "{DRIVER_ENV}={other:?}: expected emulator, emulator:eager or emulator:deferred (or unset for the real driver)"
            )))
        }
    };
    let (compute_capability, gpu) =
        parse_arch_and_gpu(&std::env::var(ARCH_ENV).unwrap_or_default(), &std::env::var(GPU_ENV).unwrap_or_default())?;
    let (devices, fail) = parse_devices_and_fail(
        &std::env::var(DEVICES_ENV).unwrap_or_default(),
        &std::env::var(FAIL_ENV).unwrap_or_default(),
    )?;
    Ok(Some(StandinOptions { mode, compute_capability, gpu, devices, fail }))
}

/// The values of `FUSEBERT_CUDA_STANDIN_ARCH` (empty: sm_80, or the GPU's) and
/// `FUSEBERT_CUDA_STANDIN_GPU` (empty: none): the compute capability and the GPU presented. An
/// arch that contradicts the GPU is an error, not a silent choice.
pub fn parse_arch_and_gpu(arch: &str, gpu: &str) -> Result<((u32, u32), Option<gpus::GpuModel>)> {
    let gpu = match gpu.trim() {
        "" => None,
        key => Some(gpus::gpu(key).ok_or_else(|| {
            let keys: Vec<&str> = gpus::GPUS.iter().map(|g| g.key).collect();
            Error::Input(format!("{GPU_ENV}={key:?}: expected one of {}", keys.join(", ")))
        })?),
    };
    let cc = match arch.trim() {
        "" => gpu.map_or((8, 0), |g| g.compute_capability),
        "sm_80" => (8, 0),
        "sm_90" => (9, 0),
        other => return Err(Error::Input(format!("{ARCH_ENV}={other:?}: expected sm_80 or sm_90"))),
    };
    if let Some(g) = gpu.filter(|g| g.compute_capability != cc) {
        return Err(Error::Input(format!(
            "{ARCH_ENV}={} contradicts {GPU_ENV}={} (compute capability {}.{})",
            arch.trim(),
            g.key,
            g.compute_capability.0,
            g.compute_capability.1
        )));
    }
    Ok((cc, gpu))
}

/// The values of `FUSEBERT_CUDA_STANDIN_DEVICES` (empty: 1) and `FUSEBERT_CUDA_STANDIN_FAIL`
/// (empty: none; else `DEVICE:AFTER_LAUNCHES`, a device that exists).
pub fn parse_devices_and_fail(devices: &str, fail: &str) -> Result<(usize, Option<(usize, u64)>)> {
    let devices = match devices.trim() {
        "" => 1,
        v => v.parse::<usize>().ok().filter(|n| (1..=driver::MAX_DEVICES).contains(n)).ok_or_else(|| {
            Error::Input(format!("{DEVICES_ENV}={v:?}: expected a number of devices from 1 to {}", driver::MAX_DEVICES))
        })?,
    };
    let fail = match fail.trim() {
        "" => None,
        v => Some(parse_fail(v, devices)?),
    };
    Ok((devices, fail))
}

/// `DEVICE:AFTER_LAUNCHES`, the device below `devices`.
fn parse_fail(v: &str, devices: usize) -> Result<(usize, u64)> {
    let bad = |why: &str| Error::Input(format!("{FAIL_ENV}={v:?}: expected DEVICE:AFTER_LAUNCHES ({why})"));
    let (d, n) = v.split_once(':').ok_or_else(|| bad("no colon"))?;
    let d: usize = d.trim().parse().map_err(|_| bad("DEVICE is not a number"))?;
    let n: u64 = n.trim().parse().map_err(|_| bad("AFTER_LAUNCHES is not a number"))?;
    if d >= devices {
        return Err(bad(&format!("device {d}, but {DEVICES_ENV} reports {devices}")));
    }
    Ok((d, n))
}

/// Opens the trampoline by absolute path and registers the driver model, once per process;
/// later calls only change the options (flushing queued work first). Must precede cudarc's
/// first driver call in the process, or cudarc keeps whatever it opened before (which
/// `device::cuda` detects by the device name and reports).
pub fn install(opts: StandinOptions) -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    driver::configure(opts);
    LOADED.get_or_init(load_trampoline).clone().map_err(Error::NoCudaDevice)?;
    fusebert_kernels::device::cuda::mark_standin_installed();
    Ok(())
}

/// Installs the stand-in when `FUSEBERT_CUDA_DRIVER` asks for it (and it is not installed yet:
/// a test that installed it with explicit options keeps them); does nothing when it is unset.
pub fn install_from_env() -> Result<()> {
    if installed() {
        return Ok(());
    }
    match options_from_env()? {
        Some(opts) => install(opts),
        None => Ok(()),
    }
}

/// `Device::cuda(ordinal)` after [`install_from_env`]: the real GPU, or the stand-in when the
/// environment selects it.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    install_from_env()?;
    Device::cuda(ordinal)
}

/// True once [`install`] has succeeded in this process.
pub fn installed() -> bool {
    driver::is_configured()
}

fn load_trampoline() -> std::result::Result<(), String> {
    let path = TRAMPOLINE;
    if !std::path::Path::new(path).is_file() {
        return Err(format!(
            "the CUDA driver stand-in library {path} (built by build.rs) is missing; rebuild fusebert-cuda-standin on this machine"
        ));
    }
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: our own trampoline, whose initialisers do nothing.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| format!("{path}: {e}"))?;
    type Register = extern "C" fn(driver::Dispatch);
    // SAFETY: the trampoline exports this symbol with exactly this signature.
    let register =
        unsafe { lib.get::<Register>(b"fusebert_standin_register\0") }.map_err(|e| format!("{path}: {e}"))?;
    register(driver::dispatch);
    // The object must stay loaded for the life of the process: cudarc holds its symbols.
    std::mem::forget(lib);
    Ok(())
}

/// Number of calls of driver entry point `name` since the last [`reset_call_counts`] (e.g.
/// `"cuLaunchKernel"`, `"cuGraphLaunch"`): how tests count host launches per forward pass.
pub fn call_count(name: &str) -> u64 {
    driver::call_count(name)
}

/// Zeroes the per-entry-point call counts.
pub fn reset_call_counts() {
    driver::reset_call_counts()
}

/// The devices a process sees under `CUDA_VISIBLE_DEVICES=var` when the stand-in reports
/// `devices`, as the real driver applies it: comma-separated device numbers, ending at the first
/// entry that is not one of them; unset or empty, all of them. Ordinal k is device `result[k]`.
pub fn visible_devices(var: Option<&str>, devices: usize) -> Vec<usize> {
    driver::visible_devices(var, devices)
}

/// Kernels device `ordinal` has run since the process started (or since the options last
/// changed the failure plan).
pub fn launches(ordinal: usize) -> u64 {
    driver::launches(ordinal.min(driver::MAX_DEVICES - 1))
}
