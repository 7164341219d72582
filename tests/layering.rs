//! The layers point one way (design.md): the emulator knows no device layer, the kernels, the
//! device layer and the emulator know no model, and the library never imports the CLI.
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every code line under `src/<layer>` naming `crate::<forbidden>` (the layers are siblings, so
/// any import across them goes through `crate::`).
fn crossings(layer: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                if code.contains(&format!("crate::{bad}")) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn emulator_knows_no_device_model_or_kernels() {
    let found = crossings("emu", &["device", "model", "kernels", "cli"]);
    assert!(found.is_empty(), "src/emu imports upper layers:\n{}", found.join("\n"));
}

#[test]
fn kernels_and_device_know_no_model() {
    for layer in ["kernels", "device", "numerics"] {
        let found = crossings(layer, &["model", "cli"]);
        assert!(found.is_empty(), "src/{layer} imports the model layer:\n{}", found.join("\n"));
    }
}

#[test]
fn library_never_imports_the_cli() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(!lib.lines().any(|l| l.trim_start().starts_with("pub mod cli") || l.trim_start().starts_with("mod cli")));
    for layer in ["emu", "device", "kernels", "model", "numerics", "perf"] {
        let found = crossings(layer, &["cli"]);
        assert!(found.is_empty(), "src/{layer} imports the CLI:\n{}", found.join("\n"));
    }
}
