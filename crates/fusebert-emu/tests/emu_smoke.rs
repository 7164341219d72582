//! Quick end-to-end checks of the emulator on real kernels and small hand-written PTX.
use fusebert_kernels::device::{Device, KernelArg, LaunchConfig};
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
        KernelArg::U32(0), // position offset
    ];
    let smem = ((hidden + 32) * 4) as u32;
    dev.launch("embedding_layernorm_f16_wide", LaunchConfig::linear(tokens as u32, 64, smem), &args).unwrap();
    let got = out.to_host().unwrap();
    let mut max_err = 0f32;
    for t in 0..tokens {
        let v: Vec<f32> = (0..hidden)
            .map(|i| {
                word[ids[t] as usize * hidden + i].to_f32()
                    + pos[pos_ids[t] as usize * hidden + i].to_f32()
                    + typ[type_ids[t] as usize * hidden + i].to_f32()
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
    assert!(matches!(e, fusebert_kernels::Error::KernelArgs { .. }), "{e}");
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
    let args = [
        KernelArg::from(&da),
        KernelArg::from(&db),
        KernelArg::from(&c),
        KernelArg::I32(m as i32),
        KernelArg::I32(n as i32),
        KernelArg::I32(k as i32),
    ];
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
    dev.launch_in(
        "bench",
        "saxpy_f32",
        LaunchConfig::linear(3, 128, 0),
        &[KernelArg::from(&dx), KernelArg::from(&dy), KernelArg::F32(2.0), KernelArg::I32(n as i32)],
    )
    .unwrap();
    let got = dy.to_host().unwrap();
    for i in 0..n {
        assert_eq!(got[i], 2.0 * x[i] + y[i], "y[{i}]");
    }
    let c = dev.emulator_backend().unwrap().last_counters().unwrap();
    // every full warp reads 128 contiguous bytes = 4 sectors
    assert_eq!(c.global_load_bytes, 2 * 4 * n as u64);
    assert!(c.global_load_efficiency() > 0.99, "{}", c.to_json());
}

const SAN_PTX: &str = include_str!("../src/testdata/sanitize_cases.ptx");
const SAN_CU: &str = include_str!("../src/testdata/sanitize_cases.cu");

/// `sanitize_cases.cu:LINE` of the first source line containing `marker`.
fn cu_line(marker: &str) -> String {
    let n = SAN_CU.lines().position(|l| l.contains(marker)).expect("marker in sanitize_cases.cu") + 1;
    format!("sanitize_cases.cu:{n}")
}

fn san_dev(opts: fusebert_kernels::device::emulator::EmulatorOptions) -> Device {
    let dev = Device::emulator_with(opts).unwrap();
    dev.load_module("san", SAN_PTX).unwrap();
    dev
}

fn run_err(kernel: &str, cfg: LaunchConfig, args: &[KernelArg], dev: &Device) -> String {
    match dev.launch_in("san", kernel, cfg, args) {
        Ok(()) => panic!("{kernel}: expected a sanitizer report, the launch succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sanitizer_reports_oob_with_location_and_allocation() {
    let dev = san_dev(Default::default());
    let p = dev.alloc_filled::<f32>(40, 0).unwrap();
    let msg = run_err("oob_store", LaunchConfig::linear(1, 64, 0), &[KernelArg::from(&p), KernelArg::I32(40)], &dev);
    let line = cu_line("p[threadIdx.x] = (float)n;");
    for want in [
        "out-of-bounds",
        "oob_store",
        "block (0,0,0)",
        "thread (40,0,0)",
        "PTX line",
        line.as_str(),
        "past the end of allocation",
        "160 bytes",
    ] {
        assert!(msg.contains(want), "missing `{want}` in: {msg}");
    }
}

#[test]
fn sanitizer_reports_shared_race_uninit_and_hazards() {
    let dev = san_dev(Default::default());
    let out = dev.alloc_filled::<f32>(128, 0).unwrap();
    let a = [KernelArg::from(&out)];
    let msg = run_err("smem_race", LaunchConfig::linear(1, 64, 0), &a, &dev);
    assert!(
        msg.contains("shared-memory race") && msg.contains(&cu_line("s[threadIdx.x] = (float)threadIdx.x;")),
        "{msg}"
    );
    let msg = run_err("smem_uninit", LaunchConfig::linear(1, 64, 0), &a, &dev);
    assert!(msg.contains("uninitialised read") && msg.contains("thread (32,0,0)"), "{msg}");
    let msg = run_err("divergent_barrier", LaunchConfig::linear(1, 32, 0), &a, &dev);
    assert!(msg.contains("divergent barrier"), "{msg}");
    let msg = run_err("shfl_partial", LaunchConfig::linear(1, 32, 0), &a, &dev);
    assert!(msg.contains("partial-warp collective"), "{msg}");
    let bytes = dev.alloc_filled::<u8>(256, 0).unwrap();
    let msg = run_err(
        "misaligned_load",
        LaunchConfig::linear(1, 32, 0),
        &[KernelArg::from(&bytes), KernelArg::from(&out)],
        &dev,
    );
    assert!(msg.contains("misaligned"), "{msg}");
    let inp = dev.upload(&[1.0f32; 32]).unwrap();
    let msg = run_err(
        "cp_async_hazard",
        LaunchConfig::linear(1, 32, 0),
        &[KernelArg::from(&inp), KernelArg::from(&out)],
        &dev,
    );
    assert!(msg.contains("cp.async"), "{msg}");
    let msg = run_err("barrier_deadlock", LaunchConfig::linear(1, 64, 0), &a, &dev);
    assert!(msg.contains("deadlock"), "{msg}");
}

/// A volatile poll of a flag nobody sets: the launch runs co-scheduled (src/exec/resident.rs)
/// and the poll that keeps reading the same value is a deadlock, named with its line, long
/// before any step limit.
#[test]
fn sanitizer_reports_a_poll_nobody_answers_as_a_deadlock() {
    let dev = san_dev(fusebert_kernels::device::emulator::EmulatorOptions { step_limit: 10_000, ..Default::default() });
    let flag = dev.alloc_filled::<i32>(1, 0).unwrap();
    let msg = run_err("spin_forever", LaunchConfig::linear(1, 32, 0), &[KernelArg::from(&flag)], &dev);
    assert!(msg.contains("deadlock") && msg.contains(&cu_line("while (*flag == 0) {")), "{msg}");
}

/// A loop that polls nothing (it only counts) runs until the step limit stops it.
#[test]
fn sanitizer_step_limit_stops_a_runaway_loop() {
    const PTX: &str =
        ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry count_forever(.param .u64 out)\n{\n\
        .reg .b32 %r<2>;\n.reg .b64 %rd<2>;\nld.param.u64 %rd1, [out];\nmov.u32 %r1, 0;\n$L_loop:\n\
        add.u32 %r1, %r1, 1;\nbra.uni $L_loop;\n}\n";
    let dev = Device::emulator_with(fusebert_kernels::device::emulator::EmulatorOptions {
        step_limit: 10_000,
        ..Default::default()
    })
    .unwrap();
    dev.load_module("loop", PTX).unwrap();
    let out = dev.alloc_filled::<u32>(1, 0).unwrap();
    let msg = match dev.launch_in("loop", "count_forever", LaunchConfig::linear(1, 32, 0), &[KernelArg::from(&out)]) {
        Ok(()) => panic!("the runaway loop was NOT stopped"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("step limit"), "{msg}");
}

#[test]
fn sanitizers_off_lets_racy_kernel_run() {
    let dev = san_dev(fusebert_kernels::device::emulator::EmulatorOptions { sanitize: false, ..Default::default() });
    let out = dev.alloc_filled::<f32>(64, 0).unwrap();
    dev.launch_in("san", "smem_race", LaunchConfig::linear(1, 64, 0), &[KernelArg::from(&out)]).unwrap();
}

#[test]
fn early_exit_before_barrier_is_legal() {
    let dev = san_dev(Default::default());
    let n = 45usize;
    let out = dev.alloc_filled::<f32>(128, 0xFF).unwrap();
    dev.launch_in(
        "san",
        "early_exit_barrier",
        LaunchConfig::linear(1, 128, 0),
        &[KernelArg::from(&out), KernelArg::I32(n as i32)],
    )
    .unwrap();
    let got = out.to_host().unwrap();
    for (t, &g) in got.iter().enumerate().take(n) {
        assert_eq!(g, (n - 1 - t) as f32);
    }
    assert!(got[n..].iter().all(|v| v.is_nan()), "threads past n must not write");
}

#[test]
fn divergence_reconverges_before_warp_collectives() {
    let dev = san_dev(Default::default());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<i32> = (0..64).map(|_| rng.gen_range(-50..50)).collect();
    let inp = dev.upload(&x).unwrap();
    let out = dev.alloc_filled::<i32>(64, 0xFF).unwrap();
    dev.launch_in(
        "san",
        "diverge_reconverge",
        LaunchConfig::linear(1, 64, 0),
        &[KernelArg::from(&inp), KernelArg::from(&out)],
    )
    .unwrap();
    let got = out.to_host().unwrap();
    let acc: Vec<i32> = x
        .iter()
        .map(|&x| {
            let mut acc = 0i32;
            if x & 1 != 0 {
                for i in 0..(x & 7) {
                    acc = acc.wrapping_add(i * x);
                }
                if x & 2 != 0 {
                    acc ^= 0x55;
                }
            } else {
                acc = x * 3;
                if x & 4 != 0 {
                    for i in 0..3 {
                        acc -= i;
                    }
                }
            }
            acc
        })
        .collect();
    for w in 0..2 {
        let lanes = &acc[w * 32..w * 32 + 32];
        let ballot: u32 = lanes.iter().enumerate().map(|(l, a)| ((a & 1 != 0) as u32) << l).sum();
        let sum: i32 = lanes.iter().fold(0i32, |s, a| s.wrapping_add(*a));
        for l in 0..32 {
            let want = lanes[l].wrapping_add((ballot & 0xff) as i32).wrapping_add(sum);
            assert_eq!(got[w * 32 + l], want, "thread {}", w * 32 + l);
        }
    }
    let c = dev.emulator_backend().unwrap().last_counters().unwrap();
    assert!(c.simt_efficiency() < 1.0 && c.simt_efficiency() > 0.3, "{}", c.simt_efficiency());
}

#[test]
fn cli_runs_kernel_from_safetensors() {
    use safetensors::tensor::TensorView;
    let dir = std::env::temp_dir().join(format!("fusebert-emu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ptx = dir.join("cases.ptx");
    std::fs::write(&ptx, SAN_PTX).unwrap();
    let n = 77usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xb: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
    let inputs = dir.join("in.safetensors");
    let bytes =
        safetensors::serialize(vec![("x", TensorView::new(safetensors::Dtype::F32, vec![n], &xb).unwrap())], None)
            .unwrap();
    std::fs::write(&inputs, bytes).unwrap();
    let output = dir.join("out.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ptxemu"))
        .args(["run"])
        .arg(&ptx)
        .args(["--kernel", "scale_f32", "--grid", "1", "--block", "128", "--counters", "--inputs"])
        .arg(&inputs)
        .arg("--output")
        .arg(&output)
        .args(["--arg", "buf:x", "--arg", "out:y:f32:77", "--arg", "f32:2", "--arg", "i32:77"])
        .output()
        .unwrap();
    assert!(status.status.success(), "emu run failed: {}", String::from_utf8_lossy(&status.stderr));
    let out = std::fs::read(&output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&out).unwrap();
    let y: Vec<f32> = bytemuck::cast_slice(st.tensor("y").unwrap().data()).to_vec();
    assert_eq!(y.len(), n);
    for i in 0..n {
        assert_eq!(y[i], 2.0 * x[i], "y[{i}]");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sanitizer_reports_reads_of_never_written_global_memory() {
    let dev = san_dev(Default::default());
    let n = 50usize;
    let mut x = dev.alloc::<f32>(n).unwrap(); // never written
    let y = dev.alloc::<f32>(n).unwrap();
    let args = [KernelArg::from(&x), KernelArg::from(&y), KernelArg::F32(2.0), KernelArg::I32(n as i32)];
    let msg = run_err("scale_f32", LaunchConfig::linear(1, 64, 0), &args, &dev);
    assert!(msg.contains("uninitialised read") && msg.contains("never written"), "{msg}");
    // once written by the host, the same launch is clean, and its stores initialise y
    x.copy_from_host(&vec![1.5f32; n]).unwrap();
    dev.launch_in("san", "scale_f32", LaunchConfig::linear(1, 64, 0), &args).unwrap();
    let args2 = [KernelArg::from(&y), KernelArg::from(&x), KernelArg::F32(2.0), KernelArg::I32(n as i32)];
    dev.launch_in("san", "scale_f32", LaunchConfig::linear(1, 64, 0), &args2).unwrap();
    assert_eq!(x.to_host().unwrap(), vec![6.0f32; n]);
}

#[test]
fn device_functions_are_called_and_assert_traps() {
    let dev = san_dev(Default::default());
    let n = 40usize;
    let y0: Vec<f32> = (0..n).map(|i| 0.25 * i as f32 - 3.0).collect();
    let y = dev.upload(&y0).unwrap();
    dev.launch_in(
        "san",
        "call_and_assert",
        LaunchConfig::linear(1, n as u32, 0),
        &[KernelArg::from(&y), KernelArg::I32(n as i32)],
    )
    .unwrap();
    let got = y.to_host().unwrap();
    let ws = |x: f32, k: usize| (0..k).fold(0f32, |s, i| x.mul_add(i as f32, s));
    for i in 0..n {
        assert_eq!(got[i], ws(y0[i], i & 7) + ws(1.0, 3), "y[{i}]");
    }
    let msg = run_err(
        "call_and_assert",
        LaunchConfig::linear(1, 64, 0),
        &[KernelArg::from(&y), KernelArg::I32(n as i32)],
        &dev,
    );
    assert!(msg.contains("assert") && msg.contains("thread (40,0,0)"), "{msg}");
}

#[test]
fn wmma_m16n16k16_matches_cpu() {
    let dev = san_dev(Default::default());
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (lda, ldb) = (24usize, 20usize);
    let a = rand_f16(&mut rng, 16 * lda, 1.0); // A[m][k] at m*lda + k
    let b = rand_f16(&mut rng, 16 * ldb, 1.0); // B[k][n] at n*ldb + k (col-major)
    let c: Vec<f32> = (0..256).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (da, db, dc) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.upload(&c).unwrap());
    let dd = dev.alloc_filled::<f32>(256, 0xFF).unwrap();
    let args = [
        KernelArg::from(&da),
        KernelArg::from(&db),
        KernelArg::from(&dc),
        KernelArg::from(&dd),
        KernelArg::I32(lda as i32),
        KernelArg::I32(ldb as i32),
    ];
    dev.launch_in("san", "wmma_tile", LaunchConfig::linear(1, 32, 0), &args).unwrap();
    let got = dd.to_host().unwrap();
    for m in 0..16 {
        for n in 0..16 {
            let want = c[m * 16 + n] + (0..16).map(|k| a[m * lda + k].to_f32() * b[n * ldb + k].to_f32()).sum::<f32>();
            let g = got[n * 16 + m];
            assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()), "D[{m}][{n}] = {g}, want {want}");
        }
    }
}

#[test]
fn unsupported_ptx_is_a_load_time_error_naming_the_line() {
    let dev = Device::emulator().unwrap();
    let ok = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n.reg .b64 %rd<3>;\n.reg .b32 %r<3>;\nld.param.u64 %rd1, [p];\n";
    for (body, line, what) in [
        ("frobnicate.b32 %r1, %r2;\nret;\n}\n", 9, "frobnicate"),
        ("red.shared::cluster.add.u32 [%rd1], %r1;\nret;\n}\n", 9, "shared::cluster"),
        ("add.s32 %r1, %r2;\nret;\n}\n", 9, "operands"),
        ("bra $L__missing;\nret;\n}\n", 9, "label"),
    ] {
        let src = format!("{ok}{body}");
        match dev.load_module("bad", &src) {
            Err(fusebert_kernels::Error::PtxParse { line: l, msg, .. }) => {
                assert_eq!(l, line, "{msg}");
                assert!(msg.contains(what), "{msg}");
            }
            other => panic!("expected a PtxParse error for {body:?}, got {other:?}"),
        }
    }
}

#[test]
fn named_barrier_arrive_then_sync() {
    let dev = san_dev(Default::default());
    let out = dev.alloc_filled::<f32>(32, 0xFF).unwrap();
    dev.launch_in("san", "named_barrier_pc", LaunchConfig::linear(1, 64, 0), &[KernelArg::from(&out)]).unwrap();
    let got = out.to_host().unwrap();
    for (l, &g) in got.iter().enumerate().take(32) {
        assert_eq!(g, ((31 - l) * 3) as f32 + 1.0);
    }
}

#[test]
fn device_printf_runs() {
    let dev = san_dev(Default::default());
    dev.launch_in("san", "hello_printf", LaunchConfig::linear(1, 32, 0), &[KernelArg::I32(7)]).unwrap();
    let text = dev.emulator_backend().unwrap().take_printf_output();
    assert_eq!(text, "thread 0 of 32: k=7 x=0.00 ok\nthread 1 of 32: k=7 x=1.50 ok\n");
}

#[test]
fn ptr_align_params_are_checked() {
    let dev = Device::emulator().unwrap();
    let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 .ptr .global .align 16 p)\n{\n.reg .b64 %rd<3>;\nld.param.u64 %rd1, [p];\nret;\n}\n";
    dev.load_module("ptr", src).unwrap();
    let buf = dev.alloc_filled::<u8>(64, 0).unwrap();
    dev.launch_in("ptr", "k", LaunchConfig::linear(1, 32, 0), &[KernelArg::Ptr(buf.addr())]).unwrap();
    let e = dev.launch_in("ptr", "k", LaunchConfig::linear(1, 32, 0), &[KernelArg::Ptr(buf.addr() + 4)]).unwrap_err();
    assert!(matches!(&e, fusebert_kernels::Error::KernelArgs { msg, .. } if msg.contains(".align 16")), "{e}");
}

/// cp.async with an `ignore-src` predicate: true lanes zero-fill and read nothing (their source
/// address is out of bounds on purpose), false lanes copy.
#[test]
fn cp_async_ignore_src_predicate() {
    let src = r#".version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 inp, .param .u64 out)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b8 buf[128];
    ld.param.u64 %rd1, [inp];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p1, %r1, 16;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    selp.b64 %rd5, 4096, 0, %p1;
    add.s64 %rd4, %rd4, %rd5;
    mov.u32 %r2, buf;
    shl.b32 %r3, %r1, 2;
    add.s32 %r4, %r2, %r3;
    cp.async.ca.shared.global [%r4], [%rd4], 4, %p1;
    cp.async.wait_all;
    ld.shared.u32 %r5, [%r4];
    add.s64 %rd6, %rd2, %rd3;
    st.global.u32 [%rd6], %r5;
    ret;
}
"#;
    let dev = Device::emulator().unwrap();
    dev.load_module("ign", src).unwrap();
    let inp = dev.upload(&(1..=32u32).collect::<Vec<_>>()).unwrap();
    let out = dev.alloc_filled::<u32>(32, 0xFF).unwrap();
    dev.launch_in("ign", "k", LaunchConfig::linear(1, 32, 0), &[KernelArg::from(&inp), KernelArg::from(&out)]).unwrap();
    let got = out.to_host().unwrap();
    for (l, &g) in got.iter().enumerate().take(32) {
        assert_eq!(g, if l < 16 { l as u32 + 1 } else { 0 }, "lane {l}");
    }
}

/// Every embedded module (kernels/*.cu) parses, and defines exactly the entries build.rs listed.
#[test]
fn every_embedded_module_parses() {
    for m in fusebert_kernels::ptx::MODULES {
        let parsed = fusebert_emu::parse_module(m.name, m.ptx).unwrap_or_else(|e| panic!("{e}"));
        let mut got: Vec<&str> = parsed.kernels.iter().map(|k| k.name.as_str()).collect();
        let mut want: Vec<&str> = m.kernels.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "module {}", m.name);
    }
}
