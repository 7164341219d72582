//! Execution of Hopper's asynchronous instructions for a block: `mbarrier` (with waits that
//! yield the warp), TMA tile loads and stores (`cp.async.bulk.tensor`) landing late,
//! `cp.async.bulk` groups, `fence.proxy.async`, `elect.sync` and `setmaxnreg`; the checks of
//! generic loads and stores against the async proxy's ranges; landing copies when the block
//! would otherwise wait forever. State: [`crate::async_proxy::HopState`].
use super::*;
use crate::arch::AsyncMode;
use crate::async_proxy::{fence, writer_id, GuardKind, HopState, Site, TmaLoad, TmaStore};
use crate::mbarrier::MbarError;
use crate::tma::{self, TensorMap, TMAP_BYTES};

type R<T> = Result<T, Error>;

impl Block<'_, '_> {
    /// The async state (created at block start for kernels that use it).
    pub(super) fn hop(&mut self) -> &mut HopState {
        self.hop.as_deref_mut().expect("async instruction in a kernel without async state")
    }

    /// A finding located at an asynchronous operation's issue site (the op may complete while
    /// another warp runs).
    /// A finding of the whole block (no thread, warp or PTX line: a deadlock, a state at exit).
    pub(super) fn block_finding(&self, kind: FindingKind, detail: String) -> Error {
        Finding {
            kind,
            kernel: self.l.kernel.name.clone(),
            module: self.l.module.name.clone(),
            block: (self.ctaid[0], self.ctaid[1], self.ctaid[2]),
            thread: None,
            warp: None,
            ptx_line: None,
            cu_location: None,
            detail,
        }
        .into()
    }

    pub(super) fn site_err(&self, site: Site, kind: FindingKind, msg: String) -> Error {
        let i = &self.l.kernel.insts[site.pc as usize];
        let t = thread_index(self.l.block, site.warp, site.lane as usize);
        Finding {
            kind,
            kernel: self.l.kernel.name.clone(),
            module: self.l.module.name.clone(),
            block: (self.ctaid[0], self.ctaid[1], self.ctaid[2]),
            thread: Some((t[0], t[1], t[2])),
            warp: Some(site.warp),
            ptx_line: Some(i.line),
            cu_location: self.l.cu_location(i.loc),
            detail: msg,
        }
        .into()
    }

    /// Runs `elect`, `setmaxnreg`, `fence.proxy.async`, `mbarrier.*`, `cp.async.bulk*` for the
    /// lanes in `mask` (not empty).
    #[inline(never)] // off the interpreter loop's hot path (inlined, it cost the mma tile 10%)
    pub(super) fn hopper_op(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32) -> R<Flow> {
        match i.op {
            Op::Elect => self.elect(w, i, mask).map(|_| Flow::Next),
            Op::SetMaxNReg => self.setmaxnreg(w, i, pc, mask).map(|_| Flow::Next),
            Op::FenceProxyAsync => {
                self.proxy_fence(w, i.sub, mask);
                Ok(Flow::Next)
            }
            Op::Mbar => self.mbar(w, i, pc, mask),
            Op::BulkTensor => {
                lanes!(mask, l, {
                    let site = Site { pc, warp: w.id, lane: l as u8 };
                    if i.sub == sub::BULK_LOAD {
                        self.tma_load(w, i, l, site)?;
                    } else {
                        self.tma_store(w, i, l, site)?;
                    }
                });
                Ok(Flow::Next)
            }
            Op::BulkGroup => {
                self.bulk_group(w, i, mask)?;
                Ok(Flow::Next)
            }
            Op::Wgmma => {
                self.wgmma(w, i, pc, mask)?;
                Ok(Flow::Next)
            }
            _ => unreachable!("`{:?}` is not a Hopper instruction", i.op),
        }
    }

    /// `fence.proxy.async{.shared::cta,.global}` / `fence.mbarrier_init` by the lanes in `mask`:
    /// their shared writes (for wgmma and TMA stores, S3), their mbarrier inits (for TMA copies,
    /// S12) and their global writes (for TMA loads, S17) are ordered for the async proxy, as
    /// far as the fence's state space reaches.
    fn proxy_fence(&mut self, w: &Warp, kind: u8, mask: u32) {
        let first = w.id * 32;
        if matches!(kind, fence::ALL | fence::SHARED) {
            self.hop().fence(first, mask);
        }
        if matches!(kind, fence::ALL | fence::SHARED | fence::MBAR_INIT) {
            lanes!(mask, l, {
                self.hop().mbar.fence_inits(first + l as u32);
            });
        }
        if matches!(kind, fence::ALL | fence::GLOBAL) {
            if let Some(pw) = &self.l.proxy_writes {
                let block = self.block_linear();
                let mut pw = pw.lock().unwrap_or_else(|p| p.into_inner());
                lanes!(mask, l, {
                    pw.fence(writer_id(block, first + l as u32));
                });
            }
        }
    }

    /// This block's linear index in the grid.
    fn block_linear(&self) -> u64 {
        let g = self.l.grid;
        self.ctaid[0] as u64 + g.0 as u64 * (self.ctaid[1] as u64 + g.1 as u64 * self.ctaid[2] as u64)
    }

    /// S17: a generic global write by lane `l` (kernels with TMA loads only).
    #[cold]
    #[inline(never)]
    pub(crate) fn note_proxy_write(&self, w: &Warp, i: &Inst, l: usize, addr: u64, size: u32) {
        if let Some(pw) = &self.l.proxy_writes {
            let id = writer_id(self.block_linear(), w.id * 32 + l as u32);
            pw.lock().unwrap_or_else(|p| p.into_inner()).write(id, addr, size, i.line);
        }
    }

    /// S17: the global bytes a TMA (or bulk) load of lane `l` reads must not hold generic writes
    /// of this kernel that their writer has not fenced for the async proxy.
    fn check_proxy_reads(&self, w: &Warp, i: &Inst, l: usize, ranges: &mut dyn Iterator<Item = (u64, u64)>) -> R<()> {
        self.check_proxy_writes(w, i, l, ranges, false)
    }

    /// S17 for the global bytes `ranges` a TMA load of lane `l` reads (`store` false) or a TMA
    /// store writes (`store` true).
    fn check_proxy_writes(
        &self,
        w: &Warp,
        i: &Inst,
        l: usize,
        ranges: &mut dyn Iterator<Item = (u64, u64)>,
        store: bool,
    ) -> R<()> {
        let Some(pw) = &self.l.proxy_writes else { return Ok(()) };
        let hit = {
            let pw = pw.lock().unwrap_or_else(|p| p.into_inner());
            let mut hit = None;
            for (a, n) in ranges {
                hit = pw.unfenced(a, n);
                if hit.is_some() {
                    break;
                }
            }
            hit
        };
        let Some((addr, writer, line)) = hit else { return Ok(()) };
        let (block, thread) = (writer >> 32, (writer & 0xffff_ffff) as u32);
        let g = self.l.grid;
        let b = [block % g.0 as u64, (block / g.0 as u64) % g.1 as u64, block / (g.0 as u64 * g.1 as u64)];
        let t = thread_index(self.l.block, thread / 32, (thread % 32) as usize);
        Err(self.err(
            w,
            Some(l),
            i,
            FindingKind::MissingProxyFence,
            format!(
                "this TMA {} global byte {addr:#x}, written in this kernel through the generic proxy by \
                 block ({},{},{}) thread ({},{},{}) at PTX line {line} with no fence.proxy.async.global (or \
                 fence.proxy.async) by that thread after the write: {}",
                if store { "store overwrites" } else { "load reads" },
                b[0],
                b[1],
                b[2],
                t[0],
                t[1],
                t[2],
                if store {
                    "the two writes race across proxies (either may land last)"
                } else {
                    "the async proxy may read stale data"
                }
            ),
        ))
    }

    // ---- elect.sync, setmaxnreg --------------------------------------------------------------

    /// `elect.sync`: one leader among the member lanes. Which lane is not specified by the ISA:
    /// the lowest, or the highest under the random async mode (code that assumes lane 0 is
    /// elected then fails its tests).
    fn elect(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let m = self.membermask(w, i, mask, i.s[0])? & mask;
        let leader = if matches!(self.l.opts.async_mode, AsyncMode::Random(_)) {
            31 - m.leading_zeros()
        } else {
            m.trailing_zeros()
        };
        let (d, p) = (i.d[0] as usize * 32, i.d[1] as usize * 32);
        lanes!(mask, l, {
            w.regs[d + l] = leader as u64;
            w.regs[p + l] = (l as u32 == leader) as u64;
        });
        Ok(())
    }

    /// `setmaxnreg`: all four warps of the warpgroup execute the same instruction, `.inc` never
    /// lowers and `.dec` never raises a warp's count, and the block's registers fit the file.
    fn setmaxnreg(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32) -> R<()> {
        let bad = |b: &Self, msg: String| b.err(w, None, i, FindingKind::WarpgroupMisuse, msg);
        if mask != FULL {
            return Err(bad(
                self,
                format!(
                    "setmaxnreg is .sync.aligned over the warpgroup, but lanes {:#010x} of this warp do not execute it",
                    !mask
                ),
            ));
        }
        let nwarps = self.l.nwarps;
        if nwarps % 4 != 0 {
            return Err(bad(
                self,
                format!("setmaxnreg needs whole warpgroups (4 warps); the block has {nwarps} warps"),
            ));
        }
        let n = i.off as u32;
        let h = self.hop();
        let prev = h.maxnreg[w.id as usize].last().map(|&(_, c)| c);
        let k = h.maxnreg[w.id as usize].len();
        h.maxnreg[w.id as usize].push((pc, n));
        let g0 = w.id / 4 * 4;
        let other =
            (g0..g0 + 4).find_map(|o| h.maxnreg[o as usize].get(k).filter(|&&(p, _)| p != pc).map(|&(p, _)| (o, p)));
        let pool: u32 = h.maxnreg.iter().map(|v| v.last().map_or(0, |&(_, c)| c) * 32).sum();
        if let Some((o, p)) = other {
            let line = self.l.kernel.insts[p as usize].line;
            return Err(bad(self, format!("warp {} of the same warpgroup executed a different setmaxnreg (PTX line {line}) as its setmaxnreg number {k}: the instruction is .sync.aligned over the warpgroup", o)));
        }
        match (i.sub, prev) {
            (1, Some(c)) if n < c => {
                return Err(bad(self, format!("setmaxnreg.inc {n} is below the warp's current {c} registers")))
            }
            (0, Some(c)) if n > c => {
                return Err(bad(self, format!("setmaxnreg.dec {n} is above the warp's current {c} registers")))
            }
            _ => {}
        }
        if pool > 65536 {
            return Err(bad(self, format!("the block's warps now ask for {pool} registers, more than the 65536 of an SM: setmaxnreg.inc would wait forever")));
        }
        Ok(())
    }

    // ---- mbarrier ------------------------------------------------------------------------------

    /// The shared offset of an access of `size` bytes at `addr`: a shared-window offset, or a
    /// generic address inside the shared window.
    #[allow(clippy::too_many_arguments)] // the access tuple, as `resolve` takes it
    fn shared_off(&mut self, w: &Warp, i: &Inst, l: usize, addr: u64, size: u32, align: u32, what: &str) -> R<u32> {
        let space = if (SHARED_WIN..SHARED_WIN + WIN_SIZE).contains(&addr) { Space::Generic } else { Space::Shared };
        match self.resolve(w, i, l, space, addr, size, align, what)? {
            Loc::Shared(o) => Ok(o),
            _ => Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::BadAddress,
                format!("{what} address {addr:#x} is not in shared memory"),
            )),
        }
    }

    /// The shared offset of lane `l`'s mbarrier operand (8-byte aligned, inside shared memory).
    fn mbar_offset(&mut self, w: &Warp, i: &Inst, l: usize, addr: u64) -> R<u32> {
        self.shared_off(w, i, l, addr, 8, 8, "mbarrier access")
    }

    fn mbar_err(&self, w: &Warp, i: &Inst, l: usize, off: u32, e: MbarError) -> Error {
        self.err(w, Some(l), i, FindingKind::MbarrierMisuse, format!("mbarrier at shared offset {off:#x}: {e}"))
    }

    /// `mbarrier.*` for every executing lane. A wait that fails in every executing lane yields
    /// the warp (hardware suspends it), so spin loops cost one round each.
    fn mbar(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32) -> R<Flow> {
        let (d, v) = (i.d[0] as usize * 32, i.s[1] as usize * 32);
        if matches!(i.sub, sub::MBAR_ARRIVE | sub::MBAR_ARRIVE_TX | sub::MBAR_ARRIVE_NOCOMPLETE) {
            self.check_warp_arrivals(w, i, mask)?;
        }
        let mut any_true = false;
        let mut bumped = false;
        lanes!(mask, l, {
            let off = self.mbar_offset(w, i, l, Self::addr_of(w, i, l))?;
            let val = if i.s[1] != NONE { w.regs[v + l] } else { 1 };
            if i.sub != sub::MBAR_INIT {
                // S12: used by another thread before the init is published
                let r = self.hop().mbar.check_visible(off, w.id * 32 + l as u32, false);
                r.map_err(|e| self.mbar_err(w, i, l, off, e))?;
            }
            let t = &mut self.hop().mbar;
            let before = t.completions;
            let r = match i.sub {
                sub::MBAR_INIT => t.init(off, val as i64, i.line, w.id * 32 + l as u32).map(|_| 0),
                sub::MBAR_INVAL => t.inval(off).map(|_| 0),
                sub::MBAR_EXPECT_TX => t.expect_tx(off, val as u32 as i64).map(|_| 0),
                sub::MBAR_COMPLETE_TX => t.complete_tx(off, val as u32 as i64).map(|_| 0),
                sub::MBAR_ARRIVE | sub::MBAR_ARRIVE_NOCOMPLETE => {
                    t.arrive(off, val as u32, i.sub == sub::MBAR_ARRIVE_NOCOMPLETE).map(|(tok, _)| tok)
                }
                sub::MBAR_ARRIVE_TX => {
                    t.expect_tx(off, val as u32 as i64).and_then(|_| t.arrive(off, 1, false)).map(|(tok, _)| tok)
                }
                _ => {
                    let (ok, phase) =
                        t.wait(off, val, i.has(fl::PARITY)).map_err(|e| self.mbar_err(w, i, l, off, e))?;
                    any_true |= ok;
                    if ok && i.has(fl::PARITY) {
                        self.check_phase_skip(w, i, l, off, phase)?;
                    }
                    Ok(ok as u64)
                }
            };
            let r = r.map_err(|e| self.mbar_err(w, i, l, off, e))?;
            bumped |= self.hop().mbar.completions != before;
            if i.d[0] != NONE {
                w.regs[d + l] = r;
            }
        });
        if bumped {
            self.phase_completed();
        }
        let is_wait = matches!(i.sub, sub::MBAR_TEST_WAIT | sub::MBAR_TRY_WAIT);
        if is_wait && !any_true {
            // try_wait suspends; a test_wait that fails twice at one place with nothing
            // changed in between is spinning. Either way the other warps run now.
            let events = self.hop().mbar.events;
            if i.sub == sub::MBAR_TRY_WAIT || w.test_fail == (pc, events) {
                w.spin = events;
            }
            w.test_fail = (pc, events);
            return Ok(Flow::Yield);
        }
        Ok(Flow::Next)
    }

    /// The arrivals one warp instruction makes on each barrier must fit the phase: more than
    /// its pending count would complete it and count the rest towards the next phase (the
    /// classic bug: every lane arriving on a barrier initialised for one arrival per warp).
    fn check_warp_arrivals(&mut self, w: &Warp, i: &Inst, mask: u32) -> R<()> {
        let mut per_bar: Vec<(u32, u64, usize)> = Vec::new();
        lanes!(mask, l, {
            let off = self.mbar_offset(w, i, l, Self::addr_of(w, i, l))?;
            let n = if i.s[1] != NONE && i.sub != sub::MBAR_ARRIVE_TX { w.regs[i.s[1] as usize * 32 + l] } else { 1 };
            match per_bar.iter_mut().find(|e| e.0 == off) {
                Some(e) => e.1 += n,
                None => per_bar.push((off, n, l)),
            }
        });
        for (off, n, l) in per_bar {
            let pending = self.hop().mbar.bars.get(&off).filter(|b| b.live).map(|b| b.pending);
            if let Some(p) = pending {
                if n > p as u64 {
                    let e = MbarError::ExtraArrival { count: n as u32, pending: p };
                    return Err(self.mbar_err(w, i, l, off, e));
                }
            }
        }
        Ok(())
    }

    /// A completed phase orders every arrival and every byte delivered before it with each
    /// successful waiter: the shared-race checker's barrier interval ends (as at `bar.sync`),
    /// and the ranges guarded until this phase are released.
    fn phase_completed(&mut self) {
        self.epoch += 1;
        self.hop().lift_completed();
    }

    /// A successful parity wait of warp `w` referring to phase `phase`: if the warp's previous
    /// wait on this barrier referred to a phase more than one before, it slept through a whole
    /// phase (parity aliasing: a producer two phases ahead), and consumes the wrong data.
    fn check_phase_skip(&mut self, w: &Warp, i: &Inst, l: usize, off: u32, phase: i64) -> R<()> {
        let last = self.hop().seen_phase.insert((off, w.id), phase);
        if let Some(last) = last {
            if phase > last + 1 {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::MbarrierMisuse,
                    format!(
                        "skipped phase: this warp's wait on the mbarrier at shared offset {off:#x} now refers to \
                         phase {phase}, its previous wait to phase {last}: phase {} completed unobserved (a \
                         wrong parity, or a producer two phases ahead: parity waits cannot tell phase p from p+2)",
                        last + 1
                    ),
                ));
            }
        }
        Ok(())
    }

    // ---- TMA ---------------------------------------------------------------------------------

    /// Reads and decodes the 128-byte tensor map at generic address `addr` (param, const or
    /// global memory, 64-byte aligned).
    fn read_tensor_map(&mut self, w: &Warp, i: &Inst, l: usize, addr: u64) -> R<TensorMap> {
        let loc = self.resolve(w, i, l, Space::Generic, addr, TMAP_BYTES as u32, 64, "tensor-map read")?;
        let mut b = [0u8; TMAP_BYTES];
        for (k, x) in b.iter_mut().enumerate() {
            *x = self.load_loc(offset_loc(loc, k as u32), 1) as u8;
        }
        if let Loc::Shared(_) | Loc::Local(_) = loc {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::BadTensorMap,
                format!(
                    "tensor map at {addr:#x} is in shared/local memory (it must be in param, const or global memory)"
                ),
            ));
        }
        tma::decode(&b)
            .map_err(|e| self.err(w, Some(l), i, FindingKind::BadTensorMap, format!("tensor map at {addr:#x}: {e}")))
    }

    /// The box's shared offset for lane `l`: inside shared memory, 128-byte aligned, and
    /// aligned to the swizzle's repeat (the pattern is a function of absolute address bits).
    fn tma_smem(&mut self, w: &Warp, i: &Inst, l: usize, m: &TensorMap, what: &str) -> R<u32> {
        let addr = Self::addr_of(w, i, l);
        let o = self.shared_off(w, i, l, addr, m.box_bytes(), 1, what)?;
        let need = m.swizzle.repeat().max(128);
        if o % need != 0 {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::BadAddress,
                format!(
                    "{what} at shared offset {o:#x} is not {need}-byte aligned (TMA boxes need 128 bytes, a {}-byte \
                     swizzle its {need}-byte repeat: the pattern is taken from absolute address bits)",
                    m.swizzle.span()
                ),
            ));
        }
        Ok(o)
    }

    fn tma_coords(w: &Warp, l: usize, list: &[u32]) -> Vec<i32> {
        list.iter().map(|&s| w.regs[s as usize * 32 + l] as i32).collect()
    }

    /// Checks that the in-bounds elements of a box lie in one live allocation (an encoded map
    /// reaching outside its buffer is a silent out-of-bounds access on hardware).
    fn tma_alloc_check(&self, w: &Warp, i: &Inst, l: usize, m: &TensorMap, elems: &[tma::BoxElem]) -> R<()> {
        let es = m.esize() as u64;
        let mut cur: Option<usize> = None;
        for e in elems {
            let Some(src) = e.src else { continue };
            let inside = |k: usize| {
                let a = &self.l.view.allocs[k];
                src >= a.base && src + es <= a.base + a.size
            };
            if cur.is_some_and(inside) {
                continue;
            }
            cur = self.l.view.find(src, es);
            if cur.is_none() {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::OutOfBounds,
                    format!(
                        "the tensor map's in-bounds element at global address {src:#x} is outside every allocation \
                         ({}): the map describes more than its buffer",
                        self.l.view.explain_miss(src, es)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `cp.async.bulk.tensor` load by lane `l`: the box is read from global memory now and lands
    /// in shared memory later (see `AsyncMode`); meanwhile its bytes read as poison and touching
    /// them is a finding.
    fn tma_load(&mut self, w: &Warp, i: &Inst, l: usize, site: Site) -> R<()> {
        if i.n == 0 {
            return self.bulk_load(w, i, l, site);
        }
        let m = self.read_tensor_map(w, i, l, w.regs[i.s[1] as usize * 32 + l])?;
        let dst = self.tma_smem(w, i, l, &m, "TMA load destination")?;
        let mbar_addr = w.regs[i.s[2] as usize * 32 + l].wrapping_add(i.target as i32 as i64 as u64);
        let mbar = self.mbar_offset(w, i, l, mbar_addr)?;
        let coords = Self::tma_coords(w, l, &self.l.kernel.lists[i.list as usize]);
        let elems = tma::box_elements(&m, &coords);
        self.tma_alloc_check(w, i, l, &m, &elems)?;
        let es = m.esize() as usize;
        self.check_proxy_reads(w, i, l, &mut elems.iter().filter_map(|e| e.src.map(|s| (s, es as u64))))?;
        let mut data = vec![0u8; m.box_bytes() as usize];
        if m.oob_nan {
            // the canonical NaN of the element type (bit pattern unverified on hardware)
            let nan: &[u8] = match es {
                2 => &[0xff, 0x7f],
                _ => &[0xff, 0xff, 0xc0, 0x7f][..es.min(4)],
            };
            for c in data.chunks_mut(es) {
                c.copy_from_slice(&nan[..es]);
            }
        }
        for e in &elems {
            if let Some(src) = e.src {
                let k = self.l.view.find(src, es as u64).expect("checked by tma_alloc_check");
                let a = &self.l.view.allocs[k];
                if self.l.opts.uninit && !a.full.load(Ordering::Relaxed) {
                    if let Some(b) = a.first_uninit(src - a.base, es as u64) {
                        return Err(self.err(
                            w,
                            Some(l),
                            i,
                            FindingKind::UninitialisedRead,
                            format!("TMA load reads global byte {:#x} that was never written", a.base + b),
                        ));
                    }
                }
                // SAFETY: [src, src + es) lies inside allocation k (found above)
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        a.ptr.add((src - a.base) as usize),
                        data.as_mut_ptr().add(e.lin as usize),
                        es,
                    )
                };
            }
        }
        // TMA traffic in the global counters: the useful bytes are the in-bounds elements' (the
        // out-of-bounds fill comes from no memory; the swizzle only permutes shared addresses),
        // the transactions the distinct 32-byte sectors they lie in
        let inb = || elems.iter().filter_map(|e| e.src.map(|g| (g, es as u64)));
        self.count_tma_load(inb().count() as u64 * es as u64, sectors(inb()));
        self.issue_load(w, i, l, site, dst, data, m.swizzle, mbar)
    }

    /// `cp.async.bulk` global -> shared by lane `l`: `size` bytes (a multiple of 16, both
    /// addresses 16-byte aligned), read now, landing late like a tensor load.
    fn bulk_load(&mut self, w: &Warp, i: &Inst, l: usize, site: Site) -> R<()> {
        let size = w.regs[i.s[3] as usize * 32 + l] as u32;
        let src = w.regs[i.s[1] as usize * 32 + l];
        let dst_addr = Self::addr_of(w, i, l);
        if size == 0 || size % 16 != 0 {
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::BadAddress,
                format!("cp.async.bulk size {size} is not a positive multiple of 16"),
            ));
        }
        let dst = self.shared_off(w, i, l, dst_addr, size, 16, "cp.async.bulk destination")?;
        self.check_proxy_reads(w, i, l, &mut std::iter::once((src, size as u64)))?;
        let data = match self.resolve(w, i, l, Space::Generic, src, size, 16, "cp.async.bulk source")? {
            Loc::Global(p) => {
                let a = &self.l.view.allocs[self.last_alloc];
                if self.l.opts.uninit && !a.full.load(Ordering::Relaxed) {
                    if let Some(b) = a.first_uninit(src - a.base, size as u64) {
                        let msg = format!("cp.async.bulk reads global byte {:#x} that was never written", a.base + b);
                        return Err(self.err(w, Some(l), i, FindingKind::UninitialisedRead, msg));
                    }
                }
                // SAFETY: resolve checked [src, src + size) lies inside one allocation
                unsafe { std::slice::from_raw_parts(p, size as usize) }.to_vec()
            }
            _ => {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::BadAddress,
                    format!("cp.async.bulk source {src:#x} is not global memory"),
                ))
            }
        };
        let mbar_addr = w.regs[i.s[2] as usize * 32 + l].wrapping_add(i.target as i32 as i64 as u64);
        let mbar = self.mbar_offset(w, i, l, mbar_addr)?;
        self.count_tma_load(size as u64, sectors(std::iter::once((src, size as u64))));
        self.issue_load(w, i, l, site, dst, data, tma::Swizzle::None, mbar)
    }

    /// One TMA / bulk load's traffic, in the global and the TMA counters (the request itself is
    /// counted by `issue_load`).
    fn count_tma_load(&mut self, bytes: u64, sectors: u64) {
        self.c.global_load_bytes += bytes;
        self.c.global_load_sectors += sectors;
        self.c.tma_load_bytes += bytes;
        self.c.tma_load_sectors += sectors;
    }

    /// Queues a load of `data` to shared offset `dst` completing on `mbar`: the destination
    /// is guarded and poisoned until it lands (at once under the eager mode).
    #[allow(clippy::too_many_arguments)] // one load's description
    fn issue_load(
        &mut self,
        w: &Warp,
        i: &Inst,
        l: usize,
        site: Site,
        dst: u32,
        data: Vec<u8>,
        swizzle: tma::Swizzle,
        mbar: u32,
    ) -> R<()> {
        let len = data.len() as u32;
        // S12: the TMA unit completes on the barrier: its init must be fenced for the async
        // proxy (and published by a block barrier when another thread initialised it)
        let r = self.hop().mbar.check_visible(mbar, w.id * 32 + l as u32, true);
        r.map_err(|e| self.mbar_err(w, i, l, mbar, e))?;
        // S4: the copy writes an operand of a wgmma still in flight (a stage refilled before
        // the wgmma reading it retired); on hardware it may land any time from now
        if let Some(msg) = self.tma_over_wgmma(dst, dst + len) {
            return Err(self.err(w, Some(l), i, FindingKind::AsyncHazard, msg));
        }
        let h = self.hop();
        let phase = match h.mbar.bars.get(&mbar) {
            Some(b) if b.live => b.phase,
            _ => return Err(self.mbar_err(w, i, l, mbar, MbarError::NotInitialised)),
        };
        let guard = h.add_guard(dst, dst + len, GuardKind::Load { mbar, phase, landed: false }, site);
        h.loads.push_back(TmaLoad { dst, data, swizzle, mbar, phase, site, guard });
        // in flight: the destination reads as poison until the copy lands
        self.shared[dst as usize..(dst + len) as usize].fill(0xFF);
        self.c.global_load_requests += 1;
        self.c.tma_load_requests += 1;
        if self.l.opts.async_mode == AsyncMode::Eager {
            self.land_oldest()?;
        }
        Ok(())
    }

    /// Lands the oldest TMA load in flight: its bytes at their swizzled shared addresses, then
    /// `complete_tx` on its mbarrier. Returns false when none is in flight.
    #[inline(never)]
    pub(super) fn land_oldest(&mut self) -> R<bool> {
        let Some(op) = self.hop().loads.pop_front() else { return Ok(false) };
        self.land(op)?;
        Ok(true)
    }

    /// S4 for the async proxy's own writes: the report when shared bytes [lo, hi) that a TMA
    /// (or bulk) load writes overlap an operand of a wgmma still in flight.
    fn tma_over_wgmma(&mut self, lo: u32, hi: u32) -> Option<String> {
        let g = self.hop().guards.iter().find(|g| g.kind == GuardKind::Wgmma && g.lo < hi && lo < g.hi).copied()?;
        let line = self.l.kernel.insts[g.site.pc as usize].line;
        Some(format!(
            "the TMA load writes shared [{lo:#x}, {hi:#x}), which overlaps [{:#x}, {:#x}), an operand of a wgmma (PTX \
             line {line}, warp {}) still in flight: the copy may land while the wgmma reads it (wgmma.wait_group \
             before refilling the buffer)",
            g.lo, g.hi, g.site.warp
        ))
    }

    fn land(&mut self, op: TmaLoad) -> R<()> {
        if let Some(msg) = self.tma_over_wgmma(op.dst, op.dst + op.data.len() as u32) {
            return Err(self.site_err(op.site, FindingKind::AsyncHazard, msg));
        }
        for (k, chunk) in op.data.chunks(16).enumerate() {
            let a = op.swizzle.apply(op.dst + 16 * k as u32) as usize;
            self.shared[a..a + chunk.len()].copy_from_slice(chunk);
        }
        let (lo, hi) = (op.dst, op.dst + op.data.len() as u32);
        if !self.shadow.is_empty() {
            // written by the async proxy: initialised, and ordered for readers by the mbarrier
            // phase (checked through the guard), not by the barrier-interval race check
            for s in &mut self.shadow[(lo / 4) as usize..hi.div_ceil(4) as usize] {
                s.init = 0xf;
                s.w_epoch = 0;
                s.w_lane = MULTI_LANES;
                s.pending = 0;
            }
        }
        let h = self.hop();
        if let Some(g) = h.guards.iter_mut().find(|g| g.id == op.guard) {
            if let GuardKind::Load { ref mut landed, .. } = g.kind {
                *landed = true;
            }
        }
        // S8: the phase the copy was issued in completed without its bytes: the expect_tx of
        // that phase announced fewer bytes than its copies deliver, and these spill into a
        // later phase (which then completes early)
        let crossed = match h.mbar.bars.get(&op.mbar) {
            Some(b) if b.live && b.phase != op.phase => Some(MbarError::TxOverflow {
                expected: b.last_expected,
                delivered: op.data.len() as i64,
                phase: op.phase,
                crossed: true,
            }),
            _ => None,
        };
        if let Some(e) = crossed {
            return Err(self.tx_err(op.site, op.mbar, e));
        }
        h.last_tx.insert(op.mbar, op.site);
        let before = h.mbar.completions;
        let r = h.mbar.complete_tx(op.mbar, op.data.len() as i64);
        let done = h.mbar.completions != before;
        r.map_err(|e| self.tx_err(op.site, op.mbar, e))?;
        if done {
            self.phase_completed();
        }
        Ok(())
    }

    /// A finding about the bytes a TMA load (issued at `site`) delivers to the mbarrier at `mbar`.
    fn tx_err(&self, site: Site, mbar: u32, e: MbarError) -> Error {
        let why = match e {
            MbarError::TxOverflow { .. } => {
                format!("{e} (expect_tx must count every byte of every box, out-of-bounds fill included)")
            }
            e => e.to_string(),
        };
        self.site_err(
            site,
            FindingKind::MbarrierMisuse,
            format!("TMA load completing on the mbarrier at shared offset {mbar:#x}: {why}"),
        )
    }

    /// S8 where the block can go no further (a deadlock, or every warp exited with the copies
    /// landed): a barrier whose transaction count is below zero got bytes no `expect_tx`
    /// claimed. Located at the last load that delivered to it.
    pub(super) fn tx_surplus(&self) -> Option<Error> {
        let h = self.hop.as_deref()?;
        let (off, e) = h.mbar.surplus()?;
        Some(match h.last_tx.get(&off) {
            Some(&site) => self.tx_err(site, off, e),
            None => self.block_finding(
                FindingKind::MbarrierMisuse,
                format!("mbarrier at shared offset {off:#x} (mbarrier.complete_tx): {e}"),
            ),
        })
    }

    /// `cp.async.bulk.tensor` store by lane `l`: the source box must have been fenced for the
    /// async proxy; it is read and written to global memory when the thread's bulk group is
    /// waited for (or at block exit), and must not be overwritten before.
    fn tma_store(&mut self, w: &Warp, i: &Inst, l: usize, site: Site) -> R<()> {
        let m = self.read_tensor_map(w, i, l, w.regs[i.s[1] as usize * 32 + l])?;
        let src = self.tma_smem(w, i, l, &m, "TMA store source")?;
        let coords = Self::tma_coords(w, l, &self.l.kernel.lists[i.list as usize]);
        let elems = tma::box_elements(&m, &coords);
        self.tma_alloc_check(w, i, l, &m, &elems)?;
        let len = m.box_bytes();
        if let Some((off, t)) = self.hop().unfenced_in(src, src + len) {
            let tw = t / 32;
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::MissingProxyFence,
                format!(
                    "the TMA store reads shared offset {off:#x}, written by thread {} (warp {tw}) through the generic \
                     proxy with no fence.proxy.async after the write: the async proxy may read stale data",
                    thread_index(self.l.block, tw, (t % 32) as usize).map(|x| x.to_string()).join(",")
                ),
            ));
        }
        // S17 for stores: the global bytes the store overwrites must not hold generic writes of
        // this kernel their writer has not fenced (a cross-proxy write-write race)
        let es = m.esize() as u64;
        self.check_proxy_writes(w, i, l, &mut elems.iter().filter_map(|e| e.src.map(|g| (g, es))), true)?;
        let thread = w.id * 32 + l as u32;
        let h = self.hop();
        let group = h.bulk_committed[thread as usize];
        let guard = h.add_guard(src, src + len, GuardKind::Store, site);
        let elems = elems.iter().filter_map(|e| e.src.map(|g| (e.lin, g))).collect();
        h.stores.push(TmaStore { thread, group, src, swizzle: m.swizzle, esize: m.esize(), elems, site, guard });
        if self.l.opts.async_mode == AsyncMode::Eager {
            let k = self.hop().stores.len() - 1;
            self.perform_store(k);
        }
        Ok(())
    }

    /// Performs store `k`: reads its source box (swizzled) and writes the in-bounds elements. Its
    /// source stays guarded until its thread's `wait_group` covers it, whenever it was performed
    /// (hardware may be late even where this emulator was early).
    fn perform_store(&mut self, k: usize) {
        let st = self.hop().stores.remove(k);
        let es = st.esize as usize;
        for &(lin, g) in &st.elems {
            let a = st.swizzle.apply(st.src + lin) as usize;
            if let Some(idx) = self.l.view.find(g, es as u64) {
                let al = &self.l.view.allocs[idx];
                // SAFETY: [g, g + es) lies inside allocation idx; the source inside shared memory
                unsafe {
                    std::ptr::copy_nonoverlapping(self.shared.as_ptr().add(a), al.ptr.add((g - al.base) as usize), es)
                };
                al.mark_init(g - al.base, es as u64);
            }
        }
        if let Some(pw) = &self.l.proxy_writes {
            // async-proxy writes: no generic write is left unfenced under them
            let mut pw = pw.lock().unwrap_or_else(|p| p.into_inner());
            for &(_, g) in &st.elems {
                pw.overwritten(g, es as u64);
            }
        }
        self.c.global_store_requests += 1;
        self.c.global_store_bytes += (st.elems.len() * es) as u64;
        self.c.global_store_sectors += sectors(st.elems.iter().map(|&(_, g)| (g, es as u64)));
        self.hop().performed_unwaited.push((st.thread, st.group, st.guard));
    }

    /// `cp.async.bulk.commit_group` / `wait_group{.read} N` by the lanes in `mask`.
    fn bulk_group(&mut self, w: &Warp, i: &Inst, mask: u32) -> R<()> {
        let first = w.id * 32;
        if i.sub == 0 {
            let h = self.hop();
            lanes!(mask, l, {
                h.bulk_committed[first as usize + l] += 1;
            });
            return Ok(());
        }
        let n = i.off as u32;
        loop {
            let h = self.hop();
            let k = h.stores.iter().position(|s| {
                let t = s.thread;
                t >= first
                    && t < first + 32
                    && mask >> (t - first) & 1 != 0
                    && s.group + n < h.bulk_committed[t as usize]
            });
            match k {
                Some(k) => self.perform_store(k),
                None => break,
            }
        }
        // performed stores whose groups this wait covers: their sources are free now
        let h = self.hop();
        let covered = |&(t, g, _): &(u32, u32, u64)| {
            t >= first && t < first + 32 && mask >> (t - first) & 1 != 0 && g + n < h.bulk_committed[t as usize]
        };
        let lifted: Vec<u64> = h.performed_unwaited.iter().filter(|e| covered(e)).map(|e| e.2).collect();
        if !lifted.is_empty() {
            h.performed_unwaited.retain(|e| !lifted.contains(&e.2));
            h.guards.retain(|g| !lifted.contains(&g.id));
        }
        Ok(())
    }

    // ---- generic accesses against the async proxy ----------------------------------------------

    /// A generic shared access by lane `l` of `w` in a kernel with async state: touching a TMA
    /// destination before its mbarrier phase completed, or a TMA-store source before its
    /// `wait_group.read`, is a finding; writes are remembered until `fence.proxy.async`.
    #[cold]
    #[inline(never)]
    pub(crate) fn check_async_shared(
        &mut self,
        w: &Warp,
        i: &Inst,
        l: usize,
        off: u32,
        size: u32,
        write: bool,
    ) -> R<()> {
        let h = self.hop();
        h.lift_completed();
        if let Some(g) = h.guard_over(off, off + size) {
            let what = if write { "write" } else { "read" };
            let gi = &self.l.kernel.insts[g.site.pc as usize];
            let why = match g.kind {
                GuardKind::Load { mbar, phase, landed: false } => format!(
                    "the destination of a TMA load (PTX line {}) still in flight: wait on its mbarrier (shared offset \
                     {mbar:#x}) until phase {phase} completes",
                    gi.line
                ),
                GuardKind::Load { mbar, phase, .. } => format!(
                    "the destination of a TMA load (PTX line {}) whose mbarrier (shared offset {mbar:#x}) phase {phase} \
                     has not completed: the bytes may have landed, but nothing orders this {what} after them",
                    gi.line
                ),
                GuardKind::Store if write => format!(
                    "the source of a TMA store (PTX line {}) its thread has not waited for (cp.async.bulk.wait_group.read \
                     before reusing the buffer)",
                    gi.line
                ),
                GuardKind::Store | GuardKind::Wgmma if !write => return self.note_write(w, l, off, size, write),
                GuardKind::Store | GuardKind::Wgmma => format!(
                    "an operand of a wgmma (PTX line {}) still in flight: wgmma.wait_group before overwriting it",
                    gi.line
                ),
            };
            return Err(self.err(
                w,
                Some(l),
                i,
                FindingKind::AsyncHazard,
                format!("shared {what} at offset {off:#x} touches {why}"),
            ));
        }
        self.note_write(w, l, off, size, write)
    }

    fn note_write(&mut self, w: &Warp, l: usize, off: u32, size: u32, write: bool) -> R<()> {
        if write {
            self.hop().generic_write(w.id * 32 + l as u32, off, off + size);
        }
        Ok(())
    }

    // ---- scheduling ------------------------------------------------------------------------------

    /// Between scheduling rounds under the random mode: lands each copy in flight with
    /// probability one half.
    #[inline(never)]
    pub(super) fn async_round(&mut self) -> R<()> {
        if !matches!(self.l.opts.async_mode, AsyncMode::Random(_)) {
            return Ok(());
        }
        let mut k = 0;
        while k < self.hop().loads.len() {
            if self.hop().coin() {
                let op = self.hop().loads.remove(k).expect("index checked");
                self.land(op)?;
            } else {
                k += 1;
            }
        }
        Ok(())
    }

    /// At block exit: copies still in flight land, stores still pending are performed.
    #[inline(never)]
    pub(super) fn drain_async(&mut self) -> R<()> {
        if self.hop.is_none() {
            return Ok(());
        }
        while self.land_oldest()? {}
        if let Some(e) = self.tx_surplus() {
            return Err(e);
        }
        // a store still pending, or one performed and never waited for
        let h = self.hop();
        let unwaited = h.stores.first().map(|st| st.site).or_else(|| {
            h.performed_unwaited.first().and_then(|&(_, _, id)| h.guards.iter().find(|g| g.id == id).map(|g| g.site))
        });
        if let Some(site) = unwaited {
            return Err(self.site_err(
                site,
                FindingKind::AsyncHazard,
                "the block exits with this TMA store not waited for (cp.async.bulk.commit_group + wait_group.read                  before exit): its source shared memory is freed while the copy may still read it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The mbarrier part of a deadlock report: every barrier's state, and what is in flight.
    pub(super) fn async_deadlock_detail(&self) -> String {
        let Some(h) = self.hop.as_deref() else { return String::new() };
        let mut s = h.mbar.describe();
        if h.mbar.bars.values().any(|b| b.live && b.tx > 0) && h.loads.is_empty() {
            s += " a phase waits for transaction bytes that no copy in flight will deliver (expect_tx larger than \
                  the bytes of the boxes loaded?);";
        }
        s
    }
}

/// The distinct 32-byte sectors that the (address, bytes) ranges touch: a TMA or bulk copy's
/// memory transactions, counted as the LSU's are (`mem::count_sectors`).
fn sectors(ranges: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut s: Vec<u64> = ranges.filter(|r| r.1 > 0).flat_map(|(a, n)| (a >> 5)..=((a + n - 1) >> 5)).collect();
    s.sort_unstable();
    s.dedup();
    s.len() as u64
}

/// `loc` advanced by `k` bytes.
fn offset_loc(loc: Loc, k: u32) -> Loc {
    match loc {
        Loc::Global(p) => Loc::Global(p.wrapping_add(k as usize)),
        Loc::Shared(o) => Loc::Shared(o + k),
        Loc::Local(o) => Loc::Local(o + k),
        Loc::Const(o) => Loc::Const(o + k),
        Loc::Param(o) => Loc::Param(o + k),
    }
}
