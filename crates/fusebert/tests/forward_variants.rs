//! The device forward pass on the model variants of issue 10, against the f32 CPU reference,
//! per layer, on random small models (emulator; CUDA too when present):
//! - RoBERTa-style: positions offset by pad_token_id + 1, one token type, head dim 16,
//!   `gelu_new` (tanh GELU), a RoBERTa classification head (dense + tanh + out_proj);
//! - DistilBERT-style: no token types, head dim 48, ReLU;
//! - ELECTRA-style: embedding_size 32 projected to hidden 160, head dim 80, SiLU;
//! - head dim 112, BERT layout, exact GELU.
//!
//! and every pooling mode on the device (with L2 and with masked prompt tokens), and the
//! sentence-transformers pipeline (`DeviceBert::sentence_embeddings`, Dense on the host); launch
//! counts and stores (= `DeviceBert::minimum_traffic`) per variant.
//! Tolerances are forward_device.rs's: fp16 cosine >= 0.9999 and hidden max abs error
//! <= 1.5e-2 (a few fp16 ulps of |x| ~ 6), int8 cosine >= 0.995; logits of random heads 0.1.
mod forward_support;

use forward_support::{cosine, devices, max_abs, random_model, Shape};
use fusebert::model::forward::{DeviceBert, DevicePooling, ForwardOptions};
use fusebert::model::reference::{self, Options};
use fusebert::model::sentence::{DenseActivation, DenseModule};
use fusebert::model::weights::{HostTensor, Linear};
use fusebert::model::{Architecture, BertModel, HeadKind, HiddenAct, Pooling, Precision, SentenceConfig};
use fusebert::numerics::pooling;
use fusebert::tokenize::Batch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const F16_MIN_COS: f64 = 0.9999;
const INT8_MIN_COS: f64 = 0.995;
const F16_MAX_HIDDEN_ERR: f32 = 1.5e-2;
const MODES: [Pooling; 6] =
    [Pooling::Mean, Pooling::Cls, Pooling::Max, Pooling::MeanSqrtLen, Pooling::WeightedMean, Pooling::LastToken];

/// What a variant changes on top of a random BERT.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    shape: Shape,
    act: HiddenAct,
    /// Position offset (RoBERTa: pad_token_id + 1 = 2).
    offset: usize,
    token_types: bool,
    /// ELECTRA: embedding_size (tables this wide, projected to hidden).
    embedding: Option<usize>,
}

fn variants() -> Vec<Variant> {
    let shape = |hidden, heads, labels| Shape {
        hidden,
        heads,
        layers: 2,
        intermediate: 2 * hidden,
        vocab: 83,
        max_pos: 140,
        labels,
    };
    vec![
        Variant {
            name: "roberta hd16 gelu_tanh",
            shape: shape(64, 4, 3),
            act: HiddenAct::GeluTanh,
            offset: 2,
            token_types: false,
            embedding: None,
        },
        Variant {
            name: "distilbert hd48 relu",
            shape: shape(96, 2, 0),
            act: HiddenAct::Relu,
            offset: 0,
            token_types: false,
            embedding: None,
        },
        Variant {
            name: "electra hd80 silu",
            shape: shape(160, 2, 2),
            act: HiddenAct::Silu,
            offset: 0,
            token_types: true,
            embedding: Some(32),
        },
        Variant {
            name: "bert hd112 gelu",
            shape: shape(112, 1, 0),
            act: HiddenAct::Gelu,
            offset: 0,
            token_types: true,
            embedding: None,
        },
    ]
}

fn tensor(rng: &mut ChaCha8Rng, name: &str, shape: Vec<usize>, center: f32, spread: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(name, shape, (0..n).map(|_| center + rng.gen_range(-spread..spread)).collect())
}

fn linear(rng: &mut ChaCha8Rng, name: &str, out: usize, inp: usize) -> Linear {
    let a = (3.0 / inp as f32).sqrt(); // unit-variance outputs, as in forward_support
    Linear {
        weight: tensor(rng, &format!("{name}.weight"), vec![out, inp], 0.0, a),
        bias: tensor(rng, &format!("{name}.bias"), vec![out], 0.0, 0.1),
    }
}

fn model(v: Variant, seed: u64) -> BertModel {
    let mut m = random_model(v.shape, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
    let (c, w) = (&mut m.config, &mut m.weights);
    c.hidden_act = v.act;
    let e = v.embedding.unwrap_or(v.shape.hidden);
    c.embedding_size = e;
    if v.offset > 0 {
        c.architecture = Architecture::Roberta;
        c.position_offset = v.offset;
        c.pad_token_id = v.offset as u32 - 1;
        c.max_position_embeddings = v.shape.max_pos + v.offset;
    }
    let emb = &mut w.embeddings;
    if let Some(e) = v.embedding {
        c.architecture = Architecture::Electra;
        emb.word = tensor(&mut rng, "word", vec![v.shape.vocab, e], 0.0, 1.0);
        emb.layer_norm.gamma = tensor(&mut rng, "emb.ln.weight", vec![e], 1.0, 0.2);
        emb.layer_norm.beta = tensor(&mut rng, "emb.ln.bias", vec![e], 0.0, 0.1);
        emb.projection = Some(linear(&mut rng, "project", v.shape.hidden, e));
    }
    emb.position = tensor(&mut rng, "position", vec![c.max_position_embeddings, e], 0.0, 0.3);
    emb.token_type = tensor(&mut rng, "type", vec![2, e], 0.0, 0.3);
    if !v.token_types {
        c.has_token_types = false;
        c.type_vocab_size = 1;
        emb.token_type = HostTensor::new("(none)", vec![1, e], vec![0.0; e]);
    }
    if let Some(cl) = &mut w.classifier {
        if v.offset > 0 {
            cl.kind = HeadKind::RobertaDense; // the pooler slot holds classifier.dense
        }
    }
    m
}

fn batch(v: Variant, lengths: &[usize], seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<Vec<u32>> =
        lengths.iter().map(|&n| (0..n).map(|_| rng.gen_range(0..v.shape.vocab as u32)).collect()).collect();
    let types: Vec<Vec<u32>> =
        lengths.iter().map(|&n| (0..n).map(|i| u32::from(v.token_types && i >= n / 2)).collect()).collect();
    Batch::new(ids, types).unwrap().with_position_offset(v.offset as u32)
}

const LENGTHS: [usize; 4] = [1, 17, 100, 6];

fn check(precision: Precision, min_cos: f64) {
    for dev in devices() {
        for (i, v) in variants().into_iter().enumerate() {
            let m = model(v, 40 + i as u64);
            let b = batch(v, &LENGTHS, 50 + i as u64);
            let (want, states) = reference::forward_with_hidden_states(&m, &b, &Options::default()).unwrap();
            let mut bert = DeviceBert::new(&dev, &m, precision).unwrap();
            let (got, got_states) = bert.forward(&b, ForwardOptions::all()).unwrap();
            let what = format!("{dev:?} {precision:?} {}", v.name);
            let mut worst_hidden = 0f32;
            for (l, (g, w)) in got_states.unwrap().layers.iter().zip(&states.layers).enumerate() {
                let cos = cosine(g, w);
                assert!(cos >= min_cos, "{what} layer {l}: hidden cosine {cos}");
                worst_hidden = worst_hidden.max(max_abs(g, w));
                if precision == Precision::F16 {
                    assert!(max_abs(g, w) <= F16_MAX_HIDDEN_ERR, "{what} layer {l}: hidden max err {}", max_abs(g, w));
                }
            }
            let mut worst_logit = 0f32;
            for (s, (g, w)) in got.sequences.iter().zip(&want.sequences).enumerate() {
                let cos = cosine(&g.pooled, &w.pooled);
                assert!(cos >= min_cos, "{what} seq {s}: mean-pooled cosine {cos}");
                assert_eq!(g.logits.is_some(), v.shape.labels > 0, "{what}: classifier presence");
                if let (Some(gl), Some(wl)) = (&g.logits, &w.logits) {
                    worst_logit = worst_logit.max(max_abs(gl, wl));
                    assert!(max_abs(gl, wl) < 0.1, "{what} seq {s}: logits err {}", max_abs(gl, wl));
                }
            }
            eprintln!("{what}: max hidden err {worst_hidden:.2e}, max logit err {worst_logit:.2e}");
            let launches = bert.launches_per_forward(&b);
            if let Some(e) = dev.emulator_backend() {
                e.clear_launches();
                bert.forward(&b, ForwardOptions::default()).unwrap();
                assert_eq!(e.launches().len(), launches, "{what}: launch count");
                // every output written once (stores = the minimum exactly), every input read
                let (loads, stores) = e
                    .launches()
                    .iter()
                    .fold((0, 0), |(l, s), k| (l + k.counters.global_load_bytes, s + k.counters.global_store_bytes));
                let min = bert.minimum_traffic(&b);
                assert_eq!(stores, min.store_bytes, "{what}: stores");
                assert!(loads >= min.load_bytes, "{what}: loads {loads} < minimum {}", min.load_bytes);
            }
        }
    }
}

#[test]
fn f16_variants_match_reference_per_layer() {
    check(Precision::F16, F16_MIN_COS);
}

#[test]
fn int8_variants_match_reference_per_layer() {
    check(Precision::Int8, INT8_MIN_COS);
}

/// Every pooling mode on the device, plain and L2-normalised, with and without masked prompt
/// tokens, against `numerics::pooling` on the reference's last hidden state (fp16).
#[test]
fn every_pooling_mode_on_the_device() {
    let v = variants()[0];
    let m = model(v, 7);
    let b = batch(v, &LENGTHS, 8);
    let h = v.shape.hidden;
    let want = reference::forward(&m, &b, &Options::default()).unwrap();
    for dev in devices() {
        let mut bert = DeviceBert::new(&dev, &m, Precision::F16).unwrap();
        for mode in MODES {
            for (skip, normalize) in [(0, false), (0, true), (3, true)] {
                let opts = ForwardOptions::embeddings(normalize);
                let (got, _) = bert.forward_pooled(&b, opts, DevicePooling { mode, skip }).unwrap();
                for (s, (g, w)) in got.sequences.iter().zip(&want.sequences).enumerate() {
                    let mut r = pooling::pool(&w.last_hidden_state, h, mode, skip);
                    if normalize {
                        pooling::l2_normalize(&mut r);
                    }
                    let cos = cosine(&g.pooled, &r);
                    // the 1-token sequence with skip 3 pools nothing: zeros (mean modes) or -1e9 (max)
                    if skip >= g.len && !matches!(mode, Pooling::Cls | Pooling::LastToken) {
                        assert_eq!(g.pooled, r, "{dev:?} {mode:?} skip {skip} seq {s}: fully masked");
                        continue;
                    }
                    assert!(cos >= F16_MIN_COS, "{dev:?} {mode:?} skip {skip} l2 {normalize} seq {s}: cosine {cos}");
                }
            }
        }
    }
}

/// `DeviceBert::sentence_embeddings` follows a sentence-transformers pipeline: device pooling
/// and Normalize, or device pooling then Dense + Normalize on the host; prompt tokens masked
/// when `include_prompt` is false. Against `SentenceConfig::embed` on the reference states.
#[test]
fn sentence_pipeline_on_the_device() {
    let v = variants()[1];
    let m = model(v, 9);
    let b = batch(v, &[12, 30, 5], 10);
    let h = v.shape.hidden;
    let want = reference::forward(&m, &b, &Options::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dense = DenseModule { linear: linear(&mut rng, "dense", 48, h), activation: DenseActivation::Tanh };
    let cls_norm = SentenceConfig { pooling: Pooling::Cls, normalize: true, ..SentenceConfig::plain() };
    let max_dense =
        SentenceConfig { pooling: Pooling::Max, normalize: true, dense: vec![dense], ..SentenceConfig::plain() };
    let mean_masked = SentenceConfig { include_prompt: false, ..SentenceConfig::plain() };
    for dev in devices() {
        let mut bert = DeviceBert::new(&dev, &m, Precision::F16).unwrap();
        for (name, sc, prompt) in
            [("cls+norm", &cls_norm, 0), ("max+dense+norm", &max_dense, 0), ("mean masked", &mean_masked, 4)]
        {
            let got = bert.sentence_embeddings(&b, sc, prompt).unwrap();
            for (s, (g, w)) in got.iter().zip(&want.sequences).enumerate() {
                let r = sc.embed(&w.last_hidden_state, h, prompt);
                assert_eq!(g.len(), sc.output_dim(h), "{name}: width");
                let cos = cosine(g, &r);
                assert!(cos >= F16_MIN_COS, "{dev:?} {name} seq {s}: cosine {cos}");
            }
        }
    }
}

/// Head dims the attention kernel has no variant for are a typed error at load, naming them.
#[test]
fn unsupported_head_dim_is_a_typed_error() {
    let shape = Shape { hidden: 40, heads: 1, layers: 1, intermediate: 64, vocab: 20, max_pos: 16, labels: 0 };
    let m = random_model(shape, 1);
    let dev = fusebert::Device::emulator().unwrap();
    match DeviceBert::new(&dev, &m, Precision::F16) {
        Err(fusebert::Error::Input(msg)) => assert!(msg.contains("head dim") && msg.contains("40"), "{msg}"),
        Err(e) => panic!("expected Error::Input, got {e:?}"),
        Ok(_) => panic!("expected Error::Input, got a model"),
    }
}
