//! Control flow and block synchronisation [PTX ISA 9.7.12 (bra, call, ret, exit), 9.7.13.1
//! bar/barrier, bar.red]: divergence and reconvergence (nested if/else, lane-dependent loop
//! trip counts, break), exited threads releasing a barrier, bar.red reductions, device-function
//! calls, multi-dimensional indices, and identical results whatever the worker-thread count.
mod common;
use common::*;
use fusebert_kernels::{Device, KernelArg, LaunchConfig};
use rand::Rng;

const DIVERGE_CU: &str = r#"
extern "C" __global__ void diverge(const int* in, int* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    int v = in[i];
    int acc = 0;
    if (v & 1) {
        if (v & 2) acc = v * 3;            // nested if/else
        else acc = v - 7;
    } else {
        for (int k = 0; k < (lane % 7) + (v & 3); ++k) acc += k * v;   // lane-dependent trip count
        if (acc > 5000) acc = acc * 5 - lane;
    }
    int w = 0;
    while (true) {                          // loop left by break, lane-dependent
        w += 2;
        if (w > (v & 15)) break;
        if (w & 4) continue;
        w += 1;
    }
    // the whole warp must be reconverged for these full-mask collectives
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    unsigned b = __ballot_sync(0xffffffffu, w & 1);
    __syncthreads();
    out[i] = acc + w * 1000 + (int)(__popc(b) << 20);
}
"#;

fn diverge_ref(input: &[i32]) -> Vec<i32> {
    let n = input.len();
    let mut acc = vec![0i32; n];
    let mut w = vec![0i32; n];
    for i in 0..n {
        let lane = (i % 32) as i32;
        let v = input[i];
        let mut a = 0;
        if v & 1 != 0 {
            a = if v & 2 != 0 { v * 3 } else { v - 7 };
        } else {
            for k in 0..(lane % 7) + (v & 3) {
                a += k * v;
            }
            if a > 5000 {
                a = a * 5 - lane;
            }
        }
        let mut ww = 0;
        loop {
            ww += 2;
            if ww > (v & 15) {
                break;
            }
            if ww & 4 != 0 {
                continue;
            }
            ww += 1;
        }
        acc[i] = a;
        w[i] = ww;
    }
    (0..n)
        .map(|i| {
            let warp = i / 32 * 32;
            let pop = (warp..warp + 32).filter(|&j| w[j] & 1 != 0).count() as i32;
            acc[i] + acc[i ^ 1] + w[i] * 1000 + (pop << 20)
        })
        .collect()
}

fn run_diverge(dev: &Device, ptx: &str, input: &[i32]) -> Vec<i32> {
    dev.load_module("div", ptx).unwrap();
    let din = dev.upload(input).unwrap();
    let out = dev.alloc_filled::<i32>(input.len(), 0xFF).unwrap();
    launch_ok(dev, "div", "diverge", lin((input.len() / 96) as u32, 96), &[ptr(&din), ptr(&out)]);
    out.to_host().unwrap()
}

fn diverge_input() -> Vec<i32> {
    let mut r = rng(1);
    (0..96 * 3).map(|_| r.gen_range(0..400)).collect()
}

#[test]
fn divergence_nested_if_loops_break_reconverge() {
    let ptx = compile_cu("diverge", DIVERGE_CU);
    let input = diverge_input();
    let got = run_diverge(&emu(), &ptx, &input);
    assert_eq!(got, diverge_ref(&input));
}

const CALL_CU: &str = r#"
__device__ __noinline__ int helper(int a, int b) {   // stays a .func: call.uni
    return a * 5 - b;
}
__device__ __noinline__ float fhelper(float x, int k) {   // nested call, loop inside
    float s = x;
    for (int j = 0; j < k; ++j) s += x * 0.5f;
    return s + (float)helper(k, 1);
}
extern "C" __global__ void caller(const int* in, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    int h = (v & 1) ? helper(v, threadIdx.x) : v;            // call under divergence
    out[i] = (float)h + fhelper((float)v, v & 3);
}
"#;

#[test]
fn device_function_calls() {
    let ptx = compile_cu("caller", CALL_CU);
    assert!(ptx.contains("call.uni") || ptx.contains("call "), "helpers must stay calls for this test");
    let mut r = rng(5);
    let input: Vec<i32> = (0..192).map(|_| r.gen_range(0..1000)).collect();
    let dev = emu();
    dev.load_module("call", &ptx).unwrap_or_else(|e| panic!("load: {e}"));
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(192, 0xFF).unwrap();
    launch_ok(&dev, "call", "caller", lin(3, 64), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    fn fh(x: f32, k: i32) -> f32 {
        let mut s = x;
        for _ in 0..k {
            s += x * 0.5;
        }
        s + (k * 5 - 1) as f32
    }
    for i in 0..192 {
        let v = input[i];
        let h = if v & 1 != 0 { v * 5 - (i % 64) as i32 } else { v };
        let want = h as f32 + fh(v as f32, v & 3);
        assert_eq!(got[i], want, "element {i}");
    }
}

const RECURSE_CU: &str = r#"
__device__ __noinline__ int fib(int k) { return k < 2 ? k : fib(k - 1) + fib(k - 2); }
extern "C" __global__ void recurse(const int* in, int* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = fib(in[i]);
}
"#;

/// Recursion needs a real call stack. The emulator may support it or refuse it, but only with a
/// typed error (never a panic or a wrong answer).
#[test]
fn recursive_device_function_runs_or_is_refused_with_a_typed_error() {
    let ptx = compile_cu("recurse", RECURSE_CU);
    let input: Vec<i32> = (0..64).map(|i| i % 12).collect();
    let dev = emu();
    let loaded = dev.load_module("rec", &ptx);
    let run = loaded.and_then(|_| {
        let din = dev.upload(&input)?;
        let out = dev.alloc_filled::<i32>(64, 0xFF)?;
        dev.launch_in("rec", "recurse", lin(2, 32), &[ptr(&din), ptr(&out)])?;
        out.to_host()
    });
    match run {
        Ok(got) => {
            fn fib(k: i32) -> i32 {
                if k < 2 {
                    k
                } else {
                    fib(k - 1) + fib(k - 2)
                }
            }
            assert_eq!(got, input.iter().map(|&k| fib(k)).collect::<Vec<_>>());
        }
        Err(fusebert_kernels::Error::PtxParse { msg, .. }) | Err(fusebert_kernels::Error::Emulator(msg)) => {
            assert!(
                msg.contains("recurs") || msg.contains("fib") || msg.contains("call"),
                "refusal should say why: {msg}"
            );
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

const EARLY_EXIT_CU: &str = r#"
extern "C" __global__ void early_exit(const float* in, float* out, int n) {
    __shared__ float s[128];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    if (i >= n) return;                    // exited threads must release the barrier below
    s[t] = in[i];
    __syncthreads();
    int live = min((int)blockDim.x, n - (int)(blockIdx.x * blockDim.x));
    out[i] = s[t] + 2.0f * s[(t + 1) % live];
}
"#;

#[test]
fn barrier_after_early_return_is_released_by_exited_threads() {
    let ptx = compile_cu("early_exit", EARLY_EXIT_CU);
    // last block: 45 live threads = one full warp + 13 lanes; two warps exit entirely
    let n = 128 * 2 + 45;
    let mut r = rng(2);
    let input: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let dev = emu();
    dev.load_module("ee", &ptx).unwrap();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    launch_ok(&dev, "ee", "early_exit", lin(3, 128), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)]);
    let got = out.to_host().unwrap();
    for i in 0..n {
        let (b, t) = (i / 128, i % 128);
        let live = 128.min(n - b * 128);
        let want = input[i] + 2.0 * input[b * 128 + (t + 1) % live];
        assert_eq!(got[i].to_bits(), want.to_bits(), "element {i}");
    }
}

#[test]
fn bar_red_popc_and_or() {
    const N: usize = 256; // 4 blocks of 64 in the element-wise harness
    let mut r = rng(3);
    let p: Vec<u32> = (0..N)
        .map(|i| match i / 64 {
            0 => 1,
            1 => 0,
            2 => r.gen_range(0..2),
            _ => (i % 64 == 40) as u32,
        })
        .collect();
    let body = "\tsetp.ne.u32 \t%p1, %r10, 0;\n\tbar.red.popc.u32 \t%r21, 0, %p1;\n\tbar.red.and.pred \t%p2, 1, %p1;\n\tbar.red.or.pred \t%p3, 2, !%p1;\n\tselp.u32 \t%r22, 1024, 0, %p2;\n\tselp.u32 \t%r23, 2048, 0, %p3;\n\tor.b32 \t%r20, %r21, %r22;\n\tor.b32 \t%r20, %r20, %r23;";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let blk = &p[i / 64 * 64..i / 64 * 64 + 64];
            let popc = blk.iter().filter(|&&x| x != 0).count() as u32;
            let all = blk.iter().all(|&x| x != 0) as u32;
            let any_not = blk.contains(&0) as u32;
            popc | (all << 10) | (any_not << 11)
        })
        .collect();
    let mut ck = Check::new();
    ck.cmp("bar.red.popc/and/or", run32(body, &p, &p, &p), &want, |i| format!("block {}", i / 64), |g, w| g == w);
    ck.finish();
}

const INDEX_PTX: &str = r#"
.visible .entry idx3(
	.param .u64 p_out
)
{
	.reg .b32 	%r<40>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, %tid.y;
	mov.u32 	%r3, %tid.z;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %ntid.y;
	mov.u32 	%r6, %ntid.z;
	mov.u32 	%r7, %ctaid.x;
	mov.u32 	%r8, %ctaid.y;
	mov.u32 	%r9, %ctaid.z;
	mov.u32 	%r10, %nctaid.x;
	mov.u32 	%r11, %nctaid.y;
	mov.u32 	%r12, %nctaid.z;
	mov.u32 	%r13, %laneid;
	mov.u32 	%r14, %warpid;
	// linear thread id in block, linear block id
	mad.lo.s32 	%r15, %r3, %r5, %r2;
	mad.lo.s32 	%r16, %r15, %r4, %r1;
	mad.lo.s32 	%r17, %r9, %r11, %r8;
	mad.lo.s32 	%r18, %r17, %r10, %r7;
	mul.lo.s32 	%r19, %r4, %r5;
	mul.lo.s32 	%r20, %r19, %r6;
	mad.lo.s32 	%r21, %r18, %r20, %r16;
	// pack: tid | ntid | ctaid | nctaid bytes
	shl.b32 	%r22, %r2, 8;
	shl.b32 	%r23, %r3, 16;
	or.b32 	%r24, %r1, %r22;
	or.b32 	%r24, %r24, %r23;
	shl.b32 	%r25, %r5, 8;
	shl.b32 	%r26, %r6, 16;
	or.b32 	%r27, %r4, %r25;
	or.b32 	%r27, %r27, %r26;
	shl.b32 	%r28, %r8, 8;
	shl.b32 	%r29, %r9, 16;
	or.b32 	%r30, %r7, %r28;
	or.b32 	%r30, %r30, %r29;
	shl.b32 	%r31, %r11, 8;
	shl.b32 	%r32, %r12, 16;
	or.b32 	%r33, %r10, %r31;
	or.b32 	%r33, %r33, %r32;
	// laneid must equal linear tid % 32
	and.b32 	%r34, %r16, 31;
	xor.b32 	%r35, %r34, %r13;
	mul.wide.u32 	%rd2, %r21, 20;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r24;
	st.global.u32 	[%rd3+4], %r27;
	st.global.u32 	[%rd3+8], %r30;
	st.global.u32 	[%rd3+12], %r33;
	st.global.u32 	[%rd3+16], %r35;
	membar.gl;
	fence.acq_rel.gpu;
	activemask.b32 	%r36;
	bar.warp.sync 	%r36;
	ret;
}
"#;

#[test]
fn multi_dimensional_indices_and_special_registers() {
    let (grid, block) = ((2u32, 3u32, 2u32), (5u32, 3u32, 4u32)); // 60 threads: last warp partial
    let total = (grid.0 * grid.1 * grid.2 * block.0 * block.1 * block.2) as usize;
    let dev = emu();
    load_ptx(&dev, "idx", &format!("{PTX_HEADER}{INDEX_PTX}"));
    let out = dev.alloc_filled::<u32>(total * 5, 0xFF).unwrap();
    launch_ok(&dev, "idx", "idx3", LaunchConfig { grid, block, shared_mem_bytes: 0 }, &[ptr(&out)]);
    let o = out.to_host().unwrap();
    let mut k = 0;
    for bz in 0..grid.2 {
        for by in 0..grid.1 {
            for bx in 0..grid.0 {
                for tz in 0..block.2 {
                    for ty in 0..block.1 {
                        for tx in 0..block.0 {
                            let want = [
                                tx | ty << 8 | tz << 16,
                                block.0 | block.1 << 8 | block.2 << 16,
                                bx | by << 8 | bz << 16,
                                grid.0 | grid.1 << 8 | grid.2 << 16,
                                0,
                            ];
                            assert_eq!(&o[5 * k..5 * k + 5], &want, "block ({bx},{by},{bz}) thread ({tx},{ty},{tz})");
                            k += 1;
                        }
                    }
                }
            }
        }
    }
}

const EXIT_PTX: &str = r#"
.visible .entry partial_exit(
	.param .u64 p_out
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<16>;
	.reg .b64 	%rd<8>;
	.shared .align 4 .b8 cnt[4];
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, cnt;
	setp.ne.u32 	%p1, %r1, 0;
	@%p1 bra 	$L__SKIP;
	mov.u32 	%r3, 0;
	st.shared.u32 	[%r2], %r3;
$L__SKIP:
	bar.sync 	0;
	// lanes with tid % 3 == 0 exit here (mid-warp); the others count themselves after a barrier
	rem.u32 	%r4, %r1, 3;
	setp.eq.u32 	%p2, %r4, 0;
	@%p2 exit;
	atom.shared.add.u32 	%r5, [%r2], 1;
	bar.sync 	0;
	ld.shared.u32 	%r6, [%r2];
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r6;
	ret;
}
"#;

#[test]
fn exit_mid_warp_then_barrier() {
    let dev = emu();
    load_ptx(&dev, "ex", &format!("{PTX_HEADER}{EXIT_PTX}"));
    let out = dev.alloc_filled::<u32>(100, 0xFF).unwrap();
    launch_ok(&dev, "ex", "partial_exit", lin(1, 100), &[ptr(&out)]);
    let o = out.to_host().unwrap();
    let live = (0..100).filter(|t| t % 3 != 0).count() as u32;
    for (t, &o) in o.iter().enumerate().take(100) {
        assert_eq!(o, if t % 3 == 0 { u32::MAX } else { live }, "thread {t}");
    }
}

/// The same launches with one worker thread and with the default pool give identical output
/// bytes and identical counters.
#[test]
fn results_independent_of_worker_thread_count() {
    let ptx_div = compile_cu("diverge", DIVERGE_CU);
    let ptx_ee = compile_cu("early_exit", EARLY_EXIT_CU);
    let input = diverge_input();
    let n = 128 * 3; // whole blocks: this test is about scheduling, not early exit
    let mut r = rng(4);
    let fin: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let run = |threads: usize| -> (Vec<i32>, Vec<u32>, Vec<serde_json::Value>) {
        let dev = emu_with(|o| o.threads = threads);
        let a = run_diverge(&dev, &ptx_div, &input);
        dev.load_module("ee", &ptx_ee).unwrap();
        let din = dev.upload(&fin).unwrap();
        let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
        launch_ok(&dev, "ee", "early_exit", lin(3, 128), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)]);
        let b: Vec<u32> = out.to_host().unwrap().iter().map(|x| x.to_bits()).collect();
        let counters = dev.emulator_backend().unwrap().launches().iter().map(|l| l.counters.to_json()).collect();
        (a, b, counters)
    };
    let one = run(1);
    let many = run(0);
    assert_eq!(one.0, many.0, "diverge output");
    assert_eq!(one.1, many.1, "early_exit output bytes");
    assert_eq!(one.2, many.2, "counters");
}

/// The same divergent kernel compiled with `-G` (no optimisation, `.section .debug_*` blocks,
/// many more branches and local traffic) must give the same answers.
#[test]
fn debug_build_with_dwarf_sections_runs_the_same() {
    let ptx = compile_cu_with("diverge_g", DIVERGE_CU, &["-G"]);
    assert!(ptx.contains(".section"), "-G output should carry debug sections");
    let input = diverge_input();
    let got = run_diverge(&emu(), &ptx, &input);
    assert_eq!(got, diverge_ref(&input));
}

const DIRECTIVES_PTX: &str = r#"
.visible .entry fixed_block(
	.param .u64 p_out
)
.reqntid 64, 1, 1
.minnctapersm 2
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u64 	%rd2, %clock64;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, %clock;
	// inline-asm style scope with local register names (no %)
	{
	.reg .b32 t1;
	.reg .pred q;
	add.s32 	t1, %r1, 3;
	setp.gt.u32 	q, t1, 40;
	selp.b32 	%r3, t1, 0, q;
	}
	.pragma "nounroll";
	mov.u64 	%rd3, %clock64;
	sub.s64 	%rd4, %rd3, %rd2;
	setp.lt.s64 	%p1, %rd4, 0;
	selp.u32 	%r4, 1000000, 0, %p1;
	add.s32 	%r5, %r3, %r4;
	mul.wide.u32 	%rd5, %r1, 4;
	add.s64 	%rd6, %rd1, %rd5;
	st.global.u32 	[%rd6], %r5;
	ret;
}

.visible .entry max_block(
	.param .u64 p_out
)
.maxntid 128, 1, 1
{
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<4>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r1;
	ret;
}
"#;

#[test]
fn entry_directives_clock_and_scoped_registers() {
    let dev = emu();
    load_ptx(&dev, "dir", &format!("{PTX_HEADER}{DIRECTIVES_PTX}"));
    let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
    launch_ok(&dev, "dir", "fixed_block", lin(1, 64), &[ptr(&out)]);
    // %clock64 never runs backwards; t1 = tid + 3 kept when > 40
    let want: Vec<u32> = (0..64).map(|t| if t + 3 > 40 { t + 3 } else { 0 }).collect();
    assert_eq!(out.to_host().unwrap(), want);
    let out = dev.alloc_filled::<u32>(128, 0xFF).unwrap();
    launch_ok(&dev, "dir", "max_block", lin(1, 128), &[ptr(&out)]);
    assert_eq!(out.to_host().unwrap(), (0..128).collect::<Vec<u32>>());
}

/// Launch shapes the hardware would refuse give a typed error naming the kernel, not a panic.
#[test]
fn invalid_launch_shapes_are_typed_errors() {
    let dev = emu();
    load_ptx(&dev, "dir", &format!("{PTX_HEADER}{DIRECTIVES_PTX}"));
    let out = dev.alloc_filled::<u32>(2048, 0xFF).unwrap();
    let cases: Vec<(&str, LaunchConfig)> = vec![
        ("fixed_block", lin(1, 32)), // .reqntid 64
        ("max_block", lin(1, 256)),  // .maxntid 128
        ("max_block", LaunchConfig { grid: (1, 1, 1), block: (2048, 1, 1), shared_mem_bytes: 0 }), // > 1024 threads
        ("max_block", LaunchConfig { grid: (0, 1, 1), block: (32, 1, 1), shared_mem_bytes: 0 }), // empty grid
        ("max_block", LaunchConfig { grid: (1, 1, 1), block: (32, 1, 1), shared_mem_bytes: 1 << 30 }), // 1 GiB smem
    ];
    for (k, cfg) in cases {
        match dev.launch_in("dir", k, cfg, &[ptr(&out)]) {
            Err(fusebert_kernels::Error::Kernel { kernel, .. })
            | Err(fusebert_kernels::Error::KernelArgs { kernel, .. }) => {
                assert_eq!(kernel, k)
            }
            Err(fusebert_kernels::Error::Emulator(m)) => assert!(m.contains(k), "error should name the kernel: {m}"),
            other => panic!("{k} with {cfg:?}: expected a typed launch error, got {other:?}"),
        }
    }
    // an unknown kernel name in a loaded module, and an unknown module
    assert!(dev.launch_in("dir", "nope", lin(1, 32), &[ptr(&out)]).is_err());
    assert!(dev.launch_in("no_such_module", "max_block", lin(1, 32), &[ptr(&out)]).is_err());
}

/// Named barriers [9.7.13.1]: warp 0 produces into shared memory and signals with
/// `bar.arrive 1, 64`; warp 1 waits with `bar.sync 1, 64` and consumes. Warps 2-3 meanwhile use
/// barrier 2 among themselves. The arrive->sync edge orders the shared accesses (no race).
const NAMED_BAR_PTX: &str = r#"
.visible .entry named_bars(
	.param .u64 p_out
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<24>;
	.reg .b64 	%rd<6>;
	.shared .align 4 .b8 buf[512];
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, %ctaid.x;
	shr.u32 	%r3, %r1, 5;
	and.b32 	%r4, %r1, 31;
	mov.u32 	%r5, buf;
	shl.b32 	%r6, %r4, 2;
	add.s32 	%r7, %r5, %r6;
	mad.lo.s32 	%r8, %r2, 128, %r1;
	mul.wide.u32 	%rd2, %r8, 4;
	add.s64 	%rd3, %rd1, %rd2;
	setp.eq.u32 	%p1, %r3, 0;
	@!%p1 bra 	$L__NOT0;
	// producer
	mad.lo.s32 	%r9, %r8, 3, 1;
	st.shared.u32 	[%r7], %r9;
	bar.arrive 	1, 64;
	st.global.u32 	[%rd3], %r9;
	bra.uni 	$L__END;
$L__NOT0:
	setp.eq.u32 	%p2, %r3, 1;
	@!%p2 bra 	$L__OTHERS;
	// consumer: reads the producer's lane 31 - lane
	bar.sync 	1, 64;
	sub.s32 	%r10, 31, %r4;
	shl.b32 	%r11, %r10, 2;
	add.s32 	%r12, %r5, %r11;
	ld.shared.u32 	%r13, [%r12];
	st.global.u32 	[%rd3], %r13;
	bra.uni 	$L__END;
$L__OTHERS:
	// warps 2 and 3 swap through barrier 2 (64 threads), words 64..127 of buf
	sub.s32 	%r14, %r3, 2;
	shl.b32 	%r15, %r14, 5;
	add.s32 	%r16, %r15, %r4;
	shl.b32 	%r17, %r16, 2;
	add.s32 	%r18, %r5, %r17;
	st.shared.u32 	[%r18+256], %r8;
	bar.sync 	2, 64;
	xor.b32 	%r19, %r16, 32;
	shl.b32 	%r20, %r19, 2;
	add.s32 	%r21, %r5, %r20;
	ld.shared.u32 	%r22, [%r21+256];
	add.s32 	%r23, %r22, 1000000;
	st.global.u32 	[%rd3], %r23;
$L__END:
	ret;
}
"#;

#[test]
fn named_barriers_arrive_and_sync() {
    let dev = emu();
    load_ptx(&dev, "nb", &format!("{PTX_HEADER}{NAMED_BAR_PTX}"));
    let out = dev.alloc_filled::<u32>(256, 0xFF).unwrap();
    launch_ok(&dev, "nb", "named_bars", lin(2, 128), &[ptr(&out)]);
    let o = out.to_host().unwrap();
    for b in 0..2u32 {
        for t in 0..128u32 {
            let gid = b * 128 + t;
            let (warp, lane) = (t / 32, t % 32);
            let want = match warp {
                0 => gid * 3 + 1,
                1 => (b * 128 + (31 - lane)) * 3 + 1,
                // warps 2 and 3 read each other's thread with the same lane
                w => b * 128 + (5 - w) * 32 + lane + 1_000_000,
            };
            assert_eq!(o[gid as usize], want, "block {b} thread {t}");
        }
    }
}

const DIVERGE2_CU: &str = r#"
// Lanes return at different iterations of an outer loop; the inner loop has lane-dependent
// trip counts, break and continue. Survivors meet at a barrier (exited threads release it)
// and read their neighbour's result through shared memory when the neighbour survived.
extern "C" __global__ void diverge2(const int* in, int* out, int* survivors) {
    __shared__ int s[128];
    __shared__ int alive[128];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    alive[t] = 0;
    __syncthreads();
    int v = in[i];
    int acc = 0;
    for (int a = 0; a < 6; ++a) {
        if (((v >> a) & 7) == 5) return;
        for (int b = 0; b < (v + a) % 5; ++b) {
            if (b == 3 && (v & 64)) break;
            if ((b ^ a) & 1) continue;
            acc += a * 10 + b;
        }
    }
    s[t] = acc;
    alive[t] = 1;
    atomicAdd(survivors, 1);
    __syncthreads();
    int nb = t ^ 1;
    out[i] = acc * 1000 + (alive[nb] ? s[nb] : -1);
}
"#;

#[test]
fn early_return_inside_loops_with_break_continue() {
    let ptx = compile_cu("diverge2", DIVERGE2_CU);
    let mut r = rng(9);
    let n = 128 * 3;
    let input: Vec<i32> = (0..n).map(|_| r.gen_range(0..1 << 12)).collect();
    // reference: per thread, Some(acc) if it survives
    let res: Vec<Option<i32>> = input
        .iter()
        .map(|&v| {
            let mut acc = 0;
            for a in 0..6 {
                if (v >> a) & 7 == 5 {
                    return None;
                }
                for b in 0..(v + a) % 5 {
                    if b == 3 && v & 64 != 0 {
                        break;
                    }
                    if (b ^ a) & 1 != 0 {
                        continue;
                    }
                    acc += a * 10 + b;
                }
            }
            Some(acc)
        })
        .collect();
    let alive = res.iter().filter(|x| x.is_some()).count();
    assert!(alive > n / 4 && alive < n, "inputs should mix survivors and early returns ({alive})");
    let dev = emu();
    dev.load_module("d2", &ptx).unwrap();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<i32>(n, 0xFF).unwrap();
    let cnt = dev.upload(&[0i32]).unwrap();
    launch_ok(&dev, "d2", "diverge2", lin(3, 128), &[ptr(&din), ptr(&out), ptr(&cnt)]);
    let got = out.to_host().unwrap();
    for i in 0..n {
        match res[i] {
            None => assert_eq!(got[i], -1, "thread {i} returned early: output untouched"),
            Some(acc) => {
                let nb = res[i ^ 1].unwrap_or(-1);
                assert_eq!(got[i], acc * 1000 + nb, "thread {i}");
            }
        }
    }
    assert_eq!(cnt.to_host().unwrap()[0] as usize, alive);
}
