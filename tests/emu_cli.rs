//! `fusebert emu run` (research CLI, notes/emu-api.md) through the real binary: a saxpy PTX
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
    let file = dir.join("k.ptx");
    std::fs::write(&file, ptx).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusebert"));
    cmd.args(["emu", "run"]).arg(&file).args(["--kernel", "saxpy", "--grid", "3", "--block", "64"]);
    cmd.arg("--inputs").arg(dir.join("in.safetensors")).arg("--output").arg(dir.join("out.safetensors"));
    cmd.args(["--arg", "buf:x", "--arg", "buf:y", "--arg", &format!("out:z:f32:{n}"), "--arg", "f32:2.5"]);
    cmd.args(extra);
    cmd.output().expect("run fusebert")
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
