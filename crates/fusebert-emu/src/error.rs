//! The emulator's error type: what went wrong in parsing, launching or running PTX, with the
//! kernel, module and location named. `fusebert-core`'s `Error` converts from it one to one.
use std::path::PathBuf;

/// Result alias of the emulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PTX text could not be parsed or lowered.
    #[error("PTX {module}:{line}: {msg}")]
    PtxParse { module: String, line: usize, msg: String },

    /// A launch the hardware would refuse (configuration, limits, missing entry).
    #[error("kernel `{kernel}`: {msg}")]
    Kernel { kernel: String, msg: String },

    /// Arguments that do not match the kernel's `.param` list.
    #[error("kernel `{kernel}`: argument mismatch: {msg}")]
    KernelArgs { kernel: String, msg: String },

    /// Unsupported instruction, trap, step limit, or an internal failure.
    #[error("emulator: {0}")]
    Emulator(String),

    /// A sanitizer finding (out of bounds, race, uninitialised read, ...), fully located; it
    /// prints as its report text.
    #[error("sanitizer: {0}")]
    Sanitizer(Box<crate::finding::Finding>),

    /// Device memory: exhausted, freed twice, or an access outside every allocation.
    #[error("device memory: {0}")]
    Memory(String),

    /// Bad input to the research command line (`ptxemu run`).
    #[error("invalid input: {0}")]
    Input(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: cannot read safetensors: {msg}")]
    Safetensors { path: PathBuf, msg: String },

    #[error("{path}: tensor `{name}` is missing")]
    TensorMissing { path: PathBuf, name: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl From<crate::finding::Finding> for Error {
    fn from(f: crate::finding::Finding) -> Self {
        Error::Sanitizer(Box::new(f))
    }
}
