//! Provides the PTX of every `kernels/*.cu` for each target architecture (sm_80 and sm_90), with
//! the `ptxas -v` report of each, as `OUT_DIR/ptx_modules.rs`. A file whose stem ends in `_sm90`
//! (`kernels/gemm_sm90.cu`: Hopper-native code, wgmma and setmaxnreg, which exist only in
//! arch-specific PTX) is compiled for `sm_90a` only, with `-gencode arch=compute_90a,code=sm_90a`.
//!
//! The PTX ships with the crate in `ptx/` (made by nvcc 13.0, see `ptx/MANIFEST`), so a machine
//! with no CUDA toolkit builds it. nvcc runs instead when
//! - `FUSEBERT_BUILD_KERNELS=1`, or
//! - the sources no longer match the content hashes in `ptx/MANIFEST` (an edited `.cu`), or an
//!   architecture is asked for (`FUSEBERT_CUDA_ARCH`) that `ptx/` does not hold; without nvcc
//!   that is a build error saying so, never stale PTX.
//!
//! `FUSEBERT_SHIP_PTX=<dir>` compiles with nvcc and writes the result in the shipped layout to
//! `<dir>` (`scripts/build-ptx.sh` refreshes `ptx/`; CI compares the two).
//!
//! Each variant is validated with `ptxas -v` against its own architecture (nvcc -ptx does not
//! check inline asm; ptxas does, and refuses PTX whose `.target` is above `-arch`). The report
//! then passes the gate of `src/ptxas_gate.rs`: ptxas' wgmma/setmaxnreg hazards (C7508, C7511,
//! C7515, C7519, printed as info, not errors), any ptxas warning, and any spill fail the build,
//! naming the file, target and kernel. The shipped report is gated too.
//!
//! Environment:
//! - `FUSEBERT_CUDA_ARCH`: the variant the emulator runs and `PtxModule::ptx` holds (default
//!   `sm_80`; e.g. `sm_90`; any other arch is compiled as a third variant).
//! - `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, or a `.venv-cuda` made by `scripts/setup.sh` in the
//!   crate folder or above it locate nvcc (ptxas is taken from the same folder).
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

#[path = "src/ptxas_gate.rs"]
mod ptxas_gate;

/// Every module is compiled for each of these (and for `FUSEBERT_CUDA_ARCH` if it differs).
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];
/// nvcc flags besides `-arch`; part of the manifest, so a change of flags is a change of PTX.
const NVCC_FLAGS: [&str; 3] = ["-std=c++17", "-lineinfo", "-O3"];
/// Files whose stem ends in this are compiled for `ARCH_SPECIFIC` only (and not for `ARCHS`).
const ARCH_SPECIFIC_SUFFIX: &str = "_sm90";
const ARCH_SPECIFIC: &str = "sm_90a";

/// The targets `stem` is compiled for.
fn archs_of(stem: &str, archs: &[String]) -> Vec<String> {
    if stem.ends_with(ARCH_SPECIFIC_SUFFIX) {
        vec![ARCH_SPECIFIC.to_string()]
    } else {
        archs.to_vec()
    }
}

/// nvcc's target flags: `-arch=sm_80`, or for arch-specific targets (`sm_90a`) the `-gencode`
/// form nvcc 13.0 documents for them (`-arch=sm_90a -ptx` gives the same PTX with 13.0; the
/// explicit form keeps meaning the same if that shorthand changes).
fn nvcc_target(arch: &str) -> Vec<String> {
    match arch.strip_suffix('a') {
        Some(base) => {
            vec!["-gencode".into(), format!("arch=compute_{}a,code={arch}", base.trim_start_matches("sm_"))]
        }
        None => vec![format!("-arch={arch}")],
    }
}

/// The compiled modules: (stem, [(arch, path of the PTX file)]) and the ptxas report.
struct Compiled {
    modules: Vec<(String, Vec<(String, PathBuf)>)>,
    report: String,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kdir = manifest_dir.join("kernels");
    let shipped = manifest_dir.join("ptx");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=ptx");
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH", "FUSEBERT_CUDA_ARCH", "FUSEBERT_BUILD_KERNELS", "FUSEBERT_SHIP_PTX"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let arch = env::var("FUSEBERT_CUDA_ARCH").unwrap_or_else(|_| "sm_80".to_string());
    let mut archs: Vec<String> = ARCHS.iter().map(|a| a.to_string()).collect();
    if !archs.contains(&arch) {
        archs.push(arch.clone());
    }
    let stems = kernel_stems(&kdir);
    let manifest = source_manifest(&kdir, &archs);
    let ship_to = env::var_os("FUSEBERT_SHIP_PTX").map(PathBuf::from);
    let forced = env::var("FUSEBERT_BUILD_KERNELS").is_ok_and(|v| v == "1");
    let shipped_matches = fs::read_to_string(shipped.join("MANIFEST")).is_ok_and(|m| m == manifest);

    let compiled = if shipped_matches && !forced && ship_to.is_none() {
        use_shipped(&shipped, &stems, &archs)
    } else {
        let why = if forced || ship_to.is_some() {
            "FUSEBERT_BUILD_KERNELS=1 or FUSEBERT_SHIP_PTX asks for nvcc".to_string()
        } else {
            format!(
                "the shipped PTX ({}) was not made from these sources for {archs:?}",
                shipped.join("MANIFEST").display()
            )
        };
        println!("cargo:rerun-if-env-changed=PATH");
        let nvcc = find_nvcc(&manifest_dir).unwrap_or_else(|| {
            fail(&format!(
                "{why}, so the kernels must be compiled, and nvcc (CUDA 13.0) was not found. Install \
                 the project-local toolchain with `bash scripts/setup.sh` (PyPI wheels into .venv-cuda, \
                 no GPU needed), point NVCC / CUDA_HOME at a CUDA toolkit, or restore ptx/."
            ))
        });
        let src = stable_source_dir(&kdir, &manifest);
        let compiled = compile_all(&nvcc, &src, &out, &stems, &archs);
        if let Some(dir) = &ship_to {
            write_shipped(dir, &compiled, &manifest);
        }
        compiled
    };
    gate(&compiled.report);
    fs::write(out.join("ptx_modules.rs"), generate(&compiled, &arch)).unwrap();
    fs::write(out.join("codes.rs"), codes(&kdir.join("codes.cuh"))).unwrap();
}

/// Rust constants for every `NAME = value` of the enums in `codes.cuh` (the one definition of
/// the epilogue and pooling codes).
fn codes(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let mut g = String::new();
    let mut in_enum = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("enum ") {
            in_enum = true;
            let name = line.trim_start_matches("enum ").split([' ', ':']).next().unwrap_or("");
            let _ = writeln!(g, "// enum {name}");
        } else if line.starts_with('}') {
            in_enum = false;
        } else if let (true, Some((name, value))) = (in_enum, line.trim_end_matches(',').split_once('=')) {
            let value: u32 =
                value.trim().parse().unwrap_or_else(|_| fail(&format!("codes.cuh: bad value in `{line}`")));
            let _ = writeln!(g, "pub const {}: u32 = {value};", name.trim());
        }
    }
    g
}

/// The stems of `kernels/*.cu`, sorted.
fn kernel_stems(kdir: &Path) -> Vec<String> {
    let mut stems: Vec<String> = fs::read_dir(kdir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", kdir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    stems.sort();
    stems
}

/// What the PTX is made from: the flags, the architectures, and a content hash of every file in
/// `kernels/` (headers included). Equal manifests mean the shipped PTX is what nvcc would make.
fn source_manifest(kdir: &Path, archs: &[String]) -> String {
    let mut files: Vec<PathBuf> = fs::read_dir(kdir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut m = String::from("# What ptx/ was made from; written by build.rs (FUSEBERT_SHIP_PTX), do not edit.\n");
    let _ = writeln!(m, "compiler nvcc 13.0");
    let _ = writeln!(m, "flags {}", NVCC_FLAGS.join(" "));
    let _ = writeln!(m, "archs {}", archs.join(" "));
    let _ = writeln!(m, "arch-specific *{ARCH_SPECIFIC_SUFFIX}.cu: {}", nvcc_target(ARCH_SPECIFIC).join(" "));
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = fs::read(f).unwrap();
        let _ = writeln!(m, "source {} {:016x}", f.file_name().unwrap().to_string_lossy(), fnv1a64(&bytes));
    }
    m
}

/// FNV-1a, 64 bit: a content hash with no dependency (this is change detection, not security).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn use_shipped(shipped: &Path, stems: &[String], archs: &[String]) -> Compiled {
    let modules = stems
        .iter()
        .map(|stem| {
            let variants: Vec<(String, PathBuf)> = archs_of(stem, archs)
                .into_iter()
                .map(|a| {
                    let p = shipped.join(format!("{stem}.{a}.ptx"));
                    (a, p)
                })
                .collect();
            if let Some((_, p)) = variants.iter().find(|(_, p)| !p.is_file()) {
                fail(&format!("{} is missing although ptx/MANIFEST lists its source: restore ptx/", p.display()));
            }
            (stem.clone(), variants)
        })
        .collect();
    let report = fs::read_to_string(shipped.join("ptxas.txt"))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", shipped.join("ptxas.txt").display())));
    Compiled { modules, report }
}

/// A copy of `kernels/` at a path that depends only on the sources: nvcc hashes the source's
/// absolute path into the names of internal-linkage functions (`_INTERNAL_<hash>_...` in the
/// line-info strings), so compiling in place would make the PTX depend on where the crate was
/// checked out. Files are written under a temporary name and renamed (concurrent builds of the
/// same sources write the same bytes).
fn stable_source_dir(kdir: &Path, manifest: &str) -> PathBuf {
    let base = if Path::new("/tmp").is_dir() { PathBuf::from("/tmp") } else { env::temp_dir() };
    let dir = base.join(format!("fusebert-kernels-src-{:016x}", fnv1a64(manifest.as_bytes())));
    fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    for entry in fs::read_dir(kdir).unwrap().flatten().filter(|e| e.path().is_file()) {
        let tmp = dir.join(format!(".{}.{}", entry.file_name().to_string_lossy(), std::process::id()));
        fs::copy(entry.path(), &tmp).unwrap_or_else(|e| fail(&format!("{}: {e}", tmp.display())));
        fs::rename(&tmp, dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// nvcc runs in the source folder on relative names; `.file` lines are made relative too, so the
/// PTX does not depend on where the crate was checked out. The (module, arch) compilations are
/// independent, so they run on `NUM_JOBS` threads (cargo's `-j`), the costliest first: the Hopper
/// files take minutes each and would otherwise start last. Results are gathered in module order,
/// so the report and the generated table do not depend on the schedule.
fn compile_all(nvcc: &Path, kdir: &Path, out: &Path, stems: &[String], archs: &[String]) -> Compiled {
    let jobs: Vec<(usize, String)> =
        stems.iter().enumerate().flat_map(|(i, s)| archs_of(s, archs).into_iter().map(move |a| (i, a))).collect();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_cached_key(|&j| std::cmp::Reverse(source_bytes(kdir, &format!("{}.cu", stems[jobs[j].0]))));
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<(PathBuf, String)>>> = Mutex::new(vec![None; jobs.len()]);
    thread::scope(|scope| {
        for _ in 0..build_threads().min(jobs.len()) {
            scope.spawn(|| {
                while let Some(&j) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (i, a) = &jobs[j];
                    let result = compile_one(nvcc, kdir, out, &stems[*i], a);
                    done.lock().unwrap()[j] = Some(result);
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap().into_iter();
    let mut modules: Vec<(String, Vec<(String, PathBuf)>)> = stems.iter().map(|s| (s.clone(), Vec::new())).collect();
    let mut report = String::new();
    for (i, a) in jobs {
        let (ptx_path, stderr) = done.next().flatten().expect("every compilation ran");
        // "Compile time = ..." changes run to run; the rest is the kernel's resources.
        for line in stderr.lines().filter(|l| !l.contains("Compile time")) {
            let _ = writeln!(report, "{} {a}: {line}", stems[i]);
        }
        modules[i].1.push((a, ptx_path));
    }
    Compiled { modules, report }
}

/// One module for one arch: nvcc to PTX, then ptxas -v; the PTX's path and ptxas' report.
fn compile_one(nvcc: &Path, kdir: &Path, out: &Path, stem: &str, arch: &str) -> (PathBuf, String) {
    let ptx_path = out.join(format!("{stem}.{arch}.ptx"));
    run(
        Command::new(nvcc)
            .current_dir(kdir)
            .arg("-ptx")
            .args(nvcc_target(arch))
            .args(NVCC_FLAGS)
            .args(["-I", "."])
            .arg("-o")
            .arg(&ptx_path)
            .arg(format!("{stem}.cu")),
        &format!("nvcc -arch={arch} {stem}.cu"),
    );
    let ptx = fs::read_to_string(&ptx_path).unwrap();
    fs::write(&ptx_path, portable_file_names(&ptx, kdir)).unwrap();
    let stderr = run(
        Command::new(nvcc.with_file_name("ptxas"))
            .current_dir(out)
            .arg(format!("-arch={arch}"))
            .arg("-v")
            .arg("-o")
            .arg(format!("{stem}.{arch}.cubin"))
            .arg(format!("{stem}.{arch}.ptx")),
        &format!("ptxas -arch={arch} {stem}.{arch}.ptx"),
    );
    (ptx_path, stderr)
}

/// Compiler threads: cargo's `NUM_JOBS` for build scripts, else the machine's parallelism.
fn build_threads() -> usize {
    env::var("NUM_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Bytes of `file` and of the local headers it includes (transitively, each once): how long
/// nvcc takes on it, roughly, for ordering the compilations.
fn source_bytes(kdir: &Path, file: &str) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![file.to_string()];
    let mut bytes = 0;
    while let Some(f) = todo.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(kdir.join(&f)) else { continue };
        bytes += text.len() as u64;
        for line in text.lines().map(str::trim).filter(|l| l.starts_with("#include \"")) {
            if let Some(name) = line.split('"').nth(1) {
                todo.push(name.to_string());
            }
        }
    }
    bytes
}

/// nvcc writes absolute paths into `.file` (debug line info): our sources become their names in
/// `kernels/`, CUDA's headers `cuda/include/<name>`, so the PTX is the same on every machine.
fn portable_file_names(ptx: &str, kdir: &Path) -> String {
    let kdir = kdir.canonicalize().unwrap_or_else(|_| kdir.to_path_buf());
    let ours = format!("\"{}/", kdir.display());
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.split_inclusive('\n') {
        if !line.trim_start().starts_with(".file") {
            out.push_str(line);
        } else if let Some(i) = line.find(&ours) {
            out.push_str(&line[..i + 1]);
            out.push_str(&line[i + ours.len()..]);
        } else if let (Some(q), Some(i)) = (line.find('"'), line.find("/include/")) {
            out.push_str(&line[..q + 1]);
            out.push_str("cuda/include/");
            out.push_str(&line[i + "/include/".len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn write_shipped(dir: &Path, compiled: &Compiled, manifest: &str) {
    fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    for (_, variants) in &compiled.modules {
        for (_, path) in variants {
            fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    fs::write(dir.join("ptxas.txt"), &compiled.report).unwrap();
    fs::write(dir.join("MANIFEST"), manifest).unwrap();
}

fn generate(compiled: &Compiled, arch: &str) -> String {
    let mut g = String::from("/// Every kernel module: (module name, PTX text, kernel entry names, per-arch PTX).\n");
    g.push_str("pub static MODULES: &[PtxModule] = &[\n");
    for (stem, variants) in &compiled.modules {
        // an arch-specific module's only variant is its default
        let default = &variants.iter().find(|(a, _)| a == arch).unwrap_or(&variants[0]).1;
        let ptx = fs::read_to_string(default).unwrap_or_else(|e| fail(&format!("{}: {e}", default.display())));
        let entries = entry_names(&ptx);
        let by_arch: Vec<String> =
            variants.iter().map(|(a, p)| format!("({a:?}, include_str!({:?}))", p.display().to_string())).collect();
        let _ = writeln!(
            g,
            "    PtxModule {{ name: {stem:?}, ptx: include_str!({:?}), kernels: &{entries:?}, by_arch: &[{}] }},",
            default.display().to_string(),
            by_arch.join(", ")
        );
    }
    g.push_str("];\n");
    g.push_str(&kernel_ids(compiled));
    let _ = writeln!(
        g,
        "/// The nvcc `-arch` of `PtxModule::ptx` (what the emulator runs).\npub const PTX_ARCH: &str = {arch:?};"
    );
    let _ = writeln!(
        g,
        "/// `ptxas -v` output for every module and target (registers, shared memory, spills).\npub const PTXAS_REPORT: &str = {:?};",
        compiled.report
    );
    g
}

/// One constant per kernel entry of the shipped PTX (`ids::GEMM_F16_N_SK_LN = "gemm_f16_n_sk_ln"`):
/// launch code names kernels through these, so a kernel that does not exist is a compile error.
fn kernel_ids(compiled: &Compiled) -> String {
    let mut names: Vec<String> = Vec::new();
    for (_, variants) in &compiled.modules {
        let ptx = fs::read_to_string(&variants[0].1).unwrap();
        names.extend(entry_names(&ptx));
    }
    names.sort();
    names.dedup();
    let mut g = String::from("/// The kernel entry points of the shipped PTX, one constant each.\npub mod ids {\n");
    for n in &names {
        let _ = writeln!(g, "    pub const {}: &str = {n:?};", n.to_uppercase());
    }
    g.push_str("}\n");
    g
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

fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
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
    // scripts/setup.sh's .venv-cuda at the workspace root (or beside the crate)
    for dir in manifest_dir.ancestors() {
        let Ok(entries) = fs::read_dir(dir.join(".venv-cuda/lib")) else { continue };
        for entry in entries.flatten() {
            if let Some(p) = exe(entry.path().join("site-packages/nvidia/cu13/bin/nvcc")) {
                return p.canonicalize().ok();
            }
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

/// Fails the build on every problem `ptxas_gate` finds in the report (all of them listed).
fn gate(report: &str) {
    let problems = ptxas_gate::report_problems(report);
    if problems.is_empty() {
        return;
    }
    let mut msg = String::from("ptxas reports problems that fail the build (see src/ptxas_gate.rs):\n");
    for (module, arch, p) in &problems {
        let _ = writeln!(msg, "  kernels/{module}.cu for {arch}: {p}");
    }
    fail(&msg)
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("fusebert-kernels build: {msg}");
}
