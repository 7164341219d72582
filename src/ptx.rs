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
    /// The same module compiled for each target architecture (`("sm_80", ptx)`, `("sm_90", ptx)`,
    /// ...), each checked by ptxas against its own architecture at build time.
    pub by_arch: &'static [(&'static str, &'static str)],
}

impl PtxModule {
    /// The PTX for a device of compute capability `major.minor`: the variant with the highest
    /// target that the device can run (PTX for sm_XY runs on any sm_AB >= XY), or `None` when
    /// the device is older than every variant.
    pub fn for_compute_capability(&self, major: u32, minor: u32) -> Option<(&'static str, &'static str)> {
        let cc = major * 10 + minor;
        self.by_arch
            .iter()
            .filter_map(|&(a, ptx)| Some((a.strip_prefix("sm_")?.parse::<u32>().ok()?, a, ptx)))
            .filter(|(v, _, _)| *v <= cc)
            .max_by_key(|(v, _, _)| *v)
            .map(|(_, a, ptx)| (a, ptx))
    }
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
