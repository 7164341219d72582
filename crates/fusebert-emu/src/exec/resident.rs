//! Co-scheduled launches: blocks that wait on each other through global memory.
//!
//! A kernel that polls global memory (a strong load, `ld.volatile` / `ld.relaxed` /
//! `ld.acquire`, or `atom.cas`: `Kernel::polls_global`) may have blocks that wait for other
//! blocks' stores: a grid-wide barrier, a decoupled look-back, a "wait until every block of
//! my group has finished" hand-off. Run to completion one block per host thread, such a block
//! would wait for a block that never runs. So these launches run as the hardware runs them:
//!
//! - At most `capacity` blocks are resident at once: the SMs of the architecture times the
//!   blocks one SM holds by threads and shared memory (`arch::SmLimits`; registers are not
//!   counted, ptxas allocates them), or `EmulatorOptions::resident_blocks`. A block becomes
//!   resident when one finishes, in blockIdx order (lazy, eager completion) or in a seeded
//!   random order (random completion: the hardware does not promise an order, so a kernel
//!   that relies on one is caught).
//! - The resident blocks take turns on one host thread, so that they run side by side as on
//!   the SMs: a turn runs a block for `TURN_STEPS` warp instructions, or until every warp is
//!   done, waits at a barrier, or *polls*: a poll that reads what the same warp's earlier poll
//!   read, with no store of the warp in between, parks the warp (it can only go on after
//!   another block's store). A parked warp runs again at its block's next turn, or at once when
//!   a global store happens.
//! - Deadlock: two whole rounds of turns in which no block used up its time slice, no global
//!   store or memory-changing atomic happened and no block started or finished. The finding
//!   names the polls, and how many blocks were resident of the grid: a block that waits for one
//!   that cannot be resident hangs a GPU the same way.
use std::sync::atomic::Ordering;

use super::Counters;
use crate::arch::AsyncMode;
use crate::error::Error;
use crate::finding::{Finding, FindingKind};
use crate::state::*;

type R<T> = Result<T, Error>;

/// Rounds without progress before a co-scheduled launch is declared deadlocked.
const IDLE_ROUNDS: u32 = 2;
/// Warp instructions a resident block runs per turn.
pub(crate) const TURN_STEPS: u64 = 2048;

impl Launch<'_> {
    /// Blocks resident at once: the option, else the architecture's SMs x blocks per SM.
    pub(crate) fn resident_capacity(&self) -> u64 {
        if self.opts.resident_blocks > 0 {
            return self.opts.resident_blocks as u64;
        }
        let per_sm = self.opts.sm.blocks_per_sm(self.nthreads, self.smem_total).max(1);
        self.opts.sm.sms as u64 * per_sm as u64
    }

    /// The order blocks become resident in: blockIdx order, or a seeded shuffle (random
    /// completion).
    fn start_order(&self, n: u64) -> Vec<u64> {
        let mut order: Vec<u64> = (0..n).collect();
        if let AsyncMode::Random(seed) = self.opts.async_mode {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        order
    }

    fn ctaid(&self, b: u64) -> [u32; 3] {
        let (gx, gy) = (self.grid.0 as u64, self.grid.1 as u64);
        [(b % gx) as u32, ((b / gx) % gy) as u32, (b / (gx * gy)) as u32]
    }

    /// Runs the grid co-scheduled (see the top of the file).
    pub(crate) fn run_resident(&self) -> R<Counters> {
        self.guarded("", || self.run_resident_inner())
    }

    fn run_resident_inner(&self) -> R<Counters> {
        let n = self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64;
        let capacity = self.resident_capacity().min(n);
        let order = self.start_order(n);
        let mut next = 0usize;
        let mut resident: Vec<Block> = Vec::new();
        let mut total = Counters::default();
        let (mut idle, mut round) = (0u32, 0u64);
        loop {
            while (resident.len() as u64) < capacity && next < order.len() {
                resident.push(Block::new(self, self.ctaid(order[next])));
                next += 1;
                self.epoch.fetch_add(1, Ordering::Relaxed);
            }
            if resident.is_empty() {
                return Ok(total);
            }
            let before = self.epoch.load(Ordering::Relaxed);
            // random completion also rotates the turns, so no one interleaving is the only one
            let start = match self.opts.async_mode {
                AsyncMode::Random(seed) => (seed.wrapping_add(round) % resident.len() as u64) as usize,
                _ => 0,
            };
            let mut finished = vec![false; resident.len()];
            let mut sliced = false;
            for k in 0..resident.len() {
                let r = (start + k) % resident.len();
                if resident[r].run()? {
                    finished[r] = true;
                    self.epoch.fetch_add(1, Ordering::Relaxed);
                }
                sliced |= resident[r].sliced;
            }
            let mut k = 0;
            resident.retain_mut(|b| {
                let done = finished[k];
                k += 1;
                if done {
                    total.add(&self.finish_block(b));
                }
                !done
            });
            round += 1;
            idle = if !sliced && self.epoch.load(Ordering::Relaxed) == before { idle + 1 } else { 0 };
            if idle >= IDLE_ROUNDS {
                return Err(self.resident_deadlock(&resident, n - next as u64, capacity));
            }
        }
    }

    /// Every resident block polls memory no resident block will change.
    fn resident_deadlock(&self, resident: &[Block], not_started: u64, capacity: u64) -> Error {
        let n = self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64;
        let b = &resident[0];
        let mut polls: Vec<String> = Vec::new();
        // the poll's instruction, for its .cu location
        let at = |line: u32| self.kernel.insts.iter().find(|i| i.line == line);
        for blk in resident.iter().take(4) {
            if let Some(w) = blk.warps.iter().find(|w| w.poll.parked) {
                polls.push(format!(
                    "block ({},{},{}) warp {} at PTX line {}{}",
                    blk.ctaid[0],
                    blk.ctaid[1],
                    blk.ctaid[2],
                    w.id,
                    w.poll.line,
                    at(w.poll.line).map_or(String::new(), |i| self.cu_loc_of(i.loc))
                ));
            }
        }
        let first = resident.iter().flat_map(|b| b.warps.iter()).find(|w| w.poll.parked).map(|w| w.poll.line);
        Finding {
            kind: FindingKind::Deadlock,
            kernel: self.kernel.name.clone(),
            module: self.module.name.clone(),
            block: (b.ctaid[0], b.ctaid[1], b.ctaid[2]),
            thread: None,
            warp: None,
            ptx_line: first,
            cu_location: first.and_then(at).and_then(|i| self.cu_location(i.loc)),
            detail: format!(
                "every resident block waits on global memory that no resident block changes ({}{}); {} of the \
                 grid's {n} blocks are resident (at most {capacity} at once: {}), {not_started} not yet started: \
                 a block that waits for a block that cannot be resident yet hangs on a GPU too",
                polls.join("; "),
                if resident.len() > 4 { "; ..." } else { "" },
                resident.len(),
                if self.opts.resident_blocks > 0 {
                    "EmulatorOptions::resident_blocks".to_string()
                } else {
                    format!(
                        "{} SMs x {} blocks per SM",
                        self.opts.sm.sms,
                        self.opts.sm.blocks_per_sm(self.nthreads, self.smem_total)
                    )
                }
            ),
        }
        .into()
    }
}
