//! `json`: build a JSON document of a requested size, parse it, serialise it again
//! (FunctionBench's `json_dumps_loads`).
//!
//! Init builds a vocabulary of 65,536 words (≈ 3 MiB with its index), the read-mostly state
//! a Python interpreter would hold after importing its modules; every invocation draws
//! from all of it.

use crate::util::{below, digest, rng, Rng};
use crate::Function;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Marker type of the `json` function.
pub struct Json;

/// Largest document a request may ask for.
pub const MAX_SIZE: usize = 64 << 20;
const VOCABULARY: usize = 1 << 16;
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "an", "el", "or", "qu", "zen", "bra", "tor", "lin", "ex", "ium",
    "sol", "dar", "fel", "gri", "hal", "jor",
];

/// Request: `{"size": bytes, "seed": n}`.
#[derive(Deserialize)]
pub struct Request {
    /// Approximate size of the document in bytes.
    pub size: usize,
    /// Seed of the document's contents.
    pub seed: u64,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the re-serialised document.
    pub digest: String,
    /// Bytes of the re-serialised document.
    pub bytes: usize,
    /// Records in the document.
    pub records: usize,
}

/// The vocabulary built by init.
pub struct State {
    words: Vec<String>,
}

impl State {
    fn word(&self, rng: &mut Rng) -> &str {
        &self.words[below(rng, self.words.len() as u64) as usize]
    }

    fn phrase(&self, rng: &mut Rng, words: usize) -> String {
        let mut out = String::new();
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(self.word(rng));
        }
        out
    }

    fn record(&self, rng: &mut Rng, id: usize) -> Value {
        let tags: Vec<&str> = (0..1 + below(rng, 5)).map(|_| self.word(rng)).collect();
        json!({
            "id": id,
            "name": self.phrase(rng, 2),
            "active": below(rng, 2) == 1,
            "score": below(rng, 1_000_000) as f64 / 1000.0,
            "tags": tags,
            "address": {
                "street": self.phrase(rng, 3),
                "city": self.word(rng),
                "zip": below(rng, 100_000),
            },
            "history": (0..below(rng, 4)).map(|_| below(rng, 1 << 40)).collect::<Vec<u64>>(),
        })
    }
}

impl Function for Json {
    const NAME: &'static str = "json";
    type Request = Request;
    type Response = Response;
    type State = State;

    fn init() -> State {
        let mut rng = rng(0x6a73_6f6e, 0);
        let words = (0..VOCABULARY)
            .map(|_| {
                let mut word = String::new();
                for _ in 0..2 + below(&mut rng, 3) {
                    word.push_str(SYLLABLES[below(&mut rng, SYLLABLES.len() as u64) as usize]);
                }
                word
            })
            .collect();
        State { words }
    }

    fn invoke(state: &mut State, req: Request) -> Result<Response, String> {
        if req.size > MAX_SIZE {
            return Err(alloc::format!("size {} is above the limit of {MAX_SIZE}", req.size));
        }
        let mut rng = rng(req.seed, 1);
        // A record serialises to ≈ 200 bytes.
        let records = (req.size / 200).max(1);
        let document = Value::Array((0..records).map(|id| state.record(&mut rng, id)).collect());
        let dumped = serde_json::to_string(&document).map_err(|e| e.to_string())?;
        let loaded: Value = serde_json::from_str(&dumped).map_err(|e| e.to_string())?;
        let again = serde_json::to_string(&loaded).map_err(|e| e.to_string())?;
        Ok(Response { digest: digest([again.as_bytes()]), bytes: again.len(), records })
    }
}

use alloc::string::ToString;
