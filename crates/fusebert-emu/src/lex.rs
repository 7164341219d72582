//! PTX tokenizer. Opcodes with their modifiers (`shfl.sync.bfly.b32`), registers (`%r12`,
//! `%ctaid.x`), directives (`.reg`) and labels (`$L__BB0_2`) are single identifier tokens.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// Integer literal (sign applied by the parser).
    Int(i128),
    /// `0fXXXXXXXX` single-precision bits.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX` double-precision bits (also decimal float literals).
    F64(u64),
    Str(String),
    Punct(char),
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%' || c == b'.'
}
fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.' || c == b'%' || c == b':'
}

/// Splits PTX text into tokens; `Err((line, msg))` on a malformed literal or stray byte.
pub fn tokenize(src: &str) -> Result<Vec<Token>, (u32, String)> {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4);
    let mut i = 0;
    let mut line = 1u32;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            out.push(Token { tok: Tok::Str(src[start..i.min(b.len())].to_string()), line });
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            // hex float forms 0f / 0d
            if c == b'0'
                && i + 1 < b.len()
                && (b[i + 1] == b'f' || b[i + 1] == b'F' || b[i + 1] == b'd' || b[i + 1] == b'D')
            {
                let is_d = b[i + 1] == b'd' || b[i + 1] == b'D';
                let hs = i + 2;
                let mut j = hs;
                while j < b.len() && b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let digits = &src[hs..j];
                let want = if is_d { 16 } else { 8 };
                if digits.len() != want {
                    return Err((line, format!("malformed float literal `{}`", &src[start..j])));
                }
                let v = u64::from_str_radix(digits, 16).map_err(|e| (line, e.to_string()))?;
                out.push(Token { tok: if is_d { Tok::F64(v) } else { Tok::F32(v as u32) }, line });
                i = j;
                continue;
            }
            if c == b'0' && i + 1 < b.len() && (b[i + 1] == b'x' || b[i + 1] == b'X') {
                let mut j = i + 2;
                while j < b.len() && b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let v =
                    u128::from_str_radix(&src[i + 2..j], 16).map_err(|e| (line, format!("bad hex literal: {e}")))?;
                if j < b.len() && (b[j] == b'U' || b[j] == b'u') {
                    j += 1;
                }
                out.push(Token { tok: Tok::Int(v as i128), line });
                i = j;
                continue;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let is_float = j < b.len()
                && (b[j] == b'.' || b[j] == b'e' || b[j] == b'E')
                && j + 1 < b.len()
                && (b[j + 1].is_ascii_digit() || b[j + 1] == b'-' || b[j + 1] == b'+');
            if is_float {
                let mut k = j + 1;
                while k < b.len()
                    && (b[k].is_ascii_digit()
                        || b[k] == b'e'
                        || b[k] == b'E'
                        || b[k] == b'-'
                        || b[k] == b'+'
                        || b[k] == b'.')
                {
                    k += 1;
                }
                let v: f64 =
                    src[start..k].parse().map_err(|_| (line, format!("bad float literal `{}`", &src[start..k])))?;
                out.push(Token { tok: Tok::F64(v.to_bits()), line });
                i = k;
                continue;
            }
            let v: i128 = src[start..j].parse().map_err(|_| (line, format!("bad integer `{}`", &src[start..j])))?;
            if j < b.len() && (b[j] == b'U' || b[j] == b'u') {
                j += 1;
            }
            out.push(Token { tok: Tok::Int(v), line });
            i = j;
            continue;
        }
        if is_ident_start(c) {
            let start = i;
            i += 1;
            // a directive (`.reg`) ends at the next dot: `.reg.b16` is two tokens
            let directive = c == b'.';
            while i < b.len() && is_ident_char(b[i]) && !(directive && b[i] == b'.') {
                // a ':' only belongs to the identifier inside `::` qualifiers (`.shared::cta`)
                if b[i] == b':' {
                    if i + 1 < b.len() && b[i + 1] == b':' {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_string()), line });
            continue;
        }
        match c {
            b',' | b';' | b'[' | b']' | b'{' | b'}' | b'(' | b')' | b'+' | b'-' | b'|' | b'!' | b'@' | b'<' | b'>'
            | b':' | b'=' | b'*' => {
                out.push(Token { tok: Tok::Punct(c as char), line });
                i += 1;
            }
            _ => return Err((line, format!("unexpected character `{}`", c as char))),
        }
    }
    Ok(out)
}
