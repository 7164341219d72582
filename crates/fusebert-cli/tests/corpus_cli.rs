//! Corpus-scale `embed` through the real binary: streamed input in budgeted batches equals each
//! text embedded alone, `.npy`/`.safetensors` outputs equal the JSON lines, `--resume` after a
//! kill gives the same file as an uninterrupted run, memory stays flat in the number of texts,
//! `--shard K/N` parts (one killed and resumed) concatenate to the unsharded output.
#[path = "../../fusebert/tests/golden_support/mod.rs"]
mod golden_support;
#[path = "../../fusebert/tests/tiny_model/mod.rs"]
mod tiny_model;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use golden_support::model_dir;
use serde_json::{json, Value};

fn fusebert(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusebert"));
    cmd.args(args).env_remove("FUSEBERT_MODEL").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run fusebert");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "fusebert failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn embeddings(lines: &[Value]) -> Vec<Vec<f32>> {
    lines
        .iter()
        .map(|v| v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// Deterministic sentences of 1-40 words.
fn corpus(n: usize) -> Vec<String> {
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "search", "vector", "embedding"];
    (0..n)
        .map(|i| (0..1 + (i * 7) % 40).map(|j| words[(i * 3 + j * 5) % words.len()]).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A tiny random-weight BERT (32 positions: runs pass --truncate) with the bundled tokenizer:
/// fast enough for thousands of texts.
fn tiny_model() -> tiny_model::TempDir {
    let dir = tiny_model::Spec { vocab: 30522, ..Default::default() }.write();
    std::fs::copy(model_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    dir
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape_text.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data: Vec<f32> = bytes[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "data length vs header shape");
    (shape, data)
}

#[test]
fn streamed_batches_equal_each_text_alone() {
    let texts = corpus(14);
    let dir = tiny_model::TempDir::new("corpus-alone");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    // a small budget: several texts per batch, several batches
    let out = ok(fusebert(&["embed", "--normalize", "--batch-tokens", "60", "--input", input.to_str().unwrap()], None));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), texts.len());
    let got = embeddings(&lines);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(lines[i]["text"], t.as_str(), "input order");
        let alone = embeddings(&json_lines(
            &String::from_utf8(ok(fusebert(&["embed", "--normalize", t], None)).stdout).unwrap(),
        ));
        let err = alone[0].iter().zip(&got[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-5, "text {i}: max abs diff {err} vs alone");
    }
}

#[test]
fn npy_and_safetensors_outputs_equal_the_json_lines() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let texts = corpus(300).join("\n");
    let dir = tiny_model::TempDir::new("corpus-out");
    let (npy, st) = (dir.path().join("e.npy"), dir.path().join("e.safetensors"));
    let base = ["embed", "--model", m, "--truncate", "--normalize", "--batch-tokens", "500"];
    let jsonl = ok(fusebert(&base, Some(texts.as_bytes())));
    let want = embeddings(&json_lines(&String::from_utf8(jsonl.stdout).unwrap()));
    ok(fusebert(&[&base[..], &["--output", npy.to_str().unwrap()]].concat(), Some(texts.as_bytes())));
    let (shape, data) = read_npy(&npy);
    assert_eq!(shape, [300, tiny_model::HIDDEN]);
    assert_eq!(data, want.concat());
    ok(fusebert(&[&base[..], &["--output", st.to_str().unwrap()]].concat(), Some(texts.as_bytes())));
    let bytes = std::fs::read(&st).unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let e = t.tensor("embeddings").unwrap();
    assert_eq!(e.shape(), [300, tiny_model::HIDDEN]);
    let vals: Vec<f32> = e.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, want.concat());
    assert_eq!(t.tensor("tokens").unwrap().shape(), [300]);
}

#[test]
fn jsonl_input_reads_the_named_field() {
    let model = tiny_model();
    let input = "{\"id\": 1, \"body\": \"hello there\"}\n{\"id\": 2, \"body\": \"\"}\n";
    let out =
        ok(fusebert(&["embed", "--model", model.path().to_str().unwrap(), "--field", "body"], Some(input.as_bytes())));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["text"], "hello there");
    let empty = fusebert(&["embed", "--model", model.path().to_str().unwrap()], Some(b""));
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no input"));
    let bad =
        fusebert(&["embed", "--model", model.path().to_str().unwrap(), "--field", "text"], Some(input.as_bytes()));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("line 1") && err.contains("`text`") && !err.contains("panicked"), "{err}");
}

/// Kills a run once its output holds some rows, resumes it, and compares with a run that was
/// never interrupted: the same bytes, no duplicated or missing rows.
#[test]
fn resume_after_a_kill_gives_the_uninterrupted_file() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let dir = tiny_model::TempDir::new("corpus-resume");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, corpus(4000).join("\n")).unwrap();
    for ext in ["npy", "jsonl"] {
        let (full, cut) = (dir.path().join(format!("full.{ext}")), dir.path().join(format!("cut.{ext}")));
        let args = |out: &Path| {
            [
                "embed",
                "--model",
                m,
                "--truncate",
                "--batch-tokens",
                "64",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec()
        };
        ok(Command::new(env!("CARGO_BIN_EXE_fusebert")).args(args(&full)).output().unwrap());
        let mut child =
            Command::new(env!("CARGO_BIN_EXE_fusebert")).args(args(&cut)).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let full_len = std::fs::metadata(&full).unwrap().len();
        loop {
            let len = std::fs::metadata(&cut).map(|m| m.len()).unwrap_or(0);
            if len > full_len / 10 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let cut_len = std::fs::metadata(&cut).unwrap().len();
        assert!(cut_len < full_len, "{ext}: the run finished before the kill ({cut_len} bytes): nothing was resumed");
        let resumed = ok(Command::new(env!("CARGO_BIN_EXE_fusebert"))
            .args([args(&cut), vec!["--resume".into()]].concat())
            .output()
            .unwrap());
        assert!(resumed.status.success());
        assert!(std::fs::read(&cut).unwrap() == std::fs::read(&full).unwrap(), "{ext}: resumed file differs");
    }
}

/// Peak resident memory of a child run (Linux `VmHWM`), sampled until it exits.
fn peak_rss_kib(args: &[&str], input: &Path) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fusebert"))
        .args(args)
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(v) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                peak = peak.max(v.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap());
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            return peak;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn memory_is_flat_in_the_number_of_texts() {
    let model = tiny_model();
    let dir = tiny_model::TempDir::new("corpus-rss");
    let (small, large) = (dir.path().join("small.txt"), dir.path().join("large.txt"));
    std::fs::write(&small, corpus(500).join("\n")).unwrap();
    std::fs::write(&large, corpus(10_000).join("\n")).unwrap();
    let args = ["embed", "--model", model.path().to_str().unwrap(), "--truncate", "--batch-tokens", "2048"];
    let (a, b) = (peak_rss_kib(&args, &small), peak_rss_kib(&args, &large));
    // 20x the texts (about 200k tokens, 40 MB of f32 embedding rows were it all kept) within
    // a few MB of the small run's peak.
    assert!(b <= a + 8 * 1024, "peak RSS grew from {a} KiB (500 texts) to {b} KiB (10k texts)");
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models").join(name).to_str().unwrap().to_string()
}

/// Every label's logit of each `classify` line.
fn label_logits(lines: &[Value]) -> Vec<Vec<f32>> {
    lines
        .iter()
        .map(|l| l["labels"].as_array().unwrap().iter().map(|x| x["logit"].as_f64().unwrap() as f32).collect())
        .collect()
}

#[test]
fn classify_streams_its_input_in_batches_equal_to_each_text_alone() {
    let model = fixture("tiny-roberta-classifier");
    let texts = corpus(11);
    let dir = tiny_model::TempDir::new("corpus-classify");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let args =
        ["classify", "--model", &model, "--truncate", "--batch-tokens", "40", "--input", input.to_str().unwrap()];
    let lines = json_lines(&String::from_utf8(ok(fusebert(&args, None)).stdout).unwrap());
    assert_eq!(lines.len(), texts.len());
    let got = label_logits(&lines);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(lines[i]["text"], t.as_str(), "input order");
        let alone = json_lines(
            &String::from_utf8(ok(fusebert(&["classify", "--model", &model, "--truncate", t], None)).stdout).unwrap(),
        );
        assert_eq!(lines[i]["label"], alone[0]["label"], "text {i}");
        let err = label_logits(&alone)[0].iter().zip(&got[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-5, "text {i}: max abs logit diff {err} vs alone");
    }
}

#[test]
fn classify_pairs_stream_from_stdin_and_name_the_line_without_a_tab() {
    let model = fixture("tiny-bert-crossencoder");
    let stdin = b"query one\tfirst text\nquery two\tsecond text\n";
    let out = ok(fusebert(&["classify", "--pairs", "--model", &model, "--batch-tokens", "8"], Some(stdin)));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[1]["text"].as_str(), lines[1]["text_pair"].as_str()), (Some("query two"), Some("second text")));
    let bad = fusebert(&["classify", "--pairs", "--model", &model], Some(b"a\tb\nc\td\nno tab here\n"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("input 2 has no TAB"), "{err}");
}

#[test]
fn rerank_streams_its_input_and_ranks_every_text() {
    let model = fixture("tiny-bert-crossencoder");
    let texts = corpus(9);
    let dir = tiny_model::TempDir::new("corpus-rerank");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let q = ["--query", "lazy dog"];
    let base = ["rerank", "--model", &model, "--truncate", q[0], q[1]];
    let streamed = json_lines(
        &String::from_utf8(
            ok(fusebert(&[&base[..], &["--batch-tokens", "40", "--input", input.to_str().unwrap()]].concat(), None))
                .stdout,
        )
        .unwrap(),
    );
    let args: Vec<&str> = base.iter().copied().chain(texts.iter().map(String::as_str)).collect();
    let at_once = json_lines(&String::from_utf8(ok(fusebert(&args, None)).stdout).unwrap());
    assert_eq!(streamed.len(), texts.len());
    let mut seen: Vec<u64> = streamed.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    let scores: Vec<f64> = streamed.iter().map(|l| l["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    for (s, a) in streamed.iter().zip(&at_once) {
        assert_eq!(s["index"], a["index"]);
        let diff = (s["logit"].as_f64().unwrap() - a["logit"].as_f64().unwrap()).abs();
        assert!(diff <= 1e-5, "index {}: logit diff {diff}", s["index"]);
    }
    seen.sort();
    assert_eq!(seen, (0..texts.len() as u64).collect::<Vec<_>>(), "every text once");
}

/// `embed --shard K/N` stdout (JSON lines) of `input` with the tiny model.
fn shard_run(model: &str, input: &Path, shard: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let mut args =
        vec!["embed", "--model", model, "--truncate", "--batch-tokens", "40", "--input", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    if let Some(s) = shard {
        args.extend_from_slice(&["--shard", s]);
    }
    ok(fusebert(&args, None)).stdout
}

/// Every shard count, awkward files included (empty lines, CRLF, no final newline, JSON lines with
/// blank lines, more shards than lines: empty shards succeed with no rows): the shards' outputs
/// concatenated in shard order are the unsharded output, byte for byte.
#[test]
fn shards_concatenated_in_order_are_the_unsharded_output() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let dir = tiny_model::TempDir::new("corpus-shards");
    let mut lines = corpus(17);
    lines[3].clear();
    lines[4] = "carriage return\r".into();
    let plain = dir.path().join("in.txt");
    std::fs::write(&plain, lines.join("\n")).unwrap(); // no final newline
    let jsonl = dir.path().join("in.jsonl");
    let records: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, t)| if i % 5 == 2 { String::new() } else { json!({ "text": t }).to_string() })
        .collect();
    std::fs::write(&jsonl, records.join("\n") + "\n\n").unwrap();
    for (input, n_values) in [(&plain, &[1u64, 2, 5, 24][..]), (&jsonl, &[3, 40][..])] {
        let whole = shard_run(m, input, None, &[]);
        assert!(!whole.is_empty());
        for n in n_values {
            let mut joined = Vec::new();
            let mut empty = 0;
            for k in 0..*n {
                let part = shard_run(m, input, Some(&format!("{k}/{n}")), &[]);
                empty += usize::from(part.is_empty());
                joined.extend(part);
            }
            assert!(joined == whole, "{}: {n} shards concatenated differ from the unsharded output", input.display());
            if *n > 17 {
                assert!(empty > 0, "{n} shards of 17 lines: some must be empty");
            }
        }
    }
}

/// Three shards of a 4000-line corpus as three processes, one of them killed mid-run and resumed
/// with `--resume`: the `.npy` parts' rows concatenated in shard order are the unsharded `.npy`'s
/// rows bit for bit, and the `.jsonl` parts concatenated are the unsharded file byte for byte.
#[test]
fn a_killed_shard_resumes_and_the_shards_concatenate_to_the_unsharded_file() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let dir = tiny_model::TempDir::new("corpus-shard-kill");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, corpus(4000).join("\n") + "\n").unwrap();
    let args = |out: &Path, shard: Option<String>| {
        let mut a: Vec<String> =
            ["embed", "--model", m, "--truncate", "--batch-tokens", "64", "--input", input.to_str().unwrap()]
                .map(String::from)
                .to_vec();
        a.extend(["--output".into(), out.to_str().unwrap().into()]);
        if let Some(s) = shard {
            a.extend(["--shard".into(), s]);
        }
        a
    };
    let run = |a: Vec<String>| ok(Command::new(env!("CARGO_BIN_EXE_fusebert")).args(a).output().unwrap());
    for ext in ["npy", "jsonl"] {
        let full = dir.path().join(format!("full.{ext}"));
        run(args(&full, None));
        let part = |k: usize| dir.path().join(format!("part-{k}.{ext}"));
        for k in [0, 2] {
            run(args(&part(k), Some(format!("{k}/3"))));
        }
        // shard 1: killed once its output holds a few batches, then resumed
        let mut child = Command::new(env!("CARGO_BIN_EXE_fusebert"))
            .args(args(&part(1), Some("1/3".into())))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let full_len = std::fs::metadata(&full).unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(part(1)).map(|m| m.len()).unwrap_or(0) <= full_len / 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let cut_len = std::fs::metadata(part(1)).unwrap().len();
        run([args(&part(1), Some("1/3".into())), vec!["--resume".into()]].concat());
        let resumed_len = std::fs::metadata(part(1)).unwrap().len();
        assert!(
            cut_len < resumed_len,
            "{ext}: shard 1 finished before the kill ({cut_len} bytes): nothing was resumed"
        );
        if ext == "npy" {
            let (shape, data) = read_npy(&full);
            let parts: Vec<(Vec<usize>, Vec<f32>)> = (0..3).map(|k| read_npy(&part(k))).collect();
            let shapes: Vec<&Vec<usize>> = parts.iter().map(|(s, _)| s).collect();
            assert!(shapes.iter().all(|s| s[0] > 1000 && s[1] == shape[1]), "balanced shards: {shapes:?}");
            assert_eq!(parts.iter().map(|(s, _)| s[0]).sum::<usize>(), shape[0], "every row exactly once");
            let joined: Vec<u32> = parts.iter().flat_map(|(_, d)| d.iter().map(|v| v.to_bits())).collect();
            let want: Vec<u32> = data.iter().map(|v| v.to_bits()).collect();
            assert!(joined == want, "npy: shard rows concatenated differ from the unsharded rows");
        } else {
            let joined: Vec<u8> = (0..3).flat_map(|k| std::fs::read(part(k)).unwrap()).collect();
            assert!(
                joined == std::fs::read(&full).unwrap(),
                "jsonl: shards concatenated differ from the unsharded file"
            );
        }
    }
}

#[test]
fn bad_shards_are_errors_naming_the_flag() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let dir = tiny_model::TempDir::new("corpus-shard-bad");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a\nb\n").unwrap();
    let i = input.to_str().unwrap();
    for (shard, says) in [
        ("2/2", "K must be below N"),
        ("0/0", "N must be at least 1"),
        ("x", "expected K/N"),
        ("1/2/3", "not a non-negative integer"),
        ("-1/2", "not a non-negative integer"),
        ("$(JOB_COMPLETION_INDEX)/4", "unexpanded variable"),
    ] {
        let out = fusebert(&["embed", "--model", m, "--input", i, &format!("--shard={shard}")], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{shard}: {err}");
        assert!(err.contains("--shard") && err.contains(says) && !err.contains("panicked"), "{shard}: {err}");
    }
    // the environment's value is checked the same way, and used like the flag
    let env = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_fusebert"))
            .args(["embed", "--model", m, "--input", i])
            .env("FUSEBERT_SHARD", value)
            .output()
            .unwrap()
    };
    let bad = env("3/3");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("K must be below N"));
    let second = json_lines(&String::from_utf8(ok(env("1/2")).stdout).unwrap());
    assert_eq!(second.iter().map(|l| l["text"].as_str().unwrap()).collect::<Vec<_>>(), ["b"]);
    // a shard of arguments or stdin: an error before anything is written
    let out_file = dir.path().join("never.npy");
    let o = out_file.to_str().unwrap();
    let out = fusebert(&["embed", "--model", m, "--shard", "0/2", "--output", o, "some text"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--shard 0/2 needs --input FILE"), "{err}");
    assert!(!out_file.exists(), "the output was created before the error");
}
