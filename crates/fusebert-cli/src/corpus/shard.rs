//! `embed --shard K/N`: shard K of N of an input file is a contiguous run of its lines, chosen by
//! byte offsets so that a process reads only its own part of the file.
//!
//! With `S` the file's size in bytes, shard K nominally covers bytes `[K*S/N, (K+1)*S/N)`
//! (integer division); each end is moved forward to the next line start (an end that already is a
//! line start, 0 or `S` stays). So shard K holds exactly the lines whose first byte lies in its
//! nominal range: every line is in one shard, the shards are in file order, and their outputs
//! concatenated in K order are the unsharded output (the per-row results do not depend on the
//! batch a text lands in). Shards are balanced by bytes, which is close to balanced by tokens; a
//! shard can be empty (N larger than the number of lines), which is a success with no rows.
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use fusebert::{Error, Result};

/// Shard `index` of `count` (`index < count`), as `--shard K/N` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`, both decimal integers; anything else is an error saying what is
    /// wrong (including an unexpanded `$(JOB_COMPLETION_INDEX)`).
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let usage = "expected K/N: shard K (counted from 0) of N, e.g. 0/4";
        let (k, n) = s.split_once('/').ok_or_else(|| format!("`{s}`: {usage}"))?;
        let number = |part: &str, what: &str| -> std::result::Result<u64, String> {
            if part.contains('$') {
                return Err(format!(
                    "`{s}`: {what} `{part}` is an unexpanded variable (in a Kubernetes Job, \
                     $(JOB_COMPLETION_INDEX) is set only with completionMode: Indexed)"
                ));
            }
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{s}`: {what} `{part}` is not a non-negative integer; {usage}"));
            }
            part.parse::<u64>().map_err(|e| format!("`{s}`: {what} `{part}`: {e}"))
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err(format!("`{s}`: N must be at least 1"));
        }
        if index >= count {
            return Err(format!("`{s}`: K must be below N (shards are numbered 0 to {})", count - 1));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The nominal start of shard `k` of this shard's count in a file of `size` bytes:
    /// `k*size/N` (exact in 128 bits).
    fn nominal(&self, k: u64, size: u64) -> u64 {
        (u128::from(k) * u128::from(size) / u128::from(self.count)) as u64
    }

    /// The byte range `[start, end)` of this shard in `file` (of `size` bytes): the nominal range
    /// with both ends moved to the next line start. Reads at most one line per end.
    pub fn byte_range<R: Read + Seek>(&self, file: &mut R, size: u64) -> std::io::Result<(u64, u64)> {
        let start = line_start_at_or_after(file, self.nominal(self.index, size), size)?;
        let end = line_start_at_or_after(file, self.nominal(self.index + 1, size), size)?;
        Ok((start, end.max(start)))
    }

    /// Opens `path` and returns a reader of exactly this shard's bytes, with its range.
    pub fn open(&self, path: &Path) -> Result<(Box<dyn BufRead>, (u64, u64))> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let (start, end) = self.byte_range(&mut file, size).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
        Ok((Box::new(BufReader::new(file.take(end - start))), (start, end)))
    }
}

/// The first line start at or after byte `at`: `at` itself when it is 0, `size`, or follows a
/// `\n`; otherwise the byte after the next `\n` (or `size` when there is none).
fn line_start_at_or_after<R: Read + Seek>(file: &mut R, at: u64, size: u64) -> std::io::Result<u64> {
    if at == 0 || at >= size {
        return Ok(at.min(size));
    }
    // Read from the byte before `at`: a `\n` there means `at` starts a line.
    file.seek(SeekFrom::Start(at - 1))?;
    let mut reader = BufReader::new(&mut *file);
    let mut skipped = Vec::new();
    let n = reader.read_until(b'\n', &mut skipped)? as u64;
    Ok(at - 1 + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn shard(s: &str) -> Shard {
        s.parse().unwrap()
    }

    /// The lines (with their terminators) of each shard of `text`.
    fn split(text: &str, n: u64) -> Vec<String> {
        (0..n)
            .map(|k| {
                let mut c = Cursor::new(text.as_bytes());
                let (a, b) = Shard { index: k, count: n }.byte_range(&mut c, text.len() as u64).unwrap();
                text[a as usize..b as usize].to_string()
            })
            .collect()
    }

    #[test]
    fn parses_k_of_n_and_names_what_is_wrong() {
        assert_eq!(shard("0/1"), Shard { index: 0, count: 1 });
        assert_eq!(shard("3/4"), Shard { index: 3, count: 4 });
        assert_eq!(shard("3/4").to_string(), "3/4");
        for (bad, says) in [
            ("4/4", "K must be below N"),
            ("7/4", "numbered 0 to 3"),
            ("0/0", "N must be at least 1"),
            ("1", "expected K/N"),
            ("", "expected K/N"),
            ("1/2/3", "`2/3` is not a non-negative integer"),
            ("-1/2", "`-1` is not a non-negative integer"),
            ("a/2", "K `a`"),
            ("1/", "N ``"),
            (" 1/2", "not a non-negative integer"),
            ("$(JOB_COMPLETION_INDEX)/4", "unexpanded variable"),
            ("99999999999999999999/2", "too large"),
        ] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn shards_partition_the_lines_in_order_for_every_count() {
        let texts = [
            "",
            "a\n",
            "\n",
            "\n\n\n",
            "one\ntwo\nthree",
            "one\r\ntwo\r\n\r\nthree\r\n",
            "a much longer first line than the others\nb\nc\nd\n",
            "x\nyy\nzzz\n\nwwww\nv",
        ];
        for text in texts {
            for n in 1..=12 {
                let parts = split(text, n);
                assert_eq!(parts.concat(), text, "{text:?} in {n}");
                for p in &parts {
                    // every non-final part ends a line; every part starts one
                    assert!(p.is_empty() || p.ends_with('\n') || text.ends_with(p.as_str()), "{text:?} {n}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn a_line_belongs_to_the_shard_its_first_byte_is_in() {
        // 10 bytes, 2 shards: nominal [0, 5) and [5, 10); "abcd\n" ends at 5, so line 2 starts at 5
        assert_eq!(split("abcd\nefgh\n", 2), ["abcd\n", "efgh\n"]);
        // "abcdef\n" crosses 5: it belongs to shard 0, shard 1 starts at the next line
        assert_eq!(split("abcdef\ngh\n", 2), ["abcdef\n", "gh\n"]);
        // one long line: shard 0 has it all, the others are empty
        assert_eq!(split("abcdefghij", 3), ["abcdefghij", "", ""]);
    }
}
