//! Emulator fidelity, round 2 (issue 15): each hardware behaviour the emulator now models has a
//! planted-bug kernel that must be reported (kernel, block, thread, PTX line) and a fixed twin
//! that must run clean and compute the right answer; plus the per-architecture launch limits,
//! envelope math, conversions/atomics per the ISA, and the tensor-core accumulation model.
mod common;
use common::*;
use fusebert_emu::arch::{Arch, MathMode, TensorAccum};
use fusebert_kernels::device::emulator::EmulatorOptions;
use fusebert_kernels::{Device, Error, KernelArg, LaunchConfig};

fn dev_with(f: impl FnOnce(&mut EmulatorOptions)) -> Device {
    emu_with(f)
}

/// A hand-written module: header + body; loaded after ptxas accepts it.
fn module(dev: &Device, name: &str, body: &str) -> String {
    let ptx = format!("{PTX_HEADER}{body}");
    load_ptx(dev, name, &ptx);
    ptx
}

// ---------------------------------------------------------------------------------------------
// Uninitialised registers
// ---------------------------------------------------------------------------------------------

/// out[t] = sum over k < n of in[k * 64 + t]; the bug drops the accumulator's zero-init.
fn accum_ptx(init: bool) -> String {
    let init = if init { "mov.f32 \t%f1, 0f00000000;" } else { "// (no zero-init of %f1)" };
    format!(
        r#".visible .entry accum(.param .u64 pin, .param .u64 pout, .param .u32 pn)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [pin];
	ld.param.u64 	%rd2, [pout];
	ld.param.u32 	%r1, [pn];
	mov.u32 	%r2, %tid.x;
	mov.u32 	%r3, 0;
	{init}
$L_loop:
	mad.lo.s32 	%r4, %r3, 64, %r2;
	mul.wide.u32 	%rd3, %r4, 4;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.f32 	%f2, [%rd4];
	add.f32 	%f1, %f1, %f2;   // BUG:acc
	add.s32 	%r3, %r3, 1;
	setp.lt.u32 	%p1, %r3, %r1;
	@%p1 bra 	$L_loop;
	mul.wide.u32 	%rd5, %r2, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.f32 	[%rd6], %f1;
	ret;
}}
"#
    )
}

#[test]
fn register_read_before_write_is_reported_and_initialised_twin_runs() {
    let n = 5u32;
    let mut r = rng(151);
    let input: Vec<f32> = (0..64 * n as usize).map(|_| rand::Rng::gen_range(&mut r, -1.0f32..1.0)).collect();
    let dev = emu();
    let bug = module(&dev, "acc_bug", &accum_ptx(false));
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<f32>(64, 0xFF).unwrap());
    let args = [ptr(&din), ptr(&out), KernelArg::U32(n)];
    let rep = report_of(dev.launch_in("acc_bug", "accum", lin(1, 64), &args), false);
    assert_located(&rep, "accum", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&bug, "BUG:acc")]);
    assert!(rep.contains("%f1") && rep.contains("uninitialised register"), "names the register: {rep}");
    // the twin: same loop with the zero-init
    let dev = emu();
    module(&dev, "acc_ok", &accum_ptx(true));
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<f32>(64, 0xFF).unwrap());
    launch_ok(&dev, "acc_ok", "accum", lin(1, 64), &[ptr(&din), ptr(&out), KernelArg::U32(n)]);
    let got = out.to_host().unwrap();
    for t in 0..64 {
        let want = (0..n as usize).fold(0.0f32, |s, k| s + input[k * 64 + t]);
        assert_eq!(got[t], want, "thread {t}");
    }
}

/// A v4 store whose fourth element was never written (the vector was filled by a v2 load and
/// one scalar move): reported element by element.
fn vec4_ptx(fill_last: bool) -> String {
    let last = if fill_last { "mov.f32 \t%f4, 0f3F800000;" } else { "// (%f4 never written)" };
    format!(
        r#".visible .entry vec4(.param .u64 pin, .param .u64 pout)
{{
	.reg .b32 	%r<4>;
	.reg .f32 	%f<8>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [pin];
	ld.param.u64 	%rd2, [pout];
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd3, %r1, 8;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.v2.f32 	{{%f1, %f2}}, [%rd4];
	add.f32 	%f3, %f1, %f2;
	{last}
	mul.wide.u32 	%rd5, %r1, 16;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.v4.f32 	[%rd6], {{%f1, %f2, %f3, %f4}};   // BUG:vec
	ret;
}}
"#
    )
}

#[test]
fn partially_written_vector_is_reported_and_full_twin_runs() {
    let input: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 3.0).collect();
    let dev = emu();
    let bug = module(&dev, "v_bug", &vec4_ptx(false));
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<f32>(128, 0xFF).unwrap());
    let rep = report_of(dev.launch_in("v_bug", "vec4", lin(1, 32), &[ptr(&din), ptr(&out)]), false);
    assert_located(&rep, "vec4", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&bug, "BUG:vec")]);
    assert!(rep.contains("%f4") && !rep.contains("%f3"), "names exactly the unwritten element: {rep}");
    let dev = emu();
    module(&dev, "v_ok", &vec4_ptx(true));
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<f32>(128, 0xFF).unwrap());
    launch_ok(&dev, "v_ok", "vec4", lin(1, 32), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    for t in 0..32 {
        let (a, b) = (input[2 * t], input[2 * t + 1]);
        assert_eq!(&got[4 * t..4 * t + 4], &[a, b, a + b, 1.0], "thread {t}");
    }
}

/// A predicate set only by the lanes that passed an earlier guard, then used as a guard by all.
fn pred_ptx(all_lanes: bool) -> String {
    let set = if all_lanes { "setp.lt.u32 \t%p2, %r1, 8;" } else { "@%p1 setp.lt.u32 \t%p2, %r1, 8;" };
    format!(
        r#".visible .entry pred(.param .u64 pout)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [pout];
	mov.u32 	%r1, %tid.x;
	setp.lt.u32 	%p1, %r1, 16;
	mov.u32 	%r2, 7;
	{set}
	@%p2 mov.u32 	%r2, 3;   // BUG:pred
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r2;
	ret;
}}
"#
    )
}

#[test]
fn predicate_set_on_some_lanes_only_is_reported_and_twin_runs() {
    let dev = emu();
    let bug = module(&dev, "p_bug", &pred_ptx(false));
    let out = dev.alloc_filled::<u32>(32, 0xFF).unwrap();
    let rep = report_of(dev.launch_in("p_bug", "pred", lin(1, 32), &[ptr(&out)]), false);
    // lanes 16..31 never wrote %p2: the first of them is named
    assert_located(&rep, "pred", (0, 0, 0), Some((16, 0, 0)), &[ptx_loc(&bug, "BUG:pred")]);
    assert!(rep.contains("%p2") && rep.contains("guard"), "names the predicate: {rep}");
    let dev = emu();
    module(&dev, "p_ok", &pred_ptx(true));
    let out = dev.alloc_filled::<u32>(32, 0xFF).unwrap();
    launch_ok(&dev, "p_ok", "pred", lin(1, 32), &[ptr(&out)]);
    let want: Vec<u32> = (0..32).map(|t| if t < 8 { 3 } else { 7 }).collect();
    assert_eq!(out.to_host().unwrap(), want);
}

// ---------------------------------------------------------------------------------------------
// Divergent barrier instructions
// ---------------------------------------------------------------------------------------------

/// Warp 0 and warp 1 take different branches; the bug has a `bar.sync` in each branch (two
/// different instructions), the twin one after the join. out[t] = s[63 - t] after the barrier.
fn barrier_ptx(split: bool) -> String {
    let (in_a, in_b, after) = if split {
        ("bar.sync \t0;   // BUG:bar_a", "bar.sync \t0;   // BUG:bar_b", "")
    } else {
        ("", "", "bar.sync \t0;")
    };
    format!(
        r#".visible .entry bars(.param .u64 pout)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	.shared .align 4 .b8 	sbuf[256];
	ld.param.u64 	%rd1, [pout];
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, sbuf;
	shl.b32 	%r3, %r1, 2;
	add.s32 	%r4, %r2, %r3;
	setp.lt.u32 	%p1, %r1, 32;
	@%p1 bra 	$L_a;
	mul.lo.s32 	%r5, %r1, 3;
	st.shared.u32 	[%r4], %r5;
	{in_b}
	bra.uni 	$L_join;
$L_a:
	mul.lo.s32 	%r5, %r1, 5;
	st.shared.u32 	[%r4], %r5;
	{in_a}
$L_join:
	{after}
	mov.u32 	%r6, 63;
	sub.s32 	%r6, %r6, %r1;
	shl.b32 	%r6, %r6, 2;
	add.s32 	%r6, %r2, %r6;
	ld.shared.u32 	%r7, [%r6];
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r7;
	ret;
}}
"#
    )
}

#[test]
fn warps_at_different_barrier_instructions_are_reported_and_twin_runs() {
    let dev = emu();
    let bug = module(&dev, "b_bug", &barrier_ptx(true));
    let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
    let rep = report_of(dev.launch_in("b_bug", "bars", lin(2, 64), &[ptr(&out)]), false);
    let src = &bug;
    assert_located(&rep, "bars", (0, 0, 0), None, &[ptx_loc(src, "BUG:bar_a"), ptx_loc(src, "BUG:bar_b")]);
    assert!(rep.contains("divergent barrier") && rep.contains("different barrier instruction"), "{rep}");
    let dev = emu();
    module(&dev, "b_ok", &barrier_ptx(false));
    let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
    launch_ok(&dev, "b_ok", "bars", lin(1, 64), &[ptr(&out)]);
    let want: Vec<u32> = (0..64u32).map(|t| 63 - t).map(|j| if j < 32 { j * 5 } else { j * 3 }).collect();
    assert_eq!(out.to_host().unwrap(), want);
}

// ---------------------------------------------------------------------------------------------
// cp.async misuse
// ---------------------------------------------------------------------------------------------

/// Warp 0 copies in[t] into s[t] with cp.async; after a barrier, warp 1 reads s[t - 32].
/// `mode`: "exit" (bug: warp 0 exits with the copy in flight), "nocommit" (bug: wait_group
/// without a commit_group), "clean" (commit + wait, then the barrier).
fn cp_ptx(mode: &str) -> String {
    let after_copy = match mode {
        "exit" => "ret;   // (exits with the copy in flight)",
        "nocommit" => "cp.async.wait_group \t0;",
        _ => "cp.async.commit_group;\n\tcp.async.wait_group \t0;",
    };
    format!(
        r#".visible .entry cp(.param .u64 pin, .param .u64 pout)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 	sbuf[128];
	ld.param.u64 	%rd1, [pin];
	ld.param.u64 	%rd2, [pout];
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, sbuf;
	setp.ge.u32 	%p1, %r1, 32;
	@%p1 bra 	$L_reader;
	shl.b32 	%r3, %r1, 2;
	add.s32 	%r4, %r2, %r3;
	mul.wide.u32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd1, %rd3;
	cp.async.ca.shared.global 	[%r4], [%rd4], 4;
	{after_copy}
$L_reader:
	bar.sync 	0;
	@!%p1 bra 	$L_done;
	sub.s32 	%r5, %r1, 32;
	shl.b32 	%r5, %r5, 2;
	add.s32 	%r5, %r2, %r5;
	ld.shared.u32 	%r6, [%r5];   // BUG:read
	mul.wide.u32 	%rd5, %r1, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.u32 	[%rd6], %r6;
$L_done:
	bar.sync 	0;
	ret;
}}
"#
    )
}

#[test]
fn cp_async_copy_in_flight_at_thread_exit_is_reported() {
    let dev = emu();
    let bug = module(&dev, "cp_exit", &cp_ptx("exit"));
    let input: Vec<u32> = (0..32).map(|i| i * 7 + 1).collect();
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<u32>(64, 0xFF).unwrap());
    let rep = report_of(dev.launch_in("cp_exit", "cp", lin(1, 64), &[ptr(&din), ptr(&out)]), false);
    assert_located(&rep, "cp", (0, 0, 0), Some((32, 0, 0)), &[ptx_loc(&bug, "BUG:read")]);
    assert!(rep.contains("exited with the copy in flight"), "{rep}");
}

#[test]
fn cp_async_wait_group_on_uncommitted_copies_is_reported() {
    let dev = emu();
    let bug = module(&dev, "cp_nc", &cp_ptx("nocommit"));
    let input: Vec<u32> = (0..32).map(|i| i * 7 + 1).collect();
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<u32>(64, 0xFF).unwrap());
    let rep = report_of(dev.launch_in("cp_nc", "cp", lin(1, 64), &[ptr(&din), ptr(&out)]), false);
    assert_located(&rep, "cp", (0, 0, 0), Some((32, 0, 0)), &[ptx_loc(&bug, "BUG:read")]);
    assert!(rep.contains("never committed"), "{rep}");
}

#[test]
fn cp_async_committed_and_waited_twin_runs() {
    let dev = emu();
    module(&dev, "cp_ok", &cp_ptx("clean"));
    let input: Vec<u32> = (0..32).map(|i| i * 7 + 1).collect();
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<u32>(64, 0xFF).unwrap());
    launch_ok(&dev, "cp_ok", "cp", lin(1, 64), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    assert_eq!(&got[32..], &input[..]);
}

/// cp.async of 8 bytes with a src-size operand (bytes read from global, the rest zero-filled).
fn cp_size_ptx() -> &'static str {
    r#".visible .entry cpsz(.param .u64 pin, .param .u64 pout, .param .u32 psrc)
{
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 	sbuf[256];
	ld.param.u64 	%rd1, [pin];
	ld.param.u64 	%rd2, [pout];
	ld.param.u32 	%r7, [psrc];
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, sbuf;
	shl.b32 	%r3, %r1, 3;
	add.s32 	%r4, %r2, %r3;
	mul.wide.u32 	%rd3, %r1, 8;
	add.s64 	%rd4, %rd1, %rd3;
	cp.async.ca.shared.global 	[%r4], [%rd4], 8, %r7;   // BUG:srcsize
	cp.async.commit_group;
	cp.async.wait_group 	0;
	ld.shared.v2.u32 	{%r5, %r6}, [%r4];
	add.s64 	%rd5, %rd2, %rd3;
	st.global.v2.u32 	[%rd5], {%r5, %r6};
	ret;
}
"#
}

#[test]
fn cp_async_src_size_larger_than_copy_is_reported_and_legal_sizes_zero_fill() {
    let input: Vec<u32> = (0..64).map(|i| 0x1000 + i).collect();
    let dev = emu();
    let src = module(&dev, "cpsz", cp_size_ptx());
    let (din, out) = (dev.upload(&input).unwrap(), dev.alloc_filled::<u32>(64, 0xFF).unwrap());
    let rep = report_of(dev.launch_in("cpsz", "cpsz", lin(1, 32), &[ptr(&din), ptr(&out), KernelArg::U32(12)]), false);
    assert_located(&rep, "cpsz", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&src, "BUG:srcsize")]);
    assert!(rep.contains("src-size 12") && rep.contains("copy size 8"), "{rep}");
    // legal: src-size 4 copies the first word and zero-fills the second; 8 copies both
    for (n, second) in [(4u32, false), (8, true)] {
        let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
        launch_ok(&dev, "cpsz", "cpsz", lin(1, 32), &[ptr(&din), ptr(&out), KernelArg::U32(n)]);
        let got = out.to_host().unwrap();
        for t in 0..32 {
            assert_eq!(got[2 * t], input[2 * t], "src-size {n}, thread {t}");
            assert_eq!(got[2 * t + 1], if second { input[2 * t + 1] } else { 0 }, "src-size {n}, thread {t}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-block global write-write races
// ---------------------------------------------------------------------------------------------

const RACE_SRC: &str = r#"
extern "C" __global__ void partial_sums_bug(const float* in, float* out, int n) {
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    float v = i < n ? in[i] : 0.0f;
    out[t] = v * 2.0f;                               // BUG:ww
}
extern "C" __global__ void partial_sums_clean(const float* in, float* out, int n) {
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    float v = i < n ? in[i] : 0.0f;
    out[blockIdx.x * blockDim.x + t] = v * 2.0f;
}
"#;

#[test]
fn cross_block_write_write_race_is_reported_and_twin_runs() {
    let ptx = compile_cu("globalrace", RACE_SRC);
    let dev = emu();
    dev.load_module("gr", &ptx).unwrap();
    let n = 150;
    let input: Vec<f32> = (0..n).map(|i| i as f32 - 70.5).collect();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(192, 0xFF).unwrap();
    let args = [ptr(&din), ptr(&out), KernelArg::I32(n as i32)];
    let rep = report_of(dev.launch_in("gr", "partial_sums_bug", lin(3, 64), &args), false);
    assert!(rep.contains("global write-write race") && rep.contains("partial_sums_bug"), "{rep}");
    assert!(
        contains_whole(&rep.replace(' ', ""), &cu_loc("globalrace", RACE_SRC, "BUG:ww")),
        "names the .cu line: {rep}"
    );
    assert!(rep.matches("block (").count() == 2, "names both blocks: {rep}");
    launch_ok(&dev, "gr", "partial_sums_clean", lin(3, 64), &args);
    let got = out.to_host().unwrap();
    for i in 0..192 {
        assert_eq!(got[i], if i < n { input[i] * 2.0 } else { 0.0 }, "element {i}");
    }
    // the race check is part of check_races
    let off = dev_with(|o| o.check_races = false);
    off.load_module("gr", &ptx).unwrap();
    let (din, out) = (off.upload(&input).unwrap(), off.alloc_filled::<f32>(192, 0xFF).unwrap());
    off.launch_in("gr", "partial_sums_bug", lin(3, 64), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)])
        .expect("race check off: runs");
}

// ---------------------------------------------------------------------------------------------
// Per-architecture launch limits
// ---------------------------------------------------------------------------------------------

/// A kernel with `stat` bytes of static shared memory that touches its dynamic region.
fn smem_ptx(stat: u32) -> String {
    format!(
        r#".extern .shared .align 16 .b8 	dyn[];
.visible .entry smem(.param .u64 pout)
{{
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<4>;
	.shared .align 16 .b8 	stat[{stat}];
	ld.param.u64 	%rd1, [pout];
	mov.u32 	%r1, dyn;
	mov.u32 	%r2, 5;
	st.shared.u32 	[%r1], %r2;
	mov.u32 	%r3, stat;
	st.shared.u32 	[%r3], %r2;
	ld.shared.u32 	%r2, [%r1];
	st.global.u32 	[%rd1], %r2;
	ret;
}}
"#
    )
}

fn smem_launch(arch: Arch, stat: u32, dynamic: u32) -> fusebert_kernels::Result<()> {
    let dev = dev_with(|o| o.arch = arch);
    // (not through ptxas: it refuses more than 48 KiB of static shared memory itself)
    dev.load_module("smem", &format!("{PTX_HEADER}{}", smem_ptx(stat))).unwrap();
    let out = dev.alloc_filled::<u32>(1, 0xFF).unwrap();
    dev.launch_in("smem", "smem", LaunchConfig::linear(1, 32, dynamic), &[ptr(&out)])?;
    assert_eq!(out.to_host().unwrap()[0], 5);
    Ok(())
}

fn refused(r: fusebert_kernels::Result<()>, needles: &[&str]) {
    match r {
        Err(Error::Kernel { kernel, msg }) => {
            for n in needles {
                assert!(msg.contains(n), "`{n}` missing from the refusal of `{kernel}`: {msg}");
            }
        }
        other => panic!("expected a refused launch (Error::Kernel), got {other:?}"),
    }
}

#[test]
fn shared_memory_limits_per_arch_with_and_without_opt_in() {
    const K: u32 = 1024;
    // dynamic > 48 KiB: the launch opts in (as the CUDA backend does), up to each arch's cap
    smem_launch(Arch::Sm80, 16, 160 * K).unwrap();
    refused(smem_launch(Arch::Sm80, 16, 164 * K), &["sm_80", "166912"]);
    smem_launch(Arch::Sm86, 16, 96 * K).unwrap();
    refused(smem_launch(Arch::Sm86, 16, 100 * K), &["sm_86", "101376"]);
    refused(smem_launch(Arch::Sm89, 16, 100 * K), &["sm_89"]);
    smem_launch(Arch::Sm90, 16, 220 * K).unwrap();
    refused(smem_launch(Arch::Sm90, 16, 228 * K), &["sm_90", "232448"]);
    // the 48 KiB default: 24 KiB static + 30 KiB dynamic needs the opt-in, which a launch
    // with only 30 KiB of dynamic memory does not set
    refused(smem_launch(Arch::Sm80, 24 * K, 30 * K), &["49152", "MAX_DYNAMIC_SHARED_SIZE_BYTES"]);
    smem_launch(Arch::Sm80, 24 * K, 24 * K).unwrap();
    // static shared memory above 48 KiB is refused on every arch
    refused(smem_launch(Arch::Sm90, 49 * K, 0), &["static"]);
    // setting the attribute explicitly, as a driver user would, makes the 54 KiB launch legal
    let dev = dev_with(|o| o.arch = Arch::Sm80);
    module(&dev, "smem", &smem_ptx(24 * K));
    let emu = dev.emulator_backend().unwrap();
    emu.set_max_dynamic_shared("smem", "smem", 30 * K).unwrap();
    let out = dev.alloc_filled::<u32>(1, 0xFF).unwrap();
    dev.launch_in("smem", "smem", LaunchConfig::linear(1, 32, 30 * K), &[ptr(&out)]).unwrap();
    assert_eq!(out.to_host().unwrap()[0], 5);
    // and the attribute itself is capped like cuFuncSetAttribute
    assert!(emu.set_max_dynamic_shared("smem", "smem", 150 * K).is_err());
}

#[test]
fn threads_and_registers_per_block_are_enforced() {
    let dev = dev_with(|o| o.arch = Arch::Sm86);
    module(&dev, "smem", &smem_ptx(16));
    let out = dev.alloc_filled::<u32>(1, 0xFF).unwrap();
    refused(dev.launch_in("smem", "smem", LaunchConfig::linear(1, 1056, 0), &[ptr(&out)]), &["1056", "sm_86"]);
    // the embedded layernorm (ptxas: 66 registers per thread, no launch bounds) cannot run
    // 1024 threads per block (72 x 1024 > 64 Ki): refused before the arguments are looked at
    refused(
        dev.launch("layernorm_f16", LaunchConfig { grid: (1, 1, 1), block: (1024, 1, 1), shared_mem_bytes: 0 }, &[]),
        &["registers", "65536"],
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope math
// ---------------------------------------------------------------------------------------------

/// out[i] = OP(in[i]) for one f32 approximate instruction.
fn unary_ptx(inst: &str) -> String {
    format!(
        r#".visible .entry un(.param .u64 pin, .param .u64 pout, .param .u32 pn)
{{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<6>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [pin];
	ld.param.u64 	%rd2, [pout];
	ld.param.u32 	%r1, [pn];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.ge.u32 	%p1, %r5, %r1;
	@%p1 bra 	$L_end;
	mul.wide.u32 	%rd3, %r5, 4;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.f32 	%f1, [%rd4];
	{inst} 	%f2, %f1;
	add.s64 	%rd5, %rd2, %rd3;
	st.global.f32 	[%rd5], %f2;
$L_end:
	ret;
}}
"#
    )
}

fn run_unary(math: MathMode, inst: &str, xs: &[f32]) -> Vec<f32> {
    let dev = dev_with(|o| o.math = math);
    module(&dev, "un", &unary_ptx(inst));
    let (din, out) = (dev.upload(xs).unwrap(), dev.alloc_filled::<f32>(xs.len(), 0xFF).unwrap());
    launch_ok(
        &dev,
        "un",
        "un",
        lin((xs.len() as u32).div_ceil(64), 64),
        &[ptr(&din), ptr(&out), KernelArg::U32(xs.len() as u32)],
    );
    out.to_host().unwrap()
}

/// ulp of the f32 nearest t.
fn ulp(t: f64) -> f64 {
    let a = (t.abs() as f32).max(f32::MIN_POSITIVE);
    2f64.powi(((a.to_bits() >> 23) & 0xff) as i32 - 127 - 23)
}

#[test]
fn envelope_math_stays_inside_each_bound_reaches_it_and_is_deterministic() {
    let xs: Vec<f32> = (0..777).map(|i| 0.013 + i as f32 * 0.0371).collect();
    type Case = (&'static str, fn(f64) -> f64, fn(f64) -> f64);
    let cases: [Case; 7] = [
        ("ex2.approx.f32", |x| x.exp2(), |t| 2.0 * ulp(t)),
        ("rcp.approx.f32", |x| 1.0 / x, |t| ulp(t)),
        ("rsqrt.approx.f32", |x| 1.0 / x.sqrt(), |t| 2f64.powf(-22.9) * t.abs()),
        ("tanh.approx.f32", |x| x.tanh(), |t| 2f64.powi(-11) * t.abs()),
        ("lg2.approx.f32", |x| x.log2(), |_| 2f64.powf(-22.6)),
        ("sin.approx.f32", |x| x.sin(), |_| 2f64.powf(-20.9)),
        ("cos.approx.f32", |x| x.cos(), |_| 2f64.powf(-20.9)),
    ];
    // lg2's absolute bound is below an ulp for |result| >= 2: test it where it has room
    let xs_lg2: Vec<f32> = (0..777).map(|i| 0.5 + i as f32 * 0.0019).collect();
    for (inst, f, bound) in cases {
        let xs = if inst.starts_with("lg2") { &xs_lg2 } else { &xs };
        let env = run_unary(MathMode::Envelope, inst, xs);
        let exact = run_unary(MathMode::Exact, inst, xs);
        let mut worst: f64 = 0.0;
        let mut moved = 0;
        for (i, &x) in xs.iter().enumerate() {
            let t = f(x as f64);
            let b = bound(t);
            assert!((env[i] as f64 - t).abs() <= b, "{inst}({x}): {} is outside +-{b} of {t}", env[i]);
            assert_eq!(exact[i], t as f32, "{inst}({x}) exact mode is correctly rounded");
            worst = worst.max((env[i] as f64 - t).abs() / b);
            moved += (env[i] != exact[i]) as usize;
        }
        assert!(worst > 0.75, "{inst}: envelope reaches only {worst:.2} of its bound");
        // (a 1-ulp bound leaves about half of the results on the correctly rounded value)
        assert!(moved > xs.len() / 3, "{inst}: only {moved} of {} results differ from exact", xs.len());
        assert_eq!(run_unary(MathMode::Envelope, inst, xs), env, "{inst}: envelope is deterministic");
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions and atomics per the ISA tables
// ---------------------------------------------------------------------------------------------

#[test]
fn nan_to_integer_and_saturation_follow_the_isa() {
    let nan32 = f32::NAN.to_bits();
    let z = vec![0u32; 1];
    let one = |body: &str, a: u32| run32(body, &[a], &z, &z).unwrap()[0];
    // f32 source into 32 bits or fewer: 0
    assert_eq!(one("cvt.rzi.s32.f32 \t%r20, %r10;", nan32), 0);
    assert_eq!(one("cvt.rni.u32.f32 \t%r20, %r10;", nan32), 0);
    assert_eq!(one("cvt.rzi.s16.f32 \t%rs1, %r10;\n\tcvt.s32.s16 \t%r20, %rs1;", nan32), 0);
    // saturation to the destination range
    assert_eq!(one("cvt.rzi.s32.f32 \t%r20, %r10;", 3e10f32.to_bits()), i32::MAX as u32);
    assert_eq!(one("cvt.rzi.s32.f32 \t%r20, %r10;", f32::NEG_INFINITY.to_bits()), i32::MIN as u32);
    assert_eq!(one("cvt.rzi.u32.f32 \t%r20, %r10;", (-1.5f32).to_bits()), 0);
    assert_eq!(one("cvt.rni.u8.f32 \t%rs1, %r10;\n\tcvt.u32.u16 \t%r20, %rs1;", 300.0f32.to_bits()), 255);
    assert_eq!(
        one("cvt.rni.s8.f32 \t%rs1, %r10;\n\tcvt.s32.s16 \t%r20, %rs1;", (-300.0f32).to_bits()),
        (-128i32) as u32
    );
    // f32 source into 64 bits: the most negative value; f64 source: the most negative value of
    // the destination width, 32-bit included
    let z64 = vec![0u64; 1];
    let one64 = |body: &str, a: u64| run64(body, &[a], &z64, &z64).unwrap()[0];
    assert_eq!(one64("cvt.rzi.s64.f32 \t%rd20, %r10;", nan32 as u64), 1u64 << 63);
    assert_eq!(one64("cvt.rzi.u64.f32 \t%rd20, %r10;", nan32 as u64), 1u64 << 63);
    assert_eq!(one64("cvt.rzi.s64.f64 \t%rd20, %rd10;", f64::NAN.to_bits()), 1u64 << 63);
    assert_eq!(one64("cvt.rzi.s32.f64 \t%r20, %rd10;\n\tcvt.u64.u32 \t%rd20, %r20;", f64::NAN.to_bits()), 1u64 << 31);
    assert_eq!(one64("cvt.rzi.u32.f64 \t%r20, %rd10;\n\tcvt.u64.u32 \t%rd20, %r20;", f64::NAN.to_bits()), 1u64 << 31);
    assert_eq!(one64("cvt.rzi.s64.f64 \t%rd20, %rd10;", 1e300f64.to_bits()), i64::MAX as u64);
}

/// One thread adds a subnormal to 0.0 with atom.add.f32, once in global and once in shared
/// memory; out = [global result, returned old global value, shared result].
const ATOM_PTX: &str = r#".visible .entry atomsub(.param .u64 pg, .param .u64 pout, .param .f32 pv)
{
	.reg .b32 	%r<4>;
	.reg .f32 	%f<6>;
	.reg .b64 	%rd<4>;
	.shared .align 4 .f32 	sv;
	ld.param.u64 	%rd1, [pg];
	ld.param.u64 	%rd2, [pout];
	ld.param.f32 	%f1, [pv];
	atom.global.add.f32 	%f2, [%rd1], %f1;
	ld.global.f32 	%f3, [%rd1];
	mov.f32 	%f4, 0f00000000;
	st.shared.f32 	[sv], %f4;
	atom.shared.add.f32 	%f5, [sv], %f1;
	ld.shared.f32 	%f5, [sv];
	st.global.f32 	[%rd2], %f3;
	st.global.f32 	[%rd2+4], %f2;
	st.global.f32 	[%rd2+8], %f5;
	ret;
}
"#;

#[test]
fn global_atom_add_f32_flushes_subnormals_shared_keeps_them() {
    let dev = emu();
    module(&dev, "atomsub", ATOM_PTX);
    let sub = f32::from_bits(0x0000_1234); // a subnormal
    for (start, want_global) in [(0.0f32, 0.0f32), (1.5e-38, 0.0), (1.0, 1.0), (-sub, 0.0)] {
        let g = dev.upload(&[start]).unwrap();
        let out = dev.alloc_filled::<f32>(3, 0xFF).unwrap();
        launch_ok(&dev, "atomsub", "atomsub", lin(1, 1), &[ptr(&g), ptr(&out), KernelArg::F32(sub)]);
        let got = out.to_host().unwrap();
        // 1.5e-38 is normal: the flushed subnormal adds nothing to it
        let want_global = if start == 1.5e-38 { start } else { want_global };
        assert_eq!(got[0].to_bits(), want_global.to_bits(), "global atom.add.f32 from {start:e}");
        assert_eq!(got[1].to_bits(), start.to_bits(), "returned old value from {start:e}");
        assert_eq!(got[2].to_bits(), sub.to_bits(), "shared atom.add.f32 keeps the subnormal");
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core accumulation
// ---------------------------------------------------------------------------------------------

const MMA_PTX: &str = r#".visible .entry mma1(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd)
{
	.reg .b32 	%r<24>;
	.reg .f32 	%f<12>;
	.reg .b64 	%rd<12>;
	ld.param.u64 	%rd1, [pa];
	ld.param.u64 	%rd2, [pb];
	ld.param.u64 	%rd3, [pc];
	ld.param.u64 	%rd4, [pd];
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd5, %r1, 16;
	add.s64 	%rd6, %rd1, %rd5;
	ld.global.v4.u32 	{%r10, %r11, %r12, %r13}, [%rd6];
	mul.wide.u32 	%rd7, %r1, 8;
	add.s64 	%rd8, %rd2, %rd7;
	ld.global.v2.u32 	{%r14, %r15}, [%rd8];
	add.s64 	%rd9, %rd3, %rd5;
	ld.global.v4.f32 	{%f1, %f2, %f3, %f4}, [%rd9];
	mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 	{%f5, %f6, %f7, %f8}, {%r10, %r11, %r12, %r13}, {%r14, %r15}, {%f1, %f2, %f3, %f4};
	add.s64 	%rd10, %rd4, %rd5;
	st.global.v4.f32 	[%rd10], {%f5, %f6, %f7, %f8};
	ret;
}
"#;

/// D = A B + C on one warp with every A element `a`, every B element `b` (f16 bits) and every C
/// element `c`, or (single) only k = 0 nonzero; returns D[0][0] (lane 0, c0).
fn mma_one(accum: Option<TensorAccum>, arch: Arch, a: f32, b: f32, c: f32, single: bool) -> f32 {
    let dev = dev_with(|o| {
        o.arch = arch;
        o.tensor_accum = accum;
    });
    module(&dev, "mma1", MMA_PTX);
    let h = |x: f32| half::f16::from_f32(x).to_bits() as u32;
    assert_eq!(half::f16::from_f32(a).to_f32(), a, "a must be exact in f16");
    assert_eq!(half::f16::from_f32(b).to_f32(), b, "b must be exact in f16");
    let mut af = vec![0u32; 128];
    let mut bf = vec![0u32; 64];
    for lane in 0..32 {
        let t = lane & 3;
        if single {
            // only k = 0: A[g][0] and A[g+8][0] (R0, R1 low halves of t = 0), B[0][g] (R0 low)
            if t == 0 {
                af[lane * 4] = h(a);
                af[lane * 4 + 1] = h(a);
                bf[lane * 2] = h(b);
            }
        } else {
            af[lane * 4..lane * 4 + 4].fill(h(a) | h(a) << 16);
            bf[lane * 2..lane * 2 + 2].fill(h(b) | h(b) << 16);
        }
    }
    let cf = vec![c; 128];
    let (da, db, dc) = (dev.upload(&af).unwrap(), dev.upload(&bf).unwrap(), dev.upload(&cf).unwrap());
    let d = dev.alloc_filled::<f32>(128, 0xFF).unwrap();
    launch_ok(&dev, "mma1", "mma1", lin(1, 32), &[ptr(&da), ptr(&db), ptr(&dc), ptr(&d)]);
    d.to_host().unwrap()[0]
}

/// Pins the fused-sum-with-truncation model (Fasi et al. 2021, A100): sixteen products of
/// 3 * 2^-26 onto 1.0. Sequential IEEE adds round each one away (0.375 ulp < 0.5): 1.0. The
/// fused model keeps them (aligned to 2^-26, within the 3 extra bits) and sums 8 per block:
/// 1 + 6 * 2^-23. A single product of 3 * 2^-25 (0.75 ulp): IEEE rounds up to 1 + 2^-23, the
/// model truncates to 1.0; negated, toward zero again: -1.0.
#[test]
fn tensor_core_accumulation_follows_the_a100_model_selected_by_arch() {
    let (a, b) = (1.5 * 2f32.powi(-13), 2f32.powi(-12));
    let seq = Some(TensorAccum::Sequential);
    let ulp1 = f32::EPSILON;
    assert_eq!(mma_one(seq, Arch::Sm80, a, b, 1.0, false), 1.0);
    for arch in Arch::ALL {
        assert_eq!(mma_one(None, arch, a, b, 1.0, false), 1.0 + 6.0 * ulp1, "{arch}: blocks of 8, exact alignment");
    }
    // one block of 16 (a hypothetical wider unit) gives the same here; a block of 4 too: the
    // test pins fusing and truncation, not the block size
    let a2 = 1.5 * 2f32.powi(-12);
    assert_eq!(mma_one(seq, Arch::Sm80, a2, b, 1.0, true), 1.0 + ulp1, "IEEE rounds 0.75 ulp up");
    assert_eq!(mma_one(None, Arch::Sm80, a2, b, 1.0, true), 1.0, "truncation drops 0.75 ulp");
    assert_eq!(mma_one(None, Arch::Sm80, -a2, b, -1.0, true), -1.0, "truncation is toward zero");
    // terms far below the largest one fall off the aligned significand entirely
    let tiny = 2f32.powi(-14);
    assert_eq!(mma_one(None, Arch::Sm80, tiny, tiny, 1.0, false), 1.0, "2^-28 terms vanish under 1.0");
    assert_eq!(mma_one(seq, Arch::Sm80, tiny, tiny, 0.0, false), 16.0 * 2f32.powi(-28), "alone they are exact");
    assert_eq!(mma_one(None, Arch::Sm80, tiny, tiny, 0.0, false), 16.0 * 2f32.powi(-28), "alone they are exact");
}
