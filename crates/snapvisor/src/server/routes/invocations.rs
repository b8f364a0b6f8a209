//! `/runs` (a fresh VM: boot, init, one request) and `/invocations` (a warm VM, or a
//! SnapStart of N VMs with a restore strategy): the same reports the command line prints.

use super::{Json, St};
use crate::node::functions::Input;
use crate::node::invoke::{InvokeReport, InvokeSpec, RunReport, SnapshotRef};
use crate::node::{store::check_name, NodeError};
use crate::server::error::ApiError;
use serde::Deserialize;
use snapvisor_vmm::restore::Strategy;

/// The request of an API call: `input` (a built-in function's input name — A, B, 1..6 —
/// or, for a registered image, the request text), `input_text` or `input_base64`; at most one.
pub(super) fn input(name: Option<String>, text: Option<String>, base64: Option<String>) -> Result<Input, NodeError> {
    use base64::Engine;
    match (name, text, base64) {
        (None, None, None) => Ok(Input::Default),
        (Some(name), None, None) => Ok(Input::Named(name)),
        (None, Some(text), None) => Ok(Input::Literal(text.into_bytes())),
        (None, None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Input::Literal)
            .map_err(|e| NodeError::Invalid(format!("input_base64 is not base64: {e}"))),
        _ => Err(NodeError::Invalid("give at most one of input, input_text and input_base64".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunRequest {
    function: String,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    input_text: Option<String>,
    #[serde(default)]
    input_base64: Option<String>,
    #[serde(default)]
    mem_mib: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

pub(super) async fn run(state: St, Json(req): Json<RunRequest>) -> Result<Json<RunReport>, ApiError> {
    let mem_size = state.mem_size(req.mem_mib)?;
    let timeout = state.timeout(req.timeout_ms)?;
    let node = state.node.clone();
    let report = state
        .admission
        .run(1, move || {
            let input = input(req.input, req.input_text, req.input_base64)?;
            node.run(&node.image(&req.function)?, &input, mem_size, timeout)
        })
        .await?;
    state.metrics.run(&report);
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InvokeRequest {
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    snapshot: Option<String>,
    strategy: String,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    input_text: Option<String>,
    #[serde(default)]
    input_base64: Option<String>,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    cold: bool,
    #[serde(default)]
    keep_warm: bool,
    #[serde(default)]
    uffd_chunk_kib: Option<u64>,
    #[serde(default)]
    mem_mib: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `strategy: "warm"` runs `function` on a warm VM; a restore strategy restores
/// `snapshot` (default: the function's own snapshot, or pool id for `pass`), and with
/// `keep_warm` keeps the VM for the next such request (see `WarmSet::snapstart`).
pub(super) async fn invoke(state: St, Json(req): Json<InvokeRequest>) -> Result<Json<InvokeReport>, ApiError> {
    let timeout = state.timeout(req.timeout_ms)?;
    let concurrency = req.concurrency.unwrap_or(1);
    if (req.keep_warm || req.strategy == "warm") && state.warm_max == 0 {
        return Err(ApiError::bad_request("warm VMs are off on this daemon (--warm-max 0)"));
    }
    let report = if req.strategy == "warm" {
        if req.snapshot.is_some() || req.cold || req.keep_warm || concurrency != 1 || req.uffd_chunk_kib.is_some() {
            return Err(ApiError::bad_request(
                "a warm invocation takes a function, one VM, and none of snapshot, cold, keep_warm, uffd_chunk_kib",
            ));
        }
        let function = req.function.ok_or_else(|| ApiError::bad_request("a warm invocation needs `function`"))?;
        let mem_size = state.mem_size(req.mem_mib)?;
        let st = state.0.clone();
        let input = input(req.input, req.input_text, req.input_base64)?;
        state
            .admission
            .run(1, move || st.warm.invoke(&st.node, &st.node.image(&function)?, &input, mem_size, timeout))
            .await?
    } else {
        let strategy: Strategy = req.strategy.parse().map_err(NodeError::from)?;
        if req.mem_mib.is_some() {
            return Err(ApiError::bad_request("mem_mib is the snapshot's own in a SnapStart; leave it out"));
        }
        let name = match (req.snapshot, req.function) {
            (Some(name), None) | (None, Some(name)) => name,
            _ => return Err(ApiError::bad_request("give one of `snapshot` and `function`")),
        };
        let snapshot = if strategy.uses_pool() {
            check_name("pool snapshot", &name)?;
            SnapshotRef::Pool { pool: state.limits.pool.clone(), id: name }
        } else {
            let dir = state.node.snapshot_dir(&name)?;
            if !dir.is_dir() {
                return Err(NodeError::Missing { what: "snapshot", name }.into());
            }
            SnapshotRef::Dir(dir)
        };
        let spec = InvokeSpec {
            snapshot,
            strategy,
            input: input(req.input, req.input_text, req.input_base64)?,
            concurrency: concurrency as usize,
            cold: req.cold,
            uffd_chunk: usize::try_from(req.uffd_chunk_kib.unwrap_or(4).saturating_mul(1024)).unwrap_or(usize::MAX),
            timeout,
        };
        if req.keep_warm {
            if concurrency != 1 {
                return Err(ApiError::bad_request("a SnapStart kept warm restores one VM (concurrency 1)"));
            }
            let st = state.0.clone();
            state.admission.run(1, move || st.warm.snapstart(&st.node, &spec)).await?
        } else {
            let node = state.node.clone();
            state.admission.run(concurrency, move || node.invoke(&spec)).await?
        }
    };
    state.metrics.invocation(&report);
    Ok(Json(report))
}
