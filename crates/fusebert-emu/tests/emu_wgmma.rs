//! `wgmma.mma_async` in the emulator (sm_90a): f32 and f16 accumulators from f16 operands,
//! s32 from s8/u8, A from shared memory (descriptor) or registers, K-major and MN-major
//! operands in every swizzle, negation, scale-d, `.satfinite`, the descriptor base offset, and
//! the sanitizers around them (S1 registers in flight, S2 writes after the fence, S3 unfenced
//! generic writes, S4 operands overwritten in flight, S5 descriptors differing).
//!
//! Hand-written PTX, validated by ptxas for sm_90a. Expected values come from this file's own
//! evaluation of the ISA's layout formulas (research note 1.3: shared-memory address function;
//! 1.4: register fragments) -- never from the emulator's descriptor code -- under lazy, eager and
//! random completion. Operands are small integers (f16) so every sum is exact and the
//! comparison is bit for bit; f16 accumulators start above 1024 so the final rounding to f16
//! is exercised (round to nearest even, against `half`).
mod common;
use common::*;
use fusebert_emu::arch::{Arch, AsyncMode};
use fusebert_emu::{Emulator, EmulatorOptions, LaunchDims, Param};
use rand::Rng;

const MODES: [AsyncMode; 3] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(5)];
const HEADER: &str = ".version 8.4\n.target sm_90a\n.address_size 64\n";

fn emu90(mode: AsyncMode) -> Emulator {
    Emulator::new(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() }).unwrap()
}

/// The report of a failed launch (a sanitizer finding), panicking when it succeeded.
fn finding<T>(r: fusebert_emu::Result<T>) -> String {
    match r {
        Ok(_) => panic!("the planted bug was NOT detected"),
        Err(e) => e.to_string(),
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    (0..n).map(|_| r.gen_range(1..=255u8)).collect()
}

// ---------------------------------------------------------------------------------------------
// Reference: the ISA's shared-memory address function (note 1.3), written from the note
// ---------------------------------------------------------------------------------------------

/// An operand's layout in shared memory.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// 0 none (INTERLEAVE), else the swizzle row width in bytes (32, 64, 128)
    swz: u32,
    /// MN-major (imm-trans = 1)
    mn: bool,
    lbo: u32,
    sbo: u32,
    /// bytes from the 1024-aligned base to the descriptor's start (a K step inside a swizzled
    /// row, or a pattern off its repeat boundary)
    kofs: u32,
    /// the descriptor's base-offset field
    bo: u32,
}

const fn kmaj(swz: u32, lbo: u32, sbo: u32) -> Layout {
    Layout { swz, mn: false, lbo, sbo, kofs: 0, bo: 0 }
}
const fn mnmaj(swz: u32, lbo: u32, sbo: u32) -> Layout {
    Layout { swz, mn: true, lbo, sbo, kofs: 0, bo: 0 }
}

/// CuTe `Swizzle<B,4,3>` on an absolute byte address: bits [4, 4+B) ^= bits [7, 7+B).
fn swz(width: u32, a: u32) -> u32 {
    let b = match width {
        32 => 1,
        64 => 2,
        128 => 3,
        _ => return a,
    };
    let mask = (1u32 << b) - 1;
    a ^ (((a >> 7) & mask) << 4)
}

impl Layout {
    fn with_start(self, kofs: u32, bo: u32) -> Layout {
        Layout { kofs, bo, ..self }
    }

    /// Byte address of element (r, k) (r = the M or N index) of `e`-byte elements: the note's
    /// four formulas, T = 16/e elements to a 16-byte chunk, W = the swizzle width.
    fn addr(&self, base: u32, r: u32, k: u32, e: u32) -> u32 {
        let start = base + self.kofs;
        let t = 16 / e;
        match (self.swz, self.mn) {
            (0, false) => start + (r / 8) * self.sbo + (r % 8) * 16 + (k / t) * self.lbo + (k % t) * e,
            (0, true) => start + (r / t) * self.sbo + (k / 8) * self.lbo + (k % 8) * 16 + (r % t) * e,
            (w, false) => swz(w, start + (r / 8) * self.sbo + (r % 8) * w + k * e),
            (w, true) => {
                let per = w / e;
                swz(w, start + (r / per) * self.lbo + (k / 8) * self.sbo + (k % 8) * w + (r % per) * e)
            }
        }
    }

    /// The 64-bit descriptor (note 1.2): 14-bit fields of address >> 4, swizzle code 1 = 128B,
    /// 2 = 64B, 3 = 32B at bits 62-63, base offset at 49-51.
    fn desc(&self, base: u32) -> u64 {
        let enc = |x: u32| ((x as u64 & 0x3ffff) >> 4) & 0x3fff;
        let code: u64 = match self.swz {
            0 => 0,
            128 => 1,
            64 => 2,
            _ => 3,
        };
        enc(base + self.kofs) | enc(self.lbo) << 16 | enc(self.sbo) << 32 | (self.bo as u64) << 49 | code << 62
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Acc {
    F32,
    F16,
    S32,
}

/// One wgmma form.
#[derive(Clone, Copy, Debug)]
struct Form {
    acc: Acc,
    /// A and B element types for the integer form: true = s8, false = u8
    a_signed: bool,
    b_signed: bool,
    n: u32,
    /// A from registers
    rs: bool,
    neg_a: bool,
    neg_b: bool,
    sat: bool,
    /// two wgmmas on the same accumulators (the second in its own group, `wait_group 1` then 0)
    twice: bool,
}

impl Form {
    fn f(acc: Acc, n: u32, rs: bool) -> Form {
        Form { acc, a_signed: true, b_signed: true, n, rs, neg_a: false, neg_b: false, sat: false, twice: false }
    }
    fn int(n: u32, rs: bool, a_signed: bool, b_signed: bool, sat: bool) -> Form {
        Form { acc: Acc::S32, a_signed, b_signed, n, rs, neg_a: false, neg_b: false, sat, twice: false }
    }
    fn int8(&self) -> bool {
        self.acc == Acc::S32
    }
    fn nacc(&self) -> u32 {
        if self.acc == Acc::F16 {
            self.n / 4
        } else {
            self.n / 2
        }
    }
    fn kdim(&self) -> u32 {
        if self.int8() {
            32
        } else {
            16
        }
    }
    fn esize(&self) -> u32 {
        if self.int8() {
            1
        } else {
            2
        }
    }
}

/// Where a test plants code (or leaves out a fence).
#[derive(Clone, Copy)]
struct Marks<'a> {
    fence_proxy: bool,
    wgfence: bool,
    /// between the wgmma.fence and the (first) mma
    after_fence: &'a str,
    /// between the commit and the wait
    inflight: &'a str,
    /// right after the wait
    after_wait: &'a str,
    /// before the mma (descriptor tampering)
    desc: &'a str,
    /// the accumulators loaded before the wgmma (false: never written)
    init: bool,
}

const CLEAN: Marks =
    Marks { fence_proxy: true, wgfence: true, after_fence: "", inflight: "", after_wait: "", desc: "", init: true };

/// One warpgroup copies a shared image (param 0, param 1 bytes) into shared memory, fences it
/// for the async proxy, loads its accumulators from cin[tid * nacc + j] (param 6) and, for a
/// register A, its four A registers from ain[tid * 4 + j] (param 7), runs the wgmma with the
/// descriptors of params 2 and 3 (scale-d = param 5 != 0), waits and stores the accumulators to
/// out[tid * nacc + j] (param 4).
fn wg_ptx(f: &Form, ta: bool, tb: bool, mk: Marks) -> String {
    let nacc = f.nacc();
    let (dreg, dty) = match f.acc {
        Acc::F32 => (".f32", "f32"),
        Acc::F16 => (".b32", "b32"),
        Acc::S32 => (".s32", "s32"),
    };
    let regs: Vec<String> = (0..nacc).map(|j| format!("%d{j}")).collect();
    let init: String = (0..nacc).map(|j| format!("    ld.global.{dty} %d{j}, [%rd10+{}];\n", 4 * j)).collect();
    let store: String = (0..nacc).map(|j| format!("    st.global.{dty} [%rd9+{}], %d{j};\n", 4 * j)).collect();
    let aload = if f.rs {
        (0..4).map(|j| format!("    ld.global.b32 %a{j}, [%rd12+{}];\n", 4 * j)).collect::<String>()
    } else {
        String::new()
    };
    let a = if f.rs { "{%a0, %a1, %a2, %a3}" } else { "%rd2" };
    let imm = |neg: bool| if neg { -1 } else { 1 };
    let mma = if f.int8() {
        let t = |s: bool| if s { "s8" } else { "u8" };
        let sat = if f.sat { ".satfinite" } else { "" };
        format!(
            "wgmma.mma_async.sync.aligned.m64n{}k32{sat}.s32.{}.{} {{{}}}, {a}, %rd3, %p1;",
            f.n,
            t(f.a_signed),
            t(f.b_signed),
            regs.join(", ")
        )
    } else {
        let acc = if f.acc == Acc::F32 { "f32" } else { "f16" };
        let (sa, sb) = (imm(f.neg_a), imm(f.neg_b));
        let trans = if f.rs { format!("{}", tb as u32) } else { format!("{}, {}", ta as u32, tb as u32) };
        format!(
            "wgmma.mma_async.sync.aligned.m64n{}k16.{acc}.f16.f16 {{{}}}, {a}, %rd3, %p1, {sa}, {sb}, {trans};",
            f.n,
            regs.join(", ")
        )
    };
    let second = if f.twice {
        format!("    {mma} // MMA2\n    wgmma.commit_group.sync.aligned;\n    wgmma.wait_group.sync.aligned 1;\n")
    } else {
        String::new()
    };
    let fence = if mk.fence_proxy { "    fence.proxy.async.shared::cta;" } else { "" };
    let wgfence = if mk.wgfence { "    wgmma.fence.sync.aligned; // WGFENCE" } else { "" };
    let Marks { after_fence, inflight, after_wait, desc, .. } = mk;
    let init = if mk.init { init } else { String::new() };
    format!(
        r#"{HEADER}
.extern .shared .align 1024 .b8 smem[];

.visible .entry wg(
    .param .u64 wg_param_0,
    .param .u32 wg_param_1,
    .param .u64 wg_param_2,
    .param .u64 wg_param_3,
    .param .u64 wg_param_4,
    .param .u32 wg_param_5,
    .param .u64 wg_param_6,
    .param .u64 wg_param_7
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .reg {dreg} %d<{nacc}>;
    .reg .b32 %a<4>;
    .reg .f32 %g<4>;

    mov.u32 %r1, %tid.x;
    mov.u32 %r4, smem;
    ld.param.u64 %rd1, [wg_param_0];
    cvta.to.global.u64 %rd1, %rd1;
    ld.param.u32 %r9, [wg_param_1];
    shl.b32 %r20, %r1, 2;
COPY:
    setp.ge.u32 %p4, %r20, %r9;
    @%p4 bra COPIED;
    cvt.u64.u32 %rd4, %r20;
    add.u64 %rd5, %rd1, %rd4;
    ld.global.u32 %r22, [%rd5];
    add.u32 %r21, %r4, %r20;
    st.shared.u32 [%r21], %r22;
    add.u32 %r20, %r20, 512;
    bra COPY;
COPIED:
{fence}
    bar.sync 0;
    ld.param.u64 %rd2, [wg_param_2];
    ld.param.u64 %rd3, [wg_param_3];
    ld.param.u32 %r5, [wg_param_5];
    setp.ne.u32 %p1, %r5, 0;
    mul.lo.u32 %r6, %r1, {nacc};
    mul.wide.u32 %rd7, %r6, 4;
    ld.param.u64 %rd10, [wg_param_6];
    cvta.to.global.u64 %rd10, %rd10;
    add.u64 %rd10, %rd10, %rd7;
    ld.param.u64 %rd12, [wg_param_7];
    cvta.to.global.u64 %rd12, %rd12;
    mul.wide.u32 %rd13, %r1, 16;
    add.u64 %rd12, %rd12, %rd13;
{init}{aload}{desc}{wgfence}
{after_fence}
    {mma} // MMA
    wgmma.commit_group.sync.aligned;
{second}{inflight}
    wgmma.wait_group.sync.aligned 0;
{after_wait}
    ld.param.u64 %rd6, [wg_param_4];
    cvta.to.global.u64 %rd6, %rd6;
    add.u64 %rd9, %rd6, %rd7;
{store}    ret;
}}
"#
    )
}

/// A test case: the form, both layouts, scale-d.
#[derive(Clone, Copy, Debug)]
struct Case {
    f: Form,
    la: Layout,
    lb: Layout,
}

const BBASE: u32 = 16384;

/// The image size for an operand of `rows` rows at `base`: the largest element address + 16.
fn extent(l: &Layout, base: u32, rows: u32, f: &Form) -> u32 {
    let mut hi = 0;
    for r in 0..rows {
        for k in 0..f.kdim() {
            hi = hi.max(l.addr(base, r, k, f.esize()) + 16);
        }
    }
    hi
}

/// Runs one case with random operands; returns (out, expected) as raw 32-bit words.
fn run_case(
    mode: AsyncMode,
    ptx: &str,
    c: &Case,
    scale_d: bool,
    seed: u64,
) -> fusebert_emu::Result<(Vec<u32>, Vec<u32>)> {
    run_case_on(&emu90(mode), ptx, c, scale_d, seed)
}

/// [`run_case`] on a given emulator (whose counters the caller then reads).
fn run_case_on(
    emu: &Emulator,
    ptx: &str,
    c: &Case,
    scale_d: bool,
    seed: u64,
) -> fusebert_emu::Result<(Vec<u32>, Vec<u32>)> {
    let f = &c.f;
    let (kd, e, n) = (f.kdim() as usize, f.esize(), f.n as usize);
    let mut r = rng(seed);
    // logical operands as integers: f16 small integers (exact products and sums), bytes full range
    let val = |r: &mut rand_chacha::ChaCha8Rng, signed: bool| -> i64 {
        if !f.int8() {
            r.gen_range(-3..=3)
        } else if signed {
            r.gen_range(-128..=127)
        } else {
            r.gen_range(0..=255)
        }
    };
    let a: Vec<Vec<i64>> = (0..64).map(|_| (0..kd).map(|_| val(&mut r, f.a_signed)).collect()).collect();
    let b: Vec<Vec<i64>> = (0..n).map(|_| (0..kd).map(|_| val(&mut r, f.b_signed)).collect()).collect();
    let bits = |v: i64| -> u32 {
        if f.int8() {
            v as u8 as u32
        } else {
            half::f16::from_f32(v as f32).to_bits() as u32
        }
    };
    let size = extent(&c.lb, BBASE, f.n, f).max(if f.rs { 0 } else { extent(&c.la, 0, 64, f) });
    let size = size.next_multiple_of(16);
    let mut img = random_bytes(size as usize, seed + 1); // noise where no element lives
    let put = |img: &mut Vec<u8>, at: u32, v: u32| {
        img[at as usize..at as usize + e as usize].copy_from_slice(&v.to_le_bytes()[..e as usize]);
    };
    // element (r, k) of each operand at the note's address
    let operands = [(&a, &c.la, 0u32, !f.rs), (&b, &c.lb, BBASE, true)];
    for (x, l, base, _) in operands.into_iter().filter(|o| o.3) {
        for (r, row) in x.iter().enumerate() {
            for (k, &v) in row.iter().enumerate() {
                put(&mut img, l.addr(base, r as u32, k as u32, e), bits(v));
            }
        }
    }
    // register A (note 1.4): reg j, element h of thread t = 32 w + 4 g + q holds
    // A[16 w + g + 8 (j&1)][8 (j>>1) + 2 q + h] (f16) or [16 (j>>1) + 4 q + h] (bytes)
    let mut ain = vec![0u32; 128 * 4];
    for t in 0..128usize {
        let (w, g, q) = (t / 32, (t % 32) / 4, t % 4);
        for j in 0..4usize {
            let m = 16 * w + g + 8 * (j & 1);
            ain[t * 4 + j] = if f.int8() {
                (0..4).map(|h| bits(a[m][16 * (j >> 1) + 4 * q + h]) << (8 * h)).sum()
            } else {
                (0..2).map(|h| bits(a[m][8 * (j >> 1) + 2 * q + h]) << (16 * h)).sum()
            };
        }
    }
    // accumulators in: f32 small integers, f16 integers in 1024..4096 (f16 steps 1 and 2:
    // odd sums above 2048 round), s32 near both ends of the range half the time
    let nacc = f.nacc() as usize;
    let cin: Vec<u32> = (0..128 * nacc)
        .map(|_| match f.acc {
            Acc::F32 => (r.gen_range(-50..=50) as f32).to_bits(),
            Acc::F16 => {
                let h = || half::f16::from_f32(r.gen_range(1024..=4096) as f32).to_bits() as u32;
                let mut h = h;
                h() | h() << 16
            }
            Acc::S32 => match r.gen_range(0..4) {
                0 => (i32::MAX - r.gen_range(0..200_000)) as u32,
                1 => (i32::MIN + r.gen_range(0..200_000)) as u32,
                _ => r.gen::<i32>() as u32,
            },
        })
        .collect();
    ptxas_check(ptx, "sm_90a");
    emu.load_module("m", ptx).unwrap_or_else(|e| panic!("load failed: {e}\n{}", numbered(ptx)));
    let words = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ga = emu.alloc(img.len()).unwrap();
    emu.write(ga, &img).unwrap();
    let gc = emu.alloc(cin.len() * 4).unwrap();
    emu.write(gc, &words(&cin)).unwrap();
    let gai = emu.alloc(ain.len() * 4).unwrap();
    emu.write(gai, &words(&ain)).unwrap();
    let out = emu.alloc(cin.len() * 4).unwrap();
    let args = [
        Param::Ptr(ga),
        Param::U32(size),
        Param::U64(if f.rs { 0 } else { c.la.desc(0) }),
        Param::U64(c.lb.desc(BBASE)),
        Param::Ptr(out),
        Param::U32(scale_d as u32),
        Param::Ptr(gc),
        Param::Ptr(gai),
    ];
    let dims = LaunchDims { grid: (1, 1, 1), block: (128, 1, 1), shared_mem_bytes: size };
    emu.launch("m", "wg", &dims, &args)?;
    let mut raw = vec![0u8; cin.len() * 4];
    emu.read(out, &mut raw).unwrap();
    let got: Vec<u32> = raw.chunks(4).map(|x| u32::from_le_bytes(x.try_into().unwrap())).collect();
    // D = (sa A)(sb B) (+ C), once or twice (`twice`: the second accumulates onto the first
    // with scale-d; without it, each wgmma computes D = A B alone)
    let (sa, sb) = (if f.neg_a { -1 } else { 1 }, if f.neg_b { -1 } else { 1 });
    let times = if f.twice && scale_d { 2 } else { 1 };
    let dot = |m: usize, nn: usize| -> i64 { (0..kd).map(|k| sa * a[m][k] * sb * b[nn][k]).sum::<i64>() };
    let mut want = vec![0u32; got.len()];
    for t in 0..128usize {
        let (w, g, q) = (t / 32, (t % 32) / 4, t % 4);
        for i in 0..nacc {
            let c_in = cin[t * nacc + i];
            want[t * nacc + i] = match f.acc {
                // d[i] = D[16 w + g + 8 ((i>>1)&1)][8 (i>>2) + 2 q + (i&1)]
                Acc::F32 | Acc::S32 => {
                    let m = 16 * w + g + 8 * ((i >> 1) & 1);
                    let nn = 8 * (i >> 2) + 2 * q + (i & 1);
                    if f.acc == Acc::F32 {
                        let c0 = if scale_d { f32::from_bits(c_in) as i64 } else { 0 };
                        let d = c0 + times * dot(m, nn);
                        (d as f32).to_bits()
                    } else {
                        let mut d = if scale_d { c_in as i32 } else { 0 };
                        for _ in 0..times {
                            let s = d as i64 + dot(m, nn);
                            d = if f.sat { s.clamp(i32::MIN as i64, i32::MAX as i64) as i32 } else { s as i32 };
                        }
                        d as u32
                    }
                }
                // d[j] half h = D[16 w + g + 8 (j&1)][8 (j>>1) + 2 q + h]; each wgmma rounds once
                Acc::F16 => {
                    let mut word = 0u32;
                    for h in 0..2usize {
                        let m = 16 * w + g + 8 * (i & 1);
                        let nn = 8 * (i >> 1) + 2 * q + h;
                        let hin = half::f16::from_bits((c_in >> (16 * h)) as u16);
                        let mut d = if scale_d { hin.to_f64() } else { 0.0 };
                        for _ in 0..times {
                            d = half::f16::from_f64(d + dot(m, nn) as f64).to_f64();
                        }
                        word |= (half::f16::from_f64(d).to_bits() as u32) << (16 * h);
                    }
                    word
                }
            };
        }
    }
    Ok((got, want))
}

/// Every case in every completion mode, scale-d true and false: bit-for-bit equal.
fn check_cases(cases: &[(Case, bool, bool)], seed: u64) {
    for (ci, (c, ta, tb)) in cases.iter().enumerate() {
        let ptx = wg_ptx(&c.f, *ta, *tb, CLEAN);
        for mode in MODES {
            for scale_d in [true, false] {
                let (got, want) = run_case(mode, &ptx, c, scale_d, seed + ci as u64)
                    .unwrap_or_else(|e| panic!("case {ci} {c:?}: {e}"));
                if let Some(p) = got.iter().zip(&want).position(|(g, w)| g != w) {
                    panic!(
                        "case {ci} {c:?} scale-d {scale_d} {mode:?}: word {p} (thread {}, reg {}): got {:#x}, want {:#x}",
                        p / c.f.nacc() as usize,
                        p % c.f.nacc() as usize,
                        got[p],
                        want[p]
                    );
                }
            }
        }
    }
}

// K-major f16 layouts (T = 8): no swizzle with either stride order, and the three swizzles
// (SBO = 8 rows of W bytes), some with the start advanced along K inside the row.
const KN: Layout = kmaj(0, 128, 256);
fn kn_t(rows: u32) -> Layout {
    kmaj(0, rows * 16, 128)
}
fn ksw(w: u32) -> Layout {
    kmaj(w, 16, 8 * w)
}

#[test]
fn ss_f16_k_major_every_swizzle_f32_accumulators() {
    let f = |n| Form::f(Acc::F32, n, false);
    let cases = [
        (Case { f: f(8), la: KN, lb: KN }, false, false),
        (Case { f: f(64), la: kn_t(64), lb: kn_t(64) }, false, false),
        (Case { f: f(16), la: ksw(32), lb: ksw(32) }, false, false),
        (Case { f: f(24), la: ksw(64).with_start(32, 0), lb: ksw(64) }, false, false),
        (Case { f: f(128), la: ksw(128), lb: ksw(128).with_start(64, 0) }, false, false),
        (Case { f: f(256), la: ksw(128).with_start(96, 0), lb: ksw(128).with_start(32, 0) }, false, false),
    ];
    check_cases(&cases, 20);
}

// MN-major f16 layouts: INTERLEAVE (SBO between 8-element groups along M/N, LBO between the
// 8-row K groups), and swizzled (LBO between W-byte chunks along M/N, SBO between the 8-row K
// groups), with the other stride order too.
#[test]
fn ss_f16_mn_major_every_swizzle() {
    let f = |n| Form::f(Acc::F32, n, false);
    // INTERLEAVE: core matrix = 8 K rows x 16 bytes (8 M/N elements); rows packed first
    // (SBO = 256: the two K groups of a row block are 128 apart) or K groups outermost
    let inter_a = mnmaj(0, 128, 256);
    let inter_b = |n: u32| mnmaj(0, (n / 8) * 128, 128);
    // swizzled W: one W-byte row holds W/2 M/N elements of one k; 8 k rows = SBO apart
    // (K groups inner: SBO = 8 W, LBO = 2 SBO for k16) or chunk groups inner (LBO = 8 W)
    let sw_k_inner = |w: u32| mnmaj(w, 16 * w, 8 * w);
    let sw_mn_inner = |w: u32, n: u32| mnmaj(w, 8 * w, 8 * w * (n / (w / 2)).max(1));
    let cases = [
        (Case { f: f(8), la: inter_a, lb: inter_a }, true, true),
        (Case { f: f(32), la: inter_a, lb: inter_b(32) }, true, true),
        (Case { f: f(40), la: inter_a, lb: KN }, true, false),
        (Case { f: f(64), la: sw_k_inner(128), lb: sw_k_inner(128) }, true, true),
        (Case { f: f(128), la: ksw(128), lb: sw_k_inner(128) }, false, true),
        (Case { f: f(128), la: sw_mn_inner(128, 64), lb: sw_mn_inner(128, 128) }, true, true),
        (Case { f: f(64), la: sw_k_inner(64), lb: sw_mn_inner(64, 64) }, true, true),
        (Case { f: f(48), la: sw_mn_inner(32, 64), lb: sw_k_inner(32) }, true, true),
        (Case { f: f(16), la: sw_k_inner(32).with_start(2048, 0), lb: inter_a }, true, true),
    ];
    check_cases(&cases, 40);
}

#[test]
fn rs_f16_a_from_registers() {
    let f = |acc, n| Form::f(acc, n, true);
    let cases = [
        (Case { f: f(Acc::F32, 8), la: KN, lb: KN }, false, false),
        (Case { f: f(Acc::F32, 64), la: KN, lb: ksw(128).with_start(32, 0) }, false, false),
        (Case { f: f(Acc::F32, 256), la: KN, lb: mnmaj(128, 2048, 1024) }, false, true),
        (Case { f: f(Acc::F16, 32), la: KN, lb: ksw(64) }, false, false),
        (Case { f: f(Acc::F16, 128), la: KN, lb: mnmaj(64, 1024, 512) }, false, true),
    ];
    check_cases(&cases, 60);
}

#[test]
fn f16_accumulators_round_once_to_f16() {
    let f = |n| Form::f(Acc::F16, n, false);
    let cases = [
        (Case { f: f(8), la: KN, lb: KN }, false, false),
        (Case { f: f(64), la: ksw(128), lb: ksw(128) }, false, false),
        (Case { f: f(256), la: mnmaj(128, 1024, 1024), lb: ksw(32) }, true, false),
    ];
    check_cases(&cases, 70);
}

#[test]
fn negation_and_two_wgmmas_on_one_accumulator() {
    let mut cases = Vec::new();
    for (k, (neg_a, neg_b)) in [(true, false), (false, true), (true, true)].into_iter().enumerate() {
        let rs = k == 1;
        let acc = if k == 2 { Acc::F16 } else { Acc::F32 };
        let f = Form { neg_a, neg_b, ..Form::f(acc, 32, rs) };
        cases.push((Case { f, la: ksw(128), lb: ksw(128) }, false, false));
    }
    // a second wgmma accumulating onto the first (same shape: no fence needed between them),
    // landing in order under `wait_group 1` then `wait_group 0`
    for (acc, rs) in [(Acc::F32, false), (Acc::F16, true), (Acc::S32, false)] {
        let f = Form {
            twice: true,
            ..if acc == Acc::S32 { Form::int(32, rs, true, true, false) } else { Form::f(acc, 32, rs) }
        };
        let l = if acc == Acc::S32 { kmaj(128, 16, 1024) } else { ksw(64) };
        cases.push((Case { f, la: l, lb: l }, false, false));
    }
    check_cases(&cases, 80);
}

// Byte operands: T = 16 per chunk, K = 32 per instruction (32 bytes, like k16 f16).
const IKN: Layout = kmaj(0, 128, 256);
fn iksw(w: u32) -> Layout {
    kmaj(w, 16, 8 * w)
}

#[test]
fn int8_ss_and_rs_every_signedness_wrapping_and_saturating() {
    let mut cases = Vec::new();
    let signs = [(true, true), (true, false), (false, true), (false, false)];
    for (k, &(sa, sb)) in signs.iter().enumerate() {
        for rs in [false, true] {
            for sat in [false, true] {
                let n = [8, 24, 48, 256][(k + rs as usize) % 4];
                let f = Form::int(n, rs, sa, sb, sat);
                let (la, lb) = match (k + 2 * sat as usize) % 4 {
                    0 => (IKN, IKN),
                    1 => (iksw(32), iksw(128).with_start(32, 0)),
                    2 => (iksw(64).with_start(32, 0), kmaj(0, n * 16, 128)),
                    _ => (iksw(128).with_start(96, 0), iksw(64)),
                };
                cases.push((Case { f, la, lb }, false, false));
            }
        }
    }
    check_cases(&cases, 100);
}

/// `wg_ptx` with its mma line replaced (forms ptxas rejects: not ptxas-checked).
fn load_err(f: &Form, from: &str, to: &str) -> String {
    let ptx = wg_ptx(f, false, false, CLEAN).replace(from, to);
    assert!(ptx.contains(to), "{from} not in the PTX");
    match emu90(AsyncMode::Lazy).load_module("m", &ptx) {
        Ok(_) => panic!("`{to}` was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn forms_outside_the_isa_are_refused_at_load() {
    let i8 = Form::int(32, false, true, true, false);
    // integer operands are K-major only: no transpose (nor scale) immediates
    let e = load_err(&i8, "%rd3, %p1;", "%rd3, %p1, 1, 1, 0, 1;");
    assert!(e.contains("K-major") && e.contains("imm-trans"), "{e}");
    // s8 N: 8, 16, 24, then multiples of 16
    let e = load_err(&i8, "m64n32k32", "m64n40k32");
    assert!(e.contains("N = 40"), "{e}");
    let e = load_err(&Form::f(Acc::F32, 32, false), "m64n32k16", "m64n36k16");
    assert!(e.contains("N = 36"), "{e}");
    // the k of the types, the trans immediates' values, .satfinite on floats, A register count
    let e = load_err(&i8, "m64n32k32", "m64n32k16");
    assert!(e.contains("k32"), "{e}");
    let e = load_err(&Form::f(Acc::F32, 8, false), "1, 1, 0, 0;", "1, 1, 0, 2;");
    assert!(e.contains("imm-trans"), "{e}");
    let e = load_err(&Form::f(Acc::F32, 8, false), "k16.f32", "k16.satfinite.f32");
    assert!(e.contains("satfinite"), "{e}");
    let e = load_err(&Form::f(Acc::F32, 8, true), "{%a0, %a1, %a2, %a3}", "{%a0, %a1, %a2}");
    assert!(e.contains("4 registers"), "{e}");
    let e = load_err(&Form::f(Acc::F16, 16, false), "{%d0, %d1, %d2, %d3}", "{%d0, %d1, %d2}");
    assert!(e.contains("needs 4 registers"), "{e}");
    let e = load_err(&Form::f(Acc::F32, 8, false), "k16.f32.f16.f16", "k16.f32.bf16.bf16");
    assert!(e.contains("emulated"), "{e}");
}

#[test]
fn descriptor_base_offset_only_where_the_isa_prescribes_it() {
    let f = Form::f(Acc::F32, 64, false);
    // A's 128B-swizzled pattern starts 256 bytes past a 1024 boundary: prescribed base offset
    // (start >> 7) & 7 = 2; the layout is the absolute-address swizzle either way
    let off = ksw(128).with_start(1024 + 256, 2);
    let ok = Case { f, la: off, lb: ksw(128) };
    check_cases(&[(ok, false, false), (Case { la: off.with_start(1024 + 256 + 32, 2), ..ok }, false, false)], 120);
    // base offset 0 there too (CUTLASS always writes 0): accepted, same layout
    check_cases(&[(Case { la: off.with_start(1024 + 256, 0), ..ok }, false, false)], 121);
    let ptx = wg_ptx(&f, false, false, CLEAN);
    for (what, la, lb, expect) in [
        ("wrong value", off.with_start(1024 + 256, 3), ksw(128), "prescribes (start >> 7) & 7 = 2"),
        ("on its boundary", ksw(128).with_start(0, 1), ksw(128), "on its 1024-byte repeat boundary"),
        ("no swizzle", KN, KN.with_start(0, 1), "no swizzle"),
    ] {
        let r = finding(run_case(AsyncMode::Lazy, &ptx, &Case { f, la, lb }, true, 122));
        assert!(r.contains(expect) && r.contains("base offset"), "{what}: {r}");
        assert!(r.contains(&ptx_loc(&ptx, "// MMA")), "{what}: {r}");
    }
}

/// Every planted bug is reported (with the planted line, or the wgmma's), and its clean twin
/// -- the same instruction where it is legal -- runs and gives the reference result.
#[test]
fn misuse_is_reported_with_a_clean_twin() {
    let ss = Case { f: Form::f(Acc::F32, 128, false), la: ksw(128), lb: ksw(128) };
    let rs = Case { f: Form::f(Acc::F16, 64, true), la: KN, lb: ksw(64) };
    let i8 = Case { f: Form::int(48, false, true, false, true), la: iksw(128), lb: iksw(32) };
    let m = |after_fence: &'static str, inflight: &'static str| Marks { after_fence, inflight, ..CLEAN };
    let store_late = "    bar.sync 0;\n    shl.b32 %r24, %r1, 2;\n    add.u32 %r24, %r24, %r4;\n    st.shared.u32 [%r24], %r1; // BUG";
    let desc_differs = "    shr.u32 %r7, %r1, 5;\n    setp.eq.u32 %p6, %r7, 1;\n    @%p6 add.u64 %rd3, %rd3, 2;\n";
    // (what, case, bug, twin, expected words)
    let cases: Vec<(&str, Case, Marks, Marks, &str)> = vec![
        // S1: accumulator or A register touched in flight; twin: after the wait
        (
            "accumulator read in flight",
            ss,
            m("", "    mov.f32 %g0, %d3; // BUG"),
            Marks { after_wait: "    mov.f32 %g0, %d3;", ..CLEAN },
            "still in flight",
        ),
        (
            "accumulator written in flight",
            ss,
            m("", "    mov.f32 %d5, %d5; // BUG"),
            Marks { after_wait: "    mov.f32 %d5, %d5;", ..CLEAN },
            "still in flight",
        ),
        (
            "s32 accumulator written in flight",
            i8,
            m("", "    mov.s32 %d5, %d5; // BUG"),
            Marks { after_wait: "    mov.s32 %d5, %d5;", ..CLEAN },
            "still in flight",
        ),
        (
            "A register read in flight",
            rs,
            m("", "    mov.b32 %r30, %a2; // BUG"),
            Marks { after_wait: "    mov.b32 %r30, %a2;", ..CLEAN },
            "A register of a wgmma still in flight",
        ),
        (
            "A register written in flight",
            rs,
            m("", "    mov.b32 %a1, %a1; // BUG"),
            Marks { after_wait: "    mov.b32 %a1, %a1;", ..CLEAN },
            "A register of a wgmma still in flight",
        ),
        // S2: written after the wgmma.fence (ptxas: C7515); twin: the same write before it
        (
            "accumulator written after the fence",
            ss,
            m("    mov.f32 %d1, %d1; // BUG", ""),
            Marks { desc: "    mov.f32 %d1, %d1;\n", ..CLEAN },
            "after the last wgmma.fence",
        ),
        (
            "s32 accumulator written after the fence",
            i8,
            m("    mov.s32 %d0, %d0; // BUG", ""),
            Marks { desc: "    mov.s32 %d0, %d0;\n", ..CLEAN },
            "after the last wgmma.fence",
        ),
        (
            "A register written after the fence",
            rs,
            m("    mov.b32 %a3, %a3; // BUG", ""),
            Marks { desc: "    mov.b32 %a3, %a3;\n", ..CLEAN },
            "after the last wgmma.fence",
        ),
        ("no wgmma.fence", ss, Marks { wgfence: false, ..CLEAN }, CLEAN, "without a wgmma.fence"),
        // S4: an operand overwritten before the wait; twin: after it (and a barrier)
        ("operand overwritten", ss, m("", store_late), Marks { after_wait: store_late, ..CLEAN }, "operand of a wgmma"),
        (
            "s8 operand overwritten",
            i8,
            m("", store_late),
            Marks { after_wait: store_late, ..CLEAN },
            "operand of a wgmma",
        ),
        // S3: the image written by st.shared with no fence.proxy.async
        ("no fence.proxy.async", rs, Marks { fence_proxy: false, ..CLEAN }, CLEAN, "missing fence.proxy.async"),
        // S5: warp 1's B descriptor differs
        ("descriptor differs", ss, Marks { desc: desc_differs, ..CLEAN }, CLEAN, "differs from warp"),
        ("descriptor differs (register A)", rs, Marks { desc: desc_differs, ..CLEAN }, CLEAN, "differs from warp"),
    ];
    for (what, c, bug, twin, expect) in cases {
        let ptx = wg_ptx(&c.f, false, false, bug);
        let r = finding(run_case(AsyncMode::Lazy, &ptx, &c, true, 3));
        assert!(r.contains(expect), "{what}: {r}");
        let marker = if ptx.contains("// BUG") { "// BUG" } else { "// MMA" };
        assert!(r.contains(&ptx_loc(&ptx, marker)), "{what}: {r}");
        let ptx = wg_ptx(&c.f, false, false, twin);
        for mode in MODES {
            let (got, want) =
                run_case(mode, &ptx, &c, true, 3).unwrap_or_else(|e| panic!("{what} twin, {mode:?}: {e}"));
            assert!(got == want, "{what} twin, {mode:?}");
        }
    }
}

/// ptxas's diagnostics (stderr) for `ptx`.
fn ptxas_says(ptx: &str) -> String {
    let dir = std::env::temp_dir().join(format!("fusebert-wgmma-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("{:x}.ptx", ptx.len() ^ ptx.lines().count() << 20));
    std::fs::write(&f, ptx).unwrap();
    let out = std::process::Command::new(ptxas_path())
        .arg("-arch=sm_90a")
        .arg("-o")
        .arg(f.with_extension("cubin"))
        .arg(&f)
        .output()
        .expect("run ptxas");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The register hazards ptxas repairs behind the programmer's back: a non-wgmma write to an
/// accumulator in flight (ptxas C7515: the pipeline is serialized) and a write to an
/// accumulator after the wgmma.fence (C7519: ptxas injects a warpgroup.arrive).
/// The ISA leaves both undefined and the emulator reports both (S1, S2); the twins -- the same
/// write after the wait, or before the fence -- draw neither a ptxas note nor a finding.
#[test]
fn s1_s2_fire_where_ptxas_serializes_or_injects_a_fence() {
    let ss = Case { f: Form::f(Acc::F32, 64, false), la: ksw(128), lb: ksw(128) };
    let rs = Case { f: Form::f(Acc::F32, 32, true), la: KN, lb: ksw(64) };
    let i8 = Case { f: Form::int(32, false, true, true, false), la: iksw(128), lb: iksw(128) };
    let zero_d = "    mov.f32 %d1, 0f00000000;";
    let zero_a = "    mov.b32 %a3, 0;";
    let zero_i = "    mov.s32 %d2, 0;";
    for (what, c, line, code) in [
        ("accumulator after the fence", ss, zero_d, "C7519"),
        // ptxas is silent here (free to schedule the write before its own fence); the ISA
        // still calls it undefined, so the emulator reports it (S2 may fire on more)
        ("A register after the fence", rs, zero_a, "(none)"),
        ("s32 accumulator after the fence", i8, zero_i, "C7519"),
        ("accumulator in flight", ss, zero_d, "C7515"),
        ("s32 accumulator in flight", i8, zero_i, "C7515"),
    ] {
        let s2 = code != "C7515";
        let planted = format!("{line} // BUG");
        let (bug, twin) = if s2 {
            (Marks { after_fence: &planted, ..CLEAN }, Marks { desc: &format!("{line}\n"), ..CLEAN })
        } else {
            (Marks { inflight: &planted, ..CLEAN }, Marks { after_wait: line, ..CLEAN })
        };
        let ptx = wg_ptx(&c.f, false, false, bug);
        let said = ptxas_says(&ptx);
        if code != "(none)" {
            assert!(said.contains(code), "{what}: ptxas no longer prints {code}: {said}");
        }
        let r = finding(run_case(AsyncMode::Lazy, &ptx, &c, true, 9));
        let expect = if s2 { "after the last wgmma.fence" } else { "still in flight" };
        assert!(r.contains(expect) && r.contains(&ptx_loc(&ptx, "// BUG")), "{what}: {r}");
        let ptx = wg_ptx(&c.f, false, false, twin);
        let said = ptxas_says(&ptx);
        assert!(!said.contains("C7519") && !said.contains("C7515"), "{what} twin: {said}");
        for mode in MODES {
            run_case(mode, &ptx, &c, true, 9).unwrap_or_else(|e| panic!("{what} twin, {mode:?}: {e}"));
        }
    }
}

/// scale-d false (D = A B) reads no accumulator: registers never written are fine there (the
/// CUTLASS first k-block), and reported by the register sanitizer when scale-d is true.
#[test]
fn scale_d_false_needs_no_initialised_accumulators() {
    for c in [
        Case { f: Form::f(Acc::F32, 32, false), la: ksw(128), lb: ksw(128) },
        Case { f: Form::f(Acc::F16, 64, true), la: KN, lb: ksw(64) },
        Case { f: Form::int(24, false, false, true, true), la: iksw(64), lb: iksw(32) },
    ] {
        let ptx = wg_ptx(&c.f, false, false, Marks { init: false, ..CLEAN });
        for mode in MODES {
            let (got, want) = run_case(mode, &ptx, &c, false, 11).unwrap_or_else(|e| panic!("{c:?} {mode:?}: {e}"));
            assert!(got == want, "{c:?} {mode:?}");
        }
        let r = finding(run_case(AsyncMode::Lazy, &ptx, &c, true, 11));
        assert!(r.contains("read before any instruction wrote it") && r.contains(&ptx_loc(&ptx, "// MMA")), "{r}");
    }
}

/// A bulk copy (cp.async.bulk, the async proxy) into shared memory, issued by thread 0 on an
/// mbarrier in the free gap between the operands (offset 12288), then waited for by it; the
/// copy rewrites A's first 16 bytes with the image's own (the products do not change).
const BULK_INTO_A: &str = r#"    {
    .reg .pred P1, P2;
    .reg .b32 B;
    setp.eq.u32 P2, %r1, 0;
    @!P2 bra SKIPB;
    add.u32 B, %r4, 12288;
    mbarrier.init.shared::cta.b64 [B], 1;
    fence.mbarrier_init.release.cluster;
    mbarrier.arrive.expect_tx.shared::cta.b64 _, [B], 16;
    cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd1], 16, [B]; // BULK
    WAITB:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [B], 0;
    @!P1 bra WAITB;
    SKIPB:
    }
"#;

/// S4 for the async proxy: a TMA (bulk) copy landing in an operand of a wgmma still in flight
/// is reported at the copy (kernel, block, thread 0, its PTX line) in every completion mode;
/// the clean twin issues the same copy after the wait.
#[test]
fn s4_tma_landing_in_a_wgmma_operand_in_flight_is_reported_with_a_clean_twin() {
    let ss = Case { f: Form::f(Acc::F32, 128, false), la: ksw(128), lb: ksw(128) };
    let bug = wg_ptx(&ss.f, false, false, Marks { inflight: BULK_INTO_A, ..CLEAN });
    // (the barrier: every warp's share of the wgmma has retired before the copy)
    let after = format!("    bar.sync 0;\n{BULK_INTO_A}");
    let twin = wg_ptx(&ss.f, false, false, Marks { after_wait: &after, ..CLEAN });
    for mode in MODES {
        let r = finding(run_case(mode, &bug, &ss, true, 3));
        assert!(r.contains("async-proxy hazard") && r.contains("an operand of a wgmma"), "{mode:?}: {r}");
        assert!(r.contains(&format!("line {}", line_of(&bug, "// MMA"))), "{mode:?}: {r}");
        assert_located(&r, "wg", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&bug, "// BULK")]);
        let (got, want) = run_case(mode, &twin, &ss, true, 3).unwrap_or_else(|e| panic!("twin, {mode:?}: {e}"));
        assert!(got == want, "twin, {mode:?}");
    }
}

/// A wgmma reading shared memory that a TMA copy still in flight writes (no wait on its
/// mbarrier): reported at the wgmma; the clean twin waits first.
#[test]
fn a_wgmma_reading_a_tma_destination_before_its_phase_completes_is_reported() {
    let ss = Case { f: Form::f(Acc::F32, 64, false), la: ksw(128), lb: ksw(128) };
    // the copy issued without the wait, before the wgmma.fence
    let nowait = BULK_INTO_A
        .replace("    WAITB:\n    mbarrier.try_wait.parity.shared::cta.b64 P1, [B], 0;\n    @!P1 bra WAITB;\n", "");
    let bug = wg_ptx(&ss.f, false, false, Marks { desc: &nowait, ..CLEAN });
    // (thread 0 waits, then a barrier orders every warp after its wait)
    let waited = format!("{BULK_INTO_A}    bar.sync 0;\n");
    let twin = wg_ptx(&ss.f, false, false, Marks { desc: &waited, ..CLEAN });
    for mode in [AsyncMode::Lazy, AsyncMode::Random(5)] {
        let r = finding(run_case(mode, &bug, &ss, true, 3));
        assert!(r.contains("async-proxy hazard") && r.contains("has not completed"), "{mode:?}: {r}");
        assert!(r.contains(&ptx_loc(&bug, "// MMA")), "{mode:?}: {r}");
    }
    for mode in MODES {
        let (got, want) = run_case(mode, &twin, &ss, true, 3).unwrap_or_else(|e| panic!("twin, {mode:?}: {e}"));
        assert!(got == want, "twin, {mode:?}");
    }
}

/// Tensor MACs: a warpgroup's wgmma m64nNkK counts 64 x N x K once (not once per warp), two
/// wgmmas twice; f16 (K 16) and s8 (K 32).
#[test]
fn a_wgmma_counts_m_n_k_macs_once_per_warpgroup() {
    let cases = [
        (Case { f: Form::f(Acc::F32, 128, false), la: ksw(128), lb: ksw(128) }, 64 * 128 * 16),
        (Case { f: Form::f(Acc::F16, 64, true), la: KN, lb: ksw(64) }, 64 * 64 * 16),
        (Case { f: Form::int(48, false, true, false, true), la: iksw(128), lb: iksw(32) }, 64 * 48 * 32),
        (
            Case { f: Form { twice: true, ..Form::f(Acc::F32, 64, false) }, la: ksw(128), lb: ksw(128) },
            2 * 64 * 64 * 16,
        ),
    ];
    for (c, macs) in cases {
        let ptx = wg_ptx(&c.f, false, false, CLEAN);
        for mode in MODES {
            let emu = emu90(mode);
            let (got, want) = run_case_on(&emu, &ptx, &c, true, 9).unwrap();
            assert!(got == want, "{c:?} {mode:?}");
            let cn = emu.last_counters().unwrap();
            assert_eq!(cn.tensor_macs, macs, "{c:?} {mode:?}: MACs of one warpgroup's wgmma");
        }
    }
}

/// The wgmma kernel with its shared image copied by `cp.async` (4 bytes a thread, the Ampere
/// non-bulk form) instead of `ld.global` + `st.shared`; `wait` is placed after the copy loop,
/// before the (optional) `fence.proxy.async`.
fn cp_async_image(ptx: &str, wait: &str) -> String {
    let st = "    ld.global.u32 %r22, [%rd5];\n    add.u32 %r21, %r4, %r20;\n    st.shared.u32 [%r21], %r22;\n";
    assert!(ptx.contains(st) && ptx.contains("COPIED:\n"));
    ptx.replace(st, "    add.u32 %r21, %r4, %r20;\n    cp.async.ca.shared.global [%r21], [%rd5], 4; // CP\n")
        .replace("COPIED:\n", &format!("COPIED:\n{wait}"))
}

/// S3 with `cp.async`: its landings are generic-proxy writes (PTX ISA 9.7.9.25.3.1: "cp.async
/// is treated as a weak memory operation performed in the generic proxy"), so a wgmma reading
/// them needs `fence.proxy.async` by the copying thread after the copies landed. Planted: no
/// fence; the fence before `cp.async.wait_all` (the copies land after it). Clean twin: wait,
/// then fence. Reported at the wgmma (kernel, block, warp, PTX line), naming the writer.
#[test]
fn s3_cp_async_landings_read_by_a_wgmma_need_fence_proxy_async() {
    let ss = Case { f: Form::f(Acc::F32, 64, false), la: ksw(128), lb: ksw(64) };
    let wait = "    cp.async.wait_all;\n";
    let no_fence = cp_async_image(&wg_ptx(&ss.f, false, false, Marks { fence_proxy: false, ..CLEAN }), wait);
    let early = cp_async_image(
        &wg_ptx(&ss.f, false, false, Marks { fence_proxy: false, ..CLEAN }),
        &format!("    fence.proxy.async.shared::cta; // EARLY\n{wait}"),
    );
    let clean = cp_async_image(&wg_ptx(&ss.f, false, false, CLEAN), wait);
    for mode in MODES {
        for (what, bug) in [("no fence", &no_fence), ("fence before the wait", &early)] {
            let r = finding(run_case(mode, bug, &ss, true, 4));
            assert!(r.contains("missing fence.proxy.async") && r.contains("generic proxy"), "{what} {mode:?}: {r}");
            assert!(r.contains("kernel `wg`") && r.contains("block (0,0,0)"), "{r}");
            assert!(r.contains(&ptx_loc(bug, "// MMA")), "{what} {mode:?}: {r}");
        }
        let (got, want) = run_case(mode, &clean, &ss, true, 4).unwrap_or_else(|e| panic!("clean, {mode:?}: {e}"));
        assert!(got == want, "clean, {mode:?}");
    }
}

/// S4 with `cp.async`: a copy into an operand of a wgmma in flight is reported at the copy (its
/// destination is written while the wgmma may read it); the clean twin copies after the wait.
#[test]
fn s4_cp_async_into_a_wgmma_operand_in_flight_is_reported_with_a_clean_twin() {
    let ss = Case { f: Form::f(Acc::F32, 64, false), la: ksw(128), lb: ksw(64) };
    // thread 0 rewrites A's first 16 bytes with the image's own
    let cp = "    setp.eq.u32 %p6, %r1, 0;\n    @%p6 cp.async.cg.shared.global [%r4], [%rd1], 16; // CPA\n    cp.async.wait_all;\n";
    let bug = wg_ptx(&ss.f, false, false, Marks { inflight: cp, ..CLEAN });
    let after = format!("    bar.sync 0;\n{cp}");
    let twin = wg_ptx(&ss.f, false, false, Marks { after_wait: &after, ..CLEAN });
    for mode in MODES {
        let r = finding(run_case(mode, &bug, &ss, true, 5));
        assert!(r.contains("async-proxy hazard") && r.contains("operand of a wgmma"), "{mode:?}: {r}");
        assert_located(&r, "wg", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&bug, "// CPA")]);
        let (got, want) = run_case(mode, &twin, &ss, true, 5).unwrap_or_else(|e| panic!("twin, {mode:?}: {e}"));
        assert!(got == want, "twin, {mode:?}");
    }
}
