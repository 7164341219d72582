//! Comparing two conformance folders (hardware vs emulator) word for word, and the SHA-256 of
//! each case's words (FIPS 180-4, written here: the workspace has no hashing crate).
use std::path::Path;

use fusebert_core::error::{Error, Result};

use super::cases;

/// Indices of the first `max` differing words (a length difference counts from the shorter end).
pub fn first_differences(a: &[u32], b: &[u32], max: usize) -> Vec<usize> {
    let mut v: Vec<usize> =
        a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).take(max).collect();
    if v.len() < max && a.len() != b.len() {
        v.push(a.len().min(b.len()));
    }
    v
}

/// A word as hex and, when it is a plausible float, its f32 value.
pub fn show(w: Option<&u32>) -> String {
    match w {
        None => "(missing)".into(),
        Some(&w) => {
            let f = f32::from_bits(w);
            if f.is_finite() && f != 0.0 && (1e-30..1e30).contains(&f.abs()) {
                format!("{w:#010x} ({f})")
            } else {
                format!("{w:#010x}")
            }
        }
    }
}

/// One case in a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseComparison {
    pub case: String,
    /// Identical words in both folders.
    pub same: bool,
    /// Number of differing words (a missing file: every word of the other).
    pub differing: usize,
    /// The first differing words: (index, what it is, word in A, word in B).
    pub first: Vec<(usize, String, String, String)>,
    /// A file missing on one side, if so.
    pub missing: Option<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub cases: Vec<CaseComparison>,
}

impl Comparison {
    /// True when every case has identical words on both sides.
    pub fn identical(&self) -> bool {
        self.cases.iter().all(|c| c.same)
    }

    /// A report for people: one line per case, the first differing words decoded.
    pub fn text(&self, a: &str, b: &str) -> String {
        let differ = self.cases.iter().filter(|c| !c.same).count();
        let mut s = format!(
            "conformance compare: A = {a}, B = {b}: {} case(s), {} identical, {differ} differ\n",
            self.cases.len(),
            self.cases.len() - differ
        );
        for c in &self.cases {
            if c.same {
                s.push_str(&format!("  {:<28} same\n", c.case));
                continue;
            }
            if let Some(m) = &c.missing {
                s.push_str(&format!("  {:<28} MISSING {m}\n", c.case));
                continue;
            }
            s.push_str(&format!("  {:<28} DIFFERS in {} word(s)\n", c.case, c.differing));
            for (i, what, wa, wb) in &c.first {
                s.push_str(&format!("      word {i}: {what}: A {wa}, B {wb}\n"));
            }
        }
        s
    }
}

fn read_words(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    if bytes.len() % 4 != 0 {
        return Err(Error::Input(format!("{}: {} bytes is not a whole number of words", path.display(), bytes.len())));
    }
    Ok(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect())
}

/// Compares every case's `<case>.bin` in folders `a` and `b` (cases of this build that exist in
/// neither folder are left out; in one only: `missing`). Reports up to `max_words` differing
/// words per case, each with what it is ([`cases::describe`]).
pub fn compare_dirs(a: &Path, b: &Path, max_words: usize) -> Result<Comparison> {
    for d in [a, b] {
        if !d.is_dir() {
            return Err(Error::Input(format!("{} is not a folder of conformance results", d.display())));
        }
    }
    let mut out = Vec::new();
    for case in cases::all() {
        let file = format!("{}.bin", case.name);
        let (pa, pb) = (a.join(&file), b.join(&file));
        let cmp = match (pa.is_file(), pb.is_file()) {
            (false, false) => continue,
            (true, false) | (false, true) => {
                let (have, lack) = if pa.is_file() { (&pa, b) } else { (&pb, a) };
                let n = read_words(have)?.len();
                CaseComparison {
                    case: case.name.into(),
                    same: false,
                    differing: n,
                    first: Vec::new(),
                    missing: Some(format!("in {}", lack.display())),
                }
            }
            (true, true) => {
                let (wa, wb) = (read_words(&pa)?, read_words(&pb)?);
                let differing = wa.iter().zip(&wb).filter(|(x, y)| x != y).count() + wa.len().abs_diff(wb.len());
                let first = first_differences(&wa, &wb, max_words)
                    .into_iter()
                    .map(|i| (i, cases::describe(&case, i), show(wa.get(i)), show(wb.get(i))))
                    .collect();
                CaseComparison { case: case.name.into(), same: differing == 0, differing, first, missing: None }
            }
        };
        out.push(cmp);
    }
    Ok(Comparison { cases: out })
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(sha256_hex(long), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }

    #[test]
    fn differences_count_a_length_change() {
        assert_eq!(first_differences(&[1, 2, 3], &[1, 9, 3], 4), vec![1]);
        assert_eq!(first_differences(&[1, 2], &[1, 2, 3], 4), vec![2]);
        assert!(first_differences(&[1, 2], &[1, 2], 4).is_empty());
    }
}
