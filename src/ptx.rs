//! The PTX of every `kernels/*.cu` module, compiled by `build.rs` and embedded in the binary.

/// One compiled kernel family (`kernels/<name>.cu`).
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// The file stem, e.g. `"embedding"`; the module name used by `Device::launch`.
    pub name: &'static str,
    /// The PTX text exactly as nvcc emitted it.
    pub ptx: &'static str,
    /// Kernel entry points (`.visible .entry`), all `extern "C"` names.
    pub kernels: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/ptx_modules.rs"));

/// The module with this name, if compiled in.
pub fn module(name: &str) -> Option<&'static PtxModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module that defines `kernel`, if any.
pub fn module_of_kernel(kernel: &str) -> Option<&'static PtxModule> {
    MODULES.iter().find(|m| m.kernels.contains(&kernel))
}
