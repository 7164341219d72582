//! BERT models: configuration, weights, the CPU reference forward pass.
pub mod config;
pub mod reference;
pub mod weights;
