//! What every handler shares: the options, the encoder, the batcher, the metrics and the
//! admission permits.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::engine::Encoder;
use crate::metrics::Metrics;
use crate::options::ServeOptions;

/// What every handler shares.
pub struct AppState {
    pub opts: ServeOptions,
    pub encoder: Encoder,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    /// One permit per HTTP inference request in flight.
    pub permits: Arc<Semaphore>,
    /// Model loaded and warmed up, not draining.
    pub ready: AtomicBool,
}
