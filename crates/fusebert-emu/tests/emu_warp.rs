//! Warp collectives [PTX ISA 9.7.8.6 shfl.sync, 9.7.12.x vote/match/redux/activemask]:
//! 8 full warps (4 blocks of 64), answers from the ISA pseudo-code evaluated per lane.
mod common;
use common::*;
use rand::Rng;

const N: usize = 256; // whole warps only: every lane takes part in the .sync collectives

/// shfl.sync per the ISA pseudo-code: bval = b[4:0], cval = c[4:0], segmask = c[12:8];
/// maxLane = (lane & segmask) | (cval & ~segmask); minLane = lane & segmask; a lane whose
/// source is out of range (!pval) keeps its own value.
fn shfl_ref(mode: &str, a: &[u32], b: &[u32], c: u32) -> (Vec<u32>, Vec<u32>) {
    let mut d = vec![0; a.len()];
    let mut p = vec![0; a.len()];
    for w in 0..a.len() / 32 {
        for lane in 0..32i32 {
            let i = w * 32 + lane as usize;
            let bval = (b[i] & 31) as i32;
            let cval = (c & 31) as i32;
            let seg = ((c >> 8) & 31) as i32;
            let max_lane = (lane & seg) | (cval & !seg);
            let min_lane = lane & seg;
            let (j, ok) = match mode {
                "up" => (lane - bval, lane - bval >= max_lane),
                "down" => (lane + bval, lane + bval <= max_lane),
                "bfly" => (lane ^ bval, (lane ^ bval) <= max_lane),
                "idx" => {
                    let j = min_lane | (bval & !seg & 31);
                    (j, j <= max_lane)
                }
                _ => unreachable!(),
            };
            let src = if ok { j } else { lane };
            d[i] = a[w * 32 + src as usize];
            p[i] = ok as u32;
        }
    }
    (d, p)
}

#[test]
fn shfl_sync_all_modes_and_segment_widths() {
    let mut r = rng(1);
    let a: Vec<u32> = (0..N).map(|_| r.gen()).collect();
    // per-lane offsets, including ones >= the segment width (out-of-range rule) and >= 32
    // (only b[4:0] counts)
    let b_lane: Vec<u32> = (0..N).map(|_| r.gen_range(0..40)).collect();
    let mut ck = Check::new();
    for width in [32u32, 16, 8] {
        for mode in ["up", "down", "bfly", "idx"] {
            // nvcc's packing: c = ((32 - width) << 8) | 0x1f, .up without the 0x1f
            let c = ((32 - width) << 8) | if mode == "up" { 0 } else { 0x1f };
            // register offset, per lane
            let body = format!("\tshfl.sync.{mode}.b32 \t%r20|%p1, %r10, %r11, {c}, -1;");
            let (want, wantp) = shfl_ref(mode, &a, &b_lane, c);
            ck.cmp(
                &format!("shfl.sync.{mode} width {width} (register b) value"),
                run32(&body, &a, &b_lane, &a),
                &want,
                |i| format!("lane {} b={}", i % 32, b_lane[i]),
                |g, w| g == w,
            );
            let body =
                format!("\tshfl.sync.{mode}.b32 \t%r21|%p1, %r10, %r11, {c}, -1;\n\tselp.u32 \t%r20, 1, 0, %p1;");
            ck.cmp(
                &format!("shfl.sync.{mode} width {width} (register b) predicate"),
                run32(&body, &a, &b_lane, &a),
                &wantp,
                |i| format!("lane {} b={}", i % 32, b_lane[i]),
                |g, w| g == w,
            );
            // immediate offsets as nvcc emits them, including offset == width (all out of range
            // for up/down; bfly then reads the previous segment, as the ISA formula says)
            for off in [1u32, 2, 5, width / 2, width, 31] {
                let body = format!("\tshfl.sync.{mode}.b32 \t%r20, %r10, {off}, {c}, -1;");
                let bs = vec![off; N];
                let (want, _) = shfl_ref(mode, &a, &bs, c);
                ck.cmp(
                    &format!("shfl.sync.{mode} width {width} b={off}"),
                    run32(&body, &a, &a, &a),
                    &want,
                    |i| format!("lane {}", i % 32),
                    |g, w| g == w,
                );
            }
        }
    }
    // a clamp value below 31 with full-width segments: down/bfly/idx may not read past cval
    for mode in ["down", "bfly", "idx"] {
        let c = 0x0000_0013; // segmask 0, cval 19
        let body = format!("\tshfl.sync.{mode}.b32 \t%r20, %r10, %r11, {c}, -1;");
        let (want, _) = shfl_ref(mode, &a, &b_lane, c);
        ck.cmp(
            &format!("shfl.sync.{mode} cval=19"),
            run32(&body, &a, &b_lane, &a),
            &want,
            |i| format!("lane {} b={}", i % 32, b_lane[i]),
            |g, w| g == w,
        );
    }
    ck.finish();
}

/// Per-warp predicate patterns: all true, all false, mixed, single lane.
fn predicate_inputs(seed: u64) -> Vec<u32> {
    let mut r = rng(seed);
    (0..N)
        .map(|i| match (i / 32) % 4 {
            0 => 1,
            1 => 0,
            2 => r.gen_range(0..2),
            _ => ((i % 32) == 13) as u32,
        })
        .collect()
}

#[test]
fn vote_sync_all_any_uni_ballot() {
    let p = predicate_inputs(2);
    let mut ck = Check::new();
    let per_warp =
        |f: &dyn Fn(&[u32]) -> u32| -> Vec<u32> { (0..N).map(|i| f(&p[i / 32 * 32..i / 32 * 32 + 32])).collect() };
    let setp = "\tsetp.ne.u32 \t%p1, %r10, 0;\n";
    for (mode, f) in [
        ("all", (|w: &[u32]| w.iter().all(|&x| x != 0) as u32) as fn(&[u32]) -> u32),
        ("any", |w| w.iter().any(|&x| x != 0) as u32),
        ("uni", |w| (w.iter().all(|&x| x != 0) || w.iter().all(|&x| x == 0)) as u32),
    ] {
        let body = format!("{setp}\tvote.sync.{mode}.pred \t%p2, %p1, -1;\n\tselp.u32 \t%r20, 1, 0, %p2;");
        ck.cmp(
            &format!("vote.sync.{mode}.pred"),
            run32(&body, &p, &p, &p),
            &per_warp(&f),
            |i| format!("warp {}", i / 32),
            |g, w| g == w,
        );
        // negated source predicate {!}a
        let body = format!("{setp}\tvote.sync.{mode}.pred \t%p2, !%p1, -1;\n\tselp.u32 \t%r20, 1, 0, %p2;");
        let neg = |w: &[u32]| -> u32 {
            let inv: Vec<u32> = w.iter().map(|&x| (x == 0) as u32).collect();
            f(&inv)
        };
        ck.cmp(
            &format!("vote.sync.{mode}.pred !p"),
            run32(&body, &p, &p, &p),
            &per_warp(&neg),
            |i| format!("warp {}", i / 32),
            |g, w| g == w,
        );
    }
    let ballot = |w: &[u32]| w.iter().enumerate().map(|(l, &x)| ((x != 0) as u32) << l).fold(0, |a, b| a | b);
    let body = format!("{setp}\tvote.sync.ballot.b32 \t%r20, %p1, -1;");
    ck.cmp(
        "vote.sync.ballot.b32",
        run32(&body, &p, &p, &p),
        &per_warp(&ballot),
        |i| format!("warp {}", i / 32),
        |g, w| g == w,
    );
    ck.finish();
}

#[test]
fn ballot_and_activemask_in_divergent_code() {
    let mut r = rng(3);
    let p: Vec<u32> = (0..N).map(|_| r.gen_range(0..2)).collect();
    let take: Vec<u32> = (0..N).map(|i| if (i / 32) % 3 == 0 { 1 } else { r.gen_range(0..2) }).collect();
    // lanes with take==1 enter the branch; inside, membermask = the branch's lanes (computed
    // with a full-warp ballot before branching); non-members contribute 0
    let body = "\tsetp.ne.u32 \t%p1, %r10, 0;\n\tsetp.ne.u32 \t%p2, %r11, 0;\n\tvote.sync.ballot.b32 \t%r22, %p2, -1;\n\tmov.u32 \t%r20, -559038737;\n\t@!%p2 bra \t$L__SKIP;\n\tvote.sync.ballot.b32 \t%r23, %p1, %r22;\n\tactivemask.b32 \t%r24;\n\txor.b32 \t%r25, %r24, %r22;\n\tor.b32 \t%r20, %r23, %r25;\n$L__SKIP:";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let w = i / 32 * 32;
            if take[i] == 0 {
                return 0xdeadbeef;
            }
            // ballot over members with p; activemask == member set, so the xor term is 0
            (0..32).filter(|&l| take[w + l] != 0 && p[w + l] != 0).fold(0u32, |m, l| m | (1 << l))
        })
        .collect();
    let mut ck = Check::new();
    ck.cmp(
        "ballot+activemask in a branch",
        run32(body, &p, &take, &p),
        &want,
        |i| format!("lane {} warp {}", i % 32, i / 32),
        |g, w| g == w,
    );
    // activemask with everything converged: all 32 lanes
    ck.cmp(
        "activemask (converged)",
        run32("\tactivemask.b32 \t%r20;", &p, &p, &p),
        &vec![u32::MAX; N],
        |i| format!("lane {}", i % 32),
        |g, w| g == w,
    );
    ck.finish();
}

#[test]
fn match_any_all_sync() {
    let mut r = rng(4);
    // few distinct values per warp so groups form; one warp all equal
    let a: Vec<u32> = (0..N).map(|i| if i / 32 == 5 { 77 } else { 1000 + r.gen_range(0..4) }).collect();
    let mut ck = Check::new();
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let w = i / 32 * 32;
            (0..32).filter(|&l| a[w + l] == a[i]).fold(0u32, |m, l| m | (1 << l))
        })
        .collect();
    ck.cmp(
        "match.any.sync.b32",
        run32("\tmatch.any.sync.b32 \t%r20, %r10, -1;", &a, &a, &a),
        &want,
        |i| format!("lane {} value {}", i % 32, a[i]),
        |g, w| g == w,
    );
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let w = i / 32 * 32;
            let all = (0..32).all(|l| a[w + l] == a[w]);
            if all {
                u32::MAX
            } else {
                0
            }
        })
        .collect();
    ck.cmp(
        "match.all.sync.b32 d",
        run32("\tmatch.all.sync.b32 \t%r20|%p1, %r10, -1;", &a, &a, &a),
        &want,
        |i| format!("warp {}", i / 32),
        |g, w| g == w,
    );
    let wantp: Vec<u32> = want.iter().map(|&m| (m != 0) as u32).collect();
    ck.cmp(
        "match.all.sync.b32 p",
        run32("\tmatch.all.sync.b32 \t%r21|%p1, %r10, -1;\n\tselp.u32 \t%r20, 1, 0, %p1;", &a, &a, &a),
        &wantp,
        |i| format!("warp {}", i / 32),
        |g, w| g == w,
    );
    ck.finish();
}

#[test]
fn redux_sync_ops() {
    let mut r = rng(5);
    let a: Vec<u32> = (0..N).map(|i| if i % 3 == 0 { r.gen() } else { r.gen_range(0..1000) }).collect();
    let mut ck = Check::new();
    type R = fn(&[u32]) -> u32;
    let ops: [(&str, R); 7] = [
        ("add.u32", |w| w.iter().fold(0u32, |s, &x| s.wrapping_add(x))),
        ("add.s32", |w| w.iter().fold(0u32, |s, &x| s.wrapping_add(x))),
        ("min.u32", |w| *w.iter().min().unwrap()),
        ("max.s32", |w| w.iter().map(|&x| x as i32).max().unwrap() as u32),
        ("and.b32", |w| w.iter().fold(u32::MAX, |s, &x| s & x)),
        ("or.b32", |w| w.iter().fold(0, |s, &x| s | x)),
        ("xor.b32", |w| w.iter().fold(0, |s, &x| s ^ x)),
    ];
    for (op, f) in ops {
        let want: Vec<u32> = (0..N).map(|i| f(&a[i / 32 * 32..i / 32 * 32 + 32])).collect();
        ck.cmp(
            &format!("redux.sync.{op}"),
            run32(&format!("\tredux.sync.{op} \t%r20, %r10, -1;"), &a, &a, &a),
            &want,
            |i| format!("warp {}", i / 32),
            |g, w| g == w,
        );
    }
    // partial membermask inside a branch: the even lanes reduce among themselves
    let body = "\tmov.u32 \t%r21, %laneid;\n\tand.b32 \t%r22, %r21, 1;\n\tsetp.ne.u32 \t%p1, %r22, 0;\n\tmov.u32 \t%r20, 7;\n\t@%p1 bra \t$L__ODD;\n\tredux.sync.add.u32 \t%r20, %r10, 1431655765;\n$L__ODD:";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            if i % 2 == 1 {
                return 7;
            }
            let w = i / 32 * 32;
            (0..32).step_by(2).fold(0u32, |s, l| s.wrapping_add(a[w + l]))
        })
        .collect();
    ck.cmp(
        "redux.sync.add.u32 (even lanes, mask 0x55555555)",
        run32(body, &a, &a, &a),
        &want,
        |i| format!("lane {}", i % 32),
        |g, w| g == w,
    );
    // lane-mask special registers
    let body = "\tmov.u32 \t%r21, %lanemask_lt;\n\tmov.u32 \t%r22, %laneid;\n\tshl.b32 \t%r22, %r22, 8;\n\tor.b32 \t%r20, %r21, %r22;";
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let l = (i % 32) as u32;
            ((1u64 << l) - 1) as u32 | (l << 8)
        })
        .collect();
    ck.cmp("%lanemask_lt / %laneid", run32(body, &a, &a, &a), &want, |i| format!("lane {}", i % 32), |g, w| g == w);
    ck.finish();
}

/// Collectives with a partial membermask inside a branch: lanes 0-15 shuffle among themselves
/// (width 16, so no lane reads outside the mask) and vote; lanes 16-31 take another path.
#[test]
fn shfl_and_vote_with_partial_membermask_in_a_branch() {
    let mut r = rng(6);
    let a: Vec<u32> = (0..N).map(|_| r.gen()).collect();
    let body = "\tmov.u32 \t%r21, %laneid;\n\tsetp.lt.u32 \t%p1, %r21, 16;\n\tmov.u32 \t%r20, 99;\n\t@!%p1 bra \t$L__HI;\n\tshfl.sync.bfly.b32 \t%r22, %r10, 5, 4127, 65535;\n\tshfl.sync.down.b32 \t%r23, %r10, 3, 4127, 65535;\n\tsetp.gt.u32 \t%p2, %r10, %r22;\n\tvote.sync.ballot.b32 \t%r24, %p2, 65535;\n\txor.b32 \t%r20, %r22, %r23;\n\tadd.s32 \t%r20, %r20, %r24;\n\tbra.uni \t$L__END;\n$L__HI:\n\tshfl.sync.idx.b32 \t%r20, %r10, 2, 4127, -65536;\n$L__END:";
    // c = 4127 = 0x101f: segmask 0x10 (width 16), cval 31
    let want: Vec<u32> = (0..N)
        .map(|i| {
            let w = i / 32 * 32;
            let lane = i % 32;
            if lane < 16 {
                let bf = a[w + (lane ^ 5)];
                let dn = if lane + 3 <= 15 { a[w + lane + 3] } else { a[i] };
                let ballot = (0..16).filter(|&l| a[w + l] > a[w + (l ^ 5)]).fold(0u32, |m, l| m | (1 << l));
                (bf ^ dn).wrapping_add(ballot)
            } else {
                a[w + 16 + 2]
            }
        })
        .collect();
    let mut ck = Check::new();
    ck.cmp("partial-mask shfl/vote", run32(body, &a, &a, &a), &want, |i| format!("lane {}", i % 32), |g, w| g == w);
    ck.finish();
}

/// The packed control word c can come from a register (uniform per warp here: one width per
/// warp), and b can be a per-lane register, for every mode.
#[test]
fn shfl_sync_with_register_control_word() {
    let mut r = rng(7);
    let a: Vec<u32> = (0..N).map(|_| r.gen()).collect();
    let b: Vec<u32> = (0..N).map(|_| r.gen_range(0..34)).collect();
    let widths = [32u32, 16, 8, 4, 2, 1, 16, 8];
    let mut ck = Check::new();
    for mode in ["up", "down", "bfly", "idx"] {
        let c: Vec<u32> = (0..N).map(|i| ((32 - widths[i / 32]) << 8) | if mode == "up" { 0 } else { 0x1f }).collect();
        let mut want = vec![0u32; N];
        for w in 0..N / 32 {
            let (d, _) = shfl_ref(mode, &a[w * 32..w * 32 + 32], &b[w * 32..w * 32 + 32], c[w * 32]);
            want[w * 32..w * 32 + 32].copy_from_slice(&d);
        }
        let body = format!("\tshfl.sync.{mode}.b32 \t%r20, %r10, %r11, %r12, -1;");
        ck.cmp(
            &format!("shfl.sync.{mode} (register c)"),
            run32(&body, &a, &b, &c),
            &want,
            |i| format!("warp {} lane {} b={}", i / 32, i % 32, b[i]),
            |g, w| g == w,
        );
    }
    ck.finish();
}
