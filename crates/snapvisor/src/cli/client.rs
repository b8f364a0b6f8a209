//! An HTTP/1.1 client for the daemon (hyper), on its Unix socket — the command line's
//! client mode (`snapvisor --socket PATH ...`), the load benchmark — or on TCP with a
//! bearer token (the tests).
//!
//! One connection per request, on a small runtime of the client's own: a command sends a
//! handful of requests, so simplicity wins over connection reuse. A daemon's error
//! response (`{"error": {"kind", "message", "causes"}}`) becomes a [`ClientError::Api`]
//! whose causes are its `source()` chain, so the command line prints it like a local error.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};

/// Largest response body read (a report of 256 VMs with a 512 KiB response is far below).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// One cause of a daemon's error, with the next one as its source.
#[derive(Debug)]
pub struct RemoteCause {
    message: String,
    next: Option<Box<RemoteCause>>,
}

impl std::fmt::Display for RemoteCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.next.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers at the socket.
    #[error("{socket}: cannot connect to the daemon")]
    Connect {
        /// The socket or address.
        socket: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the daemon's connection failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The error's kind (`bad_request`, `not_found`, `guest`, ...).
        kind: String,
        /// Its message.
        message: String,
        /// Its causes.
        #[source]
        cause: Option<Box<RemoteCause>>,
    },
    /// The daemon's answer is not what the API describes.
    #[error("the daemon's answer ({status}) is not valid: {reason}")]
    Invalid {
        /// HTTP status.
        status: StatusCode,
        /// What is wrong.
        reason: String,
    },
}

/// A response: status, headers and body.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Where the daemon listens.
enum Endpoint {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// A client of one daemon.
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client of the daemon at `socket` (nothing is connected yet).
    pub fn new(socket: &Path) -> std::io::Result<Self> {
        Self::with(Endpoint::Unix(socket.to_path_buf()), None)
    }

    /// A client of the daemon's TCP listener, sending `token` as a bearer token if given.
    pub fn tcp(addr: std::net::SocketAddr, token: Option<String>) -> std::io::Result<Self> {
        Self::with(Endpoint::Tcp(addr), token)
    }

    fn with(endpoint: Endpoint, token: Option<String>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Client { endpoint, token, runtime })
    }

    /// An HTTP/1.1 connection to the daemon, and its driver (spawned on this client's
    /// runtime; it ends once the sender is dropped).
    async fn connect(&self) -> Result<(Sender, tokio::task::JoinHandle<()>), ClientError> {
        let connect = |source| ClientError::Connect { socket: self.endpoint.to_string(), source };
        let http = |e: hyper::Error| ClientError::Http(e.into());
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let io = TokioIo::new(tokio::net::UnixStream::connect(path).await.map_err(connect)?);
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
                Ok((sender, tokio::spawn(async move { drop(connection.await) })))
            }
            Endpoint::Tcp(addr) => {
                let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.map_err(connect)?);
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
                Ok((sender, tokio::spawn(async move { drop(connection.await) })))
            }
        }
    }

    /// Sends one request; any status is a response.
    pub fn send(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        self.runtime.block_on(async {
            let (mut sender, connection) = self.connect().await?;
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "localhost")
                .header(hyper::header::CONTENT_TYPE, content_type);
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request.body(Full::new(Bytes::from(body))).map_err(|e| ClientError::Http(e.into()))?;
            let response = sender.send_request(request).await.map_err(|e| ClientError::Http(e.into()))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(ClientError::Http)?.to_bytes();
            // Closes the connection (no keep-alive between commands' requests).
            drop(sender);
            let _ = connection.await;
            Ok(Response { status: parts.status, headers: parts.headers, body })
        })
    }

    /// Sends `body` as JSON (none: an empty body) and returns the JSON answer's text; an
    /// error status becomes [`ClientError::Api`].
    pub fn call(&self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<String, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = self.send(method, path, "application/json", bytes)?;
        let status = response.status;
        let invalid = |reason: String| ClientError::Invalid { status, reason };
        let text = String::from_utf8(response.body.to_vec()).map_err(|e| invalid(e.to_string()))?;
        if status.is_success() {
            return Ok(text);
        }
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let error = value.get("error").ok_or_else(|| invalid("no `error` object".into()))?;
        let text_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let message = error.get("message").and_then(text_of).ok_or_else(|| invalid("no error message".into()))?;
        let causes: Vec<String> = error
            .get("causes")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(text_of).collect())
            .unwrap_or_default();
        let cause = causes.into_iter().rev().fold(None, |next, message| Some(Box::new(RemoteCause { message, next })));
        Err(ClientError::Api { status, kind: error.get("kind").and_then(text_of).unwrap_or_default(), message, cause })
    }
}
