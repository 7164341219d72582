//! The one error type of the crate: every failure names what it was about (file, tensor,
//! kernel) and, where it applies, what was expected and what was found.
use std::path::PathBuf;

/// Result alias used throughout fusebert.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("model folder {0} does not exist or is not a folder")]
    ModelDirMissing(PathBuf),

    #[error("{path}: required file is missing")]
    FileMissing { path: PathBuf },

    #[error("{path}: invalid config: {msg}")]
    Config { path: PathBuf, msg: String },

    #[error("{path}: cannot read safetensors: {msg}")]
    Safetensors { path: PathBuf, msg: String },

    #[error("{path}: tensor `{name}` is missing")]
    TensorMissing { path: PathBuf, name: String },

    /// Every tensor the config implies that the file lacks (names with the resolved prefix).
    #[error("{path}: {} tensor(s) missing (weight-name prefix `{prefix}`): {}", missing.len(), list_some(missing))]
    WeightsMissing { path: PathBuf, prefix: String, missing: Vec<String> },

    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("{path}: tensor `{name}` has dtype {got}, expected one of {expected}")]
    TensorDtype { path: PathBuf, name: String, expected: String, got: String },

    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },

    #[error("input {index} has {tokens} tokens, more than the input limit of {limit} (truncate it there, or raise the limit up to the model's position table)")]
    InputTooLong { index: usize, tokens: usize, limit: usize },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),

    #[error("CUDA error in {context}: {msg}")]
    Cuda { context: String, msg: String },

    #[error("kernel `{kernel}`: {msg}")]
    Kernel { kernel: String, msg: String },

    #[error("kernel `{kernel}`: argument mismatch: {msg}")]
    KernelArgs { kernel: String, msg: String },

    #[error("PTX {module}:{line}: {msg}")]
    PtxParse { module: String, line: usize, msg: String },

    #[error("emulator: {0}")]
    Emulator(String),

    #[error("sanitizer: {0}")]
    Sanitizer(String),

    #[error("device memory: {0}")]
    Memory(String),

    #[error("{0}")]
    Other(String),
}

/// The first names of a list, then how many more (error messages stay one readable line).
fn list_some(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// The emulator's errors keep their kind: a sanitizer finding stays a sanitizer finding.
#[cfg(feature = "emu")]
impl From<fusebert_emu::Error> for Error {
    fn from(e: fusebert_emu::Error) -> Self {
        use fusebert_emu::Error as E;
        match e {
            E::PtxParse { module, line, msg } => Error::PtxParse { module, line, msg },
            E::Kernel { kernel, msg } => Error::Kernel { kernel, msg },
            E::KernelArgs { kernel, msg } => Error::KernelArgs { kernel, msg },
            E::Emulator(m) => Error::Emulator(m),
            E::Sanitizer(f) => Error::Sanitizer(f.to_string()),
            E::Memory(m) => Error::Memory(m),
            E::Input(m) => Error::Input(m),
            E::Io { path, source } => Error::Io { path, source },
            E::Safetensors { path, msg } => Error::Safetensors { path, msg },
            E::TensorMissing { path, name } => Error::TensorMissing { path, name },
        }
    }
}
