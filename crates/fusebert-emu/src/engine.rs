//! The emulated device a program drives: global memory, loaded modules, launches with typed
//! parameters checked against the kernel's `.param` list, and the launch checks a driver makes.
//! Launches run synchronously; every launch's counters are recorded. `fusebert-kernels` wraps
//! [`Emulator`] as a device backend; `ptxemu run` drives it from the command line.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::arch::{self, Arch, AsyncMode, MathMode, TensorAccum};
use crate::error::{Error, Result};
use crate::exec::{ExecOpts, Launch};
use crate::ir::{Kernel, Module, Ty};
use crate::memory::GlobalMem;
use crate::Counters;

/// One kernel parameter as the host passes it (a device address or a scalar).
#[derive(Debug, Clone, Copy, PartialEq)]
// (raw bytes inline keep `Param` Copy, as every caller uses it; argument lists are short)
#[allow(clippy::large_enum_variant)]
pub enum Param {
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    /// A parameter passed by value as raw bytes: a struct, a `CUtensorMap` (at the parameter's
    /// declared size and alignment).
    Bytes(ParamBytes),
}

/// Raw bytes of a by-value parameter (up to [`ParamBytes::MAX`]), kept inline so that
/// [`Param`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParamBytes {
    len: u16,
    data: [u8; ParamBytes::MAX],
}

impl ParamBytes {
    /// Largest by-value parameter (a tensor map is 128 bytes).
    pub const MAX: usize = 512;
    /// The bytes, or `None` when longer than [`ParamBytes::MAX`].
    pub fn new(b: &[u8]) -> Option<ParamBytes> {
        let mut data = [0u8; Self::MAX];
        data.get_mut(..b.len())?.copy_from_slice(b);
        Some(ParamBytes { len: b.len() as u16, data })
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

impl std::fmt::Debug for ParamBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len)
    }
}

impl Param {
    /// Size in bytes in the parameter buffer (also its natural alignment, except for raw bytes).
    pub fn size(&self) -> usize {
        match self {
            Param::U32(_) | Param::I32(_) | Param::F32(_) => 4,
            Param::Bytes(b) => b.len as usize,
            _ => 8,
        }
    }
    /// Little-endian bytes as they sit in the parameter buffer.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Param::Ptr(v) | Param::U64(v) => v.to_le_bytes().to_vec(),
            Param::I64(v) => v.to_le_bytes().to_vec(),
            Param::F64(v) => v.to_le_bytes().to_vec(),
            Param::U32(v) => v.to_le_bytes().to_vec(),
            Param::I32(v) => v.to_le_bytes().to_vec(),
            Param::F32(v) => v.to_le_bytes().to_vec(),
            Param::Bytes(b) => b.as_slice().to_vec(),
        }
    }
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Dynamic (`extern __shared__`) bytes per block.
    pub shared_mem_bytes: u32,
}

/// Where modules that were never loaded explicitly come from (a program's embedded PTX), and
/// what ptxas said about their registers (the per-block register limit is checked with it).
pub trait ModuleLibrary: Send + Sync {
    /// The PTX text of module `name`, if the library has it.
    fn ptx(&self, name: &str) -> Option<&str>;
    /// Registers per thread of `kernel` in `module` compiled for `ptxas_target` (e.g. `sm_80`).
    fn registers(&self, module: &str, kernel: &str, ptxas_target: &str) -> Option<u32>;
}

/// Emulator switches. Defaults: every sanitizer on.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Master switch for the sanitizers below (global/shared bounds are always enforced: the
    /// emulator never touches memory outside an allocation).
    pub sanitize: bool,
    /// Misaligned-access reports (with `sanitize`).
    pub check_bounds: bool,
    /// Shared-memory races (between warps in a barrier interval, between lanes of a warp without
    /// `__syncwarp`) and cp.async hazards.
    pub check_races: bool,
    /// Reads of never-written shared/local memory.
    pub check_uninit: bool,
    /// Instructions per warp (= per thread in lockstep) before a launch is declared runaway.
    /// Default 2^28: far above any real kernel (a GEMM warp runs ~10^4), and a hung test fails
    /// within about half a minute instead of hours.
    pub step_limit: u64,
    /// Worker threads for blocks (0 = rayon's default pool).
    pub threads: usize,
    /// Kernels with floating-point atomics run their blocks in order, so float atomics give the
    /// same bits every run whatever the thread count (integer atomics are exact in any order:
    /// kernels with only those, such as last-block-arrives counters, run in parallel).
    pub deterministic_atomics: bool,
    /// Target architecture: per-block limits enforced at launch, tensor-core numerics.
    pub arch: Arch,
    /// Approximate math: correctly rounded (`Exact`) or anywhere in the ISA's error bound
    /// (`Envelope`). The default comes from `FUSEBERT_EMU_MATH` (see [`arch::MATH_ENV`]).
    pub math: MathMode,
    /// Tensor-core accumulation of floating-point `mma`; `None` = the arch's model
    /// ([`Arch::tensor_accum`]).
    pub tensor_accum: Option<TensorAccum>,
    /// Time every instruction by class ([`crate::profile`]; read with
    /// [`Emulator::take_profile`]). Costs about two timer reads per warp instruction.
    pub profile: bool,
    /// When TMA copies land: lazily (default), at issue, or in a seeded random order. The
    /// default comes from `FUSEBERT_EMU_ASYNC` (see [`arch::ASYNC_ENV`]).
    pub async_mode: AsyncMode,
    /// Blocks resident at once in a launch whose blocks wait on each other (`exec::resident`):
    /// `None` = as many as the arch's SMs hold ([`Arch::sm_limits`]: SMs x blocks per SM by
    /// threads and shared memory). Set it for another product of the architecture, or small to
    /// test that a kernel never waits on a block that cannot be resident yet.
    pub resident_blocks: Option<u32>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            sanitize: true,
            check_bounds: true,
            check_races: true,
            check_uninit: true,
            step_limit: 1 << 28,
            threads: 0,
            deterministic_atomics: true,
            arch: Arch::default(),
            // a bad value is reported by `Emulator::new` (Default cannot fail)
            math: MathMode::from_env().unwrap_or_default(),
            tensor_accum: None,
            profile: false,
            async_mode: AsyncMode::from_env().unwrap_or_default(),
            resident_blocks: None,
        }
    }
}

/// One recorded launch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaunchRecord {
    pub module: String,
    pub kernel: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
    pub counters: Counters,
    /// Wall-clock seconds the launch took on the host.
    pub seconds: f64,
}

/// A module loaded into this backend: its IR plus its global variables and const bank.
struct Loaded {
    module: Arc<Module>,
    global_base: u64,
    const_bank: Vec<u8>,
}

/// The emulated device.
pub struct Emulator {
    opts: EmulatorOptions,
    mem: GlobalMem,
    modules: Mutex<HashMap<String, Arc<Loaded>>>,
    launches: Mutex<Vec<LaunchRecord>>,
    printed: Mutex<String>,
    profile: Mutex<crate::profile::Profile>,
    pool: Option<rayon::ThreadPool>,
    /// Per-function MAX_DYNAMIC_SHARED_SIZE_BYTES attributes ((module, kernel) -> bytes), as the
    /// driver keeps them: set once, kept for later launches.
    max_dynamic_shared: Mutex<HashMap<(String, String), u32>>,
    library: Option<Arc<dyn ModuleLibrary>>,
}

impl Emulator {
    /// An emulated device with no module library: modules come from [`Emulator::load_module`].
    pub fn new(opts: EmulatorOptions) -> Result<Self> {
        // a misspelt FUSEBERT_EMU_MATH must not silently run a suite in the wrong mode
        MathMode::from_env().map_err(Error::Input)?;
        AsyncMode::from_env().map_err(Error::Input)?;
        let pool = if opts.threads > 0 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(opts.threads)
                    .build()
                    .map_err(|e| Error::Emulator(format!("cannot start {} worker threads: {e}", opts.threads)))?,
            )
        } else {
            None
        };
        Ok(Emulator {
            opts,
            mem: GlobalMem::default(),
            modules: Mutex::new(HashMap::new()),
            launches: Mutex::new(Vec::new()),
            printed: Mutex::new(String::new()),
            profile: Mutex::new(Default::default()),
            pool,
            max_dynamic_shared: Mutex::new(HashMap::new()),
            library: None,
        })
    }

    /// An emulated device that loads modules from `library` on first use.
    pub fn with_library(opts: EmulatorOptions, library: Arc<dyn ModuleLibrary>) -> Result<Self> {
        Ok(Emulator { library: Some(library), ..Emulator::new(opts)? })
    }

    /// Sets a kernel's MAX_DYNAMIC_SHARED_SIZE_BYTES attribute (the opt-in to more than 48 KiB
    /// of shared memory per block), refused like `cuFuncSetAttribute` when static + `bytes`
    /// exceed the architecture's opt-in limit.
    pub fn set_max_dynamic_shared(&self, module: &str, kernel: &str, bytes: u32) -> Result<()> {
        let l = self.loaded(module)?;
        let k = find_kernel(&l.module, module, kernel)?;
        let cap = self.opts.arch.limits().shared_per_block_optin;
        // static bytes as ptxas counts them: with the extern region's alignment padding
        let static_shared = l.module.dyn_shared_offset(k);
        if static_shared as u64 + bytes as u64 > cap as u64 {
            return Err(Error::Kernel {
                kernel: kernel.to_string(),
                msg: format!(
                    "MAX_DYNAMIC_SHARED_SIZE_BYTES = {bytes} plus {static_shared} static bytes exceeds {}'s opt-in limit of {cap} bytes",
                    self.opts.arch
                ),
            });
        }
        self.max_dynamic_shared
            .lock()
            .map_err(|_| Error::Emulator("attribute table poisoned".into()))?
            .insert((module.to_string(), kernel.to_string()), bytes);
        Ok(())
    }

    fn max_dynamic_shared(&self, module: &str, kernel: &str) -> Option<u32> {
        self.max_dynamic_shared.lock().ok()?.get(&(module.to_string(), kernel.to_string())).copied()
    }

    pub fn options(&self) -> &EmulatorOptions {
        &self.opts
    }

    /// Every launch since creation (or the last `clear_launches`).
    pub fn launches(&self) -> Vec<LaunchRecord> {
        self.launches.lock().map(|l| l.clone()).unwrap_or_default()
    }
    pub fn clear_launches(&self) {
        if let Ok(mut l) = self.launches.lock() {
            l.clear();
        }
    }
    /// Sum of the counters of every recorded launch.
    pub fn total_counters(&self) -> Counters {
        let mut c = Counters::default();
        for r in self.launches() {
            c.add(&r.counters);
        }
        c
    }
    /// Text printed by device `printf` since the last call (it also goes to stdout).
    pub fn take_printf_output(&self) -> String {
        self.printed.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// The per-class profile of every launch since the last call (empty unless
    /// `EmulatorOptions::profile`).
    pub fn take_profile(&self) -> crate::profile::Profile {
        self.profile.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Per kernel, busiest first: its name, launches and host seconds over the recorded launches.
    pub fn time_per_kernel(&self) -> Vec<(String, usize, f64)> {
        let mut per: Vec<(String, usize, f64)> = Vec::new();
        for l in self.launches() {
            match per.iter_mut().find(|k| k.0 == l.kernel) {
                Some(k) => (k.1, k.2) = (k.1 + 1, k.2 + l.seconds),
                None => per.push((l.kernel, 1, l.seconds)),
            }
        }
        per.sort_by(|a, b| b.2.total_cmp(&a.2));
        per
    }

    /// Counters of the most recent launch.
    pub fn last_counters(&self) -> Option<Counters> {
        self.launches.lock().ok().and_then(|l| l.last().map(|r| r.counters.clone()))
    }

    /// The parsed module `name` (loading an embedded one on first use).
    pub fn module(&self, name: &str) -> Result<Arc<Module>> {
        Ok(self.loaded(name)?.module.clone())
    }

    fn loaded(&self, name: &str) -> Result<Arc<Loaded>> {
        if let Some(m) = self.modules.lock().map_err(|_| Error::Emulator("module table poisoned".into()))?.get(name) {
            return Ok(m.clone());
        }
        let src =
            self.library.as_ref().and_then(|l| l.ptx(name)).ok_or_else(|| {
                Error::Emulator(format!("no PTX module named `{name}` (neither embedded nor loaded)"))
            })?;
        let m = crate::cached_module(name, src)?;
        self.check_target(name, &m)?;
        self.install(name, m)
    }

    /// Arch-specific PTX (`sm_90a`: wgmma, setmaxnreg) JITs on its exact compute capability
    /// only, whether loaded explicitly or from the library.
    fn check_target(&self, name: &str, m: &Module) -> Result<()> {
        if let Some(t) = m.target.as_deref().filter(|t| t.ends_with('a')) {
            let arch = self.opts.arch;
            if t.trim_end_matches('a') != arch.ptxas_target() {
                return Err(Error::PtxParse {
                    module: name.to_string(),
                    line: 0,
                    msg: format!(
                        "`.target {t}` is arch-specific PTX: it loads only on that exact architecture, and the \
                         emulated device is {arch}"
                    ),
                });
            }
        }
        Ok(())
    }

    fn install(&self, name: &str, module: Arc<Module>) -> Result<Arc<Loaded>> {
        let global_base =
            self.mem.alloc(module.global_bytes.max(1) as usize, Some(format!("globals of module {name}")))?;
        let mut zeros = vec![0u8; module.global_bytes as usize];
        let mut const_bank = vec![0u8; module.const_bytes as usize];
        for v in &module.vars {
            let init = v.init.clone().unwrap_or_else(|| vec![0u8; v.size as usize]);
            let (o, n) = (v.offset as usize, v.size as usize);
            match v.space {
                crate::ir::Space::Const => const_bank[o..o + n].copy_from_slice(&init[..n]),
                crate::ir::Space::Global => zeros[o..o + n].copy_from_slice(&init[..n]),
                _ => {}
            }
        }
        self.mem.write(global_base, &zeros)?;
        let l = Arc::new(Loaded { module, global_base, const_bank });
        self.modules
            .lock()
            .map_err(|_| Error::Emulator("module table poisoned".into()))?
            .insert(name.to_string(), l.clone());
        Ok(l)
    }

    /// Overwrites bytes of a module's `.const` variable (like cudaMemcpyToSymbol).
    pub fn set_const(&self, module: &str, var: &str, bytes: &[u8]) -> Result<()> {
        let l = self.loaded(module)?;
        let v = l
            .module
            .vars
            .iter()
            .find(|v| v.name == var && v.space == crate::ir::Space::Const)
            .ok_or_else(|| Error::Emulator(format!("module `{module}` has no .const variable `{var}`")))?;
        if bytes.len() > v.size as usize {
            return Err(Error::Memory(format!("{} bytes written to .const `{var}` of {} bytes", bytes.len(), v.size)));
        }
        let mut bank = l.const_bank.clone();
        bank[v.offset as usize..v.offset as usize + bytes.len()].copy_from_slice(bytes);
        let nl = Arc::new(Loaded { module: l.module.clone(), global_base: l.global_base, const_bank: bank });
        self.modules
            .lock()
            .map_err(|_| Error::Emulator("module table poisoned".into()))?
            .insert(module.to_string(), nl);
        Ok(())
    }

    fn exec_opts(&self, serial: bool) -> ExecOpts {
        let s = self.opts.sanitize;
        ExecOpts {
            bounds: true,
            align: s && self.opts.check_bounds,
            races: s && self.opts.check_races,
            uninit: s && self.opts.check_uninit,
            collectives: s,
            step_limit: self.opts.step_limit,
            serial,
            math: self.opts.math,
            tensor: self.opts.tensor_accum.unwrap_or_else(|| self.opts.arch.tensor_accum()),
            profile: self.opts.profile,
            async_mode: self.opts.async_mode,
            resident_blocks: self.opts.resident_blocks.unwrap_or(0),
            sm: self.opts.arch.sm_limits(),
        }
    }
}

/// Checks the host arguments against the kernel's `.param` list and builds the parameter buffer.
pub fn build_params(k: &Kernel, args: &[Param]) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::KernelArgs { kernel: k.name.clone(), msg };
    if args.len() != k.params.len() {
        return Err(bad(format!(
            "the PTX signature has {} parameters, {} arguments were passed",
            k.params.len(),
            args.len()
        )));
    }
    let mut buf = vec![0u8; k.param_bytes as usize];
    for (n, (p, a)) in k.params.iter().zip(args).enumerate() {
        if a.size() as u32 != p.size {
            return Err(bad(format!(
                "parameter {n} (`{}`, .{:?}) is {} bytes, argument {:?} is {} bytes",
                p.name,
                p.ty,
                p.size,
                a,
                a.size()
            )));
        }
        let arg_float = matches!(a, Param::F32(_) | Param::F64(_));
        let param_float = matches!(p.ty, Ty::F32 | Ty::F64);
        let param_int = matches!(p.ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64);
        if (param_float && !arg_float) || (param_int && arg_float) {
            return Err(bad(format!("parameter {n} (`{}`) has type .{:?} but the argument is {:?}", p.name, p.ty, a)));
        }
        let natural = if let Param::Bytes(_) = a { p.align as usize } else { a.size() };
        if p.offset % p.align != 0 || (p.offset as usize) % natural != 0 {
            return Err(bad(format!(
                "parameter {n} (`{}`) sits at offset {} which is not {}-byte aligned",
                p.name, p.offset, natural
            )));
        }
        if let (Some(al), Param::Ptr(addr)) = (p.ptr_align, a) {
            if addr % al as u64 != 0 {
                return Err(bad(format!("parameter {n} (`{}`) is declared `.ptr .align {al}` but the pointer {addr:#x} is not {al}-byte aligned", p.name)));
            }
        }
        let b = a.bytes();
        buf[p.offset as usize..p.offset as usize + b.len()].copy_from_slice(&b);
    }
    Ok(buf)
}

fn find_kernel<'m>(m: &'m Module, module: &str, kernel: &str) -> Result<&'m Kernel> {
    m.kernel(kernel).ok_or_else(|| Error::Kernel {
        kernel: kernel.to_string(),
        msg: format!("module `{module}` has no entry `{kernel}`"),
    })
}

/// The launch checks a driver makes, against `arch`'s limits: geometry, `.reqntid`/`.maxntid`,
/// shared memory (with the function's opt-in attribute `max_dynamic`), registers per block
/// (from ptxas, for the embedded kernels).
#[allow(clippy::too_many_arguments)] // the driver's launch checks read all of these
fn check_config(
    k: &Kernel,
    static_shared: u32,
    module: &str,
    cfg: &LaunchDims,
    arch: Arch,
    max_dynamic: Option<u32>,
    library: Option<&dyn ModuleLibrary>,
) -> Result<()> {
    let bad = |msg: String| Error::Kernel { kernel: k.name.clone(), msg };
    let lim = arch.limits();
    let (b, g) = (cfg.block, cfg.grid);
    if b.0 == 0 || b.1 == 0 || b.2 == 0 || g.0 == 0 || g.1 == 0 || g.2 == 0 {
        return Err(bad(format!("empty launch: grid {g:?}, block {b:?}")));
    }
    let nt = b.0 as u64 * b.1 as u64 * b.2 as u64;
    if nt > lim.max_threads_per_block as u64 || b.2 > 64 {
        return Err(bad(format!(
            "block {b:?} has {nt} threads (at most {} on {arch}, z at most 64)",
            lim.max_threads_per_block
        )));
    }
    if g.1 > 65535 || g.2 > 65535 {
        return Err(bad(format!("grid {g:?}: y and z must be at most 65535")));
    }
    if let Some(r) = k.reqntid {
        if r != b {
            return Err(bad(format!("kernel requires block {r:?} (.reqntid), launched with {b:?}")));
        }
    }
    if let Some(mx) = k.maxntid {
        if nt > mx.0 as u64 * mx.1 as u64 * mx.2 as u64 {
            return Err(bad(format!("block {b:?} exceeds .maxntid {mx:?}")));
        }
    }
    if let Some(c) = k.cluster {
        // cudaErrorClusterOutOfResources / invalid cluster size: a cluster shape must tile the
        // grid, and more than 8 CTAs per cluster is non-portable (an opt-in attribute we do not have)
        let ranks = c.0 as u64 * c.1 as u64 * c.2 as u64;
        if ranks == 0 || ranks > 8 {
            return Err(bad(format!("cluster {c:?} (.reqnctapercluster) has {ranks} CTAs: 1 to 8 are portable")));
        }
        if g.0 % c.0 != 0 || g.1 % c.1 != 0 || g.2 % c.2 != 0 {
            return Err(bad(format!("grid {g:?} is not a whole number of clusters {c:?} (.reqnctapercluster)")));
        }
    }
    arch::check_shared(arch, static_shared, cfg.shared_mem_bytes, max_dynamic)
        .map_err(|m| bad(format!("launch refused on {arch}: {m}")))?;
    if let Some(regs) = library.and_then(|l| l.registers(module, &k.name, arch.ptxas_target())) {
        let need = arch::registers_per_block(regs, nt as u32);
        if need > lim.max_registers_per_block {
            return Err(bad(format!(
                "launch refused on {arch}: {nt} threads x {regs} registers (ptxas) need {need} registers per block, \
                 more than the {}",
                lim.max_registers_per_block
            )));
        }
    }
    Ok(())
}

/// The device operations, the same set a CUDA driver offers.
impl Emulator {
    pub fn alloc(&self, bytes: usize) -> Result<u64> {
        self.mem.alloc(bytes, None)
    }
    pub fn free(&self, addr: u64) {
        self.mem.free(addr)
    }
    pub fn write(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.mem.write(dst, src)
    }
    pub fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.mem.read(src, dst)
    }
    pub fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.mem.memset(dst, byte, bytes)
    }
    pub fn launch(&self, module: &str, kernel: &str, cfg: &LaunchDims, args: &[Param]) -> Result<()> {
        let l = self.loaded(module)?;
        let m = &*l.module;
        let k = find_kernel(m, module, kernel)?;
        // What `CudaBackend::launch` does before launching: opt in when the dynamic part alone
        // exceeds 48 KiB (a kernel whose static + dynamic total passes 48 KiB with a smaller
        // dynamic part is therefore refused here, as the driver would refuse it).
        if cfg.shared_mem_bytes > arch::DEFAULT_SHARED_PER_BLOCK {
            self.set_max_dynamic_shared(module, kernel, cfg.shared_mem_bytes)?;
        }
        // ptxas counts the extern region's alignment padding as static shared memory
        let static_shared = m.dyn_shared_offset(k);
        let max_dyn = self.max_dynamic_shared(module, kernel);
        check_config(k, static_shared, module, cfg, self.opts.arch, max_dyn, self.library.as_deref())?;
        let params = build_params(k, args)?;
        let serial = self.opts.deterministic_atomics && k.has_atomics;
        let opts = self.exec_opts(serial);
        let run = || {
            self.mem.with_view(|view| {
                let launch = Launch::new(
                    m,
                    k,
                    view,
                    &params,
                    &l.const_bank,
                    cfg.grid,
                    cfg.block,
                    cfg.shared_mem_bytes,
                    l.global_base,
                    opts.clone(),
                );
                let r = launch.run();
                if let (Ok(text), Ok(mut p)) = (launch.printed.lock(), self.printed.lock()) {
                    p.push_str(&text);
                }
                if self.opts.profile {
                    if let (Ok(lp), Ok(mut p)) = (launch.profile.lock(), self.profile.lock()) {
                        p.add(&lp);
                    }
                }
                r
            })
        };
        let start = std::time::Instant::now();
        let mut counters = match &self.pool {
            Some(p) => p.install(run),
            None => run(),
        }??;
        counters.launches = 1;
        if let Ok(mut ls) = self.launches.lock() {
            ls.push(LaunchRecord {
                module: module.to_string(),
                kernel: kernel.to_string(),
                grid: cfg.grid,
                block: cfg.block,
                shared_mem_bytes: cfg.shared_mem_bytes,
                counters,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }
    pub fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    pub fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        let m = crate::cached_module(name, ptx)?;
        self.check_target(name, &m)?;
        self.install(name, m)?;
        Ok(())
    }
}
