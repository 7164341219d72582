//! The device forward pass (fp16 and int8, packed batches) against the f32 CPU reference, on the
//! emulator (and on CUDA when a GPU is present), for random small models.
//!
//! Tolerances: fp16 activations carry a relative rounding error of 2^-11 ≈ 4.9e-4 per stored
//! value; after a few layers of unit-scale hidden states the mean-pooled embedding keeps a
//! cosine >= 0.9999 with the reference. int8 (W8A8, per-channel weights, per-token activations)
//! quantises every GEMM input to 8 bits (~0.4% relative step), so cosine >= 0.995.
mod forward_support;

use forward_support::{cosine, devices, max_abs, random_batch, random_model, Shape};
use fusebert::model::forward::{DeviceBert, ForwardOptions, OutputSelection};
use fusebert::model::reference::{self, Options};
use fusebert::model::Precision;
use fusebert::tokenize::Batch;

const F16_MIN_COS: f64 = 0.9999;
const INT8_MIN_COS: f64 = 0.995;
/// Max abs error of fp16 hidden states vs f32 (unit-scale layernormed states, |x| up to ~6):
/// a few fp16 ulps at that magnitude (measured: <= 6.4e-3).
const F16_MAX_HIDDEN_ERR: f32 = 1.5e-2;

fn shapes() -> Vec<(Shape, &'static [usize])> {
    vec![
        // head_dim 32, one layer; lengths not multiples of any tile
        (
            Shape { hidden: 64, heads: 2, layers: 1, intermediate: 256, vocab: 97, max_pos: 80, labels: 3 },
            &[1, 17, 70, 5],
        ),
        // head_dim 64, two layers
        (Shape { hidden: 128, heads: 2, layers: 2, intermediate: 512, vocab: 101, max_pos: 160, labels: 0 }, &[130, 9]),
        // head_dim 32, three layers, hidden 96 (not a power of two)
        (Shape { hidden: 96, heads: 3, layers: 3, intermediate: 384, vocab: 50, max_pos: 64, labels: 2 }, &[33, 2, 64]),
    ]
}

fn check_precision(precision: Precision, min_cos: f64, calibrated: bool) {
    for dev in devices() {
        for (i, (shape, lengths)) in shapes().into_iter().enumerate() {
            let model = random_model(shape, 100 + i as u64);
            let batch = random_batch(shape.vocab, lengths, 7 + i as u64);
            let (want, states) = reference::forward_with_hidden_states(&model, &batch, &Options::default()).unwrap();
            let mut bert = if calibrated {
                let calibration = random_batch(shape.vocab, &[9, 40], 99);
                DeviceBert::new_calibrated(&dev, &model, precision, &calibration).unwrap()
            } else {
                DeviceBert::new(&dev, &model, precision).unwrap()
            };
            let (got, got_states) = bert.forward(&batch, ForwardOptions::all()).unwrap();
            let got_states = got_states.unwrap();
            assert_eq!(got.sequences.len(), want.sequences.len());
            for (s, (g, w)) in got.sequences.iter().zip(&want.sequences).enumerate() {
                let cos = cosine(&g.pooled, &w.pooled);
                assert!(cos >= min_cos, "{dev:?} {precision:?} shape {i} seq {s}: mean-pooled cosine {cos}");
                let pc = cosine(g.pooler_output.as_ref().unwrap(), w.pooler_output.as_ref().unwrap());
                assert!(pc >= min_cos, "{dev:?} {precision:?} shape {i} seq {s}: pooler cosine {pc}");
                if let (Some(gl), Some(wl)) = (&g.logits, &w.logits) {
                    assert_eq!(gl.len(), shape.labels);
                    let err = max_abs(gl, wl);
                    assert!(err < 0.1, "{dev:?} {precision:?} shape {i} seq {s}: logits err {err}");
                }
            }
            let worst_pooled = got
                .sequences
                .iter()
                .zip(&want.sequences)
                .map(|(g, w)| cosine(&g.pooled, &w.pooled))
                .fold(1.0, f64::min);
            let worst_hidden =
                got_states.layers.iter().zip(&states.layers).map(|(g, w)| max_abs(g, w)).fold(0.0, f32::max);
            eprintln!("{dev:?} {precision:?} calibrated {calibrated} shape {i}: min mean-pooled cosine {worst_pooled:.7}, max hidden err {worst_hidden:.2e}");
            for (l, (g, w)) in got_states.layers.iter().zip(&states.layers).enumerate() {
                let cos = cosine(g, w);
                assert!(cos >= min_cos, "{dev:?} {precision:?} shape {i} layer {l}: hidden cosine {cos}");
                if precision == Precision::F16 {
                    let err = max_abs(g, w);
                    assert!(err <= F16_MAX_HIDDEN_ERR, "{dev:?} shape {i} layer {l}: hidden max err {err}");
                }
            }
        }
    }
}

#[test]
fn f16_forward_matches_reference_on_random_models() {
    check_precision(Precision::F16, F16_MIN_COS, false);
}

#[test]
fn int8_forward_matches_reference_on_random_models() {
    check_precision(Precision::Int8, INT8_MIN_COS, false);
}

/// The SmoothQuant-calibrated int8 path (calibrated on a different random batch).
#[test]
fn int8_calibrated_forward_matches_reference_on_random_models() {
    check_precision(Precision::Int8, INT8_MIN_COS, true);
}

/// A sequence's result does not depend on what it is packed with, and runs repeat bit for bit.
#[test]
fn packing_is_invisible_and_runs_are_bitwise_repeatable() {
    let shape = Shape { hidden: 64, heads: 2, layers: 2, intermediate: 128, vocab: 60, max_pos: 100, labels: 0 };
    let model = random_model(shape, 5);
    let batch = random_batch(shape.vocab, &[23, 90, 4], 11);
    let alone = Batch::new(vec![batch.input_ids[1].clone()], vec![batch.token_type_ids[1].clone()]).unwrap();
    for precision in [Precision::F16, Precision::Int8] {
        for dev in devices() {
            let mut bert = DeviceBert::new(&dev, &model, precision).unwrap();
            let opts = ForwardOptions {
                outputs: OutputSelection { last_hidden_state: true, ..OutputSelection::POOLED },
                normalize: false,
            };
            let (packed, _) = bert.forward(&batch, opts).unwrap();
            let (single, _) = bert.forward(&alone, opts).unwrap();
            let (again, _) = bert.forward(&batch, opts).unwrap();
            assert_eq!(packed.sequences[1].last_hidden_state.len(), 90 * shape.hidden);
            let err = max_abs(&packed.sequences[1].pooled, &single.sequences[0].pooled);
            assert!(err <= 1e-5, "{precision:?}: packed vs alone differ by {err}");
            for (a, b) in packed.sequences.iter().zip(&again.sequences) {
                assert_eq!(a.pooled, b.pooled, "{precision:?}: repeated run differs");
                assert_eq!(a.last_hidden_state, b.last_hidden_state, "{precision:?}: repeated run differs");
            }
        }
    }
}

#[test]
fn empty_batch_gives_empty_output_and_bad_batches_are_typed_errors() {
    let shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 16, labels: 0 };
    let model = random_model(shape, 9);
    let dev = fusebert::Device::emulator().unwrap();
    let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    let (out, _) = bert.forward(&Batch::new(vec![], vec![]).unwrap(), ForwardOptions::default()).unwrap();
    assert!(out.sequences.is_empty());
    let too_long = random_batch(shape.vocab, &[17], 1);
    match bert.forward(&too_long, ForwardOptions::default()) {
        Err(fusebert::Error::InputTooLong { index: 0, tokens: 17, limit: 16 }) => {}
        other => panic!("expected InputTooLong, got {other:?}"),
    }
    let bad_id = Batch::new(vec![vec![1, 60]], vec![vec![0, 0]]).unwrap();
    assert!(matches!(bert.forward(&bad_id, ForwardOptions::default()), Err(fusebert::Error::Input(_))));
}

/// The workspace grows for a larger batch and is reused (no allocation) for smaller ones; the
/// results do not depend on the workspace's history.
#[test]
fn workspace_grows_and_results_do_not_depend_on_it() {
    let shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 100, labels: 0 };
    let model = random_model(shape, 3);
    let small = random_batch(shape.vocab, &[5], 2);
    let large = random_batch(shape.vocab, &[40, 60, 7], 4);
    let dev = fusebert::Device::emulator().unwrap();
    let mut fresh = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    let (want_small, _) = fresh.forward(&small, ForwardOptions::default()).unwrap();
    let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    bert.forward(&small, ForwardOptions::default()).unwrap();
    let (l1, _) = bert.forward(&large, ForwardOptions::default()).unwrap();
    let (s2, _) = bert.forward(&small, ForwardOptions::default()).unwrap();
    assert_eq!(s2.sequences[0].pooled, want_small.sequences[0].pooled);
    assert_eq!(l1.sequences.len(), 3);
}

/// The forward pass is the documented fixed sequence of launches.
#[test]
fn launch_count_is_2_plus_5_per_layer_for_f16_and_3_plus_7_per_layer_for_int8() {
    let shape = Shape { hidden: 64, heads: 2, layers: 2, intermediate: 128, vocab: 60, max_pos: 100, labels: 2 };
    let model = random_model(shape, 3);
    let batch = random_batch(shape.vocab, &[12, 3], 2);
    let dev = fusebert::Device::emulator().unwrap();
    let emu = dev.emulator_backend().unwrap();
    // (layernorms fused into the residual GEMMs)
    for (precision, body) in [(Precision::F16, 2 + 5 * 2), (Precision::Int8, 3 + 7 * 2)] {
        let mut bert = DeviceBert::new(&dev, &model, precision).unwrap();
        emu.clear_launches();
        bert.forward(&batch, ForwardOptions::default()).unwrap();
        let launches = emu.launches();
        // + gather [CLS] + pooler GEMM + classifier GEMM
        assert_eq!(
            launches.len(),
            body + 3,
            "{precision:?}: {:?}",
            launches.iter().map(|l| &l.kernel).collect::<Vec<_>>()
        );
        assert_eq!(bert.launches_per_forward(&batch), body + 3);
        for l in &launches {
            assert_eq!(l.counters.local_load_bytes + l.counters.local_store_bytes, 0, "{} spills", l.kernel);
        }
    }
}

/// The emulator's global traffic for one forward pass against `DeviceBert::minimum_traffic`:
/// every output is written exactly once (stores equal the minimum), and loads are at least the
/// minimum (each weight and activation once) and at most a few times it at this size.
#[test]
fn forward_traffic_stores_each_output_once_and_loads_at_least_the_minimum() {
    let shape = Shape { hidden: 64, heads: 2, layers: 2, intermediate: 128, vocab: 60, max_pos: 100, labels: 2 };
    let model = random_model(shape, 4);
    let batch = random_batch(shape.vocab, &[12, 3, 30], 3);
    let dev = fusebert::Device::emulator().unwrap();
    let emu = dev.emulator_backend().unwrap();
    let calibration = random_batch(shape.vocab, &[9, 20], 5);
    for (precision, calibrated) in [(Precision::F16, false), (Precision::Int8, false), (Precision::Int8, true)] {
        let mut bert = if calibrated {
            DeviceBert::new_calibrated(&dev, &model, precision, &calibration).unwrap()
        } else {
            DeviceBert::new(&dev, &model, precision).unwrap()
        };
        bert.forward(&batch, ForwardOptions::default()).unwrap(); // warm-up (workspace)
        emu.clear_launches();
        bert.forward(&batch, ForwardOptions::default()).unwrap();
        let (mut loads, mut stores) = (0u64, 0u64);
        for l in emu.launches() {
            loads += l.counters.global_load_bytes;
            stores += l.counters.global_store_bytes;
        }
        let min = bert.minimum_traffic(&batch);
        let what = format!("{precision:?} calibrated {calibrated}");
        eprintln!(
            "{what}: loads {loads} = {:.3}x minimum {}, stores {stores} (minimum {})",
            loads as f64 / min.load_bytes as f64,
            min.load_bytes,
            min.store_bytes
        );
        assert_eq!(stores, min.store_bytes, "{what}: stores");
        assert!(
            loads >= min.load_bytes && loads <= 3 * min.load_bytes,
            "{what}: loads {loads} vs minimum {}",
            min.load_bytes
        );
    }
}

use fusebert::device::DeviceBackend;

/// A backend that counts allocations, delegating everything to the emulator.
struct CountingBackend {
    inner: fusebert::device::emulator::EmulatorBackend,
    allocs: std::sync::atomic::AtomicUsize,
}

impl fusebert::device::DeviceBackend for CountingBackend {
    // Through the device trait (the emulator's inherent methods speak its own types).
    fn name(&self) -> String {
        self.inner.name()
    }
    fn alloc(&self, bytes: usize) -> fusebert::Result<u64> {
        self.allocs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        DeviceBackend::alloc(&self.inner, bytes)
    }
    fn free(&self, addr: u64) {
        self.inner.free(addr)
    }
    fn write(&self, dst: u64, src: &[u8]) -> fusebert::Result<()> {
        DeviceBackend::write(&self.inner, dst, src)
    }
    fn read(&self, src: u64, dst: &mut [u8]) -> fusebert::Result<()> {
        DeviceBackend::read(&self.inner, src, dst)
    }
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> fusebert::Result<()> {
        DeviceBackend::memset(&self.inner, dst, byte, bytes)
    }
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &fusebert::LaunchConfig,
        args: &[fusebert::KernelArg],
    ) -> fusebert::Result<()> {
        DeviceBackend::launch(&self.inner, module, kernel, cfg, args)
    }
    fn synchronize(&self) -> fusebert::Result<()> {
        DeviceBackend::synchronize(&self.inner)
    }
    fn load_module(&self, name: &str, ptx: &str) -> fusebert::Result<()> {
        DeviceBackend::load_module(&self.inner, name, ptx)
    }
}

/// After the first pass sized the workspace, passes over batches that fit allocate nothing.
#[test]
fn no_device_allocation_per_forward_pass_after_warm_up() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 100, labels: 2 };
    let model = random_model(shape, 8);
    let backend = Arc::new(CountingBackend {
        inner: fusebert::device::emulator::backend(Default::default()).unwrap(),
        allocs: Default::default(),
    });
    let dev = fusebert::Device::from_backend(backend.clone());
    for precision in [Precision::F16, Precision::Int8] {
        let mut bert = DeviceBert::new(&dev, &model, precision).unwrap();
        bert.forward(&random_batch(shape.vocab, &[40, 30], 1), ForwardOptions::default()).unwrap();
        let after_warm_up = backend.allocs.load(Ordering::Relaxed);
        for (i, lengths) in [&[40usize, 30][..], &[5], &[20, 20], &[69]].iter().enumerate() {
            bert.forward(&random_batch(shape.vocab, lengths, 10 + i as u64), ForwardOptions::default()).unwrap();
        }
        assert_eq!(backend.allocs.load(Ordering::Relaxed), after_warm_up, "{precision:?}: allocated after warm-up");
        // more tokens or more sequences grow the workspace (results checked elsewhere)
        bert.forward(&random_batch(shape.vocab, &[90, 90], 3), ForwardOptions::default()).unwrap();
        assert!(backend.allocs.load(Ordering::Relaxed) > after_warm_up);
    }
}

/// Every kind of output request against the pass asking for everything: what was asked for is
/// bit-identical to it, what was not is empty (`Vec::new()` / `None`); the pooler and the
/// classifier run only when their outputs are asked for (launches = `launches_for`, stores =
/// `minimum_traffic_for`, on the emulator); one host-to-device copy of the packed inputs and
/// exactly the requested bytes back (counted by the device layer, on every device).
#[test]
fn outputs_select_what_runs_and_what_is_read_back() {
    let shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 60, max_pos: 100, labels: 3 };
    let model = random_model(shape, 21);
    let lengths = [13usize, 1, 40];
    let batch = random_batch(shape.vocab, &lengths, 22);
    let (t, b, h) = (54u64, 3u64, shape.hidden as u64);
    let pooler_only = OutputSelection { pooler: true, ..OutputSelection::NONE };
    let hidden_only = OutputSelection { last_hidden_state: true, ..OutputSelection::NONE };
    let everything = OutputSelection { hidden_states: false, ..OutputSelection::ALL };
    // (request, launches of the heads beyond pooling, d2h bytes; fp16 logits padded to 16 labels)
    let cases = [
        (OutputSelection::POOLED, 0, b * h * 4),
        (OutputSelection::LOGITS, 3, b * 16 * 2),
        (pooler_only, 2, b * h * 2),
        (hidden_only, 0, t * h * 2),
        (OutputSelection::NONE, 0, 0),
        (OutputSelection::default(), 3, b * h * 4 + b * 16 * 2),
        (everything, 3, b * h * 4 + b * h * 2 + b * 16 * 2 + t * h * 2),
    ];
    for precision in [Precision::F16, Precision::Int8] {
        for dev in devices() {
            let mut bert = DeviceBert::new(&dev, &model, precision).unwrap();
            let body = bert.launches_for(&batch, OutputSelection::NONE);
            let opts = |outputs| ForwardOptions { normalize: true, outputs };
            let (all, _) = bert.forward(&batch, opts(everything)).unwrap();
            for (outputs, heads, d2h) in cases {
                let what = format!("{dev:?} {precision:?} {outputs:?}");
                if let Some(e) = dev.emulator_backend() {
                    e.clear_launches();
                }
                let before = dev.transfers();
                let (got, states) = bert.forward(&batch, opts(outputs)).unwrap();
                let moved = dev.transfers() - before;
                assert!(states.is_none());
                // one packed upload: ids, positions, token types (t each) and cu_seqlens (b + 1)
                assert_eq!((moved.h2d_copies, moved.h2d_bytes), (1, 4 * (3 * t + b + 1)), "{what}: uploads");
                assert_eq!(moved.d2h_bytes, d2h, "{what}: bytes read back");
                assert_eq!(bert.launches_for(&batch, outputs), body + heads, "{what}");
                if let Some(e) = dev.emulator_backend() {
                    let launches = e.launches();
                    assert_eq!(launches.len(), body + heads, "{what}: launches");
                    let stores: u64 = launches.iter().map(|l| l.counters.global_store_bytes).sum();
                    assert_eq!(stores, bert.minimum_traffic_for(&batch, outputs).store_bytes, "{what}: stores");
                }
                for (s, (g, a)) in got.sequences.iter().zip(&all.sequences).enumerate() {
                    assert_eq!(g.len, lengths[s]);
                    let pick = |want: bool, v: &Vec<f32>| if want { v.clone() } else { Vec::new() };
                    assert_eq!(g.pooled, pick(outputs.pooled, &a.pooled), "{what} seq {s}: pooled");
                    let hidden = pick(outputs.last_hidden_state, &a.last_hidden_state);
                    assert_eq!(g.last_hidden_state, hidden, "{what} seq {s}: last hidden state");
                    let opt = |want: bool, v: &Option<Vec<f32>>| if want { v.clone() } else { None };
                    assert_eq!(g.pooler_output, opt(outputs.pooler, &a.pooler_output), "{what} seq {s}: pooler");
                    assert_eq!(g.logits, opt(outputs.logits, &a.logits), "{what} seq {s}: logits");
                    assert_eq!(g.scores, opt(outputs.logits, &a.scores), "{what} seq {s}: scores");
                }
            }
            // the reference agrees with the everything pass (so the comparisons above compare
            // right answers, not two equal wrong ones)
            let want = reference::forward(&model, &batch, &Options { normalize: true }).unwrap();
            for (g, w) in all.sequences.iter().zip(&want.sequences) {
                assert_eq!(g.last_hidden_state.len(), w.last_hidden_state.len());
                assert!(cosine(&g.pooled, &w.pooled) >= INT8_MIN_COS);
                assert!(cosine(g.logits.as_ref().unwrap(), w.logits.as_ref().unwrap()) >= 0.99);
            }
        }
    }
}

/// A model without a classifier: asking for logits runs neither head and reads nothing back
/// for them (`None`, as the reference); embeddings read back exactly `B * hidden * 4` bytes.
#[test]
fn embedding_model_reads_back_only_the_pooled_embeddings() {
    let shape = Shape { hidden: 96, heads: 3, layers: 1, intermediate: 128, vocab: 60, max_pos: 100, labels: 0 };
    let model = random_model(shape, 23);
    let batch = random_batch(shape.vocab, &[7, 31], 24);
    for dev in devices() {
        let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
        assert_eq!(
            bert.launches_per_forward(&batch),
            bert.launches_for(&batch, OutputSelection::NONE),
            "no pooler by default"
        );
        assert_eq!(
            bert.launches_for(&batch, OutputSelection::ALL),
            bert.launches_for(&batch, OutputSelection::NONE) + 2,
            "gather + pooler"
        );
        for (opts, d2h) in [(ForwardOptions::default(), 2 * 96 * 4), (ForwardOptions::classification(), 0)] {
            let before = dev.transfers();
            let (out, _) = bert.forward(&batch, opts).unwrap();
            let moved = dev.transfers() - before;
            assert_eq!(moved.d2h_bytes, d2h, "{dev:?} {opts:?}");
            assert!(out.sequences.iter().all(|s| s.logits.is_none() && s.pooler_output.is_none()));
        }
    }
}
