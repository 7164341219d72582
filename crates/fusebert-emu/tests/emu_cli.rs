//! `ptxemu run` (the research CLI, docs/emu-api.md; `fusebert emu run` is the same) through the
//! real binary: a saxpy PTX
//! file with inputs from safetensors, outputs back to safetensors, counters as JSON; a planted
//! out-of-bounds write and a wrong argument list fail with a non-zero exit and a message.
mod common;
use common::*;
use rand::Rng;
use std::process::Command;

const SAXPY: &str = r#"
.visible .entry saxpy(
	.param .u64 p_x,
	.param .u64 p_y,
	.param .u64 p_z,
	.param .f32 p_a,
	.param .u32 p_n
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<6>;
	.reg .b64 	%rd<12>;
	ld.param.u64 	%rd1, [p_x];
	ld.param.u64 	%rd2, [p_y];
	ld.param.u64 	%rd3, [p_z];
	ld.param.f32 	%f1, [p_a];
	ld.param.u32 	%r1, [p_n];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.GUARD.u32 	%p1, %r5, %r1;
	@%p1 bra 	$L__END;
	cvta.to.global.u64 	%rd4, %rd1;
	cvta.to.global.u64 	%rd5, %rd2;
	cvta.to.global.u64 	%rd6, %rd3;
	mul.wide.u32 	%rd7, %r5, 4;
	add.s64 	%rd8, %rd4, %rd7;
	add.s64 	%rd9, %rd5, %rd7;
	add.s64 	%rd10, %rd6, %rd7;
	ld.global.f32 	%f2, [%rd8]; // LOAD_X
	ld.global.f32 	%f3, [%rd9];
	fma.rn.f32 	%f4, %f1, %f2, %f3;
	st.global.f32 	[%rd10], %f4; // STORE
$L__END:
	ret;
}
"#;

fn write_inputs(path: &std::path::Path, x: &[f32], y: &[f32]) {
    use safetensors::tensor::TensorView;
    let xb: Vec<u8> = bytemuck::cast_slice(x).to_vec();
    let yb: Vec<u8> = bytemuck::cast_slice(y).to_vec();
    let tensors = vec![
        ("x".to_string(), TensorView::new(safetensors::Dtype::F32, vec![x.len()], &xb).unwrap()),
        ("y".to_string(), TensorView::new(safetensors::Dtype::F32, vec![y.len()], &yb).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

fn run_cli(dir: &std::path::Path, ptx: &str, n: usize, extra: &[&str]) -> std::process::Output {
    run_cli_env(dir, ptx, n, extra, None)
}

/// `run_cli` with `FUSEBERT_EMU_MATH` set to `math` (or removed).
fn run_cli_env(dir: &std::path::Path, ptx: &str, n: usize, extra: &[&str], math: Option<&str>) -> std::process::Output {
    let file = dir.join("k.ptx");
    std::fs::write(&file, ptx).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptxemu"));
    cmd.args(["run"]).arg(&file).args(["--kernel", "saxpy", "--grid", "3", "--block", "64"]);
    cmd.arg("--inputs").arg(dir.join("in.safetensors")).arg("--output").arg(dir.join("out.safetensors"));
    cmd.args(["--arg", "buf:x", "--arg", "buf:y", "--arg", &format!("out:z:f32:{n}"), "--arg", "f32:2.5"]);
    cmd.args(extra);
    match math {
        Some(m) => cmd.env("FUSEBERT_EMU_MATH", m),
        None => cmd.env_remove("FUSEBERT_EMU_MATH"),
    };
    cmd.output().expect("run ptxemu")
}

fn read_z(dir: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(dir.join("out.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("z").unwrap().data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn ok_or_dump(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "emu run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--math exact|envelope` and `FUSEBERT_EMU_MATH`: z = ex2.approx(x), correctly rounded in exact
/// mode, within 2 ulp (and mostly not correctly rounded) in envelope mode, the same bits from the
/// flag and from the variable; a bad mode is an error.
#[test]
fn emu_run_math_modes_and_env_var() {
    let n = 150usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.173 - 11.0).collect();
    let dir = TempDir::new("cli_math");
    write_inputs(&dir.0.join("in.safetensors"), &x, &vec![0.0; n]);
    let ptx = format!("{PTX_HEADER}{}", SAXPY.replace("GUARD", "ge"))
        .replace("fma.rn.f32 \t%f4, %f1, %f2, %f3;", "ex2.approx.f32 \t%f4, %f2;");
    assert!(ptx.contains("ex2.approx"));
    ptxas_check(&ptx, "sm_80");
    let u = format!("u32:{n}");
    let run = |extra: &[&str], env: Option<&str>| {
        let out = run_cli_env(&dir.0, &ptx, n, &[&["--arg", u.as_str()], extra].concat(), env);
        ok_or_dump(&out);
        read_z(&dir.0)
    };
    let exact = run(&["--math", "exact"], Some("envelope"));
    let env_flag = run(&["--math", "envelope"], None);
    let env_var = run(&[], Some("envelope"));
    let default = run(&[], None);
    assert_eq!(default, exact, "no flag, no variable: exact");
    assert_eq!(env_var, env_flag, "the variable and the flag give the same bits");
    let mut moved = 0;
    for i in 0..n {
        let t = (x[i] as f64).exp2();
        assert_eq!(exact[i], t as f32, "exact ex2({})", x[i]);
        let ulp = 2f64.powi(((t as f32).to_bits() >> 23) as i32 - 127 - 23);
        assert!((env_flag[i] as f64 - t).abs() <= 2.0 * ulp, "envelope ex2({}) = {} outside 2 ulp", x[i], env_flag[i]);
        moved += (env_flag[i] != exact[i]) as usize;
    }
    assert!(moved > n / 2, "envelope moved only {moved} of {n} results");
    let bad = run_cli_env(&dir.0, &ptx, n, &["--arg", u.as_str()], Some("fast"));
    assert!(!bad.status.success(), "a bad FUSEBERT_EMU_MATH must fail");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FUSEBERT_EMU_MATH"), "names the variable");
    let bad = run_cli_env(&dir.0, &ptx, n, &["--arg", u.as_str(), "--math", "fast"], None);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("envelope"));
}

/// `--arch`: the per-architecture shared-memory cap is enforced at launch with a clear error.
#[test]
fn emu_run_arch_limits() {
    let n = 150usize;
    let dir = TempDir::new("cli_arch");
    write_inputs(&dir.0.join("in.safetensors"), &vec![1.0; n], &vec![2.0; n]);
    let ptx = format!("{PTX_HEADER}{}", SAXPY.replace("GUARD", "ge"));
    let u = format!("u32:{n}");
    let shared = (100 * 1024).to_string();
    for (arch, ok) in [("sm_80", true), ("sm_86", false), ("sm_89", false), ("sm_90", true)] {
        let out = run_cli(&dir.0, &ptx, n, &["--arg", &u, "--arch", arch, "--shared", &shared]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.success(), ok, "{arch} with 100 KiB of shared memory: {err}");
        if !ok {
            assert!(err.contains(arch) && err.contains("saxpy") && err.contains("101376"), "{err}");
        }
    }
    let out = run_cli(&dir.0, &ptx, n, &["--arg", &u, "--arch", "sm_75"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("sm_90"));
}

#[test]
fn emu_run_saxpy_with_safetensors_and_counters() {
    let n = 150usize;
    let mut r = rng(1);
    let x: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let dir = TempDir::new("cli");
    write_inputs(&dir.0.join("in.safetensors"), &x, &y);
    let ptx = format!("{PTX_HEADER}{}", SAXPY.replace("GUARD", "ge"));
    ptxas_check(&ptx, "sm_80");
    let out = run_cli(&dir.0, &ptx, n, &["--arg", &format!("u32:{n}"), "--counters"]);
    assert!(
        out.status.success(),
        "emu run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(dir.0.join("out.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let z = st.tensor("z").unwrap();
    assert_eq!(z.shape(), &[n]);
    let zf: Vec<f32> = z.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for i in 0..n {
        assert_eq!(zf[i].to_bits(), 2.5f32.mul_add(x[i], y[i]).to_bits(), "z[{i}]");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("global_load_bytes"), "--counters prints the counters:\n{stdout}");
    assert!(stdout.contains(&format!("{}", 2 * n * 4)), "two f32 loads per element = {} bytes:\n{stdout}", 2 * n * 4);
}

#[test]
fn emu_run_reports_planted_bug_and_bad_arguments() {
    let n = 150usize;
    let dir = TempDir::new("cli_bad");
    write_inputs(&dir.0.join("in.safetensors"), &vec![1.0; n], &vec![2.0; n]);
    // off-by-one guard (gt instead of ge): thread n (block 2, thread 22) reads x[n] first
    let ptx = format!("{PTX_HEADER}{}", SAXPY.replace("GUARD", "gt"));
    let out = run_cli(&dir.0, &ptx, n, &["--arg", &format!("u32:{n}")]);
    assert!(!out.status.success(), "planted out-of-bounds access must fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    assert_located(&err, "saxpy", (2, 0, 0), Some((22, 0, 0)), &[ptx_loc(&ptx, "// LOAD_X")]);
    // missing the last argument
    let ptx = format!("{PTX_HEADER}{}", SAXPY.replace("GUARD", "ge"));
    let out = run_cli(&dir.0, &ptx, n, &[]);
    assert!(!out.status.success(), "a missing kernel argument must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("saxpy"), "the error names the kernel");
}

/// `--resident-blocks`: a grid-wide barrier over 4 blocks (src/testdata/coresident_probe.cu)
/// completes with the arch's residency and is a deadlock finding (exit non-zero) with 2 blocks
/// resident; 0 is refused.
#[test]
fn resident_blocks_flag_bounds_a_co_scheduled_launch() {
    let dir = TempDir::new("emu-cli-resident");
    let file = dir.0.join("coresident_probe.ptx");
    std::fs::write(&file, include_str!("../src/testdata/coresident_probe.ptx")).unwrap();
    // the barrier's counter and slots start at zero (outputs start poisoned)
    let zeros = [0u8; 20];
    let tensors = vec![
        (
            "published".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![4], &zeros[..16]).unwrap(),
        ),
        (
            "count".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![1], &zeros[16..]).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, &dir.0.join("in.safetensors")).unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptxemu"));
        cmd.args(["run"]).arg(&file).args(["--kernel", "grid_barrier", "--grid", "4", "--block", "32"]);
        cmd.arg("--inputs").arg(dir.0.join("in.safetensors")).arg("--output").arg(dir.0.join("out.safetensors"));
        cmd.args(["--arg", "buf:published", "--arg", "buf:count", "--arg", "out:sums:u32:128"]);
        cmd.args(extra).output().expect("run ptxemu")
    };
    let ok = run(&[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = std::fs::read(dir.0.join("out.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&out).unwrap();
    let sums: Vec<u32> = bytemuck::pod_collect_to_vec(st.tensor("sums").unwrap().data());
    assert_eq!(sums, vec![1 + 2 + 3 + 4; 128]);
    let bad = run(&["--resident-blocks", "2"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("deadlock") && err.contains("2 of the grid's 4 blocks are resident"),
        "{err}"
    );
    let zero = run(&["--resident-blocks", "0"]);
    assert!(!zero.status.success() && String::from_utf8_lossy(&zero.stderr).contains("at least 1"));
}
