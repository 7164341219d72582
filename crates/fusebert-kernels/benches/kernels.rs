//! Fast vs simple kernels (criterion). On a GPU (`Device::cuda(0)` opens) this times the real
//! kernels at BERT-base shapes; otherwise it times the PTX emulator at small shapes, which
//! measures emulation cost, not GPU speed (use `fusebert kernels report` counters for that).
use criterion::{criterion_group, criterion_main, Criterion};
use fusebert_kernels::Device;
use fusebert_kernels::{self, Epilogue, Variant};
use half::f16;

fn data_f16(n: usize) -> Vec<f16> {
    (0..n).map(|i| f16::from_f32(((i * 7919 % 1000) as f32 / 500.0) - 1.0)).collect()
}
fn data_i8(n: usize) -> Vec<i8> {
    (0..n).map(|i| ((i * 7919 % 255) as i32 - 127) as i8).collect()
}

fn bench(c: &mut Criterion) {
    let (dev, tokens) = match fusebert_cuda_standin::cuda_device(0) {
        Ok(d) => (d, 4096usize),
        Err(_) => (
            Device::emulator_with(fusebert_kernels::device::emulator::EmulatorOptions {
                sanitize: false,
                ..Default::default()
            })
            .unwrap(),
            64usize,
        ),
    };
    let tag = if dev.is_emulator() { "emu" } else { "gpu" };
    let (h, ffn) = (768usize, 3072usize);
    let mut g = c.benchmark_group(format!("kernels-{tag}"));
    g.sample_size(10);

    let x = dev.upload(&data_f16(tokens * h)).unwrap();
    let gamma = dev.upload(&data_f16(h)).unwrap();
    let mut y = dev.alloc::<f16>(tokens * h).unwrap();
    for v in [Variant::Fast, Variant::Simple] {
        g.bench_function(format!("layernorm_{v:?}_{tokens}x{h}"), |b| {
            b.iter(|| {
                fusebert_kernels::layernorm_f16(
                    &dev,
                    &fusebert_kernels::LayerNormF16 {
                        x: &x,
                        residual: Some(&x),
                        bias: Some(&gamma),
                        gamma: &gamma,
                        beta: &gamma,
                        rows: tokens,
                        hidden: h,
                        eps: 1e-12,
                    },
                    &mut y,
                    None,
                    v,
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }

    let a8 = dev.upload(&data_i8(tokens * h)).unwrap();
    let w8 = dev.upload(&data_i8(ffn * h)).unwrap();
    let asc = dev.upload(&vec![0.01f32; tokens]).unwrap();
    let wsc = dev.upload(&vec![0.01f32; ffn]).unwrap();
    let bias = dev.upload(&data_f16(ffn)).unwrap();
    let mut c8 = dev.alloc::<f16>(tokens * ffn).unwrap();
    for v in [Variant::Fast, Variant::Simple] {
        g.bench_function(format!("gemm_int8_gelu_{v:?}_{tokens}x{ffn}x{h}"), |b| {
            b.iter(|| {
                fusebert_kernels::gemm_int8(
                    &dev,
                    &fusebert_kernels::GemmInt8 {
                        a: &a8,
                        a_scale: &asc,
                        zero_point: None,
                        w: &w8,
                        w_scale: &wsc,
                        bias: Some(&bias),
                        epilogue: Epilogue::Gelu,
                        shape: fusebert_kernels::GemmShape { m: tokens, n: ffn, k: h },
                    },
                    &mut c8,
                    fusebert_kernels::GemmLaunch::variant(v),
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    let w16 = dev.upload(&data_f16(ffn * h)).unwrap();
    for v in [Variant::Fast, Variant::Simple] {
        g.bench_function(format!("gemm_f16_gelu_{v:?}_{tokens}x{ffn}x{h}"), |b| {
            b.iter(|| {
                fusebert_kernels::gemm_f16(
                    &dev,
                    &fusebert_kernels::GemmF16 {
                        a: &x,
                        w: &w16,
                        bias: Some(&bias),
                        epilogue: Epilogue::Gelu,
                        shape: fusebert_kernels::GemmShape { m: tokens, n: ffn, k: h },
                    },
                    &mut c8,
                    fusebert_kernels::GemmLaunch::variant(v),
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }

    let seq = tokens.min(512);
    let batch = tokens / seq;
    let qkv = dev.upload(&data_f16(tokens * 3 * h)).unwrap();
    let cu: Vec<u32> = (0..=batch as u32).map(|i| i * seq as u32).collect();
    let dcu = dev.upload(&cu).unwrap();
    let shape =
        fusebert_kernels::AttentionShape { batch, tokens, max_seqlen: seq, heads: 12, head_dim: 64, scale: None };
    for v in [Variant::Fast, Variant::Simple] {
        g.bench_function(format!("attention_d64_{v:?}_{batch}x{seq}"), |b| {
            b.iter(|| {
                fusebert_kernels::attention(
                    &dev,
                    &qkv,
                    &dcu,
                    &mut y,
                    shape,
                    fusebert_kernels::AttentionLaunch { variant: v, ..Default::default() },
                )
                .unwrap();
                dev.synchronize().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
