//! Corpus-scale encoding in bounded memory: texts are read incrementally ([`reader`]), grouped
//! into packed batches under a token budget ([`fusebert::batches`]), and each batch's results are written
//! as soon as it finishes ([`output`]: JSON lines, `.npy`, `.safetensors`), in input order, with
//! resumption of an interrupted run from what the output already holds; [`shard`] picks one of N
//! contiguous parts of an input file (`embed --shard K/N`).
//!
//! Memory is flat in the number of texts: at most one batch of texts, tokens and results is
//! alive at a time. The forward pass itself is the caller's (a closure), so the same driver
//! serves the CPU reference and the device path.
pub mod output;
pub mod reader;
pub mod shard;

pub use fusebert::batches::{BatchPlanner, Budget};
pub use output::{open_output, OutputFormat, OutputWriter, Row};
pub use reader::{InputFormat, TextReader};
pub use shard::Shard;
