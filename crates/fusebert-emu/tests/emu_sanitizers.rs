//! Sanitizers: each planted bug must give a located Err (kernel, block, thread, source line),
//! and the clean version of the same kernel must run and compute the right answer.
//! Kernels are nvcc-compiled with -lineinfo, so reports can name `sanitize.cu:LINE`; the lines
//! are found by the `// BUG:` / `// RACE:` markers in the source below.
mod common;
use common::*;
use fusebert_kernels::{Device, Error, KernelArg};
use rand::Rng;
use std::sync::OnceLock;

const SRC: &str = r#"
// ---- out-of-bounds write: off-by-one guard ----
extern "C" __global__ void oob_write_bug(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = (float)i * 0.5f;   // BUG:oob
}
extern "C" __global__ void oob_write_clean(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (float)i * 0.5f;
}

// ---- misaligned access: float2 gather at an index from the data ----
extern "C" __global__ void gather2(const float* in, const int* idx, float2* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = *reinterpret_cast<const float2*>(in + idx[i]);   // BUG:misaligned
}

// ---- shared race: missing __syncthreads between the write and the mirrored read ----
extern "C" __global__ void reverse_bug(const float* in, float* out) {
    __shared__ float s[64];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = 0.0f;
    __syncthreads();
    s[t] = in[i];                           // RACE:write
    out[i] = s[blockDim.x - 1 - t];         // RACE:read
}
extern "C" __global__ void reverse_clean(const float* in, float* out) {
    __shared__ float s[64];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = 0.0f;
    __syncthreads();
    s[t] = in[i];
    __syncthreads();
    out[i] = s[blockDim.x - 1 - t];
}

// ---- intra-warp race: warp-synchronous reduction through shared memory without __syncwarp
// (correct only while a warp runs in lockstep, which Volta's independent scheduling ended) ----
extern "C" __global__ void warpsum_bug(const float* in, float* out) {
    __shared__ float s[32];
    volatile float* v = s;
    int t = threadIdx.x;
    v[t] = in[blockIdx.x * 32 + t];
    for (int o = 16; o > 0; o >>= 1)
        if (t < o) v[t] += v[t + o];        // LANE:read
    if (t == 0) out[blockIdx.x] = v[0];
}
extern "C" __global__ void warpsum_clean(const float* in, float* out) {
    __shared__ float s[32];
    int t = threadIdx.x;
    s[t] = in[blockIdx.x * 32 + t];
    __syncwarp();
    for (int o = 16; o > 0; o >>= 1) {
        float x = t < o ? s[t + o] : 0.0f;
        __syncwarp();
        if (t < o) s[t] += x;
        __syncwarp();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// ---- uninitialised shared read: the partial last tile's halo is never written ----
extern "C" __global__ void stencil_bug(const float* in, float* out, int n) {
    __shared__ float s[64];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (i < n) s[t] = in[i];
    __syncthreads();
    if (i < n) {
        float right = (t + 1 < blockDim.x) ? s[t + 1] : (i + 1 < n ? in[i + 1] : 0.0f);   // BUG:uninit
        out[i] = s[t] + right;
    }
}
extern "C" __global__ void stencil_clean(const float* in, float* out, int n) {
    __shared__ float s[64];
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (i < n) s[t] = in[i];
    __syncthreads();
    if (i < n) {
        float right = (t + 1 < blockDim.x && i + 1 < n) ? s[t + 1] : (i + 1 < n ? in[i + 1] : 0.0f);
        out[i] = s[t] + right;
    }
}

// ---- barrier inside divergent code: half a warp waits at one barrier, the rest at another ----
extern "C" __global__ void divbar_bug(float* out) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = (float)t;
    if (t < 16) {
        s[t] += 1.0f;
        __syncthreads();                    // BUG:divbar
    }
    __syncthreads();                        // BUG:divbar2
    out[blockIdx.x * blockDim.x + t] = s[63 - t];
}
extern "C" __global__ void divbar_clean(float* out) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = (float)t;
    if (blockIdx.x < 1000) {                // uniform per block: legal
        s[t] += 1.0f;
        __syncthreads();
    }
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[63 - t];
}

// ---- infinite loop: nobody sets the flag ----
extern "C" __global__ void spin(volatile int* flag, int* out) {
    int k = 0;
    while (flag[0] == 0) { k++; }           // BUG:spin
    out[blockIdx.x * blockDim.x + threadIdx.x] = k + flag[0];
}

// ---- out-of-bounds shared write by one thread ----
extern "C" __global__ void smem_oob(const int* idx, int* out) {
    __shared__ int s[64];
    int t = threadIdx.x;
    s[idx[t]] = t;                          // BUG:smem
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[t];
}
"#;

fn ptx() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| compile_cu("sanitize", SRC))
}

fn dev_loaded() -> Device {
    let d = emu();
    d.load_module("san", ptx()).unwrap_or_else(|e| panic!("load: {e}"));
    d
}

fn loc(marker: &str) -> String {
    cu_loc("sanitize", SRC, marker)
}

#[test]
fn out_of_bounds_write_is_reported_and_clean_version_runs() {
    let dev = dev_loaded();
    let n = 200; // 4 blocks of 64: thread i == 200 (block 3, thread 8) writes one past the end
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    let r = dev.launch_in("san", "oob_write_bug", lin(4, 64), &[ptr(&out), KernelArg::I32(n as i32)]);
    let rep = report_of(r, false);
    assert_located(&rep, "oob_write_bug", (3, 0, 0), Some((8, 0, 0)), &[loc("BUG:oob")]);
    // the faulting address: one element past the end of `out`
    assert!(
        rep.to_lowercase().contains(&format!("{:#x}", out.addr() + 4 * n as u64)),
        "report should give the address: {rep}"
    );
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    launch_ok(&dev, "san", "oob_write_clean", lin(4, 64), &[ptr(&out), KernelArg::I32(n as i32)]);
    let got = out.to_host().unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.5), "clean version output");
}

#[test]
fn misaligned_access_is_reported_and_aligned_data_runs() {
    let dev = dev_loaded();
    let n = 150;
    let mut r = rng(1);
    let data: Vec<f32> = (0..2 * n + 2).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let din = dev.upload(&data).unwrap();
    let mut idx: Vec<i32> = (0..n).map(|_| 2 * r.gen_range(0..n as i32)).collect();
    // clean: every float2 load 8-byte aligned
    let didx = dev.upload(&idx).unwrap();
    let out = dev.alloc_filled::<[f32; 2]>(n, 0xFF).unwrap();
    launch_ok(&dev, "san", "gather2", lin(3, 64), &[ptr(&din), ptr(&didx), ptr(&out), KernelArg::I32(n as i32)]);
    let got = out.to_host().unwrap();
    for i in 0..n {
        assert_eq!(got[i], [data[idx[i] as usize], data[idx[i] as usize + 1]], "clean gather {i}");
    }
    // planted: element 77 (block 1, thread 13) gets an odd index -> 4-byte-aligned float2
    idx[77] = 2 * 40 + 1;
    let didx = dev.upload(&idx).unwrap();
    let r = dev.launch_in("san", "gather2", lin(3, 64), &[ptr(&din), ptr(&didx), ptr(&out), KernelArg::I32(n as i32)]);
    let rep = report_of(r, false);
    assert_located(&rep, "gather2", (1, 0, 0), Some((13, 0, 0)), &[loc("BUG:misaligned")]);
    assert!(rep.to_lowercase().contains("align"), "report should say misaligned: {rep}");
}

#[test]
fn shared_race_without_syncthreads_is_reported_and_synced_version_runs() {
    let dev = dev_loaded();
    let mut r = rng(2);
    let input: Vec<f32> = (0..64).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(64, 0xFF).unwrap();
    let res = dev.launch_in("san", "reverse_bug", lin(1, 64), &[ptr(&din), ptr(&out)]);
    let rep = report_of(res, false);
    assert_located(&rep, "reverse_bug", (0, 0, 0), None, &[loc("RACE:write"), loc("RACE:read")]);
    assert!(rep.to_lowercase().contains("race"), "report should say race: {rep}");
    // clean, on several blocks
    let input: Vec<f32> = (0..192).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(192, 0xFF).unwrap();
    launch_ok(&dev, "san", "reverse_clean", lin(3, 64), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    for i in 0..192 {
        assert_eq!(got[i], input[i / 64 * 64 + 63 - i % 64], "clean reverse {i}");
    }
}

/// Races between the lanes of one warp: the lockstep emulator computes the right sum either
/// way, but on a GPU with independent thread scheduling the unsynchronised version may not.
#[test]
fn intra_warp_race_without_syncwarp_is_reported_and_synced_version_runs() {
    let dev = dev_loaded();
    let mut r = rng(9);
    let input: Vec<f32> = (0..96).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(3, 0xFF).unwrap();
    let res = dev.launch_in("san", "warpsum_bug", lin(3, 32), &[ptr(&din), ptr(&out)]);
    let rep = report_of(res, false);
    assert_located(&rep, "warpsum_bug", (0, 0, 0), None, &[loc("LANE:read")]);
    assert!(
        rep.contains("intra-warp") && rep.contains("__syncwarp"),
        "report should name the missing __syncwarp: {rep}"
    );
    // the same kernel with the race check off runs (the report came from that checker)
    let no_races = emu_with(|o| o.check_races = false);
    no_races.load_module("san", ptx()).unwrap();
    let out2 = no_races.alloc_filled::<f32>(3, 0xFF).unwrap();
    let din2 = no_races.upload(&input).unwrap();
    no_races.launch_in("san", "warpsum_bug", lin(3, 32), &[ptr(&din2), ptr(&out2)]).expect("race check off: runs");
    // clean: the same tree of additions, synchronised
    launch_ok(&dev, "san", "warpsum_clean", lin(3, 32), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    for b in 0..3 {
        let mut v = input[b * 32..(b + 1) * 32].to_vec();
        let mut o = 16;
        while o > 0 {
            for t in 0..o {
                v[t] += v[t + o];
            }
            o >>= 1;
        }
        assert_eq!(got[b], v[0], "block {b} sum");
        assert_eq!(out2.to_host().unwrap()[b], v[0], "block {b} sum, unchecked racy version");
    }
}

#[test]
fn uninitialised_shared_read_is_reported_and_clean_version_runs() {
    let dev = dev_loaded();
    let n = 64 * 2 + 50; // last tile partial: its thread 49 (element n-1) reads s[50], never written
    let mut r = rng(3);
    let input: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    let res = dev.launch_in("san", "stencil_bug", lin(3, 64), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)]);
    let rep = report_of(res, false);
    assert_located(&rep, "stencil_bug", (2, 0, 0), Some((49, 0, 0)), &[loc("BUG:uninit")]);
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    launch_ok(&dev, "san", "stencil_clean", lin(3, 64), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)]);
    let got = out.to_host().unwrap();
    for i in 0..n {
        let right = if i + 1 < n { input[i + 1] } else { 0.0 };
        assert_eq!(got[i], input[i] + right, "clean stencil {i}");
    }
}

#[test]
fn barrier_in_divergent_code_is_reported_and_uniform_version_runs() {
    let dev = dev_loaded();
    let out = dev.alloc_filled::<f32>(64, 0xFF).unwrap();
    let res = dev.launch_in("san", "divbar_bug", lin(1, 64), &[ptr(&out)]);
    // docs/ptx-semantics.md: diverged arrival at an .aligned barrier is an error to report (not a hang);
    // docs/emu-api.md allows Sanitizer or Emulator for it
    let rep = report_of(res, true);
    assert_located(&rep, "divbar_bug", (0, 0, 0), None, &[loc("BUG:divbar"), loc("BUG:divbar2")]);
    let out = dev.alloc_filled::<f32>(128, 0xFF).unwrap();
    launch_ok(&dev, "san", "divbar_clean", lin(2, 64), &[ptr(&out)]);
    let got = out.to_host().unwrap();
    for (i, &g) in got.iter().enumerate().take(128) {
        let src = 63 - i % 64;
        assert_eq!(g, src as f32 + 1.0, "clean divbar {i}");
    }
}

#[test]
fn infinite_loop_hits_the_step_limit_and_terminating_loop_runs() {
    let dev = emu_with(|o| o.step_limit = 100_000);
    dev.load_module("san", ptx()).unwrap();
    let flag = dev.upload(&[0i32]).unwrap();
    let out = dev.alloc_filled::<i32>(32, 0xFF).unwrap();
    let res = dev.launch_in("san", "spin", lin(1, 32), &[ptr(&flag), ptr(&out)]);
    let rep = report_of(res, true);
    assert_located(&rep, "spin", (0, 0, 0), None, &[loc("BUG:spin")]);
    let flag = dev.upload(&[3i32]).unwrap();
    launch_ok(&dev, "san", "spin", lin(1, 32), &[ptr(&flag), ptr(&out)]);
    assert_eq!(out.to_host().unwrap(), vec![3; 32]);
}

#[test]
fn shared_out_of_bounds_write_is_reported() {
    let dev = dev_loaded();
    let mut idx: Vec<i32> = (0..64).map(|t| 63 - t).collect();
    let didx = dev.upload(&idx).unwrap();
    let out = dev.alloc_filled::<i32>(64, 0xFF).unwrap();
    launch_ok(&dev, "san", "smem_oob", lin(1, 64), &[ptr(&didx), ptr(&out)]);
    let got = out.to_host().unwrap();
    assert!(got.iter().enumerate().all(|(t, &v)| v == 63 - t as i32), "clean permutation");
    idx[21] = 64 + 300; // far past the 256-byte static array
    let didx = dev.upload(&idx).unwrap();
    let res = dev.launch_in("san", "smem_oob", lin(1, 64), &[ptr(&didx), ptr(&out)]);
    let rep = report_of(res, false);
    assert_located(&rep, "smem_oob", (0, 0, 0), Some((21, 0, 0)), &[loc("BUG:smem")]);
}

#[test]
fn wrong_argument_count_and_size_are_kernel_args_errors() {
    let dev = dev_loaded();
    let out = dev.alloc_filled::<f32>(64, 0xFF).unwrap();
    // too few
    match dev.launch_in("san", "oob_write_clean", lin(1, 64), &[ptr(&out)]) {
        Err(Error::KernelArgs { kernel, msg }) => {
            assert_eq!(kernel, "oob_write_clean");
            assert!(msg.contains('2') && msg.contains('1'), "message should give expected and got counts: {msg}");
        }
        other => panic!("expected KernelArgs for a missing argument, got {other:?}"),
    }
    // too many
    match dev.launch_in("san", "oob_write_clean", lin(1, 64), &[ptr(&out), KernelArg::I32(64), KernelArg::I32(1)]) {
        Err(Error::KernelArgs { kernel, .. }) => assert_eq!(kernel, "oob_write_clean"),
        other => panic!("expected KernelArgs for an extra argument, got {other:?}"),
    }
    // wrong size: 8-byte value for the 4-byte `int n`
    match dev.launch_in("san", "oob_write_clean", lin(1, 64), &[ptr(&out), KernelArg::I64(64)]) {
        Err(Error::KernelArgs { kernel, msg }) => {
            assert_eq!(kernel, "oob_write_clean");
            assert!(msg.contains('4') && msg.contains('8'), "message should give both sizes: {msg}");
        }
        other => panic!("expected KernelArgs for a wrong-size argument, got {other:?}"),
    }
    // wrong size: 4-byte value for the pointer
    match dev.launch_in("san", "oob_write_clean", lin(1, 64), &[KernelArg::U32(0), KernelArg::I32(64)]) {
        Err(Error::KernelArgs { kernel, .. }) => assert_eq!(kernel, "oob_write_clean"),
        other => panic!("expected KernelArgs for a 4-byte pointer, got {other:?}"),
    }
    // and nothing ran: the buffer is still poisoned; then the right arguments work
    assert!(out.to_host().unwrap().iter().all(|v| v.to_bits() == u32::MAX));
    launch_ok(&dev, "san", "oob_write_clean", lin(1, 64), &[ptr(&out), KernelArg::I32(64)]);
    assert_eq!(out.to_host().unwrap()[10], 5.0);
}

#[test]
fn unknown_opcode_is_a_parse_error_with_its_line() {
    let good = format!(
        "{PTX_HEADER}\n.visible .entry k(\n\t.param .u64 p\n)\n{{\n\t.reg .b32 \t%r<4>;\n\tmov.u32 \t%r1, 3;\n\tadd.s32 \t%r2, %r1, %r1;\n\tret;\n}}\n"
    );
    ptxas_check(&good, "sm_80");
    let dev = emu();
    dev.load_module("good", &good).expect("the valid module loads");
    let bad = good.replace("\tadd.s32 \t%r2, %r1, %r1;", "\tfrobnicate.b32 \t%r2, %r1, %r1;");
    let want_line = line_of(&bad, "frobnicate");
    match dev.load_module("bad", &bad) {
        Err(Error::PtxParse { module, line, msg }) => {
            assert_eq!(module, "bad");
            assert_eq!(line, want_line, "parse error line ({msg})");
            assert!(msg.contains("frobnicate"), "message should name the opcode: {msg}");
        }
        other => panic!("expected PtxParse, got {other:?}"),
    }
    // a syntax error (missing operand list terminator) also gives its line
    let bad2 = good.replace("\tmov.u32 \t%r1, 3;", "\tmov.u32 \t%r1, ;");
    match dev.load_module("bad2", &bad2) {
        Err(Error::PtxParse { line, .. }) => assert_eq!(line, line_of(&bad2, "mov.u32")),
        other => panic!("expected PtxParse, got {other:?}"),
    }
}

/// cp.async: reading the destination before cp.async.wait_group is a hazard; with the wait it
/// is clean. Hand-written PTX so the lines are exact.
#[test]
fn cp_async_pending_destination_read_is_reported() {
    let body = |wait: bool| {
        format!(
            r#"{PTX_HEADER}
.visible .entry cpa(
	.param .u64 p_g,
	.param .u64 p_out
)
{{
	.reg .b32 	%r<16>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 buf[512];
	ld.param.u64 	%rd1, [p_g];
	ld.param.u64 	%rd2, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd3, %r1, 16;
	add.s64 	%rd4, %rd1, %rd3;
	shl.b32 	%r2, %r1, 4;
	mov.u32 	%r3, buf;
	add.s32 	%r4, %r3, %r2;
	cp.async.ca.shared.global 	[%r4], [%rd4], 16;
	cp.async.commit_group;
	{}
	ld.shared.u32 	%r5, [%r4]; // HAZARD
	mul.wide.u32 	%rd5, %r1, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.u32 	[%rd6], %r5;
	ret;
}}
"#,
            if wait { "cp.async.wait_group 0;" } else { "// (missing wait)" }
        )
    };
    let mut r = rng(4);
    let g: Vec<u32> = (0..128).map(|_| r.gen()).collect();
    let dev = emu();
    let bad = body(false);
    load_ptx(&dev, "cpa_bad", &bad);
    load_ptx(&dev, "cpa_ok", &body(true));
    let dg = dev.upload(&g).unwrap();
    let out = dev.alloc_filled::<u32>(32, 0xFF).unwrap();
    let res = dev.launch_in("cpa_bad", "cpa", lin(1, 32), &[ptr(&dg), ptr(&out)]);
    let rep = report_of(res, false);
    assert_located(&rep, "cpa", (0, 0, 0), None, &[ptx_loc(&bad, "HAZARD")]);
    launch_ok(&dev, "cpa_ok", "cpa", lin(1, 32), &[ptr(&dg), ptr(&out)]);
    let got = out.to_host().unwrap();
    for t in 0..32 {
        assert_eq!(got[t], g[4 * t], "thread {t}");
    }
}

/// The report matcher itself: accepts the usual spellings, rejects other indices.
#[test]
fn report_matcher_self_check() {
    let rep = "out-of-bounds in kernel `k` (module `m`), block (3,0,0), thread (8,0,0), at PTX line 12, x.cu:5";
    assert!(names_index(rep, "block", (3, 0, 0)) && names_index(rep, "thread", (8, 0, 0)));
    assert!(!names_index(rep, "block", (8, 0, 0)) && !names_index(rep, "thread", (3, 0, 0)));
    assert!(!names_index("block 31 thread 2", "block", (3, 0, 0)));
    assert!(names_index("blockIdx=(1, 2, 0) threadIdx = 7", "block", (1, 2, 0)));
    assert!(names_index("blockIdx=(1, 2, 0) threadIdx = 7", "thread", (7, 0, 0)));
    assert!(contains_whole("atptxline25,x.cu:8", "line25") && !contains_whole("atptxline25", "line2"));
    assert!(contains_whole("x.cu:8:", "x.cu:8") && !contains_whole("x.cu:80", "x.cu:8"));
}

/// The option switches: with a check off its planted bug runs through (the kernels are the
/// same, so this proves the report came from that checker); `sanitize: false` turns all off.
#[test]
fn sanitizer_switches_disable_their_checks() {
    let mut r = rng(5);
    let input: Vec<f32> = (0..178).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let run = |dev: &Device, k: &str, grid: u32, n: usize| -> fusebert_kernels::Result<()> {
        dev.load_module("san", ptx())?;
        let din = dev.upload(&input[..n])?;
        let out = dev.alloc_filled::<f32>(n, 0xFF)?;
        let args = if k == "reverse_bug" {
            vec![ptr(&din), ptr(&out)]
        } else {
            vec![ptr(&din), ptr(&out), KernelArg::I32(n as i32)]
        };
        dev.launch_in("san", k, lin(grid, 64), &args)
    };
    let no_races = emu_with(|o| o.check_races = false);
    run(&no_races, "reverse_bug", 1, 64).expect("race check off: reverse_bug runs");
    assert!(matches!(run(&no_races, "stencil_bug", 3, 178), Err(Error::Sanitizer(_))), "uninit check still on");
    let no_uninit = emu_with(|o| o.check_uninit = false);
    run(&no_uninit, "stencil_bug", 3, 178).expect("uninit check off: stencil_bug runs");
    assert!(matches!(run(&no_uninit, "reverse_bug", 1, 64), Err(Error::Sanitizer(_))), "race check still on");
    let off = emu_with(|o| o.sanitize = false);
    run(&off, "reverse_bug", 1, 64).expect("sanitize=false: no race report");
    run(&off, "stencil_bug", 3, 178).expect("sanitize=false: no uninit report");
}

/// Collective misuse the spec says to report: a shuffle sourcing a lane outside membermask,
/// and an mma executed by half a warp (.aligned). Clean variants run.
#[test]
fn collective_misuse_is_reported() {
    let kernel = |shfl_src: u32, mma_lanes: u32| {
        format!(
            r#"{PTX_HEADER}
.visible .entry misuse(
	.param .u64 p_out
)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<32>;
	.reg .f32 	%f<12>;
	.reg .b64 	%rd<6>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %laneid;
	mov.u32 	%r2, %tid.x;
	mul.wide.u32 	%rd2, %r2, 4;
	add.s64 	%rd3, %rd1, %rd2;
	mov.u32 	%r20, 0;
	setp.lt.u32 	%p1, %r1, 16;
	@!%p1 bra 	$L__A;
	shfl.sync.idx.b32 	%r20, %r2, {shfl_src}, 31, 65535; // SHFL
$L__A:
	setp.lt.u32 	%p2, %r1, {mma_lanes};
	@!%p2 bra 	$L__B;
	mov.b32 	%r3, 1006648320;
	mov.f32 	%f1, 0f00000000;
	mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 	{{%f2, %f3, %f4, %f5}}, {{%r3, %r3, %r3, %r3}}, {{%r3, %r3}}, {{%f1, %f1, %f1, %f1}}; // MMA
	cvt.rzi.s32.f32 	%r4, %f2;
	add.s32 	%r20, %r20, %r4;
$L__B:
	st.global.u32 	[%rd3], %r20;
	ret;
}}
"#
        )
    };
    let dev = emu();
    let clean = kernel(7, 32);
    load_ptx(&dev, "ok", &clean);
    let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
    launch_ok(&dev, "ok", "misuse", lin(1, 64), &[ptr(&out)]);
    let got = out.to_host().unwrap();
    for t in 0..64u32 {
        let shfl = if t % 32 < 16 { t / 32 * 32 + 7 } else { 0 };
        assert_eq!(got[t as usize], shfl + 16, "clean thread {t}");
    }
    // source lane 20 is not in membermask 0x0000ffff
    let bad = kernel(20, 32);
    load_ptx(&dev, "bad_shfl", &bad);
    let rep = report_of(dev.launch_in("bad_shfl", "misuse", lin(1, 64), &[ptr(&out)]), true);
    assert_located(&rep, "misuse", (0, 0, 0), None, &[ptx_loc(&bad, "// SHFL")]);
    // mma by lanes 0-15 only
    let bad = kernel(7, 16);
    load_ptx(&dev, "bad_mma", &bad);
    let rep = report_of(dev.launch_in("bad_mma", "misuse", lin(1, 64), &[ptr(&out)]), true);
    assert_located(&rep, "misuse", (0, 0, 0), None, &[ptx_loc(&bad, "// MMA")]);
}

/// More located faults in hand-written PTX: a v4 shared load at an 8-byte-aligned address, and
/// a global read past the end of its allocation (one thread each; clean variants run).
#[test]
fn shared_misalignment_and_global_oob_read_are_reported() {
    let kernel = |shared_off: u32, bad_thread: u32| {
        format!(
            r#"{PTX_HEADER}
.visible .entry faults(
	.param .u64 p_in,
	.param .u64 p_out
)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<24>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 sm[1040];
	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, %ctaid.x;
	mad.lo.s32 	%r3, %r2, 64, %r1;
	// thread {bad_thread} of block 1 reads element 100000 instead of its own
	setp.eq.u32 	%p1, %r3, {bad_thread};
	selp.u32 	%r4, 100000, %r3, %p1;
	mul.wide.u32 	%rd3, %r4, 4;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.u32 	%r5, [%rd4]; // GLOBAL_READ
	mov.u32 	%r6, sm;
	shl.b32 	%r7, %r1, 4;
	add.s32 	%r8, %r6, %r7;
	st.shared.v4.u32 	[%r8], {{%r5, %r5, %r5, %r5}};
	bar.sync 	0;
	// thread 5 of block 0 reads 16 bytes at offset 16*5 + {shared_off}
	setp.eq.u32 	%p2, %r3, 5;
	selp.u32 	%r9, {shared_off}, 0, %p2;
	add.s32 	%r10, %r8, %r9;
	ld.shared.v4.u32 	{{%r11, %r12, %r13, %r14}}, [%r10]; // SHARED_V4
	add.s32 	%r15, %r11, %r14;
	mul.wide.u32 	%rd5, %r3, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.u32 	[%rd6], %r15;
	ret;
}}
"#
        )
    };
    let mut r = rng(6);
    let input: Vec<u32> = (0..128).map(|_| r.gen_range(0..1_000_000)).collect();
    let dev = emu();
    let clean = kernel(16, 1000);
    load_ptx(&dev, "clean", &clean);
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<u32>(128, 0xFF).unwrap();
    launch_ok(&dev, "clean", "faults", lin(2, 64), &[ptr(&din), ptr(&out)]);
    let got = out.to_host().unwrap();
    for (i, &g) in got.iter().enumerate().take(128) {
        // thread 5 of block 0 reads thread 6's slot (offset +16)
        let src = if i == 5 { 6 } else { i };
        assert_eq!(g, input[src].wrapping_mul(2), "clean thread {i}");
    }
    let bad = kernel(8, 1000);
    load_ptx(&dev, "mis", &bad);
    let rep = report_of(dev.launch_in("mis", "faults", lin(2, 64), &[ptr(&din), ptr(&out)]), false);
    assert_located(&rep, "faults", (0, 0, 0), Some((5, 0, 0)), &[ptx_loc(&bad, "// SHARED_V4")]);
    let bad = kernel(16, 64 + 9);
    load_ptx(&dev, "oob", &bad);
    let rep = report_of(dev.launch_in("oob", "faults", lin(2, 64), &[ptr(&din), ptr(&out)]), false);
    assert_located(&rep, "faults", (1, 0, 0), Some((9, 0, 0)), &[ptx_loc(&bad, "// GLOBAL_READ")]);
    assert!(
        rep.to_lowercase().contains(&format!("{:#x}", din.addr() + 400_000)),
        "report should give the address: {rep}"
    );
}

/// cp.async data is visible to other threads only after a barrier that follows the wait
/// (docs/ptx-semantics.md, Async copy): reading the neighbour's destination after only this
/// thread's wait_group is a race; with bar.sync after the wait it is clean.
#[test]
fn cp_async_neighbour_read_without_barrier_is_a_race() {
    let body = |barrier: bool| {
        format!(
            r#"{PTX_HEADER}
.visible .entry cpn(
	.param .u64 p_g,
	.param .u64 p_out
)
{{
	.reg .b32 	%r<16>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 buf[1024];
	ld.param.u64 	%rd1, [p_g];
	ld.param.u64 	%rd2, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd3, %r1, 16;
	add.s64 	%rd4, %rd1, %rd3;
	shl.b32 	%r2, %r1, 4;
	mov.u32 	%r3, buf;
	add.s32 	%r4, %r3, %r2;
	cp.async.ca.shared.global 	[%r4], [%rd4], 16;
	cp.async.wait_all;
	{}
	add.s32 	%r5, %r1, 32;
	and.b32 	%r6, %r5, 63;
	shl.b32 	%r7, %r6, 4;
	add.s32 	%r8, %r3, %r7;
	ld.shared.u32 	%r9, [%r8]; // NEIGHBOUR
	mul.wide.u32 	%rd5, %r1, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.u32 	[%rd6], %r9;
	ret;
}}
"#,
            if barrier { "bar.sync 0;" } else { "// (no barrier)" }
        )
    };
    let mut r = rng(7);
    let g: Vec<u32> = (0..256).map(|_| r.gen()).collect();
    let dev = emu();
    let bad = body(false);
    load_ptx(&dev, "cpn_bad", &bad);
    load_ptx(&dev, "cpn_ok", &body(true));
    let dg = dev.upload(&g).unwrap();
    let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
    let rep = report_of(dev.launch_in("cpn_bad", "cpn", lin(1, 64), &[ptr(&dg), ptr(&out)]), false);
    assert_located(&rep, "cpn", (0, 0, 0), None, &[ptx_loc(&bad, "// NEIGHBOUR"), ptx_loc(&bad, "cp.async.ca.shared")]);
    launch_ok(&dev, "cpn_ok", "cpn", lin(1, 64), &[ptr(&dg), ptr(&out)]);
    let got = out.to_host().unwrap();
    for t in 0..64 {
        assert_eq!(got[t], g[4 * ((t + 32) % 64)], "thread {t}");
    }
}
