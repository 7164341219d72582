//! `wgmma` (PTX ISA 9.7.15, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
//! `fence`, `commit_group`, `wait_group` and `mma_async` in these forms (ISA "wgmma.mma_async"):
//! * m64nNk16 `.f32.f16.f16` and `.f16.f16.f16` (f16x2 accumulators), A from shared memory
//!   (descriptor) or from four registers, B from shared memory; K-major or MN-major
//!   (`imm-trans-a/b`) operands, no swizzle (INTERLEAVE) or 32/64/128-byte swizzle;
//!   `imm-scale-a/b = -1` negates;
//! * m64nNk32 `.s32.{s8,u8}.{s8,u8}{.satfinite}`, A from shared memory or registers, K-major,
//!   exact integer sums wrapping modulo 2^32 (or saturating with `.satfinite`);
//! * `scale-d` false: D = A B.
//!
//! Results land late: an operation's operands are read (shared memory and A registers) and its
//! accumulators written at the `wait_group` covering it; until then its accumulator and A
//! registers are in flight (touching them is a finding, S1) and its shared operands may not be
//! overwritten (S4). A register written by another instruction after the last `wgmma.fence`
//! and then used by a wgmma is a finding (S2, where ptxas prints C7515), as is a wgmma with no
//! fence since the start or the last `wait_group`.
//!
//! Each warp of the warpgroup computes its own 16 rows (rank in the group `w % 4`: rows
//! `16 w .. 16 w + 15`); the descriptors must be the same in the four warps (checked).
//! f16 accumulators: the f32 sum of the accumulation model rounded once to f16 (round to
//! nearest even) -- the same model as `mma`'s f16 accumulators, unverified on Hopper.
use super::*;
use crate::async_proxy::{GuardKind, Site, WgOp};
use crate::tma::Swizzle;

type R<T> = Result<T, Error>;

/// The fields of a 64-bit matrix descriptor (ISA "Matrix Descriptor Format").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Desc {
    pub start: u32,
    pub lbo: u32,
    pub sbo: u32,
    pub base_offset: u32,
    pub swizzle: Swizzle,
}

impl Desc {
    pub fn decode(d: u64) -> Desc {
        let f = |lo: u32| (((d >> lo) & 0x3fff) as u32) << 4;
        let swizzle = match (d >> 62) & 3 {
            1 => Swizzle::B128,
            2 => Swizzle::B64,
            3 => Swizzle::B32,
            _ => Swizzle::None,
        };
        Desc { start: f(0), lbo: f(16), sbo: f(32), base_offset: ((d >> 49) & 7) as u32, swizzle }
    }

    /// Shared address of element (r, k) (r: the M or N index) of `e`-byte elements, `T = 16/e`
    /// to a 16-byte chunk, swizzle row width `W` (research note 1.3; CUTLASS
    /// `make_gmma_desc`). K-major:
    /// none: `start + (r/8) SBO + (r%8) 16 + (k/T) LBO + (k%T) e`;
    /// swizzled: `swz(start + (r/8) SBO + (r%8) W + k e)` (LBO unused).
    /// MN-major (`mn`):
    /// none: `start + (r/T) SBO + (k/8) LBO + (k%8) 16 + (r%T) e`;
    /// swizzled: `swz(start + (r/(W/e)) LBO + (k/8) SBO + (k%8) W + (r%(W/e)) e)` -- LBO and SBO
    /// swap roles with the swizzle. `swz` acts on the absolute shared address.
    pub fn addr(&self, r: u32, k: u32, e: u32, mn: bool) -> u32 {
        let t = 16 / e;
        let w = self.swizzle.span();
        match (self.swizzle, mn) {
            (Swizzle::None, false) => self.start + (r / 8) * self.sbo + (r % 8) * 16 + (k / t) * self.lbo + (k % t) * e,
            (Swizzle::None, true) => self.start + (r / t) * self.sbo + (k / 8) * self.lbo + (k % 8) * 16 + (r % t) * e,
            (s, false) => s.apply(self.start + (r / 8) * self.sbo + (r % 8) * w + k * e),
            (s, true) => {
                let per = w / e;
                s.apply(self.start + (r / per) * self.lbo + (k / 8) * self.sbo + (k % 8) * w + (r % per) * e)
            }
        }
    }

    /// The bytes [lo, hi) spanned by a `rows` x (32 bytes of K) operand: every 16-byte chunk
    /// is contiguous (along K for K-major, along r for MN-major), so one address per chunk.
    fn range(&self, rows: u32, e: u32, mn: bool) -> (u32, u32) {
        let (t, kdim) = (16 / e, 32 / e);
        let (mut lo, mut hi) = (u32::MAX, 0u32);
        let mut take = |a: u32| {
            lo = lo.min(a);
            hi = hi.max(a + 16);
        };
        if mn {
            for r in (0..rows).step_by(t as usize) {
                (0..kdim).for_each(|k| take(self.addr(r, k, e, true)));
            }
        } else {
            for r in 0..rows {
                (0..kdim).step_by(t as usize).for_each(|k| take(self.addr(r, k, e, false)));
            }
        }
        (lo, hi)
    }

    /// The base offset (bits 49-51) is only accepted where the ISA prescribes it: a swizzled
    /// pattern whose start is off its repeat boundary, base offset `(start >> 7) & 7`. The
    /// emulator swizzles absolute addresses, which is the layout the ISA describes for such a
    /// start, so the field needs no further use -- an assumption to pin on hardware
    /// (conformance C4). Returns why the field is wrong, if it is.
    fn base_offset_problem(&self) -> Option<String> {
        let bo = self.base_offset;
        if bo == 0 {
            return None;
        }
        if self.swizzle == Swizzle::None {
            return Some(format!(
                "base offset {bo} on a descriptor with no swizzle (the ISA defines it for swizzled layouts only)"
            ));
        }
        let rep = self.swizzle.repeat();
        if self.start % rep == 0 {
            return Some(format!(
                "base offset {bo}, but the start {:#x} is on its {rep}-byte repeat boundary (the ISA prescribes 0)",
                self.start
            ));
        }
        let want = (self.start >> 7) & 7;
        (bo != want).then(|| {
            format!(
                "base offset {bo}, but the ISA prescribes (start >> 7) & 7 = {want} for the start {:#x}",
                self.start
            )
        })
    }
}

impl Block<'_, '_> {
    /// `wgmma.*` by the lanes in `mask`: the whole warp (and warpgroup) executes it.
    pub(super) fn wgmma(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32) -> R<()> {
        if mask != FULL {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::PartialWarpCollective,
                format!(
                    "wgmma is .sync.aligned over the warpgroup, but lanes {:#010x} of this warp do not execute it",
                    !mask
                ),
            ));
        }
        if self.l.nwarps % 4 != 0 {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::WarpgroupMisuse,
                format!("wgmma needs whole warpgroups (4 warps); the block has {} warps", self.l.nwarps),
            ));
        }
        let wid = w.id as usize;
        match i.sub {
            sub::WG_FENCE => {
                let wg = &mut self.hop().wg[wid];
                wg.fenced = true;
                wg.touched.clear();
                // from here on the warp's register writes are recorded (S2)
                w.wg_inflight = true;
            }
            sub::WG_COMMIT => self.hop().wg[wid].committed += 1,
            sub::WG_WAIT => self.wgmma_wait(w, i.off as u32)?,
            _ => self.wgmma_issue(w, i, pc)?,
        }
        Ok(())
    }

    fn wgmma_issue(&mut self, w: &mut Warp, i: &Inst, pc: u32) -> R<()> {
        let wid = w.id as usize;
        if !self.hop().wg[wid].fenced {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::WarpgroupMisuse,
                "wgmma.mma_async without a wgmma.fence since the start or the last wgmma.wait_group: the \
                 accumulator and operand registers written before it are not ordered with it"
                    .into(),
            ));
        }
        let k = self.l.kernel;
        let slots = &k.lists[i.list as usize];
        // S2: an accumulator or A register written by another instruction since the fence
        let late = slots.iter().find_map(|s| self.hop().wg[wid].touched.iter().find(|t| t.0 == *s).copied());
        if let Some((s, wpc)) = late {
            let name = k.reg_names.get(&s).cloned().unwrap_or_default();
            let line = k.insts[wpc as usize].line;
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::WarpgroupMisuse,
                format!(
                    "register `{name}`, an accumulator or A register of this wgmma, was written at PTX line {line} after \
                     the last wgmma.fence: the fence must come after every register write the wgmma depends on \
                     (ptxas serializes such code with warning C7515; the ISA leaves it undefined)"
                ),
            ));
        }
        let rs = i.sub2 & sub::WG_A_REGS != 0;
        let adesc = if rs { 0 } else { w.regs[i.s[0] as usize * 32] };
        let bdesc = w.regs[i.s[1] as usize * 32];
        let scale_d = w.regs[i.s[2] as usize * 32] & 1 != 0;
        let n = i.n as u32 * 8;
        // descriptors uniform in the warp, and across the warpgroup
        for l in 1..32 {
            if (!rs && w.regs[i.s[0] as usize * 32 + l] != adesc) || w.regs[i.s[1] as usize * 32 + l] != bdesc {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::WarpgroupMisuse,
                    "the wgmma descriptors differ between the lanes of this warp".into(),
                ));
            }
        }
        let h = self.hop();
        let nth = h.wg[wid].issued.len();
        h.wg[wid].issued.push((pc, adesc, bdesc));
        let g0 = wid / 4 * 4;
        let other =
            (g0..g0 + 4).find_map(|o| h.wg[o].issued.get(nth).filter(|&&e| e != (pc, adesc, bdesc)).map(|&e| (o, e)));
        if let Some((o, (opc, oa, ob))) = other {
            let line = k.insts[opc as usize].line;
            return Err(self.err(w, None, i, FindingKind::WarpgroupMisuse, format!(
                "wgmma number {nth} of this warp (A descriptor {adesc:#x}, B {bdesc:#x}) differs from warp {o}'s of the same warpgroup \
                 (PTX line {line}, A {oa:#x}, B {ob:#x}): a warpgroup executes one wgmma with one pair of descriptors"
            )));
        }
        let e = if i.ty == Ty::S32 { 1 } else { 2 };
        let ops = [
            (!rs).then(|| (Desc::decode(adesc), 64u32, i.sub2 & sub::WG_TRANS_A != 0, "A")),
            Some((Desc::decode(bdesc), n, i.sub2 & sub::WG_TRANS_B != 0, "B")),
        ];
        // the operands' shared ranges: a valid base offset, inside shared memory, fenced for
        // the async proxy; then guarded until the wait
        let mut guards = [u64::MAX; 2];
        for (j, &(d, rows, mn, what)) in ops.iter().enumerate().filter_map(|(j, o)| o.as_ref().map(|o| (j, o))) {
            if let Some(why) = d.base_offset_problem() {
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::BadAddress,
                    format!(
                        "wgmma operand {what}'s descriptor has {why}; the emulator accepts only the prescribed \
                         value (how hardware uses the field is unverified)"
                    ),
                ));
            }
            let (lo, hi) = d.range(rows, e, mn);
            if hi as usize > self.shared.len() {
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::OutOfBounds,
                    format!(
                        "wgmma operand {what} reaches shared offset {hi:#x}, past the block's {} bytes",
                        self.shared.len()
                    ),
                ));
            }
            if let Some((off, t)) = self.hop().unfenced_in(lo, hi) {
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::MissingProxyFence,
                    format!(
                    "the wgmma reads shared offset {off:#x}, written by thread {t} (linear) through the generic proxy \
                     with no fence.proxy.async after the write: the async proxy may read stale data"
                ),
                ));
            }
            // a TMA load into the operand whose mbarrier phase has not completed: the wgmma may
            // read the bytes before they land
            let h = self.hop();
            h.lift_completed();
            let load = h.guards.iter().find(|g| matches!(g.kind, GuardKind::Load { .. }) && g.lo < hi && lo < g.hi);
            if let Some(&g) = load {
                let GuardKind::Load { mbar, phase, .. } = g.kind else { unreachable!() };
                let line = k.insts[g.site.pc as usize].line;
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::AsyncHazard,
                    format!(
                        "wgmma operand {what} [{lo:#x}, {hi:#x}) overlaps the destination of a TMA load (PTX line \
                         {line}) whose mbarrier (shared offset {mbar:#x}) phase {phase} has not completed: wait on \
                         the mbarrier before the wgmma reads the tile"
                    ),
                ));
            }
            let site = Site { pc, warp: w.id, lane: 0 };
            guards[j] = self.hop().add_guard(lo, hi, GuardKind::Wgmma, site);
        }
        let h = self.hop();
        let group = h.wg[wid].committed;
        h.wg[wid].ops.push(WgOp { pc, adesc, bdesc, scale_d, group, guards });
        let wg = &mut h.wg[wid];
        for &s in slots {
            if !wg.inflight.contains(&s) {
                wg.inflight.push(s);
            }
        }
        w.wg_inflight = true;
        Ok(())
    }

    /// `wgmma.wait_group n`: the warp's operations of every group but the newest `n` land, in
    /// order (each accumulating onto the previous one's result).
    fn wgmma_wait(&mut self, w: &mut Warp, n: u32) -> R<()> {
        let wid = w.id as usize;
        let committed = self.hop().wg[wid].committed;
        let ops = std::mem::take(&mut self.hop().wg[wid].ops);
        let (done, keep): (Vec<WgOp>, Vec<WgOp>) = ops.into_iter().partition(|o| o.group + n < committed);
        for op in &done {
            self.wgmma_land(w, op);
            self.hop().guards.retain(|g| !op.guards.contains(&g.id));
        }
        let k = self.l.kernel;
        let slots: Vec<u32> =
            keep.iter().flat_map(|o| k.lists[k.insts[o.pc as usize].list as usize].iter().copied()).collect();
        w.wg_inflight = !keep.is_empty();
        let wg = &mut self.hop().wg[wid];
        wg.ops = keep;
        wg.fenced = false;
        wg.touched.clear();
        wg.inflight = slots;
        Ok(())
    }

    /// D = A B (+ D when scale-d) for warp `w`'s rows `16 (w%4) .. + 15`: operands gathered
    /// now (shared memory and A registers are read at land time, as the hardware reads them
    /// asynchronously), then each accumulator register's element(s) (note 1.4):
    /// f32/s32 `d[i]` = (g + 8 ((i>>1)&1), 8 (i>>2) + 2q + (i&1)); f16 `d[j]` half h =
    /// (g + 8 (j&1), 8 (j>>1) + 2q + h); register A, reg j, element h of lane (g, q):
    /// (g + 8 (j&1), 8 (j>>1) + 2q + h) for f16, (g + 8 (j&1), 16 (j>>1) + 4q + h) for bytes.
    fn wgmma_land(&mut self, w: &mut Warp, op: &WgOp) {
        let inst = &self.l.kernel.insts[op.pc as usize];
        let list = &self.l.kernel.lists[inst.list as usize];
        let nacc = inst.wgmma_accs();
        let (accs, aregs) = list.split_at(nacc);
        let n = inst.n as usize * 8;
        let int = inst.ty == Ty::S32;
        let (e, kdim) = if int { (1u32, 32usize) } else { (2, 16) };
        let rank = w.id % 4;
        let bits = inst.sub2;
        let (db, mnb) = (Desc::decode(op.bdesc), bits & sub::WG_TRANS_B != 0);
        let sh = &self.shared[..];
        // raw element bits
        let elem = |a: u32| -> u32 {
            if e == 1 {
                sh[a as usize] as u32
            } else {
                u16::from_le_bytes([sh[a as usize], sh[a as usize + 1]]) as u32
            }
        };
        let mut a_raw = [[0u32; 32]; 16];
        if aregs.is_empty() {
            let (da, mna) = (Desc::decode(op.adesc), bits & sub::WG_TRANS_A != 0);
            for (m, row) in a_raw.iter_mut().enumerate() {
                for (kk, x) in row[..kdim].iter_mut().enumerate() {
                    *x = elem(da.addr(16 * rank + m as u32, kk as u32, e, mna));
                }
            }
        } else {
            for (j, &s) in aregs.iter().enumerate() {
                for l in 0..32usize {
                    let (g, q) = (l >> 2, l & 3);
                    let v = w.regs[s as usize * 32 + l] as u32;
                    let m = g + 8 * (j & 1);
                    if int {
                        for b in 0..4 {
                            a_raw[m][16 * (j >> 1) + 4 * q + b] = (v >> (8 * b)) & 0xff;
                        }
                    } else {
                        for h in 0..2 {
                            a_raw[m][8 * (j >> 1) + 2 * q + h] = (v >> (16 * h)) & 0xffff;
                        }
                    }
                }
            }
        }
        let b_raw: Vec<[u32; 32]> = (0..n as u32)
            .map(|r| {
                let mut row = [0u32; 32];
                for (kk, x) in row[..kdim].iter_mut().enumerate() {
                    *x = elem(db.addr(r, kk as u32, e, mnb));
                }
                row
            })
            .collect();
        // (register, lane, half) -> (row in the warp's 16, column n)
        let at = |ri: usize, l: usize, h: usize| -> (usize, usize) {
            let (g, q) = (l >> 2, l & 3);
            if inst.ty == Ty::F16 {
                (g + 8 * (ri & 1), 8 * (ri >> 1) + 2 * q + h)
            } else {
                (g + 8 * ((ri >> 1) & 1), 8 * (ri >> 2) + 2 * q + (ri & 1))
            }
        };
        if int {
            let wid = |x: u32, signed: bool| if signed { x as u8 as i8 as i64 } else { x as i64 };
            let (sa, sb) = (inst.ty2 == Ty::S8, bits & sub::WG_B_SIGNED != 0);
            let sat = inst.has(fl::SATFINITE);
            for (ri, &s) in accs.iter().enumerate() {
                for l in 0..32usize {
                    let (m, col) = at(ri, l, 0);
                    let dot: i64 = (0..32).map(|kk| wid(a_raw[m][kk], sa) * wid(b_raw[col][kk], sb)).sum();
                    let r = &mut w.regs[s as usize * 32 + l];
                    let c = if op.scale_d { *r as u32 as i32 as i64 } else { 0 };
                    let v = c + dot;
                    let v = if sat { v.clamp(i32::MIN as i64, i32::MAX as i64) } else { v } as i32;
                    *r = crate::alu::ext(Ty::S32, v as u32 as u64);
                }
            }
        } else {
            let table = crate::fp::f16_table();
            let sign = |neg: bool| if neg { -1f64 } else { 1.0 };
            let (ga, gb) = (sign(bits & sub::WG_NEG_A != 0), sign(bits & sub::WG_NEG_B != 0));
            let a: Vec<[f64; 16]> =
                a_raw.iter().map(|row| std::array::from_fn(|kk| ga * table[row[kk] as usize] as f64)).collect();
            let b: Vec<[f64; 16]> =
                b_raw.iter().map(|row| std::array::from_fn(|kk| gb * table[row[kk] as usize] as f64)).collect();
            let model = self.l.opts.tensor;
            let f16acc = inst.ty == Ty::F16;
            let halves = if f16acc { 2 } else { 1 };
            for (ri, &s) in accs.iter().enumerate() {
                for l in 0..32usize {
                    let r = w.regs[s as usize * 32 + l];
                    let mut out = 0u64;
                    for h in 0..halves {
                        let (m, col) = at(ri, l, h);
                        let products: [f64; 16] = std::array::from_fn(|kk| a[m][kk] * b[col][kk]);
                        let c = match (op.scale_d, f16acc) {
                            (false, _) => 0.0,
                            (true, true) => table[((r >> (16 * h)) & 0xffff) as usize],
                            (true, false) => f32::from_bits(r as u32),
                        };
                        let d = accumulate(c, &products, model);
                        out |= if f16acc {
                            (crate::fp::Fmt::F16.rn(d as f64) as u64) << (16 * h)
                        } else {
                            d.to_bits() as u64
                        };
                    }
                    w.regs[s as usize * 32 + l] = out;
                }
            }
        }
        // this warp's share: its 16 rows
        self.c.tensor_macs += 16 * n as u64 * kdim as u64;
    }

    /// The lanes in which `slot` is an accumulator of the wgmma `i` that is not read: scale-d
    /// false (D = A B) makes its old value irrelevant, and kernels rely on it to skip zeroing
    /// (CUTLASS's first k-block, `ScaleOut::Zero`). None for any other instruction or slot.
    #[cold]
    #[inline(never)]
    pub(super) fn wgmma_unread_accumulator(&self, w: &Warp, i: &Inst, slot: u32) -> u32 {
        if i.op != Op::Wgmma || i.sub != sub::WG_MMA {
            return 0;
        }
        let accs = &self.l.kernel.lists[i.list as usize][..i.wgmma_accs()];
        if !accs.contains(&slot) {
            return 0;
        }
        let p = i.s[2] as usize * 32;
        (0..32).filter(|&l| w.regs[p + l] & 1 == 0).fold(0u32, |m, l| m | 1 << l)
    }

    /// An instruction of a warp with a wgmma in flight or a `wgmma.fence` not yet followed by
    /// its `wait_group`: reading or writing an accumulator or A register of a wgmma in flight
    /// is undefined (S1: the result lands at `wait_group`, A is read asynchronously); a write
    /// after the fence is recorded, for the wgmma that would use it (S2).
    #[cold]
    #[inline(never)]
    pub(super) fn check_wgmma_regs(&mut self, w: &Warp, i: &Inst, pc: u32) -> R<()> {
        // (only called with the register sanitizer on, so its per-instruction slot lists exist)
        let l = self.l;
        let Some(ru) = l.reg_use.as_ref() else { return Ok(()) };
        let (reads, writes) = (ru.reads(pc as usize), ru.writes(pc as usize));
        let wg = &mut self.hop().wg[w.id as usize];
        let hit = reads.iter().chain(writes).find(|s| wg.inflight.contains(s)).copied();
        if wg.fenced {
            for &s in writes {
                if !wg.touched.iter().any(|t| t.0 == s) {
                    wg.touched.push((s, pc));
                }
            }
        }
        if let Some(s) = hit {
            let name = self.l.kernel.reg_names.get(&s).cloned().unwrap_or_default();
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::AsyncHazard,
                format!(
                    "register `{name}` is an accumulator or A register of a wgmma still in flight: \
                     wgmma.wait_group before touching it"
                ),
            ));
        }
        Ok(())
    }
}

/// `c + sum(products)` with the tensor-core accumulation model of `mma` (blocks of `block`
/// exact products fused and truncated, or sequential IEEE adds). Hopper's own rounding is
/// unverified: the A100 model is the assumption.
fn accumulate(c: f32, products: &[f64; 16], model: crate::arch::TensorAccum) -> f32 {
    match model {
        crate::arch::TensorAccum::Sequential => products.iter().fold(c, |s, &p| s + p as f32),
        crate::arch::TensorAccum::FusedTruncate { block, extra_bits } => {
            products.chunks(block.max(1) as usize).fold(c, |s, ch| crate::tensor::fused_truncate(s, ch, extra_bits))
        }
    }
}
