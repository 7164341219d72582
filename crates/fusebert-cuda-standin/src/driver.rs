//! The driver model behind the stand-in's exports: N emulated devices (default 1), each with its
//! own emulator, one primary context, memory, modules, functions, streams (one FIFO per device),
//! events, stream capture and graphs. Calls that name no device go to the device of the calling
//! thread's current context, as on a real driver. Devices run in parallel (one lock each).
//!
//! Every export lands in `dispatch`, which never lets a panic out (it becomes
//! `CUDA_ERROR_UNKNOWN`) and only returns codes that exist in cudarc's `CUresult`.
//!
//! Semantics, as a driver has them:
//! - work is queued in submission order; in [`Mode::Eager`] it runs at once, in
//!   [`Mode::Deferred`] only at a point where the host observes it (synchronisations, blocking
//!   copies, event/stream queries, frees, context release);
//! - kernel parameters are copied at launch (and at capture) from `kernelParams`, rebuilt from the
//!   PTX `.param` signature;
//! - a kernel fault (any emulator finding at run time) becomes the sticky
//!   `CUDA_ERROR_ILLEGAL_ADDRESS`: every later call returns it until the primary context is
//!   released by all its users; `cuGetErrorString` gives the emulator's report with it;
//! - shared memory: static + dynamic above 48 KiB only after
//!   `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` was raised to cover the dynamic part, and
//!   never past the architecture's per-block limit (sm_80 163 KiB, sm_90 227 KiB);
//! - pinned host memory: an async device-to-host copy into it lands when the copy runs (in
//!   deferred mode the destination is poisoned with 0xCD at enqueue, legal since its contents
//!   are undefined until then); an async host-to-device copy from it reads it when it runs;
//!   from pageable memory the source is staged at the call and a device-to-host copy blocks;
//! - events carry a modelled clock: 1 ns per warp-instruction executed (plus 1 us per
//!   operation), nothing like a GPU's timing.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{c_char, CStr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Mode, StandinOptions};
use crate::gpus::GpuModel;
use fusebert_emu::arch::Arch;
use fusebert_emu::engine::{build_params, Emulator, EmulatorOptions, LaunchDims, Param};
use fusebert_emu::ir::Ty;

/// The trampoline's dispatch signature: entry point name (NUL-terminated), arguments widened to
/// u64, their count; returns a `CUresult`.
pub type Dispatch = extern "C" fn(name: *const u8, args: *const u64, nargs: usize) -> u32;

// CUresult values used (all members of cudarc's cuda-13000 enum).
const SUCCESS: u32 = 0;
const INVALID_VALUE: u32 = 1;
const OUT_OF_MEMORY: u32 = 2;
const NOT_INITIALIZED: u32 = 3;
const INVALID_DEVICE: u32 = 101;
const INVALID_CONTEXT: u32 = 201;
const NO_BINARY_FOR_GPU: u32 = 209;
const INVALID_PTX: u32 = 218;
const UNSUPPORTED_PTX_VERSION: u32 = 222;
const INVALID_HANDLE: u32 = 400;
const ILLEGAL_STATE: u32 = 401;
const NOT_FOUND: u32 = 500;
const ILLEGAL_ADDRESS: u32 = 700;
const NOT_SUPPORTED: u32 = 801;
const CAPTURE_UNSUPPORTED: u32 = 900;
const CAPTURE_INVALIDATED: u32 = 901;
const UNKNOWN: u32 = 999;

const PRIMARY_CTX: u64 = 0xC0DE_0000;
/// Most devices the stand-in can report.
pub const MAX_DEVICES: usize = 16;
const TOTAL_MEM: u64 = 80 << 30;
const DEFAULT_SHARED: u32 = 48 * 1024;

/// Name and description of every code the stand-in returns (cuGetErrorName/String).
fn code_text(code: u32) -> Option<(&'static CStr, &'static CStr)> {
    Some(match code {
        SUCCESS => (c"CUDA_SUCCESS", c"no error"),
        INVALID_VALUE => (c"CUDA_ERROR_INVALID_VALUE", c"invalid argument"),
        OUT_OF_MEMORY => (c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory"),
        NOT_INITIALIZED => (c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error"),
        INVALID_DEVICE => (c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal"),
        INVALID_CONTEXT => (c"CUDA_ERROR_INVALID_CONTEXT", c"invalid device context"),
        NO_BINARY_FOR_GPU => {
            (c"CUDA_ERROR_NO_BINARY_FOR_GPU", c"no kernel image is available for execution on the device")
        }
        INVALID_PTX => (c"CUDA_ERROR_INVALID_PTX", c"a PTX JIT compilation failed"),
        UNSUPPORTED_PTX_VERSION => {
            (c"CUDA_ERROR_UNSUPPORTED_PTX_VERSION", c"the provided PTX was compiled with an unsupported toolchain.")
        }
        INVALID_HANDLE => (c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle"),
        ILLEGAL_STATE => (c"CUDA_ERROR_ILLEGAL_STATE", c"the operation cannot be performed in the present state"),
        NOT_FOUND => (c"CUDA_ERROR_NOT_FOUND", c"named symbol not found"),
        600 => (c"CUDA_ERROR_NOT_READY", c"device not ready"),
        ILLEGAL_ADDRESS => (c"CUDA_ERROR_ILLEGAL_ADDRESS", c"an illegal memory access was encountered"),
        NOT_SUPPORTED => (c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported"),
        CAPTURE_UNSUPPORTED => {
            (c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", c"operation not permitted when stream is capturing")
        }
        CAPTURE_INVALIDATED => {
            (c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", c"operation failed due to a previous error during capture")
        }
        UNKNOWN => (c"CUDA_ERROR_UNKNOWN", c"unknown error"),
        _ => return None,
    })
}

/// Where a host-to-device copy takes its bytes when it runs.
#[derive(Clone)]
enum HostSrc {
    /// Staged at the call (pageable source; captured operations).
    Staged(Arc<Vec<u8>>),
    /// Read when the copy runs (pinned source: the host must not touch it before then).
    Pinned(usize),
}

/// One queued operation.
#[derive(Clone)]
enum Op {
    Launch {
        module: String,
        kernel: String,
        cfg: LaunchDims,
        args: Vec<Param>,
    },
    HtoD {
        dst: u64,
        src: HostSrc,
        len: usize,
    },
    /// Into pinned host memory at `dst`.
    DtoH {
        dst: usize,
        src: u64,
        len: usize,
    },
    DtoD {
        dst: u64,
        src: u64,
        len: usize,
    },
    Memset {
        dst: u64,
        byte: u8,
        len: usize,
    },
    Record {
        event: u64,
    },
}

struct Function {
    module: String,
    kernel: String,
    static_shared: u32,
    max_dynamic: u32,
    local_bytes: u32,
    max_threads: u32,
}

#[derive(Default)]
struct Stream {
    capture: Option<Vec<Op>>,
    invalidated: bool,
    /// Who captures and in which `CUstreamCaptureMode` (see [`Driver::refuse_during_capture`]).
    captured_by: Option<(std::thread::ThreadId, u64)>,
}

/// `CUstreamCaptureMode` values.
const CAPTURE_MODE_GLOBAL: u64 = 0;
const CAPTURE_MODE_THREAD_LOCAL: u64 = 1;

struct Event {
    timing: bool,
    /// Modelled time (ns) at which the record ran; None until then.
    at_ns: Option<u64>,
    recorded: bool,
}

/// One device's state (its emulator, its primary context and everything in it).
struct Driver {
    ordinal: i32,
    opts: StandinOptions,
    configured: bool,
    /// Kernels run on this device since the process started (kept across context resets: an
    /// injected failure is permanent, as a dead GPU).
    launches: u64,
    emu: Option<Emulator>,
    /// The architecture `emu` enforces the limits of (follows the reported device).
    emu_arch: Option<Arch>,
    ctx_refs: u32,
    next_handle: u64,
    allocs: BTreeMap<u64, u64>,
    pinned: BTreeMap<usize, usize>,
    modules: HashMap<u64, String>,
    functions: HashMap<u64, Function>,
    streams: HashMap<u64, Stream>,
    events: HashMap<u64, Event>,
    graphs: HashMap<u64, Vec<Op>>,
    execs: HashMap<u64, Vec<Op>>,
    queue: VecDeque<Op>,
    sticky: Option<String>,
    clock_ns: u64,
}

impl Driver {
    fn new(ordinal: i32) -> Self {
        Driver {
            ordinal,
            opts: StandinOptions::default(),
            configured: false,
            launches: 0,
            emu: None,
            emu_arch: None,
            ctx_refs: 0,
            // distinct handles per device
            next_handle: 0x1000 + ((ordinal as u64) << 36),
            allocs: BTreeMap::new(),
            pinned: BTreeMap::new(),
            modules: HashMap::new(),
            functions: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            graphs: HashMap::new(),
            execs: HashMap::new(),
            queue: VecDeque::new(),
            sticky: None,
            clock_ns: 0,
        }
    }

    /// This device's primary context handle.
    fn ctx(&self) -> u64 {
        PRIMARY_CTX + self.ordinal as u64
    }
}

/// Device `ordinal`'s state (every ordinal below [`MAX_DEVICES`] exists; how many are reported
/// is the options' `devices`).
fn state(ordinal: usize) -> MutexGuard<'static, Driver> {
    static DRIVERS: OnceLock<Vec<Mutex<Driver>>> = OnceLock::new();
    let all = DRIVERS.get_or_init(|| (0..MAX_DEVICES).map(|i| Mutex::new(Driver::new(i as i32))).collect());
    // A poisoned lock only means an earlier call panicked (and returned UNKNOWN); the state
    // itself is consistent at every await point, so keep going.
    all[ordinal].lock().unwrap_or_else(|p| p.into_inner())
}

/// What holds for every device: the options, which devices the process sees, the
/// per-entry-point call counts.
struct Global {
    opts: StandinOptions,
    configured: bool,
    /// The devices this process sees, in ordinal order: `CUDA_VISIBLE_DEVICES` applied to the
    /// reported ones, as a driver does (ordinal k is device `visible[k]`).
    visible: Vec<usize>,
    calls: HashMap<String, u64>,
}

/// `CUDA_VISIBLE_DEVICES` as the driver reads it: comma-separated device numbers, the list
/// ending at the first entry that is not one of the `devices` (unset or empty: all of them).
pub(crate) fn visible_devices(var: Option<&str>, devices: usize) -> Vec<usize> {
    match var.map(str::trim).filter(|v| !v.is_empty()) {
        None => (0..devices).collect(),
        Some(v) => {
            let mut out = Vec::new();
            for entry in v.split(',') {
                match entry.trim().parse::<usize>() {
                    Ok(k) if k < devices && !out.contains(&k) => out.push(k),
                    _ => break,
                }
            }
            out
        }
    }
}

fn global() -> MutexGuard<'static, Global> {
    static GLOBAL: OnceLock<Mutex<Global>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let (opts, calls) = (StandinOptions::default(), HashMap::new());
            Mutex::new(Global { opts, configured: false, visible: vec![0], calls })
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The device of a context handle, if it is the primary context of a device the process sees.
fn device_of(ctx: u64, visible: &[usize]) -> Option<usize> {
    ctx.checked_sub(PRIMARY_CTX).map(|k| k as usize).filter(|k| visible.contains(k))
}

/// Details of the last error per code, handed out by cuGetErrorString. Leaked: errors are rare
/// and cudarc borrows the string for as long as it likes.
fn details() -> MutexGuard<'static, HashMap<u32, &'static CStr>> {
    static DETAILS: OnceLock<Mutex<HashMap<u32, &'static CStr>>> = OnceLock::new();
    DETAILS.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner())
}

/// Returns `code` after recording why (shown by cuGetErrorString next to the code's text).
fn fail(code: u32, why: impl Into<String>) -> u32 {
    let base = code_text(code).map(|(_, s)| s.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!("{base} [fusebert CUDA stand-in: {}]", why.into()).replace('\0', " ");
    let c = std::ffi::CString::new(text).unwrap_or_default();
    details().insert(code, Box::leak(c.into_boxed_c_str()));
    code
}

pub(crate) fn configure(opts: StandinOptions) {
    let mut g = global();
    for i in 0..MAX_DEVICES {
        let mut d = state(i);
        if d.configured && d.opts.mode != opts.mode {
            let _ = d.flush();
        }
        if d.opts.fail != opts.fail {
            d.launches = 0; // a new failure plan counts from now
        }
        d.opts = opts;
        d.configured = true;
    }
    g.opts = opts;
    g.configured = true;
    let devices = opts.devices.clamp(1, MAX_DEVICES);
    g.visible = visible_devices(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(), devices);
}

pub(crate) fn is_configured() -> bool {
    global().configured
}

pub(crate) fn call_count(name: &str) -> u64 {
    global().calls.get(name).copied().unwrap_or(0)
}

pub(crate) fn reset_call_counts() {
    global().calls.clear();
}

/// Kernels run on device `ordinal` so far.
pub(crate) fn launches(ordinal: usize) -> u64 {
    state(ordinal).launches
}

thread_local! {
    /// The calling thread's current context (0 = none), as the driver keeps it per thread.
    static CURRENT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The one entry point of every export. Never unwinds.
pub(crate) extern "C" fn dispatch(name: *const u8, args: *const u64, nargs: usize) -> u32 {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: the trampoline passes a static NUL-terminated name and `nargs` u64s.
        let name = unsafe { CStr::from_ptr(name as *const c_char) }.to_str().unwrap_or("?");
        let a = unsafe { std::slice::from_raw_parts(args, nargs) };
        call(name, a)
    });
    r.unwrap_or(UNKNOWN)
}

/// Writes `v` through an out-pointer argument; false for NULL.
fn out<T>(p: u64, v: T) -> bool {
    if p == 0 {
        return false;
    }
    // SAFETY: the caller passed a valid out-pointer of this type, as the C API requires.
    unsafe { (p as *mut T).write_unaligned(v) };
    true
}

macro_rules! put {
    ($p:expr, $v:expr) => {
        if !out($p, $v) {
            return fail(INVALID_VALUE, "NULL output pointer");
        }
    };
}

fn call(name: &str, a: &[u64]) -> u32 {
    // Error strings work in every state (cudarc formats errors with them).
    match name {
        "cuGetErrorString" | "cuGetErrorName" => return error_text(name == "cuGetErrorName", a[0] as u32, a[1]),
        "cuDriverGetVersion" => {
            put!(a[0], 13000i32);
            return SUCCESS;
        }
        _ => {}
    }
    let visible = {
        let mut g = global();
        *g.calls.entry(name.to_string()).or_insert(0) += 1;
        if !g.configured {
            return NOT_INITIALIZED;
        }
        g.visible.clone()
    };
    let devices = visible.len();
    // Which device the call is for: the one it names, else the current context's.
    let named = match name {
        "cuInit" => {
            // tells the CUDA backend that cudarc reached this driver, not one loaded before
            fusebert_kernels::device::cuda::mark_standin_served();
            for &i in &visible {
                let r = state(i).init();
                if r != SUCCESS {
                    return r;
                }
            }
            return SUCCESS;
        }
        "cuDeviceGetCount" => {
            put!(a[0], devices as i32);
            return SUCCESS;
        }
        // host-side: no context, no device (the map is plain bytes the kernel reads)
        "cuTensorMapEncodeTiled" => return tensor_map_encode_tiled(a),
        "cuDeviceGet" => {
            let k = a[1] as i32;
            if k < 0 || k as usize >= devices {
                return fail(INVALID_DEVICE, format!("device {k} requested, the stand-in has {devices}"));
            }
            put!(a[0], k);
            return SUCCESS;
        }
        "cuCtxGetCurrent" => {
            put!(a[0], CURRENT.with(|c| c.get()) as usize);
            return SUCCESS;
        }
        "cuCtxSetCurrent" => {
            if a[0] != 0 && device_of(a[0], &visible).is_none() {
                return fail(INVALID_CONTEXT, "not one of the stand-in's primary contexts");
            }
            CURRENT.with(|c| c.set(a[0]));
            return SUCCESS;
        }
        "cuDeviceGetAttribute" | "cuDeviceGetName" => Some(a[2]),
        "cuDeviceTotalMem_v2" | "cuDevicePrimaryCtxRetain" => Some(a[1]),
        "cuDevicePrimaryCtxRelease_v2" => Some(a[0]),
        _ => None,
    };
    // A named device is an ordinal among the visible ones: the call goes to that device, with
    // the argument rewritten to the device's own number.
    let mut args = a.to_vec();
    let ordinal = match named {
        Some(dev) => match usize::try_from(dev as i32).ok().and_then(|k| visible.get(k).copied()) {
            Some(p) => {
                let at = match name {
                    "cuDeviceGetAttribute" | "cuDeviceGetName" => 2,
                    "cuDevicePrimaryCtxRelease_v2" => 0,
                    _ => 1,
                };
                args[at] = p as u64;
                p
            }
            None => return fail(INVALID_DEVICE, format!("device {}", dev as i32)),
        },
        None => match device_of(CURRENT.with(|c| c.get()), &visible) {
            Some(k) => k,
            None if name == "cuCtxGetStreamPriorityRange" => visible.first().copied().unwrap_or(0),
            None => return fail(INVALID_CONTEXT, format!("{name} without a current context")),
        },
    };
    let a = &args[..];
    let mut d = state(ordinal);
    if d.emu.is_none() {
        return NOT_INITIALIZED;
    }
    // Release is how a context recovers from a sticky error, so it must work in that state.
    if name == "cuDevicePrimaryCtxRelease_v2" {
        return d.ctx_release(a[0] as i32);
    }
    // Queries of the device and the current context still answer in the sticky state (so
    // the error surfaces from the call that does work, with its context).
    let query = name.starts_with("cuDevice") || name == "cuCtxGetCurrent" || name == "cuCtxSetCurrent";
    if d.sticky.is_some() && !query {
        return ILLEGAL_ADDRESS;
    }
    d.call(name, a)
}

fn error_text(name_only: bool, code: u32, p: u64) -> u32 {
    let Some((n, s)) = code_text(code) else {
        return INVALID_VALUE;
    };
    let text: &'static CStr = if name_only { n } else { details().get(&code).copied().unwrap_or(s) };
    put!(p, text.as_ptr());
    SUCCESS
}

impl Driver {
    fn handle(&mut self) -> u64 {
        self.next_handle += 0x10;
        self.next_handle
    }

    fn emu(&self) -> &Emulator {
        self.emu.as_ref().expect("checked in call()")
    }

    fn init(&mut self) -> u32 {
        // The emulator enforces the same per-arch limits as the device reported here.
        let arch = if self.cc().0 >= 9 { Arch::Sm90 } else { Arch::Sm80 };
        if self.emu.is_none() || self.emu_arch != Some(arch) {
            match fusebert_kernels::device::emulator::backend(EmulatorOptions { arch, ..EmulatorOptions::default() }) {
                Ok(e) => {
                    self.emu = Some(e);
                    self.emu_arch = Some(arch);
                }
                Err(e) => return fail(NOT_INITIALIZED, e.to_string()),
            }
        }
        SUCCESS
    }

    fn cc(&self) -> (u32, u32) {
        self.opts.gpu.map_or(self.opts.compute_capability, |g| g.compute_capability)
    }

    /// The GPU whose attributes are reported (the one presented, else the A100 / H100 SXM).
    fn gpu(&self) -> GpuModel {
        self.opts.gpu.unwrap_or_else(|| crate::gpus::default_for(self.cc()))
    }

    /// The device memory: the presented GPU's, else 80 GiB.
    fn total_mem(&self) -> u64 {
        self.opts.gpu.map_or(TOTAL_MEM, |g| g.total_mem)
    }

    /// Largest static + dynamic shared memory per block (the opt-in limit).
    fn shared_limit(&self) -> u32 {
        self.gpu().shared_per_block_optin as u32
    }

    fn device_attribute(&self, attr: i32) -> i32 {
        let g = self.gpu();
        match attr {
            1 => 1024,                          // MAX_THREADS_PER_BLOCK
            2 | 3 => 1024,                      // MAX_BLOCK_DIM_X/Y
            4 => 64,                            // MAX_BLOCK_DIM_Z
            5 => i32::MAX,                      // MAX_GRID_DIM_X
            6 | 7 => 65535,                     // MAX_GRID_DIM_Y/Z
            8 => DEFAULT_SHARED as i32,         // MAX_SHARED_MEMORY_PER_BLOCK
            9 => 65536,                         // TOTAL_CONSTANT_MEMORY
            10 => 32,                           // WARP_SIZE
            12 => 65536,                        // MAX_REGISTERS_PER_BLOCK
            13 => g.clock_khz,                  // CLOCK_RATE (kHz)
            16 => g.sms,                        // MULTIPROCESSOR_COUNT
            36 => g.memory_clock_khz,           // MEMORY_CLOCK_RATE (kHz)
            37 => g.bus_width_bits,             // GLOBAL_MEMORY_BUS_WIDTH
            38 => g.l2_bytes,                   // L2_CACHE_SIZE
            39 => 2048,                         // MAX_THREADS_PER_MULTIPROCESSOR
            75 => self.cc().0 as i32,           // COMPUTE_CAPABILITY_MAJOR
            76 => self.cc().1 as i32,           // COMPUTE_CAPABILITY_MINOR
            81 => g.shared_per_sm,              // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
            82 => 65536,                        // MAX_REGISTERS_PER_MULTIPROCESSOR
            97 => g.shared_per_block_optin,     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            106 => g.max_blocks_per_sm,         // MAX_BLOCKS_PER_MULTIPROCESSOR
            111 => g.reserved_shared_per_block, // RESERVED_SHARED_MEMORY_PER_BLOCK
            120 => g.cluster_launch as i32,     // CLUSTER_LAUNCH
            _ => 0,                             // everything else (incl. 115 memory pools): not supported
        }
    }

    fn call(&mut self, name: &str, a: &[u64]) -> u32 {
        match name {
            "cuDeviceGetAttribute" => self.with_device(a[2], |d| {
                put!(a[0], d.device_attribute(a[1] as i32));
                SUCCESS
            }),
            "cuDeviceGetName" => self.with_device(a[2], |d| {
                // The backend appends the compute capability itself. A presented GPU has its
                // driver name exactly (the backend knows the stand-in by `cuInit`, not by name).
                let mode = if d.opts.mode == Mode::Eager { "eager" } else { "deferred" };
                let n = match d.opts.gpu {
                    Some(g) => format!("{}\0", g.name),
                    None => format!("fusebert CUDA stand-in on the PTX emulator, {mode}, device {}\0", d.ordinal),
                };
                let len = (a[1] as i32).max(0) as usize;
                if a[0] == 0 || len == 0 {
                    return fail(INVALID_VALUE, "no room for the device name");
                }
                let b = n.as_bytes();
                let k = b.len().min(len);
                // SAFETY: the caller's buffer holds `len` bytes.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), a[0] as *mut u8, k) };
                // SAFETY: as above, k - 1 < len.
                unsafe { *(a[0] as *mut u8).add(k - 1) = 0 };
                SUCCESS
            }),
            "cuDeviceTotalMem_v2" => self.with_device(a[1], |d| {
                put!(a[0], d.total_mem() as usize);
                SUCCESS
            }),
            "cuDevicePrimaryCtxRetain" => self.with_device(a[1], |d| {
                d.ctx_refs += 1;
                put!(a[0], d.ctx() as usize);
                SUCCESS
            }),
            "cuCtxGetStreamPriorityRange" => {
                out(a[0], 0i32);
                out(a[1], 0i32);
                SUCCESS
            }
            _ => {
                if CURRENT.with(|c| c.get()) != self.ctx() || self.ctx_refs == 0 {
                    return fail(INVALID_CONTEXT, format!("{name} without a current context"));
                }
                self.context_call(name, a)
            }
        }
    }

    fn with_device(&mut self, dev: u64, f: impl FnOnce(&mut Self) -> u32) -> u32 {
        if dev as i32 != self.ordinal {
            return fail(INVALID_DEVICE, format!("device {}", dev as i32));
        }
        f(self)
    }

    fn ctx_release(&mut self, dev: i32) -> u32 {
        if dev != self.ordinal {
            return INVALID_DEVICE;
        }
        if self.ctx_refs == 0 {
            return fail(INVALID_CONTEXT, "primary context released more often than retained");
        }
        self.ctx_refs -= 1;
        if self.ctx_refs == 0 {
            // The last user is gone: the context is destroyed, and with it a sticky error,
            // every allocation and every handle (what cuDevicePrimaryCtxReset would do).
            let _ = self.flush();
            let (opts, clock, launches) = (self.opts, self.clock_ns, self.launches);
            *self = Driver::new(self.ordinal);
            self.opts = opts;
            self.configured = true;
            self.clock_ns = clock;
            self.launches = launches;
            let _ = self.init();
        }
        SUCCESS
    }

    /// Calls that need the context current.
    fn context_call(&mut self, name: &str, a: &[u64]) -> u32 {
        match name {
            "cuCtxSynchronize" => self.sync_point(None),
            "cuModuleLoadData" => self.module_load(a[0], a[1]),
            "cuModuleGetFunction" => self.get_function(a[0], a[1], a[2]),
            "cuModuleGetGlobal_v2" => fail(NOT_FOUND, "module globals are not exported by the stand-in"),
            "cuModuleUnload" => {
                let r = self.sync_point(None);
                if self.modules.remove(&a[0]).is_none() {
                    return INVALID_HANDLE;
                }
                r
            }
            "cuFuncSetAttribute" => self.func_set_attribute(a[0], a[1] as i32, a[2] as i32),
            "cuFuncGetAttribute" => self.func_get_attribute(a[0], a[1] as i32, a[2]),
            "cuMemAlloc_v2" => self.mem_alloc(a[0], a[1] as usize),
            "cuMemAllocAsync" => match self.check_stream(a[2]) {
                SUCCESS => self.mem_alloc(a[0], a[1] as usize),
                e => e,
            },
            "cuMemFree_v2" => {
                let r = self.sync_point(None);
                if r != SUCCESS {
                    return r;
                }
                self.mem_free(a[0])
            }
            "cuMemFreeAsync" => {
                // Stream-ordered free: the queue runs in order, so flushing first is exact.
                let r = self.flush();
                if r != SUCCESS {
                    return r;
                }
                self.mem_free(a[0])
            }
            "cuMemHostAlloc" | "cuMemAllocHost_v2" => self.host_alloc(a[0], a[1] as usize),
            "cuMemFreeHost" => self.host_free(a[0] as usize),
            "cuMemGetInfo_v2" => {
                let used: u64 = self.allocs.values().sum();
                out(a[0], self.total_mem().saturating_sub(used) as usize);
                out(a[1], self.total_mem() as usize);
                SUCCESS
            }
            "cuMemcpyHtoD_v2" => self.blocking(|d| d.htod(a[0], a[1] as usize, a[2] as usize, None)),
            "cuMemcpyDtoH_v2" => self.blocking(|d| d.dtoh(a[0] as usize, a[1], a[2] as usize, None)),
            "cuMemcpyDtoD_v2" => self.blocking(|d| d.dtod(a[0], a[1], a[2] as usize, None)),
            "cuMemsetD8_v2" => self.blocking(|d| d.memset(a[0], a[1] as u8, a[2] as usize, None)),
            "cuMemcpyHtoDAsync_v2" => self.htod(a[0], a[1] as usize, a[2] as usize, Some(a[3])),
            "cuMemcpyDtoHAsync_v2" => self.dtoh(a[0] as usize, a[1], a[2] as usize, Some(a[3])),
            "cuMemcpyDtoDAsync_v2" => self.dtod(a[0], a[1], a[2] as usize, Some(a[3])),
            "cuMemsetD8Async" => self.memset(a[0], a[1] as u8, a[2] as usize, Some(a[3])),
            "cuLaunchKernel" => self.launch(a),
            "cuLaunchKernelEx" => self.launch_ex(a[0], a[1], a[2], a[3]),
            "cuStreamCreate" | "cuStreamCreateWithPriority" => {
                let h = self.handle();
                self.streams.insert(h, Stream::default());
                put!(a[0], h as usize);
                SUCCESS
            }
            "cuStreamDestroy_v2" => {
                match self.streams.get(&a[0]) {
                    None => return INVALID_HANDLE,
                    Some(s) if s.capture.is_some() => return fail(ILLEGAL_STATE, "destroying a capturing stream"),
                    _ => {}
                }
                self.streams.remove(&a[0]);
                SUCCESS
            }
            "cuStreamSynchronize" | "cuStreamQuery" => match self.check_stream(a[0]) {
                SUCCESS => self.sync_point(Some(a[0])),
                e => e,
            },
            "cuStreamWaitEvent" => match (self.check_stream(a[0]), self.events.contains_key(&a[1])) {
                // One FIFO orders everything already: nothing to wait for.
                (SUCCESS, true) => SUCCESS,
                (SUCCESS, false) => INVALID_HANDLE,
                (e, _) => e,
            },
            "cuEventCreate" => {
                let h = self.handle();
                // CU_EVENT_DISABLE_TIMING = 2
                self.events.insert(h, Event { timing: a[1] & 2 == 0, at_ns: None, recorded: false });
                put!(a[0], h as usize);
                SUCCESS
            }
            "cuEventRecord" => self.event_record(a[0], a[1]),
            "cuEventSynchronize" | "cuEventQuery" => {
                if !self.events.contains_key(&a[0]) {
                    return INVALID_HANDLE;
                }
                self.sync_point(None)
            }
            "cuEventElapsedTime" | "cuEventElapsedTime_v2" => self.elapsed(a[0], a[1], a[2]),
            "cuEventDestroy_v2" => match self.events.remove(&a[0]) {
                Some(_) => SUCCESS,
                None => INVALID_HANDLE,
            },
            "cuStreamBeginCapture_v2" => self.begin_capture(a[0], a[1]),
            "cuStreamEndCapture" => self.end_capture(a[0], a[1]),
            "cuStreamIsCapturing" => {
                let st = match self.streams.get(&a[0]) {
                    Some(Stream { capture: Some(_), invalidated: true, .. }) => 2i32,
                    Some(Stream { capture: Some(_), .. }) => 1,
                    _ => 0,
                };
                put!(a[1], st);
                SUCCESS
            }
            "cuGraphInstantiateWithFlags" => {
                let Some(ops) = self.graphs.get(&a[1]).cloned() else {
                    return INVALID_HANDLE;
                };
                if a[2] > 0xF {
                    return fail(INVALID_VALUE, format!("graph instantiate flags {:#x}", a[2]));
                }
                let h = self.handle();
                self.execs.insert(h, ops);
                put!(a[0], h as usize);
                SUCCESS
            }
            "cuGraphLaunch" => self.graph_launch(a[0], a[1]),
            "cuGraphUpload" => match (self.execs.contains_key(&a[0]), self.check_stream(a[1])) {
                (true, e) => e,
                (false, _) => INVALID_HANDLE,
            },
            "cuGraphExecDestroy" => match self.execs.remove(&a[0]) {
                Some(_) => SUCCESS,
                None => INVALID_HANDLE,
            },
            "cuGraphDestroy" => match self.graphs.remove(&a[0]) {
                Some(_) => SUCCESS,
                None => INVALID_HANDLE,
            },
            other => fail(NOT_SUPPORTED, format!("{other} is not implemented by the stand-in")),
        }
    }

    // ----- scheduling -----

    fn is_legacy(stream: u64) -> bool {
        stream <= 2
    }

    /// Whether a potentially unsafe call (a synchronisation, a blocking copy, legacy-stream
    /// work) made by the current thread falls under `s`'s capture: always in global mode, only
    /// from the capturing thread in thread-local mode, never in relaxed mode (the driver's
    /// `cuStreamBeginCapture` rules).
    fn guards(s: &Stream) -> bool {
        match (s.capture.is_some(), s.captured_by) {
            (true, Some((_, CAPTURE_MODE_GLOBAL))) => true,
            (true, Some((thread, CAPTURE_MODE_THREAD_LOCAL))) => thread == std::thread::current().id(),
            _ => false,
        }
    }

    /// A potentially unsafe call while a capture guards against it: unsupported, and it
    /// invalidates those captures.
    fn refuse_during_capture(&mut self, what: &str) -> Option<u32> {
        if !self.streams.values().any(Self::guards) {
            return None;
        }
        for s in self.streams.values_mut() {
            if Self::guards(s) {
                s.invalidated = true;
            }
        }
        Some(fail(CAPTURE_UNSUPPORTED, format!("{what} while a stream is capturing")))
    }

    fn check_stream(&self, s: u64) -> u32 {
        if Self::is_legacy(s) || self.streams.contains_key(&s) {
            SUCCESS
        } else {
            fail(INVALID_HANDLE, format!("stream {s:#x} does not exist"))
        }
    }

    /// Queues `op` on `stream`: appended to the capture when the stream captures, else run now
    /// (eager) or later (deferred).
    fn enqueue(&mut self, stream: u64, op: Op) -> u32 {
        let r = self.check_stream(stream);
        if r != SUCCESS {
            return r;
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            if let Some(c) = &mut s.capture {
                c.push(op);
                return SUCCESS;
            }
        }
        if Self::is_legacy(stream) {
            if let Some(e) = self.refuse_during_capture("work on the legacy stream") {
                return e;
            }
        }
        self.queue.push_back(op);
        if self.opts.mode == Mode::Eager {
            // A fault becomes sticky here but, as on a GPU, is reported by the next call, not
            // by the asynchronous call that queued the work.
            let _ = self.flush();
        }
        SUCCESS
    }

    /// Runs everything queued. A failure becomes the sticky error (reported by this call and
    /// every later one).
    fn flush(&mut self) -> u32 {
        while let Some(op) = self.queue.pop_front() {
            if let Err(report) = self.run(op) {
                self.queue.clear();
                self.sticky = Some(report.clone());
                return fail(ILLEGAL_ADDRESS, report);
            }
        }
        SUCCESS
    }

    /// A point where the host observes the device: runs the queue, returns the sticky error.
    fn sync_point(&mut self, stream: Option<u64>) -> u32 {
        let capturing_self = stream.is_some_and(|s| self.streams.get(&s).is_some_and(|s| s.capture.is_some()));
        if stream.is_none() || capturing_self {
            if let Some(e) = self.refuse_during_capture("a synchronisation") {
                return e;
            }
        }
        self.flush()
    }

    /// A blocking call: everything before it completes, then it runs.
    fn blocking(&mut self, f: impl FnOnce(&mut Self) -> u32) -> u32 {
        if let Some(e) = self.refuse_during_capture("a blocking copy") {
            return e;
        }
        let r = self.flush();
        if r != SUCCESS {
            return r;
        }
        let r = f(self);
        if r != SUCCESS {
            return r;
        }
        self.flush()
    }

    fn run(&mut self, op: Op) -> std::result::Result<(), String> {
        self.clock_ns += 1000;
        if let Op::Launch { kernel, .. } = &op {
            self.launches += 1;
            if let Some((dev, after)) = self.opts.fail {
                if dev == self.ordinal as usize && self.launches > after {
                    return Err(format!(
                        "injected failure: device {dev} fails after {after} kernel launches \
                         (FUSEBERT_CUDA_STANDIN_FAIL); kernel `{kernel}` was launch {}",
                        self.launches
                    ));
                }
            }
        }
        let emu = self.emu.as_ref().ok_or("no emulator")?;
        let r = match op {
            Op::Launch { module, kernel, cfg, args } => {
                let r = emu.launch(&module, &kernel, &cfg, &args);
                if let Some(c) = emu.last_counters() {
                    self.clock_ns += c.warp_instructions;
                }
                r.map_err(|e| format!("kernel `{kernel}` faulted: {e}"))
            }
            Op::HtoD { dst, src, len } => match src {
                HostSrc::Staged(v) => emu.write(dst, &v[..len]),
                // SAFETY: a live pinned allocation (checked at enqueue) of at least `len` bytes.
                HostSrc::Pinned(p) => emu.write(dst, unsafe { std::slice::from_raw_parts(p as *const u8, len) }),
            }
            .map_err(|e| format!("copy to device: {e}")),
            // SAFETY: a live pinned allocation (checked at enqueue) of at least `len` bytes.
            Op::DtoH { dst, src, len } => emu
                .read(src, unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) })
                .map_err(|e| format!("copy to host: {e}")),
            Op::DtoD { dst, src, len } => {
                let mut v = vec![0u8; len];
                emu.read(src, &mut v).and_then(|_| emu.write(dst, &v)).map_err(|e| format!("device copy: {e}"))
            }
            Op::Memset { dst, byte, len } => emu.memset(dst, byte, len).map_err(|e| format!("memset: {e}")),
            Op::Record { event } => {
                if let Some(e) = self.events.get_mut(&event) {
                    e.at_ns = Some(self.clock_ns);
                }
                Ok(())
            }
        };
        r
    }

    // ----- memory -----

    fn mem_alloc(&mut self, p: u64, bytes: usize) -> u32 {
        if bytes == 0 {
            return fail(INVALID_VALUE, "cuMemAlloc of 0 bytes");
        }
        let used: u64 = self.allocs.values().sum();
        if used + bytes as u64 > self.total_mem() {
            return fail(OUT_OF_MEMORY, format!("{bytes} bytes requested, {} free", self.total_mem() - used));
        }
        match self.emu().alloc(bytes) {
            Ok(addr) => {
                self.allocs.insert(addr, bytes as u64);
                put!(p, addr);
                SUCCESS
            }
            Err(e) => fail(OUT_OF_MEMORY, e.to_string()),
        }
    }

    fn mem_free(&mut self, addr: u64) -> u32 {
        if self.allocs.remove(&addr).is_none() {
            return fail(INVALID_VALUE, format!("cuMemFree of {addr:#x}, not an allocation's start"));
        }
        self.emu().free(addr);
        SUCCESS
    }

    /// Whether [addr, addr + len) lies inside one device allocation.
    fn device_range(&self, addr: u64, len: usize) -> bool {
        self.allocs.range(..=addr).next_back().is_some_and(|(&b, &s)| addr + len as u64 <= b + s)
    }

    /// Whether [p, p + len) lies inside one pinned host allocation.
    fn pinned_range(&self, p: usize, len: usize) -> bool {
        self.pinned.range(..=p).next_back().is_some_and(|(&b, &s)| p + len <= b + s)
    }

    fn host_alloc(&mut self, p: u64, bytes: usize) -> u32 {
        let layout = match std::alloc::Layout::from_size_align(bytes.max(1), 4096) {
            Ok(l) => l,
            Err(_) => return fail(INVALID_VALUE, format!("pinned allocation of {bytes} bytes")),
        };
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return fail(OUT_OF_MEMORY, format!("pinned allocation of {bytes} bytes"));
        }
        self.pinned.insert(ptr as usize, bytes.max(1));
        put!(p, ptr as usize);
        SUCCESS
    }

    fn host_free(&mut self, p: usize) -> u32 {
        let r = self.flush();
        let Some(size) = self.pinned.remove(&p) else {
            return fail(INVALID_VALUE, format!("cuMemFreeHost of {p:#x}, not a pinned allocation"));
        };
        // SAFETY: allocated in host_alloc with this layout.
        unsafe { std::alloc::dealloc(p as *mut u8, std::alloc::Layout::from_size_align_unchecked(size, 4096)) };
        r
    }

    fn check_device(&self, addr: u64, len: usize, what: &str) -> Option<u32> {
        if self.device_range(addr, len) {
            None
        } else {
            Some(fail(INVALID_VALUE, format!("{what}: [{addr:#x}, +{len}) is not inside one device allocation")))
        }
    }

    /// `stream` None: the blocking variant (the caller flushed before and after).
    fn htod(&mut self, dst: u64, src: usize, len: usize, stream: Option<u64>) -> u32 {
        if len == 0 {
            return SUCCESS;
        }
        if let Some(e) = self.check_device(dst, len, "copy to device") {
            return e;
        }
        if src == 0 {
            return fail(INVALID_VALUE, "copy from a NULL host pointer");
        }
        let pinned = stream.is_some() && self.pinned_range(src, len);
        let src = if pinned {
            HostSrc::Pinned(src)
        } else {
            // SAFETY: the caller's host buffer holds `len` bytes for the duration of the call.
            HostSrc::Staged(Arc::new(unsafe { std::slice::from_raw_parts(src as *const u8, len) }.to_vec()))
        };
        self.enqueue(stream.unwrap_or(0), Op::HtoD { dst, src, len })
    }

    fn dtoh(&mut self, dst: usize, src: u64, len: usize, stream: Option<u64>) -> u32 {
        if len == 0 {
            return SUCCESS;
        }
        if let Some(e) = self.check_device(src, len, "copy to host") {
            return e;
        }
        if dst == 0 {
            return fail(INVALID_VALUE, "copy to a NULL host pointer");
        }
        let s = stream.unwrap_or(0);
        if stream.is_some() && self.pinned_range(dst, len) {
            if self.opts.mode == Mode::Deferred && self.streams.get(&s).is_none_or(|s| s.capture.is_none()) {
                // Undefined until the copy runs: make an early read visible.
                // SAFETY: inside a live pinned allocation (checked above).
                unsafe { std::ptr::write_bytes(dst as *mut u8, 0xCD, len) };
            }
            return self.enqueue(s, Op::DtoH { dst, src, len });
        }
        // Pageable destination: the copy blocks until done (cudarc relies on this).
        if stream.is_some() {
            if self.streams.get(&s).is_some_and(|s| s.capture.is_some()) {
                return fail(CAPTURE_UNSUPPORTED, "a copy to pageable host memory cannot be captured");
            }
            let r = self.check_stream(s);
            if r != SUCCESS {
                return r;
            }
            let r = self.flush();
            if r != SUCCESS {
                return r;
            }
        }
        let emu = self.emu();
        // SAFETY: the caller's buffer holds `len` bytes for the duration of the call.
        match emu.read(src, unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) }) {
            Ok(()) => SUCCESS,
            Err(e) => fail(INVALID_VALUE, e.to_string()),
        }
    }

    fn dtod(&mut self, dst: u64, src: u64, len: usize, stream: Option<u64>) -> u32 {
        if len == 0 {
            return SUCCESS;
        }
        if let Some(e) =
            self.check_device(src, len, "device copy source").or(self.check_device(dst, len, "device copy destination"))
        {
            return e;
        }
        self.enqueue(stream.unwrap_or(0), Op::DtoD { dst, src, len })
    }

    fn memset(&mut self, dst: u64, byte: u8, len: usize, stream: Option<u64>) -> u32 {
        if len == 0 {
            return SUCCESS;
        }
        if let Some(e) = self.check_device(dst, len, "memset") {
            return e;
        }
        self.enqueue(stream.unwrap_or(0), Op::Memset { dst, byte, len })
    }

    // ----- modules and functions -----

    fn module_load(&mut self, p: u64, image: u64) -> u32 {
        if image == 0 {
            return fail(INVALID_VALUE, "NULL module image");
        }
        // SAFETY: cuModuleLoadData takes a NUL-terminated PTX text.
        let ptx = match unsafe { CStr::from_ptr(image as *const c_char) }.to_str() {
            Ok(s) => s,
            Err(_) => return fail(INVALID_PTX, "the image is not UTF-8 PTX text (cubins are not supported)"),
        };
        if let Some(e) = self.check_ptx_header(ptx) {
            return e;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ptx.hash(&mut h);
        let name = format!("standin-{:016x}", h.finish());
        if let Err(e) = self.emu().load_module(&name, ptx) {
            return fail(INVALID_PTX, e.to_string());
        }
        let handle = self.handle();
        self.modules.insert(handle, name);
        put!(p, handle as usize);
        SUCCESS
    }

    /// `.version` against the emulated 13.0 driver (PTX ISA 9.0), `.target` against the device.
    fn check_ptx_header(&self, ptx: &str) -> Option<u32> {
        let field = |key: &str| ptx.lines().find_map(|l| l.trim().strip_prefix(key).map(|r| r.trim().to_string()));
        if let Some(v) = field(".version ") {
            let (maj, min) = v.split_once('.').unwrap_or((&v, "0"));
            let ver = (maj.parse::<u32>().unwrap_or(99), min.parse::<u32>().unwrap_or(99));
            if ver > (9, 0) {
                return Some(fail(
                    UNSUPPORTED_PTX_VERSION,
                    format!("PTX ISA {v}; the emulated 13.0 driver takes <= 9.0"),
                ));
            }
        }
        if let Some(t) = field(".target ") {
            let arch = t.split(',').next().unwrap_or("").trim();
            let digits: String = arch.trim_start_matches("sm_").chars().take_while(|c| c.is_ascii_digit()).collect();
            let (maj, min) = self.cc();
            // arch-specific PTX (sm_90a) runs on exactly its capability, other PTX on any newer
            let exact = arch.ends_with('a');
            if digits.parse::<u32>().is_ok_and(|v| v > maj * 10 + min || (exact && v != maj * 10 + min)) {
                return Some(fail(NO_BINARY_FOR_GPU, format!("PTX .target {arch} on an sm_{maj}{min} device")));
            }
        }
        None
    }

    fn get_function(&mut self, p: u64, module: u64, name: u64) -> u32 {
        let Some(mname) = self.modules.get(&module).cloned() else {
            return INVALID_HANDLE;
        };
        if name == 0 {
            return fail(INVALID_VALUE, "NULL function name");
        }
        // SAFETY: a NUL-terminated name, as the C API requires.
        let kname = unsafe { CStr::from_ptr(name as *const c_char) }.to_string_lossy().into_owned();
        let m = match self.emu().module(&mname) {
            Ok(m) => m,
            Err(e) => return fail(INVALID_HANDLE, e.to_string()),
        };
        let Some(k) = m.kernel(&kname) else {
            return fail(NOT_FOUND, format!("no entry `{kname}` in the module"));
        };
        let max_threads = k.maxntid.or(k.reqntid).map_or(1024, |(x, y, z)| (x * y * z).min(1024));
        let f = Function {
            module: mname,
            kernel: kname,
            static_shared: k.shared_static,
            max_dynamic: DEFAULT_SHARED.saturating_sub(k.shared_static),
            local_bytes: k.local_bytes,
            max_threads,
        };
        let h = self.handle();
        self.functions.insert(h, f);
        put!(p, h as usize);
        SUCCESS
    }

    fn func_set_attribute(&mut self, f: u64, attr: i32, value: i32) -> u32 {
        let limit = self.shared_limit();
        let Some(func) = self.functions.get_mut(&f) else {
            return INVALID_HANDLE;
        };
        match attr {
            // MAX_DYNAMIC_SHARED_SIZE_BYTES
            8 => {
                if value < 0 || func.static_shared as u64 + value as u64 > limit as u64 {
                    return fail(
                        INVALID_VALUE,
                        format!(
                            "{}: max dynamic shared {value} + static {} exceeds the device's {limit} bytes per block",
                            func.kernel, func.static_shared
                        ),
                    );
                }
                func.max_dynamic = value as u32;
                let (module, kernel) = (func.module.clone(), func.kernel.clone());
                // The emulator checks the launch against the opt-in as the driver does: mirror it.
                match self.emu().set_max_dynamic_shared(&module, &kernel, value as u32) {
                    Ok(()) => SUCCESS,
                    Err(e) => fail(INVALID_VALUE, e.to_string()),
                }
            }
            // PREFERRED_SHARED_MEMORY_CARVEOUT: a hint
            9 if (-1..=100).contains(&value) => SUCCESS,
            _ => fail(INVALID_VALUE, format!("function attribute {attr} = {value}")),
        }
    }

    fn func_get_attribute(&mut self, p: u64, attr: i32, f: u64) -> u32 {
        let Some(func) = self.functions.get(&f) else {
            return INVALID_HANDLE;
        };
        let v = match attr {
            0 => func.max_threads as i32,
            1 => func.static_shared as i32,
            2 => 0,
            3 => func.local_bytes as i32,
            4 => 32, // NUM_REGS: the emulator does not allocate registers
            5 | 6 => (self.cc().0 * 10 + self.cc().1) as i32,
            8 => func.max_dynamic as i32,
            _ => return fail(INVALID_VALUE, format!("function attribute {attr}")),
        };
        put!(p, v);
        SUCCESS
    }

    /// `cuLaunchKernelEx(config, f, kernelParams, extra)`: the launch of `config` (its
    /// `CUlaunchConfig`: grid, block, shared bytes, stream, attributes). The cluster-dimension
    /// attribute is checked as the driver checks it (the grid a multiple of the cluster, at most
    /// 8 CTAs, 16 with the non-portable opt-in); a cluster's CTAs then run as independent
    /// blocks, which is exact for kernels without cluster instructions (the only ones the
    /// emulator loads). Other attributes are refused rather than ignored.
    fn launch_ex(&mut self, config: u64, f: u64, params: u64, extra: u64) -> u32 {
        if config == 0 {
            return fail(INVALID_VALUE, "cuLaunchKernelEx: NULL config");
        }
        // SAFETY: a CUlaunchConfig: 7 u32 (grid, block, sharedMemBytes), the stream at 32, the
        // attribute array at 40, their count at 48.
        let (dims, stream, attrs, nattrs) = unsafe {
            let c = config as *const u8;
            let dims: [u32; 7] = std::ptr::read_unaligned(c as *const [u32; 7]);
            let stream = std::ptr::read_unaligned(c.add(32) as *const u64);
            let attrs = std::ptr::read_unaligned(c.add(40) as *const u64);
            let n = std::ptr::read_unaligned(c.add(48) as *const u32);
            (dims, stream, attrs, n)
        };
        for k in 0..nattrs as usize {
            // SAFETY: CUlaunchAttribute is 72 bytes: the id, padding, a 64-byte value union.
            let (id, v) = unsafe {
                let at = (attrs as *const u8).add(72 * k);
                (std::ptr::read_unaligned(at as *const u32), std::ptr::read_unaligned(at.add(8) as *const [u32; 3]))
            };
            const CLUSTER_DIMENSION: u32 = 4;
            if id != CLUSTER_DIMENSION {
                return fail(NOT_SUPPORTED, format!("cuLaunchKernelEx: launch attribute {id} is not emulated"));
            }
            if self.cc().0 < 9 {
                return fail(INVALID_VALUE, "cuLaunchKernelEx: clusters need compute capability 9.0");
            }
            let size = v[0] as u64 * v[1] as u64 * v[2] as u64;
            if v.contains(&0) || dims[0] % v[0] != 0 || dims[1] % v[1] != 0 || dims[2] % v[2] != 0 || size > 8 {
                return fail(
                    INVALID_VALUE,
                    format!(
                        "cuLaunchKernelEx: cluster {v:?} does not divide grid {:?} or has more than 8 CTAs",
                        &dims[..3]
                    ),
                );
            }
        }
        let a = [
            f,
            dims[0] as u64,
            dims[1] as u64,
            dims[2] as u64,
            dims[3] as u64,
            dims[4] as u64,
            dims[5] as u64,
            dims[6] as u64,
            stream,
            params,
            extra,
        ];
        self.launch(&a)
    }

    fn launch(&mut self, a: &[u64]) -> u32 {
        let (f, stream, params, extra) = (a[0], a[8], a[9], a[10]);
        let cfg = LaunchDims {
            grid: (a[1] as u32, a[2] as u32, a[3] as u32),
            block: (a[4] as u32, a[5] as u32, a[6] as u32),
            shared_mem_bytes: a[7] as u32,
        };
        let Some(func) = self.functions.get(&f) else {
            return INVALID_HANDLE;
        };
        let (module, kernel) = (func.module.clone(), func.kernel.clone());
        let bad = |msg: String| fail(INVALID_VALUE, format!("launch of `{kernel}`: {msg}"));
        if extra != 0 {
            return bad("the `extra` parameter buffer is not supported by the stand-in".into());
        }
        let (b, g) = (cfg.block, cfg.grid);
        let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
        if threads == 0 || g.0 == 0 || g.1 == 0 || g.2 == 0 {
            return bad(format!("empty launch: grid {g:?}, block {b:?}"));
        }
        if threads > func.max_threads as u64 || b.0 > 1024 || b.1 > 1024 || b.2 > 64 || g.1 > 65535 || g.2 > 65535 {
            return bad(format!("grid {g:?} / block {b:?} outside the limits (max {} threads)", func.max_threads));
        }
        if cfg.shared_mem_bytes > func.max_dynamic {
            return bad(format!(
                "{} bytes of dynamic shared memory (+ {} static) but CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES is {}: \
                 raise it first (static + dynamic above 48 KiB needs the opt-in)",
                cfg.shared_mem_bytes, func.static_shared, func.max_dynamic
            ));
        }
        let m = match self.emu().module(&module) {
            Ok(m) => m,
            Err(e) => return bad(e.to_string()),
        };
        let Some(k) = m.kernel(&kernel) else {
            return bad("the kernel vanished from its module".into());
        };
        if params == 0 && !k.params.is_empty() {
            return bad(format!("kernelParams is NULL, the kernel takes {} parameters", k.params.len()));
        }
        // Copy every parameter now: kernelParams points at the caller's temporaries.
        let mut args = Vec::with_capacity(k.params.len());
        for (i, p) in k.params.iter().enumerate() {
            // SAFETY: kernelParams holds one pointer per PTX parameter, each to `p.size` bytes.
            let src = unsafe { *(params as *const *const u8).add(i) };
            if src.is_null() {
                return bad(format!("kernelParams[{i}] is NULL"));
            }
            if p.size != 4 && p.size != 8 {
                // by value as raw bytes: a struct, a `__grid_constant__ CUtensorMap`
                // SAFETY: as above, `p.size` bytes.
                let raw = unsafe { std::slice::from_raw_parts(src, p.size as usize) };
                match fusebert_emu::ParamBytes::new(raw) {
                    Some(b) => args.push(Param::Bytes(b)),
                    None => {
                        return bad(format!(
                            "parameter {i} (`{}`) is {} bytes; the stand-in passes at most {} by value",
                            p.name,
                            p.size,
                            fusebert_emu::ParamBytes::MAX
                        ))
                    }
                }
                continue;
            }
            let mut v = [0u8; 8];
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(src, v.as_mut_ptr(), p.size as usize) };
            let w = u64::from_le_bytes(v);
            args.push(match (p.size, p.ty) {
                (4, Ty::F32) => Param::F32(f32::from_bits(w as u32)),
                (4, Ty::S32) => Param::I32(w as u32 as i32),
                (4, _) => Param::U32(w as u32),
                (_, Ty::F64) => Param::F64(f64::from_bits(w)),
                (_, Ty::S64) => Param::I64(w as i64),
                _ => Param::Ptr(w),
            });
        }
        if let Err(e) = build_params(k, &args) {
            return bad(e.to_string());
        }
        self.enqueue(stream, Op::Launch { module, kernel, cfg, args })
    }

    // ----- events -----

    fn event_record(&mut self, e: u64, stream: u64) -> u32 {
        match self.events.get_mut(&e) {
            Some(ev) => {
                ev.recorded = true;
                ev.at_ns = None;
            }
            None => return INVALID_HANDLE,
        }
        self.enqueue(stream, Op::Record { event: e })
    }

    fn elapsed(&mut self, p: u64, start: u64, end: u64) -> u32 {
        let r = self.sync_point(None);
        if r != SUCCESS {
            return r;
        }
        let (Some(s), Some(e)) = (self.events.get(&start), self.events.get(&end)) else {
            return INVALID_HANDLE;
        };
        if !s.timing || !e.timing || !s.recorded || !e.recorded {
            return fail(INVALID_HANDLE, "elapsed time needs two recorded events created with timing");
        }
        let (Some(a), Some(b)) = (s.at_ns, e.at_ns) else {
            return fail(INVALID_HANDLE, "an event's record was captured into a graph, not run");
        };
        put!(p, (b as f64 - a as f64) as f32 / 1e6);
        SUCCESS
    }

    // ----- capture and graphs -----

    fn begin_capture(&mut self, stream: u64, mode: u64) -> u32 {
        if Self::is_legacy(stream) {
            return fail(CAPTURE_UNSUPPORTED, "the legacy (NULL) stream cannot be captured");
        }
        match self.streams.get_mut(&stream) {
            None => INVALID_HANDLE,
            Some(s) if s.capture.is_some() => fail(ILLEGAL_STATE, "the stream is already capturing"),
            Some(s) => {
                s.capture = Some(Vec::new());
                s.invalidated = false;
                s.captured_by = Some((std::thread::current().id(), mode));
                SUCCESS
            }
        }
    }

    fn end_capture(&mut self, stream: u64, p: u64) -> u32 {
        let Some(s) = self.streams.get_mut(&stream) else {
            return INVALID_HANDLE;
        };
        let Some(ops) = s.capture.take() else {
            return fail(ILLEGAL_STATE, "the stream is not capturing");
        };
        if std::mem::take(&mut s.invalidated) {
            out(p, 0usize);
            return fail(CAPTURE_INVALIDATED, "an unsupported call during the capture invalidated it");
        }
        let h = self.handle();
        self.graphs.insert(h, ops);
        put!(p, h as usize);
        SUCCESS
    }

    fn graph_launch(&mut self, exec: u64, stream: u64) -> u32 {
        let Some(ops) = self.execs.get(&exec).cloned() else {
            return INVALID_HANDLE;
        };
        for op in ops {
            let r = self.enqueue(stream, op);
            if r != SUCCESS {
                return r;
            }
        }
        SUCCESS
    }
}

/// `cuTensorMapEncodeTiled(map, dtype, rank, gaddr, dims, strides, box, elementStrides,
/// interleave, swizzle, l2Promotion, oobFill)`: validated as the driver validates
/// (CUDA_ERROR_INVALID_VALUE where it would refuse), encoded into the emulator's 128 opaque
/// bytes, which its TMA instructions decode (`fusebert_emu::tma`).
fn tensor_map_encode_tiled(a: &[u64]) -> u32 {
    let (map, rank) = (a[0], a[2] as u32);
    if map == 0 || map % 64 != 0 {
        return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: tensorMap must be a 64-byte-aligned object");
    }
    if !(1..=5).contains(&rank) || a[4] == 0 || a[6] == 0 || a[7] == 0 || (rank > 1 && a[5] == 0) {
        return fail(INVALID_VALUE, format!("cuTensorMapEncodeTiled: rank {rank} or a NULL array"));
    }
    if a[10] > 3 || a[11] > 1 {
        return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: bad l2Promotion or oobFill");
    }
    let r = rank as usize;
    // SAFETY: the driver API's arrays hold `rank` (strides: `rank - 1`) elements.
    let (dims, strides, boxd, es) = unsafe {
        (
            std::slice::from_raw_parts(a[4] as *const u64, r).to_vec(),
            if r > 1 { std::slice::from_raw_parts(a[5] as *const u64, r - 1).to_vec() } else { Vec::new() },
            std::slice::from_raw_parts(a[6] as *const u32, r).to_vec(),
            std::slice::from_raw_parts(a[7] as *const u32, r).to_vec(),
        )
    };
    let encoded = fusebert_emu::tma::encode_tiled(
        a[1] as u32,
        rank,
        a[3],
        &dims,
        &strides,
        &boxd,
        &es,
        a[8] as u32,
        a[9] as u32,
        a[11] == 1,
    );
    match encoded {
        Ok(bytes) => {
            // SAFETY: a CUtensorMap is 128 bytes, 64-byte aligned (checked above).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), map as *mut u8, bytes.len()) };
            SUCCESS
        }
        Err(e) => fail(INVALID_VALUE, format!("cuTensorMapEncodeTiled: {e}")),
    }
}
