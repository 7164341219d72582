//! fusebert: BERT-family encoder inference on hand-written CUDA kernels.
//!
//! Layers, bottom up (each its own crate, re-exported here): [`error`], [`numerics`] and the
//! batches of token ids from `fusebert-core`; [`ptx`] (the shipped kernels), [`device`] (one
//! launch API over CUDA and the PTX emulator) and [`kernels`] (typed, checked launches) from
//! `fusebert-kernels`; then this crate's [`model`] (config, weights, CPU reference and device
//! forward pass), [`tokenize`], [`pipeline`] (a model folder opened for a backend: what every
//! front end uses) and [`perf`] (launch plan, roofline). The server
//! (`fusebert-server`) and the command line (`fusebert-cli`) sit on top.
pub mod batches;
pub mod model;
pub mod perf;
pub mod pipeline;
pub mod tokenize;

pub use batches::{BatchPlanner, Budget};
pub use model::Precision;
pub use pipeline::{Backend, Pipeline};

pub use fusebert_core::{error, numerics, Error, Result};
pub use fusebert_kernels as kernels;
pub use fusebert_kernels::{device, ptx, Device, DeviceBuffer, KernelArg, LaunchConfig};

/// The PTX emulator (`fusebert-emu`), for counters and sanitizer settings.
#[cfg(feature = "emulator")]
pub use fusebert_emu as emu;

/// The README's examples, compiled as doc tests (only under `cargo test --doc`, so the packaged
/// crate does not need the file).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoc;
