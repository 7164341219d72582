//! The PTX emulator backend (see `crate::emu`): same API as CUDA.
use super::{Backend, KernelArg, LaunchConfig};
use crate::error::{Error, Result};

/// Emulator switches. Defaults: every sanitizer on.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub sanitize: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions { sanitize: true }
    }
}

pub struct EmulatorBackend {
    _opts: EmulatorOptions,
}

impl EmulatorBackend {
    pub fn new(opts: EmulatorOptions) -> Result<Self> {
        Ok(EmulatorBackend { _opts: opts })
    }
}

impl Backend for EmulatorBackend {
    fn name(&self) -> String {
        "PTX emulator".into()
    }
    fn alloc(&self, _bytes: usize) -> Result<u64> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn free(&self, _addr: u64) {}
    fn write(&self, _dst: u64, _src: &[u8]) -> Result<()> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn read(&self, _src: u64, _dst: &mut [u8]) -> Result<()> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn memset(&self, _dst: u64, _byte: u8, _bytes: usize) -> Result<()> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn launch(&self, _m: &str, _k: &str, _c: &LaunchConfig, _a: &[KernelArg]) -> Result<()> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn load_module(&self, _name: &str, _ptx: &str) -> Result<()> {
        Err(Error::Emulator("not built yet".into()))
    }
    fn as_emulator(&self) -> Option<&EmulatorBackend> {
        Some(self)
    }
}
