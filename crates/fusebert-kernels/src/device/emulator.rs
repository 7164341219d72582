//! The PTX emulator backend: `fusebert-emu`'s [`Emulator`] behind the device API, with the
//! embedded kernels ([`crate::ptx`]) as its module library. Same API as CUDA; launches run
//! synchronously and every launch's counters are recorded.
use std::sync::Arc;

pub use fusebert_emu::arch::{Arch, AsyncMode};
pub use fusebert_emu::engine::{Emulator, EmulatorOptions, LaunchRecord};
use fusebert_emu::{LaunchDims, ModuleLibrary, Param, ParamBytes};

use super::{DeviceBackend, KernelArg, LaunchConfig, TensorMap, TiledTensorMap, TENSOR_MAP_BYTES};
use fusebert_core::error::{Error, Result};

/// The emulator as a device backend (the same type: the device API is implemented on it).
pub type EmulatorBackend = Emulator;

/// fusebert's embedded PTX, for the emulator to load on first use.
struct EmbeddedKernels {
    arch: Arch,
}

impl ModuleLibrary for EmbeddedKernels {
    /// The module's arch-specific variant for the emulated architecture (`sm_90a` on sm_90:
    /// the Hopper kernels exist only as such), else its default PTX.
    fn ptx(&self, name: &str) -> Option<&str> {
        let m = crate::ptx::module(name)?;
        let specific = format!("{}a", self.arch.ptxas_target());
        Some(m.by_arch.iter().find(|(a, _)| *a == specific).map_or(m.ptx, |&(_, p)| p))
    }
    fn registers(&self, module: &str, kernel: &str, ptxas_target: &str) -> Option<u32> {
        crate::ptx::module(module)?;
        crate::ptx::kernel_registers(module, kernel, ptxas_target)
    }
}

/// An emulator that knows fusebert's kernels.
pub fn backend(opts: EmulatorOptions) -> Result<EmulatorBackend> {
    let arch = opts.arch;
    Ok(Emulator::with_library(opts, Arc::new(EmbeddedKernels { arch }))?)
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
        // 128 bytes always fit (ParamBytes::MAX is 512)
        KernelArg::TensorMap(m) => Param::Bytes(ParamBytes::new(m.bytes()).expect("a tensor map fits ParamBytes")),
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
    /// The emulated architecture's SM count (H100 SXM: 132; A100: 108; the others their
    /// largest part's): only the grid of persistent kernels depends on it.
    fn multiprocessors(&self) -> u32 {
        match self.options().arch {
            Arch::Sm90 => 132,
            Arch::Sm80 => 108,
            Arch::Sm86 => 84,
            Arch::Sm89 => 142,
        }
    }
    fn compute_capability(&self) -> (u32, u32) {
        match self.options().arch {
            Arch::Sm90 => (9, 0),
            Arch::Sm80 => (8, 0),
            Arch::Sm86 => (8, 6),
            Arch::Sm89 => (8, 9),
        }
    }
    /// The emulator's own encoder (`fusebert_emu::tma::encode_tiled`: the driver's checks, the
    /// emulator's opaque format, which its TMA instructions decode).
    fn encode_tensor_map(&self, map: &TiledTensorMap<'_>) -> Result<TensorMap> {
        let ones = [1u32; 5];
        let bytes = fusebert_emu::tma::encode_tiled(
            map.dtype as u32,
            map.dims.len() as u32,
            map.addr,
            map.dims,
            map.strides,
            map.box_dims,
            &ones[..map.dims.len()],
            0,
            map.swizzle as u32,
            false,
        )
        .map_err(|msg| Error::Kernel { kernel: "cuTensorMapEncodeTiled".into(), msg })?;
        let bytes: [u8; TENSOR_MAP_BYTES] = bytes;
        Ok(TensorMap::from_bytes(bytes))
    }
}
