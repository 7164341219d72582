//! The CUDA backend: a cudarc context on one GPU, the embedded PTX variant matching the device
//! loaded at open, one non-blocking stream that carries every copy, memset and launch, pinned
//! staging buffers for the copies, and CUDA graphs for replayed launch lists.
//!
//! Uses cudarc's driver `result` layer with raw device addresses so that both backends share
//! one addressing model. The driver library is loaded dynamically: with no driver, or a driver
//! and no GPU, `open` returns `Error::NoCudaDevice` instead of panicking. With
//! `FUSEBERT_CUDA_DRIVER=emulator[:eager|:deferred]` the driver is the stand-in on the PTX
//! emulator (the `fusebert-cuda-standin` crate, opted into by tests and the binary).
//!
//! Ordering: everything goes on `stream` in program order, so launches see the copies before
//! them. A host write is staged into pinned memory and copied asynchronously; the staging
//! buffer is reused only after the event recorded behind its last copy has completed. A host
//! read copies into pinned memory and synchronises the stream before touching it; a batched
//! read (`read_parts`) queues all its copies into one pinned buffer, synchronises once, and
//! lets the caller read (convert) the results there, without another host copy.
//!
//! Function handles and their attributes (static shared memory, the dynamic shared memory
//! limit) are resolved once, when a module loads; a launch looks its function up in that table
//! and only calls the driver to raise the shared-memory opt-in the first time a size needs it.
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext};

use super::{
    read_layout, DeviceBackend, KernelArg, LaunchConfig, ReadPart, RecordedLaunch, TensorMap, TiledTensorMap,
    TENSOR_MAP_BYTES,
};
use fusebert_core::error::{Error, Result};

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    name: String,
    /// Every operation of this backend runs on this stream (non-blocking: no implicit
    /// synchronisation with the legacy stream).
    stream: sys::CUstream,
    /// module name -> (module handle, kernel name -> function)
    modules: Mutex<HashMap<String, LoadedModule>>,
    staging: Mutex<Staging>,
    graphs: Mutex<HashMap<u64, sys::CUgraphExec>>,
    next_graph: Mutex<u64>,
    /// Largest shared memory per block after opt-in (static + dynamic).
    shared_optin: u32,
    /// Streaming multiprocessors.
    sms: u32,
    /// Compute capability (major, minor).
    cc: (u32, u32),
}

struct LoadedModule {
    module: sys::CUmodule,
    functions: HashMap<String, Function>,
}

#[derive(Clone, Copy)]
struct Function {
    f: sys::CUfunction,
    /// Static `__shared__` bytes (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES).
    static_shared: u32,
    /// The dynamic shared memory this function is currently allowed (the attribute's value).
    max_dynamic: u32,
}

/// A pinned host buffer for one direction of copies, grown on demand.
struct Pinned {
    ptr: *mut u8,
    cap: usize,
    /// Recorded behind the last copy that used the buffer (None: none in flight).
    busy: Option<sys::CUevent>,
}

struct Staging {
    up: Pinned,
    down: Pinned,
}

// SAFETY: CUmodule/CUfunction/CUstream/CUevent/CUgraphExec are opaque driver handles valid in
// any thread that has the context current (every use binds it first); the pinned buffers are
// only touched under their mutex.
unsafe impl Send for CudaBackend {}
unsafe impl Sync for CudaBackend {}

fn cuda_err(context: &str, e: result::DriverError) -> Error {
    Error::Cuda { context: context.to_string(), msg: format!("{e:?}") }
}

/// Set by the CUDA driver stand-in (`fusebert-cuda-standin`) once it has installed itself in
/// this process. Product code never installs it: tests and the `fusebert` binary opt in.
static STANDIN_INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the stand-in after it has put itself in front of cudarc's driver lookup.
pub fn mark_standin_installed() {
    STANDIN_INSTALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// True once the driver stand-in is installed in this process.
pub fn standin_installed() -> bool {
    STANDIN_INSTALLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Set by the stand-in when cudarc's `cuInit` reaches it: proof that the driver in use is the
/// stand-in whatever name its device has (it can present a GPU under its real name).
static STANDIN_SERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the stand-in's `cuInit`.
pub fn mark_standin_served() {
    STANDIN_SERVED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// True once the stand-in has answered a `cuInit` in this process.
pub fn standin_served() -> bool {
    STANDIN_SERVED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The variable that asks a program for the driver stand-in instead of the real driver.
pub const STANDIN_ENV: &str = "FUSEBERT_CUDA_DRIVER";

/// Refuses to open the real driver when `FUSEBERT_CUDA_DRIVER` asks for the stand-in and this
/// program did not install it: the user asked for no GPU, so silently using one would be wrong.
fn select_driver() -> Result<()> {
    if standin_installed() {
        return Ok(());
    }
    match std::env::var(STANDIN_ENV) {
        Ok(v) if !v.trim().is_empty() => Err(Error::NoCudaDevice(format!(
            "{STANDIN_ENV}={v:?} selects the CUDA driver stand-in, which this program does not install \
             (the `fusebert` binary and the tests do, through fusebert-cuda-standin); unset it for the real driver"
        ))),
        _ => Ok(()),
    }
}

/// True when the CUDA driver library can be loaded on this machine (or the stand-in is
/// selected).
pub fn driver_present() -> bool {
    if select_driver().is_err() {
        return false;
    }
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or a typed error explaining why there are none.
pub fn device_count() -> Result<usize> {
    select_driver()?;
    if !driver_present() {
        return Err(Error::NoCudaDevice("the CUDA driver library (libcuda.so) is not installed".into()));
    }
    result::init().map_err(|e| Error::NoCudaDevice(format!("cuInit failed: {e:?}")))?;
    let n = CudaContext::device_count().map_err(|e| Error::NoCudaDevice(format!("{e:?}")))?;
    Ok(n.max(0) as usize)
}

impl CudaBackend {
    pub fn open(ordinal: usize) -> Result<Self> {
        Self::open_with(ordinal, None)
    }

    /// [`CudaBackend::open`] loading only the embedded modules named in `only` (every one when
    /// `None`): a process that launches a few kernels need not JIT-compile all the PTX.
    pub fn open_with(ordinal: usize, only: Option<&[&str]>) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::NoCudaDevice(format!("device {ordinal} requested, {n} found")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoCudaDevice(format!("{e:?}")))?;
        let (maj, min) = ctx.compute_capability().map_err(|e| cuda_err("compute_capability", e))?;
        let dev_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        if standin_installed() && !standin_served() {
            return Err(Error::NoCudaDevice(format!(
                "the CUDA driver stand-in was selected, but this process had already loaded the real driver ({dev_name})"
            )));
        }
        // a stand-in presenting a real GPU keeps that GPU's name (so name-based lookups such as
        // `perf::gpu` find it) and says what it is
        let name = if standin_installed() && !dev_name.contains("stand-in") {
            format!("{dev_name} (sm_{maj}{min}, fusebert CUDA stand-in)")
        } else {
            format!("{dev_name} (sm_{maj}{min})")
        };
        ctx.bind_to_thread().map_err(|e| cuda_err("bind context", e))?;
        let shared_optin = unsafe {
            result::device::get_attribute(
                ctx.cu_device(),
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
        }
        .map_err(|e| cuda_err("shared memory limit", e))?
        .max(0) as u32;
        let sms = unsafe {
            result::device::get_attribute(
                ctx.cu_device(),
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
        }
        .map_err(|e| cuda_err("multiprocessor count", e))?
        .max(1) as u32;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| cuda_err("create stream", e))?;
        let empty = || Pinned { ptr: std::ptr::null_mut(), cap: 0, busy: None };
        let backend = CudaBackend {
            ctx,
            name,
            stream,
            modules: Mutex::new(HashMap::new()),
            staging: Mutex::new(Staging { up: empty(), down: empty() }),
            graphs: Mutex::new(HashMap::new()),
            next_graph: Mutex::new(1),
            shared_optin,
            sms,
            cc: (maj as u32, min as u32),
        };
        for m in crate::ptx::MODULES.iter().filter(|m| only.is_none_or(|o| o.contains(&m.name))) {
            let Some((_arch, ptx)) = m.for_compute_capability(maj as u32, min as u32) else {
                // Hopper-native modules (sm_90a only) are skipped elsewhere; launching one of
                // their kernels then says the module is not loaded
                if m.is_arch_specific() {
                    continue;
                }
                return Err(Error::NoCudaDevice(format!(
                    "sm_{maj}{min} is older than every compiled PTX target of `{}`",
                    m.name
                )));
            };
            backend.load_module(m.name, ptx)?;
        }
        Ok(backend)
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| cuda_err("bind context", e))
    }

    fn function(&self, module: &str, kernel: &str) -> Result<Function> {
        let mods = self.modules.lock().map_err(|_| Error::Other("module table poisoned".into()))?;
        let m = mods
            .get(module)
            .ok_or_else(|| Error::Kernel { kernel: kernel.into(), msg: format!("module `{module}` is not loaded") })?;
        m.functions
            .get(kernel)
            .copied()
            .ok_or_else(|| Error::Kernel { kernel: kernel.into(), msg: format!("not an entry of module `{module}`") })
    }

    /// Raises the function's dynamic shared memory limit when static + dynamic exceeds the
    /// 48 KiB every function gets without opting in (the driver counts both against it).
    fn allow_shared(&self, module: &str, kernel: &str, f: Function, dynamic: u32) -> Result<()> {
        if dynamic <= f.max_dynamic {
            return Ok(());
        }
        let total = f.static_shared as u64 + dynamic as u64;
        if total > self.shared_optin as u64 {
            return Err(Error::Kernel {
                kernel: kernel.into(),
                msg: format!(
                    "{} static + {dynamic} dynamic bytes of shared memory exceed the device's {} per block",
                    f.static_shared, self.shared_optin
                ),
            });
        }
        unsafe {
            result::function::set_function_attribute(
                f.f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic as i32,
            )
        }
        .map_err(|e| cuda_err(&format!("{kernel}: dynamic shared memory"), e))?;
        let mut mods = self.modules.lock().map_err(|_| Error::Other("module table poisoned".into()))?;
        if let Some(g) = mods.get_mut(module).and_then(|m| m.functions.get_mut(kernel)) {
            g.max_dynamic = dynamic;
        }
        Ok(())
    }

    /// Enqueues one launch on the stream (also used while capturing a graph).
    fn enqueue_launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let f = self.function(module, kernel)?;
        self.allow_shared(module, kernel, f, cfg.shared_mem_bytes)?;
        // Each scalar parameter lives in its own 8-byte slot; the driver reads `size` bytes from
        // it (and copies them before cuLaunchKernel returns, so the slots may die right after).
        // A tensor map is read from the argument itself (128 bytes, 128-aligned, alive here).
        let mut slots: Vec<[u8; 8]> = args
            .iter()
            .map(|a| {
                let mut s = [0u8; 8];
                a.write_le(&mut s);
                s
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .zip(args)
            .map(|(s, a)| match a {
                // the driver only reads parameter memory
                KernelArg::TensorMap(m) => m.bytes().as_ptr() as *mut c_void,
                _ => s.as_mut_ptr() as *mut c_void,
            })
            .collect();
        unsafe { result::launch_kernel(f.f, cfg.grid, cfg.block, cfg.shared_mem_bytes, self.stream, &mut ptrs) }
            .map_err(|e| Error::Kernel { kernel: kernel.into(), msg: format!("launch failed: {e:?}") })
    }

    /// Waits until the buffer's last copy is done, then makes it hold `bytes`.
    fn ready(p: &mut Pinned, bytes: usize) -> Result<()> {
        if let Some(ev) = p.busy.take() {
            unsafe { result::event::synchronize(ev) }.map_err(|e| cuda_err("wait for staging copy", e))?;
            let _ = unsafe { result::event::destroy(ev) };
        }
        if p.cap < bytes {
            if !p.ptr.is_null() {
                unsafe { result::free_host(p.ptr as *mut c_void) }.map_err(|e| cuda_err("free pinned", e))?;
                p.ptr = std::ptr::null_mut();
                p.cap = 0;
            }
            let cap = bytes.next_power_of_two().max(1 << 16);
            p.ptr = unsafe { result::malloc_host(cap, 0) }.map_err(|e| cuda_err(&format!("pinned {cap} bytes"), e))?
                as *mut u8;
            p.cap = cap;
        }
        Ok(())
    }

    /// Records an event behind the copy just enqueued from/to `p`.
    fn mark_busy(&self, p: &mut Pinned) -> Result<()> {
        let ev = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| cuda_err("create event", e))?;
        unsafe { result::event::record(ev, self.stream) }.map_err(|e| cuda_err("record event", e))?;
        p.busy = Some(ev);
        Ok(())
    }
}

impl DeviceBackend for CudaBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // cuMemAlloc rejects 0 bytes; keep a valid, unique address for empty buffers.
        unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| cuda_err(&format!("alloc {bytes} bytes"), e))
    }

    fn free(&self, addr: u64) {
        if self.bind().is_ok() {
            // Work queued on our stream may still use the allocation: free in stream order.
            let _ = unsafe { result::stream::synchronize(self.stream) };
            let _ = unsafe { result::free_sync(addr) };
        }
    }

    fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        let mut st = self.staging.lock().map_err(|_| Error::Other("staging poisoned".into()))?;
        Self::ready(&mut st.up, src.len())?;
        // SAFETY: the pinned buffer holds at least src.len() bytes and no copy uses it now.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), st.up.ptr, src.len()) };
        let staged = unsafe { std::slice::from_raw_parts(st.up.ptr, src.len()) };
        unsafe { result::memcpy_htod_async(dst, staged, self.stream) }
            .map_err(|e| cuda_err("copy host to device", e))?;
        self.mark_busy(&mut st.up)
    }

    fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        let mut st = self.staging.lock().map_err(|_| Error::Other("staging poisoned".into()))?;
        Self::ready(&mut st.down, dst.len())?;
        let staged = unsafe { std::slice::from_raw_parts_mut(st.down.ptr, dst.len()) };
        unsafe { result::memcpy_dtoh_async(staged, src, self.stream) }
            .map_err(|e| cuda_err("copy device to host", e))?;
        // The pinned buffer is only valid once the copy has run.
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| cuda_err("synchronize", e))?;
        dst.copy_from_slice(staged);
        Ok(())
    }

    /// Every copy queued into one pinned buffer (behind the work on the stream), one stream
    /// synchronisation, and `sink` reads the pinned bytes in place.
    fn read_parts(&self, parts: &[ReadPart], sink: &mut dyn FnMut(&[&[u8]]) -> Result<()>) -> Result<()> {
        self.bind()?;
        let (offsets, total) = read_layout(parts);
        let mut st = self.staging.lock().map_err(|_| Error::Other("staging poisoned".into()))?;
        Self::ready(&mut st.down, total)?;
        let base = st.down.ptr;
        for (p, &o) in parts.iter().zip(&offsets) {
            if p.bytes == 0 {
                continue;
            }
            // SAFETY: [o, o + bytes) lies inside the pinned buffer (ready made it `total` long),
            // and the parts do not overlap.
            let staged = unsafe { std::slice::from_raw_parts_mut(base.add(o), p.bytes) };
            unsafe { result::memcpy_dtoh_async(staged, p.src, self.stream) }
                .map_err(|e| cuda_err("copy device to host", e))?;
        }
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| cuda_err("synchronize", e))?;
        // SAFETY: the copies above have completed and nothing else writes the buffer while the
        // staging lock is held.
        let slices: Vec<&[u8]> = parts
            .iter()
            .zip(&offsets)
            .map(
                |(p, &o)| {
                    if p.bytes == 0 {
                        &[][..]
                    } else {
                        unsafe { std::slice::from_raw_parts(base.add(o), p.bytes) }
                    }
                },
            )
            .collect();
        sink(&slices)
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        unsafe { result::memset_d8_async(dst, byte, bytes, self.stream) }.map_err(|e| cuda_err("memset", e))
    }

    fn launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.bind()?;
        self.enqueue_launch(module, kernel, cfg, args)
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| cuda_err("synchronize", e))
    }

    fn device_time_ms(&self, enqueue: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>> {
        self.bind()?;
        let timing = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = result::event::create(timing).map_err(|e| cuda_err("create timing event", e))?;
        let end = match result::event::create(timing) {
            Ok(e) => e,
            Err(e) => {
                let _ = unsafe { result::event::destroy(start) };
                return Err(cuda_err("create timing event", e));
            }
        };
        let timed = (|| {
            unsafe { result::event::record(start, self.stream) }.map_err(|e| cuda_err("record start event", e))?;
            enqueue()?;
            self.bind()?;
            unsafe { result::event::record(end, self.stream) }.map_err(|e| cuda_err("record end event", e))?;
            unsafe { result::event::synchronize(end) }.map_err(|e| cuda_err("wait for end event", e))?;
            unsafe { result::event::elapsed(start, end) }.map_err(|e| cuda_err("event elapsed time", e))
        })();
        for ev in [start, end] {
            let _ = unsafe { result::event::destroy(ev) };
        }
        Ok(Some(timed? as f64))
    }

    fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        self.bind()?;
        let image =
            CString::new(ptx).map_err(|_| Error::Kernel { kernel: name.into(), msg: "PTX contains NUL".into() })?;
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| cuda_err(&format!("load PTX module `{name}`"), e))?;
        let mut functions = HashMap::new();
        for k in entry_names(ptx) {
            let cname = CString::new(k.clone())
                .map_err(|_| Error::Kernel { kernel: k.clone(), msg: "entry name contains NUL".into() })?;
            let f = unsafe { result::module::get_function(module, cname) }
                .map_err(|e| cuda_err(&format!("module `{name}`: function `{k}`"), e))?;
            let attr = |a| unsafe { result::function::get_function_attribute(f, a) };
            let static_shared = attr(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(|e| cuda_err(&format!("`{k}`: static shared size"), e))?
                .max(0) as u32;
            let max_dynamic = attr(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
                .map_err(|e| cuda_err(&format!("`{k}`: dynamic shared limit"), e))?
                .max(0) as u32;
            functions.insert(k, Function { f, static_shared, max_dynamic });
        }
        self.modules
            .lock()
            .map_err(|_| Error::Other("module table poisoned".into()))?
            .insert(name.to_string(), LoadedModule { module, functions });
        Ok(())
    }

    fn native_graphs(&self) -> bool {
        true
    }

    fn multiprocessors(&self) -> u32 {
        self.sms
    }

    fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// `cuTensorMapEncodeTiled`: element strides 1, no interleave, no L2 promotion, zeros for
    /// out-of-bounds elements.
    fn encode_tensor_map(&self, map: &TiledTensorMap<'_>) -> Result<TensorMap> {
        use sys::{
            CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave, CUtensorMapL2promotion,
            CUtensorMapSwizzle,
        };
        self.bind()?;
        let dtype = match map.dtype {
            super::TensorMapDtype::F16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            super::TensorMapDtype::S8 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
        };
        let swizzle = match map.swizzle {
            super::TensorMapSwizzle::None => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            super::TensorMapSwizzle::B32 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            super::TensorMapSwizzle::B64 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            super::TensorMapSwizzle::B128 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        };
        let ones = [1u32; 5];
        let mut out = sys::CUtensorMap { opaque: [0; 16] };
        // SAFETY: the arrays hold rank (strides: rank - 1) elements (checked by the device
        // layer) and outlive the call; `out` is a 128-byte, 128-aligned CUtensorMap.
        unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut out,
                dtype,
                map.dims.len() as u32,
                map.addr as *mut c_void,
                map.dims.as_ptr(),
                map.strides.as_ptr(),
                map.box_dims.as_ptr(),
                ones.as_ptr(),
                CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
            .result()
        }
        .map_err(|e| Error::Kernel { kernel: "cuTensorMapEncodeTiled".into(), msg: format!("{e:?}") })?;
        let mut bytes = [0u8; TENSOR_MAP_BYTES];
        for (chunk, q) in bytes.chunks_exact_mut(8).zip(out.opaque) {
            chunk.copy_from_slice(&q.to_le_bytes());
        }
        Ok(TensorMap::from_bytes(bytes))
    }

    /// Captures the launches on the stream and instantiates the graph once. Thread-local capture
    /// mode: a stray synchronising call from this thread fails the capture, while other threads
    /// (other models, other devices' work) may synchronise meanwhile; in global mode one
    /// thread's synchronisation would invalidate another thread's capture.
    fn graph_create(&self, launches: &[RecordedLaunch]) -> Result<u64> {
        self.bind()?;
        // Shared-memory opt-ins are function attributes, not stream work: set them before the
        // capture so that nothing but launches happens inside it.
        for l in launches {
            let f = self.function(&l.module, &l.kernel)?;
            self.allow_shared(&l.module, &l.kernel, f, l.cfg.shared_mem_bytes)?;
        }
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        unsafe { result::stream::begin_capture(self.stream, mode) }.map_err(|e| cuda_err("begin capture", e))?;
        let mut failed = None;
        for l in launches {
            if let Err(e) = self.enqueue_launch(&l.module, &l.kernel, &l.cfg, &l.args) {
                failed = Some(e);
                break;
            }
        }
        let graph = unsafe { result::stream::end_capture(self.stream) };
        if let Some(e) = failed {
            if let Ok(g) = graph {
                if !g.is_null() {
                    let _ = unsafe { result::graph::destroy(g) };
                }
            }
            return Err(e);
        }
        let graph = graph.map_err(|e| cuda_err("end capture", e))?;
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        let _ = unsafe { result::graph::destroy(graph) };
        let exec = exec.map_err(|e| cuda_err("instantiate graph", e))?;
        let mut next = self.next_graph.lock().map_err(|_| Error::Other("graph table poisoned".into()))?;
        let id = *next;
        *next += 1;
        self.graphs.lock().map_err(|_| Error::Other("graph table poisoned".into()))?.insert(id, exec);
        Ok(id)
    }

    fn graph_launch(&self, id: u64) -> Result<()> {
        self.bind()?;
        let exec = *self
            .graphs
            .lock()
            .map_err(|_| Error::Other("graph table poisoned".into()))?
            .get(&id)
            .ok_or_else(|| Error::Other(format!("no CUDA graph {id}")))?;
        unsafe { result::graph::launch(exec, self.stream) }.map_err(|e| cuda_err("graph launch", e))
    }

    fn graph_destroy(&self, id: u64) {
        let exec = self.graphs.lock().ok().and_then(|mut g| g.remove(&id));
        if let (Some(exec), Ok(())) = (exec, self.bind()) {
            let _ = unsafe { result::graph::exec_destroy(exec) };
        }
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        let _ = unsafe { result::stream::synchronize(self.stream) };
        if let Ok(mut g) = self.graphs.lock() {
            for (_, exec) in g.drain() {
                let _ = unsafe { result::graph::exec_destroy(exec) };
            }
        }
        if let Ok(mut guard) = self.staging.lock() {
            let st = &mut *guard;
            for p in [&mut st.up, &mut st.down] {
                if let Some(ev) = p.busy.take() {
                    let _ = unsafe { result::event::destroy(ev) };
                }
                if !p.ptr.is_null() {
                    let _ = unsafe { result::free_host(p.ptr as *mut c_void) };
                }
            }
        }
        if let Ok(mut mods) = self.modules.lock() {
            for (_, m) in mods.drain() {
                let _ = unsafe { result::module::unload(m.module) };
            }
        }
        let _ = unsafe { result::stream::destroy(self.stream) };
    }
}

/// Entry names (`.entry name(`) of a PTX text.
pub fn entry_names(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim();
            let i = l.find(".entry ")?;
            Some(l[i + 7..].split('(').next()?.trim().to_string())
        })
        .collect()
}
