//! Thread block clusters in the emulator (sm_90a): `__cluster_dims__`, the cluster special
//! registers, distributed shared memory (`mapa` + `ld.shared::cluster`) and
//! `barrier.cluster.arrive/wait`, on nvcc's own PTX (src/testdata/cluster_probe.{cu,ptx});
//! every rule the probe's BUG_ kernels break is reported, in every completion mode.
mod common;
use common::*;
use fusebert_emu::arch::{Arch, AsyncMode};
use fusebert_emu::{Emulator, EmulatorOptions, LaunchDims, Param};

const MODES: [AsyncMode; 5] =
    [AsyncMode::Lazy, AsyncMode::Eager, AsyncMode::Random(1), AsyncMode::Random(2), AsyncMode::Random(3)];
const PROBE: &str = include_str!("../src/testdata/cluster_probe.ptx");

fn emu90(mode: AsyncMode) -> Emulator {
    let emu = Emulator::new(EmulatorOptions { arch: Arch::Sm90, async_mode: mode, ..Default::default() }).unwrap();
    ptxas_check(PROBE, "sm_90a");
    emu.load_module("m", PROBE).unwrap();
    emu
}

fn grid(ctas: u32) -> LaunchDims {
    LaunchDims { grid: (ctas, 1, 1), block: (64, 1, 1), shared_mem_bytes: 0 }
}

fn run(emu: &Emulator, kernel: &str, ctas: u32) -> fusebert_emu::Result<(Vec<f32>, Vec<u32>)> {
    let out = emu.alloc(ctas as usize * 64 * 4)?;
    let info = emu.alloc(ctas as usize * 5 * 4)?;
    emu.memset(out, 0xff, ctas as usize * 64 * 4)?;
    emu.launch("m", kernel, &grid(ctas), &[Param::Ptr(out), Param::Ptr(info)])?;
    let mut o = vec![0u8; ctas as usize * 64 * 4];
    let mut i = vec![0u8; ctas as usize * 5 * 4];
    emu.read(out, &mut o)?;
    emu.read(info, &mut i)?;
    Ok((bytemuck::cast_slice(&o).to_vec(), bytemuck::cast_slice(&i).to_vec()))
}

fn finding<T>(r: fusebert_emu::Result<T>) -> String {
    match r {
        Ok(_) => panic!("the planted bug was NOT detected"),
        Err(e) => e.to_string(),
    }
}

/// Each CTA reads its right neighbour's shared memory in its cluster of 4; the special
/// registers give rank, cluster size and cluster index.
#[test]
fn cluster_ctas_read_each_others_shared_memory() {
    for mode in MODES {
        let emu = emu90(mode);
        let (out, info) = run(&emu, "cluster_exchange", 12).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        for b in 0..12u32 {
            let (rank, cluster) = (b % 4, b / 4);
            for t in 0..64u32 {
                assert_eq!(out[(b * 64 + t) as usize], 1000.0 * ((rank + 1) % 4) as f32 + t as f32, "{mode:?} CTA {b}");
            }
            // %cluster_nctarank, %clusterid.x, %nclusterid.x, %cluster_ctaid.x, %is_explicit_cluster
            assert_eq!(&info[b as usize * 5..b as usize * 5 + 5], &[4, cluster, 3, rank, 1], "{mode:?} CTA {b}");
        }
        let c = emu.last_counters().unwrap();
        assert_eq!(c.dsmem_bytes, 12 * 64 * 4, "{mode:?}");
        assert_eq!(c.barriers, 12 * 2 * 2, "{mode:?}: two cluster barriers per warp");
    }
}

#[test]
fn a_grid_that_is_not_whole_clusters_is_refused() {
    let emu = emu90(AsyncMode::Lazy);
    let r = finding(run(&emu, "cluster_exchange", 6));
    assert!(r.contains("not a whole number of clusters"), "{r}");
}

/// Reading a peer's word it wrote with no cluster barrier in between is a race.
#[test]
fn a_peer_read_without_a_cluster_barrier_is_a_race() {
    for mode in MODES {
        // the peer has not written yet (reported as such), or has, in the same interval
        let r = finding(run(&emu90(mode), "BUG_no_barrier", 4));
        assert!(r.contains("same cluster-barrier interval") || r.contains("never written"), "{mode:?}: {r}");
        assert!(r.contains("CTA rank"), "{mode:?}: {r}");
    }
    // without the uninitialised-read check, the race itself is reported
    for mode in MODES {
        let emu = Emulator::new(EmulatorOptions {
            arch: Arch::Sm90,
            async_mode: mode,
            check_uninit: false,
            ..Default::default()
        })
        .unwrap();
        emu.load_module("m", PROBE).unwrap();
        let r = finding(run(&emu, "BUG_no_barrier", 4));
        assert!(r.contains("same cluster-barrier interval"), "{mode:?}: {r}");
    }
}

/// Overwriting a word peers may still be reading (no barrier after their reads) is a race.
#[test]
fn overwriting_what_peers_read_in_the_same_interval_is_a_race() {
    for mode in MODES {
        let r = finding(run(&emu90(mode), "BUG_overwrite", 4));
        assert!(r.contains("same cluster-barrier interval"), "{mode:?}: {r}");
    }
}

/// A CTA that exits while a peer still reads its shared memory is reported at the read.
#[test]
fn reading_the_shared_memory_of_an_exited_cta_is_reported() {
    for mode in MODES {
        let r = finding(run(&emu90(mode), "BUG_exit_early", 4));
        assert!(r.contains("which has exited"), "{mode:?}: {r}");
    }
}

/// A warp that skips the cluster barrier and waits for the warps held there is a deadlock,
/// reported with the cluster's arrival count rather than hanging.
#[test]
fn a_skipped_cluster_barrier_is_a_reported_deadlock() {
    let emu = emu90(AsyncMode::Lazy);
    let out = emu.alloc(2 * 64 * 4).unwrap();
    let r = finding(emu.launch("m", "BUG_skipped_barrier", &grid(2), &[Param::Ptr(out)]));
    assert!(r.contains("barrier.cluster") && r.contains("never completes"), "{r}");
}

/// A cluster barrier is a barrier for the CTA's own threads too (no false race between warps,
/// or lanes of a warp, that it orders).
#[test]
fn a_cluster_barrier_orders_the_ctas_own_threads() {
    for mode in MODES {
        let emu = emu90(mode);
        let out = emu.alloc(4 * 64 * 4).unwrap();
        emu.launch("m", "cluster_orders_own_cta", &grid(4), &[Param::Ptr(out)])
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let mut o = vec![0u8; 4 * 64 * 4];
        emu.read(out, &mut o).unwrap();
        let o: &[f32] = bytemuck::cast_slice(&o);
        for b in 0..4 {
            for t in 0..64 {
                assert_eq!(o[b * 64 + t], (63 - t) as f32 + 100.0 * (b % 2) as f32, "{mode:?}");
            }
        }
    }
}
