//! The bearer token required on TCP: read from a file or `SNAPVISOR_TOKEN`, compared in
//! constant time (`subtle`), never logged. (The Unix socket relies on its mode, 0600.)

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

/// A bearer token. Its `Debug` hides it.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// TCP asked for without a token.
    #[error("--tcp needs a bearer token: --token-file PATH or the SNAPVISOR_TOKEN environment variable")]
    Missing,
    /// The token file could not be read.
    #[error("cannot read the token file")]
    File(#[source] crate::node::NodeError),
    /// Too short or not printable.
    #[error("the token must be at least {MIN_TOKEN_BYTES} printable ASCII characters")]
    Weak,
}

impl Token {
    /// The token from `file` (surrounding whitespace ignored), else from `env` (the value of
    /// `SNAPVISOR_TOKEN`).
    pub fn load(file: Option<&Path>, env: Option<String>) -> Result<Self, TokenError> {
        let bytes = match (file, env) {
            (Some(path), _) => crate::node::functions::read_file(path).map_err(TokenError::File)?,
            (None, Some(value)) => value.into_bytes(),
            (None, None) => return Err(TokenError::Missing),
        };
        let token = bytes.trim_ascii();
        if token.len() < MIN_TOKEN_BYTES || !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Weak);
        }
        Ok(Token(token.into()))
    }

    /// Whether an `Authorization` header value carries this token (constant time in the
    /// token's bytes; the length is not secret).
    pub fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else { return false };
        bool::from(given.ct_eq(&self.0))
    }
}

/// Middleware: 401 unless the request carries the token.
pub async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    // The header's value is never logged: it may be a near-miss of the token.
    let path = crate::cli::render::escape(request.uri().path());
    tracing::warn!(method = %request.method(), path = %path, status = 401, "request without a valid bearer token");
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let token = Token::load(None, Some(" 0123456789abcdef\n".into())).unwrap();
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(token.admits(Some(&h("Bearer 0123456789abcdef"))));
        for wrong in ["Bearer 0123456789abcdeF", "Bearer 0123456789abcde", "0123456789abcdef", "Basic 0123456789abcdef"]
        {
            assert!(!token.admits(Some(&h(wrong))), "{wrong}");
        }
        assert!(!token.admits(None));
        assert!(matches!(Token::load(None, Some("short".into())), Err(TokenError::Weak)));
        assert!(matches!(Token::load(None, None), Err(TokenError::Missing)));
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
