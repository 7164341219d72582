//! What the parser and the per-opcode lowering share: the token cursor, parsed operands, the
//! module and per-function state, and operand resolution into IR slots. Both [`super::parse`]
//! (directives, declarations, bodies) and [`super::lower`] (instructions) build on it, so
//! neither depends on the other's internals.
use std::collections::HashMap;

use super::ir::*;
use super::lex::{Tok, Token};

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
    /// `[tensorMap, {c0, c1, ...}]` (cp.async.bulk.tensor)
    TensorAddr(String, Vec<Opnd>),
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
    pub(super) fn add_var(&mut self, mut v: Var) -> usize {
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
    /// Branches to resolve once the body is parsed: instruction, the label's candidate keys
    /// (innermost brace scope first), PTX line.
    pub(super) fixups: Vec<(usize, Vec<String>, u32)>,
    /// Ids of the `{ }` scopes open at this point (labels are local to their scope: inline-asm
    /// blocks repeat the same label in every expansion), and the next id to give out.
    pub(super) label_scopes: Vec<u32>,
    pub(super) next_label_scope: u32,
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
    pub(super) polls_global: bool,
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
    /// The key a label defined here is stored under (its innermost brace scope).
    pub(super) fn label_key(&self, name: &str) -> String {
        match self.label_scopes.last() {
            Some(id) => format!("{}{name}#{id}", self.label_prefix),
            None => format!("{}{name}", self.label_prefix),
        }
    }
    /// The keys a branch to `name` may mean, innermost scope first.
    pub(super) fn label_candidates(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.label_scopes.iter().rev().map(|id| format!("{}{name}#{id}", self.label_prefix)).collect();
        v.push(format!("{}{name}", self.label_prefix));
        v
    }
    pub(super) fn new_reg(&mut self, name: &str, ty: Ty) -> u32 {
        let slot = self.nregs;
        self.nregs += 1;
        self.reg_ty.push(ty);
        self.scopes.last_mut().unwrap().insert(name.to_string(), slot);
        self.reg_names.insert(slot, name.to_string());
        slot
    }
    pub(super) fn lookup_reg(&self, name: &str) -> Option<u32> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }
}

impl<'m> FnState<'m> {
    /// The state of a function about to be parsed: its static shared memory starts where the
    /// module's variables end.
    pub(super) fn new(ms: &'m mut ModState) -> Self {
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
            label_scopes: Vec::new(),
            next_label_scope: 0,
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
            polls_global: false,
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

/// Temporary slot numbers for constants/specials until registers are counted.
pub(super) const TMP_BASE: u32 = 0x4000_0000;

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
                Some(Tok::Punct(',')) => {
                    // `[tensorMap, {c0, ...}]`
                    c.i += 1;
                    let coords = parse_operand(c)?;
                    c.expect_punct(']')?;
                    let (Some(b), Opnd::Vec(v)) = (base, coords) else {
                        return Err((line, "expected `[tensorMap, {coordinates}]`".into()));
                    };
                    return Ok(Opnd::TensorAddr(b, v));
                }
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
            if c.eat_punct('|') {
                // `d|p` (the sink `_` may stand for d, as in `elect.sync _|p, mask`)
                let p = c.ident()?;
                return Ok(Opnd::Pair(s.clone(), p.to_string()));
            }
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
    if let Some(&pi) = fs.param_index.get(n) {
        // a kernel parameter's address in the .param space (what `mov.b64 %rd, p` yields; nvcc
        // takes a `__grid_constant__` tensor map's address this way, then `cvta.param`)
        return Ok(const_slot(fs, (fs.params[pi].offset as i64 + off) as u64));
    }
    Err((line, format!("unknown symbol `{n}`")))
}

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
