//! The compact IR a PTX module is lowered to, once, at load time.
//!
//! Every operand is a register-slot index: declared registers, special registers (filled per warp
//! at start) and immediates (constant slots filled once per warp) all live in the same bank of
//! `[slot][32 lanes]` u64 values, so the executor never matches on operand kinds per lane.
use std::collections::HashMap;

/// "No operand" marker for slot fields.
pub const NONE: u32 = u32::MAX;
/// Reconvergence at kernel exit (the branch has no post-dominator but EXIT).
pub const EXIT_PC: u32 = u32::MAX;

/// Scalar/packed types of PTX instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ty {
    None,
    Pred,
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    BF16,
    BF16x2,
    F32,
    F64,
    S4,
    U4,
    TF32,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::BF16,
            "bf16x2" => Ty::BF16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "s4" => Ty::S4,
            "u4" => Ty::U4,
            "tf32" => Ty::TF32,
            _ => return None,
        })
    }
    /// Size in bytes (pred counts as 1 for layout purposes).
    pub fn bytes(self) -> u32 {
        match self {
            Ty::None => 0,
            Ty::Pred | Ty::B8 | Ty::U8 | Ty::S8 | Ty::S4 | Ty::U4 => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::BF16x2 | Ty::TF32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
            Ty::B128 => 16,
        }
    }
    pub fn bits(self) -> u32 {
        self.bytes() * 8
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64 | Ty::S4)
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::F16x2 | Ty::BF16 | Ty::BF16x2 | Ty::F32 | Ty::F64 | Ty::TF32)
    }
    /// Mask of the value bits.
    pub fn mask(self) -> u64 {
        match self.bytes() {
            1 if self == Ty::Pred => 1,
            1 => 0xff,
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }
}

/// Rounding modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Rnd {
    #[default]
    None,
    Rn,
    Rz,
    Rm,
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
    Rna,
}

/// Comparison operators of setp/set/slct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Cmp {
    #[default]
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// State spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Space {
    #[default]
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

/// Opcodes (after splitting off modifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Nop,
    Mov,
    /// mov.b32/b64 d, {a, b[, c, d]}: pack `s` (count in `n`) with element width ty2.
    Pack,
    /// mov.b32 {d0, d1}, a: unpack.
    Unpack,
    ReadClock,
    Add,
    Sub,
    Mul,
    Mad,
    Fma,
    Div,
    Rem,
    Neg,
    Abs,
    Min,
    Max,
    Sad,
    And,
    Or,
    Xor,
    Not,
    Cnot,
    Shl,
    Shr,
    Shf,
    Bfi,
    Bfe,
    Bfind,
    Brev,
    Clz,
    Popc,
    Prmt,
    Dp4a,
    Dp2a,
    Lop3,
    Copysign,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Testp,
    Setp,
    Set,
    Selp,
    Slct,
    Cvt,
    /// cvt.*.f16x2/bf16x2.f32 d, a, b (a -> high half).
    CvtPack,
    Cvta,
    CvtaTo,
    Ld,
    St,
    Atom,
    Red,
    CpAsync,
    CpAsyncCommit,
    CpAsyncWait,
    Ldmatrix,
    Stmatrix,
    Mma,
    /// wmma m16n16k16: sub = WMMA_* (load a/b/c, store d, mma); sub2 = 1 for col-major memory.
    Wmma,
    Bra,
    Ret,
    Exit,
    Call,
    Bar,
    BarRed,
    BarWarp,
    Membar,
    Shfl,
    Vote,
    Match,
    Redux,
    Activemask,
    Prefetch,
    Trap,
    /// vprintf: list = [format-pointer param, argument-buffer param, result param] (local offsets)
    Printf,
    /// `elect.sync d|p, membermask`: `d[0]` = elected lane (or the sink), `d[1]` = predicate,
    /// `s[0]` = membermask.
    Elect,
    /// `mapa.shared::cluster.u32 d, a, rank`: `d` = `a`'s shared address in the cluster CTA of
    /// that rank (`s[0]` = a, `s[1]` = rank).
    Mapa,
    /// `barrier.cluster.arrive` (sub 0) / `barrier.cluster.wait` (sub 1).
    ClusterBar,
    /// `setmaxnreg.{inc,dec}.sync.aligned.u32 n`: sub = 1 for inc, off = n.
    SetMaxNReg,
    /// `fence.proxy.async{.shared::cta|.global}`: orders this thread's generic-proxy accesses
    /// before its later async-proxy ones.
    FenceProxyAsync,
    /// `mbarrier.*`: sub = `MBAR_*`; `s[0]` = barrier address, `s[1]` = count / bytes / parity /
    /// state operand, `d[0]` = state token or wait predicate.
    Mbar,
    /// `cp.async.bulk.tensor` load or store: sub = `BULK_*`, n = rank, `s[0]` = shared address,
    /// `s[1]` = tensor-map address, `s[2]` = mbarrier address (loads), list = the coordinates.
    BulkTensor,
    /// `cp.async.bulk.commit_group` (sub 0) and `cp.async.bulk.wait_group{.read} N` (sub 1,
    /// off = N, `fl::READ` for `.read`).
    BulkGroup,
    /// `wgmma.fence` (sub `WG_FENCE`), `commit_group` (`WG_COMMIT`), `wait_group N` (`WG_WAIT`,
    /// off = N), `mma_async` (`WG_MMA`: ty = accumulator type, ty2 = A's element type, list =
    /// the accumulators then (A from registers) the four A registers, `s[0]`/`s[1]` = the A/B
    /// descriptors (`s[0]` NONE for register A), `s[2]` = scale-d, n = N / 8, sub2 = `WG_*`
    /// bits, `fl::SATFINITE`).
    Wgmma,
}

/// Modifier flag bits in `Inst::flags`.
pub mod fl {
    pub const SAT: u32 = 1 << 0;
    pub const FTZ: u32 = 1 << 1;
    pub const APPROX: u32 = 1 << 2;
    pub const FULL: u32 = 1 << 3;
    pub const HI: u32 = 1 << 4;
    pub const LO: u32 = 1 << 5;
    pub const WIDE: u32 = 1 << 6;
    pub const NC: u32 = 1 << 7;
    pub const UNI: u32 = 1 << 8;
    pub const TRANS: u32 = 1 << 9;
    pub const SHIFTAMT: u32 = 1 << 10;
    pub const WRAP: u32 = 1 << 11;
    pub const CLAMP: u32 = 1 << 12;
    pub const LEFT: u32 = 1 << 13;
    /// Address register declared 32-bit: truncate the address.
    pub const ADDR32: u32 = 1 << 14;
    pub const CC: u32 = 1 << 15;
    pub const CARRY_IN: u32 = 1 << 16;
    pub const RELU: u32 = 1 << 17;
    pub const ABS: u32 = 1 << 18;
    pub const NAN: u32 = 1 << 19;
    pub const SATFINITE: u32 = 1 << 20;
    pub const TO_SHARED_WIN: u32 = 1 << 21;
    pub const ALL: u32 = 1 << 22;
    pub const CG: u32 = 1 << 23;
    pub const HAS_SRCSIZE: u32 = 1 << 24;
    pub const NEG_PRED_SRC: u32 = 1 << 25;
    pub const XORSIGN: u32 = 1 << 26;
    /// cp.async with an ignore-src predicate (instead of a src-size operand)
    pub const IGNORE_SRC: u32 = 1 << 27;
    /// `barrier.sync` without `.aligned`: threads may wait at different instructions.
    pub const UNALIGNED: u32 = 1 << 28;
    /// `mbarrier.try_wait.parity` / `test_wait.parity`: `s[1]` is a phase parity, not a token.
    pub const PARITY: u32 = 1 << 29;
    /// `cp.async.bulk.wait_group.read`: wait until the sources are read, not the writes done.
    pub const READ: u32 = 1 << 30;
    /// `ld`/`st` `.shared::cluster`: the address may name a peer CTA's shared memory (`mapa`).
    pub const CLUSTER: u32 = 1 << 31;
}

/// Sub-operation codes (in `Inst::sub`) for families with a mode.
pub mod sub {
    // ld (in `sub2`): a strong load (`.volatile`, `.relaxed`, `.acquire`), which observes other
    // blocks' stores: a poll when it repeats (exec::resident)
    pub const LD_STRONG: u8 = 1;
    // shfl
    pub const SHFL_UP: u8 = 0;
    pub const SHFL_DOWN: u8 = 1;
    pub const SHFL_BFLY: u8 = 2;
    pub const SHFL_IDX: u8 = 3;
    // vote
    pub const VOTE_ALL: u8 = 0;
    pub const VOTE_ANY: u8 = 1;
    pub const VOTE_UNI: u8 = 2;
    pub const VOTE_BALLOT: u8 = 3;
    // atom/red/redux/bar.red
    pub const A_ADD: u8 = 0;
    pub const A_MIN: u8 = 1;
    pub const A_MAX: u8 = 2;
    pub const A_INC: u8 = 3;
    pub const A_DEC: u8 = 4;
    pub const A_CAS: u8 = 5;
    pub const A_EXCH: u8 = 6;
    pub const A_AND: u8 = 7;
    pub const A_OR: u8 = 8;
    pub const A_XOR: u8 = 9;
    pub const A_POPC: u8 = 10;
    // boolean combine of setp (.and/.or/.xor)
    pub const B_NONE: u8 = 0;
    pub const B_AND: u8 = 1;
    pub const B_OR: u8 = 2;
    pub const B_XOR: u8 = 3;
    // prmt modes
    pub const PRMT_F4E: u8 = 1;
    pub const PRMT_B4E: u8 = 2;
    pub const PRMT_RC8: u8 = 3;
    pub const PRMT_ECL: u8 = 4;
    pub const PRMT_ECR: u8 = 5;
    pub const PRMT_RC16: u8 = 6;
    // mma shapes
    pub const MMA_F16_M16N8K16: u8 = 0;
    pub const MMA_BF16_M16N8K16: u8 = 1;
    pub const MMA_S8_M16N8K32: u8 = 2;
    pub const MMA_U8_M16N8K32: u8 = 3;
    pub const MMA_F16_M16N8K8: u8 = 4;
    pub const MMA_BF16_M16N8K8: u8 = 5;
    pub const MMA_S8_M16N8K16: u8 = 6;
    pub const MMA_TF32_M16N8K8: u8 = 7;
    // wmma operations
    pub const WMMA_LOAD_A: u8 = 0;
    pub const WMMA_LOAD_B: u8 = 1;
    pub const WMMA_LOAD_C: u8 = 2;
    pub const WMMA_STORE_D: u8 = 3;
    pub const WMMA_MMA: u8 = 4;
    // mbarrier operations
    pub const MBAR_INIT: u8 = 0;
    pub const MBAR_ARRIVE: u8 = 1;
    /// arrive.expect_tx: `s[2]` = the bytes
    pub const MBAR_ARRIVE_TX: u8 = 2;
    pub const MBAR_EXPECT_TX: u8 = 3;
    pub const MBAR_COMPLETE_TX: u8 = 4;
    pub const MBAR_TEST_WAIT: u8 = 5;
    pub const MBAR_TRY_WAIT: u8 = 6;
    pub const MBAR_INVAL: u8 = 7;
    /// arrive.noComplete
    pub const MBAR_ARRIVE_NOCOMPLETE: u8 = 8;
    // cp.async.bulk.tensor directions
    pub const BULK_LOAD: u8 = 0;
    pub const BULK_STORE: u8 = 1;
    // wgmma operations
    pub const WG_FENCE: u8 = 0;
    pub const WG_COMMIT: u8 = 1;
    pub const WG_WAIT: u8 = 2;
    pub const WG_MMA: u8 = 3;
    // wgmma.mma_async `sub2` bits: imm-scale-a/b = -1, imm-trans-a/b = 1, A from registers,
    // B's elements signed (s8)
    pub const WG_NEG_A: u8 = 1;
    pub const WG_NEG_B: u8 = 2;
    pub const WG_TRANS_A: u8 = 4;
    pub const WG_TRANS_B: u8 = 8;
    pub const WG_A_REGS: u8 = 16;
    pub const WG_B_SIGNED: u8 = 32;
}

/// One lowered instruction.
#[derive(Debug, Clone)]
pub struct Inst {
    pub op: Op,
    pub ty: Ty,
    pub ty2: Ty,
    pub rnd: Rnd,
    pub cmp: Cmp,
    pub space: Space,
    pub sub: u8,
    /// Secondary sub-op (setp's boolean combine, ...).
    pub sub2: u8,
    /// Vector width of ld/st (1, 2, 4) or element count of pack/unpack/ldmatrix.
    pub n: u8,
    pub flags: u32,
    /// Guard predicate slot (NONE = unguarded) and its negation.
    pub guard: u32,
    pub gneg: bool,
    /// Destination slots (`d[1]` = second destination of `a|p` forms).
    pub d: [u32; 4],
    /// Source slots.
    pub s: [u32; 4],
    /// Address offset (ld/st/atom/...) or extra immediate.
    pub off: i64,
    /// Branch target instruction index.
    pub target: u32,
    /// Reconvergence PC (immediate post-dominator) for branches.
    pub rpc: u32,
    /// Index into `Kernel::lists` for long operand lists (mma, vectors), or NONE.
    pub list: u32,
    /// PTX source line (1-based) of the instruction.
    pub line: u32,
    /// .cu location: index into `Kernel::locs` or NONE.
    pub loc: u32,
}

impl Inst {
    pub fn new(op: Op, line: u32) -> Inst {
        Inst {
            op,
            ty: Ty::None,
            ty2: Ty::None,
            rnd: Rnd::None,
            cmp: Cmp::Eq,
            space: Space::Generic,
            sub: 0,
            sub2: 0,
            n: 1,
            flags: 0,
            guard: NONE,
            gneg: false,
            d: [NONE; 4],
            s: [NONE; 4],
            off: 0,
            target: NONE,
            rpc: EXIT_PC,
            list: NONE,
            line,
            loc: NONE,
        }
    }
    /// The number of accumulator registers of a `wgmma.mma_async` (the head of its list):
    /// N/4 f16x2 registers for f16 accumulators, N/2 otherwise.
    pub fn wgmma_accs(&self) -> usize {
        self.n as usize * 8 / if self.ty == Ty::F16 { 4 } else { 2 }
    }
    #[inline(always)]
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
}

/// Special registers, each a per-warp pre-filled slot (except clocks, read via `Op::ReadClock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    LanemaskEq,
    LanemaskLe,
    LanemaskLt,
    LanemaskGe,
    LanemaskGt,
    DynSmem,
    TotalSmem,
    SmId,
    NSmId,
    GridId,
    /// `%cluster_ctarank`: the CTA's rank in its cluster.
    ClusterCtaRank,
    /// `%cluster_nctarank`: CTAs per cluster.
    ClusterNCtaRank,
    /// `%clusterid.{x,y,z}`: the cluster's index in the grid.
    ClusterId(u8),
    /// `%nclusterid.{x,y,z}`: clusters in the grid.
    NClusterId(u8),
    /// `%cluster_ctaid.{x,y,z}`: the CTA's index in its cluster.
    ClusterCtaId(u8),
    /// `%cluster_nctaid.{x,y,z}`: the cluster's shape.
    ClusterNCtaId(u8),
    /// `%is_explicit_cluster`: whether the launch declared a cluster shape.
    IsExplicitCluster,
}

impl Special {
    pub fn parse(s: &str) -> Option<Special> {
        let dim = |c: &str| match c {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        if let Some((base, d)) = s.split_once('.') {
            let d = dim(d)?;
            return Some(match base {
                "%tid" => Special::Tid(d),
                "%ntid" => Special::Ntid(d),
                "%ctaid" => Special::Ctaid(d),
                "%nctaid" => Special::Nctaid(d),
                "%clusterid" => Special::ClusterId(d),
                "%nclusterid" => Special::NClusterId(d),
                "%cluster_ctaid" => Special::ClusterCtaId(d),
                "%cluster_nctaid" => Special::ClusterNCtaId(d),
                _ => return None,
            });
        }
        Some(match s {
            "%laneid" => Special::LaneId,
            "%warpid" => Special::WarpId,
            "%nwarpid" => Special::NWarpId,
            "%lanemask_eq" => Special::LanemaskEq,
            "%lanemask_le" => Special::LanemaskLe,
            "%lanemask_lt" => Special::LanemaskLt,
            "%lanemask_ge" => Special::LanemaskGe,
            "%lanemask_gt" => Special::LanemaskGt,
            "%dynamic_smem_size" => Special::DynSmem,
            "%total_smem_size" => Special::TotalSmem,
            "%smid" => Special::SmId,
            "%nsmid" => Special::NSmId,
            "%gridid" => Special::GridId,
            "%cluster_ctarank" => Special::ClusterCtaRank,
            "%cluster_nctarank" => Special::ClusterNCtaRank,
            "%is_explicit_cluster" => Special::IsExplicitCluster,
            _ => return None,
        })
    }
}

/// One kernel parameter of the `.param` list.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: Ty,
    pub size: u32,
    pub align: u32,
    pub offset: u32,
    /// `.ptr .align N`: the pointer argument must be N-byte aligned.
    pub ptr_align: Option<u32>,
}

/// A kernel (or device function) lowered to IR.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub param_bytes: u32,
    pub insts: Vec<Inst>,
    /// Total slots (registers + specials + constants + scratch).
    pub nslots: u32,
    /// Slots below this are registers (written by instructions); from here on, specials and
    /// constants (filled at warp start, never written).
    pub nregs: u32,
    /// Constant slots, their values and relocation kind (`RELOC_*`).
    pub consts: Vec<(u32, u64, u8)>,
    /// Special-register slots.
    pub specials: Vec<(u32, Special)>,
    /// Operand lists referenced by `Inst::list`.
    pub lists: Vec<Vec<u32>>,
    /// Bytes of `.local` memory per thread (`__local_depot`).
    pub local_bytes: u32,
    /// Static shared bytes of this kernel (module-scope shared variables first, then its own);
    /// the dynamic (`extern .shared`) region starts at this rounded up to the largest
    /// `.align` of the module's `extern .shared` declarations (at least 16).
    pub shared_static: u32,
    /// .cu locations: (file index, line).
    pub locs: Vec<(u32, u32)>,
    /// Whether the kernel contains float atomics (deterministic mode serialises blocks).
    pub has_atomics: bool,
    /// Whether the kernel polls global memory (a strong `ld`: `.volatile`, `.relaxed` or
    /// `.acquire`, or `atom.cas`): its blocks may wait on each other, so its launches run
    /// co-scheduled (`exec::resident`).
    pub polls_global: bool,
    /// Required/maximum threads per block if declared.
    pub maxntid: Option<(u32, u32, u32)>,
    pub reqntid: Option<(u32, u32, u32)>,
    /// `.reqnctapercluster`: the cluster shape every launch of the kernel has (`None`: a
    /// cluster of one CTA).
    pub cluster: Option<(u32, u32, u32)>,
    /// Name of each declared register slot (for messages).
    pub reg_names: HashMap<u32, String>,
    /// Whether the kernel uses Hopper's asynchronous machinery (mbarrier, TMA, proxy fences):
    /// only such kernels pay for the async-proxy state and its checks.
    pub uses_async: bool,
}

/// A module-level variable (.global/.const/.shared).
#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub space: Space,
    pub align: u32,
    pub size: u32,
    pub init: Option<Vec<u8>>,
    /// Offset inside its space (shared: window offset; const: bank offset; global: offset in the
    /// module's global blob).
    pub offset: u32,
    pub is_extern: bool,
}

/// A parsed and lowered PTX module.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub kernels: Vec<Kernel>,
    pub vars: Vec<Var>,
    /// Bytes of module-scope static shared variables (each kernel adds its own after them).
    pub shared_static: u32,
    pub const_bytes: u32,
    pub global_bytes: u32,
    /// `.file` table: index -> path.
    pub files: HashMap<u32, String>,
    /// The `.target` architecture (`sm_80`, `sm_90a`, ...), when declared.
    pub target: Option<String>,
}

impl Module {
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Where kernel `k`'s dynamic shared memory starts: its static bytes rounded up to the
    /// largest `.align` of an `extern .shared` declaration (16 at least). Swizzled TMA and
    /// wgmma layouts are functions of absolute shared addresses, so a kernel declaring
    /// `.extern .shared .align 1024` must get a 1024-byte-aligned region, as ptxas lays it out.
    pub fn dyn_shared_offset(&self, k: &Kernel) -> u32 {
        let align = self
            .vars
            .iter()
            .filter(|v| v.is_extern && v.space == Space::Shared)
            .map(|v| v.align.max(1))
            .fold(16, u32::max);
        k.shared_static.div_ceil(align) * align
    }
}

/// Constant-slot relocation kinds, applied when a launch builds the register template.
pub const RELOC_NONE: u8 = 0;
/// value += the module's global-variable base address
pub const RELOC_GLOBAL: u8 = 1;
/// value += the dynamic shared region's offset (extern .shared arrays)
pub const RELOC_DYN_SHARED: u8 = 2;
