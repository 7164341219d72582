//! The server's engine and batcher read back from the device only what the requests of a batch
//! need (`OutputSelection`, the union over the batch's requests): an `/embed` batch gets the pooled
//! embeddings and no hidden states, an `/embed_all` one the hidden states, `/predict` the logits;
//! each equal (fp16 tolerance) to the CPU reference engine's.
#![allow(unused_imports)] // forward_support re-exports more than this file uses
#[path = "../../fusebert/tests/forward_support/mod.rs"]
mod forward_support;

use std::sync::Arc;

use forward_support::{cosine, random_model, Shape};
use fusebert::model::forward::OutputSelection;
use fusebert::model::Precision;
use fusebert_server::batcher::{BatchLimits, Batcher};
use fusebert_server::engine::{Backend, Engine, Tokens};
use fusebert_server::metrics::Metrics;

const SHAPE: Shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 64, labels: 2 };

fn tokens(n: usize, salt: u32) -> Tokens {
    let ids: Vec<u32> = (0..n as u32).map(|i| (2 + 7 * i + salt) % SHAPE.vocab as u32).collect();
    Tokens { type_ids: vec![0; ids.len()], ids }
}

#[test]
fn the_engine_reads_back_what_the_batch_asks_for() {
    let model = random_model(SHAPE, 31);
    let mut emu = Engine::new(model.clone(), Backend::Emulator, Precision::F16).unwrap();
    let mut cpu = Engine::new(model, Backend::Cpu, Precision::F16).unwrap();
    let (a, b) = (tokens(9, 1), tokens(23, 5));
    let inputs = [&a, &b];
    let want = cpu.run(&inputs, OutputSelection::NONE).unwrap().sequences; // the CPU computes everything
    let hidden = OutputSelection { last_hidden_state: true, ..OutputSelection::NONE };
    for wanted in [OutputSelection::POOLED, OutputSelection::LOGITS, hidden, OutputSelection::POOLED | hidden] {
        let got = emu.run(&inputs, wanted).unwrap().sequences;
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            let what = format!("{wanted:?} seq {s}");
            assert_eq!(g.pooled.is_empty(), !wanted.pooled, "{what}");
            assert_eq!(g.last_hidden_state.is_empty(), !wanted.last_hidden_state, "{what}");
            assert_eq!(g.logits.is_some(), wanted.logits, "{what}");
            assert!(g.pooler_output.is_none(), "{what}: nobody asked for the pooler");
            if wanted.pooled {
                assert!(cosine(&g.pooled, &w.pooled) >= 0.9999, "{what}");
            }
            if wanted.last_hidden_state {
                assert!(cosine(&g.last_hidden_state, &w.last_hidden_state) >= 0.9999, "{what}");
            }
            if let (Some(gl), Some(wl)) = (&g.logits, &w.logits) {
                assert!(gl.iter().zip(wl).all(|(x, y)| (x - y).abs() < 0.05), "{what}: {gl:?} vs {wl:?}");
            }
        }
    }
}

/// Requests wanting different outputs, queued together: each gets what it asked for.
#[test]
fn the_batcher_serves_each_request_what_it_asked_for() {
    let model = random_model(SHAPE, 32);
    let engine = Engine::new(model, Backend::Emulator, Precision::F16).unwrap();
    let limits = BatchLimits { max_batch_tokens: 1000, max_batch_requests: 8 };
    let (batcher, thread) = Batcher::start(engine, limits, Arc::new(Metrics::default()));
    let hidden = OutputSelection { last_hidden_state: true, ..OutputSelection::NONE };
    let asks = [OutputSelection::POOLED, hidden, OutputSelection::LOGITS, OutputSelection::POOLED];
    let rxs: Vec<_> =
        asks.iter().enumerate().map(|(i, &w)| batcher.submit(0, tokens(5 + 3 * i, i as u32), w)).collect();
    for ((i, rx), wanted) in rxs.into_iter().enumerate().zip(asks) {
        let s = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(s.len, 5 + 3 * i);
        if wanted.pooled {
            assert_eq!(s.pooled.len(), SHAPE.hidden, "request {i}");
        }
        if wanted.last_hidden_state {
            assert_eq!(s.last_hidden_state.len(), s.len * SHAPE.hidden, "request {i}");
        }
        if wanted.logits {
            assert_eq!(s.logits.as_ref().map(Vec::len), Some(SHAPE.labels), "request {i}");
        }
    }
    batcher.close();
    thread.join().unwrap();
}
