//! The device forward pass of the bundled all-MiniLM-L6-v2 (one sequence of 128 tokens), fp16
//! and int8: on the PTX emulator always (the emulator's own speed: the end-to-end tests' budget),
//! and on CUDA when a GPU opens (the product's latency). Run: `cargo bench --bench forward`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::{BertModel, Precision};
use fusebert::tokenize::Batch;
use fusebert::Device;

fn model_dir() -> std::path::PathBuf {
    std::env::var_os("FUSEBERT_MODEL")
        .map(Into::into)
        .or_else(fusebert::model::bundled_model_dir)
        .expect("no model: set FUSEBERT_MODEL or run `bash scripts/setup.sh`")
}

/// `copies` sequences of `tokens` ids ([CLS] first, [SEP] last, words in between).
fn batch(tokens: usize, copies: usize) -> Batch {
    let ids: Vec<u32> = (0..tokens)
        .map(|i| match i {
            0 => 101,
            _ if i == tokens - 1 => 102,
            _ => 2000 + (i as u32 * 37) % 5000,
        })
        .collect();
    Batch::from_ids(vec![ids; copies]).unwrap()
}

fn bench(c: &mut Criterion) {
    let model = BertModel::load(&model_dir()).unwrap();
    let mut devices = vec![("emu", Device::emulator().unwrap())];
    if let Ok(gpu) = fusebert_cuda_standin::cuda_device(0) {
        devices.push(("cuda", gpu));
    }
    let mut g = c.benchmark_group("device_forward");
    for (name, dev) in &devices {
        let shapes: &[(usize, usize)] = if *name == "cuda" { &[(128, 1), (128, 32), (512, 8)] } else { &[(128, 1)] };
        g.sample_size(if *name == "cuda" { 50 } else { 10 });
        for precision in [Precision::F16, Precision::Int8] {
            let mut bert = DeviceBert::new(dev, &model, precision).unwrap();
            for &(tokens, copies) in shapes {
                let b = batch(tokens, copies);
                bert.forward(&b, ForwardOptions::default()).unwrap(); // warm-up
                g.throughput(Throughput::Elements(b.total_tokens() as u64));
                g.bench_function(format!("{name}_{precision:?}_minilm_{copies}x{tokens}"), |bn| {
                    bn.iter(|| bert.forward(&b, ForwardOptions::default()).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
