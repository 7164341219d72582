//! Embedding gather (word + position + token type) fused with layernorm
//! (`kernels/embedding.cu`).
use half::f16;

use super::{check_align, check_len, check_u32, kerr, launch};
use crate::device::{Device, DeviceBuffer, KernelArg, LaunchConfig};
use crate::ptx::ids;
use fusebert_core::error::Result;

/// Embedding tables and the layernorm that follows them.
pub struct EmbeddingTables<'a> {
    /// `[vocab, hidden]`
    pub word: &'a DeviceBuffer<f16>,
    /// `[max_positions, hidden]`
    pub position: &'a DeviceBuffer<f16>,
    /// `[type_vocab, hidden]`; `None` for models without token types (DistilBERT): nothing
    /// is added and `type_ids` is not read.
    pub token_type: Option<&'a DeviceBuffer<f16>>,
    /// Added to every position id on the device: 0 for BERT, `pad_token_id + 1` for RoBERTa /
    /// XLM-R, whose position rows start there (the packer's ids are 0-based per sequence).
    pub position_offset: usize,
    pub gamma: &'a DeviceBuffer<f16>,
    pub beta: &'a DeviceBuffer<f16>,
    /// The layernorm's epsilon.
    pub eps: f32,
}

/// The token inputs of the embedding: word, position and token-type ids, one of each per token.
pub struct TokenIds<'a> {
    pub ids: &'a DeviceBuffer<u32>,
    pub pos_ids: &'a DeviceBuffer<u32>,
    pub type_ids: &'a DeviceBuffer<u32>,
}

/// `out[t] = LN(word[ids[t]] + position[position_offset + pos_ids[t]] + token_type[type_ids[t]])`.
/// Ids are read on the device and trusted: the tokenizer/packer validates them against the
/// table sizes (this function checks every buffer length).
pub fn embedding_layernorm(
    dev: &Device,
    token_ids: &TokenIds<'_>,
    t: &EmbeddingTables<'_>,
    out: &mut DeviceBuffer<f16>,
    tokens: usize,
    hidden: usize,
) -> Result<()> {
    const K: &str = ids::EMBEDDING_LAYERNORM_F16;
    let TokenIds { ids, pos_ids, type_ids } = *token_ids;
    let eps = t.eps;
    if tokens == 0 || hidden == 0 {
        return Err(kerr(K, "tokens and hidden must be positive"));
    }
    for (name, b) in [("ids", ids), ("pos_ids", pos_ids), ("type_ids", type_ids)] {
        check_len(K, name, b, tokens)?;
    }
    let tables = [("word", Some(t.word)), ("position", Some(t.position)), ("token_type", t.token_type)];
    for (name, b) in tables.into_iter().filter_map(|(n, b)| b.map(|b| (n, b))) {
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
    let g = geometry(tokens, hidden);
    let k = g.kernel;
    let mut args = vec![
        KernelArg::from(ids),
        KernelArg::from(pos_ids),
        KernelArg::from(type_ids),
        KernelArg::from(t.word),
        KernelArg::from(t.position),
        super::opt_ptr(t.token_type),
        KernelArg::from(t.gamma),
        KernelArg::from(t.beta),
        KernelArg::from(&*out),
    ];
    if g.warp_per_token {
        // 16-byte vector loads of every row and of gamma/beta, 16-byte stores
        let tables = [("word", Some(t.word)), ("position", Some(t.position)), ("token_type", t.token_type)];
        for (name, b) in tables.into_iter().chain([("gamma", Some(t.gamma)), ("beta", Some(t.beta))]) {
            if let Some(b) = b {
                check_align(k, name, b, 16)?;
            }
        }
        check_align(k, "out", out, 16)?;
        args.push(KernelArg::U32(check_u32(k, "tokens", tokens)?));
    }
    args.extend([
        KernelArg::U32(check_u32(k, "hidden", hidden)?),
        KernelArg::F32(eps),
        KernelArg::U32(check_u32(k, "position_offset", t.position_offset)?),
    ]);
    let cfg = LaunchConfig::linear(check_u32(k, "blocks", g.blocks)?, g.threads, g.shared_bytes as u32);
    launch(dev, k, cfg, &args)
}

/// Tokens one block of `embedding_layernorm_f16` covers: a warp each.
pub const TOKENS_PER_BLOCK: usize = 8;

/// Launch geometry of the embedding kernel: one rule, shared by [`embedding_layernorm`] and
/// `perf::plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub kernel: &'static str,
    /// A warp per token (`embedding_layernorm_f16`: hidden % 8 == 0 and hidden <= 1024), or a
    /// block per token (`embedding_layernorm_f16_wide`).
    pub warp_per_token: bool,
    pub blocks: usize,
    pub threads: u32,
    pub shared_bytes: usize,
}

/// The geometry for `tokens` rows of `hidden`.
pub fn geometry(tokens: usize, hidden: usize) -> Geometry {
    if hidden % 8 == 0 && hidden <= 1024 {
        Geometry {
            kernel: ids::EMBEDDING_LAYERNORM_F16,
            warp_per_token: true,
            blocks: tokens.div_ceil(TOKENS_PER_BLOCK),
            threads: 32 * TOKENS_PER_BLOCK as u32,
            // gamma | beta, fp16
            shared_bytes: 2 * hidden * 2,
        }
    } else {
        Geometry {
            kernel: ids::EMBEDDING_LAYERNORM_F16_WIDE,
            warp_per_token: false,
            blocks: tokens,
            threads: 256,
            // the summed row in f32, then 32 floats of reduction scratch
            shared_bytes: (hidden + 32) * 4,
        }
    }
}
