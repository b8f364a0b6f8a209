//! `json`: parse a JSON document and serialise it again (FunctionBench's
//! `json_dumps_loads`: `json.dumps(json.loads(document))`).
//!
//! The request is the document itself (raw bytes, UTF-8). Objects come back with their
//! keys sorted (serde_json's map without `preserve_order`), numbers as serde_json writes
//! them; the digest is of that output.

use crate::util::digest;
use crate::{Env, Function};
use alloc::format;
use alloc::string::String;
use serde::Serialize;
use serde_json::Value;

/// Marker type of the `json` function.
pub struct Json;

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the re-serialised document.
    pub digest: String,
    /// Bytes of the request document.
    pub input_bytes: usize,
    /// Bytes of the re-serialised document.
    pub output_bytes: usize,
}

impl Function for Json {
    const NAME: &'static str = "json";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let loaded: Value = serde_json::from_slice(request).map_err(|e| format!("not a JSON document: {e}"))?;
        let dumped = serde_json::to_vec(&loaded).map_err(|e| format!("serialising: {e}"))?;
        Ok(Response { digest: digest([dumped.as_slice()]), input_bytes: request.len(), output_bytes: dumped.len() })
    }
}
