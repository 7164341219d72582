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
use crate::extract::{check_count, check_dimensions, finish_embedding, guarded, infer, read_json};
use crate::state::AppState;
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
    /// Not checked against the served model (one model per server); echoed back as ours.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
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

pub async fn embeddings(State(state): State<Arc<AppState>>, body: Body) -> Response {
    guarded(&state, Flavor::OpenAi, async {
        let req: EmbeddingsRequest = read_json(&state, body, Flavor::OpenAi).await?;
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
        check_dimensions(&state, req.dimensions)?;
        let inputs = req.input.into_inputs();
        check_count(&state, inputs.len(), "input")?;
        let (out, tokens) = infer(&state, inputs, state.opts.auto_truncate, OutputSelection::POOLED).await?;
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
            "model": state.encoder.info().model_id,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }))
        .into_response())
    })
    .await
}

pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{ "id": state.encoder.info().model_id, "object": "model", "created": 0, "owned_by": "fusebert" }],
    }))
    .into_response()
}
