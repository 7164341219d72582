//! Lowering of memory instructions: loads, stores, atomics and `cp.async`.

use super::*;

/// `ld`/`ldu`/`st`, scalar or vector.
pub(super) fn ld_st(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    need(ops, 2, line, opname)?;
    let is_ld = m.base != "st";
    let mut i = cx.mk(if is_ld { Op::Ld } else { Op::St });
    i.space = m.space();
    if is_ld
        && ["volatile", "relaxed", "acquire"].iter().any(|q| m.has(q))
        && matches!(i.space, Space::Global | Space::Generic)
    {
        i.sub2 = sub::LD_STRONG;
        fs.polls_global = true;
    }
    if m.has("shared::cluster") {
        // the address may name a peer CTA's shared memory (from `mapa`)
        i.flags |= fl::CLUSTER;
    }
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
        return cx.unsupported();
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
    Ok(())
}

/// `atom`/`red`.
pub(super) fn atom(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let ty = cx.ty;
    let line = cx.line;
    let opname = cx.opname;
    let mut i = cx.mk(if m.base == "atom" { Op::Atom } else { Op::Red });
    // only floating-point atomics make the result depend on the order blocks run in (integer
    // ones are exact in any order: a last-block-arrives counter gives the same memory whoever
    // comes last), so only they make deterministic mode run the blocks in order
    fs.has_atomics |= ty.is_float();
    i.space = m.space();
    i.sub = atom_op(m).ok_or((line, format!("`{opname}`: unknown atomic operation")))?;
    // a compare-and-swap that fails leaves memory as it was: a lock or a claim retried in a loop
    fs.polls_global |= i.sub == sub::A_CAS && matches!(i.space, Space::Global | Space::Generic);
    if m.has("v2") || m.has("v4") || m.has("v8") {
        return cx.unsupported();
    }
    let mut k = 0;
    if m.base == "atom" {
        i.d[0] = dst(fs, &ops[0], line)?;
        k = 1;
    }
    let want = k + if i.sub == sub::A_CAS { 3 } else { 2 };
    need(ops, want, line, opname)?;
    resolve_addr(fs, &ops[k], line, &mut i)?;
    i.s[1] = resolve(fs, &ops[k + 1], ty, line)?;
    if i.sub == sub::A_CAS {
        i.s[2] = resolve(fs, &ops[k + 2], ty, line)?;
    }
    push(fs, i);
    Ok(())
}

/// `cp.async` copies, commit and wait groups.
pub(super) fn cp(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    let opname = cx.opname;
    if m.parts.first() != Some(&"async") {
        return cx.unsupported();
    }
    if m.has("bulk") {
        // (before the cp.async group forms: `cp.async.bulk.commit_group` is the bulk one)
        return super::hopper::bulk(fs, cx);
    }
    if m.has("commit_group") {
        push(fs, cx.mk(Op::CpAsyncCommit));
    } else if m.has("wait_group") {
        need(ops, 1, line, opname)?;
        let mut i = cx.mk(Op::CpAsyncWait);
        i.off = match &ops[0] {
            Opnd::Int(v) => *v as i64,
            _ => return Err((line, "wait_group needs an immediate".into())),
        };
        push(fs, i);
    } else if m.has("wait_all") {
        push(fs, cx.mk(Op::CpAsyncCommit));
        let mut i = cx.mk(Op::CpAsyncWait);
        i.off = 0;
        push(fs, i);
    } else if m.has("mbarrier") {
        return cx.unsupported();
    } else {
        if ops.len() != 3 && ops.len() != 4 {
            return Err((line, "cp.async expects 3 or 4 operands".into()));
        }
        let mut i = cx.mk(Op::CpAsync);
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
    Ok(())
}

/// `membar`/`fence`: memory ordering is sequentially consistent in the emulator, except
/// between the generic and the async proxy (`fence.proxy.async{.shared::cta,.global}`, tracked
/// per state space) and for the publication of mbarrier inits (`fence.mbarrier_init`, S12).
pub(super) fn fence(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    use crate::async_proxy::fence;
    let sub = if cx.m.has("mbarrier_init") {
        Some(fence::MBAR_INIT)
    } else if cx.m.has("proxy") && cx.m.has("async") {
        Some(if cx.m.has("global") {
            fence::GLOBAL
        } else if cx.m.has("shared::cta") || cx.m.has("shared::cluster") {
            fence::SHARED
        } else {
            fence::ALL
        })
    } else {
        None
    };
    let mut i = cx.mk(if sub.is_some() { Op::FenceProxyAsync } else { Op::Membar });
    i.sub = sub.unwrap_or(0);
    push(fs, i);
    Ok(())
}

/// Cache and scheduling hints that do not change emulated semantics.
pub(super) fn hint(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    push(fs, cx.mk(Op::Prefetch));
    Ok(())
}
