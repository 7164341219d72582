//! The Hopper conformance kit (research note shared/docs/research/hopper.md 2.3, issue 22 item 5):
//! small semantic kernels (`kernels/conformance_sm90.cu`) run through the CUDA driver API, each
//! writing raw 32-bit words, so that a real sm_90 GPU and the PTX emulator (behind the CUDA driver
//! stand-in, `FUSEBERT_CUDA_DRIVER=emulator FUSEBERT_CUDA_STANDIN_ARCH=sm_90`) can be compared bit
//! for bit: the same code path both times, only the `libcuda` differs.
//!
//! [`run`] runs every case and returns its words with a verdict against the reference of
//! [`cases`] (computed from the note's formulas) where one exists; [`write_dir`] writes
//! `<case>.bin` (little-endian u32) and `conformance.json`; [`compare_dirs`] compares two such
//! folders and names, for each differing word, what it is (e.g. thread, `d[i]`, m, n).
//!
//! The launches use cudarc's `result`/`sys` layers directly (not [`crate::Device`]): a case needs
//! by-value parameters the launch API does not carry (a 128-byte `CUtensorMap`, a 48-byte struct).
//! C16's cases are the exception ([`production`]): they run the shipped Hopper GEMMs and
//! attention through the crate's own launch API, on a [`crate::Device`] opened on the same
//! primary context (the embedded `gemm_sm90` / `attention_sm90` PTX, whatever `ptx` is given).
use std::ffi::{c_void, CString};
use std::path::Path;

use cudarc::driver::{result, sys, CudaContext};
use fusebert_core::error::{Error, Result};

pub mod cases;
pub mod compare;
pub mod production;

pub use cases::{Case, Kind};
pub use compare::{compare_dirs, sha256_hex, Comparison};

/// The module's name among the embedded PTX (`kernels/conformance_sm90.cu`).
pub const MODULE: &str = "conformance_sm90";

/// The embedded sm_90a PTX of the conformance kernels, when the build compiled it in.
pub fn embedded_ptx() -> Option<&'static str> {
    let m = crate::ptx::module(MODULE)?;
    m.by_arch.iter().filter(|(a, _)| a.starts_with("sm_90")).map(|(_, p)| *p).next_back()
}

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Equal to the reference, or every property holds.
    Pass,
    /// Differs from the reference / a property fails / the launch failed.
    Fail,
    /// No reference (C7's numerics): the words are the finding.
    Recorded,
}

/// One case's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseResult {
    pub case: String,
    pub kernel: String,
    pub pins: String,
    pub words: usize,
    pub sha256: String,
    pub verdict: Verdict,
    /// Why it failed (first differing words against the reference, a property, a launch error).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// The raw words (written to `<case>.bin`, not into the JSON).
    #[serde(skip)]
    pub data: Vec<u32>,
}

/// A whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The device's name as the driver reports it (the stand-in says so).
    pub device: String,
    pub compute_capability: String,
    pub passed: usize,
    pub failed: usize,
    pub recorded: usize,
    pub cases: Vec<CaseResult>,
}

fn cuda(context: &str) -> impl FnOnce(result::DriverError) -> Error + '_ {
    move |e| Error::Cuda { context: context.to_string(), msg: format!("{e:?}") }
}

/// One device allocation, freed on drop.
struct Buf(sys::CUdeviceptr);
impl Buf {
    fn new(bytes: usize) -> Result<Buf> {
        Ok(Buf(unsafe { result::malloc_sync(bytes.max(4)) }.map_err(cuda("cuMemAlloc"))?))
    }
    fn upload<T: bytemuck::Pod>(data: &[T]) -> Result<Buf> {
        let b = Buf::new(std::mem::size_of_val(data))?;
        unsafe { result::memcpy_htod_sync(b.0, data) }.map_err(cuda("cuMemcpyHtoD"))?;
        Ok(b)
    }
    fn read(&self, words: usize) -> Result<Vec<u32>> {
        let mut v = vec![0u32; words];
        unsafe { result::memcpy_dtoh_sync(&mut v, self.0) }.map_err(cuda("cuMemcpyDtoH"))?;
        Ok(v)
    }
}
impl Drop for Buf {
    fn drop(&mut self) {
        let _ = unsafe { result::free_sync(self.0) };
    }
}

/// A kernel parameter: its bytes, kept at the alignment the driver reads them with.
enum Arg {
    Word(u64),
    Map(Box<sys::CUtensorMap>),
    Bytes(Box<[u64; cases::GRID_CONSTANT_BYTES / 8]>),
}
impl Arg {
    fn ptr(&mut self) -> *mut c_void {
        match self {
            Arg::Word(w) => w as *mut u64 as *mut c_void,
            Arg::Map(m) => &mut **m as *mut sys::CUtensorMap as *mut c_void,
            Arg::Bytes(b) => b.as_mut_ptr() as *mut c_void,
        }
    }
}
fn u32_arg(v: u32) -> Arg {
    Arg::Word(v as u64)
}
fn i32_arg(v: i32) -> Arg {
    Arg::Word(v as u32 as u64)
}

/// Encodes a tiled tensor map (`cuTensorMapEncodeTiled`; no interleave, no L2 promotion, zero fill).
fn encode(
    dtype: sys::CUtensorMapDataType,
    rank: usize,
    addr: sys::CUdeviceptr,
    dims: &[u64],
    strides: &[u64],
    boxd: &[u32],
    swizzle: u32,
) -> Result<sys::CUtensorMap> {
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let estr = [1u32; 5];
    let sw = match swizzle {
        1 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        2 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        3 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        _ => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
    };
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            dtype,
            rank as u32,
            addr as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxd.as_ptr(),
            estr.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sw,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    }
    .result()
    .map_err(cuda("cuTensorMapEncodeTiled"))?;
    Ok(map)
}

/// The loaded module and its stream; C16's devices, one per shipped module, opened by the first
/// case that needs it.
struct Runner {
    module: sys::CUmodule,
    stream: sys::CUstream,
    devices: std::cell::RefCell<Vec<(&'static str, crate::Device)>>,
}

impl Runner {
    /// The crate's own device on CUDA device 0 with `module` loaded (C16): it retains the same
    /// primary context, so the kit's launches keep running where they did.
    fn device(&self, module: &'static str) -> Result<crate::Device> {
        if let Some((_, d)) = self.devices.borrow().iter().find(|(m, _)| *m == module) {
            return Ok(d.clone());
        }
        let d = production::open(module)?;
        self.devices.borrow_mut().push((module, d.clone()));
        Ok(d)
    }

    fn launch(&self, kernel: &str, block: u32, smem: u32, args: &mut [Arg]) -> Result<()> {
        self.launch_grid(kernel, 1, block, smem, args)
    }

    fn launch_grid(&self, kernel: &str, grid: u32, block: u32, smem: u32, args: &mut [Arg]) -> Result<()> {
        let name = CString::new(kernel).map_err(|_| Error::Input(format!("kernel name {kernel:?}")))?;
        let f = unsafe { result::module::get_function(self.module, name) }
            .map_err(|e| Error::Kernel { kernel: kernel.into(), msg: format!("not in the conformance PTX: {e:?}") })?;
        if smem > 48 * 1024 {
            // past the default 48 KiB a kernel must opt in (C15's 64 KiB ring)
            unsafe {
                result::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .map_err(|e| Error::Kernel {
                kernel: kernel.into(),
                msg: format!("dynamic shared memory {smem}: {e:?}"),
            })?;
        }
        let mut ptrs: Vec<*mut c_void> = args.iter_mut().map(Arg::ptr).collect();
        unsafe { result::launch_kernel(f, (grid, 1, 1), (block, 1, 1), smem, self.stream, &mut ptrs) }
            .map_err(|e| Error::Kernel { kernel: kernel.into(), msg: format!("launch failed: {e:?}") })?;
        unsafe { result::stream::synchronize(self.stream) }.map_err(cuda(kernel))
    }

    /// Runs one case; its words.
    fn run(&self, case: &Case) -> Result<Vec<u32>> {
        let words = cases::words(&case.kind);
        match &case.kind {
            Kind::Sm90Gemm(s) => production::run_gemm(&self.device(s.op.module())?, s),
            Kind::Sm90Attention(s) => production::run_attn(&self.device(crate::attention_sm90::MODULE)?, s),
            Kind::Wgmma(_) | Kind::Rs(_) | Kind::Int8(_) | Kind::Mbarrier | Kind::SmemAddresses | Kind::Elect => {
                let out = Buf::new(4 * words)?;
                unsafe { result::memset_d8_sync(out.0, 0, 4 * words) }.map_err(cuda("cuMemsetD8"))?;
                let (block, smem) = match case.kind {
                    Kind::Wgmma(_) | Kind::Rs(_) | Kind::Int8(_) => (128, cases::WG_SMEM),
                    Kind::SmemAddresses => (32, cases::C12_DYNAMIC_BYTES),
                    _ => (32, 0),
                };
                self.launch(case.kernel, block, smem, &mut [Arg::Word(out.0)])?;
                out.read(words)
            }
            Kind::Cluster => {
                let out = Buf::new(4 * words)?;
                unsafe { result::memset_d8_sync(out.0, 0xff, 4 * words) }.map_err(cuda("cuMemsetD8"))?;
                // the kernel's __cluster_dims__(4, 1, 1) makes a plain launch a cluster launch
                self.launch_grid(case.kernel, cases::C17_CTAS, 64, 0, &mut [Arg::Word(out.0)])?;
                out.read(words)
            }
            Kind::GridConstant => {
                let out = Buf::new(4 * words)?;
                let bytes = cases::grid_constant_bytes();
                let mut packed = [0u64; cases::GRID_CONSTANT_BYTES / 8];
                bytemuck::cast_slice_mut::<u64, u8>(&mut packed).copy_from_slice(&bytes);
                self.launch(
                    case.kernel,
                    32,
                    0,
                    &mut [Arg::Bytes(Box::new(packed)), Arg::Word(out.0), u32_arg(words as u32)],
                )?;
                out.read(words)
            }
            Kind::TmaLoad(s) => {
                let src = Buf::upload(&cases::tma_load_source(s))?;
                let map = encode(
                    sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
                    s.rank,
                    src.0,
                    &s.dims[..s.rank],
                    &s.strides[..s.rank - 1],
                    &s.boxd[..s.rank],
                    s.swizzle,
                )?;
                let out = Buf::new(4 * words)?;
                unsafe { result::memset_d8_sync(out.0, 0, 4 * words) }.map_err(cuda("cuMemsetD8"))?;
                let bytes = cases::tma_box_bytes(s) as u32;
                let mut args =
                    vec![Arg::Map(Box::new(map)), Arg::Word(out.0), i32_arg(s.coords[0]), i32_arg(s.coords[1])];
                if s.rank == 3 {
                    args.push(i32_arg(s.coords[2]));
                }
                args.push(u32_arg(bytes));
                // 1024 bytes at least: the box sits at the start of a 1024-aligned buffer
                self.launch(case.kernel, 128, bytes.max(1024), &mut args)?;
                out.read(words)
            }
            Kind::Gemm => {
                let (a, w) = (Buf::upload(&cases::gemm_a())?, Buf::upload(&cases::gemm_w())?);
                // K-major boxes of 64 x 128 f16 with the 128-byte swizzle (the wgmma SW128 layout)
                let map = |b: &Buf, rows: usize| {
                    encode(
                        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                        2,
                        b.0,
                        &[cases::GEMM_K as u64, rows as u64],
                        &[2 * cases::GEMM_K as u64],
                        &[64, 128],
                        3,
                    )
                };
                let (ma, mw) = (map(&a, cases::GEMM_M)?, map(&w, cases::GEMM_N)?);
                let out = Buf::new(4 * words)?;
                unsafe { result::memset_d8_sync(out.0, 0xff, 4 * words) }.map_err(cuda("cuMemsetD8"))?;
                let mut args = vec![Arg::Map(Box::new(ma)), Arg::Map(Box::new(mw)), Arg::Word(out.0)];
                self.launch(case.kernel, 384, cases::GEMM_SMEM, &mut args)?;
                out.read(words)
            }
            Kind::TmaStore(s) => {
                let dst = Buf::upload(&vec![cases::STORE_SENTINEL; words])?;
                let map = encode(
                    sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT32,
                    2,
                    dst.0,
                    &s.dims,
                    &[s.stride],
                    &s.boxd,
                    0,
                )?;
                let box_words = s.boxd[0] * s.boxd[1];
                let mut args =
                    vec![Arg::Map(Box::new(map)), i32_arg(s.coords[0]), i32_arg(s.coords[1]), u32_arg(box_words)];
                self.launch(case.kernel, 128, (4 * box_words).max(1024), &mut args)?;
                dst.read(words)
            }
        }
    }
}

/// Judges a case's words against its reference or properties.
pub fn judge(case: &Case, data: &[u32]) -> (Verdict, Option<String>) {
    if let Some(want) = cases::reference(case) {
        let diffs = compare::first_differences(data, &want, 4);
        if diffs.is_empty() {
            return (Verdict::Pass, None);
        }
        let total = data.iter().zip(&want).filter(|(a, b)| a != b).count() + data.len().abs_diff(want.len());
        let lines: Vec<String> = diffs
            .iter()
            .map(|&i| {
                format!(
                    "word {i} ({}): got {} want {}",
                    cases::describe(case, i),
                    compare::show(data.get(i)),
                    compare::show(want.get(i))
                )
            })
            .collect();
        return (Verdict::Fail, Some(format!("{total} word(s) differ from the reference; {}", lines.join("; "))));
    }
    match cases::property(case, data) {
        Some(Ok(())) => (Verdict::Pass, None),
        Some(Err(why)) => (Verdict::Fail, Some(why)),
        None => (Verdict::Recorded, None),
    }
}

/// Runs the cases `select` picks on CUDA device 0 with `ptx` (the sm_90a conformance module):
/// the real driver, or the stand-in when the process installed it. A case that fails to launch
/// is a `Fail` with the error and no words; later cases still run (after a sticky fault every
/// later case fails the same way: `fusebert conformance run --isolate` runs each case in its
/// own process instead).
pub fn run(ptx: &str, select: impl Fn(&Case) -> bool) -> Result<Report> {
    let n = crate::device::cuda::device_count()?;
    if n == 0 {
        return Err(Error::NoCudaDevice("no CUDA device".into()));
    }
    let ctx = CudaContext::new(0).map_err(|e| Error::NoCudaDevice(format!("{e:?}")))?;
    ctx.bind_to_thread().map_err(cuda("bind context"))?;
    let (maj, min) = ctx.compute_capability().map_err(cuda("compute capability"))?;
    let device = ctx.name().unwrap_or_else(|_| "CUDA device".into());
    if (maj, min) != (9, 0) {
        return Err(Error::NoCudaDevice(format!(
            "{device} is sm_{maj}{min}; the conformance kernels are sm_90a (H100/H200; on the stand-in set FUSEBERT_CUDA_STANDIN_ARCH=sm_90)"
        )));
    }
    let image = CString::new(ptx).map_err(|_| Error::Input("the PTX contains a NUL byte".into()))?;
    let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
        .map_err(cuda("load the conformance PTX"))?;
    let stream = result::stream::create(result::stream::StreamKind::NonBlocking).map_err(cuda("create stream"))?;
    let runner = Runner { module, stream, devices: Default::default() };
    let mut results = Vec::new();
    for case in cases::all().into_iter().filter(|c| select(c)) {
        let (data, verdict, detail) = match runner.run(&case) {
            Ok(data) => {
                let (v, d) = judge(&case, &data);
                (data, v, d)
            }
            Err(e) => (Vec::new(), Verdict::Fail, Some(format!("did not run: {e}"))),
        };
        let bytes: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
        results.push(CaseResult {
            case: case.name.into(),
            kernel: case.kernel.into(),
            pins: case.pins.into(),
            words: data.len(),
            sha256: sha256_hex(&bytes),
            verdict,
            detail,
            data,
        });
    }
    drop(runner.devices);
    let _ = unsafe { result::stream::destroy(runner.stream) };
    let _ = unsafe { result::module::unload(runner.module) };
    Ok(Report::new(device, format!("{maj}.{min}"), results))
}

impl Report {
    /// A report over these results (the counts computed).
    pub fn new(device: String, compute_capability: String, cases: Vec<CaseResult>) -> Report {
        let count = |v: Verdict| cases.iter().filter(|r| r.verdict == v).count();
        Report {
            device,
            compute_capability,
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            recorded: count(Verdict::Recorded),
            cases,
        }
    }
}

/// A failed case that produced no words (a child process that crashed or timed out).
pub fn failed_case(case: &Case, why: String) -> CaseResult {
    CaseResult {
        case: case.name.into(),
        kernel: case.kernel.into(),
        pins: case.pins.into(),
        words: 0,
        sha256: sha256_hex(&[]),
        verdict: Verdict::Fail,
        detail: Some(why),
        data: Vec::new(),
    }
}

/// Reads a folder written by [`write_dir`] back (the words from the `.bin` files).
pub fn read_dir(dir: &Path) -> Result<Report> {
    let p = dir.join("conformance.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    let mut report: Report = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", p.display())))?;
    for r in &mut report.cases {
        let b = dir.join(format!("{}.bin", r.case));
        let bytes = std::fs::read(&b).map_err(|e| Error::Io { path: b.clone(), source: e })?;
        r.data = bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
    }
    Ok(report)
}

/// Writes `<dir>/<case>.bin` (the words, little-endian) and `<dir>/conformance.json`.
pub fn write_dir(dir: &Path, report: &Report) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::Io { path: p, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for r in &report.cases {
        let p = dir.join(format!("{}.bin", r.case));
        let bytes: Vec<u8> = r.data.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(&p, bytes).map_err(io(&p))?;
    }
    let p = dir.join("conformance.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Other(format!("conformance.json: {e}")))?;
    std::fs::write(&p, json + "\n").map_err(io(&p))
}

/// One line per case, for a terminal.
pub fn summary(report: &Report) -> String {
    let mut s = format!(
        "conformance on {} (sm {}): {} passed, {} failed, {} recorded (no reference)\n",
        report.device, report.compute_capability, report.passed, report.failed, report.recorded
    );
    for r in &report.cases {
        let v = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Recorded => "recorded",
        };
        s.push_str(&format!("  {:<28} {:<8} {:>6} words  sha256 {}\n", r.case, v, r.words, &r.sha256[..16]));
        if let Some(d) = &r.detail {
            s.push_str(&format!("      {d}\n"));
        }
    }
    s
}
