//! `compression`: deflate a file, inflate it back and check it (FunctionBench's
//! `compression`, which archives a file with zlib).
//!
//! The request is the file itself (raw bytes, any content; the suite uses the json
//! documents). Deflate level 6, zlib's default.

use crate::util::digest;
use crate::{Env, Function};
use alloc::format;
use alloc::string::String;
use miniz_oxide::deflate::compress_to_vec;
use miniz_oxide::inflate::decompress_to_vec_with_limit;
use serde::Serialize;

/// Marker type of the `compression` function.
pub struct Compression;

/// Deflate level (zlib's default).
pub const LEVEL: u8 = 6;

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the compressed stream.
    pub digest: String,
    /// Bytes before compression.
    pub original: usize,
    /// Bytes after compression.
    pub compressed: usize,
}

impl Function for Compression {
    const NAME: &'static str = "compression";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        if request.is_empty() {
            return Err(String::from("empty request: send the file to compress"));
        }
        let compressed = compress_to_vec(request, LEVEL);
        let restored =
            decompress_to_vec_with_limit(&compressed, request.len()).map_err(|e| format!("inflate failed: {e:?}"))?;
        if restored != request {
            return Err(String::from("inflate did not give back the input"));
        }
        Ok(Response { digest: digest([compressed.as_slice()]), original: request.len(), compressed: compressed.len() })
    }
}
