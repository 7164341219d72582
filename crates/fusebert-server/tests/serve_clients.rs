//! The real clients: `huggingface_hub.InferenceClient` (feature_extraction, sentence_similarity,
//! text_classification, rerank through its HTTP session) and the `openai` SDK, pinned versions
//! from the project-local `.venv-clients` (`scripts/setup.sh`), against the server on loopback
//! with three models. The Python side (`tests/clients/tei_clients.py`) checks each client's
//! result against the server's own routes.
mod serve_common;

use std::path::PathBuf;

use serve_common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huggingface_hub_and_openai_clients_work_unchanged() {
    let python = root().join(".venv-clients/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `bash scripts/setup.sh` (installs the pinned clients)",
        python.display()
    );
    let models = root().join("testdata/models");
    let opts = options(models.join("tiny-distilbert-mean"))
        .with_model("ce", crossencoder())
        .with_model("clf", models.join("tiny-roberta-classifier"));
    let server = start(opts).await;
    let url = format!("http://{}", server.addr());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tei_clients.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script)
        .arg(&url)
        .arg("tiny-distilbert-mean")
        // loopback only: no proxy, no token lookups, no telemetry
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("HF_HUB_OFFLINE", "0")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_TOKEN")
        .env_remove("OPENAI_API_KEY");
    // The script's own HTTP calls time out after 120 s each, so it ends by itself.
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "clients failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: feature_extraction"), "{stdout}");
    println!("{stdout}");
    server.begin_shutdown();
    server.wait().await.unwrap();
}
