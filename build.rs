//! Compiles every `kernels/*.cu` to PTX with nvcc, validates each PTX with `ptxas -v` for
//! sm_80 and sm_90 (nvcc -ptx does not check inline asm; ptxas does), and embeds the PTX.
//!
//! Environment:
//! - `FUSEBERT_CUDA_ARCH`: PTX target for nvcc (default `sm_80`; e.g. `sm_90`).
//! - `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, or the project-local `.venv-cuda` made by
//!   `scripts/setup.sh` locate nvcc (ptxas is taken from the same folder).
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PTXAS_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kdir = manifest.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
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

    let mut generated = String::new();
    let mut report = String::new();
    generated.push_str("/// Every kernel module: (module name, PTX text, kernel entry names).\n");
    generated.push_str("pub static MODULES: &[PtxModule] = &[\n");
    for src in &sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let ptx_path = out.join(format!("{stem}.ptx"));
        run(
            Command::new(&nvcc)
                .arg("-ptx")
                .arg(format!("-arch={arch}"))
                .arg("-std=c++17")
                .arg("-lineinfo")
                .arg("-O3")
                .arg("-I")
                .arg(&kdir)
                .arg("-o")
                .arg(&ptx_path)
                .arg(src),
            &format!("nvcc {}", src.display()),
        );
        for a in PTXAS_ARCHS {
            let cubin = out.join(format!("{stem}.{a}.cubin"));
            let stderr = run(
                Command::new(&ptxas).arg(format!("-arch={a}")).arg("-v").arg("-o").arg(&cubin).arg(&ptx_path),
                &format!("ptxas -arch={a} {}", ptx_path.display()),
            );
            for line in stderr.lines() {
                let _ = writeln!(report, "{stem} {a}: {line}");
            }
        }
        let ptx = fs::read_to_string(&ptx_path).unwrap();
        let entries = entry_names(&ptx);
        let _ = writeln!(
            generated,
            "    PtxModule {{ name: {stem:?}, ptx: include_str!({:?}), kernels: &{entries:?} }},",
            ptx_path.display().to_string()
        );
    }
    generated.push_str("];\n");
    let _ = writeln!(
        generated,
        "/// The nvcc `-arch` the embedded PTX was compiled for.\npub const PTX_ARCH: &str = {arch:?};"
    );
    let _ = writeln!(
        generated,
        "/// `ptxas -v` output for every module and target (registers, shared memory, spills).\npub const PTXAS_REPORT: &str = {report:?};"
    );
    fs::write(out.join("ptx_modules.rs"), generated).unwrap();
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
