//! Lowering of warp collectives (`shfl`, `vote`, `match`, `redux`, `activemask`).

use super::*;

/// `shfl.sync`.
pub(super) fn shfl(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 5, line, opname)?;
    let mut i = cx.mk(Op::Shfl);
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
    Ok(())
}

/// `vote` (with or without `.sync`).
pub(super) fn vote(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    let mut i = cx.mk(Op::Vote);
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
    Ok(())
}

/// `match.any`/`match.all`.
pub(super) fn match_sync(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    let mut i = cx.mk(Op::Match);
    i.sub = if m.has("all") { 1 } else { 0 };
    need(ops, 3, line, opname)?;
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
    Ok(())
}

/// `redux.sync`.
pub(super) fn redux(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 3, line, opname)?;
    let mut i = cx.mk(Op::Redux);
    i.sub = atom_op(m).ok_or((line, "redux: unknown operation".to_string()))?;
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], ty, line)?;
    i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
    push(fs, i);
    Ok(())
}

/// `activemask`.
pub(super) fn activemask(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 1, line, opname)?;
    let mut i = cx.mk(Op::Activemask);
    i.d[0] = dst(fs, &ops[0], line)?;
    push(fs, i);
    Ok(())
}
