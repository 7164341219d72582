//! Where the emulator's time goes, per instruction class (`EmulatorOptions::profile`): warp and
//! thread instructions and seconds for each class of `Counters`' instruction mix, and the time
//! spent outside instructions (scheduling, block set-up, barriers). The time of an instruction
//! is read with the CPU's timestamp counter around its execution (x86_64; a monotonic clock
//! elsewhere) and converted to seconds per block against the block's wall time, so the classes
//! and `other` add up to the blocks' time. Profiling costs about two timer reads per warp
//! instruction; it is off by default.
use std::fmt;
use std::time::Instant;

use serde::Serialize;

/// Names of the instruction classes, in `Counters`' order (`inst_integer` .. `inst_special`).
pub const CLASS_NAMES: [&str; 8] = ["integer", "fp32", "fp16", "fp64", "tensor", "memory", "control", "special"];

/// One instruction class's share.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ClassProfile {
    pub warp_instructions: u64,
    pub thread_instructions: u64,
    pub seconds: f64,
}

/// Per-class instruction counts and time of one or more launches.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Profile {
    /// Indexed like [`CLASS_NAMES`].
    pub classes: [ClassProfile; 8],
    /// Block time outside instructions: scheduling, block set-up, barrier release.
    pub other_seconds: f64,
}

impl Profile {
    pub fn add(&mut self, o: &Profile) {
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            a.warp_instructions += b.warp_instructions;
            a.thread_instructions += b.thread_instructions;
            a.seconds += b.seconds;
        }
        self.other_seconds += o.other_seconds;
    }

    /// Seconds in blocks, summed over worker threads.
    pub fn seconds(&self) -> f64 {
        self.classes.iter().map(|c| c.seconds).sum::<f64>() + self.other_seconds
    }

    pub fn thread_instructions(&self) -> u64 {
        self.classes.iter().map(|c| c.thread_instructions).sum()
    }
}

/// A table: class, warp and thread instructions, seconds, share of time, thread-instructions/s.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.seconds().max(f64::MIN_POSITIVE);
        writeln!(
            f,
            "{:<8} {:>14} {:>16} {:>10} {:>7} {:>12}",
            "class", "warp insts", "thread insts", "seconds", "time", "M thr-inst/s"
        )?;
        for (name, c) in CLASS_NAMES.iter().zip(&self.classes) {
            if c.warp_instructions == 0 {
                continue;
            }
            writeln!(
                f,
                "{:<8} {:>14} {:>16} {:>10.4} {:>6.1}% {:>12.1}",
                name,
                c.warp_instructions,
                c.thread_instructions,
                c.seconds,
                100.0 * c.seconds / total,
                c.thread_instructions as f64 / c.seconds.max(f64::MIN_POSITIVE) / 1e6
            )?;
        }
        writeln!(
            f,
            "{:<8} {:>14} {:>16} {:>10.4} {:>6.1}%",
            "other",
            "",
            "",
            self.other_seconds,
            100.0 * self.other_seconds / total
        )?;
        write!(
            f,
            "{:<8} {:>14} {:>16} {:>10.4} {:>6.1}% {:>12.1}",
            "total",
            self.classes.iter().map(|c| c.warp_instructions).sum::<u64>(),
            self.thread_instructions(),
            total,
            100.0,
            self.thread_instructions() as f64 / total / 1e6
        )
    }
}

/// The running profile of one block.
pub(crate) struct BlockProfile {
    pub(crate) ticks: [u64; 8],
    pub(crate) warps: [u64; 8],
    pub(crate) threads: [u64; 8],
    start_ticks: u64,
    start: Instant,
}

impl BlockProfile {
    pub(crate) fn start() -> Box<BlockProfile> {
        Box::new(BlockProfile {
            ticks: [0; 8],
            warps: [0; 8],
            threads: [0; 8],
            start_ticks: ticks(),
            start: Instant::now(),
        })
    }

    /// The block's profile in seconds (ticks scaled by the block's wall time).
    pub(crate) fn finish(&self) -> Profile {
        let total_ticks = ticks().wrapping_sub(self.start_ticks).max(1) as f64;
        let per_tick = self.start.elapsed().as_secs_f64() / total_ticks;
        let mut p = Profile::default();
        let mut used = 0u64;
        for k in 0..8 {
            p.classes[k] = ClassProfile {
                warp_instructions: self.warps[k],
                thread_instructions: self.threads[k],
                seconds: self.ticks[k] as f64 * per_tick,
            };
            used += self.ticks[k];
        }
        p.other_seconds = (total_ticks - used as f64).max(0.0) * per_tick;
        p
    }
}

/// A cheap monotonic tick count: the timestamp counter on x86_64, nanoseconds elsewhere.
#[inline(always)]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}
