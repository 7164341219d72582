//! `wgmma` (PTX ISA 9.7.15, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
//! `mma_async` m64nNk16 with f32 accumulators from f16 operands in shared memory (K-major,
//! matrix descriptors with no swizzle or 32/64/128-byte swizzle), `fence`, `commit_group`,
//! `wait_group`. Results land late: an operation's operands are read and its accumulators
//! written at the `wait_group` covering it; until then its accumulator registers are in flight
//! (touching them is a finding) and its shared operands may not be overwritten.
//!
//! Each warp of the warpgroup computes its own 16 rows (rank in the group `w % 4`: rows
//! `16 w .. 16 w + 15`); the descriptors must be the same in the four warps (checked).
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

    /// Shared address of f16 element (r, k) of a K-major operand (r: the M or N index):
    /// no swizzle: `start + (r/8) SBO + (r%8) 16 + (k/8) LBO + (k%8) 2` (8x16-byte core
    /// matrices); swizzle W: `swz(start + (r/8) SBO + (r%8) W + 2k)` on the absolute address.
    pub fn addr(&self, r: u32, k: u32) -> u32 {
        match self.swizzle {
            Swizzle::None => self.start + (r / 8) * self.sbo + (r % 8) * 16 + (k / 8) * self.lbo + (k % 8) * 2,
            s => s.apply(self.start + (r / 8) * self.sbo + (r % 8) * s.span() + k * 2),
        }
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
            sub::WG_FENCE => self.hop().wg[wid].fenced = true,
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
        let adesc = w.regs[i.s[0] as usize * 32];
        let bdesc = w.regs[i.s[1] as usize * 32];
        let scale_d = w.regs[i.s[2] as usize * 32] & 1 != 0;
        let n = i.n as u32 * 8;
        // descriptors uniform in the warp, and across the warpgroup
        for l in 1..32 {
            if w.regs[i.s[0] as usize * 32 + l] != adesc || w.regs[i.s[1] as usize * 32 + l] != bdesc {
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
        let k = h.wg[wid].issued.len();
        h.wg[wid].issued.push((pc, adesc, bdesc));
        let g0 = wid / 4 * 4;
        let other =
            (g0..g0 + 4).find_map(|o| h.wg[o].issued.get(k).filter(|&&e| e != (pc, adesc, bdesc)).map(|&e| (o, e)));
        if let Some((o, (opc, oa, ob))) = other {
            let line = self.l.kernel.insts[opc as usize].line;
            return Err(self.err(w, None, i, FindingKind::WarpgroupMisuse, format!(
                "wgmma number {k} of this warp (A descriptor {adesc:#x}, B {bdesc:#x}) differs from warp {o}'s of the same warpgroup \
                 (PTX line {line}, A {oa:#x}, B {ob:#x}): a warpgroup executes one wgmma with one pair of descriptors"
            )));
        }
        let (da, db) = (Desc::decode(adesc), Desc::decode(bdesc));
        if da.base_offset != 0 || db.base_offset != 0 {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::Unsupported,
                "wgmma descriptor with a nonzero base offset: its hardware meaning is unverified, not emulated".into(),
            ));
        }
        // the operands' shared ranges: inside shared memory, fenced for the async proxy
        let mut guards = [0u64; 2];
        for (j, (d, rows)) in [(da, 64u32), (db, n)].into_iter().enumerate() {
            let (mut lo, mut hi) = (u32::MAX, 0u32);
            for r in 0..rows {
                for k in [0u32, 8] {
                    let a = d.addr(r, k);
                    lo = lo.min(a);
                    hi = hi.max(a + 16);
                }
            }
            if hi as usize > self.shared.len() {
                let what = if j == 0 { "A" } else { "B" };
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
            let site = Site { pc, warp: w.id, lane: 0 };
            guards[j] = self.hop().add_guard(lo, hi, GuardKind::Wgmma, site);
        }
        let h = self.hop();
        let group = h.wg[wid].committed;
        h.wg[wid].ops.push(WgOp { pc, adesc, bdesc, scale_d, group, guards });
        let slots = &self.l.kernel.lists[i.list as usize];
        let wg = &mut self.hop().wg[wid];
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
        wg.inflight = slots;
        Ok(())
    }

    /// D = A B (+ D when scale-d): warp `w` computes rows 16 (w % 4) .. + 15, its fragment
    /// `d[i]` holding (m, n) = (16 (w%4) + g + 8 ((i >> 1) & 1), 8 (i >> 2) + 2 q + (i & 1)).
    fn wgmma_land(&mut self, w: &mut Warp, op: &WgOp) {
        let inst = &self.l.kernel.insts[op.pc as usize];
        let slots = &self.l.kernel.lists[inst.list as usize];
        let (da, db) = (Desc::decode(op.adesc), Desc::decode(op.bdesc));
        let (na, nb) = (inst.sub2 & 1 != 0, inst.sub2 & 2 != 0);
        let f16 = |a: u32| {
            let v = u16::from_le_bytes([self.shared[a as usize], self.shared[a as usize + 1]]);
            crate::fp::f16_to_f32(v as u64)
        };
        let rank = w.id % 4;
        for (di, &slot) in slots.iter().enumerate() {
            let di = di as u32;
            for l in 0..32u32 {
                let (g, q) = (l >> 2, l & 3);
                let m = 16 * rank + g + 8 * ((di >> 1) & 1);
                let n = 8 * (di >> 2) + 2 * q + (di & 1);
                let mut products = [0f64; 16];
                for (k, p) in products.iter_mut().enumerate() {
                    let (a, b) = (f16(da.addr(m, k as u32)), f16(db.addr(n, k as u32)));
                    let a = if na { -a } else { a };
                    let b = if nb { -b } else { b };
                    *p = a as f64 * b as f64;
                }
                let r = &mut w.regs[slot as usize * 32 + l as usize];
                let c = if op.scale_d { f32::from_bits(*r as u32) } else { 0.0 };
                *r = accumulate(c, &products, self.l.opts.tensor).to_bits() as u64;
            }
        }
        self.c.tensor_macs += 64 * slots.len() as u64 * 2 * 16;
    }

    /// An instruction of a warp with a wgmma in flight: reading or writing one of its
    /// accumulator registers is undefined (the result lands at `wait_group`).
    #[cold]
    #[inline(never)]
    pub(super) fn check_wgmma_regs(&mut self, w: &Warp, i: &Inst) -> R<()> {
        let (reads, writes) = crate::regdef::operands(self.l.kernel, i);
        let inflight = &self.hop().wg[w.id as usize].inflight;
        let hit = reads.iter().chain(&writes).find(|s| inflight.contains(s)).copied();
        if let Some(s) = hit {
            let name = self.l.kernel.reg_names.get(&s).cloned().unwrap_or_default();
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::AsyncHazard,
                format!(
                "register `{name}` is an accumulator of a wgmma still in flight: wgmma.wait_group before touching it"
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
