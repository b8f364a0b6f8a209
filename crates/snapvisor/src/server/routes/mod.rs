//! The HTTP API: the router, its extractors (whose rejections answer in the API's error
//! model), and the small resources (`/healthz`, `/metrics`, `/openapi.yaml`). The
//! resources with node work are one file each; `docs/api.md` describes them all.

mod functions;
mod invocations;
mod pool;
mod snapshots;
mod vms;

use super::error::{ApiError, ErrorTag};
use super::metrics::Live;
use super::AppState;
use crate::cli::render::escape;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest JSON request body: a request of up to the mailbox's 12 MiB as `input_base64`
/// (16 MiB), or as JSON-escaped `input_text`, with room for the other fields.
pub const JSON_BODY_LIMIT: usize = 20 << 20;

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// A JSON body, or a JSON answer.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The shared state handlers get.
type St = State<Arc<AppState>>;

/// The API's router.
pub fn router(state: Arc<AppState>) -> Router {
    let upload = DefaultBodyLimit::max(state.limits.upload_bytes);
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .route("/functions", get(functions::list))
        .route("/functions/{name}", get(functions::show).put(functions::upload).delete(functions::remove).layer(upload))
        .route("/runs", post(invocations::run))
        .route("/invocations", post(invocations::invoke))
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route("/snapshots/{name}", get(snapshots::show).delete(snapshots::remove))
        .route("/snapshots/{name}/record", post(snapshots::record))
        .route("/snapshots/{name}/import", post(snapshots::import))
        .route("/vms", get(vms::list).post(vms::start))
        .route("/vms/{id}", delete(vms::stop))
        .route("/pool", get(pool::status))
        .route("/pool/fsck", get(pool::fsck))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Logs every request (path escaped: it is the client's text) and counts error answers.
async fn observe(State(state): St, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let status = response.status().as_u16();
    match (response.extensions().get::<ErrorTag>(), response.extensions().get::<ApiError>()) {
        (Some(tag), Some(error)) => {
            state.metrics.error(tag.kind);
            tracing::warn!(%method, path = %escape(&path), status, ms, kind = tag.kind, message = %snapvisor_vmm::escape::sanitize(error.message()), "request failed");
        }
        _ => tracing::info!(%method, path = %escape(&path), status, ms, "request"),
    }
    response
}

/// What `/healthz` answers.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    vms_running: usize,
    max_vms: u32,
    queue_depth: usize,
    warm_vms: usize,
    ready_shells: usize,
}

async fn health(State(state): St) -> Json<Health> {
    let a = &state.admission;
    Json(Health {
        status: if a.is_draining() { "draining" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        vms_running: a.running(),
        max_vms: a.max(),
        queue_depth: a.queue_depth(),
        warm_vms: state.warm.list().len(),
        ready_shells: state.node.ready_shells(),
    })
}

async fn metrics(State(state): St) -> Response {
    let a = &state.admission;
    let live = Live {
        queue_depth: a.queue_depth(),
        vms_running: a.running(),
        warm_vms: state.warm.list().len(),
        ready_shells: state.node.ready_shells(),
    };
    let text = state.metrics.render(&live);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource (see GET /openapi.yaml)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this resource does not take that method")
}

impl AppState {
    /// A request's guest timeout: at most the daemon's (also the default).
    fn timeout(&self, ms: Option<u64>) -> Result<Duration, ApiError> {
        let max = self.limits.timeout;
        match ms {
            None => Ok(max),
            Some(ms) if ms >= 1 && u128::from(ms) <= max.as_millis() => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(ApiError::bad_request(format!(
                "timeout_ms {ms} is outside 1..={} (the daemon's --timeout-ms)",
                max.as_millis()
            ))),
        }
    }

    /// A request's guest memory in bytes [default: the node's default].
    fn mem_size(&self, mib: Option<u64>) -> Result<u64, ApiError> {
        Ok(crate::node::mem_size(mib.unwrap_or(crate::node::DEFAULT_MEM_MIB))?)
    }
}
