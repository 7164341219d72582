//! Lowering of integer and floating-point arithmetic, bit operations and comparisons.

use super::*;

/// Two-source arithmetic and logic (`add` ... `mul24`, with carry variants).
pub(super) fn binary(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let flags = cx.flags;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 3, line, opname)?;
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
    let mut i = cx.mk(op);
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
            return cx.unsupported();
        }
    }
    if flags & fl::CC != 0 || flags & fl::CARRY_IN != 0 {
        i.d[1] = fs.cc;
        i.s[3] = fs.cc;
    }
    push(fs, i);
    Ok(())
}

/// `mad`/`fma` and their carry / 24-bit variants.
pub(super) fn mad(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let flags = cx.flags;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 4, line, opname)?;
    let mut i = cx.mk(if m.base == "fma" { Op::Fma } else { Op::Mad });
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
    Ok(())
}

/// One-source integer and float operations (`neg` ... `tanh`).
pub(super) fn unary(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
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
    let mut i = cx.mk(op);
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], ty, line)?;
    push(fs, i);
    Ok(())
}

/// `testp`: floating-point class tests.
pub(super) fn testp(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
    let mut i = cx.mk(Op::Testp);
    i.sub = ["finite", "infinite", "number", "notanumber", "normal", "subnormal"]
        .iter()
        .position(|t| m.has(t))
        .ok_or((line, "testp without a test".to_string()))? as u8;
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], ty, line)?;
    push(fs, i);
    Ok(())
}

/// Three-source bit and select operations (`sad`, `bfe`, `shf`, `prmt`, `dp4a`, `dp2a`, `slct`, `selp`).
pub(super) fn three_source(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let types = &cx.types;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
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
    let mut i = cx.mk(op);
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
    need(ops, 4, line, opname)?;
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
    Ok(())
}

/// `bfi`: bit-field insert.
pub(super) fn bfi(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 5, line, opname)?;
    let mut i = cx.mk(Op::Bfi);
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], ty, line)?;
    i.s[1] = resolve(fs, &ops[2], ty, line)?;
    i.s[2] = resolve(fs, &ops[3], Ty::U32, line)?;
    i.s[3] = resolve(fs, &ops[4], Ty::U32, line)?;
    push(fs, i);
    Ok(())
}

/// `lop3`: three-input logic with an immediate LUT.
pub(super) fn lop3(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 5, line, opname)?;
    let mut i = cx.mk(Op::Lop3);
    i.d[0] = dst(fs, &ops[0], line)?;
    for k in 0..3 {
        i.s[k] = resolve(fs, &ops[k + 1], ty, line)?;
    }
    i.off = match &ops[4] {
        Opnd::Int(v) => *v as i64,
        _ => return Err((line, "lop3 needs an immediate LUT".into())),
    };
    push(fs, i);
    Ok(())
}

/// `setp`/`set`: comparisons with an optional boolean combine.
pub(super) fn setp(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let types = &cx.types;
    let line = cx.line;
    let opname = cx.opname;
    if ops.len() != 3 && ops.len() != 4 {
        return Err((line, format!("`{opname}` expects 3 or 4 operands")));
    }
    let mut i = cx.mk(if m.base == "setp" { Op::Setp } else { Op::Set });
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
