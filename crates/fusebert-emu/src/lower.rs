//! Lowering of one PTX instruction (opcode + modifiers + operands) into IR instructions: the
//! per-opcode half of the parser. Operand resolution and the per-function state live in
//! [`super::parse`].

use super::ir::*;
use super::parse::*;

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
                "shared" | "shared::cta" => Space::Shared,
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
];

fn check_mods(m: &Mods, opname: &str, line: u32) -> PResult<()> {
    for p in &m.parts {
        if Ty::parse(p).is_none() && !KNOWN_MODS.contains(p) {
            return Err((line, format!("`{opname}`: unsupported modifier `.{p}`")));
        }
    }
    Ok(())
}

pub(super) fn parse_instruction(c: &mut Cursor, fs: &mut FnState, opname: &str, line: u32) -> PResult<()> {
    let ops = read_operands(c)?;
    let m = Mods::new(opname);
    check_mods(&m, opname, line)?;
    let types = m.types();
    let ty = types.first().copied().unwrap_or(Ty::None);
    let flags = m.flags();
    let mk = |op: Op| {
        let mut i = Inst::new(op, line);
        i.ty = ty;
        i.flags = flags;
        i.rnd = m.rnd();
        i
    };
    let unsupported = || Err((line, format!("unsupported instruction `{opname}`")));
    match m.base {
        "mov" => {
            need(&ops, 2, line, opname)?;
            match (&ops[0], &ops[1]) {
                (Opnd::Vec(ds), src) => {
                    let mut i = mk(Op::Unpack);
                    i.n = ds.len() as u8;
                    i.s[0] = resolve(fs, src, ty, line)?;
                    let d = vec_slots(fs, &ops[0], ty, line, true)?;
                    if d.len() > 4 {
                        return unsupported();
                    }
                    i.d[..d.len()].copy_from_slice(&d);
                    push(fs, i);
                }
                (d, Opnd::Vec(ss)) if !(ss.len() == 5 && matches!(ss[2], Opnd::Sink)) => {
                    let mut i = mk(Op::Pack);
                    i.n = ss.len() as u8;
                    i.d[0] = dst(fs, d, line)?;
                    let elt = match (ty.bits() / ss.len() as u32, ty) {
                        (8, _) => Ty::B8,
                        (16, _) => Ty::B16,
                        (32, _) => Ty::B32,
                        _ => Ty::B64,
                    };
                    let s = vec_slots(fs, &ops[1], elt, line, false)?;
                    if s.len() > 4 {
                        return unsupported();
                    }
                    i.s[..s.len()].copy_from_slice(&s);
                    push(fs, i);
                }
                (d, Opnd::Name(n)) if n.starts_with("%clock") || n == "%globaltimer" => {
                    let mut i = mk(Op::ReadClock);
                    i.d[0] = dst(fs, d, line)?;
                    push(fs, i);
                }
                (d, s) => {
                    let mut i = mk(Op::Mov);
                    i.d[0] = dst(fs, d, line)?;
                    i.s[0] = resolve(fs, s, ty, line)?;
                    push(fs, i);
                }
            }
        }
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "copysign"
        | "addc" | "subc" | "mul24" => {
            need(&ops, 3, line, opname)?;
            let op = match m.base {
                "add" | "addc" => Op::Add,
                "sub" | "subc" => Op::Sub,
                "mul" | "mul24" => Op::Mul,
                "div" => Op::Div,
                "rem" => Op::Rem,
                "min" => Op::Min,
                "max" => Op::Max,
                "and" => Op::And,
                "or" => Op::Or,
                "xor" => Op::Xor,
                "shl" => Op::Shl,
                "shr" => Op::Shr,
                _ => Op::Copysign,
            };
            let mut i = mk(op);
            if m.base == "addc" || m.base == "subc" {
                i.flags |= fl::CARRY_IN;
            }
            if m.base == "mul24" {
                i.sub = 24;
            }
            i.d[0] = dst(fs, &ops[0], line)?;
            let sty = if op == Op::Shl || op == Op::Shr { Ty::U32 } else { ty };
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            i.s[1] = resolve(fs, &ops[2], sty, line)?;
            if (op == Op::And || op == Op::Or || op == Op::Xor) && ty == Ty::Pred {
                // predicate logic may use !p sources
                if let Opnd::Not(_) = &ops[1] {
                    return unsupported();
                }
            }
            if flags & fl::CC != 0 || flags & fl::CARRY_IN != 0 {
                i.d[1] = fs.cc;
                i.s[3] = fs.cc;
            }
            push(fs, i);
        }
        "mad" | "fma" | "madc" | "mad24" => {
            need(&ops, 4, line, opname)?;
            let mut i = mk(if m.base == "fma" { Op::Fma } else { Op::Mad });
            if m.base == "madc" {
                i.flags |= fl::CARRY_IN;
            }
            if m.base == "mad24" {
                i.sub = 24;
            }
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            i.s[1] = resolve(fs, &ops[2], ty, line)?;
            let cty = if i.has(fl::WIDE) { wide_ty(ty) } else { ty };
            i.s[2] = resolve(fs, &ops[3], cty, line)?;
            if flags & fl::CC != 0 || i.has(fl::CARRY_IN) {
                i.d[1] = fs.cc;
                i.s[3] = fs.cc;
            }
            push(fs, i);
        }
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "rcp" | "sqrt" | "rsqrt" | "ex2"
        | "lg2" | "sin" | "cos" | "tanh" => {
            need(&ops, 2, line, opname)?;
            let op = match m.base {
                "neg" => Op::Neg,
                "abs" => Op::Abs,
                "not" => Op::Not,
                "cnot" => Op::Cnot,
                "popc" => Op::Popc,
                "clz" => Op::Clz,
                "brev" => Op::Brev,
                "bfind" => Op::Bfind,
                "rcp" => Op::Rcp,
                "sqrt" => Op::Sqrt,
                "rsqrt" => Op::Rsqrt,
                "ex2" => Op::Ex2,
                "lg2" => Op::Lg2,
                "sin" => Op::Sin,
                "cos" => Op::Cos,
                _ => Op::Tanh,
            };
            let mut i = mk(op);
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            push(fs, i);
        }
        "testp" => {
            need(&ops, 2, line, opname)?;
            let mut i = mk(Op::Testp);
            i.sub = ["finite", "infinite", "number", "notanumber", "normal", "subnormal"]
                .iter()
                .position(|t| m.has(t))
                .ok_or((line, "testp without a test".to_string()))? as u8;
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            push(fs, i);
        }
        "sad" | "bfe" | "shf" | "prmt" | "dp4a" | "dp2a" | "slct" | "selp" => {
            let op = match m.base {
                "sad" => Op::Sad,
                "bfe" => Op::Bfe,
                "shf" => Op::Shf,
                "prmt" => Op::Prmt,
                "dp4a" => Op::Dp4a,
                "dp2a" => Op::Dp2a,
                "slct" => Op::Slct,
                _ => Op::Selp,
            };
            let mut i = mk(op);
            if op == Op::Prmt {
                i.sub = if m.has("f4e") {
                    sub::PRMT_F4E
                } else if m.has("b4e") {
                    sub::PRMT_B4E
                } else if m.has("rc8") {
                    sub::PRMT_RC8
                } else if m.has("ecl") {
                    sub::PRMT_ECL
                } else if m.has("ecr") {
                    sub::PRMT_ECR
                } else if m.has("rc16") {
                    sub::PRMT_RC16
                } else {
                    0
                };
            }
            if op == Op::Dp4a || op == Op::Dp2a || op == Op::Slct {
                i.ty = types.first().copied().unwrap_or(Ty::S32);
                i.ty2 = types.get(1).copied().unwrap_or(i.ty);
                if op == Op::Dp2a {
                    i.sub = m.has("hi") as u8;
                }
            }
            need(&ops, 4, line, opname)?;
            i.d[0] = dst(fs, &ops[0], line)?;
            let (t1, t3) = match op {
                Op::Selp => (ty, Ty::Pred),
                Op::Slct => (i.ty, i.ty2),
                Op::Bfe => (ty, Ty::U32),
                Op::Dp4a | Op::Dp2a => (Ty::B32, Ty::B32),
                _ => (ty, ty),
            };
            i.s[0] = resolve(fs, &ops[1], t1, line)?;
            i.s[1] = resolve(fs, &ops[2], if op == Op::Bfe { Ty::U32 } else { t1 }, line)?;
            if op == Op::Selp {
                let (p, neg) = pred_src(fs, &ops[3], line)?;
                i.s[2] = p;
                if neg {
                    i.flags |= fl::NEG_PRED_SRC;
                }
            } else {
                i.s[2] = resolve(fs, &ops[3], t3, line)?;
            }
            push(fs, i);
        }
        "bfi" => {
            need(&ops, 5, line, opname)?;
            let mut i = mk(Op::Bfi);
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            i.s[1] = resolve(fs, &ops[2], ty, line)?;
            i.s[2] = resolve(fs, &ops[3], Ty::U32, line)?;
            i.s[3] = resolve(fs, &ops[4], Ty::U32, line)?;
            push(fs, i);
        }
        "lop3" => {
            need(&ops, 5, line, opname)?;
            let mut i = mk(Op::Lop3);
            i.d[0] = dst(fs, &ops[0], line)?;
            for k in 0..3 {
                i.s[k] = resolve(fs, &ops[k + 1], ty, line)?;
            }
            i.off = match &ops[4] {
                Opnd::Int(v) => *v as i64,
                _ => return Err((line, "lop3 needs an immediate LUT".into())),
            };
            push(fs, i);
        }
        "setp" | "set" => {
            if ops.len() != 3 && ops.len() != 4 {
                return Err((line, format!("`{opname}` expects 3 or 4 operands")));
            }
            let mut i = mk(if m.base == "setp" { Op::Setp } else { Op::Set });
            i.cmp = m.cmp().ok_or((line, format!("`{opname}` without a comparison")))?;
            i.sub2 = if m.has("and") {
                sub::B_AND
            } else if m.has("or") {
                sub::B_OR
            } else if m.has("xor") {
                sub::B_XOR
            } else {
                sub::B_NONE
            };
            if m.base == "set" {
                // set.cmp.dtype.stype
                i.ty2 = types.first().copied().unwrap_or(Ty::U32);
                i.ty = types.get(1).copied().unwrap_or(Ty::U32);
            }
            let sty = i.ty;
            match &ops[0] {
                Opnd::Pair(a, b) => {
                    i.d[0] = dst(fs, &Opnd::Name(a.clone()), line)?;
                    i.d[1] = dst(fs, &Opnd::Name(b.clone()), line)?;
                }
                o => i.d[0] = dst(fs, o, line)?,
            }
            i.s[0] = resolve(fs, &ops[1], sty, line)?;
            i.s[1] = resolve(fs, &ops[2], sty, line)?;
            if ops.len() == 4 {
                let (p, neg) = pred_src(fs, &ops[3], line)?;
                i.s[2] = p;
                if neg {
                    i.flags |= fl::NEG_PRED_SRC;
                }
                if i.sub2 == sub::B_NONE {
                    return Err((line, "setp with a predicate source needs .and/.or/.xor".into()));
                }
            }
            push(fs, i);
        }
        "cvt" => {
            let (dt, st) = match types.as_slice() {
                [d, s] => (*d, *s),
                _ => return Err((line, format!("`{opname}` needs a destination and a source type"))),
            };
            let mut i = mk(Op::Cvt);
            i.ty = dt;
            i.ty2 = st;
            if (dt == Ty::F16x2 || dt == Ty::BF16x2) && st == Ty::F32 {
                need(&ops, 3, line, opname)?;
                i.op = Op::CvtPack;
                i.d[0] = dst(fs, &ops[0], line)?;
                i.s[0] = resolve(fs, &ops[1], st, line)?;
                i.s[1] = resolve(fs, &ops[2], st, line)?;
            } else {
                need(&ops, 2, line, opname)?;
                i.d[0] = dst(fs, &ops[0], line)?;
                i.s[0] = resolve(fs, &ops[1], st, line)?;
            }
            push(fs, i);
        }
        "cvta" => {
            need(&ops, 2, line, opname)?;
            let mut i = mk(if m.has("to") { Op::CvtaTo } else { Op::Cvta });
            i.space = m.space();
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            push(fs, i);
        }
        "ld" | "ldu" | "st" => {
            need(&ops, 2, line, opname)?;
            let is_ld = m.base != "st";
            let mut i = mk(if is_ld { Op::Ld } else { Op::St });
            i.space = m.space();
            i.n = if m.has("v4") {
                4
            } else if m.has("v2") {
                2
            } else if m.has("v8") {
                8
            } else {
                1
            };
            if i.n == 8 {
                return unsupported();
            }
            let (vop, aop) = if is_ld { (&ops[0], &ops[1]) } else { (&ops[1], &ops[0]) };
            resolve_addr(fs, aop, line, &mut i)?;
            let regs = vec_slots(fs, vop, ty, line, is_ld)?;
            if regs.len() != i.n as usize {
                return Err((line, format!("vector width {} but {} registers", i.n, regs.len())));
            }
            if is_ld {
                i.d[..regs.len()].copy_from_slice(&regs);
            } else {
                // stores: s[0] = address base; values in list
                let li = fs.lists.len() as u32;
                fs.lists.push(regs);
                i.list = li;
            }
            push(fs, i);
        }
        "atom" | "red" => {
            let mut i = mk(if m.base == "atom" { Op::Atom } else { Op::Red });
            fs.has_atomics = true;
            i.space = m.space();
            i.sub = atom_op(&m).ok_or((line, format!("`{opname}`: unknown atomic operation")))?;
            if m.has("v2") || m.has("v4") || m.has("v8") {
                return unsupported();
            }
            let mut k = 0;
            if m.base == "atom" {
                i.d[0] = dst(fs, &ops[0], line)?;
                k = 1;
            }
            let want = k + if i.sub == sub::A_CAS { 3 } else { 2 };
            need(&ops, want, line, opname)?;
            resolve_addr(fs, &ops[k], line, &mut i)?;
            i.s[1] = resolve(fs, &ops[k + 1], ty, line)?;
            if i.sub == sub::A_CAS {
                i.s[2] = resolve(fs, &ops[k + 2], ty, line)?;
            }
            push(fs, i);
        }
        "cp" => {
            if m.parts.first() != Some(&"async") {
                return unsupported();
            }
            if m.has("commit_group") {
                push(fs, mk(Op::CpAsyncCommit));
            } else if m.has("wait_group") {
                need(&ops, 1, line, opname)?;
                let mut i = mk(Op::CpAsyncWait);
                i.off = match &ops[0] {
                    Opnd::Int(v) => *v as i64,
                    _ => return Err((line, "wait_group needs an immediate".into())),
                };
                push(fs, i);
            } else if m.has("wait_all") {
                push(fs, mk(Op::CpAsyncCommit));
                let mut i = mk(Op::CpAsyncWait);
                i.off = 0;
                push(fs, i);
            } else if m.has("bulk") || m.has("mbarrier") {
                return unsupported();
            } else {
                if ops.len() != 3 && ops.len() != 4 {
                    return Err((line, "cp.async expects 3 or 4 operands".into()));
                }
                let mut i = mk(Op::CpAsync);
                if m.has("cg") {
                    i.flags |= fl::CG;
                }
                // destination shared address
                let mut di = Inst::new(Op::Nop, line);
                di.space = Space::Shared;
                resolve_addr(fs, &ops[0], line, &mut di)?;
                i.s[0] = di.s[0];
                i.flags |= di.flags & fl::ADDR32;
                i.off = di.off;
                let mut si = Inst::new(Op::Nop, line);
                si.space = Space::Global;
                resolve_addr(fs, &ops[1], line, &mut si)?;
                i.s[1] = si.s[0];
                i.target = si.off as u32; // source offset (small)
                i.n = match &ops[2] {
                    Opnd::Int(v) => *v as u8,
                    _ => return Err((line, "cp.async size must be an immediate".into())),
                };
                if ops.len() == 4 {
                    i.s[2] = resolve(fs, &ops[3], Ty::U32, line)?;
                    // a predicate here is `ignore-src` (true: read nothing, zero-fill)
                    let is_pred = (i.s[2] as usize) < fs.reg_ty.len() && fs.reg_ty[i.s[2] as usize] == Ty::Pred;
                    i.flags |= if is_pred { fl::IGNORE_SRC } else { fl::HAS_SRCSIZE };
                }
                push(fs, i);
            }
        }
        "ldmatrix" | "stmatrix" => {
            need(&ops, 2, line, opname)?;
            let is_ld = m.base == "ldmatrix";
            let mut i = mk(if is_ld { Op::Ldmatrix } else { Op::Stmatrix });
            i.space = m.space();
            if !m.has("m8n8") {
                return unsupported();
            }
            i.n = if m.has("x4") {
                4
            } else if m.has("x2") {
                2
            } else {
                1
            };
            let (vop, aop) = if is_ld { (&ops[0], &ops[1]) } else { (&ops[1], &ops[0]) };
            resolve_addr(fs, aop, line, &mut i)?;
            let regs = vec_slots(fs, vop, Ty::B32, line, is_ld)?;
            if regs.len() != i.n as usize {
                return Err((line, "ldmatrix register count does not match .xN".into()));
            }
            let li = fs.lists.len() as u32;
            fs.lists.push(regs);
            i.list = li;
            push(fs, i);
        }
        "wmma" => {
            if !m.has("m16n16k16") {
                return Err((line, format!("`{opname}`: only the m16n16k16 wmma shape is supported")));
            }
            let mut i = mk(Op::Wmma);
            i.space = m.space();
            if m.has("mma") {
                need(&ops, 4, line, opname)?;
                i.sub = sub::WMMA_MMA;
                // wmma.mma.sync.aligned.alayout.blayout.shape.dtype.ctype (f16 inputs) or
                // .dtype.atype.btype.ctype (bf16)
                let (dt, at, ct) = match types.as_slice() {
                    [d, c] => (*d, Ty::F16, *c),
                    [d, a, _, c] => (*d, *a, *c),
                    _ => return Err((line, "wmma.mma: cannot read the types".into())),
                };
                if !matches!(at, Ty::F16 | Ty::BF16) {
                    return Err((line, format!("wmma.mma with {at:?} inputs is not supported")));
                }
                i.ty = dt;
                i.ty2 = ct;
                i.n = (at == Ty::BF16) as u8;
                let nd = if dt == Ty::F16 { 4 } else { 8 };
                let nc = if ct == Ty::F16 { 4 } else { 8 };
                let d = vec_slots(fs, &ops[0], dt, line, true)?;
                let a = vec_slots(fs, &ops[1], Ty::B32, line, false)?;
                let b = vec_slots(fs, &ops[2], Ty::B32, line, false)?;
                let cc = vec_slots(fs, &ops[3], ct, line, false)?;
                if d.len() != nd || a.len() != 8 || b.len() != 8 || cc.len() != nc {
                    return Err((line, "wmma.mma: wrong number of fragment registers".into()));
                }
                let mut l = d;
                l.extend(a);
                l.extend(b);
                l.extend(cc);
                let li = fs.lists.len() as u32;
                fs.lists.push(l);
                i.list = li;
            } else {
                let is_store = m.has("store");
                i.sub = if is_store {
                    sub::WMMA_STORE_D
                } else if m.has("a") {
                    sub::WMMA_LOAD_A
                } else if m.has("b") {
                    sub::WMMA_LOAD_B
                } else {
                    sub::WMMA_LOAD_C
                };
                i.sub2 = m.has("col") as u8;
                if ops.len() != 2 && ops.len() != 3 {
                    return Err((line, format!("`{opname}` expects 2 or 3 operands")));
                }
                let (vop, aop) = if is_store { (&ops[1], &ops[0]) } else { (&ops[0], &ops[1]) };
                resolve_addr(fs, aop, line, &mut i)?;
                let regs = vec_slots(fs, vop, ty, line, !is_store)?;
                let want = match (i.sub, ty) {
                    (sub::WMMA_LOAD_A | sub::WMMA_LOAD_B, _) => 8,
                    (_, Ty::F16) => 4,
                    _ => 8,
                };
                if regs.len() != want {
                    return Err((line, format!("`{opname}` needs {want} registers, got {}", regs.len())));
                }
                let li = fs.lists.len() as u32;
                fs.lists.push(regs);
                i.list = li;
                // leading dimension in elements (default 16)
                i.s[1] = if ops.len() == 3 { resolve(fs, &ops[2], Ty::U32, line)? } else { const_slot(fs, 16) };
            }
            push(fs, i);
        }
        "mma" => {
            need(&ops, 4, line, opname)?;
            let mut i = mk(Op::Mma);
            let shape = m.parts.iter().find(|p| p.starts_with('m')).copied().unwrap_or("");
            if !(m.has("row") && m.has("col")) {
                return Err((line, "mma: only .row.col layouts are supported".into()));
            }
            // types: dtype, atype, btype, ctype
            let (dt, at, _bt, ct) = match types.as_slice() {
                [d, a, b, c] => (*d, *a, *b, *c),
                [d, c] => (*d, Ty::None, Ty::None, *c),
                _ => return Err((line, "mma: cannot read the types".into())),
            };
            i.sub = match (shape, at) {
                ("m16n8k16", Ty::F16) => sub::MMA_F16_M16N8K16,
                ("m16n8k16", Ty::BF16) => sub::MMA_BF16_M16N8K16,
                ("m16n8k8", Ty::F16) => sub::MMA_F16_M16N8K8,
                ("m16n8k8", Ty::BF16) => sub::MMA_BF16_M16N8K8,
                ("m16n8k8", Ty::TF32) => sub::MMA_TF32_M16N8K8,
                ("m16n8k32", Ty::S8) => sub::MMA_S8_M16N8K32,
                ("m16n8k32", Ty::U8) => sub::MMA_U8_M16N8K32,
                ("m16n8k16", Ty::S8) => sub::MMA_S8_M16N8K16,
                _ => return Err((line, format!("unsupported mma shape/type `{opname}`"))),
            };
            i.ty = dt;
            i.ty2 = ct;
            if types.len() == 4 && types[1] != types[2] {
                return Err((line, "mma: mixed A/B types are not supported".into()));
            }
            let d = vec_slots(fs, &ops[0], dt, line, true)?;
            let a = vec_slots(fs, &ops[1], Ty::B32, line, false)?;
            let b = vec_slots(fs, &ops[2], Ty::B32, line, false)?;
            let cc = vec_slots(fs, &ops[3], ct, line, false)?;
            let (na, nb, ncd) = match i.sub {
                sub::MMA_F16_M16N8K16
                | sub::MMA_BF16_M16N8K16
                | sub::MMA_S8_M16N8K32
                | sub::MMA_U8_M16N8K32
                | sub::MMA_TF32_M16N8K8 => (4, 2, 4),
                _ => (2, 1, 4),
            };
            let ncd = if dt == Ty::F16 { 2 } else { ncd };
            if a.len() != na || b.len() != nb || d.len() != ncd || cc.len() != (if ct == Ty::F16 { 2 } else { 4 }) {
                return Err((line, "mma: wrong number of fragment registers".into()));
            }
            let mut l = d;
            l.extend(a);
            l.extend(b);
            l.extend(cc);
            let li = fs.lists.len() as u32;
            fs.lists.push(l);
            i.list = li;
            i.n = na as u8;
            push(fs, i);
        }
        "bra" | "brx" => {
            if m.base == "brx" {
                return unsupported();
            }
            need(&ops, 1, line, opname)?;
            let label = match &ops[0] {
                Opnd::Name(n) => n.clone(),
                _ => return Err((line, "bra needs a label".into())),
            };
            let idx = fs.insts.len();
            push(fs, mk(Op::Bra));
            fs.fixups.push((idx, format!("{}{label}", fs.label_prefix), line));
        }
        "ret" => {
            let mut i = mk(Op::Ret);
            // sub = 1: return from a device function (not a thread exit)
            i.sub = fs.in_func as u8;
            push(fs, i);
        }
        "exit" => push(fs, mk(Op::Exit)),
        "trap" | "brkpt" => push(fs, mk(Op::Trap)),
        "call" => {
            // call[.uni] [(rets),] callee[, (args)];
            let mut rets: Vec<String> = Vec::new();
            let mut args: Vec<String> = Vec::new();
            let mut callee = None;
            for o in &ops {
                match o {
                    Opnd::Name(n) if callee.is_none() => callee = Some(n.clone()),
                    Opnd::Vec(v) => {
                        let names: Vec<String> = v
                            .iter()
                            .filter_map(|e| if let Opnd::Name(n) = e { Some(n.clone()) } else { None })
                            .collect();
                        if callee.is_none() {
                            rets = names;
                        } else {
                            args = names;
                        }
                    }
                    _ => {}
                }
            }
            let callee = callee.ok_or((line, "call without a callee".to_string()))?;
            match callee.as_str() {
                // printf: output is not emulated; returns 0
                // printf: formatted by the emulator, printed to stdout lane by lane
                "vprintf" => {
                    if args.len() != 2 {
                        return Err((line, "vprintf expects 2 arguments".into()));
                    }
                    let off = |fs: &FnState, a: &str| fs.local_params.get(a).or_else(|| fs.param_alias.get(a)).copied();
                    let (Some(fmt), Some(argbuf)) = (off(fs, &args[0]), off(fs, &args[1])) else {
                        return Err((line, "vprintf arguments are not declared .param".into()));
                    };
                    let ret = rets.first().and_then(|r| off(fs, r)).unwrap_or(NONE);
                    let mut i = mk(Op::Printf);
                    i.list = fs.lists.len() as u32;
                    fs.lists.push(vec![fmt, argbuf, ret]);
                    push(fs, i);
                }
                // device-side assert(): a trap that names the assertion
                "__assertfail" => {
                    let mut i = mk(Op::Trap);
                    i.sub = 1;
                    push(fs, i);
                }
                name => {
                    let layout = func_layout(fs, name, line)?;
                    if layout.params.len() != args.len() || layout.rets.len() != rets.len() {
                        return Err((
                            line,
                            format!(
                                "call of `{name}` passes {} arguments / {} results, the function takes {} / {}",
                                args.len(),
                                rets.len(),
                                layout.params.len(),
                                layout.rets.len()
                            ),
                        ));
                    }
                    let off_of = |fs: &FnState, a: &str| -> PResult<u32> {
                        fs.local_params
                            .get(a)
                            .or_else(|| fs.param_alias.get(a))
                            .copied()
                            .ok_or((line, format!("call argument `{a}` is not a declared .param")))
                    };
                    // [save-list index, nargs, (src, dst, bytes)*, nrets, (src, dst, bytes)*]
                    let mut l = vec![layout.save_list, args.len() as u32];
                    for (a, &(dst, sz)) in args.iter().zip(&layout.params) {
                        l.extend([off_of(fs, a)?, dst, sz]);
                    }
                    l.push(rets.len() as u32);
                    for (r, &(src, sz)) in rets.iter().zip(&layout.rets) {
                        l.extend([src, off_of(fs, r)?, sz]);
                    }
                    let mut i = mk(Op::Call);
                    i.list = fs.lists.len() as u32;
                    fs.lists.push(l);
                    let idx = fs.insts.len();
                    push(fs, i);
                    fs.fixups.push((idx, format!("%%func_{name}"), line));
                }
            }
        }
        "bar" | "barrier" => {
            // `bar.sync` is `barrier.sync.aligned`; plain `barrier.*` is the non-aligned form
            let unaligned = if m.base == "barrier" && !m.has("aligned") { fl::UNALIGNED } else { 0 };
            if m.has("warp") {
                let mut i = mk(Op::BarWarp);
                if let Some(o) = ops.first() {
                    i.s[0] = resolve(fs, o, Ty::U32, line)?;
                }
                push(fs, i);
            } else if m.has("red") {
                let mut i = mk(Op::BarRed);
                i.sub = atom_op(&m).ok_or((line, "bar.red needs popc/and/or".to_string()))?;
                if !(ops.len() == 3 || ops.len() == 4) {
                    return Err((line, "bar.red expects 3 or 4 operands".into()));
                }
                i.d[0] = dst(fs, &ops[0], line)?;
                i.s[0] = resolve(fs, &ops[1], Ty::U32, line)?;
                if ops.len() == 4 {
                    i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
                }
                let (p, neg) = pred_src(fs, ops.last().unwrap(), line)?;
                i.s[2] = p;
                if neg {
                    i.flags |= fl::NEG_PRED_SRC;
                }
                i.flags |= unaligned;
                push(fs, i);
            } else if m.has("arrive") {
                // bar.arrive a, b: count this warp's threads at barrier a (expecting b), no wait
                if ops.len() != 2 {
                    return Err((line, "bar.arrive expects a barrier and a thread count".into()));
                }
                let mut i = mk(Op::Bar);
                i.sub2 = 1;
                i.s[0] = resolve(fs, &ops[0], Ty::U32, line)?;
                i.s[1] = resolve(fs, &ops[1], Ty::U32, line)?;
                push(fs, i);
            } else {
                let mut i = mk(Op::Bar);
                i.flags |= unaligned;
                if ops.is_empty() || ops.len() > 2 {
                    return Err((line, "bar.sync expects 1 or 2 operands".into()));
                }
                i.s[0] = resolve(fs, &ops[0], Ty::U32, line)?;
                if ops.len() == 2 {
                    i.s[1] = resolve(fs, &ops[1], Ty::U32, line)?;
                }
                push(fs, i);
            }
        }
        "membar" | "fence" => push(fs, mk(Op::Membar)),
        "prefetch" | "prefetchu" | "discard" | "applypriority" | "nanosleep" | "pmevent" => push(fs, mk(Op::Prefetch)),
        "shfl" => {
            need(&ops, 5, line, opname)?;
            let mut i = mk(Op::Shfl);
            i.sub = if m.has("up") {
                sub::SHFL_UP
            } else if m.has("down") {
                sub::SHFL_DOWN
            } else if m.has("bfly") {
                sub::SHFL_BFLY
            } else if m.has("idx") {
                sub::SHFL_IDX
            } else {
                return Err((line, "shfl without a mode".into()));
            };
            if !m.has("sync") {
                return Err((line, "shfl without .sync (pre-Volta) is not supported".into()));
            }
            match &ops[0] {
                Opnd::Pair(a, b) => {
                    i.d[0] = dst(fs, &Opnd::Name(a.clone()), line)?;
                    i.d[1] = dst(fs, &Opnd::Name(b.clone()), line)?;
                }
                o => i.d[0] = dst(fs, o, line)?,
            }
            i.s[0] = resolve(fs, &ops[1], Ty::B32, line)?;
            i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
            i.s[2] = resolve(fs, &ops[3], Ty::U32, line)?;
            i.s[3] = resolve(fs, &ops[4], Ty::U32, line)?;
            push(fs, i);
        }
        "vote" => {
            let mut i = mk(Op::Vote);
            i.sub = if m.has("all") {
                sub::VOTE_ALL
            } else if m.has("any") {
                sub::VOTE_ANY
            } else if m.has("uni") {
                sub::VOTE_UNI
            } else if m.has("ballot") {
                sub::VOTE_BALLOT
            } else {
                return Err((line, "vote without a mode".into()));
            };
            if !(ops.len() == 3 || (ops.len() == 2 && !m.has("sync"))) {
                return Err((line, "vote.sync expects 3 operands".into()));
            }
            i.d[0] = dst(fs, &ops[0], line)?;
            let (p, neg) = pred_src(fs, &ops[1], line)?;
            i.s[0] = p;
            if neg {
                i.flags |= fl::NEG_PRED_SRC;
            }
            i.s[1] = if ops.len() == 3 { resolve(fs, &ops[2], Ty::U32, line)? } else { const_slot(fs, 0xffff_ffff) };
            push(fs, i);
        }
        "match" => {
            let mut i = mk(Op::Match);
            i.sub = if m.has("all") { 1 } else { 0 };
            need(&ops, 3, line, opname)?;
            match &ops[0] {
                Opnd::Pair(a, b) => {
                    i.d[0] = dst(fs, &Opnd::Name(a.clone()), line)?;
                    i.d[1] = dst(fs, &Opnd::Name(b.clone()), line)?;
                }
                o => i.d[0] = dst(fs, o, line)?,
            }
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
            push(fs, i);
        }
        "redux" => {
            need(&ops, 3, line, opname)?;
            let mut i = mk(Op::Redux);
            i.sub = atom_op(&m).ok_or((line, "redux: unknown operation".to_string()))?;
            i.d[0] = dst(fs, &ops[0], line)?;
            i.s[0] = resolve(fs, &ops[1], ty, line)?;
            i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
            push(fs, i);
        }
        "activemask" => {
            need(&ops, 1, line, opname)?;
            let mut i = mk(Op::Activemask);
            i.d[0] = dst(fs, &ops[0], line)?;
            push(fs, i);
        }
        _ => return unsupported(),
    }
    Ok(())
}

fn wide_ty(t: Ty) -> Ty {
    match t {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        t => t,
    }
}
