//! `fusebert info`: the embedded kernels, their ptxas resource usage, and CUDA devices.
use clap::Args;

use fusebert::{ptx, Device, Error, Result};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print nothing; exit 0 only if a CUDA device opens (1 otherwise, with the reason on stderr).
    #[arg(long)]
    pub cuda_available: bool,
    /// Describe this model folder instead (architecture, sizes, pooling, Normalize, input limit,
    /// prompts, head).
    #[arg(long, value_name = "DIR")]
    pub model: Option<std::path::PathBuf>,
}

pub fn run(a: InfoArgs) -> Result<i32> {
    if a.cuda_available {
        return Ok(match Device::cuda(0) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        });
    }
    let mut out = String::new();
    match &a.model {
        Some(dir) => model_report(&mut out, &fusebert::model::BertModel::load(dir)?),
        None => report(&mut out),
    }
    // Written in one go; a closed pipe is an error, not a panic.
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()).map_err(|e| Error::io("<stdout>", e))?;
    Ok(0)
}

/// The human-readable report of `fusebert info`.
fn report(out: &mut String) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    macro_rules! w {
        ($($t:tt)*) => {{ let _ = writeln!(out, $($t)*); }};
    }
    w!("fusebert {}", env!("CARGO_PKG_VERSION"));
    w!("PTX arch: {}", ptx::PTX_ARCH);
    w!("kernel modules ({}):", ptx::MODULES.len());
    for m in ptx::MODULES {
        w!("  {}: {}", m.name, m.kernels.join(", "));
    }
    w!("ptxas (per kernel and target):");
    for r in ptx::parse_ptxas_report(ptx::PTXAS_REPORT) {
        w!(
            "  {:<40} {}: {:>3} registers, {} B stack, {} B spill stores, {} B spill loads{}",
            format!("{}::{}", r.module, r.kernel),
            r.arch,
            r.registers,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes,
            if r.spill_store_bytes + r.spill_load_bytes > 0 { "  <- SPILLS" } else { "" }
        );
    }
    match fusebert::device::cuda::device_count() {
        Ok(0) => w!("CUDA: driver present, no device found"),
        Ok(n) => {
            w!("CUDA: {n} device(s)");
            for i in 0..n {
                match Device::cuda(i) {
                    Ok(d) => w!("  {i}: {}", d.name()),
                    Err(e) => w!("  {i}: cannot open: {e}"),
                }
            }
        }
        Err(e) => w!("CUDA: none ({e})"),
    }
}

/// The human-readable description of a model folder (`info --model`).
fn model_report(out: &mut String, m: &fusebert::model::BertModel) {
    use std::fmt::Write as _;
    macro_rules! w {
        ($($t:tt)*) => {{ let _ = writeln!(out, $($t)*); }};
    }
    let c = &m.config;
    let s = m.sentence_config();
    w!("model: {}", m.dir.display());
    w!(
        "architecture: {:?} ({} layers, hidden {}, {} heads of dim {}, FFN {}, {:?})",
        c.architecture,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.head_dim(),
        c.intermediate_size,
        c.hidden_act
    );
    w!(
        "embeddings: vocab {}, positions {} (offset {}), token types: {}{}",
        c.vocab_size,
        c.max_position_embeddings,
        c.position_offset,
        if c.has_token_types { c.type_vocab_size.to_string() } else { "none".into() },
        if c.embedding_size != c.hidden_size {
            format!(", embedding size {} projected", c.embedding_size)
        } else {
            String::new()
        }
    );
    let layout = match &m.sentence {
        Some(st) => format!("sentence-transformers ({:?} layout)", st.layout),
        None => "plain encoder (no modules.json)".to_string(),
    };
    w!("layout: {layout}");
    w!("pooling: {}{}", s.pooling, if s.include_prompt { "" } else { " (prompt excluded)" });
    w!(
        "dense: {}",
        if s.dense.is_empty() {
            "none".to_string()
        } else {
            s.dense
                .iter()
                .map(|d| format!("{}->{} {:?}", d.linear.in_features(), d.linear.out_features(), d.activation))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    w!("normalize: {}", s.normalize);
    w!("input limit: {} tokens (position limit {})", m.max_input_tokens(), c.max_input_tokens());
    if !s.prompts.is_empty() {
        let p: Vec<String> = s.prompts.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        w!("prompts: {} (default: {})", p.join(", "), s.default_prompt_name.as_deref().unwrap_or("none"));
    }
    match &m.weights.classifier {
        Some(h) => w!("head: {:?} classifier, labels: {}", h.kind, h.labels.join(", ")),
        None => w!("head: none (embedding model)"),
    }
}
