//! `fusebert embed`, `classify` and `rerank`: texts -> tokens -> forward pass -> JSON lines (or an
//! embeddings file), streamed in budgeted batches (`super::stream`).
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use fusebert::model::Pooling;
use fusebert::pipeline::{sigmoid, Classification};
use fusebert::tokenize::Batch;
use fusebert::{Error, Pipeline, Result};
use fusebert_cli::corpus::{open_output, Row, Shard};

use super::forward::{self, DeviceKind, PrecisionArg};
use super::input;
use super::stream::{self, StreamArgs};

/// Options shared by every command that runs the model.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json; the
    /// sentence-transformers files when it is an embedding model).
    /// Default: $FUSEBERT_MODEL, else the bundled all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Where the forward pass runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Precision of the device forward pass (default f16; not for --device cpu).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Cut inputs longer than the input limit (the folder's max_seq_length, else the position
    /// table, else --max-length) instead of failing, keeping the closing special token.
    #[arg(long)]
    pub truncate: bool,
    /// The input limit in tokens, special tokens included (default: the folder's max_seq_length,
    /// else the position table's limit, which is also the most it may be).
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
    /// Input texts; one per line of stdin when none is given.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Pooling mode (default: the folder's 1_Pooling/config.json, else mean): cls, mean, max,
    /// mean_sqrt_len_tokens, weightedmean, lasttoken.
    #[arg(long, value_name = "MODE", value_parser = parse_pooling)]
    pub pooling: Option<Pooling>,
    /// L2-normalise the embeddings (default: when the folder has a Normalize module).
    #[arg(long, conflicts_with = "no_normalize")]
    pub normalize: bool,
    /// Do not L2-normalise, even when the folder has a Normalize module.
    #[arg(long)]
    pub no_normalize: bool,
    /// Prepend the folder's prompt NAME (config_sentence_transformers.json `prompts`).
    #[arg(long, value_name = "NAME", conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
    /// Prepend this prompt text.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Write the embeddings to FILE instead of stdout, by extension: .jsonl (the stdout lines),
    /// .npy (float32 [N, D]), .safetensors (`embeddings` [N, D] f32, `tokens` [N] i64).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Continue an interrupted run: keep the rows --output already holds and encode the rest.
    #[arg(long, requires = "output")]
    pub resume: bool,
    /// CUDA devices to embed on, comma-separated (default with --device cuda: every visible
    /// device). Batches go to whichever device is free; the output keeps the input order.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub devices: Vec<usize>,
    /// Embed only shard K of N (K from 0) of --input: the lines whose first byte lies in bytes
    /// [K*S/N, (K+1)*S/N) of the S-byte file. The N shards' outputs concatenated in K order are
    /// the unsharded output; each shard resumes on its own with --resume. In a Kubernetes Indexed
    /// Job: `--shard $(JOB_COMPLETION_INDEX)/N`.
    #[arg(long, value_name = "K/N", env = "FUSEBERT_SHARD")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Every TEXT (or stdin line) is a pair `FIRST<TAB>SECOND`, encoded as two segments.
    #[arg(long)]
    pub pairs: bool,
}

#[derive(Debug, Args)]
pub struct RerankArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The query every TEXT is scored against (the pair's first segment).
    #[arg(long, value_name = "Q")]
    pub query: String,
}

fn parse_pooling(s: &str) -> std::result::Result<Pooling, String> {
    Pooling::parse(s).ok_or_else(|| format!("unknown pooling mode `{s}` (supported: {})", Pooling::names()))
}

/// The model and its tokenizer with the input limit of `--max-length` (checked against the
/// position table).
/// The model folder of `--model` as a pipeline on `--device` / `--precision`, inputs capped at
/// `--max-length` when given.
fn open(run: &RunArgs) -> Result<Pipeline> {
    let (backend, _) = forward::backend(run.device, run.precision)?;
    open_on(run, backend)
}

/// [`open`] on a given backend (one CUDA device of several).
fn open_on(run: &RunArgs, backend: fusebert::Backend) -> Result<Pipeline> {
    let dir = input::model_dir(run.model.clone())?;
    let (_, precision) = forward::backend(run.device, run.precision)?;
    let mut pipeline = Pipeline::open(&dir, backend, precision)?;
    if let Some(n) = run.max_length {
        pipeline.set_max_length(n).map_err(|e| Error::Input(format!("--max-length: {e}")))?;
    }
    Ok(pipeline)
}

#[derive(Serialize)]
struct ClassifyLine<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_pair: Option<&'a str>,
    tokens: usize,
    label: &'a str,
    score: f32,
    labels: Vec<LabelScore<'a>>,
}

#[derive(Serialize)]
struct LabelScore<'a> {
    label: &'a str,
    logit: f32,
    score: f32,
}

/// One line of `rerank` output (TEI's `/rerank` fields).
#[derive(Serialize)]
struct RerankLine {
    index: usize,
    score: f32,
    logit: f32,
}

/// The CUDA devices `embed` runs on: `--devices`, else every visible one.
fn embed_devices(a: &EmbedArgs) -> Result<Vec<usize>> {
    match (a.run.device, a.devices.is_empty()) {
        (DeviceKind::Cuda, true) => Ok((0..fusebert::kernels::device::cuda::device_count()?.max(1)).collect()),
        (DeviceKind::Cuda, false) => Ok(a.devices.clone()),
        (_, true) => Ok(vec![0]),
        (_, false) => Err(Error::Input("--devices applies to --device cuda".into())),
    }
}

pub fn embed(mut a: EmbedArgs) -> Result<()> {
    if let (Some(shard), None) = (a.shard, &a.run.stream.input) {
        // before the output is opened (and truncated)
        return Err(Error::Input(format!(
            "--shard {shard} needs --input FILE: a shard is a byte range of a file, not of arguments or stdin"
        )));
    }
    a.run.stream.shard = a.shard;
    let devices = embed_devices(&a)?;
    let mut pipelines = Vec::with_capacity(devices.len());
    for &d in &devices {
        let mut p =
            if a.run.device == DeviceKind::Cuda { open_on(&a.run, fusebert::Backend::Cuda(d))? } else { open(&a.run)? };
        let sentence = p.sentence_config_mut();
        if let Some(mode) = a.pooling {
            sentence.pooling = mode;
        }
        if a.normalize || a.no_normalize {
            sentence.normalize = a.normalize;
        }
        pipelines.push(p);
    }
    let pipeline = &pipelines[0];
    let prompt = pipeline.sentence_config().choose_prompt(a.prompt.as_deref(), a.prompt_name.as_deref())?;
    let mut out = open_output(a.output.as_deref(), pipeline.embedding_size(), a.resume)?;
    // The tokenizer is the pipeline's (the same policy object), cloned so that encoding and the
    // forward pass can be two closures.
    let tokenizer = pipeline.tokenizer()?.clone();
    let prompt_tokens = match &prompt {
        Some(p) => tokenizer.prompt_tokens(p)?,
        None => 0,
    };
    let encode = |_: usize, text: &str| match &prompt {
        Some(p) => tokenizer.encode_batch(&[format!("{p}{text}")], a.run.truncate),
        None => tokenizer.encode_batch(&[text], a.run.truncate),
    };
    let workers: Vec<_> = pipelines.iter_mut().map(|p| move |b: &Batch| p.embed_batch(b, prompt_tokens)).collect();
    let skip = out.rows_done();
    stream::run(a.run.texts.clone(), &a.run.stream, encode, workers, skip, |done| {
        let rows: Vec<Row> = (done.texts.iter().zip(done.tokens).zip(done.output))
            .map(|((text, &tokens), e)| Row { text, tokens, embedding: e })
            .collect();
        out.write(&rows)
    })?;
    out.finish()
}

fn split_pair(index: usize, text: &str) -> Result<(&str, &str)> {
    text.split_once('\t')
        .ok_or_else(|| Error::Input(format!("--pairs: input {index} has no TAB between its two texts: {text:?}")))
}

/// The logits of every sequence of a classifier forward pass.
pub fn classify(a: ClassifyArgs) -> Result<()> {
    let mut pipeline = open(&a.run)?;
    let labels = pipeline.classifier().map_err(use_embed)?.labels.clone();
    let tokenizer = pipeline.tokenizer()?.clone();
    let encode = |index: usize, text: &str| {
        if a.pairs {
            let (first, second) = split_pair(index, text)?;
            tokenizer.encode_pairs(&[(first, second)], a.run.truncate)
        } else {
            tokenizer.encode_batch(&[text], a.run.truncate)
        }
    };
    let forward = |b: &Batch| pipeline.logits_batch(b);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    stream::run(a.run.texts.clone(), &a.run.stream, encode, vec![forward], 0, |done| {
        for ((text, &tokens), logits) in done.texts.iter().zip(done.tokens).zip(done.output) {
            let Classification { logits, scores, best } = Classification::from_logits(logits.clone());
            let per_label = labels
                .iter()
                .zip(logits.iter().zip(&scores))
                .map(|(l, (&logit, &score))| LabelScore { label: l, logit, score })
                .collect();
            // the pair was checked when it was encoded
            let (text, text_pair) = match text.split_once('\t') {
                Some((first, second)) if a.pairs => (first, Some(second)),
                _ => (text.as_str(), None),
            };
            let line =
                ClassifyLine { text, text_pair, tokens, label: &labels[best], score: scores[best], labels: per_label };
            write_line(&mut w, &line)?;
        }
        w.flush().map_err(|e| Error::io("<stdout>", e))
    })
}

/// `rerank`: the texts stream through the model like `embed`'s; only each text's index and
/// score are kept (12 bytes a text) to print them best first at the end.
pub fn rerank(a: RerankArgs) -> Result<()> {
    let mut pipeline = open(&a.run)?;
    let n = pipeline.classifier().map_err(use_embed)?.labels.len();
    if n != 1 {
        return Err(Error::Input(format!(
            "rerank needs a cross-encoder with one logit; model {} has {n} labels: use `fusebert classify --pairs`",
            pipeline.model().dir.display()
        )));
    }
    let tokenizer = pipeline.tokenizer()?.clone();
    let encode = |_: usize, text: &str| tokenizer.encode_pairs(&[(a.query.as_str(), text)], a.run.truncate);
    let forward = |b: &Batch| pipeline.logits_batch(b);
    let mut lines = Vec::new();
    stream::run(a.run.texts.clone(), &a.run.stream, encode, vec![forward], 0, |done| {
        for logits in done.output {
            let logit = logits[0];
            lines.push(RerankLine { index: lines.len(), score: sigmoid(logit), logit });
        }
        Ok(())
    })?;
    // Best first; equal scores keep input order (a stable sort).
    lines.sort_by(|a, b| b.score.total_cmp(&a.score));
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for line in &lines {
        write_line(&mut w, line)?;
    }
    w.flush().map_err(|e| Error::io("<stdout>", e))
}

/// A model with no classifier: the CLI's advice on top of the library's error.
fn use_embed(e: Error) -> Error {
    match e {
        Error::Input(m) => Error::Input(format!("{m}: use `fusebert embed`")),
        other => other,
    }
}

/// One compact JSON object and a newline.
fn write_line<T: Serialize>(w: &mut impl Write, value: &T) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| Error::Other(format!("JSON output: {e}")))?;
    writeln!(w, "{line}").map_err(|e| Error::io("<stdout>", e))
}
