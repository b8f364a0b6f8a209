//! A test guest that writes its snapshot's data sparsely, for the memory tests of `pass`.
//!
//! Init fills a buffer of half its heap (at most 256 MiB) with a pattern, so the snapshot
//! holds that many 2 MiB chunks of data. A request `N` writes one byte in each of the first
//! `N` chunks of the buffer and answers the buffer's checksum; `0` writes nothing.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

snapvisor_sdk::function!(init, handle);

const CHUNK: usize = 2 << 20;

fn init() -> Vec<u8> {
    let len = (snapvisor_sdk::heap_size() as usize / 2).min(256 << 20);
    (0..len).map(|i| (i % 251) as u8 | 1).collect()
}

fn handle(buffer: &mut Vec<u8>, request: &[u8]) -> Result<Vec<u8>, &'static str> {
    let chunks: usize = core::str::from_utf8(request)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or("the request is a number of chunks")?;
    if chunks > buffer.len() / CHUNK {
        return Err("more chunks than the buffer has");
    }
    for chunk in 0..chunks {
        buffer[chunk * CHUNK + 7] ^= 0x80;
    }
    // Read every chunk's written byte only: the answer depends on the writes, not on
    // reading (and so mapping) the whole buffer.
    let sum = (0..buffer.len() / CHUNK).fold(0u64, |h, c| h.rotate_left(5) ^ u64::from(buffer[c * CHUNK + 7]));
    Ok(format!("{sum:016x}").into_bytes())
}
