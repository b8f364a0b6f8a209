//! The built-in serverless functions — the paper's FunctionBench-style suite — as `no_std`
//! logic.
//!
//! Each function has an `init` (run once, before the snapshot: it builds the state an
//! interpreter, library or model would hold) and an `invoke` (one request → one response).
//! Requests are either small JSON parameter objects (`{"n":1100}`) or, for the functions
//! whose input is a file (json and compression documents, image, video, recognition), the
//! raw file bytes. Responses are JSON and carry a `digest` (SHA-256 of the function's
//! output, never the bulk output itself) plus small facts such as sizes, so a test can
//! check a guest's answer against the same code run on the host ([`run_native`]).
//!
//! The guests (`guest/functions`) compile this crate without default features; the host
//! compiles it with the `catalog` feature, which adds [`catalog`] (descriptions and the
//! built-in inputs, real files included) and the native reference runs. Floating-point code
//! uses `libm` and no reassociation, and the image codecs run their portable code paths on
//! both sides, so guest and host produce bit-identical outputs.
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod chameleon;
pub mod compression;
pub mod hello;
pub mod image;
pub mod json;
pub mod matmul;
pub mod mmap;
pub mod pagerank;
pub mod pyaes;
pub mod read_list;
pub mod recognition;
pub mod video;

mod jpeg;
mod mjpeg;
mod util;

#[cfg(feature = "catalog")]
pub mod catalog;
#[cfg(feature = "catalog")]
mod native;

#[cfg(feature = "catalog")]
pub use catalog::{info, input, Info, InputInfo, RequestKind, CATALOG};
#[cfg(feature = "catalog")]
pub use native::{native, run_native, Native};

/// What `init` may know about the machine it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Env {
    /// Bytes of heap the function has in all (in a guest: the boot info's heap range).
    pub heap_bytes: u64,
}

impl Env {
    /// The environment of native reference runs: a heap large enough for every built-in
    /// input (about that of a 512 MiB guest).
    pub const NATIVE: Env = Env { heap_bytes: 480 << 20 };
}

/// A function: state built once by [`Function::init`], then any number of invocations.
pub trait Function {
    /// Name used on the command line and in results.
    const NAME: &'static str;
    /// State built by init and kept in guest memory across invocations.
    type State;
    /// Response (serialised as JSON); has a `digest` field.
    type Response: Serialize;

    /// Builds the function's state. Runs once, before the snapshot is taken.
    fn init(env: &Env) -> Self::State;
    /// Handles one request (raw bytes: JSON parameters or a file, as the function says).
    fn invoke(state: &mut Self::State, request: &[u8]) -> Result<Self::Response, String>;
}

/// Parses a JSON parameter request; the error names the function.
pub fn params<T: DeserializeOwned>(function: &str, request: &[u8]) -> Result<T, String> {
    serde_json::from_slice(request).map_err(|e| alloc::format!("bad request for {function}: {e}"))
}

/// Runs `F::invoke` and serialises the outcome.
///
/// Errors (a request that does not parse, or one the function refuses) become
/// `{"error": "..."}`, which the VMM reports as a function error.
pub fn handle<F: Function>(state: &mut F::State, request: &[u8]) -> Vec<u8> {
    match F::invoke(state, request) {
        Ok(response) => serde_json::to_vec(&response).unwrap_or_else(|e| error_json(&e.to_string())),
        Err(message) => error_json(&message),
    }
}

/// `{"error": message}`.
pub fn error_json(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorResponse<'a> {
        error: &'a str,
    }
    serde_json::to_vec(&ErrorResponse { error: message }).unwrap_or_default()
}
