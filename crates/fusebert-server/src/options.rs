//! What the server is configured with: the CLI's flags, TEI's defaults.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fusebert::model::Precision;
use fusebert::{Backend, Error, Result};

use crate::auth::ApiKeys;

/// Everything the server is configured with (the CLI's flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: PathBuf,
    /// `model` in OpenAI replies and `/info`; default: the folder name.
    pub served_model_name: Option<String>,
    pub backend: Backend,
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
    /// Default of each request's `truncate`.
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
            model,
            served_model_name: None,
            backend: Backend::Cpu,
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

    pub(crate) fn check(&self) -> Result<()> {
        let positive = [
            ("--max-concurrent-requests", self.max_concurrent_requests),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-requests", self.max_batch_requests),
            ("--max-client-batch-size", self.max_client_batch_size),
            ("--payload-limit", self.payload_limit),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(Error::Input(format!("{flag} must be at least 1, got 0")));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Input("--request-timeout must be positive".into()));
        }
        Ok(())
    }
}
