//! `pyaes`: AES-128 in counter mode, in software, over a generated message
//! (FunctionBench's `pyaes`, which encrypts and decrypts a random string with the
//! pure-Python `pyaes` module `iterations` times).
//!
//! The guests build the aes crate with its portable software backend (see
//! `guest/.cargo/config.toml`), so AES-NI does not turn the work into a few instructions;
//! the output is the same either way. Key and message come from seeds; the counter starts
//! at 1, as `pyaes.Counter()` does.

use crate::util::{below, digest, rng};
use crate::{params, Env, Function};
use aes::Aes128;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};

/// Marker type of the `pyaes` function.
pub struct Pyaes;

/// Longest message a request may ask for.
pub const MAX_LENGTH: usize = 16 << 20;
/// Most rounds a request may ask for.
pub const MAX_ITERATIONS: u32 = 100_000;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// Request: `{"length": characters, "iterations": rounds, "seed": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Characters in the message.
    pub length: usize,
    /// Encrypt-then-decrypt rounds (default 100).
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    /// Seed of the key and the message (default 1).
    #[serde(default = "crate::util::default_seed")]
    pub seed: u64,
}

fn default_iterations() -> u32 {
    100
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the ciphertext.
    pub digest: String,
    /// Characters encrypted per round.
    pub length: usize,
    /// Rounds run.
    pub iterations: u32,
}

impl Function for Pyaes {
    const NAME: &'static str = "pyaes";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        if req.length == 0 || req.length > MAX_LENGTH {
            return Err(format!("length {} is not in 1..={MAX_LENGTH}", req.length));
        }
        if req.iterations == 0 || req.iterations > MAX_ITERATIONS {
            return Err(format!("iterations {} is not in 1..={MAX_ITERATIONS}", req.iterations));
        }
        let mut rng = rng(req.seed, 4);
        let key: Vec<u8> = (0..16).map(|_| below(&mut rng, 256) as u8).collect();
        let message: Vec<u8> =
            (0..req.length).map(|_| ALPHABET[below(&mut rng, ALPHABET.len() as u64) as usize]).collect();
        let mut iv = [0u8; 16];
        iv[15] = 1;
        let mut ciphertext = Vec::new();
        for _ in 0..req.iterations {
            ciphertext.clone_from(&message);
            let mut cipher = Aes128Ctr::new_from_slices(&key, &iv).map_err(|e| format!("key setup: {e}"))?;
            cipher.apply_keystream(&mut ciphertext);
            let mut plaintext = ciphertext.clone();
            let mut cipher = Aes128Ctr::new_from_slices(&key, &iv).map_err(|e| format!("key setup: {e}"))?;
            cipher.apply_keystream(&mut plaintext);
            if plaintext != message {
                return Err(String::from("decryption did not give back the message"));
            }
        }
        Ok(Response { digest: digest([ciphertext.as_slice()]), length: req.length, iterations: req.iterations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_aes_128_ctr() {
        // NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt), first block.
        let key = [0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c];
        let iv = [0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
        let mut block =
            [0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93, 0x17, 0x2a];
        Aes128Ctr::new_from_slices(&key, &iv).unwrap().apply_keystream(&mut block);
        assert_eq!(
            block,
            [0x87, 0x4d, 0x61, 0x91, 0xb6, 0x20, 0xe3, 0x26, 0x1b, 0xef, 0x68, 0x64, 0x99, 0x0d, 0xb6, 0xce]
        );
    }
}
