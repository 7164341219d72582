//! fusebert: BERT-family encoder inference on hand-written CUDA kernels.
//!
//! Layers, bottom up: [`ptx`] (embedded kernels), [`device`] (one launch API over CUDA and the
//! PTX emulator [`emu`]), [`kernels`] (typed, checked launches), [`model`] (config, weights,
//! CPU reference and device forward pass), [`tokenize`]; [`corpus`] (streamed batches and
//! outputs), [`perf`] (launch plan, roofline) and [`serve`], the HTTP server, on top.
pub mod corpus;
pub mod device;
pub mod emu;
pub mod error;
pub mod kernels;
pub mod model;
pub mod numerics;
pub mod perf;
pub mod ptx;
pub mod serve;
pub mod tokenize;

pub use device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
pub use error::{Error, Result};
