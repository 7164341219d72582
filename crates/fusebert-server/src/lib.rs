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
//! Several models can be served at once (one queue each, one engine per model on each device),
//! on several devices or replicas (one worker thread each, all taking batches from the same
//! queues: whichever is free takes the next batch).
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
pub mod openapi;
pub mod options;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use batcher::{device_label, BatchLimits, Batcher};
pub use engine::Backend;
use engine::{Encoder, Engine, Input};
use fusebert::model::BertModel;
use fusebert::{Error, Result};
use metrics::Metrics;
pub use options::{ModelSpec, ServeOptions};
pub use state::{AppState, ServedModel};

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    /// The accept loop; `Ok(true)` when the drain ran past `--shutdown-timeout`.
    task: tokio::task::JoinHandle<std::io::Result<bool>>,
    worker_threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Loads the model, warms it up, binds and starts serving (on the current tokio runtime).
    pub async fn start(opts: ServeOptions) -> Result<Server> {
        opts.check()?;
        let metrics = Arc::new(Metrics::default());
        let load_opts = opts.clone();
        let m = metrics.clone();
        let (models, batcher, worker_threads) = tokio::task::spawn_blocking(move || load(&load_opts, m))
            .await
            .map_err(|e| Error::Other(format!("model loading task: {e}")))??;
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| Error::Other(format!("cannot bind {}: {e}", opts.addr)))?;
        let addr = listener.local_addr().map_err(|e| Error::Other(format!("local address: {e}")))?;
        let permits = Arc::new(Semaphore::new(opts.max_concurrent_requests));
        let state = Arc::new(AppState { opts, models, batcher, metrics, permits, ready: AtomicBool::new(true) });
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
        Ok(Server { addr, state, stop, task, worker_threads })
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
        let threads = self.worker_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        served.map(|_| ()).map_err(|e| Error::Other(format!("server: {e}")))
    }
}

type Loaded = (Vec<Arc<ServedModel>>, Batcher, Vec<std::thread::JoinHandle<()>>);

/// Loads every model, builds their encoders, and starts one worker per device or replica, each
/// opening its device, uploading every model and warming each up with a short and a longest
/// input (the workers load in parallel; the server starts once all are ready).
fn load(opts: &ServeOptions, metrics: Arc<Metrics>) -> Result<Loaded> {
    let mut loaded = Vec::new();
    for (index, spec) in opts.models.iter().enumerate() {
        let model = BertModel::load(&spec.dir)?;
        let mut encoder = Encoder::new(&model, opts.backend, opts.precision, opts.max_batch_tokens)?;
        let name = match (&spec.name, index) {
            (Some(n), _) => n.clone(),
            (None, 0) => opts.served_model_name.clone().unwrap_or_else(|| encoder.info().model_id.clone()),
            (None, _) => encoder.info().model_id.clone(),
        };
        encoder.info_mut().model_id = name.clone();
        if loaded.iter().any(|(m, _): &(ServedModel, BertModel)| m.name == name) {
            return Err(Error::Input(format!("two models are served as `{name}`: name them (--model NAME=DIR)")));
        }
        loaded.push((ServedModel { name, index, encoder }, model));
    }
    let warm: Vec<Vec<engine::Tokens>> = loaded
        .iter()
        .map(|(m, _)| {
            let long = "warm ".repeat(m.encoder.max_input_length());
            [Input::Text("warm up".into()), Input::Text(long)]
                .iter()
                .map(|i| m.encoder.encode(i, true))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Other(format!("warm-up input of {}: {e:?}", m.name)))
        })
        .collect::<Result<_>>()?;
    let limits = BatchLimits { max_batch_tokens: opts.max_batch_tokens, max_batch_requests: opts.max_batch_requests };
    let names = loaded.iter().map(|(m, _)| m.name.clone()).collect();
    let batcher = Batcher::new(names, limits, metrics);
    let warm = Arc::new(warm);
    // Each worker opens its device and its engines on its own thread, in parallel.
    let openers: Vec<_> = opts
        .workers()
        .into_iter()
        .enumerate()
        .map(|(replica, backend)| {
            let models: Vec<BertModel> = loaded.iter().map(|(_, m)| m.clone()).collect();
            let (warm, precision) = (warm.clone(), opts.precision);
            let label = device_label(backend, replica);
            let h = std::thread::spawn(move || -> Result<Vec<Engine>> {
                let mut engines = Vec::with_capacity(models.len());
                for (model, warm) in models.into_iter().zip(warm.iter()) {
                    let mut engine = Engine::new(model, backend, precision)?;
                    engine
                        .run(&warm.iter().collect::<Vec<_>>(), fusebert::model::forward::OutputSelection::default())?;
                    engines.push(engine);
                }
                Ok(engines)
            });
            (label, h)
        })
        .collect();
    let mut opened = Vec::new();
    for (label, h) in openers {
        let engines = h.join().map_err(|_| Error::Other(format!("{label}: loading panicked")))?;
        opened.push((label, engines?));
    }
    let threads = opened.into_iter().map(|(label, engines)| batcher.add_worker(label, engines)).collect();
    let models = loaded.into_iter().map(|(m, _)| Arc::new(m)).collect();
    Ok((models, batcher, threads))
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
