//! The typed, checked launch API of fusebert's CUDA kernels: one safe function per kernel,
//! usable on any [`Device`] (a GPU through CUDA, or the PTX emulator).
//!
//! Every function checks shapes against buffer lengths, the divisibility and alignment the
//! kernel needs, and returns [`Error::Kernel`] naming the kernel with expected vs got; then it
//! picks the launch configuration and launches. Buffers are typed: fp16 data is
//! `DeviceBuffer<half::f16>`, int8 `DeviceBuffer<i8>`, scales `DeviceBuffer<f32>`, offsets
//! `DeviceBuffer<u32>`. Where a kernel has a plain baseline beside the fast one, a `_with`
//! function takes a [`Variant`].
//!
//! Families: [`layernorm`], [`quantize`], [`gemm_int8`](mod@gemm_int8), [`gemm_f16`](mod@gemm_f16),
//! [`attention`](mod@attention), [`pooling`], [`embedding`]; CPU references in [`reference`](mod@reference);
//! emulator counter reports in [`report`].
//!
//! ```
//! use fusebert_kernels as kernels;
//! use fusebert_kernels::Device;
//! use half::f16;
//! let dev = Device::emulator()?;
//! let (rows, hidden) = (4, 768);
//! let x = dev.upload(&vec![f16::from_f32(0.5); rows * hidden])?;
//! let gamma = dev.upload(&vec![f16::ONE; hidden])?;
//! let beta = dev.upload(&vec![f16::ZERO; hidden])?;
//! let mut y = dev.alloc::<f16>(rows * hidden)?;
//! let ln = kernels::LayerNormF16 {
//!     x: &x, residual: None, bias: None, gamma: &gamma, beta: &beta, rows, hidden, eps: 1e-12,
//! };
//! kernels::layernorm_f16(&dev, &ln, &mut y, None, kernels::Variant::Fast)?;
//!
//! // W8A8 GEMM: y2[4, 64] = (q . w^T) * a_scale * w_scale + bias, GELU epilogue
//! let (mut q, mut qs) = (dev.alloc::<i8>(rows * hidden)?, dev.alloc::<f32>(rows)?);
//! let input = kernels::QuantizeF16 { x: &y, smooth: None, rows, hidden };
//! kernels::quantize_i8(&dev, &input, kernels::QuantizedI8 { q: &mut q, scale: &mut qs, zero: None })?;
//! let w = dev.upload(&vec![1i8; 64 * hidden])?;
//! let ws = dev.upload(&vec![0.01f32; 64])?;
//! let mut y2 = dev.alloc::<f16>(rows * 64)?;
//! let shape = kernels::GemmShape { m: rows, n: 64, k: hidden };
//! let g = kernels::GemmInt8 {
//!     a: &q, a_scale: &qs, zero_point: None, w: &w, w_scale: &ws, bias: None,
//!     epilogue: kernels::Epilogue::Gelu, shape,
//! };
//! kernels::gemm_int8(&dev, &g, &mut y2, kernels::GemmLaunch::default())?;
//! // a constant row normalises to beta = 0, so everything downstream is 0
//! assert!(y2.to_host()?.iter().all(|v| v.to_f32() == 0.0));
//! # Ok::<(), fusebert_kernels::Error>(())
//! ```
pub mod device;
pub mod ptx;
pub mod ptxas_gate;

/// The codes kernels take as arguments (epilogues, pooling modes), generated from
/// `kernels/codes.cuh`, their one definition.
pub mod codes {
    include!(concat!(env!("OUT_DIR"), "/codes.rs"));
}

pub use device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
pub use fusebert_core::{Error, Result};
pub use ptx::ids;

pub mod attention;
pub mod attention_sm90;
#[cfg(feature = "cuda")]
pub mod conformance;
pub mod embedding;
pub mod ffn_block_sm90;
pub mod gather;
pub mod gemm_f16;
pub mod gemm_int8;
pub mod gemm_plan;
pub mod gemm_sm90;
pub mod layernorm;
pub mod pooling;
pub mod qkv_attention_sm90;
pub mod quantize;
pub mod reference;
#[cfg(feature = "emulator")]
pub mod report;
pub mod select;
pub mod timing;

pub use attention::{attention, AttentionLaunch, AttentionShape, QueryTile};
pub use attention_sm90::{attention_int8_sm90, attention_sm90, Sm90Tiling};
pub use embedding::{embedding_layernorm, EmbeddingTables, TokenIds};
pub use ffn_block_sm90::{ffn_block_f16_sm90, FfnBlockF16, FfnBlockLaunch, FfnBlockWorkspace};
pub use gather::gather_first_rows;
pub use gemm_f16::{gemm_f16, GemmF16};
pub use gemm_int8::{
    gemm_int8, gemm_int8_i32, weight_sums, FusedLayerNorm, FusedQ8, GemmInt8, GemmLaunch, GemmShape, Tile, ZeroPoint,
};
pub use gemm_plan::{GemmPlan, SplitWorkspace};
pub use gemm_sm90::{
    gemm_f16_sm90, gemm_f16_sm90_ln, gemm_int8_i32_sm90, gemm_int8_sm90, gemm_int8_sm90_ln, gemm_int8_sm90_qa,
    FusedQuantize, GemmSm90Launch, Sm90Cols, Sm90Entry, Sm90Layernorm, Sm90Qa,
};
pub use layernorm::{layernorm_f16, LayerNormF16, Q8Out};
pub use pooling::{pool, PoolF16, Pooling};
pub use qkv_attention_sm90::{qkv_attention_f16_sm90, qkv_attention_int8_sm90, ContextCodes, CTX_COUNTERS};
pub use quantize::{quantize_i8, QuantizeF16, QuantizedI8};
pub use select::{KernelFamily, Selected};

/// Which implementation of a kernel to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The optimised kernel (vectorised / tensor cores / pipelined).
    #[default]
    Fast,
    /// The plain, obviously-right kernel: the baseline for tests and benchmarks.
    Simple,
}

/// Elementwise epilogue of the GEMMs, applied after dequantisation and bias, in f32.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y = acc + bias`
    None,
    /// `y = gelu_erf(acc + bias)` (BERT's exact GELU)
    Gelu,
    /// `y = acc + bias + residual[m, n]` (residual is `[M, N]` fp16)
    Residual(&'a DeviceBuffer<half::f16>),
    /// `y = tanh(acc + bias)` (BERT's pooler)
    Tanh,
    /// `y = gelu_tanh(acc + bias)`, the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`)
    GeluTanh,
    /// `y = max(acc + bias, 0)`
    Relu,
    /// `y = silu(acc + bias)`, `x sigmoid(x)` (`silu`, `swish`)
    Silu,
}

impl Epilogue<'_> {
    pub(crate) fn code(&self) -> u32 {
        match self {
            Epilogue::None => codes::EPI_NONE,
            Epilogue::Gelu => codes::EPI_GELU,
            Epilogue::Residual(_) => codes::EPI_RESIDUAL,
            Epilogue::Tanh => codes::EPI_TANH,
            Epilogue::GeluTanh => codes::EPI_GELU_TANH,
            Epilogue::Relu => codes::EPI_RELU,
            Epilogue::Silu => codes::EPI_SILU,
        }
    }
    /// The FFN1 epilogue of a model's `hidden_act`.
    pub fn activation(act: fusebert_core::numerics::activation::HiddenAct) -> Epilogue<'static> {
        use fusebert_core::numerics::activation::HiddenAct;
        match act {
            HiddenAct::Gelu => Epilogue::Gelu,
            HiddenAct::GeluTanh => Epilogue::GeluTanh,
            HiddenAct::Relu => Epilogue::Relu,
            HiddenAct::Silu => Epilogue::Silu,
        }
    }

    pub(crate) fn residual_arg(&self) -> KernelArg {
        match self {
            Epilogue::Residual(r) => KernelArg::from(*r),
            _ => KernelArg::Ptr(0),
        }
    }
}

pub(crate) fn kerr(kernel: &str, msg: impl Into<String>) -> Error {
    Error::Kernel { kernel: kernel.to_string(), msg: msg.into() }
}

/// `buf` must hold at least `need` elements (workspaces may be larger than one call's shape).
pub(crate) fn check_len<T: bytemuck::Pod>(kernel: &str, name: &str, buf: &DeviceBuffer<T>, need: usize) -> Result<()> {
    if buf.len() < need {
        return Err(kerr(
            kernel,
            format!(
                "buffer `{name}` has {} elements of {}, expected at least {need}",
                buf.len(),
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(())
}

/// Vectorised kernels need `align`-byte aligned base addresses.
pub(crate) fn check_align<T: bytemuck::Pod>(kernel: &str, name: &str, buf: &DeviceBuffer<T>, align: u64) -> Result<()> {
    if buf.addr() % align != 0 {
        return Err(kerr(kernel, format!("buffer `{name}` at {:#x} is not {align}-byte aligned", buf.addr())));
    }
    Ok(())
}

pub(crate) fn check_multiple(kernel: &str, what: &str, v: usize, m: usize) -> Result<()> {
    if v == 0 || v % m != 0 {
        return Err(kerr(kernel, format!("{what} = {v} must be a positive multiple of {m}")));
    }
    Ok(())
}

pub(crate) fn check_u32(kernel: &str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| kerr(kernel, format!("{what} = {v} does not fit in u32")))
}

pub(crate) fn opt_ptr<T>(b: Option<&DeviceBuffer<T>>) -> KernelArg {
    b.map_or(KernelArg::Ptr(0), KernelArg::from)
}

pub(crate) fn launch(dev: &Device, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
    dev.launch(kernel, cfg, args)
}
