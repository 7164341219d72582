//! What every handler shares: the options, the served models (their encoders), the batcher,
//! the metrics and the admission permits.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::engine::Encoder;
use crate::error::{ApiError, Kind};
use crate::metrics::Metrics;
use crate::options::ServeOptions;

/// One served model: its name, its place in the batcher's queues, its encoder.
pub struct ServedModel {
    pub name: String,
    /// Index of its queue in the batcher (and of its engine on each worker).
    pub index: usize,
    pub encoder: Encoder,
}

/// What every handler shares.
pub struct AppState {
    pub opts: ServeOptions,
    /// The served models; the first is the default of the routes without `/models/NAME`.
    pub models: Vec<Arc<ServedModel>>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    /// One permit per HTTP inference request in flight.
    pub permits: Arc<Semaphore>,
    /// Model loaded and warmed up, not draining.
    pub ready: AtomicBool,
}

impl AppState {
    /// The default model (the first `--model`).
    pub fn default_model(&self) -> &Arc<ServedModel> {
        &self.models[0]
    }

    /// The model served as `name`, or a 404 listing the names.
    pub fn model(&self, name: &str) -> Result<&Arc<ServedModel>, ApiError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                Kind::NotFound,
                format!("model `{name}` is not served here; served: {names:?}"),
            )
            .with_param("model")
        })
    }

    /// Ready: loaded, not draining, and at least one device left in the rotation.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.batcher.live_workers() > 0
    }
}
