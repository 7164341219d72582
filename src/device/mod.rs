//! One launch API over two backends: CUDA (through cudarc) and the PTX emulator.
//!
//! Memory is addressed by raw 64-bit device addresses on both backends, so a kernel argument is
//! the same `u64` whether it points into GPU memory or into the emulator's global space.
//! [`DeviceBuffer`] owns an allocation and frees it on drop.
//!
//! ```no_run
//! use fusebert::device::{Device, LaunchConfig, KernelArg};
//! let dev = Device::emulator()?;
//! let x = dev.upload(&[1.0f32, 2.0, 3.0])?;
//! let back: Vec<f32> = x.to_host()?;
//! # Ok::<(), fusebert::Error>(())
//! ```
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytemuck::Pod;

use crate::error::{Error, Result};

pub mod cuda;
pub mod emulator;
pub mod graph;
pub mod standin;

pub use graph::{Graph, GraphCache, GraphStats, RecordedLaunch};

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Dynamic (`extern __shared__`) bytes per block.
    pub shared_mem_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch.
    pub fn linear(grid: u32, block: u32, shared_mem_bytes: u32) -> Self {
        LaunchConfig { grid: (grid, 1, 1), block: (block, 1, 1), shared_mem_bytes }
    }
}

/// A kernel argument, passed by value into the `.param` space. Pointers are device addresses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelArg {
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl KernelArg {
    /// Size in bytes in the parameter buffer (also its natural alignment).
    pub fn size(&self) -> usize {
        match self {
            KernelArg::U32(_) | KernelArg::I32(_) | KernelArg::F32(_) => 4,
            _ => 8,
        }
    }
    /// Little-endian bytes as they sit in the parameter buffer.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => v.to_le_bytes().to_vec(),
            KernelArg::I64(v) => v.to_le_bytes().to_vec(),
            KernelArg::U32(v) => v.to_le_bytes().to_vec(),
            KernelArg::I32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F64(v) => v.to_le_bytes().to_vec(),
        }
    }
}

impl<T> From<&DeviceBuffer<T>> for KernelArg {
    fn from(b: &DeviceBuffer<T>) -> Self {
        KernelArg::Ptr(b.addr)
    }
}
impl From<u32> for KernelArg {
    fn from(v: u32) -> Self {
        KernelArg::U32(v)
    }
}
impl From<i32> for KernelArg {
    fn from(v: i32) -> Self {
        KernelArg::I32(v)
    }
}
impl From<f32> for KernelArg {
    fn from(v: f32) -> Self {
        KernelArg::F32(v)
    }
}
impl From<u64> for KernelArg {
    fn from(v: u64) -> Self {
        KernelArg::U64(v)
    }
}

/// What a backend must provide. Addresses are raw device addresses; sizes are bytes.
pub trait Backend: Send + Sync {
    /// Human-readable name, e.g. "NVIDIA H100 (sm_90)" or "PTX emulator".
    fn name(&self) -> String;
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees an allocation made by `alloc`. Never fails loudly (called from `Drop`).
    fn free(&self, addr: u64);
    fn write(&self, dst: u64, src: &[u8]) -> Result<()>;
    fn read(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()>;
    /// Launches `kernel` of PTX module `module` (a `ptx::MODULES` name, or one loaded with
    /// `load_module`). The backend checks the argument list where it can.
    fn launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Loads an extra PTX module (kernel researchers' variants) under `name`.
    fn load_module(&self, name: &str, ptx: &str) -> Result<()>;
    /// The emulator backend, when this is one (counters and sanitizer access).
    fn as_emulator(&self) -> Option<&emulator::EmulatorBackend> {
        None
    }
    /// Whether the backend replays launch lists natively (CUDA graphs). Others replay a
    /// [`Graph`] as its recorded launches, one by one.
    fn native_graphs(&self) -> bool {
        false
    }
    /// Turns a launch list into a native graph; returns its id. Only called when
    /// `native_graphs()`.
    fn graph_create(&self, _launches: &[RecordedLaunch]) -> Result<u64> {
        Err(Error::Other(format!("{} has no native graphs", self.name())))
    }
    /// Replays a native graph (one host call).
    fn graph_launch(&self, id: u64) -> Result<()> {
        Err(Error::Other(format!("{} has no native graph {id}", self.name())))
    }
    /// Frees a native graph. Never fails loudly (called from `Drop`).
    fn graph_destroy(&self, _id: u64) {}
}

/// A handle to a GPU or to the emulator. Cheap to clone.
#[derive(Clone)]
pub struct Device {
    backend: Arc<dyn Backend>,
    /// While [`Device::record`] runs: the launches, recorded instead of executed.
    recording: Arc<Mutex<Option<Vec<RecordedLaunch>>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.backend.name())
    }
}

impl Device {
    /// Opens CUDA device `ordinal` and loads every embedded PTX module. Returns
    /// `Error::NoCudaDevice` (never panics) when there is no driver or no GPU.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::from_backend(Arc::new(cuda::CudaBackend::open(ordinal)?)))
    }

    /// The PTX emulator with default options (all sanitizers on).
    pub fn emulator() -> Result<Device> {
        Self::emulator_with(emulator::EmulatorOptions::default())
    }

    pub fn emulator_with(opts: emulator::EmulatorOptions) -> Result<Device> {
        Ok(Device::from_backend(Arc::new(emulator::EmulatorBackend::new(opts)?)))
    }

    /// Wraps any backend (for tests and custom backends).
    pub fn from_backend(backend: Arc<dyn Backend>) -> Device {
        Device { backend, recording: Arc::new(Mutex::new(None)) }
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn name(&self) -> String {
        self.backend.name()
    }

    /// The emulator backend, when this device is one.
    pub fn emulator_backend(&self) -> Option<&emulator::EmulatorBackend> {
        self.backend.as_emulator()
    }

    pub fn is_emulator(&self) -> bool {
        self.backend.as_emulator().is_some()
    }

    /// Allocates `len` elements of `T`, uninitialised (the emulator poisons and tracks them).
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.not_recording("allocation")?;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Memory(format!("allocation of {len} elements overflows")))?;
        let addr = self.backend.alloc(bytes)?;
        Ok(DeviceBuffer { addr, len, device: self.clone(), _t: PhantomData })
    }

    /// Allocates and fills every byte with `byte` (0xFF poisons f16/f32 buffers with NaN).
    pub fn alloc_filled<T: Pod>(&self, len: usize, byte: u8) -> Result<DeviceBuffer<T>> {
        let b = self.alloc::<T>(len)?;
        self.not_recording("memset")?;
        self.backend.memset(b.addr, byte, b.bytes())?;
        Ok(b)
    }

    /// Allocates and copies `data` to the device.
    pub fn upload<T: Pod>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let b = self.alloc::<T>(data.len())?;
        self.not_recording("upload")?;
        self.backend.write(b.addr, bytemuck::cast_slice(data))?;
        Ok(b)
    }

    /// Launches a kernel by name; its module is found among the embedded ones.
    pub fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let module = crate::ptx::module_of_kernel(kernel).ok_or_else(|| Error::Kernel {
            kernel: kernel.to_string(),
            msg: "no embedded PTX module defines this kernel".into(),
        })?;
        self.launch_in(module.name, kernel, cfg, args)
    }

    /// Launches a kernel of a named module (embedded or loaded with `load_module`).
    pub fn launch_in(&self, module: &str, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        if let Some(list) = self.recording.lock().map_err(|_| Error::Other("recording lock poisoned".into()))?.as_mut()
        {
            list.push(RecordedLaunch {
                module: module.to_string(),
                kernel: kernel.to_string(),
                cfg,
                args: args.to_vec(),
            });
            return Ok(());
        }
        self.backend.launch(module, kernel, &cfg, args)
    }

    pub fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        self.backend.load_module(name, ptx)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.not_recording("synchronize")?;
        self.backend.synchronize()
    }

    /// Runs `f` with launches recorded instead of executed, and returns them in order: the
    /// first half of building a [`Graph`]. Anything else touching the device inside `f`
    /// (allocations, copies, memsets, synchronisation) is an error, because a graph could not
    /// replay it in order.
    pub fn record<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, Vec<RecordedLaunch>)> {
        {
            let mut r = self.recording.lock().map_err(|_| Error::Other("recording lock poisoned".into()))?;
            if r.is_some() {
                return Err(Error::Other("Device::record does not nest".into()));
            }
            *r = Some(Vec::new());
        }
        let out = f();
        let list = self.recording.lock().map_err(|_| Error::Other("recording lock poisoned".into()))?.take();
        Ok((out?, list.unwrap_or_default()))
    }

    /// A replayable graph of `launches` (on CUDA a CUDA graph, captured on the backend's stream
    /// and instantiated once; elsewhere the list itself).
    pub fn graph(&self, launches: Vec<RecordedLaunch>) -> Result<Graph> {
        self.not_recording("graph creation")?;
        Graph::new(self.clone(), launches)
    }

    /// Whether [`Graph`]s replay as one native call here (CUDA) rather than launch by launch.
    pub fn native_graphs(&self) -> bool {
        self.backend.native_graphs()
    }

    fn not_recording(&self, what: &str) -> Result<()> {
        match self.recording.lock() {
            Ok(r) if r.is_none() => Ok(()),
            _ => Err(Error::Other(format!("{what} while launches are being recorded for a graph"))),
        }
    }
}

/// An owned device allocation of `len` elements of `T`.
pub struct DeviceBuffer<T> {
    addr: u64,
    len: usize,
    device: Device,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer<{}>[{}] @ {:#x}", std::any::type_name::<T>(), self.len, self.addr)
    }
}

impl<T: Pod> DeviceBuffer<T> {
    pub fn addr(&self) -> u64 {
        self.addr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Copies the whole buffer to the host (synchronising first).
    pub fn to_host(&self) -> Result<Vec<T>> {
        self.device.synchronize()?;
        let mut out = vec![T::zeroed(); self.len];
        self.device.backend.read(self.addr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }
    /// Overwrites the buffer (whose length must match) with `data`.
    pub fn copy_from_host(&mut self, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::Memory(format!("copy of {} elements into a buffer of {}", data.len(), self.len)));
        }
        self.device.not_recording("copy to device")?;
        self.device.backend.write(self.addr, bytemuck::cast_slice(data))
    }
    /// Writes `data` into the first `data.len()` elements (workspaces larger than one batch).
    pub fn write_prefix(&mut self, data: &[T]) -> Result<()> {
        if data.len() > self.len {
            return Err(Error::Memory(format!("write of {} elements into a buffer of {}", data.len(), self.len)));
        }
        self.device.not_recording("copy to device")?;
        self.device.backend.write(self.addr, bytemuck::cast_slice(data))
    }
    /// Copies the first `n` elements to the host (synchronising first).
    pub fn read_prefix(&self, n: usize) -> Result<Vec<T>> {
        if n > self.len {
            return Err(Error::Memory(format!("read of {n} elements from a buffer of {}", self.len)));
        }
        self.device.synchronize()?;
        let mut out = vec![T::zeroed(); n];
        self.device.backend.read(self.addr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }
    /// Fills every byte with `byte`.
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        self.device.not_recording("memset")?;
        self.device.backend.memset(self.addr, byte, self.bytes())
    }
    /// The address of element `offset` (for views into a workspace).
    pub fn addr_at(&self, offset: usize) -> u64 {
        self.addr + (offset * std::mem::size_of::<T>()) as u64
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        self.device.backend.free(self.addr);
    }
}
