//! `fusebert serve`: flags (TEI's names and defaults where TEI has the flag, each also read from
//! the environment variable of the same name in UPPER_SNAKE case) -> [`ServeOptions`].
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use fusebert::{Error, Result};
use fusebert_server::auth::ApiKeys;
use fusebert_server::{run_until_signal, ModelSpec, ServeOptions};

use super::forward::{DeviceKind, PrecisionArg};
use super::input;

#[derive(Args)]
pub struct ServeArgs {
    /// Hugging Face model folder, or NAME=DIR to serve it as NAME; repeat to serve several
    /// (the first is the default of TEI's routes; the others at /models/NAME/..., all by the
    /// OpenAI `model` field). Default: $FUSEBERT_MODEL, else the bundled all-MiniLM-L6-v2.
    #[arg(long, env = "MODEL_ID", value_name = "[NAME=]DIR")]
    pub model: Vec<String>,
    /// Where the forward pass runs (cuda: every visible GPU unless --devices).
    #[arg(long, value_enum, env = "DEVICE", default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// CUDA devices to serve on, comma-separated ordinals (default: every visible device; the
    /// driver applies CUDA_VISIBLE_DEVICES first). One engine and batcher per device.
    #[arg(long, env = "FUSEBERT_DEVICES", value_delimiter = ',', value_name = "N,...")]
    pub devices: Vec<usize>,
    /// Workers on --device cpu|emu, each with its own engine, all taking from the same queue.
    #[arg(long, env = "FUSEBERT_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Precision of the device forward pass (cuda/emu; default f16).
    #[arg(long, value_enum, env = "PRECISION")]
    pub precision: Option<PrecisionArg>,
    /// Name reported as `model` (OpenAI replies, /info, /v1/models). Default: the folder name.
    #[arg(long, env = "SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Address to bind: an IP or a resolvable host name.
    #[arg(long, env = "HOSTNAME", default_value = "0.0.0.0")]
    pub hostname: String,
    /// Port (0 picks a free one; the chosen address is printed on stderr).
    #[arg(short, long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Bearer key clients must send (`Authorization: Bearer KEY`); repeat or comma-separate
    /// for several. /health, /ready and /metrics stay open.
    #[arg(long = "api-key", env = "API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// File with one API key per line (blank lines and lines starting with # are skipped).
    #[arg(long, env = "API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// HTTP inference requests handled at once; beyond it: 429 with Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Token budget of one device batch.
    #[arg(long, env = "MAX_BATCH_TOKENS", default_value_t = 16384)]
    pub max_batch_tokens: usize,
    /// Inputs per device batch (default: no limit besides the token budget).
    #[arg(long, env = "MAX_BATCH_REQUESTS")]
    pub max_batch_requests: Option<usize>,
    /// Inputs per HTTP request (more: 422).
    #[arg(long, env = "MAX_CLIENT_BATCH_SIZE", default_value_t = 32)]
    pub max_client_batch_size: usize,
    /// Request body limit in bytes (more: 413).
    #[arg(long, env = "PAYLOAD_LIMIT", default_value_t = 2_000_000)]
    pub payload_limit: usize,
    /// Default of each request's `truncate`, as TEI's flag (default true since TEI 1.9): cut
    /// inputs past the model's limit; `--auto-truncate false` answers them with TEI's 422
    /// validation error unless the request says `truncate: true`.
    #[arg(long, env = "AUTO_TRUNCATE", default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub auto_truncate: bool,
    /// Seconds a request may take, queueing included (more: 503, its queued work dropped).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 60.0, value_name = "S")]
    pub request_timeout: f64,
    /// Seconds the drain after SIGTERM/SIGINT may take.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_name = "S")]
    pub shutdown_timeout: f64,
    /// One JSON object per log line.
    #[arg(long, env = "JSON_OUTPUT")]
    pub json_output: bool,
}

/// Redacted: the arguments hold API keys, which must never reach a log.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServeArgs {{ model: {:?}, device: {:?}, devices: {:?}, port: {}, api keys: redacted }}",
            self.model, self.device, self.devices, self.port
        )
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let opts = options(a)?;
    run_until_signal(opts)
}

fn options(a: ServeArgs) -> Result<ServeOptions> {
    let mut specs: Vec<ModelSpec> = a.model.iter().map(|m| ModelSpec::parse(m)).collect();
    if specs.is_empty() {
        specs.push(ModelSpec { name: None, dir: input::model_dir(None)? });
    }
    for s in &specs {
        if !s.dir.is_dir() {
            return Err(Error::Input(format!("--model {}: not a folder", s.dir.display())));
        }
    }
    let addr = bind_addr(&a.hostname, a.port)?;
    let mut keys = a.api_keys;
    if let Some(f) = &a.api_key_file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
        if keys.is_empty() {
            return Err(Error::Input(format!("--api-key-file {}: no key in the file", f.display())));
        }
    }
    let (backend, precision) = super::forward::backend(a.device, a.precision)?;
    let mut o = ServeOptions::new(specs[0].dir.clone(), addr);
    o.models = specs;
    o.replicas = a.replicas;
    o.devices = match (a.device, a.devices.is_empty()) {
        (DeviceKind::Cuda, true) => Some((0..fusebert::kernels::device::cuda::device_count()?).collect()),
        (_, true) => None,
        (_, false) => Some(a.devices),
    };
    o.served_model_name = a.served_model_name;
    o.backend = backend;
    o.precision = precision;
    o.api_keys = ApiKeys::new(&keys);
    o.max_concurrent_requests = a.max_concurrent_requests;
    o.max_batch_tokens = a.max_batch_tokens;
    o.max_batch_requests = a.max_batch_requests.unwrap_or(usize::MAX);
    o.max_client_batch_size = a.max_client_batch_size;
    o.payload_limit = a.payload_limit;
    o.auto_truncate = a.auto_truncate;
    o.request_timeout = seconds("--request-timeout", a.request_timeout)?;
    o.shutdown_timeout = seconds("--shutdown-timeout", a.shutdown_timeout)?;
    o.json_output = a.json_output;
    Ok(o)
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| Error::Input(format!("{flag} must be a non-negative number, got {s}")))
}

/// An IP, or a host name resolved once (`localhost`, a container's name).
fn bind_addr(host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Input(format!("--hostname {host}: not an IP address and does not resolve")))
}
