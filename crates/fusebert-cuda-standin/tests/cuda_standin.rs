//! The CUDA backend on the driver stand-in (`fusebert-cuda-standin`): the real `Device::cuda` code and
//! cudarc, with the PTX emulator behind the driver entry points. Its own test binary, because
//! the stand-in is a process-wide choice. The tests share one emulated device, so each holds
//! `LOCK` and drops every device before returning (the primary context then resets, sticky
//! errors included).
#![allow(unused_imports)] // forward_support re-exports more than this file uses
#[path = "../../fusebert/tests/forward_support/mod.rs"]
mod forward_support;

use std::sync::{Mutex, MutexGuard};

use cudarc::driver::{result, sys};
use forward_support::{random_batch, random_model, Shape};
use fusebert::model::forward::{DeviceBert, ForwardOptions, OutputSelection};
use fusebert::model::Precision;
use fusebert::{Device, Error, KernelArg, LaunchConfig};
use fusebert_cuda_standin::{self as standin, Mode, StandinOptions};

static LOCK: Mutex<()> = Mutex::new(());

/// Takes the lock and selects the stand-in with `mode` on an sm_XY device.
fn setup(mode: Mode, cc: (u32, u32)) -> MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    standin::install(StandinOptions { mode, compute_capability: cc, ..StandinOptions::default() })
        .expect("stand-in installs");
    g
}

const SHAPE: Shape = Shape { hidden: 64, heads: 2, layers: 2, intermediate: 128, vocab: 97, max_pos: 160, labels: 3 };

/// Every output of a forward pass, flattened (for bit-for-bit comparison).
fn outputs(bert: &mut DeviceBert, lengths: &[usize], seed: u64) -> Vec<f32> {
    let batch = random_batch(SHAPE.vocab, lengths, seed);
    // everything but the per-layer states (which would turn the graphs off)
    let opts =
        ForwardOptions { normalize: true, outputs: OutputSelection { hidden_states: false, ..OutputSelection::ALL } };
    let (out, _) = bert.forward(&batch, opts).unwrap();
    let mut v = Vec::new();
    for s in &out.sequences {
        v.extend_from_slice(&s.last_hidden_state);
        v.extend_from_slice(&s.pooled);
        v.extend(s.pooler_output.iter().flatten());
        v.extend(s.logits.iter().flatten());
    }
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_stand_in_is_a_cuda_device_and_round_trips_memory() {
    for mode in [Mode::Eager, Mode::Deferred] {
        let _g = setup(mode, (8, 0));
        let dev = Device::cuda(0).unwrap();
        assert!(dev.name().contains("stand-in") && dev.name().ends_with("(sm_80)"), "{}", dev.name());
        assert!(!dev.is_emulator(), "the CUDA backend, not the emulator backend");
        let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut buf = dev.upload(&data).unwrap();
        assert_eq!(buf.to_host().unwrap(), data);
        buf.fill_bytes(0).unwrap();
        assert!(buf.to_host().unwrap().iter().all(|&x| x == 0.0));
        assert!(Device::cuda(1).is_err(), "one device only");
    }
}

/// The whole forward pass through cudarc and the stand-in equals the emulator backend bit for
/// bit (same PTX, same emulator), in both modes and precisions, for sm_80 and sm_90 devices
/// (each loading its own PTX variant and kernel family: on 9.0 the Hopper `_sm90` kernels after
/// their self-check, compared with the emulator backend at sm_90, which selects them too).
#[test]
fn forward_on_the_stand_in_equals_the_emulator_backend_bit_for_bit() {
    use fusebert::device::emulator::{Arch, EmulatorOptions};
    let model = random_model(SHAPE, 11);
    let lengths = [5, 17, 1, 40];
    let emu80 = Device::emulator().unwrap();
    let emu90 = Device::emulator_with(EmulatorOptions { arch: Arch::Sm90, ..Default::default() }).unwrap();
    for precision in [Precision::F16, Precision::Int8] {
        let want80 = outputs(&mut DeviceBert::new(&emu80, &model, precision).unwrap(), &lengths, 3);
        let want90 = outputs(&mut DeviceBert::new(&emu90, &model, precision).unwrap(), &lengths, 3);
        for (mode, cc) in [(Mode::Eager, (8, 0)), (Mode::Deferred, (8, 0)), (Mode::Deferred, (9, 0))] {
            let _g = setup(mode, cc);
            let dev = Device::cuda(0).unwrap();
            let mut bert = DeviceBert::new(&dev, &model, precision).unwrap();
            assert!(bert.graphs_enabled(), "graphs are on by default on CUDA");
            assert_eq!(bert.kernel_family().is_sm90(), cc == (9, 0), "sm_{}{}", cc.0, cc.1);
            let got = outputs(&mut bert, &lengths, 3);
            let want = if cc == (9, 0) { &want90 } else { &want80 };
            assert_eq!(bits(&got), bits(want), "{precision:?} {mode:?} sm_{}{}", cc.0, cc.1);
        }
    }
}

/// With graphs, a forward pass after the first is one cuGraphLaunch and no cuLaunchKernel;
/// without, one cuLaunchKernel per kernel. Outputs are identical bit for bit.
#[test]
fn graph_replay_is_one_host_call_and_bit_identical() {
    let _g = setup(Mode::Deferred, (8, 0));
    let model = random_model(SHAPE, 12);
    let dev = Device::cuda(0).unwrap();
    let lengths = [9, 33, 2];
    for precision in [Precision::F16, Precision::Int8] {
        let mut with = DeviceBert::new(&dev, &model, precision).unwrap();
        let mut without = DeviceBert::new(&dev, &model, precision).unwrap();
        without.set_graphs(false);
        let per_forward = with.launches_for(&random_batch(SHAPE.vocab, &lengths, 5), OutputSelection::ALL) as u64;

        let a0 = outputs(&mut with, &lengths, 5); // captures
        standin::reset_call_counts();
        let a1 = outputs(&mut with, &lengths, 5); // replays
        assert_eq!((standin::call_count("cuLaunchKernel"), standin::call_count("cuGraphLaunch")), (0, 1));
        let s = with.graph_stats();
        assert_eq!((s.cached, s.captures, s.replays, s.invalidations), (1, 1, 2, 0), "{s:?}");

        standin::reset_call_counts();
        let b = outputs(&mut without, &lengths, 5);
        assert_eq!((standin::call_count("cuLaunchKernel"), standin::call_count("cuGraphLaunch")), (per_forward, 0));
        assert_eq!(without.graph_stats().replays, 0);
        assert_eq!(bits(&a0), bits(&b), "{precision:?}: graph vs no graph");
        assert_eq!(bits(&a1), bits(&b), "{precision:?}: replay vs no graph");

        // Same shape, different tokens: the same graph replays (the inputs are data).
        let c_graph = outputs(&mut with, &lengths, 6);
        let c_plain = outputs(&mut without, &lengths, 6);
        assert_eq!(bits(&c_graph), bits(&c_plain));
        assert_ne!(bits(&c_graph), bits(&b), "different inputs, different outputs");
        assert_eq!(with.graph_stats().captures, 1);
    }
}

/// A captured graph holds the workspace's raw addresses: growing the workspace must drop it,
/// and the next pass captures a new one (right results, not the freed buffers).
#[test]
fn growing_the_workspace_invalidates_the_graphs() {
    let _g = setup(Mode::Deferred, (8, 0));
    let model = random_model(SHAPE, 13);
    let dev = Device::cuda(0).unwrap();
    let emu = Device::emulator().unwrap();
    let mut with = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
    let mut reference = DeviceBert::new(&emu, &model, Precision::F16).unwrap();
    outputs(&mut with, &[8, 8], 1); // sizes the workspace: first graph
    outputs(&mut with, &[4, 6], 1); // fewer tokens, same workspace: a second graph
    assert_eq!(with.graph_stats().cached, 2);
    outputs(&mut with, &[7, 3], 2); // same launch list (only the data differ): no new graph
    let s = with.graph_stats();
    assert_eq!((s.cached, s.captures, s.invalidations), (2, 2, 0), "{s:?}");
    let big = [50, 60, 70];
    let got = outputs(&mut with, &big, 3);
    let s = with.graph_stats();
    assert_eq!((s.invalidations, s.cached, s.captures), (1, 1, 3), "{s:?}");
    assert_eq!(bits(&got), bits(&outputs(&mut reference, &big, 3)));
    // And the small shape again, now inside the big workspace: a fresh capture, right answer.
    let small = outputs(&mut with, &[4, 6], 1);
    assert_eq!(bits(&small), bits(&outputs(&mut reference, &[4, 6], 1)));
    assert_eq!(with.graph_stats().captures, 4);
}

fn pinned(bytes: usize) -> *mut u8 {
    unsafe { result::malloc_host(bytes, 0) }.unwrap() as *mut u8
}

/// The planted bug: the host reads a pinned buffer filled by an async copy without waiting for
/// it. Eager emulation hides it (the copy already ran); deferred mode shows poison until the
/// stream is synchronised.
#[test]
fn deferred_mode_catches_a_host_read_before_sync() {
    let data: Vec<u32> = (0..256).map(|i| i * 3 + 1).collect();
    for mode in [Mode::Eager, Mode::Deferred] {
        let _g = setup(mode, (8, 0));
        let dev = Device::cuda(0).unwrap();
        let buf = dev.upload(&data).unwrap();
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
        let host = pinned(1024);
        let view = unsafe { std::slice::from_raw_parts_mut(host as *mut u32, 256) };
        unsafe { result::memcpy_dtoh_async(view, buf.addr(), stream) }.unwrap();
        let early = view.to_vec(); // BUG: no synchronisation before reading
        unsafe { result::stream::synchronize(stream) }.unwrap();
        let late = view.to_vec();
        assert_eq!(late, data, "after the sync the data is there ({mode:?})");
        match mode {
            Mode::Eager => assert_eq!(early, data, "eager emulation hides the missing sync"),
            Mode::Deferred => assert!(early.iter().all(|&w| w == 0xCDCD_CDCD), "deferred: the early read sees poison"),
        }
        unsafe { result::free_host(host as *mut _) }.unwrap();
        unsafe { result::stream::destroy(stream) }.unwrap();
    }
}

/// Deferred mode runs nothing before the host observes it: a launch followed by a read of the
/// launch's output through the backend (which synchronises) is right, and the launch ran only
/// at that read.
#[test]
fn deferred_mode_runs_work_only_at_synchronisation() {
    let _g = setup(Mode::Deferred, (8, 0));
    let dev = Device::cuda(0).unwrap();
    dev.load_module("fault", FAULT_PTX).unwrap();
    let mut out = dev.alloc::<u32>(8).unwrap();
    out.fill_bytes(0).unwrap();
    let cfg = LaunchConfig::linear(1, 1, 0);
    dev.launch_in("fault", "store_at", cfg, &[KernelArg::Ptr(out.addr()), KernelArg::U32(5)]).unwrap();
    // Peek at device memory with a raw copy on the legacy stream... which is itself a sync
    // point, so instead read through a pinned async copy queued behind the launch:
    let host = pinned(32);
    let view = unsafe { std::slice::from_raw_parts_mut(host as *mut u32, 8) };
    let s = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    unsafe { result::memcpy_dtoh_async(view, out.addr(), s) }.unwrap();
    assert!(view.iter().all(|&w| w == 0xCDCD_CDCD), "nothing ran yet");
    unsafe { result::stream::synchronize(s) }.unwrap();
    assert_eq!(view[5], 5, "the launch ran at the sync");
    assert_eq!(out.to_host().unwrap()[5], 5);
    unsafe { result::free_host(host as *mut _) }.unwrap();
    unsafe { result::stream::destroy(s) }.unwrap();
}

/// Hand-written PTX: `store_at(out, i)` writes `i` to `out[i]` (out of bounds for a large i);
/// `big_shared(out)` uses 40 KiB of static shared memory.
const FAULT_PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.visible .entry store_at(.param .u64 out, .param .u32 i)
{
    .reg .b32 %r<2>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [i];
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.u32 [%rd4], %r1;
    ret;
}

.visible .entry big_shared(.param .u64 out)
{
    .shared .align 4 .b8 buf[40960];
    .reg .b32 %r<3>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [out];
    cvta.to.global.u64 %rd2, %rd1;
    mov.u32 %r1, 40000;
    st.shared.u32 [buf+40956], %r1;
    ld.shared.u32 %r2, [buf+40956];
    st.global.u32 [%rd2], %r2;
    ret;
}
"#;

/// A kernel fault is the sticky CUDA_ERROR_ILLEGAL_ADDRESS at the next synchronisation, with
/// the emulator's report (kernel, thread, PTX line) in fusebert's error; every later call fails
/// too, until the context is released; then the device works again.
#[test]
fn a_kernel_fault_is_a_sticky_illegal_address_with_the_emulator_report() {
    for mode in [Mode::Eager, Mode::Deferred] {
        let _g = setup(mode, (8, 0));
        {
            let dev = Device::cuda(0).unwrap();
            dev.load_module("fault", FAULT_PTX).unwrap();
            let out = dev.alloc::<u32>(4).unwrap();
            let cfg = LaunchConfig::linear(1, 1, 0);
            // Launches are asynchronous: the fault is not reported here.
            dev.launch_in("fault", "store_at", cfg, &[KernelArg::Ptr(out.addr()), KernelArg::U32(1000)]).unwrap();
            let e = dev.synchronize().unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
            assert!(msg.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{msg}");
            assert!(msg.contains("store_at") && msg.contains("out-of-bounds"), "the emulator's report: {msg}");
            assert!(msg.contains("line"), "names the PTX line: {msg}");
            // Sticky: the next calls fail the same way.
            assert!(dev.synchronize().unwrap_err().to_string().contains("ILLEGAL_ADDRESS"));
            assert!(dev.upload(&[1u32]).is_err());
        }
        // Every user gone: the context resets.
        let dev = Device::cuda(0).unwrap();
        assert_eq!(dev.upload(&[7u32, 8]).unwrap().to_host().unwrap(), vec![7, 8]);
    }
}

fn function(dev: &Device, name: &str) -> sys::CUfunction {
    let _ = dev; // the module was loaded through the device; fetch the handle through cudarc
    let image = std::ffi::CString::new(FAULT_PTX).unwrap();
    let m = unsafe { result::module::load_data(image.as_ptr() as *const _) }.unwrap();
    unsafe { result::module::get_function(m, std::ffi::CString::new(name).unwrap()) }.unwrap()
}

/// Shared memory as a driver rules it: static + dynamic above 48 KiB only after raising
/// MAX_DYNAMIC_SHARED_SIZE_BYTES, never past the architecture's limit. The backend opts in
/// counting the static part (40 KiB static + 16 KiB dynamic needs it; dynamic alone would not).
#[test]
fn shared_memory_above_48_kib_needs_the_opt_in_and_respects_the_arch_limit() {
    for (cc, limit) in [((8, 0), 163 * 1024), ((9, 0), 227 * 1024)] {
        let _g = setup(Mode::Eager, cc);
        let dev = Device::cuda(0).unwrap();
        dev.load_module("fault", FAULT_PTX).unwrap();
        let out = dev.alloc::<u32>(1).unwrap();
        let f = function(&dev, "big_shared");
        let static_shared = unsafe {
            result::function::get_function_attribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        }
        .unwrap();
        assert_eq!(static_shared, 40960);
        let mut arg = out.addr();
        let mut params = [&mut arg as *mut u64 as *mut std::ffi::c_void];
        let launch = |smem: u32, params: &mut [*mut std::ffi::c_void; 1]| unsafe {
            result::launch_kernel(f, (1, 1, 1), (32, 1, 1), smem, std::ptr::null_mut(), params)
        };
        // 40 KiB static + 8 KiB dynamic = 48 KiB: no opt-in needed.
        launch(8 * 1024, &mut params).unwrap();
        // + 16 KiB dynamic: refused until the attribute covers it.
        let e = launch(16 * 1024, &mut params).unwrap_err();
        assert_eq!(e.0, sys::CUresult::CUDA_ERROR_INVALID_VALUE);
        let set = |v: i32| unsafe {
            result::function::set_function_attribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                v,
            )
        };
        set(16 * 1024).unwrap();
        launch(16 * 1024, &mut params).unwrap();
        // Never past the architecture's limit, static included.
        assert!(set(limit - 40960 + 1).is_err());
        set(limit - 40960).unwrap();
        result::ctx::synchronize().unwrap();
        // The backend does the opt-in itself, counting the static part.
        dev.launch_in("fault", "big_shared", LaunchConfig::linear(1, 32, 16 * 1024), &[KernelArg::Ptr(out.addr())])
            .unwrap();
        assert_eq!(out.to_host().unwrap(), vec![40000]);
        let too_big = LaunchConfig::linear(1, 32, limit as u32);
        assert!(dev.launch_in("fault", "big_shared", too_big, &[KernelArg::Ptr(out.addr())]).is_err());
    }
}

/// Capture rules: the legacy stream cannot be captured; a synchronisation during a capture
/// fails and invalidates it.
#[test]
fn capture_refuses_the_legacy_stream_and_synchronisation() {
    let _g = setup(Mode::Deferred, (8, 0));
    let _dev = Device::cuda(0).unwrap();
    let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL;
    let e = unsafe { result::stream::begin_capture(std::ptr::null_mut(), mode) }.unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    let s = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    unsafe { result::stream::begin_capture(s, mode) }.unwrap();
    assert_eq!(
        unsafe { result::stream::is_capturing(s) }.unwrap(),
        sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE
    );
    assert_eq!(result::ctx::synchronize().unwrap_err().0, sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    let e = unsafe { result::stream::end_capture(s) }.unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    unsafe { result::stream::destroy(s) }.unwrap();
}

/// Thread-local capture mode (what the backend captures graphs in): a synchronisation from
/// another thread leaves the capture alone, one from the capturing thread still fails it.
#[test]
fn thread_local_capture_ignores_other_threads() {
    let _g = setup(Mode::Deferred, (8, 0));
    let _dev = Device::cuda(0).unwrap();
    let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
    let s = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    unsafe { result::stream::begin_capture(s, mode) }.unwrap();
    // the context handle crosses the thread as an address (raw pointers are not Send)
    let ctx = result::ctx::get_current().unwrap().expect("a current context") as usize;
    let other = std::thread::spawn(move || {
        unsafe { result::ctx::set_current(ctx as sys::CUcontext) }.unwrap();
        result::ctx::synchronize()
    });
    assert!(other.join().unwrap().is_ok(), "another thread's synchronisation is allowed");
    assert_eq!(
        unsafe { result::stream::is_capturing(s) }.unwrap(),
        sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE
    );
    assert_eq!(result::ctx::synchronize().unwrap_err().0, sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    let e = unsafe { result::stream::end_capture(s) }.unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    unsafe { result::stream::destroy(s) }.unwrap();
}

/// PTX newer than the device is refused with NO_BINARY_FOR_GPU, as a driver's JIT would: the
/// backend must pick the variant for the device (the forward test above runs both).
#[test]
fn sm90_ptx_is_refused_on_an_sm80_device() {
    let _g = setup(Mode::Eager, (8, 0));
    let dev = Device::cuda(0).unwrap();
    let sm90 = FAULT_PTX.replace(".target sm_80", ".target sm_90");
    let e = dev.load_module("sm90", &sm90).unwrap_err().to_string();
    assert!(e.contains("CUDA_ERROR_NO_BINARY_FOR_GPU"), "{e}");
    let bad = FAULT_PTX.replace("st.global.u32", "st.globl.u32");
    let e = dev.load_module("bad", &bad).unwrap_err().to_string();
    assert!(e.contains("CUDA_ERROR_INVALID_PTX") && e.contains("globl"), "the parser's message: {e}");
}

/// After the first pass (workspace sized, graph captured), a forward pass of the same or a
/// smaller shape allocates nothing on the device, with graphs and without.
#[test]
fn no_device_allocation_after_warm_up() {
    let _g = setup(Mode::Deferred, (8, 0));
    let model = random_model(SHAPE, 14);
    let dev = Device::cuda(0).unwrap();
    for graphs in [true, false] {
        let mut bert = DeviceBert::new(&dev, &model, Precision::Int8).unwrap();
        bert.set_graphs(graphs);
        outputs(&mut bert, &[30, 12], 1);
        standin::reset_call_counts();
        outputs(&mut bert, &[30, 12], 2);
        outputs(&mut bert, &[5, 9], 3);
        let allocs = ["cuMemAlloc_v2", "cuMemAllocAsync", "cuMemHostAlloc", "cuMemFree_v2"].map(standin::call_count);
        assert_eq!(allocs, [0; 4], "graphs {graphs}");
    }
}

/// The stand-in can never shadow a real driver: its file is not named like one, and the folder
/// it sits in is on no library search path (cargo puts target/*/deps on LD_LIBRARY_PATH).
#[test]
fn the_stand_in_library_cannot_shadow_a_real_libcuda() {
    let path = std::path::Path::new(fusebert_cuda_standin::TRAMPOLINE);
    assert_eq!(path.file_name().unwrap(), "libfusebert_cudaemu.so");
    let dir = path.parent().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with("libcuda") && !name.starts_with("libnvcuda"), "{name} next to the stand-in");
    }
    let search = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    for p in std::env::split_paths(&search) {
        assert_ne!(p.canonicalize().ok(), dir.canonicalize().ok(), "the stand-in's folder is on LD_LIBRARY_PATH");
    }
}

/// The host path of one forward pass through cudarc: one cuMemcpyHtoDAsync of the packed
/// inputs, one cuMemcpyDtoHAsync per requested output into pinned memory, one
/// cuStreamSynchronize, no blocking copy, and exactly the requested bytes (embeddings: `B *
/// hidden * 4`); in deferred mode, so a result read before its copy ran would show.
#[test]
fn a_forward_pass_is_one_upload_one_synchronisation_and_only_the_requested_bytes() {
    let _g = setup(Mode::Deferred, (8, 0));
    let model = random_model(SHAPE, 14);
    let dev = Device::cuda(0).unwrap();
    let emu = Device::emulator().unwrap();
    let lengths = [9usize, 33, 2];
    let batch = random_batch(SHAPE.vocab, &lengths, 7);
    let (t, b, h) = (44u64, 3u64, SHAPE.hidden as u64);
    for graphs in [true, false] {
        let mut bert = DeviceBert::new(&dev, &model, Precision::F16).unwrap();
        let mut reference = DeviceBert::new(&emu, &model, Precision::F16).unwrap();
        bert.set_graphs(graphs);
        for (opts, parts, d2h) in [
            (ForwardOptions::embeddings(true), 1, b * h * 4),
            (ForwardOptions::classification(), 1, b * 16 * 2),
            (ForwardOptions::default(), 2, b * h * 4 + b * 16 * 2),
        ] {
            bert.forward(&batch, opts).unwrap(); // captures the graph
            standin::reset_call_counts();
            let before = dev.transfers();
            let (got, _) = bert.forward(&batch, opts).unwrap();
            let moved = dev.transfers() - before;
            let calls = |n| standin::call_count(n);
            let what = format!("graphs {graphs} {opts:?}");
            assert_eq!(calls("cuMemcpyHtoDAsync_v2"), 1, "{what}");
            assert_eq!(calls("cuMemcpyDtoHAsync_v2"), parts, "{what}");
            assert_eq!(calls("cuStreamSynchronize"), 1, "{what}");
            assert_eq!(calls("cuMemcpyDtoH_v2") + calls("cuMemcpyHtoD_v2"), 0, "{what}: blocking copies");
            assert_eq!((moved.h2d_copies, moved.h2d_bytes), (1, 4 * (3 * t + b + 1)), "{what}");
            assert_eq!((moved.d2h_copies, moved.d2h_bytes), (parts, d2h), "{what}");
            let (want, _) = reference.forward(&batch, opts).unwrap();
            assert_eq!(got, want, "{what}: the stand-in equals the emulator backend");
        }
    }
}

/// `cuTensorMapEncodeTiled` (context-free) writes the emulator's 128 opaque bytes and refuses
/// what the driver refuses; `.target sm_90a` PTX loads on a 9.0 device.
#[test]
fn tensor_maps_are_encoded_and_refused_like_the_driver() {
    let _g = setup(Mode::Eager, (9, 0));
    let dev = Device::cuda(0).unwrap();
    #[repr(C, align(128))]
    struct Map([u8; 128]);
    let mut map = Map([0; 128]);
    let encode = |map: &mut Map, stride: u64| unsafe {
        let dims = [100u64, 13];
        let strides = [stride];
        let boxd = [64u32, 12];
        let es = [1u32, 1];
        sys::cuTensorMapEncodeTiled(
            map as *mut Map as *mut sys::CUtensorMap,
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            2,
            0x1_0000_0000 as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxd.as_ptr(),
            es.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    assert_eq!(encode(&mut map, 208), sys::CUresult::CUDA_SUCCESS);
    let m = fusebert_emu::tma::decode(&map.0).unwrap();
    assert_eq!((m.dims[0], m.dims[1], m.strides[0], m.boxd[0]), (100, 13, 208, 64));
    // a row stride that is not a multiple of 16
    assert_eq!(encode(&mut map, 200), sys::CUresult::CUDA_ERROR_INVALID_VALUE);
    let sm90a = FAULT_PTX.replace(".target sm_80", ".target sm_90a");
    dev.load_module("sm90a", &sm90a).unwrap();
}

/// `cuLaunchKernelEx` with the cluster-dimension attribute: a cluster dividing the grid runs
/// (its CTAs as independent blocks); one that does not divide it, or of more than 8 CTAs, is
/// refused, as on a 9.0 device.
#[test]
fn launch_kernel_ex_takes_the_cluster_attribute() {
    let _g = setup(Mode::Eager, (9, 0));
    let dev = Device::cuda(0).unwrap();
    dev.load_module("fault", FAULT_PTX).unwrap();
    let out = dev.alloc::<u32>(8).unwrap();
    let f = function(&dev, "store_at");
    let launch = |cluster: u32, grid: u32| unsafe {
        let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attr.value.clusterDim.x = cluster;
        attr.value.clusterDim.y = 1;
        attr.value.clusterDim.z = 1;
        let mut cfg: sys::CUlaunchConfig = std::mem::zeroed();
        (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ) = (grid, 1, 1);
        (cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ) = (1, 1, 1);
        cfg.attrs = &mut attr;
        cfg.numAttrs = 1;
        let mut p = out.addr();
        let mut i = 5u32;
        let mut params = [&mut p as *mut u64 as *mut std::ffi::c_void, &mut i as *mut u32 as *mut std::ffi::c_void];
        sys::cuLaunchKernelEx(&cfg, f, params.as_mut_ptr(), std::ptr::null_mut())
    };
    // (one block: every block of this kernel stores the same word, a race the emulator reports)
    assert_eq!(launch(1, 1), sys::CUresult::CUDA_SUCCESS);
    result::ctx::synchronize().unwrap();
    assert_eq!(out.to_host().unwrap()[5], 5);
    assert_eq!(launch(3, 4), sys::CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(launch(16, 16), sys::CUresult::CUDA_ERROR_INVALID_VALUE);
}
