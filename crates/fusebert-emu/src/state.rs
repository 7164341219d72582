//! The state a launch runs on, shared by the scheduler ([`crate::exec`]), the memory
//! instructions and sanitizers ([`crate::mem`]) and the warp-wide instructions
//! ([`crate::warp`]): the launch, its blocks and warps, the shared-memory shadow words and
//! the helpers that locate an error. It depends on none of them, so they do not depend on each
//! other.
use super::counters::Counters;
use super::ir::*;
use super::memory::AllocView;
use crate::error::Error;
use crate::finding::{Finding, FindingKind};

pub const FULL: u32 = 0xffff_ffff;
/// Entries of `Block::alloc_hint`.
pub const ALLOC_HINTS: usize = 64;

/// Switches of one launch (from `EmulatorOptions`).
#[derive(Debug, Clone)]
pub struct ExecOpts {
    pub bounds: bool,
    pub races: bool,
    pub uninit: bool,
    pub align: bool,
    pub collectives: bool,
    pub step_limit: u64,
    pub serial: bool,
    /// Approximate math: exact or anywhere in the ISA's error bound.
    pub math: super::arch::MathMode,
    /// Floating-point `mma` accumulation model.
    pub tensor: super::arch::TensorAccum,
    /// Per-class instruction time (`crate::profile`).
    pub profile: bool,
    /// When asynchronous copies land.
    pub async_mode: super::arch::AsyncMode,
    /// Blocks a co-scheduled launch keeps resident at once (`exec::resident`); 0: as many as
    /// the architecture's SMs hold.
    pub resident_blocks: u32,
    /// The architecture's per-SM limits.
    pub sm: super::arch::SmLimits,
}

/// Everything a launch shares between its blocks (read-only).
pub struct Launch<'a> {
    pub module: &'a Module,
    pub kernel: &'a Kernel,
    pub view: &'a AllocView<'a>,
    pub params: &'a [u8],
    pub const_bank: &'a [u8],
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub dyn_smem: u32,
    pub global_var_base: u64,
    pub opts: ExecOpts,
    // derived
    pub dyn_off: u32,
    pub smem_total: u32,
    pub nthreads: u32,
    pub nwarps: u32,
    pub template: Vec<u64>,
    pub classes: Vec<u8>,
    /// Register operands per instruction, when reads of undefined registers are checked.
    pub reg_use: Option<super::regdef::RegUse>,
    /// Whether plain global stores are recorded for the cross-block write-write check.
    pub global_ww: bool,
    /// Global stores and memory-changing atomics so far, plus blocks started and finished: a
    /// co-scheduled launch (exec/resident.rs) whose count stands still while every resident
    /// block polls is deadlocked.
    pub epoch: std::sync::atomic::AtomicU64,
    /// The launch runs co-scheduled (exec/resident.rs): the kernel polls global memory.
    pub coscheduled: bool,
    /// The recorded stores of every finished block.
    pub global_writes: std::sync::Mutex<Vec<super::global_race::Written>>,
    /// S17: generic global writes not yet proxy-fenced (kernels that issue TMA loads only).
    pub(crate) proxy_writes: Option<std::sync::Mutex<super::async_proxy::ProxyWrites>>,
    /// Allocation hints learnt by the blocks so far (each block starts from them).
    pub alloc_hints: [std::sync::atomic::AtomicU32; ALLOC_HINTS],
    /// The blocks' per-class profile (when profiling).
    pub profile: std::sync::Mutex<super::profile::Profile>,
    /// Text printed by device printf during this launch.
    pub printed: std::sync::Mutex<String>,
}

impl Launch<'_> {
    /// ", file.cu:line" for a `.loc` index, when the PTX has line info.
    pub fn cu_loc_of(&self, loc: u32) -> String {
        self.cu_location(loc).map(|c| format!(", {c}")).unwrap_or_default()
    }

    /// "file.cu:line" for a `.loc` index, when the PTX has line info.
    pub fn cu_location(&self, loc: u32) -> Option<String> {
        if loc == NONE {
            return None;
        }
        let (f, line) = self.kernel.locs[loc as usize];
        let file = self.module.files.get(&f).map(|s| s.as_str()).unwrap_or("?");
        Some(format!("{file}:{line}"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WState {
    Run,
    Bar,
    /// Waiting at `barrier.cluster.wait` for the cluster's barrier phase to complete.
    ClusterWait,
    Done,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub(crate) pc: u32,
    pub(crate) mask: u32,
    pub(crate) rpc: u32,
}

/// An active device-function call: what to restore on return.
pub(crate) struct CallRec {
    pub(crate) mask: u32,
    pub(crate) list: u32,
    pub(crate) saved_retmask: u32,
    pub(crate) regs: Vec<u64>,
    pub(crate) local: Vec<u8>,
}

/// `ShWord::pending` values: a copy in flight; one in flight that a `cp.async.wait_group` of
/// its thread passed over because it was never committed; one whose thread exited before
/// waiting for it (landed, but unordered for every other thread).
pub(crate) const CP_IN_FLIGHT: u8 = 1;
pub(crate) const CP_UNCOMMITTED: u8 = 2;
pub(crate) const CP_ORPHAN: u8 = 3;

/// A pending cp.async copy of one lane.
pub(crate) struct CpPending {
    pub(crate) lane: u8,
    pub(crate) group: u32,
    pub(crate) dst: u32,
    pub(crate) len: u8,
    pub(crate) data: [u8; 16],
}

pub(crate) struct Warp {
    pub id: u32,
    pub regs: Vec<u64>,
    /// Per register slot (below `Kernel::nregs`), the lanes that wrote it (empty when unchecked).
    pub def: Vec<u32>,
    pub(crate) stack: Vec<Frame>,
    /// Lanes that exist (partial last warp).
    pub valid: u32,
    pub exited: u32,
    /// Lanes that returned from the device function being executed (until the call ends).
    pub(crate) retmask: u32,
    pub(crate) calls: Vec<CallRec>,
    pub(crate) state: WState,
    pub(crate) steps: u64,
    /// `steps` at this warp's last `bar.warp.sync` (or 0): shared accesses by different lanes
    /// after it are unordered until the next one (intra-warp race checking).
    pub(crate) sync_step: u64,
    pub(crate) pending: Vec<CpPending>,
    /// cp.async groups each lane committed so far (groups are per thread in the ISA: a
    /// commit on some lanes must not close the other lanes' copies).
    pub(crate) committed: [u32; 32],
    /// The async-event count (`MbarTable::events`) when this warp's last mbarrier wait failed,
    /// or `NOT_SPINNING`: a warp whose wait failed with nothing changed since cannot progress.
    pub(crate) spin: u64,
    /// (pc, async-event count) of this warp's last failed `test_wait`: failing again there with
    /// nothing changed is a spin loop (a first failure may be a non-blocking probe).
    pub(crate) test_fail: (u32, u64),
    /// A wgmma of this warp is in flight, or a `wgmma.fence` awaits its `wait_group`: the
    /// warp's instructions are checked against its wgmma registers (exec/wgmma.rs).
    pub(crate) wg_inflight: bool,
    // barrier arrival
    pub(crate) bar_id: u32,
    pub(crate) bar_count: u32,
    pub(crate) bar_pc: u32,
    pub(crate) bar_pred: u32,
    /// Lanes that passed `barrier.cluster.arrive` and not yet the matching `wait`.
    pub(crate) cl_arrived: u32,
    /// Per lane, the cluster barrier phase its pending arrival belongs to.
    pub(crate) cl_phase: [u32; 32],
    /// Global polling (exec/resident.rs): the warp repeated a poll (a strong load or a failed
    /// `atom.cas`) that saw nothing new, so it waits for another block's store.
    pub(crate) poll: PollState,
}

/// A warp's recent global polls: a poll is a digest of (PTX line, addresses, values read);
/// the same digest again with no store of the warp in between is a spin that waits for
/// another block.
#[derive(Clone, Copy, Default)]
pub(crate) struct PollState {
    /// The last few digests (a spin loop may poll several words per iteration).
    pub(crate) seen: [u64; 4],
    pub(crate) next: u8,
    /// `stores` when `seen` was last cleared.
    pub(crate) stores_at: u64,
    /// Stores and atomics of the warp so far.
    pub(crate) stores: u64,
    /// Parked: the warp spins; it runs again when a global store happens (`Launch::epoch`) or
    /// at its block's next turn.
    pub(crate) parked: bool,
    /// `Launch::epoch` when it parked, and the PTX line of the repeated poll.
    pub(crate) epoch: u64,
    pub(crate) line: u32,
}

impl PollState {
    /// Notes a poll's digest; returns whether it repeats one seen since the warp's last store.
    pub(crate) fn repeats(&mut self, digest: u64) -> bool {
        if self.stores != self.stores_at {
            self.seen = [0; 4];
            self.stores_at = self.stores;
        }
        let digest = digest | 1; // (0 marks an empty entry)
        if self.seen.contains(&digest) {
            return true;
        }
        self.seen[self.next as usize % 4] = digest;
        self.next = self.next.wrapping_add(1);
        false
    }
}

/// Shadow state of one 4-byte shared word for the race / uninitialised / cp.async checkers.
/// Last writer and reader: block barrier epoch, warp, and for races between the lanes of one
/// warp the lane (`MULTI_LANES` when several, or unknown), the bytes touched and the warp's
/// instruction count (low 32 bits) at the access.
#[derive(Clone, Copy, Default)]
pub(crate) struct ShWord {
    pub w_epoch: u32,
    pub r_epoch: u32,
    pub w_step: u32,
    pub r_step: u32,
    pub w_warp: u16,
    pub r_warp: u16,
    pub w_lane: u8,
    pub r_lane: u8,
    pub w_bytes: u8,
    pub r_bytes: u8,
    pub init: u8,
    pub pending: u8,
}

pub(crate) struct Block<'l, 'a> {
    pub l: &'l Launch<'a>,
    pub ctaid: [u32; 3],
    pub shared: Vec<u8>,
    pub shadow: Vec<ShWord>,
    pub local: Vec<u8>,
    pub local_init: Vec<u8>,
    pub epoch: u32,
    pub c: Counters,
    pub last_alloc: usize,
    /// Per instruction (by PTX line, direct-mapped), the global allocation it hit last.
    pub alloc_hint: [u32; ALLOC_HINTS],
    pub clock: u64,
    /// Plain global stores of this block (cross-block write-write check).
    pub gw: super::global_race::BlockWrites,
    /// Threads that passed `bar.arrive` per barrier since its last completion.
    pub(crate) arrivals: [u32; 16],
    /// Warp instructions per class (`class::*`), folded into `c` when the block ends.
    pub(crate) class_count: [u64; 8],
    /// Per-class ticks and instruction counts, when profiling.
    pub(crate) prof: Option<Box<super::profile::BlockProfile>>,
    pub(crate) warps: Vec<Warp>,
    /// mbarriers, TMA copies in flight and the async-proxy checks (kernels that use them).
    pub(crate) hop: Option<Box<super::async_proxy::HopState>>,
    /// The cluster this CTA belongs to and its rank, for kernels that use clusters
    /// (`exec/cluster.rs`).
    pub(crate) cl: Option<super::exec::cluster::ClusterRef>,
    /// The block's last turn in a co-scheduled launch ended on its time slice (it can go on),
    /// not because every warp waits (exec/resident.rs).
    pub(crate) sliced: bool,
}

/// Location of a resolved memory access.
#[derive(Clone, Copy)]
pub(crate) enum Loc {
    Global(*mut u8),
    Shared(u32),
    Local(u32),
    Const(u32),
    Param(u32),
}

macro_rules! lanes {
    ($mask:expr, $l:ident, $body:block) => {{
        let mut __m: u32 = $mask;
        while __m != 0 {
            let $l = __m.trailing_zeros() as usize;
            __m &= __m - 1;
            $body
        }
    }};
}
pub(crate) use lanes;

impl Block<'_, '_> {
    /// ", file.cu:line" for an instruction, when the PTX has line info.
    pub fn cu_loc(&self, i: &Inst) -> String {
        self.l.cu_loc_of(i.loc)
    }

    /// Thread index (x, y, z) of lane `l` of warp `w`.
    pub fn thread_of(&self, w: &Warp, l: usize) -> [u32; 3] {
        thread_index(self.l.block, w.id, l)
    }

    /// A located finding: kernel, block, thread (or the warp when no lane is to blame), PTX
    /// line, .cu line. Traps and unsupported instructions are emulator errors, the rest
    /// sanitizer findings.
    pub fn err(&self, w: &Warp, lane: Option<usize>, i: &Inst, kind: FindingKind, msg: String) -> Error {
        let finding = Finding {
            kind,
            kernel: self.l.kernel.name.clone(),
            module: self.l.module.name.clone(),
            block: (self.ctaid[0], self.ctaid[1], self.ctaid[2]),
            thread: lane.map(|l| {
                let t = self.thread_of(w, l);
                (t[0], t[1], t[2])
            }),
            warp: Some(w.id),
            ptx_line: Some(i.line),
            cu_location: self.l.cu_location(i.loc),
            detail: msg,
        };
        match kind {
            FindingKind::Unsupported | FindingKind::Trap => Error::Emulator(finding.to_string()),
            _ => finding.into(),
        }
    }

    /// Completes pending cp.async copies selected by `pick`: data lands in shared memory and
    /// counts as a write by this warp in the current barrier interval. `orphan`: the issuing
    /// thread exited without waiting, so the words stay flagged for every later access.
    pub(crate) fn complete_cp(&mut self, w: &mut Warp, pick: impl Fn(&CpPending) -> bool, orphan: bool) {
        let mut keep = Vec::new();
        for p in std::mem::take(&mut w.pending) {
            if !pick(&p) {
                keep.push(p);
                continue;
            }
            let off = p.dst as usize;
            self.shared[off..off + p.len as usize].copy_from_slice(&p.data[..p.len as usize]);
            // PTX ISA 9.7.9.25.3.1 (cp.async): "cp.async is treated as a weak memory operation
            // performed in the generic proxy"; 9.7.9.25.2 (Async Proxy): accessing the same
            // location across proxies needs `fence.proxy.async`. So the landed bytes are
            // generic writes of the issuing thread, unfenced for wgmma / TMA stores (S3) until
            // that thread's `fence.proxy.async` after its wait.
            if let Some(h) = self.hop.as_deref_mut() {
                h.generic_write(w.id * 32 + p.lane as u32, p.dst, p.dst + p.len as u32);
            }
            if !self.shadow.is_empty() {
                for word in (off / 4)..(off + p.len as usize).div_ceil(4) {
                    let s = &mut self.shadow[word];
                    s.pending = if orphan { CP_ORPHAN } else { 0 };
                    s.init = 0xf;
                    s.w_epoch = self.epoch;
                    s.w_warp = w.id as u16;
                    s.w_lane = MULTI_LANES;
                }
            }
        }
        w.pending = keep;
    }
}

/// Thread index (x, y, z) of lane `l` of warp `warp` in a block of `dims` threads.
pub fn thread_index(dims: (u32, u32, u32), warp: u32, l: usize) -> [u32; 3] {
    let lin = warp * 32 + l as u32;
    [lin % dims.0, (lin / dims.0) % dims.1, lin / (dims.0 * dims.1)]
}

pub(crate) const MULTI_READERS: u16 = 0xffff;
/// `ShWord::{w,r}_lane` when several lanes (or an atomic, or cp.async) touched the word.
pub(crate) const MULTI_LANES: u8 = 0xff;

impl Warp {
    pub(crate) fn pending_mut(&mut self) -> &mut Vec<CpPending> {
        &mut self.pending
    }
}

impl CpPending {
    pub(crate) fn new(lane: u8, group: u32, dst: u32, len: u8, data: [u8; 16]) -> Self {
        CpPending { lane, group, dst, len, data }
    }
}

/// `Warp::spin` of a warp that is not waiting on an mbarrier.
pub(crate) const NOT_SPINNING: u64 = u64::MAX;

impl Warp {
    /// The cp.async group lane `l`'s next copies join.
    pub(crate) fn committed(&self, l: usize) -> u32 {
        self.committed[l]
    }
    /// `cp.async.commit_group` by the lanes in `mask`.
    pub(crate) fn commit(&mut self, mask: u32) {
        lanes!(mask, l, {
            self.committed[l] += 1;
        });
    }
    /// Whether a `wait_group n` by the lanes in `mask` completes any copy.
    pub(crate) fn any_waited(&self, mask: u32, n: u32) -> bool {
        self.pending.iter().any(|p| cp_waited(p, mask, n, &self.committed))
    }
    /// Destination ranges (shared offset, bytes) of this warp's copies of the lanes in `mask`
    /// that are not yet committed.
    pub(crate) fn uncommitted(&self, mask: u32) -> Vec<(u32, u32)> {
        self.pending
            .iter()
            .filter(|p| p.group >= self.committed[p.lane as usize] && mask >> p.lane & 1 != 0)
            .map(|p| (p.dst, p.len as u32))
            .collect()
    }
}

/// Whether `cp.async.wait_group n` executed by the lanes in `mask` completes copy `p`: the
/// copy's own thread waits, and at most `n` of that thread's newer groups stay pending.
pub(crate) fn cp_waited(p: &CpPending, mask: u32, n: u32, committed: &[u32; 32]) -> bool {
    mask >> p.lane & 1 != 0 && p.group + n < committed[p.lane as usize]
}
