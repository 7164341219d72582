//! One launch API over two backends: CUDA (through cudarc) and the PTX emulator.
//!
//! Memory is addressed by raw 64-bit device addresses on both backends, so a kernel argument is
//! the same `u64` whether it points into GPU memory or into the emulator's global space.
//! [`DeviceBuffer`] owns an allocation (or a view into one, see [`DeviceBuffer::view`]) and
//! frees it when the last buffer using it drops.
//!
//! Every host-device copy goes through [`Device`], which counts them ([`Device::transfers`]):
//! that is how `fusebert bench` reports the bytes one forward pass moves. Results come back
//! with [`Device::read_back`]: several ranges, one synchronisation, read in place (on CUDA
//! straight from pinned memory).
//!
//! ```no_run
//! use fusebert_kernels::device::{Device, LaunchConfig, KernelArg};
//! let dev = Device::emulator()?;
//! let x = dev.upload(&[1.0f32, 2.0, 3.0])?;
//! let back: Vec<f32> = x.to_host()?;
//! # Ok::<(), fusebert_kernels::Error>(())
//! ```
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytemuck::Pod;

use fusebert_core::error::{Error, Result};

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod graph;

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
// (the tensor map inline keeps `KernelArg` Copy, as every caller uses it; argument lists are short)
#[allow(clippy::large_enum_variant)]
pub enum KernelArg {
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    /// A `CUtensorMap` by value (`__grid_constant__ const CUtensorMap`, in PTX
    /// `.param .align 128 .b8 p[128]`), made by [`Device::encode_tensor_map`].
    TensorMap(TensorMap),
}

impl KernelArg {
    /// Size in bytes in the parameter buffer (also its natural alignment, except for a tensor
    /// map: 128 bytes aligned to 128).
    pub fn size(&self) -> usize {
        match self {
            KernelArg::U32(_) | KernelArg::I32(_) | KernelArg::F32(_) => 4,
            KernelArg::TensorMap(_) => TENSOR_MAP_BYTES,
            _ => 8,
        }
    }
    /// Little-endian bytes as they sit in the parameter buffer.
    pub fn bytes(&self) -> Vec<u8> {
        if let KernelArg::TensorMap(m) = self {
            return m.bytes().to_vec();
        }
        let mut slot = [0u8; 8];
        let n = self.write_le(&mut slot);
        slot[..n].to_vec()
    }
    /// Writes a scalar's little-endian bytes into the front of an 8-byte slot (no allocation:
    /// the CUDA backend fills its parameter slots with this on every launch); returns the
    /// bytes written. A tensor map does not fit a slot: it writes nothing and returns 0 (the
    /// CUDA backend passes the driver the map's own address).
    pub fn write_le(&self, slot: &mut [u8; 8]) -> usize {
        match *self {
            KernelArg::TensorMap(_) => return 0,
            KernelArg::Ptr(v) | KernelArg::U64(v) => slot.copy_from_slice(&v.to_le_bytes()),
            KernelArg::I64(v) => slot.copy_from_slice(&v.to_le_bytes()),
            KernelArg::F64(v) => slot.copy_from_slice(&v.to_le_bytes()),
            KernelArg::U32(v) => slot[..4].copy_from_slice(&v.to_le_bytes()),
            KernelArg::I32(v) => slot[..4].copy_from_slice(&v.to_le_bytes()),
            KernelArg::F32(v) => slot[..4].copy_from_slice(&v.to_le_bytes()),
        }
        self.size()
    }
}

/// Bytes of a `CUtensorMap` (`CU_TENSOR_MAP_NUM_QWORDS * 8`).
pub const TENSOR_MAP_BYTES: usize = 128;

/// A `CUtensorMap`: the 128 opaque bytes of a TMA descriptor, as the backend's encoder wrote
/// them (the driver's format on CUDA, the emulator's own on the emulator: never portable
/// between backends). Aligned like CUDA 13's `CUtensorMap` (`alignas(128)`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct TensorMap {
    bytes: [u8; TENSOR_MAP_BYTES],
}

impl TensorMap {
    /// Wraps bytes an encoder wrote (a backend's [`DeviceBackend::encode_tensor_map`]).
    pub fn from_bytes(bytes: [u8; TENSOR_MAP_BYTES]) -> TensorMap {
        TensorMap { bytes }
    }
    pub fn bytes(&self) -> &[u8; TENSOR_MAP_BYTES] {
        &self.bytes
    }
}

impl std::fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorMap({} bytes)", TENSOR_MAP_BYTES)
    }
}

impl From<TensorMap> for KernelArg {
    fn from(m: TensorMap) -> Self {
        KernelArg::TensorMap(m)
    }
}

/// Element type of a tensor map (`CUtensorMapDataType`; the codes are the driver's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorMapDtype {
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT16`
    F16 = 6,
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT8` (TMA copies bytes: int8 travels as u8)
    S8 = 0,
}

impl TensorMapDtype {
    pub fn size(self) -> usize {
        match self {
            TensorMapDtype::F16 => 2,
            TensorMapDtype::S8 => 1,
        }
    }
}

/// How a box is laid out in shared memory (`CUtensorMapSwizzle`; the codes are the driver's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorMapSwizzle {
    None = 0,
    B32 = 1,
    B64 = 2,
    B128 = 3,
}

/// A tiled tensor map (`cuTensorMapEncodeTiled`) of rank 2 or 3 over `addr`: dimensions
/// innermost first, byte strides of dimensions 1.., the box copied per TMA instruction; element
/// strides 1, no interleave, no L2 promotion, out-of-bounds elements filled with zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledTensorMap<'a> {
    pub dtype: TensorMapDtype,
    /// Device address of element (0, 0, ..): 16-byte aligned.
    pub addr: u64,
    /// Elements per dimension, innermost (contiguous) first.
    pub dims: &'a [u64],
    /// Bytes between consecutive indices of dimensions 1.. (multiples of 16).
    pub strides: &'a [u64],
    /// Elements per box dimension (1..=256; the inner one times the element size a multiple of
    /// 16 bytes, and equal to the swizzle span when swizzled).
    pub box_dims: &'a [u32],
    pub swizzle: TensorMapSwizzle,
}

impl TiledTensorMap<'_> {
    /// The checks the device layer makes on every backend (the encoder makes the rest).
    fn check(&self) -> Result<()> {
        let r = self.dims.len();
        let bad = |msg: String| Error::Kernel { kernel: "cuTensorMapEncodeTiled".into(), msg };
        if !(2..=3).contains(&r) {
            return Err(bad(format!("tensor maps of rank 2 or 3 are supported, got rank {r}")));
        }
        if self.strides.len() + 1 != r || self.box_dims.len() != r {
            return Err(bad(format!(
                "rank {r} needs {} strides and {r} box sizes, got {} and {}",
                r - 1,
                self.strides.len(),
                self.box_dims.len()
            )));
        }
        Ok(())
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
pub trait DeviceBackend: Send + Sync {
    /// Human-readable name, e.g. "NVIDIA H100 (sm_90)" or "PTX emulator".
    fn name(&self) -> String;
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees an allocation made by `alloc`. Never fails loudly (called from `Drop`).
    fn free(&self, addr: u64);
    fn write(&self, dst: u64, src: &[u8]) -> Result<()>;
    fn read(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copies every part to the host behind the work already queued, with one
    /// synchronisation, and hands `sink` the bytes of each part, in order, each starting at a
    /// [`READ_ALIGN`]-aligned address. The default synchronises, then `read`s each part into
    /// aligned host memory; CUDA queues the copies into one pinned buffer and lets `sink` read
    /// them there.
    fn read_parts(&self, parts: &[ReadPart], sink: &mut dyn FnMut(&[&[u8]]) -> Result<()>) -> Result<()> {
        self.synchronize()?;
        let (offsets, total) = read_layout(parts);
        let mut host = vec![0u128; total / READ_ALIGN];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut host);
        for (p, &o) in parts.iter().zip(&offsets) {
            self.read(p.src, &mut bytes[o..o + p.bytes])?;
        }
        let slices: Vec<&[u8]> = parts.iter().zip(&offsets).map(|(p, &o)| &bytes[o..o + p.bytes]).collect();
        sink(&slices)
    }
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()>;
    /// Launches `kernel` of PTX module `module` (a `ptx::MODULES` name, or one loaded with
    /// `load_module`). The backend checks the argument list where it can.
    fn launch(&self, module: &str, kernel: &str, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Loads an extra PTX module (kernel researchers' variants) under `name`.
    fn load_module(&self, name: &str, ptx: &str) -> Result<()>;
    /// Streaming multiprocessors (the grid of a persistent kernel: one CTA per SM).
    fn multiprocessors(&self) -> u32 {
        1
    }
    /// Compute capability (major, minor): which kernel family the device can run (9.0 runs the
    /// `_sm90` kernels). Backends that do not know say 8.0, the oldest target fusebert builds.
    fn compute_capability(&self) -> (u32, u32) {
        (8, 0)
    }
    /// Encodes a tiled tensor map (already checked by [`Device::encode_tensor_map`]).
    fn encode_tensor_map(&self, map: &TiledTensorMap<'_>) -> Result<TensorMap> {
        let _ = map;
        Err(Error::Other(format!("{} cannot encode tensor maps", self.name())))
    }
    /// The emulator backend, when this is one (counters and sanitizer access).
    #[cfg(feature = "emulator")]
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
    /// Runs `enqueue` and returns the device time, in milliseconds, between two events recorded
    /// on the stream before and after the work it enqueued (waiting for the second). `None` where
    /// the backend has no device clock: the emulator, whose measure is its counters.
    fn device_time_ms(&self, enqueue: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>> {
        enqueue()?;
        self.synchronize()?;
        Ok(None)
    }
}

/// One range of a batched device-to-host read ([`Device::read_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPart {
    /// Device address of the first byte.
    pub src: u64,
    pub bytes: usize,
}

/// Alignment of every part handed to a [`DeviceBackend::read_parts`] sink: enough to view the bytes
/// as any element type without copying.
pub const READ_ALIGN: usize = 16;

/// Where each part of a batched read starts in one host buffer, and the buffer's size (a
/// multiple of [`READ_ALIGN`]).
pub fn read_layout(parts: &[ReadPart]) -> (Vec<usize>, usize) {
    let mut total = 0;
    let offsets = parts
        .iter()
        .map(|p| {
            let o = total;
            total += p.bytes.next_multiple_of(READ_ALIGN);
            o
        })
        .collect();
    (offsets, total)
}

/// Bytes and copies between host and device, counted by [`Device`] on every backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfers {
    pub h2d_bytes: u64,
    pub h2d_copies: u64,
    pub d2h_bytes: u64,
    pub d2h_copies: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    /// What moved between two snapshots (`later - earlier`; 0 where `earlier` is larger).
    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            h2d_bytes: self.h2d_bytes.saturating_sub(earlier.h2d_bytes),
            h2d_copies: self.h2d_copies.saturating_sub(earlier.h2d_copies),
            d2h_bytes: self.d2h_bytes.saturating_sub(earlier.d2h_bytes),
            d2h_copies: self.d2h_copies.saturating_sub(earlier.d2h_copies),
        }
    }
}

#[derive(Default)]
struct TransferCounters {
    h2d_bytes: AtomicU64,
    h2d_copies: AtomicU64,
    d2h_bytes: AtomicU64,
    d2h_copies: AtomicU64,
}

impl TransferCounters {
    fn h2d(&self, bytes: usize) {
        self.h2d_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.h2d_copies.fetch_add(1, Ordering::Relaxed);
    }
    fn d2h(&self, bytes: usize, copies: usize) {
        self.d2h_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.d2h_copies.fetch_add(copies as u64, Ordering::Relaxed);
    }
}

/// The embedded module defining each kernel, built once: `Device::launch` looks kernels up by
/// name on every launch.
fn module_of_kernel(kernel: &str) -> Option<&'static str> {
    static INDEX: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut m = HashMap::new();
            for module in crate::ptx::MODULES {
                for k in module.kernels {
                    // the first module defining a name wins, as `ptx::module_of_kernel` has it
                    m.entry(*k).or_insert(module.name);
                }
            }
            m
        })
        .get(kernel)
        .copied()
}

/// A handle to a GPU or to the emulator. Cheap to clone.
#[derive(Clone)]
pub struct Device {
    backend: Arc<dyn DeviceBackend>,
    /// While [`Device::record`] runs: the launches, recorded instead of executed.
    recording: Arc<Mutex<Option<Vec<RecordedLaunch>>>>,
    /// Host-device copies since creation (shared by every clone).
    transfers: Arc<TransferCounters>,
    /// The Hopper self-check's verdict per head dim, once run (shared by every clone).
    pub(crate) selection: Arc<crate::select::SelfCheckCache>,
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
        #[cfg(feature = "cuda")]
        return Ok(Device::from_backend(Arc::new(cuda::CudaBackend::open(ordinal)?)));
        #[cfg(not(feature = "cuda"))]
        return Err(Error::NoCudaDevice(format!(
            "device {ordinal}: fusebert-kernels was built without its `cuda` feature"
        )));
    }

    /// [`Device::cuda`] with only the embedded modules named in `modules` loaded (launching a
    /// kernel of another one is an error saying its module is not loaded): what a process that
    /// runs a few kernels opens, so that the driver JIT-compiles only their PTX (the conformance
    /// kit's C16 cases, each in its own process under `--isolate`).
    pub fn cuda_modules(ordinal: usize, modules: &[&str]) -> Result<Device> {
        #[cfg(feature = "cuda")]
        return Ok(Device::from_backend(Arc::new(cuda::CudaBackend::open_with(ordinal, Some(modules))?)));
        #[cfg(not(feature = "cuda"))]
        return Err(Error::NoCudaDevice(format!(
            "device {ordinal} ({} modules): fusebert-kernels was built without its `cuda` feature",
            modules.len()
        )));
    }

    /// The PTX emulator with default options (all sanitizers on).
    #[cfg(feature = "emulator")]
    pub fn emulator() -> Result<Device> {
        Self::emulator_with(emulator::EmulatorOptions::default())
    }

    #[cfg(feature = "emulator")]
    pub fn emulator_with(opts: emulator::EmulatorOptions) -> Result<Device> {
        Ok(Device::from_backend(Arc::new(emulator::backend(opts)?)))
    }

    /// Wraps any backend (for tests and custom backends).
    pub fn from_backend(backend: Arc<dyn DeviceBackend>) -> Device {
        Device { backend, recording: Arc::new(Mutex::new(None)), transfers: Arc::default(), selection: Arc::default() }
    }

    pub fn backend(&self) -> &dyn DeviceBackend {
        &*self.backend
    }

    pub fn name(&self) -> String {
        self.backend.name()
    }

    /// The emulator backend, when this device is one.
    #[cfg(feature = "emulator")]
    pub fn emulator_backend(&self) -> Option<&emulator::EmulatorBackend> {
        self.backend.as_emulator()
    }

    pub fn is_emulator(&self) -> bool {
        #[cfg(feature = "emulator")]
        return self.backend.as_emulator().is_some();
        #[cfg(not(feature = "emulator"))]
        return false;
    }

    /// Allocates `len` elements of `T`, uninitialised (the emulator poisons and tracks them).
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.not_recording("allocation")?;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Memory(format!("allocation of {len} elements overflows")))?;
        let addr = self.backend.alloc(bytes)?;
        let alloc = Arc::new(Allocation { addr, device: self.clone() });
        Ok(DeviceBuffer { addr, len, alloc, _t: PhantomData })
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
        self.write(b.addr, bytemuck::cast_slice(data))?;
        Ok(b)
    }

    /// Host-device copies so far (all clones of this device together). Take two snapshots and
    /// subtract them to get what one operation moved.
    pub fn transfers(&self) -> Transfers {
        let t = &self.transfers;
        Transfers {
            h2d_bytes: t.h2d_bytes.load(Ordering::Relaxed),
            h2d_copies: t.h2d_copies.load(Ordering::Relaxed),
            d2h_bytes: t.d2h_bytes.load(Ordering::Relaxed),
            d2h_copies: t.d2h_copies.load(Ordering::Relaxed),
        }
    }

    /// Reads several device ranges back with one synchronisation: the copies are queued
    /// behind the launches already queued (on CUDA, asynchronously into one pinned buffer)
    /// and `f` gets the bytes of each part, in order, in place (aligned for any element type:
    /// view them with [`as_elements`]). Counts one device-to-host copy per part.
    pub fn read_back<R>(&self, parts: &[ReadPart], f: impl FnOnce(&[&[u8]]) -> Result<R>) -> Result<R> {
        self.not_recording("copy to host")?;
        let mut f = Some(f);
        let mut out = None;
        self.backend.read_parts(parts, &mut |bytes| {
            let f = f.take().ok_or_else(|| Error::Other("read_parts called its sink twice".into()))?;
            out = Some(f(bytes)?);
            Ok(())
        })?;
        self.transfers.d2h(parts.iter().map(|p| p.bytes).sum(), parts.len());
        out.ok_or_else(|| Error::Other(format!("{}: read_parts never called its sink", self.name())))
    }

    fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.backend.write(dst, src)?;
        self.transfers.h2d(src.len());
        Ok(())
    }

    /// Launches a kernel by name; its module is found among the embedded ones.
    pub fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let module = module_of_kernel(kernel).ok_or_else(|| Error::Kernel {
            kernel: kernel.to_string(),
            msg: "no embedded PTX module defines this kernel".into(),
        })?;
        self.launch_in(module, kernel, cfg, args)
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

    /// A tiled tensor map for TMA (`cuTensorMapEncodeTiled` on CUDA, the emulator's encoder on
    /// the emulator), to pass by value as [`KernelArg::TensorMap`]. Bad descriptions (rank,
    /// alignment, strides, box sizes, swizzle span) are typed errors, never panics.
    pub fn encode_tensor_map(&self, map: &TiledTensorMap<'_>) -> Result<TensorMap> {
        map.check()?;
        self.backend.encode_tensor_map(map)
    }

    /// Streaming multiprocessors of the device (the emulator reports its architecture's
    /// nominal count): the grid of a persistent kernel.
    pub fn multiprocessors(&self) -> u32 {
        self.backend.multiprocessors().max(1)
    }

    /// Compute capability (major, minor); the emulator reports its architecture's.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.backend.compute_capability()
    }

    /// This device's kernel family for `requested` and a model of attention head dim
    /// `head_dim` (see [`crate::select`]); in `Auto` on a compute capability 9.0 device the
    /// first call runs the Hopper self-check (cached per device and head dim).
    pub fn kernel_family(
        &self,
        requested: crate::select::KernelFamily,
        head_dim: usize,
    ) -> Result<crate::select::Selected> {
        crate::select::select(self, requested, head_dim)
    }

    /// The Hopper self-check's verdicts so far on this device (empty until `Auto` ran it).
    pub fn self_check_verdicts(&self) -> Vec<crate::select::Verdict> {
        self.selection.verdicts()
    }

    pub fn synchronize(&self) -> Result<()> {
        self.not_recording("synchronize")?;
        self.backend.synchronize()
    }

    /// Runs `enqueue` between two device events and returns the device time of what it enqueued,
    /// in milliseconds (`None` on a backend without a device clock, after running it all the
    /// same). Host time between launches counts as idle device time, so time a [`Graph`] replay
    /// to measure kernels rather than the host.
    pub fn device_time_ms(&self, mut enqueue: impl FnMut() -> Result<()>) -> Result<Option<f64>> {
        self.not_recording("device timing")?;
        self.backend.device_time_ms(&mut enqueue)
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

/// One device allocation, freed when the last [`DeviceBuffer`] using it drops.
struct Allocation {
    addr: u64,
    device: Device,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.device.backend.free(self.addr);
    }
}

/// `len` elements of `T` in device memory: a whole allocation ([`Device::alloc`]) or a view
/// into one ([`DeviceBuffer::view`]); either keeps the allocation alive.
pub struct DeviceBuffer<T> {
    addr: u64,
    len: usize,
    alloc: Arc<Allocation>,
    _t: PhantomData<T>,
}

/// Views the bytes of one [`Device::read_back`] part as elements of `T` (no copy).
pub fn as_elements<T: Pod>(bytes: &[u8]) -> Result<&[T]> {
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| Error::Memory(format!("{} bytes viewed as {}: {e}", bytes.len(), std::any::type_name::<T>())))
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
        &self.alloc.device
    }
    /// `len` elements from element `offset`: a buffer sharing this one's allocation (which
    /// stays alive while either exists), e.g. one input of several packed into one upload.
    /// Kernel wrappers check their arguments against the view's length; the emulator's bounds
    /// sanitizer still sees the whole allocation.
    pub fn view(&self, offset: usize, len: usize) -> Result<DeviceBuffer<T>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::Memory(format!(
                "view of {len} elements at {offset} of a buffer of {} elements",
                self.len
            )));
        }
        Ok(DeviceBuffer { addr: self.addr_at(offset), len, alloc: self.alloc.clone(), _t: PhantomData })
    }
    /// The first `n` elements as one part of a [`Device::read_back`].
    pub fn read_part(&self, n: usize) -> Result<ReadPart> {
        if n > self.len {
            return Err(Error::Memory(format!("read of {n} elements from a buffer of {}", self.len)));
        }
        Ok(ReadPart { src: self.addr, bytes: n * std::mem::size_of::<T>() })
    }
    /// Copies the whole buffer to the host (synchronising first).
    pub fn to_host(&self) -> Result<Vec<T>> {
        self.read_prefix(self.len)
    }
    /// Overwrites the buffer (whose length must match) with `data`.
    pub fn copy_from_host(&mut self, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::Memory(format!("copy of {} elements into a buffer of {}", data.len(), self.len)));
        }
        self.device().not_recording("copy to device")?;
        self.device().write(self.addr, bytemuck::cast_slice(data))
    }
    /// Writes `data` into the first `data.len()` elements (workspaces larger than one batch).
    pub fn write_prefix(&mut self, data: &[T]) -> Result<()> {
        if data.len() > self.len {
            return Err(Error::Memory(format!("write of {} elements into a buffer of {}", data.len(), self.len)));
        }
        self.device().not_recording("copy to device")?;
        self.device().write(self.addr, bytemuck::cast_slice(data))
    }
    /// Copies the first `n` elements to the host (synchronising first).
    pub fn read_prefix(&self, n: usize) -> Result<Vec<T>> {
        if n > self.len {
            return Err(Error::Memory(format!("read of {n} elements from a buffer of {}", self.len)));
        }
        // behind the queued work, one synchronisation (on CUDA through pinned memory)
        self.device().read_back(&[self.read_part(n)?], |bytes| Ok(as_elements::<T>(bytes[0])?.to_vec()))
    }
    /// Fills every byte with `byte`.
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        self.device().not_recording("memset")?;
        self.device().backend.memset(self.addr, byte, self.bytes())
    }
    /// The address of element `offset` (for views into a workspace).
    pub fn addr_at(&self, offset: usize) -> u64 {
        self.addr + (offset * std::mem::size_of::<T>()) as u64
    }
}
