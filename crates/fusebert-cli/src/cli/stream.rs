//! Corpus-scale runs of `embed` and `classify`: texts are read incrementally (arguments,
//! stdin or `--input`), encoded in packed batches under a token budget, and each batch's
//! results are written before the next batch is read, in input order; memory stays flat in the
//! number of texts. `--resume` continues from what `--output` already holds.
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use fusebert::tokenize::Batch;
use fusebert::{Error, Result};
use fusebert_cli::corpus::{BatchPlanner, Budget, InputFormat, Shard, TextReader};

/// Where texts come from and how they are batched.
#[derive(Debug, Args, Clone)]
pub struct StreamArgs {
    /// Read texts from FILE (one per line; JSON lines when it ends in .jsonl/.ndjson or with
    /// --field) instead of the arguments or stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// JSON lines input: the field holding the text (default `text`).
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Most tokens in one packed batch (a longer single text forms its own batch).
    #[arg(long, value_name = "N", default_value_t = Budget::default().tokens)]
    pub batch_tokens: usize,
    /// Print a one-line summary (texts, tokens, seconds, tokens/s) on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Only this shard of `--input` (`embed --shard K/N`, see `fusebert_cli::corpus::shard`); an
    /// empty shard is a success with no rows.
    #[arg(skip)]
    pub shard: Option<Shard>,
}

/// One finished batch: its texts (in input order), their token counts and the forward pass's
/// results.
pub struct Done<'a, R> {
    pub texts: &'a [String],
    pub tokens: &'a [usize],
    pub output: &'a R,
}

/// Source of texts: the arguments, or a reader.
enum Source {
    Args(std::vec::IntoIter<String>),
    Reader(TextReader<Box<dyn BufRead>>),
}

impl Source {
    fn open(texts: Vec<String>, args: &StreamArgs) -> Result<(Source, Option<usize>)> {
        if let Some(path) = &args.input {
            if !texts.is_empty() {
                return Err(Error::Input("give texts as arguments or with --input, not both".into()));
            }
            let jsonl =
                args.field.is_some() || matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson"));
            let format = if jsonl {
                InputFormat::Jsonl { field: args.field.clone().unwrap_or("text".into()) }
            } else {
                InputFormat::Lines
            };
            let (reader, total, name): (Box<dyn BufRead>, _, _) = match args.shard {
                Some(shard) => {
                    let (reader, (start, end)) = shard.open(path)?;
                    // errors name the shard's byte range: its line numbers count from its start
                    let name = format!("{} (shard {shard}, bytes {start}..{end})", path.display());
                    (reader, count_lines(path, start..end)?, name)
                }
                None => {
                    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                    (Box::new(BufReader::new(file)), count_lines(path, 0..u64::MAX)?, path.display().to_string())
                }
            };
            return Ok((Source::Reader(TextReader::new(reader, format, name)), Some(total)));
        }
        if let Some(shard) = args.shard {
            return Err(Error::Input(format!(
                "--shard {shard} needs --input FILE: a shard is a byte range of a file, not of arguments or stdin"
            )));
        }
        if !texts.is_empty() {
            let n = texts.len();
            return Ok((Source::Args(texts.into_iter()), Some(n)));
        }
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Error::Input("no TEXT given: pass texts as arguments, --input FILE, or lines on stdin".into()));
        }
        let format = match &args.field {
            Some(f) => InputFormat::Jsonl { field: f.clone() },
            None => InputFormat::Lines,
        };
        let reader: Box<dyn BufRead> = Box::new(BufReader::new(stdin));
        Ok((Source::Reader(TextReader::new(reader, format, "<stdin>")), None))
    }

    fn next(&mut self) -> Result<Option<String>> {
        match self {
            Source::Args(it) => Ok(it.next()),
            Source::Reader(r) => r.next_text(),
        }
    }
}

/// Lines in bytes `range` of a file (for the progress bar's total), read in blocks.
fn count_lines(path: &Path, range: std::ops::Range<u64>) -> Result<usize> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(std::io::SeekFrom::Start(range.start)).map_err(|e| Error::io(path, e))?;
    let mut f = f.take(range.end - range.start);
    let (mut n, mut buf, mut last) = (0, vec![0u8; 1 << 16], b'\n');
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count();
        last = buf[k - 1];
    }
    Ok(n + usize::from(last != b'\n'))
}

/// Runs the whole input through `workers` (each a [`fusebert::Pipeline`] call, one per device) in
/// budgeted batches, skipping the first `skip` texts (already in a resumed output), calling
/// `sink` with each finished batch in input order. `encode` turns input number `index` (counted
/// from 0, skipped inputs included) into a one-sequence batch (tokenizer, prompt, pairs,
/// truncation: the caller's choice). With one worker the batches run on this thread; with
/// several, each worker runs on its own thread and takes the next batch when it is free (at most
/// two batches per worker in flight), and the results are put back in input order.
pub fn run<R: Send, W: FnMut(&Batch) -> Result<R> + Send>(
    texts: Vec<String>,
    args: &StreamArgs,
    encode: impl Fn(usize, &str) -> Result<Batch>,
    workers: Vec<W>,
    skip: usize,
    mut sink: impl FnMut(Done<'_, R>) -> Result<()>,
) -> Result<()> {
    if workers.is_empty() {
        return Err(Error::Other("no device to run on".into()));
    }
    if workers.len() == 1 {
        let mut forward = workers.into_iter().next().expect("one worker");
        return batches(texts, args, encode, skip, |batch, texts| {
            let output = forward(&batch)?;
            sink(Done { texts: &texts, tokens: &batch.lengths, output: &output })
        });
    }
    use std::collections::BTreeMap;
    use std::sync::{mpsc, Arc, Mutex};
    let n = workers.len();
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Batch)>(n);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel::<(usize, Batch, Result<R>)>();
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut w| {
                let (rx, tx) = (job_rx.clone(), res_tx.clone());
                scope.spawn(move || {
                    let mut ran = 0usize;
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((seq, batch)) = job else { break };
                        let out = w(&batch);
                        ran += 1;
                        if tx.send((seq, batch, out)).is_err() {
                            break;
                        }
                    }
                    ran
                })
            })
            .collect();
        drop(res_tx);
        let mut texts_of: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut ready: BTreeMap<usize, (Batch, Result<R>)> = BTreeMap::new();
        let (mut sent, mut emitted) = (0usize, 0usize);
        // Writes every finished batch that is next in input order.
        let mut emit = |ready: &mut BTreeMap<usize, (Batch, Result<R>)>,
                        texts_of: &mut BTreeMap<usize, Vec<String>>,
                        emitted: &mut usize|
         -> Result<()> {
            while let Some((batch, out)) = ready.remove(emitted) {
                let texts = texts_of.remove(emitted).expect("texts of a sent batch");
                sink(Done { texts: &texts, tokens: &batch.lengths, output: &out? })?;
                *emitted += 1;
            }
            Ok(())
        };
        let lost = || Error::Other("a device thread stopped".into());
        let read = batches(texts, args, encode, skip, |batch, texts| {
            // Bound what is in flight or waiting to be written: two batches per worker.
            while sent - emitted >= 2 * n {
                let (seq, b, out) = res_rx.recv().map_err(|_| lost())?;
                ready.insert(seq, (b, out));
                emit(&mut ready, &mut texts_of, &mut emitted)?;
            }
            texts_of.insert(sent, texts);
            job_tx.send((sent, batch)).map_err(|_| lost())?;
            sent += 1;
            while let Ok((seq, b, out)) = res_rx.try_recv() {
                ready.insert(seq, (b, out));
            }
            emit(&mut ready, &mut texts_of, &mut emitted)
        });
        drop(job_tx);
        read?;
        while emitted < sent {
            let (seq, b, out) = res_rx.recv().map_err(|_| lost())?;
            ready.insert(seq, (b, out));
            emit(&mut ready, &mut texts_of, &mut emitted)?;
        }
        let per_device: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
        if args.stats {
            eprintln!("batches per device: {per_device:?}");
        }
        Ok(())
    })
}

/// Reads every input, encodes it and packs budgeted batches, handing each (with its texts) to
/// `batch_done` in input order; progress and `--stats` as each batch is handed over.
fn batches(
    texts: Vec<String>,
    args: &StreamArgs,
    encode: impl Fn(usize, &str) -> Result<Batch>,
    skip: usize,
    mut batch_done: impl FnMut(Batch, Vec<String>) -> Result<()>,
) -> Result<()> {
    let (mut source, total) = Source::open(texts, args)?;
    if args.batch_tokens == 0 {
        return Err(Error::Input("--batch-tokens must be at least 1".into()));
    }
    let start = Instant::now();
    let progress = Progress::new(total, skip);
    let mut index = 0usize;
    let mut skipped = 0usize;
    while skipped < skip {
        if source.next()?.is_none() {
            return Err(Error::Input(format!(
                "--resume: the output already holds {skip} rows but the input has only {skipped} texts"
            )));
        }
        skipped += 1;
        index += 1;
    }
    let budget = Budget { tokens: args.batch_tokens, ..Budget::default() };
    let mut planner = BatchPlanner::new(budget);
    let (mut pending, mut ids, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_texts, mut n_tokens) = (0usize, 0usize);
    let offset = std::cell::Cell::new(0u32);
    let mut flush = |pending: &mut Vec<String>, ids: &mut Vec<Vec<u32>>, types: &mut Vec<Vec<u32>>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        // The one-sequence batches carried the model's position offset (RoBERTa): keep it.
        let batch = Batch::new(std::mem::take(ids), std::mem::take(types))?.with_position_offset(offset.get());
        let (k, tokens) = (pending.len(), batch.total_tokens());
        batch_done(batch, std::mem::take(pending))?;
        n_texts += k;
        n_tokens += tokens;
        progress.advance(k, tokens);
        Ok(())
    };
    while let Some(text) = source.next()? {
        let one = encode(index, &text).map_err(|e| match e {
            Error::InputTooLong { tokens, limit, .. } => Error::InputTooLong { index, tokens, limit },
            other => other,
        })?;
        let len = one.lengths[0];
        offset.set(one.packed.position_ids.first().copied().unwrap_or(0));
        if !planner.fits(len) {
            flush(&mut pending, &mut ids, &mut types)?;
            planner.reset();
        }
        planner.push(len);
        let (mut i, mut t) = (one.input_ids, one.token_type_ids);
        ids.push(i.swap_remove(0));
        types.push(t.swap_remove(0));
        pending.push(text);
        index += 1;
    }
    flush(&mut pending, &mut ids, &mut types)?;
    progress.finish();
    // An empty shard is a normal part of a split (more shards than lines): no rows, no error.
    if index == 0 && args.shard.is_none() {
        return Err(Error::Input("no input: no text in the arguments, --input or stdin".into()));
    }
    if args.stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{n_texts} texts, {n_tokens} tokens in {secs:.2} s: {:.0} tokens/s, {:.1} texts/s",
            n_tokens as f64 / secs.max(1e-9),
            n_texts as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Progress(Option<indicatif::ProgressBar>, std::cell::Cell<usize>);

impl Progress {
    fn new(total: Option<usize>, done: usize) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None, Default::default());
        }
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n as u64),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} texts, {msg} (ETA {eta})",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(s) = style {
            bar.set_style(s);
        }
        bar.set_position(done as u64);
        Progress(Some(bar), Default::default())
    }

    fn advance(&self, texts: usize, tokens: usize) {
        self.1.set(self.1.get() + tokens);
        if let Some(bar) = &self.0 {
            bar.inc(texts as u64);
            let secs = bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tokens/s", self.1.get() as f64 / secs));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
