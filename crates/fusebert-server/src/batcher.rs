//! The dynamic batcher: one queue per model, shared by every worker (one per device or
//! replica). Each worker is an OS thread that owns its device's [`Engine`]s (one per model) and,
//! each time it is free, takes the next batch: the models are visited round-robin, so a deep
//! backlog on one model cannot starve another, and within a model the oldest queued inputs are
//! packed into one batch (FIFO, up to `max_batch_tokens` tokens and `max_batch_requests` inputs).
//! Whichever worker is free takes the next batch.
//!
//! The queues hold inputs, not requests, so a client's large batch is spread over as many device
//! batches as it needs, and other clients' inputs join the same batches. An input whose client
//! has gone away (disconnect, request timeout: its receiver was dropped) is skipped before it
//! reaches a device. Enqueueing never blocks and never fails: admission control (429) happens
//! before, in the HTTP layer, so there is no full-channel panic path.
//!
//! A worker whose device fails (a CUDA error: the driver's errors are sticky) leaves the
//! rotation; its batch goes back to the front of the queue to be retried once on another worker
//! (an input that fails twice gets the error). When no worker is left, queued and new inputs
//! are answered with the error at once. Every input is answered exactly once.
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::engine::{Backend, Engine, Tokens};
use crate::metrics::Metrics;
use fusebert::model::forward::OutputSelection;
use fusebert::model::reference::SequenceOutput;

/// What one input gets back: its outputs, or the batch's error message.
pub type Reply = Result<SequenceOutput, String>;

/// One queued input.
struct Job {
    tokens: Tokens,
    /// What its request reads from the output (a batch reads back the union).
    wanted: OutputSelection,
    enqueued: Instant,
    reply: oneshot::Sender<Reply>,
    /// Already ran in a batch whose device failed.
    retried: bool,
}

/// One worker as the queue sees it.
struct WorkerState {
    label: String,
    alive: bool,
}

struct Queues {
    /// One FIFO per model.
    models: Vec<VecDeque<Job>>,
    /// The model the round-robin visits first next time.
    cursor: usize,
    workers: Vec<WorkerState>,
    closed: bool,
    /// Why the last worker left, for inputs that arrive after.
    last_failure: Option<String>,
}

impl Queues {
    fn live(&self) -> usize {
        self.workers.iter().filter(|w| w.alive).count()
    }
}

/// Limits of one device batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
    metrics: Arc<Metrics>,
    /// Model names, for metric labels.
    model_names: Vec<String>,
    limits: BatchLimits,
}

/// The handle the HTTP layer enqueues through; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

/// A worker's device, as `cuda:0`, `emu:1`, `cpu:0` in metrics and `/info`.
pub fn device_label(backend: Backend, replica: usize) -> String {
    match backend {
        Backend::Cuda(n) => format!("cuda:{n}"),
        Backend::Emulator => format!("emu:{replica}"),
        Backend::Cpu => format!("cpu:{replica}"),
    }
}

/// Whether an error means the device itself is gone (CUDA errors are sticky: every later call
/// on the context fails too), rather than something about the batch.
fn device_failed(e: &fusebert::Error) -> bool {
    matches!(e, fusebert::Error::Cuda { .. })
}

fn lock(m: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Batcher {
    /// A batcher for `model_names` (one queue each) with no worker yet.
    pub fn new(model_names: Vec<String>, limits: BatchLimits, metrics: Arc<Metrics>) -> Batcher {
        let queues = Queues {
            models: model_names.iter().map(|_| VecDeque::new()).collect(),
            cursor: 0,
            workers: Vec::new(),
            closed: false,
            last_failure: None,
        };
        for name in &model_names {
            metrics.add_queue_tokens(name, 0); // the gauge exists from the start
        }
        Batcher {
            shared: Arc::new(Shared { queues: Mutex::new(queues), work: Condvar::new(), metrics, model_names, limits }),
        }
    }

    /// A batcher for one model run by `engine` on one worker (what the tests of the engine use).
    pub fn start(engine: Engine, limits: BatchLimits, metrics: Arc<Metrics>) -> (Batcher, JoinHandle<()>) {
        let b = Batcher::new(vec!["model".into()], limits, metrics);
        let h = b.add_worker("cpu:0".into(), vec![engine]);
        (b, h)
    }

    /// Starts a worker thread owning `engines` (one per model, in the batcher's model order).
    pub fn add_worker(&self, label: String, engines: Vec<Engine>) -> JoinHandle<()> {
        assert_eq!(engines.len(), self.shared.model_names.len(), "one engine per model");
        let id = {
            let mut q = lock(&self.shared.queues);
            q.workers.push(WorkerState { label: label.clone(), alive: true });
            q.workers.len() - 1
        };
        self.shared.metrics.device_up(&label, true);
        let worker = self.clone();
        std::thread::Builder::new()
            .name(format!("fusebert-{label}"))
            .spawn(move || worker.run(id, engines))
            .expect("spawning a batcher thread")
    }

    /// The workers' labels and whether each is still in the rotation.
    pub fn workers(&self) -> Vec<(String, bool)> {
        lock(&self.shared.queues).workers.iter().map(|w| (w.label.clone(), w.alive)).collect()
    }

    /// Workers still in the rotation.
    pub fn live_workers(&self) -> usize {
        lock(&self.shared.queues).live()
    }

    /// Queues one input of model `model` whose request reads `wanted` from its output; the
    /// answer arrives on the returned channel. After [`Batcher::close`] the receiver reports a
    /// closed channel at once; with no worker left it gets the failure.
    pub fn submit(&self, model: usize, tokens: Tokens, wanted: OutputSelection) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let n = tokens.len() as i64;
        let mut q = lock(&self.shared.queues);
        if q.closed {
            return rx; // tx dropped: the caller sees the channel closed
        }
        if q.live() == 0 && !q.workers.is_empty() {
            let why = q.last_failure.clone().unwrap_or_default();
            let _ = tx.send(Err(format!("no device left to run on: {why}")));
            return rx;
        }
        q.models[model].push_back(Job { tokens, wanted, enqueued: Instant::now(), reply: tx, retried: false });
        self.shared.metrics.add_queue_tokens(&self.shared.model_names[model], n);
        drop(q);
        self.shared.work.notify_one();
        rx
    }

    /// Lets the workers finish what is queued, then exit.
    pub fn close(&self) {
        lock(&self.shared.queues).closed = true;
        self.shared.work.notify_all();
    }

    /// Like [`Batcher::close`], but drops what is still queued (the drain ran out of time):
    /// each waiting client's channel closes, which its handler answers with a 503.
    pub fn abort(&self) {
        let mut q = lock(&self.shared.queues);
        q.closed = true;
        let names = &self.shared.model_names;
        let mut dropped = Vec::new();
        for (m, queue) in q.models.iter_mut().enumerate() {
            dropped.extend(queue.drain(..).map(|j| (m, j)));
        }
        drop(q);
        for (m, job) in dropped {
            self.shared.metrics.add_queue_tokens(&names[m], -(job.tokens.len() as i64));
            self.shared.metrics.dropped("shutdown");
        }
        self.shared.work.notify_all();
    }

    fn run(self, id: usize, mut engines: Vec<Engine>) {
        while let Some((model, batch)) = self.next_batch() {
            if !self.execute(id, model, &mut engines[model], batch) {
                break; // the device failed: this worker leaves the rotation
            }
        }
    }

    /// Waits for work and takes the next batch (model by model, round-robin); `None` once
    /// closed and drained.
    fn next_batch(&self) -> Option<(usize, Vec<Job>)> {
        let limits = self.shared.limits;
        let mut q = lock(&self.shared.queues);
        loop {
            let n = q.models.len();
            for k in 0..n {
                let m = (q.cursor + k) % n;
                let batch = self.take(&mut q.models[m], m, limits);
                if !batch.is_empty() {
                    q.cursor = (m + 1) % n;
                    return Some((m, batch));
                }
            }
            if q.closed {
                return None;
            }
            q = self.shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The oldest inputs of one model's queue that fit one batch (cancelled ones dropped).
    fn take(&self, queue: &mut VecDeque<Job>, model: usize, limits: BatchLimits) -> Vec<Job> {
        let name = &self.shared.model_names[model];
        let mut batch = Vec::new();
        let mut tokens = 0;
        while let Some(job) = queue.front() {
            if job.reply.is_closed() {
                let job = queue.pop_front().expect("front exists");
                self.shared.metrics.add_queue_tokens(name, -(job.tokens.len() as i64));
                self.shared.metrics.dropped("cancelled");
                continue;
            }
            let full = batch.len() >= limits.max_batch_requests || tokens + job.tokens.len() > limits.max_batch_tokens;
            // An input alone always fits (the encoder caps lengths at the token budget).
            if full && !batch.is_empty() {
                break;
            }
            let job = queue.pop_front().expect("front exists");
            tokens += job.tokens.len();
            self.shared.metrics.add_queue_tokens(name, -(job.tokens.len() as i64));
            batch.push(job);
        }
        batch
    }

    /// Runs one batch and answers every input (the same error to all if the batch fails).
    /// Returns false when the device failed and this worker must leave the rotation.
    fn execute(&self, id: usize, model: usize, engine: &mut Engine, batch: Vec<Job>) -> bool {
        let shared = &self.shared;
        let name = &shared.model_names[model];
        let now = Instant::now();
        for job in batch.iter().filter(|j| !j.retried) {
            shared.metrics.queued(name, now.duration_since(job.enqueued).as_secs_f64());
        }
        let inputs: Vec<&Tokens> = batch.iter().map(|j| &j.tokens).collect();
        let tokens = inputs.iter().map(|t| t.len()).sum();
        let wanted = batch.iter().fold(OutputSelection::NONE, |w, j| w | j.wanted);
        let label = lock(&shared.queues).workers[id].label.clone();
        match engine.run(&inputs, wanted) {
            Ok(out) => {
                shared.metrics.batch(name, &label, batch.len(), tokens, out.device_seconds);
                for (job, seq) in batch.into_iter().zip(out.sequences) {
                    let _ = job.reply.send(Ok(seq)); // a client that left meanwhile: nothing to do
                }
                true
            }
            Err(e) if device_failed(&e) => {
                let msg = format!("{label}: {e}");
                eprintln!("fusebert serve: device {label} failed and leaves the rotation: {e}");
                shared.metrics.device_failed(&label);
                let mut q = lock(&shared.queues);
                q.workers[id].alive = false;
                q.last_failure = Some(msg.clone());
                let others = q.live() > 0;
                let (retry, give_up): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| others && !j.retried);
                if !retry.is_empty() {
                    shared.metrics.retried(retry.len());
                }
                // Back to the front, in order, for another worker.
                for mut job in retry.into_iter().rev() {
                    job.retried = true;
                    shared.metrics.add_queue_tokens(name, job.tokens.len() as i64);
                    q.models[model].push_front(job);
                }
                // Nobody left: what is queued cannot run either.
                let mut stranded = Vec::new();
                if q.live() == 0 {
                    for (m, queue) in q.models.iter_mut().enumerate() {
                        stranded.extend(queue.drain(..).map(|j| (m, j)));
                    }
                }
                drop(q);
                shared.work.notify_all();
                for job in give_up {
                    let _ = job.reply.send(Err(msg.clone()));
                }
                for (m, job) in stranded {
                    shared.metrics.add_queue_tokens(&shared.model_names[m], -(job.tokens.len() as i64));
                    let _ = job.reply.send(Err(format!("no device left to run on: {msg}")));
                }
                false
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(msg.clone()));
                }
                true
            }
        }
    }
}
