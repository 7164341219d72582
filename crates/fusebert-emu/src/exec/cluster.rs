//! Thread block clusters (sm_90): the CTAs of a cluster (`.reqnctapercluster`, or any kernel
//! using `mapa`, `barrier.cluster` or `ld`/`st.shared::cluster`) run together on one host
//! thread, each until it has nothing left to do but wait for the others (hardware co-schedules
//! a cluster's CTAs the same way: all of them are resident at once). What is emulated:
//!
//! - Special registers `%cluster_ctarank`, `%cluster_nctarank`, `%clusterid`, `%nclusterid`,
//!   `%cluster_ctaid`, `%cluster_nctaid`, `%is_explicit_cluster`.
//! - `mapa.shared::cluster.u32 d, a, rank`: `a`'s address in the CTA of that rank, encoded as
//!   `CLUSTER_TAG | rank << 24 | offset` (a plain shared address names the CTA's own memory,
//!   as on hardware).
//! - `ld`/`st.shared::cluster` on such addresses: distributed shared memory. Bounds, alignment,
//!   uninitialised words (the owner's shadow) and the owner having exited (its shared memory
//!   is gone: PTX ISA, "a CTA must not exit while others may access its shared memory") are
//!   checked per lane.
//! - `barrier.cluster.arrive{.release,.relaxed}{.aligned}` / `barrier.cluster.wait{.acquire}
//!   {.aligned}`: a phase completes when every thread of the cluster that has not exited has
//!   arrived; a wait passes once the phase of the thread's arrival has completed, and starts a
//!   new interval for the CTA's own shared-race checks (between warps and between the lanes of
//!   a warp), as `bar.sync` does. A second
//!   arrive before the wait, and a wait without an arrive, are findings.
//! - The CTAs of a cluster take turns in rank order (lazy, eager completion) or in a seeded
//!   rotation of it (random completion).
//! - Races across CTAs (with the race sanitizer): every word of every CTA's shared memory
//!   remembers the cluster-barrier interval of its last write and reads, and by which rank. A
//!   read of a word another CTA wrote in the same interval, or a write of a word another CTA
//!   read or wrote in it, is a `SharedRace` (nothing orders the two but `barrier.cluster`).
//!   A thread between its arrive and its wait belongs to both intervals. Accesses through the
//!   async proxy (TMA, wgmma) are not part of this check.
//!
//! Not emulated: multicast TMA, remote mbarrier arrivals (`mbarrier.arrive.shared::cluster`
//! on a peer), `mapa` on generic addresses, `fence.acq_rel.cluster` as a separate ordering
//! point (only `barrier.cluster` orders peers here).
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::{Counters, Flow};
use crate::arch::AsyncMode;
use crate::error::Error;
use crate::finding::{Finding, FindingKind};
use crate::ir::*;
use crate::state::*;

type R<T> = Result<T, Error>;

/// Bit of a `mapa` result: a shared::cluster address naming a CTA by rank.
pub(crate) const CLUSTER_TAG: u32 = 1 << 30;
const RANK_SHIFT: u32 = 24;
const OFF_MASK: u32 = (1 << RANK_SHIFT) - 1;

/// Whether the kernel's CTAs run as clusters: a declared cluster shape, or any cluster
/// instruction (a cluster of one CTA then).
pub(crate) fn uses_clusters(k: &Kernel) -> bool {
    k.cluster.is_some() || k.insts.iter().any(|i| matches!(i.op, Op::Mapa | Op::ClusterBar) || i.has(fl::CLUSTER))
}

/// CTAs per cluster.
pub(crate) fn ranks(k: &Kernel) -> u32 {
    let c = k.cluster.unwrap_or((1, 1, 1));
    c.0 * c.1 * c.2
}

/// `%cluster_ctarank` of the CTA at `ctaid` in clusters of shape `cd`.
pub(crate) fn rank_of(ctaid: [u32; 3], cd: (u32, u32, u32)) -> u32 {
    ctaid[0] % cd.0 + cd.0 * (ctaid[1] % cd.1 + cd.1 * (ctaid[2] % cd.2))
}

/// The (rank, offset) a shared::cluster address names; a plain shared address is `own`'s.
fn decode(addr: u32, own: u32) -> (u32, u32) {
    if addr & CLUSTER_TAG != 0 {
        ((addr & !CLUSTER_TAG) >> RANK_SHIFT, addr & OFF_MASK)
    } else {
        (own, addr)
    }
}

/// One 4-byte word's cluster-race record: the last write's interval (+1; 0: never) and rank,
/// the latest read interval (+1) and the ranks that read in it.
#[derive(Clone, Copy, Default)]
struct DsWord {
    w_hi: u32,
    r_hi: u32,
    w_rank: u8,
    r_mask: u16,
}

/// A CTA's shared memory and its shadow, for its peers' accesses.
#[derive(Clone, Copy)]
struct RankMem {
    shared: *mut u8,
    len: usize,
    shadow: *mut ShWord,
    shadow_len: usize,
}

/// The state a cluster's CTAs share: the barrier and every CTA's shared memory.
pub(crate) struct ClusterCtx {
    ranks: u32,
    /// Completed `barrier.cluster` phases.
    phase: Cell<u32>,
    /// Threads arrived in the current phase.
    arrived: Cell<u32>,
    /// Threads of the cluster that have not exited.
    live: Cell<u32>,
    mem: Vec<Cell<Option<RankMem>>>,
    exited: Vec<Cell<bool>>,
    /// Per rank, per word (race sanitizer only).
    words: Option<Vec<RefCell<Vec<DsWord>>>>,
}

/// A CTA's handle on its cluster.
pub(crate) struct ClusterRef {
    ctx: Rc<ClusterCtx>,
    rank: u32,
    /// The cluster barrier phase up to which this CTA's shared-race interval has advanced.
    seen_phase: u32,
}

impl ClusterRef {
    pub(crate) fn rank(&self) -> u32 {
        self.rank
    }
}

impl ClusterCtx {
    fn new(ranks: u32, threads: u32, smem: u32, races: bool) -> Self {
        ClusterCtx {
            ranks,
            phase: Cell::new(0),
            arrived: Cell::new(0),
            live: Cell::new(ranks * threads),
            mem: (0..ranks).map(|_| Cell::new(None)).collect(),
            exited: (0..ranks).map(|_| Cell::new(false)).collect(),
            words: races.then(|| {
                (0..ranks).map(|_| RefCell::new(vec![DsWord::default(); smem.div_ceil(4) as usize])).collect()
            }),
        }
    }

    /// Completes the phase once every live thread has arrived.
    fn try_complete(&self) {
        if self.arrived.get() > 0 && self.arrived.get() >= self.live.get() {
            self.phase.set(self.phase.get() + 1);
            self.arrived.set(0);
        }
    }
}

impl<'a> Launch<'a> {
    /// Runs cluster `c` (clusters numbered like blocks, x fastest): its CTAs in turn, each
    /// until it is done or waits for the others, until all are done; a round in which no
    /// barrier phase completes, no thread arrives and no CTA finishes is a deadlock.
    pub(crate) fn run_cluster(&self, c: u64) -> R<Counters> {
        self.guarded(&format!(" cluster {c}"), || self.run_cluster_inner(c))
    }

    fn run_cluster_inner(&self, c: u64) -> R<Counters> {
        let cd = self.kernel.cluster.unwrap_or((1, 1, 1));
        let n = cd.0 * cd.1 * cd.2;
        let (ncx, ncy) = ((self.grid.0 / cd.0) as u64, (self.grid.1 / cd.1) as u64);
        let cc = [(c % ncx) as u32, ((c / ncx) % ncy) as u32, (c / (ncx * ncy)) as u32];
        let ctx = Rc::new(ClusterCtx::new(n, self.nthreads, self.smem_total, self.opts.races));
        let mut blocks: Vec<Block> = (0..n)
            .map(|r| {
                let rc = [r % cd.0, (r / cd.0) % cd.1, r / (cd.0 * cd.1)];
                Block::new(self, [cc[0] * cd.0 + rc[0], cc[1] * cd.1 + rc[1], cc[2] * cd.2 + rc[2]])
            })
            .collect();
        for (r, b) in blocks.iter_mut().enumerate() {
            ctx.mem[r].set(Some(RankMem {
                shared: b.shared.as_mut_ptr(),
                len: b.shared.len(),
                shadow: b.shadow.as_mut_ptr(),
                shadow_len: b.shadow.len(),
            }));
            b.cl = Some(ClusterRef { ctx: ctx.clone(), rank: r as u32, seen_phase: 0 });
        }
        let mut done = vec![false; n as usize];
        loop {
            let state = |d: &[bool]| (ctx.phase.get(), ctx.arrived.get(), d.iter().filter(|&&x| x).count());
            let before = state(&done);
            for k in 0..n as usize {
                // in random completion the CTAs also take turns in a seeded rotating order, so
                // that no interleaving of a cluster's CTAs is the only one ever checked
                let r = match self.opts.async_mode {
                    AsyncMode::Random(seed) => (k + (seed as usize).wrapping_add(c as usize)) % n as usize,
                    _ => k,
                };
                if !done[r] && blocks[r].run()? {
                    done[r] = true;
                    ctx.exited[r].set(true);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            if state(&done) == before {
                let waiting: Vec<usize> = (0..n as usize).filter(|&r| !done[r]).collect();
                let b = &blocks[waiting[0]];
                return Err(Finding {
                    kind: FindingKind::Deadlock,
                    kernel: self.kernel.name.clone(),
                    module: self.module.name.clone(),
                    block: (b.ctaid[0], b.ctaid[1], b.ctaid[2]),
                    thread: None,
                    warp: None,
                    ptx_line: None,
                    cu_location: None,
                    detail: format!(
                        "barrier.cluster phase {} never completes: {} of the cluster's {} live threads arrived; \
                         CTA ranks {waiting:?} wait (a CTA skipped the cluster barrier, or waits at a block \
                         barrier the others cannot reach)",
                        ctx.phase.get(),
                        ctx.arrived.get(),
                        ctx.live.get()
                    ),
                }
                .into());
            }
        }
        let mut total = Counters::default();
        for b in blocks.iter_mut() {
            total.add(&self.finish_block(b));
        }
        Ok(total)
    }
}

impl Block<'_, '_> {
    fn cluster(&self) -> Option<(Rc<ClusterCtx>, u32)> {
        self.cl.as_ref().map(|c| (c.ctx.clone(), c.rank))
    }

    /// `mapa` and `barrier.cluster` for the lanes in `mask` (not empty).
    pub(super) fn cluster_op(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32, active: u32) -> R<Flow> {
        let Some((ctx, _)) = self.cluster() else {
            return Err(self.err(w, None, i, FindingKind::Unsupported, "cluster instruction outside a cluster".into()));
        };
        if i.op == Op::Mapa {
            lanes!(mask, l, {
                let a = w.regs[i.s[0] as usize * 32 + l] as u32;
                let r = w.regs[i.s[1] as usize * 32 + l] as u32;
                let off = if a & CLUSTER_TAG != 0 { a & OFF_MASK } else { a };
                if r >= ctx.ranks {
                    return Err(self.err(
                        w,
                        Some(l),
                        i,
                        FindingKind::OutOfBounds,
                        format!("mapa to CTA rank {r}: the cluster has {} CTAs", ctx.ranks),
                    ));
                }
                if off as usize >= self.shared.len() {
                    return Err(self.err(
                        w,
                        Some(l),
                        i,
                        FindingKind::OutOfBounds,
                        format!(
                            "mapa of shared address {a:#x}: the CTA's shared memory is {} bytes",
                            self.shared.len()
                        ),
                    ));
                }
                w.regs[i.d[0] as usize * 32 + l] = (CLUSTER_TAG | r << RANK_SHIFT | off) as u64;
            });
            return Ok(Flow::Next);
        }
        let live = w.valid & !w.exited;
        if !i.has(fl::UNALIGNED) && mask != live && mask != active {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::DivergentBarrier,
                format!("barrier.cluster.*.aligned reached by lanes {mask:#010x} of the warp while its live lanes are {live:#010x}"),
            ));
        }
        let phase = ctx.phase.get();
        if i.sub == 0 {
            // arrive
            if w.cl_arrived & mask != 0 {
                let l = (w.cl_arrived & mask).trailing_zeros() as usize;
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::BadBarrier,
                    "barrier.cluster.arrive twice without a barrier.cluster.wait in between".into(),
                ));
            }
            lanes!(mask, l, {
                w.cl_phase[l] = phase;
            });
            w.cl_arrived |= mask;
            ctx.arrived.set(ctx.arrived.get() + mask.count_ones());
            ctx.try_complete();
            self.c.barriers += 1;
            return Ok(Flow::Next);
        }
        // wait
        if mask & !w.cl_arrived != 0 {
            let l = (mask & !w.cl_arrived).trailing_zeros() as usize;
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::BadBarrier,
                "barrier.cluster.wait without a barrier.cluster.arrive before it".into(),
            ));
        }
        if Self::cluster_passed(w, mask, phase) {
            w.cl_arrived &= !mask;
            // a cluster barrier orders every thread of the cluster, so also the threads of this
            // CTA and of this warp: a new barrier interval for the block's and the warp's
            // shared-race checks (as bar.sync / bar.warp.sync start one)
            w.sync_step = w.steps;
            if let Some(cl) = self.cl.as_mut() {
                if cl.seen_phase < phase {
                    cl.seen_phase = phase;
                    self.epoch += 1;
                }
            }
            return Ok(Flow::Next);
        }
        w.state = WState::ClusterWait;
        w.bar_pc = pc;
        w.stack.last_mut().unwrap().pc = pc;
        Ok(Flow::Wait)
    }

    /// Whether the phases the lanes in `mask` arrived in have all completed.
    fn cluster_passed(w: &Warp, mask: u32, phase: u32) -> bool {
        let mut ok = true;
        lanes!(mask, l, {
            ok &= w.cl_phase[l] < phase;
        });
        ok
    }

    /// Lets the warps waiting at `barrier.cluster.wait` whose phase completed run again (they
    /// re-execute the wait, which passes). Returns whether any did.
    pub(super) fn release_cluster_waits(&mut self, warps: &mut [Warp]) -> bool {
        let Some((ctx, _)) = self.cluster() else { return false };
        let mut released = false;
        for w in warps.iter_mut().filter(|w| w.state == WState::ClusterWait) {
            if Self::cluster_passed(w, w.cl_arrived & w.valid & !w.exited, ctx.phase.get()) {
                w.state = WState::Run;
                released = true;
            }
        }
        released
    }

    /// Lanes `newly` of `w` exit: they no longer hold the cluster barrier (nor count as arrived).
    pub(super) fn cluster_exit(&mut self, w: &Warp, newly: u32) {
        let Some((ctx, _)) = self.cluster() else { return };
        if newly == 0 {
            return;
        }
        ctx.live.set(ctx.live.get() - newly.count_ones());
        let mut pending = 0;
        lanes!(newly & w.cl_arrived, l, {
            pending += (w.cl_phase[l] == ctx.phase.get()) as u32;
        });
        ctx.arrived.set(ctx.arrived.get() - pending);
        ctx.try_complete();
    }

    /// The cluster-barrier intervals lane `l` of `w` is in: one, or two between an arrive and
    /// its wait.
    fn interval(&self, w: &Warp, l: usize, phase: u32) -> (u32, u32) {
        if w.cl_arrived >> l & 1 != 0 {
            (w.cl_phase[l], w.cl_phase[l] + 1)
        } else {
            (phase, phase)
        }
    }

    /// The cross-CTA race check of an access by lane `l` of this CTA to `[off, off + size)` of
    /// rank `owner`'s shared memory (no-op without the race sanitizer or a cluster).
    #[allow(clippy::too_many_arguments)] // the access: warp, instruction, lane, owner, range, direction
    pub(crate) fn cluster_track(
        &self,
        w: &Warp,
        i: &Inst,
        l: usize,
        owner: u32,
        off: u32,
        size: u32,
        write: bool,
    ) -> R<()> {
        let Some((ctx, me)) = self.cluster() else { return Ok(()) };
        let Some(words) = &ctx.words else { return Ok(()) };
        let (lo, hi) = self.interval(w, l, ctx.phase.get());
        let mut v = words[owner as usize].borrow_mut();
        let bit = 1u16 << me;
        for word in off / 4..(off + size).div_ceil(4) {
            let Some(e) = v.get_mut(word as usize) else { break };
            let clash = if write {
                if e.r_hi > lo && e.r_mask & !bit != 0 {
                    Some(("reads", e.r_mask & !bit))
                } else if e.w_hi > lo && e.w_rank as u32 != me {
                    Some(("writes", 1u16 << e.w_rank))
                } else {
                    None
                }
            } else if e.w_hi > lo && e.w_rank as u32 != me {
                Some(("writes", 1u16 << e.w_rank))
            } else {
                None
            };
            if let Some((what, ranks)) = clash {
                let ranks: Vec<u32> = (0..16).filter(|r| ranks >> r & 1 != 0).collect();
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::SharedRace,
                    format!(
                        "CTA rank {me} {} shared word {:#x} of CTA rank {owner} while CTA rank(s) {ranks:?} {what} it in the \
                         same cluster-barrier interval (only barrier.cluster.arrive.release + wait.acquire orders \
                         accesses of different CTAs)",
                        if write { "writes" } else { "reads" },
                        word * 4
                    ),
                ));
            }
            if write {
                e.w_hi = hi + 1;
                e.w_rank = me as u8;
            } else {
                if e.r_hi <= lo {
                    e.r_mask = 0;
                }
                e.r_mask |= bit;
                e.r_hi = e.r_hi.max(hi + 1);
            }
        }
        Ok(())
    }

    /// `ld`/`st.shared::cluster` for the lanes in `mask`: each lane's address names this CTA's
    /// or a peer's shared memory.
    pub(crate) fn ld_st_cluster(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let Some((ctx, me)) = self.cluster() else {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::Unsupported,
                "shared::cluster access outside a cluster".into(),
            ));
        };
        let is_ld = i.op == Op::Ld;
        let esz = i.ty.bytes();
        let n = i.n as u32;
        let total = esz * n;
        let what = if is_ld { "load" } else { "store" };
        let vals: Vec<u32> =
            if is_ld { i.d[..n as usize].to_vec() } else { self.l.kernel.lists[i.list as usize].clone() };
        lanes!(mask, l, {
            let addr = Self::addr_of(w, i, l);
            let (rank, off) = decode(addr as u32, me);
            if addr > u32::MAX as u64 || rank >= ctx.ranks {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::OutOfBounds,
                    format!(
                        "shared::cluster {what} at {addr:#x}: names CTA rank {rank}, the cluster has {}",
                        ctx.ranks
                    ),
                ));
            }
            self.cluster_track(w, i, l, rank, off, total, !is_ld)?;
            if rank == me {
                let loc = self.resolve(w, i, l, Space::Shared, off as u64, total, total, what)?;
                if let Loc::Shared(o) = loc {
                    if self.hop.is_some() {
                        self.check_async_shared(w, i, l, o, total, !is_ld)?;
                    }
                    self.check_shared(w, i, l, o, total, !is_ld, false)?;
                }
                for k in 0..n {
                    let slot = vals[k as usize] as usize * 32 + l;
                    if is_ld {
                        w.regs[slot] = super::ext(i.ty, self.read_raw(loc, k * esz, esz));
                    } else {
                        self.write_raw(loc, k * esz, esz, w.regs[slot]);
                    }
                }
            } else {
                let m = self.peer_mem(w, i, l, &ctx, rank, off, total, is_ld)?;
                for k in 0..n {
                    let slot = vals[k as usize] as usize * 32 + l;
                    // SAFETY: [off, off + total) lies in the peer's live shared memory (checked
                    // by peer_mem); the cluster's CTAs run on this thread one at a time
                    let p = unsafe { m.shared.add((off + k * esz) as usize) };
                    if is_ld {
                        let mut b = [0u8; 8];
                        unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), esz as usize) };
                        w.regs[slot] = super::ext(i.ty, u64::from_le_bytes(b));
                    } else {
                        let b = w.regs[slot].to_le_bytes();
                        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, esz as usize) };
                    }
                }
                if !is_ld {
                    Self::peer_written(&m, off, total);
                }
                self.c.dsmem_bytes += total as u64;
            }
        });
        if is_ld {
            self.c.shared_load_requests += 1;
        } else {
            self.c.shared_store_requests += 1;
        }
        Ok(())
    }

    /// Marks `[off, off + size)` of a peer's shared memory written (its shadow's initialised
    /// bytes; the interval checks are the cluster's, `cluster_track`).
    fn peer_written(m: &RankMem, off: u32, size: u32) {
        if m.shadow_len == 0 {
            return;
        }
        for byte in off..off + size {
            let word = (byte / 4) as usize;
            if word < m.shadow_len {
                // SAFETY: inside the peer's shadow; the cluster's CTAs run on this thread one at a time
                let s = unsafe { &mut *m.shadow.add(word) };
                s.init |= 1 << (byte % 4);
                // ordered for the owner's own warps by the cluster barrier (cluster_track)
                s.w_epoch = 0;
            }
        }
    }

    /// A peer's shared memory for an access of `size` bytes at `off`: it must exist (the peer
    /// has not exited), hold the range, be aligned, and (read, uninitialised-read sanitizer)
    /// have been written.
    #[allow(clippy::too_many_arguments)] // the access: warp, instruction, lane, cluster, rank, range, direction
    fn peer_mem(
        &self,
        w: &Warp,
        i: &Inst,
        l: usize,
        ctx: &ClusterCtx,
        rank: u32,
        off: u32,
        size: u32,
        is_ld: bool,
    ) -> R<RankMem> {
        let what = if is_ld { "load from" } else { "store to" };
        let m = ctx.mem[rank as usize].get();
        let Some(m) = m.filter(|_| !ctx.exited[rank as usize].get()) else {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::OutOfBounds,
                format!(
                    "shared::cluster {what} CTA rank {rank}, which has exited: its shared memory is gone \
                     (a CTA must wait at a cluster barrier before exiting while peers still access its memory)"
                ),
            ));
        };
        if off as usize + size as usize > m.len {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::OutOfBounds,
                format!("shared::cluster {what} CTA rank {rank} at offset {off:#x} ({size} bytes): its shared memory is {} bytes", m.len),
            ));
        }
        if off % size != 0 {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::Misaligned,
                format!("shared::cluster {what} CTA rank {rank} at offset {off:#x}: not {size}-byte aligned"),
            ));
        }
        if is_ld && self.l.opts.uninit && m.shadow_len > 0 {
            for word in off / 4..(off + size).div_ceil(4) {
                // SAFETY: the peer's shadow covers its shared memory (checked above); same thread
                let s = unsafe { *m.shadow.add(word as usize) };
                if s.init == 0 {
                    return Err(self.err(
                        w,
                        Some(l),
                        i,
                        FindingKind::UninitialisedRead,
                        format!("shared::cluster load from CTA rank {rank} at offset {:#x}: never written", word * 4),
                    ));
                }
            }
        }
        Ok(m)
    }
}
