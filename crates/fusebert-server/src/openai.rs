//! OpenAI's embeddings API: `POST /v1/embeddings` and `GET /v1/models`, with OpenAI's nested
//! error bodies, so the official SDKs (which ask for base64 by default) work unchanged.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Input;
use crate::error::{ApiError, Flavor};
use crate::extract::{check_count, check_dimensions, finish_embedding, guarded, infer, read_json, Truncation};
use crate::state::{AppState, ServedModel};
use fusebert::model::forward::OutputSelection;

/// `input`: a string, a list of strings, token ids, or a list of token-id lists.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OpenAiInput {
    One(String),
    Ids(Vec<u32>),
    Many(Vec<OpenAiItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OpenAiItem {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    input: OpenAiInput,
    /// Selects the model by its served name; with one model any name is that model.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    user: Option<String>,
}

impl OpenAiInput {
    fn into_inputs(self) -> Vec<Input> {
        let items = match self {
            OpenAiInput::One(t) => vec![OpenAiItem::Text(t)],
            OpenAiInput::Ids(ids) if ids.is_empty() => Vec::new(),
            OpenAiInput::Ids(ids) => vec![OpenAiItem::Ids(ids)],
            OpenAiInput::Many(v) => v,
        };
        items
            .into_iter()
            .map(|i| match i {
                OpenAiItem::Text(t) => Input::Text(t),
                OpenAiItem::Ids(ids) => Input::Ids(ids),
            })
            .collect()
    }
}

/// The little-endian bytes of `v`, base64 (what the SDKs decode with `frombuffer(float32)`).
pub fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The model `model` names; with one model served, any name (clients often send their usual
/// model name) is that one; with several, an unknown name is a 404.
fn select<'a>(state: &'a AppState, name: Option<&str>) -> Result<&'a Arc<ServedModel>, ApiError> {
    match name {
        Some(n) if state.models.len() > 1 => state.model(n).map_err(ApiError::openai),
        Some(n) => Ok(state.models.iter().find(|m| m.name == n).unwrap_or(state.default_model())),
        None => Ok(state.default_model()),
    }
}

pub async fn embeddings(State(state): State<Arc<AppState>>, body: Body) -> Response {
    guarded(&state, Flavor::OpenAi, async {
        let req: EmbeddingsRequest = read_json(&state, body, Flavor::OpenAi).await?;
        let model = select(&state, req.model.as_deref())?;
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "encoding_format must be \"float\" or \"base64\", got \"{other}\""
                ))
                .with_param("encoding_format"))
            }
        };
        check_dimensions(model, req.dimensions)?;
        let inputs = req.input.into_inputs();
        check_count(&state, inputs.len(), "input")?;
        let t = Truncation::of(&state, None, None)?;
        let (out, tokens) = infer(&state, model, inputs, t, OutputSelection::POOLED).await?;
        let data: Vec<Value> = out
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                // OpenAI embeddings are unit length; `dimensions` cuts, then renormalises.
                let v = finish_embedding(s.pooled, req.dimensions, true);
                let embedding = if base64 { json!(base64_f32(&v)) } else { json!(v) };
                json!({ "object": "embedding", "embedding": embedding, "index": index })
            })
            .collect();
        Ok(Json(json!({
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }))
        .into_response())
    })
    .await
}

/// Every served model, the default first.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|m| json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "fusebert" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}
