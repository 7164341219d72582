//! The GPU architecture an emulated launch targets: its per-block limits (checked at launch, as
//! the driver does) and the numerical model of its tensor cores.
//!
//! Limits are the CUDA C++ Programming Guide's "technical specifications per compute capability"
//! table: 1024 threads and 64 Ki 32-bit registers per block on all four, 255 registers per
//! thread, 48 KiB of static shared memory, and 48 KiB of static + dynamic shared memory unless
//! the function's `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` is raised ("opt-in"), up to
//! 163 KiB (sm_80), 99 KiB (sm_86, sm_89) or 227 KiB (sm_90).
use std::fmt;
use std::str::FromStr;

/// A target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// A100 (the project's default compile target).
    #[default]
    Sm80,
    /// GA10x (RTX 30xx, A10, A40).
    Sm86,
    /// AD10x (RTX 40xx, L4, L40).
    Sm89,
    /// H100 / H200.
    Sm90,
}

/// Shared memory a block may use without the opt-in (static + dynamic), and the most static
/// shared memory a kernel may declare at all.
pub const DEFAULT_SHARED_PER_BLOCK: u32 = 48 * 1024;

/// Per-block limits of one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_threads_per_block: u32,
    /// 32-bit registers per block (`regs per thread` x threads, allocated per warp).
    pub max_registers_per_block: u32,
    pub max_registers_per_thread: u32,
    /// Shared memory per block without opt-in (static + dynamic).
    pub shared_per_block_default: u32,
    /// Shared memory per block with the opt-in (static + dynamic).
    pub shared_per_block_optin: u32,
}

/// Per-SM limits of one architecture (occupancy), and its SM count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmLimits {
    pub sms: u32,
    pub threads_per_sm: u32,
    pub blocks_per_sm: u32,
    /// Shared memory per SM; each resident block also takes 1 KiB of it for the system.
    pub shared_per_sm: u32,
}

impl SmLimits {
    /// Blocks of `threads` threads and `shared` bytes of shared memory (static + dynamic) one SM
    /// holds at once, by threads (whole warps), blocks and shared memory. Registers are not
    /// counted: ptxas allocates them, the PTX does not say how many.
    pub fn blocks_per_sm(&self, threads: u32, shared: u32) -> u32 {
        let warps = threads.div_ceil(32).max(1);
        let by_threads = self.threads_per_sm / (32 * warps);
        let by_shared = self.shared_per_sm / (shared + SYSTEM_SHARED_PER_BLOCK);
        self.blocks_per_sm.min(by_threads).min(by_shared)
    }
}

/// Shared memory the system reserves per resident block (sm_80 and later).
pub const SYSTEM_SHARED_PER_BLOCK: u32 = 1024;

/// How `mma` with floating-point inputs accumulates (see `crate::warp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorAccum {
    /// Products added to the accumulator one at a time, each add correctly rounded (IEEE).
    Sequential,
    /// Fasi, Higham, Mikaitis and Pranesh (2021), A100: the products of a block of `block` k
    /// elements are exact; they and the accumulator are aligned to the largest exponent, bits
    /// below `fraction_bits + extra_bits` under it are truncated, the sum is exact and is
    /// normalised to f32 with truncation (round toward zero).
    FusedTruncate { block: u32, extra_bits: u32 },
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Sm80, Arch::Sm86, Arch::Sm89, Arch::Sm90];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm86 => "sm_86",
            Arch::Sm89 => "sm_89",
            Arch::Sm90 => "sm_90",
        }
    }

    pub fn limits(self) -> Limits {
        let optin_kib = match self {
            Arch::Sm80 => 163,
            Arch::Sm86 | Arch::Sm89 => 99,
            Arch::Sm90 => 227,
        };
        Limits {
            max_threads_per_block: 1024,
            max_registers_per_block: 64 * 1024,
            max_registers_per_thread: 255,
            shared_per_block_default: DEFAULT_SHARED_PER_BLOCK,
            shared_per_block_optin: optin_kib * 1024,
        }
    }

    /// The tensor-core accumulation model of this architecture. The 2021 study measured the
    /// A100 (sm_80): blocks of 8 products for f16/bf16 inputs, 3 extra alignment bits. sm_86/89
    /// are the same generation of tensor core (not measured there: assumed). For sm_90 the
    /// 2021 study has no data; we keep the A100 model (documented as unverified in
    /// docs/emulator-fidelity.md) rather than invent one.
    pub fn tensor_accum(self) -> TensorAccum {
        TensorAccum::FusedTruncate { block: 8, extra_bits: 3 }
    }

    /// What one SM of this architecture holds at once, for the blocks a launch keeps resident
    /// (`exec::resident`): the CUDA C++ Programming Guide's per-SM limits, on the product the
    /// project targets for the architecture (sm_80 A100, sm_86 A10, sm_89 L4, sm_90 H100 SXM
    /// and H200; other products of an architecture have other SM counts: set
    /// `EmulatorOptions::resident_blocks` for them).
    pub fn sm_limits(self) -> SmLimits {
        let (sms, threads, blocks, shared_kib) = match self {
            Arch::Sm80 => (108, 2048, 32, 164),
            Arch::Sm86 => (72, 1536, 16, 100),
            Arch::Sm89 => (58, 1536, 24, 100),
            Arch::Sm90 => (132, 2048, 32, 228),
        };
        SmLimits { sms, threads_per_sm: threads, blocks_per_sm: blocks, shared_per_sm: shared_kib * 1024 }
    }

    /// The ptxas report target whose register counts apply (the project compiles sm_80 and
    /// sm_90; sm_86/89 run the sm_80 code).
    pub fn ptxas_target(self) -> &'static str {
        match self {
            Arch::Sm90 => "sm_90",
            _ => "sm_80",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s.trim())
            .ok_or_else(|| format!("unknown architecture `{s}` (expected sm_80, sm_86, sm_89 or sm_90)"))
    }
}

/// How approximate instructions (`ex2`, `lg2`, `rcp`, `rsqrt`, `sqrt`, `sin`, `cos`, `tanh`
/// `.approx`, `div.approx/full`) compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MathMode {
    /// The correctly rounded value (the historical behaviour).
    #[default]
    Exact,
    /// A deterministic value anywhere inside the ISA's documented error bound, varying with the
    /// input (hashed), so kernels are tested against what hardware may return.
    Envelope,
}

/// When asynchronous work (TMA copies) lands. Hardware lands it "some time later": an emulator
/// that completes it at issue hides every missing wait, so the default is as late as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsyncMode {
    /// Land an operation only when every warp would otherwise wait forever (oldest first).
    #[default]
    Lazy,
    /// Land every operation at issue (the optimistic model; hides hazards, for comparison).
    Eager,
    /// Land pending operations in a seeded random order at random scheduling points (CI).
    Random(u64),
}

/// Environment variable that sets the default [`AsyncMode`] (`lazy`, `eager`, `random:SEED`).
pub const ASYNC_ENV: &str = "FUSEBERT_EMU_ASYNC";

impl AsyncMode {
    /// The mode named by `FUSEBERT_EMU_ASYNC`, `Lazy` when unset.
    pub fn from_env() -> Result<AsyncMode, String> {
        match std::env::var(ASYNC_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| format!("{ASYNC_ENV}: {e}")),
            _ => Ok(AsyncMode::Lazy),
        }
    }
}

impl FromStr for AsyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("unknown async mode `{s}` (expected lazy, eager or random:SEED)");
        match s.trim() {
            "lazy" => Ok(AsyncMode::Lazy),
            "eager" => Ok(AsyncMode::Eager),
            r => match r.strip_prefix("random:") {
                Some(seed) => seed.parse().map(AsyncMode::Random).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

/// Environment variable that sets the default [`MathMode`] (`exact` or `envelope`), so whole
/// test suites can run in envelope mode.
pub const MATH_ENV: &str = "FUSEBERT_EMU_MATH";

impl MathMode {
    pub fn name(self) -> &'static str {
        match self {
            MathMode::Exact => "exact",
            MathMode::Envelope => "envelope",
        }
    }
    /// The mode named by `FUSEBERT_EMU_MATH`, `Exact` when unset; a bad value is an error (a
    /// typo must not silently run the suite in the wrong mode).
    pub fn from_env() -> Result<MathMode, String> {
        match std::env::var(MATH_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| format!("{MATH_ENV}: {e}")),
            _ => Ok(MathMode::Exact),
        }
    }
}

impl FromStr for MathMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "exact" => Ok(MathMode::Exact),
            "envelope" => Ok(MathMode::Envelope),
            _ => Err(format!("unknown math mode `{s}` (expected exact or envelope)")),
        }
    }
}

/// Shared memory of one launch against the limits: `static_bytes` declared by the kernel,
/// `dynamic_bytes` requested at launch, `max_dynamic` the function's max-dynamic-shared
/// attribute (None: never set, the driver's default of 48 KiB minus the static size).
/// Returns the reason a driver would refuse the launch.
pub fn check_shared(arch: Arch, static_bytes: u32, dynamic_bytes: u32, max_dynamic: Option<u32>) -> Result<(), String> {
    let lim = arch.limits();
    if static_bytes > DEFAULT_SHARED_PER_BLOCK {
        return Err(format!(
            "{static_bytes} bytes of static shared memory exceed the {DEFAULT_SHARED_PER_BLOCK}-byte limit on static \
             shared memory (larger buffers must be dynamic, with the opt-in)"
        ));
    }
    let total = static_bytes as u64 + dynamic_bytes as u64;
    if total > lim.shared_per_block_optin as u64 {
        return Err(format!(
            "{total} bytes of shared memory ({static_bytes} static + {dynamic_bytes} dynamic) exceed {arch}'s \
             {} bytes per block (with the opt-in)",
            lim.shared_per_block_optin
        ));
    }
    let allowed = max_dynamic.unwrap_or(DEFAULT_SHARED_PER_BLOCK - static_bytes);
    if dynamic_bytes > allowed {
        return Err(match max_dynamic {
            None => format!(
                "{total} bytes of shared memory ({static_bytes} static + {dynamic_bytes} dynamic) exceed the \
                 {DEFAULT_SHARED_PER_BLOCK}-byte default: set the function attribute MAX_DYNAMIC_SHARED_SIZE_BYTES \
                 to at least {dynamic_bytes} first (the opt-in, up to {} bytes on {arch})",
                lim.shared_per_block_optin
            ),
            Some(m) => format!(
                "{dynamic_bytes} bytes of dynamic shared memory exceed the function's MAX_DYNAMIC_SHARED_SIZE_BYTES \
                 attribute of {m}"
            ),
        });
    }
    Ok(())
}

/// Registers one block allocates: per warp, `regs_per_thread` x 32 rounded up to the 256-register
/// allocation unit (registers per thread are allocated in multiples of 8).
pub fn registers_per_block(regs_per_thread: u32, threads: u32) -> u32 {
    let per_warp = (regs_per_thread.div_ceil(8) * 8 * 32).div_ceil(256) * 256;
    per_warp * threads.div_ceil(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rules() {
        assert!(check_shared(Arch::Sm80, 0, 48 * 1024, None).is_ok());
        assert!(check_shared(Arch::Sm80, 1024, 48 * 1024, None).is_err());
        assert!(check_shared(Arch::Sm80, 0, 68 * 1024, Some(68 * 1024)).is_ok());
        assert!(check_shared(Arch::Sm86, 0, 100 * 1024, Some(100 * 1024)).is_err());
        assert!(check_shared(Arch::Sm90, 0, 227 * 1024, Some(227 * 1024)).is_ok());
        assert!(check_shared(Arch::Sm90, 49 * 1024, 0, None).is_err());
    }

    #[test]
    fn register_allocation_granularity() {
        assert_eq!(registers_per_block(255, 256), 256 * 8 * 32);
        assert_eq!(registers_per_block(93, 128), 96 * 32 * 4);
        assert_eq!(registers_per_block(1, 1), 256);
    }

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!("sm_75".parse::<Arch>().is_err());
        assert_eq!("envelope".parse::<MathMode>().unwrap(), MathMode::Envelope);
        assert!("fast".parse::<MathMode>().is_err());
    }
}
