//! The built-in serverless functions (a FunctionBench-like suite), as `no_std` logic.
//!
//! Each function has an `init` (run once, before the snapshot: it builds the state an
//! interpreter, library or model would hold) and an `invoke` (one request → one response).
//! Requests and responses are JSON; every response carries a `digest` (SHA-256 of the
//! function's output), so a test can check a guest's answer against [`run_native`], the
//! same code run on the host.
//!
//! The guests (`guest/functions`) compile this crate for their kernel-less runtime; the
//! host compiles it natively. Floating-point code uses `libm` and no reassociation, so
//! both sides produce bit-identical outputs.
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod compression;
pub mod json;
pub mod recognition;
mod util;

/// A function: state built once by [`Function::init`], then any number of invocations.
pub trait Function {
    /// Name used on the command line and in results.
    const NAME: &'static str;
    /// Request type (JSON).
    type Request: DeserializeOwned;
    /// Response type (JSON); has a `digest` field.
    type Response: Serialize;
    /// State built by init and kept in guest memory across invocations.
    type State;

    /// Builds the function's state. Runs once, before the snapshot is taken.
    fn init() -> Self::State;
    /// Handles one request.
    fn invoke(state: &mut Self::State, request: Self::Request) -> Result<Self::Response, String>;
}

/// Parses a JSON request, runs `F::invoke`, and serialises the outcome.
///
/// Errors (a request that does not parse, or one the function refuses) become
/// `{"error": "..."}`, which the VMM reports as a function error.
pub fn handle<F: Function>(state: &mut F::State, request: &[u8]) -> Vec<u8> {
    let outcome = serde_json::from_slice::<F::Request>(request)
        .map_err(|e| alloc::format!("bad request for {}: {e}", F::NAME))
        .and_then(|req| F::invoke(state, req));
    match outcome {
        Ok(response) => serde_json::to_vec(&response).unwrap_or_else(|e| error_json(&e.to_string())),
        Err(message) => error_json(&message),
    }
}

fn error_json(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorResponse<'a> {
        error: &'a str,
    }
    serde_json::to_vec(&ErrorResponse { error: message }).unwrap_or_default()
}

/// What the host needs to know about a built-in function.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Name ([`Function::NAME`]).
    pub name: &'static str,
    /// One line for `snapvisor functions`.
    pub description: &'static str,
    /// Request used when the user gives none (and by the benchmark).
    pub default_request: &'static str,
}

/// Every built-in function, in the order the benchmark runs them.
pub const CATALOG: &[Info] = &[
    Info {
        name: json::Json::NAME,
        description: "build a JSON document from a seed, parse it, serialise it again",
        default_request: r#"{"size":262144,"seed":1}"#,
    },
    Info {
        name: compression::Compression::NAME,
        description: "deflate a buffer drawn from a text corpus, inflate it back, check it",
        default_request: r#"{"size":1048576,"seed":1,"level":6}"#,
    },
    Info {
        name: recognition::Recognition::NAME,
        description: "classify a generated image with a ResNet-18-style network (45 MiB of weights)",
        default_request: r#"{"seed":1}"#,
    },
];

/// Looks up a built-in function by name.
pub fn info(name: &str) -> Option<&'static Info> {
    CATALOG.iter().find(|i| i.name == name)
}

/// Runs `init` and one invocation of the named function natively (on the host), returning
/// the response bytes. `None` if there is no such function.
pub fn run_native(name: &str, request: &[u8]) -> Option<Vec<u8>> {
    fn run<F: Function>(request: &[u8]) -> Vec<u8> {
        let mut state = F::init();
        handle::<F>(&mut state, request)
    }
    Some(match name {
        json::Json::NAME => run::<json::Json>(request),
        compression::Compression::NAME => run::<compression::Compression>(request),
        recognition::Recognition::NAME => run::<recognition::Recognition>(request),
        _ => return None,
    })
}
