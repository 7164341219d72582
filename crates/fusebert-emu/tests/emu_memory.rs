//! Memory instructions and state spaces [PTX ISA 5.1 state spaces, 6.4 addressing, 9.7.9.x
//! ld/st/cvta, 9.7.13.x atom/red, 9.7.9.25 cp.async]: vector and sub-word global access, .nc,
//! shared (static + dynamic extern), local arrays, generic addressing, module .global/.const
//! variables with initialisers, global and shared atomics (order-independent checks), and
//! cp.async with zero-fill.
mod common;
use common::*;
use fusebert_kernels::KernelArg;
use rand::Rng;

// ---------------------------------------------------------------------------------------------
// ld/st: vectors, .nc, sub-word widths
// ---------------------------------------------------------------------------------------------

const LDST_PTX: &str = r#"
.visible .entry ldst(
	.param .u64 p_in,
	.param .u64 p_out,
	.param .u64 p_bytes,
	.param .u64 p_out2,
	.param .u32 p_n
)
{
	.reg .pred 	%p<4>;
	.reg .b16 	%rs<8>;
	.reg .b32 	%r<40>;
	.reg .f32 	%f<8>;
	.reg .b64 	%rd<20>;

	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	ld.param.u64 	%rd3, [p_bytes];
	ld.param.u64 	%rd4, [p_out2];
	ld.param.u32 	%r1, [p_n];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	cvta.to.global.u64 	%rd4, %rd4;
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.ge.u32 	%p1, %r5, %r1;
	@%p1 bra 	$L__END;
	// 16 bytes per thread: v4 load, reversed v2 stores
	mul.wide.u32 	%rd5, %r5, 16;
	add.s64 	%rd6, %rd1, %rd5;
	ld.global.v4.u32 	{%r10, %r11, %r12, %r13}, [%rd6];
	add.s64 	%rd7, %rd2, %rd5;
	st.global.v2.u32 	[%rd7], {%r13, %r12};
	st.global.v2.u32 	[%rd7+8], {%r11, %r10};
	// .nc loads (v2.f32 and scalar) of the same data, summed as integers into out2[4i..4i+4)
	ld.global.nc.v2.f32 	{%f1, %f2}, [%rd6+8];
	ld.global.nc.u32 	%r14, [%rd6+4];
	mov.b32 	%r15, %f1;
	mov.b32 	%r16, %f2;
	add.s64 	%rd8, %rd4, %rd5;
	st.global.u32 	[%rd8], %r15;
	st.global.u32 	[%rd8+4], %r16;
	st.global.u32 	[%rd8+8], %r14;
	// sub-word: byte i loaded as u8 (zero-extends) and s8 (sign-extends), s16 at 2*(i/2)
	cvt.u64.u32 	%rd9, %r5;
	add.s64 	%rd10, %rd3, %rd9;
	ld.global.u8 	%r17, [%rd10];
	ld.global.s8 	%r18, [%rd10];
	shl.b32 	%r19, %r17, 16;
	xor.b32 	%r20, %r19, %r18;
	st.global.u32 	[%rd8+12], %r20;
	// st.u8 into the byte buffer itself (in place: byte i = ~byte i), neighbours untouched
	not.b32 	%r21, %r17;
	cvt.u16.u32 	%rs1, %r21;
	st.global.u8 	[%rd10], %rs1;
$L__END:
	ret;
}
"#;

#[test]
fn ld_st_vectors_nc_and_subword() {
    let n = 200usize; // 4 blocks of 64, last partial
    let mut r = rng(1);
    let input: Vec<u32> = (0..4 * n).map(|_| r.gen()).collect();
    let bytes: Vec<u8> = (0..n + 8).map(|_| r.gen()).collect();
    let ptx = format!("{PTX_HEADER}{LDST_PTX}");
    let dev = emu();
    load_ptx(&dev, "ldst", &ptx);
    let din = dev.upload(&input).unwrap();
    let dbytes = dev.upload(&bytes).unwrap();
    let out = dev.alloc_filled::<u32>(4 * n, 0xFF).unwrap();
    let out2 = dev.alloc_filled::<u32>(4 * n, 0xFF).unwrap();
    launch_ok(
        &dev,
        "ldst",
        "ldst",
        lin(4, 64),
        &[ptr(&din), ptr(&out), ptr(&dbytes), ptr(&out2), KernelArg::U32(n as u32)],
    );
    let (o, o2, b2) = (out.to_host().unwrap(), out2.to_host().unwrap(), dbytes.to_host().unwrap());
    for i in 0..n {
        assert_eq!(
            &o[4 * i..4 * i + 4],
            &[input[4 * i + 3], input[4 * i + 2], input[4 * i + 1], input[4 * i]],
            "v4 load / v2 stores, thread {i}"
        );
        assert_eq!(
            &o2[4 * i..4 * i + 3],
            &[input[4 * i + 2], input[4 * i + 3], input[4 * i + 1]],
            ".nc loads, thread {i}"
        );
        let b = bytes[i];
        let want = ((b as u32) << 16) ^ (b as i8 as i32 as u32);
        assert_eq!(o2[4 * i + 3], want, "ld.u8 / ld.s8 extension, byte {b:#x}");
        assert_eq!(b2[i], !b, "st.u8 byte {i}");
    }
    assert_eq!(&b2[n..], &bytes[n..], "bytes past n untouched by st.u8");
}

// ---------------------------------------------------------------------------------------------
// shared (static + dynamic), generic addressing, local, module variables
// ---------------------------------------------------------------------------------------------

const SPACES_PTX: &str = r#"
.global .align 4 .u32 gtab[4] = {11, 22, 33, 44};
.global .align 4 .u32 gcount = 5;
.const .align 4 .f32 ctab[3] = {0f3F800000, 0f40000000, 0fC0400000};
.const .align 8 .u64 cbig = 81985529216486895;
.extern .shared .align 16 .b8 dyn[];

.visible .entry spaces(
	.param .u64 p_in,
	.param .u64 p_out
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<60>;
	.reg .f32 	%f<8>;
	.reg .b64 	%rd<40>;
	.local .align 4 .b8 	depot[64];
	.shared .align 4 .b8 sst[256];

	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %tid.x;
	mov.u32 	%r3, %ntid.x;
	mad.lo.s32 	%r4, %r1, %r3, %r2;
	mul.wide.u32 	%rd3, %r4, 4;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.u32 	%r5, [%rd4];
	// static shared: sst[tid] = v; dynamic: dyn[tid] = 3v (must not alias sst)
	shl.b32 	%r6, %r2, 2;
	mov.u32 	%r7, sst;
	add.s32 	%r8, %r7, %r6;
	st.shared.u32 	[%r8], %r5;
	mul.lo.s32 	%r9, %r5, 3;
	mov.u32 	%r10, dyn;
	add.s32 	%r11, %r10, %r6;
	st.shared.u32 	[%r11], %r9;
	bar.sync 	0;
	// read the mirrored thread's entries: sst via a generic address (cvta.shared), dyn direct
	sub.s32 	%r12, %r3, 1;
	sub.s32 	%r13, %r12, %r2;
	shl.b32 	%r14, %r13, 2;
	add.s32 	%r15, %r7, %r14;
	cvt.u64.u32 	%rd5, %r15;
	cvta.shared.u64 	%rd6, %rd5;
	ld.u32 	%r16, [%rd6];
	add.s32 	%r17, %r10, %r14;
	ld.shared.u32 	%r18, [%r17];
	// local array: depot[k] = v + k for k < 16, then read depot[(v + tid) & 15] via generic
	mov.u64 	%rd7, depot;
	mov.u32 	%r19, 0;
$L__FILL:
	shl.b32 	%r20, %r19, 2;
	cvt.u64.u32 	%rd8, %r20;
	add.s64 	%rd9, %rd7, %rd8;
	add.s32 	%r21, %r5, %r19;
	st.local.u32 	[%rd9], %r21;
	add.s32 	%r19, %r19, 1;
	setp.lt.u32 	%p1, %r19, 16;
	@%p1 bra 	$L__FILL;
	add.s32 	%r22, %r5, %r2;
	and.b32 	%r23, %r22, 15;
	shl.b32 	%r24, %r23, 2;
	cvt.u64.u32 	%rd10, %r24;
	add.s64 	%rd11, %rd7, %rd10;
	cvta.local.u64 	%rd12, %rd11;
	ld.u32 	%r25, [%rd12];
	// module variables: gtab[tid & 3], ctab[tid % 3] (as bits), cbig
	and.b32 	%r26, %r2, 3;
	shl.b32 	%r27, %r26, 2;
	cvt.u64.u32 	%rd13, %r27;
	mov.u64 	%rd14, gtab;
	add.s64 	%rd15, %rd14, %rd13;
	ld.global.u32 	%r28, [%rd15];
	rem.u32 	%r29, %r2, 3;
	shl.b32 	%r30, %r29, 2;
	cvt.u64.u32 	%rd16, %r30;
	mov.u64 	%rd17, ctab;
	add.s64 	%rd18, %rd17, %rd16;
	ld.const.f32 	%f1, [%rd18];
	mov.b32 	%r31, %f1;
	ld.const.u64 	%rd19, [cbig];
	cvt.u32.u64 	%r32, %rd19;
	// generic pointer to a .global variable
	mov.u64 	%rd20, gtab;
	cvta.global.u64 	%rd21, %rd20;
	ld.u32 	%r33, [%rd21+12];
	mov.u32 	%r34, %dynamic_smem_size;
	// out[8 * gid + k]
	mul.wide.u32 	%rd22, %r4, 32;
	add.s64 	%rd23, %rd2, %rd22;
	st.global.v4.u32 	[%rd23], {%r16, %r18, %r25, %r28};
	st.global.v4.u32 	[%rd23+16], {%r31, %r32, %r33, %r34};
	ret;
}

.visible .entry bump(
	.param .u64 p_out
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	atom.global.add.u32 	%r1, [gcount], 1;
	ld.volatile.global.u32 	%r2, [gtab];
	mov.u32 	%r3, %tid.x;
	mov.u32 	%r4, %ctaid.x;
	or.b32 	%r3, %r3, %r4;
	setp.eq.u32 	%p1, %r3, 0;
	@%p1 st.global.u32 	[%rd1], %r2;   // thread 0 of block 0 only: blocks storing to one word would race
	ret;
}

.visible .entry read_count(
	.param .u64 p_out
)
{
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<4>;
	ld.param.u64 	%rd1, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	ld.global.u32 	%r1, [gcount];
	st.global.u32 	[%rd1], %r1;
	ret;
}
"#;

#[test]
fn shared_dynamic_local_generic_and_module_variables() {
    let (blocks, block) = (3u32, 64u32);
    let n = (blocks * block) as usize;
    let mut r = rng(2);
    let input: Vec<u32> = (0..n).map(|_| r.gen_range(0..1_000_000)).collect();
    let ptx = format!("{PTX_HEADER}{SPACES_PTX}");
    let dev = emu();
    load_ptx(&dev, "spaces", &ptx);
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<u32>(8 * n, 0xFF).unwrap();
    let dyn_bytes = block * 4 + 48; // more than needed: %dynamic_smem_size must report it
    launch_ok(
        &dev,
        "spaces",
        "spaces",
        fusebert_kernels::LaunchConfig::linear(blocks, block, dyn_bytes),
        &[ptr(&din), ptr(&out)],
    );
    let o = out.to_host().unwrap();
    let ctab = [1.0f32, 2.0, -3.0];
    for b in 0..blocks as usize {
        for t in 0..block as usize {
            let gid = b * block as usize + t;
            let v = input[gid];
            let mirror = b * block as usize + (block as usize - 1 - t);
            let row = &o[8 * gid..8 * gid + 8];
            let want = [
                input[mirror],
                input[mirror].wrapping_mul(3),
                v + ((v + t as u32) & 15),
                [11, 22, 33, 44][t & 3],
                ctab[t % 3].to_bits(),
                81985529216486895u64 as u32,
                44,
                dyn_bytes,
            ];
            assert_eq!(row, &want, "thread {t} of block {b}: [shared via generic, dynamic shared, local, .global init, .const f32, .const u64, generic .global, %dynamic_smem_size]");
        }
    }
    // .global variables persist across launches of the module; atom on a variable name
    let one = dev.alloc_filled::<u32>(1, 0xFF).unwrap();
    launch_ok(&dev, "spaces", "bump", lin(2, 96), &[ptr(&one)]);
    assert_eq!(one.to_host().unwrap()[0], 11, "gtab[0] initialiser seen by a second kernel");
    launch_ok(&dev, "spaces", "bump", lin(1, 40), &[ptr(&one)]);
    launch_ok(&dev, "spaces", "read_count", lin(1, 1), &[ptr(&one)]);
    assert_eq!(one.to_host().unwrap()[0], 5 + 192 + 40, "gcount = initialiser 5 + 232 atomic increments");
}

const LOCAL_CU: &str = r#"
extern "C" __global__ void local_array(const int* in, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int x = in[i];
    int buf[24];
    for (int k = 0; k < 24; ++k) buf[k] = x * (k + 1) - k;
    int s = 0;
    for (int k = 0; k < 24; ++k) s += buf[(k * 7 + x) % 24] * (k + 1);   // dynamic index: local memory
    out[i] = s;
}
"#;

#[test]
fn local_array_from_nvcc() {
    let n = 150usize;
    let mut r = rng(3);
    let input: Vec<i32> = (0..n).map(|_| r.gen_range(0..1000)).collect();
    let ptx = compile_cu("local_array", LOCAL_CU);
    assert!(ptx.contains(".local"), "nvcc must place the array in local memory for this test to mean anything");
    let dev = emu();
    dev.load_module("loc", &ptx).unwrap();
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<i32>(n, 0xFF).unwrap();
    launch_ok(&dev, "loc", "local_array", lin(3, 64), &[ptr(&din), ptr(&out), KernelArg::I32(n as i32)]);
    let got = out.to_host().unwrap();
    for i in 0..n {
        let x = input[i];
        let buf: Vec<i32> = (0..24).map(|k| x * (k + 1) - k).collect();
        let s: i32 = (0..24).map(|k| buf[((k * 7 + x) % 24) as usize] * (k + 1)).sum();
        assert_eq!(got[i], s, "thread {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// atomics
// ---------------------------------------------------------------------------------------------

/// Global slots (u32 words): 0 add, 1 max.s32, 2 min.u32, 3 inc(limit 100), 4 exch, 5 red.add,
/// 6 add.f32, 8..16 cas slots, 16..18 add.u64, 18..20 add.f64. Shared: the same ops per block,
/// copied to sh_out[block][0..8] after a barrier. olds[8*gid + k] = old values returned.
const ATOM_PTX: &str = r#"
.visible .entry atoms(
	.param .u64 p_val,
	.param .u64 p_acc,
	.param .u64 p_olds,
	.param .u64 p_shout
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<60>;
	.reg .f32 	%f<8>;
	.reg .f64 	%fd<4>;
	.reg .b64 	%rd<30>;
	.shared .align 8 .b8 sacc[32];

	ld.param.u64 	%rd1, [p_val];
	ld.param.u64 	%rd2, [p_acc];
	ld.param.u64 	%rd3, [p_olds];
	ld.param.u64 	%rd4, [p_shout];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	cvta.to.global.u64 	%rd4, %rd4;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %tid.x;
	mov.u32 	%r3, %ntid.x;
	mad.lo.s32 	%r4, %r1, %r3, %r2;
	// shared accumulators: thread 0 initialises, barrier
	mov.u32 	%r5, sacc;
	setp.ne.u32 	%p1, %r2, 0;
	@%p1 bra 	$L__INIT_DONE;
	mov.u32 	%r6, 0;
	st.shared.u32 	[%r5], %r6;
	mov.u32 	%r7, -2147483648;
	st.shared.u32 	[%r5+4], %r7;
	mov.u32 	%r8, -1;
	st.shared.u32 	[%r5+8], %r8;
	st.shared.u32 	[%r5+12], %r6;
	st.shared.u32 	[%r5+16], %r8;
	st.shared.u32 	[%r5+20], %r6;
	st.shared.u32 	[%r5+24], %r6;
	st.shared.u32 	[%r5+28], %r6;
$L__INIT_DONE:
	bar.sync 	0;
	mul.wide.u32 	%rd5, %r4, 4;
	add.s64 	%rd6, %rd1, %rd5;
	ld.global.u32 	%r10, [%rd6];
	mul.wide.u32 	%rd7, %r4, 32;
	add.s64 	%rd8, %rd3, %rd7;
	// global
	atom.global.add.u32 	%r11, [%rd2], %r10;
	atom.global.max.s32 	%r12, [%rd2+4], %r10;
	atom.global.min.u32 	%r13, [%rd2+8], %r10;
	atom.global.inc.u32 	%r14, [%rd2+12], 100;
	atom.global.exch.b32 	%r15, [%rd2+16], %r4;
	red.global.add.u32 	[%rd2+20], 1;
	and.b32 	%r16, %r4, 7;
	mul.wide.u32 	%rd9, %r16, 4;
	add.s64 	%rd10, %rd2, %rd9;
	add.s32 	%r17, %r4, 1;
	atom.global.cas.b32 	%r18, [%rd10+32], 0, %r17;
	// f32: value/8 is a small dyadic number: every partial sum is exact, so the total is
	// independent of the order
	cvt.rn.f32.u32 	%f1, %r10;
	mul.rn.f32 	%f2, %f1, 0f3E000000;
	atom.global.add.f32 	%f3, [%rd2+24], %f2;
	cvt.u64.u32 	%rd11, %r10;
	shl.b64 	%rd12, %rd11, 33;
	atom.global.add.u64 	%rd13, [%rd2+64], %rd12;
	cvt.rn.f64.u32 	%fd1, %r10;
	atom.global.add.f64 	%fd2, [%rd2+72], %fd1;
	st.global.v4.u32 	[%rd8], {%r11, %r12, %r13, %r14};
	st.global.v2.u32 	[%rd8+16], {%r15, %r18};
	// shared
	atom.shared.add.u32 	%r20, [%r5], %r10;
	atom.shared.max.s32 	%r21, [%r5+4], %r10;
	atom.shared.min.u32 	%r22, [%r5+8], %r10;
	atom.shared.inc.u32 	%r23, [%r5+12], 10;
	atom.shared.exch.b32 	%r24, [%r5+16], %r4;
	and.b32 	%r25, %r2, 1;
	shl.b32 	%r26, %r25, 2;
	add.s32 	%r27, %r5, %r26;
	atom.shared.cas.b32 	%r28, [%r27+20], 0, %r17;
	atom.shared.add.f32 	%f4, [%r5+28], %f2;
	st.global.v2.u32 	[%rd8+24], {%r20, %r28};
	bar.sync 	0;
	@%p1 bra 	$L__END;
	ld.shared.v4.u32 	{%r30, %r31, %r32, %r33}, [%r5];
	ld.shared.v4.u32 	{%r34, %r35, %r36, %r37}, [%r5+16];
	mul.wide.u32 	%rd14, %r1, 32;
	add.s64 	%rd15, %rd4, %rd14;
	st.global.v4.u32 	[%rd15], {%r30, %r31, %r32, %r33};
	st.global.v4.u32 	[%rd15+16], {%r34, %r35, %r36, %r37};
$L__END:
	ret;
}
"#;

/// The returned old values of a fetch-and-add, sorted, must chain: old_{k+1} = old_k + v_k.
fn check_add_chain(init: u32, olds_vals: &mut [(u32, u32)], fin: u32, what: &str) {
    olds_vals.sort();
    let mut acc = init;
    for &(old, v) in olds_vals.iter() {
        assert_eq!(old, acc, "{what}: returned old values are not a serial order of the additions");
        acc = acc.wrapping_add(v);
    }
    assert_eq!(fin, acc, "{what}: final value");
}

#[test]
fn atomics_global_and_shared() {
    let (blocks, block) = (3usize, 96usize);
    let n = blocks * block;
    let mut r = rng(4);
    let vals: Vec<u32> = (0..n).map(|_| r.gen_range(1..5000)).collect();
    let ptx = format!("{PTX_HEADER}{ATOM_PTX}");
    let dev = emu();
    load_ptx(&dev, "atoms", &ptx);
    let dv = dev.upload(&vals).unwrap();
    // initial global accumulators
    let mut init = vec![0u32; 20];
    init[1] = i32::MIN as u32;
    init[2] = u32::MAX;
    init[4] = 0xabcdef;
    let acc = dev.upload(&init).unwrap();
    let olds = dev.alloc_filled::<u32>(8 * n, 0xFF).unwrap();
    let shout = dev.alloc_filled::<u32>(8 * blocks, 0xFF).unwrap();
    launch_ok(
        &dev,
        "atoms",
        "atoms",
        lin(blocks as u32, block as u32),
        &[ptr(&dv), ptr(&acc), ptr(&olds), ptr(&shout)],
    );
    let (a, o, s) = (acc.to_host().unwrap(), olds.to_host().unwrap(), shout.to_host().unwrap());
    let old = |i: usize, k: usize| o[8 * i + k];
    // add
    let mut pairs: Vec<(u32, u32)> = (0..n).map(|i| (old(i, 0), vals[i])).collect();
    check_add_chain(0, &mut pairs, a[0], "atom.global.add.u32");
    assert_eq!(a[1], *vals.iter().max().unwrap(), "atom.global.max.s32");
    assert_eq!(a[2], *vals.iter().min().unwrap(), "atom.global.min.u32");
    // inc with limit 100: new = old >= 100 ? 0 : old + 1; the olds are 0..=100 repeating
    let mut incs: Vec<u32> = (0..n).map(|i| old(i, 3)).collect();
    incs.sort();
    let mut want: Vec<u32> = (0..n as u32).map(|k| k % 101).collect();
    want.sort();
    assert_eq!(incs, want, "atom.global.inc.u32 returned values");
    assert_eq!(a[3], n as u32 % 101, "atom.global.inc.u32 final");
    // exch: {olds} + {final} == {initial} + {all thread ids}
    let mut seen: Vec<u32> = (0..n).map(|i| old(i, 4)).chain([a[4]]).collect();
    seen.sort();
    let mut want: Vec<u32> = (0..n as u32).chain([0xabcdef]).collect();
    want.sort();
    assert_eq!(seen, want, "atom.global.exch.b32");
    assert_eq!(a[5], n as u32, "red.global.add.u32");
    // cas: one winner per slot (saw 0), the slot holds winner + 1
    for slot in 0..8 {
        let winners: Vec<usize> = (0..n).filter(|&i| i % 8 == slot && old(i, 5) == 0).collect();
        assert_eq!(winners.len(), 1, "atom.global.cas slot {slot}: exactly one thread sees 0");
        assert_eq!(a[8 + slot], winners[0] as u32 + 1, "cas slot {slot} value");
        for i in (0..n).filter(|&i| i % 8 == slot && i != winners[0]) {
            assert_eq!(old(i, 5), winners[0] as u32 + 1, "cas loser {i} sees the winner's value");
        }
    }
    let fsum: f64 = vals.iter().map(|&v| v as f64 / 8.0).sum();
    assert_eq!(f32::from_bits(a[6]) as f64, fsum, "atom.global.add.f32 (exact dyadic sum)");
    let u64sum: u64 = vals.iter().map(|&v| (v as u64) << 33).fold(0, |x, y| x.wrapping_add(y));
    assert_eq!(a[16] as u64 | ((a[17] as u64) << 32), u64sum, "atom.global.add.u64");
    let dsum: f64 = vals.iter().map(|&v| v as f64).sum();
    assert_eq!(f64::from_bits(a[18] as u64 | ((a[19] as u64) << 32)), dsum, "atom.global.add.f64");
    // shared, per block
    for b in 0..blocks {
        let ids: Vec<usize> = (b * block..(b + 1) * block).collect();
        let sb = &s[8 * b..8 * b + 8];
        let mut pairs: Vec<(u32, u32)> = ids.iter().map(|&i| (old(i, 6), vals[i])).collect();
        check_add_chain(0, &mut pairs, sb[0], "atom.shared.add.u32");
        assert_eq!(sb[1], ids.iter().map(|&i| vals[i]).max().unwrap(), "atom.shared.max.s32");
        assert_eq!(sb[2], ids.iter().map(|&i| vals[i]).min().unwrap(), "atom.shared.min.u32");
        assert_eq!(sb[3], block as u32 % 11, "atom.shared.inc.u32 limit 10");
        assert!(ids.iter().any(|&i| i as u32 == sb[4]), "atom.shared.exch final is one of the block's ids");
        for parity in 0..2 {
            let winners: Vec<usize> =
                ids.iter().copied().filter(|&i| (i % block) % 2 == parity && old(i, 7) == 0).collect();
            assert_eq!(winners.len(), 1, "atom.shared.cas slot {parity} of block {b}");
            assert_eq!(sb[5 + parity], winners[0] as u32 + 1);
        }
        let fs: f64 = ids.iter().map(|&i| vals[i] as f64 / 8.0).sum();
        assert_eq!(f32::from_bits(sb[7]) as f64, fs, "atom.shared.add.f32");
    }
}

/// Float atomics of random (non-dyadic) values: with deterministic_atomics the bits must not
/// depend on the worker-thread count, and the sum must be within f32 rounding of the exact one.
#[test]
fn float_atomic_add_deterministic_option() {
    let cu = r#"
extern "C" __global__ void fsum(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&out[i % 3], x[i]);
}
"#;
    let ptx = compile_cu("fsum", cu);
    let n = 1000usize;
    let mut r = rng(5);
    let x: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let mut results = Vec::new();
    for threads in [1usize, 0, 3] {
        let dev = emu_with(|o| {
            o.threads = threads;
            o.deterministic_atomics = true;
        });
        dev.load_module("fsum", &ptx).unwrap();
        let dx = dev.upload(&x).unwrap();
        let out = dev.upload(&[0f32; 3]).unwrap();
        launch_ok(&dev, "fsum", "fsum", lin(8, 128), &[ptr(&dx), ptr(&out), KernelArg::I32(n as i32)]);
        results.push(out.to_host().unwrap());
    }
    for k in 0..3 {
        let exact: f64 = (k..n).step_by(3).map(|i| x[i] as f64).sum();
        let abs: f64 = (k..n).step_by(3).map(|i| (x[i] as f64).abs()).sum();
        assert!(
            (results[0][k] as f64 - exact).abs() <= 400.0 * 2f64.powi(-24) * abs,
            "sum {k}: {} vs {exact}",
            results[0][k]
        );
        for r in &results[1..] {
            assert_eq!(
                r[k].to_bits(),
                results[0][k].to_bits(),
                "deterministic_atomics: same bits whatever the thread count"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cp.async
// ---------------------------------------------------------------------------------------------

/// Per thread t of a 64-thread block (dst = this block's shared buffers):
///  group 1: ca 16 bytes  g[16*gid] -> A[16*t]; ca 4 and ca 8 -> C[16*t], C[16*t+8]
///  group 2: cg 16 bytes  g[16*gid] -> B[16*t] with src_size = t % 17 (zero-fill the rest);
///           ca 16 from an OUT-OF-BOUNDS source with src_size 0 -> D[16*t] (all zeros)
///  wait_group 1 (group 1 done), read own A; wait_group 0; bar.sync; read neighbour's B/C/D.
const CPASYNC_PTX: &str = r#"
.visible .entry cpasync(
	.param .u64 p_g,
	.param .u64 p_oob,
	.param .u64 p_out
)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<80>;
	.reg .b64 	%rd<30>;
	.shared .align 16 .b8 A[1024];
	.shared .align 16 .b8 B[1024];
	.shared .align 16 .b8 C[1024];
	.shared .align 16 .b8 D[1024];

	ld.param.u64 	%rd1, [p_g];
	ld.param.u64 	%rd2, [p_oob];
	ld.param.u64 	%rd3, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %tid.x;
	mad.lo.s32 	%r3, %r1, 64, %r2;
	mul.wide.u32 	%rd4, %r3, 16;
	add.s64 	%rd5, %rd1, %rd4;
	shl.b32 	%r4, %r2, 4;
	mov.u32 	%r5, A;
	add.s32 	%r6, %r5, %r4;
	mov.u32 	%r7, B;
	add.s32 	%r8, %r7, %r4;
	mov.u32 	%r9, C;
	add.s32 	%r10, %r9, %r4;
	mov.u32 	%r11, D;
	add.s32 	%r12, %r11, %r4;
	cp.async.ca.shared.global 	[%r6], [%rd5], 16;
	cp.async.ca.shared.global 	[%r10], [%rd5], 4;
	cp.async.ca.shared.global 	[%r10+8], [%rd5+8], 8;
	cp.async.commit_group;
	rem.u32 	%r13, %r2, 17;
	cp.async.cg.shared.global.L2::128B 	[%r8], [%rd5], 16, %r13;
	cp.async.ca.shared.global 	[%r12], [%rd2], 16, 0;
	cp.async.commit_group;
	cp.async.wait_group 	1;
	ld.shared.v4.u32 	{%r20, %r21, %r22, %r23}, [%r6];
	cp.async.wait_group 	0;
	bar.sync 	0;
	// neighbour (t + 1) % 64
	add.s32 	%r14, %r2, 1;
	and.b32 	%r15, %r14, 63;
	shl.b32 	%r16, %r15, 4;
	add.s32 	%r17, %r7, %r16;
	ld.shared.v4.u32 	{%r24, %r25, %r26, %r27}, [%r17];
	add.s32 	%r18, %r9, %r16;
	ld.shared.u32 	%r28, [%r18];
	ld.shared.v2.u32 	{%r29, %r30}, [%r18+8];
	add.s32 	%r19, %r11, %r16;
	ld.shared.v4.u32 	{%r31, %r32, %r33, %r34}, [%r19];
	or.b32 	%r35, %r31, %r32;
	or.b32 	%r36, %r33, %r34;
	or.b32 	%r37, %r35, %r36;
	mul.wide.u32 	%rd6, %r3, 64;
	add.s64 	%rd7, %rd3, %rd6;
	st.global.v4.u32 	[%rd7], {%r20, %r21, %r22, %r23};
	st.global.v4.u32 	[%rd7+16], {%r24, %r25, %r26, %r27};
	st.global.v4.u32 	[%rd7+32], {%r28, %r29, %r30, %r37};
	cp.async.wait_all;
	st.global.v4.u32 	[%rd7+48], {%r28, %r28, %r28, %r28};
	ret;
}
"#;

#[test]
fn cp_async_groups_zero_fill_and_src_size_zero() {
    let blocks = 2usize;
    let n = blocks * 64;
    let mut r = rng(6);
    let g: Vec<u32> = (0..4 * n).map(|_| r.gen::<u32>() | 0x0101_0101).collect(); // no zero bytes
    let ptx = format!("{PTX_HEADER}{CPASYNC_PTX}");
    let dev = emu(); // every sanitizer on: the src_size 0 source must NOT be flagged
    load_ptx(&dev, "cpa", &ptx);
    let dg = dev.upload(&g).unwrap();
    let oob = dg.addr() + (4 * n * 4) as u64 + (1 << 20); // far past the end of the allocation
    let out = dev.alloc_filled::<u32>(16 * n, 0xFF).unwrap();
    if let Err(e) = dev.launch_in("cpa", "cpasync", lin(blocks as u32, 64), &[ptr(&dg), KernelArg::U64(oob), ptr(&out)])
    {
        panic!("cp.async kernel must run clean (src_size 0 reads nothing, so its address is not checked): {e}");
    }
    let o = out.to_host().unwrap();
    let gb = |w: usize| -> [u8; 4] { g[w].to_le_bytes() };
    for b in 0..blocks {
        for t in 0..64 {
            let gid = b * 64 + t;
            let row = &o[16 * gid..16 * gid + 16];
            assert_eq!(
                &row[0..4],
                &g[4 * gid..4 * gid + 4],
                "ca 16: own data after wait_group 1 (block {b} thread {t})"
            );
            let nt = (t + 1) % 64;
            let ngid = b * 64 + nt;
            // zero-filled tail: src_size = nt % 17 bytes copied
            let keep = nt % 17;
            let mut want = [0u8; 16];
            for (k, w) in want.iter_mut().enumerate().take(keep) {
                *w = gb(4 * ngid + k / 4)[k % 4];
            }
            let got: Vec<u8> = row[4..8].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(got, want.to_vec(), "cg 16 with src_size {keep}: copy then zero-fill (neighbour {nt})");
            assert_eq!(row[8], g[4 * ngid], "ca 4");
            assert_eq!(&row[9..11], &g[4 * ngid + 2..4 * ngid + 4], "ca 8");
            assert_eq!(row[11], 0, "src_size 0: destination zero-filled");
            assert_eq!(&row[12..16], &[g[4 * ngid]; 4], "after cp.async.wait_all");
        }
    }
}

/// Cache-policy qualifiers nvcc can emit change nothing about the values moved; prefetch and
/// 64-bit vector accesses, and 64-bit atomics.
const QUALIFIERS_PTX: &str = r#"
.visible .entry quals(
	.param .u64 p_in,
	.param .u64 p_out
)
{
	.reg .b32 	%r<40>;
	.reg .f32 	%f<8>;
	.reg .b64 	%rd<30>;
	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r4, %r1, %r2, %r3;
	mul.wide.u32 	%rd3, %r4, 32;
	add.s64 	%rd4, %rd1, %rd3;
	add.s64 	%rd5, %rd2, %rd3;
	prefetch.global.L2 	[%rd4];
	ld.global.ca.u32 	%r10, [%rd4];
	ld.global.cg.u32 	%r11, [%rd4+4];
	ld.global.cs.u32 	%r12, [%rd4+8];
	ld.global.lu.u32 	%r13, [%rd4+12];
	ld.global.cv.u32 	%r14, [%rd4+16];
	ld.global.nc.L1::no_allocate.u32 	%r15, [%rd4+20];
	ld.global.L1::evict_last.u32 	%r16, [%rd4+24];
	ld.global.nc.L2::128B.u32 	%r17, [%rd4+28];
	st.global.wb.u32 	[%rd5], %r17;
	st.global.cg.u32 	[%rd5+4], %r16;
	st.global.cs.u32 	[%rd5+8], %r15;
	st.global.wt.u32 	[%rd5+12], %r14;
	st.global.L1::no_allocate.u32 	[%rd5+16], %r13;
	st.global.v2.u32 	[%rd5+24], {%r10, %r11};
	st.global.u32 	[%rd5+20], %r12;
	ret;
}

.visible .entry wide(
	.param .u64 p_in,
	.param .u64 p_out,
	.param .u64 p_acc
)
{
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<30>;
	.reg .f64 	%fd<4>;
	ld.param.u64 	%rd1, [p_in];
	ld.param.u64 	%rd2, [p_out];
	ld.param.u64 	%rd3, [p_acc];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r4, %r1, %r2, %r3;
	mul.wide.u32 	%rd4, %r4, 16;
	add.s64 	%rd5, %rd1, %rd4;
	add.s64 	%rd6, %rd2, %rd4;
	ld.global.v2.u64 	{%rd10, %rd11}, [%rd5];
	ld.global.v2.f64 	{%fd1, %fd2}, [%rd5];
	add.s64 	%rd12, %rd10, %rd11;
	st.global.v2.u64 	[%rd6], {%rd12, %rd10};
	atom.global.add.u64 	%rd13, [%rd3], %rd11;
	atom.global.exch.b64 	%rd14, [%rd3+8], %rd10;
	atom.global.cas.b64 	%rd15, [%rd3+16], 0, %rd12;
	atom.global.max.u64 	%rd16, [%rd3+24], %rd10;
	ret;
}
"#;

#[test]
fn cache_qualifiers_prefetch_and_64bit_vectors_atomics() {
    let n = 96usize;
    let mut r = rng(7);
    let input: Vec<u32> = (0..8 * n).map(|_| r.gen()).collect();
    let dev = emu();
    load_ptx(&dev, "q", &format!("{PTX_HEADER}{QUALIFIERS_PTX}"));
    let din = dev.upload(&input).unwrap();
    let out = dev.alloc_filled::<u32>(8 * n, 0xFF).unwrap();
    launch_ok(&dev, "q", "quals", lin(3, 32), &[ptr(&din), ptr(&out)]);
    let o = out.to_host().unwrap();
    for i in 0..n {
        let x = &input[8 * i..8 * i + 8];
        assert_eq!(&o[8 * i..8 * i + 8], &[x[7], x[6], x[5], x[4], x[3], x[2], x[0], x[1]], "thread {i}");
    }
    let w: Vec<u64> = (0..2 * n).map(|_| r.gen::<u64>() >> 8).collect();
    let dw = dev.upload(&w).unwrap();
    let out = dev.alloc_filled::<u64>(2 * n, 0xFF).unwrap();
    let acc = dev.upload(&[0u64, 7, 0, 0]).unwrap();
    launch_ok(&dev, "q", "wide", lin(3, 32), &[ptr(&dw), ptr(&out), ptr(&acc)]);
    let o = out.to_host().unwrap();
    for i in 0..n {
        assert_eq!(&o[2 * i..2 * i + 2], &[w[2 * i].wrapping_add(w[2 * i + 1]), w[2 * i]], "v2.u64 thread {i}");
    }
    let a = acc.to_host().unwrap();
    assert_eq!(a[0], (0..n).map(|i| w[2 * i + 1]).fold(0u64, |s, x| s.wrapping_add(x)), "atom.add.u64");
    assert!((0..n).any(|i| w[2 * i] == a[1]), "atom.exch.b64 leaves one of the values written");
    assert!((0..n).any(|i| w[2 * i].wrapping_add(w[2 * i + 1]) == a[2]), "atom.cas.b64: exactly one thread stored");
    assert_eq!(a[3], (0..n).map(|i| w[2 * i]).max().unwrap(), "atom.max.u64");
}

/// Kernel parameters of mixed sizes (padding before 8-byte ones), f32/f64/i64 values read back
/// with ld.param; 16-bit global loads/stores (zero- and sign-extension).
const PARAMS_PTX: &str = r#"
.visible .entry params(
	.param .u32 a_u32,
	.param .u64 b_ptr,
	.param .f32 c_f32,
	.param .f64 d_f64,
	.param .s32 e_s32,
	.param .s64 f_s64,
	.param .u64 g_halves
)
{
	.reg .b16 	%rs<4>;
	.reg .b32 	%r<16>;
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<16>;
	.reg .f64 	%fd<2>;
	ld.param.u32 	%r1, [a_u32];
	ld.param.u64 	%rd1, [b_ptr];
	ld.param.f32 	%f1, [c_f32];
	ld.param.f64 	%fd1, [d_f64];
	ld.param.s32 	%r2, [e_s32];
	ld.param.s64 	%rd2, [f_s64];
	ld.param.u64 	%rd3, [g_halves];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r3, %tid.x;
	setp.ne.u32 	%p1, %r3, 0;
	@%p1 bra 	$L__HALVES;
	mov.b32 	%r4, %f1;
	mov.b64 	%rd4, %fd1;
	st.global.u32 	[%rd1], %r1;
	st.global.u32 	[%rd1+4], %r4;
	st.global.u64 	[%rd1+8], %rd4;
	st.global.u32 	[%rd1+16], %r2;
	st.global.u32 	[%rd1+20], %r3;
	st.global.u64 	[%rd1+24], %rd2;
$L__HALVES:
	// element t of a (read-only: .nc) u16 array: zero-/sign-extended; element + 1 stored as u16
	mul.wide.u32 	%rd5, %r3, 2;
	add.s64 	%rd6, %rd3, %rd5;
	ld.global.nc.u16 	%rs1, [%rd6];
	ld.global.u16 	%r5, [%rd6];
	ld.global.s16 	%r6, [%rd6];
	cvt.u32.u16 	%r7, %rs1;
	xor.b32 	%r8, %r5, %r7;
	add.s16 	%rs2, %rs1, 1;
	add.s64 	%rd9, %rd1, %rd5;
	st.global.u16 	[%rd9+288], %rs2;
	mul.wide.u32 	%rd7, %r3, 8;
	add.s64 	%rd8, %rd1, %rd7;
	st.global.v2.u32 	[%rd8+32], {%r6, %r8};
	ret;
}
"#;

#[test]
fn mixed_size_params_and_16bit_memory() {
    let ptx = format!(
        "{PTX_HEADER}{}",
        PARAMS_PTX.replace("\t.reg .b16 \t%rs<4>;", "\t.reg .pred \t%p<2>;\n\t.reg .b16 \t%rs<4>;")
    );
    let dev = emu();
    load_ptx(&dev, "params", &ptx);
    let out = dev.alloc_filled::<u32>(8 + 2 * 32 + 16, 0xFF).unwrap();
    let mut r = rng(8);
    let halves: Vec<u16> = (0..32).map(|i| if i % 4 == 0 { 0x8000 | r.gen::<u16>() } else { r.gen() }).collect();
    let dh = dev.upload(&halves).unwrap();
    let args = [
        KernelArg::U32(0xdead_beef),
        ptr(&out),
        KernelArg::F32(-1.25e-3),
        KernelArg::F64(std::f64::consts::PI),
        KernelArg::I32(-123_456),
        KernelArg::I64(-9_876_543_210_123),
        ptr(&dh),
    ];
    launch_ok(&dev, "params", "params", lin(1, 32), &args);
    let o = out.to_host().unwrap();
    assert_eq!(o[0], 0xdead_beef);
    assert_eq!(f32::from_bits(o[1]), -1.25e-3);
    assert_eq!(f64::from_bits(o[2] as u64 | ((o[3] as u64) << 32)), std::f64::consts::PI);
    assert_eq!(o[4] as i32, -123_456);
    assert_eq!(o[5], 0, "tid of thread 0");
    assert_eq!((o[6] as u64 | ((o[7] as u64) << 32)) as i64, -9_876_543_210_123);
    for t in 0..32 {
        assert_eq!(o[8 + 2 * t], halves[t] as i16 as i32 as u32, "ld.global.s16 sign-extends (t={t})");
        assert_eq!(o[8 + 2 * t + 1], 0, "ld.global.u16 into .b32 and .b16 agree (t={t})");
    }
    for t in 0..32 {
        let w = o[72 + t / 2];
        let h = if t % 2 == 0 { w as u16 } else { (w >> 16) as u16 };
        assert_eq!(h, halves[t].wrapping_add(1), "st.global.u16 t={t}");
    }
    assert_eq!(dh.to_host().unwrap(), halves, "the .nc input is untouched");
}

/// cp.async with the ignore-src predicate [9.7.9.25]: when true the source is not read and the
/// destination is zero-filled (so an out-of-bounds source is fine); when false it copies.
#[test]
fn cp_async_ignore_src_predicate() {
    let ptx = format!(
        r#"{PTX_HEADER}
.visible .entry cpi(
	.param .u64 p_g,
	.param .u64 p_out,
	.param .u32 p_n
)
{{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<16>;
	.reg .b64 	%rd<8>;
	.shared .align 16 .b8 buf[1024];
	ld.param.u64 	%rd1, [p_g];
	ld.param.u64 	%rd2, [p_out];
	ld.param.u32 	%r1, [p_n];
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r2, %tid.x;
	// rows >= n are past the end of g: ignore the source for them
	setp.ge.u32 	%p1, %r2, %r1;
	mul.wide.u32 	%rd3, %r2, 16;
	add.s64 	%rd4, %rd1, %rd3;
	shl.b32 	%r3, %r2, 4;
	mov.u32 	%r4, buf;
	add.s32 	%r5, %r4, %r3;
	cp.async.ca.shared.global 	[%r5], [%rd4], 16, %p1;
	cp.async.commit_group;
	cp.async.wait_group 	0;
	ld.shared.v4.u32 	{{%r6, %r7, %r8, %r9}}, [%r5];
	mul.wide.u32 	%rd5, %r2, 16;
	add.s64 	%rd6, %rd2, %rd5;
	st.global.v4.u32 	[%rd6], {{%r6, %r7, %r8, %r9}};
	ret;
}}
"#
    );
    let n = 40usize; // 64 threads, the last 24 rows do not exist in g
    let mut r = rng(9);
    let g: Vec<u32> = (0..4 * n).map(|_| r.gen::<u32>() | 1).collect();
    let dev = emu();
    load_ptx(&dev, "cpi", &ptx);
    let dg = dev.upload(&g).unwrap();
    let out = dev.alloc_filled::<u32>(4 * 64, 0xFF).unwrap();
    launch_ok(&dev, "cpi", "cpi", lin(1, 64), &[ptr(&dg), ptr(&out), KernelArg::U32(n as u32)]);
    let o = out.to_host().unwrap();
    for t in 0..64 {
        let want: Vec<u32> = if t < n { g[4 * t..4 * t + 4].to_vec() } else { vec![0; 4] };
        assert_eq!(&o[4 * t..4 * t + 4], &want[..], "row {t}");
    }
}
