//! PTX emulator: parse -> IR -> execute blocks/warps, with sanitizers and counters.
//!
//! Layers: [`lex`]/[`parse`]/[`lower`] turn PTX text into the slot-based IR of [`ir`] (once per module,
//! cached); [`cfg`] computes branch reconvergence points; [`exec`] runs a launch (blocks in
//! parallel, warps in lockstep), with [`alu`]/[`fp`] for arithmetic, [`mem`] for memory
//! instructions and sanitizers, [`warp`] for warp-wide instructions; [`memory`] is the
//! allocation-aware global memory; [`counters`] the per-launch statistics; [`cli`] the
//! research command line. The backend is `crate::device::emulator::EmulatorBackend`.
pub mod alu;
pub mod cfg;
pub mod cli;
pub mod counters;
pub mod exec;
pub mod fp;
pub mod ir;
pub mod lex;
pub mod lower;
pub mod mem;
pub mod memory;
pub mod parse;
pub mod warp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use counters::Counters;

use crate::error::{Error, Result};

/// Parses and lowers a PTX module (no caching).
pub fn parse_module(name: &str, ptx: &str) -> Result<ir::Module> {
    parse::parse_module(name, ptx).map_err(|(line, msg)| Error::PtxParse { module: name.to_string(), line: line as usize, msg })
}

/// Parses a module once per process (keyed by name and text) and shares the result.
pub fn cached_module(name: &str, ptx: &str) -> Result<Arc<ir::Module>> {
    use std::hash::{Hash, Hasher};
    static CACHE: OnceLock<Mutex<HashMap<(String, u64, usize), Arc<ir::Module>>>> = OnceLock::new();
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
