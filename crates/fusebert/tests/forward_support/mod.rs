//! Shared pieces of the device forward-pass tests: devices to run on, random small BERT models,
//! random packed batches, and error measures.
#![allow(dead_code)] // shared by several test binaries; each uses a subset
use fusebert::model::weights::{
    BertWeights, ClassifierHead, EmbeddingWeights, EncoderLayerWeights, HostTensor, LayerNormWeights, Linear,
};
use fusebert::model::{BertConfig, BertModel, HiddenAct};
use fusebert::tokenize::Batch;
use fusebert::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The emulator always; a CUDA GPU too when one opens (one test body, two devices).
pub fn devices() -> Vec<Device> {
    let mut d = vec![Device::emulator().expect("emulator")];
    if let Ok(g) = fusebert_cuda_standin::cuda_device(0) {
        d.push(g);
    }
    d
}

/// Shape of a random model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_pos: usize,
    pub labels: usize,
}

fn tensor(rng: &mut ChaCha8Rng, name: &str, shape: Vec<usize>, center: f32, spread: f32) -> HostTensor {
    let n = shape.iter().product();
    let data = (0..n).map(|_| center + rng.gen_range(-spread..spread)).collect();
    HostTensor::new(name, shape, data)
}

fn linear(rng: &mut ChaCha8Rng, name: &str, out: usize, inp: usize) -> Linear {
    // Uniform(-a, a) with a = sqrt(3 / in): unit-variance outputs for unit-variance inputs,
    // the scale trained BERT layers have.
    let a = (3.0 / inp as f32).sqrt();
    Linear {
        weight: tensor(rng, &format!("{name}.weight"), vec![out, inp], 0.0, a),
        bias: tensor(rng, &format!("{name}.bias"), vec![out], 0.0, 0.1),
    }
}

fn ln(rng: &mut ChaCha8Rng, name: &str, h: usize) -> LayerNormWeights {
    LayerNormWeights {
        gamma: tensor(rng, &format!("{name}.weight"), vec![h], 1.0, 0.2),
        beta: tensor(rng, &format!("{name}.bias"), vec![h], 0.0, 0.1),
    }
}

/// A BERT model with random weights of realistic scale (deterministic in `seed`).
pub fn random_model(s: Shape, seed: u64) -> BertModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = s.hidden;
    let config = BertConfig {
        max_position_embeddings: s.max_pos,
        hidden_act: HiddenAct::Gelu,
        id2label: (0..s.labels).map(|i| (i, format!("label_{i}"))).collect(),
        label2id: (0..s.labels).map(|i| (format!("label_{i}"), i)).collect(),
        ..BertConfig::bert(h, s.layers, s.heads, s.intermediate, s.vocab)
    };
    let embeddings = EmbeddingWeights {
        word: tensor(&mut rng, "word", vec![s.vocab, h], 0.0, 1.0),
        position: tensor(&mut rng, "position", vec![s.max_pos, h], 0.0, 0.3),
        token_type: tensor(&mut rng, "type", vec![2, h], 0.0, 0.3),
        layer_norm: ln(&mut rng, "emb.ln", h),
        projection: None,
    };
    let layers = (0..s.layers)
        .map(|l| EncoderLayerWeights {
            query: linear(&mut rng, &format!("l{l}.q"), h, h),
            key: linear(&mut rng, &format!("l{l}.k"), h, h),
            value: linear(&mut rng, &format!("l{l}.v"), h, h),
            attn_output: linear(&mut rng, &format!("l{l}.o"), h, h),
            attn_layer_norm: ln(&mut rng, &format!("l{l}.ln1"), h),
            ffn1: linear(&mut rng, &format!("l{l}.ffn1"), s.intermediate, h),
            ffn2: linear(&mut rng, &format!("l{l}.ffn2"), h, s.intermediate),
            ffn_layer_norm: ln(&mut rng, &format!("l{l}.ln2"), h),
        })
        .collect();
    let pooler = Some(linear(&mut rng, "pooler", h, h));
    let classifier = (s.labels > 0).then(|| ClassifierHead {
        linear: linear(&mut rng, "classifier", s.labels, h),
        labels: (0..s.labels).map(|i| format!("label_{i}")).collect(),
        kind: fusebert::model::HeadKind::BertPooler,
    });
    BertModel {
        dir: std::path::PathBuf::from("<random>"),
        config,
        weights: BertWeights { embeddings, layers, pooler, classifier },
        sentence: None,
    }
}

/// A batch of random sequences of the given lengths ([CLS]-free random ids; types 0/1).
pub fn random_batch(vocab: usize, lengths: &[usize], seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<Vec<u32>> =
        lengths.iter().map(|&n| (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()).collect();
    let types: Vec<Vec<u32>> = lengths.iter().map(|&n| (0..n).map(|i| u32::from(i >= n / 2)).collect()).collect();
    Batch::new(ids, types).unwrap()
}

pub use fusebert::model::compare::{cosine, max_abs_diff as max_abs};
