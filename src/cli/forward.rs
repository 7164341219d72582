//! Which engine runs the forward pass (`--device`, `--precision`), and the device model set-up
//! (`device_bert`); the per-run engine is `stream::Engine`.
use clap::ValueEnum;

use fusebert::model::bert::{DeviceBert, ForwardOptions, Outputs};
use fusebert::model::reference::{self, Options, Output};
use fusebert::model::{BertModel, Precision};
use fusebert::tokenize::Batch;
use fusebert::{Device, Error, Result};

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

/// Runs `model` on `batch` on the chosen engine; a device reads back only `outputs` (the CPU
/// reference computes everything).
pub fn run_forward(
    device: DeviceKind,
    precision: Option<PrecisionArg>,
    model: &BertModel,
    batch: &Batch,
    opts: &Options,
    outputs: Outputs,
) -> Result<Output> {
    match device {
        DeviceKind::Cpu => {
            if let Some(p) = precision {
                return Err(Error::Input(format!(
                    "--precision {p:?} applies to --device cuda|emu; the cpu reference computes in f32"
                )));
            }
            reference::forward(model, batch, opts)
        }
        DeviceKind::Cuda | DeviceKind::Emu => {
            run_device_forward(device, precision.map_or(Precision::F16, Into::into), model, batch, opts, outputs)
        }
    }
}

/// Opens the device (a typed error when there is no GPU), uploads the model and runs the
/// device forward pass, reading back `outputs`.
pub fn run_device_forward(
    device: DeviceKind,
    precision: Precision,
    model: &BertModel,
    batch: &Batch,
    opts: &Options,
    outputs: Outputs,
) -> Result<Output> {
    let dev = match device {
        DeviceKind::Cuda => Device::cuda(0)?,
        DeviceKind::Emu => Device::emulator()?,
        DeviceKind::Cpu => return reference::forward(model, batch, opts),
    };
    let mut bert = device_bert(&dev, model, precision)?;
    let (out, _) = bert.forward(batch, ForwardOptions { normalize: opts.normalize, outputs })?;
    Ok(out)
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
