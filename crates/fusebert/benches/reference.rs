//! CPU reference forward pass of the bundled all-MiniLM-L6-v2: one sequence of 128 tokens,
//! and a batch of 8 x 128. Run: `cargo bench --bench reference`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use fusebert::model::reference::{forward, Options};
use fusebert::model::BertModel;
use fusebert::tokenize::{Batch, Tokenizer};

fn model_dir() -> std::path::PathBuf {
    std::env::var_os("FUSEBERT_MODEL")
        .map(Into::into)
        .or_else(fusebert::model::bundled_model_dir)
        .expect("no model: set FUSEBERT_MODEL or run `bash scripts/setup.sh`")
}

/// A real text cut to exactly `tokens` tokens ([CLS] ... [SEP]).
fn batch_of(tok: &Tokenizer, tokens: usize, copies: usize) -> Batch {
    let text = "Transformer encoders such as BERT read an entire sentence at once and build a \
                contextual representation for every token. "
        .repeat(16);
    let one = tok.encode_batch(&[text], true).unwrap();
    let mut ids = one.input_ids[0][..tokens - 1].to_vec();
    ids.push(102);
    Batch::from_ids(vec![ids; copies]).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = model_dir();
    let model = BertModel::load(&dir).unwrap();
    let tok = Tokenizer::for_model(&model).unwrap();
    let mut g = c.benchmark_group("reference_forward");
    g.sample_size(20);
    for copies in [1usize, 8] {
        let batch = batch_of(&tok, 128, copies);
        g.throughput(Throughput::Elements(batch.total_tokens() as u64));
        g.bench_function(format!("minilm_{copies}x128"), |b| {
            b.iter(|| forward(&model, &batch, &Options::default()).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
