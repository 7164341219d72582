//! `fusebert serve`: an HTTP embedding server with TEI's API and OpenAI's `/v1/embeddings`.
//!
//! Layout, bottom up (each module uses only those before it): [`options`] (the flags),
//! [`error`] (JSON error bodies), [`auth`], [`metrics`], [`engine`] (the one place that knows
//! the model: tokenisation and limits, the forward pass through the library's `Pipeline`),
//! [`batcher`] (the thread that owns the device and packs queued inputs into batches),
//! [`state`] (what handlers share), [`extract`] (reading requests, admission, deadlines,
//! inference: what every handler does), the handlers [`routes`] (TEI) and [`openai`], and
//! [`http`] (the router: request ids, logs, metrics and auth around every route).
//!
//! A request's life: admission (`--max-concurrent-requests` per HTTP request, else 429 with
//! `Retry-After`), body read under `--payload-limit`, tokenisation on the request's task, one
//! queue entry per input, the batcher runs them in packed batches, the handler gathers the
//! answers; the whole request is bounded by `--request-timeout` (503, queued inputs dropped).
pub mod auth;
pub mod batcher;
pub mod engine;
pub mod error;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod openai;
pub mod options;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use batcher::{BatchLimits, Batcher};
pub use engine::Backend;
use engine::{Encoder, Engine, Input};
use fusebert::model::BertModel;
use fusebert::{Error, Result};
use metrics::Metrics;
pub use options::ServeOptions;
pub use state::AppState;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    /// The accept loop; `Ok(true)` when the drain ran past `--shutdown-timeout`.
    task: tokio::task::JoinHandle<std::io::Result<bool>>,
    batcher_thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Loads the model, warms it up, binds and starts serving (on the current tokio runtime).
    pub async fn start(opts: ServeOptions) -> Result<Server> {
        opts.check()?;
        let metrics = Arc::new(Metrics::default());
        let load_opts = opts.clone();
        let m = metrics.clone();
        let (encoder, batcher, batcher_thread) = tokio::task::spawn_blocking(move || load(&load_opts, m))
            .await
            .map_err(|e| Error::Other(format!("model loading task: {e}")))??;
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| Error::Other(format!("cannot bind {}: {e}", opts.addr)))?;
        let addr = listener.local_addr().map_err(|e| Error::Other(format!("local address: {e}")))?;
        let permits = Arc::new(Semaphore::new(opts.max_concurrent_requests));
        let state = Arc::new(AppState { opts, encoder, batcher, metrics, permits, ready: AtomicBool::new(true) });
        let (stop, mut stopped) = watch::channel(false);
        let app = http::router(state.clone());
        let drain = state.opts.shutdown_timeout;
        let mut stopped2 = stopped.clone();
        let task = tokio::spawn(async move {
            let graceful = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            tokio::select! {
                r = std::future::IntoFuture::into_future(graceful) => r.map(|()| false),
                _ = async move {
                    let _ = stopped2.wait_for(|s| *s).await;
                    tokio::time::sleep(drain).await;
                } => {
                    eprintln!("fusebert serve: drain took longer than --shutdown-timeout; stopping");
                    Ok(true)
                }
            }
        });
        Ok(Server { addr, state, stop, task, batcher_thread })
    }

    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Flips `/ready` to 503 and stops accepting connections; in-flight requests finish.
    pub fn begin_shutdown(&self) {
        self.state.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// Waits until the server has drained (bounded by `--shutdown-timeout` after
    /// [`Server::begin_shutdown`]), then stops the batcher.
    pub async fn wait(self) -> Result<()> {
        let served = self.task.await.map_err(|e| Error::Other(format!("server task: {e}")))?;
        match served {
            // Out of time: what is queued is not run (at most the running batch finishes).
            Ok(true) => self.state.batcher.abort(),
            _ => self.state.batcher.close(),
        }
        let thread = self.batcher_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        served.map(|_| ()).map_err(|e| Error::Other(format!("server: {e}")))
    }
}

/// Loads the model, builds the encoder, starts the batcher (which opens the device) and warms
/// it up with a short and a longest input.
fn load(opts: &ServeOptions, metrics: Arc<Metrics>) -> Result<(Encoder, Batcher, std::thread::JoinHandle<()>)> {
    let model = BertModel::load(&opts.model)?;
    let mut encoder = Encoder::new(&model, opts.backend, opts.precision, opts.max_batch_tokens)?;
    if let Some(name) = &opts.served_model_name {
        encoder.info_mut().model_id = name.clone();
    }
    let mut engine = Engine::new(model, opts.backend, opts.precision)?;
    let long = "warm ".repeat(encoder.max_input_length());
    let warm: Vec<_> = [Input::Text("warm up".into()), Input::Text(long)]
        .iter()
        .map(|i| encoder.encode(i, true))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Other(format!("warm-up input: {e:?}")))?;
    engine.run(&warm.iter().collect::<Vec<_>>(), fusebert::model::forward::OutputSelection::default())?;
    let limits = BatchLimits { max_batch_tokens: opts.max_batch_tokens, max_batch_requests: opts.max_batch_requests };
    let (batcher, thread) = Batcher::start(engine, limits, metrics);
    Ok((encoder, batcher, thread))
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns (the CLI's `serve`).
pub fn run_until_signal(opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let server = Server::start(opts).await?;
        // Tests and scripts read the port from this line.
        eprintln!("fusebert serve: listening on http://{}", server.addr());
        shutdown_signal().await;
        eprintln!("fusebert serve: shutting down: /ready is 503, draining in-flight requests");
        server.begin_shutdown();
        server.wait().await?;
        eprintln!("fusebert serve: stopped");
        Ok(())
    })
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
