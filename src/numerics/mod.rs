//! Shared scalar math below both the kernels' CPU references and the model layer: an erf
//! accurate to f64 rounding, and the int8 rounding rules the quantize kernels implement.
pub mod erf;
pub mod int8;
