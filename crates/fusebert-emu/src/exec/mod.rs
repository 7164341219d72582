//! The executor: a launch is a grid of blocks (run in parallel with rayon, each independently);
//! a block is a set of warps of 32 lanes run in lockstep with an active mask and a SIMT
//! reconvergence stack (reconvergence at the immediate post-dominator of each branch). Warps of
//! a block run one at a time until they block on a barrier, exit, or use up a time slice.
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::alu::{self, ext};
use super::counters::Counters;
use super::ir::*;
use super::memory::*;
use crate::error::Error;
use crate::finding::{Finding, FindingKind};
use crate::state::*;
/// The launch types keep their `exec::` paths.
pub use crate::state::{ExecOpts, Launch, FULL};

pub(crate) mod cluster;
mod hopper;
mod inst;
mod resident;
mod wgmma;

/// Instructions a warp runs before the scheduler moves to the next warp (lets spin-waits on
/// shared flags make progress, and bounds the work between deadlock checks).
const SLICE: u64 = 1 << 16;

/// Instruction classes for counters.
mod class {
    pub const INT: u8 = 0;
    pub const FP32: u8 = 1;
    pub const FP16: u8 = 2;
    pub const FP64: u8 = 3;
    pub const TENSOR: u8 = 4;
    pub const MEM: u8 = 5;
    pub const CTRL: u8 = 6;
    pub const SPECIAL: u8 = 7;
}

fn classify(i: &Inst) -> u8 {
    use class::*;
    match i.op {
        Op::Ld
        | Op::St
        | Op::Atom
        | Op::Red
        | Op::CpAsync
        | Op::CpAsyncCommit
        | Op::CpAsyncWait
        | Op::Ldmatrix
        | Op::Stmatrix
        | Op::Prefetch => MEM,
        Op::Mma => TENSOR,
        Op::Wmma if i.sub == sub::WMMA_MMA => TENSOR,
        Op::Wmma => MEM,
        Op::Bra | Op::Ret | Op::Exit | Op::Call | Op::Bar | Op::BarRed | Op::BarWarp | Op::Membar | Op::Trap => CTRL,
        Op::Mbar | Op::FenceProxyAsync | Op::SetMaxNReg => CTRL,
        Op::BulkTensor | Op::BulkGroup => MEM,
        Op::Wgmma => TENSOR,
        Op::Elect | Op::Mapa => SPECIAL,
        Op::ClusterBar => CTRL,
        Op::Shfl | Op::Vote | Op::Match | Op::Redux | Op::Activemask | Op::ReadClock | Op::Printf => SPECIAL,
        Op::Rcp | Op::Sqrt | Op::Rsqrt | Op::Ex2 | Op::Lg2 | Op::Sin | Op::Cos | Op::Tanh if i.ty != Ty::F64 => SPECIAL,
        _ => {
            let t = if matches!(i.op, Op::Cvt | Op::CvtPack) {
                if i.ty.is_float() {
                    i.ty
                } else {
                    i.ty2
                }
            } else {
                i.ty
            };
            match t {
                Ty::F32 => FP32,
                Ty::F16 | Ty::F16x2 | Ty::BF16 | Ty::BF16x2 => FP16,
                Ty::F64 => FP64,
                _ => INT,
            }
        }
    }
}

impl<'a> Launch<'a> {
    #[allow(clippy::too_many_arguments)] // the launch geometry, module and options travel together into the block runner
    pub fn new(
        module: &'a Module,
        kernel: &'a Kernel,
        view: &'a AllocView<'a>,
        params: &'a [u8],
        const_bank: &'a [u8],
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        dyn_smem: u32,
        global_var_base: u64,
        opts: ExecOpts,
    ) -> Launch<'a> {
        let dyn_off = module.dyn_shared_offset(kernel);
        let smem_total = dyn_off + dyn_smem;
        let nthreads = block.0 * block.1 * block.2;
        let nwarps = nthreads.div_ceil(32);
        let mut template = vec![0u64; kernel.nslots as usize * 32];
        for &(slot, v, kind) in &kernel.consts {
            let v = match kind {
                RELOC_GLOBAL => v.wrapping_add(global_var_base),
                RELOC_DYN_SHARED => v.wrapping_add(dyn_off as u64),
                _ => v,
            };
            template[slot as usize * 32..slot as usize * 32 + 32].fill(v);
        }
        let classes = kernel.insts.iter().map(classify).collect();
        let reg_use = opts.uninit.then(|| super::regdef::RegUse::new(kernel));
        let global_ww = opts.races && !kernel.insts.iter().any(|i| i.op == Op::Membar);
        Launch {
            module,
            kernel,
            view,
            params,
            const_bank,
            grid,
            block,
            dyn_smem,
            global_var_base,
            opts,
            dyn_off,
            smem_total,
            nthreads,
            nwarps,
            template,
            classes,
            reg_use,
            global_ww,
            global_writes: std::sync::Mutex::new(Vec::new()),
            epoch: Default::default(),
            coscheduled: kernel.polls_global && !cluster::uses_clusters(kernel),
            // S17 is about TMA reads (and TMA-store overwrites) of the kernel's own generic
            // writes: only kernels with TMA / bulk copies keep the record
            proxy_writes: kernel
                .insts
                .iter()
                .any(|i| i.op == Op::BulkTensor)
                .then(crate::async_proxy::ProxyWrites::new_shared),
            alloc_hints: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
            profile: Default::default(),
            printed: std::sync::Mutex::new(String::new()),
        }
    }

    /// Runs every block; returns the summed counters or the error of the lowest failing block.
    pub fn run(&self) -> Result<Counters, Error> {
        // a unit of work per block, or per cluster for kernels that use clusters (its CTAs run
        // together on one host thread)
        if self.coscheduled {
            return self.run_resident();
        }
        let clustered = cluster::uses_clusters(self.kernel);
        let nb = self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64
            / if clustered { cluster::ranks(self.kernel) as u64 } else { 1 };
        let first_fail = AtomicU64::new(u64::MAX);
        let run_one = |b: u64| -> Result<Counters, (u64, Error)> {
            if b > first_fail.load(Ordering::Relaxed) {
                return Ok(Counters::default());
            }
            let r = if clustered { self.run_cluster(b) } else { self.run_block(b) };
            if r.is_err() {
                first_fail.fetch_min(b, Ordering::Relaxed);
            }
            r.map_err(|e| (b, e))
        };
        let merge = |a: Result<Counters, (u64, Error)>, b: Result<Counters, (u64, Error)>| match (a, b) {
            (Ok(mut x), Ok(y)) => {
                x.add(&y);
                Ok(x)
            }
            (Err(e1), Err(e2)) => Err(if e1.0 <= e2.0 { e1 } else { e2 }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let res = if self.opts.serial || nb == 1 {
            let mut acc = Ok(Counters::default());
            for b in 0..nb {
                acc = merge(acc, run_one(b));
                if acc.is_err() {
                    break;
                }
            }
            acc
        } else {
            (0..nb).into_par_iter().map(run_one).reduce(|| Ok(Counters::default()), merge)
        };
        let counters = res.map_err(|(_, e)| e)?;
        if self.global_ww {
            let all = std::mem::take(
                &mut *self.global_writes.lock().map_err(|_| Error::Emulator("write log poisoned".into()))?,
            );
            if let Some((a, b)) = super::global_race::find_overlap(all) {
                return Err(self.global_race_error(&a, &b));
            }
        }
        Ok(counters)
    }

    fn global_race_error(&self, a: &super::global_race::Written, b: &super::global_race::Written) -> Error {
        let lo = a.start.max(b.start);
        let site = |w: &super::global_race::Written| {
            format!(
                "block ({},{},{}), thread ({},{},{}), PTX line {}{}",
                w.block[0],
                w.block[1],
                w.block[2],
                w.thread[0],
                w.thread[1],
                w.thread[2],
                w.line,
                self.cu_loc_of(w.cu)
            )
        };
        // located at the later store (`b`); the detail names the earlier one
        Finding {
            kind: FindingKind::GlobalWriteRace,
            kernel: self.kernel.name.clone(),
            module: self.module.name.clone(),
            block: (b.block[0], b.block[1], b.block[2]),
            thread: Some((b.thread[0], b.thread[1], b.thread[2])),
            warp: None,
            ptx_line: Some(b.line),
            cu_location: self.cu_location(b.cu),
            detail: format!(
                "global byte {lo:#x} is also written by {} with no ordering between the two blocks (blocks of a \
                 grid run in any order; the result depends on which writes last)",
                site(a)
            ),
        }
        .into()
    }

    fn run_block(&self, b: u64) -> Result<Counters, Error> {
        // an emulator bug must surface as an error naming the kernel, not abort the caller
        self.guarded(&format!(" block {b}"), || self.run_block_inner(b))
    }

    /// `f`, with a panic inside it (an emulator bug) turned into an error naming the kernel and
    /// `at`: it must surface as an error, not abort the caller.
    pub(crate) fn guarded<T>(&self, at: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Emulator(format!("internal emulator error in kernel `{}`{at}: {what}", self.kernel.name)))
        })
    }

    fn run_block_inner(&self, b: u64) -> Result<Counters, Error> {
        let gx = self.grid.0 as u64;
        let gy = self.grid.1 as u64;
        let ctaid = [(b % gx) as u32, ((b / gx) % gy) as u32, (b / (gx * gy)) as u32];
        let mut blk = Block::new(self, ctaid);
        blk.run()?;
        Ok(self.finish_block(&mut blk))
    }

    /// A finished block's counters, with its profile and global writes handed to the launch.
    pub(crate) fn finish_block(&self, blk: &mut Block) -> Counters {
        if let Some(p) = &blk.prof {
            if let Ok(mut all) = self.profile.lock() {
                all.add(&p.finish());
            }
        }
        if self.global_ww && !blk.gw.ranges.is_empty() {
            if let Ok(mut all) = self.global_writes.lock() {
                all.append(&mut blk.gw.ranges);
            }
        }
        let k = blk.class_count;
        let c = &mut blk.c;
        c.inst_integer += k[class::INT as usize];
        c.inst_fp32 += k[class::FP32 as usize];
        c.inst_fp16 += k[class::FP16 as usize];
        c.inst_fp64 += k[class::FP64 as usize];
        c.inst_tensor += k[class::TENSOR as usize];
        c.inst_memory += k[class::MEM as usize];
        c.inst_control += k[class::CTRL as usize];
        c.inst_special += k[class::SPECIAL as usize];
        std::mem::take(&mut blk.c)
    }
}

/// How the scheduler goes on after an instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    /// The next instruction of the same frame.
    Next,
    /// The frame stack changed (call, return, exit): pick the frame to run again.
    Leave,
    /// A branch: pick the frame to run again, and count it against the time slice.
    Branch,
    /// The warp waits at a barrier: run the other warps.
    Wait,
    /// An mbarrier wait failed: run the other warps (the warp stays runnable).
    Yield,
}

/// rpc of a frame that runs a called device function (never equal to a pc).
const CALL_RPC: u32 = u32::MAX - 1;

thread_local! {
    /// Register files of finished blocks, reused by the next block on this worker thread (no
    /// allocation or page faults per block; registers are re-zeroed, constants re-copied).
    static REG_POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The shared memory and its shadow of the last finished block on this worker thread, reused
    /// the same way (refilled, not reallocated).
    static SHARED_POOL: std::cell::RefCell<(Vec<u8>, Vec<ShWord>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A block's shared memory (poisoned with 0xFF: NaN in f16/f32) and, when checked, its shadow.
fn take_shared(bytes: usize, checks: bool) -> (Vec<u8>, Vec<ShWord>) {
    let (mut shared, mut shadow) = SHARED_POOL.with(|p| std::mem::take(&mut *p.borrow_mut()));
    shared.clear();
    shared.resize(bytes, 0xFF);
    shadow.clear();
    if checks {
        shadow.resize(bytes.div_ceil(4), ShWord::default());
    }
    (shared, shadow)
}

/// A register file for one warp: registers zeroed, constant slots from the launch template.
fn take_regs(l: &Launch) -> Vec<u64> {
    let n = l.template.len();
    let r0 = l.kernel.nregs as usize * 32;
    let mut regs = REG_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    regs.clear();
    regs.resize(r0.min(n), 0);
    regs.extend_from_slice(&l.template[r0.min(n)..]);
    regs
}

impl Drop for Block<'_, '_> {
    fn drop(&mut self) {
        let buffers = (std::mem::take(&mut self.shared), std::mem::take(&mut self.shadow));
        SHARED_POOL.with(|p| *p.borrow_mut() = buffers);
        let warps = std::mem::take(&mut self.warps);
        REG_POOL.with(|p| {
            let mut p = p.borrow_mut();
            for w in warps {
                if p.len() < 64 {
                    p.push(w.regs);
                }
            }
        });
    }
}

impl<'l, 'a> Block<'l, 'a> {
    fn new(l: &'l Launch<'a>, ctaid: [u32; 3]) -> Self {
        let k = l.kernel;
        let checks = l.opts.races || l.opts.uninit;
        let cd = k.cluster.unwrap_or((1, 1, 1));
        let mut warps = Vec::with_capacity(l.nwarps as usize);
        for w in 0..l.nwarps {
            let mut regs = take_regs(l);
            let nvalid = (l.nthreads - w * 32).min(32);
            let valid = if nvalid == 32 { FULL } else { (1u32 << nvalid) - 1 };
            for &(slot, sp) in &k.specials {
                let base = slot as usize * 32;
                for lane in 0..32u32 {
                    let lin = w * 32 + lane;
                    let tid = [lin % l.block.0, (lin / l.block.0) % l.block.1, lin / (l.block.0 * l.block.1)];
                    let dims = |d: u8, v: [u32; 3]| v[d as usize] as u64;
                    regs[base + lane as usize] = match sp {
                        Special::Tid(d) => dims(d, tid),
                        Special::Ntid(d) => dims(d, [l.block.0, l.block.1, l.block.2]),
                        Special::Ctaid(d) => dims(d, ctaid),
                        Special::Nctaid(d) => dims(d, [l.grid.0, l.grid.1, l.grid.2]),
                        Special::LaneId => lane as u64,
                        Special::WarpId => w as u64,
                        Special::NWarpId => l.nwarps as u64,
                        Special::LanemaskEq => 1u64 << lane,
                        Special::LanemaskLe => ((2u64 << lane) - 1) & 0xffff_ffff,
                        Special::LanemaskLt => (1u64 << lane) - 1,
                        Special::LanemaskGe => (0xffff_ffffu64 << lane) & 0xffff_ffff,
                        Special::LanemaskGt => (0xffff_fffeu64 << lane) & 0xffff_ffff,
                        Special::DynSmem => l.dyn_smem as u64,
                        Special::TotalSmem => l.smem_total as u64,
                        Special::SmId | Special::GridId => 0,
                        Special::ClusterCtaRank => cluster::rank_of(ctaid, cd) as u64,
                        Special::ClusterNCtaRank => (cd.0 * cd.1 * cd.2) as u64,
                        Special::ClusterId(d) => (ctaid[d as usize] / [cd.0, cd.1, cd.2][d as usize]) as u64,
                        Special::NClusterId(d) => {
                            ([l.grid.0, l.grid.1, l.grid.2][d as usize] / [cd.0, cd.1, cd.2][d as usize]) as u64
                        }
                        Special::ClusterCtaId(d) => (ctaid[d as usize] % [cd.0, cd.1, cd.2][d as usize]) as u64,
                        Special::ClusterNCtaId(d) => [cd.0, cd.1, cd.2][d as usize] as u64,
                        Special::IsExplicitCluster => l.kernel.cluster.is_some() as u64,
                        // one emulated SM (blocks run in parallel on host threads instead)
                        Special::NSmId => 1,
                    };
                }
            }
            warps.push(Warp {
                id: w,
                regs,
                def: if l.opts.uninit { vec![0; k.nregs as usize] } else { Vec::new() },
                stack: vec![Frame { pc: 0, mask: valid, rpc: EXIT_PC }],
                valid,
                exited: !valid,
                retmask: 0,
                calls: Vec::new(),
                state: WState::Run,
                steps: 0,
                sync_step: 0,
                pending: Vec::new(),
                committed: [0; 32],
                spin: NOT_SPINNING,
                test_fail: (u32::MAX, 0),
                wg_inflight: false,
                bar_id: 0,
                bar_count: 0,
                bar_pc: 0,
                bar_pred: 0,
                cl_arrived: 0,
                cl_phase: [0; 32],
                poll: Default::default(),
            });
        }
        let local_total = k.local_bytes as usize * l.nthreads as usize;
        let (shared, shadow) = take_shared(l.smem_total as usize, checks);
        Block {
            l,
            ctaid,
            // poison: 0xFF reads as NaN in f16/f32
            shared,
            shadow,
            local: vec![0xFF; local_total],
            local_init: if l.opts.uninit { vec![0; local_total] } else { Vec::new() },
            epoch: 1,
            c: Counters::default(),
            last_alloc: 0,
            alloc_hint: std::array::from_fn(|k| l.alloc_hints[k].load(Ordering::Relaxed)),
            clock: 0,
            gw: Default::default(),
            arrivals: [0; 16],
            class_count: [0; 8],
            prof: l.opts.profile.then(crate::profile::BlockProfile::start),
            warps,
            cl: None,
            sliced: false,
            hop: k.uses_async.then(|| {
                let b = ctaid[0] as u64 + l.grid.0 as u64 * (ctaid[1] as u64 + l.grid.1 as u64 * ctaid[2] as u64);
                Box::new(crate::async_proxy::HopState::new(l.opts.async_mode, l.nthreads, l.nwarps, l.smem_total, b))
            }),
        }
    }

    /// Runs the block until every warp is done (true) or, in a cluster, until every warp that
    /// is not done waits for the cluster's other CTAs (false: run them, then call again).
    pub(crate) fn run(&mut self) -> Result<bool, Error> {
        let mut warps = std::mem::take(&mut self.warps);
        // a turn of a co-scheduled block (exec/resident.rs): parked warps poll again, and the
        // turn ends after TURN_STEPS warp instructions (resident blocks run side by side)
        for w in warps.iter_mut() {
            w.poll.parked = false;
        }
        self.sliced = false;
        let turn_start = self.c.warp_instructions;
        let result = (|| {
            loop {
                if self.l.coscheduled && self.c.warp_instructions - turn_start >= resident::TURN_STEPS {
                    self.sliced = true;
                    return Ok(false);
                }
                // a parked warp (spinning on global memory) runs again once any store happened
                let epoch = self.l.epoch.load(Ordering::Relaxed);
                for w in warps.iter_mut() {
                    if w.poll.parked && w.poll.epoch != epoch {
                        w.poll.parked = false;
                    }
                }
                let mut any_run = false;
                for w in warps.iter_mut() {
                    if w.state == WState::Run && !w.poll.parked {
                        self.run_warp(w)?;
                        any_run = true;
                    }
                }
                if warps.iter().all(|w| w.state == WState::Done) {
                    return self.drain_async().map(|_| true);
                }
                let runnable = |w: &Warp| w.state == WState::Run && !w.poll.parked;
                if self.hop.is_some() {
                    self.async_round()?;
                    // a warp whose mbarrier wait failed with nothing changed since cannot progress
                    let events = self.hop.as_ref().map_or(0, |h| h.mbar.events);
                    if any_run && warps.iter().any(|w| runnable(w) && w.spin != events) {
                        continue;
                    }
                    // every runnable warp waits: the copies land now, at the latest
                    if self.land_oldest()? {
                        continue;
                    }
                } else if any_run && warps.iter().any(runnable) {
                    continue;
                }
                if warps.iter().any(|w| w.poll.parked && w.poll.epoch != self.l.epoch.load(Ordering::Relaxed)) {
                    continue;
                }
                // warps at a cluster barrier whose phase has completed go on
                if self.release_cluster_waits(&mut warps) {
                    continue;
                }
                // every live warp waits at a barrier: release those whose barrier is complete
                if !self.release_barriers(&mut warps)? {
                    // the cluster's other CTAs must arrive first: run them, then come back
                    if warps.iter().any(|w| w.state == WState::ClusterWait) {
                        return Ok(false);
                    }
                    // spinning on global memory: other blocks must store first (a co-scheduled
                    // launch gives them their turns; elsewhere nothing else runs for it)
                    if warps.iter().any(|w| w.state == WState::Run && w.poll.parked) && self.l.coscheduled {
                        return Ok(false);
                    }
                    return Err(self.deadlock(&warps));
                }
            }
        })();
        self.warps = warps;
        result
    }

    /// Releases complete barriers. Returns whether any warp was released.
    fn release_barriers(&mut self, warps: &mut [Warp]) -> Result<bool, Error> {
        let live_threads: u32 =
            warps.iter().filter(|w| w.state != WState::Done).map(|w| (w.valid & !w.exited).count_ones()).sum();
        let mut released = false;
        for id in 0..16u32 {
            let waiting: Vec<usize> =
                (0..warps.len()).filter(|&i| warps[i].state == WState::Bar && warps[i].bar_id == id).collect();
            if waiting.is_empty() {
                continue;
            }
            let arrived: u32 = waiting.iter().map(|&i| (warps[i].valid & !warps[i].exited).count_ones()).sum::<u32>()
                + self.arrivals[id as usize];
            let need = waiting.iter().map(|&i| warps[i].bar_count).max().unwrap_or(0);
            let need = if need == 0 { live_threads } else { need };
            if arrived < need {
                continue;
            }
            self.check_barrier_sites(warps, &waiting)?;
            // bar.red reduction over the arrived threads
            let popc: u32 = waiting.iter().map(|&i| warps[i].bar_pred.count_ones()).sum();
            let all = waiting.iter().all(|&i| warps[i].bar_pred == (warps[i].valid & !warps[i].exited));
            let any = popc > 0;
            for &i in &waiting {
                let w = &mut warps[i];
                let inst = &self.l.kernel.insts[w.bar_pc as usize];
                if inst.op == Op::BarRed {
                    let v = match inst.sub {
                        sub::A_POPC => popc as u64,
                        sub::A_AND => all as u64,
                        _ => any as u64,
                    };
                    let d = inst.d[0] as usize * 32;
                    let active = w.valid & !w.exited;
                    lanes!(active, l, {
                        w.regs[d + l] = v;
                    });
                }
                w.state = WState::Run;
                w.stack.last_mut().unwrap().pc = w.bar_pc + 1;
            }
            self.arrivals[id as usize] = 0;
            self.epoch += 1;
            if let Some(h) = self.hop.as_deref_mut() {
                // S12: a completed block barrier publishes the mbarrier inits before it
                h.mbar.block_synced();
            }
            released = true;
        }
        Ok(released)
    }

    /// `.aligned` barriers (`bar.sync`, `bar.red`, `__syncthreads()`): every warp must wait at
    /// the same instruction, not merely the same barrier id. On hardware, warps at different
    /// `bar.sync` sites may be released together or hang; the ISA calls it undefined. Named
    /// barriers with an explicit thread count (producer/consumer) and the non-aligned
    /// `barrier.sync` may legally differ and are not checked.
    fn check_barrier_sites(&self, warps: &[Warp], waiting: &[usize]) -> Result<(), Error> {
        let checked = |i: usize| {
            let inst = &self.l.kernel.insts[warps[i].bar_pc as usize];
            warps[i].bar_count == 0 && !inst.has(fl::UNALIGNED)
        };
        let Some(&first) = waiting.iter().find(|&&i| checked(i)) else { return Ok(()) };
        let Some(&other) = waiting.iter().find(|&&i| checked(i) && warps[i].bar_pc != warps[first].bar_pc) else {
            return Ok(());
        };
        let (a, b) =
            (&self.l.kernel.insts[warps[first].bar_pc as usize], &self.l.kernel.insts[warps[other].bar_pc as usize]);
        Err(self.err(
            &warps[other],
            None,
            b,
            FindingKind::DivergentBarrier,
            format!(
                "warp {} waits at this barrier {} while warp {} waits at a different barrier instruction (PTX line {}{}); \
                 bar.sync is .aligned: every warp of the block must execute the same bar.sync",
                warps[other].id,
                warps[other].bar_id,
                warps[first].id,
                a.line,
                self.cu_loc(a)
            ),
        ))
    }

    fn deadlock(&self, warps: &[Warp]) -> Error {
        // bytes delivered beyond expect_tx keep a phase open forever: the cause, not the hang
        if let Some(e) = self.tx_surplus() {
            return e;
        }
        let mut s = "no warp can make progress;".to_string();
        for w in warps {
            match w.state {
                WState::Bar => {
                    let i = &self.l.kernel.insts[w.bar_pc as usize];
                    s += &format!(
                        " warp {} waits at barrier {} (PTX line {}{});",
                        w.id,
                        w.bar_id,
                        i.line,
                        self.cu_loc(i)
                    );
                }
                WState::Done => s += &format!(" warp {} exited;", w.id),
                WState::ClusterWait => {
                    let i = &self.l.kernel.insts[w.bar_pc as usize];
                    s += &format!(
                        " warp {} waits at barrier.cluster.wait (PTX line {}{});",
                        w.id,
                        i.line,
                        self.cu_loc(i)
                    );
                }
                WState::Run if w.poll.parked => {
                    let at = self.l.kernel.insts.iter().find(|i| i.line == w.poll.line);
                    s += &format!(
                        " warp {} polls global memory that nothing changes (PTX line {}{});",
                        w.id,
                        w.poll.line,
                        at.map_or(String::new(), |i| self.cu_loc(i))
                    );
                }
                WState::Run => {
                    // yielded at a failed mbarrier wait (the instruction before its pc)
                    let pc = w.stack.last().map_or(0, |f| f.pc).saturating_sub(1);
                    let i = &self.l.kernel.insts[pc as usize];
                    s += &format!(" warp {} waits on an mbarrier (PTX line {}{});", w.id, i.line, self.cu_loc(i));
                }
            }
        }
        s += &self.async_deadlock_detail();
        self.block_finding(FindingKind::Deadlock, s)
    }

    /// Runs one warp until it blocks, exits or its slice ends.
    fn run_warp(&mut self, w: &mut Warp) -> Result<(), Error> {
        let insts = &self.l.kernel.insts;
        // (set again if this run ends at a failed mbarrier wait)
        w.spin = NOT_SPINNING;
        let mut budget = SLICE;
        loop {
            // pick the frame to run
            let Some(top) = w.stack.last().copied() else {
                self.finish_warp(w)?;
                return Ok(());
            };
            let active = top.mask & !w.exited & !w.retmask;
            if active == 0 || top.pc == top.rpc {
                w.stack.pop();
                if top.rpc == CALL_RPC {
                    self.return_from_call(w);
                }
                if w.stack.is_empty() {
                    self.finish_warp(w)?;
                    return Ok(());
                }
                continue;
            }
            let mut pc = top.pc;
            let rpc = top.rpc;
            // straight-line run inside this frame
            loop {
                if pc == rpc {
                    w.stack.last_mut().unwrap().pc = pc;
                    break;
                }
                let Some(i) = insts.get(pc as usize) else {
                    // ran past the last instruction (only reachable through EXIT reconvergence)
                    self.exit_lanes(w, active)?;
                    w.stack.last_mut().unwrap().pc = pc;
                    break;
                };
                let t0 = if self.prof.is_some() { crate::profile::ticks() } else { 0 };
                let mask = self.issue(w, i, pc, active)?;
                let flow = match i.op {
                    Op::Bra | Op::Call | Op::Ret | Op::Exit | Op::Bar | Op::BarRed | Op::Trap => {
                        self.control(w, i, pc, mask, active)?
                    }
                    Op::Elect
                    | Op::SetMaxNReg
                    | Op::FenceProxyAsync
                    | Op::Mbar
                    | Op::BulkTensor
                    | Op::BulkGroup
                    | Op::Wgmma => {
                        if mask != 0 {
                            self.hopper_op(w, i, pc, mask)?
                        } else {
                            Flow::Next
                        }
                    }
                    Op::Mapa | Op::ClusterBar => {
                        if mask != 0 {
                            self.cluster_op(w, i, pc, mask, active)?
                        } else {
                            Flow::Next
                        }
                    }
                    _ => {
                        if mask != 0 {
                            self.exec(w, i, mask, active)?;
                        }
                        // a repeated poll parks the warp after the load (exec/resident.rs)
                        if w.poll.parked {
                            Flow::Yield
                        } else {
                            Flow::Next
                        }
                    }
                };
                if let Some(p) = &mut self.prof {
                    let c = self.l.classes[pc as usize] as usize & 7;
                    p.ticks[c] += crate::profile::ticks().wrapping_sub(t0);
                    p.warps[c] += 1;
                    p.threads[c] += mask.count_ones() as u64;
                }
                match flow {
                    Flow::Next => pc += 1,
                    Flow::Leave => break,
                    Flow::Branch => {
                        // taken branches use up the slice (a spin-wait loop yields to other warps)
                        budget = budget.saturating_sub(1);
                        if budget == 0 {
                            return Ok(());
                        }
                        break;
                    }
                    Flow::Wait => return Ok(()),
                    Flow::Yield => {
                        w.stack.last_mut().unwrap().pc = pc + 1;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Issues the instruction at `pc`: the lanes its guard lets run, the counters, the step
    /// limit and the definedness check. Returns the executing lanes.
    fn issue(&mut self, w: &mut Warp, i: &Inst, pc: u32, active: u32) -> Result<u32, Error> {
        let limit = self.l.opts.step_limit;
        let mut mask = active;
        if i.guard != NONE {
            let g = i.guard as usize * 32;
            let mut pm = 0u32;
            if active == FULL {
                for (l, &v) in w.regs[g..g + 32].iter().enumerate() {
                    pm |= ((v & 1) as u32) << l;
                }
            } else {
                lanes!(active, l, {
                    pm |= ((w.regs[g + l] & 1) as u32) << l;
                });
            }
            mask = if i.gneg { active & !pm } else { pm };
        }
        w.steps += 1;
        self.c.warp_instructions += 1;
        self.c.thread_instructions += mask.count_ones() as u64;
        self.class_count[self.l.classes[pc as usize] as usize & 7] += 1;
        if w.steps > limit {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::StepLimit,
                format!("warp executed more than {limit} instructions (infinite loop?)"),
            ));
        }
        if let Some(ru) = &self.l.reg_use {
            // (a register sanitizer, so on the checked path only: unsanitised runs pay nothing)
            if w.wg_inflight && i.op != Op::Wgmma {
                self.check_wgmma_regs(w, i, pc)?;
            }
            self.check_defined(w, ru, pc as usize, i, mask, active)?;
        }
        Ok(mask)
    }

    /// Runs a control instruction (`bra`, `call`, `ret`, `exit`, barriers, `trap`) for the lanes
    /// in `mask` and says how the scheduler goes on.
    fn control(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32, active: u32) -> Result<Flow, Error> {
        match i.op {
            Op::Bra => {
                let taken = mask;
                let not_taken = active & !taken;
                let top = w.stack.last_mut().unwrap();
                if not_taken == 0 {
                    top.pc = i.target;
                } else if taken == 0 {
                    top.pc = pc + 1;
                } else {
                    // diverge: the current frame waits at the reconvergence point
                    top.pc = i.rpc;
                    if pc + 1 != i.rpc {
                        w.stack.push(Frame { pc: pc + 1, mask: not_taken, rpc: i.rpc });
                    }
                    if i.target != i.rpc {
                        w.stack.push(Frame { pc: i.target, mask: taken, rpc: i.rpc });
                    }
                }
                Ok(Flow::Branch)
            }
            Op::Ret if i.sub == 1 => {
                // return from a device function: these lanes wait for the call to end
                w.retmask |= mask;
                w.stack.last_mut().unwrap().pc = pc + 1;
                Ok(Flow::Leave)
            }
            Op::Call => {
                if mask == 0 {
                    return Ok(Flow::Next);
                }
                if w.calls.len() >= 64 {
                    return Err(self.err(
                        w,
                        None,
                        i,
                        FindingKind::CallDepth,
                        "more than 64 nested device-function calls".into(),
                    ));
                }
                self.call(w, i, mask);
                w.stack.last_mut().unwrap().pc = pc + 1;
                w.stack.push(Frame { pc: i.target, mask, rpc: CALL_RPC });
                Ok(Flow::Leave)
            }
            Op::Ret | Op::Exit => {
                if mask == 0 {
                    return Ok(Flow::Next);
                }
                self.exit_lanes(w, mask)?;
                w.stack.last_mut().unwrap().pc = pc + 1;
                Ok(Flow::Leave)
            }
            Op::Bar | Op::BarRed => {
                if mask == 0 {
                    return Ok(Flow::Next);
                }
                self.barrier(w, i, pc, mask)
            }
            Op::Trap => {
                if mask != 0 {
                    let what = if i.sub == 1 { "device-side assert() failed" } else { "the kernel executed `trap`" };
                    return Err(self.err(w, Some(mask.trailing_zeros() as usize), i, FindingKind::Trap, what.into()));
                }
                Ok(Flow::Next)
            }
            _ => unreachable!("`{:?}` is not a control instruction", i.op),
        }
    }

    /// `bar.sync`/`bar.red`/`bar.arrive` reached by the lanes in `mask` (not empty): checks the
    /// whole warp arrived, then counts an arrival or parks the warp at the barrier.
    fn barrier(&mut self, w: &mut Warp, i: &Inst, pc: u32, mask: u32) -> Result<Flow, Error> {
        let live = w.valid & !w.exited;
        if mask != live {
            // Lanes whose only remaining path is `ret` (an early `return` that
            // nvcc compiles as a branch to the shared exit block) have in effect
            // exited: ptxas turns that path into EXIT, so they do not hold the
            // barrier. Anything else is a diverged arrival.
            if let Some(others) = self.trivially_exiting(w, mask) {
                self.exit_lanes(w, others)?;
            }
        }
        let live = w.valid & !w.exited;
        if mask != live {
            return Err(self.err(
                w,
                None,
                i,
                FindingKind::DivergentBarrier,
                format!("bar.sync reached by lanes {mask:#010x} of the warp while its live lanes are {live:#010x} (the barrier is .aligned: all threads of a warp must execute the same barrier)"),
            ));
        }
        let id = w.regs[i.s[0] as usize * 32 + mask.trailing_zeros() as usize] as u32;
        let count =
            if i.s[1] != NONE { w.regs[i.s[1] as usize * 32 + mask.trailing_zeros() as usize] as u32 } else { 0 };
        if id >= 16 {
            return Err(self.err(w, None, i, FindingKind::BadBarrier, format!("barrier id {id} >= 16")));
        }
        if i.sub2 == 1 {
            // bar.arrive: counted, no wait
            self.c.barriers += 1;
            self.arrivals[id as usize] += mask.count_ones();
            return Ok(Flow::Next);
        }
        let mut pm = 0u32;
        if i.op == Op::BarRed {
            let p = i.s[2] as usize * 32;
            lanes!(mask, l, {
                pm |= ((w.regs[p + l] & 1) as u32) << l;
            });
            if i.has(fl::NEG_PRED_SRC) {
                pm = !pm & mask;
            }
        }
        self.c.barriers += 1;
        w.bar_id = id;
        w.bar_count = count;
        w.bar_pc = pc;
        w.bar_pred = pm;
        w.state = WState::Bar;
        w.stack.last_mut().unwrap().pc = pc;
        Ok(Flow::Wait)
    }

    /// Reports a read of a register no instruction has written in that lane (the guard by every
    /// active lane, the sources by the executing lanes), then marks the destinations written.
    fn check_defined(
        &self,
        w: &mut Warp,
        ru: &super::regdef::RegUse,
        pc: usize,
        i: &Inst,
        mask: u32,
        active: u32,
    ) -> Result<(), Error> {
        let undefined = |slot: u32, lanes: u32| lanes & !w.def[slot as usize];
        if i.guard != NONE && i.guard < self.l.kernel.nregs && undefined(i.guard, active) != 0 {
            return Err(self.undefined_read(w, i, i.guard, undefined(i.guard, active), "guard predicate"));
        }
        if mask == 0 {
            return Ok(());
        }
        for &slot in ru.reads(pc) {
            if undefined(slot, mask) != 0 {
                // (the exemption is looked up only for a read already found undefined)
                let lanes = undefined(slot, mask) & !self.wgmma_unread_accumulator(w, i, slot);
                if lanes != 0 {
                    return Err(self.undefined_read(w, i, slot, lanes, "register"));
                }
            }
        }
        for &slot in ru.writes(pc) {
            w.def[slot as usize] |= mask;
        }
        Ok(())
    }

    fn undefined_read(&self, w: &Warp, i: &Inst, slot: u32, lanes: u32, what: &str) -> Error {
        let name = self.l.kernel.reg_names.get(&slot).map(|s| s.as_str()).unwrap_or("?");
        self.err(
            w,
            Some(lanes.trailing_zeros() as usize),
            i,
            FindingKind::UninitialisedRegister,
            format!(
                "{what} `{name}` is read before any instruction wrote it (lanes {lanes:#010x}); on a GPU it holds \
                 whatever the physical register held before"
            ),
        )
    }

    /// The live lanes other than `mask` (which reached a barrier in the top frame), if every one
    /// of them waits at a point from which only unconditional `bra`s lead to `ret`/`exit`.
    fn trivially_exiting(&self, w: &Warp, mask: u32) -> Option<u32> {
        let live = w.valid & !w.exited;
        let top = w.stack.len().checked_sub(1)?;
        if w.stack[top].mask & live & !mask != 0 {
            return None;
        }
        let mut covered = w.stack[top].mask;
        let mut others = 0;
        for f in w.stack[..top].iter().rev() {
            let here = f.mask & live & !covered;
            if here != 0 {
                if !self.exits_trivially(f.pc) {
                    return None;
                }
                others |= here;
            }
            covered |= f.mask;
        }
        if live & !covered != 0 || others == 0 {
            return None;
        }
        Some(others)
    }

    fn exits_trivially(&self, mut pc: u32) -> bool {
        let insts = &self.l.kernel.insts;
        for _ in 0..16 {
            let Some(i) = insts.get(pc as usize) else { return true };
            if i.guard != NONE {
                return false;
            }
            match i.op {
                // (a device-function `ret` returns to the caller: not an exit)
                Op::Ret if i.sub == 0 => return true,
                Op::Exit => return true,
                Op::Bra => pc = i.target,
                _ => return false,
            }
        }
        false
    }

    /// Local-frame byte range of lane `l` for [lo, hi).
    fn local_range(&self, w: &Warp, l: usize, lo: u32, hi: u32) -> std::ops::Range<usize> {
        let base = (w.id as usize * 32 + l) * self.l.kernel.local_bytes as usize;
        base + lo as usize..base + hi as usize
    }

    /// Copies `bytes` from local offset `src` to `dst` for the lanes in `mask`.
    fn local_copy(&mut self, w: &Warp, mask: u32, src: u32, dst: u32, bytes: u32) {
        lanes!(mask, l, {
            let s = self.local_range(w, l, src, src + bytes);
            let d = self.local_range(w, l, dst, dst + bytes);
            self.local.copy_within(s.clone(), d.start);
            if !self.local_init.is_empty() {
                self.local_init.copy_within(s, d.start);
            }
        });
    }

    /// Enters a device function: saves its registers and local frame (recursion), passes the
    /// arguments into its parameter area.
    fn call(&mut self, w: &mut Warp, i: &Inst, mask: u32) {
        let l = &self.l.kernel.lists[i.list as usize];
        let save = &self.l.kernel.lists[l[0] as usize];
        let (slo, shi) = (save[0] as usize * 32, save[1] as usize * 32);
        let regs = w.regs[slo..shi].to_vec();
        let mut local = Vec::new();
        let nr = save[2] as usize;
        for lane in 0..32 {
            if w.valid >> lane & 1 == 0 {
                continue;
            }
            for r in 0..nr {
                let rg = self.local_range(w, lane, save[3 + 2 * r], save[4 + 2 * r]);
                local.extend_from_slice(&self.local[rg]);
            }
        }
        let nargs = l[1] as usize;
        for k in 0..nargs {
            let (src, dst, n) = (l[2 + 3 * k], l[3 + 3 * k], l[4 + 3 * k]);
            self.local_copy(w, mask, src, dst, n);
        }
        w.calls.push(CallRec { mask, list: i.list, saved_retmask: w.retmask, regs, local });
    }

    /// Leaves a device function: copies the results out, restores the saved state.
    fn return_from_call(&mut self, w: &mut Warp) {
        let Some(rec) = w.calls.pop() else { return };
        let l = &self.l.kernel.lists[rec.list as usize];
        let nargs = l[1] as usize;
        let rbase = 2 + 3 * nargs;
        let nrets = l[rbase] as usize;
        let live = rec.mask & !w.exited;
        let save = &self.l.kernel.lists[l[0] as usize];
        let slo = save[0] as usize * 32;
        w.regs[slo..slo + rec.regs.len()].copy_from_slice(&rec.regs);
        let nr = save[2] as usize;
        let mut pos = 0;
        for lane in 0..32 {
            if w.valid >> lane & 1 == 0 {
                continue;
            }
            for r in 0..nr {
                let rg = self.local_range(w, lane, save[3 + 2 * r], save[4 + 2 * r]);
                let n = rg.len();
                self.local[rg].copy_from_slice(&rec.local[pos..pos + n]);
                pos += n;
            }
        }
        // results last: the return area is not part of the restored frame, and the caller's
        // destination may be (recursion)
        for k in 0..nrets {
            let (src, dst, n) = (l[rbase + 1 + 3 * k], l[rbase + 2 + 3 * k], l[rbase + 3 + 3 * k]);
            self.local_copy(w, live, src, dst, n);
        }
        w.retmask = rec.saved_retmask;
    }

    fn exit_lanes(&mut self, w: &mut Warp, mask: u32) -> Result<(), Error> {
        self.cluster_exit(w, mask & w.valid & !w.exited);
        w.exited |= mask;
        // copies still in flight land when their thread exits, but nothing orders them for the
        // other threads: their destinations stay flagged (`CP_ORPHAN`)
        if w.pending.iter().any(|p| mask >> p.lane & 1 != 0) {
            self.complete_cp(w, |p| mask >> p.lane & 1 != 0, true);
        }
        Ok(())
    }

    fn finish_warp(&mut self, w: &mut Warp) -> Result<(), Error> {
        self.cluster_exit(w, w.valid & !w.exited);
        w.exited = FULL;
        if !w.pending.is_empty() {
            self.complete_cp(w, |_| true, true);
        }
        w.state = WState::Done;
        Ok(())
    }
}

pub(crate) fn wide_of(t: Ty) -> Ty {
    match t {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        t => t,
    }
}
