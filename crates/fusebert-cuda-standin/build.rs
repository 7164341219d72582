//! Compiles the driver stand-in's trampoline (`trampoline.rs`, no dependencies) into
//! `OUT_DIR/libfusebert_cudaemu.so` with the rustc cargo uses: a dependency-free cdylib,
//! panic=abort so no unwinding can ever leave it. Its ELF SONAME is `libcuda.so`, so that once the
//! process has opened it by absolute path, cudarc's `dlopen("libcuda.so")` gets this object; its
//! file name is not a driver's, in a folder on no library path, so no search (LD_LIBRARY_PATH,
//! cargo's target dirs) finds it and it can never shadow a real `libcuda`.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=trampoline.rs");
    let src = manifest.join("trampoline.rs");
    let lib = out.join("libfusebert_cudaemu.so");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "--crate-name", "fusebert_cudaemu"])
        .args(["-C", "panic=abort", "-C", "opt-level=2", "-C", "strip=debuginfo"])
        .args(["-C", "link-arg=-Wl,-soname,libcuda.so"])
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot start rustc for {}: {e}", src.display()));
    assert!(status.success(), "rustc {} failed", src.display());
    println!("cargo:rustc-env=FUSEBERT_STANDIN_TRAMPOLINE={}", lib.display());
}
