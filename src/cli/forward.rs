//! Which engine runs the forward pass (`--device`, `--precision`), and the device model set-up
//! (`device_bert`); the per-run engine is `stream::Engine`.
use clap::ValueEnum;

use fusebert::model::bert::DeviceBert;
use fusebert::model::{BertModel, Precision};
use fusebert::{Device, Result};

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

/// The model on `dev`; int8 is calibrated (SmoothQuant) on the built-in calibration texts.
pub fn device_bert(dev: &Device, model: &BertModel, precision: Precision) -> Result<DeviceBert> {
    if precision != Precision::Int8 {
        return DeviceBert::new(dev, model, precision);
    }
    let tokenizer = fusebert::tokenize::Tokenizer::for_model(model)?;
    let calibration = tokenizer.encode_batch(&fusebert::model::quant::CALIBRATION_TEXTS, true)?;
    DeviceBert::new_calibrated(dev, model, precision, &calibration)
}
