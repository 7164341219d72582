//! The kernel report runs every kernel on the emulator and carries its counters.
use fusebert_kernels::report;

#[test]
fn report_covers_every_kernel_with_counters() {
    let dev = fusebert_kernels::Device::emulator().unwrap();
    let reps = report::report(&dev).unwrap();
    let names: Vec<&str> = reps.iter().map(|r| r.kernel.as_str()).collect();
    for k in [
        "layernorm_f16",
        "layernorm_f16_q8",
        "quantize_i8_f16",
        "quantize_i8_asym_f16",
        "gemm_int8_f16",
        "gemm_int8_f16_l",
        "gemm_int8_i32",
        "gemm_f16",
        "gemm_f16_l",
        "attention_f16_d16",
        "attention_f16_d32",
        "attention_f16_d48",
        "attention_f16_d64",
        "attention_f16_d80",
        "attention_f16_d96",
        "attention_f16_d112",
        "attention_f16_d128",
        "pool_f16",
        "embedding_layernorm_f16",
    ] {
        assert!(names.contains(&k), "report lacks {k}: {names:?}");
    }
    assert!(names.iter().all(|k| !k.contains("_sm90")), "sm_80: mma.sync only");
    for r in &reps {
        let c = r.counters.as_ref().expect("emulator counters");
        assert!(c.warp_instructions > 0 && r.min_bytes > 0, "{}", r.kernel);
        assert_eq!(c.local_load_bytes + c.local_store_bytes, 0, "{}: local memory", r.kernel);
    }
    let table = report::render_table(&reps);
    eprintln!("{table}");
    assert_eq!(table.lines().count(), reps.len() + 1);
    let json = report::to_json(&reps);
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), reps.len());
    assert!(arr[0]["counters"]["shared_bank_conflicts"].is_u64());
    eprintln!("{}", serde_json::to_string(&json).unwrap());
}

/// On an sm_90 emulator the report adds every Hopper kernel after its mma.sync twin, on the same
/// operands (same FLOPs and minimum bytes), with counters: the GEMMs store through TMA (store
/// efficiency 1.0) without shared-memory bank conflicts.
#[test]
fn report_on_sm90_adds_the_hopper_kernels() {
    use fusebert_kernels::device::emulator::{Arch, EmulatorOptions};
    let dev =
        fusebert_kernels::Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, ..Default::default() }).unwrap();
    let reps = report::report(&dev).unwrap();
    let find = |k: &str| reps.iter().position(|r| r.kernel == k).unwrap_or_else(|| panic!("no {k}"));
    for (twin, hopper) in [
        ("gemm_int8_f16_l", "gemm_int8_sm90"),
        ("gemm_int8_i32", "gemm_int8_i32_sm90"),
        ("gemm_f16_l", "gemm_f16_sm90"),
        ("attention_f16_d64", "attention_sm90_d64"),
        ("attention_f16_d128", "attention_sm90_d128"),
    ] {
        let (a, b) = (&reps[find(twin)], &reps[find(hopper)]);
        assert!(find(twin) < find(hopper), "{hopper} follows {twin}");
        assert_eq!((a.flops, a.min_bytes, &a.shape), (b.flops, b.min_bytes, &b.shape), "{hopper}");
        let c = b.counters.as_ref().expect("emulator counters");
        assert!(c.warp_instructions > 0 && c.local_load_bytes + c.local_store_bytes == 0, "{hopper}");
        if hopper.starts_with("gemm") {
            assert_eq!(c.global_store_efficiency(), 1.0, "{hopper}: TMA store epilogue");
            assert_eq!(c.shared_bank_conflicts, 0, "{hopper}");
            assert!(c.tma_load_requests > 0 && c.tma_load_efficiency() == 1.0, "{hopper}");
        }
    }
    // three GEMMs and attention at every head dim (the sm_80 report, the test above, has none)
    let hopper_rows = reps.iter().filter(|r| r.kernel.contains("_sm90")).count();
    assert_eq!(hopper_rows, 3 + fusebert_kernels::attention::HEAD_DIMS.len());
}
