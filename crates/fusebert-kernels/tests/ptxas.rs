//! Build-pipeline checks on the embedded PTX and the `ptxas -v` report that build.rs records.
use fusebert_kernels::ptx::{MODULES, PTXAS_REPORT};

#[test]
fn every_module_has_kernels_and_a_ptxas_report_for_both_targets() {
    assert!(!MODULES.is_empty());
    for m in MODULES {
        assert!(!m.kernels.is_empty(), "module {} has no entries", m.name);
        assert!(m.ptx.contains(".version"), "module {} PTX has no .version", m.name);
        for arch in ["sm_80", "sm_90"] {
            for k in m.kernels {
                let needle = format!("{} {arch}: ptxas info    : Compiling entry function '{k}'", m.name);
                assert!(PTXAS_REPORT.contains(&needle), "no ptxas {arch} report for {}::{k}", m.name);
            }
        }
    }
}

/// Spills go to local memory: a kernel that spills is a performance bug we want to see in CI.
#[test]
fn no_kernel_spills_registers_on_sm80_or_sm90() {
    let mut checked = 0;
    for line in PTXAS_REPORT.lines() {
        if let Some(i) = line.find("bytes spill stores") {
            checked += 1;
            let stores: u64 = line[..i].rsplit(',').next().unwrap().trim().parse().unwrap();
            let loads_part = &line[i..];
            let loads: u64 = loads_part.split(',').nth(1).unwrap().trim().split(' ').next().unwrap().parse().unwrap();
            assert_eq!((stores, loads), (0, 0), "spills: {line}");
        }
    }
    let kernels: usize = MODULES.iter().map(|m| m.kernels.len()).sum();
    assert_eq!(checked, 2 * kernels, "one spill line per kernel and target");
}

/// The PTX must be loadable by the driver the GPU machines run (580 = CUDA 13.0 = PTX ISA 9.0).
#[test]
fn ptx_isa_version_is_at_most_9_0() {
    for m in MODULES {
        let v = m.ptx.lines().find_map(|l| l.trim().strip_prefix(".version ")).unwrap();
        let (maj, min) = v.trim().split_once('.').unwrap();
        let (maj, min): (u32, u32) = (maj.parse().unwrap(), min.parse().unwrap());
        assert!((maj, min) <= (9, 0), "module {} is PTX {v}", m.name);
    }
}

/// Every module is embedded for sm_80 and sm_90, each variant's `.target` its own, and the CUDA
/// backend's choice for a device is the newest variant the device can run.
#[test]
fn every_module_has_an_sm80_and_an_sm90_variant_and_devices_get_the_matching_one() {
    for m in MODULES {
        for arch in ["sm_80", "sm_90"] {
            let (_, ptx) =
                m.by_arch.iter().find(|(a, _)| *a == arch).unwrap_or_else(|| panic!("{}: no {arch}", m.name));
            let target = ptx.lines().find_map(|l| l.trim().strip_prefix(".target ")).unwrap();
            assert_eq!(target.trim(), arch, "module {}", m.name);
        }
        let pick = |maj, min| m.for_compute_capability(maj, min).map(|(a, _)| a);
        assert_eq!(pick(8, 0), Some("sm_80"));
        assert_eq!(pick(8, 9), Some("sm_80"), "Ada runs the sm_80 PTX");
        assert_eq!(pick(9, 0), Some("sm_90"));
        assert_eq!(pick(12, 0), Some("sm_90"), "newer GPUs JIT the newest PTX");
        assert_eq!(pick(7, 5), None, "older than every variant");
    }
}
