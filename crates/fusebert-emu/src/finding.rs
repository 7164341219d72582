//! A sanitizer finding as a typed value: what was found and where (kernel, module, block,
//! thread or warp, PTX line, `.cu` line), with the detail text. Its `Display` is the report
//! text, so a finding reads the same whether it is inspected field by field or printed.
use std::fmt;

/// What a sanitizer (or the executor's own checks) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// An access outside its allocation, variable or window.
    OutOfBounds,
    /// An access not aligned to its size.
    Misaligned,
    /// A read of bytes never written (shared, local or global memory).
    UninitialisedRead,
    /// A read of a register no instruction wrote in that lane.
    UninitialisedRegister,
    /// Two warps touching a shared word in one barrier interval, at least one writing.
    SharedRace,
    /// Two lanes of one warp touching a shared word with no `__syncwarp` in between.
    IntraWarpRace,
    /// Two blocks writing the same global byte.
    GlobalWriteRace,
    /// Touching the destination of a `cp.async` still in flight.
    CpAsyncHazard,
    /// `cp.async` misuse (size, src-size).
    BadCpAsync,
    /// An atomic on an address outside global/shared memory, or of an unsupported size.
    BadAtomic,
    /// An address that is not where the instruction needs it (e.g. `ldmatrix` outside shared).
    BadAddress,
    /// A collective executed by part of the warp (membermask, `.sync.aligned`).
    PartialWarpCollective,
    /// A barrier reached by part of a warp, or warps at different `.aligned` barriers.
    DivergentBarrier,
    /// A barrier id out of range.
    BadBarrier,
    /// No warp of the block can make progress.
    Deadlock,
    /// A warp ran past the step limit.
    StepLimit,
    /// Device-function calls nested too deep.
    CallDepth,
    /// `trap` or a failed device-side `assert()` (reported as `Error::Emulator`).
    Trap,
    /// An instruction form the emulator does not run (reported as `Error::Emulator`).
    Unsupported,
    /// mbarrier misuse: use before init, extra arrivals, a skipped phase, bytes delivered
    /// beyond `expect_tx`.
    MbarrierMisuse,
    /// A generic access to shared memory the async proxy owns: a TMA destination before its
    /// mbarrier phase completed, a TMA-store source before its `wait_group.read`.
    AsyncHazard,
    /// A tensor map not made by the encoder (or changed after), or outside param/const/global.
    BadTensorMap,
    /// Generic-proxy writes read by the async proxy with no `fence.proxy.async` in between.
    MissingProxyFence,
    /// A warpgroup instruction (`setmaxnreg`) not executed uniformly by its four warps, or out
    /// of the register budget.
    WarpgroupMisuse,
}

impl FindingKind {
    /// The words that start the report.
    pub fn label(self) -> &'static str {
        match self {
            FindingKind::OutOfBounds => "out-of-bounds access",
            FindingKind::Misaligned => "misaligned access",
            FindingKind::UninitialisedRead => "uninitialised read",
            FindingKind::UninitialisedRegister => "uninitialised register",
            FindingKind::SharedRace => "shared-memory race",
            FindingKind::IntraWarpRace => "intra-warp shared-memory race",
            FindingKind::GlobalWriteRace => "global write-write race",
            FindingKind::CpAsyncHazard => "cp.async hazard",
            FindingKind::BadCpAsync => "bad cp.async",
            FindingKind::BadAtomic => "bad atomic",
            FindingKind::BadAddress => "bad address",
            FindingKind::PartialWarpCollective => "partial-warp collective",
            FindingKind::DivergentBarrier => "divergent barrier",
            FindingKind::BadBarrier => "bad barrier",
            FindingKind::Deadlock => "deadlock",
            FindingKind::StepLimit => "step limit",
            FindingKind::CallDepth => "call depth",
            FindingKind::Trap => "trap",
            FindingKind::Unsupported => "unsupported",
            FindingKind::MbarrierMisuse => "mbarrier misuse",
            FindingKind::AsyncHazard => "async-proxy hazard",
            FindingKind::BadTensorMap => "bad tensor map",
            FindingKind::MissingProxyFence => "missing fence.proxy.async",
            FindingKind::WarpgroupMisuse => "warpgroup misuse",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One finding, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub kernel: String,
    pub module: String,
    /// The block (x, y, z).
    pub block: (u32, u32, u32),
    /// The thread (x, y, z) when one lane is to blame; `None` for a warp-level finding.
    pub thread: Option<(u32, u32, u32)>,
    /// The warp, for a warp-level finding (and the warp of `thread` otherwise).
    pub warp: Option<u32>,
    /// The PTX line of the instruction (none for a deadlock).
    pub ptx_line: Option<u32>,
    /// `file.cu:line`, when the PTX carries line info.
    pub cu_location: Option<String>,
    /// What exactly happened: addresses, sizes, the allocation missed, the other party.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kernel, b) = (&self.kernel, self.block);
        if self.kind == FindingKind::Deadlock {
            // the whole block is stuck: no thread, no instruction; the detail lists the warps
            return write!(f, "deadlock in kernel `{kernel}` block [{}, {}, {}]: {}", b.0, b.1, b.2, self.detail);
        }
        write!(f, "{} in kernel `{kernel}` (module `{}`), block ({},{},{}), ", self.kind, self.module, b.0, b.1, b.2)?;
        match (self.thread, self.warp) {
            (Some(t), _) => write!(f, "thread ({},{},{}), ", t.0, t.1, t.2)?,
            (None, Some(w)) => write!(f, "warp {w}, ")?,
            (None, None) => {}
        }
        // the cross-block race names a store site, not the instruction that stopped the block
        let at = if self.kind == FindingKind::GlobalWriteRace { "" } else { "at " };
        if let Some(line) = self.ptx_line {
            write!(f, "{at}PTX line {line}")?;
        }
        if let Some(cu) = &self.cu_location {
            write!(f, ", {cu}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            kind,
            kernel: "k".into(),
            module: "m".into(),
            block: (1, 2, 3),
            thread: Some((4, 5, 6)),
            warp: Some(0),
            ptx_line: Some(42),
            cu_location: Some("a.cu:7".into()),
            detail: "what happened".into(),
        }
    }

    // the texts the reports had before findings were typed (tests and users match on them)
    #[test]
    fn display_keeps_the_report_texts() {
        let f = finding(FindingKind::OutOfBounds);
        assert_eq!(
            f.to_string(),
            "out-of-bounds access in kernel `k` (module `m`), block (1,2,3), thread (4,5,6), at PTX line 42, a.cu:7: \
             what happened"
        );
        let f = Finding { thread: None, warp: Some(3), cu_location: None, ..finding(FindingKind::DivergentBarrier) };
        assert_eq!(
            f.to_string(),
            "divergent barrier in kernel `k` (module `m`), block (1,2,3), warp 3, at PTX line 42: what happened"
        );
        let f = Finding { warp: None, ..finding(FindingKind::GlobalWriteRace) };
        assert_eq!(
            f.to_string(),
            "global write-write race in kernel `k` (module `m`), block (1,2,3), thread (4,5,6), PTX line 42, a.cu:7: \
             what happened"
        );
        let f = Finding {
            thread: None,
            warp: None,
            ptx_line: None,
            cu_location: None,
            detail: "no warp can make progress; warp 0 exited;".into(),
            ..finding(FindingKind::Deadlock)
        };
        assert_eq!(f.to_string(), "deadlock in kernel `k` block [1, 2, 3]: no warp can make progress; warp 0 exited;");
    }
}
