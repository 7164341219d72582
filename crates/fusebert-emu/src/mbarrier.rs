//! The `mbarrier` state machine (PTX ISA 9.7.13.15, "Parallel Synchronization and Communication
//! Instructions: mbarrier"): an 8-byte object in shared memory with a phase, a pending-arrival
//! count, the expected count it resets to, and a transaction count.
//!
//! A phase completes when its pending arrivals reach zero and its transaction count is zero;
//! the phase number then advances and the pending count resets. `try_wait.parity par` is true
//! once the phase of parity `par` (the current or the immediately preceding one) has completed:
//! `(phase & 1) != par`. The table is keyed by the barrier's shared-memory offset; the misuse the
//! hardware turns into hangs or silent corruption (use before init, extra arrivals, `expect_tx`
//! bytes that differ from the bytes delivered) comes back as a typed [`MbarError`].
use std::collections::BTreeMap;

/// Largest arrival count and transaction count (2^20 - 1).
pub const MAX_COUNT: i64 = (1 << 20) - 1;

/// One barrier's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MBarrier {
    /// Completed phases so far (the current phase's number).
    pub phase: u32,
    /// The count given at `init` (what `pending` resets to).
    pub expected: u32,
    /// Arrivals still missing in the current phase.
    pub pending: u32,
    /// Bytes expected (`expect_tx`) minus bytes delivered (`complete_tx`) in the current phase.
    pub tx: i64,
    /// Bytes announced by `expect_tx` in the current phase (for the S8 report).
    pub tx_expected: i64,
    /// Bytes `expect_tx` announced in the last completed phase (for the S8 report).
    pub last_expected: i64,
    /// Initialised and not invalidated.
    pub live: bool,
    /// PTX line of the `init`.
    pub init_line: u32,
    /// The thread (in its block) that executed the `init`.
    pub init_thread: u32,
    /// That thread has executed `fence.mbarrier_init` or `fence.proxy.async` since the init:
    /// the init is ordered for the async proxy (the TMA unit's `complete_tx`).
    pub init_fenced: bool,
    /// A block barrier (`bar.sync`) completed since the init: other threads may use it.
    pub init_synced: bool,
    /// A block barrier completed after the fence: the TMA of other threads may use it (S12).
    pub init_published: bool,
}

/// Misuse of a barrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MbarError {
    /// An operation on a barrier never initialised (or invalidated).
    NotInitialised,
    /// `init` of a barrier that is live (the ISA requires `inval` first).
    InitLive,
    /// `init` count outside 1..=2^20-1.
    BadCount(i64),
    /// More arrivals than the phase expects.
    ExtraArrival { count: u32, pending: u32 },
    /// `arrive.noComplete` that would complete the phase.
    NoCompleteCompletes,
    /// S8: more bytes delivered than `expect_tx` announced: a copy issued in phase `phase`
    /// landing after that phase completed (its bytes spill into a later phase), or bytes that
    /// no `expect_tx` claimed when the block can go no further (the transaction count still
    /// below zero at a deadlock or at block exit). A count below zero inside a phase is legal
    /// (`complete_tx` may come before `expect_tx`): it is judged only where the surplus would
    /// cross a phase boundary.
    TxOverflow { expected: i64, delivered: i64, phase: u32, crossed: bool },
    /// S12: a use whose ordering after the `init` nothing guarantees: by another thread before
    /// a block barrier, or by a TMA copy before the initialising thread's fence (and, for a
    /// copy issued by another thread, a block barrier after that fence).
    InitNotVisible { init_line: u32, init_thread: u32, by_tma: bool, fenced: bool, synced: bool },
}

impl std::fmt::Display for MbarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MbarError::NotInitialised => {
                write!(f, "the mbarrier is used before mbarrier.init (or after mbarrier.inval)")
            }
            MbarError::InitLive => {
                write!(f, "mbarrier.init of a barrier that is already initialised (mbarrier.inval it first)")
            }
            MbarError::BadCount(n) => write!(f, "mbarrier.init count {n} is outside 1..=1048575"),
            MbarError::ExtraArrival { count, pending } => write!(
                f,
                "{count} arrival(s) on an mbarrier whose current phase expects only {pending} more: more arrivals \
                 than the init count (the extra ones would count towards the next phase on hardware)"
            ),
            MbarError::NoCompleteCompletes => write!(f, "mbarrier.arrive.noComplete would complete the phase"),
            MbarError::TxOverflow { expected, delivered, phase, crossed: true } => write!(
                f,
                "expect_tx bytes differ from the bytes delivered: phase {phase} completed with the {expected} bytes \
                 its expect_tx announced, and this copy of {delivered} bytes, issued in that phase, lands after it: \
                 its bytes count towards phase {} (which completes early, racing with its own copies)",
                phase + 1
            ),
            MbarError::TxOverflow { expected, delivered, phase, crossed: false } => write!(
                f,
                "expect_tx bytes differ from the bytes delivered: phase {phase} was delivered {delivered} bytes \
                 where its expect_tx announced {expected} (transaction count below zero, and nothing left to \
                 bring it back: the surplus spills into the next phase)"
            ),
            MbarError::InitNotVisible { init_line, init_thread, by_tma, fenced, synced } => {
                let what = if *by_tma { "a TMA copy completes on it" } else { "another thread uses it" };
                let missing = match (by_tma, fenced, synced) {
                    (true, false, _) => {
                        "fence.mbarrier_init.release.cluster (or fence.proxy.async) by the \
                                         initialising thread, then a bar.sync before other threads issue copies"
                    }
                    (true, true, _) => "a bar.sync after the initialising thread's fence",
                    _ => "a bar.sync between the init and this use",
                };
                write!(
                    f,
                    "{what} before its mbarrier.init (PTX line {init_line}, thread {init_thread} of the block) is \
                     made visible: missing {missing} (CUTLASS: fence_barrier_init + __syncthreads/cluster_sync); \
                     uninitialised barrier state may be seen"
                )
            }
        }
    }
}

/// Every barrier of a block, by shared offset.
#[derive(Debug, Default, Clone)]
pub struct MbarTable {
    pub bars: BTreeMap<u32, MBarrier>,
    /// Changes so far (arrivals, transactions, completions): waiters that failed see whether
    /// anything happened since.
    pub events: u64,
    /// Phase completions so far.
    pub completions: u64,
}

/// Whether an operation completed the barrier's phase.
pub type Completed = bool;

impl MbarTable {
    fn live(&mut self, off: u32) -> Result<&mut MBarrier, MbarError> {
        match self.bars.get_mut(&off) {
            Some(b) if b.live => Ok(b),
            _ => Err(MbarError::NotInitialised),
        }
    }

    /// `mbarrier.init [off], count` by thread `thread` of the block.
    pub fn init(&mut self, off: u32, count: i64, line: u32, thread: u32) -> Result<(), MbarError> {
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(MbarError::BadCount(count));
        }
        if self.bars.get(&off).is_some_and(|b| b.live) {
            return Err(MbarError::InitLive);
        }
        let n = count as u32;
        let b = MBarrier {
            phase: 0,
            expected: n,
            pending: n,
            tx: 0,
            tx_expected: 0,
            last_expected: 0,
            live: true,
            init_line: line,
            init_thread: thread,
            init_fenced: false,
            init_synced: false,
            init_published: false,
        };
        self.bars.insert(off, b);
        self.events += 1;
        Ok(())
    }

    /// `fence.mbarrier_init` / `fence.proxy.async` (shared) by thread `thread`: its inits so far
    /// are ordered for the async proxy.
    pub fn fence_inits(&mut self, thread: u32) {
        for b in self.bars.values_mut().filter(|b| b.live && b.init_thread == thread) {
            b.init_fenced = true;
        }
    }

    /// A block barrier completed: every init so far is visible to the block's threads, and a
    /// fenced one to their TMA copies.
    pub fn block_synced(&mut self) {
        for b in self.bars.values_mut().filter(|b| b.live) {
            b.init_synced = true;
            b.init_published |= b.init_fenced;
        }
    }

    /// S12: whether thread `thread` may use barrier `off` (`by_tma`: as the barrier of a TMA copy
    /// it issues). Not-live barriers pass (their use is reported as such).
    pub fn check_visible(&self, off: u32, thread: u32, by_tma: bool) -> Result<(), MbarError> {
        let Some(b) = self.bars.get(&off).filter(|b| b.live) else { return Ok(()) };
        let own = thread == b.init_thread;
        let ok = match (by_tma, own) {
            (true, true) => b.init_fenced,
            (true, false) => b.init_published,
            (false, true) => true,
            (false, false) => b.init_synced,
        };
        if ok {
            return Ok(());
        }
        Err(MbarError::InitNotVisible {
            init_line: b.init_line,
            init_thread: b.init_thread,
            by_tma,
            fenced: b.init_fenced,
            synced: b.init_synced,
        })
    }

    /// `mbarrier.inval [off]`.
    pub fn inval(&mut self, off: u32) -> Result<(), MbarError> {
        self.live(off)?.live = false;
        self.events += 1;
        Ok(())
    }

    /// `expect_tx` (alone or as part of `arrive.expect_tx`): the phase waits for `bytes` more
    /// (or, when they landed first and every arrival is in, completes).
    pub fn expect_tx(&mut self, off: u32, bytes: i64) -> Result<Completed, MbarError> {
        let b = self.live(off)?;
        b.tx += bytes;
        b.tx_expected += bytes;
        self.events += 1;
        self.try_complete(off)
    }

    /// `count` arrivals; returns the state token (the phase arrived on) and whether the phase
    /// completed.
    pub fn arrive(&mut self, off: u32, count: u32, no_complete: bool) -> Result<(u64, Completed), MbarError> {
        let b = self.live(off)?;
        if count > b.pending {
            return Err(MbarError::ExtraArrival { count, pending: b.pending });
        }
        if no_complete && count == b.pending && b.tx == 0 {
            return Err(MbarError::NoCompleteCompletes);
        }
        let token = b.phase as u64;
        b.pending -= count;
        self.events += 1;
        let done = self.try_complete(off)?;
        Ok((token, done))
    }

    /// `complete_tx` (what a TMA copy performs when its bytes land).
    pub fn complete_tx(&mut self, off: u32, bytes: i64) -> Result<Completed, MbarError> {
        self.live(off)?.tx -= bytes;
        self.events += 1;
        self.try_complete(off)
    }

    /// Completes the current phase when every arrival and every byte is in. A transaction
    /// count below zero keeps the phase open (an `expect_tx` may still bring it back to zero);
    /// [`MbarTable::surplus`] reports it where the block can go no further.
    fn try_complete(&mut self, off: u32) -> Result<Completed, MbarError> {
        let b = self.live(off)?;
        if b.pending != 0 || b.tx != 0 {
            return Ok(false);
        }
        b.phase += 1;
        b.pending = b.expected;
        b.last_expected = b.tx_expected;
        b.tx_expected = 0;
        self.completions += 1;
        Ok(true)
    }

    /// S8, where nothing more can happen (deadlock, block exit): the first live barrier whose
    /// transaction count is below zero, as (offset, the error).
    pub fn surplus(&self) -> Option<(u32, MbarError)> {
        self.bars.iter().find(|(_, b)| b.live && b.tx < 0).map(|(&off, b)| {
            let e = MbarError::TxOverflow {
                expected: b.tx_expected,
                delivered: b.tx_expected - b.tx,
                phase: b.phase,
                crossed: false,
            };
            (off, e)
        })
    }

    /// `test_wait`/`try_wait`: with `.parity`, whether the phase of parity `v` has completed;
    /// with a state token, whether the phase the token was taken in has completed.
    /// Returns the answer and, when true, the number of the completed phase it refers to
    /// (-1: the phase "before" a fresh barrier, which a parity-1 wait passes at once).
    pub fn wait(&mut self, off: u32, v: u64, parity: bool) -> Result<(bool, i64), MbarError> {
        let b = self.live(off)?;
        let p = b.phase as i64;
        if parity {
            let par = (v & 1) as i64;
            if (p & 1) != par {
                return Ok((true, p - 1));
            }
            return Ok((false, 0));
        }
        let tok = v as i64;
        Ok((p > tok, tok))
    }

    /// One line per barrier: offset, phase, arrivals, transaction bytes (the deadlock report).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (off, b) in &self.bars {
            s += &format!(
                " mbarrier at shared offset {off:#x} (init at PTX line {}){}: phase {} (parity {}), {} of {} \
                 arrivals pending, {} transaction bytes outstanding;",
                b.init_line,
                if b.live { "" } else { " [invalidated]" },
                b.phase,
                b.phase & 1,
                b.pending,
                b.expected,
                b.tx
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_complete_on_arrivals_and_bytes() {
        let mut t = MbarTable::default();
        t.init(8, 2, 1, 0).unwrap();
        // a fresh barrier: parity 1 (the phase "before") has completed, parity 0 has not
        assert_eq!(t.wait(8, 1, true).unwrap(), (true, -1));
        assert!(!t.wait(8, 0, true).unwrap().0);
        t.expect_tx(8, 64).unwrap();
        assert_eq!(t.arrive(8, 1, false).unwrap(), (0, false));
        assert_eq!(t.arrive(8, 1, false).unwrap(), (0, false));
        assert!(!t.complete_tx(8, 32).unwrap());
        assert!(t.complete_tx(8, 32).unwrap());
        assert_eq!(t.wait(8, 0, true).unwrap(), (true, 0));
        assert!(!t.wait(8, 1, true).unwrap().0);
        // the token of phase 0 now passes; a token of phase 1 does not
        assert!(t.wait(8, 0, false).unwrap().0);
        assert!(!t.wait(8, 1, false).unwrap().0);
        assert_eq!(t.bars[&8].pending, 2);
    }

    #[test]
    fn bytes_may_land_before_the_expect() {
        let mut t = MbarTable::default();
        t.init(0, 1, 1, 0).unwrap();
        assert!(!t.complete_tx(0, 16).unwrap());
        t.expect_tx(0, 16).unwrap();
        assert!(t.arrive(0, 1, false).unwrap().1);
        // every arrival in, the bytes first, the expect last: legal, the expect completes it
        assert!(!t.complete_tx(0, 32).unwrap());
        assert!(!t.arrive(0, 1, false).unwrap().1);
        assert!(t.surplus().is_some());
        assert!(t.expect_tx(0, 32).unwrap());
        assert!(t.surplus().is_none());
        assert_eq!((t.bars[&0].phase, t.bars[&0].last_expected), (2, 32));
    }

    #[test]
    fn misuse_is_typed() {
        let mut t = MbarTable::default();
        assert_eq!(t.arrive(0, 1, false), Err(MbarError::NotInitialised));
        assert_eq!(t.init(0, 0, 1, 0), Err(MbarError::BadCount(0)));
        t.init(0, 1, 1, 0).unwrap();
        assert_eq!(t.init(0, 1, 1, 0), Err(MbarError::InitLive));
        assert_eq!(t.arrive(0, 2, false), Err(MbarError::ExtraArrival { count: 2, pending: 1 }));
        assert_eq!(t.arrive(0, 1, true), Err(MbarError::NoCompleteCompletes));
        t.expect_tx(0, 8).unwrap();
        t.arrive(0, 1, false).unwrap();
        assert_eq!(t.complete_tx(0, 16), Ok(false));
        let want = MbarError::TxOverflow { expected: 8, delivered: 16, phase: 0, crossed: false };
        assert_eq!(t.surplus(), Some((0, want)));
        t.inval(0).unwrap();
        assert_eq!(t.wait(0, 0, true), Err(MbarError::NotInitialised));
    }

    #[test]
    fn an_init_becomes_visible_by_fence_and_barrier() {
        let mut t = MbarTable::default();
        t.init(0, 1, 7, 3).unwrap();
        let not_visible =
            |t: &MbarTable, th, tma| matches!(t.check_visible(0, th, tma), Err(MbarError::InitNotVisible { .. }));
        // the initialising thread itself: program order, except for its own copies
        assert!(t.check_visible(0, 3, false).is_ok() && not_visible(&t, 3, true));
        assert!(not_visible(&t, 4, false) && not_visible(&t, 4, true));
        // a barrier without the fence: other threads' generic use, not their TMA
        let mut synced = t.clone();
        synced.block_synced();
        assert!(synced.check_visible(0, 4, false).is_ok() && not_visible(&synced, 4, true));
        // another thread's fence does nothing; the initialiser's makes its own copies legal
        t.fence_inits(4);
        assert!(not_visible(&t, 3, true));
        t.fence_inits(3);
        assert!(t.check_visible(0, 3, true).is_ok() && not_visible(&t, 4, true));
        // fence then barrier: everyone
        t.block_synced();
        assert!(t.check_visible(0, 4, true).is_ok() && t.check_visible(0, 4, false).is_ok());
        let e = synced.check_visible(0, 4, true).unwrap_err().to_string();
        assert!(e.contains("PTX line 7") && e.contains("thread 3") && e.contains("fence.mbarrier_init"), "{e}");
    }
}
