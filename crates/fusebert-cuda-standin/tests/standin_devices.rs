//! The stand-in reporting several devices (`FUSEBERT_CUDA_STANDIN_DEVICES=N`), each with its own
//! emulator and context, and failing one on purpose (`FUSEBERT_CUDA_STANDIN_FAIL=DEVICE:AFTER`):
//! that device's kernels fault from then on (the sticky `CUDA_ERROR_ILLEGAL_ADDRESS`, a typed
//! `Error::Cuda`), the other keeps working. Its own test binary: the stand-in is process-wide.
#![allow(unused_imports)] // forward_support re-exports more than this file uses
#[path = "../../fusebert/tests/forward_support/mod.rs"]
mod forward_support;

use forward_support::{random_batch, random_model, Shape};
use fusebert::model::forward::{DeviceBert, ForwardOptions};
use fusebert::model::Precision;
use fusebert::{Device, Error};
use fusebert_cuda_standin::{self as standin, Mode, StandinOptions};

const SHAPE: Shape = Shape { hidden: 64, heads: 2, layers: 1, intermediate: 128, vocab: 97, max_pos: 64, labels: 2 };

fn pooled(bert: &mut DeviceBert) -> fusebert::Result<Vec<u32>> {
    let batch = random_batch(SHAPE.vocab, &[5, 9], 3);
    let (out, _) = bert.forward(&batch, ForwardOptions::default())?;
    Ok(out.sequences.iter().flat_map(|s| s.pooled.iter().map(|x| x.to_bits())).collect())
}

#[test]
fn several_devices_and_one_that_fails() {
    let opts = StandinOptions { mode: Mode::Deferred, devices: 2, ..StandinOptions::default() };
    standin::install(opts).unwrap();
    assert_eq!(fusebert::kernels::device::cuda::device_count().unwrap(), 2);
    let model = random_model(SHAPE, 5);
    let (d0, d1) = (Device::cuda(0).unwrap(), Device::cuda(1).unwrap());
    assert!(d0.name().contains("device 0") && d1.name().contains("device 1"), "{} / {}", d0.name(), d1.name());
    assert!(matches!(Device::cuda(2), Err(Error::NoCudaDevice(_))), "only two devices");
    let (mut b0, mut b1) =
        (DeviceBert::new(&d0, &model, Precision::F16).unwrap(), DeviceBert::new(&d1, &model, Precision::F16).unwrap());
    let want = pooled(&mut b0).unwrap();
    assert_eq!(pooled(&mut b1).unwrap(), want, "the same kernels on each device give the same bits");
    let per_pass = standin::launches(1);
    assert!(per_pass > 0);

    // Device 1 fails once it has run 3 more kernels: mid forward pass.
    standin::install(StandinOptions { fail: Some((1, 3)), ..opts }).unwrap();
    match pooled(&mut b1) {
        Err(Error::Cuda { msg, .. }) => {
            assert!(msg.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && msg.contains("injected failure"), "{msg}")
        }
        other => panic!("expected a CUDA error, got {other:?}"),
    }
    assert!(pooled(&mut b1).is_err(), "the failure is sticky");
    assert_eq!(pooled(&mut b0).unwrap(), want, "device 0 is unaffected");
    drop((b0, b1, d0, d1));
    // A dead device stays dead, even through a new context.
    let d1 = Device::cuda(1).unwrap();
    let mut b1 = DeviceBert::new(&d1, &model, Precision::F16);
    let failed = match &mut b1 {
        Ok(b) => pooled(b).is_err(),
        Err(_) => true,
    };
    assert!(failed, "device 1 works again after a context reset");
}

#[test]
fn cuda_visible_devices_is_applied_as_a_driver_does() {
    assert_eq!(standin::visible_devices(None, 3), [0, 1, 2]);
    assert_eq!(standin::visible_devices(Some(""), 3), [0, 1, 2]);
    assert_eq!(standin::visible_devices(Some("2,0"), 3), [2, 0]);
    assert_eq!(standin::visible_devices(Some("1, 7, 0"), 3), [1], "the list ends at a device that does not exist");
    assert_eq!(standin::visible_devices(Some("GPU-1234"), 3), Vec::<usize>::new());
}

#[test]
fn the_environment_selects_devices_and_failures() {
    // Parsing only (installing is process-wide and done by the test above).
    let cases = [
        ("2", "", Ok((2, None))),
        ("", "", Ok((1, None))),
        ("3", "2:100", Ok((3, Some((2, 100))))),
        ("0", "", Err("FUSEBERT_CUDA_STANDIN_DEVICES")),
        ("2", "2:5", Err("device 2, but")),
        ("2", "1", Err("no colon")),
        ("2", "x:5", Err("DEVICE is not a number")),
    ];
    for (devices, fail, want) in cases {
        let got = standin::parse_devices_and_fail(devices, fail);
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{devices:?} {fail:?}"),
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{devices:?} {fail:?}: {e}"),
            (g, w) => panic!("{devices:?} {fail:?}: got {g:?}, want {w:?}"),
        }
    }
}
