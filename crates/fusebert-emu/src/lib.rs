//! fusebert-emu, a PTX emulator: parse -> IR -> execute blocks/warps, with sanitizers and counters.
//!
//! Layers: [`lex`]/[`parse`]/[`lower`] (over [`syntax`], what the last two share) turn PTX
//! text into the slot-based IR of [`ir`] (once per module, cached); [`cfg`](mod@self::cfg)
//! computes branch reconvergence points (immediate post-dominators);
//! [`exec`] runs a launch (blocks in parallel with rayon, warps of 32 lanes in lockstep with a
//! SIMT reconvergence stack and a call stack), with [`alu`]/[`fp`] for arithmetic, [`mem`] for
//! memory instructions and the sanitizers, [`warp`] for warp-wide instructions (shfl, vote,
//! ldmatrix, mma, wmma); [`memory`] is the allocation-aware global memory; [`counters`] the
//! per-launch statistics. [`arch`] holds the per-architecture launch limits and math modes,
//! [`envelope`] the approximate-math error envelopes, [`tensor`] the tensor-core accumulation
//! model, [`regdef`] the register read/write sets for definedness checking, [`global_race`] the
//! cross-block write-write check (docs/emulator-fidelity.md); [`engine`] is the emulated device a
//! program drives (memory, modules, launches with typed parameters). The emulator knows no CUDA
//! and no model: `fusebert-kernels` wraps [`Emulator`] as a device backend, and the research
//! command line is the `ptxemu` binary ([`run_cli`]).
//!
//! Sanitizers (all on by default, see `EmulatorOptions`): out-of-bounds and misaligned accesses
//! (global: against live allocations, never-reused addresses catch use-after-free; shared, local,
//! const, param), shared-memory races between barriers (per 4-byte word, warp granularity) and
//! between the lanes of one warp with no `bar.warp.sync` in between (last writer/reader lane),
//! reads of never-written shared/local/global bytes, touching a cp.async destination still in
//! flight, divergent (non-.aligned) barrier arrival, partial-warp collectives (shfl/vote/match/
//! redux membermask, mma/ldmatrix/wmma need the whole warp), deadlock, step limit, device
//! assert; reads of never-written registers, warps at different `bar.sync` instructions,
//! cp.async misuse (copy in flight at thread exit, waits over uncommitted copies, src-size >
//! size), cross-block global write-write races. Reports name kernel, module, block, thread, PTX line, .cu file:line, address and the
//! allocation missed.
pub mod alu;
pub mod arch;
mod async_proxy;
pub mod cfg;
pub mod counters;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod exec;
pub mod finding;
pub mod fp;
pub mod global_race;
pub mod ir;
pub mod lex;
pub mod lower;
pub mod mbarrier;
pub mod mem;
pub mod memory;
pub mod parse;
pub mod profile;
pub mod regdef;
mod state;
pub mod syntax;
pub mod tensor;
pub mod tma;
pub mod warp;

#[cfg(feature = "cli")]
pub mod run_cli;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use counters::Counters;
pub use engine::{Emulator, EmulatorOptions, LaunchDims, LaunchRecord, ModuleLibrary, Param, ParamBytes};
pub use error::{Error, Result};
pub use finding::{Finding, FindingKind};

/// Parses and lowers a PTX module (no caching).
pub fn parse_module(name: &str, ptx: &str) -> Result<ir::Module> {
    parse::parse_module(name, ptx).map_err(|(line, msg)| Error::PtxParse {
        module: name.to_string(),
        line: line as usize,
        msg,
    })
}

/// Parses a module once per process (keyed by name and text) and shares the result.
pub fn cached_module(name: &str, ptx: &str) -> Result<Arc<ir::Module>> {
    use std::hash::{Hash, Hasher};
    type ModuleKey = (String, u64, usize);
    static CACHE: OnceLock<Mutex<HashMap<ModuleKey, Arc<ir::Module>>>> = OnceLock::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ptx.hash(&mut h);
    let key = (name.to_string(), h.finish(), ptx.len());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(m) = cache.lock().map_err(|_| Error::Emulator("module cache poisoned".into()))?.get(&key) {
        return Ok(m.clone());
    }
    let m = Arc::new(parse_module(name, ptx)?);
    cache.lock().map_err(|_| Error::Emulator("module cache poisoned".into()))?.insert(key, m.clone());
    Ok(m)
}

/// The examples of docs/emu-api.md, run as doc tests (only under `cargo test --doc`, so the
/// packaged crate does not need the file).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/emu-api.md")]
pub struct EmuApiDoc;
