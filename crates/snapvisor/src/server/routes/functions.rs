//! `/functions`: the built-in functions and the guest images users register.

use super::{Json, Path, St};
use crate::node::images::FunctionEntry;
use crate::server::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

pub(super) async fn list(state: St) -> Result<Json<Vec<FunctionEntry>>, ApiError> {
    let node = state.node.clone();
    Ok(Json(state.admission.run(1, move || node.functions()).await?))
}

pub(super) async fn show(state: St, Path(name): Path<String>) -> Result<Json<FunctionEntry>, ApiError> {
    let node = state.node.clone();
    Ok(Json(state.admission.run(1, move || node.function(&name)).await?))
}

/// `PUT /functions/NAME` with the ELF as the body (at most `--upload-max-mib`).
pub(super) async fn upload(
    state: St,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<FunctionEntry>), ApiError> {
    let elf = body?;
    let node = state.node.clone();
    let entry = state.admission.run(1, move || node.register_image(&name, &elf)).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

pub(super) async fn remove(state: St, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let node = state.node.clone();
    state.admission.run(1, move || node.unregister_image(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
