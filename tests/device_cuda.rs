//! The CUDA backend on a machine without a GPU must fail with a typed error, never panic.
use fusebert::{Device, Error};

#[test]
fn cuda_open_without_gpu_is_a_typed_error_or_a_working_device() {
    match Device::cuda(0) {
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
    assert!(Device::cuda(1 << 20).is_err());
}
