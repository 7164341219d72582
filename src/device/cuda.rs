//! The CUDA backend: a cudarc context on one GPU, every embedded PTX module loaded at open.
//!
//! Uses cudarc's driver `result` layer with raw device addresses so that both backends share
//! one addressing model. The driver library is loaded dynamically: with no driver, or a driver
//! and no GPU, `open` returns `Error::NoCudaDevice` instead of panicking.
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext};

use super::{Backend, KernelArg, LaunchConfig};
use crate::error::{Error, Result};

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    name: String,
    /// module name -> (module handle, kernel name -> function handle)
    modules: Mutex<HashMap<String, LoadedModule>>,
}

struct LoadedModule {
    module: sys::CUmodule,
    functions: HashMap<String, sys::CUfunction>,
}

// SAFETY: CUmodule/CUfunction are opaque driver handles valid in any thread that has the
// context current; every use below binds the context first and holds the mutex.
unsafe impl Send for CudaBackend {}
unsafe impl Sync for CudaBackend {}

fn cuda_err(context: &str, e: result::DriverError) -> Error {
    Error::Cuda { context: context.to_string(), msg: format!("{e:?}") }
}

/// True when the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or a typed error explaining why there are none.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoCudaDevice("the CUDA driver library (libcuda.so) is not installed".into()));
    }
    result::init().map_err(|e| Error::NoCudaDevice(format!("cuInit failed: {e:?}")))?;
    let n = CudaContext::device_count().map_err(|e| Error::NoCudaDevice(format!("{e:?}")))?;
    Ok(n.max(0) as usize)
}

impl CudaBackend {
    pub fn open(ordinal: usize) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::NoCudaDevice(format!("device {ordinal} requested, {n} found")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoCudaDevice(format!("{e:?}")))?;
        let (maj, min) = ctx.compute_capability().map_err(|e| cuda_err("compute_capability", e))?;
        let name = format!("{} (sm_{maj}{min})", ctx.name().unwrap_or_else(|_| "CUDA device".into()));
        let backend = CudaBackend { ctx, name, modules: Mutex::new(HashMap::new()) };
        for m in crate::ptx::MODULES {
            backend.load_module(m.name, m.ptx)?;
        }
        Ok(backend)
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| cuda_err("bind context", e))
    }

    fn function(&self, module: &str, kernel: &str) -> Result<sys::CUfunction> {
        let mods = self.modules.lock().unwrap();
        let m = mods
            .get(module)
            .ok_or_else(|| Error::Kernel { kernel: kernel.into(), msg: format!("module `{module}` is not loaded") })?;
        m.functions
            .get(kernel)
            .copied()
            .ok_or_else(|| Error::Kernel { kernel: kernel.into(), msg: format!("not an entry of module `{module}`") })
    }
}

impl Backend for CudaBackend {
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
            let _ = unsafe { result::free_sync(addr) };
        }
    }

    fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        unsafe { result::memcpy_htod_sync(dst, src) }.map_err(|e| cuda_err("copy host to device", e))
    }

    fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| cuda_err("copy device to host", e))
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        unsafe { result::memset_d8_sync(dst, byte, bytes) }.map_err(|e| cuda_err("memset", e))
    }

    fn launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.bind()?;
        let f = self.function(module, kernel)?;
        if cfg.shared_mem_bytes > 48 * 1024 {
            unsafe {
                result::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_mem_bytes as i32,
                )
            }
            .map_err(|e| cuda_err(&format!("{kernel}: dynamic shared memory"), e))?;
        }
        // Each parameter lives in its own 8-byte slot; the driver reads `size` bytes from it.
        let mut slots: Vec<[u8; 8]> = args
            .iter()
            .map(|a| {
                let mut s = [0u8; 8];
                let b = a.bytes();
                s[..b.len()].copy_from_slice(&b);
                s
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s.as_mut_ptr() as *mut c_void).collect();
        let stream = std::ptr::null_mut(); // legacy default stream: launches stay in order
        unsafe { result::launch_kernel(f, cfg.grid, cfg.block, cfg.shared_mem_bytes, stream, &mut ptrs) }
            .map_err(|e| Error::Kernel { kernel: kernel.into(), msg: format!("launch failed: {e:?}") })
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.ctx.synchronize().map_err(|e| cuda_err("synchronize", e))
    }

    fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        self.bind()?;
        let image =
            CString::new(ptx).map_err(|_| Error::Kernel { kernel: name.into(), msg: "PTX contains NUL".into() })?;
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| cuda_err(&format!("load PTX module `{name}`"), e))?;
        let mut functions = HashMap::new();
        for k in entry_names(ptx) {
            let f = unsafe { result::module::get_function(module, CString::new(k.clone()).unwrap()) }
                .map_err(|e| cuda_err(&format!("module `{name}`: function `{k}`"), e))?;
            functions.insert(k, f);
        }
        self.modules.lock().unwrap().insert(name.to_string(), LoadedModule { module, functions });
        Ok(())
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            for (_, m) in self.modules.lock().unwrap().drain() {
                let _ = unsafe { result::module::unload(m.module) };
            }
        }
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
