//! Compiles every `kernels/*.cu` to PTX with nvcc once per target architecture (sm_80 and
//! sm_90), validates each PTX with `ptxas -v` against its own architecture (nvcc -ptx does not
//! check inline asm; ptxas does, and refuses PTX whose `.target` is above `-arch`), and embeds
//! every variant: the CUDA backend loads the one matching the device, so one binary serves A100
//! and H100 without JIT surprises.
//!
//! It also compiles the CUDA driver stand-in's trampoline (`cuda-standin/trampoline.rs`, no
//! dependencies) into `OUT_DIR/libfusebert_cudaemu.so`: a file name that no driver search
//! matches, in a folder on no library path, so it can never shadow a real `libcuda`.
//!
//! Environment:
//! - `FUSEBERT_CUDA_ARCH`: the variant the emulator runs and `PtxModule::ptx` holds (default
//!   `sm_80`; e.g. `sm_90`; any other arch is compiled as a third variant).
//! - `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, or the project-local `.venv-cuda` made by
//!   `scripts/setup.sh` locate nvcc (ptxas is taken from the same folder).
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every module is compiled for each of these (and for `FUSEBERT_CUDA_ARCH` if it differs).
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kdir = manifest.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=cuda-standin");
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH", "FUSEBERT_CUDA_ARCH", "PATH"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let arch = env::var("FUSEBERT_CUDA_ARCH").unwrap_or_else(|_| "sm_80".to_string());
    let nvcc = match find_nvcc(&manifest) {
        Some(p) => p,
        None => fail(
            "nvcc (CUDA 13.0) was not found. Install the project-local toolchain with \
             `bash scripts/setup.sh` (PyPI wheels into .venv-cuda, ~100 MB, no GPU needed), \
             or point NVCC / CUDA_HOME at a CUDA toolkit.",
        ),
    };
    let ptxas = nvcc.with_file_name("ptxas");

    let mut sources: Vec<PathBuf> = fs::read_dir(&kdir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", kdir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();

    let mut archs: Vec<String> = ARCHS.iter().map(|a| a.to_string()).collect();
    if !archs.contains(&arch) {
        archs.push(arch.clone());
    }
    let mut generated = String::new();
    let mut report = String::new();
    generated.push_str("/// Every kernel module: (module name, PTX text, kernel entry names, per-arch PTX).\n");
    generated.push_str("pub static MODULES: &[PtxModule] = &[\n");
    for src in &sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let mut variants = Vec::new();
        for a in &archs {
            let ptx_path = out.join(format!("{stem}.{a}.ptx"));
            run(
                Command::new(&nvcc)
                    .arg("-ptx")
                    .arg(format!("-arch={a}"))
                    .arg("-std=c++17")
                    .arg("-lineinfo")
                    .arg("-O3")
                    .arg("-I")
                    .arg(&kdir)
                    .arg("-o")
                    .arg(&ptx_path)
                    .arg(src),
                &format!("nvcc -arch={a} {}", src.display()),
            );
            // Each variant is checked against the architecture it is loaded on.
            let cubin = out.join(format!("{stem}.{a}.cubin"));
            let stderr = run(
                Command::new(&ptxas).arg(format!("-arch={a}")).arg("-v").arg("-o").arg(&cubin).arg(&ptx_path),
                &format!("ptxas -arch={a} {}", ptx_path.display()),
            );
            for line in stderr.lines() {
                let _ = writeln!(report, "{stem} {a}: {line}");
            }
            variants.push((a.clone(), ptx_path.display().to_string()));
        }
        let default = &variants.iter().find(|(a, _)| *a == arch).expect("default arch compiled").1;
        let ptx = fs::read_to_string(default).unwrap();
        let entries = entry_names(&ptx);
        let by_arch: Vec<String> = variants.iter().map(|(a, p)| format!("({a:?}, include_str!({p:?}))")).collect();
        let _ = writeln!(
            generated,
            "    PtxModule {{ name: {stem:?}, ptx: include_str!({default:?}), kernels: &{entries:?}, by_arch: &[{}] }},",
            by_arch.join(", ")
        );
    }
    generated.push_str("];\n");
    let _ = writeln!(
        generated,
        "/// The nvcc `-arch` of `PtxModule::ptx` (what the emulator runs).\npub const PTX_ARCH: &str = {arch:?};"
    );
    let _ = writeln!(
        generated,
        "/// `ptxas -v` output for every module and target (registers, shared memory, spills).\npub const PTXAS_REPORT: &str = {report:?};"
    );
    let standin = build_standin_trampoline(&manifest, &out);
    let _ = writeln!(
        generated,
        "/// The CUDA driver stand-in's trampoline library (see `device::standin`).\npub const STANDIN_TRAMPOLINE: &str = {:?};",
        standin.display().to_string()
    );
    fs::write(out.join("ptx_modules.rs"), generated).unwrap();
}

/// Compiles the stand-in trampoline with the same rustc cargo uses (a dependency-free cdylib,
/// panic=abort so no unwinding can ever leave it). Its ELF SONAME is `libcuda.so`, so that once
/// the process has opened it by absolute path, cudarc's `dlopen("libcuda.so")` gets this object;
/// its file name is not a driver's, so no search (LD_LIBRARY_PATH, cargo's target dirs) finds it.
fn build_standin_trampoline(manifest: &Path, out: &Path) -> PathBuf {
    let src = manifest.join("cuda-standin/trampoline.rs");
    let lib = out.join("libfusebert_cudaemu.so");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(
        Command::new(rustc)
            .args(["--edition", "2021", "--crate-type", "cdylib", "--crate-name", "fusebert_cudaemu"])
            .args([
                "-C",
                "panic=abort",
                "-C",
                "opt-level=2",
                "-C",
                "strip=debuginfo",
                "-C",
                "link-arg=-Wl,-soname,libcuda.so",
            ])
            .arg("-o")
            .arg(&lib)
            .arg(&src),
        &format!("rustc {}", src.display()),
    );
    lib
}

/// `.visible .entry name(` lines of a PTX module.
fn entry_names(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(".visible .entry ").or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split('(').next()?.trim().to_string())
        })
        .collect()
}

fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    let exe = |p: PathBuf| if p.is_file() { Some(p) } else { None };
    if let Ok(p) = env::var("NVCC") {
        return exe(PathBuf::from(p)).and_then(|p| p.canonicalize().ok());
    }
    for v in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(h) = env::var(v) {
            if let Some(p) = exe(Path::new(&h).join("bin/nvcc")) {
                return Some(p);
            }
        }
    }
    if let Ok(path) = env::var("PATH") {
        for dir in env::split_paths(&path) {
            if let Some(p) = exe(dir.join("nvcc")) {
                // nvcc must be called by its real path to find its headers
                return p.canonicalize().ok();
            }
        }
    }
    let venv = manifest.join(".venv-cuda/lib");
    for entry in fs::read_dir(&venv).ok()?.flatten() {
        if let Some(p) = exe(entry.path().join("site-packages/nvidia/cu13/bin/nvcc")) {
            return p.canonicalize().ok();
        }
    }
    None
}

/// Runs a command, fails the build with its output on error; returns stderr+stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| fail(&format!("{what}: cannot start: {e}")));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        fail(&format!("{what} failed:\n{text}"));
    }
    text
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("fusebert build: {msg}");
}
