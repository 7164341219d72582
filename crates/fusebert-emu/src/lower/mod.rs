//! Lowering of one PTX instruction (opcode + modifiers + operands) into IR instructions: the
//! per-opcode half of the parser. Operand resolution and the per-function state live in
//! [`super::syntax`]. `parse_instruction` reads the operands and modifiers once and dispatches
//! on the opcode to one function per opcode, grouped by family in the submodules.

mod arith;
mod control;
mod convert;
mod hopper;
mod memory;
mod tensor;
mod warp;

use super::ir::*;
use super::syntax::*;

/// Modifiers of an opcode, split by '.'.
struct Mods<'a> {
    base: &'a str,
    parts: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn new(op: &'a str) -> Self {
        let mut it = op.split('.');
        let base = it.next().unwrap_or("");
        Mods { base, parts: it.collect() }
    }
    fn has(&self, m: &str) -> bool {
        self.parts.contains(&m)
    }
    fn types(&self) -> Vec<Ty> {
        self.parts.iter().filter_map(|p| Ty::parse(p)).collect()
    }
    fn rnd(&self) -> Rnd {
        for p in &self.parts {
            let r = match *p {
                "rn" => Rnd::Rn,
                "rz" => Rnd::Rz,
                "rm" => Rnd::Rm,
                "rp" => Rnd::Rp,
                "rni" => Rnd::Rni,
                "rzi" => Rnd::Rzi,
                "rmi" => Rnd::Rmi,
                "rpi" => Rnd::Rpi,
                "rna" => Rnd::Rna,
                _ => continue,
            };
            return r;
        }
        Rnd::None
    }
    fn space(&self) -> Space {
        for p in &self.parts {
            let s = match *p {
                "global" => Space::Global,
                // a cluster of one CTA: its shared::cluster window is the CTA's own
                "shared" | "shared::cta" | "shared::cluster" => Space::Shared,
                "local" => Space::Local,
                "param" => Space::Param,
                "const" => Space::Const,
                _ => continue,
            };
            return s;
        }
        Space::Generic
    }
    fn cmp(&self) -> Option<Cmp> {
        for p in &self.parts {
            let c = match *p {
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "lt" => Cmp::Lt,
                "le" => Cmp::Le,
                "gt" => Cmp::Gt,
                "ge" => Cmp::Ge,
                "lo" => Cmp::Lo,
                "ls" => Cmp::Ls,
                "hi" => Cmp::Hi,
                "hs" => Cmp::Hs,
                "equ" => Cmp::Equ,
                "neu" => Cmp::Neu,
                "ltu" => Cmp::Ltu,
                "leu" => Cmp::Leu,
                "gtu" => Cmp::Gtu,
                "geu" => Cmp::Geu,
                "num" => Cmp::Num,
                "nan" => Cmp::Nan,
                _ => continue,
            };
            return Some(c);
        }
        None
    }
    fn flags(&self) -> u32 {
        let mut f = 0;
        for p in &self.parts {
            f |= match *p {
                "sat" => fl::SAT,
                "ftz" => fl::FTZ,
                "approx" => fl::APPROX,
                "full" => fl::FULL,
                "hi" => fl::HI,
                "lo" => fl::LO,
                "wide" => fl::WIDE,
                "nc" => fl::NC,
                "uni" => fl::UNI,
                "trans" => fl::TRANS,
                "shiftamt" => fl::SHIFTAMT,
                "wrap" => fl::WRAP,
                "clamp" => fl::CLAMP,
                "l" => fl::LEFT,
                "cc" => fl::CC,
                "relu" => fl::RELU,
                "satfinite" => fl::SATFINITE,
                "NaN" => fl::NAN,
                "xorsign" => fl::XORSIGN,
                "abs" => fl::ABS,
                _ => 0,
            };
        }
        f
    }
}

fn atom_op(m: &Mods) -> Option<u8> {
    for p in &m.parts {
        let o = match *p {
            "add" => sub::A_ADD,
            "min" => sub::A_MIN,
            "max" => sub::A_MAX,
            "inc" => sub::A_INC,
            "dec" => sub::A_DEC,
            "cas" => sub::A_CAS,
            "exch" => sub::A_EXCH,
            "and" => sub::A_AND,
            "or" => sub::A_OR,
            "xor" => sub::A_XOR,
            "popc" => sub::A_POPC,
            _ => continue,
        };
        return Some(o);
    }
    None
}

/// Modifiers the lowering understands (or that do not change emulated semantics: cache and
/// memory-ordering hints). Anything else is rejected so it can never be silently ignored.
const KNOWN_MODS: &[&str] = &[
    // rounding, flags
    "rn",
    "rz",
    "rm",
    "rp",
    "rni",
    "rzi",
    "rmi",
    "rpi",
    "rna",
    "sat",
    "ftz",
    "approx",
    "full",
    "hi",
    "lo",
    "wide",
    "nc",
    "uni",
    "trans",
    "shiftamt",
    "wrap",
    "clamp",
    "l",
    "r",
    "cc",
    "relu",
    "satfinite",
    "NaN",
    "noftz",
    // comparisons and boolean combine
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "ls",
    "hs",
    "equ",
    "neu",
    "ltu",
    "leu",
    "gtu",
    "geu",
    "num",
    "nan",
    "and",
    "or",
    "xor",
    // testp
    "finite",
    "infinite",
    "number",
    "notanumber",
    "normal",
    "subnormal",
    // spaces, vectors, ordering/cache hints
    "global",
    "shared",
    "shared::cta",
    "local",
    "param",
    "const",
    "to",
    "v2",
    "v4",
    "volatile",
    "relaxed",
    "acquire",
    "release",
    "weak",
    "sc",
    "acq_rel",
    "cta",
    "gpu",
    "sys",
    "ca",
    "cg",
    "cs",
    "lu",
    "cv",
    "wb",
    "wt",
    "L1::evict_normal",
    "L1::evict_unchanged",
    "L1::evict_first",
    "L1::evict_last",
    "L1::no_allocate",
    "L2::64B",
    "L2::128B",
    "L2::256B",
    "L2::evict_normal",
    "L2::evict_first",
    "L2::evict_last",
    "L2",
    "L1",
    // warp / barrier / async / tensor
    "gl",
    "proxy",
    "alias",
    "sync",
    "aligned",
    "up",
    "down",
    "bfly",
    "idx",
    "all",
    "any",
    "ballot",
    "async",
    "commit_group",
    "wait_group",
    "wait_all",
    "warp",
    "red",
    "popc",
    "arrive",
    "wait",
    "m8n8",
    "x1",
    "x2",
    "x4",
    "row",
    "col",
    "m16n8k16",
    "m16n8k32",
    "m16n8k8",
    "m16n16k16",
    "a",
    "b",
    "c",
    "d",
    "load",
    "store",
    "mma",
    "f4e",
    "b4e",
    "rc8",
    "ecl",
    "ecr",
    "rc16",
    // atomics
    "add",
    "min",
    "max",
    "inc",
    "dec",
    "cas",
    "exch",
    // Hopper: mbarrier, bulk copies, proxy fences, elect, setmaxnreg
    "shared::cluster",
    "cluster",
    "init",
    "expect_tx",
    "complete_tx",
    "test_wait",
    "try_wait",
    "parity",
    "inval",
    "noComplete",
    "bulk",
    "tensor",
    "1d",
    "2d",
    "3d",
    "tile",
    "mbarrier::complete_tx::bytes",
    "bulk_group",
    "L2::cache_hint",
    "read",
    "tensormap",
    "mbarrier_init",
    "mma_async",
];

fn check_mods(m: &Mods, opname: &str, line: u32) -> PResult<()> {
    for p in &m.parts {
        // TMA and mbarrier name their own CTA's barrier and buffer through the cluster window;
        // ld/st reach a peer's shared memory through it (addresses from `mapa`); multicast
        // copies and remote mbarrier arrivals are not emulated
        if *p == "shared::cluster" && !matches!(m.base, "cp" | "mbarrier" | "fence" | "ld" | "st" | "mapa") {
            return Err((line, format!("`{opname}`: unsupported modifier `.{p}` (only ld/st/mapa reach a peer CTA)")));
        }
        // wgmma's own modifiers (the shape is checked by its lowering)
        if m.base == "wgmma" && (*p == "fence" || p.starts_with("m64n")) {
            continue;
        }
        if Ty::parse(p).is_none() && !KNOWN_MODS.contains(p) {
            return Err((line, format!("`{opname}`: unsupported modifier `.{p}`")));
        }
    }
    Ok(())
}

/// One instruction being lowered: its operands and what its modifiers say.
struct Ctx<'a> {
    ops: Vec<Opnd>,
    m: Mods<'a>,
    types: Vec<Ty>,
    /// The first type modifier (the instruction type of most opcodes).
    ty: Ty,
    flags: u32,
    line: u32,
    opname: &'a str,
}

impl Ctx<'_> {
    /// A new IR instruction of this PTX instruction's type, flags and rounding.
    fn mk(&self, op: Op) -> Inst {
        let mut i = Inst::new(op, self.line);
        i.ty = self.ty;
        i.flags = self.flags;
        i.rnd = self.m.rnd();
        i
    }

    fn unsupported<T>(&self) -> PResult<T> {
        Err((self.line, format!("unsupported instruction `{}`", self.opname)))
    }
}

/// Lowers one instruction: a function per opcode takes the operands (read here, before the
/// modifiers are checked, so errors come in the same order as always).
pub(super) fn parse_instruction(c: &mut Cursor, fs: &mut FnState, opname: &str, line: u32) -> PResult<()> {
    let ops = read_operands(c)?;
    let m = Mods::new(opname);
    check_mods(&m, opname, line)?;
    let types = m.types();
    let ty = types.first().copied().unwrap_or(Ty::None);
    let flags = m.flags();
    let cx = Ctx { ops, m, types, ty, flags, line, opname };
    let lower: fn(&mut FnState, &Ctx) -> PResult<()> = match cx.m.base {
        "mov" => convert::mov,
        "cvt" => convert::cvt,
        "cvta" => convert::cvta,
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "copysign"
        | "addc" | "subc" | "mul24" => arith::binary,
        "mad" | "fma" | "madc" | "mad24" => arith::mad,
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "rcp" | "sqrt" | "rsqrt" | "ex2"
        | "lg2" | "sin" | "cos" | "tanh" => arith::unary,
        "testp" => arith::testp,
        "sad" | "bfe" | "shf" | "prmt" | "dp4a" | "dp2a" | "slct" | "selp" => arith::three_source,
        "bfi" => arith::bfi,
        "lop3" => arith::lop3,
        "setp" | "set" => arith::setp,
        "ld" | "ldu" | "st" => memory::ld_st,
        "atom" | "red" => memory::atom,
        "cp" => memory::cp,
        "membar" | "fence" => memory::fence,
        "mbarrier" => hopper::mbarrier,
        "elect" => hopper::elect,
        "mapa" => hopper::mapa,
        "setmaxnreg" => hopper::setmaxnreg,
        "wgmma" => hopper::wgmma,
        "prefetch" | "prefetchu" | "discard" | "applypriority" | "nanosleep" | "pmevent" => memory::hint,
        "ldmatrix" | "stmatrix" => tensor::ldmatrix,
        "wmma" => tensor::wmma,
        "mma" => tensor::mma,
        "bra" | "brx" => control::bra,
        "ret" => control::ret,
        "exit" => control::exit,
        "trap" | "brkpt" => control::trap,
        "call" => control::call,
        "bar" | "barrier" => control::bar,
        "shfl" => warp::shfl,
        "vote" => warp::vote,
        "match" => warp::match_sync,
        "redux" => warp::redux,
        "activemask" => warp::activemask,
        _ => return cx.unsupported(),
    };
    lower(fs, &cx)
}
