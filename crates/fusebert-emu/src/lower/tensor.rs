//! Lowering of the tensor-core instructions (`ldmatrix`, `wmma`, `mma`).

use super::*;

/// `ldmatrix`/`stmatrix` (m8n8 only).
pub(super) fn ldmatrix(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
    let is_ld = m.base == "ldmatrix";
    let mut i = cx.mk(if is_ld { Op::Ldmatrix } else { Op::Stmatrix });
    i.space = m.space();
    if !m.has("m8n8") {
        return cx.unsupported();
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
    Ok(())
}

/// `wmma` load/store/mma (m16n16k16 only).
pub(super) fn wmma(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let types = &cx.types;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    if !m.has("m16n16k16") {
        return Err((line, format!("`{opname}`: only the m16n16k16 wmma shape is supported")));
    }
    let mut i = cx.mk(Op::Wmma);
    i.space = m.space();
    if m.has("mma") {
        need(ops, 4, line, opname)?;
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
    Ok(())
}

/// `mma.sync` (row.col layouts).
pub(super) fn mma(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let types = &cx.types;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 4, line, opname)?;
    let mut i = cx.mk(Op::Mma);
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
    Ok(())
}
