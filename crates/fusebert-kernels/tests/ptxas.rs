//! Build-pipeline checks on the embedded PTX and the `ptxas -v` report that build.rs records.
use fusebert_kernels::ptx::{MODULES, PTXAS_REPORT};

/// The targets a module is compiled for: sm_80 and sm_90, or sm_90a alone for `*_sm90.cu`.
fn targets(m: &fusebert_kernels::ptx::PtxModule) -> &'static [&'static str] {
    if m.name.ends_with("_sm90") {
        &["sm_90a"]
    } else {
        &["sm_80", "sm_90"]
    }
}

#[test]
fn every_module_has_kernels_and_a_ptxas_report_for_each_target() {
    assert!(!MODULES.is_empty());
    for m in MODULES {
        assert!(!m.kernels.is_empty(), "module {} has no entries", m.name);
        assert!(m.ptx.contains(".version"), "module {} PTX has no .version", m.name);
        for arch in targets(m) {
            for k in m.kernels {
                let needle = format!("{} {arch}: ptxas info    : Compiling entry function '{k}'", m.name);
                assert!(PTXAS_REPORT.contains(&needle), "no ptxas {arch} report for {}::{k}", m.name);
            }
        }
    }
}

/// Spills go to local memory: a kernel that spills is a performance bug we want to see in CI
/// (build.rs fails on them already; this checks the report it embedded).
#[test]
fn no_kernel_spills_registers_on_any_target() {
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
    let lines: usize = MODULES.iter().map(|m| m.kernels.len() * targets(m).len()).sum();
    assert_eq!(checked, lines, "one spill line per kernel and target");
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

/// Every module is embedded for sm_80 and sm_90 (Hopper-native ones for sm_90a only), each
/// variant's `.target` its own, and the CUDA backend's choice for a device is the newest variant
/// the device can run.
#[test]
fn every_module_has_its_variants_and_devices_get_the_matching_one() {
    for m in MODULES {
        assert_eq!(m.by_arch.iter().map(|(a, _)| *a).collect::<Vec<_>>(), targets(m), "module {}", m.name);
        for &arch in targets(m) {
            let (_, ptx) =
                m.by_arch.iter().find(|(a, _)| *a == arch).unwrap_or_else(|| panic!("{}: no {arch}", m.name));
            let target = ptx.lines().find_map(|l| l.trim().strip_prefix(".target ")).unwrap();
            assert_eq!(target.trim(), arch, "module {}", m.name);
        }
        let pick = |maj, min| m.for_compute_capability(maj, min).map(|(a, _)| a);
        if m.is_arch_specific() {
            assert_eq!(m.ptx, m.by_arch[0].1, "module {}: the one variant is the default", m.name);
            assert_eq!(pick(9, 0), Some("sm_90a"));
            for (maj, min) in [(8, 0), (8, 9), (10, 0), (12, 0)] {
                assert_eq!(pick(maj, min), None, "{}: sm_90a PTX on {maj}.{min}", m.name);
            }
            continue;
        }
        assert_eq!(pick(8, 0), Some("sm_80"));
        assert_eq!(pick(8, 9), Some("sm_80"), "Ada runs the sm_80 PTX");
        assert_eq!(pick(9, 0), Some("sm_90"));
        assert_eq!(pick(12, 0), Some("sm_90"), "newer GPUs JIT the newest PTX");
        assert_eq!(pick(7, 5), None, "older than every variant");
    }
}

/// The Hopper variant exists and is exercised: the probe is compiled for sm_90a only.
#[test]
fn the_hopper_probe_is_an_sm90a_module() {
    let m = fusebert_kernels::ptx::module("hopper_probe_sm90").expect("kernels/hopper_probe_sm90.cu embedded");
    assert_eq!(m.kernels, ["hopper_probe_wgmma_m64n8k16"]);
    assert!(m.ptx.contains("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16"));
    let r = fusebert_kernels::ptx::kernel_resources("hopper_probe_wgmma_m64n8k16", "sm_90a").unwrap();
    assert_eq!((r.spill_store_bytes, r.spill_load_bytes, r.static_shared_bytes), (0, 0, 64 * 16 * 2 + 8 * 16 * 2));
    assert!(
        fusebert_kernels::ptx::kernel_registers("hopper_probe_sm90", "hopper_probe_wgmma_m64n8k16", "sm_90").is_some()
    );
}

/// The build's gate on the embedded report: nothing (build.rs would have failed otherwise).
#[test]
fn the_embedded_report_passes_the_gate() {
    assert_eq!(fusebert_kernels::ptxas_gate::report_problems(PTXAS_REPORT), vec![]);
}

/// `code` as a static str (the gate's codes, `warning`, `spill`, or `other`).
fn code_name(code: &str) -> &'static str {
    let known = fusebert_kernels::ptxas_gate::FAILING_CODES.iter().copied().chain(["warning", "spill"]);
    known.into_iter().find(|c| *c == code).unwrap_or("other")
}

/// The ptxas that build.rs uses, if this machine has it (the one build.rs finds first).
fn ptxas() -> Option<std::path::PathBuf> {
    let nvcc = std::env::var_os("NVCC").map(std::path::PathBuf::from).or_else(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2)?.join(".venv-cuda/lib");
        std::fs::read_dir(root)
            .ok()?
            .flatten()
            .map(|e| e.path().join("site-packages/nvidia/cu13/bin/nvcc"))
            .find(|p| p.is_file())
    })?;
    Some(nvcc.with_file_name("ptxas")).filter(|p| p.is_file())
}

/// The planted hazards of tests/fixtures/ through the real ptxas and the gate: each fires with
/// its code and kernel, the clean twin passes. Skipped (with a note) where ptxas is absent; the
/// gate's unit tests run on captured output of the same files everywhere.
#[test]
fn real_ptxas_flags_the_planted_hazards_and_passes_the_clean_twin() {
    let Some(ptxas) = ptxas() else {
        eprintln!("skipped: no ptxas (set NVCC or run scripts/setup.sh)");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (file, want) in [
        ("wgmma_clean", vec![]),
        ("wgmma_c7515", vec![(Some("wgmma_c7515".to_string()), "C7515")]),
        ("wgmma_c7519", vec![(Some("wgmma_c7519".to_string()), "C7519")]),
        ("wgmma_c7520", vec![(Some("wgmma_c7520".to_string()), "C7520")]),
        ("setmaxnreg_c7508", vec![(None, "C7508")]),
    ] {
        let out = std::process::Command::new(&ptxas)
            .args(["-arch=sm_90a", "-v", "-o", "/dev/null"])
            .arg(dir.join(format!("{file}.ptx")))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{file}: {text}");
        let got: Vec<(Option<String>, &str)> = fusebert_kernels::ptxas_gate::ptxas_problems(&text)
            .into_iter()
            .map(|p| (p.kernel, code_name(&p.code)))
            .collect();
        assert_eq!(got, want, "{file}: {text}");
    }
}
