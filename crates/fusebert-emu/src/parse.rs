//! PTX parser: module directives, variables, entries, device functions and register
//! declarations into the slot-based IR of [`super::ir`] (per-opcode lowering: [`super::lower`];
//! operand resolution and the state both share: [`super::syntax`]). Anything not understood is
//! an error naming the line.
use std::collections::HashMap;

use super::ir::*;
use super::lex::{tokenize, Tok, Token};
use super::lower::parse_instruction;
use super::syntax::*;

/// Kept here for existing paths; the definitions live in [`super::syntax`] and [`super::ir`].
pub use super::ir::{RELOC_DYN_SHARED, RELOC_GLOBAL, RELOC_NONE};
pub use super::syntax::PErr;

/// Parses a whole module. `name` is used only for messages by the caller.
pub fn parse_module(name: &str, src: &str) -> PResult<Module> {
    let toks = tokenize(src)?;
    let mut c = Cursor { t: &toks, i: 0 };
    let mut ms = ModState {
        funcs: scan_funcs(&toks),
        vars: Vec::new(),
        var_index: HashMap::new(),
        shared_off: 0,
        const_off: 0,
        global_off: 0,
        files: HashMap::new(),
    };
    // entries are lowered in order; device functions are compiled into the kernels calling them
    let mut kernels = Vec::new();
    let mut target = None;
    while let Some(t) = c.peek() {
        let line = c.line();
        let id = match t {
            Tok::Ident(s) => s.as_str(),
            Tok::Punct(';') => {
                c.i += 1;
                continue;
            }
            t => return Err((line, format!("unexpected {t:?} at module level"))),
        };
        match id {
            ".target" => {
                c.i += 1;
                if let Some(Tok::Ident(t)) = c.peek() {
                    target = Some(t.clone());
                }
                c.skip_line(line);
            }
            ".version" | ".address_size" => c.skip_line(line),
            ".file" => {
                c.i += 1;
                let n = c.int()? as u32;
                if let Some(Tok::Str(s)) = c.peek() {
                    ms.files.insert(n, s.clone());
                }
                c.skip_line(line);
            }
            ".section" => {
                c.i += 1;
                c.ident()?;
                c.expect_punct('{')?;
                let mut depth = 1;
                while depth > 0 {
                    match c.next()? {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') => depth -= 1,
                        _ => {}
                    }
                }
            }
            ".visible" | ".weak" | ".extern" | ".entry" | ".func" | ".global" | ".const" | ".shared" | ".common" => {
                // collect linkage prefixes
                let mut is_extern = false;
                while let Some(Tok::Ident(s)) = c.peek() {
                    match s.as_str() {
                        ".visible" | ".weak" | ".common" => c.i += 1,
                        ".extern" => {
                            is_extern = true;
                            c.i += 1
                        }
                        _ => break,
                    }
                }
                let kw = c.ident()?;
                match kw {
                    ".entry" => {
                        let k = parse_function(&mut c, &mut ms, true)?;
                        kernels.push(k);
                    }
                    ".func" => {
                        // Device functions: skipped here; `scan_funcs` found their bodies and
                        // each calling kernel compiles them (`compile_func`).
                        let mut depth = 0;
                        let mut has_body = false;
                        loop {
                            match c.next()? {
                                Tok::Punct('(') => depth += 1,
                                Tok::Punct(')') => depth -= 1,
                                Tok::Punct(';') if depth == 0 => break,
                                Tok::Punct('{') if depth == 0 => {
                                    has_body = true;
                                    break;
                                }
                                _ => {}
                            }
                        }
                        if has_body {
                            let mut depth = 1;
                            while depth > 0 {
                                match c.next()? {
                                    Tok::Punct('{') => depth += 1,
                                    Tok::Punct('}') => depth -= 1,
                                    _ => {}
                                }
                            }
                        }
                    }
                    ".global" | ".const" | ".shared" => {
                        let space = match kw {
                            ".global" => Space::Global,
                            ".const" => Space::Const,
                            _ => Space::Shared,
                        };
                        let v = parse_var(&mut c, space, is_extern)?;
                        ms.add_var(v);
                    }
                    other => return Err((line, format!("unsupported module directive `{other}`"))),
                }
            }
            other => return Err((line, format!("unsupported module-level statement `{other}`"))),
        }
    }
    let shared_static = ms.shared_off;
    Ok(Module {
        name: name.to_string(),
        kernels,
        vars: ms.vars,
        shared_static,
        const_bytes: ms.const_off,
        global_bytes: ms.global_off,
        files: ms.files,
        target,
    })
}

/// Finds every `.func` definition: `.func [(.param ret...)] name(.param p, ...) {body}`.
fn scan_funcs(t: &[Token]) -> HashMap<String, FuncDef> {
    let mut out = HashMap::new();
    let mut i = 0;
    let names = |from: usize, to: usize| -> Vec<(String, u32)> {
        // `.param [.align N] .type name[dims]` separated by commas: (name, bytes)
        let mut v = Vec::new();
        let mut name: Option<String> = None;
        let mut size = 0u32;
        let mut k = from;
        while k < to {
            match &t[k].tok {
                Tok::Ident(s) if s == ".align" => k += 1,
                Tok::Ident(s) if s.starts_with('.') => {
                    if let Some(ty) = Ty::parse(&s[1..]) {
                        size = ty.bytes();
                    }
                }
                Tok::Ident(s) => name = Some(s.clone()),
                Tok::Punct('[') => {
                    if let Some(Tok::Int(n)) = t.get(k + 1).map(|x| &x.tok) {
                        size *= *n as u32;
                    }
                }
                Tok::Punct(',') => {
                    if let Some(n) = name.take() {
                        v.push((n, size));
                    }
                }
                _ => {}
            }
            k += 1;
        }
        if let Some(n) = name.take() {
            v.push((n, size));
        }
        v
    };
    let close = |from: usize| -> usize {
        let mut k = from;
        while k < t.len() && t[k].tok != Tok::Punct(')') {
            k += 1;
        }
        k
    };
    while i < t.len() {
        if t[i].tok == Tok::Ident(".func".into()) {
            let mut k = i + 1;
            let mut rets = Vec::new();
            if t.get(k).map(|x| &x.tok) == Some(&Tok::Punct('(')) {
                let e = close(k);
                rets = names(k + 1, e);
                k = e + 1;
            }
            let Some(Tok::Ident(name)) = t.get(k).map(|x| &x.tok) else {
                i += 1;
                continue;
            };
            k += 1;
            let mut params = Vec::new();
            if t.get(k).map(|x| &x.tok) == Some(&Tok::Punct('(')) {
                let e = close(k);
                params = names(k + 1, e);
                k = e + 1;
            }
            // skip performance directives up to `{` or `;`
            while k < t.len() && t[k].tok != Tok::Punct('{') && t[k].tok != Tok::Punct(';') {
                k += 1;
            }
            if k < t.len() && t[k].tok == Tok::Punct('{') {
                out.insert(name.clone(), FuncDef { rets, params, body: k + 1 });
            }
            i = k;
        }
        i += 1;
    }
    out
}

/// `.space [.align N] [.ptr ...] .type name[N][= {init}] ;` (the space keyword already consumed).
fn parse_var(c: &mut Cursor, space: Space, is_extern: bool) -> PResult<Var> {
    let line = c.line();
    let mut align = 0u32;
    let mut ty = Ty::B8;
    let mut vec = 1u32;
    loop {
        let id = c.ident()?;
        match id {
            ".align" => align = c.int()? as u32,
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            s if s.starts_with('.') => {
                ty = Ty::parse(&s[1..]).ok_or((line, format!("unknown type `{s}` in variable declaration")))?;
            }
            name => {
                let name = name.to_string();
                let esz = ty.bytes() * vec;
                let mut count = 1u32;
                let mut dims_unknown = false;
                while c.eat_punct('[') {
                    if c.eat_punct(']') {
                        dims_unknown = true;
                        continue;
                    }
                    count *= c.int()? as u32;
                    c.expect_punct(']')?;
                }
                let size = if dims_unknown { 0 } else { esz * count };
                let mut init = None;
                if c.eat_punct('=') {
                    let mut bytes = Vec::new();
                    let mut vals = Vec::new();
                    if c.eat_punct('{') {
                        loop {
                            if c.eat_punct('}') {
                                break;
                            }
                            if c.eat_punct(',') {
                                continue;
                            }
                            // nested braces for multi-dim initialisers
                            if c.eat_punct('{') {
                                continue;
                            }
                            vals.push(c.next()?.clone());
                        }
                        while c.eat_punct('}') {}
                    } else {
                        vals.push(c.next()?.clone());
                    }
                    for v in vals {
                        let raw: u64 = match v {
                            Tok::Int(i) => i as u64,
                            Tok::F32(b) => {
                                if ty == Ty::F64 {
                                    (f32::from_bits(b) as f64).to_bits()
                                } else {
                                    b as u64
                                }
                            }
                            Tok::F64(b) => {
                                if ty == Ty::F32 {
                                    (f64::from_bits(b) as f32).to_bits() as u64
                                } else {
                                    b
                                }
                            }
                            Tok::Punct('-') => continue,
                            t => return Err((line, format!("unsupported initialiser {t:?}"))),
                        };
                        bytes.extend_from_slice(&raw.to_le_bytes()[..ty.bytes() as usize]);
                    }
                    bytes.resize(size as usize, 0);
                    init = Some(bytes);
                }
                c.expect_punct(';')?;
                let align = if align == 0 { ty.bytes().max(1) * vec } else { align };
                return Ok(Var { name, space, align, size, init, offset: 0, is_extern });
            }
        }
    }
}

fn parse_dims(c: &mut Cursor) -> PResult<(u32, u32, u32)> {
    let x = c.int()? as u32;
    let mut y = 1;
    let mut z = 1;
    if c.eat_punct(',') {
        y = c.int()? as u32;
        if c.eat_punct(',') {
            z = c.int()? as u32;
        }
    }
    Ok((x, y, z))
}

fn parse_function(c: &mut Cursor, ms: &mut ModState, _is_entry: bool) -> PResult<Kernel> {
    let name = c.ident()?.to_string();
    let mut fs = FnState::new(ms);
    let param_off = parse_params(c, &mut fs)?;
    let (maxntid, reqntid, cluster) = parse_directives(c)?;
    if c.eat_punct(';') {
        return Err((c.line(), format!("kernel `{name}` has no body")));
    }
    c.expect_punct('{')?;
    // reserved slots: sink and carry flag
    fs.sink = fs.new_reg("_", Ty::B64);
    fs.cc = fs.new_reg("%%cc", Ty::B32);
    parse_body(c, &mut fs)?;
    // Ensure the kernel ends with a terminator so the executor never falls off the end.
    let needs_ret =
        fs.insts.last().map(|i| !(matches!(i.op, Op::Ret | Op::Exit | Op::Bra) && i.guard == NONE)).unwrap_or(true);
    if needs_ret {
        fs.insts.push(Inst::new(Op::Ret, c.line()));
    }
    // device functions called (transitively) by the kernel, compiled after its body
    while let Some(name) = fs.pending_funcs.pop() {
        compile_func(c, &mut fs, &name)?;
    }
    // resolve labels
    for (idx, keys, line) in std::mem::take(&mut fs.fixups) {
        let t = *keys
            .iter()
            .find_map(|k| fs.labels.get(k))
            .ok_or((line, format!("unknown label `{}`", keys.last().map(|k| k.as_str()).unwrap_or(""))))?;
        fs.insts[idx].target = t;
    }
    let nregs = fs.nregs;
    let PlacedSlots { consts, specials, nslots } = place_slots(&mut fs);
    let mut k = Kernel {
        name,
        params: fs.params,
        param_bytes: param_off,
        insts: fs.insts,
        nslots,
        nregs,
        consts,
        specials,
        lists: fs.lists,
        local_bytes: fs.local_bytes,
        shared_static: fs.shared_bytes,
        locs: fs.locs,
        has_atomics: fs.has_atomics,
        polls_global: fs.polls_global,
        maxntid,
        reqntid,
        cluster,
        reg_names: fs.reg_names,
        uses_async: false,
    };
    k.uses_async = k.insts.iter().any(|i| {
        matches!(i.op, Op::Mbar | Op::BulkTensor | Op::BulkGroup | Op::FenceProxyAsync | Op::SetMaxNReg | Op::Wgmma)
    });
    super::cfg::compute_reconvergence(&mut k);
    Ok(k)
}

/// The `(...)` parameter list of a kernel: fills `fs.params`, returns the parameter bytes.
fn parse_params(c: &mut Cursor, fs: &mut FnState) -> PResult<u32> {
    let mut param_off = 0u32;
    if c.eat_punct('(') {
        while !c.eat_punct(')') {
            if c.eat_punct(',') {
                continue;
            }
            let line = c.line();
            let kw = c.ident()?;
            if kw != ".param" {
                return Err((line, format!("expected .param, found `{kw}`")));
            }
            let mut align = 0;
            let mut ty = Ty::B8;
            let mut is_ptr = false;
            let pname;
            loop {
                let id = c.ident()?;
                match id {
                    ".align" => align = c.int()? as u32,
                    ".ptr" => is_ptr = true,
                    ".global" | ".shared" | ".const" | ".local" => {}
                    s if s.starts_with('.') => {
                        ty = Ty::parse(&s[1..]).ok_or((line, format!("unknown param type `{s}`")))?;
                    }
                    n => {
                        pname = n.to_string();
                        break;
                    }
                }
            }
            let mut size = ty.bytes();
            if c.eat_punct('[') {
                size *= c.int()? as u32;
                c.expect_punct(']')?;
            }
            // `.ptr .global .align N` states the pointee alignment; the param itself is aligned
            // to its size unless an array parameter states its own alignment.
            let palign = if size > ty.bytes() && align > 0 { align } else { ty.bytes().max(1) };
            param_off = param_off.div_ceil(palign) * palign;
            fs.param_index.insert(pname.clone(), fs.params.len());
            let ptr_align = if is_ptr && align > 0 { Some(align) } else { None };
            fs.params.push(Param { name: pname, ty, size, align: palign, offset: param_off, ptr_align });
            param_off += size;
        }
    }
    Ok(param_off)
}

/// A `.maxntid`/`.reqntid` triple, when given.
type Dims = Option<(u32, u32, u32)>;

/// Performance directives after the parameters: `.maxntid`/`.reqntid` and the cluster shape
/// (`.reqnctapercluster`) are kept (launch checks, cluster execution), the others only parsed.
fn parse_directives(c: &mut Cursor) -> PResult<(Dims, Dims, Dims)> {
    let mut maxntid = None;
    let mut reqntid = None;
    let mut cluster = None;
    loop {
        match c.peek() {
            Some(Tok::Ident(s)) if s == ".maxntid" => {
                c.i += 1;
                maxntid = Some(parse_dims(c)?);
            }
            Some(Tok::Ident(s)) if s == ".reqntid" => {
                c.i += 1;
                reqntid = Some(parse_dims(c)?);
            }
            Some(Tok::Ident(s))
                if s == ".minnctapersm" || s == ".maxnreg" || s == ".maxnctapersm" || s == ".maxclusterrank" =>
            {
                c.i += 1;
                parse_dims(c)?;
            }
            Some(Tok::Ident(s)) if s == ".reqnctapercluster" || s == ".explicitcluster" => {
                c.i += 1;
                if matches!(c.peek(), Some(Tok::Int(_))) {
                    cluster = Some(parse_dims(c)?);
                }
            }
            Some(Tok::Ident(s)) if s == ".pragma" => {
                c.i += 1;
                c.skip_to_semicolon();
            }
            _ => break,
        }
    }
    Ok((maxntid, reqntid, cluster))
}

/// Gives the special-register and constant slots (numbered from `TMP_BASE` while parsing)
/// their final numbers after the registers.
fn place_slots(fs: &mut FnState) -> PlacedSlots {
    // specials and constants get slots after registers
    let mut consts = Vec::new();
    let mut specials = Vec::new();
    let mut next = fs.nregs;
    let mut remap: HashMap<u32, u32> = HashMap::new();
    for (tmp, sp) in &fs.special_list {
        remap.insert(*tmp, next);
        specials.push((next, *sp));
        next += 1;
    }
    for (tmp, v, kind) in &fs.const_list {
        remap.insert(*tmp, next);
        consts.push((next, *v, *kind));
        next += 1;
    }
    let fix = |s: &mut u32| {
        if *s != NONE && *s >= TMP_BASE {
            *s = remap[s];
        }
    };
    for inst in fs.insts.iter_mut() {
        inst.d.iter_mut().for_each(fix);
        inst.s.iter_mut().for_each(fix);
        fix(&mut inst.guard);
    }
    for l in fs.lists.iter_mut() {
        l.iter_mut().for_each(fix);
    }
    PlacedSlots { consts, specials, nslots: next }
}

/// The constant and special-register slots of a kernel after [`place_slots`], and the slot count.
struct PlacedSlots {
    consts: Vec<(u32, u64, u8)>,
    specials: Vec<(u32, Special)>,
    nslots: u32,
}

/// Compiles the body of device function `name` at the end of the kernel's instructions.
fn compile_func(c: &Cursor, fs: &mut FnState, name: &str) -> PResult<()> {
    let f = fs.ms.funcs.get(name).cloned().ok_or((0, format!("no device function `{name}`")))?;
    let layout = fs.funcs[name].clone();
    fs.labels.insert(format!("%%func_{name}"), fs.insts.len() as u32);
    let mut alias = HashMap::new();
    for ((pn, _), (off, _)) in f.params.iter().zip(&layout.params).chain(f.rets.iter().zip(&layout.rets)) {
        alias.insert(pn.clone(), *off);
    }
    let slot_lo = fs.nregs;
    let local_lo = fs.local_bytes;
    fs.param_alias = alias;
    fs.label_prefix = format!("%%f_{name}_");
    fs.in_func = true;
    fs.scopes.push(HashMap::new());
    let saved_params = std::mem::take(&mut fs.local_params);
    let saved_locals = fs.local_vars.clone();
    let mut body = Cursor { t: c.t, i: f.body };
    let r = parse_body(&mut body, fs);
    fs.scopes.pop();
    fs.local_params = saved_params;
    fs.local_vars = saved_locals;
    fs.in_func = false;
    fs.param_alias.clear();
    fs.label_prefix.clear();
    r?;
    // make sure the body cannot fall through into the next function
    let mut ret = Inst::new(Op::Ret, body.line());
    ret.sub = 1;
    fs.insts.push(ret);
    // what a call saves: the function's registers and its local frame (params + depot)
    let mut save = vec![slot_lo, fs.nregs];
    let mut ranges: Vec<(u32, u32)> = layout.params.iter().map(|&(o, sz)| (o, o + sz.max(1))).collect();
    ranges.push((local_lo, fs.local_bytes));
    save.push(ranges.len() as u32);
    for (lo, hi) in ranges {
        save.push(lo);
        save.push(hi);
    }
    fs.lists[layout.save_list as usize] = save;
    Ok(())
}

pub(super) fn parse_body(c: &mut Cursor, fs: &mut FnState) -> PResult<()> {
    let base = fs.scopes.len();
    loop {
        let line = c.line();
        let t = c.next()?;
        match t {
            Tok::Punct('{') => {
                fs.scopes.push(HashMap::new());
                fs.label_scopes.push(fs.next_label_scope);
                fs.next_label_scope += 1;
            }
            Tok::Punct('}') => {
                if fs.scopes.len() == base {
                    return Ok(());
                }
                fs.scopes.pop();
                fs.label_scopes.pop();
            }
            Tok::Punct(';') => {}
            Tok::Punct('@') => {
                let neg = c.eat_punct('!');
                let p = c.ident()?;
                let slot = fs.lookup_reg(p).ok_or((line, format!("unknown guard predicate `{p}`")))?;
                let op = c.ident()?.to_string();
                let idx = fs.insts.len();
                parse_instruction(c, fs, &op, line)?;
                for inst in &mut fs.insts[idx..] {
                    inst.guard = slot;
                    inst.gneg = neg;
                }
            }
            Tok::Ident(id) => {
                let id = id.as_str();
                if c.is_punct(':') && !id.starts_with('.') {
                    c.i += 1;
                    let key = fs.label_key(id);
                    if fs.labels.insert(key, fs.insts.len() as u32).is_some() {
                        return Err((line, format!("label `{id}` is defined twice in one scope")));
                    }
                    continue;
                }
                match id {
                    ".reg" => parse_reg_decl(c, fs, line)?,
                    ".loc" => {
                        let f = c.int()? as u32;
                        let l = c.int()? as u32;
                        c.skip_line(line);
                        fs.cur_loc = if l == 0 {
                            fs.cur_loc
                        } else {
                            let n = fs.locs.len() as u32;
                            *fs.loc_index.entry((f, l)).or_insert_with(|| {
                                fs.locs.push((f, l));
                                n
                            })
                        };
                    }
                    ".pragma" => c.skip_to_semicolon(),
                    ".local" | ".shared" | ".const" | ".global" => {
                        let space = match id {
                            ".local" => Space::Local,
                            ".shared" => Space::Shared,
                            ".const" => Space::Const,
                            _ => Space::Global,
                        };
                        let v = parse_var(c, space, false)?;
                        if space == Space::Local {
                            let a = v.align.max(1);
                            fs.local_bytes = fs.local_bytes.div_ceil(a) * a;
                            fs.local_vars.insert(v.name.clone(), fs.local_bytes);
                            fs.local_bytes += v.size;
                        } else if space == Space::Shared {
                            // function-scope shared: laid out per kernel after the module-scope
                            // shared variables, so kernels of one module do not add up
                            let a = v.align.max(1);
                            fs.shared_bytes = fs.shared_bytes.div_ceil(a) * a;
                            let mut v = v;
                            v.offset = fs.shared_bytes;
                            fs.shared_bytes += v.size;
                            let name = v.name.clone();
                            let idx = fs.ms.vars.len();
                            fs.ms.var_index.insert(name, idx);
                            fs.ms.vars.push(v);
                        } else {
                            fs.ms.add_var(v);
                        }
                    }
                    ".param" => {
                        // call argument scratch: `.param .b64 param0;`
                        // call arguments live in the thread's local frame
                        let v = parse_var(c, Space::Param, false)?;
                        let a = v.align.max(1);
                        fs.local_bytes = fs.local_bytes.div_ceil(a) * a;
                        fs.local_params.insert(v.name, fs.local_bytes);
                        fs.local_bytes += v.size.max(1);
                    }
                    ".file" | ".section" => return Err((line, format!("`{id}` inside a function body"))),
                    op if !op.starts_with('.') => {
                        let op = op.to_string();
                        parse_instruction(c, fs, &op, line)?;
                    }
                    other => return Err((line, format!("unsupported directive `{other}` in function body"))),
                }
            }
            t => return Err((line, format!("unexpected {t:?} in function body"))),
        }
    }
}

fn parse_reg_decl(c: &mut Cursor, fs: &mut FnState, line: u32) -> PResult<()> {
    let mut ty = Ty::B32;
    let mut vec = 1;
    loop {
        let id = c.ident()?;
        match id {
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            s if s.starts_with('.') => ty = Ty::parse(&s[1..]).ok_or((line, format!("unknown register type `{s}`")))?,
            name => {
                if vec != 1 {
                    return Err((line, "vector registers are not supported".into()));
                }
                let name = name.to_string();
                if c.eat_punct('<') {
                    let n = c.int()? as u32;
                    c.expect_punct('>')?;
                    for i in 0..n {
                        fs.new_reg(&format!("{name}{i}"), ty);
                    }
                } else {
                    fs.new_reg(&name, ty);
                }
                if c.eat_punct(',') {
                    continue;
                }
                c.expect_punct(';')?;
                return Ok(());
            }
        }
    }
}
