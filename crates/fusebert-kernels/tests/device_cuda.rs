//! The CUDA backend on a machine without a GPU must fail with a typed error, never panic; and
//! the device layer's host path (views, batched reads, transfer counters) on the emulator and,
//! where `Device::cuda` opens (a GPU, or `FUSEBERT_CUDA_DRIVER=emulator:deferred`), on CUDA.
use fusebert_kernels::device::{as_elements, ReadPart};
use fusebert_kernels::{Device, Error};

#[test]
fn cuda_open_without_gpu_is_a_typed_error_or_a_working_device() {
    match fusebert_cuda_standin::cuda_device(0) {
        Ok(dev) => {
            // A real GPU: the embedded PTX loaded; a round trip must work.
            let buf = dev.upload(&[1.5f32, -2.0, 3.25]).unwrap();
            assert_eq!(buf.to_host().unwrap(), vec![1.5, -2.0, 3.25]);
        }
        Err(Error::NoCudaDevice(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("expected NoCudaDevice, got {e}"),
    }
}

#[test]
fn cuda_device_ordinal_out_of_range_is_an_error() {
    assert!(fusebert_cuda_standin::cuda_device(1 << 20).is_err());
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::emulator().unwrap()];
    if let Ok(g) = fusebert_cuda_standin::cuda_device(0) {
        d.push(g);
    }
    d
}

/// One packed upload seen through views; a batched read of parts of different types and odd
/// sizes; every copy counted once with its bytes.
#[test]
fn views_batched_reads_and_transfer_counters() {
    for dev in devices() {
        let packed: Vec<u32> = (0..23).map(|i| i * 3 + 1).collect();
        let before = dev.transfers();
        let buf = dev.upload(&packed).unwrap();
        let moved = dev.transfers() - before;
        assert_eq!((moved.h2d_copies, moved.h2d_bytes, moved.d2h_copies), (1, 92, 0), "{dev:?}");
        let (a, c) = (buf.view(0, 10).unwrap(), buf.view(17, 6).unwrap());
        assert_eq!(c.addr(), buf.addr() + 17 * 4);
        assert!(buf.view(17, 7).is_err() && buf.view(usize::MAX, 2).is_err(), "views stay inside");
        drop(buf); // the views keep the allocation alive
        assert_eq!(c.to_host().unwrap(), packed[17..]);
        let halves = dev.upload(&[half::f16::from_f32(1.5), half::f16::from_f32(-2.25), half::f16::ONE]).unwrap();
        let floats = dev.upload(&[0.5f32, 7.0]).unwrap();
        let parts = [a.read_part(3).unwrap(), halves.read_part(3).unwrap(), floats.read_part(2).unwrap()];
        assert!(a.read_part(11).is_err());
        let before = dev.transfers();
        let got = dev
            .read_back(&parts, |bytes| {
                assert!(bytes.iter().all(|b| b.as_ptr() as usize % fusebert_kernels::device::READ_ALIGN == 0));
                let h: &[half::f16] = as_elements(bytes[1])?;
                Ok((as_elements::<u32>(bytes[0])?.to_vec(), h.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), {
                    as_elements::<f32>(bytes[2])?.to_vec()
                }))
            })
            .unwrap();
        let moved = dev.transfers() - before;
        assert_eq!(got, (vec![1, 4, 7], vec![1.5, -2.25, 1.0], vec![0.5, 7.0]), "{dev:?}");
        assert_eq!((moved.d2h_copies, moved.d2h_bytes, moved.h2d_bytes), (3, 12 + 6 + 8, 0), "{dev:?}");
        // nothing to read is still one synchronisation and a call of the sink
        assert_eq!(dev.read_back(&[], |b| Ok(b.len())).unwrap(), 0);
        let odd = ReadPart { src: halves.addr(), bytes: 6 };
        assert!(dev.read_back(&[odd], |b| Ok(as_elements::<u32>(b[0]).is_err())).unwrap(), "6 bytes are no u32s");
    }
}
