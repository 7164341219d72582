//! `fusebert roofline --kernels auto|sm80|sm90` end to end: the Hopper constants in the JSON's
//! `gpu` object, the kernel family of every row, the mma.sync vs `_sm90` comparison (JSON and
//! table), and the typed error for `sm90` on a GPU without `wgmma`.
use std::process::Command;

use serde_json::Value;

fn fusebert(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fusebert")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn json(args: &[&str]) -> Value {
    let mut a = vec!["roofline", "--config", "minilm-l6", "--batch", "2", "--json"];
    a.extend_from_slice(args);
    let (code, out, err) = fusebert(&a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

fn gemm_and_attention_names(v: &Value) -> Vec<String> {
    v["launches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["step"] == "attention" || l["kernel"].as_str().unwrap().starts_with("gemm"))
        .map(|l| l["kernel"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hopper_defaults_to_sm90_and_compares_both_families() {
    for gpu in ["h100-sxm", "h200"] {
        let v = json(&["--gpu", gpu]);
        assert_eq!(v["gpu"]["wgmma_fraction"].as_f64(), Some(0.8), "{gpu}");
        assert_eq!(v["gpu"]["wgmma_attention_fraction"].as_f64(), Some(0.35));
        assert_eq!(v["gpu"]["wgmma_gemm_fixed_us"].as_f64(), Some(2.0));
        assert_eq!(v["gpu"]["mma_sync_fraction"].as_f64(), Some(0.64));
        assert_eq!(v["kernel_family"], "sm90");
        let names = gemm_and_attention_names(&v);
        assert!(!names.is_empty() && names.iter().all(|n| n.contains("_sm90")), "{names:?}");
        let c = &v["family_comparison"];
        assert_eq!(c["sm90_total_ms"].as_f64(), v["total_ms"].as_f64());
        let steps = c["steps"].as_array().unwrap();
        let qkv = steps.iter().find(|s| s["step"] == "qkv").unwrap();
        // MiniLM, two 128-token texts: 2 x 9 tiles for 132 SMs, so K (384: 6 k-blocks of 128
        // bytes, chunks of 4) is split over its 2 chunks
        assert_eq!(qkv["sm90_kernel"], "gemm_f16_sm90_sk");
        assert_eq!(qkv["sm90_tile"], "128x128 split 2");
        assert!(qkv["sm80_us"].as_f64().unwrap() > 0.0 && qkv["sm90_us"].as_f64().unwrap() > 0.0);
        assert!(qkv["sm90_tile"].is_string());
        // --kernels sm80: the mma.sync plan, the same comparison
        let m = json(&["--gpu", gpu, "--kernels", "sm80"]);
        assert_eq!(m["kernel_family"], "sm80");
        assert!(gemm_and_attention_names(&m).iter().all(|n| !n.contains("_sm90")));
        assert_eq!(m["total_ms"].as_f64(), c["sm80_total_ms"].as_f64());
        assert_eq!(m["family_comparison"], v["family_comparison"]);
        assert_eq!(json(&["--gpu", gpu, "--kernels", "sm90"])["total_ms"], v["total_ms"]);
    }
    assert_eq!(json(&["--gpu", "h200"])["gpu"]["l2_bytes"].as_u64(), Some(60 << 20));
}

#[test]
fn before_hopper_there_is_one_family() {
    let v = json(&["--gpu", "a100-80gb"]);
    assert_eq!(v["kernel_family"], "sm80");
    assert!(v["gpu"]["wgmma_fraction"].is_null());
    assert!(v["family_comparison"].is_null());
    let (code, _, err) = fusebert(&["roofline", "--gpu", "l40s", "--kernels", "sm90"]);
    assert_eq!(code, 1);
    assert!(err.contains("9.0") && err.contains("l40s"), "{err}");
}

#[test]
fn table_shows_both_families_per_step() {
    let (code, out, err) = fusebert(&["roofline", "--gpu", "h100-sxm", "--config", "bert-base", "--precision", "int8"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sm90 kernels (PREDICTED"), "{out}");
    assert!(out.contains("mma.sync (sm80) vs wgmma (_sm90)") && out.contains("verified only on the emulator"));
    // FFN1 quantises its own output (split at 1x128, its strip's codes shared by the strip's 24
    // CTAs: predicted faster than the cluster entry `_cqa`): the quantize_ffn row has no _sm90
    // launch ("-"); the attention writes the context's codes (`attention_int8_sm90_d64`)
    for k in
        ["gemm_int8_sm90_sk ", "gemm_int8_sm90_sk_ln", "gemm_int8_sm90_sk_qa", "attention_int8_sm90_d64", "total sm80"]
    {
        assert!(out.contains(k), "{k} missing:\n{out}");
    }
}
