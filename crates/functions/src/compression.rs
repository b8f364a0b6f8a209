//! `compression`: deflate a buffer, inflate it back and check it (FunctionBench's
//! `compression`, which zips a file).
//!
//! Init builds a 16 MiB text corpus, the "files" requests are drawn from; each request
//! assembles its buffer from 4 KiB pieces at seeded offsets all over the corpus.

use crate::util::{below, digest, rng};
use crate::Function;
use alloc::string::String;
use alloc::vec::Vec;
use miniz_oxide::deflate::compress_to_vec;
use miniz_oxide::inflate::decompress_to_vec_with_limit;
use serde::{Deserialize, Serialize};

/// Marker type of the `compression` function.
pub struct Compression;

/// Bytes of the corpus built by init.
pub const CORPUS_SIZE: usize = 16 << 20;
/// Largest buffer a request may ask for.
pub const MAX_SIZE: usize = 64 << 20;
const PIECE: usize = 4096;
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "snapshot",
    "memory",
    "page",
    "fault",
    "guest",
    "host",
    "restore",
    "function",
    "serverless",
    "latency",
    "persistent",
    "pool",
    "index",
    "mapping",
    "virtual",
    "machine",
    "kernel",
    "cold",
    "warm",
    "start",
    "working",
    "set",
    "prefetch",
    "zero",
    "copy",
    "a",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "by",
];

/// Request: `{"size": bytes, "seed": n, "level": 0..=10}`.
#[derive(Deserialize)]
pub struct Request {
    /// Bytes to compress.
    pub size: usize,
    /// Seed choosing the pieces of the corpus.
    pub seed: u64,
    /// Deflate level (miniz: 0..=10).
    #[serde(default = "default_level")]
    pub level: u8,
}

fn default_level() -> u8 {
    6
}

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

/// The corpus built by init.
pub struct State {
    corpus: Vec<u8>,
}

impl Function for Compression {
    const NAME: &'static str = "compression";
    type Request = Request;
    type Response = Response;
    type State = State;

    fn init() -> State {
        let mut rng = rng(0x007a_6970, 0);
        let mut corpus = Vec::with_capacity(CORPUS_SIZE + 16);
        while corpus.len() < CORPUS_SIZE {
            // Zipf-like: small indices are much more frequent.
            let a = below(&mut rng, WORDS.len() as u64);
            let b = below(&mut rng, a + 1);
            corpus.extend_from_slice(WORDS[b as usize].as_bytes());
            corpus.push(if below(&mut rng, 12) == 0 { b'\n' } else { b' ' });
        }
        corpus.truncate(CORPUS_SIZE);
        State { corpus }
    }

    fn invoke(state: &mut State, req: Request) -> Result<Response, String> {
        if req.size > MAX_SIZE {
            return Err(alloc::format!("size {} is above the limit of {MAX_SIZE}", req.size));
        }
        if req.level > 10 {
            return Err(alloc::format!("level {} is not in 0..=10", req.level));
        }
        let mut rng = rng(req.seed, 2);
        let mut input = Vec::with_capacity(req.size);
        while input.len() < req.size {
            let start = below(&mut rng, (CORPUS_SIZE - PIECE) as u64) as usize;
            let take = PIECE.min(req.size - input.len());
            input.extend_from_slice(&state.corpus[start..start + take]);
        }
        let compressed = compress_to_vec(&input, req.level);
        let restored = decompress_to_vec_with_limit(&compressed, input.len())
            .map_err(|e| alloc::format!("inflate failed: {e:?}"))?;
        if restored != input {
            return Err(String::from("inflate did not give back the input"));
        }
        Ok(Response { digest: digest([compressed.as_slice()]), original: input.len(), compressed: compressed.len() })
    }
}
