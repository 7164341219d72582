//! Register definedness: which register slots each instruction reads and writes, so the
//! executor can report a register read before anything wrote it (per register and per lane:
//! a half-written vector or a predicate set on some paths only is caught element by element).
//!
//! On hardware such a register holds whatever the physical register held before: a missing
//! accumulator zero-init works by luck in one build and not the next. The emulator's registers
//! start at 0, which would hide exactly that bug.
use super::ir::*;

/// Register slots (below `Kernel::nregs`) read and written by each instruction.
pub struct RegUse {
    /// Per instruction: start in `slots`, number of reads, number of writes (reads first).
    index: Vec<(u32, u16, u16)>,
    slots: Vec<u32>,
}

impl RegUse {
    pub fn new(k: &Kernel) -> RegUse {
        let mut index = Vec::with_capacity(k.insts.len());
        let mut slots = Vec::new();
        for i in &k.insts {
            let (reads, writes) = operands(k, i);
            let start = slots.len() as u32;
            let keep = |s: &u32| *s != NONE && *s < k.nregs;
            let reads: Vec<u32> = reads.into_iter().filter(keep).collect();
            let writes: Vec<u32> = writes.into_iter().filter(keep).collect();
            index.push((start, reads.len() as u16, writes.len() as u16));
            slots.extend(reads);
            slots.extend(writes);
        }
        RegUse { index, slots }
    }

    /// Slots read by instruction `pc`.
    pub fn reads(&self, pc: usize) -> &[u32] {
        let (s, r, _) = self.index[pc];
        &self.slots[s as usize..s as usize + r as usize]
    }

    /// Slots written by instruction `pc`.
    pub fn writes(&self, pc: usize) -> &[u32] {
        let (s, r, w) = self.index[pc];
        let s = s as usize + r as usize;
        &self.slots[s..s + w as usize]
    }
}

/// (reads, writes) of one instruction, before filtering to register slots. The guard
/// predicate is checked separately (it is read by every active lane, even where false).
pub(crate) fn operands(k: &Kernel, i: &Inst) -> (Vec<u32>, Vec<u32>) {
    let list = |n: u32| if n == NONE { Vec::new() } else { k.lists[n as usize].clone() };
    let s: Vec<u32> = i.s.to_vec();
    let d: Vec<u32> = i.d.to_vec();
    match i.op {
        // lists of local-memory offsets, not registers
        Op::Call | Op::Printf | Op::Bra | Op::Ret | Op::Exit | Op::Trap => (Vec::new(), Vec::new()),
        Op::St | Op::Stmatrix => ([s, list(i.list)].concat(), Vec::new()),
        Op::Ldmatrix => (s, list(i.list)),
        // wgmma's list: the accumulators (read and written), then any A registers (read)
        Op::Wgmma => {
            let l = list(i.list);
            let nacc = if i.sub == sub::WG_MMA { i.wgmma_accs().min(l.len()) } else { l.len() };
            ([s, l.clone()].concat(), l[..nacc].to_vec())
        }
        // the tensor coordinates are a list
        Op::BulkTensor => ([s, list(i.list)].concat(), Vec::new()),
        Op::Mma => {
            let l = list(i.list);
            let nd = if i.ty == Ty::F16 { 2 } else { 4 };
            let nd = nd.min(l.len());
            (l[nd..].to_vec(), l[..nd].to_vec())
        }
        // the fragment layout of wmma lists is per operation: count every listed register as
        // written (so later reads are not false reports) and check none of its reads
        Op::Wmma => (Vec::new(), [d, list(i.list)].concat()),
        // addc/subc read the carry register d[1]; it is written by the add.cc before it
        Op::Add | Op::Sub if i.has(fl::CARRY_IN) => (s, d),
        _ => (s, d),
    }
}
