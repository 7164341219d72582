//! Blocks that wait on each other through global memory (src/exec/resident.rs), on nvcc's own
//! PTX (src/testdata/coresident_probe.{cu,ptx}): a grid-wide barrier, a ticket chain and a
//! spin lock run co-scheduled and give their answers in every completion mode; a grid too
//! large to be resident at once, and a chain that relies on blocks starting in order, are
//! reported as deadlocks (they hang a GPU), never hang the emulator.
mod common;
use common::*;
use fusebert_emu::arch::{Arch, AsyncMode};
use fusebert_emu::{Emulator, EmulatorOptions, LaunchDims, Param};

const MODES: [AsyncMode; 5] =
    [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(1), AsyncMode::Random(2), AsyncMode::Random(3)];
const PROBE: &str = include_str!("../src/testdata/coresident_probe.ptx");

fn emu(mode: AsyncMode, resident: Option<u32>) -> Emulator {
    let emu = Emulator::new(EmulatorOptions {
        arch: Arch::Sm80,
        async_mode: mode,
        resident_blocks: resident,
        ..Default::default()
    })
    .unwrap();
    emu.load_module("m", PROBE).unwrap();
    emu
}

fn dims(blocks: u32, threads: u32) -> LaunchDims {
    LaunchDims { grid: (blocks, 1, 1), block: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// A zeroed device buffer of `n` words.
fn zeros(emu: &Emulator, n: usize) -> u64 {
    let p = emu.alloc(n * 4).unwrap();
    emu.memset(p, 0, n * 4).unwrap();
    p
}

fn words(emu: &Emulator, p: u64, n: usize) -> Vec<u32> {
    let mut b = vec![0u8; n * 4];
    emu.read(p, &mut b).unwrap();
    bytemuck::cast_slice(&b).to_vec()
}

#[test]
fn the_probe_is_valid_ptx() {
    ptxas_check(PROBE, "sm_80");
}

/// 12 blocks meet at a grid-wide barrier and each sums what all published: 78 everywhere. The
/// launch counts as co-scheduled (every block resident at once on an A100's 108 SMs).
#[test]
fn a_grid_wide_barrier_completes_in_every_mode() {
    let (blocks, threads) = (12u32, 64u32);
    for mode in MODES {
        let emu = emu(mode, None);
        let (published, count) = (zeros(&emu, blocks as usize), zeros(&emu, 1));
        let sums = emu.alloc((blocks * threads) as usize * 4).unwrap();
        emu.memset(sums, 0xff, (blocks * threads) as usize * 4).unwrap();
        emu.launch(
            "m",
            "grid_barrier",
            &dims(blocks, threads),
            &[Param::Ptr(published), Param::Ptr(count), Param::Ptr(sums)],
        )
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let want = blocks * (blocks + 1) / 2;
        assert!(words(&emu, sums, (blocks * threads) as usize).iter().all(|&s| s == want), "{mode:?}");
        assert_eq!(words(&emu, count, 1)[0], blocks, "{mode:?}");
    }
}

/// The same barrier with more blocks than can be resident (4 at once, 8 blocks): the first 4
/// wait for 4 that never start. A GPU hangs; the emulator reports it, naming the poll.
#[test]
fn a_grid_barrier_over_more_blocks_than_fit_is_a_deadlock() {
    for mode in MODES {
        let emu = emu(mode, Some(4));
        let (published, count, sums) = (zeros(&emu, 8), zeros(&emu, 1), zeros(&emu, 8 * 32));
        let e = emu
            .launch("m", "grid_barrier", &dims(8, 32), &[Param::Ptr(published), Param::Ptr(count), Param::Ptr(sums)])
            .expect_err("the planted deadlock was NOT detected")
            .to_string();
        assert!(e.contains("deadlock") || e.contains("Deadlock"), "{mode:?}: {e}");
        assert!(e.contains("4 of the grid's 8 blocks are resident"), "{mode:?}: {e}");
        assert!(e.contains("4 not yet started"), "{mode:?}: {e}");
        assert!(e.contains("PTX line") && e.contains("coresident_probe.cu:"), "{mode:?}: {e}");
    }
}

/// Tickets make the chain correct in any start order, even with 2 blocks resident at a time:
/// prefix[t] = (t + 1)(t + 2) / 2.
#[test]
fn a_ticket_chain_is_correct_in_any_start_order() {
    let blocks = 24usize;
    for mode in MODES {
        for resident in [None, Some(2)] {
            let emu = emu(mode, resident);
            let (ticket, ready, prefix) = (zeros(&emu, 1), zeros(&emu, blocks), zeros(&emu, blocks));
            emu.launch(
                "m",
                "ticket_chain",
                &dims(blocks as u32, 32),
                &[Param::Ptr(ticket), Param::Ptr(ready), Param::Ptr(prefix)],
            )
            .unwrap_or_else(|e| panic!("{mode:?} {resident:?}: {e}"));
            let p = words(&emu, prefix, blocks);
            for (t, &v) in p.iter().enumerate() {
                assert_eq!(v as usize, (t + 1) * (t + 2) / 2, "{mode:?} {resident:?} tile {t}");
            }
        }
    }
}

/// The blockIdx chain works when blocks start in order (lazy completion) but relies on it:
/// random completion starts them in a shuffled order, and with 2 resident both wait for
/// blocks that have not started.
#[test]
fn a_chain_that_relies_on_start_order_is_caught_by_random_order() {
    let blocks = 16usize;
    let run = |mode: AsyncMode| {
        let emu = emu(mode, Some(2));
        let (ready, prefix) = (zeros(&emu, blocks), zeros(&emu, blocks));
        let r =
            emu.launch("m", "BUG_blockidx_chain", &dims(blocks as u32, 32), &[Param::Ptr(ready), Param::Ptr(prefix)]);
        (r, words(&emu, prefix, blocks))
    };
    let (ok, p) = run(AsyncMode::Lazy);
    ok.unwrap();
    assert_eq!(p[blocks - 1] as usize, blocks * (blocks + 1) / 2);
    let e = run(AsyncMode::Random(1)).0.expect_err("the planted start-order reliance was NOT detected").to_string();
    assert!(e.contains("2 of the grid's 16 blocks are resident"), "{e}");
    assert!(e.contains("BUG_blockidx_chain"), "{e}");
}

/// A spin lock on atom.cas serialises a plain read-modify-write: every block's addition lands.
#[test]
fn a_cas_spin_lock_serialises_the_blocks() {
    let blocks = 20u32;
    for mode in MODES {
        for resident in [None, Some(3)] {
            let emu = emu(mode, resident);
            let (lock, total) = (zeros(&emu, 1), zeros(&emu, 1));
            emu.launch("m", "cas_lock", &dims(blocks, 32), &[Param::Ptr(lock), Param::Ptr(total)])
                .unwrap_or_else(|e| panic!("{mode:?} {resident:?}: {e}"));
            assert_eq!(words(&emu, total, 1)[0], blocks * (blocks + 1) / 2, "{mode:?} {resident:?}");
            assert_eq!(words(&emu, lock, 1)[0], 0, "{mode:?} {resident:?}");
        }
    }
}

/// Resident capacity from the architecture: SMs x blocks per SM, by threads and shared memory
/// (1 KiB of it reserved per block).
#[test]
fn resident_capacity_follows_the_sm_limits() {
    let h100 = Arch::Sm90.sm_limits();
    assert_eq!(h100.sms, 132);
    // the _sm90 GEMMs: 384 threads, 227 KiB of shared memory: one per SM
    assert_eq!(h100.blocks_per_sm(384, 227 * 1024), 1);
    // 256 threads without shared memory: 8 by threads
    assert_eq!(h100.blocks_per_sm(256, 0), 8);
    // 32 threads: the 32-blocks limit
    assert_eq!(h100.blocks_per_sm(32, 0), 32);
    let a100 = Arch::Sm80.sm_limits();
    assert_eq!((a100.sms, a100.blocks_per_sm(128, 40 * 1024)), (108, 4));
}
