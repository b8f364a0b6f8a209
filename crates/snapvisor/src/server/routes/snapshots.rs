//! `/snapshots`: snapshots kept by name in `DATA_DIR/snapshots/NAME` — take, list, show,
//! delete, record working sets, import into the pool.

use super::{Json, Path, St};
use crate::node::catalog::{SnapshotList, SnapshotSummary};
use crate::node::invoke::SnapshotRef;
use crate::node::pool::ImportReport;
use crate::node::snapshots::{RecordReport, SnapshotReport, SnapshotSpec};
use crate::node::store::check_name;
use crate::server::error::ApiError;
use axum::http::StatusCode;
use serde::Deserialize;

pub(super) async fn list(state: St) -> Result<Json<SnapshotList>, ApiError> {
    let node = state.node.clone();
    Ok(Json(state.admission.run(1, move || node.list_snapshots()).await?))
}

pub(super) async fn show(state: St, Path(name): Path<String>) -> Result<Json<SnapshotSummary>, ApiError> {
    let node = state.node.clone();
    Ok(Json(state.admission.run(1, move || node.show_snapshot(&name)).await?))
}

/// The warm VMs kept from SnapStarts of snapshot `name` stop: it is gone or replaced (a
/// pool snapshot cannot be replaced while a VM holds its lease).
fn retire_kept_vms(state: &St, name: &str) {
    if let Ok(dir) = state.node.snapshot_dir(name) {
        state.warm.retire(&SnapshotRef::Dir(dir).to_string());
    }
}

pub(super) async fn remove(state: St, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let node = state.node.clone();
    retire_kept_vms(&state, &name);
    let deleted = name.clone();
    state.admission.run(1, move || node.delete_snapshot(&deleted)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    function: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mem_mib: Option<u64>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Boots the function, runs its init and snapshots it as `name` (default: the function's name).
pub(super) async fn create(
    state: St,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, Json<SnapshotReport>), ApiError> {
    let mem_size = state.mem_size(req.mem_mib)?;
    let timeout = state.timeout(req.timeout_ms)?;
    let node = state.node.clone();
    if req.force {
        retire_kept_vms(&state, req.name.as_deref().unwrap_or(&req.function));
    }
    let report = state
        .admission
        .run(1, move || {
            let out = node.snapshot_dir(req.name.as_deref().unwrap_or(&req.function))?;
            let spec =
                SnapshotSpec { image: node.image(&req.function)?, out: Some(out), mem_size, force: req.force, timeout };
            node.snapshot(&spec)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(report)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordRequest {
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    input_text: Option<String>,
    #[serde(default)]
    input_base64: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Records the working sets of `reap` and `faasnap`.
pub(super) async fn record(
    state: St,
    Path(name): Path<String>,
    Json(req): Json<RecordRequest>,
) -> Result<Json<RecordReport>, ApiError> {
    let timeout = state.timeout(req.timeout_ms)?;
    let node = state.node.clone();
    let input = super::invocations::input(req.input, req.input_text, req.input_base64)?;
    let report = state
        .admission
        .run(1, move || {
            node.show_snapshot(&name)?;
            node.record(&node.snapshot_dir(&name)?, &input, timeout)
        })
        .await?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportRequest {
    #[serde(default)]
    id: Option<String>,
}

/// Imports the snapshot into the daemon's pool as `id` (default: its name).
pub(super) async fn import(
    state: St,
    Path(name): Path<String>,
    Json(req): Json<ImportRequest>,
) -> Result<Json<ImportReport>, ApiError> {
    let (node, pool) = (state.node.clone(), state.limits.pool.clone());
    let report = state
        .admission
        .run(1, move || {
            let id = req.id.unwrap_or_else(|| name.clone());
            check_name("pool snapshot", &id)?;
            node.show_snapshot(&name)?;
            node.pool_import(pool.as_deref(), &node.snapshot_dir(&name)?, Some(&id), &mut |_, _| {})
        })
        .await?;
    Ok(Json(report))
}
