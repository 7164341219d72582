//! Shared helpers of the emulator conformance suite (tests/emu_*.rs).
//!
//! Rules these helpers enforce:
//! - every hand-written PTX module is first validated by the real `ptxas` (so a test can never
//!   exercise PTX that NVIDIA's assembler would reject);
//! - `.cu` sources are compiled by nvcc at test time into a fresh temporary folder (nothing is
//!   cached across runs);
//! - expected values come from plain Rust loops over the ISA formulas, never from the emulator.
#![allow(dead_code)] // shared by several test binaries; each uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use fusebert_kernels::device::emulator::EmulatorOptions;
use fusebert_kernels::{Device, Error, KernelArg, LaunchConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Devices, RNG
// ---------------------------------------------------------------------------------------------

/// The emulator with default options (every sanitizer on).
pub fn emu() -> Device {
    Device::emulator().expect("emulator backend must open")
}

/// The emulator with options changed by `f` from their defaults.
pub fn emu_with(f: impl FnOnce(&mut EmulatorOptions)) -> Device {
    let mut o = EmulatorOptions::default();
    f(&mut o);
    Device::emulator_with(o).expect("emulator backend must open")
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------------
// Toolchain: nvcc / ptxas from the project-local .venv-cuda
// ---------------------------------------------------------------------------------------------

/// `.venv-cuda/lib/python3*/site-packages/nvidia/cu13/bin`, canonicalized (nvcc must be called by
/// its real path or it cannot find its headers).
pub fn cuda_bin_dir() -> PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-cuda").join("lib");
    let entries = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh to install nvcc)", lib.display()));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("python3") {
            let bin = e.path().join("site-packages/nvidia/cu13/bin");
            if bin.join("nvcc").exists() {
                return bin.canonicalize().expect("canonicalize nvcc folder");
            }
        }
    }
    panic!("no nvcc under {}/python3*/site-packages/nvidia/cu13/bin (run scripts/setup.sh)", lib.display());
}

pub fn nvcc_path() -> PathBuf {
    cuda_bin_dir().join("nvcc")
}

pub fn ptxas_path() -> PathBuf {
    cuda_bin_dir().join("ptxas")
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "fusebert-emutest-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles CUDA source `src` (saved as `<file_stem>.cu`) with `nvcc -ptx -arch=sm_80 -lineinfo`
/// and returns the PTX text. Panics with nvcc's output on failure.
pub fn compile_cu(file_stem: &str, src: &str) -> String {
    compile_cu_with(file_stem, src, &[])
}

/// `compile_cu` with extra nvcc flags (e.g. `-G` for device debug info).
pub fn compile_cu_with(file_stem: &str, src: &str, extra: &[&str]) -> String {
    let dir = TempDir::new(file_stem);
    let cu = dir.0.join(format!("{file_stem}.cu"));
    let ptx = dir.0.join(format!("{file_stem}.ptx"));
    std::fs::write(&cu, src).expect("write .cu");
    let out = Command::new(nvcc_path())
        .args(["-ptx", "-arch=sm_80", "-lineinfo"])
        .args(extra)
        .arg("-o")
        .arg(&ptx)
        .arg(&cu)
        .output()
        .expect("run nvcc");
    assert!(
        out.status.success(),
        "nvcc failed on {file_stem}.cu:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&ptx).expect("read nvcc output")
}

/// Runs the real `ptxas` on `ptx` for `arch` (e.g. "sm_80"); panics with its diagnostics if it
/// rejects the module. Guards hand-written test PTX against being invalid PTX.
pub fn ptxas_check(ptx: &str, arch: &str) {
    let dir = TempDir::new("ptxas");
    let f = dir.0.join("m.ptx");
    std::fs::write(&f, ptx).expect("write ptx");
    let out = Command::new(ptxas_path())
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(dir.0.join("m.cubin"))
        .arg(&f)
        .output()
        .expect("run ptxas");
    assert!(
        out.status.success(),
        "ptxas -arch={arch} rejects the test PTX (the test is wrong, not the emulator):\n{}\n--- PTX ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        numbered(ptx)
    );
}

/// The text with 1-based line numbers (for failure messages).
pub fn numbered(text: &str) -> String {
    text.lines().enumerate().map(|(i, l)| format!("{:4} {l}\n", i + 1)).collect()
}

/// Validates hand-written PTX with ptxas (sm_80) and loads it into `dev` as module `name`.
pub fn load_ptx(dev: &Device, name: &str, ptx: &str) {
    load_ptx_arch(dev, name, ptx, "sm_80")
}

pub fn load_ptx_arch(dev: &Device, name: &str, ptx: &str, arch: &str) {
    ptxas_check(ptx, arch);
    if let Err(e) = dev.load_module(name, ptx) {
        panic!("emulator failed to load module `{name}`: {e}\n--- PTX ---\n{}", numbered(ptx));
    }
}

/// 1-based number of the first line of `text` containing `marker` (test kernels mark the lines
/// that reports must name with a comment).
pub fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker `{marker}` not found"))
}

/// Standard PTX header of hand-written modules.
pub const PTX_HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

// ---------------------------------------------------------------------------------------------
// Error-report checks
// ---------------------------------------------------------------------------------------------

/// The report text of a sanitizer (or emulator runtime) error; panics on any other variant.
pub fn report_of(r: fusebert_kernels::Result<()>, allow_emulator: bool) -> String {
    match r {
        Ok(()) => panic!("the planted bug was NOT detected (launch returned Ok)"),
        Err(Error::Sanitizer(s)) => s,
        Err(Error::Emulator(s)) if allow_emulator => s,
        Err(e) => {
            panic!("expected Error::Sanitizer{}, got {e:?}", if allow_emulator { " or Error::Emulator" } else { "" })
        }
    }
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase()
}

/// True if `report` names the 3-D index `idx` after the word `what` ("block" / "thread"), in
/// one of the usual spellings: `block (3,0,0)`, `block 3`, `blockIdx=(3,0,0)`, ...
pub fn names_index(report: &str, what: &str, idx: (u32, u32, u32)) -> bool {
    let s = squash(report);
    let tuple = format!("({},{},{})", idx.0, idx.1, idx.2);
    let mut from = 0;
    while let Some(p) = s[from..].find(what) {
        let at = from + p + what.len();
        let rest: String = s[at..].chars().take(40).collect();
        let rest = rest.trim_start_matches(|c: char| c.is_alphabetic() || c == '=' || c == ':' || c == '_');
        if rest.starts_with(&tuple) {
            return true;
        }
        if idx.1 == 0 && idx.2 == 0 {
            let n = idx.0.to_string();
            if rest.starts_with(&n) && !rest[n.len()..].starts_with(|c: char| c.is_ascii_digit()) {
                return true;
            }
        }
        from = at;
    }
    false
}

/// Asserts a located report: kernel name, block, thread and one of the expected source
/// locations (each `needle` is e.g. `oob.cu:12` or `line 42`).
pub fn assert_located(
    report: &str,
    kernel: &str,
    block: (u32, u32, u32),
    thread: Option<(u32, u32, u32)>,
    needles: &[String],
) {
    assert!(report.contains(kernel), "report does not name kernel `{kernel}`:\n{report}");
    assert!(names_index(report, "block", block), "report does not name block {block:?}:\n{report}");
    match thread {
        Some(t) => assert!(names_index(report, "thread", t), "report does not name thread {t:?}:\n{report}"),
        None => assert!(
            squash(report).contains("thread") || squash(report).contains("warp"),
            "report names no thread or warp:\n{report}"
        ),
    }
    assert!(
        needles.iter().any(|n| contains_whole(&squash(report), &squash(n))),
        "report does not name the source location (any of {needles:?}):\n{report}"
    );
}

/// `hay` contains `needle` not followed by another digit (so `line 2` does not match `line 25`).
pub fn contains_whole(hay: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(p) = hay[from..].find(needle) {
        let end = from + p + needle.len();
        if !hay[end..].starts_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
        from = from + p + 1;
    }
    false
}

/// `file.cu:LINE` needle for the line of `src` containing `marker`.
pub fn cu_loc(file_stem: &str, src: &str, marker: &str) -> String {
    format!("{file_stem}.cu:{}", line_of(src, marker))
}

/// `line N` needle (PTX line) for the line of `ptx` containing `marker`.
pub fn ptx_loc(ptx: &str, marker: &str) -> String {
    format!("line {}", line_of(ptx, marker))
}

// ---------------------------------------------------------------------------------------------
// Launch helpers
// ---------------------------------------------------------------------------------------------

pub fn lin(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig::linear(grid, block, 0)
}

pub fn ptr<T: bytemuck::Pod>(b: &fusebert_kernels::DeviceBuffer<T>) -> KernelArg {
    KernelArg::from(b)
}

/// Launches and panics with the error (for conformance tests whose kernel is clean).
pub fn launch_ok(dev: &Device, module: &str, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) {
    if let Err(e) = dev.launch_in(module, kernel, cfg, args) {
        panic!("launch of {module}::{kernel} failed: {e}");
    }
}

/// Counters of the most recent launch on an emulator device.
pub fn last_counters(dev: &Device) -> fusebert_emu::Counters {
    let emu = dev.emulator_backend().expect("emulator device");
    emu.launches().last().expect("a recorded launch").counters.clone()
}

// ---------------------------------------------------------------------------------------------
// Element-wise "one instruction per thread" harness
// ---------------------------------------------------------------------------------------------
//
// Each thread i < n loads a[i], b[i], c[i], runs BODY and stores the result. 32-bit form: inputs
// in %r10 %r11 %r12, result in %r20. 64-bit form: inputs in %rd10 %rd11 %rd12 (their low halves
// also in %r10 %r11 %r12), result in %rd20. Scratch registers for bodies: %r21..%r63,
// %rd21..%rd63, %rs1..%rs31, %f1..%f31, %fd1..%fd31, %p1..%p14.

const BLOCK: u32 = 64;

fn elementwise_ptx(body: &str, wide: bool, target: &str) -> String {
    let (sz, ld, st) = if wide {
        (8, "ld.global.u64 \t%rd10, [%rd13];\n\tld.global.u64 \t%rd11, [%rd14];\n\tld.global.u64 \t%rd12, [%rd15];\n\tcvt.u32.u64 \t%r10, %rd10;\n\tcvt.u32.u64 \t%r11, %rd11;\n\tcvt.u32.u64 \t%r12, %rd12;", "st.global.u64 \t[%rd16], %rd20;")
    } else {
        (
            4,
            "ld.global.u32 \t%r10, [%rd13];\n\tld.global.u32 \t%r11, [%rd14];\n\tld.global.u32 \t%r12, [%rd15];",
            "st.global.u32 \t[%rd16], %r20;",
        )
    };
    format!(
        r#".version 8.0
.target {target}
.address_size 64

.visible .entry op_kernel(
	.param .u64 op_kernel_param_0,
	.param .u64 op_kernel_param_1,
	.param .u64 op_kernel_param_2,
	.param .u64 op_kernel_param_3,
	.param .u32 op_kernel_param_4
)
{{
	.reg .pred 	%p<16>;
	.reg .b16 	%rs<32>;
	.reg .b32 	%r<64>;
	.reg .f32 	%f<32>;
	.reg .b64 	%rd<64>;
	.reg .f64 	%fd<32>;

	ld.param.u64 	%rd1, [op_kernel_param_0];
	ld.param.u64 	%rd2, [op_kernel_param_1];
	ld.param.u64 	%rd3, [op_kernel_param_2];
	ld.param.u64 	%rd4, [op_kernel_param_3];
	ld.param.u32 	%r1, [op_kernel_param_4];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.ge.u32 	%p15, %r5, %r1;
	@%p15 bra 	$L__DONE;
	cvta.to.global.u64 	%rd5, %rd1;
	cvta.to.global.u64 	%rd6, %rd2;
	cvta.to.global.u64 	%rd7, %rd3;
	cvta.to.global.u64 	%rd8, %rd4;
	mul.wide.u32 	%rd9, %r5, {sz};
	add.s64 	%rd13, %rd5, %rd9;
	add.s64 	%rd14, %rd6, %rd9;
	add.s64 	%rd15, %rd7, %rd9;
	add.s64 	%rd16, %rd8, %rd9;
	{ld}
	// ---- body ----
{body}
	// ---- end body ----
	{st}
$L__DONE:
	ret;
}}
"#
    )
}

/// Runs `body` (32-bit form) over the inputs; Err(message) if the emulator fails.
pub fn run32(body: &str, a: &[u32], b: &[u32], c: &[u32]) -> Result<Vec<u32>, String> {
    run32_target(body, a, b, c, "sm_80")
}

pub fn run32_target(body: &str, a: &[u32], b: &[u32], c: &[u32], target: &str) -> Result<Vec<u32>, String> {
    let ptx = elementwise_ptx(body, false, target);
    run_elementwise::<u32>(&ptx, a, b, c, target)
}

/// Runs `body` (64-bit form) over the inputs.
pub fn run64(body: &str, a: &[u64], b: &[u64], c: &[u64]) -> Result<Vec<u64>, String> {
    let ptx = elementwise_ptx(body, true, "sm_80");
    run_elementwise::<u64>(&ptx, a, b, c, "sm_80")
}

fn run_elementwise<T: bytemuck::Pod>(ptx: &str, a: &[T], b: &[T], c: &[T], arch: &str) -> Result<Vec<T>, String> {
    let n = a.len();
    assert!(b.len() == n && c.len() == n);
    ptxas_check(ptx, arch);
    let dev = emu();
    dev.load_module("ops", ptx).map_err(|e| format!("load: {e}"))?;
    let (da, db, dc) = (dev.upload(a).unwrap(), dev.upload(b).unwrap(), dev.upload(c).unwrap());
    let out = dev.alloc_filled::<T>(n, 0xFF).unwrap();
    let grid = (n as u32).div_ceil(BLOCK);
    dev.launch_in(
        "ops",
        "op_kernel",
        lin(grid, BLOCK),
        &[ptr(&da), ptr(&db), ptr(&dc), ptr(&out), KernelArg::U32(n as u32)],
    )
    .map_err(|e| format!("launch: {e}"))?;
    out.to_host().map_err(|e| format!("read back: {e}"))
}

/// Collects mismatches of many operations, then fails once listing them all (so one run tells
/// the emulator author every broken op, not only the first).
#[derive(Default)]
pub struct Check {
    failures: Vec<String>,
    pub checked: usize,
}

impl Check {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }
    /// Compares element-wise with `ok(i, got, want)`; records at most 4 mismatches per op.
    pub fn cmp<T: Copy + std::fmt::Debug>(
        &mut self,
        op: &str,
        got: Result<Vec<T>, String>,
        want: &[T],
        inputs: impl Fn(usize) -> String,
        ok: impl Fn(T, T) -> bool,
    ) {
        self.checked += 1;
        let got = match got {
            Ok(g) => g,
            Err(e) => return self.fail(format!("[{op}] {e}")),
        };
        if got.len() != want.len() {
            return self.fail(format!("[{op}] {} results for {} inputs", got.len(), want.len()));
        }
        let mut bad = 0;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if !ok(g, w) {
                if bad < 4 {
                    self.fail(format!("[{op}] element {i} ({}): got {g:?}, want {w:?}", inputs(i)));
                }
                bad += 1;
            }
        }
        if bad > 4 {
            self.fail(format!("[{op}] ... {bad} mismatches of {}", want.len()));
        }
    }
    pub fn finish(self) {
        assert!(self.checked > 0, "nothing was checked");
        if !self.failures.is_empty() {
            panic!("{} failure(s):\n{}", self.failures.len(), self.failures.join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Floating-point references
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    N,
    Z,
    M,
    P,
}

pub fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

pub fn next_up64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

/// Directed rounding of an exact value known as `rn + err` where `rn` is its round-to-nearest
/// f32 and only the SIGN of `err` (exact value minus `rn`) matters.
fn direct32(rn: f32, err_sign: f64, mode: Rnd, zero_sum: bool) -> f32 {
    if rn == 0.0 && err_sign == 0.0 && zero_sum {
        // exact zero sum of opposite-signed operands: -0 under round-down, +0 otherwise
        return if mode == Rnd::M { -0.0 } else { 0.0 };
    }
    match mode {
        Rnd::N => rn,
        Rnd::Z => {
            if err_sign != 0.0 && (err_sign > 0.0) != (rn > 0.0) && rn != 0.0 {
                if rn > 0.0 {
                    next_down32(rn)
                } else {
                    next_up32(rn)
                }
            } else {
                rn
            }
        }
        Rnd::M => {
            if err_sign < 0.0 {
                next_down32(rn)
            } else {
                rn
            }
        }
        Rnd::P => {
            if err_sign > 0.0 {
                next_up32(rn)
            } else {
                rn
            }
        }
    }
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// f32 a+b rounded with `mode` (inputs and result normal, no overflow).
pub fn add32(a: f32, b: f32, mode: Rnd) -> f32 {
    let rn = a + b;
    // exact in f64 then residual against rn (both exact operations: Sterbenz / error-free)
    let (s, e) = two_sum(a as f64, b as f64);
    let d = (s - rn as f64) + e;
    let zero_sum = a != 0.0 || b != 0.0;
    if rn == 0.0 && d == 0.0 && (a.is_sign_negative() == b.is_sign_negative()) {
        return if a.is_sign_negative() { -0.0 } else { 0.0 };
    }
    direct32(rn, d, mode, zero_sum)
}

/// f32 a*b rounded with `mode` (no overflow/underflow: the f64 product is exact).
pub fn mul32(a: f32, b: f32, mode: Rnd) -> f32 {
    let rn = a * b;
    let d = (a as f64 * b as f64) - rn as f64;
    direct32(rn, d, mode, false)
}

/// f32 fma(a,b,c) rounded with `mode` (moderate exponents: see the tests' input ranges).
pub fn fma32(a: f32, b: f32, c: f32, mode: Rnd) -> f32 {
    let rn = a.mul_add(b, c);
    let p = a as f64 * b as f64; // exact
    let (s, e) = two_sum(p, c as f64); // s + e == a*b + c exactly
    let d = (s - rn as f64) + e;
    direct32(rn, d, mode, true)
}

/// f64 a+b and a*b with directed rounding (error-free transformations in f64).
pub fn add64(a: f64, b: f64, mode: Rnd) -> f64 {
    let (s, e) = two_sum(a, b);
    direct64(s, e, mode)
}

pub fn mul64(a: f64, b: f64, mode: Rnd) -> f64 {
    let p = a * b;
    let e = a.mul_add(b, -p);
    direct64(p, e, mode)
}

fn direct64(rn: f64, err: f64, mode: Rnd) -> f64 {
    match mode {
        Rnd::N => rn,
        Rnd::Z => {
            if err != 0.0 && (err > 0.0) != (rn > 0.0) {
                if rn > 0.0 {
                    next_down64(rn)
                } else {
                    next_up64(rn)
                }
            } else {
                rn
            }
        }
        Rnd::M => {
            if err < 0.0 {
                next_down64(rn)
            } else {
                rn
            }
        }
        Rnd::P => {
            if err > 0.0 {
                next_up64(rn)
            } else {
                rn
            }
        }
    }
}

/// A binary floating-point format for correctly rounding an f64 into it.
#[derive(Debug, Clone, Copy)]
pub struct Fmt {
    /// explicit mantissa bits (f16: 10, bf16: 7, f32: 23)
    pub man: i32,
    /// exponent bits (f16: 5, bf16: 8, f32: 8)
    pub exp: i32,
}

pub const F16: Fmt = Fmt { man: 10, exp: 5 };
pub const BF16: Fmt = Fmt { man: 7, exp: 8 };
pub const F32: Fmt = Fmt { man: 23, exp: 8 };

/// Rounds `x` (exact as an f64) into `fmt` with `mode`; returns the encoded bits. Overflow
/// follows IEEE: to inf for rn, to the largest finite value when rounding toward zero (or away
/// from that infinity for rm/rp). NaN -> canonical quiet NaN bits.
pub fn round_bits(x: f64, fmt: Fmt, mode: Rnd) -> u32 {
    let bias = (1i32 << (fmt.exp - 1)) - 1;
    let sign_bit = 1u32 << (fmt.man + fmt.exp);
    let exp_all = (1u32 << fmt.exp) - 1;
    let inf = exp_all << fmt.man;
    if x.is_nan() {
        return inf | (1 << (fmt.man - 1));
    }
    let neg = x.is_sign_negative();
    let s = if neg { sign_bit } else { 0 };
    let ax = x.abs();
    if ax.is_infinite() {
        return s | inf;
    }
    if ax == 0.0 {
        return s;
    }
    // quantum: ulp at this magnitude (subnormal range shares the minimum exponent)
    let e = (ax.log2().floor() as i32).max(1 - bias);
    // fix log2 rounding at exact powers of two
    let e = if 2f64.powi(e) > ax {
        e - 1
    } else if 2f64.powi(e + 1) <= ax {
        e + 1
    } else {
        e
    }
    .max(1 - bias);
    let q = 2f64.powi(e - fmt.man); // exact power of two
    let m = ax / q; // exact scaling
    let fl = m.floor();
    let frac = m - fl;
    let up = match mode {
        Rnd::N => frac > 0.5 || (frac == 0.5 && (fl as u64) % 2 == 1),
        Rnd::Z => false,
        Rnd::M => neg && frac > 0.0,
        Rnd::P => !neg && frac > 0.0,
    };
    let mag = (if up { fl + 1.0 } else { fl }) * q;
    let max_finite = (2.0 - 2f64.powi(-fmt.man)) * 2f64.powi(bias);
    if mag > max_finite {
        let to_inf = match mode {
            Rnd::N => true,
            Rnd::Z => false,
            Rnd::M => neg,
            Rnd::P => !neg,
        };
        return if to_inf { s | inf } else { s | ((exp_all - 1) << fmt.man) | ((1 << fmt.man) - 1) };
    }
    // encode
    let min_normal = 2f64.powi(1 - bias);
    if mag < min_normal {
        return s | ((mag / 2f64.powi(1 - bias - fmt.man)) as u32);
    }
    let me = mag.log2().floor() as i32;
    let me = if 2f64.powi(me) > mag {
        me - 1
    } else if 2f64.powi(me + 1) <= mag {
        me + 1
    } else {
        me
    };
    let frac_bits = ((mag / 2f64.powi(me) - 1.0) * 2f64.powi(fmt.man)) as u32;
    s | (((me + bias) as u32) << fmt.man) | frac_bits
}

pub fn f16_bits(x: f64, mode: Rnd) -> u16 {
    round_bits(x, F16, mode) as u16
}
pub fn bf16_bits(x: f64, mode: Rnd) -> u16 {
    round_bits(x, BF16, mode) as u16
}
pub fn f16_val(b: u16) -> f64 {
    half::f16::from_bits(b).to_f64()
}
pub fn bf16_val(b: u16) -> f64 {
    half::bf16::from_bits(b).to_f64()
}

/// Random f32 with random sign, exponent in [lo, hi] and a random 23-bit mantissa.
pub fn rand_f32(r: &mut impl rand::Rng, lo: i32, hi: i32) -> f32 {
    let e = r.gen_range(lo..=hi);
    let m: u32 = r.gen_range(0..(1 << 23));
    let s: u32 = if r.gen::<bool>() { 1 << 31 } else { 0 };
    f32::from_bits(s | (((e + 127) as u32) << 23) | m)
}

pub fn rand_f64(r: &mut impl rand::Rng, lo: i32, hi: i32) -> f64 {
    let e = r.gen_range(lo..=hi);
    let m: u64 = r.gen_range(0..(1u64 << 52));
    let s: u64 = if r.gen::<bool>() { 1 << 63 } else { 0 };
    f64::from_bits(s | (((e + 1023) as u64) << 52) | m)
}

/// Both NaN, or identical bits.
pub fn same_f32(a: u32, b: u32) -> bool {
    let (x, y) = (f32::from_bits(a), f32::from_bits(b));
    (x.is_nan() && y.is_nan()) || a == b
}

pub fn same_f64(a: u64, b: u64) -> bool {
    let (x, y) = (f64::from_bits(a), f64::from_bits(b));
    (x.is_nan() && y.is_nan()) || a == b
}

pub fn same_f16(a: u16, b: u16) -> bool {
    let nan = |v: u16| (v & 0x7c00) == 0x7c00 && (v & 0x3ff) != 0;
    (nan(a) && nan(b)) || a == b
}

pub fn same_bf16(a: u16, b: u16) -> bool {
    let nan = |v: u16| (v & 0x7f80) == 0x7f80 && (v & 0x7f) != 0;
    (nan(a) && nan(b)) || a == b
}

/// Flushes an f32 subnormal to sign-preserving zero (the `.ftz` rule).
pub fn ftz(x: f32) -> f32 {
    if x != 0.0 && x.abs() < f32::MIN_POSITIVE {
        if x < 0.0 {
            -0.0
        } else {
            0.0
        }
    } else {
        x
    }
}
