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
