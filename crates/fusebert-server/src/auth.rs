//! Bearer API keys, compared in constant time.
//!
//! The presented `Authorization` value is compared with `Bearer <key>` for every configured key,
//! each comparison touching every byte whatever matches, and the results combined without
//! branching, so the time taken says nothing about where a guess went wrong or which key was
//! close. (Lengths are not hidden: the time grows with the longer of the two values, which a key
//! of fixed, generous length makes moot.) Keys are never logged.
use std::hint::black_box;

/// The accepted `Authorization` values; empty means no auth.
#[derive(Clone, Default)]
pub struct ApiKeys {
    /// `Bearer <key>` for each key.
    expected: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.expected.len())
    }
}

impl ApiKeys {
    /// The given keys; empty and whitespace-only keys are ignored.
    pub fn new<S: AsRef<str>>(keys: &[S]) -> ApiKeys {
        let expected = keys
            .iter()
            .map(|k| k.as_ref().trim())
            .filter(|k| !k.is_empty())
            .map(|k| format!("Bearer {k}").into_bytes())
            .collect();
        ApiKeys { expected }
    }

    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }

    /// Whether `authorization` (the header's bytes) carries one of the keys.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let presented = authorization.unwrap_or(b"");
        let mut ok = 0u8;
        for expected in &self.expected {
            ok |= constant_time_eq(presented, expected) as u8;
        }
        ok == 1
    }
}

/// `a == b`, in a time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    // A length mismatch is folded into the accumulator rather than returned early.
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= black_box(u64::from(x ^ y));
    }
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_is_exact() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abd"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer ab"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn any_of_several_keys() {
        let keys = ApiKeys::new(&["k1", " k2 ", ""]);
        assert!(keys.accepts(Some(b"Bearer k1")));
        assert!(keys.accepts(Some(b"Bearer k2")));
        assert!(!keys.accepts(Some(b"Bearer ")));
        assert!(!keys.accepts(Some(b"bearer k1")));
        assert!(!keys.accepts(None));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys, redacted)");
    }
}
