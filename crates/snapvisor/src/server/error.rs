//! The API's one error model: `{"error": {"kind", "message", "causes": [...]}}` with a
//! status code per kind, for node errors, limits, authentication and malformed requests
//! alike. Guest text (abort messages) reaches clients inside JSON strings, escaped by the
//! JSON encoder.

use crate::node::{ErrorKind, NodeError};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    causes: Vec<String>,
    retry_after_secs: Option<u64>,
}

/// The kind of an error answer, left on the response for logging and metrics.
#[derive(Clone, Copy, Debug)]
pub struct ErrorTag {
    /// The kind.
    pub kind: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    kind: &'a str,
    message: &'a str,
    causes: &'a [String],
}

impl ApiError {
    /// An error of `kind` with status `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into(), causes: Vec::new(), retry_after_secs: None }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 429: at the concurrency limit and the queue is full (or waited too long).
    pub fn overloaded(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
        }
    }

    /// 503: the daemon is shutting down and takes no new work.
    pub fn draining() -> Self {
        ApiError {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the daemon is shutting down")
        }
    }

    /// 500: a bug or an unexpected failure of the daemon itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Status and kind name of each node error kind. A guest failure (it crashed, looped past
/// its timeout, broke the protocol, or the function answered an error) is 422: the request
/// reached the function and the function could not process it.
fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Guest => (StatusCode::UNPROCESSABLE_ENTITY, "guest"),
        ErrorKind::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let kind = e.kind();
        let (status, name) = status_of(kind);
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            causes.push(c.to_string());
            cause = c.source();
        }
        let retry_after_secs = (kind == ErrorKind::Busy).then_some(1);
        ApiError { status, kind: name, message: e.to_string(), causes, retry_after_secs }
    }
}

/// The kind name of an HTTP status that axum's extractors answer with.
fn rejection(status: StatusCode, text: String) -> ApiError {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    // Every malformed request is a 400 (a body that does not fit the schema included),
    // except the two statuses that say something more precise.
    let status = match kind {
        "payload_too_large" | "unsupported_media_type" | "internal" => status,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, kind, text)
}

/// Each extractor rejection answers in the error model.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(r: $rejection) -> Self {
                rejection(r.status(), r.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, BytesRejection, PathRejection, QueryRejection);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Inner { kind: self.kind, message: &self.message, causes: &self.causes } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(ErrorTag { kind: self.kind });
        response.extensions_mut().insert(self);
        response
    }
}
