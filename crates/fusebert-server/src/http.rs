//! The route table and what wraps every route: request ids, one log line, metrics, in-flight
//! gauge, and the API-key check on everything but `/health`, `/ready` and `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::{ApiError, Kind};
use crate::state::AppState;
use crate::{openai, routes};

/// All routes with their middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/embed", post(routes::embed))
        .route("/embed_all", post(routes::embed_all))
        .route("/predict", post(routes::predict))
        .route("/rerank", post(routes::rerank))
        .route("/tokenize", post(routes::tokenize))
        .route("/info", get(routes::info))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let open = Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics));
    protected
        .merge(open)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    let e =
        ApiError::new(StatusCode::NOT_FOUND, Kind::NotFound, format!("no route {} {}", req.method(), req.uri().path()));
    if req.uri().path().starts_with("/v1/") {
        e.openai()
    } else {
        e
    }
}

/// 401 unless the request carries one of the keys (or no keys are configured).
async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let keys = &state.opts.api_keys;
    if keys.is_empty() || keys.accepts(req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
        return next.run(req).await;
    }
    let e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        Kind::Unauthorized,
        "missing or wrong API key: send `Authorization: Bearer <key>`",
    );
    let e = if req.uri().path().starts_with("/v1/") { e.openai() } else { e };
    let mut resp = e.into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Request id (the client's `x-request-id`, else a new one), echoed in the reply; metrics and one
/// log line per request, also for a request whose client went away (status 499, as nginx logs).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(new_request_id, str::to_string);
    let mut guard = Observed {
        state: state.clone(),
        route,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        id: id.clone(),
        start: Instant::now(),
        status: None,
    };
    state.metrics.add_in_flight(1);
    let mut resp = next.run(req).await;
    guard.status = Some(resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Records a request when it ends, however it ends (dropped futures included).
struct Observed {
    state: Arc<AppState>,
    route: String,
    method: String,
    path: String,
    id: String,
    start: Instant,
    /// `None` until a response exists: dropped before that = the client went away.
    status: Option<u16>,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(499);
        let secs = self.start.elapsed().as_secs_f64();
        let m = &self.state.metrics;
        m.add_in_flight(-1);
        m.request(&self.route, status, secs);
        if self.state.opts.log_requests {
            log_line(self, status, secs);
        }
    }
}

fn log_line(o: &Observed, status: u16, secs: f64) {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let ms = secs * 1e3;
    if o.state.opts.json_output {
        let line = serde_json::json!({
            "timestamp": ts, "level": "INFO", "request_id": o.id, "method": o.method,
            "path": o.path, "status": status, "duration_ms": ms,
        });
        eprintln!("{line}");
    } else {
        eprintln!(
            "{ts:.3} INFO request_id={} method={} path={} status={status} duration_ms={ms:.3}",
            o.id, o.method, o.path
        );
    }
}

/// A process-unique id: start time and a counter.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    format!("{start:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
