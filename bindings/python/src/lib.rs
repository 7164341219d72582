//! `fusebert._fusebert`: the extension module behind the `fusebert` Python package.
//!
//! One class, `Model`: a model folder opened as a [`fusebert::Pipeline`] on a backend, with the
//! calls the Python layer (`fusebert.SentenceTransformer`, `fusebert.CrossEncoder`) needs. It
//! uses the pipeline exactly as the CLI's `embed` / `rerank` / `classify` do: the model's own
//! tokenisation policy (special tokens, token types, position offset, prompts and their pooling
//! mask, `max_seq_length`), texts packed into batches under a token budget in input order, then
//! the folder's modules (pooling, Dense, Normalize).
//!
//! - The GIL is released (`Python::detach`) around every tokenisation and forward pass; it is
//!   taken back between batches to report progress and to let Ctrl-C interrupt a long call.
//! - Results are returned as NumPy arrays that own the Rust buffer (no copy).
//! - Errors are the Python exceptions of `fusebert.errors` (a `FusebertError` hierarchy); a Rust
//!   panic is caught and raised as `FusebertError`, never as pyo3's `PanicException`.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use fusebert::tokenize::Batch;
use fusebert::{Backend, BatchPlanner, Budget, Error, Pipeline, Precision};

pyo3::import_exception!(fusebert.errors, FusebertError);
pyo3::import_exception!(fusebert.errors, ModelLoadError);
pyo3::import_exception!(fusebert.errors, InputTooLongError);
pyo3::import_exception!(fusebert.errors, InvalidInputError);
pyo3::import_exception!(fusebert.errors, NoCudaDeviceError);
pyo3::import_exception!(fusebert.errors, DeviceError);

/// A library error on its way to Python (the orphan rule forbids `From<fusebert::Error> for
/// PyErr`).
struct PyFbError(Error);

impl From<Error> for PyFbError {
    fn from(e: Error) -> Self {
        PyFbError(e)
    }
}

impl From<PyFbError> for PyErr {
    fn from(PyFbError(e): PyFbError) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::ModelDirMissing(_)
            | Error::FileMissing { .. }
            | Error::Io { .. }
            | Error::Config { .. }
            | Error::Safetensors { .. }
            | Error::TensorMissing { .. }
            | Error::WeightsMissing { .. }
            | Error::TensorShape { .. }
            | Error::TensorDtype { .. }
            | Error::Tokenizer { .. } => ModelLoadError::new_err(msg),
            Error::InputTooLong { .. } => InputTooLongError::new_err(msg),
            Error::Input(_) => InvalidInputError::new_err(msg),
            Error::NoCudaDevice(_) => NoCudaDeviceError::new_err(msg),
            Error::Cuda { .. }
            | Error::Kernel { .. }
            | Error::KernelArgs { .. }
            | Error::PtxParse { .. }
            | Error::Emulator(_)
            | Error::Sanitizer(_)
            | Error::Memory(_) => DeviceError::new_err(msg),
            _ => FusebertError::new_err(msg),
        }
    }
}

type PyResult2<T> = Result<T, PyFbError>;

/// Runs `f`, turning a panic into an error (a panic must not reach Python as
/// `PanicException`, a `BaseException` that `except Exception` does not catch).
fn guarded<T>(what: &str, f: impl FnOnce() -> fusebert::Result<T>) -> fusebert::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let detail = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Other(format!("internal error during {what}: {detail}")))
    })
}

/// `"cpu"`, `"emu"`, `"cuda"`, `"cuda:N"` and a precision name as the pipeline's backend and
/// precision (the CPU reference computes in f32 only; devices default to f16).
fn backend(device: &str, precision: Option<&str>) -> fusebert::Result<(Backend, Precision)> {
    let backend = match device {
        "cpu" => Backend::Cpu,
        "emu" | "emulator" => Backend::Emulator,
        "cuda" => Backend::Cuda(0),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Backend::Cuda(n),
            _ => {
                return Err(Error::Input(format!(
                    "unknown device {device:?}: expected \"cpu\", \"cuda\", \"cuda:N\" or \"emu\""
                )))
            }
        },
    };
    let precision = match (backend, precision) {
        (Backend::Cpu, None | Some("f32" | "float32")) => Precision::F16, // unused by the CPU reference
        (Backend::Cpu, Some(p)) => {
            return Err(Error::Input(format!(
                "precision {p:?} applies to the devices (\"cuda\", \"emu\"); the cpu reference computes in f32"
            )))
        }
        (_, None | Some("f16" | "float16")) => Precision::F16,
        (_, Some("int8")) => Precision::Int8,
        (_, Some(p)) => {
            return Err(Error::Input(format!(
                "unknown precision {p:?} on device {device:?}: expected \"f16\" or \"int8\" (\"f32\" is the cpu's)"
            )))
        }
    };
    Ok((backend, precision))
}

/// The sequences `range` of `batch` as a batch of their own (keeping the position offset).
fn sub_batch(batch: &Batch, range: std::ops::Range<usize>) -> fusebert::Result<Batch> {
    let offset = batch.packed.position_ids.first().copied().unwrap_or(0);
    let sub = Batch::new(batch.input_ids[range.clone()].to_vec(), batch.token_type_ids[range].to_vec())?;
    Ok(sub.with_position_offset(offset))
}

/// A model folder opened on a device: what `fusebert.SentenceTransformer` and
/// `fusebert.CrossEncoder` wrap.
#[pyclass(frozen, module = "fusebert._fusebert")]
struct Model {
    pipeline: Mutex<Pipeline>,
    /// `threads=`: a pool of its own; `None`: rayon's global pool (`RAYON_NUM_THREADS`, else
    /// every core).
    pool: Option<rayon::ThreadPool>,
    device: String,
}

impl Model {
    fn lock(&self) -> fusebert::Result<MutexGuard<'_, Pipeline>> {
        self.pipeline
            .lock()
            .map_err(|_| Error::Other("the model is unusable after an internal error in an earlier call".into()))
    }

    /// Runs `f` on this model's threads, with panics turned into errors.
    fn run<T: Send>(&self, what: &str, f: impl FnOnce() -> fusebert::Result<T> + Send) -> fusebert::Result<T> {
        match &self.pool {
            Some(pool) => pool.install(|| guarded(what, f)),
            None => guarded(what, f),
        }
    }

    /// Runs `forward` on every planned batch of `batch` with the GIL released, calling
    /// `progress(texts done)` between batches with the GIL held (and checking for Ctrl-C); the
    /// rows of each batch are appended to one flat buffer of `width` per row.
    fn batched(
        &self,
        py: Python<'_>,
        batch: &Batch,
        max_texts: usize,
        width: usize,
        progress: Option<&Bound<'_, PyAny>>,
        forward: impl Fn(&mut Pipeline, &Batch) -> fusebert::Result<Vec<Vec<f32>>> + Sync,
    ) -> PyResult<Vec<f32>> {
        let mut flat = Vec::with_capacity(batch.len() * width);
        // the CLI's batches: consecutive texts under its token budget, at most `max_texts` each
        let budget = Budget { texts: max_texts, ..Budget::default() };
        for range in BatchPlanner::ranges(budget, &batch.lengths) {
            let k = range.len();
            let rows = py.detach(|| {
                self.run("the forward pass", || {
                    let sub = sub_batch(batch, range)?;
                    forward(&mut *self.lock()?, &sub)
                })
            });
            for row in rows.map_err(PyFbError)? {
                if row.len() != width {
                    return Err(PyFbError(Error::Other(format!(
                        "a forward pass returned {} values per row, expected {width}",
                        row.len()
                    )))
                    .into());
                }
                flat.extend_from_slice(&row);
            }
            py.check_signals()?;
            if let Some(cb) = progress {
                cb.call1((k,))?;
            }
        }
        Ok(flat)
    }
}

/// A NumPy array `[rows, width]` owning `flat` (no copy).
fn to_numpy(py: Python<'_>, flat: Vec<f32>, rows: usize, width: usize) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let arr = Array2::from_shape_vec((rows, width), flat)
        .map_err(|e| PyFbError(Error::Other(format!("output shape: {e}"))))?;
    Ok(arr.into_pyarray(py))
}

#[pymethods]
impl Model {
    /// Opens the model folder `path` on `device` (`"cpu"`, `"emu"`, `"cuda"`, `"cuda:N"`) at
    /// `precision` (`None`: f32 on the cpu, f16 on a device; `"int8"` on a device).
    #[new]
    #[pyo3(signature = (path, device = "cpu", precision = None, threads = None))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        device: &str,
        precision: Option<&str>,
        threads: Option<usize>,
    ) -> PyResult<Model> {
        let (backend, precision) = backend(device, precision).map_err(PyFbError)?;
        let pool = match threads {
            None => None,
            Some(0) => return Err(PyFbError(Error::Input("threads must be at least 1".into())).into()),
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("fusebert-{i}"))
                    .build()
                    .map_err(|e| PyFbError(Error::Other(format!("thread pool: {e}"))))?,
            ),
        };
        let open = || guarded("loading the model", || Pipeline::open(&path, backend, precision));
        let pipeline = py
            .detach(|| match &pool {
                Some(p) => p.install(open),
                None => open(),
            })
            .map_err(PyFbError)?;
        Ok(Model { pipeline: Mutex::new(pipeline), pool, device: device.to_string() })
    }

    /// The device string the model was opened on.
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// The width of a sentence embedding (after the folder's Dense modules).
    #[getter]
    fn dim(&self) -> PyResult2<usize> {
        Ok(self.lock()?.embedding_size())
    }

    /// The hidden size of the encoder.
    #[getter]
    fn hidden_size(&self) -> PyResult2<usize> {
        Ok(self.lock()?.model().config.hidden_size)
    }

    /// The input limit in tokens, special tokens included (sentence-transformers'
    /// `max_seq_length`).
    #[getter]
    fn max_seq_length(&self) -> PyResult2<usize> {
        Ok(self.lock()?.tokenizer()?.max_len())
    }

    #[setter]
    fn set_max_seq_length(&self, n: usize) -> PyResult2<()> {
        Ok(self.lock()?.set_max_length(n)?)
    }

    /// The most `max_seq_length` may be (the position table).
    #[getter]
    fn max_position_tokens(&self) -> PyResult2<usize> {
        Ok(self.lock()?.model().config.max_input_tokens())
    }

    /// Whether the folder's modules end in Normalize.
    #[getter]
    fn normalize(&self) -> PyResult2<bool> {
        Ok(self.lock()?.sentence_config().normalize)
    }

    /// The folder's prompts (`config_sentence_transformers.json`).
    #[getter]
    fn prompts(&self) -> PyResult2<std::collections::BTreeMap<String, String>> {
        Ok(self.lock()?.sentence_config().prompts.clone())
    }

    /// The folder's `default_prompt_name`.
    #[getter]
    fn default_prompt_name(&self) -> PyResult2<Option<String>> {
        Ok(self.lock()?.sentence_config().default_prompt_name.clone())
    }

    /// The classifier's label names (empty for a model with no classifier head).
    #[getter]
    fn labels(&self) -> PyResult2<Vec<String>> {
        let p = self.lock()?;
        Ok(p.classifier().map(|c| c.labels.clone()).unwrap_or_default())
    }

    /// Token counts of `texts` (special tokens included, after truncation when `truncate`).
    #[pyo3(signature = (texts, *, truncate = true))]
    fn count_tokens(&self, py: Python<'_>, texts: Vec<String>, truncate: bool) -> PyResult2<Vec<usize>> {
        let lengths =
            py.detach(|| self.run("tokenisation", || Ok(self.lock()?.tokenize(&texts, truncate)?.lengths)))?;
        Ok(lengths)
    }

    /// Sentence embeddings `[len(texts), dim]` as `SentenceTransformer.encode` gives them for
    /// this folder: `prompt` in front of every text (its tokens masked out of pooling when the
    /// folder says `include_prompt: false`), inputs over `max_seq_length` cut when `truncate`
    /// (else `InputTooLongError`), then pooling, Dense and, when `normalize` (`None`: the
    /// folder's Normalize module decides), L2 normalisation. Batches hold at most `max_texts`
    /// texts and 8192 tokens; the results do not depend on either.
    #[pyo3(signature = (texts, *, prompt = None, truncate = true, normalize = None, max_texts = 1024, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        prompt: Option<String>,
        truncate: bool,
        normalize: Option<bool>,
        max_texts: usize,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let width = self.lock().map_err(PyFbError)?.embedding_size();
        let n = texts.len();
        if n == 0 {
            return to_numpy(py, Vec::new(), 0, width);
        }
        let (batch, prompt_tokens) = py
            .detach(|| self.run("tokenisation", || self.lock()?.tokenize_prompted(&texts, prompt.as_deref(), truncate)))
            .map_err(PyFbError)?;
        drop(texts);
        let flat = self.batched(py, &batch, max_texts, width, progress.as_ref(), |p, b| {
            let folder = p.sentence_config().normalize;
            if let Some(norm) = normalize {
                p.sentence_config_mut().normalize = norm;
            }
            let out = p.embed_batch(b, prompt_tokens);
            p.sentence_config_mut().normalize = folder;
            out
        })?;
        to_numpy(py, flat, n, width)
    }

    /// The classifier's logits `[len(pairs or texts), labels]`: of text pairs (a cross-encoder:
    /// `[CLS] a [SEP] b [SEP]`, the longer text cut first when `truncate`) or of single texts.
    #[pyo3(signature = (inputs, *, truncate = true, max_texts = 1024, progress = None))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<Vec<String>>,
        truncate: bool,
        max_texts: usize,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let width = self.lock().and_then(|p| Ok(p.classifier()?.labels.len())).map_err(PyFbError)?;
        let n = inputs.len();
        if n == 0 {
            return to_numpy(py, Vec::new(), 0, width);
        }
        let batch = py
            .detach(|| {
                self.run("tokenisation", || {
                    let p = self.lock()?;
                    match inputs.iter().map(Vec::len).max() {
                        Some(1) if inputs.iter().all(|i| i.len() == 1) => {
                            let texts: Vec<&str> = inputs.iter().map(|i| i[0].as_str()).collect();
                            p.tokenize(&texts, truncate)
                        }
                        _ => {
                            let pairs = inputs
                                .iter()
                                .enumerate()
                                .map(|(i, pair)| match pair.as_slice() {
                                    [a, b] => Ok((a.as_str(), b.as_str())),
                                    _ => Err(Error::Input(format!(
                                        "input {i} has {} texts: give every input as one text or every input as a pair",
                                        pair.len()
                                    ))),
                                })
                                .collect::<fusebert::Result<Vec<_>>>()?;
                            p.tokenize_pairs(&pairs, truncate)
                        }
                    }
                })
            })
            .map_err(PyFbError)?;
        drop(inputs);
        let flat = self.batched(py, &batch, max_texts, width, progress.as_ref(), |p, b| p.logits_batch(b))?;
        to_numpy(py, flat, n, width)
    }

    fn __repr__(&self) -> String {
        match self.lock() {
            Ok(p) => format!("Model({:?}, device={:?})", p.model().dir.display().to_string(), self.device),
            Err(_) => "Model(<unusable>)".into(),
        }
    }
}

/// Whether a CUDA driver and at least one GPU are present (never raises).
#[pyfunction]
fn cuda_available(py: Python<'_>) -> bool {
    py.detach(|| {
        guarded("the CUDA probe", fusebert::kernels::device::cuda::device_count).map(|n| n > 0).unwrap_or(false)
    })
}

#[pymodule]
fn _fusebert(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(cuda_available, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
