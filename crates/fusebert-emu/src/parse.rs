//! PTX parser: module directives, variables, entries, device functions, registers and operand
//! resolution into the slot-based IR of [`super::ir`] (per-opcode lowering: [`super::lower`]).
//! Anything not understood is an error naming the line.
use std::collections::HashMap;

use super::ir::*;
use super::lex::{tokenize, Tok, Token};
use super::lower::parse_instruction;

/// Parse error: (PTX line, message).
pub type PErr = (u32, String);
pub(super) type PResult<T> = Result<T, PErr>;

/// Parsed operand before slot resolution.
#[derive(Debug, Clone)]
pub(super) enum Opnd {
    /// Register, special register, variable, label or param name.
    Name(String),
    Int(i128),
    F32(u32),
    F64(u64),
    /// `{a, b, ...}`
    Vec(Vec<Opnd>),
    /// `[base + off]`
    Addr(Option<String>, i64),
    /// `a|b`
    Pair(String, String),
    /// `!p`
    Not(String),
    /// `_` sink
    Sink,
}

pub(super) struct Cursor<'a> {
    pub(super) t: &'a [Token],
    pub(super) i: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    pub(super) fn peek_at(&self, k: usize) -> Option<&'a Tok> {
        self.t.get(self.i + k).map(|t| &t.tok)
    }
    pub(super) fn line(&self) -> u32 {
        self.t.get(self.i).or(self.t.last()).map(|t| t.line).unwrap_or(0)
    }
    pub(super) fn next(&mut self) -> PResult<&'a Tok> {
        let l = self.line();
        let t = self.t.get(self.i).map(|t| &t.tok).ok_or((l, "unexpected end of PTX".to_string()))?;
        self.i += 1;
        Ok(t)
    }
    pub(super) fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Punct(p)) if *p == c)
    }
    pub(super) fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err((self.line(), format!("expected `{c}`, found {:?}", self.peek())))
        }
    }
    pub(super) fn ident(&mut self) -> PResult<&'a str> {
        let l = self.line();
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => Err((l, format!("expected a name, found {t:?}"))),
        }
    }
    pub(super) fn int(&mut self) -> PResult<i128> {
        let l = self.line();
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -*v } else { *v }),
            t => Err((l, format!("expected an integer, found {t:?}"))),
        }
    }
    /// Skips the rest of the current source line.
    pub(super) fn skip_line(&mut self, line: u32) {
        while self.i < self.t.len() && self.t[self.i].line == line {
            self.i += 1;
        }
    }
    pub(super) fn skip_to_semicolon(&mut self) {
        while self.i < self.t.len() {
            let semi = matches!(self.t[self.i].tok, Tok::Punct(';'));
            self.i += 1;
            if semi {
                break;
            }
        }
    }
}

/// A `.func` definition (compiled into each kernel that calls it; see `compile_func`).
#[derive(Clone)]
pub(super) struct FuncDef {
    pub(super) rets: Vec<(String, u32)>,
    pub(super) params: Vec<(String, u32)>,
    /// Token index just after the body's opening `{`.
    pub(super) body: usize,
}

/// Module-level state shared by all functions while parsing.
pub(super) struct ModState {
    pub(super) funcs: HashMap<String, FuncDef>,
    pub(super) vars: Vec<Var>,
    pub(super) var_index: HashMap<String, usize>,
    pub(super) shared_off: u32,
    pub(super) const_off: u32,
    pub(super) global_off: u32,
    pub(super) files: HashMap<u32, String>,
}

impl ModState {
    fn add_var(&mut self, mut v: Var) -> usize {
        let align = v.align.max(1);
        let off = match v.space {
            Space::Shared => &mut self.shared_off,
            Space::Const => &mut self.const_off,
            _ => &mut self.global_off,
        };
        if !v.is_extern {
            *off = (*off).div_ceil(align) * align;
            v.offset = *off;
            *off += v.size;
        }
        let idx = self.vars.len();
        self.var_index.insert(v.name.clone(), idx);
        self.vars.push(v);
        idx
    }
}

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
            ".version" | ".target" | ".address_size" => c.skip_line(line),
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

/// Per-function lowering state.
pub(super) struct FnState<'m> {
    pub(super) ms: &'m mut ModState,
    pub(super) scopes: Vec<HashMap<String, u32>>,
    pub(super) reg_ty: Vec<Ty>,
    pub(super) nregs: u32,
    pub(super) consts: HashMap<(u64, u8), u32>,
    pub(super) const_list: Vec<(u32, u64, u8)>,
    /// (slot, global-var offset): constant slots relocated by the module's global base.
    pub(super) specials: HashMap<String, u32>,
    pub(super) special_list: Vec<(u32, Special)>,
    pub(super) params: Vec<Param>,
    pub(super) param_index: HashMap<String, usize>,
    /// Body-local `.param` declarations (call sequences): name -> offset in a scratch area.
    pub(super) local_params: HashMap<String, u32>,
    pub(super) labels: HashMap<String, u32>,
    pub(super) fixups: Vec<(usize, String, u32)>,
    pub(super) insts: Vec<Inst>,
    pub(super) lists: Vec<Vec<u32>>,
    pub(super) locs: Vec<(u32, u32)>,
    pub(super) loc_index: HashMap<(u32, u32), u32>,
    pub(super) cur_loc: u32,
    pub(super) local_bytes: u32,
    /// End of this kernel's static shared layout.
    pub(super) shared_bytes: u32,
    pub(super) local_vars: HashMap<String, u32>,
    pub(super) reg_names: HashMap<u32, String>,
    pub(super) has_atomics: bool,
    pub(super) sink: u32,
    pub(super) cc: u32,
    /// While compiling a device function: its .param names -> local offsets, label prefix.
    pub(super) param_alias: HashMap<String, u32>,
    pub(super) label_prefix: String,
    pub(super) in_func: bool,
    /// Device functions called from this kernel: layout, and those still to compile.
    pub(super) funcs: HashMap<String, FuncLayout>,
    pub(super) pending_funcs: Vec<String>,
}

/// Where a device function lives in a kernel: its entry label, parameter and return areas in
/// the thread's local frame, and what a call saves/restores (its registers and local frame) so
/// recursion works.
#[derive(Clone, Default)]
pub(super) struct FuncLayout {
    pub(super) params: Vec<(u32, u32)>,
    pub(super) rets: Vec<(u32, u32)>,
    /// Index into `FnState::lists` of the save description, filled when the body is compiled.
    pub(super) save_list: u32,
}

impl<'m> FnState<'m> {
    fn new_reg(&mut self, name: &str, ty: Ty) -> u32 {
        let slot = self.nregs;
        self.nregs += 1;
        self.reg_ty.push(ty);
        self.scopes.last_mut().unwrap().insert(name.to_string(), slot);
        self.reg_names.insert(slot, name.to_string());
        slot
    }
    fn lookup_reg(&self, name: &str) -> Option<u32> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
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

impl<'m> FnState<'m> {
    /// The state of a function about to be parsed: its static shared memory starts where the
    /// module's variables end.
    fn new(ms: &'m mut ModState) -> Self {
        let module_shared = ms.shared_off;
        FnState {
            ms,
            scopes: vec![HashMap::new()],
            reg_ty: Vec::new(),
            nregs: 0,
            consts: HashMap::new(),
            const_list: Vec::new(),
            specials: HashMap::new(),
            special_list: Vec::new(),
            params: Vec::new(),
            param_index: HashMap::new(),
            local_params: HashMap::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
            insts: Vec::new(),
            lists: Vec::new(),
            locs: Vec::new(),
            loc_index: HashMap::new(),
            cur_loc: NONE,
            local_bytes: 0,
            shared_bytes: module_shared,
            local_vars: HashMap::new(),
            reg_names: HashMap::new(),
            has_atomics: false,
            sink: 0,
            cc: 0,
            param_alias: HashMap::new(),
            label_prefix: String::new(),
            in_func: false,
            funcs: HashMap::new(),
            pending_funcs: Vec::new(),
        }
    }
}

fn parse_function(c: &mut Cursor, ms: &mut ModState, _is_entry: bool) -> PResult<Kernel> {
    let name = c.ident()?.to_string();
    let mut fs = FnState::new(ms);
    let param_off = parse_params(c, &mut fs)?;
    let (maxntid, reqntid) = parse_directives(c)?;
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
    for (idx, label, line) in std::mem::take(&mut fs.fixups) {
        let t = *fs.labels.get(&label).ok_or((line, format!("unknown label `{label}`")))?;
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
        maxntid,
        reqntid,
        reg_names: fs.reg_names,
    };
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

/// Performance directives after the parameters: `.maxntid`/`.reqntid` are kept (launch checks),
/// the others only parsed.
fn parse_directives(c: &mut Cursor) -> PResult<(Dims, Dims)> {
    let mut maxntid = None;
    let mut reqntid = None;
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
                    parse_dims(c)?;
                }
            }
            Some(Tok::Ident(s)) if s == ".pragma" => {
                c.i += 1;
                c.skip_to_semicolon();
            }
            _ => break,
        }
    }
    Ok((maxntid, reqntid))
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

/// Temporary slot numbers for constants/specials until registers are counted.
const TMP_BASE: u32 = 0x4000_0000;

pub(super) fn const_slot(fs: &mut FnState, v: u64) -> u32 {
    const_slot_kind(fs, v, RELOC_NONE)
}

/// A constant slot whose value is relocated at launch (`kind`: see `RELOC_*`).
pub(super) fn const_slot_kind(fs: &mut FnState, v: u64, kind: u8) -> u32 {
    if let Some(&s) = fs.consts.get(&(v, kind)) {
        return s;
    }
    let s = TMP_BASE + (fs.const_list.len() + fs.special_list.len()) as u32 + 0x1000_0000;
    fs.consts.insert((v, kind), s);
    fs.const_list.push((s, v, kind));
    s
}

pub(super) fn special_slot(fs: &mut FnState, name: &str, sp: Special) -> u32 {
    if let Some(&s) = fs.specials.get(name) {
        return s;
    }
    let s = TMP_BASE + fs.special_list.len() as u32;
    fs.specials.insert(name.to_string(), s);
    fs.special_list.push((s, sp));
    s
}

/// The layout of device function `name` in this kernel, allocating it on first use.
pub(super) fn func_layout(fs: &mut FnState, name: &str, line: u32) -> PResult<FuncLayout> {
    if let Some(l) = fs.funcs.get(name) {
        return Ok(l.clone());
    }
    let f = fs.ms.funcs.get(name).cloned().ok_or((
        line,
        format!("call of `{name}`: no definition in this module (only vprintf and __assertfail are built in)"),
    ))?;
    let alloc = |size: u32, fs: &mut FnState| {
        fs.local_bytes = fs.local_bytes.div_ceil(8) * 8;
        let o = fs.local_bytes;
        fs.local_bytes += size.max(1);
        o
    };
    let params = f.params.iter().map(|(_, sz)| (alloc(*sz, fs), *sz)).collect();
    let rets = f.rets.iter().map(|(_, sz)| (alloc(*sz, fs), *sz)).collect();
    let l = FuncLayout { params, rets, save_list: fs.lists.len() as u32 };
    fs.lists.push(Vec::new());
    fs.funcs.insert(name.to_string(), l.clone());
    fs.pending_funcs.push(name.to_string());
    Ok(l)
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
            Tok::Punct('{') => fs.scopes.push(HashMap::new()),
            Tok::Punct('}') => {
                if fs.scopes.len() == base {
                    return Ok(());
                }
                fs.scopes.pop();
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
                    fs.labels.insert(format!("{}{id}", fs.label_prefix), fs.insts.len() as u32);
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

pub(super) fn parse_operand(c: &mut Cursor) -> PResult<Opnd> {
    let line = c.line();
    if c.eat_punct('{') {
        let mut v = Vec::new();
        loop {
            if c.eat_punct('}') {
                break;
            }
            if c.eat_punct(',') {
                continue;
            }
            v.push(parse_operand(c)?);
        }
        return Ok(Opnd::Vec(v));
    }
    if c.eat_punct('[') {
        let mut base = None;
        let mut off: i64 = 0;
        loop {
            if c.eat_punct(']') {
                break;
            }
            match c.peek() {
                Some(Tok::Ident(s)) => {
                    base = Some(s.clone());
                    c.i += 1;
                }
                Some(Tok::Punct('+')) => {
                    c.i += 1;
                    off += c.int()? as i64;
                }
                Some(Tok::Punct('-')) | Some(Tok::Int(_)) => {
                    off += c.int()? as i64;
                }
                t => return Err((line, format!("bad address operand near {t:?}"))),
            }
        }
        return Ok(Opnd::Addr(base, off));
    }
    if c.eat_punct('!') {
        let n = c.ident()?;
        return Ok(Opnd::Not(n.to_string()));
    }
    if c.is_punct('-') {
        match c.peek_at(1) {
            Some(Tok::Int(_)) => return Ok(Opnd::Int(c.int()?)),
            Some(Tok::F64(b)) => {
                c.i += 2;
                return Ok(Opnd::F64((-f64::from_bits(*b)).to_bits()));
            }
            _ => return Err((line, "bad negative operand".into())),
        }
    }
    match c.next()? {
        Tok::Int(v) => Ok(Opnd::Int(*v)),
        Tok::F32(b) => Ok(Opnd::F32(*b)),
        Tok::F64(b) => Ok(Opnd::F64(*b)),
        Tok::Ident(s) => {
            if s == "_" {
                return Ok(Opnd::Sink);
            }
            if c.eat_punct('|') {
                let p = c.ident()?;
                return Ok(Opnd::Pair(s.clone(), p.to_string()));
            }
            // `name + off` outside brackets (e.g. mov.u64 %rd, sym+8)
            if c.is_punct('+') {
                if let Some(Tok::Int(_)) = c.peek_at(1) {
                    c.i += 1;
                    let off = c.int()? as i64;
                    return Ok(Opnd::Addr(Some(s.clone()), off).into_symoff());
                }
            }
            Ok(Opnd::Name(s.clone()))
        }
        t => Err((line, format!("unexpected operand {t:?}"))),
    }
}

impl Opnd {
    fn into_symoff(self) -> Opnd {
        // represented as an Addr with a marker: handled by resolve() for symbols only
        match self {
            Opnd::Addr(Some(n), off) => {
                Opnd::Vec(vec![Opnd::Name(n), Opnd::Int(off as i128), Opnd::Sink, Opnd::Sink, Opnd::Sink])
            }
            o => o,
        }
    }
}

pub(super) fn read_operands(c: &mut Cursor) -> PResult<Vec<Opnd>> {
    let mut ops = Vec::new();
    loop {
        if c.eat_punct(';') {
            return Ok(ops);
        }
        if c.eat_punct(',') {
            continue;
        }
        // call syntax: `call.uni (retval0), vprintf, (param0, param1);`
        if c.eat_punct('(') {
            let mut v = Vec::new();
            while !c.eat_punct(')') {
                if c.eat_punct(',') {
                    continue;
                }
                v.push(parse_operand(c)?);
            }
            ops.push(Opnd::Vec(v));
            continue;
        }
        ops.push(parse_operand(c)?);
    }
}

/// Resolves an operand to a slot. `ty` types immediates (float literals convert between widths).
pub(super) fn resolve(fs: &mut FnState, o: &Opnd, ty: Ty, line: u32) -> PResult<u32> {
    Ok(match o {
        Opnd::Name(n) => {
            if let Some(s) = fs.lookup_reg(n) {
                return Ok(s);
            }
            if n.starts_with('%') {
                if let Some(sp) = Special::parse(n) {
                    return Ok(special_slot(fs, n, sp));
                }
                if n.starts_with("%clock") || n == "%globaltimer" {
                    return Err((line, format!("`{n}` can only be read with mov")));
                }
                if n.starts_with("%envreg") || n.starts_with("%pm") {
                    return Ok(const_slot(fs, 0));
                }
                return Err((line, format!("unknown register `{n}`")));
            }
            return sym_value(fs, n, 0, line);
        }
        Opnd::Int(v) => const_slot(fs, *v as u64),
        Opnd::F32(b) => {
            let v = match ty {
                Ty::F64 => (f32::from_bits(*b) as f64).to_bits(),
                Ty::F16 | Ty::F16x2 => half::f16::from_f32(f32::from_bits(*b)).to_bits() as u64,
                Ty::BF16 | Ty::BF16x2 => half::bf16::from_f32(f32::from_bits(*b)).to_bits() as u64,
                _ => *b as u64,
            };
            const_slot(fs, v)
        }
        Opnd::F64(b) => {
            let v = match ty {
                Ty::F32 => (f64::from_bits(*b) as f32).to_bits() as u64,
                _ => *b,
            };
            const_slot(fs, v)
        }
        Opnd::Sink => fs.sink,
        Opnd::Vec(v) if v.len() == 5 && matches!(v[2], Opnd::Sink) => {
            // symbol + offset
            if let (Opnd::Name(n), Opnd::Int(off)) = (&v[0], &v[1]) {
                return sym_value(fs, n, *off as i64, line);
            }
            return Err((line, "bad symbol operand".into()));
        }
        o => return Err((line, format!("unexpected operand {o:?}"))),
    })
}

/// The value of a symbol used as an operand: a variable's address in its window.
pub(super) fn sym_value(fs: &mut FnState, n: &str, off: i64, line: u32) -> PResult<u32> {
    if let Some(&i) = fs.ms.var_index.get(n) {
        let v = &fs.ms.vars[i];
        let (val, kind) = match v.space {
            Space::Shared if v.is_extern => (0, RELOC_DYN_SHARED),
            Space::Shared | Space::Const => (v.offset as u64, RELOC_NONE),
            _ => (v.offset as u64, RELOC_GLOBAL),
        };
        return Ok(const_slot_kind(fs, val.wrapping_add(off as u64), kind));
    }
    if let Some(&o) = fs.local_vars.get(n) {
        // address of a local array: an offset in the local window
        return Ok(const_slot(fs, (o as i64 + off) as u64));
    }
    if fs.param_index.contains_key(n) {
        return Err((line, format!("taking the address of kernel parameter `{n}` is not supported")));
    }
    Err((line, format!("unknown symbol `{n}`")))
}

/// Constant-slot relocation kinds, applied when a launch builds the register template.
pub const RELOC_NONE: u8 = 0;
/// value += the module's global-variable base address
pub const RELOC_GLOBAL: u8 = 1;
/// value += the dynamic shared region's offset (extern .shared arrays)
pub const RELOC_DYN_SHARED: u8 = 2;

pub(super) fn reg_is_32(fs: &FnState, slot: u32) -> bool {
    (slot as usize) < fs.reg_ty.len() && fs.reg_ty[slot as usize].bytes() <= 4
}

/// Resolves an address operand into (base slot or NONE, offset, space override for params).
pub(super) fn resolve_addr(fs: &mut FnState, o: &Opnd, line: u32, inst: &mut Inst) -> PResult<()> {
    let (base, off) = match o {
        Opnd::Addr(b, off) => (b.clone(), *off),
        o => return Err((line, format!("expected an address, found {o:?}"))),
    };
    inst.off = off;
    let Some(b) = base else {
        inst.s[0] = const_slot(fs, 0);
        return Ok(());
    };
    if let Some(s) = fs.lookup_reg(&b) {
        inst.s[0] = s;
        if reg_is_32(fs, s) {
            inst.flags |= fl::ADDR32;
        }
        return Ok(());
    }
    if let Some(&o) = fs.param_alias.get(&b).or_else(|| fs.local_params.get(&b)) {
        // callee parameters/return values and call arguments: the caller's local frame
        inst.s[0] = const_slot(fs, 0);
        inst.off += o as i64;
        inst.space = Space::Local;
        return Ok(());
    }
    if let Some(&pi) = fs.param_index.get(&b) {
        if inst.space != Space::Param {
            return Err((line, format!("kernel parameter `{b}` used outside ld.param")));
        }
        inst.s[0] = const_slot(fs, 0);
        inst.off += fs.params[pi].offset as i64;
        return Ok(());
    }
    if let Some(&o) = fs.local_vars.get(&b) {
        inst.s[0] = const_slot(fs, o as u64);
        if inst.space == Space::Generic {
            return Err((line, "generic access to a .local variable by name".into()));
        }
        return Ok(());
    }
    inst.s[0] = sym_value(fs, &b, 0, line)?;
    Ok(())
}

pub(super) fn dst(fs: &mut FnState, o: &Opnd, line: u32) -> PResult<u32> {
    match o {
        Opnd::Name(n) => fs.lookup_reg(n).ok_or((line, format!("unknown destination register `{n}`"))),
        Opnd::Sink => Ok(fs.sink),
        o => Err((line, format!("bad destination {o:?}"))),
    }
}

pub(super) fn need(ops: &[Opnd], n: usize, line: u32, op: &str) -> PResult<()> {
    if ops.len() != n {
        return Err((line, format!("`{op}` expects {n} operands, got {}", ops.len())));
    }
    Ok(())
}

pub(super) fn push(fs: &mut FnState, mut inst: Inst) {
    inst.loc = fs.cur_loc;
    fs.insts.push(inst);
}

pub(super) fn vec_slots(fs: &mut FnState, o: &Opnd, ty: Ty, line: u32, is_dst: bool) -> PResult<Vec<u32>> {
    match o {
        Opnd::Vec(v) => v.iter().map(|e| if is_dst { dst(fs, e, line) } else { resolve(fs, e, ty, line) }).collect(),
        o => Ok(vec![if is_dst { dst(fs, o, line)? } else { resolve(fs, o, ty, line)? }]),
    }
}

/// Resolves a predicate source that may be negated (`!p`): returns (slot, negated).
pub(super) fn pred_src(fs: &mut FnState, o: &Opnd, line: u32) -> PResult<(u32, bool)> {
    match o {
        Opnd::Not(n) => Ok((fs.lookup_reg(n).ok_or((line, format!("unknown predicate `{n}`")))?, true)),
        o => Ok((resolve(fs, o, Ty::Pred, line)?, false)),
    }
}
