//! `--device` and `--precision`, as a [`fusebert::Backend`] and [`Precision`]: the one
//! translation every command uses.
use clap::ValueEnum;

use fusebert::model::Precision;
use fusebert::{Backend, Error, Result};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// The f32 CPU reference forward pass.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// The PTX emulator (the kernels' exact PTX, run on the CPU).
    Emu,
}

impl DeviceKind {
    pub fn backend(self) -> Backend {
        match self {
            DeviceKind::Cpu => Backend::Cpu,
            DeviceKind::Cuda => Backend::Cuda(0),
            DeviceKind::Emu => Backend::Emulator,
        }
    }
}

/// `--precision` (device forward pass only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F16,
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

/// The backend and precision of `--device` and `--precision` (fp16 by default on a device; a
/// precision on the f32 CPU reference is an error, not silently ignored).
pub fn backend(device: DeviceKind, precision: Option<PrecisionArg>) -> Result<(Backend, Precision)> {
    match (device, precision) {
        (DeviceKind::Cpu, Some(p)) => Err(Error::Input(format!(
            "--precision {p:?} applies to --device cuda|emu; the cpu reference computes in f32"
        ))),
        (d, p) => Ok((d.backend(), p.map_or(Precision::F16, Into::into))),
    }
}
