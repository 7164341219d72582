//! Incremental text input: one text per line, or JSON lines with the text in a named field.
use std::io::BufRead;

use fusebert::{Error, Result};

/// How the input is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFormat {
    /// One text per line (`\n` or `\r\n`); empty lines are empty texts, so outputs line up with
    /// inputs.
    Lines,
    /// One JSON object per line, the text in string field `field`; blank lines are skipped.
    Jsonl { field: String },
}

/// Reads texts one at a time from any buffered reader; never holds more than one line.
pub struct TextReader<R> {
    input: R,
    format: InputFormat,
    /// Name used in errors (a path or `<stdin>`).
    source: String,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> TextReader<R> {
    pub fn new(input: R, format: InputFormat, source: impl Into<String>) -> TextReader<R> {
        TextReader { input, format, source: source.into(), line: 0, buf: Vec::new() }
    }

    /// 1-based number of the last line read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The next text, `None` at the end of the input.
    pub fn next_text(&mut self) -> Result<Option<String>> {
        loop {
            self.buf.clear();
            let n = self.input.read_until(b'\n', &mut self.buf).map_err(|e| Error::io(&self.source, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            let text = std::str::from_utf8(&self.buf).map_err(|e| {
                Error::Input(format!(
                    "{} line {}: not valid UTF-8 (invalid byte at column {})",
                    self.source,
                    self.line,
                    e.valid_up_to() + 1
                ))
            })?;
            match &self.format {
                InputFormat::Lines => return Ok(Some(text.to_string())),
                InputFormat::Jsonl { field } => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    return self.field_of(text, field).map(Some);
                }
            }
        }
    }

    fn field_of(&self, line: &str, field: &str) -> Result<String> {
        let at = || format!("{} line {}", self.source, self.line);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::Input(format!("{}: not a JSON object: {e}", at())))?;
        let obj = value.as_object().ok_or_else(|| Error::Input(format!("{}: expected a JSON object", at())))?;
        match obj.get(field) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(Error::Input(format!("{}: field `{field}` is {other}, expected a string", at()))),
            None => Err(Error::Input(format!("{}: no field `{field}` (pass --field NAME)", at()))),
        }
    }
}

impl<R: BufRead> Iterator for TextReader<R> {
    type Item = Result<String>;
    fn next(&mut self) -> Option<Result<String>> {
        self.next_text().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &str, format: InputFormat) -> Result<Vec<String>> {
        TextReader::new(input.as_bytes(), format, "<test>").collect()
    }

    #[test]
    fn lines_keep_empty_lines_and_strip_crlf() {
        let got = read_all("a\r\n\nb c\nlast", InputFormat::Lines).unwrap();
        assert_eq!(got, ["a", "", "b c", "last"]);
    }

    #[test]
    fn jsonl_reads_the_field_and_names_bad_lines() {
        let f = || InputFormat::Jsonl { field: "text".into() };
        let got = read_all("{\"text\": \"x\", \"id\": 1}\n\n{\"text\": \"\"}\n", f()).unwrap();
        assert_eq!(got, ["x", ""]);
        let err = read_all("{\"text\": \"x\"}\n{\"body\": \"y\"}\n", f()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`text`"), "{err}");
        let err = read_all("{\"text\": 3}\n", f()).unwrap_err().to_string();
        assert!(err.contains("expected a string"), "{err}");
        let err = read_all("not json\n", f()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("JSON"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let bytes: &[u8] = b"ok\nbad \xff here\n";
        let err = TextReader::new(bytes, InputFormat::Lines, "<t>").collect::<Result<Vec<_>>>().unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
