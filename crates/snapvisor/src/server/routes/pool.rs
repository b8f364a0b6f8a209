//! `/pool`: the persistent-memory pool's status and check (the daemon's pool: `serve --pool`).

use super::{Json, Query, St};
use crate::node::pool::FsckOutcome;
use crate::server::error::ApiError;
use serde::Deserialize;
use snapvisor_vmm::pool::PoolInfo;

pub(super) async fn status(state: St) -> Result<Json<PoolInfo>, ApiError> {
    let (node, pool) = (state.node.clone(), state.limits.pool.clone());
    Ok(Json(state.admission.run(1, move || node.pool_info(pool.as_deref())).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FsckQuery {
    #[serde(default)]
    deep: bool,
}

/// The check's report; a pool with problems is a report with problems, not an error.
pub(super) async fn fsck(state: St, Query(q): Query<FsckQuery>) -> Result<Json<FsckOutcome>, ApiError> {
    let (node, pool) = (state.node.clone(), state.limits.pool.clone());
    let outcome = state.admission.run(1, move || Ok::<_, ApiError>(node.pool_fsck(pool.as_deref(), q.deep))).await?;
    Ok(Json(outcome))
}
