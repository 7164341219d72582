//! Warp-wide instructions: shfl/vote/match/redux/activemask/bar.warp.sync, ldmatrix/stmatrix and
//! mma.sync, with the fragment layouts of docs/ptx-semantics.md. `.aligned` ones need the whole warp.
use super::arch::TensorAccum;
use super::fp;
use super::ir::*;
use crate::error::Error;
use crate::finding::FindingKind;
use crate::state::*;

type R<T> = Result<T, Error>;

impl<'l, 'a> Block<'l, 'a> {
    pub(crate) fn warp_op(&mut self, w: &mut Warp, i: &Inst, mask: u32, _active: u32) -> R<()> {
        match i.op {
            Op::Shfl => self.shfl(w, i, mask),
            Op::Vote => {
                let m = self.membermask(w, i, mask, i.s[1])?;
                let neg = i.has(fl::NEG_PRED_SRC);
                let p = i.s[0] as usize * 32;
                let mut ballot = 0u32;
                lanes!(mask, l, {
                    if (w.regs[p + l] & 1 != 0) != neg {
                        ballot |= 1 << l;
                    }
                });
                let ballot = ballot & m;
                let v = match i.sub {
                    sub::VOTE_ALL => (ballot == (mask & m)) as u64,
                    sub::VOTE_ANY => (ballot != 0) as u64,
                    sub::VOTE_UNI => (ballot == 0 || ballot == (mask & m)) as u64,
                    _ => ballot as u64,
                };
                let d = i.d[0] as usize * 32;
                lanes!(mask, l, {
                    w.regs[d + l] = v;
                });
                Ok(())
            }
            Op::Match => {
                let m = self.membermask(w, i, mask, i.s[1])?;
                let a = i.s[0] as usize * 32;
                let d = i.d[0] as usize * 32;
                let vm = i.ty.mask();
                let mut vals = [0u64; 32];
                lanes!(mask, l, {
                    vals[l] = w.regs[a + l] & vm;
                });
                let eff = mask & m;
                let first = vals[eff.trailing_zeros() as usize & 31];
                let all_same = {
                    let mut same = true;
                    lanes!(eff, l, {
                        if vals[l] != first {
                            same = false;
                        }
                    });
                    same
                };
                lanes!(mask, l, {
                    let r = if i.sub == 1 {
                        if all_same {
                            eff
                        } else {
                            0
                        }
                    } else {
                        let mut r = 0u32;
                        lanes!(eff, k, {
                            if vals[k] == vals[l] {
                                r |= 1 << k;
                            }
                        });
                        r
                    };
                    w.regs[d + l] = r as u64;
                    if i.d[1] != NONE {
                        w.regs[i.d[1] as usize * 32 + l] = all_same as u64;
                    }
                });
                Ok(())
            }
            Op::Redux => {
                let m = self.membermask(w, i, mask, i.s[1])?;
                let eff = mask & m;
                let a = i.s[0] as usize * 32;
                let signed = i.ty.is_signed();
                let mut acc: i64 = match i.sub {
                    sub::A_MIN if signed => i32::MAX as i64,
                    sub::A_MIN => u32::MAX as i64,
                    sub::A_MAX if signed => i32::MIN as i64,
                    sub::A_MAX => 0,
                    sub::A_AND => u32::MAX as i64,
                    _ => 0,
                };
                lanes!(eff, l, {
                    let x = w.regs[a + l];
                    let v = if signed { x as u32 as i32 as i64 } else { x as u32 as i64 };
                    acc = match i.sub {
                        sub::A_ADD => acc.wrapping_add(v),
                        sub::A_MIN => acc.min(v),
                        sub::A_MAX => acc.max(v),
                        sub::A_AND => acc & v,
                        sub::A_OR => acc | v,
                        _ => acc ^ v,
                    };
                });
                let r = super::alu::ext(i.ty, acc as u32 as u64);
                let d = i.d[0] as usize * 32;
                lanes!(mask, l, {
                    w.regs[d + l] = r;
                });
                Ok(())
            }
            Op::Activemask => {
                let d = i.d[0] as usize * 32;
                lanes!(mask, l, {
                    w.regs[d + l] = mask as u64;
                });
                Ok(())
            }
            Op::BarWarp => {
                if i.s[0] != NONE {
                    self.membermask(w, i, mask, i.s[0])?;
                }
                // orders the shared accesses of the warp's lanes (__syncwarp)
                w.sync_step = w.steps;
                Ok(())
            }
            Op::Ldmatrix | Op::Stmatrix => self.ldmatrix(w, i, mask),
            Op::Mma => self.mma(w, i, mask),
            Op::Wmma => self.wmma(w, i, mask),
            _ => unreachable!(),
        }
    }

    /// Reads the membermask operand and checks that exactly the member lanes execute.
    pub(crate) fn membermask(&self, w: &Warp, i: &Inst, mask: u32, slot: u32) -> R<u32> {
        let m = w.regs[slot as usize * 32 + mask.trailing_zeros() as usize] as u32;
        if self.l.opts.collectives {
            let missing = m & !mask;
            if missing != 0 {
                let exited = missing & w.exited;
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::PartialWarpCollective,
                    format!(
                        "membermask {m:#010x} names lanes {missing:#010x} that are not executing this instruction ({}); executing lanes: {mask:#010x}",
                        if exited != 0 { format!("lanes {exited:#010x} have exited or do not exist") } else { "they are on another branch".to_string() }
                    ),
                ));
            }
            let extra = mask & !m;
            if extra != 0 {
                return Err(self.err(
                    w,
                    None,
                    i,
                    FindingKind::PartialWarpCollective,
                    format!("lanes {extra:#010x} execute it but are not in membermask {m:#010x}"),
                ));
            }
        }
        Ok(m)
    }

    fn shfl(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let m = self.membermask(w, i, mask, i.s[3])?;
        let a = i.s[0] as usize * 32;
        let b = i.s[1] as usize * 32;
        let c = i.s[2] as usize * 32;
        let mut vals = [0u64; 32];
        vals.copy_from_slice(&w.regs[a..a + 32]);
        let mut out = [0u64; 32];
        let mut ok = [false; 32];
        let readable = mask & m;
        lanes!(mask, l, {
            let bval = (w.regs[b + l] & 0x1f) as i32;
            let cv = w.regs[c + l] as u32;
            let seg = ((cv >> 8) & 0x1f) as i32;
            let cval = (cv & 0x1f) as i32;
            let lane = l as i32;
            let max_lane = (lane & seg) | (cval & !seg);
            let min_lane = lane & seg;
            let (j, p) = match i.sub {
                sub::SHFL_UP => {
                    let j = lane - bval;
                    (j, j >= max_lane)
                }
                sub::SHFL_DOWN => {
                    let j = lane + bval;
                    (j, j <= max_lane)
                }
                sub::SHFL_BFLY => {
                    let j = lane ^ bval;
                    (j, j <= max_lane)
                }
                _ => {
                    let j = min_lane | (bval & !seg);
                    (j, j <= max_lane)
                }
            };
            let j = if p { j } else { lane };
            if p && self.l.opts.collectives && (readable >> j) & 1 == 0 {
                return Err(self.err(
                    w,
                    Some(l),
                    i,
                    FindingKind::PartialWarpCollective,
                    format!(
                        "shfl reads lane {j}, which is not executing this shfl.sync or not in membermask {m:#010x}"
                    ),
                ));
            }
            out[l] = vals[j as usize & 31];
            ok[l] = p;
        });
        let d = i.d[0] as usize * 32;
        lanes!(mask, l, {
            w.regs[d + l] = out[l] & 0xffff_ffff;
            if i.d[1] != NONE {
                w.regs[i.d[1] as usize * 32 + l] = ok[l] as u64;
            }
        });
        Ok(())
    }

    fn require_full(&self, w: &Warp, i: &Inst, mask: u32, what: &str) -> R<()> {
        if mask != FULL {
            let missing = !mask;
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::PartialWarpCollective,
                format!("{what} is .sync.aligned: all 32 lanes must execute it together, but lanes {missing:#010x} do not (diverged, exited or beyond the block size)"),
            ));
        }
        Ok(())
    }

    #[allow(clippy::needless_range_loop)] // lane and fragment indices address several parallel arrays
    fn ldmatrix(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        let is_ld = i.op == Op::Ldmatrix;
        self.require_full(w, i, mask, if is_ld { "ldmatrix" } else { "stmatrix" })?;
        let n = i.n as usize;
        let launch = self.l;
        let regs: &[u32] = &launch.kernel.lists[i.list as usize];
        let mut rows = [0u32; 32];
        for r in 0..8 * n {
            let addr = Self::addr_of(w, i, r);
            let loc = self.resolve(
                w,
                i,
                r,
                i.space,
                addr,
                16,
                16,
                if is_ld { "ldmatrix row read" } else { "stmatrix row write" },
            )?;
            let Loc::Shared(o) = loc else {
                return Err(self.err(
                    w,
                    Some(r),
                    i,
                    FindingKind::BadAddress,
                    format!("ldmatrix row address {addr:#x} is not in shared memory"),
                ));
            };
            self.check_shared(w, i, r, o, 16, !is_ld, false)?;
            rows[r] = o;
        }
        let trans = i.has(fl::TRANS);
        // (offsets were checked in bounds above, 16 bytes per row)
        let rd16 = |s: &Self, off: u32| {
            let o = off as usize;
            u16::from_le_bytes(s.shared[o..o + 2].try_into().unwrap_or_default()) as u64
        };
        for (mi, &slot) in regs.iter().enumerate() {
            for l in 0..32usize {
                let (g, t) = ((l >> 2) as u32, (l & 3) as u32);
                let base = 8 * mi as u32;
                let (o0, o1) = if !trans {
                    let r = rows[(base + g) as usize];
                    (r + 4 * t, r + 4 * t + 2)
                } else {
                    (rows[(base + 2 * t) as usize] + 2 * g, rows[(base + 2 * t + 1) as usize] + 2 * g)
                };
                let s = slot as usize * 32 + l;
                if is_ld {
                    w.regs[s] = rd16(self, o0) | (rd16(self, o1) << 16);
                } else {
                    let v = w.regs[s];
                    self.shared[o0 as usize..o0 as usize + 2].copy_from_slice(&(v as u16).to_le_bytes());
                    self.shared[o1 as usize..o1 as usize + 2].copy_from_slice(&((v >> 16) as u16).to_le_bytes());
                }
            }
        }
        if is_ld {
            self.c.shared_load_requests += 1;
        } else {
            self.c.shared_store_requests += 1;
        }
        let used = if n == 4 { FULL } else { (1u32 << (8 * n)) - 1 };
        let (wf, ideal) = super::mem::shared_wavefronts(&rows, used, 16);
        self.c.shared_wavefronts += wf;
        self.c.shared_bank_conflicts += wf - ideal;
        Ok(())
    }

    /// `mma.sync` (m16n8k8/k16/k32): the whole warp's fragments as matrices, D = A * B + C.
    fn mma(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        self.require_full(w, i, mask, "mma.sync")?;
        let list = &self.l.kernel.lists[i.list as usize];
        let (k, na, nb) = match i.sub {
            sub::MMA_F16_M16N8K16 | sub::MMA_BF16_M16N8K16 => (16, 4, 2),
            sub::MMA_F16_M16N8K8 | sub::MMA_BF16_M16N8K8 => (8, 2, 1),
            sub::MMA_TF32_M16N8K8 => (8, 4, 2),
            sub::MMA_S8_M16N8K32 | sub::MMA_U8_M16N8K32 => (32, 4, 2),
            _ => (16, 2, 1),
        };
        let nd = if i.ty == Ty::F16 { 2 } else { 4 };
        let (ds, rest) = list.split_at(nd);
        let (as_, rest) = rest.split_at(na);
        let (bs, cs) = rest.split_at(nb);
        let f = MmaFrags { ds, as_, bs, cs, k };
        if matches!(i.sub, sub::MMA_S8_M16N8K32 | sub::MMA_U8_M16N8K32 | sub::MMA_S8_M16N8K16) {
            mma_int(&mut w.regs, i, &f);
        } else {
            mma_float(&mut w.regs, i, &f, self.l.opts.tensor);
        }
        self.c.tensor_macs += 16 * 8 * k as u64;
        Ok(())
    }

    /// wmma m16n16k16 with this emulator's fragment layout (the ISA leaves it unspecified): A and
    /// B use the mma.m16n8k16 fragments (B as two n-tiles), registers 4..7 duplicate 0..3;
    /// accumulators are two m16n8 C fragments (n-tile 0 then 1).
    #[allow(clippy::needless_range_loop)] // lane and fragment indices address several parallel arrays
    fn wmma(&mut self, w: &mut Warp, i: &Inst, mask: u32) -> R<()> {
        self.require_full(w, i, mask, "wmma")?;
        let launch = self.l;
        let list: &[u32] = &launch.kernel.lists[i.list as usize];
        // (row, col) of element `e` (0..16 for A/B halves, 0..8 for C) of lane `l`
        let a_pos = |l: usize, e: usize| {
            let (g, t, r, h) = (l >> 2, l & 3, (e / 2) % 4, e % 2);
            (g + 8 * (r & 1), 2 * t + 8 * (r >> 1) + h)
        };
        let b_pos = |l: usize, e: usize| {
            let (g, t, r, h) = (l >> 2, l & 3, (e / 2) % 4, e % 2);
            (2 * t + 8 * (r & 1) + h, g + 8 * (r >> 1))
        };
        let c_pos = |l: usize, e: usize| {
            let (g, t, tile, e4) = (l >> 2, l & 3, e >> 2, e & 3);
            (g + 8 * (e4 >> 1), 2 * t + (e4 & 1) + 8 * tile)
        };
        if i.sub == sub::WMMA_MMA {
            let nd = if i.ty == Ty::F16 { 4 } else { 8 };
            let nc = if i.ty2 == Ty::F16 { 4 } else { 8 };
            let (ds, rest) = list.split_at(nd);
            let (as_, rest) = rest.split_at(8);
            let (bs, cs) = rest.split_at(8);
            let conv = |v: u64| if i.n == 1 { fp::bf16_to_f32(v & 0xffff) } else { fp::f16_to_f32(v & 0xffff) };
            let mut a = [[0f32; 16]; 16];
            let mut b = [[0f32; 16]; 16];
            let mut c = [[0f32; 16]; 16];
            for l in 0..32 {
                for e in 0..8 {
                    let va = w.regs[as_[e / 2] as usize * 32 + l] >> (16 * (e % 2));
                    let (r, k) = a_pos(l, e);
                    a[r][k] = conv(va);
                    let vb = w.regs[bs[e / 2] as usize * 32 + l] >> (16 * (e % 2));
                    let (k, n) = b_pos(l, e);
                    b[k][n] = conv(vb);
                    let (r, n) = c_pos(l, e);
                    c[r][n] = if nc == 4 {
                        fp::f16_to_f32(w.regs[cs[e / 2] as usize * 32 + l] >> (16 * (e % 2)))
                    } else {
                        f32::from_bits(w.regs[cs[e] as usize * 32 + l] as u32)
                    };
                }
            }
            for m in 0..16 {
                for k in 0..16 {
                    let av = a[m][k];
                    for n in 0..16 {
                        c[m][n] += av * b[k][n];
                    }
                }
            }
            for l in 0..32 {
                if nd == 4 {
                    for r in 0..4 {
                        let (m0, n0) = c_pos(l, 2 * r);
                        let (m1, n1) = c_pos(l, 2 * r + 1);
                        let lo = fp::Fmt::F16.rn(c[m0][n0] as f64) as u64;
                        let hi = fp::Fmt::F16.rn(c[m1][n1] as f64) as u64;
                        w.regs[ds[r] as usize * 32 + l] = lo | (hi << 16);
                    }
                } else {
                    for e in 0..8 {
                        let (m, n) = c_pos(l, e);
                        w.regs[ds[e] as usize * 32 + l] = c[m][n].to_bits() as u64;
                    }
                }
            }
            self.c.tensor_macs += 16 * 16 * 16;
            return Ok(());
        }
        // loads and stores: element (row, col) at base + (row*ld + col)*esz (col-major: col*ld + row)
        let col_major = i.sub2 == 1;
        let half = matches!(i.sub, sub::WMMA_LOAD_A | sub::WMMA_LOAD_B) || i.ty == Ty::F16;
        let esz = if half { 2u32 } else { 4 };
        let n_el = 8; // A/B: 8 of the 16 duplicated halves; C/D: 8 elements
        let is_store = i.sub == sub::WMMA_STORE_D;
        for l in 0..32usize {
            let base = Self::addr_of(w, i, l);
            let ld = w.regs[i.s[1] as usize * 32 + l] & 0xffff_ffff;
            for e in 0..n_el {
                let (r, cidx) = match i.sub {
                    sub::WMMA_LOAD_A => a_pos(l, e),
                    sub::WMMA_LOAD_B => b_pos(l, e),
                    _ => c_pos(l, e),
                };
                let idx = if col_major { cidx as u64 * ld + r as u64 } else { r as u64 * ld + cidx as u64 };
                let addr = base.wrapping_add(idx * esz as u64);
                let loc =
                    self.resolve(w, i, l, i.space, addr, esz, esz, if is_store { "wmma store" } else { "wmma load" })?;
                match loc {
                    Loc::Shared(o) => self.check_shared(w, i, l, o, esz, is_store, false)?,
                    Loc::Global(_) => self.wmma_global_shadow(w, i, l, addr, esz, is_store)?,
                    _ => {}
                }
                let (slot, shift) = if half { (list[e / 2], 16 * (e % 2)) } else { (list[e], 0) };
                let s = slot as usize * 32 + l;
                if is_store {
                    let v = (w.regs[s] >> shift) & if half { 0xffff } else { 0xffff_ffff };
                    self.store_loc(loc, esz, v);
                } else {
                    let v = self.load_loc(loc, esz);
                    w.regs[s] = if half { (w.regs[s] & !(0xffffu64 << shift)) | (v << shift) } else { v };
                }
            }
            if matches!(i.sub, sub::WMMA_LOAD_A | sub::WMMA_LOAD_B) {
                // registers 4..7 duplicate 0..3
                for r in 0..4 {
                    let v = w.regs[list[r] as usize * 32 + l];
                    w.regs[list[r + 4] as usize * 32 + l] = v;
                }
            }
        }
        Ok(())
    }
}

/// The fragment register slots of one `mma` (D, A, B, C, from its operand list) and its k.
struct MmaFrags<'k> {
    ds: &'k [u32],
    as_: &'k [u32],
    bs: &'k [u32],
    cs: &'k [u32],
    k: usize,
}

/// The f16 or f32 accumulator fragment C of every lane as a 16x8 f32 tile.
#[allow(clippy::needless_range_loop)] // lane and fragment indices address several parallel arrays
fn mma_c_float(regs: &[u64], i: &Inst, cs: &[u32]) -> [[f32; 8]; 16] {
    let r = |slot: u32, l: usize| regs[slot as usize * 32 + l];
    let mut cf = [[0f32; 8]; 16];
    if i.ty2 == Ty::F16 {
        let table = fp::f16_table();
        for l in 0..32usize {
            let (g, t) = (l >> 2, l & 3);
            for e in 0..4 {
                let v = r(cs[e >> 1], l) >> (16 * (e & 1));
                cf[g + 8 * (e >> 1)][2 * t + (e & 1)] = table[(v & 0xffff) as usize];
            }
        }
    } else {
        for (e, &slot) in cs[..4].iter().enumerate() {
            let lanes = &regs[slot as usize * 32..slot as usize * 32 + 32];
            for (l, &v) in lanes.iter().enumerate() {
                cf[(l >> 2) + 8 * (e >> 1)][2 * (l & 3) + (e & 1)] = f32::from_bits(v as u32);
            }
        }
    }
    cf
}

/// The s32 accumulator fragment C as a 16x8 tile.
fn mma_c_int(regs: &[u64], cs: &[u32]) -> [[i64; 8]; 16] {
    let mut ci = [[0i64; 8]; 16];
    for (e, &slot) in cs[..4].iter().enumerate() {
        let lanes = &regs[slot as usize * 32..slot as usize * 32 + 32];
        for (l, &v) in lanes.iter().enumerate() {
            ci[(l >> 2) + 8 * (e >> 1)][2 * (l & 3) + (e & 1)] = v as u32 as i32 as i64;
        }
    }
    ci
}

/// Whether any of `h` is an f16 infinity or NaN (exponent all ones), four halves per 64-bit
/// word: a lane of `(x & EXP) ^ EXP` is zero exactly for such a half, and the classic
/// zero-lane test `(v - 1s) & !v & 8s` is non-zero exactly when some lane is zero.
fn any_f16_special(h: &[u16]) -> bool {
    const EXP: u64 = 0x7c00_7c00_7c00_7c00;
    let (ones, highs) = (0x0001_0001_0001_0001u64, 0x8000_8000_8000_8000u64);
    let mut words = h.chunks_exact(4);
    let hit = words.by_ref().fold(0u64, |acc, q| {
        let x = q[0] as u64 | (q[1] as u64) << 16 | (q[2] as u64) << 32 | (q[3] as u64) << 48;
        let v = (x & EXP) ^ EXP;
        acc | (v.wrapping_sub(ones) & !v & highs)
    });
    hit != 0 || words.remainder().iter().any(|x| x & 0x7c00 == 0x7c00)
}

/// Integer `mma` (s8/u8 inputs, s32 accumulators, optionally saturating). A is held as i32
/// rows along k and B as rows of eight columns, so a row of the result is eight lanes of
/// multiply-adds (AVX2 when the CPU has it); a sum of 32 byte products fits i32.
#[allow(clippy::needless_range_loop)] // lane and fragment indices address several parallel arrays
fn mma_int(regs: &mut [u64], i: &Inst, f: &MmaFrags) {
    let MmaFrags { ds, as_, bs, k, .. } = *f;
    let ci = mma_c_int(regs, f.cs);
    let r = |slot: u32, l: usize| regs[slot as usize * 32 + l];
    let signed = i.sub != sub::MMA_U8_M16N8K32;
    // each register holds four consecutive k of one row of A (one column of B): copy the raw
    // bytes as they lie, widen afterwards
    let mut a8 = [[0u8; 32]; 16];
    let mut bt8 = [[0u8; 32]; 8];
    for l in 0..32usize {
        let (g, t) = (l >> 2, l & 3);
        for (ri, &s) in as_.iter().enumerate() {
            let col = 4 * t + 16 * (ri >> 1);
            a8[g + 8 * (ri & 1)][col..col + 4].copy_from_slice(&(r(s, l) as u32).to_le_bytes());
        }
        for (ri, &s) in bs.iter().enumerate() {
            let kk = 4 * t + 16 * ri;
            bt8[g][kk..kk + 4].copy_from_slice(&(r(s, l) as u32).to_le_bytes());
        }
    }
    let widen = |x: u8| if signed { x as i8 as i32 } else { x as i32 };
    let a = a8.map(|row| row.map(widen));
    let mut b = [[0i32; 8]; 32];
    for (n, col) in bt8.iter().enumerate() {
        for (kk, &x) in col.iter().enumerate() {
            b[kk][n] = widen(x);
        }
    }
    let dots = int_dots(&a, &b, k);
    let sat = i.has(fl::SATFINITE);
    let mut out = [[0u64; 8]; 16];
    for m in 0..16 {
        for n in 0..8 {
            let v = ci[m][n] + dots[m][n] as i64;
            out[m][n] = if sat {
                v.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32 as u64
            } else {
                v as i32 as u32 as u64
            };
        }
    }
    for l in 0..32usize {
        let (g, t) = (l >> 2, l & 3);
        for e in 0..4 {
            regs[ds[e] as usize * 32 + l] = super::alu::ext(Ty::S32, out[g + 8 * (e >> 1)][2 * t + (e & 1)]);
        }
    }
}

/// The 16x8 products A x B over `k` (at most 32) of byte-valued operands.
fn int_dots(a: &[[i32; 32]; 16], b: &[[i32; 8]; 32], k: usize) -> [[i32; 8]; 16] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above); the same safe code compiled for it
        return unsafe { int_dots_avx2(a, b, k) };
    }
    int_dots_any(a, b, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn int_dots_avx2(a: &[[i32; 32]; 16], b: &[[i32; 8]; 32], k: usize) -> [[i32; 8]; 16] {
    int_dots_any(a, b, k)
}

#[inline(always)]
fn int_dots_any(a: &[[i32; 32]; 16], b: &[[i32; 8]; 32], k: usize) -> [[i32; 8]; 16] {
    let mut out = [[0i32; 8]; 16];
    for (row, arow) in out.iter_mut().zip(a) {
        for (&av, brow) in arow[..k].iter().zip(b) {
            for n in 0..8 {
                row[n] += av * brow[n];
            }
        }
    }
    out
}

/// Floating-point `mma` (f16/bf16/tf32 inputs, f16 or f32 accumulators) under the tensor
/// accumulation model of the launch.
#[allow(clippy::needless_range_loop)] // lane and fragment indices address several parallel arrays
fn mma_float(regs: &mut [u64], i: &Inst, f: &MmaFrags, tensor: TensorAccum) {
    if let TensorAccum::FusedTruncate { block, extra_bits } = tensor {
        if matches!(i.sub, sub::MMA_F16_M16N8K16 | sub::MMA_F16_M16N8K8)
            && mma_f16_fast(regs, i, f, block.max(1) as usize, extra_bits)
        {
            return;
        }
    }
    let MmaFrags { ds, as_, bs, k, .. } = *f;
    let cf = mma_c_float(regs, i, f.cs);
    let r = |slot: u32, l: usize| regs[slot as usize * 32 + l];
    let mut a = [[0f32; 16]; 16];
    let mut b = [[0f32; 8]; 16];
    let bf16 = matches!(i.sub, sub::MMA_BF16_M16N8K16 | sub::MMA_BF16_M16N8K8);
    let table = fp::f16_table();
    let conv = |v: u64| -> f32 {
        if bf16 {
            fp::bf16_to_f32(v & 0xffff)
        } else {
            table[(v & 0xffff) as usize]
        }
    };
    for l in 0..32usize {
        let (g, t) = (l >> 2, l & 3);
        if i.sub == sub::MMA_TF32_M16N8K8 {
            let tf = |v: u64| f32::from_bits(v as u32 & 0xffff_e000);
            for (ri, &s) in as_.iter().enumerate() {
                a[g + 8 * (ri & 1)][t + 4 * (ri >> 1)] = tf(r(s, l));
            }
            for (ri, &s) in bs.iter().enumerate() {
                b[t + 4 * ri][g] = tf(r(s, l));
            }
            continue;
        }
        for (ri, &s) in as_.iter().enumerate() {
            let v = r(s, l);
            let (row, col) = (g + 8 * (ri & 1), 2 * t + 8 * (ri >> 1));
            a[row][col] = conv(v);
            a[row][col + 1] = conv(v >> 16);
        }
        for (ri, &s) in bs.iter().enumerate() {
            let v = r(s, l);
            let kk = 2 * t + 8 * ri;
            b[kk][g] = conv(v);
            b[kk + 1][g] = conv(v >> 16);
        }
    }
    let fused = match tensor {
        TensorAccum::FusedTruncate { block, extra_bits } if i.sub != sub::MMA_TF32_M16N8K8 => {
            Some((block as usize, extra_bits))
        }
        _ => None,
    };
    let mut out = cf;
    if let Some((block, extra)) = fused {
        // blocks of `block` consecutive k, each one fused add into the accumulator; a row's
        // eight columns at once
        let block = block.max(1);
        let b64 = b.map(|row| row.map(|x| x as f64));
        let mut prods = [[0f64; 8]; 16];
        for m in 0..16 {
            let mut acc = out[m];
            for k0 in (0..k).step_by(block) {
                let k1 = (k0 + block).min(k);
                for kk in k0..k1 {
                    let av = a[m][kk] as f64;
                    for n in 0..8 {
                        prods[kk - k0][n] = av * b64[kk][n];
                    }
                }
                super::tensor::fused_truncate_cols(&mut acc, &prods[..k1 - k0], extra);
            }
            out[m] = acc;
        }
    }
    // n innermost so the 8 columns vectorise; each output still sums k in order
    for m in (0..16).filter(|_| fused.is_none()) {
        let row = &mut out[m];
        for kk in 0..k {
            let av = a[m][kk];
            let br = &b[kk];
            for n in 0..8 {
                row[n] += av * br[n];
            }
        }
    }
    write_d(regs, ds, &out);
}

/// The common f16 `mma` under the block model: fragments gathered as raw halves (each register
/// holds two consecutive k of a row of A or a column of B), converted in bulk, and the whole tile
/// through `tensor::f16_tile_fused`. Returns false, having written nothing, when the model's
/// fast form does not apply (an infinity or NaN among the inputs, grid integers that would not
/// fit i32, an accumulator leaving the fast range): the general path then runs.
fn mma_f16_fast(regs: &mut [u64], i: &Inst, f: &MmaFrags, block: usize, extra: u32) -> bool {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    let MmaFrags { ds, as_, bs, k, .. } = *f;
    if !super::tensor::f16_fast_fits(block.min(k), extra) {
        return false;
    }
    let r = |slot: u32, l: usize| regs[slot as usize * 32 + l];
    let mut ah = [[0u16; 16]; 16];
    let mut bth = [[0u16; 16]; 8];
    for l in 0..32usize {
        let (g, t) = (l >> 2, l & 3);
        for (ri, &s) in as_.iter().enumerate() {
            let (row, col) = (g + 8 * (ri & 1), 2 * t + 8 * (ri >> 1));
            let v = r(s, l);
            (ah[row][col], ah[row][col + 1]) = (v as u16, (v >> 16) as u16);
        }
        for (ri, &s) in bs.iter().enumerate() {
            let kk = 2 * t + 8 * ri;
            let v = r(s, l);
            (bth[g][kk], bth[g][kk + 1]) = (v as u16, (v >> 16) as u16);
        }
    }
    if any_f16_special(ah.as_flattened()) || any_f16_special(bth.as_flattened()) {
        return false;
    }
    let c = mma_c_float(regs, i, f.cs);
    if !c.as_flattened().iter().all(|x| x.is_finite()) {
        return false;
    }
    let mut a = [[0f32; 16]; 16];
    let mut bt = [[0f32; 16]; 8];
    ah.as_flattened().reinterpret_cast::<half::f16>().convert_to_f32_slice(a.as_flattened_mut());
    bth.as_flattened().reinterpret_cast::<half::f16>().convert_to_f32_slice(bt.as_flattened_mut());
    let mut b = [[0f32; 8]; 16];
    for (n, col) in bt.iter().enumerate() {
        for (kk, &x) in col.iter().enumerate() {
            b[kk][n] = x;
        }
    }
    match super::tensor::f16_tile_fused(&a, &b, &c, k, block, extra) {
        Some(tile) => {
            write_d(regs, ds, &tile);
            true
        }
        None => false,
    }
}

/// The D fragments of every lane from the 16x8 result: f16 pairs (two registers) or f32 (four).
fn write_d(regs: &mut [u64], ds: &[u32], out: &[[f32; 8]; 16]) {
    if ds.len() == 2 {
        for l in 0..32usize {
            let (g, t) = (l >> 2, l & 3);
            for e in 0..2 {
                let row = g + 8 * e;
                let lo = fp::Fmt::F16.rn(out[row][2 * t] as f64) as u64;
                let hi = fp::Fmt::F16.rn(out[row][2 * t + 1] as f64) as u64;
                regs[ds[e] as usize * 32 + l] = lo | (hi << 16);
            }
        }
        return;
    }
    for (e, &slot) in ds[..4].iter().enumerate() {
        let lanes = &mut regs[slot as usize * 32..slot as usize * 32 + 32];
        for (l, v) in lanes.iter_mut().enumerate() {
            *v = out[(l >> 2) + 8 * (e >> 1)][2 * (l & 3) + (e & 1)].to_bits() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_special_scan_matches_the_scalar_test() {
        let scalar = |h: &[u16]| h.iter().any(|x| x & 0x7c00 == 0x7c00);
        let mut seed = 0x9e37_79b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [0usize, 1, 3, 4, 7, 16, 256, 257] {
            for _ in 0..200 {
                // mostly finite halves, a special one now and then, at any position
                let h: Vec<u16> = (0..len)
                    .map(|_| {
                        let x = next() as u16;
                        if next() % 97 == 0 {
                            x | 0x7c00
                        } else {
                            x & !0x4000
                        }
                    })
                    .collect();
                assert_eq!(any_f16_special(&h), scalar(&h), "{h:04x?}");
            }
        }
        for special in [0x7c00u16, 0xfc00, 0x7e00, 0x7fff, 0xffff, 0x7c01] {
            for pos in 0..9 {
                let mut h = vec![0x3c00u16; 9];
                h[pos] = special;
                assert!(any_f16_special(&h));
            }
        }
        assert!(!any_f16_special(&[0x7bff, 0xfbff, 0x0000, 0x8000, 0x3c00]));
    }
}
