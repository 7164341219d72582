//! Tensor-core fragments [PTX ISA 9.7.13.4.x, docs/ptx-semantics.md "Tensor-core fragments"]:
//! every lane's registers are built on the host from the layout formulas, the warp runs one
//! mma, and each output register is checked against the plain-loop product at the position
//! the formula assigns to it. ldmatrix x1/x2/x4 (.trans) likewise, and an ldmatrix+mma GEMM
//! (nvcc-compiled) against a plain matmul.
mod common;
use common::*;
use fusebert_kernels::KernelArg;
use rand::Rng;

const WARPS: usize = 4; // 2 blocks x 2 warps, each warp its own matrices

fn mma_ptx(kind: &str) -> String {
    let (mma, cty, dregs, cregs, cld, dst) = match kind {
        "f16" => (
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
            "f32",
            "{%f5, %f6, %f7, %f8}",
            "{%f1, %f2, %f3, %f4}",
            "ld.global.v4.f32 \t{%f1, %f2, %f3, %f4}, [%rd9];",
            "st.global.v4.f32 \t[%rd10], {%f5, %f6, %f7, %f8};",
        ),
        "bf16" => (
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "f32",
            "{%f5, %f6, %f7, %f8}",
            "{%f1, %f2, %f3, %f4}",
            "ld.global.v4.f32 \t{%f1, %f2, %f3, %f4}, [%rd9];",
            "st.global.v4.f32 \t[%rd10], {%f5, %f6, %f7, %f8};",
        ),
        "s8" => (
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32",
            "s32",
            "{%r20, %r21, %r22, %r23}",
            "{%r16, %r17, %r18, %r19}",
            "ld.global.v4.u32 \t{%r16, %r17, %r18, %r19}, [%rd9];",
            "st.global.v4.u32 \t[%rd10], {%r20, %r21, %r22, %r23};",
        ),
        "s8sat" => (
            "mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32",
            "s32",
            "{%r20, %r21, %r22, %r23}",
            "{%r16, %r17, %r18, %r19}",
            "ld.global.v4.u32 \t{%r16, %r17, %r18, %r19}, [%rd9];",
            "st.global.v4.u32 \t[%rd10], {%r20, %r21, %r22, %r23};",
        ),
        _ => unreachable!(),
    };
    let _ = cty;
    format!(
        r#"{PTX_HEADER}
.visible .entry mma_kernel(
	.param .u64 pa,
	.param .u64 pb,
	.param .u64 pc,
	.param .u64 pd
)
{{
	.reg .b32 	%r<40>;
	.reg .f32 	%f<16>;
	.reg .b64 	%rd<20>;

	ld.param.u64 	%rd1, [pa];
	ld.param.u64 	%rd2, [pb];
	ld.param.u64 	%rd3, [pc];
	ld.param.u64 	%rd4, [pd];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	cvta.to.global.u64 	%rd4, %rd4;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r4, %r1, %r2, %r3;
	mul.wide.u32 	%rd5, %r4, 16;
	add.s64 	%rd6, %rd1, %rd5;
	ld.global.v4.u32 	{{%r10, %r11, %r12, %r13}}, [%rd6];
	mul.wide.u32 	%rd7, %r4, 8;
	add.s64 	%rd8, %rd2, %rd7;
	ld.global.v2.u32 	{{%r14, %r15}}, [%rd8];
	add.s64 	%rd9, %rd3, %rd5;
	{cld}
	{mma} 	{dregs}, {{%r10, %r11, %r12, %r13}}, {{%r14, %r15}}, {cregs};
	add.s64 	%rd10, %rd4, %rd5;
	{dst}
	ret;
}}
"#
    )
}

/// Runs the per-lane fragment kernel: a = 4 regs/lane, b = 2 regs/lane, c = 4 words/lane.
fn run_mma(kind: &str, a: &[u32], b: &[u32], c: &[u32]) -> Vec<u32> {
    let dev = emu();
    load_ptx(&dev, "mma", &mma_ptx(kind));
    let (da, db, dc) = (dev.upload(a).unwrap(), dev.upload(b).unwrap(), dev.upload(c).unwrap());
    let d = dev.alloc_filled::<u32>(c.len(), 0xFF).unwrap();
    launch_ok(&dev, "mma", "mma_kernel", lin(2, 64), &[ptr(&da), ptr(&db), ptr(&dc), ptr(&d)]);
    d.to_host().unwrap()
}

/// Output positions of c0..c3 for a lane [9.7.13.4.x]: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
fn cd_pos(lane: usize, r: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane & 3);
    (g + 8 * (r >> 1), 2 * t + (r & 1))
}

/// m16n8k16 with 16-bit inputs (f16 or bf16 bit patterns `ab(value)`), f32 accumulators.
fn check_mma_16bit(kind: &str, enc: fn(f64) -> u16, dec: fn(u16) -> f64, seed: u64) {
    let mut r = rng(seed);
    let mut afr = vec![0u32; WARPS * 32 * 4];
    let mut bfr = vec![0u32; WARPS * 32 * 2];
    let mut cfr = vec![0u32; WARPS * 32 * 4];
    let mut want = vec![0f64; WARPS * 32 * 4];
    let mut scale = vec![0f64; WARPS * 32 * 4];
    for w in 0..WARPS {
        // random non-zero values, representable exactly in the 16-bit format
        let am: Vec<Vec<u16>> = (0..16)
            .map(|_| (0..16).map(|_| enc(r.gen_range(0.05..1.0) * if r.gen::<bool>() { -1.0 } else { 1.0 })).collect())
            .collect();
        let bm: Vec<Vec<u16>> = (0..16)
            .map(|_| (0..8).map(|_| enc(r.gen_range(0.05..1.0) * if r.gen::<bool>() { -1.0 } else { 1.0 })).collect())
            .collect(); // [k][n]
        let cm: Vec<Vec<f32>> = (0..16).map(|_| (0..8).map(|_| r.gen_range(-2.0f32..2.0)).collect()).collect();
        let pk = |lo: u16, hi: u16| lo as u32 | ((hi as u32) << 16);
        for lane in 0..32 {
            let (g, t) = (lane >> 2, lane & 3);
            let base = (w * 32 + lane) * 4;
            // A: R0 = {A[g][2t], A[g][2t+1]}, R1 = rows g+8, R2 = cols +8, R3 = both
            afr[base] = pk(am[g][2 * t], am[g][2 * t + 1]);
            afr[base + 1] = pk(am[g + 8][2 * t], am[g + 8][2 * t + 1]);
            afr[base + 2] = pk(am[g][2 * t + 8], am[g][2 * t + 9]);
            afr[base + 3] = pk(am[g + 8][2 * t + 8], am[g + 8][2 * t + 9]);
            // B: R0 = {B[2t][g], B[2t+1][g]}, R1 = {B[2t+8][g], B[2t+9][g]}
            let bb = (w * 32 + lane) * 2;
            bfr[bb] = pk(bm[2 * t][g], bm[2 * t + 1][g]);
            bfr[bb + 1] = pk(bm[2 * t + 8][g], bm[2 * t + 9][g]);
            for rr in 0..4 {
                let (row, col) = cd_pos(lane, rr);
                cfr[base + rr] = cm[row][col].to_bits();
                let mut s = cm[row][col] as f64;
                let mut sabs = (cm[row][col] as f64).abs();
                for k in 0..16 {
                    let p = dec(am[row][k]) * dec(bm[k][col]);
                    s += p;
                    sabs += p.abs();
                }
                want[base + rr] = s;
                scale[base + rr] = sabs;
            }
        }
    }
    let got = run_mma(kind, &afr, &bfr, &cfr);
    let mut bad = Vec::new();
    for i in 0..want.len() {
        let g = f32::from_bits(got[i]) as f64;
        // f32 accumulation of 16 exact products: |err| <= 17 * 2^-24 * sum|terms|
        let tol = 17.0 * 2f64.powi(-24) * scale[i] + 1e-7;
        if (g - want[i]).abs() > tol || (g - want[i]).is_nan() {
            let lane = (i / 4) % 32;
            let (row, col) = cd_pos(lane, i % 4);
            bad.push(format!("warp {} lane {lane} d{} = D[{row}][{col}]: got {g}, want {}", i / 128, i % 4, want[i]));
        }
    }
    assert!(
        bad.is_empty(),
        "{kind} mma: {} wrong of {}:\n{}",
        bad.len(),
        want.len(),
        bad[..bad.len().min(12)].join("\n")
    );
}

#[test]
fn mma_m16n8k16_f16_fragments() {
    check_mma_16bit("f16", |x| f16_bits(x, Rnd::N), f16_val, 1);
}

#[test]
fn mma_m16n8k16_bf16_fragments() {
    check_mma_16bit("bf16", |x| bf16_bits(x, Rnd::N), bf16_val, 2);
}

/// m16n8k32 s8: A R0 = A[g][4t..4t+3] (byte j = k offset j), R1 = rows g+8, R2 = k+16, R3 = both;
/// B R0 = B[4t..4t+3][g], R1 = B[4t+16..4t+19][g]. Exact; wraps, or clamps with .satfinite.
fn check_mma_s8(sat: bool, seed: u64) {
    let mut r = rng(seed);
    let mut afr = vec![0u32; WARPS * 32 * 4];
    let mut bfr = vec![0u32; WARPS * 32 * 2];
    let mut cfr = vec![0u32; WARPS * 32 * 4];
    let mut want = vec![0u32; WARPS * 32 * 4];
    let mut overflowed = 0;
    for w in 0..WARPS {
        let am: Vec<Vec<i8>> = (0..16)
            .map(|_| {
                (0..32)
                    .map(|_| r.gen_range(-128i32..=127).max(-127) as i8)
                    .map(|v| if v == 0 { 1 } else { v })
                    .collect()
            })
            .collect();
        let bm: Vec<Vec<i8>> = (0..32)
            .map(|_| (0..8).map(|_| r.gen_range(-128i32..=127) as i8).map(|v| if v == 0 { -3 } else { v }).collect())
            .collect();
        // warps 2 and 3 start near the i32 limits so some sums overflow
        let cm: Vec<Vec<i32>> = (0..16)
            .map(|_| {
                (0..8)
                    .map(|_| match w {
                        2 => i32::MAX - r.gen_range(0..40_000),
                        3 => i32::MIN + r.gen_range(0..40_000),
                        _ => r.gen_range(-1_000_000..1_000_000),
                    })
                    .collect()
            })
            .collect();
        let pk4 = |v: [i8; 4]| u32::from_le_bytes([v[0] as u8, v[1] as u8, v[2] as u8, v[3] as u8]);
        for lane in 0..32 {
            let (g, t) = (lane >> 2, lane & 3);
            let base = (w * 32 + lane) * 4;
            let arow = |row: usize, k0: usize| pk4([am[row][k0], am[row][k0 + 1], am[row][k0 + 2], am[row][k0 + 3]]);
            afr[base] = arow(g, 4 * t);
            afr[base + 1] = arow(g + 8, 4 * t);
            afr[base + 2] = arow(g, 4 * t + 16);
            afr[base + 3] = arow(g + 8, 4 * t + 16);
            let bcol = |k0: usize| pk4([bm[k0][g], bm[k0 + 1][g], bm[k0 + 2][g], bm[k0 + 3][g]]);
            let bb = (w * 32 + lane) * 2;
            bfr[bb] = bcol(4 * t);
            bfr[bb + 1] = bcol(4 * t + 16);
            for rr in 0..4 {
                let (row, col) = cd_pos(lane, rr);
                cfr[base + rr] = cm[row][col] as u32;
                let exact: i64 =
                    cm[row][col] as i64 + (0..32).map(|k| am[row][k] as i64 * bm[k][col] as i64).sum::<i64>();
                if exact > i32::MAX as i64 || exact < i32::MIN as i64 {
                    overflowed += 1;
                }
                want[base + rr] =
                    if sat { exact.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32 } else { exact as i32 as u32 };
            }
        }
    }
    assert!(overflowed > 10, "the inputs must overflow sometimes ({overflowed})");
    let got = run_mma(if sat { "s8sat" } else { "s8" }, &afr, &bfr, &cfr);
    let mut bad = Vec::new();
    for i in 0..want.len() {
        if got[i] != want[i] {
            let lane = (i / 4) % 32;
            let (row, col) = cd_pos(lane, i % 4);
            bad.push(format!(
                "warp {} lane {lane} d{} = D[{row}][{col}]: got {}, want {}",
                i / 128,
                i % 4,
                got[i] as i32,
                want[i] as i32
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "s8 mma (satfinite={sat}): {} wrong of {}:\n{}",
        bad.len(),
        want.len(),
        bad[..bad.len().min(12)].join("\n")
    );
}

#[test]
fn mma_m16n8k32_s8_fragments_wrapping() {
    check_mma_s8(false, 3);
}

#[test]
fn mma_m16n8k32_s8_satfinite_clamps() {
    check_mma_s8(true, 4);
}

// ---------------------------------------------------------------------------------------------
// ldmatrix
// ---------------------------------------------------------------------------------------------

const IMG_BYTES: usize = 1024;

fn ldmatrix_ptx(variant: &str, nregs: usize) -> String {
    let regs: Vec<String> = (0..nregs).map(|i| format!("%r{}", 20 + i)).collect();
    let stores: String = (0..nregs).map(|i| format!("\tst.global.u32 \t[%rd12+{}], %r{};\n", 4 * i, 20 + i)).collect();
    format!(
        r#"{PTX_HEADER}
.visible .entry ldm(
	.param .u64 p_img,
	.param .u64 p_offs,
	.param .u64 p_out
)
{{
	.reg .b32 	%r<40>;
	.reg .b64 	%rd<20>;
	.shared .align 16 .b8 img[{IMG_BYTES}];

	ld.param.u64 	%rd1, [p_img];
	ld.param.u64 	%rd2, [p_offs];
	ld.param.u64 	%rd3, [p_out];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %tid.x;
	// each of the 32 lanes copies 32 bytes of this block's image into shared memory
	mul.lo.s32 	%r3, %r1, {IMG_BYTES};
	shl.b32 	%r4, %r2, 5;
	add.s32 	%r5, %r3, %r4;
	cvt.u64.u32 	%rd4, %r5;
	add.s64 	%rd5, %rd1, %rd4;
	ld.global.v4.u32 	{{%r10, %r11, %r12, %r13}}, [%rd5];
	ld.global.v4.u32 	{{%r14, %r15, %r16, %r17}}, [%rd5+16];
	mov.u32 	%r6, img;
	add.s32 	%r7, %r6, %r4;
	st.shared.v4.u32 	[%r7], {{%r10, %r11, %r12, %r13}};
	st.shared.v4.u32 	[%r7+16], {{%r14, %r15, %r16, %r17}};
	bar.sync 	0;
	// this lane's row address (byte offset into img) from the host table
	mad.lo.s32 	%r8, %r1, 32, %r2;
	mul.wide.u32 	%rd6, %r8, 4;
	add.s64 	%rd7, %rd2, %rd6;
	ld.global.u32 	%r9, [%rd7];
	add.s32 	%r18, %r6, %r9;
	ldmatrix.sync.aligned.m8n8.{variant}.shared.b16 	{{{regs}}}, [%r18];
	mul.wide.u32 	%rd11, %r8, 16;
	add.s64 	%rd12, %rd3, %rd11;
{stores}	ret;
}}
"#,
        regs = regs.join(", ")
    )
}

fn check_ldmatrix(num: usize, trans: bool, seed: u64) {
    let mut r = rng(seed);
    let blocks = 2;
    let img: Vec<u16> = (0..blocks * IMG_BYTES / 2).map(|_| r.gen_range(1..u16::MAX)).collect();
    // matrix i's rows: 16-byte aligned, scattered (stride and base differ per matrix and block)
    let mut offs = vec![0u32; blocks * 32];
    for b in 0..blocks {
        for i in 0..4 {
            let base = [0usize, 208, 416, 624][i] + 16 * ((b + i) % 3);
            let stride = [32usize, 48, 16, 32][(i + b) % 4];
            for j in 0..8 {
                let lane = 8 * i + j;
                offs[b * 32 + lane] = if i < num { (base + j * stride) as u32 } else { 0xfff0 + lane as u32 * 16 };
                // unused lanes: garbage, must be ignored
            }
        }
    }
    let variant = format!("x{num}{}", if trans { ".trans" } else { "" });
    let dev = emu();
    load_ptx(&dev, "ldm", &ldmatrix_ptx(&variant, num));
    let (di, dof) = (dev.upload(&img).unwrap(), dev.upload(&offs).unwrap());
    let out = dev.alloc_filled::<u32>(blocks * 32 * 4, 0xFF).unwrap();
    launch_ok(&dev, "ldm", "ldm", lin(blocks as u32, 32), &[ptr(&di), ptr(&dof), ptr(&out)]);
    let got = out.to_host().unwrap();
    let mut bad = Vec::new();
    for b in 0..blocks {
        // M_i[row][col] = the 16-bit element `col` of the row whose address lane 8i+row gave
        let m =
            |i: usize, row: usize, col: usize| img[b * IMG_BYTES / 2 + offs[b * 32 + 8 * i + row] as usize / 2 + col];
        for lane in 0..32 {
            for i in 0..num {
                let (g, t) = (lane >> 2, lane & 3);
                let (lo, hi) =
                    if trans { (m(i, 2 * t, g), m(i, 2 * t + 1, g)) } else { (m(i, g, 2 * t), m(i, g, 2 * t + 1)) };
                let want = lo as u32 | ((hi as u32) << 16);
                let gv = got[(b * 32 + lane) * 4 + i];
                if gv != want {
                    bad.push(format!("block {b} lane {lane} r{i}: got {gv:#010x}, want {want:#010x}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "ldmatrix.{variant}: {} wrong:\n{}", bad.len(), bad[..bad.len().min(12)].join("\n"));
}

#[test]
fn ldmatrix_x1() {
    check_ldmatrix(1, false, 11);
}
#[test]
fn ldmatrix_x2() {
    check_ldmatrix(2, false, 12);
}
#[test]
fn ldmatrix_x4() {
    check_ldmatrix(4, false, 13);
}
#[test]
fn ldmatrix_x1_trans() {
    check_ldmatrix(1, true, 14);
}
#[test]
fn ldmatrix_x2_trans() {
    check_ldmatrix(2, true, 15);
}
#[test]
fn ldmatrix_x4_trans() {
    check_ldmatrix(4, true, 16);
}

// ---------------------------------------------------------------------------------------------
// ldmatrix + mma GEMM tile, compiled by nvcc
// ---------------------------------------------------------------------------------------------

const GEMM_CU: &str = r#"
#include <cuda_fp16.h>
#include <stdint.h>

// C[M x 64] = A[M x 64] * B[64 x 64]; one block = 64 rows, 4 warps x 16 rows x all 64 columns.
// B is given twice: Bt as [n][k] (plain ldmatrix -> .col fragment) and Bkn as [k][n]
// (ldmatrix.trans -> the same fragment); both results are written.
extern "C" __global__ void gemm_tile(const __half* A, const __half* Bt, const __half* Bkn, float* C, float* C2) {
    __shared__ __align__(16) __half As[64][72];
    __shared__ __align__(16) __half Bs[64][72];
    __shared__ __align__(16) __half Bk[64][72];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int m_base = blockIdx.x * 64;
    for (int idx = tid; idx < 64 * 8; idx += blockDim.x) {
        int r = idx / 8, c8 = (idx % 8) * 8;
        *reinterpret_cast<uint4*>(&As[r][c8]) = *reinterpret_cast<const uint4*>(&A[(m_base + r) * 64 + c8]);
        *reinterpret_cast<uint4*>(&Bs[r][c8]) = *reinterpret_cast<const uint4*>(&Bt[r * 64 + c8]);
        *reinterpret_cast<uint4*>(&Bk[r][c8]) = *reinterpret_cast<const uint4*>(&Bkn[r * 64 + c8]);
    }
    __syncthreads();
    float acc[8][4], acc2[8][4];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 4; ++j) { acc[i][j] = 0.f; acc2[i][j] = 0.f; }
    for (int k0 = 0; k0 < 64; k0 += 16) {
        uint32_t a[4];
        const int mi = lane / 8, mj = lane % 8;
        uint32_t sa = (uint32_t)__cvta_generic_to_shared(&As[warp * 16 + mj + 8 * (mi & 1)][k0 + 8 * (mi >> 1)]);
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(sa));
        #pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            uint32_t b[2], b2[2];
            const int l = lane % 16;
            uint32_t sb = (uint32_t)__cvta_generic_to_shared(&Bs[nt * 8 + (l % 8)][k0 + 8 * (l / 8)]);
            asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(b[0]), "=r"(b[1]) : "r"(sb));
            uint32_t sk = (uint32_t)__cvta_generic_to_shared(&Bk[k0 + (l % 8) + 8 * (l / 8)][nt * 8]);
            asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(b2[0]), "=r"(b2[1]) : "r"(sk));
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                         : "+f"(acc[nt][0]), "+f"(acc[nt][1]), "+f"(acc[nt][2]), "+f"(acc[nt][3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                         : "+f"(acc2[nt][0]), "+f"(acc2[nt][1]), "+f"(acc2[nt][2]), "+f"(acc2[nt][3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b2[0]), "r"(b2[1]));
        }
    }
    const int g = lane / 4, t = lane % 4;
    for (int nt = 0; nt < 8; ++nt) {
        const int row = m_base + warp * 16 + g, col = nt * 8 + 2 * t;
        C[row * 64 + col] = acc[nt][0];
        C[row * 64 + col + 1] = acc[nt][1];
        C[(row + 8) * 64 + col] = acc[nt][2];
        C[(row + 8) * 64 + col + 1] = acc[nt][3];
        C2[row * 64 + col] = acc2[nt][0];
        C2[row * 64 + col + 1] = acc2[nt][1];
        C2[(row + 8) * 64 + col] = acc2[nt][2];
        C2[(row + 8) * 64 + col + 1] = acc2[nt][3];
    }
}
"#;

#[test]
fn gemm_tile_ldmatrix_mma_matches_matmul() {
    let (m, n, k) = (128usize, 64usize, 64usize);
    let mut r = rng(21);
    let a: Vec<u16> = (0..m * k).map(|_| f16_bits(r.gen_range(-1.0..1.0), Rnd::N)).collect();
    let b: Vec<u16> = (0..k * n).map(|_| f16_bits(r.gen_range(-1.0..1.0), Rnd::N)).collect(); // [k][n]
    let bt: Vec<u16> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // [n][k]
    let ptx = compile_cu("gemm_tile", GEMM_CU);
    let dev = emu();
    dev.load_module("gemm", &ptx).unwrap_or_else(|e| panic!("load: {e}"));
    let (da, dbt, db) = (dev.upload(&a).unwrap(), dev.upload(&bt).unwrap(), dev.upload(&b).unwrap());
    let c = dev.alloc_filled::<f32>(m * n, 0xFF).unwrap();
    let c2 = dev.alloc_filled::<f32>(m * n, 0xFF).unwrap();
    let args: Vec<KernelArg> = vec![ptr(&da), ptr(&dbt), ptr(&db), ptr(&c), ptr(&c2)];
    launch_ok(&dev, "gemm", "gemm_tile", lin((m / 64) as u32, 128), &args);
    let (got, got2) = (c.to_host().unwrap(), c2.to_host().unwrap());
    let mut max_err = 0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut sabs) = (0f64, 0f64);
            for kk in 0..k {
                let p = f16_val(a[i * k + kk]) * f16_val(b[kk * n + j]);
                s += p;
                sabs += p.abs();
            }
            let tol = (k as f64 + 1.0) * 2f64.powi(-24) * sabs + 1e-7;
            for (name, g) in [("ldmatrix B^T", got[i * n + j] as f64), ("ldmatrix.trans B", got2[i * n + j] as f64)] {
                assert!((g - s).abs() <= tol, "{name}: C[{i}][{j}] = {g}, want {s} (tol {tol:e})");
                max_err = max_err.max((g - s).abs());
            }
        }
    }
    eprintln!("gemm tile 128x64x64: max |err| = {max_err:e}");
}

/// m16n8k16 with f16 accumulators: C/D are 2 f16x2 registers, reg0 = {(g,2t), (g,2t+1)},
/// reg1 = {(g+8,2t), (g+8,2t+1)} [9.7.13.4.x]. The accumulation precision is unspecified, so
/// the tolerance is f16 rounding of every partial sum (a layout error is off by whole units).
#[test]
fn mma_m16n8k16_f16_accumulator_fragments() {
    let ptx = format!(
        r#"{PTX_HEADER}
.visible .entry mma_h(
	.param .u64 pa,
	.param .u64 pb,
	.param .u64 pc,
	.param .u64 pd
)
{{
	.reg .b32 	%r<40>;
	.reg .b64 	%rd<20>;
	ld.param.u64 	%rd1, [pa];
	ld.param.u64 	%rd2, [pb];
	ld.param.u64 	%rd3, [pc];
	ld.param.u64 	%rd4, [pd];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	cvta.to.global.u64 	%rd3, %rd3;
	cvta.to.global.u64 	%rd4, %rd4;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r4, %r1, %r2, %r3;
	mul.wide.u32 	%rd5, %r4, 16;
	add.s64 	%rd6, %rd1, %rd5;
	ld.global.v4.u32 	{{%r10, %r11, %r12, %r13}}, [%rd6];
	mul.wide.u32 	%rd7, %r4, 8;
	add.s64 	%rd8, %rd2, %rd7;
	ld.global.v2.u32 	{{%r14, %r15}}, [%rd8];
	add.s64 	%rd9, %rd3, %rd7;
	ld.global.v2.u32 	{{%r16, %r17}}, [%rd9];
	mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 	{{%r20, %r21}}, {{%r10, %r11, %r12, %r13}}, {{%r14, %r15}}, {{%r16, %r17}};
	add.s64 	%rd10, %rd4, %rd7;
	st.global.v2.u32 	[%rd10], {{%r20, %r21}};
	ret;
}}
"#
    );
    let mut r = rng(5);
    let mut afr = vec![0u32; WARPS * 32 * 4];
    let mut bfr = vec![0u32; WARPS * 32 * 2];
    let mut cfr = vec![0u32; WARPS * 32 * 2];
    let mut want = vec![0f64; WARPS * 32 * 4];
    let mut scale = vec![0f64; WARPS * 32 * 4];
    let h = |r: &mut rand_chacha::ChaCha8Rng| {
        f16_bits(r.gen_range(0.05..1.0) * if r.gen::<bool>() { -1.0 } else { 1.0 }, Rnd::N)
    };
    let pk = |lo: u16, hi: u16| lo as u32 | ((hi as u32) << 16);
    for w in 0..WARPS {
        let am: Vec<Vec<u16>> = (0..16).map(|_| (0..16).map(|_| h(&mut r)).collect()).collect();
        let bm: Vec<Vec<u16>> = (0..16).map(|_| (0..8).map(|_| h(&mut r)).collect()).collect();
        let cm: Vec<Vec<u16>> =
            (0..16).map(|_| (0..8).map(|_| f16_bits(r.gen_range(-2.0..2.0), Rnd::N)).collect()).collect();
        for lane in 0..32 {
            let (g, t) = (lane >> 2, lane & 3);
            let base = (w * 32 + lane) * 4;
            afr[base] = pk(am[g][2 * t], am[g][2 * t + 1]);
            afr[base + 1] = pk(am[g + 8][2 * t], am[g + 8][2 * t + 1]);
            afr[base + 2] = pk(am[g][2 * t + 8], am[g][2 * t + 9]);
            afr[base + 3] = pk(am[g + 8][2 * t + 8], am[g + 8][2 * t + 9]);
            let bb = (w * 32 + lane) * 2;
            bfr[bb] = pk(bm[2 * t][g], bm[2 * t + 1][g]);
            bfr[bb + 1] = pk(bm[2 * t + 8][g], bm[2 * t + 9][g]);
            cfr[bb] = pk(cm[g][2 * t], cm[g][2 * t + 1]);
            cfr[bb + 1] = pk(cm[g + 8][2 * t], cm[g + 8][2 * t + 1]);
            for rr in 0..4 {
                let (row, col) = cd_pos(lane, rr);
                let mut s = f16_val(cm[row][col]);
                let mut sabs = s.abs();
                for k in 0..16 {
                    let p = f16_val(am[row][k]) * f16_val(bm[k][col]);
                    s += p;
                    sabs += p.abs();
                }
                want[base + rr] = s;
                scale[base + rr] = sabs;
            }
        }
    }
    let dev = emu();
    load_ptx(&dev, "mmah", &ptx);
    let (da, db, dc) = (dev.upload(&afr).unwrap(), dev.upload(&bfr).unwrap(), dev.upload(&cfr).unwrap());
    let d = dev.alloc_filled::<u32>(cfr.len(), 0xFF).unwrap();
    launch_ok(&dev, "mmah", "mma_h", lin(2, 64), &[ptr(&da), ptr(&db), ptr(&dc), ptr(&d)]);
    let got = d.to_host().unwrap();
    let mut bad = Vec::new();
    for i in 0..want.len() {
        let word = got[i / 2];
        let g = f16_val(if i % 2 == 0 { word as u16 } else { (word >> 16) as u16 });
        let tol = 17.0 * 2f64.powi(-11) * scale[i];
        if (g - want[i]).abs() > tol || (g - want[i]).is_nan() {
            let lane = (i / 4) % 32;
            let (row, col) = cd_pos(lane, i % 4);
            bad.push(format!("warp {} lane {lane} d{} = D[{row}][{col}]: got {g}, want {}", i / 128, i % 4, want[i]));
        }
    }
    assert!(bad.is_empty(), "f16-accumulator mma: {} wrong:\n{}", bad.len(), bad[..bad.len().min(12)].join("\n"));
}

/// The GEMM tile gives the same bits with one worker thread and with the default pool.
#[test]
fn gemm_tile_bits_independent_of_worker_threads() {
    let mut r = rng(22);
    let a: Vec<u16> = (0..128 * 64).map(|_| f16_bits(r.gen_range(-1.0..1.0), Rnd::N)).collect();
    let b: Vec<u16> = (0..64 * 64).map(|_| f16_bits(r.gen_range(-1.0..1.0), Rnd::N)).collect();
    let ptx = compile_cu("gemm_tile", GEMM_CU);
    let run = |threads: usize| -> Vec<u32> {
        let dev = emu_with(|o| o.threads = threads);
        dev.load_module("gemm", &ptx).unwrap();
        let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
        let c = dev.alloc_filled::<f32>(128 * 64, 0xFF).unwrap();
        let c2 = dev.alloc_filled::<f32>(128 * 64, 0xFF).unwrap();
        launch_ok(&dev, "gemm", "gemm_tile", lin(2, 128), &[ptr(&da), ptr(&db), ptr(&db), ptr(&c), ptr(&c2)]);
        c.to_host().unwrap().iter().chain(c2.to_host().unwrap().iter()).map(|x| x.to_bits()).collect()
    };
    assert_eq!(run(1), run(0));
}
