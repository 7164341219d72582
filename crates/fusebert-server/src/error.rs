//! Error replies. Every error is a JSON body: TEI's `{"error", "error_type"}` on TEI routes,
//! OpenAI's `{"error": {"message", "type", "param", "code"}}` under `/v1/`.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// TEI's error kinds (serialised PascalCase, as TEI does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: empty input, malformed JSON.
    Empty,
    /// 422 (413 for the payload limit): input that fails validation.
    Validation,
    /// 401.
    Unauthorized,
    /// 429: too many requests in flight.
    Overloaded,
    /// 424: the model cannot serve this route, or the forward pass failed.
    Backend,
    /// 503: request timeout, draining.
    Unavailable,
    /// 404.
    NotFound,
    /// 415: a body that is not declared JSON.
    UnsupportedMediaType,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Empty => "Empty",
            Kind::Validation => "Validation",
            Kind::Unauthorized => "Unauthorized",
            Kind::Overloaded => "Overloaded",
            Kind::Backend => "Backend",
            Kind::Unavailable => "Unavailable",
            Kind::NotFound => "NotFound",
            Kind::UnsupportedMediaType => "UnsupportedMediaType",
        }
    }

    /// OpenAI's `type` for the same failure.
    fn openai_type(self) -> &'static str {
        match self {
            Kind::Empty | Kind::Validation | Kind::NotFound | Kind::UnsupportedMediaType => "invalid_request_error",
            Kind::Unauthorized => "authentication_error",
            Kind::Overloaded => "rate_limit_error",
            Kind::Backend | Kind::Unavailable => "server_error",
        }
    }
}

/// Which body shape an error takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Tei,
    OpenAi,
}

/// An error reply.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: Kind,
    pub message: String,
    /// The request field at fault, for OpenAI's `param`.
    pub param: Option<&'static str>,
    pub flavor: Flavor,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), param: None, flavor: Flavor::Tei }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, Kind::Validation, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Kind::Empty, message)
    }

    pub fn backend(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FAILED_DEPENDENCY, Kind::Backend, message)
    }

    pub fn overloaded() -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, Kind::Overloaded, "Model is overloaded")
    }

    pub fn with_param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }

    pub fn openai(mut self) -> ApiError {
        self.flavor = Flavor::OpenAi;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.flavor {
            Flavor::Tei => json!({ "error": self.message, "error_type": self.kind.name() }),
            Flavor::OpenAi => json!({ "error": {
                "message": self.message,
                "type": self.kind.openai_type(),
                "param": self.param,
                "code": self.status.as_u16().to_string(),
            }}),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.kind == Kind::Overloaded {
            // The OpenAI SDK honours both; 1 s is the shortest `Retry-After` can say.
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp.headers_mut().insert("retry-after-ms", HeaderValue::from_static("100"));
        }
        resp
    }
}
