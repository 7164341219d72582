//! Memory instructions of the executor: ld/st in every state space, atomics, cp.async; address
//! resolution with bounds/alignment checks, and the shared-memory shadow (races, uninitialised
//! reads, pending async copies); coalescing and bank-conflict counters.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::alu::{self, ext};
use super::ir::*;
use super::memory::*;
use crate::error::Error;
use crate::finding::FindingKind;
use crate::state::*;

type R<T> = Result<T, Error>;

/// One lane's shared access, as the shadow checker sees it.
struct ShAccess {
    lane: usize,
    off: u32,
    size: u32,
    write: bool,
    atomic: bool,
}

impl<'l, 'a> Block<'l, 'a> {
    #[inline(always)]
    pub(crate) fn addr_of(w: &Warp, i: &Inst, lane: usize) -> u64 {
        let base = w.regs[i.s[0] as usize * 32 + lane];
        let base = if i.has(fl::ADDR32) { base & 0xffff_ffff } else { base };
        base.wrapping_add(i.off as u64)
    }

    /// Resolves an access of `size` bytes at `addr` in `space` to a location, checking
    /// alignment (`align` bytes) and bounds. Fast path: an aligned global access inside the
    /// allocation hit last.
    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[inline(always)]
    pub(crate) fn resolve(
        &mut self,
        w: &Warp,
        i: &Inst,
        lane: usize,
        space: Space,
        addr: u64,
        size: u32,
        align: u32,
        what: &str,
    ) -> R<Loc> {
        if space == Space::Shared && addr & (align.max(1) as u64 - 1) == 0 && align.is_power_of_two() {
            if addr + size as u64 <= self.shared.len() as u64 {
                return Ok(Loc::Shared(addr as u32));
            }
        } else if matches!(space, Space::Global | Space::Generic)
            && addr & (align.max(1) as u64 - 1) == 0
            && addr < SHARED_WIN
            && align.is_power_of_two()
        {
            // the allocation this instruction hit last (instructions keep to their buffers)
            let hint = self.alloc_hint[i.line as usize % ALLOC_HINTS] as usize;
            if let Some(a) = self.l.view.allocs.get(hint) {
                if addr >= a.base && addr + size as u64 <= a.base + a.size {
                    self.last_alloc = hint;
                    return Ok(Loc::Global(unsafe { a.ptr.add((addr - a.base) as usize) }));
                }
            }
        }
        self.resolve_slow(w, i, lane, space, addr, size, align, what)
    }

    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[inline(never)]
    pub(crate) fn resolve_slow(
        &mut self,
        w: &Warp,
        i: &Inst,
        lane: usize,
        space: Space,
        addr: u64,
        size: u32,
        align: u32,
        what: &str,
    ) -> R<Loc> {
        // (alignments are powers of two: a mask instead of a 64-bit division)
        let misaligned = if align.is_power_of_two() {
            addr & (align as u64 - 1) != 0
        } else {
            align > 1 && addr % align as u64 != 0
        };
        if misaligned && (self.l.opts.align || matches!(i.op, Op::Atom | Op::Red)) {
            return Err(self.err(
                w,
                Some(lane),
                i,
                FindingKind::Misaligned,
                format!("{what} of {size} bytes at address {addr:#x} is not {align}-byte aligned ({:?} space)", space),
            ));
        }
        let space = if space == Space::Generic {
            if (SHARED_WIN..SHARED_WIN + WIN_SIZE).contains(&addr) {
                return self.resolve(w, i, lane, Space::Shared, addr - SHARED_WIN, size, 0, what);
            } else if (LOCAL_WIN..LOCAL_WIN + WIN_SIZE).contains(&addr) {
                return self.resolve(w, i, lane, Space::Local, addr - LOCAL_WIN, size, 0, what);
            } else if (CONST_WIN..CONST_WIN + WIN_SIZE).contains(&addr) {
                return self.resolve(w, i, lane, Space::Const, addr - CONST_WIN, size, 0, what);
            } else if (PARAM_WIN..PARAM_WIN + WIN_SIZE).contains(&addr) {
                return self.resolve(w, i, lane, Space::Param, addr - PARAM_WIN, size, 0, what);
            }
            Space::Global
        } else {
            space
        };
        let sz = size as u64;
        match space {
            Space::Global => {
                let v = self.l.view;
                let idx = match v.allocs.get(self.last_alloc) {
                    Some(a) if addr >= a.base && addr.wrapping_add(sz) <= a.base + a.size => self.last_alloc,
                    _ => match v.find(addr, sz) {
                        Some(k) => {
                            self.last_alloc = k;
                            k
                        }
                        None => {
                            return Err(self.err(
                                w,
                                Some(lane),
                                i,
                                FindingKind::OutOfBounds,
                                format!(
                                    "global {what} of {size} bytes at address {addr:#x}: {}",
                                    v.explain_miss(addr, sz)
                                ),
                            ));
                        }
                    },
                };
                let h = i.line as usize % ALLOC_HINTS;
                if self.alloc_hint[h] != idx as u32 {
                    self.alloc_hint[h] = idx as u32;
                    self.l.alloc_hints[h].store(idx as u32, Ordering::Relaxed);
                }
                let a = &v.allocs[idx];
                Ok(Loc::Global(unsafe { a.ptr.add((addr - a.base) as usize) }))
            }
            Space::Shared => {
                if addr + sz > self.shared.len() as u64 {
                    return Err(self.err(
                        w,
                        Some(lane),
                        i,
                        FindingKind::OutOfBounds,
                        format!(
                            "shared {what} of {size} bytes at offset {addr:#x}: the block's shared memory is {} bytes ({} static + {} dynamic at offset {})",
                            self.shared.len(),
                            self.l.kernel.shared_static,
                            self.l.dyn_smem,
                            self.l.dyn_off
                        ),
                    ));
                }
                Ok(Loc::Shared(addr as u32))
            }
            Space::Local => {
                let lb = self.l.kernel.local_bytes as u64;
                if addr + sz > lb {
                    return Err(self.err(
                        w,
                        Some(lane),
                        i,
                        FindingKind::OutOfBounds,
                        format!(
                            "local {what} of {size} bytes at offset {addr:#x}: the thread's local frame is {lb} bytes"
                        ),
                    ));
                }
                let t = (w.id as u64 * 32 + lane as u64) * lb;
                Ok(Loc::Local((t + addr) as u32))
            }
            Space::Const => {
                if addr + sz > self.l.const_bank.len() as u64 {
                    return Err(self.err(
                        w,
                        Some(lane),
                        i,
                        FindingKind::OutOfBounds,
                        format!(
                            "const {what} of {size} bytes at offset {addr:#x}: the module's const bank is {} bytes",
                            self.l.const_bank.len()
                        ),
                    ));
                }
                Ok(Loc::Const(addr as u32))
            }
            Space::Param => {
                if addr + sz > self.l.params.len() as u64 {
                    return Err(self.err(
                        w,
                        Some(lane),
                        i,
                        FindingKind::OutOfBounds,
                        format!(
                            "param {what} at offset {addr}: the kernel has {} bytes of parameters",
                            self.l.params.len()
                        ),
                    ));
                }
                Ok(Loc::Param(addr as u32))
            }
            Space::Generic => unreachable!(),
        }
    }

    #[inline(always)]
    pub(crate) fn read_raw(&self, loc: Loc, k: u32, size: u32) -> u64 {
        unsafe {
            let p: *const u8 = match loc {
                Loc::Global(p) => p.add(k as usize),
                Loc::Shared(o) => self.shared.as_ptr().add((o + k) as usize),
                Loc::Local(o) => self.local.as_ptr().add((o + k) as usize),
                Loc::Const(o) => self.l.const_bank.as_ptr().add((o + k) as usize),
                Loc::Param(o) => self.l.params.as_ptr().add((o + k) as usize),
            };
            match size {
                1 => *p as u64,
                2 => std::ptr::read_unaligned(p as *const u16) as u64,
                4 => std::ptr::read_unaligned(p as *const u32) as u64,
                _ => std::ptr::read_unaligned(p as *const u64),
            }
        }
    }

    #[inline(always)]
    pub(crate) fn write_raw(&mut self, loc: Loc, k: u32, size: u32, v: u64) {
        unsafe {
            let p: *mut u8 = match loc {
                Loc::Global(p) => p.add(k as usize),
                Loc::Shared(o) => self.shared.as_mut_ptr().add((o + k) as usize),
                Loc::Local(o) => self.local.as_mut_ptr().add((o + k) as usize),
                Loc::Const(_) | Loc::Param(_) => return,
            };
            match size {
                1 => *p = v as u8,
                2 => std::ptr::write_unaligned(p as *mut u16, v as u16),
                4 => std::ptr::write_unaligned(p as *mut u32, v as u32),
                _ => std::ptr::write_unaligned(p as *mut u64, v),
            }
        }
    }

    /// Shadow bookkeeping of a shared access by warp `w`: races between barriers (between warps,
    /// and between lanes of one warp without a `bar.warp.sync` in between), reads of
    /// never-written bytes, touching a cp.async destination still in flight.
    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    pub(crate) fn check_shared(
        &mut self,
        w: &Warp,
        i: &Inst,
        lane: usize,
        off: u32,
        size: u32,
        write: bool,
        atomic: bool,
    ) -> R<()> {
        if self.shadow.is_empty() {
            return Ok(());
        }
        let acc = ShAccess { lane, off, size, write, atomic };
        let end = off + size;
        if off % 4 == 0 && size % 4 == 0 {
            // whole words (every vector and ldmatrix row access): one byte mask for all
            for word in off / 4..end / 4 {
                self.check_shared_word(w, i, &acc, word, 0xf)?;
            }
            return Ok(());
        }
        let mut word = off / 4;
        while word * 4 < end {
            let lo = (word * 4).max(off) - word * 4;
            let hi = ((word * 4 + 4).min(end)) - word * 4;
            let bm: u8 = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u8;
            self.check_shared_word(w, i, &acc, word, bm)?;
            word += 1;
        }
        Ok(())
    }

    /// [`Self::check_shared`] on one word, bytes `bm` of it. The race checks only look at an
    /// access made in this barrier interval (`epoch`): the common case, a word last touched
    /// before the latest `bar.sync`, skips them whole.
    #[inline(always)]
    fn check_shared_word(&mut self, w: &Warp, i: &Inst, acc: &ShAccess, word: u32, bm: u8) -> R<()> {
        let (races, uninit) = (self.l.opts.races, self.l.opts.uninit);
        let (wid, epoch) = (w.id as u16, self.epoch);
        let (step, lane8) = (w.steps as u32, acc.lane as u8);
        let s = self.shadow[word as usize];
        if s.pending != 0 {
            return Err(self.cp_async_hazard(w, i, acc.lane, word, s.pending));
        }
        // the last write / read was by another lane of this warp, since its last __syncwarp,
        // by an earlier instruction, on some of these bytes
        let unordered = |e: u32, wp: u16, st: u32, ln: u8, by: u8| {
            e == epoch
                && wp == wid
                && ln != MULTI_LANES
                && ln != lane8
                && st != step
                && by & bm != 0
                && Self::after_sync(w, st)
        };
        let lane = acc.lane;
        if acc.write {
            if races && !acc.atomic && (s.w_epoch == epoch || s.r_epoch == epoch) {
                if s.w_epoch == epoch && s.w_warp != wid {
                    return Err(self.race(w, i, lane, word, "write", "written", s.w_warp));
                }
                if s.r_epoch == epoch && s.r_warp != wid {
                    return Err(self.race(w, i, lane, word, "write", "read", s.r_warp));
                }
                if unordered(s.w_epoch, s.w_warp, s.w_step, s.w_lane, s.w_bytes) {
                    return Err(self.lane_race(w, i, lane, word, "write", "wrote", s.w_lane));
                }
                if unordered(s.r_epoch, s.r_warp, s.r_step, s.r_lane, s.r_bytes) {
                    return Err(self.lane_race(w, i, lane, word, "write", "read", s.r_lane));
                }
            }
            let s = &mut self.shadow[word as usize];
            // several lanes writing one word in one instruction (e.g. adjacent bytes)
            let same_inst = s.w_epoch == epoch && s.w_warp == wid && s.w_step == step && s.w_lane != lane8;
            s.w_lane = if same_inst || acc.atomic { MULTI_LANES } else { lane8 };
            s.w_bytes = if same_inst { s.w_bytes | bm } else { bm };
            s.w_epoch = epoch;
            s.w_warp = wid;
            s.w_step = step;
            s.init |= bm;
            if acc.atomic {
                s.r_epoch = epoch;
                s.r_warp = wid;
                s.r_lane = MULTI_LANES;
            }
        } else {
            if uninit && s.init & bm != bm {
                return Err(self.uninit_shared(w, i, lane, acc));
            }
            if races && !acc.atomic && s.w_epoch == epoch {
                if s.w_warp != wid {
                    return Err(self.race(w, i, lane, word, "read", "written", s.w_warp));
                }
                if unordered(s.w_epoch, s.w_warp, s.w_step, s.w_lane, s.w_bytes) {
                    return Err(self.lane_race(w, i, lane, word, "read", "wrote", s.w_lane));
                }
            }
            let s = &mut self.shadow[word as usize];
            if s.r_epoch != epoch {
                s.r_epoch = epoch;
                s.r_warp = wid;
                (s.r_lane, s.r_step, s.r_bytes) = (lane8, step, bm);
            } else if s.r_warp != wid {
                s.r_warp = MULTI_READERS;
            } else if s.r_lane != lane8 && Self::after_sync(w, s.r_step) {
                s.r_lane = MULTI_LANES; // several lanes read since the last __syncwarp
            } else {
                (s.r_lane, s.r_step, s.r_bytes) = (lane8, step, bm);
            }
        }
        Ok(())
    }

    #[cold]
    fn cp_async_hazard(&self, w: &Warp, i: &Inst, lane: usize, word: u32, pending: u8) -> Error {
        let why = match pending {
            CP_UNCOMMITTED => "still in flight: a cp.async.wait_group passed over it because it was never committed (missing cp.async.commit_group before the wait)",
            CP_ORPHAN => "issued by a thread that exited with the copy in flight: nothing orders it for other threads (missing cp.async.wait_group / wait_all before the exit)",
            _ => "still in flight (missing cp.async.wait_group / bar.sync)",
        };
        self.err(
            w,
            Some(lane),
            i,
            FindingKind::CpAsyncHazard,
            format!("shared offset {:#x} is the destination of a cp.async {why}", word * 4),
        )
    }

    #[cold]
    fn uninit_shared(&self, w: &Warp, i: &Inst, lane: usize, acc: &ShAccess) -> Error {
        let (size, off) = (acc.size, acc.off);
        self.err(
            w,
            Some(lane),
            i,
            FindingKind::UninitialisedRead,
            format!("shared load of {size} bytes at offset {off:#x} reads bytes never written since the block started"),
        )
    }

    /// Whether an access at warp step `st` (low 32 bits) came after `w`'s last __syncwarp.
    fn after_sync(w: &Warp, st: u32) -> bool {
        let back = (w.steps as u32).wrapping_sub(st) as u64;
        back < w.steps - w.sync_step
    }

    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[cold]
    fn race(&self, w: &Warp, i: &Inst, lane: usize, word: u32, what: &str, other: &str, other_warp: u16) -> Error {
        let who = if other_warp == MULTI_READERS {
            "several other warps".to_string()
        } else {
            format!("warp {other_warp} (threads {}..{})", other_warp as u32 * 32, other_warp as u32 * 32 + 31)
        };
        self.err(
            w,
            Some(lane),
            i,
            FindingKind::SharedRace,
            format!("{what} of shared offset {:#x} (warp {}), which {who} {other} in the same barrier interval (missing __syncthreads?)", word * 4, w.id),
        )
    }

    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[cold]
    fn lane_race(&self, w: &Warp, i: &Inst, lane: usize, word: u32, what: &str, other: &str, other_lane: u8) -> Error {
        self.err(
            w,
            Some(lane),
            i,
            FindingKind::IntraWarpRace,
            format!(
                "{what} of shared offset {:#x} by lane {lane} of warp {}, which lane {other_lane} of the same warp {other} \
                 earlier with no __syncwarp (bar.warp.sync) or barrier in between: lanes are not in lockstep since Volta",
                word * 4,
                w.id
            ),
        )
    }

    fn check_local(&mut self, w: &Warp, i: &Inst, lane: usize, off: u32, size: u32, write: bool) -> R<()> {
        if self.local_init.is_empty() {
            return Ok(());
        }
        let r = off as usize..(off + size) as usize;
        if write {
            self.local_init[r].fill(1);
        } else if self.local_init[r].contains(&0) {
            return Err(self.err(
                w,
                Some(lane),
                i,
                FindingKind::UninitialisedRead,
                format!("local load of {size} bytes reads bytes never written by this thread"),
            ));
        }
        Ok(())
    }

    /// Uninitialised-read check / init marking of a global access just resolved by `resolve`
    /// (which left the allocation in `last_alloc`).
    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[inline(always)]
    fn global_shadow(&self, w: &Warp, i: &Inst, lane: usize, addr: u64, size: u32, write: bool, what: &str) -> R<()> {
        if write && self.l.proxy_writes.is_some() {
            self.note_proxy_write(w, i, lane, addr, size);
        }
        if !self.l.opts.uninit || self.l.view.allocs[self.last_alloc].full.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        self.global_shadow_slow(w, i, lane, addr, size, write, what)
    }

    #[allow(clippy::too_many_arguments)] // hot path: the warp, instruction, lane and access tuple stay scalar arguments
    #[inline(never)]
    fn global_shadow_slow(
        &self,
        w: &Warp,
        i: &Inst,
        lane: usize,
        addr: u64,
        size: u32,
        write: bool,
        what: &str,
    ) -> R<()> {
        let a = &self.l.view.allocs[self.last_alloc];
        let off = addr - a.base;
        if write {
            a.mark_init(off, size as u64);
        } else if let Some(b) = a.first_uninit(off, size as u64) {
            return Err(self.err(
                w,
                Some(lane),
                i,
                FindingKind::UninitialisedRead,
                format!("global {what} of {size} bytes at address {addr:#x} reads byte {:#x} (offset {} of {}) that was never written by the host or a kernel", a.base + b, b, a.describe()),
            ));
        }
        Ok(())
    }

    pub(crate) fn load_loc(&self, loc: Loc, size: u32) -> u64 {
        self.read_raw(loc, 0, size)
    }
    pub(crate) fn store_loc(&mut self, loc: Loc, size: u32, v: u64) {
        self.write_raw(loc, 0, size, v)
    }
    pub(crate) fn wmma_global_shadow(
        &self,
        w: &Warp,
        i: &Inst,
        lane: usize,
        addr: u64,
        size: u32,
        write: bool,
    ) -> R<()> {
        self.global_shadow(w, i, lane, addr, size, write, if write { "wmma store" } else { "wmma load" })
    }

    pub(crate) fn mem_op(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        match i.op {
            Op::Ld | Op::St => self.ld_st(w, i, mask),
            Op::Atom | Op::Red => self.atomic(w, i, mask),
            Op::CpAsync => self.cp_async(w, i, mask),
            Op::CpAsyncCommit => {
                w.commit(mask);
                Ok(())
            }
            Op::CpAsyncWait => {
                let n = i.off as u32;
                if w.any_waited(mask, n) {
                    let committed = w.committed;
                    self.complete_cp(w, |p| cp_waited(p, mask, n, &committed), false);
                }
                // copies never committed are not waited for: flag their destinations, so that
                // touching them names the missing commit_group (legal as long as nobody does)
                if !self.shadow.is_empty() {
                    for (dst, len) in w.uncommitted(mask) {
                        for word in dst / 4..(dst + len).div_ceil(4) {
                            self.shadow[word as usize].pending = CP_UNCOMMITTED;
                        }
                    }
                }
                Ok(())
            }
            _ => unreachable!(),
        }
    }

    fn ld_st(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        if i.has(fl::CLUSTER) {
            return self.ld_st_cluster(w, i, mask);
        }
        // (a poll takes the per-lane path: it digests what each lane read)
        if mask == FULL && i.sub2 != sub::LD_STRONG && self.ld_st_global_warp(w, i)? {
            return Ok(());
        }
        let is_ld = i.op == Op::Ld;
        let esz = i.ty.bytes();
        let n = i.n as u32;
        let total = esz * n;
        let what = if is_ld { "load" } else { "store" };
        let vals: &[u32] = if is_ld { &i.d[..n as usize] } else { &self.l.kernel.lists[i.list as usize] };
        let mut addrs = [0u64; 32];
        let mut kind = Space::Generic;
        let mut shared_offs = [0u32; 32];
        lanes!(mask, l, {
            let addr = Self::addr_of(w, i, l);
            addrs[l] = addr;
            let loc = self.resolve(w, i, l, i.space, addr, total, total, what)?;
            match loc {
                Loc::Shared(o) => {
                    // (the async proxy's ranges first: the more specific report)
                    if self.hop.is_some() {
                        self.check_async_shared(w, i, l, o, total, !is_ld)?;
                    }
                    self.check_shared(w, i, l, o, total, !is_ld, false)?;
                    if let Some(cl) = &self.cl {
                        self.cluster_track(w, i, l, cl.rank(), o, total, !is_ld)?;
                    }
                    shared_offs[l] = o;
                    kind = Space::Shared;
                }
                Loc::Global(_) => {
                    self.global_shadow(w, i, l, addr, total, !is_ld, what)?;
                    if !is_ld {
                        self.record_global_write(w, i, l, addr, total);
                    }
                    kind = Space::Global
                }
                Loc::Local(o) => {
                    self.check_local(w, i, l, o, total, !is_ld)?;
                    kind = Space::Local;
                }
                _ => {}
            }
            for k in 0..n {
                let slot = vals[k as usize] as usize * 32 + l;
                if is_ld {
                    let v = self.read_raw(loc, k * esz, esz);
                    w.regs[slot] = ext(i.ty, v);
                } else {
                    let v = w.regs[slot];
                    self.write_raw(loc, k * esz, esz, v);
                }
            }
        });
        let active = mask.count_ones() as u64;
        if !is_ld {
            w.poll.stores += 1;
            if kind == Space::Global {
                self.l.epoch.fetch_add(1, Ordering::Relaxed);
            }
        } else if kind == Space::Global && i.sub2 == sub::LD_STRONG {
            let mut digest = Digest::new(i.line);
            lanes!(mask, l, {
                digest.add(addrs[l]);
                for &v in &vals[..n as usize] {
                    digest.add(w.regs[v as usize * 32 + l]);
                }
            });
            self.note_poll(w, i, digest.0);
        }
        match kind {
            Space::Global => self.count_global(is_ld, active * total as u64, count_sectors(&addrs, mask, total)),
            Space::Shared => {
                if is_ld {
                    self.c.shared_load_requests += 1;
                } else {
                    self.c.shared_store_requests += 1;
                }
                let (wf, ideal) = shared_wavefronts(&shared_offs, mask, total);
                self.c.shared_wavefronts += wf;
                self.c.shared_bank_conflicts += wf - ideal;
            }
            Space::Local => {
                if is_ld {
                    self.c.local_load_bytes += active * total as u64;
                } else {
                    self.c.local_store_bytes += active * total as u64;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A plain global store of `len` bytes by lane `lane`, for the cross-block write-write check
    /// (when the launch runs it).
    fn record_global_write(&mut self, w: &Warp, i: &Inst, lane: usize, addr: u64, len: u32) {
        if !self.l.global_ww {
            return;
        }
        let (dims, warp, block, line, cu) = (self.l.block, w.id, self.ctaid, i.line, i.loc);
        let end = addr + len as u64;
        self.gw.record(addr, end, || super::global_race::Written {
            start: addr,
            end,
            block,
            thread: thread_index(dims, warp, lane),
            line,
            cu,
        });
    }

    /// One global request's counters: its bytes (active lanes x access size) and sectors.
    fn count_global(&mut self, is_ld: bool, bytes: u64, sectors: u64) {
        if is_ld {
            self.c.global_load_requests += 1;
            self.c.global_load_bytes += bytes;
            self.c.global_load_sectors += sectors;
        } else {
            self.c.global_store_requests += 1;
            self.c.global_store_bytes += bytes;
            self.c.global_store_sectors += sectors;
        }
    }

    /// The whole warp's global `ld`/`st` when every lane's access is aligned and inside the
    /// allocation this instruction hit last, and that allocation needs no initialisation
    /// tracking: one bounds check for the warp instead of one per lane. Returns false (nothing
    /// done) when any of that does not hold; the per-lane path then reports what is wrong.
    fn ld_st_global_warp(&mut self, w: &mut Warp, i: &Inst) -> R<bool> {
        if !matches!(i.space, Space::Global | Space::Generic) {
            return Ok(false);
        }
        let is_ld = i.op == Op::Ld;
        let esz = i.ty.bytes();
        let n = i.n as u32;
        let total = esz * n;
        let hint = self.alloc_hint[i.line as usize % ALLOC_HINTS] as usize;
        let Some(a) = self.l.view.allocs.get(hint) else { return Ok(false) };
        if self.l.opts.uninit && !a.full.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut addrs = [0u64; 32];
        let (mut lo, mut hi, mut or) = (u64::MAX, 0u64, 0u64);
        for (l, addr) in addrs.iter_mut().enumerate() {
            let x = Self::addr_of(w, i, l);
            *addr = x;
            lo = lo.min(x);
            hi = hi.max(x);
            or |= x;
        }
        if !total.is_power_of_two()
            || or & (total as u64 - 1) != 0
            || lo < a.base
            || hi + total as u64 > a.base + a.size
        {
            return Ok(false);
        }
        self.last_alloc = hint;
        let base = a.ptr;
        let vals: &[u32] = if is_ld { &i.d[..n as usize] } else { &self.l.kernel.lists[i.list as usize] };
        for (l, &addr) in addrs.iter().enumerate() {
            // SAFETY: [addr, addr + total) lies inside the allocation (checked above)
            let loc = Loc::Global(unsafe { base.add((addr - a.base) as usize) });
            for k in 0..n {
                let slot = vals[k as usize] as usize * 32 + l;
                if is_ld {
                    w.regs[slot] = ext(i.ty, self.read_raw(loc, k * esz, esz));
                } else {
                    self.write_raw(loc, k * esz, esz, w.regs[slot]);
                }
            }
        }
        if !is_ld {
            for (l, &addr) in addrs.iter().enumerate() {
                self.record_global_write(w, i, l, addr, total);
            }
            w.poll.stores += 1;
            self.l.epoch.fetch_add(1, Ordering::Relaxed);
        }
        self.count_global(is_ld, 32 * total as u64, count_sectors(&addrs, FULL, total));
        Ok(true)
    }

    fn atomic(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let ty = i.ty;
        let size = ty.bytes();
        if size != 4 && size != 8 {
            return Err(self.err(w, None, i, FindingKind::Unsupported, format!("{}-byte atomics", size)));
        }
        let has_d = i.op == Op::Atom;
        self.c.atomics += 1;
        // whether any lane changed memory; a failed compare-and-swap's digest (what it found)
        let mut changed = false;
        let mut digest = Digest::new(i.line);
        let mut global = false;
        lanes!(mask, l, {
            let addr = Self::addr_of(w, i, l);
            let loc = self.resolve(w, i, l, i.space, addr, size, size, "atomic")?;
            let b = w.regs[i.s[1] as usize * 32 + l];
            let c = if i.s[2] != NONE { w.regs[i.s[2] as usize * 32 + l] } else { 0 };
            if let Loc::Global(_) = loc {
                self.global_shadow(w, i, l, addr, size, false, "atomic")?;
                self.global_shadow(w, i, l, addr, size, true, "atomic")?;
            }
            let old = match loc {
                Loc::Global(p) => unsafe {
                    if size == 4 {
                        let at = AtomicU32::from_ptr(p as *mut u32);
                        let mut cur = at.load(Ordering::Relaxed);
                        loop {
                            let new = alu::atom_apply_global(i.sub, ty, cur as u64, b, c) as u32;
                            match at.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                                Ok(_) => {
                                    changed |= new != cur;
                                    break cur as u64;
                                }
                                Err(x) => cur = x,
                            }
                        }
                    } else {
                        let at = AtomicU64::from_ptr(p as *mut u64);
                        let mut cur = at.load(Ordering::Relaxed);
                        loop {
                            let new = alu::atom_apply_global(i.sub, ty, cur, b, c);
                            match at.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                                Ok(_) => {
                                    changed |= new != cur;
                                    break cur;
                                }
                                Err(x) => cur = x,
                            }
                        }
                    }
                },
                Loc::Shared(o) => {
                    if self.l.opts.uninit && !self.shadow.is_empty() {
                        // the read half of the RMW must see initialised data
                        let s = self.shadow[(o / 4) as usize];
                        if s.init & 0xf != 0xf && size == 4 {
                            return Err(self.err(
                                w,
                                Some(l),
                                i,
                                FindingKind::UninitialisedRead,
                                format!(
                                    "atomic on shared offset {o:#x} that was never written since the block started"
                                ),
                            ));
                        }
                    }
                    self.check_shared(w, i, l, o, size, true, true)?;
                    let cur = self.read_raw(loc, 0, size);
                    let new = alu::atom_apply(i.sub, ty, cur, b, c);
                    self.write_raw(loc, 0, size, new);
                    changed |= new != cur;
                    cur
                }
                _ => {
                    return Err(self.err(
                        w,
                        Some(l),
                        i,
                        FindingKind::BadAtomic,
                        format!("atomic on address {addr:#x} outside global/shared memory"),
                    ))
                }
            };
            if let Loc::Global(_) = loc {
                global = true;
                digest.add(addr);
                digest.add(old);
            }
            if has_d {
                w.regs[i.d[0] as usize * 32 + l] = ext(ty, old);
            }
        });
        if changed {
            w.poll.stores += 1;
            if global {
                self.l.epoch.fetch_add(1, Ordering::Relaxed);
            }
        } else if global && i.sub == sub::A_CAS {
            self.note_poll(w, i, digest.0);
        }
        Ok(())
    }

    /// A poll of global memory (a strong load, a failed `atom.cas`) that read `digest`: when
    /// the warp saw the same since its last store, it spins on memory only another block (or
    /// another warp) can change, and parks (exec/resident.rs).
    fn note_poll(&mut self, w: &mut Warp, i: &Inst, digest: u64) {
        if w.poll.repeats(digest) {
            w.poll.parked = true;
            w.poll.epoch = self.l.epoch.load(Ordering::Relaxed);
            w.poll.line = i.line;
        }
    }

    fn cp_async(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let size = i.n as u32;
        if !matches!(size, 4 | 8 | 16) || (i.has(fl::CG) && size != 16) {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::BadCpAsync,
                format!("cp.async size {size} (must be 4, 8 or 16; .cg only 16)"),
            ));
        }
        let mut gaddrs = [0u64; 32];
        let mut gmask = 0u32;
        let mut soffs = [0u32; 32];
        lanes!(mask, l, {
            let group = w.committed(l);
            let dst = {
                let base = w.regs[i.s[0] as usize * 32 + l];
                let base = if i.has(fl::ADDR32) { base & 0xffff_ffff } else { base };
                base.wrapping_add(i.off as u64)
            };
            let src = w.regs[i.s[1] as usize * 32 + l].wrapping_add(i.target as i32 as i64 as u64);
            let src_size = if i.has(fl::HAS_SRCSIZE) {
                let n = w.regs[i.s[2] as usize * 32 + l] as u32;
                if n > size {
                    return Err(self.err(
                        w,
                        Some(l),
                        i,
                        FindingKind::BadCpAsync,
                        format!("src-size {n} is larger than the copy size {size} (undefined behaviour in the ISA)"),
                    ));
                }
                n
            } else if i.has(fl::IGNORE_SRC) && w.regs[i.s[2] as usize * 32 + l] & 1 != 0 {
                0
            } else {
                size
            };
            let dloc = self.resolve(w, i, l, Space::Shared, dst, size, size, "cp.async destination write")?;
            let Loc::Shared(doff) = dloc else { unreachable!() };
            if self.hop.is_some() {
                // a write into a wgmma operand in flight or a TMA destination (S4 and its kin)
                self.check_async_shared(w, i, l, doff, size, true)?;
            }
            self.check_shared(w, i, l, doff, size, true, false)?;
            let mut data = [0u8; 16];
            if src_size > 0 {
                let sloc = self.resolve(w, i, l, Space::Global, src, src_size, size, "cp.async source read")?;
                self.global_shadow(w, i, l, src, src_size, false, "cp.async source read")?;
                if let Loc::Global(p) = sloc {
                    unsafe { std::ptr::copy_nonoverlapping(p, data.as_mut_ptr(), src_size as usize) };
                }
                gaddrs[l] = src;
                gmask |= 1 << l;
            }
            if !self.shadow.is_empty() {
                for word in doff / 4..(doff + size) / 4 {
                    self.shadow[word as usize].pending = CP_IN_FLIGHT;
                }
            }
            soffs[l] = doff;
            w.pending_mut().push(CpPending::new(l as u8, group, doff, size as u8, data));
        });
        if gmask != 0 {
            self.count_global(true, gmask.count_ones() as u64 * size as u64, count_sectors(&gaddrs, gmask, size));
        }
        self.c.shared_store_requests += 1;
        let (wf, ideal) = shared_wavefronts(&soffs, mask, size);
        self.c.shared_wavefronts += wf;
        self.c.shared_bank_conflicts += wf - ideal;
        Ok(())
    }
}

/// Distinct 32-byte sectors touched by the lanes' accesses.
pub(crate) fn count_sectors(addrs: &[u64; 32], mask: u32, size: u32) -> u64 {
    // the coalesced case: the whole warp on consecutive elements
    if mask == FULL && (1..32).all(|l| addrs[l] == addrs[0].wrapping_add(l as u64 * size as u64)) {
        return ((addrs[0] + 32 * size as u64 - 1) >> 5) - (addrs[0] >> 5) + 1;
    }
    let mut s = [0u64; 64];
    let mut n = 0;
    lanes!(mask, l, {
        let a = addrs[l];
        let first = a >> 5;
        let last = (a + size as u64 - 1) >> 5;
        let mut x = first;
        while x <= last && n < 64 {
            s[n] = x;
            n += 1;
            x += 1;
        }
    });
    let s = &mut s[..n];
    // lanes usually walk memory upwards: sort only when they do not
    if s.windows(2).any(|p| p[0] > p[1]) {
        s.sort_unstable();
    }
    let mut count = 0;
    for k in 0..s.len() {
        if k == 0 || s[k] != s[k - 1] {
            count += 1;
        }
    }
    count
}

/// Shared-memory wavefronts of one request and the conflict-free ideal. Lanes are served in
/// phases (32 lanes for <=32-bit accesses, 16 for 64-bit, 8 for 128-bit); in a phase each of the
/// 32 banks delivers one distinct 4-byte word per wavefront (same word = broadcast).
pub(crate) fn shared_wavefronts(offs: &[u32; 32], mask: u32, size: u32) -> (u64, u64) {
    let per_phase = match size {
        0..=4 => 32,
        5..=8 => 16,
        _ => 8,
    };
    let mut total = 0u64;
    let mut ideal = 0u64;
    for ph in 0..(32 / per_phase) {
        let pm = (mask >> (ph * per_phase)) & (if per_phase == 32 { FULL } else { (1u32 << per_phase) - 1 });
        if pm == 0 {
            continue;
        }
        ideal += 1;
        // fast path: every word in a distinct bank -> one wavefront
        let mut banks = 0u32;
        let mut clash = false;
        lanes!(pm, k, {
            let o = offs[ph * per_phase + k];
            // the lane's words as one run of bank bits (they wrap past bank 31 only when unaligned)
            let (w0, w1) = (o / 4, (o + size.max(1) - 1) / 4);
            let (first, nw) = (w0 % 32, w1 - w0 + 1);
            if first + nw <= 32 {
                let bits = (u32::MAX >> (32 - nw)) << first;
                clash |= banks & bits != 0;
                banks |= bits;
            } else {
                for wd in w0..=w1 {
                    let bit = 1u32 << (wd % 32);
                    clash |= banks & bit != 0;
                    banks |= bit;
                }
            }
        });
        if !clash {
            total += 1;
            continue;
        }
        let mut words = [0u32; 128];
        let mut n = 0;
        lanes!(pm, k, {
            let o = offs[ph * per_phase + k];
            let mut wd = o / 4;
            while wd * 4 < o + size.max(1) && n < 128 {
                words[n] = wd;
                n += 1;
                wd += 1;
            }
        });
        total += max_distinct_per_bank(&mut words[..n]) as u64;
    }
    (total.max(ideal), ideal)
}

/// The largest number of distinct words any one bank holds among `words` (the wavefronts a
/// phase needs). Each bank keeps its distinct words in a short list (a few per bank in practice);
/// a bank with more than 8 falls back to sorting.
fn max_distinct_per_bank(words: &mut [u32]) -> u32 {
    let mut seen = [[0u32; 8]; 32];
    let mut count = [0u8; 32];
    for &w in words.iter() {
        let b = (w % 32) as usize;
        let c = count[b] as usize;
        if seen[b][..c.min(8)].contains(&w) {
            continue;
        }
        if c == 8 {
            words.sort_unstable();
            let mut per_bank = [0u32; 32];
            for k in 0..words.len() {
                if k == 0 || words[k] != words[k - 1] {
                    per_bank[(words[k] % 32) as usize] += 1;
                }
            }
            return per_bank.into_iter().max().unwrap_or(1);
        }
        seen[b][c] = w;
        count[b] += 1;
    }
    count.into_iter().max().unwrap_or(1) as u32
}

impl<'l, 'a> Block<'l, 'a> {
    /// Reads `n` bytes at a generic address (global, const or this lane's local memory).
    fn read_generic(&mut self, w: &Warp, i: &Inst, lane: usize, addr: u64, n: u32) -> R<Vec<u8>> {
        let mut out = Vec::with_capacity(n as usize);
        for k in 0..n as u64 {
            let loc = self.resolve(w, i, lane, Space::Generic, addr + k, 1, 1, "printf read")?;
            out.push(self.read_raw(loc, 0, 1) as u8);
        }
        Ok(out)
    }

    /// vprintf(format, args): formats like the CUDA device printf and prints per lane.
    pub(crate) fn printf(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let l = self.l.kernel.lists[i.list as usize].clone();
        let lb = self.l.kernel.local_bytes as u64;
        lanes!(mask, lane, {
            // the frame pointer is per thread; read params straight from the local frame
            let fmt_ptr = {
                let t = (w.id as u64 * 32 + lane as u64) * lb + l[0] as u64;
                u64::from_le_bytes(self.local[t as usize..t as usize + 8].try_into().unwrap_or([0; 8]))
            };
            let args_ptr = {
                let t = (w.id as u64 * 32 + lane as u64) * lb + l[1] as u64;
                u64::from_le_bytes(self.local[t as usize..t as usize + 8].try_into().unwrap_or([0; 8]))
            };
            let mut fmt = Vec::new();
            for k in 0..4096u64 {
                let c = self.read_generic(w, i, lane, fmt_ptr + k, 1)?[0];
                if c == 0 {
                    break;
                }
                fmt.push(c);
            }
            let text = self.format_printf(w, i, lane, &String::from_utf8_lossy(&fmt), args_ptr)?;
            print!("{text}");
            if let Ok(mut p) = self.l.printed.lock() {
                p.push_str(&text);
            }
            if l[2] != NONE {
                // CUDA's printf returns the number of arguments it parsed
                let fmt_s = String::from_utf8_lossy(&fmt).replace("%%", "");
                let nargs = fmt_s.matches('%').count() as u32;
                let t = ((w.id as u64 * 32 + lane as u64) * lb + l[2] as u64) as usize;
                self.local[t..t + 4].copy_from_slice(&nargs.to_le_bytes());
                if !self.local_init.is_empty() {
                    self.local_init[t..t + 4].fill(1);
                }
            }
        });
        Ok(())
    }

    fn format_printf(&mut self, w: &Warp, i: &Inst, lane: usize, fmt: &str, mut argp: u64) -> R<String> {
        let mut out = String::new();
        let mut it = fmt.chars().peekable();
        while let Some(ch) = it.next() {
            if ch != '%' {
                out.push(ch);
                continue;
            }
            let mut spec = String::from("%");
            let conv = loop {
                match it.next() {
                    Some(c) if "diouxXcspfFeEgGaA%".contains(c) => break c,
                    Some(c) => spec.push(c),
                    None => break '%',
                }
            };
            if conv == '%' {
                out.push('%');
                continue;
            }
            let long = spec.contains('l') || matches!(conv, 'f' | 'F' | 'e' | 'E' | 'g' | 'G' | 'a' | 'A' | 'p' | 's');
            let size = if long { 8 } else { 4 };
            argp = argp.div_ceil(size) * size;
            let b = self.read_generic(w, i, lane, argp, size as u32)?;
            argp += size;
            let v = if size == 8 {
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
            } else {
                u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as u64
            };
            let prec = spec
                .split('.')
                .nth(1)
                .and_then(|p| p.trim_end_matches(|c: char| c.is_alphabetic()).parse::<usize>().ok());
            match conv {
                'd' | 'i' => out += &(if size == 8 { v as i64 } else { v as u32 as i32 as i64 }).to_string(),
                'u' => out += &v.to_string(),
                'x' => out += &format!("{v:x}"),
                'X' => out += &format!("{v:X}"),
                'o' => out += &format!("{v:o}"),
                'c' => out.push(v as u8 as char),
                'p' => out += &format!("{v:#x}"),
                's' => {
                    let mut s = Vec::new();
                    for k in 0..4096u64 {
                        let c = self.read_generic(w, i, lane, v + k, 1)?[0];
                        if c == 0 {
                            break;
                        }
                        s.push(c);
                    }
                    out += &String::from_utf8_lossy(&s);
                }
                'e' | 'E' => out += &format!("{:.*e}", prec.unwrap_or(6), f64::from_bits(v)),
                'g' | 'G' => out += &format!("{}", f64::from_bits(v)),
                _ => out += &format!("{:.*}", prec.unwrap_or(6), f64::from_bits(v)),
            }
        }
        Ok(out)
    }
}

/// A running digest (FNV-1a over 64-bit words) of a poll: the PTX line, then each lane's
/// address and values.
pub(crate) struct Digest(pub(crate) u64);
impl Digest {
    pub(crate) fn new(line: u32) -> Self {
        let mut d = Digest(0xcbf2_9ce4_8422_2325);
        d.add(line as u64);
        d
    }
    pub(crate) fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

#[cfg(test)]
mod tests {
    use super::max_distinct_per_bank;

    /// The per-bank lists agree with sorting and counting, on random word sets with few and
    /// with many distinct words per bank (the sorting fallback).
    #[test]
    fn distinct_words_per_bank_match_sorting() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x1234_5678_9abc_def1);
        let mut next = move || rand::RngCore::next_u64(&mut rng);
        for case in 0..2000 {
            let n = 1 + (next() % 128) as usize;
            let spread = [40u64, 300, 4096][case % 3];
            let words: Vec<u32> = (0..n).map(|_| (next() % spread) as u32).collect();
            let mut sorted = words.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let mut per_bank = [0u32; 32];
            for w in &sorted {
                per_bank[(w % 32) as usize] += 1;
            }
            let want = per_bank.into_iter().max().unwrap();
            assert_eq!(max_distinct_per_bank(&mut words.clone()), want, "case {case}: {words:?}");
        }
    }
}
