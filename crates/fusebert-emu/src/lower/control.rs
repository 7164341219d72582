//! Lowering of control flow: branches, calls, returns, traps and barriers.

use super::*;

/// `bra` (`brx` is rejected).
pub(super) fn bra(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    let opname = cx.opname;
    if m.base == "brx" {
        return cx.unsupported();
    }
    need(ops, 1, line, opname)?;
    let label = match &ops[0] {
        Opnd::Name(n) => n.clone(),
        _ => return Err((line, "bra needs a label".into())),
    };
    let idx = fs.insts.len();
    push(fs, cx.mk(Op::Bra));
    let keys = fs.label_candidates(&label);
    fs.fixups.push((idx, keys, line));
    Ok(())
}

/// `ret`: a thread exit in a kernel, a return in a device function.
pub(super) fn ret(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let mut i = cx.mk(Op::Ret);
    // sub = 1: return from a device function (not a thread exit)
    i.sub = fs.in_func as u8;
    push(fs, i);
    Ok(())
}

/// `call`: device functions, `vprintf` and `__assertfail`.
pub(super) fn call(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let line = cx.line;
    // call[.uni] [(rets),] callee[, (args)];
    let mut rets: Vec<String> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    let mut callee = None;
    for o in ops {
        match o {
            Opnd::Name(n) if callee.is_none() => callee = Some(n.clone()),
            Opnd::Vec(v) => {
                let names: Vec<String> =
                    v.iter().filter_map(|e| if let Opnd::Name(n) = e { Some(n.clone()) } else { None }).collect();
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
            let mut i = cx.mk(Op::Printf);
            i.list = fs.lists.len() as u32;
            fs.lists.push(vec![fmt, argbuf, ret]);
            push(fs, i);
        }
        // device-side assert(): a trap that names the assertion
        "__assertfail" => {
            let mut i = cx.mk(Op::Trap);
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
            let mut i = cx.mk(Op::Call);
            i.list = fs.lists.len() as u32;
            fs.lists.push(l);
            let idx = fs.insts.len();
            push(fs, i);
            fs.fixups.push((idx, vec![format!("%%func_{name}")], line));
        }
    }
    Ok(())
}

/// `bar`/`barrier`: sync, arrive, red and warp forms.
pub(super) fn bar(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let ops = &cx.ops[..];
    let m = &cx.m;
    let line = cx.line;
    // `bar.sync` is `barrier.sync.aligned`; plain `barrier.*` is the non-aligned form
    let unaligned = if m.base == "barrier" && !m.has("aligned") { fl::UNALIGNED } else { 0 };
    if m.base == "barrier" && m.has("cluster") {
        // barrier.cluster.arrive{.release|.relaxed}{.aligned} / barrier.cluster.wait{.acquire}{.aligned}
        if !ops.is_empty() {
            return Err((line, "barrier.cluster takes no operands".into()));
        }
        let mut i = cx.mk(Op::ClusterBar);
        i.sub = if m.has("arrive") {
            0
        } else if m.has("wait") {
            1
        } else {
            return Err((line, "barrier.cluster needs .arrive or .wait".into()));
        };
        i.flags |= unaligned;
        push(fs, i);
        return Ok(());
    }
    if m.has("warp") {
        let mut i = cx.mk(Op::BarWarp);
        if let Some(o) = ops.first() {
            i.s[0] = resolve(fs, o, Ty::U32, line)?;
        }
        push(fs, i);
    } else if m.has("red") {
        let mut i = cx.mk(Op::BarRed);
        i.sub = atom_op(m).ok_or((line, "bar.red needs popc/and/or".to_string()))?;
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
        let mut i = cx.mk(Op::Bar);
        i.sub2 = 1;
        i.s[0] = resolve(fs, &ops[0], Ty::U32, line)?;
        i.s[1] = resolve(fs, &ops[1], Ty::U32, line)?;
        push(fs, i);
    } else {
        let mut i = cx.mk(Op::Bar);
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
    Ok(())
}

/// `exit`.
pub(super) fn exit(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    push(fs, cx.mk(Op::Exit));
    Ok(())
}

/// `trap`/`brkpt`.
pub(super) fn trap(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    push(fs, cx.mk(Op::Trap));
    Ok(())
}
