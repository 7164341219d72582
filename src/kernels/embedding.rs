//! Embedding gather (word + position + token type) fused with layernorm
//! (`kernels/embedding.cu`).
use half::f16;

use super::{check_len, check_u32, kerr, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::error::Result;

/// Embedding tables and the layernorm that follows them.
pub struct EmbeddingTables<'a> {
    /// `[vocab, hidden]`
    pub word: &'a DeviceBuffer<f16>,
    /// `[max_positions, hidden]`
    pub position: &'a DeviceBuffer<f16>,
    /// `[type_vocab, hidden]`
    pub token_type: &'a DeviceBuffer<f16>,
    pub gamma: &'a DeviceBuffer<f16>,
    pub beta: &'a DeviceBuffer<f16>,
}

/// `out[t] = LN(word[ids[t]] + position[pos_ids[t]] + token_type[type_ids[t]])`.
/// Ids are read on the device and trusted: the tokenizer/packer validates them against the
/// table sizes (this function checks every buffer length).
#[allow(clippy::too_many_arguments)] // a launch wrapper takes every tensor and dimension of the kernel
pub fn embedding_layernorm(
    dev: &Device,
    ids: &DeviceBuffer<u32>,
    pos_ids: &DeviceBuffer<u32>,
    type_ids: &DeviceBuffer<u32>,
    t: &EmbeddingTables<'_>,
    out: &mut DeviceBuffer<f16>,
    tokens: usize,
    hidden: usize,
    eps: f32,
) -> Result<()> {
    const K: &str = "embedding_layernorm_f16";
    if tokens == 0 || hidden == 0 {
        return Err(kerr(K, "tokens and hidden must be positive"));
    }
    for (name, b) in [("ids", ids), ("pos_ids", pos_ids), ("type_ids", type_ids)] {
        check_len(K, name, b, tokens)?;
    }
    for (name, b) in [("word", t.word), ("position", t.position), ("token_type", t.token_type)] {
        check_len(K, name, b, hidden)?;
        if b.len() % hidden != 0 {
            return Err(kerr(
                K,
                format!("table `{name}` has {} elements, not a multiple of hidden = {hidden}", b.len()),
            ));
        }
    }
    check_len(K, "gamma", t.gamma, hidden)?;
    check_len(K, "beta", t.beta, hidden)?;
    check_len(K, "out", out, tokens * hidden)?;
    let args = [
        KernelArg::from(ids),
        KernelArg::from(pos_ids),
        KernelArg::from(type_ids),
        KernelArg::from(t.word),
        KernelArg::from(t.position),
        KernelArg::from(t.token_type),
        KernelArg::from(t.gamma),
        KernelArg::from(t.beta),
        KernelArg::from(&*out),
        KernelArg::U32(check_u32(K, "hidden", hidden)?),
        KernelArg::F32(eps),
    ];
    let cfg = LaunchConfig::linear(check_u32(K, "tokens", tokens)?, 256, ((hidden + 32) * 4) as u32);
    launch(dev, K, cfg, &args)
}
