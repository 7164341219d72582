//! TEI's routes: `/embed`, `/embed_all`, `/predict`, `/rerank`, `/tokenize`, `/info`, and the
//! open ones `/health`, `/ready`, `/metrics`. Request and reply shapes follow TEI
//! (`router/src/http/types.rs`), so its clients work by changing the URL.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::Input;
use crate::error::{ApiError, Flavor, Kind};
use crate::extract::{check_count, check_dimensions, encode_error, finish_embedding, guarded, infer, read_json};
use crate::state::AppState;
use fusebert::model::forward::OutputSelection;
use fusebert::model::reference::SequenceOutput;

type Shared = State<Arc<AppState>>;

/// Applies `prompt_name`'s prefix to every text.
fn with_prompt(state: &AppState, texts: Vec<String>, prompt_name: Option<&str>) -> Result<Vec<Input>, ApiError> {
    let prefix = match prompt_name {
        Some(name) => state.encoder.prompt(name).map_err(|e| encode_error(0, e).with_param("prompt_name"))?,
        None => "",
    };
    Ok(texts.into_iter().map(|t| Input::Text(if prefix.is_empty() { t } else { format!("{prefix}{t}") })).collect())
}

/// `inputs` of `/embed` and `/embed_all`: a string, token ids, or a list of either.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInputs {
    One(String),
    Ids(Vec<u32>),
    Many(Vec<EmbedItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedItem {
    Text(String),
    Ids(Vec<u32>),
}

impl EmbedInputs {
    fn into_inputs(self, state: &AppState, prompt_name: Option<&str>) -> Result<Vec<Input>, ApiError> {
        let items = match self {
            EmbedInputs::One(t) => vec![EmbedItem::Text(t)],
            // `[]` parses as empty token ids: it is an empty list of inputs.
            EmbedInputs::Ids(ids) if ids.is_empty() => Vec::new(),
            EmbedInputs::Ids(ids) => vec![EmbedItem::Ids(ids)],
            EmbedInputs::Many(v) => v,
        };
        check_count(state, items.len(), "inputs")?;
        items
            .into_iter()
            .map(|item| match item {
                EmbedItem::Text(t) => Ok(with_prompt(state, vec![t], prompt_name)?.remove(0)),
                EmbedItem::Ids(ids) if prompt_name.is_none() => Ok(Input::Ids(ids)),
                EmbedItem::Ids(_) => Err(ApiError::validation("`prompt_name` cannot be used with token ids")),
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    inputs: EmbedInputs,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    #[serde(default = "yes")]
    normalize: bool,
    dimensions: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Only right truncation is implemented (TEI's default).
fn check_direction(d: Option<&str>) -> Result<(), ApiError> {
    match d {
        None | Some("right" | "Right") => Ok(()),
        Some(other) => {
            Err(ApiError::validation(format!("truncation_direction `{other}` is not supported: only \"right\""))
                .with_param("truncation_direction"))
        }
    }
}

/// The response with its `x-compute-tokens` header (what TEI reports).
fn with_tokens(mut resp: Response, tokens: usize) -> Response {
    resp.headers_mut().insert("x-compute-tokens", HeaderValue::from(tokens));
    resp
}

pub async fn embed(State(state): Shared, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: EmbedRequest = read_json(&state, body, Flavor::Tei).await?;
        check_direction(req.truncation_direction.as_deref())?;
        check_dimensions(&state, req.dimensions)?;
        let inputs = req.inputs.into_inputs(&state, req.prompt_name.as_deref())?;
        let truncate = req.truncate.unwrap_or(state.opts.auto_truncate);
        let (out, tokens) = infer(&state, inputs, truncate, OutputSelection::POOLED).await?;
        let vectors: Vec<Vec<f32>> =
            out.into_iter().map(|s| finish_embedding(s.pooled, req.dimensions, req.normalize)).collect();
        Ok(with_tokens(Json(vectors).into_response(), tokens))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct EmbedAllRequest {
    inputs: EmbedInputs,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
}

pub async fn embed_all(State(state): Shared, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: EmbedAllRequest = read_json(&state, body, Flavor::Tei).await?;
        check_direction(req.truncation_direction.as_deref())?;
        let inputs = req.inputs.into_inputs(&state, req.prompt_name.as_deref())?;
        let wanted = OutputSelection { last_hidden_state: true, ..OutputSelection::NONE };
        let (out, tokens) = infer(&state, inputs, req.truncate.unwrap_or(state.opts.auto_truncate), wanted).await?;
        let h = state.encoder.info().hidden_size;
        let all: Vec<Vec<&[f32]>> = out.iter().map(|s| s.last_hidden_state.chunks(h).collect()).collect();
        Ok(with_tokens(Json(all).into_response(), tokens))
    })
    .await
}

/// `inputs` of `/predict`: a text, a pair `[a, b]`, or a list of `[a]` / `[a, b]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PredictInputs {
    One(String),
    Sequence(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    inputs: PredictInputs,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
}

#[derive(Debug, Serialize)]
struct LabelScore<'a> {
    score: f32,
    label: &'a str,
}

fn sequence(v: Vec<String>) -> Result<Input, ApiError> {
    let n = v.len();
    let mut it = v.into_iter();
    match (it.next(), it.next()) {
        (Some(a), None) => Ok(Input::Text(a)),
        (Some(a), Some(b)) if n == 2 => Ok(Input::Pair(a, b)),
        _ => Err(ApiError::validation(format!("each input must be [text] or [text, text_pair], got {n} strings"))
            .with_param("inputs")),
    }
}

/// The classifier labels, or a 424 saying why the route cannot be served.
fn labels<'a>(state: &'a AppState, route: &str) -> Result<&'a [String], ApiError> {
    state.encoder.info().labels.as_deref().ok_or_else(|| {
        ApiError::backend(format!(
            "{route} needs a sequence-classification model (a classifier head); {} is an embedding model: use /embed",
            state.encoder.info().model_id
        ))
    })
}

/// Softmax over the logits, or the sigmoid for a single label (as TEI); `raw` keeps logits.
fn scores(logits: &[f32], raw: bool) -> Vec<f32> {
    if raw {
        logits.to_vec()
    } else if logits.len() == 1 {
        vec![sigmoid(logits[0])]
    } else {
        fusebert::model::reference::softmax(logits)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn logits_of(s: &SequenceOutput) -> Result<&[f32], ApiError> {
    s.logits.as_deref().ok_or_else(|| ApiError::backend("the forward pass returned no logits"))
}

pub async fn predict(State(state): Shared, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: PredictRequest = read_json(&state, body, Flavor::Tei).await?;
        check_direction(req.truncation_direction.as_deref())?;
        let labels = labels(&state, "/predict")?;
        let (single, inputs) = match req.inputs {
            PredictInputs::One(t) => (true, vec![Input::Text(t)]),
            PredictInputs::Sequence(v) => (true, vec![sequence(v)?]),
            PredictInputs::Many(v) => (false, v.into_iter().map(sequence).collect::<Result<Vec<_>, _>>()?),
        };
        check_count(&state, inputs.len(), "inputs")?;
        let truncate = req.truncate.unwrap_or(state.opts.auto_truncate);
        let (out, tokens) = infer(&state, inputs, truncate, OutputSelection::LOGITS).await?;
        let mut all = Vec::with_capacity(out.len());
        for s in &out {
            let sc = scores(logits_of(s)?, req.raw_scores);
            let mut ls: Vec<LabelScore> =
                sc.iter().zip(labels).map(|(&score, label)| LabelScore { score, label }).collect();
            ls.sort_by(|a, b| b.score.total_cmp(&a.score));
            all.push(ls);
        }
        let resp = if single { Json(&all[0]).into_response() } else { Json(&all).into_response() };
        Ok(with_tokens(resp, tokens))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    query: String,
    texts: Vec<String>,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
}

#[derive(Debug, Serialize)]
struct Rank<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    score: f32,
}

pub async fn rerank(State(state): Shared, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: RerankRequest = read_json(&state, body, Flavor::Tei).await?;
        check_direction(req.truncation_direction.as_deref())?;
        let n_labels = labels(&state, "/rerank")?.len();
        if n_labels != 1 {
            return Err(ApiError::backend(format!(
                "/rerank needs a cross-encoder (a classifier with one label); this model has {n_labels} labels: use /predict"
            )));
        }
        check_count(&state, req.texts.len(), "texts")?;
        let inputs = req.texts.iter().map(|t| Input::Pair(req.query.clone(), t.clone())).collect();
        let truncate = req.truncate.unwrap_or(state.opts.auto_truncate);
        let (out, tokens) = infer(&state, inputs, truncate, OutputSelection::LOGITS).await?;
        let mut ranks = Vec::with_capacity(out.len());
        for (index, s) in out.iter().enumerate() {
            let score = scores(logits_of(s)?, req.raw_scores)[0];
            ranks.push(Rank { index, text: req.return_text.then(|| req.texts[index].as_str()), score });
        }
        ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(with_tokens(Json(ranks).into_response(), tokens))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TokenizeInputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    inputs: TokenizeInputs,
    #[serde(default = "yes")]
    add_special_tokens: bool,
    prompt_name: Option<String>,
}

/// `/tokenize` takes no admission permit and never touches the device (as TEI).
pub async fn tokenize(State(state): Shared, body: Body) -> Response {
    let work = async {
        let req: TokenizeRequest = read_json(&state, body, Flavor::Tei).await?;
        let texts = match req.inputs {
            TokenizeInputs::One(t) => vec![t],
            TokenizeInputs::Many(v) => v,
        };
        check_count(&state, texts.len(), "inputs")?;
        let inputs = with_prompt(&state, texts, req.prompt_name.as_deref())?;
        let mut all = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let Input::Text(t) = input else { unreachable!("with_prompt makes texts") };
            all.push(state.encoder.pieces(t, req.add_special_tokens).map_err(|e| encode_error(i, e))?);
        }
        Ok::<_, ApiError>(Json(all).into_response())
    };
    work.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn info(State(state): Shared) -> Response {
    let i = state.encoder.info();
    let model_type = match &i.labels {
        None => json!({ "embedding": { "pooling": i.pooling } }),
        Some(labels) => {
            let id2label: serde_json::Map<String, serde_json::Value> =
                labels.iter().enumerate().map(|(k, l)| (k.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, serde_json::Value> =
                labels.iter().enumerate().map(|(k, l)| (l.clone(), json!(k))).collect();
            let kind = if labels.len() == 1 { "reranker" } else { "classifier" };
            json!({ kind: { "id2label": id2label, "label2id": label2id } })
        }
    };
    let o = &state.opts;
    Json(json!({
        "model_id": i.model_id,
        "model_sha": null,
        "model_dtype": i.dtype,
        "served_model_name": i.model_id,
        "model_type": model_type,
        "max_concurrent_requests": o.max_concurrent_requests,
        "max_input_length": state.encoder.max_input_length(),
        "max_batch_tokens": o.max_batch_tokens,
        "max_batch_requests": (o.max_batch_requests != usize::MAX).then_some(o.max_batch_requests),
        "max_client_batch_size": o.max_client_batch_size,
        "auto_truncate": o.auto_truncate,
        "tokenization_workers": null,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "prompts": i.prompts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Liveness: answered on the HTTP task, never queued behind inference.
pub async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: 200 once the model is loaded and warmed up (the port is bound only then), 503
/// while draining.
pub async fn ready(State(state): Shared) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Kind::Unavailable, "draining: the server is shutting down")
            .into_response()
    }
}

pub async fn metrics(State(state): Shared) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
