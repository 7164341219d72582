//! The PTX emulator's own speed on whole forward passes: the bundled all-MiniLM-L6-v2 (1 x 128
//! tokens) in fp16 and int8 on 1 and 2 worker threads, BERT-base's shape (random weights,
//! 1 x 128) in fp16, and for MiniLM one profiled pass per precision: host time per kernel and
//! per instruction class, so a regression shows where it is.
//! Run: `cargo bench -p fusebert --bench emulator_forward` (about a minute on 2 cores).
//! Timings are wall-clock seconds per pass (median of 3 after one warm-up).
use std::time::Instant;

use fusebert::emu::EmulatorOptions;
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::{synthetic, BertModel, Precision};
use fusebert::tokenize::Batch;
use fusebert::Device;

fn model_dir() -> std::path::PathBuf {
    std::env::var_os("FUSEBERT_MODEL")
        .map(Into::into)
        .or_else(fusebert::model::bundled_model_dir)
        .expect("no model: set FUSEBERT_MODEL or run `bash scripts/setup.sh`")
}

fn emulator(threads: usize, profile: bool) -> Device {
    Device::emulator_with(EmulatorOptions { threads, profile, ..Default::default() }).unwrap()
}

/// Median wall seconds of `passes` forward passes after one warm-up.
fn time_passes(bert: &mut DeviceBert, batch: &Batch, passes: usize) -> f64 {
    bert.forward(batch, ForwardOptions::default()).unwrap();
    let mut t: Vec<f64> = (0..passes)
        .map(|_| {
            let start = Instant::now();
            bert.forward(batch, ForwardOptions::default()).unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench` (and test runs pass nothing): run either way, a filter
    // argument naming nothing here skips
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"emulator_forward".contains(a.as_str())) {
        return;
    }
    let minilm = BertModel::load(&model_dir()).unwrap();
    let config = &minilm.config;
    let batch = synthetic::id_batch(config, 1, 128, 0).unwrap();
    println!("emulator forward pass, wall seconds per pass (median of 3), 1 x 128 tokens");
    println!("{:<34} {:>10} {:>10} {:>8}", "model, precision", "1 thread", "2 threads", "speedup");
    for precision in [Precision::F16, Precision::Int8] {
        let secs: Vec<f64> = [1, 2]
            .iter()
            .map(|&threads| {
                let dev = emulator(threads, false);
                let mut bert = fusebert::pipeline::device_model(&dev, &minilm, precision).unwrap();
                time_passes(&mut bert, &batch, 3)
            })
            .collect();
        let name = format!("all-MiniLM-L6-v2, {precision:?}");
        println!("{name:<34} {:>10.3} {:>10.3} {:>7.2}x", secs[0], secs[1], secs[0] / secs[1]);
    }
    let base = synthetic::random_model(&synthetic::shape_config("bert-base").unwrap(), 0);
    let dev = emulator(2, false);
    let mut bert = fusebert::pipeline::device_model(&dev, &base, Precision::F16).unwrap();
    let start = Instant::now();
    bert.forward(&synthetic::id_batch(&base.config, 1, 128, 0).unwrap(), ForwardOptions::default()).unwrap();
    println!("{:<34} {:>10} {:>10.3}", "bert-base shape, F16 (one pass)", "", start.elapsed().as_secs_f64());
    for precision in [Precision::F16, Precision::Int8] {
        let dev = emulator(1, true);
        let mut bert = fusebert::pipeline::device_model(&dev, &minilm, precision).unwrap();
        bert.forward(&batch, ForwardOptions::default()).unwrap();
        let emu = dev.emulator_backend().unwrap();
        emu.take_profile();
        emu.clear_launches();
        bert.forward(&batch, ForwardOptions::default()).unwrap();
        let per_kernel = emu.time_per_kernel();
        println!("\nall-MiniLM-L6-v2 {precision:?}, one profiled pass on 1 thread: host seconds per kernel");
        for (k, n, s) in &per_kernel {
            println!("  {k:<34} {n:>4} launches {s:>8.3} s");
        }
        println!("per instruction class:\n{}", emu.take_profile());
    }
}
