//! The PTX emulator backend: `fusebert-emu`'s [`Emulator`] behind the device API, with the
//! embedded kernels ([`crate::ptx`]) as its module library. Same API as CUDA; launches run
//! synchronously and every launch's counters are recorded.
use std::sync::Arc;

pub use fusebert_emu::engine::{Emulator, EmulatorOptions, LaunchRecord};
use fusebert_emu::{LaunchDims, ModuleLibrary, Param};

use super::{DeviceBackend, KernelArg, LaunchConfig};
use fusebert_core::error::Result;

/// The emulator as a device backend (the same type: the device API is implemented on it).
pub type EmulatorBackend = Emulator;

/// fusebert's embedded PTX, for the emulator to load on first use.
struct EmbeddedKernels;

impl ModuleLibrary for EmbeddedKernels {
    fn ptx(&self, name: &str) -> Option<&str> {
        crate::ptx::module(name).map(|m| m.ptx)
    }
    fn registers(&self, module: &str, kernel: &str, ptxas_target: &str) -> Option<u32> {
        crate::ptx::module(module)?;
        crate::ptx::kernel_registers(module, kernel, ptxas_target)
    }
}

/// An emulator that knows fusebert's kernels.
pub fn backend(opts: EmulatorOptions) -> Result<EmulatorBackend> {
    Ok(Emulator::with_library(opts, Arc::new(EmbeddedKernels))?)
}

/// A device-layer argument as the emulator's parameter.
pub fn param(a: &KernelArg) -> Param {
    match *a {
        KernelArg::Ptr(v) => Param::Ptr(v),
        KernelArg::U32(v) => Param::U32(v),
        KernelArg::I32(v) => Param::I32(v),
        KernelArg::U64(v) => Param::U64(v),
        KernelArg::I64(v) => Param::I64(v),
        KernelArg::F32(v) => Param::F32(v),
        KernelArg::F64(v) => Param::F64(v),
    }
}

/// A device-layer launch configuration as the emulator's launch dimensions.
pub fn dims(cfg: &LaunchConfig) -> LaunchDims {
    LaunchDims { grid: cfg.grid, block: cfg.block, shared_mem_bytes: cfg.shared_mem_bytes }
}

impl DeviceBackend for Emulator {
    fn name(&self) -> String {
        "PTX emulator".into()
    }
    fn alloc(&self, bytes: usize) -> Result<u64> {
        Ok(Emulator::alloc(self, bytes)?)
    }
    fn free(&self, addr: u64) {
        Emulator::free(self, addr)
    }
    fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        Ok(Emulator::write(self, dst, src)?)
    }
    fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        Ok(Emulator::read(self, src, dst)?)
    }
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        Ok(Emulator::memset(self, dst, byte, bytes)?)
    }
    fn launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let params: Vec<Param> = args.iter().map(param).collect();
        Ok(Emulator::launch(self, module, kernel, &dims(cfg), &params)?)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        Ok(Emulator::load_module(self, name, ptx)?)
    }
    fn as_emulator(&self) -> Option<&EmulatorBackend> {
        Some(self)
    }
}
