//! What every inference handler does, TEI's and OpenAI's alike: read the JSON body under the
//! payload limit, take an admission permit, run under the request deadline, check the input
//! count and `dimensions`, tokenise, queue, wait for the answers, and finish an embedding.
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::engine::{Direction, EncodeError, Input, Tokens};
use crate::error::{ApiError, Flavor, Kind};
use crate::state::{AppState, ServedModel};
use fusebert::model::forward::OutputSelection;
use fusebert::model::reference::SequenceOutput;

/// Reads the body (at most `--payload-limit` bytes, else 413) and parses it as `T` (400 for
/// malformed JSON, 422 for the wrong shape), every error a JSON body of `flavor`.
pub async fn read_json<T: DeserializeOwned>(state: &AppState, body: Body, flavor: Flavor) -> Result<T, ApiError> {
    let v: serde_json::Value = read_value(state, body, flavor).await?;
    from_value(v, flavor)
}

/// A parsed JSON body as `T` (422 for the wrong shape).
pub fn from_value<T: DeserializeOwned>(v: serde_json::Value, flavor: Flavor) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        let e = ApiError::validation(format!("invalid JSON body: {e}"));
        if flavor == Flavor::OpenAi {
            e.openai()
        } else {
            e
        }
    })
}

/// Reads the body (at most `--payload-limit` bytes, else 413) as a JSON value (400 when it is
/// not JSON).
pub async fn read_value(state: &AppState, body: Body, flavor: Flavor) -> Result<serde_json::Value, ApiError> {
    let limit = state.opts.payload_limit;
    let flavored = |e: ApiError| if flavor == Flavor::OpenAi { e.openai() } else { e };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        flavored(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Validation,
            format!("request body is larger than the payload limit of {limit} bytes"),
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg = format!("invalid JSON body: {e}");
        flavored(if e.is_data() { ApiError::validation(msg) } else { ApiError::bad_request(msg) })
    })
}

/// Runs an inference handler: admission (429 with `Retry-After` when `--max-concurrent-requests`
/// are in flight) and the `--request-timeout` deadline (503; dropping the handler's receivers
/// drops its queued inputs).
pub async fn guarded<F>(state: &Arc<AppState>, flavor: Flavor, work: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    let flavored = |e: ApiError| if flavor == Flavor::OpenAi { e.openai() } else { e };
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return flavored(ApiError::overloaded()).into_response();
    };
    let start = Instant::now();
    match tokio::time::timeout(state.opts.request_timeout, work).await {
        Ok(Ok(mut resp)) => {
            let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1e3);
            if let Ok(v) = HeaderValue::from_str(&ms) {
                resp.headers_mut().insert("x-total-time", v);
            }
            resp
        }
        Ok(Err(e)) => flavored(e).into_response(),
        Err(_) => flavored(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Kind::Unavailable,
            format!("request timed out after {:?} (--request-timeout)", state.opts.request_timeout),
        ))
        .into_response(),
    }
}

/// Checks the number of inputs of a request: at least one (else TEI's 400 `Empty`), at most
/// `--max-client-batch-size` (422).
pub fn check_count(state: &AppState, n: usize, field: &'static str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request(format!("`{field}` cannot be empty")).with_param(field));
    }
    let max = state.opts.max_client_batch_size;
    if n > max {
        return Err(ApiError::validation(format!(
            "batch size {n} > maximum allowed batch size {max} (--max-client-batch-size)"
        ))
        .with_param(field));
    }
    Ok(())
}

/// Tokenises `inputs` (on a blocking thread when they are large), queues them and waits for
/// every answer, in order. Also returns the number of tokens.
pub async fn infer(
    state: &Arc<AppState>,
    model: &Arc<ServedModel>,
    inputs: Vec<Input>,
    truncation: Truncation,
    wanted: OutputSelection,
) -> Result<(Vec<SequenceOutput>, usize), ApiError> {
    let bytes: usize = inputs.iter().map(input_bytes).sum();
    let tokens = if bytes < 16 * 1024 {
        encode_all(model, &inputs, truncation)?
    } else {
        let m = model.clone();
        tokio::task::spawn_blocking(move || encode_all(&m, &inputs, truncation))
            .await
            .map_err(|e| ApiError::backend(format!("tokenization task: {e}")))??
    };
    let total = tokens.iter().map(|t| t.len()).sum();
    let receivers: Vec<_> = tokens.into_iter().map(|t| state.batcher.submit(model.index, t, wanted)).collect();
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        match rx.await {
            Ok(Ok(seq)) => out.push(seq),
            Ok(Err(msg)) => return Err(ApiError::backend(format!("forward pass failed: {msg}"))),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Kind::Unavailable,
                    "server is shutting down",
                ))
            }
        }
    }
    Ok((out, total))
}

fn input_bytes(i: &Input) -> usize {
    match i {
        Input::Text(t) => t.len(),
        Input::Pair(a, b) => a.len() + b.len(),
        Input::Ids(ids) => ids.len() * 4,
    }
}

/// Whether and from which end over-long inputs are cut.
#[derive(Debug, Clone, Copy)]
pub struct Truncation {
    pub truncate: bool,
    pub direction: Direction,
}

impl Truncation {
    /// A request's `truncate` (default `--auto-truncate`) and `truncation_direction` (default
    /// right; TEI's spellings, anything else a 422).
    pub fn of(state: &AppState, truncate: Option<bool>, direction: Option<&str>) -> Result<Truncation, ApiError> {
        let direction = match direction {
            None => Direction::Right,
            Some(d) => Direction::parse(d).ok_or_else(|| {
                ApiError::validation(format!("truncation_direction `{d}` is not one of \"left\", \"right\""))
                    .with_param("truncation_direction")
            })?,
        };
        Ok(Truncation { truncate: truncate.unwrap_or(state.opts.auto_truncate), direction })
    }
}

fn encode_all(model: &ServedModel, inputs: &[Input], t: Truncation) -> Result<Vec<Tokens>, ApiError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| model.encoder.encode_from(input, t.truncate, t.direction).map_err(|e| encode_error(i, e)))
        .collect()
}

/// TEI's messages: an over-long input names the limit and the length given.
pub fn encode_error(index: usize, e: EncodeError) -> ApiError {
    match e {
        EncodeError::TooLong { tokens, limit } => ApiError::validation(format!(
            "Input validation error: `inputs` must have less than {limit} tokens. Given: {tokens} \
             (input {index}; send `truncate: true` or start the server with --auto-truncate)"
        )),
        EncodeError::Invalid(msg) => ApiError::validation(format!("input {index}: {msg}")),
    }
}

/// Matryoshka `dimensions` (cut first) and L2 normalisation of a pooled embedding.
pub fn finish_embedding(mut v: Vec<f32>, dimensions: Option<usize>, normalize: bool) -> Vec<f32> {
    if let Some(d) = dimensions {
        v.truncate(d);
    }
    if normalize {
        fusebert::model::reference::l2_normalize(&mut v);
    }
    v
}

/// Checks `dimensions` against the embedding size.
pub fn check_dimensions(model: &ServedModel, dimensions: Option<usize>) -> Result<(), ApiError> {
    let h = model.encoder.info().embedding_size;
    match dimensions {
        Some(0) => Err(ApiError::validation("`dimensions` should be positive").with_param("dimensions")),
        Some(d) if d > h => {
            Err(ApiError::validation(format!("`dimensions` should be at most the embedding size {h}, got {d}"))
                .with_param("dimensions"))
        }
        _ => Ok(()),
    }
}
