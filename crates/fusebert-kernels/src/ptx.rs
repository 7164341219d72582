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
    /// ...), each checked by ptxas against its own architecture at build time. A Hopper-native
    /// module (`kernels/*_sm90.cu`) has the one entry `("sm_90a", ptx)`, and `ptx` is that PTX.
    pub by_arch: &'static [(&'static str, &'static str)],
}

/// `"sm_90a"` -> (90, true), `"sm_80"` -> (80, false).
fn parse_target(arch: &str) -> Option<(u32, bool)> {
    let v = arch.strip_prefix("sm_")?;
    match v.strip_suffix('a') {
        Some(base) => Some((base.parse().ok()?, true)),
        None => Some((v.parse().ok()?, false)),
    }
}

impl PtxModule {
    /// The PTX for a device of compute capability `major.minor`: the variant with the highest
    /// target that the device can run (PTX for sm_XY runs on any sm_AB >= XY; arch-specific PTX,
    /// sm_90a, only on exactly 9.0, where it is preferred to sm_90), or `None` when the device
    /// runs no variant.
    pub fn for_compute_capability(&self, major: u32, minor: u32) -> Option<(&'static str, &'static str)> {
        let cc = major * 10 + minor;
        self.by_arch
            .iter()
            .filter_map(|&(a, ptx)| Some((parse_target(a)?, a, ptx)))
            .filter(|&((v, specific), _, _)| if specific { v == cc } else { v <= cc })
            .max_by_key(|&(key, _, _)| key)
            .map(|(_, a, ptx)| (a, ptx))
    }

    /// Whether every variant is arch-specific (`kernels/*_sm90.cu`): such a module runs on one
    /// compute capability only, and devices of any other skip it instead of failing.
    pub fn is_arch_specific(&self) -> bool {
        self.by_arch.iter().all(|(a, _)| a.ends_with('a'))
    }
}

include!(concat!(env!("OUT_DIR"), "/ptx_modules.rs"));

/// The entry `name` of the shipped PTX as its static id (one of [`ids`]), if it exists: how
/// a name composed from a launch plan (tile, split, fused layernorm) is checked against the
/// kernels that really exist.
pub fn kernel_id(name: &str) -> Option<&'static str> {
    MODULES.iter().flat_map(|m| m.kernels.iter()).find(|k| **k == name).copied()
}

/// The module with this name, if compiled in.
pub fn module(name: &str) -> Option<&'static PtxModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module that defines `kernel`, if any.
pub fn module_of_kernel(kernel: &str) -> Option<&'static PtxModule> {
    MODULES.iter().find(|m| m.kernels.contains(&kernel))
}

/// Resources of one kernel for one target, from `ptxas -v`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelResources {
    pub module: String,
    pub arch: String,
    pub kernel: String,
    pub registers: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// Static shared memory (`bytes smem`; dynamic shared memory is a launch parameter).
    pub static_shared_bytes: u32,
}

/// Parses [`PTXAS_REPORT`] (lines `"<module> <arch>: <ptxas -v line>"`).
pub fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in report.lines() {
        let Some((head, text)) = line.split_once(": ") else { continue };
        let Some((module, arch)) = head.split_once(' ') else { continue };
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("ptxas info    : Compiling entry function '") {
            let kernel = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelResources { module: module.into(), arch: arch.into(), kernel, ..Default::default() });
            continue;
        }
        // Every other line belongs to the latest entry of the same module and arch.
        let Some(cur) = out.last_mut().filter(|c| c.module == module && c.arch == arch) else { continue };
        if text.contains("bytes stack frame") {
            cur.stack_bytes = number_before(text, "bytes stack frame");
            cur.spill_store_bytes = number_before(text, "bytes spill stores");
            cur.spill_load_bytes = number_before(text, "bytes spill loads");
        } else if let Some(rest) = text.split("Used ").nth(1) {
            cur.registers = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            cur.static_shared_bytes = number_before(text, "bytes smem");
        }
    }
    out
}

/// The integer just before `label` in `text` (0 if absent).
fn number_before(text: &str, label: &str) -> u32 {
    text.split(label)
        .next()
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).rfind(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Registers per thread ptxas gave `kernel` of `module` for `target` (`sm_80`/`sm_90`), if the
/// kernel is embedded. An arch-specific module's figures are its `sm_90a` ones (asked for as
/// `sm_90`, the emulator's target name).
pub fn kernel_registers(module: &str, kernel: &str, target: &str) -> Option<u32> {
    static PARSED: std::sync::OnceLock<Vec<KernelResources>> = std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| parse_ptxas_report(PTXAS_REPORT));
    let find = |t: &str| parsed.iter().find(|r| r.module == module && r.kernel == kernel && r.arch == t);
    find(target).or_else(|| find(&format!("{target}a"))).map(|r| r.registers)
}

/// ptxas' figures for `kernel` on `arch` (`"sm_80"`, `"sm_90"`, `"sm_90a"`), if compiled in.
pub fn kernel_resources(kernel: &str, arch: &str) -> Option<KernelResources> {
    parse_ptxas_report(PTXAS_REPORT).into_iter().find(|r| r.kernel == kernel && r.arch == arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_lines() {
        let report = "m sm_80: ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
                      m sm_80: ptxas info    : Function properties for k\n\
                      m sm_80:     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                      m sm_80: ptxas info    : Used 25 registers, used 1 barriers, 1024 bytes smem, 432 bytes cmem[0]\n";
        let r = parse_ptxas_report(report);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].registers, r[0].stack_bytes, r[0].spill_store_bytes, r[0].spill_load_bytes), (25, 8, 4, 12));
        assert_eq!(r[0].kernel, "k");
        assert_eq!(r[0].static_shared_bytes, 1024);
    }

    #[test]
    fn arch_specific_variants_run_on_their_exact_capability_only() {
        let portable = PtxModule { name: "p", ptx: "", kernels: &[], by_arch: &[("sm_80", "a"), ("sm_90", "b")] };
        let hopper = PtxModule { name: "h", ptx: "", kernels: &[], by_arch: &[("sm_90a", "c")] };
        let both = PtxModule { name: "b", ptx: "", kernels: &[], by_arch: &[("sm_90", "b"), ("sm_90a", "c")] };
        let pick = |m: &PtxModule, maj, min| m.for_compute_capability(maj, min).map(|(a, _)| a);
        assert_eq!(pick(&hopper, 9, 0), Some("sm_90a"));
        for (maj, min) in [(8, 0), (8, 9), (10, 0), (12, 0)] {
            assert_eq!(pick(&hopper, maj, min), None, "sm_90a PTX does not JIT on {maj}.{min}");
        }
        assert_eq!(pick(&both, 9, 0), Some("sm_90a"), "the arch-specific variant is preferred on 9.0");
        assert_eq!(pick(&both, 10, 0), Some("sm_90"));
        assert_eq!(pick(&portable, 9, 0), Some("sm_90"));
        assert!(hopper.is_arch_specific() && !portable.is_arch_specific() && !both.is_arch_specific());
    }
}
