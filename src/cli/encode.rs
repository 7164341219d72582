//! `fusebert embed` and `fusebert classify`: texts -> tokens -> forward pass -> JSON lines.
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use fusebert::corpus::{open_output, Row};
use fusebert::model::reference::Options;
use fusebert::model::BertModel;
use fusebert::tokenize::Tokenizer;
use fusebert::{Error, Result};

use super::forward::{DeviceKind, PrecisionArg};
use super::input;
use super::stream::{self, Engine, StreamArgs};

/// Options shared by every command that runs the model.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    /// Default: $FUSEBERT_MODEL, else the bundled all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Where the forward pass runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Precision of the device forward pass (default f16; not for --device cpu).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Cut inputs longer than the model's position limit (keeping the closing SEP token) instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Input texts; one per line of stdin (or of --input) when none is given.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// L2-normalise the embeddings (what sentence-transformers returns for this model).
    #[arg(long)]
    pub normalize: bool,
    /// Write the embeddings to FILE instead of stdout, by extension: .jsonl (the stdout lines),
    /// .npy (float32 [N, D]), .safetensors (`embeddings` [N, D] f32, `tokens` [N] i64).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Continue an interrupted run: keep the rows --output already holds and encode the rest.
    #[arg(long, requires = "output")]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Loads the model (checking it has a classifier head when one is needed) and its tokenizer.
fn load(run: &RunArgs, need_classifier: bool) -> Result<(BertModel, Tokenizer)> {
    let dir = input::model_dir(run.model.clone())?;
    let model = BertModel::load(&dir)?;
    if need_classifier && model.weights.classifier.is_none() {
        return Err(Error::Input(format!(
            "model {} has no classifier head (no classifier.weight / classifier.bias): use `fusebert embed`",
            dir.display()
        )));
    }
    let tokenizer = Tokenizer::from_model_dir(&dir, model.config.max_position_embeddings)?;
    Ok((model, tokenizer))
}

/// One line of `classify` output: the best label and every label's logit and score.
#[derive(Serialize)]
struct ClassifyLine<'a> {
    text: &'a str,
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

pub fn embed(a: EmbedArgs) -> Result<()> {
    let (model, tokenizer) = load(&a.run, false)?;
    let mut engine = Engine::new(a.run.device, a.run.precision, &model)?;
    let mut out = open_output(a.output.as_deref(), model.config.hidden_size, a.resume)?;
    let opts = Options { normalize: a.normalize };
    let encode = |text: &str| tokenizer.encode_batch(&[text], a.run.truncate);
    let skip = out.rows_done();
    stream::run(
        a.run.texts,
        &a.run.stream,
        encode,
        |b| engine.forward(b, &opts),
        skip,
        |done| {
            let rows: Vec<Row> = (done.texts.iter().zip(&done.output.sequences))
                .map(|(text, s)| Row { text, tokens: s.len, embedding: &s.mean_pooled })
                .collect();
            out.write(&rows)
        },
    )?;
    out.finish()
}

pub fn classify(a: ClassifyArgs) -> Result<()> {
    let (model, tokenizer) = load(&a.run, true)?;
    let mut engine = Engine::new(a.run.device, a.run.precision, &model)?;
    let labels = &model.weights.classifier.as_ref().expect("checked in load").labels;
    let encode = |text: &str| tokenizer.encode_batch(&[text], a.run.truncate);
    let forward = |b: &_| engine.forward(b, &Options::default());
    stream::run(a.run.texts, &a.run.stream, encode, forward, 0, |done| {
        let mut lines = Vec::with_capacity(done.texts.len());
        for (text, s) in done.texts.iter().zip(&done.output.sequences) {
            let (Some(logits), Some(scores)) = (s.logits.as_deref(), s.scores.as_deref()) else {
                return Err(Error::Other("the forward pass returned no logits".into()));
            };
            // argmax; the first of equal scores wins, as torch.argmax.
            let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
            let per_label = labels
                .iter()
                .zip(logits.iter().zip(scores))
                .map(|(l, (&logit, &score))| LabelScore { label: l, logit, score })
                .collect();
            lines.push(ClassifyLine {
                text,
                tokens: s.len,
                label: &labels[best],
                score: scores[best],
                labels: per_label,
            });
        }
        print_lines(lines.into_iter())
    })
}

/// One compact JSON object per line on stdout.
fn print_lines<T: Serialize>(values: impl Iterator<Item = T>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for v in values {
        let line = serde_json::to_string(&v).map_err(|e| Error::Other(format!("JSON output: {e}")))?;
        writeln!(w, "{line}").map_err(|e| Error::io("<stdout>", e))?;
    }
    w.flush().map_err(|e| Error::io("<stdout>", e))
}
