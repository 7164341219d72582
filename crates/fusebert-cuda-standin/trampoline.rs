//! The CUDA driver stand-in's exporting library (built by build.rs with plain rustc, no
//! dependencies, panic=abort, ELF SONAME `libcuda.so`, file name `libfusebert_cudaemu.so`).
//!
//! Every `cu*` entry point cudarc may call is exported with its C signature and forwards its
//! arguments, widened to u64, to ONE dispatch function that the host process registers with
//! `fusebert_standin_register` (fusebert's `device::standin` driver model on the emulator).
//! Nothing else lives here: no state, no allocation, nothing that can panic. Before
//! registration every call returns CUDA_ERROR_NOT_INITIALIZED (3), which cudarc turns into a
//! typed error.
//!
//! Arguments keep their real C types in the signatures (a 32-bit argument's upper register bits
//! are undefined in the x86-64 and AArch64 ABIs); the widening happens after the call.
#![allow(non_snake_case)]
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

type Dispatch = extern "C" fn(name: *const u8, args: *const u64, nargs: usize) -> u32;

static DISPATCH: AtomicUsize = AtomicUsize::new(0);

/// Registers the host's dispatch function (called once, by fusebert, right after dlopen).
#[no_mangle]
pub extern "C" fn fusebert_standin_register(f: Dispatch) {
    DISPATCH.store(f as usize, Ordering::SeqCst);
}

#[inline(always)]
fn call(name: &'static [u8], args: &[u64]) -> u32 {
    let f = DISPATCH.load(Ordering::SeqCst);
    if f == 0 {
        return 3; // CUDA_ERROR_NOT_INITIALIZED
    }
    // SAFETY: only fusebert_standin_register stores here, and it stores a `Dispatch`.
    let f: Dispatch = unsafe { std::mem::transmute::<usize, Dispatch>(f) };
    f(name.as_ptr(), args.as_ptr(), args.len())
}

macro_rules! export {
    ($($name:ident ( $($a:ident : $t:ty),* );)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($($a: $t),*) -> u32 {
            call(concat!(stringify!($name), "\0").as_bytes(), &[$($a as u64),*])
        }
    )*};
}

type P = *mut c_void;

export! {
    cuInit(flags: u32);
    cuDriverGetVersion(v: *mut i32);
    cuDeviceGetCount(n: *mut i32);
    cuDeviceGet(d: *mut i32, ordinal: i32);
    cuDeviceGetAttribute(v: *mut i32, attr: i32, dev: i32);
    cuDeviceGetName(name: *mut u8, len: i32, dev: i32);
    cuDeviceTotalMem_v2(bytes: *mut usize, dev: i32);
    cuDevicePrimaryCtxRetain(ctx: *mut P, dev: i32);
    cuDevicePrimaryCtxRelease_v2(dev: i32);
    cuCtxGetCurrent(ctx: *mut P);
    cuCtxSetCurrent(ctx: P);
    cuCtxSynchronize();
    cuCtxGetStreamPriorityRange(least: *mut i32, greatest: *mut i32);
    cuModuleLoadData(m: *mut P, image: *const c_void);
    cuModuleGetFunction(f: *mut P, m: P, name: *const u8);
    cuModuleGetGlobal_v2(dptr: *mut u64, bytes: *mut usize, m: P, name: *const u8);
    cuModuleUnload(m: P);
    cuFuncSetAttribute(f: P, attr: i32, value: i32);
    cuFuncGetAttribute(v: *mut i32, attr: i32, f: P);
    cuMemAlloc_v2(dptr: *mut u64, bytes: usize);
    cuMemFree_v2(dptr: u64);
    cuMemAllocAsync(dptr: *mut u64, bytes: usize, stream: P);
    cuMemFreeAsync(dptr: u64, stream: P);
    cuMemHostAlloc(p: *mut P, bytes: usize, flags: u32);
    cuMemAllocHost_v2(p: *mut P, bytes: usize);
    cuMemFreeHost(p: P);
    cuMemGetInfo_v2(free: *mut usize, total: *mut usize);
    cuMemcpyHtoD_v2(dst: u64, src: *const c_void, bytes: usize);
    cuMemcpyDtoH_v2(dst: P, src: u64, bytes: usize);
    cuMemcpyDtoD_v2(dst: u64, src: u64, bytes: usize);
    cuMemcpyHtoDAsync_v2(dst: u64, src: *const c_void, bytes: usize, stream: P);
    cuMemcpyDtoHAsync_v2(dst: P, src: u64, bytes: usize, stream: P);
    cuMemcpyDtoDAsync_v2(dst: u64, src: u64, bytes: usize, stream: P);
    cuMemsetD8_v2(dst: u64, value: u8, bytes: usize);
    cuMemsetD8Async(dst: u64, value: u8, bytes: usize, stream: P);
    cuLaunchKernel(f: P, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, smem: u32, stream: P,
                   params: *mut P, extra: *mut P);
    cuLaunchKernelEx(config: *const c_void, f: P, params: *mut P, extra: *mut P);
    cuStreamCreate(s: *mut P, flags: u32);
    cuStreamCreateWithPriority(s: *mut P, flags: u32, priority: i32);
    cuStreamDestroy_v2(s: P);
    cuStreamSynchronize(s: P);
    cuStreamQuery(s: P);
    cuStreamWaitEvent(s: P, e: P, flags: u32);
    cuEventCreate(e: *mut P, flags: u32);
    cuEventRecord(e: P, s: P);
    cuEventSynchronize(e: P);
    cuEventQuery(e: P);
    cuEventElapsedTime(ms: *mut f32, start: P, end: P);
    cuEventElapsedTime_v2(ms: *mut f32, start: P, end: P);
    cuEventDestroy_v2(e: P);
    cuStreamBeginCapture_v2(s: P, mode: i32);
    cuStreamEndCapture(s: P, g: *mut P);
    cuStreamIsCapturing(s: P, status: *mut i32);
    cuGraphInstantiateWithFlags(exec: *mut P, g: P, flags: u64);
    cuGraphLaunch(exec: P, s: P);
    cuGraphUpload(exec: P, s: P);
    cuGraphExecDestroy(exec: P);
    cuGraphDestroy(g: P);
    cuTensorMapEncodeTiled(map: P, dtype: u32, rank: u32, gaddr: P, dims: *const u64, strides: *const u64,
                           boxd: *const u32, estrides: *const u32, interleave: u32, swizzle: u32, l2: u32,
                           oob: u32);
    cuGetErrorString(e: u32, s: *mut *const u8);
    cuGetErrorName(e: u32, s: *mut *const u8);
}
