//! PTX parser: module directives, variables, entries, and lowering of every instruction into the
//! slot-based IR of [`super::ir`]. Anything not understood is an error naming the line.
use std::collections::HashMap;

use super::ir::*;
use super::lex::{tokenize, Tok, Token};

/// Parse error: (PTX line, message).
pub type PErr = (u32, String);
type PResult<T> = Result<T, PErr>;

/// Parsed operand before slot resolution.
#[derive(Debug, Clone)]
enum Opnd {
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

struct Cursor<'a> {
    t: &'a [Token],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    fn peek_at(&self, k: usize) -> Option<&'a Tok> {
        self.t.get(self.i + k).map(|t| &t.tok)
    }
    fn line(&self) -> u32 {
        self.t.get(self.i).or(self.t.last()).map(|t| t.line).unwrap_or(0)
    }
    fn next(&mut self) -> PResult<&'a Tok> {
        let l = self.line();
        let t = self.t.get(self.i).map(|t| &t.tok).ok_or((l, "unexpected end of PTX".to_string()))?;
        self.i += 1;
        Ok(t)
    }
    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Punct(p)) if *p == c)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err((self.line(), format!("expected `{c}`, found {:?}", self.peek())))
        }
    }
    fn ident(&mut self) -> PResult<&'a str> {
        let l = self.line();
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => Err((l, format!("expected a name, found {t:?}"))),
        }
    }
    fn int(&mut self) -> PResult<i128> {
        let l = self.line();
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -*v } else { *v }),
            t => Err((l, format!("expected an integer, found {t:?}"))),
        }
    }
    /// Skips the rest of the current source line.
    fn skip_line(&mut self, line: u32) {
        while self.i < self.t.len() && self.t[self.i].line == line {
            self.i += 1;
        }
    }
    fn skip_to_semicolon(&mut self) {
        while self.i < self.t.len() {
            let semi = matches!(self.t[self.i].tok, Tok::Punct(';'));
            self.i += 1;
            if semi {
                break;
            }
        }
    }
}

/// Module-level state shared by all functions while parsing.
/// A `.func` definition, inlined at every call site.
#[derive(Clone)]
struct FuncDef {
    rets: Vec<(String, u32)>,
    params: Vec<(String, u32)>,
    /// Token index just after the body's opening `{`.
    body: usize,
}

struct ModState {
    funcs: HashMap<String, FuncDef>,
    vars: Vec<Var>,
    var_index: HashMap<String, usize>,
    shared_off: u32,
    const_off: u32,
    global_off: u32,
    files: HashMap<u32, String>,
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
    // First pass over functions is done in order; functions are lowered as met.
    let mut kernels = Vec::new();
    let mut funcs_pending: Vec<(String, usize)> = Vec::new();
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
                        // Device functions: declarations are skipped; definitions are not
                        // supported (nvcc inlines our __forceinline__ helpers).
                        let start_line = line;
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
                        let _ = (start_line, is_extern);
                        funcs_pending.push((String::new(), 0));
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
    let _ = funcs_pending;
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
struct FnState<'m> {
    ms: &'m mut ModState,
    scopes: Vec<HashMap<String, u32>>,
    reg_ty: Vec<Ty>,
    nregs: u32,
    consts: HashMap<(u64, u8), u32>,
    const_list: Vec<(u32, u64, u8)>,
    /// (slot, global-var offset): constant slots relocated by the module's global base.
    specials: HashMap<String, u32>,
    special_list: Vec<(u32, Special)>,
    params: Vec<Param>,
    param_index: HashMap<String, usize>,
    /// Body-local `.param` declarations (call sequences): name -> offset in a scratch area.
    local_params: HashMap<String, u32>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, String, u32)>,
    insts: Vec<Inst>,
    lists: Vec<Vec<u32>>,
    locs: Vec<(u32, u32)>,
    loc_index: HashMap<(u32, u32), u32>,
    cur_loc: u32,
    local_bytes: u32,
    /// End of this kernel's static shared layout.
    shared_bytes: u32,
    local_vars: HashMap<String, u32>,
    reg_names: HashMap<u32, String>,
    has_atomics: bool,
    sink: u32,
    cc: u32,
    /// While compiling a device function: its .param names -> local offsets, label prefix.
    param_alias: HashMap<String, u32>,
    label_prefix: String,
    in_func: bool,
    /// Device functions called from this kernel: layout, and those still to compile.
    funcs: HashMap<String, FuncLayout>,
    pending_funcs: Vec<String>,
}

/// Where a device function lives in a kernel: its entry label, parameter and return areas in
/// the thread's local frame, and what a call saves/restores (its registers and local frame) so
/// recursion works.
#[derive(Clone, Default)]
struct FuncLayout {
    params: Vec<(u32, u32)>,
    rets: Vec<(u32, u32)>,
    /// Index into `FnState::lists` of the save description, filled when the body is compiled.
    save_list: u32,
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

fn parse_function(c: &mut Cursor, ms: &mut ModState, _is_entry: bool) -> PResult<Kernel> {
    let name = c.ident()?.to_string();
    let module_shared = ms.shared_off;
    let mut fs = FnState {
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
    };
    // parameters
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
            let pname;
            loop {
                let id = c.ident()?;
                match id {
                    ".align" => align = c.int()? as u32,
                    ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
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
            fs.params.push(Param { name: pname, ty, size, align: palign, offset: param_off });
            param_off += size;
        }
    }
    // performance directives
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
            Some(Tok::Ident(s)) if s == ".minnctapersm" || s == ".maxnreg" || s == ".maxnctapersm" || s == ".maxclusterrank" => {
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
    if c.eat_punct(';') {
        return Err((c.line(), format!("kernel `{name}` has no body")));
    }
    c.expect_punct('{')?;
    // reserved slots: sink and carry flag
    fs.sink = fs.new_reg("_", Ty::B64);
    fs.cc = fs.new_reg("%%cc", Ty::B32);
    parse_body(c, &mut fs)?;
    // Ensure the kernel ends with a terminator so the executor never falls off the end.
    let needs_ret = fs.insts.last().map(|i| !(matches!(i.op, Op::Ret | Op::Exit | Op::Bra) && i.guard == NONE)).unwrap_or(true);
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
    // specials and constants get slots after registers
    let mut consts = Vec::new();
    let mut specials = Vec::new();
    let mut next = nregs;
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
    let mut k = Kernel {
        name,
        params: fs.params,
        param_bytes: param_off,
        insts: fs.insts,
        nslots: next,
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

/// Temporary slot numbers for constants/specials until registers are counted.
const TMP_BASE: u32 = 0x4000_0000;

fn const_slot(fs: &mut FnState, v: u64) -> u32 {
    const_slot_kind(fs, v, RELOC_NONE)
}

/// A constant slot whose value is relocated at launch (`kind`: see `RELOC_*`).
fn const_slot_kind(fs: &mut FnState, v: u64, kind: u8) -> u32 {
    if let Some(&s) = fs.consts.get(&(v, kind)) {
        return s;
    }
    let s = TMP_BASE + (fs.const_list.len() + fs.special_list.len()) as u32 + 0x1000_0000;
    fs.consts.insert((v, kind), s);
    fs.const_list.push((s, v, kind));
    s
}

fn special_slot(fs: &mut FnState, name: &str, sp: Special) -> u32 {
    if let Some(&s) = fs.specials.get(name) {
        return s;
    }
    let s = TMP_BASE + fs.special_list.len() as u32;
    fs.specials.insert(name.to_string(), s);
    fs.special_list.push((s, sp));
    s
}

/// The layout of device function `name` in this kernel, allocating it on first use.
fn func_layout(fs: &mut FnState, name: &str, line: u32) -> PResult<FuncLayout> {
    if let Some(l) = fs.funcs.get(name) {
        return Ok(l.clone());
    }
    let f = fs.ms.funcs.get(name).cloned().ok_or((line, format!("call of `{name}`: no definition in this module (only vprintf and __assertfail are built in)")))?;
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

fn parse_body(c: &mut Cursor, fs: &mut FnState) -> PResult<()> {
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

fn parse_operand(c: &mut Cursor) -> PResult<Opnd> {
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
            Opnd::Addr(Some(n), off) => Opnd::Vec(vec![Opnd::Name(n), Opnd::Int(off as i128), Opnd::Sink, Opnd::Sink, Opnd::Sink]),
            o => o,
        }
    }
}

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
        self.parts.iter().any(|p| *p == m)
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

fn read_operands(c: &mut Cursor) -> PResult<Vec<Opnd>> {
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
fn resolve(fs: &mut FnState, o: &Opnd, ty: Ty, line: u32) -> PResult<u32> {
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
fn sym_value(fs: &mut FnState, n: &str, off: i64, line: u32) -> PResult<u32> {
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
    if let Some(&pi) = fs.param_index.get(n) {
        let _ = pi;
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

fn reg_is_32(fs: &FnState, slot: u32) -> bool {
    (slot as usize) < fs.reg_ty.len() && fs.reg_ty[slot as usize].bytes() <= 4
}

/// Resolves an address operand into (base slot or NONE, offset, space override for params).
fn resolve_addr(fs: &mut FnState, o: &Opnd, line: u32, inst: &mut Inst) -> PResult<()> {
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

fn dst(fs: &mut FnState, o: &Opnd, line: u32) -> PResult<u32> {
    match o {
        Opnd::Name(n) => fs.lookup_reg(n).ok_or((line, format!("unknown destination register `{n}`"))),
        Opnd::Sink => Ok(fs.sink),
        o => Err((line, format!("bad destination {o:?}"))),
    }
}

fn need(ops: &[Opnd], n: usize, line: u32, op: &str) -> PResult<()> {
    if ops.len() != n {
        return Err((line, format!("`{op}` expects {n} operands, got {}", ops.len())));
    }
    Ok(())
}

fn push(fs: &mut FnState, mut inst: Inst) {
    inst.loc = fs.cur_loc;
    fs.insts.push(inst);
}

fn vec_slots(fs: &mut FnState, o: &Opnd, ty: Ty, line: u32, is_dst: bool) -> PResult<Vec<u32>> {
    match o {
        Opnd::Vec(v) => v
            .iter()
            .map(|e| if is_dst { dst(fs, e, line) } else { resolve(fs, e, ty, line) })
            .collect(),
        o => Ok(vec![if is_dst { dst(fs, o, line)? } else { resolve(fs, o, ty, line)? }]),
    }
}

/// Resolves a predicate source that may be negated (`!p`): returns (slot, negated).
fn pred_src(fs: &mut FnState, o: &Opnd, line: u32) -> PResult<(u32, bool)> {
    match o {
        Opnd::Not(n) => Ok((fs.lookup_reg(n).ok_or((line, format!("unknown predicate `{n}`")))?, true)),
        o => Ok((resolve(fs, o, Ty::Pred, line)?, false)),
    }
}

/// Modifiers the lowering understands (or that do not change emulated semantics: cache and
/// memory-ordering hints). Anything else is rejected so it can never be silently ignored.
const KNOWN_MODS: &[&str] = &[
    // rounding, flags
    "rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "rna", "sat", "ftz", "approx", "full", "hi", "lo", "wide", "nc",
    "uni", "trans", "shiftamt", "wrap", "clamp", "l", "r", "cc", "relu", "satfinite", "NaN", "xorsign", "abs", "noftz",
    // comparisons and boolean combine
    "eq", "ne", "lt", "le", "gt", "ge", "ls", "hs", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan", "and", "or", "xor",
    // testp
    "finite", "infinite", "number", "notanumber", "normal", "subnormal",
    // spaces, vectors, ordering/cache hints
    "global", "shared", "shared::cta", "local", "param", "const", "to", "v2", "v4", "volatile", "relaxed", "acquire",
    "release", "weak", "sc", "acq_rel", "cta", "gpu", "sys", "ca", "cg", "cs", "lu", "cv", "wb", "wt", "L1::evict_normal",
    "L1::evict_unchanged", "L1::evict_first", "L1::evict_last", "L1::no_allocate", "L2::64B", "L2::128B", "L2::256B",
    "L2::evict_normal", "L2::evict_first", "L2::evict_last", "L2", "L1",
    // warp / barrier / async / tensor
    "gl", "proxy", "alias", "sync", "aligned", "up", "down", "bfly", "idx", "all", "any", "ballot", "async", "commit_group", "wait_group", "wait_all",
    "warp", "red", "popc", "arrive", "m8n8", "x1", "x2", "x4", "row", "col", "m16n8k16", "m16n8k32", "m16n8k8", "m16n16k16",
    "a", "b", "c", "d", "load", "store", "mma", "f4e", "b4e", "rc8", "ecl", "ecr", "rc16",
    // atomics
    "add", "min", "max", "inc", "dec", "cas", "exch",
];

fn check_mods(m: &Mods, opname: &str, line: u32) -> PResult<()> {
    for p in &m.parts {
        if Ty::parse(p).is_none() && !KNOWN_MODS.contains(p) {
            return Err((line, format!("`{opname}`: unsupported modifier `.{p}`")));
        }
    }
    Ok(())
}

fn parse_instruction(c: &mut Cursor, fs: &mut FnState, opname: &str, line: u32) -> PResult<()> {
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
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2"
        | "sin" | "cos" | "tanh" => {
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
                    i.flags |= fl::HAS_SRCSIZE;
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
                sub::MMA_F16_M16N8K16 | sub::MMA_BF16_M16N8K16 | sub::MMA_S8_M16N8K32 | sub::MMA_U8_M16N8K32 | sub::MMA_TF32_M16N8K8 => (4, 2, 4),
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
                        let names: Vec<String> = v.iter().filter_map(|e| if let Opnd::Name(n) = e { Some(n.clone()) } else { None }).collect();
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
                "vprintf" => {
                    if let Some(&o) = rets.first().and_then(|r| fs.local_params.get(r)) {
                        let mut i = mk(Op::St);
                        i.space = Space::Local;
                        i.ty = Ty::B32;
                        i.s[0] = const_slot(fs, 0);
                        i.off = o as i64;
                        let z = const_slot(fs, 0);
                        let li = fs.lists.len() as u32;
                        fs.lists.push(vec![z]);
                        i.list = li;
                        push(fs, i);
                    }
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
                        return Err((line, format!("call of `{name}` passes {} arguments / {} results, the function takes {} / {}", args.len(), rets.len(), layout.params.len(), layout.rets.len())));
                    }
                    let off_of = |fs: &FnState, a: &str| -> PResult<u32> {
                        fs.local_params.get(a).or_else(|| fs.param_alias.get(a)).copied().ok_or((line, format!("call argument `{a}` is not a declared .param")))
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
