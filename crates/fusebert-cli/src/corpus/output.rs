//! Where results go, chosen by the output path's extension: JSON lines (`.jsonl`, or stdout),
//! NumPy `.npy` (float32 `[N, D]`), `.safetensors` (`embeddings` f32 `[N, D]` + `tokens` i64
//! `[N]`). Each writer appends a batch's rows as soon as they exist and can resume an
//! interrupted run: [`OutputWriter::rows_done`] says how many leading inputs the file already
//! holds (a partly written last row is cut off).
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fusebert::{Error, Result};

/// One encoded text.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub text: &'a str,
    pub tokens: usize,
    pub embedding: &'a [f32],
}

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Npy,
    Safetensors,
}

impl OutputFormat {
    /// From the file extension: `.jsonl`/`.json`/`.ndjson`, `.npy`, `.safetensors`.
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(OutputFormat::Jsonl),
            Some("npy") => Ok(OutputFormat::Npy),
            Some("safetensors") => Ok(OutputFormat::Safetensors),
            _ => Err(Error::Input(format!(
                "--output {}: unknown extension (expected .jsonl, .npy or .safetensors)",
                path.display()
            ))),
        }
    }
}

/// A sink for rows, in input order.
pub trait OutputWriter {
    /// Rows already in the output when it was opened (0 unless resuming).
    fn rows_done(&self) -> usize;
    /// Appends rows; they are on disk (flushed) when this returns.
    fn write(&mut self, rows: &[Row<'_>]) -> Result<()>;
    /// Completes the file (headers, final layout).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens the output: `path` `None` is JSON lines on stdout. `dim` is the embedding width
/// (checked against a resumed file). `resume` keeps what the file holds; otherwise it is
/// replaced.
pub fn open_output(path: Option<&Path>, dim: usize, resume: bool) -> Result<Box<dyn OutputWriter>> {
    let Some(path) = path else {
        if resume {
            return Err(Error::Input("--resume needs --output FILE".into()));
        }
        return Ok(Box::new(JsonlWriter { out: Box::new(std::io::stdout()), path: "<stdout>".into(), done: 0 }));
    };
    match OutputFormat::from_path(path)? {
        OutputFormat::Jsonl => JsonlWriter::open(path, resume).map(|w| Box::new(w) as Box<dyn OutputWriter>),
        OutputFormat::Npy => NpyWriter::open(path, dim, resume).map(|w| Box::new(w) as Box<dyn OutputWriter>),
        OutputFormat::Safetensors => {
            SafetensorsWriter::open(path, dim, resume).map(|w| Box::new(w) as Box<dyn OutputWriter>)
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

fn bad_file(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Input(format!("--resume: {}: {msg}", path.display()))
}

/// One JSON object per line: `text`, `tokens`, `embedding`.
struct JsonlWriter {
    out: Box<dyn Write>,
    path: PathBuf,
    done: usize,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    text: &'a str,
    tokens: usize,
    embedding: &'a [f32],
}

impl JsonlWriter {
    fn open(path: &Path, resume: bool) -> Result<JsonlWriter> {
        let done = if resume && path.exists() { complete_lines(path)? } else { 0 };
        let file = if resume { OpenOptions::new().create(true).append(true).open(path) } else { File::create(path) }
            .map_err(|e| io(path, e))?;
        Ok(JsonlWriter { out: Box::new(BufWriter::new(file)), path: path.into(), done })
    }
}

/// Counts the complete (newline-terminated) lines of `path` and cuts a partial last line.
fn complete_lines(path: &Path) -> Result<usize> {
    let mut f = OpenOptions::new().read(true).write(true).open(path).map_err(|e| io(path, e))?;
    let (mut lines, mut end_of_last_line, mut offset) = (0usize, 0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                lines += 1;
                end_of_last_line = offset + i as u64 + 1;
            }
        }
        offset += n as u64;
    }
    if end_of_last_line != offset {
        f.set_len(end_of_last_line).map_err(|e| io(path, e))?;
    }
    Ok(lines)
}

impl OutputWriter for JsonlWriter {
    fn rows_done(&self) -> usize {
        self.done
    }

    fn write(&mut self, rows: &[Row<'_>]) -> Result<()> {
        for r in rows {
            let line = JsonLine { text: r.text, tokens: r.tokens, embedding: r.embedding };
            serde_json::to_writer(&mut self.out, &line).map_err(|e| Error::Other(format!("JSON output: {e}")))?;
            self.out.write_all(b"\n").map_err(|e| io(&self.path, e))?;
        }
        self.out.flush().map_err(|e| io(&self.path, e))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.out.flush().map_err(|e| io(&self.path, e))
    }
}

/// NumPy format 1.0 with a fixed 128-byte header whose row count is a fixed-width field, so it
/// can be rewritten in place after every batch: the file is a valid `.npy` of the rows written
/// so far at any moment.
struct NpyWriter {
    file: File,
    path: PathBuf,
    dim: usize,
    rows: usize,
    done: usize,
}

const NPY_HEADER_LEN: usize = 128;

fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows:>20}, {dim}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&((NPY_HEADER_LEN - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(NPY_HEADER_LEN - 1, b' ');
    h.push(b'\n');
    h
}

impl NpyWriter {
    fn open(path: &Path, dim: usize, resume: bool) -> Result<NpyWriter> {
        assert!(format!("{dim}").len() < 20, "embedding width");
        if resume && path.exists() {
            let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| io(path, e))?;
            let mut head = vec![0u8; NPY_HEADER_LEN];
            file.read_exact(&mut head).map_err(|_| bad_file(path, "not an .npy file written by fusebert"))?;
            let text = String::from_utf8_lossy(&head[10..]).to_string();
            if !head.starts_with(b"\x93NUMPY\x01\x00") || !text.contains("'descr': '<f4'") {
                return Err(bad_file(path, "not a float32 .npy file written by fusebert"));
            }
            let want = format!(", {dim}), }}");
            if !text.contains(&want) {
                return Err(bad_file(path, format!("its rows are not {dim} wide (the model's embedding width)")));
            }
            let len = file.metadata().map_err(|e| io(path, e))?.len() as usize;
            let rows = (len - NPY_HEADER_LEN) / (4 * dim);
            file.set_len((NPY_HEADER_LEN + rows * 4 * dim) as u64).map_err(|e| io(path, e))?;
            let mut w = NpyWriter { file, path: path.into(), dim, rows, done: rows };
            w.write_header()?;
            w.file.seek(SeekFrom::End(0)).map_err(|e| io(path, e))?;
            return Ok(w);
        }
        let file = File::create(path).map_err(|e| io(path, e))?;
        let mut w = NpyWriter { file, path: path.into(), dim, rows: 0, done: 0 };
        w.write_header()?;
        Ok(w)
    }

    fn write_header(&mut self) -> Result<()> {
        let p = self.path.clone();
        self.file.seek(SeekFrom::Start(0)).map_err(|e| io(&p, e))?;
        self.file.write_all(&npy_header(self.rows, self.dim)).map_err(|e| io(&p, e))
    }
}

impl OutputWriter for NpyWriter {
    fn rows_done(&self) -> usize {
        self.done
    }

    fn write(&mut self, rows: &[Row<'_>]) -> Result<()> {
        let p = self.path.clone();
        let mut bytes = Vec::with_capacity(rows.len() * self.dim * 4);
        for r in rows {
            if r.embedding.len() != self.dim {
                return Err(Error::Other(format!(
                    "embedding of width {} for a {}-wide .npy",
                    r.embedding.len(),
                    self.dim
                )));
            }
            r.embedding.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        self.file.seek(SeekFrom::End(0)).map_err(|e| io(&p, e))?;
        self.file.write_all(&bytes).map_err(|e| io(&p, e))?;
        self.rows += rows.len();
        // Data first, then the row count: a kill in between leaves a header that under-counts,
        // never one that promises missing rows.
        self.write_header()?;
        self.file.flush().map_err(|e| io(&p, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.file.sync_all().map_err(|e| io(&self.path, e))
    }
}

/// Rows go to `PATH.partial` as records (i64 token count, then the f32 embedding) while the
/// run lasts; `finish` lays out the final `.safetensors` (`embeddings` `[N, D]` f32, `tokens`
/// `[N]` i64) by streaming the records twice, and removes the partial file.
struct SafetensorsWriter {
    partial: BufWriter<File>,
    partial_path: PathBuf,
    path: PathBuf,
    dim: usize,
    rows: usize,
    done: usize,
}

impl SafetensorsWriter {
    fn record_len(dim: usize) -> usize {
        8 + 4 * dim
    }

    fn open(path: &Path, dim: usize, resume: bool) -> Result<SafetensorsWriter> {
        let mut partial_path = path.as_os_str().to_owned();
        partial_path.push(".partial");
        let partial_path = PathBuf::from(partial_path);
        let rec = Self::record_len(dim);
        let mut rows = 0;
        if resume && !partial_path.exists() && path.exists() {
            Self::unpack_final(path, &partial_path, dim)?;
        }
        let file = if resume && partial_path.exists() {
            let f = OpenOptions::new().read(true).append(true).open(&partial_path).map_err(|e| io(&partial_path, e))?;
            let len = f.metadata().map_err(|e| io(&partial_path, e))?.len() as usize;
            rows = len / rec;
            f.set_len((rows * rec) as u64).map_err(|e| io(&partial_path, e))?;
            f
        } else {
            File::create(&partial_path).map_err(|e| io(&partial_path, e))?
        };
        Ok(SafetensorsWriter { partial: BufWriter::new(file), partial_path, path: path.into(), dim, rows, done: rows })
    }

    /// A finished file being resumed: its rows back into records, so more can be appended.
    fn unpack_final(path: &Path, partial_path: &Path, dim: usize) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad_file(path, e))?;
        let emb = st.tensor("embeddings").map_err(|e| bad_file(path, e))?;
        let tok = st.tensor("tokens").map_err(|e| bad_file(path, e))?;
        if emb.shape().len() != 2 || emb.shape()[1] != dim || emb.dtype() != safetensors::Dtype::F32 {
            return Err(bad_file(
                path,
                format!("`embeddings` is {:?} {:?}, expected F32 [N, {dim}]", emb.dtype(), emb.shape()),
            ));
        }
        let mut out = BufWriter::new(File::create(partial_path).map_err(|e| io(partial_path, e))?);
        for (t, e) in tok.data().chunks_exact(8).zip(emb.data().chunks_exact(4 * dim)) {
            out.write_all(t).and_then(|_| out.write_all(e)).map_err(|e| io(partial_path, e))?;
        }
        out.flush().map_err(|e| io(partial_path, e))
    }
}

impl OutputWriter for SafetensorsWriter {
    fn rows_done(&self) -> usize {
        self.done
    }

    fn write(&mut self, rows: &[Row<'_>]) -> Result<()> {
        let p = self.partial_path.clone();
        for r in rows {
            if r.embedding.len() != self.dim {
                return Err(Error::Other(format!("embedding of width {} for {} columns", r.embedding.len(), self.dim)));
            }
            self.partial.write_all(&(r.tokens as i64).to_le_bytes()).map_err(|e| io(&p, e))?;
            for v in r.embedding {
                self.partial.write_all(&v.to_le_bytes()).map_err(|e| io(&p, e))?;
            }
        }
        self.rows += rows.len();
        self.partial.flush().map_err(|e| io(&p, e))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.partial.flush().map_err(|e| io(&self.partial_path, e))?;
        let (n, d) = (self.rows, self.dim);
        let emb_bytes = n * d * 4;
        let header = serde_json::json!({
            "__metadata__": {"format": "fusebert", "rows": n.to_string()},
            "embeddings": {"dtype": "F32", "shape": [n, d], "data_offsets": [0, emb_bytes]},
            "tokens": {"dtype": "I64", "shape": [n], "data_offsets": [emb_bytes, emb_bytes + 8 * n]},
        })
        .to_string();
        let mut header = header.into_bytes();
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let path = self.path.clone();
        let mut out = BufWriter::new(File::create(&path).map_err(|e| io(&path, e))?);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(|e| io(&path, e))?;
        out.write_all(&header).map_err(|e| io(&path, e))?;
        let rec = Self::record_len(d);
        for pass in 0..2 {
            let mut input =
                std::io::BufReader::new(File::open(&self.partial_path).map_err(|e| io(&self.partial_path, e))?);
            let mut record = vec![0u8; rec];
            for _ in 0..n {
                input.read_exact(&mut record).map_err(|e| io(&self.partial_path, e))?;
                let part = if pass == 0 { &record[8..] } else { &record[..8] };
                out.write_all(part).map_err(|e| io(&path, e))?;
            }
        }
        out.flush().map_err(|e| io(&path, e))?;
        drop(out);
        std::fs::remove_file(&self.partial_path).map_err(|e| io(&self.partial_path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fusebert-corpus-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn rows(n: usize, from: usize, dim: usize) -> (Vec<String>, Vec<Vec<f32>>) {
        let texts = (from..from + n).map(|i| format!("text {i}")).collect();
        let embs = (from..from + n).map(|i| (0..dim).map(|j| (i * 100 + j) as f32 * 0.5).collect()).collect();
        (texts, embs)
    }

    fn write(w: &mut Box<dyn OutputWriter>, n: usize, from: usize, dim: usize) {
        let (t, e) = rows(n, from, dim);
        let r: Vec<Row> = t.iter().zip(&e).map(|(t, e)| Row { text: t, tokens: t.len(), embedding: e }).collect();
        w.write(&r).unwrap();
    }

    #[test]
    fn npy_header_is_fixed_length_and_parses_as_numpy_does() {
        let h = npy_header(12345, 384);
        assert_eq!(h.len(), NPY_HEADER_LEN);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.contains("'shape': (               12345, 384), }"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn npy_resume_cuts_a_partial_row_and_continues() {
        let p = tmp("a.npy");
        let mut w = open_output(Some(&p), 3, false).unwrap();
        write(&mut w, 4, 0, 3);
        drop(w); // killed: no finish
                 // a torn last row
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let mut w = open_output(Some(&p), 3, true).unwrap();
        assert_eq!(w.rows_done(), 4);
        write(&mut w, 2, 4, 3);
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), NPY_HEADER_LEN + 6 * 3 * 4);
        assert_eq!(&bytes[..NPY_HEADER_LEN], &npy_header(6, 3)[..]);
        let vals: Vec<f32> =
            bytes[NPY_HEADER_LEN..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let want: Vec<f32> = rows(6, 0, 3).1.concat();
        assert_eq!(vals, want);
        let err = open_output(Some(&p), 4, true).err().unwrap().to_string();
        assert!(err.contains("4 wide"), "{err}");
    }

    #[test]
    fn jsonl_resume_counts_complete_lines() {
        let p = tmp("b.jsonl");
        let mut w = open_output(Some(&p), 2, false).unwrap();
        write(&mut w, 3, 0, 2);
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"text\": \"torn").unwrap();
        drop(f);
        let mut w = open_output(Some(&p), 2, true).unwrap();
        assert_eq!(w.rows_done(), 3);
        write(&mut w, 1, 3, 2);
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3]["text"], "text 3");
    }

    #[test]
    fn safetensors_finishes_resumes_and_loads() {
        let p = tmp("c.safetensors");
        let mut w = open_output(Some(&p), 5, false).unwrap();
        write(&mut w, 3, 0, 5);
        drop(w); // killed before finish: the partial file holds the rows
        let mut w = open_output(Some(&p), 5, true).unwrap();
        assert_eq!(w.rows_done(), 3);
        write(&mut w, 2, 3, 5);
        w.finish().unwrap();
        // resuming a finished file appends after its rows
        let mut w = open_output(Some(&p), 5, true).unwrap();
        assert_eq!(w.rows_done(), 5);
        write(&mut w, 1, 5, 5);
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let e = st.tensor("embeddings").unwrap();
        assert_eq!(e.shape(), [6, 5]);
        let vals: Vec<f32> = e.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, rows(6, 0, 5).1.concat());
        let t: Vec<i64> =
            st.tensor("tokens").unwrap().data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(t, rows(6, 0, 5).0.iter().map(|s| s.len() as i64).collect::<Vec<_>>());
        assert!(!p.with_extension("safetensors.partial").exists());
    }

    #[test]
    fn unknown_extension_and_resume_to_stdout_are_errors() {
        assert!(open_output(Some(Path::new("x.csv")), 3, false).is_err());
        assert!(open_output(None, 3, true).is_err());
    }
}
