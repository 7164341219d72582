//! The dynamic batcher: one OS thread owns the [`Engine`] and, each time the device is free,
//! packs the oldest queued inputs into one batch (FIFO, up to `max_batch_tokens` tokens and
//! `max_batch_requests` inputs), runs it and answers each input on its own channel.
//!
//! The queue holds inputs, not requests, so a client's large batch is spread over as many device
//! batches as it needs, and other clients' inputs join the same batches. An input whose client
//! has gone away (disconnect, request timeout: its receiver was dropped) is skipped before it
//! reaches the device. Enqueueing never blocks and never fails: admission control (429) happens
//! before, in the HTTP layer, so there is no full-channel panic path.
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::engine::{Engine, Tokens};
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
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Limits of one device batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
}

/// The handle the HTTP layer enqueues through; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<(Mutex<State>, Condvar)>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the batcher thread with `engine`.
    pub fn start(engine: Engine, limits: BatchLimits, metrics: Arc<Metrics>) -> (Batcher, JoinHandle<()>) {
        let batcher = Batcher { shared: Arc::default(), metrics };
        let worker = batcher.clone();
        let handle = std::thread::Builder::new()
            .name("fusebert-batcher".into())
            .spawn(move || worker.run(engine, limits))
            .expect("spawning the batcher thread");
        (batcher, handle)
    }

    /// Queues one input whose request reads `wanted` from its output; the answer arrives on the
    /// returned channel. After [`Batcher::close`] the receiver reports a closed channel at once.
    pub fn submit(&self, tokens: Tokens, wanted: OutputSelection) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let n = tokens.len() as i64;
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return rx; // tx dropped: the caller sees the channel closed
        }
        st.jobs.push_back(Job { tokens, wanted, enqueued: Instant::now(), reply: tx });
        self.metrics.add_queue_tokens(n);
        drop(st);
        cv.notify_one();
        rx
    }

    /// Lets the thread finish what is queued, then exit.
    pub fn close(&self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        cv.notify_all();
    }

    /// Like [`Batcher::close`], but drops what is still queued (the drain ran out of time):
    /// each waiting client's channel closes, which its handler answers with a 503.
    pub fn abort(&self) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        for job in st.jobs.drain(..) {
            self.metrics.add_queue_tokens(-(job.tokens.len() as i64));
            self.metrics.dropped("shutdown");
        }
        drop(st);
        cv.notify_all();
    }

    fn run(self, mut engine: Engine, limits: BatchLimits) {
        while let Some(batch) = self.next_batch(limits) {
            self.execute(&mut engine, batch);
        }
    }

    /// Waits for work and takes the next batch; `None` once closed and drained.
    fn next_batch(&self, limits: BatchLimits) -> Option<Vec<Job>> {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut batch = Vec::new();
            let mut tokens = 0;
            while let Some(job) = st.jobs.front() {
                if job.reply.is_closed() {
                    let job = st.jobs.pop_front().expect("front exists");
                    self.metrics.add_queue_tokens(-(job.tokens.len() as i64));
                    self.metrics.dropped("cancelled");
                    continue;
                }
                let full =
                    batch.len() >= limits.max_batch_requests || tokens + job.tokens.len() > limits.max_batch_tokens;
                // An input alone always fits (the encoder caps lengths at the token budget).
                if full && !batch.is_empty() {
                    break;
                }
                let job = st.jobs.pop_front().expect("front exists");
                tokens += job.tokens.len();
                self.metrics.add_queue_tokens(-(job.tokens.len() as i64));
                batch.push(job);
            }
            if !batch.is_empty() {
                return Some(batch);
            }
            if st.closed {
                return None;
            }
            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs one batch and answers every input (the same error to all if the batch fails).
    fn execute(&self, engine: &mut Engine, batch: Vec<Job>) {
        let now = Instant::now();
        for job in &batch {
            self.metrics.queued(now.duration_since(job.enqueued).as_secs_f64());
        }
        let inputs: Vec<&Tokens> = batch.iter().map(|j| &j.tokens).collect();
        let tokens = inputs.iter().map(|t| t.len()).sum();
        let wanted = batch.iter().fold(OutputSelection::NONE, |w, j| w | j.wanted);
        match engine.run(&inputs, wanted) {
            Ok(out) => {
                self.metrics.batch(batch.len(), tokens, out.device_seconds);
                for (job, seq) in batch.into_iter().zip(out.sequences) {
                    let _ = job.reply.send(Ok(seq)); // a client that left meanwhile: nothing to do
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}
