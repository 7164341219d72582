//! Hopper (sm_90a) in the emulator: mbarrier, TMA tile loads and stores through tensor maps,
//! elect.sync, setmaxnreg, fence.proxy.async, kernel-parameter addresses, extern shared
//! alignment, per-thread cp.async groups. Hand-written PTX, validated by ptxas for sm_90a;
//! expected values come from plain loops over the ISA's formulas written here (not from the
//! emulator's `tma` module); every semantic runs under lazy, eager and random completion; every
//! finding has a planted bug and a clean twin.
mod common;
use common::*;
use fusebert_emu::arch::{Arch, AsyncMode};
use fusebert_emu::{Emulator, EmulatorOptions, LaunchDims, Param, ParamBytes};
use rand::Rng;

const MODES: [AsyncMode; 4] = [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(1), AsyncMode::Random(7)];

fn emu90(mode: AsyncMode) -> Emulator {
    Emulator::new(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() }).unwrap()
}

fn dims1(block: u32, shared: u32) -> LaunchDims {
    LaunchDims { grid: (1, 1, 1), block: (block, 1, 1), shared_mem_bytes: shared }
}

/// Loads `ptx` (checked by ptxas for sm_90a) as module `m`.
fn load(emu: &Emulator, ptx: &str) {
    ptxas_check(ptx, "sm_90a");
    emu.load_module("m", ptx).unwrap_or_else(|e| panic!("load failed: {e}\n{}", numbered(ptx)));
}

fn read(emu: &Emulator, addr: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    emu.read(addr, &mut v).unwrap();
    v
}

/// The report of a failed launch (a sanitizer finding), panicking when it succeeded.
fn finding<T>(r: fusebert_emu::Result<T>) -> String {
    match r {
        Ok(_) => panic!("the planted bug was NOT detected"),
        Err(e) => e.to_string(),
    }
}

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

// ---------------------------------------------------------------------------------------------
// Reference: the ISA's TMA box layout, written independently of the emulator
// ---------------------------------------------------------------------------------------------

/// A tiled tensor map's parameters (as given to the encoder).
#[derive(Clone)]
struct Map {
    esize: usize,
    dims: Vec<u64>,
    /// byte strides of dims 1..
    strides: Vec<u64>,
    boxd: Vec<u32>,
    /// 0 none, 1 = 32B, 2 = 64B, 3 = 128B (the driver's codes)
    swizzle: u32,
}

impl Map {
    fn dtype(&self) -> u32 {
        match self.esize {
            1 => 0,
            2 => 6,
            _ => 7,
        }
    }
    fn encode(&self, gaddr: u64) -> [u8; 128] {
        let ones = vec![1u32; self.dims.len()];
        fusebert_emu::tma::encode_tiled(
            self.dtype(),
            self.dims.len() as u32,
            gaddr,
            &self.dims,
            &self.strides,
            &self.boxd,
            &ones,
            0,
            self.swizzle,
            false,
        )
        .unwrap()
    }
    fn box_bytes(&self) -> usize {
        self.boxd.iter().map(|&b| b as usize).product::<usize>() * self.esize
    }
    fn global_bytes(&self) -> usize {
        let r = self.dims.len();
        if r == 1 {
            self.dims[0] as usize * self.esize
        } else {
            self.strides[r - 2] as usize * self.dims[r - 1] as usize
        }
    }
}

/// The 16-byte chunk of a byte at absolute shared address `a` after swizzling: chunk bits [4,7)
/// XOR the 128-byte row index bits [7,10), masked to the pattern's 2/4/8 rows.
fn swizzled(code: u32, a: usize) -> usize {
    let rows = match code {
        0 => return a,
        1 => 1,
        2 => 3,
        _ => 7,
    };
    let chunk = (a >> 4) & 7;
    let row = (a >> 7) & rows;
    (a & !0x70) | ((chunk ^ row) << 4)
}

/// The shared-memory image (relative to `base`) a tile load of `m` at `coords` produces, with
/// out-of-bounds elements zero: nested loops, dimension 0 fastest.
fn expected_box(m: &Map, g: &[u8], coords: &[i64], base: usize) -> Vec<u8> {
    let mut out = vec![0u8; m.box_bytes()];
    let b = |d: usize| m.boxd.get(d).copied().unwrap_or(1) as i64;
    let dim = |d: usize| m.dims.get(d).copied().unwrap_or(1) as i64;
    let c = |d: usize| coords.get(d).copied().unwrap_or(0);
    let mut lin = 0usize;
    for i2 in 0..b(2) {
        for i1 in 0..b(1) {
            for i0 in 0..b(0) {
                let (x, y, z) = (c(0) + i0, c(1) + i1, c(2) + i2);
                let inside = (0..dim(0)).contains(&x) && (0..dim(1)).contains(&y) && (0..dim(2)).contains(&z);
                let dst = swizzled(m.swizzle, base + lin) - base;
                if inside {
                    let s1 = m.strides.first().copied().unwrap_or(0) as i64;
                    let s2 = m.strides.get(1).copied().unwrap_or(0) as i64;
                    let src = (x * m.esize as i64 + y * s1 + z * s2) as usize;
                    out[dst..dst + m.esize].copy_from_slice(&g[src..src + m.esize]);
                }
                lin += m.esize;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TMA load: a box lands in swizzled shared memory, completion on an mbarrier
// ---------------------------------------------------------------------------------------------

/// One warp: thread 0 inits the barrier; the elected thread arrives with expect_tx (param 2)
/// and issues the load; every thread waits (twice, in two brace scopes with the same label),
/// then copies the raw shared bytes [0, param 3) of the box to `out`. `early` is inserted before
/// the waits (planted bugs).
fn tma_load_ptx(rank: usize, early: &str, parity: u32) -> String {
    let coords = ["%r5", "%r6", "%r7"][..rank].join(", ");
    format!(
        r#"{HEADER}
.extern .shared .align 1024 .b8 smem[];

.visible .entry tma_load(
    .param .align 128 .b8 tma_load_param_0[128],
    .param .u64 tma_load_param_1,
    .param .u32 tma_load_param_2,
    .param .u32 tma_load_param_3,
    .param .u32 tma_load_param_4,
    .param .u32 tma_load_param_5,
    .param .u32 tma_load_param_6
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .shared .align 8 .b64 bar;

    mov.u32 %r1, %tid.x;
    mov.u32 %r2, bar;
    mov.u32 %r4, smem;
    ld.param.u32 %r8, [tma_load_param_2];
    ld.param.u32 %r9, [tma_load_param_3];
    ld.param.u32 %r5, [tma_load_param_4];
    ld.param.u32 %r6, [tma_load_param_5];
    ld.param.u32 %r7, [tma_load_param_6];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;
    fence.mbarrier_init.release.cluster;
    bar.sync 0;
    mov.b64 %rd1, tma_load_param_0;
    cvta.param.u64 %rd2, %rd1;
    elect.sync %r3|%p2, -1;
    @%p2 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r2], %r8;
    @%p2 cp.async.bulk.tensor.{rank}d.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd2, {{{coords}}}], [%r2];
{early}
    {{
    .reg .pred P1;
    WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r2], {parity};
    @!P1 bra WAIT;
    }}
    {{
    .reg .pred P1;
    WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r2], {parity};
    @!P1 bra WAIT;
    }}
    ld.param.u64 %rd3, [tma_load_param_1];
    cvta.to.global.u64 %rd3, %rd3;
    mov.u32 %r20, %r1;
LOOP:
    setp.ge.u32 %p4, %r20, %r9;
    @%p4 bra DONE;
    add.u32 %r21, %r4, %r20;
    ld.shared.u8 %r22, [%r21];
    cvt.u64.u32 %rd4, %r20;
    add.u64 %rd5, %rd3, %rd4;
    st.global.u8 [%rd5], %r22;
    add.u32 %r20, %r20, 32;
    bra LOOP;
DONE:
    ret;
}}
"#
    )
}

/// Runs one tile load of `m` at `coords` announcing `expect` bytes; returns the box image.
fn run_tma_load(
    mode: AsyncMode,
    ptx: &str,
    m: &Map,
    g: &[u8],
    coords: &[i64],
    expect: usize,
) -> fusebert_emu::Result<Vec<u8>> {
    run_tma_load_on(&emu90(mode), ptx, m, g, coords, expect)
}

/// [`run_tma_load`] on a given emulator (whose counters the caller then reads).
fn run_tma_load_on(
    emu: &Emulator,
    ptx: &str,
    m: &Map,
    g: &[u8],
    coords: &[i64],
    expect: usize,
) -> fusebert_emu::Result<Vec<u8>> {
    load(emu, ptx);
    let ga = emu.alloc(g.len()).unwrap();
    emu.write(ga, g).unwrap();
    let map = m.encode(ga);
    let n = m.box_bytes();
    let out = emu.alloc(n).unwrap();
    emu.memset(out, 0xFF, n).unwrap();
    let c = |d: usize| Param::I32(coords.get(d).copied().unwrap_or(0) as i32);
    let args = [
        Param::Bytes(ParamBytes::new(&map).unwrap()),
        Param::Ptr(out),
        Param::U32(expect as u32),
        Param::U32(n as u32),
        c(0),
        c(1),
        c(2),
    ];
    emu.launch("m", "tma_load", &dims1(32, n as u32), &args)?;
    Ok(read(emu, out, n))
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    (0..n).map(|_| r.gen_range(1..=255u8)).collect()
}

/// 2-D maps with every swizzle (the inner box as wide as the span), f16 and s8 and f32
/// elements, padded row strides, dimensions that are not multiples of the box.
fn maps_2d() -> Vec<Map> {
    vec![
        Map { esize: 2, dims: vec![40, 7], strides: vec![96], boxd: vec![24, 5], swizzle: 0 },
        Map { esize: 2, dims: vec![40, 7], strides: vec![96], boxd: vec![16, 4], swizzle: 1 },
        Map { esize: 2, dims: vec![70, 9], strides: vec![160], boxd: vec![32, 8], swizzle: 2 },
        Map { esize: 2, dims: vec![100, 13], strides: vec![208], boxd: vec![64, 12], swizzle: 3 },
        Map { esize: 1, dims: vec![200, 11], strides: vec![208], boxd: vec![128, 9], swizzle: 3 },
        Map { esize: 4, dims: vec![20, 5], strides: vec![80], boxd: vec![8, 3], swizzle: 1 },
    ]
}

#[test]
fn tma_2d_tile_loads_match_the_isa_layout_in_every_completion_mode() {
    let ptx = tma_load_ptx(2, "", 0);
    for (k, m) in maps_2d().into_iter().enumerate() {
        let g = random_bytes(m.global_bytes(), 10 + k as u64);
        let (w, h) = (m.dims[0] as i64, m.dims[1] as i64);
        let bw = m.boxd[0] as i64;
        // inside, hanging over each edge, entirely outside
        for coords in [[0, 0], [w - bw / 2, 1], [-bw / 2, -1], [3, h - 2], [w, 0]] {
            let want = expected_box(&m, &g, &coords, 1024);
            for mode in MODES {
                let got = run_tma_load(mode, &ptx, &m, &g, &coords, m.box_bytes())
                    .unwrap_or_else(|e| panic!("map {k} at {coords:?} ({mode:?}): {e}"));
                assert!(got == want, "map {k} at {coords:?} ({mode:?}): box differs from the ISA layout");
            }
        }
    }
}

#[test]
fn tma_1d_and_3d_tile_loads() {
    let m1 = Map { esize: 2, dims: vec![50], strides: vec![], boxd: vec![64], swizzle: 0 };
    let g = random_bytes(m1.global_bytes(), 3);
    for coords in [[0i64], [-8], [40]] {
        let want = expected_box(&m1, &g, &coords, 1024);
        for mode in MODES {
            assert_eq!(run_tma_load(mode, &tma_load_ptx(1, "", 0), &m1, &g, &coords, m1.box_bytes()).unwrap(), want);
        }
    }
    let m3 = Map { esize: 2, dims: vec![70, 5, 3], strides: vec![144, 144 * 6], boxd: vec![64, 4, 2], swizzle: 3 };
    let g = random_bytes(m3.global_bytes(), 4);
    for coords in [[0i64, 0, 0], [10, 3, 2], [-4, -2, -1]] {
        let want = expected_box(&m3, &g, &coords, 1024);
        for mode in MODES {
            assert_eq!(run_tma_load(mode, &tma_load_ptx(3, "", 0), &m3, &g, &coords, m3.box_bytes()).unwrap(), want);
        }
    }
}

/// The global-load counters of one TMA box: the useful bytes are the in-bounds elements'
/// (out-of-bounds fill is read from no memory, the swizzle only permutes shared addresses),
/// the transactions the distinct 32-byte sectors those elements lie in (the allocation is
/// 256-byte aligned). Load efficiency = bytes / (32 x sectors). Hand-computed:
/// * 24 x 5 f16 box of a 40 x 7 map, rows 96 bytes apart, at (0, 0): 5 rows of 48 bytes at
///   96 r, each in sectors 3r and 3r + 1: 240 bytes, 10 sectors (0.75);
/// * the same at (28, 1): columns 28..39 (24 bytes at 96 r + 56, sectors 3r + 1, 3r + 2) of
///   rows 1..5: 120 bytes, 10 sectors (0.375);
/// * 64 x 12 f16 box, 128-byte swizzle, rows 208 bytes apart, at (0, 0): 12 rows of 128 bytes,
///   even rows 32-aligned (4 sectors), odd rows 16 past (5): 1536 bytes, 54 sectors;
/// * 3-D 64 x 4 x 2 box of a 70 x 5 x 3 map (strides 144, 864) at (-4, -2, -1): columns 0..59
///   of rows 0 and 1 of plane 0: 120 bytes at 0 (sectors 0..3) and at 144 (sectors 4..8):
///   240 bytes, 9 sectors;
/// * a linear bulk copy of 272 bytes: 272 bytes, 9 sectors.
#[test]
fn tma_load_counters_count_in_bounds_bytes_over_sectors() {
    let m3 = Map { esize: 2, dims: vec![70, 5, 3], strides: vec![144, 864], boxd: vec![64, 4, 2], swizzle: 3 };
    let cases: Vec<(Map, Vec<i64>, u64, u64)> = vec![
        (maps_2d()[0].clone(), vec![0, 0], 240, 10),
        (maps_2d()[0].clone(), vec![28, 1], 120, 10),
        (maps_2d()[3].clone(), vec![0, 0], 1536, 54),
        (m3, vec![-4, -2, -1], 240, 9),
    ];
    for (m, coords, bytes, sectors) in cases {
        let g = random_bytes(m.global_bytes(), 8);
        let ptx = tma_load_ptx(m.dims.len(), "", 0);
        for mode in MODES {
            let emu = emu90(mode);
            run_tma_load_on(&emu, &ptx, &m, &g, &coords, m.box_bytes()).unwrap();
            let c = emu.last_counters().unwrap();
            let what = format!("box {:?} at {coords:?} ({mode:?})", m.boxd);
            assert_eq!(
                (c.global_load_requests, c.global_load_bytes, c.global_load_sectors),
                (1, bytes, sectors),
                "{what}"
            );
            let tma = (c.tma_load_requests, c.tma_load_bytes, c.tma_load_sectors);
            assert_eq!(tma, (1, bytes, sectors), "{what}");
            assert_eq!(c.tma_load_efficiency(), bytes as f64 / (32 * sectors) as f64, "{what}");
            assert_eq!(c.global_load_efficiency(), c.tma_load_efficiency(), "{what}: the only global loads");
            assert!(c.tma_load_efficiency() <= 1.0, "{what}");
        }
    }
}

#[test]
fn expect_tx_below_the_bytes_delivered_is_reported_and_above_deadlocks() {
    // the classic bug: expect_tx computed from the clipped (in-bounds) part of a residue tile
    let m = &maps_2d()[3];
    let g = random_bytes(m.global_bytes(), 5);
    let ptx = tma_load_ptx(2, "", 0);
    let clipped = 36 * 12 * 2;
    for mode in MODES {
        let r = finding(run_tma_load(mode, &ptx, m, &g, &[64, 0], clipped).map(|_| ()));
        assert!(r.contains("mbarrier misuse") && r.contains("expect_tx"), "{mode:?}: {r}");
        assert!(r.contains(&format!("line {}", line_of(&ptx, "cp.async.bulk.tensor"))), "{r}");
        assert!(r.contains("thread (0,0,0)") || r.contains("thread (31,0,0)"), "{r}");
        // announcing more than the box: the phase never completes, every barrier is listed
        let r = finding(run_tma_load(mode, &ptx, m, &g, &[0, 0], m.box_bytes() + 16).map(|_| ()));
        assert!(r.contains("deadlock") && r.contains("16 transaction bytes outstanding"), "{mode:?}: {r}");
        assert!(r.contains("no copy in flight"), "{r}");
        // the clean twin
        run_tma_load(mode, &ptx, m, &g, &[64, 0], m.box_bytes()).unwrap();
    }
}

/// One warp, `phases` rounds on one mbarrier (init 1): thread 0 announces param 1 bytes with
/// `arrive.expect_tx` (before its two 16-byte bulk copies, or after them: `expect_last`, the
/// legal order where bytes may land before the expect), every thread waits for the round's
/// parity, then a block barrier.
fn tx_ptx(expect_last: bool) -> String {
    let expect = "    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r2], %r8; // EXPECT\n";
    let copies = "    @%p1 cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd1], 16, [%r2]; // COPY1\n\
                  \x20   @%p1 cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r5], [%rd2], 16, [%r2]; // COPY2\n";
    let body = if expect_last { format!("{copies}{expect}") } else { format!("{expect}{copies}") };
    format!(
        r#"{HEADER}
.visible .entry tx(
    .param .u64 tx_param_0,
    .param .u32 tx_param_1,
    .param .u32 tx_param_2
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .shared .align 8 .b64 bar;
    .shared .align 128 .b8 buf[256];

    mov.u32 %r1, %tid.x;
    mov.u32 %r2, bar;
    mov.u32 %r4, buf;
    add.u32 %r5, %r4, 16;
    ld.param.u64 %rd1, [tx_param_0];
    cvta.to.global.u64 %rd1, %rd1;
    add.u64 %rd2, %rd1, 16;
    ld.param.u32 %r8, [tx_param_1];
    ld.param.u32 %r9, [tx_param_2];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;
    fence.mbarrier_init.release.cluster;
    bar.sync 0;
    mov.u32 %r10, 0;
LOOP:
{body}    and.b32 %r11, %r10, 1;
    {{
    .reg .pred P1;
    WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r2], %r11;
    @!P1 bra WAIT;
    }}
    bar.sync 0;
    add.u32 %r10, %r10, 1;
    setp.lt.u32 %p2, %r10, %r9;
    @%p2 bra LOOP;
    ret;
}}
"#
    )
}

fn run_tx(mode: AsyncMode, ptx: &str, expect: u32, phases: u32) -> fusebert_emu::Result<()> {
    let emu = emu90(mode);
    load(&emu, ptx);
    let g = emu.alloc(64).unwrap();
    emu.write(g, &random_bytes(64, 21)).unwrap();
    emu.launch("m", "tx", &dims1(32, 0), &[Param::Ptr(g), Param::U32(expect), Param::U32(phases)])
}

/// S8 across phases: two 16-byte copies per phase where expect_tx announces 16. The surplus
/// never drives a phase's count below zero after its last arrival when the first copy
/// completes the phase: the second copy's bytes land in the next phase. Reported (as
/// "expect_tx bytes differ from the bytes delivered") at the copy whose bytes cross the phase
/// boundary when it lands late (lazy, random), at the last copy once the block can go no
/// further when it lands at issue (eager). Clean twins: expect_tx 32 announced before the
/// copies, and after them (bytes landing before the expect: a transiently negative count,
/// legal in the ISA), for one and three phases.
#[test]
fn expect_tx_surplus_crossing_a_phase_boundary_is_reported_with_clean_twins() {
    let (first, last) = (tx_ptx(false), tx_ptx(true));
    for mode in MODES {
        for phases in [1, 3] {
            let r = finding(run_tx(mode, &first, 16, phases));
            assert!(
                r.contains("mbarrier misuse") && r.contains("expect_tx bytes differ from the bytes delivered"),
                "{mode:?} {phases}: {r}"
            );
            let at = [ptx_loc(&first, "// COPY1"), ptx_loc(&first, "// COPY2")];
            assert!(at.iter().any(|a| r.contains(a.as_str())), "{mode:?} {phases}: {r}");
            assert!(r.contains("kernel `tx`") && r.contains("block (0,0,0)") && r.contains("thread (0,0,0)"), "{r}");
            if mode == AsyncMode::Lazy {
                // the second copy of phase 0 lands after the first completed the phase
                assert!(r.contains(&ptx_loc(&first, "// COPY2")) && r.contains("lands after it"), "{r}");
            }
            for ptx in [&first, &last] {
                run_tx(mode, ptx, 32, phases).unwrap_or_else(|e| panic!("clean twin {mode:?} {phases}: {e}"));
            }
            // the surplus with the expect last: every arrival in, the count below zero
            let r = finding(run_tx(mode, &last, 16, phases));
            assert!(r.contains("expect_tx bytes differ from the bytes delivered"), "{mode:?} {phases}: {r}");
        }
    }
}

#[test]
fn reading_a_tma_destination_before_its_phase_completes_is_reported_when_late() {
    let m = &maps_2d()[1];
    let g = random_bytes(m.global_bytes(), 6);
    let ptx = tma_load_ptx(2, "    ld.shared.u32 %r30, [%r4]; // BUG:early", 0);
    for mode in [AsyncMode::Lazy, AsyncMode::Random(3)] {
        let r = finding(run_tma_load(mode, &ptx, m, &g, &[0, 0], m.box_bytes()).map(|_| ()));
        assert!(r.contains("async-proxy hazard") && r.contains("still in flight"), "{r}");
        assert_located(&r, "tma_load", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&ptx, "BUG:early")]);
    }
    // eager completion (the copy landing at issue) hides the bug: why lazy is the default
    run_tma_load(AsyncMode::Eager, &ptx, m, &g, &[0, 0], m.box_bytes()).unwrap();
    // a wrong parity (a fresh barrier passes parity 1 at once) reads before the data is there
    let wrong = tma_load_ptx(2, "", 1);
    let r = finding(run_tma_load(AsyncMode::Lazy, &wrong, m, &g, &[0, 0], m.box_bytes()).map(|_| ()));
    assert!(r.contains("still in flight"), "{r}");
}

#[test]
fn tensor_maps_not_made_by_the_encoder_or_larger_than_their_buffer_are_reported() {
    let m = maps_2d()[0].clone();
    let g = random_bytes(m.global_bytes(), 7);
    let ptx = tma_load_ptx(2, "", 0);
    let emu = emu90(AsyncMode::Lazy);
    load(&emu, &ptx);
    let ga = emu.alloc(g.len()).unwrap();
    emu.write(ga, &g).unwrap();
    let out = emu.alloc(m.box_bytes()).unwrap();
    let launch = |map: &[u8], row: i32| {
        let args = [
            Param::Bytes(ParamBytes::new(map).unwrap()),
            Param::Ptr(out),
            Param::U32(m.box_bytes() as u32),
            Param::U32(m.box_bytes() as u32),
            Param::I32(0),
            Param::I32(row),
            Param::I32(0),
        ];
        emu.launch("m", "tma_load", &dims1(32, m.box_bytes() as u32), &args)
    };
    let mut tampered = m.encode(ga);
    tampered[30] ^= 4;
    let r = finding(launch(&tampered, 0));
    assert!(r.contains("bad tensor map") && r.contains("changed after"), "{r}");
    assert!(r.contains(&ptx_loc(&ptx, "cp.async.bulk.tensor")), "{r}");
    let r = finding(launch(&[0u8; 128], 0));
    assert!(r.contains("bad tensor map"), "{r}");
    // a map that says the tensor has 9 rows where the buffer holds 7
    let big = Map { dims: vec![40, 9], ..m.clone() };
    let r = finding(launch(&big.encode(ga), 4));
    assert!(r.contains("out-of-bounds") && r.contains("outside every allocation"), "{r}");
    // the clean twin
    launch(&m.encode(ga), 0).unwrap();
}

// ---------------------------------------------------------------------------------------------
// TMA store: in-bounds elements written, the rest clipped; fences and waits
// ---------------------------------------------------------------------------------------------

/// One warp fills the box in shared memory with byte codes (index * 7 + 1), fences (unless
/// `fence` is empty), syncs, and the elected thread stores the box at (param 1, param 2) and
/// waits. `after` is inserted after the store (planted bugs).
fn tma_store_ptx(fence: &str, after: &str, wait: &str) -> String {
    format!(
        r#"{HEADER}
.extern .shared .align 1024 .b8 smem[];

.visible .entry tma_store(
    .param .align 128 .b8 tma_store_param_0[128],
    .param .u32 tma_store_param_1,
    .param .u32 tma_store_param_2,
    .param .u32 tma_store_param_3
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;

    mov.u32 %r1, %tid.x;
    mov.u32 %r4, smem;
    ld.param.u32 %r5, [tma_store_param_1];
    ld.param.u32 %r6, [tma_store_param_2];
    ld.param.u32 %r9, [tma_store_param_3];
    mov.u32 %r20, %r1;
FILL:
    setp.ge.u32 %p4, %r20, %r9;
    @%p4 bra FILLED;
    mad.lo.u32 %r22, %r20, 7, 1;
    add.u32 %r21, %r4, %r20;
    st.shared.u8 [%r21], %r22;
    add.u32 %r20, %r20, 32;
    bra FILL;
FILLED:
{fence}
    bar.sync 0;
    mov.b64 %rd1, tma_store_param_0;
    cvta.param.u64 %rd2, %rd1;
    elect.sync %r3|%p2, -1;
    @%p2 cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%rd2, {{%r5, %r6}}], [%r4];
    @%p2 cp.async.bulk.commit_group;
{after}
{wait}
    ret;
}}
"#
    )
}

const FENCE: &str = "    fence.proxy.async.shared::cta;";
const WAIT_READ: &str = "    @%p2 cp.async.bulk.wait_group.read 0;";

fn run_tma_store(mode: AsyncMode, ptx: &str, m: &Map, coords: [i64; 2]) -> fusebert_emu::Result<(Vec<u8>, Vec<u8>)> {
    let emu = emu90(mode);
    load(&emu, ptx);
    let n = m.global_bytes();
    let ga = emu.alloc(n).unwrap();
    let sentinel = random_bytes(n, 9);
    emu.write(ga, &sentinel).unwrap();
    let map = m.encode(ga);
    let nb = m.box_bytes() as u32;
    let args = [
        Param::Bytes(ParamBytes::new(&map).unwrap()),
        Param::I32(coords[0] as i32),
        Param::I32(coords[1] as i32),
        Param::U32(nb),
    ];
    emu.launch("m", "tma_store", &dims1(32, nb), &args)?;
    Ok((sentinel, read(&emu, ga, n)))
}

/// The global image after a store of the box filled with codes: every in-bounds element of the
/// box replaced (read from its swizzled shared address), everything else untouched.
fn expected_store(m: &Map, before: &[u8], coords: [i64; 2]) -> Vec<u8> {
    let mut g = before.to_vec();
    let code = |a: usize| (a * 7 + 1) as u8;
    let mut lin = 0;
    for i1 in 0..m.boxd[1] as i64 {
        for i0 in 0..m.boxd[0] as i64 {
            let (x, y) = (coords[0] + i0, coords[1] + i1);
            if (0..m.dims[0] as i64).contains(&x) && (0..m.dims[1] as i64).contains(&y) {
                let src = swizzled(m.swizzle, 1024 + lin) - 1024;
                let dst = x as usize * m.esize + y as usize * m.strides[0] as usize;
                for b in 0..m.esize {
                    g[dst + b] = code(src + b);
                }
            }
            lin += m.esize;
        }
    }
    g
}

#[test]
fn tma_stores_write_in_bounds_elements_only() {
    let ptx = tma_store_ptx(FENCE, "", WAIT_READ);
    for (k, m) in maps_2d().into_iter().enumerate() {
        let (w, h) = (m.dims[0] as i64, m.dims[1] as i64);
        for coords in [[0, 0], [w - 3, h - 2], [-5, -1]] {
            for mode in MODES {
                let (before, got) = run_tma_store(mode, &ptx, &m, coords).unwrap_or_else(|e| panic!("map {k}: {e}"));
                assert!(got == expected_store(&m, &before, coords), "map {k} at {coords:?} ({mode:?})");
            }
        }
    }
}

#[test]
fn tma_store_misuse_is_reported() {
    let m = &maps_2d()[3];
    for mode in MODES {
        // no fence.proxy.async between the generic writes and the async-proxy read
        let ptx = tma_store_ptx("", "", WAIT_READ);
        let r = finding(run_tma_store(mode, &ptx, m, [0, 0]).map(|_| ()));
        assert!(r.contains("missing fence.proxy.async"), "{mode:?}: {r}");
        assert!(r.contains(&ptx_loc(&ptx, "cp.async.bulk.tensor")), "{r}");
        // the source overwritten before wait_group.read: a finding in every mode, eager
        // completion included (it has read the source already, the hardware may not have)
        let ptx = tma_store_ptx(FENCE, "    st.shared.u32 [%r4], %r1; // BUG:reuse", WAIT_READ);
        let r = finding(run_tma_store(mode, &ptx, m, [0, 0]).map(|_| ()));
        assert!(r.contains("async-proxy hazard") && r.contains("source of a TMA store"), "{mode:?}: {r}");
        assert_located(&r, "tma_store", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&ptx, "BUG:reuse")]);
        // the block exits with the store never waited for (every mode too)
        let ptx = tma_store_ptx(FENCE, "", "");
        let r = finding(run_tma_store(mode, &ptx, m, [0, 0]).map(|_| ()));
        assert!(r.contains("exits with this TMA store not waited for"), "{mode:?}: {r}");
        // the clean twin (also: the reuse after the wait is fine)
        let ptx = tma_store_ptx(FENCE, "", &format!("{WAIT_READ}\n    st.shared.u32 [%r4], %r1;"));
        run_tma_store(mode, &ptx, m, [0, 0]).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// mbarrier state machine and its misuse
// ---------------------------------------------------------------------------------------------

/// A kernel of one block whose body uses the barrier at `%r2` (init count from the body) and
/// writes `%r10` of each thread to out[tid].
fn mbar_ptx(body: &str) -> String {
    format!(
        r#"{HEADER}
.visible .entry mb(
    .param .u64 mb_param_0
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .shared .align 8 .b64 bar;

    mov.u32 %r1, %tid.x;
    mov.u32 %r2, bar;
    mov.u32 %r10, 0;
    setp.eq.u32 %p1, %r1, 0;
{body}
    ld.param.u64 %rd3, [mb_param_0];
    cvta.to.global.u64 %rd3, %rd3;
    mul.wide.u32 %rd4, %r1, 4;
    add.u64 %rd5, %rd3, %rd4;
    st.global.u32 [%rd5], %r10;
    ret;
}}
"#
    )
}

fn run_mbar(mode: AsyncMode, ptx: &str, threads: u32) -> fusebert_emu::Result<Vec<u32>> {
    let emu = emu90(mode);
    load(&emu, ptx);
    let out = emu.alloc(4 * threads as usize).unwrap();
    emu.launch("m", "mb", &dims1(threads, 0), &[Param::Ptr(out)])?;
    Ok(read(&emu, out, 4 * threads as usize).chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
}

/// Sets %p3 to try_wait.parity's answer for parity `par`, and adds (answer << bit) to %r10.
fn probe(par: u32, bit: u32) -> String {
    format!(
        "    mbarrier.test_wait.parity.shared::cta.b64 %p3, [%r2], {par};\n    selp.u32 %r11, {}, 0, %p3;\n    add.u32 %r10, %r10, %r11;\n",
        1u32 << bit
    )
}

#[test]
fn mbarrier_phases_parities_tokens_and_transaction_counts() {
    // init 2 arrivals; thread 0 probes the parities after each step
    let mut body = String::from("    @%p1 mbarrier.init.shared::cta.b64 [%r2], 2;\n    bar.sync 0;\n");
    body += &probe(0, 0); // fresh: parity 0 incomplete -> 0
    body += &probe(1, 1); // fresh: parity 1 (the phase before) complete -> 2
    body += "    @%p1 mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%r2], 32;\n";
    body += "    @%p1 mbarrier.arrive.shared::cta.b64 %rd6, [%r2];\n";
    body += "    @%p1 mbarrier.arrive.shared::cta.b64 %rd7, [%r2];\n";
    body += &probe(0, 2); // both arrived, 32 bytes outstanding -> 0
    body += "    @%p1 mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%r2], 16;\n";
    body += &probe(0, 3); // 16 outstanding -> 0
    body += "    @%p1 mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%r2], 16;\n";
    body += &probe(0, 4); // phase 0 complete -> 16
    body += &probe(1, 5); // phase 1 incomplete -> 0
                          // the state token of phase 0 tests complete
    body += "    @%p1 mbarrier.test_wait.shared::cta.b64 %p4, [%r2], %rd6;\n    @%p1 selp.u32 %r11, 64, 0, %p4;\n    @%p1 add.u32 %r10, %r10, %r11;\n";
    body += "    @%p1 mbarrier.arrive.noComplete.shared::cta.b64 %rd8, [%r2], 1;\n";
    body += &probe(1, 7); // one of two arrivals -> 0
    body += "    @%p1 mbarrier.arrive.shared::cta.b64 %rd9, [%r2];\n";
    body += &probe(1, 8); // phase 1 complete -> 256
    body += "    @%p1 mbarrier.test_wait.shared::cta.b64 %p4, [%r2], %rd9;\n    @%p1 selp.u32 %r11, 512, 0, %p4;\n    @%p1 add.u32 %r10, %r10, %r11;\n";
    body += "    bar.sync 0;\n    @%p1 mbarrier.inval.shared::cta.b64 [%r2];\n";
    let ptx = mbar_ptx(&body);
    for mode in MODES {
        let got = run_mbar(mode, &ptx, 32).unwrap();
        assert_eq!(got[0], 2 | 16 | 64 | 256 | 512, "{mode:?}");
        // the other threads probed only the shared parity state, at their own pace: they run
        // after thread 0 in lockstep, so they see the same answers for the unguarded probes
        assert!(got[1..].iter().all(|&v| v == got[1]), "{got:?}");
    }
}

#[test]
fn mbarrier_misuse_is_reported_with_a_clean_twin() {
    let cases: [(&str, &str, &str); 4] = [
        (
            // every lane arrives on a barrier expecting one arrival
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;\n    bar.sync 0;\n    mbarrier.arrive.shared::cta.b64 _, [%r2]; // BUG\n",
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 32;\n    bar.sync 0;\n    mbarrier.arrive.shared::cta.b64 _, [%r2]; // BUG\n",
            "more arrivals than the init count",
        ),
        (
            "    mbarrier.arrive.shared::cta.b64 _, [%r2]; // BUG\n",
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 32;\n    bar.sync 0;\n    mbarrier.arrive.shared::cta.b64 _, [%r2]; // BUG\n",
            "used before mbarrier.init",
        ),
        (
            // thread 0 completes phases 0, 1, 2 and waits on parity 0 twice: the second wait
            // refers to phase 2, phase 1 went by unobserved
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 0;\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 0; // BUG\n",
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 0;\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 1;\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n    @%p1 mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 0; // BUG\n",
            "skipped phase",
        ),
        (
            // init of a live barrier
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;\n    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1; // BUG\n",
            "    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;\n    @%p1 mbarrier.inval.shared::cta.b64 [%r2];\n    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1; // BUG\n",
            "already initialised",
        ),
    ];
    for (bug, clean, what) in cases {
        for mode in MODES {
            let ptx = mbar_ptx(bug);
            let r = finding(run_mbar(mode, &ptx, 32).map(|_| ()));
            assert!(r.contains("mbarrier misuse") && r.contains(what), "{what} ({mode:?}): {r}");
            assert!(r.contains(&ptx_loc(&ptx, "// BUG")), "{r}");
            run_mbar(mode, &mbar_ptx(clean), 32).unwrap_or_else(|e| panic!("clean twin of `{what}`: {e}"));
        }
    }
}

#[test]
fn a_wait_that_can_never_pass_is_a_deadlock_report_listing_every_barrier() {
    // two barriers; the one waited on expects 2 arrivals and gets 1
    let body = "    mov.u32 %r12, bar;\n    add.u32 %r3, %r12, 8;\n\
        @%p1 mbarrier.init.shared::cta.b64 [%r2], 2;\n\
        bar.sync 0;\n\
        @%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];\n\
        WAIT:\n    mbarrier.try_wait.parity.shared::cta.b64 %p3, [%r2], 0;\n    @!%p3 bra WAIT;\n";
    let ptx = mbar_ptx(body);
    for mode in MODES {
        let r = finding(run_mbar(mode, &ptx, 64));
        assert!(r.contains("deadlock"), "{r}");
        assert!(r.contains("warp 0 waits on an mbarrier") && r.contains("warp 1 waits on an mbarrier"), "{r}");
        assert!(r.contains("phase 0 (parity 0), 1 of 2 arrivals pending"), "{r}");
        assert!(r.contains(&format!("line {}", line_of(&ptx, "try_wait"))), "{r}");
    }
    // the clean twin: both warps' thread 0 arrive
    let clean = body.replace("setp", "").replace(
        "@%p1 mbarrier.arrive.shared::cta.b64 _, [%r2];",
        "and.b32 %r13, %r1, 31;\n    setp.eq.u32 %p5, %r13, 0;\n    @%p5 mbarrier.arrive.shared::cta.b64 _, [%r2];",
    );
    for mode in MODES {
        run_mbar(mode, &mbar_ptx(&clean), 64).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Producer / consumer across warps: phases order shared memory between warps
// ---------------------------------------------------------------------------------------------

#[test]
fn producer_consumer_pipeline_over_two_stages_runs_clean() {
    // warp 1 produces 6 tiles into 2 stages (full/empty barriers, parity from the lap), warp 0
    // consumes: out[k] = sum of tile k's 32 values; all 64 threads take part
    let body = r#"
    .shared .align 8 .b64 full[2];
    .shared .align 8 .b64 empty[2];
    .shared .align 16 .b32 buf[64];
    mov.u32 %r20, full;
    mov.u32 %r21, empty;
    mov.u32 %r22, buf;
    @%p1 mbarrier.init.shared::cta.b64 [%r20], 32;
    @%p1 mbarrier.init.shared::cta.b64 [%r20+8], 32;
    @%p1 mbarrier.init.shared::cta.b64 [%r21], 32;
    @%p1 mbarrier.init.shared::cta.b64 [%r21+8], 32;
    bar.sync 0;
    shr.u32 %r23, %r1, 5;
    and.b32 %r24, %r1, 31;
    mov.u32 %r25, 0;
    setp.eq.u32 %p6, %r23, 1;
    @%p6 bra PRODUCER;
CONSUMER:
    and.b32 %r26, %r25, 1;
    shr.u32 %r27, %r25, 1;
    and.b32 %r27, %r27, 1;
    mad.lo.u32 %r28, %r26, 8, %r20;
    {
    .reg .pred P1;
    W1:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r28], %r27;
    @!P1 bra W1;
    }
    mad.lo.u32 %r29, %r26, 128, %r22;
    shl.b32 %r30, %r24, 2;
    add.u32 %r29, %r29, %r30;
    ld.shared.u32 %r31, [%r29];
    setp.eq.u32 %p7, %r24, %r25;
    @%p7 mov.u32 %r10, %r31;
    mad.lo.u32 %r28, %r26, 8, %r21;
    mbarrier.arrive.shared::cta.b64 _, [%r28];
    add.u32 %r25, %r25, 1;
    setp.lt.u32 %p7, %r25, 6;
    @%p7 bra CONSUMER;
    bra END;
PRODUCER:
    and.b32 %r26, %r25, 1;
    shr.u32 %r27, %r25, 1;
    and.b32 %r27, %r27, 1;
    xor.b32 %r27, %r27, 1;
    mad.lo.u32 %r28, %r26, 8, %r21;
    {
    .reg .pred P1;
    W1:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r28], %r27;
    @!P1 bra W1;
    }
    mad.lo.u32 %r29, %r26, 128, %r22;
    shl.b32 %r30, %r24, 2;
    add.u32 %r29, %r29, %r30;
    mad.lo.u32 %r31, %r25, 100, %r24;
    st.shared.u32 [%r29], %r31;
    mad.lo.u32 %r28, %r26, 8, %r20;
    mbarrier.arrive.shared::cta.b64 _, [%r28];
    add.u32 %r25, %r25, 1;
    setp.lt.u32 %p7, %r25, 6;
    @%p7 bra PRODUCER;
END:
"#;
    let ptx = mbar_ptx(body);
    for mode in MODES {
        let got = run_mbar(mode, &ptx, 64).unwrap();
        // consumer lane k < 6 kept tile k's value of lane k: 100 k + k
        for k in 0..6u32 {
            assert_eq!(got[k as usize], 101 * k, "{mode:?}: {got:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// elect.sync, setmaxnreg
// ---------------------------------------------------------------------------------------------

#[test]
fn elect_sync_picks_one_member_and_checks_the_mask() {
    // lanes >= 4 elect under mask 0xfffffff0: %r10 = elected lane + 100 * is-leader
    let body = "    and.b32 %r5, %r1, 31;\n    setp.ge.u32 %p5, %r5, 4;\n    @!%p5 bra SKIP;\n\
        elect.sync %r6|%p6, 0xfffffff0; // ELECT\n    selp.u32 %r7, 100, 0, %p6;\n    add.u32 %r10, %r6, %r7;\nSKIP:\n";
    let ptx = mbar_ptx(body);
    for (mode, leader) in [(AsyncMode::Lazy, 4u32), (AsyncMode::Eager, 4), (AsyncMode::Random(1), 31)] {
        let got = run_mbar(mode, &ptx, 32).unwrap();
        for (l, &v) in got.iter().enumerate() {
            let want = if l < 4 { 0 } else { leader + if l as u32 == leader { 100 } else { 0 } };
            assert_eq!(v, want, "{mode:?} lane {l}");
        }
    }
    // the whole warp executes it but the mask leaves lanes 0-3 out
    let bug = mbar_ptx("    elect.sync %r6|%p6, 0xfffffff0; // ELECT\n");
    let r = finding(run_mbar(AsyncMode::Lazy, &bug, 32).map(|_| ()));
    assert!(r.contains("partial-warp collective") && r.contains("not in membermask"), "{r}");
    assert!(r.contains(&ptx_loc(&bug, "ELECT")), "{r}");
}

#[test]
fn setmaxnreg_must_be_warpgroup_uniform_and_monotonic() {
    // a producer warpgroup decreases, a consumer warpgroup increases (CUTLASS's 40 / 232; smaller here: ptxas refuses counts above the program's own)
    let clean = "    shr.u32 %r5, %r1, 7;\n    setp.eq.u32 %p5, %r5, 0;\n    @!%p5 bra CONS;\n\
        setmaxnreg.dec.sync.aligned.u32 24;\n    bra END;\nCONS:\n    setmaxnreg.inc.sync.aligned.u32 32;\nEND:\n";
    for mode in MODES {
        run_mbar(mode, &mbar_ptx(clean), 256).unwrap();
    }
    // warp 0 takes another setmaxnreg than warps 1-3 of its warpgroup
    let split = "    shr.u32 %r5, %r1, 5;\n    setp.eq.u32 %p5, %r5, 0;\n    @!%p5 bra OTHER;\n\
        setmaxnreg.dec.sync.aligned.u32 24;\n    bra END;\nOTHER:\n    setmaxnreg.dec.sync.aligned.u32 24; // BUG\nEND:\n";
    let ptx = mbar_ptx(split);
    let r = finding(run_mbar(AsyncMode::Lazy, &ptx, 128).map(|_| ()));
    assert!(r.contains("warpgroup misuse") && r.contains("different setmaxnreg"), "{r}");
    // .inc below the count the warp already has
    let down = "    setmaxnreg.inc.sync.aligned.u32 32;\n    setmaxnreg.inc.sync.aligned.u32 24; // BUG\n";
    let ptx = mbar_ptx(down);
    let r = finding(run_mbar(AsyncMode::Lazy, &ptx, 128).map(|_| ()));
    assert!(r.contains("below the warp's current 32"), "{r}");
    assert!(r.contains(&ptx_loc(&ptx, "// BUG")), "{r}");
    // a block that is not whole warpgroups
    let r = finding(run_mbar(AsyncMode::Lazy, &mbar_ptx("    setmaxnreg.dec.sync.aligned.u32 24;\n"), 96).map(|_| ()));
    assert!(r.contains("whole warpgroups"), "{r}");
}

// ---------------------------------------------------------------------------------------------
// Ground rules: parameter addresses, extern shared alignment, per-thread cp.async groups, sm_90a
// ---------------------------------------------------------------------------------------------

#[test]
fn a_by_value_struct_is_read_through_its_parameter_address() {
    let ptx = format!(
        r#"{HEADER}
.visible .entry st(
    .param .u64 st_param_0,
    .param .align 16 .b8 st_param_1[24]
)
{{
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    mov.b64 %rd1, st_param_1;
    cvta.param.u64 %rd2, %rd1;
    ld.u32 %r1, [%rd2+4];
    ld.param.u32 %r2, [%rd1+16];
    ld.param.u64 %rd3, [st_param_0];
    cvta.to.global.u64 %rd3, %rd3;
    st.global.u32 [%rd3], %r1;
    st.global.u32 [%rd3+4], %r2;
    ret;
}}
"#
    );
    let emu = emu90(AsyncMode::Lazy);
    load(&emu, &ptx);
    let out = emu.alloc(8).unwrap();
    let s: Vec<u8> = (0..24u8).map(|b| b * 3 + 1).collect();
    emu.launch("m", "st", &dims1(1, 0), &[Param::Ptr(out), Param::Bytes(ParamBytes::new(&s).unwrap())]).unwrap();
    let got = read(&emu, out, 8);
    assert_eq!(&got[..4], &s[4..8]);
    assert_eq!(&got[4..], &s[16..20]);
}

#[test]
fn extern_shared_starts_at_its_declared_alignment() {
    for align in [16u32, 128, 1024] {
        let ptx = format!(
            "{HEADER}.extern .shared .align {align} .b8 dyn[];\n.visible .entry ex(.param .u64 p)\n{{\n    .reg .b32 %r<4>;\n    .reg .b64 %rd<4>;\n    .shared .align 4 .b32 x[5];\n    mov.u32 %r1, dyn;\n    mov.u32 %r2, x;\n    ld.param.u64 %rd1, [p];\n    cvta.to.global.u64 %rd1, %rd1;\n    st.global.u32 [%rd1], %r1;\n    st.global.u32 [%rd1+4], %r2;\n    st.shared.u32 [%r1], %r2;\n    ret;\n}}\n"
        );
        let emu = emu90(AsyncMode::Lazy);
        load(&emu, &ptx);
        let out = emu.alloc(8).unwrap();
        emu.launch("m", "ex", &dims1(1, 64), &[Param::Ptr(out)]).unwrap();
        let got = read(&emu, out, 8);
        assert_eq!(u32::from_le_bytes(got[..4].try_into().unwrap()), 20u32.div_ceil(align) * align);
    }
}

#[test]
fn sm_90a_modules_load_on_sm_90_only() {
    let ptx = mbar_ptx("");
    ptxas_check(&ptx, "sm_90a");
    let emu = Emulator::new(EmulatorOptions { arch: Arch::Sm80, ..Default::default() }).unwrap();
    let e = emu.load_module("m", &ptx).unwrap_err().to_string();
    assert!(e.contains("sm_90a") && e.contains("arch-specific"), "{e}");
    emu90(AsyncMode::Lazy).load_module("m", &ptx).unwrap();
}

#[test]
fn cp_async_groups_are_per_thread() {
    // lanes 0-15 commit, then every lane waits for all its groups: lanes 16-31 never committed
    // their copies, so reading them names the missing commit (a per-warp group would hide it)
    let ptx = |commit_all: bool| {
        let guard = if commit_all { "" } else { "@%p5 " };
        format!(
            r#"{HEADER}
.visible .entry cpa(.param .u64 p, .param .u64 q)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b32 s[32];
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p5, %r1, 16;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 2;
    add.u32 %r4, %r2, %r3;
    ld.param.u64 %rd1, [p];
    cvta.to.global.u64 %rd1, %rd1;
    mul.wide.u32 %rd2, %r1, 4;
    add.u64 %rd3, %rd1, %rd2;
    cp.async.ca.shared.global [%r4], [%rd3], 4;
    {guard}cp.async.commit_group;
    cp.async.wait_group 0;
    ld.shared.u32 %r5, [%r4]; // READ
    ld.param.u64 %rd4, [q];
    cvta.to.global.u64 %rd4, %rd4;
    add.u64 %rd5, %rd4, %rd2;
    st.global.u32 [%rd5], %r5;
    ret;
}}
"#
        )
    };
    let emu = emu90(AsyncMode::Lazy);
    let src: Vec<u8> = (0..128u32).map(|b| (b * 5 + 3) as u8).collect();
    let run = |text: &str| {
        load(&emu, text);
        let a = emu.alloc(128).unwrap();
        emu.write(a, &src).unwrap();
        let b = emu.alloc(128).unwrap();
        emu.launch("m", "cpa", &dims1(32, 0), &[Param::Ptr(a), Param::Ptr(b)]).map(|_| read(&emu, b, 128))
    };
    let bug = ptx(false);
    let r = finding(run(&bug).map(|_| ()));
    assert!(r.contains("cp.async hazard") && r.contains("never committed"), "{r}");
    assert_located(&r, "cpa", (0, 0, 0), Some((16, 0, 0)), &[ptx_loc(&bug, "// READ")]);
    assert_eq!(run(&ptx(true)).unwrap(), src);
}

// ---------------------------------------------------------------------------------------------
// The command line: `ptxemu run --arch sm_90 --arg tmap:...`
// ---------------------------------------------------------------------------------------------

#[test]
fn ptxemu_runs_a_tma_kernel_with_a_tensor_map_argument() {
    let m = maps_2d()[3].clone();
    let g = random_bytes(m.global_bytes(), 11);
    let dir = TempDir::new("cli_tmap");
    let ptx = tma_load_ptx(2, "", 0);
    ptxas_check(&ptx, "sm_90a");
    std::fs::write(dir.0.join("k.ptx"), &ptx).unwrap();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![g.len()], &g).unwrap();
    safetensors::serialize_to_file(vec![("g".to_string(), view)], None, &dir.0.join("in.safetensors")).unwrap();
    let n = m.box_bytes();
    let run = |tmap: &str, mode: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ptxemu"))
            .arg("run")
            .arg(dir.0.join("k.ptx"))
            .args(["--kernel", "tma_load", "--grid", "1", "--block", "32", "--arch", "sm_90", "--async", mode])
            .args(["--shared", &n.to_string()])
            .arg("--inputs")
            .arg(dir.0.join("in.safetensors"))
            .arg("--output")
            .arg(dir.0.join("out.safetensors"))
            .args(["--arg", tmap, "--arg", &format!("out:o:u8:{n}"), "--arg", &format!("u32:{n}")])
            .args(["--arg", &format!("u32:{n}"), "--arg", "i32:60", "--arg", "i32:3", "--arg", "i32:0"])
            .output()
            .unwrap()
    };
    for mode in ["lazy", "eager", "random:5"] {
        let out = run("tmap:g:f16:100x13:208:64x12:128b", mode);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(dir.0.join("out.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("o").unwrap().data(), expected_box(&m, &g, &[60, 3], 1024).as_slice(), "{mode}");
    }
    // what the driver would refuse is refused, naming the rule
    let out = run("tmap:g:f16:100x13:200:64x12:128b", "lazy");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("multiple of 16"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_swizzled_box_off_its_repeat_boundary_is_reported() {
    // the box at smem + 128: 128-byte aligned (enough without swizzle), not 1024 (128B swizzle)
    let m = &maps_2d()[3];
    let g = random_bytes(m.global_bytes(), 12);
    let ptx =
        tma_load_ptx(2, "", 0).replace("    mov.u32 %r4, smem;", "    mov.u32 %r4, smem;\n    add.u32 %r4, %r4, 128;");
    let emu = emu90(AsyncMode::Lazy);
    load(&emu, &ptx);
    let ga = emu.alloc(g.len()).unwrap();
    emu.write(ga, &g).unwrap();
    let n = m.box_bytes() as u32;
    let out = emu.alloc(n as usize).unwrap();
    let args = |map: &[u8]| {
        [
            Param::Bytes(ParamBytes::new(map).unwrap()),
            Param::Ptr(out),
            Param::U32(n),
            Param::U32(n),
            Param::I32(0),
            Param::I32(0),
            Param::I32(0),
        ]
    };
    let r = finding(emu.launch("m", "tma_load", &dims1(32, n + 128), &args(&m.encode(ga))));
    assert!(r.contains("bad address") && r.contains("not 1024-byte aligned"), "{r}");
    assert!(r.contains(&ptx_loc(&ptx, "cp.async.bulk.tensor")), "{r}");
    // the clean twin: the same offset without swizzle is fine
    let plain = Map { swizzle: 0, ..m.clone() };
    emu.launch("m", "tma_load", &dims1(32, n + 128), &args(&plain.encode(ga))).unwrap();
}

#[test]
fn linear_bulk_copies_land_late_on_their_mbarrier() {
    // the TMA-load kernel with a plain pointer and `cp.async.bulk` of %r8 bytes
    let base = tma_load_ptx(2, "", 0);
    let cp = base.lines().find(|l| l.contains("cp.async.bulk.tensor")).unwrap().to_string();
    let ptx = base
        .replace(".param .align 128 .b8 tma_load_param_0[128]", ".param .u64 tma_load_param_0")
        .replace(
            "    mov.b64 %rd1, tma_load_param_0;\n    cvta.param.u64 %rd2, %rd1;",
            "    ld.param.u64 %rd1, [tma_load_param_0];\n    cvta.to.global.u64 %rd2, %rd1;",
        )
        .replace(
            &cp,
            "    @%p2 cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd2], %r8, [%r2];",
        );
    let g = random_bytes(4096, 13);
    for n in [16usize, 272, 4096] {
        for mode in MODES {
            let emu = emu90(mode);
            load(&emu, &ptx);
            let ga = emu.alloc(g.len()).unwrap();
            emu.write(ga, &g).unwrap();
            let out = emu.alloc(n).unwrap();
            let args = [
                Param::Ptr(ga),
                Param::Ptr(out),
                Param::U32(n as u32),
                Param::U32(n as u32),
                Param::I32(0),
                Param::I32(0),
                Param::I32(0),
            ];
            emu.launch("m", "tma_load", &dims1(32, n as u32), &args).unwrap_or_else(|e| panic!("{n} {mode:?}: {e}"));
            assert_eq!(read(&emu, out, n), g[..n], "{n} bytes, {mode:?}");
            // one request of n bytes in ceil(n / 32) sectors (272 bytes: 9)
            let c = emu.last_counters().unwrap();
            let counted = (c.global_load_requests, c.global_load_bytes, c.global_load_sectors);
            assert_eq!(counted, (1, n as u64, n.div_ceil(32) as u64), "{n} bytes, {mode:?}");
            assert_eq!((c.tma_load_requests, c.tma_load_bytes, c.tma_load_sectors), counted, "{n} bytes, {mode:?}");
        }
    }
    // reading the destination before the wait is reported (lazy)
    let early = ptx
        .replace("    {\n    .reg .pred P1;", "    ld.shared.u32 %r30, [%r4]; // BUG:early\n    {\n    .reg .pred P1;");
    let emu = emu90(AsyncMode::Lazy);
    load(&emu, &early);
    let ga = emu.alloc(g.len()).unwrap();
    emu.write(ga, &g).unwrap();
    let out = emu.alloc(64).unwrap();
    let args =
        [Param::Ptr(ga), Param::Ptr(out), Param::U32(64), Param::U32(64), Param::I32(0), Param::I32(0), Param::I32(0)];
    let r = finding(emu.launch("m", "tma_load", &dims1(32, 64), &args));
    assert!(r.contains("still in flight") && r.contains(&ptx_loc(&early, "BUG:early")), "{r}");
}

// ---------------------------------------------------------------------------------------------
// nvcc's own sm_90a PTX (checked in: src/testdata/tma_probe.{cu,ptx})
// ---------------------------------------------------------------------------------------------

const PROBE_PTX: &str = include_str!("../src/testdata/tma_probe.ptx");

/// What nvcc 13 emits for a `__grid_constant__ CUtensorMap` kernel with inline-asm mbarrier
/// waits (one label repeated in two scopes), elect.sync, setmaxnreg and a 2-D TMA load runs,
/// and lands the box as the ISA lays it out, in every completion mode.
#[test]
fn nvcc_sm90a_probe_runs() {
    let m = maps_2d()[3].clone();
    let g = random_bytes(m.global_bytes(), 14);
    let n = m.box_bytes();
    for mode in MODES {
        let emu = emu90(mode);
        load(&emu, PROBE_PTX);
        let ga = emu.alloc(g.len()).unwrap();
        emu.write(ga, &g).unwrap();
        let out = emu.alloc(n).unwrap();
        let args = [
            Param::Bytes(ParamBytes::new(&m.encode(ga)).unwrap()),
            Param::Ptr(out),
            Param::I32(40),
            Param::I32(5),
            Param::U32(n as u32),
        ];
        emu.launch("m", "tma_probe", &dims1(256, n as u32), &args).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(read(&emu, out, n) == expected_box(&m, &g, &[40, 5], 1024), "{mode:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// S12: an mbarrier used before its init is published (fence.mbarrier_init / fence.proxy.async
// by the initialising thread, then a bar.sync: CUTLASS's fence_barrier_init + __syncthreads)
// ---------------------------------------------------------------------------------------------

const MBAR_INIT_FENCE: &str = "    fence.mbarrier_init.release.cluster;\n";

#[test]
fn s12_mbarrier_use_before_the_init_is_published_is_reported_with_clean_twins() {
    let m = maps_2d().remove(0);
    let g = random_bytes(m.global_bytes(), 120);
    let want = expected_box(&m, &g, &[0, 0], 1024);
    let base = tma_load_ptx(2, "", 0);
    let by5 = |p: &str| p.replace("elect.sync %r3|%p2, -1;", "setp.eq.u32 %p2, %r1, 5;");
    let planted = [
        // the TMA completes on a barrier whose init no fence ordered for the async proxy
        (base.replace(MBAR_INIT_FENCE, ""), "a TMA copy completes on it"),
        // thread 1 polls the barrier before the bar.sync that publishes thread 0's init
        (
            base.replace(
                "    fence.mbarrier_init.release.cluster;\n    bar.sync 0;\n",
                "    setp.eq.u32 %p6, %r1, 1;\n    @%p6 mbarrier.test_wait.parity.shared::cta.b64 %p7, [%r2], 1; // BUG\n    fence.mbarrier_init.release.cluster;\n    bar.sync 0;\n",
            ),
            "another thread uses it",
        ),
        // thread 5 issues the copy: the fence came after the only bar.sync, so nothing orders
        // thread 0's fenced init before thread 5's copy
        (
            by5(&base).replace(
                "    fence.mbarrier_init.release.cluster;\n    bar.sync 0;\n",
                "    bar.sync 0;\n    fence.mbarrier_init.release.cluster;\n",
            ),
            "a bar.sync after the initialising thread's fence",
        ),
    ];
    for (ptx, what) in &planted {
        for mode in MODES {
            let r = finding(run_tma_load(mode, ptx, &m, &g, &[0, 0], m.box_bytes()));
            assert!(r.contains("mbarrier misuse") || r.contains("mbarrier"), "{mode:?}: {r}");
            assert!(r.contains(what) && r.contains("made visible"), "{mode:?}: {r}");
            assert!(r.contains(&format!("PTX line {}", line_of(ptx, "mbarrier.init"))), "{mode:?}: {r}");
        }
    }
    // clean twins: the CUTLASS order; a copy by another thread after fence + bar.sync; the
    // initialising thread's own copy after a fence.proxy.async.shared::cta
    let clean = [
        base.clone(),
        by5(&base),
        base.replace(MBAR_INIT_FENCE, "    fence.proxy.async.shared::cta;\n")
            .replace("elect.sync %r3|%p2, -1;", "setp.eq.u32 %p2, %r1, 0;"),
    ];
    for ptx in &clean {
        for mode in MODES {
            let got =
                run_tma_load(mode, ptx, &m, &g, &[0, 0], m.box_bytes()).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(got == want, "{mode:?}: box differs");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S17: generic global writes read back by TMA in the same kernel without fence.proxy.async.global
// ---------------------------------------------------------------------------------------------

/// Blocks whose index equals param 3 write out[t] = t + 1 (u32) to `g` (param 1) with st.global,
/// then `fence`; blocks whose index equals param 4 load the 128 bytes of `g` with a 1-D TMA box
/// (map param 0: 64 f16), wait, and copy the box to `out` (param 2) word by word.
fn s17_ptx(fence: &str) -> String {
    format!(
        r#"{HEADER}
.extern .shared .align 1024 .b8 smem[];

.visible .entry s17(
    .param .align 128 .b8 s17_param_0[128],
    .param .u64 s17_param_1,
    .param .u64 s17_param_2,
    .param .u32 s17_param_3,
    .param .u32 s17_param_4
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .shared .align 8 .b64 bar;

    mov.u32 %r1, %tid.x;
    mov.u32 %r2, bar;
    mov.u32 %r4, smem;
    mov.u32 %r10, %ctaid.x;
    ld.param.u32 %r11, [s17_param_3];
    ld.param.u32 %r14, [s17_param_4];
    ld.param.u64 %rd1, [s17_param_1];
    cvta.to.global.u64 %rd1, %rd1;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;
    fence.mbarrier_init.release.cluster;
    setp.ne.u32 %p3, %r10, %r11;
    @%p3 bra WRITTEN;
    mul.wide.u32 %rd2, %r1, 4;
    add.u64 %rd3, %rd1, %rd2;
    add.u32 %r12, %r1, 1;
    st.global.u32 [%rd3], %r12; // WRITE
{fence}
WRITTEN:
    bar.sync 0;
    setp.ne.u32 %p3, %r10, %r14;
    @%p3 bra DONE;
    mov.b64 %rd5, s17_param_0;
    cvta.param.u64 %rd5, %rd5;
    mov.u32 %r13, 0;
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r2], 128;
    @%p1 cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd5, {{%r13}}], [%r2]; // TMA
    {{
    .reg .pred P1;
    WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r2], 0;
    @!P1 bra WAIT;
    }}
    shl.b32 %r15, %r1, 2;
    add.u32 %r16, %r4, %r15;
    ld.shared.u32 %r17, [%r16];
    ld.param.u64 %rd6, [s17_param_2];
    cvta.to.global.u64 %rd6, %rd6;
    mul.wide.u32 %rd7, %r1, 4;
    add.u64 %rd8, %rd6, %rd7;
    st.global.u32 [%rd8], %r17;
DONE:
    ret;
}}
"#
    )
}

/// Runs `s17_ptx` on `blocks` blocks (one host thread: blocks run in index order), block
/// `writer` writing and block `reader` loading; returns `out`.
fn run_s17(mode: AsyncMode, ptx: &str, blocks: u32, writer: u32, reader: u32) -> fusebert_emu::Result<Vec<u32>> {
    let emu = Emulator::new(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, threads: 1, ..Default::default() })
        .unwrap();
    load(&emu, ptx);
    let m = Map { esize: 2, dims: vec![64], strides: vec![], boxd: vec![64], swizzle: 0 };
    let g = emu.alloc(128).unwrap();
    let out = emu.alloc(128).unwrap();
    emu.memset(out, 0xFF, 128).unwrap();
    let map = m.encode(g);
    let args = [
        Param::Bytes(ParamBytes::new(&map).unwrap()),
        Param::Ptr(g),
        Param::Ptr(out),
        Param::U32(writer),
        Param::U32(reader),
    ];
    let dims = LaunchDims { grid: (blocks, 1, 1), block: (32, 1, 1), shared_mem_bytes: 128 };
    emu.launch("m", "s17", &dims, &args)?;
    Ok(read(&emu, out, 128).chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
}

#[test]
fn s17_tma_reads_of_unfenced_generic_global_writes_are_reported_with_clean_twins() {
    let want: Vec<u32> = (1..=32).collect();
    // one block writes and reads; then block 0 writes and block 1 reads (split-K partials)
    for (blocks, writer, reader) in [(1, 0, 0), (2, 0, 1)] {
        for (fence, bug) in [("", true), ("    fence.proxy.async.shared::cta; // wrong state space", true)] {
            let ptx = s17_ptx(fence);
            for mode in MODES {
                let r = finding(run_s17(mode, &ptx, blocks, writer, reader));
                assert!(bug && r.contains("missing fence.proxy.async"), "{mode:?}: {r}");
                assert!(r.contains(&format!("line {}", line_of(&ptx, "// TMA"))), "{mode:?}: {r}");
                assert!(r.contains(&format!("PTX line {}", line_of(&ptx, "// WRITE"))), "{mode:?}: {r}");
                assert!(r.contains(&format!("block ({writer},0,0) thread (0,0,0)")), "{mode:?}: {r}");
                assert!(
                    r.contains(&format!("block ({reader}, 0, 0)")) || r.contains(&format!("block ({reader},0,0)")),
                    "{r}"
                );
            }
        }
        for fence in ["    fence.proxy.async.global;", "    fence.proxy.async;"] {
            for mode in MODES {
                let got = run_s17(mode, &s17_ptx(fence), blocks, writer, reader)
                    .unwrap_or_else(|e| panic!("{fence} {mode:?}: {e}"));
                assert_eq!(got, want, "{fence} {mode:?}");
            }
        }
    }
}

/// One block of 32 threads over a 1-D map of 64 f16 (128 bytes) at `g`: each thread writes
/// `tid + 100` to the 4 bytes at smem + 4 tid, fences, and thread 0 TMA-stores the box to `g`
/// (commit, wait_group 0); then thread 0 TMA-loads the box back to smem + 128 and every thread
/// copies its word to `out`. `pre` goes before the store (after the shared writes), `post`
/// after it (before the load); `%rd3` is the thread's word of `g`, `%r12` = tid + 1.
fn s17_store_ptx(pre: &str, post: &str) -> String {
    format!(
        r#"{HEADER}
.extern .shared .align 1024 .b8 smem[];

.visible .entry s17st(
    .param .align 128 .b8 s17st_param_0[128],
    .param .u64 s17st_param_1,
    .param .u64 s17st_param_2
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .shared .align 8 .b64 bar;

    mov.u32 %r1, %tid.x;
    mov.u32 %r2, bar;
    mov.u32 %r4, smem;
    add.u32 %r5, %r4, 128;
    ld.param.u64 %rd1, [s17st_param_1];
    cvta.to.global.u64 %rd1, %rd1;
    mul.wide.u32 %rd2, %r1, 4;
    add.u64 %rd3, %rd1, %rd2;
    add.u32 %r12, %r1, 1;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 mbarrier.init.shared::cta.b64 [%r2], 1;
    fence.mbarrier_init.release.cluster;
    shl.b32 %r15, %r1, 2;
    add.u32 %r16, %r4, %r15;
    add.u32 %r17, %r1, 100;
    st.shared.u32 [%r16], %r17;
    fence.proxy.async.shared::cta;
{pre}
    bar.sync 0;
    mov.b64 %rd5, s17st_param_0;
    cvta.param.u64 %rd5, %rd5;
    mov.u32 %r13, 0;
    @%p1 cp.async.bulk.tensor.1d.global.shared::cta.bulk_group [%rd5, {{%r13}}], [%r4]; // STORE
    @%p1 cp.async.bulk.commit_group;
    @%p1 cp.async.bulk.wait_group 0;
    bar.sync 0;
{post}
    bar.sync 0;
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r2], 128;
    @%p1 cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%r5], [%rd5, {{%r13}}], [%r2]; // LOAD
    {{
    .reg .pred P1;
    WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 P1, [%r2], 0;
    @!P1 bra WAIT;
    }}
    add.u32 %r18, %r5, %r15;
    ld.shared.u32 %r19, [%r18];
    ld.param.u64 %rd6, [s17st_param_2];
    cvta.to.global.u64 %rd6, %rd6;
    add.u64 %rd8, %rd6, %rd2;
    st.global.u32 [%rd8], %r19;
    ret;
}}
"#
    )
}

fn run_s17_store(mode: AsyncMode, ptx: &str) -> fusebert_emu::Result<Vec<u32>> {
    run_s17_store_counted(mode, ptx).map(|r| r.0)
}

/// [`run_s17_store`], with the launch's counters.
fn run_s17_store_counted(mode: AsyncMode, ptx: &str) -> fusebert_emu::Result<(Vec<u32>, fusebert_emu::Counters)> {
    let emu = emu90(mode);
    load(&emu, ptx);
    let m = Map { esize: 2, dims: vec![64], strides: vec![], boxd: vec![64], swizzle: 0 };
    let g = emu.alloc(128).unwrap();
    emu.memset(g, 0, 128).unwrap();
    let out = emu.alloc(128).unwrap();
    emu.memset(out, 0xFF, 128).unwrap();
    let map = m.encode(g);
    let args = [Param::Bytes(ParamBytes::new(&map).unwrap()), Param::Ptr(g), Param::Ptr(out)];
    emu.launch("m", "s17st", &dims1(32, 256), &args)?;
    let got = read(&emu, out, 128).chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    Ok((got, emu.last_counters().unwrap()))
}

/// S17 and TMA stores: a TMA store's writes are async-proxy writes, so a TMA load of what a
/// TMA store wrote needs no proxy fence (clean twins: nothing written generically; the region
/// zeroed by generic stores fenced with fence.proxy.async.global before the store). Planted: a
/// generic write after the store, read back by the TMA load (reported at the load, naming the
/// writer); a generic write before the store with no fence (a cross-proxy write-write race,
/// reported at the store). Every completion mode.
#[test]
fn s17_tma_store_then_tma_load_is_clean_and_generic_writes_around_it_are_reported() {
    let want: Vec<u32> = (100..132).collect();
    let write = "    st.global.u32 [%rd3], %r12; // WRITE";
    let fenced = format!("{write}\n    fence.proxy.async.global;");
    for mode in MODES {
        for (pre, post) in [("", ""), (fenced.as_str(), "")] {
            let (got, c) =
                run_s17_store_counted(mode, &s17_store_ptx(pre, post)).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(got, want, "{mode:?}");
            if pre.is_empty() {
                // the TMA store (128 aligned bytes: 4 sectors) and the warp's 32 st.global.u32
                // (4 sectors); the TMA load likewise
                let st = (c.global_store_requests, c.global_store_bytes, c.global_store_sectors);
                assert_eq!(st, (2, 256, 8), "{mode:?}");
                let ld = (c.global_load_requests, c.global_load_bytes, c.global_load_sectors);
                assert_eq!(ld, (1, 128, 4), "{mode:?}");
            }
        }
        let after = s17_store_ptx("", write);
        let r = finding(run_s17_store(mode, &after));
        assert!(r.contains("missing fence.proxy.async") && r.contains("TMA load reads"), "{mode:?}: {r}");
        assert_located(&r, "s17st", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&after, "// LOAD")]);
        assert!(r.contains(&format!("PTX line {}", line_of(&after, "// WRITE"))), "{mode:?}: {r}");
        let before = s17_store_ptx(write, "");
        let r = finding(run_s17_store(mode, &before));
        assert!(r.contains("missing fence.proxy.async") && r.contains("TMA store overwrites"), "{mode:?}: {r}");
        assert_located(&r, "s17st", (0, 0, 0), Some((0, 0, 0)), &[ptx_loc(&before, "// STORE")]);
    }
}
