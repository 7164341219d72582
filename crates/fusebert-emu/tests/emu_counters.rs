//! Counters (names from docs/emu-api.md): hand-written kernels whose exact memory traffic,
//! coalescing, bank conflicts, tensor work, barriers and local traffic are known by
//! construction, so every expected number below is derived from the kernel text and launch
//! shape (counted per warp-instruction; bytes = bytes requested by active lanes; sector = 32 B).
mod common;
use common::*;
use fusebert_emu::Counters;
use fusebert_kernels::{Device, KernelArg, LaunchConfig};

const KERNELS: &str = r#"
// out[i] = in[i * stride]  (one load, one store per thread; no guard: exact grid)
.visible .entry copy(
	.param .u64 p_in,
	.param .u64 p_out,
	.param .u32 p_stride
)
{
	.reg .b32 	%r<12>;
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<10>;
	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	ld.param.u32 	%r1, [p_stride];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	mul.lo.s32 	%r6, %r5, %r1;
	mul.wide.u32 	%rd3, %r6, 4;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.f32 	%f1, [%rd4];
	mul.wide.u32 	%rd5, %r5, 4;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.f32 	[%rd6], %f1;
	ret;
}

// shared: 32 conflict-free stores per warp fill words [0, 2048); then ONE load per warp of
// word (lane * stride) & 2047 (+ 1 for odd warps); then a v4 load of 16 contiguous bytes/lane
.visible .entry banks(
	.param .u64 p_out,
	.param .u32 p_stride
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<24>;
	.reg .b64 	%rd<6>;
	.shared .align 16 .b8 sm[8192];
	ld.param.u64 	%rd1, [p_out];
	ld.param.u32 	%r1, [p_stride];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r2, %tid.x;
	mov.u32 	%r3, sm;
	mov.u32 	%r4, 0;
$L__FILL:
	shl.b32 	%r5, %r4, 6;
	add.s32 	%r6, %r5, %r2;
	shl.b32 	%r7, %r6, 2;
	add.s32 	%r8, %r3, %r7;
	st.shared.u32 	[%r8], %r6;
	add.s32 	%r4, %r4, 1;
	setp.lt.u32 	%p1, %r4, 32;
	@%p1 bra.uni 	$L__FILL;
	bar.sync 	0;
	and.b32 	%r9, %r2, 31;
	shr.u32 	%r10, %r2, 5;
	mul.lo.s32 	%r11, %r9, %r1;
	add.s32 	%r12, %r11, %r10;
	and.b32 	%r13, %r12, 2047;
	shl.b32 	%r14, %r13, 2;
	add.s32 	%r15, %r3, %r14;
	ld.shared.u32 	%r16, [%r15];
	shl.b32 	%r17, %r2, 4;
	add.s32 	%r18, %r3, %r17;
	ld.shared.v4.u32 	{%r19, %r20, %r21, %r22}, [%r18];
	add.s32 	%r16, %r16, %r22;
	mul.wide.u32 	%rd2, %r2, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r16;
	ret;
}

// 4 st.local.u32 + 2 ld.local.u32 per thread, 3 bar.sync, 1 atom per thread
.visible .entry misc(
	.param .u64 p_out
)
{
	.reg .b32 	%r<12>;
	.reg .b64 	%rd<8>;
	.local .align 4 .b8 	depot[16];
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.u64 	%rd2, depot;
	st.local.u32 	[%rd2], %r1;
	st.local.u32 	[%rd2+4], %r1;
	st.local.u32 	[%rd2+8], %r1;
	st.local.u32 	[%rd2+12], %r1;
	bar.sync 	0;
	and.b32 	%r2, %r1, 3;
	shl.b32 	%r3, %r2, 2;
	cvt.u64.u32 	%rd3, %r3;
	add.s64 	%rd4, %rd2, %rd3;
	ld.local.u32 	%r4, [%rd4];
	bar.sync 	0;
	ld.local.u32 	%r5, [%rd2+8];
	add.s32 	%r6, %r4, %r5;
	bar.sync 	0;
	atom.global.add.u32 	%r7, [%rd1], %r6;
	ret;
}

// one cp.async of 16 bytes per thread
.visible .entry cpa(
	.param .u64 p_in
)
{
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<6>;
	.shared .align 16 .b8 buf[2048];
	ld.param.u64 	%rd1, [p_in];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mul.wide.u32 	%rd2, %r1, 16;
	add.s64 	%rd3, %rd1, %rd2;
	shl.b32 	%r2, %r1, 4;
	mov.u32 	%r3, buf;
	add.s32 	%r4, %r3, %r2;
	cp.async.cg.shared.global 	[%r4], [%rd3], 16;
	cp.async.wait_all;
	ret;
}

// one mma.m16n8k16 (f16) and one mma.m16n8k32 (s8) per warp
// only the f16 m16n8k16 mma
.visible .entry mma16(
	.param .u64 p_out
)
{
	.reg .b32 	%r<8>;
	.reg .f32 	%f<8>;
	.reg .b64 	%rd<4>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.b32 	%r2, 1006648320;
	mov.f32 	%f1, 0f3F800000;
	mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 	{%f2, %f3, %f4, %f5}, {%r2, %r2, %r2, %r2}, {%r2, %r2}, {%f1, %f1, %f1, %f1};
	cvt.rzi.s32.f32 	%r3, %f5;
	mov.u32 	%r4, %ctaid.x;
	mov.u32 	%r5, %ntid.x;
	mad.lo.s32 	%r1, %r4, %r5, %r1;
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r3;
	ret;
}

.visible .entry mmas(
	.param .u64 p_out
)
{
	.reg .b32 	%r<24>;
	.reg .f32 	%f<12>;
	.reg .b64 	%rd<6>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.b32 	%r2, 1006648320;
	mov.f32 	%f1, 0f00000000;
	mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 	{%f2, %f3, %f4, %f5}, {%r2, %r2, %r2, %r2}, {%r2, %r2}, {%f1, %f1, %f1, %f1};
	mov.u32 	%r3, 16843009;
	mov.u32 	%r4, 0;
	mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 	{%r5, %r6, %r7, %r8}, {%r3, %r3, %r3, %r3}, {%r3, %r3}, {%r4, %r4, %r4, %r4};
	cvt.rzi.s32.f32 	%r9, %f2;
	add.s32 	%r10, %r9, %r5;
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r10;
	ret;
}
"#;

fn setup() -> Device {
    let dev = emu();
    load_ptx(&dev, "cnt", &format!("{PTX_HEADER}{KERNELS}"));
    dev
}

fn run(dev: &Device, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Counters {
    launch_ok(dev, "cnt", kernel, cfg, args);
    last_counters(dev)
}

#[test]
fn coalesced_copy_has_full_efficiency_and_exact_bytes() {
    let dev = setup();
    let n = 4096usize;
    let input = dev.upload(&(0..n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    assert_eq!(input.addr() % 256, 0, "allocations are 256-byte aligned like cudaMalloc");
    assert_eq!(out.addr() % 256, 0);
    let c = run(&dev, "copy", lin(32, 128), &[ptr(&input), ptr(&out), KernelArg::U32(1)]);
    assert_eq!(out.to_host().unwrap(), (0..n).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(c.launches, 1);
    assert_eq!(c.global_load_requests, (n / 32) as u64, "one request per warp");
    assert_eq!(c.global_load_bytes, (n * 4) as u64);
    assert_eq!(c.global_load_sectors, (n * 4 / 32) as u64);
    assert_eq!(c.global_load_efficiency(), 1.0);
    assert_eq!(c.global_store_requests, (n / 32) as u64);
    assert_eq!(c.global_store_bytes, (n * 4) as u64);
    assert_eq!(c.global_store_efficiency(), 1.0);
    assert_eq!(c.simt_efficiency(), 1.0, "no divergence, whole warps");
    assert_eq!(
        c.shared_load_requests
            + c.shared_store_requests
            + c.local_load_bytes
            + c.local_store_bytes
            + c.atomics
            + c.tensor_macs
            + c.barriers,
        0
    );
    assert!(c.warp_instructions >= 17 * (n / 32) as u64 && c.thread_instructions == 32 * c.warp_instructions);
}

#[test]
fn strided_copy_has_lower_efficiency() {
    let dev = setup();
    let n = 1024usize;
    for (stride, eff) in [(2u32, 0.5), (8, 0.125), (64, 0.125)] {
        let input = dev.upload(&vec![1.5f32; n * stride as usize]).unwrap();
        let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
        let c = run(&dev, "copy", lin(8, 128), &[ptr(&input), ptr(&out), KernelArg::U32(stride)]);
        assert_eq!(c.global_load_bytes, (n * 4) as u64, "stride {stride}: requested bytes");
        // each warp touches 32 lanes * 4 B spread over 32*4*stride bytes
        let sectors_per_req = ((32 * 4 * stride as usize).div_ceil(32)).min(32) as u64;
        assert_eq!(c.global_load_sectors, sectors_per_req * (n / 32) as u64, "stride {stride}: sectors");
        assert_eq!(c.global_load_efficiency(), eff, "stride {stride}");
        assert_eq!(c.global_store_efficiency(), 1.0);
    }
}

#[test]
fn shared_bank_conflicts_by_stride() {
    let dev = setup();
    // (stride in words, extra wavefronts per load request)
    for (stride, extra) in [(1u32, 0u64), (2, 1), (4, 3), (32, 31), (0, 0), (33, 0)] {
        let out = dev.alloc_filled::<u32>(64, 0xFF).unwrap();
        let c = run(&dev, "banks", lin(1, 64), &[ptr(&out), KernelArg::U32(stride)]);
        let warps = 2u64;
        assert_eq!(c.shared_store_requests, 32 * warps, "stride {stride}: 32 fill stores per warp");
        assert_eq!(c.shared_load_requests, 2 * warps, "stride {stride}: scalar + v4 load per warp");
        // stores: 1 wavefront each; scalar load: 1 + extra; v4 load (512 contiguous bytes): 4
        assert_eq!(c.shared_bank_conflicts, extra * warps, "stride {stride}: bank conflicts");
        assert_eq!(c.shared_wavefronts, warps * (32 + (1 + extra) + 4), "stride {stride}: wavefronts");
        assert_eq!(c.barriers, warps);
        // and the data is right: word w holds w; v4 word 3 of lane t is 4t+3
        let got = out.to_host().unwrap();
        for t in 0..64u32 {
            let w = ((t % 32) * stride + t / 32) & 2047;
            assert_eq!(got[t as usize], w + 4 * t + 3, "stride {stride} thread {t}");
        }
    }
}

#[test]
fn local_traffic_barriers_and_atomics() {
    let dev = setup();
    let acc = dev.upload(&[0u32]).unwrap();
    let (blocks, threads) = (2u64, 80u64); // 3 warps per block, the last one half full
    let c = run(&dev, "misc", lin(blocks as u32, threads as u32), &[ptr(&acc)]);
    let n = blocks * threads;
    assert_eq!(c.local_store_bytes, n * 16, "4 x st.local.u32 per thread");
    assert_eq!(c.local_load_bytes, n * 8, "2 x ld.local.u32 per thread");
    assert_eq!(c.barriers, 3 * 3 * blocks, "3 bar.sync x 3 warps x blocks");
    assert_eq!(c.atomics, 3 * blocks, "one atom per warp");
    // every local slot holds t, so each thread adds depot[t & 3] + depot[2] = 2t
    let want: u64 = (0..blocks).flat_map(|_| 0..threads).map(|t| 2 * t).sum();
    assert_eq!(acc.to_host().unwrap()[0] as u64, want);
    // 2 full warps + one of 16 lanes per block, no divergence: (32+32+16)/(3*32)
    assert!((c.simt_efficiency() - 80.0 / 96.0).abs() < 1e-12, "simt efficiency {}", c.simt_efficiency());
}

#[test]
fn tensor_macs_and_cp_async_traffic() {
    let dev = setup();
    let out = dev.alloc_filled::<u32>(96, 0xFF).unwrap();
    let c = run(&dev, "mmas", lin(1, 96), &[ptr(&out)]);
    // A = B = 1.0 (f16 0x3c00 pairs), C = 0: every d = 16; s8 all ones: every d = 32
    assert_eq!(out.to_host().unwrap(), vec![48u32; 96]);
    assert_eq!(c.tensor_macs, 3 * (16 * 8 * 16 + 16 * 8 * 32), "3 warps x (m16n8k16 + m16n8k32)");
    assert_eq!(c.inst_tensor, 3 * 2);
    // (each block writes its own 64 outputs: blocks storing to the same words would race)
    let out = dev.alloc_filled::<u32>(128, 0xFF).unwrap();
    let c = run(&dev, "mma16", lin(2, 64), &[ptr(&out)]);
    assert_eq!(out.to_host().unwrap(), vec![17u32; 128], "16 products of 1*1 plus C = 1");
    assert_eq!(c.tensor_macs, 4 * 16 * 8 * 16, "one m16n8k16 per warp = 16*8*16 MACs");
    assert_eq!(c.inst_tensor, 4);
    let input = dev.upload(&vec![7u32; 4 * 128]).unwrap();
    let c = run(&dev, "cpa", lin(1, 128), &[ptr(&input)]);
    assert_eq!(c.global_load_requests, 4, "cp.async: one global load request per warp");
    assert_eq!(c.global_load_bytes, 128 * 16);
    assert_eq!(c.global_load_sectors, 128 * 16 / 32);
    assert_eq!(c.shared_store_requests, 4, "cp.async: one shared store request per warp");
}

#[test]
fn launch_records_totals_and_json() {
    let dev = setup();
    let emu = dev.emulator_backend().unwrap();
    emu.clear_launches();
    let n = 256usize;
    let input = dev.upload(&vec![2.0f32; n]).unwrap();
    let out = dev.alloc_filled::<f32>(n, 0xFF).unwrap();
    launch_ok(&dev, "cnt", "copy", lin(2, 128), &[ptr(&input), ptr(&out), KernelArg::U32(1)]);
    launch_ok(
        &dev,
        "cnt",
        "copy",
        LaunchConfig { grid: (4, 1, 1), block: (64, 1, 1), shared_mem_bytes: 16 },
        &[ptr(&input), ptr(&out), KernelArg::U32(1)],
    );
    let ls = emu.launches();
    assert_eq!(ls.len(), 2);
    assert_eq!((ls[1].module.as_str(), ls[1].kernel.as_str()), ("cnt", "copy"));
    assert_eq!((ls[1].grid, ls[1].block, ls[1].shared_mem_bytes), ((4, 1, 1), (64, 1, 1), 16));
    let tot = emu.total_counters();
    assert_eq!(tot.launches, 2);
    assert_eq!(tot.global_load_bytes, 2 * (n * 4) as u64);
    let mut sum = ls[0].counters.clone();
    sum.add(&ls[1].counters);
    assert_eq!(sum.to_json(), tot.to_json());
    let j = tot.to_json();
    for field in [
        "warp_instructions",
        "thread_instructions",
        "global_load_sectors",
        "shared_bank_conflicts",
        "tensor_macs",
        "simt_efficiency",
        "global_load_efficiency",
        "global_store_efficiency",
        "tma_load_requests",
        "tma_load_efficiency",
    ] {
        assert!(j.get(field).is_some(), "to_json lacks `{field}`");
    }
    assert_eq!(j["global_load_efficiency"].as_f64(), Some(1.0));
    emu.clear_launches();
    assert!(emu.launches().is_empty());
}

/// Divergence shows in simt_efficiency: 8 lanes of each warp run a 10-iteration loop the other
/// 24 skip. Straight-line part: every lane; loop part: 8 of 32 lanes.
#[test]
fn divergence_lowers_simt_efficiency() {
    let ptx = format!(
        r#"{PTX_HEADER}
.visible .entry div_loop(
	.param .u64 p_out
)
{{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<12>;
	.reg .b64 	%rd<4>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	and.b32 	%r2, %r1, 31;
	mov.u32 	%r3, 0;
	setp.ge.u32 	%p1, %r2, 8;
	@%p1 bra 	$L__SKIP;
	mov.u32 	%r4, 0;
$L__LOOP:
	add.s32 	%r3, %r3, %r4;
	add.s32 	%r4, %r4, 1;
	setp.lt.u32 	%p2, %r4, 10;
	@%p2 bra 	$L__LOOP;
$L__SKIP:
	mov.u32 	%r5, %ctaid.x;
	mov.u32 	%r6, %ntid.x;
	mad.lo.s32 	%r7, %r5, %r6, %r1;
	mul.wide.u32 	%rd2, %r7, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r3;
	ret;
}}
"#
    );
    let dev = emu();
    load_ptx(&dev, "dl", &ptx);
    let out = dev.alloc_filled::<u32>(128, 0xFF).unwrap();
    launch_ok(&dev, "dl", "div_loop", lin(2, 64), &[ptr(&out)]);
    let got = out.to_host().unwrap();
    for (t, &g) in got.iter().enumerate().take(128) {
        assert_eq!(g, if t % 32 < 8 { 45 } else { 0 }, "thread {t}");
    }
    let c = last_counters(&dev);
    let warps = 4u64;
    // the loop body (4 instructions x 10 iterations) is issued once per warp for 8 lanes only
    assert!(c.warp_instructions >= warps * (12 + 40), "warp instructions {}", c.warp_instructions);
    assert!(
        c.thread_instructions <= 32 * c.warp_instructions - warps * 40 * 24,
        "inactive lanes must not count as thread instructions"
    );
    let e = c.simt_efficiency();
    assert!(e > 0.3 && e < 0.75, "simt efficiency {e}");
}

/// The per-class profile counts what the counters count (warp instructions per class, thread
/// instructions in total), over every launch since the last take, and is empty when off.
#[test]
fn profile_counts_match_the_counters() {
    let off = setup();
    let out = off.alloc_filled::<u32>(128, 0xFF).unwrap();
    run(&off, "mma16", lin(2, 64), &[ptr(&out)]);
    let empty = off.emulator_backend().unwrap().take_profile();
    assert_eq!(empty.thread_instructions(), 0, "profile off: nothing recorded");

    let dev = emu_with(|o| o.profile = true);
    load_ptx(&dev, "cnt", &format!("{PTX_HEADER}{KERNELS}"));
    let input = dev.upload(&(0..4096).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let copied = dev.alloc_filled::<f32>(4096, 0xFF).unwrap();
    let a = run(&dev, "copy", lin(32, 128), &[ptr(&input), ptr(&copied), KernelArg::U32(1)]);
    let out = dev.alloc_filled::<u32>(128, 0xFF).unwrap();
    let b = run(&dev, "mma16", lin(2, 64), &[ptr(&out)]);
    let mut c = a.clone();
    c.add(&b);
    let p = dev.emulator_backend().unwrap().take_profile();
    let warps: Vec<u64> = p.classes.iter().map(|k| k.warp_instructions).collect();
    assert_eq!(
        warps,
        vec![
            c.inst_integer,
            c.inst_fp32,
            c.inst_fp16,
            c.inst_fp64,
            c.inst_tensor,
            c.inst_memory,
            c.inst_control,
            c.inst_special
        ]
    );
    assert_eq!(p.thread_instructions(), c.thread_instructions);
    assert!(p.classes[4].seconds > 0.0 && p.seconds() > 0.0, "time recorded: {p}");
    assert!(p.to_string().contains("tensor"), "the table names the classes:\n{p}");
    let again = dev.emulator_backend().unwrap().take_profile();
    assert_eq!(again.thread_instructions(), 0, "take_profile empties it");
}
