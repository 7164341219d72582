//! `fusebert conformance` on the CUDA driver stand-in (sm_90): the exact program scripts/gpu-check.sh
//! runs on an H100/H200, here executing the same PTX on the emulator. Every case with a reference
//! (computed in fusebert_kernels::conformance::cases from the research note's formulas) must equal
//! it in the emulator's lazy, eager and random completion modes; `compare` must name the case
//! and the word of a planted one-word difference.
use std::path::{Path, PathBuf};
use std::process::Command;

use fusebert_kernels::conformance::cases;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_fusebert")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fusebert-conformance-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `conformance run` on the stand-in (`driver`: its host-side mode) with the emulator's
/// completion mode and extra arguments; the parsed JSON.
fn run(dir: &Path, driver: &str, async_mode: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(exe())
        .args(["conformance", "run", "--out"])
        .arg(dir)
        .args(extra)
        .env("FUSEBERT_CUDA_DRIVER", driver)
        .env("FUSEBERT_CUDA_STANDIN_ARCH", "sm_90")
        .env("FUSEBERT_EMU_ASYNC", async_mode)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{async_mode}: {text}");
    assert!(text.contains("stand-in"), "{text}");
    serde_json::from_str(&std::fs::read_to_string(dir.join("conformance.json")).unwrap()).unwrap()
}

fn words(path: &Path) -> Vec<u32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
}

/// Every case runs; each with a reference equals it word for word (the runner judges, and the
/// words on disk are checked again here against the reference), each with a property (C16's
/// shipped fp16 GEMMs and attention: within the f64 bound) holds it; the numerics case is recorded;
/// lazy, eager and random completion give the same words except where the emulator's choice is
/// meant to vary (elect.sync's leader under random). The lazy run is the one gpu-check.sh makes
/// (`--isolate`: each case in its own process); the stand-in's eager and deferred host modes both run.
#[test]
fn every_case_matches_its_reference_in_every_completion_mode() {
    let modes = [
        ("lazy", "emulator:deferred", &["--isolate"][..], temp("lazy")),
        ("eager", "emulator:eager", &[][..], temp("eager")),
        ("random:7", "emulator:deferred", &[][..], temp("random")),
    ];
    for (mode, driver, extra, dir) in &modes {
        let json = run(dir, driver, mode, extra);
        assert_eq!(json["failed"], 0, "{mode}: {json:#}");
        let all = cases::all();
        assert_eq!(json["cases"].as_array().unwrap().len(), all.len(), "{mode}");
        for case in &all {
            let w = words(&dir.join(format!("{}.bin", case.name)));
            assert_eq!(w.len(), cases::words(&case.kind), "{mode} {}", case.name);
            match cases::reference(case) {
                Some(want) => assert!(w == want, "{mode} {}: differs from the reference", case.name),
                None => {
                    if let Some(p) = cases::property(case, &w) {
                        p.unwrap_or_else(|e| panic!("{mode} {}: {e}", case.name));
                    }
                }
            }
        }
        for name in ["c7_numerics_n8", "c7_numerics_f16acc_n8"] {
            let c7 = json["cases"].as_array().unwrap().iter().find(|c| c["case"] == name).unwrap();
            assert_eq!(c7["verdict"], "recorded", "{mode} {name}");
        }
        f16_accumulators_are_plausible(&words(&dir.join("c7_numerics_f16acc_n8.bin")), mode);
        // C16: the shipped Hopper kernels, exact (int8) or within their f64 bound (fp16, attention)
        let c16: Vec<&serde_json::Value> = json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["case"].as_str().unwrap().starts_with("c16_"))
            .collect();
        assert_eq!(c16.len(), 8, "{mode}");
        assert!(c16.iter().all(|c| c["verdict"] == "pass"), "{mode}: {c16:#?}");
    }
    // lazy vs eager: identical; lazy vs random: only elect.sync's leader may differ
    let cmp = |a: &Path, b: &Path| {
        let out = Command::new(exe()).args(["conformance", "compare"]).arg(a).arg(b).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = cmp(&modes[0].3, &modes[1].3);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = cmp(&modes[0].3, &modes[2].3);
    let differing: Vec<&str> =
        text.lines().filter(|l| l.contains("DIFFERS")).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert!(differing.iter().all(|c| *c == "c13_elect_sync"), "{text}");
    assert_eq!(code, Some(if differing.is_empty() { 0 } else { 1 }), "{text}");
    for (_, _, _, d) in &modes {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// C7 with f16 accumulators has no reference (Hopper's accumulation model is unknown), but every
/// result must lie within 2^-9 of the exact sum (two f16 ulps of 1.0, far less than any fragment or
/// sign mistake): row m holds +-1 (m < 32: +1) times B[0][n] = 1 - (n&1) 2^-11, plus 15 products
/// (m%16 + 1) 2^s(m) x 2^-(8 + n%8), s(m) = -24 for m >= 48, else -14 (the kernel's VAR 3 values).
/// The f16 D fragment (note 1.4): thread t's d[j] holds (m, n) low and (m, n + 1) high, m = 16 w +
/// g + 8 (j&1), n = 8 (j>>1) + 2q. That the words are the same in every completion mode is
/// checked by the comparisons below.
fn f16_accumulators_are_plausible(w: &[u32], mode: &str) {
    assert_eq!(w.len(), 128 * 2, "{mode}");
    let exact = |m: usize, n: usize| {
        let a0 = if m < 32 { 1.0 } else { -1.0 };
        let b0 = 1.0 - (n & 1) as f64 * 2f64.powi(-11);
        let a = (m % 16 + 1) as f64 * 2f64.powi(if m >= 48 { -24 } else { -14 });
        a0 * b0 + 15.0 * a * 2f64.powi(-(8 + (n % 8) as i32))
    };
    for t in 0..128 {
        let (wq, l) = (t / 32, t % 32);
        for j in 0..2 {
            let (m, n) = (16 * wq + (l >> 2) + 8 * (j & 1), 8 * (j >> 1) + 2 * (l & 3));
            for (h, half) in [(w[2 * t + j] & 0xffff) as u16, (w[2 * t + j] >> 16) as u16].into_iter().enumerate() {
                let got = half::f16::from_bits(half).to_f64();
                let want = exact(m, n + h);
                assert!(
                    (got - want).abs() <= 2f64.powi(-9),
                    "{mode}: thread {t} d[{j}] half {h} = {got}, exact {want}"
                );
            }
        }
    }
}

/// A one-word difference planted in a copy of a run: `compare` exits 1, says that exactly that
/// case differs in one word, and names the word's thread, accumulator index and (m, n).
#[test]
fn compare_names_the_case_and_element_of_a_planted_difference() {
    let a = temp("planted-a");
    let b = temp("planted-b");
    let out = Command::new(exe())
        .args(["conformance", "run", "--case", "c1_frag_n64", "--out"])
        .arg(&a)
        .env("FUSEBERT_CUDA_DRIVER", "emulator")
        .env("FUSEBERT_CUDA_STANDIN_ARCH", "sm_90")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all(&b).unwrap();
    let file = "c1_frag_n64.bin";
    let mut w = words(&a.join(file));
    // thread 37 (warp 1, lane 5: g 1, q 1), d[13] ((13 >> 1) & 1 = 0): m = 16 + 1 = 17, n = 8 * 3 + 2 + 1 = 27
    let index = 37 * 32 + 13;
    assert_eq!(f32::from_bits(w[index]), (17 + 1 + 128 * 27) as f32);
    w[index] ^= 1;
    std::fs::write(b.join(file), w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let out = Command::new(exe()).args(["conformance", "compare"]).arg(&a).arg(&b).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("c1_frag_n64") && text.contains("DIFFERS in 1 word(s)"), "{text}");
    assert!(text.contains(&format!("word {index}: thread 37 d[13] = D(m 17, n 27)")), "{text}");
    assert!(text.contains("0 identical, 1 differ"), "{text}");
    // identical folders compare clean; a folder that is not one is a typed error
    let out = Command::new(exe()).args(["conformance", "compare"]).arg(&a).arg(&a).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(exe()).args(["conformance", "compare"]).arg(&a).arg(a.join("nope")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// C16 words in `compare`: a planted difference in the shipped attention's output is named by
/// token, sequence, head and dim (and in the fp16 GEMM's by row and column).
#[test]
fn compare_names_the_output_element_of_a_c16_difference() {
    let a = temp("c16-a");
    let b = temp("c16-b");
    for case in ["c16_attn_d32_packed", "c16_gemm_f16"] {
        let out = Command::new(exe())
            .args(["conformance", "run", "--case", case, "--out"])
            .arg(a.join(case))
            .env("FUSEBERT_CUDA_DRIVER", "emulator")
            .env("FUSEBERT_CUDA_STANDIN_ARCH", "sm_90")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let file = format!("{case}.bin");
        let mut w = words(&a.join(case).join(&file));
        assert_eq!(w.len(), cases::words(&cases::find(case).unwrap().kind));
        w[300] ^= 1 << 16;
        std::fs::create_dir_all(b.join(case)).unwrap();
        std::fs::write(b.join(case).join(&file), w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let out =
            Command::new(exe()).args(["conformance", "compare"]).arg(a.join(case)).arg(b.join(case)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(case) && text.contains("DIFFERS in 1 word(s)"), "{text}");
        // d32 over sequences 5 + 19 (H = 64): word 300 = element 600, token 9; fp16 GEMM N 136: word 300 = m 4, n 56
        let what = match case {
            "c16_attn_d32_packed" => {
                "word 300: out(token 9 = sequence 1 position 4, head 0, dim 24) and the next dim (f16x2)"
            }
            _ => "word 300: out(m 4, n 56..57) (f16x2)",
        };
        assert!(text.contains(what), "{text}");
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// C4's base-offset cases (the swizzle pattern off its repeat boundary, the descriptor's base
/// offset `(pattern start >> 7) & 7`): `list` knows them; on the emulator they equal the reference
/// (the absolute-address swizzle) in lazy, eager and random completion; a word names the slot at
/// the absolute swizzled address; `compare` decodes a planted difference as for every wgmma case.
#[test]
fn base_offset_cases_read_the_absolute_swizzle_in_every_completion_mode() {
    let names = ["c4_sw128_base_offset", "c4_sw64_base_offset", "c4_sw32_base_offset"];
    let out = Command::new(exe()).args(["conformance", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in names {
        assert!(list.lines().any(|l| l.starts_with(name) && l.contains(&format!("conf_{name}"))), "{list}");
    }
    let modes = [
        ("lazy", "emulator:deferred", temp("bo-lazy")),
        ("eager", "emulator:eager", temp("bo-eager")),
        ("random:11", "emulator:deferred", temp("bo-random")),
    ];
    for (mode, driver, dir) in &modes {
        let json = run(dir, driver, mode, &["--filter", "base_offset"]);
        assert_eq!(json["cases"].as_array().unwrap().len(), names.len(), "{mode}: {json:#}");
        assert_eq!(json["failed"], 0, "{mode}: {json:#}");
        for name in names {
            let case = cases::find(name).unwrap();
            assert_eq!(words(&dir.join(format!("{name}.bin"))), cases::reference(&case).unwrap(), "{mode} {name}");
        }
    }
    // SW128, B's pattern at 8192 + 384 of the 1024-aligned buffer: thread 37 d[13] is D(m 17, n 27)
    // = B(n 27, k 17) (A one-hot at k = m), K step 1 (start + 32), k 1 of it, read at
    // swz128(start + (27 / 8) 1024 + (27 % 8) 128 + 2): the code 0x400 + its slot in the B region
    let (a, b) = (&modes[0].2, temp("bo-planted"));
    let file = "c4_sw128_base_offset.bin";
    let mut w = words(&a.join(file));
    let index = 37 * 16 + 13;
    let addr = cases::swizzle(8192 + 384 + 32 + 3 * 1024 + 3 * 128 + 2, 128);
    assert_eq!(f32::from_bits(w[index]), half::f16::from_bits((0x400 + (addr - 8192) / 2) as u16).to_f32());
    w[index] ^= 1;
    std::fs::create_dir_all(&b).unwrap();
    for name in &names[1..] {
        std::fs::copy(a.join(format!("{name}.bin")), b.join(format!("{name}.bin"))).unwrap();
    }
    std::fs::write(b.join(file), w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let out = Command::new(exe()).args(["conformance", "compare"]).arg(a).arg(&b).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("c4_sw128_base_offset") && text.contains("DIFFERS in 1 word(s)"), "{text}");
    assert!(text.contains(&format!("word {index}: thread 37 d[13] = D(m 17, n 27)")), "{text}");
    assert!(text.contains("2 identical, 1 differ"), "{text}");
    for d in modes.iter().map(|m| &m.2).chain([&b]) {
        let _ = std::fs::remove_dir_all(d);
    }
}
