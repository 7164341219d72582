//! A block's asynchronous-proxy state (sm_90): its mbarriers, the TMA copies in flight, the
//! shared ranges those copies own until the reader may touch them, TMA-store bulk groups,
//! generic writes not yet ordered for the async proxy by `fence.proxy.async`, the warpgroup
//! `setmaxnreg` record, and each warp's wgmma state (operations in flight, their registers,
//! the registers written since the last `wgmma.fence`). Only kernels that use these features have one
//! ([`crate::ir::Kernel::uses_async`]), so the other kernels pay nothing.
use std::collections::{HashMap, VecDeque};

use crate::arch::AsyncMode;
use crate::mbarrier::MbarTable;
use crate::tma::Swizzle;
use std::sync::Mutex;

/// `fence.proxy.async` and `fence.mbarrier_init` as `Inst::sub` of `Op::FenceProxyAsync`:
/// which state spaces they order between the generic and the async proxy.
pub(crate) mod fence {
    /// `fence.proxy.async` (every state space).
    pub const ALL: u8 = 0;
    /// `fence.proxy.async.shared::cta` / `.shared::cluster`.
    pub const SHARED: u8 = 1;
    /// `fence.proxy.async.global`.
    pub const GLOBAL: u8 = 2;
    /// `fence.mbarrier_init.release.cluster`: orders the thread's prior `mbarrier.init`s only.
    pub const MBAR_INIT: u8 = 3;
}

/// S17, per launch: global words written through the generic proxy (plain stores, atomics) and
/// not yet followed by a `fence.proxy.async{.global}` of the writing thread. A TMA load that
/// reads one of them may see stale data (split-K / stream-K partials read back by TMA); a TMA
/// store that overwrites one races with it (PTX ISA 9.7.9.25.2, Async Proxy: accessing the
/// same location across proxies needs a cross-proxy fence), and once performed leaves async-
/// proxy bytes there (the record is cleared). Only kept for kernels that issue TMA (or bulk)
/// loads.
#[derive(Default)]
pub(crate) struct ProxyWrites {
    /// word address (byte address / 4) -> (writer, PTX line of the write, bytes written mask)
    words: std::collections::HashMap<u64, (u64, u32, u8)>,
    /// writer -> the words it wrote since its last fence
    by_writer: std::collections::HashMap<u64, Vec<u64>>,
}

/// A thread of the grid as a writer: block linear index and thread index in the block.
pub(crate) fn writer_id(block: u64, thread: u32) -> u64 {
    block << 32 | thread as u64
}

impl ProxyWrites {
    pub fn new_shared() -> Mutex<ProxyWrites> {
        Mutex::new(ProxyWrites::default())
    }

    /// A generic write of `size` bytes at `addr` by `writer` (PTX line `line`).
    pub fn write(&mut self, writer: u64, addr: u64, size: u32, line: u32) {
        let (lo, hi) = (addr, addr + size as u64);
        for word in lo / 4..hi.div_ceil(4) {
            let first = (lo.max(word * 4) - word * 4) as u8;
            let last = (hi.min(word * 4 + 4) - word * 4) as u8;
            let mask = ((1u16 << last) - (1u16 << first)) as u8;
            let e = self.words.entry(word).or_insert((writer, line, 0));
            if e.0 != writer {
                *e = (writer, line, 0);
            }
            e.1 = line;
            e.2 |= mask;
            self.by_writer.entry(writer).or_default().push(word);
        }
    }

    /// `fence.proxy.async{.global}` by `writer`: its writes so far are ordered for the async proxy.
    pub fn fence(&mut self, writer: u64) {
        for word in self.by_writer.remove(&writer).unwrap_or_default() {
            if self.words.get(&word).is_some_and(|e| e.0 == writer) {
                self.words.remove(&word);
            }
        }
    }

    /// An async-proxy write (a TMA store) of [addr, addr + size): those bytes now hold what the
    /// async proxy wrote, so no generic write is left unfenced under them.
    pub fn overwritten(&mut self, addr: u64, size: u64) {
        if self.words.is_empty() {
            return;
        }
        let (lo, hi) = (addr, addr + size);
        for word in lo / 4..hi.div_ceil(4) {
            let first = (lo.max(word * 4) - word * 4) as u8;
            let last = (hi.min(word * 4 + 4) - word * 4) as u8;
            let mask = ((1u16 << last) - (1u16 << first)) as u8;
            if let Some(e) = self.words.get_mut(&word) {
                e.2 &= !mask;
                if e.2 == 0 {
                    self.words.remove(&word);
                }
            }
        }
    }

    /// The first byte of [addr, addr + size) written and not fenced: (byte address, writer, line).
    pub fn unfenced(&self, addr: u64, size: u64) -> Option<(u64, u64, u32)> {
        if self.words.is_empty() {
            return None;
        }
        (addr..addr + size).find_map(|b| {
            let &(writer, line, mask) = self.words.get(&(b / 4))?;
            (mask >> (b % 4) & 1 != 0).then_some((b, writer, line))
        })
    }
}

/// Where an asynchronous operation was issued (for its reports).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Site {
    pub pc: u32,
    pub warp: u32,
    pub lane: u8,
}

/// A TMA tile load issued and not yet landed: the box's bytes in shared (unswizzled) order.
pub(crate) struct TmaLoad {
    /// Shared offset of the box (before swizzling).
    pub dst: u32,
    pub data: Vec<u8>,
    pub swizzle: Swizzle,
    /// Shared offset of the mbarrier the bytes complete on.
    pub mbar: u32,
    /// That barrier's phase when the copy was issued (the phase its bytes are for).
    pub phase: u32,
    pub site: Site,
    /// Index of its guard in `HopState::guards`' id space.
    pub guard: u64,
}

/// A TMA tile store issued by one thread: performed (source read, in-bounds elements written)
/// when its thread's `cp.async.bulk.wait_group` covers its group, or at block exit.
pub(crate) struct TmaStore {
    pub thread: u32,
    pub group: u32,
    pub src: u32,
    pub swizzle: Swizzle,
    pub esize: u32,
    /// (unswizzled byte offset in the box, global destination) of the in-bounds elements.
    pub elems: Vec<(u32, u64)>,
    pub site: Site,
    pub guard: u64,
}

/// One `wgmma.mma_async` of a warp, issued and not yet waited for: its result lands (its
/// operands are read) at the `wgmma.wait_group` that covers its group.
#[derive(Debug, Clone)]
pub(crate) struct WgOp {
    pub pc: u32,
    pub adesc: u64,
    pub bdesc: u64,
    pub scale_d: bool,
    pub group: u32,
    /// Guards over the shared ranges of A and B (`u64::MAX`: none, A from registers).
    pub guards: [u64; 2],
}

/// A warp's wgmma state: operations in flight, groups committed, whether a `wgmma.fence`
/// came since the last wait (or the start), the (pc, A, B descriptors) of every wgmma issued
/// (compared across the warpgroup), the accumulator and A-register slots in flight, and the
/// registers written since the last `wgmma.fence` (with the writing pc: S2).
#[derive(Debug, Default)]
pub(crate) struct WarpWgmma {
    pub ops: Vec<WgOp>,
    pub committed: u32,
    pub fenced: bool,
    pub issued: Vec<(u32, u64, u64)>,
    pub inflight: Vec<u32>,
    pub touched: Vec<(u32, u32)>,
}

/// Why a shared range may not be touched by generic loads and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardKind {
    /// The destination of a TMA load: in flight (`landed` false), or landed while the mbarrier
    /// phase it completes on (`phase`) has not completed yet.
    Load { mbar: u32, phase: u32, landed: bool },
    /// The source of a TMA store not yet covered by a `wait_group.read` of its thread.
    Store,
    /// An operand of a wgmma in flight (writes are hazards, reads are fine).
    Wgmma,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    pub id: u64,
    pub lo: u32,
    pub hi: u32,
    pub kind: GuardKind,
    pub site: Site,
}

/// The per-block state.
pub(crate) struct HopState {
    pub mbar: MbarTable,
    pub loads: VecDeque<TmaLoad>,
    pub stores: Vec<TmaStore>,
    /// Stores performed whose source guard stays until their thread's `wait_group{.read}` covers
    /// them: (thread, group, guard id). Reusing the source before the wait is a finding whatever
    /// the completion order (the hardware may be late).
    pub performed_unwaited: Vec<(u32, u32, u64)>,
    pub guards: Vec<Guard>,
    pub next_guard: u64,
    /// Bulk (TMA store) groups committed per thread.
    pub bulk_committed: Vec<u32>,
    /// Per shared word: 1 + the thread whose generic write is not yet followed by its
    /// `fence.proxy.async` (0: none).
    pub unfenced: Vec<u32>,
    /// Per (barrier, warp): the last phase a successful wait of that warp referred to.
    pub seen_phase: HashMap<(u32, u32), i64>,
    /// Per warp: the `setmaxnreg` instructions it executed (pc, count) in order.
    pub maxnreg: Vec<Vec<(u32, u32)>>,
    /// Per warp: its wgmma state.
    pub wg: Vec<WarpWgmma>,
    /// Per mbarrier: the last TMA (or bulk) load that delivered bytes to it (S8 reports).
    pub last_tx: HashMap<u32, Site>,
    pub rng: u64,
}

impl HopState {
    pub fn new(mode: AsyncMode, threads: u32, warps: u32, smem_bytes: u32, block_index: u64) -> Self {
        let seed = match mode {
            AsyncMode::Random(s) => s,
            _ => 0,
        };
        HopState {
            mbar: MbarTable::default(),
            loads: VecDeque::new(),
            stores: Vec::new(),
            performed_unwaited: Vec::new(),
            guards: Vec::new(),
            next_guard: 0,
            bulk_committed: vec![0; threads as usize],
            unfenced: vec![0; smem_bytes.div_ceil(4) as usize],
            seen_phase: HashMap::new(),
            maxnreg: vec![Vec::new(); warps as usize],
            wg: (0..warps).map(|_| WarpWgmma::default()).collect(),
            last_tx: HashMap::new(),
            // splitmix of seed and block: each block draws its own sequence
            rng: (seed ^ block_index.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
        }
    }

    /// A pseudo-random bit (xorshift64): the random completion order.
    pub fn coin(&mut self) -> bool {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x >> 63 != 0
    }

    pub fn add_guard(&mut self, lo: u32, hi: u32, kind: GuardKind, site: Site) -> u64 {
        let id = self.next_guard;
        self.next_guard += 1;
        self.guards.push(Guard { id, lo, hi, kind, site });
        id
    }

    /// Drops the guards of loads whose mbarrier phase has completed (or whose barrier is gone).
    pub fn lift_completed(&mut self) {
        let bars = &self.mbar.bars;
        self.guards.retain(|g| match g.kind {
            GuardKind::Load { mbar, phase, landed } => {
                !landed || bars.get(&mbar).is_some_and(|b| b.live && b.phase == phase)
            }
            GuardKind::Store | GuardKind::Wgmma => true,
        });
    }

    /// The guard over any byte of [lo, hi), if one.
    pub fn guard_over(&self, lo: u32, hi: u32) -> Option<Guard> {
        self.guards.iter().find(|g| g.lo < hi && lo < g.hi).copied()
    }

    /// Records generic writes of thread `t` to [lo, hi) as not yet proxy-fenced.
    pub fn generic_write(&mut self, t: u32, lo: u32, hi: u32) {
        for w in lo / 4..hi.div_ceil(4) {
            if let Some(x) = self.unfenced.get_mut(w as usize) {
                *x = t + 1;
            }
        }
    }

    /// `fence.proxy.async` by the threads in `threads` (a warp's executing lanes).
    pub fn fence(&mut self, first: u32, mask: u32) {
        for x in self.unfenced.iter_mut() {
            if *x != 0 {
                let t = *x - 1;
                if t >= first && t < first + 32 && mask >> (t - first) & 1 != 0 {
                    *x = 0;
                }
            }
        }
    }

    /// The first word of [lo, hi) written by the generic proxy and not fenced: (offset, thread).
    pub fn unfenced_in(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        (lo / 4..hi.div_ceil(4)).find_map(|w| match self.unfenced.get(w as usize) {
            Some(&x) if x != 0 => Some((w * 4, x - 1)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tma_store_clears_the_generic_writes_it_overwrites() {
        let mut pw = ProxyWrites::default();
        pw.write(writer_id(0, 3), 0x100, 16, 7);
        assert_eq!(pw.unfenced(0x100, 16), Some((0x100, writer_id(0, 3), 7)));
        // the store covers bytes 0x100..0x10a: the two whole words and half of the third go
        pw.overwritten(0x100, 10);
        assert_eq!(pw.unfenced(0x100, 10), None);
        assert_eq!(pw.unfenced(0x100, 16), Some((0x10a, writer_id(0, 3), 7)));
        pw.overwritten(0x10a, 6);
        assert_eq!(pw.unfenced(0x100, 16), None);
        // a later generic write is recorded again; the writer's fence still clears it
        pw.write(writer_id(0, 3), 0x104, 4, 9);
        assert_eq!(pw.unfenced(0x100, 16), Some((0x104, writer_id(0, 3), 9)));
        pw.fence(writer_id(0, 3));
        assert_eq!(pw.unfenced(0x100, 16), None);
    }
}
