//! What the server is configured with: the CLI's flags, TEI's defaults.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fusebert::model::Precision;
use fusebert::{Backend, Error, Result};

use crate::auth::ApiKeys;

/// One served model: a folder and the name it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name clients select it by (OpenAI `model`, `/models/NAME/...`); default: the folder
    /// name (`--served-model-name` for the first model).
    pub name: Option<String>,
    pub dir: PathBuf,
}

impl ModelSpec {
    /// Parses `--model`: `NAME=DIR` or a bare `DIR` (named after the folder).
    pub fn parse(arg: &str) -> ModelSpec {
        match arg.split_once('=') {
            Some((name, dir)) if !name.is_empty() && !name.contains('/') && !dir.is_empty() => {
                ModelSpec { name: Some(name.to_string()), dir: PathBuf::from(dir) }
            }
            _ => ModelSpec { name: None, dir: PathBuf::from(arg) },
        }
    }
}

/// Everything the server is configured with (the CLI's flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The models, the first one the default (TEI's routes without `/models/NAME`).
    pub models: Vec<ModelSpec>,
    /// `model` in OpenAI replies and `/info` for the first model; default: its name.
    pub served_model_name: Option<String>,
    /// The kind of device (`Cuda(n)`: device n alone unless `devices` is set).
    pub backend: Backend,
    /// CUDA devices to use, one engine and batcher each (`--devices`); `None`: the one of
    /// `backend`.
    pub devices: Option<Vec<usize>>,
    /// Workers on `--device cpu|emu`, each with its own engine (`--replicas`).
    pub replicas: usize,
    pub precision: Precision,
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    pub api_keys: ApiKeys,
    /// HTTP inference requests handled at once; one more is a 429.
    pub max_concurrent_requests: usize,
    /// Token budget of one device batch.
    pub max_batch_tokens: usize,
    /// Inputs per device batch.
    pub max_batch_requests: usize,
    /// Inputs per HTTP request.
    pub max_client_batch_size: usize,
    /// Request body limit, bytes.
    pub payload_limit: usize,
    /// Default of each request's `truncate` (TEI's `--auto-truncate`).
    pub auto_truncate: bool,
    pub request_timeout: Duration,
    /// How long the drain after SIGTERM may take.
    pub shutdown_timeout: Duration,
    pub json_output: bool,
    /// Write one log line per request to stderr.
    pub log_requests: bool,
}

impl ServeOptions {
    /// TEI's defaults for `model` on the CPU reference, bound to `addr`.
    pub fn new(model: PathBuf, addr: SocketAddr) -> ServeOptions {
        ServeOptions {
            models: vec![ModelSpec { name: None, dir: model }],
            served_model_name: None,
            backend: Backend::Cpu,
            devices: None,
            replicas: 1,
            precision: Precision::F16,
            addr,
            api_keys: ApiKeys::default(),
            max_concurrent_requests: 512,
            max_batch_tokens: 16384,
            max_batch_requests: usize::MAX,
            max_client_batch_size: 32,
            payload_limit: 2_000_000,
            auto_truncate: true,
            request_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            json_output: false,
            log_requests: true,
        }
    }

    /// Adds a model served as `name`.
    pub fn with_model(mut self, name: &str, dir: PathBuf) -> ServeOptions {
        self.models.push(ModelSpec { name: Some(name.to_string()), dir });
        self
    }

    /// The backend of each worker: one per CUDA device, or `replicas` on the CPU / emulator.
    pub fn workers(&self) -> Vec<Backend> {
        match (self.backend, &self.devices) {
            (Backend::Cuda(_), Some(d)) => d.iter().map(|&n| Backend::Cuda(n)).collect(),
            (Backend::Cuda(n), None) => vec![Backend::Cuda(n)],
            (b, _) => vec![b; self.replicas],
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let positive = [
            ("--max-concurrent-requests", self.max_concurrent_requests),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-requests", self.max_batch_requests),
            ("--max-client-batch-size", self.max_client_batch_size),
            ("--payload-limit", self.payload_limit),
            ("--replicas", self.replicas),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(Error::Input(format!("{flag} must be at least 1, got 0")));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Input("--request-timeout must be positive".into()));
        }
        if self.models.is_empty() {
            return Err(Error::Input("no --model to serve".into()));
        }
        if let Some(d) = &self.devices {
            if d.is_empty() {
                return Err(Error::Input("--devices: no device listed".into()));
            }
            let mut seen = d.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != d.len() {
                return Err(Error::Input(format!("--devices {d:?}: a device is listed twice")));
            }
            if !matches!(self.backend, Backend::Cuda(_)) {
                return Err(Error::Input("--devices applies to --device cuda (use --replicas for cpu|emu)".into()));
            }
        }
        if self.replicas > 1 && matches!(self.backend, Backend::Cuda(_)) {
            return Err(Error::Input("--replicas applies to --device cpu|emu (use --devices for cuda)".into()));
        }
        Ok(())
    }
}
