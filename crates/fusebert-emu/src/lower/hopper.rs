//! Lowering of Hopper's (sm_90) asynchronous machinery: `mbarrier`, `cp.async.bulk(.tensor)`
//! with its bulk groups, `elect.sync` and `setmaxnreg` (PTX ISA 9.7.13.15, 9.7.9.25, 9.7.12.x),
//! and `wgmma` (9.7.15: f16 and s8/u8 `mma_async`, SS and RS, `fence`/`commit_group`/`wait_group`).

use super::*;

/// Resolves an address operand (`[reg]`, `[reg+off]`, `[symbol]`) of a Hopper instruction into
/// (base slot, offset, 32-bit base?), the way `ld`/`st` addresses are resolved.
fn addr(fs: &mut FnState, o: &Opnd, space: Space, line: u32) -> PResult<(u32, i64, bool)> {
    let mut a = Inst::new(Op::Nop, line);
    a.space = space;
    resolve_addr(fs, o, line, &mut a)?;
    Ok((a.s[0], a.off, a.has(fl::ADDR32)))
}

/// `mbarrier.{init,arrive,arrive.expect_tx,arrive.noComplete,expect_tx,complete_tx,test_wait,
/// try_wait,inval}` on a barrier in shared memory (`.shared::cta`, or a generic address).
pub(super) fn mbarrier(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, m, line) = (&cx.ops[..], &cx.m, cx.line);
    let mut i = cx.mk(Op::Mbar);
    i.space = m.space();
    // (operand index of the barrier address, of the count/bytes/parity operand)
    let (sub, dst, at, val): (u8, bool, usize, Option<usize>) = if m.has("init") {
        (sub::MBAR_INIT, false, 0, Some(1))
    } else if m.has("arrive") && m.has("expect_tx") {
        (sub::MBAR_ARRIVE_TX, true, 1, Some(2))
    } else if m.has("arrive") && m.has("noComplete") {
        (sub::MBAR_ARRIVE_NOCOMPLETE, true, 1, Some(2))
    } else if m.has("arrive") {
        (sub::MBAR_ARRIVE, true, 1, (ops.len() == 3).then_some(2))
    } else if m.has("expect_tx") {
        (sub::MBAR_EXPECT_TX, false, 0, Some(1))
    } else if m.has("complete_tx") {
        (sub::MBAR_COMPLETE_TX, false, 0, Some(1))
    } else if m.has("test_wait") {
        (sub::MBAR_TEST_WAIT, true, 1, Some(2))
    } else if m.has("try_wait") {
        (sub::MBAR_TRY_WAIT, true, 1, Some(2))
    } else if m.has("inval") {
        (sub::MBAR_INVAL, false, 0, None)
    } else {
        return cx.unsupported();
    };
    i.sub = sub;
    let want = at + 1 + val.map_or(0, |_| 1);
    // try_wait may carry a suspend-time hint (a scheduling hint: ignored)
    if ops.len() != want && !(sub == sub::MBAR_TRY_WAIT && ops.len() == want + 1) {
        return Err((line, format!("`{}` expects {want} operands, got {}", cx.opname, ops.len())));
    }
    if dst {
        i.d[0] = super::dst(fs, &ops[0], line)?;
    }
    let (base, off, a32) = addr(fs, &ops[at], i.space, line)?;
    i.s[0] = base;
    i.off = off;
    if a32 {
        i.flags |= fl::ADDR32;
    }
    if let Some(v) = val {
        i.s[1] = resolve(fs, &ops[v], Ty::U64, line)?;
    }
    if m.has("parity") {
        i.flags |= fl::PARITY;
    }
    push(fs, i);
    Ok(())
}

/// `cp.async.bulk.tensor.Nd` loads (shared <- global, completing on an mbarrier) and stores
/// (global <- shared, in bulk groups); `cp.async.bulk.commit_group` / `wait_group{.read}`.
pub(super) fn bulk(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, m, line) = (&cx.ops[..], &cx.m, cx.line);
    if m.has("commit_group") {
        push(fs, cx.mk(Op::BulkGroup));
        return Ok(());
    }
    if m.has("wait_group") {
        need(ops, 1, line, cx.opname)?;
        let mut i = cx.mk(Op::BulkGroup);
        i.sub = 1;
        i.off = match &ops[0] {
            Opnd::Int(v) => *v as i64,
            _ => return Err((line, "cp.async.bulk.wait_group needs an immediate".into())),
        };
        if m.has("read") {
            i.flags |= fl::READ;
        }
        push(fs, i);
        return Ok(());
    }
    if !m.has("tensor") {
        return bulk_linear(fs, cx);
    }
    let rank = ["1d", "2d", "3d"].iter().position(|r| m.has(r)).map(|p| p as u8 + 1);
    let rank = rank.ok_or((line, format!("`{}`: only 1d-3d tensor copies are supported", cx.opname)))?;
    let mut i = cx.mk(Op::BulkTensor);
    i.n = rank;
    // which way: the destination space comes first in the modifiers
    let dst_shared = m.parts.iter().find_map(|p| match *p {
        "shared::cluster" | "shared::cta" | "shared" => Some(true),
        "global" => Some(false),
        _ => None,
    });
    let (tmap_at, smem_at) = match dst_shared {
        Some(true) => {
            if !m.has("mbarrier::complete_tx::bytes") {
                return Err((
                    line,
                    "a tensor load must complete on an mbarrier (.mbarrier::complete_tx::bytes)".into(),
                ));
            }
            if ops.len() != 3 && ops.len() != 4 {
                return Err((line, format!("`{}` expects 3 operands (and a cache policy)", cx.opname)));
            }
            i.sub = sub::BULK_LOAD;
            (1, 0)
        }
        Some(false) => {
            if !m.has("bulk_group") {
                return Err((line, "a tensor store must complete in a bulk group (.bulk_group)".into()));
            }
            if ops.len() != 2 && ops.len() != 3 {
                return Err((line, format!("`{}` expects 2 operands (and a cache policy)", cx.opname)));
            }
            i.sub = sub::BULK_STORE;
            (0, 1)
        }
        None => return Err((line, format!("`{}`: no state spaces", cx.opname))),
    };
    let (sbase, soff, s32) = addr(fs, &ops[smem_at], Space::Shared, line)?;
    i.s[0] = sbase;
    i.off = soff;
    if s32 {
        i.flags |= fl::ADDR32;
    }
    let Opnd::TensorAddr(map, coords) = &ops[tmap_at] else {
        return Err((line, "expected `[tensorMap, {coordinates}]`".into()));
    };
    if coords.len() != rank as usize {
        return Err((line, format!("a {rank}d copy needs {rank} coordinates, got {}", coords.len())));
    }
    i.s[1] = match fs.param_index.get(map.as_str()) {
        // a kernel parameter named directly: its generic address in the param window
        Some(&pi) => const_slot(fs, crate::memory::PARAM_WIN + fs.params[pi].offset as u64),
        None => resolve(fs, &Opnd::Name(map.clone()), Ty::U64, line)?,
    };
    let slots = coords.iter().map(|c| resolve(fs, c, Ty::S32, line)).collect::<PResult<Vec<u32>>>()?;
    i.list = fs.lists.len() as u32;
    fs.lists.push(slots);
    if i.sub == sub::BULK_LOAD {
        let (mb, moff, _) = addr(fs, &ops[2], Space::Shared, line)?;
        i.s[2] = mb;
        // the barrier's offset travels in `target` (the shared address's offset is in `off`)
        i.target = moff as u32;
    }
    push(fs, i);
    Ok(())
}

/// `cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [src], size, [mbar]`:
/// a linear global-to-shared copy completing on an mbarrier (lowered as a rank-0 tensor load:
/// `s[1]` = the global source, `s[3]` = the size).
fn bulk_linear(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, m, line) = (&cx.ops[..], &cx.m, cx.line);
    let to_shared = m.parts.iter().position(|p| p.starts_with("shared")) < m.parts.iter().position(|p| *p == "global");
    if !to_shared || !m.has("mbarrier::complete_tx::bytes") || !(ops.len() == 4 || ops.len() == 5) {
        return Err((
            line,
            format!(
                "unsupported instruction `{}` (of the non-tensor bulk copies, only global -> shared on an mbarrier)",
                cx.opname
            ),
        ));
    }
    let mut i = cx.mk(Op::BulkTensor);
    i.sub = sub::BULK_LOAD;
    i.n = 0;
    let (dbase, doff, d32) = addr(fs, &ops[0], Space::Shared, line)?;
    i.s[0] = dbase;
    i.off = doff;
    if d32 {
        i.flags |= fl::ADDR32;
    }
    let (sbase, soff, _) = addr(fs, &ops[1], Space::Global, line)?;
    if soff != 0 {
        return Err((line, "cp.async.bulk: an offset on the source address is not supported".into()));
    }
    i.s[1] = sbase;
    i.s[3] = resolve(fs, &ops[2], Ty::U32, line)?;
    let (mb, moff, _) = addr(fs, &ops[3], Space::Shared, line)?;
    i.s[2] = mb;
    i.target = moff as u32;
    push(fs, i);
    Ok(())
}

/// `elect.sync d|p, membermask`.
pub(super) fn elect(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, line) = (&cx.ops[..], cx.line);
    need(ops, 2, line, cx.opname)?;
    if !cx.m.has("sync") {
        return Err((line, "elect without .sync".into()));
    }
    let mut i = cx.mk(Op::Elect);
    match &ops[0] {
        Opnd::Pair(d, p) => {
            i.d[0] = dst(fs, &Opnd::Name(d.clone()), line)?;
            i.d[1] = dst(fs, &Opnd::Name(p.clone()), line)?;
        }
        _ => return Err((line, "elect.sync needs `d|p` destinations".into())),
    }
    i.s[0] = resolve(fs, &ops[1], Ty::U32, line)?;
    push(fs, i);
    Ok(())
}

/// `mapa.shared::cluster.u32 d, a, rank` (the generic-address forms are not emulated).
pub(super) fn mapa(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, line) = (&cx.ops[..], cx.line);
    need(ops, 3, line, cx.opname)?;
    if !cx.m.has("shared::cluster") || cx.ty.bytes() != 4 {
        return Err((line, "only `mapa.shared::cluster.u32` is emulated (not the generic-address forms)".into()));
    }
    let mut i = cx.mk(Op::Mapa);
    i.d[0] = dst(fs, &ops[0], line)?;
    i.s[0] = resolve(fs, &ops[1], Ty::U32, line)?;
    i.s[1] = resolve(fs, &ops[2], Ty::U32, line)?;
    push(fs, i);
    Ok(())
}

/// `setmaxnreg.{inc,dec}.sync.aligned.u32 n`: n in 24..=256, a multiple of 8 (checked here:
/// ptxas rejects anything else too).
pub(super) fn setmaxnreg(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, line) = (&cx.ops[..], cx.line);
    need(ops, 1, line, cx.opname)?;
    let n = match &ops[0] {
        Opnd::Int(v) => *v,
        _ => return Err((line, "setmaxnreg needs an immediate register count".into())),
    };
    if !(24..=256).contains(&n) || n % 8 != 0 {
        return Err((line, format!("setmaxnreg count {n}: must be a multiple of 8 in 24..=256")));
    }
    let mut i = cx.mk(Op::SetMaxNReg);
    i.sub = match (cx.m.has("inc"), cx.m.has("dec")) {
        (true, false) => 1,
        (false, true) => 0,
        _ => return Err((line, "setmaxnreg needs .inc or .dec".into())),
    };
    i.off = n as i64;
    push(fs, i);
    Ok(())
}

/// `wgmma.fence/commit_group/wait_group.sync.aligned` and `wgmma.mma_async.sync.aligned` in the
/// forms of the PTX ISA section "wgmma.mma_async" (see [`wgmma_mma`]); anything else is refused here rather than run
/// from a guess.
pub(super) fn wgmma(fs: &mut FnState, cx: &Ctx) -> PResult<()> {
    let (ops, m, line) = (&cx.ops[..], &cx.m, cx.line);
    let mut i = cx.mk(Op::Wgmma);
    if !m.has("sync") || !m.has("aligned") {
        return Err((line, format!("`{}` needs .sync.aligned", cx.opname)));
    }
    if m.has("fence") {
        i.sub = sub::WG_FENCE;
    } else if m.has("commit_group") {
        i.sub = sub::WG_COMMIT;
    } else if m.has("wait_group") {
        need(ops, 1, line, cx.opname)?;
        i.sub = sub::WG_WAIT;
        i.off = match &ops[0] {
            Opnd::Int(v) => *v as i64,
            _ => return Err((line, "wgmma.wait_group needs an immediate".into())),
        };
    } else if m.has("mma_async") {
        return wgmma_mma(fs, cx, i);
    } else {
        return cx.unsupported();
    }
    push(fs, i);
    Ok(())
}

/// `wgmma.mma_async.sync.aligned`, the forms emulated:
/// * `.m64nNk16.f32.f16.f16` and `.m64nNk16.f16.f16.f16`, N = 8..256 step 8:
///   `d, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-a, imm-trans-b` (SS) or
///   `d, {a0,a1,a2,a3}, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-b` (RS);
/// * `.m64nNk32{.satfinite}.s32.{s8,u8}.{s8,u8}`, N in 8, 16, 24, 32, 48, .., 256:
///   `d, a-desc, b-desc, scale-d` (SS) or `d, {a0,a1,a2,a3}, b-desc, scale-d` (RS); integer
///   operands are K-major only (they have no transpose immediates).
///
/// Lowered as: `ty` = accumulator type, `ty2` = A's element type, `n` = N / 8, list = the
/// accumulators then (RS) the four A registers, `s[0]`/`s[1]` = A/B descriptors (`s[0]` = NONE
/// for RS), `s[2]` = scale-d, `sub2` = the `WG_*` bits, `fl::SATFINITE`.
fn wgmma_mma(fs: &mut FnState, cx: &Ctx, mut i: Inst) -> PResult<()> {
    let (ops, m, line) = (&cx.ops[..], &cx.m, cx.line);
    let shape = m.parts.iter().find(|p| p.starts_with("m64n")).ok_or((line, "wgmma without a shape".to_string()))?;
    let (acc, ta, tb) = match cx.types[..] {
        [acc, ta, tb] => (acc, ta, tb),
        _ => return Err((line, format!("`{}`: expected three types (D, A, B)", cx.opname))),
    };
    let int = match (acc, ta, tb) {
        (Ty::F32 | Ty::F16, Ty::F16, Ty::F16) => false,
        (Ty::S32, Ty::S8 | Ty::U8, Ty::S8 | Ty::U8) => true,
        _ => {
            return Err((
                line,
                format!(
                    "`{}`: of wgmma's types only .f32.f16.f16, .f16.f16.f16 and .s32.{{s8,u8}}.{{s8,u8}} are emulated",
                    cx.opname
                ),
            ))
        }
    };
    let kdim = if int { "k32" } else { "k16" };
    let n: u32 = shape
        .strip_prefix("m64n")
        .and_then(|r| r.strip_suffix(kdim))
        .and_then(|v| v.parse().ok())
        .ok_or((line, format!("wgmma shape `{shape}`: these types need m64nN{kdim}")))?;
    // ISA, "Matrix shape" table of wgmma (research note 1.1): f16 N = 8..256 step 8; s8/u8 N = 8, 16, 24 then 32..256 step 16
    let n_ok = (8..=256).contains(&n) && n % 8 == 0 && (!int || n <= 24 || n % 16 == 0);
    if !n_ok {
        let allowed = if int { "8, 16, 24, or a multiple of 16 in 32..=256" } else { "a multiple of 8 in 8..=256" };
        return Err((line, format!("wgmma {shape}: N = {n} must be {allowed}")));
    }
    if m.has("satfinite") {
        if !int {
            return Err((line, "wgmma .satfinite applies to the integer (.s32) forms only".into()));
        }
        i.flags |= fl::SATFINITE;
    }
    let rs = matches!(ops.get(1), Some(Opnd::Vec(_)));
    // operands after scale-d: float SS: scale-a, scale-b, trans-a, trans-b; float RS: scale-a,
    // scale-b, trans-b; integer: none (K-major only, no negation)
    let want = match (int, rs) {
        (false, false) => 8,
        (false, true) => 7,
        (true, _) => 4,
    };
    if int && ops.len() > 4 {
        return Err((
            line,
            "integer wgmma takes `d, a, b-desc, scale-d` only: s8/u8 operands are K-major (no imm-trans; \
             MN-major is for .f16/.bf16) and cannot be negated (no imm-scale)"
                .into(),
        ));
    }
    if ops.len() != want {
        return Err((line, format!("`{}` expects {want} operands, got {}", cx.opname, ops.len())));
    }
    let per_thread = if acc == Ty::F16 { n / 4 } else { n / 2 };
    let mut list = vec_slots(fs, &ops[0], acc, line, true)?;
    if list.len() != per_thread as usize {
        return Err((
            line,
            format!("{shape} with {acc:?} accumulators needs {per_thread} registers, got {}", list.len()),
        ));
    }
    let imm = |o: &Opnd| match o {
        Opnd::Int(v) => Ok(*v),
        _ => Err((line, "wgmma scale/transpose operands must be immediates".to_string())),
    };
    let mut bits = 0u8;
    if !int {
        let (sa, sb) = (imm(&ops[4])?, imm(&ops[5])?);
        if ![1, -1].contains(&sa) || ![1, -1].contains(&sb) {
            return Err((line, "wgmma imm-scale-a/b must be 1 or -1".into()));
        }
        let (tra, trb) = if rs { (0, imm(&ops[6])?) } else { (imm(&ops[6])?, imm(&ops[7])?) };
        if ![0, 1].contains(&tra) || ![0, 1].contains(&trb) {
            return Err((line, "wgmma imm-trans-a/b must be 0 or 1".into()));
        }
        bits |= ((sa == -1) as u8 * sub::WG_NEG_A) | ((sb == -1) as u8 * sub::WG_NEG_B);
        bits |= ((tra == 1) as u8 * sub::WG_TRANS_A) | ((trb == 1) as u8 * sub::WG_TRANS_B);
    }
    if rs {
        let a = vec_slots(fs, &ops[1], Ty::B32, line, false)?;
        if a.len() != 4 {
            return Err((line, format!("wgmma's register A operand is 4 registers, got {}", a.len())));
        }
        list.extend(a);
        bits |= sub::WG_A_REGS;
        i.s[0] = NONE;
    } else {
        i.s[0] = resolve(fs, &ops[1], Ty::U64, line)?;
    }
    if tb == Ty::S8 {
        bits |= sub::WG_B_SIGNED;
    }
    i.sub = sub::WG_MMA;
    i.ty = acc;
    i.ty2 = ta;
    i.n = (n / 8) as u8;
    i.sub2 = bits;
    i.s[1] = resolve(fs, &ops[2], Ty::U64, line)?;
    i.s[2] = resolve(fs, &ops[3], Ty::Pred, line)?;
    i.list = fs.lists.len() as u32;
    fs.lists.push(list);
    push(fs, i);
    Ok(())
}
