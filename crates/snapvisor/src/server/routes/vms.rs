//! `/vms`: the warm VMs kept alive (see `node::warm`), started ahead of requests or by a
//! warm invocation, stopped when idle past `--warm-idle-secs` or on request.

use super::{Json, Path, St};
use crate::node::warm::WarmVmInfo;
use crate::node::NodeError;
use crate::server::error::ApiError;
use axum::http::StatusCode;
use serde::Deserialize;

pub(super) async fn list(state: St) -> Json<Vec<WarmVmInfo>> {
    Json(state.warm.list())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    function: String,
    #[serde(default)]
    mem_mib: Option<u64>,
}

pub(super) async fn start(
    state: St,
    Json(req): Json<StartRequest>,
) -> Result<(StatusCode, Json<WarmVmInfo>), ApiError> {
    let mem_size = state.mem_size(req.mem_mib)?;
    let timeout = state.timeout(None)?;
    let st = state.0.clone();
    let id = state
        .admission
        .run(1, move || {
            let image = st.node.image(&req.function)?;
            st.warm.start(&st.node, &image, mem_size, timeout).map(|(id, _)| id)
        })
        .await?;
    let info = state.warm.list().into_iter().find(|vm| vm.id == id);
    // It can only be gone already if it was stopped in between.
    let info = info.ok_or(NodeError::Missing { what: "warm VM", name: id.to_string() })?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub(super) async fn stop(state: St, Path(id): Path<u64>) -> Result<StatusCode, ApiError> {
    state.warm.stop(id)?;
    Ok(StatusCode::NO_CONTENT)
}
