//! The route table and what wraps every route: request ids, one log line, metrics, in-flight
//! gauge, the JSON content-type check (415) on every POST, and the API-key check on everything
//! but the open routes (`/health`, `GET /`, `/ping`, `/ready`, `/metrics`,
//! `/api-doc/openapi.json`, as TEI).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::error::{ApiError, Kind};
use crate::state::AppState;
use crate::{openai, routes};

type Shared = Arc<AppState>;

/// The TEI inference routes; each is also served under `/models/{name}`.
const PER_MODEL: &[&str] =
    &["/embed", "/embed_all", "/predict", "/rerank", "/similarity", "/tokenize", "/decode", "/info", "/invocations"];

fn per_model(path: &str) -> MethodRouter<Shared> {
    match path {
        "/embed" => post(routes::embed),
        "/embed_all" => post(routes::embed_all),
        "/predict" => post(routes::predict),
        "/rerank" => post(routes::rerank),
        "/similarity" => post(routes::similarity),
        "/tokenize" => post(routes::tokenize),
        "/decode" => post(routes::decode),
        "/info" => get(routes::info),
        "/invocations" => post(routes::dispatch),
        _ => unreachable!("PER_MODEL lists the paths"),
    }
}

/// Every route as `(METHOD, path)`, key-protected ones first: what the router serves and what
/// `openapi.json` must document (a test checks both).
pub fn route_table() -> Vec<(&'static str, String, bool)> {
    let mut t = Vec::new();
    for p in PER_MODEL {
        let method = if *p == "/info" { "GET" } else { "POST" };
        t.push((method, p.to_string(), true));
        t.push((method, format!("/models/{{name}}{p}"), true));
    }
    t.push(("POST", "/".into(), true));
    t.push(("POST", "/models/{name}".into(), true));
    t.push(("POST", "/models/{name}/".into(), true));
    for p in ["/v1/embeddings", "/embeddings"] {
        t.push(("POST", p.into(), true));
    }
    t.push(("GET", "/v1/models".into(), true));
    for p in ["/", "/health", "/ping", "/ready", "/metrics", "/api-doc/openapi.json"] {
        t.push(("GET", p.into(), false));
    }
    t
}

/// All routes with their middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let mut protected = Router::new();
    for p in PER_MODEL {
        protected = protected.route(p, per_model(p)).route(&format!("/models/{{name}}{p}"), per_model(p));
    }
    let protected = protected
        .route("/models/{name}", post(routes::dispatch))
        .route("/models/{name}/", post(routes::dispatch))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // `/` answers GET (health, open) and POST (the model's route, behind the key).
    let root = get(routes::health).merge(
        post(routes::dispatch)
            .route_layer(middleware::from_fn(require_json))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_key)),
    );
    let open = Router::new()
        .route("/", root)
        .route("/health", get(routes::health))
        .route("/ping", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .route("/api-doc/openapi.json", get(routes::openapi));
    protected
        .merge(open)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// 415 for a POST whose body is not declared JSON (`Content-Type: application/json` or
/// `application/*+json`), as TEI's JSON extractor answers; the body is JSON in the route's shape.
async fn require_json(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        return next.run(req).await;
    }
    let what = if ct.is_empty() { "no Content-Type".to_string() } else { format!("Content-Type `{ct}`") };
    let e = ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::UnsupportedMediaType,
        format!("Expected request with `Content-Type: application/json`, got {what}"),
    );
    let is_openai = req.uri().path().starts_with("/v1/") || req.uri().path() == "/embeddings";
    if is_openai {
        e.openai().into_response()
    } else {
        e.into_response()
    }
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
