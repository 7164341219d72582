//! Quick end-to-end checks of the emulator on real kernels and small hand-written PTX.
use fusebert::device::{Device, KernelArg, LaunchConfig};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_f16(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(rng.gen_range(-scale..scale))).collect()
}

#[test]
fn embedding_layernorm_matches_cpu() {
    let dev = Device::emulator().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (tokens, hidden, vocab, npos, ntype) = (5usize, 200usize, 30usize, 16usize, 2usize);
    let ids: Vec<u32> = (0..tokens).map(|_| rng.gen_range(0..vocab as u32)).collect();
    let pos_ids: Vec<u32> = (0..tokens as u32).collect();
    let type_ids: Vec<u32> = (0..tokens).map(|_| rng.gen_range(0..ntype as u32)).collect();
    let word = rand_f16(&mut rng, vocab * hidden, 1.0);
    let pos = rand_f16(&mut rng, npos * hidden, 0.5);
    let typ = rand_f16(&mut rng, ntype * hidden, 0.5);
    let gamma: Vec<f16> = (0..hidden).map(|_| f16::from_f32(rng.gen_range(0.5..1.5))).collect();
    let beta = rand_f16(&mut rng, hidden, 0.2);
    let eps = 1e-12f32;
    let b = |v: &[u32]| dev.upload(v).unwrap();
    let h = |v: &[f16]| dev.upload(v).unwrap();
    let (d_ids, d_pos_ids, d_type_ids) = (b(&ids), b(&pos_ids), b(&type_ids));
    let (d_word, d_pos, d_type, d_gamma, d_beta) = (h(&word), h(&pos), h(&typ), h(&gamma), h(&beta));
    let out = dev.alloc_filled::<f16>(tokens * hidden, 0xFF).unwrap();
    let args = [
        KernelArg::from(&d_ids),
        KernelArg::from(&d_pos_ids),
        KernelArg::from(&d_type_ids),
        KernelArg::from(&d_word),
        KernelArg::from(&d_pos),
        KernelArg::from(&d_type),
        KernelArg::from(&d_gamma),
        KernelArg::from(&d_beta),
        KernelArg::from(&out),
        KernelArg::U32(hidden as u32),
        KernelArg::F32(eps),
    ];
    let smem = ((hidden + 32) * 4) as u32;
    dev.launch("embedding_layernorm_f16", LaunchConfig::linear(tokens as u32, 64, smem), &args).unwrap();
    let got = out.to_host().unwrap();
    let mut max_err = 0f32;
    for t in 0..tokens {
        let v: Vec<f32> = (0..hidden)
            .map(|i| {
                word[ids[t] as usize * hidden + i].to_f32() + pos[pos_ids[t] as usize * hidden + i].to_f32() + typ[type_ids[t] as usize * hidden + i].to_f32()
            })
            .collect();
        let mean = v.iter().sum::<f32>() / hidden as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / hidden as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..hidden {
            let want = (v[i] - mean) * rstd * gamma[i].to_f32() + beta[i].to_f32();
            let g = got[t * hidden + i].to_f32();
            let err = (g - want).abs();
            assert!(err <= 2e-3 * want.abs().max(1.0), "token {t} col {i}: got {g} want {want}");
            max_err = max_err.max(err);
        }
    }
    let c = dev.emulator_backend().unwrap().last_counters().unwrap();
    assert!(c.warp_instructions > 0 && c.barriers > 0, "{c:?}");
    eprintln!("max err {max_err}; counters {}", c.to_json());
}

#[test]
fn param_mismatch_is_reported() {
    let dev = Device::emulator().unwrap();
    let e = dev.launch("embedding_layernorm_f16", LaunchConfig::linear(1, 32, 0), &[KernelArg::U32(1)]).unwrap_err();
    assert!(matches!(e, fusebert::Error::KernelArgs { .. }), "{e}");
}

const BENCH_PTX: &str = include_str!("../benches/ptx/bench_kernels.ptx");

/// nvcc-compiled cp.async + ldmatrix + mma.sync GEMM tile against a CPU loop.
#[test]
fn gemm_tile_mma_matches_cpu() {
    let dev = Device::emulator().unwrap();
    dev.load_module("bench", BENCH_PTX).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (m, n, k) = (128usize, 64usize, 96usize);
    let a = rand_f16(&mut rng, m * k, 1.0);
    let b = rand_f16(&mut rng, n * k, 1.0);
    let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
    let c = dev.alloc_filled::<f32>(m * n, 0xFF).unwrap();
    let cfg = LaunchConfig { grid: ((n / 32) as u32, (m / 64) as u32, 1), block: (128, 1, 1), shared_mem_bytes: 0 };
    let args = [KernelArg::from(&da), KernelArg::from(&db), KernelArg::from(&c), KernelArg::I32(m as i32), KernelArg::I32(n as i32), KernelArg::I32(k as i32)];
    dev.launch_in("bench", "gemm_tile_f16", cfg, &args).unwrap();
    let got = c.to_host().unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|kk| a[i * k + kk].to_f32() * b[j * k + kk].to_f32()).sum();
            let g = got[i * n + j];
            assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()), "C[{i}][{j}] = {g}, want {want}");
        }
    }
    let cnt = dev.emulator_backend().unwrap().last_counters().unwrap();
    assert_eq!(cnt.tensor_macs, (m * n * k) as u64);
}

#[test]
fn saxpy_counts_coalesced_traffic() {
    let dev = Device::emulator().unwrap();
    dev.load_module("bench", BENCH_PTX).unwrap();
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
    let (dx, dy) = (dev.upload(&x).unwrap(), dev.upload(&y).unwrap());
    dev.launch_in("bench", "saxpy_f32", LaunchConfig::linear(3, 128, 0), &[KernelArg::from(&dx), KernelArg::from(&dy), KernelArg::F32(2.0), KernelArg::I32(n as i32)]).unwrap();
    let got = dy.to_host().unwrap();
    for i in 0..n {
        assert_eq!(got[i], 2.0 * x[i] + y[i], "y[{i}]");
    }
    let c = dev.emulator_backend().unwrap().last_counters().unwrap();
    // every full warp reads 128 contiguous bytes = 4 sectors
    assert_eq!(c.global_load_bytes, 2 * 4 * n as u64);
    assert!(c.global_load_efficiency() > 0.99, "{}", c.to_json());
}
