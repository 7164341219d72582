//! Shared scalar math below both the kernels' CPU references and the model layer: an erf
//! accurate to f64 rounding, the int8 rounding rules the quantize kernels implement, the FFN
//! activations and sentence pooling.
pub mod activation;
pub mod erf;
pub mod int8;
pub mod pooling;
