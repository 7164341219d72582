//! Lowering of data movement between registers and type conversions (`mov`, `cvt`, `cvta`).

use super::*;

/// `mov`: plain moves, vector pack/unpack and clock reads.
pub(super) fn mov(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
    match (&ops[0], &ops[1]) {
        (Opnd::Vec(ds), src) => {
            let mut i = cx.mk(Op::Unpack);
            i.n = ds.len() as u8;
            i.s[0] = resolve(fs, src, ty, line)?;
            let d = vec_slots(fs, &ops[0], ty, line, true)?;
            if d.len() > 4 {
                return cx.unsupported();
            }
            i.d[..d.len()].copy_from_slice(&d);
            push(fs, i);
        }
        (d, Opnd::Vec(ss)) if !(ss.len() == 5 && matches!(ss[2], Opnd::Sink)) => {
            let mut i = cx.mk(Op::Pack);
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
                return cx.unsupported();
            }
            i.s[..s.len()].copy_from_slice(&s);
            push(fs, i);
        }
        (d, Opnd::Name(n)) if n.starts_with("%clock") || n == "%globaltimer" => {
            let mut i = cx.mk(Op::ReadClock);
            i.d[0] = dst(fs, d, line)?;
            push(fs, i);
        }
        (d, s) => {
            let mut i = cx.mk(Op::Mov);
            i.d[0] = dst(fs, d, line)?;
            i.s[0] = resolve(fs, s, ty, line)?;
            push(fs, i);
        }
    }
    Ok(())
}

/// `cvt`, including the two-source f32 -> f16x2/bf16x2 pack.
pub(super) fn cvt(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let types = &cx.types;
    let line = cx.line;
    let opname = cx.opname;
    let (dt, st) = match types.as_slice() {
        [d, s] => (*d, *s),
        _ => return Err((line, format!("`{opname}` needs a destination and a source type"))),
    };
    let mut i = cx.mk(Op::Cvt);
    i.ty = dt;
    i.ty2 = st;
    if (dt == Ty::F16x2 || dt == Ty::BF16x2) && st == Ty::F32 {
        need(ops, 3, line, opname)?;
        i.op = Op::CvtPack;
        i.d[0] = dst(fs, &ops[0], line)?;
        i.s[0] = resolve(fs, &ops[1], st, line)?;
        i.s[1] = resolve(fs, &ops[2], st, line)?;
    } else {
        need(ops, 2, line, opname)?;
        i.d[0] = dst(fs, &ops[0], line)?;
        i.s[0] = resolve(fs, &ops[1], st, line)?;
    }
    push(fs, i);
    Ok(())
}

/// `cvta`/`cvta.to`: address space conversion.
pub(super) fn cvta(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
    let mut i = cx.mk(if m.has("to") { Op::CvtaTo } else { Op::Cvta });
    i.space = m.space();
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], ty, line)?;
    push(fs, i);
    Ok(())
}
