//! TEI's routes: `/embed`, `/embed_all`, `/predict`, `/rerank`, `/similarity`, `/tokenize`,
//! `/decode`, `/info`, `POST /` and `/invocations` (dispatching by model type), and the open ones
//! `/health` (also `GET /` and `/ping`), `/ready`, `/metrics`, `/api-doc/openapi.json`. Request and
//! reply shapes follow TEI (`router/src/http/types.rs`), so its clients work by changing the URL.
//! Every inference route also exists under `/models/NAME/` for each served model; without it
//! the first model answers.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::Input;
use crate::error::{ApiError, Flavor, Kind};
use crate::extract::{
    check_count, check_dimensions, encode_error, finish_embedding, from_value, guarded, infer, read_json, read_value,
    Truncation,
};
use crate::state::{AppState, ServedModel};
use fusebert::model::forward::OutputSelection;
use fusebert::model::reference::SequenceOutput;

type Shared = State<Arc<AppState>>;

/// The model a TEI route serves: `NAME` of `/models/NAME/...`, else the first model; an
/// unknown name is a 404.
pub struct Model(pub Arc<ServedModel>);

impl FromRequestParts<Arc<AppState>> for Model {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Model, ApiError> {
        let templated = parts.extensions.get::<MatchedPath>().is_some_and(|p| p.as_str().starts_with("/models/{name}"));
        if !templated {
            return Ok(Model(state.default_model().clone()));
        }
        let name = percent_decode(parts.uri.path().split('/').nth(2).unwrap_or_default());
        state.model(&name).map(|m| Model(m.clone()))
    }
}

/// A URL path segment's `%XX` escapes decoded (a model named `bge small` is `/models/bge%20small/`);
/// a malformed escape is kept as written.
fn percent_decode(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(super::percent_decode("bge%20small"), "bge small");
        assert_eq!(super::percent_decode("plain-name_1.5"), "plain-name_1.5");
        assert_eq!(super::percent_decode("bad%2"), "bad%2");
        assert_eq!(super::percent_decode("%E2%82%AC"), "\u{20ac}");
    }
}

/// Applies `prompt_name`'s prefix to every text.
fn with_prompt(model: &ServedModel, texts: Vec<String>, prompt_name: Option<&str>) -> Result<Vec<Input>, ApiError> {
    let prefix = match prompt_name {
        Some(name) => model.encoder.prompt(name).map_err(|e| encode_error(0, e).with_param("prompt_name"))?,
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
    fn into_inputs(
        self,
        state: &AppState,
        model: &ServedModel,
        prompt_name: Option<&str>,
    ) -> Result<Vec<Input>, ApiError> {
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
                EmbedItem::Text(t) => Ok(with_prompt(model, vec![t], prompt_name)?.remove(0)),
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

/// The response with its `x-compute-tokens` header (what TEI reports).
fn with_tokens(mut resp: Response, tokens: usize) -> Response {
    resp.headers_mut().insert("x-compute-tokens", HeaderValue::from(tokens));
    resp
}

async fn embed_with(state: &Arc<AppState>, model: &Arc<ServedModel>, req: EmbedRequest) -> Result<Response, ApiError> {
    let t = Truncation::of(state, req.truncate, req.truncation_direction.as_deref())?;
    check_dimensions(model, req.dimensions)?;
    let inputs = req.inputs.into_inputs(state, model, req.prompt_name.as_deref())?;
    let (out, tokens) = infer(state, model, inputs, t, OutputSelection::POOLED).await?;
    let vectors: Vec<Vec<f32>> =
        out.into_iter().map(|s| finish_embedding(s.pooled, req.dimensions, req.normalize)).collect();
    Ok(with_tokens(Json(vectors).into_response(), tokens))
}

pub async fn embed(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: EmbedRequest = read_json(&state, body, Flavor::Tei).await?;
        embed_with(&state, &model, req).await
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

pub async fn embed_all(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: EmbedAllRequest = read_json(&state, body, Flavor::Tei).await?;
        let t = Truncation::of(&state, req.truncate, req.truncation_direction.as_deref())?;
        let inputs = req.inputs.into_inputs(&state, &model, req.prompt_name.as_deref())?;
        let wanted = OutputSelection { last_hidden_state: true, ..OutputSelection::NONE };
        let (out, tokens) = infer(&state, &model, inputs, t, wanted).await?;
        let h = model.encoder.info().hidden_size;
        let all: Vec<Vec<&[f32]>> = out.iter().map(|s| s.last_hidden_state.chunks(h).collect()).collect();
        Ok(with_tokens(Json(all).into_response(), tokens))
    })
    .await
}

/// `inputs` of `/similarity`.
#[derive(Debug, Deserialize)]
pub struct SimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SimilarityParameters {
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SimilarityRequest {
    inputs: SimilarityInputs,
    parameters: Option<SimilarityParameters>,
}

/// Cosine similarity of each sentence's embedding with the source sentence's (TEI's
/// `/similarity`, what `InferenceClient.sentence_similarity` asks for).
async fn similarity_with(
    state: &Arc<AppState>,
    model: &Arc<ServedModel>,
    req: SimilarityRequest,
) -> Result<Response, ApiError> {
    let p = req.parameters.unwrap_or_default();
    if req.inputs.sentences.is_empty() {
        return Err(ApiError::bad_request("`inputs.sentences` cannot be empty").with_param("inputs"));
    }
    check_count(state, req.inputs.sentences.len() + 1, "inputs")?;
    let t = Truncation::of(state, p.truncate, p.truncation_direction.as_deref())?;
    let texts: Vec<String> = std::iter::once(req.inputs.source_sentence).chain(req.inputs.sentences).collect();
    let inputs = with_prompt(model, texts, p.prompt_name.as_deref())?;
    let (out, tokens) = infer(state, model, inputs, t, OutputSelection::POOLED).await?;
    let unit: Vec<Vec<f32>> = out.into_iter().map(|s| finish_embedding(s.pooled, None, true)).collect();
    let sims: Vec<f32> = unit[1..].iter().map(|v| v.iter().zip(&unit[0]).map(|(a, b)| a * b).sum()).collect();
    Ok(with_tokens(Json(sims).into_response(), tokens))
}

pub async fn similarity(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: SimilarityRequest = read_json(&state, body, Flavor::Tei).await?;
        similarity_with(&state, &model, req).await
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
fn labels<'a>(model: &'a ServedModel, route: &str) -> Result<&'a [String], ApiError> {
    model.encoder.info().labels.as_deref().ok_or_else(|| {
        ApiError::backend(format!(
            "{route} needs a sequence-classification model (a classifier head); {} is an embedding model: use /embed",
            model.name
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

async fn predict_with(
    state: &Arc<AppState>,
    model: &Arc<ServedModel>,
    req: PredictRequest,
) -> Result<Response, ApiError> {
    let t = Truncation::of(state, req.truncate, req.truncation_direction.as_deref())?;
    let labels = labels(model, "/predict")?;
    let (single, inputs) = match req.inputs {
        PredictInputs::One(t) => (true, vec![Input::Text(t)]),
        PredictInputs::Sequence(v) if !v.is_empty() => (true, vec![sequence(v)?]),
        PredictInputs::Sequence(_) => (false, Vec::new()),
        PredictInputs::Many(v) => (false, v.into_iter().map(sequence).collect::<Result<Vec<_>, _>>()?),
    };
    check_count(state, inputs.len(), "inputs")?;
    let (out, tokens) = infer(state, model, inputs, t, OutputSelection::LOGITS).await?;
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
}

pub async fn predict(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: PredictRequest = read_json(&state, body, Flavor::Tei).await?;
        predict_with(&state, &model, req).await
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

async fn rerank_with(
    state: &Arc<AppState>,
    model: &Arc<ServedModel>,
    req: RerankRequest,
) -> Result<Response, ApiError> {
    let t = Truncation::of(state, req.truncate, req.truncation_direction.as_deref())?;
    let n_labels = labels(model, "/rerank")?.len();
    if n_labels != 1 {
        return Err(ApiError::backend(format!(
            "/rerank needs a cross-encoder (a classifier with one label); this model has {n_labels} labels: use /predict"
        )));
    }
    check_count(state, req.texts.len(), "texts")?;
    let inputs = req.texts.iter().map(|t| Input::Pair(req.query.clone(), t.clone())).collect();
    let (out, tokens) = infer(state, model, inputs, t, OutputSelection::LOGITS).await?;
    let mut ranks = Vec::with_capacity(out.len());
    for (index, s) in out.iter().enumerate() {
        let score = scores(logits_of(s)?, req.raw_scores)[0];
        ranks.push(Rank { index, text: req.return_text.then(|| req.texts[index].as_str()), score });
    }
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(with_tokens(Json(ranks).into_response(), tokens))
}

pub async fn rerank(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let req: RerankRequest = read_json(&state, body, Flavor::Tei).await?;
        rerank_with(&state, &model, req).await
    })
    .await
}

/// `POST /` and `POST /invocations` (SageMaker): the route the model's type serves, as TEI: a
/// classifier predicts, a cross-encoder reranks (a body without `query` is classified), an
/// embedding model embeds (a body whose `inputs` is `{source_sentence, sentences}` gets
/// `/similarity`, so `InferenceClient`'s `feature_extraction` and `sentence_similarity` both
/// work on the server's root URL).
pub async fn dispatch(State(state): Shared, Model(model): Model, body: Body) -> Response {
    guarded(&state, Flavor::Tei, async {
        let v: Value = read_value(&state, body, Flavor::Tei).await?;
        match model.encoder.info().labels.as_ref().map(Vec::len) {
            Some(1) if v.get("query").is_some() => rerank_with(&state, &model, from_value(v, Flavor::Tei)?).await,
            Some(_) => predict_with(&state, &model, from_value(v, Flavor::Tei)?).await,
            None if v.get("inputs").is_some_and(|i| i.get("source_sentence").is_some()) => {
                similarity_with(&state, &model, from_value(v, Flavor::Tei)?).await
            }
            None => embed_with(&state, &model, from_value(v, Flavor::Tei)?).await,
        }
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
pub async fn tokenize(State(state): Shared, Model(model): Model, body: Body) -> Response {
    let work = async {
        let req: TokenizeRequest = read_json(&state, body, Flavor::Tei).await?;
        let texts = match req.inputs {
            TokenizeInputs::One(t) => vec![t],
            TokenizeInputs::Many(v) => v,
        };
        check_count(&state, texts.len(), "inputs")?;
        let inputs = with_prompt(&model, texts, req.prompt_name.as_deref())?;
        let mut all = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let Input::Text(t) = input else { unreachable!("with_prompt makes texts") };
            all.push(model.encoder.pieces(t, req.add_special_tokens).map_err(|e| encode_error(i, e))?);
        }
        Ok::<_, ApiError>(Json(all).into_response())
    };
    work.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DecodeIds {
    One(Vec<u32>),
    Many(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct DecodeRequest {
    ids: DecodeIds,
    #[serde(default = "yes")]
    skip_special_tokens: bool,
}

/// `/decode`: token ids back to text, one string per list (TEI's shape: always a list). Like
/// `/tokenize`, it takes no admission permit and never touches the device.
pub async fn decode(State(state): Shared, Model(model): Model, body: Body) -> Response {
    let work = async {
        let req: DecodeRequest = read_json(&state, body, Flavor::Tei).await?;
        let lists = match req.ids {
            DecodeIds::One(ids) => vec![ids],
            DecodeIds::Many(v) => {
                check_count(&state, v.len(), "ids")?;
                v
            }
        };
        let texts = lists
            .iter()
            .enumerate()
            .map(|(i, ids)| model.encoder.decode(ids, req.skip_special_tokens).map_err(|e| encode_error(i, e)))
            .collect::<Result<Vec<String>, ApiError>>()?;
        Ok::<_, ApiError>(Json(texts).into_response())
    };
    work.await.unwrap_or_else(IntoResponse::into_response)
}

/// TEI's `model_type` of a model: `embedding` (with its pooling), `classifier`, or `reranker`
/// (a classifier with one label).
fn model_type(model: &ServedModel) -> Value {
    let i = model.encoder.info();
    match &i.labels {
        None => json!({ "embedding": { "pooling": i.pooling } }),
        Some(labels) => {
            let id2label: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(k, l)| (k.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(k, l)| (l.clone(), json!(k))).collect();
            let kind = if labels.len() == 1 { "reranker" } else { "classifier" };
            json!({ kind: { "id2label": id2label, "label2id": label2id } })
        }
    }
}

/// TEI's `/info` for one model, plus fusebert's fields: `embedding_dimension` (the sentence
/// embedding's width, after any Dense module), `prompts`, `models` (every served name) and
/// `devices` (each worker and whether it is still in the rotation).
fn info_of(state: &AppState, model: &ServedModel) -> Value {
    let i = model.encoder.info();
    let o = &state.opts;
    let devices: Vec<Value> =
        state.batcher.workers().into_iter().map(|(name, up)| json!({ "name": name, "ready": up })).collect();
    json!({
        "model_id": i.model_id,
        "model_sha": null,
        "model_dtype": i.dtype,
        "served_model_name": model.name,
        "model_type": model_type(model),
        "max_concurrent_requests": o.max_concurrent_requests,
        "max_input_length": model.encoder.max_input_length(),
        "max_batch_tokens": o.max_batch_tokens,
        "max_batch_requests": (o.max_batch_requests != usize::MAX).then_some(o.max_batch_requests),
        "max_client_batch_size": o.max_client_batch_size,
        "auto_truncate": o.auto_truncate,
        "tokenization_workers": null,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "embedding_dimension": i.embedding_size,
        "hidden_size": i.hidden_size,
        "prompts": i.prompts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "models": state.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        "devices": devices,
    })
}

pub async fn info(State(state): Shared, Model(model): Model) -> Response {
    Json(info_of(&state, &model)).into_response()
}

/// Liveness (`/health`, `GET /`, `/ping`): answered on the HTTP task, never queued behind
/// inference.
pub async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: 200 once the models are loaded and warmed up (the port is bound only then) and
/// while at least one device is in the rotation; 503 while draining or with every device failed.
pub async fn ready(State(state): Shared) -> Response {
    if state.is_ready() {
        Json(json!({ "status": "ready", "devices": state.batcher.live_workers() })).into_response()
    } else if state.batcher.live_workers() == 0 {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Kind::Unavailable, "no device left: every device failed")
            .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Kind::Unavailable, "draining: the server is shutting down")
            .into_response()
    }
}

/// The OpenAPI document of every route (`crates/fusebert-server/openapi.json`, checked in; a
/// test keeps it equal to the route table).
pub async fn openapi() -> Response {
    let mut resp = crate::openapi::DOCUMENT.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub async fn metrics(State(state): Shared) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
