//! fusebert's shared ground: the error type, batches of token ids, and the numerics (GELU, erf,
//! int8 quantisation, pooling) that the kernels, the CPU reference and the device forward agree on.
pub mod batch;
pub mod error;
pub mod numerics;

pub use batch::{Batch, PackedBatch};
pub use error::{Error, Result};
