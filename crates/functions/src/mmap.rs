//! `mmap`: touch every 4 KiB page of `mib` MiB of fresh memory (FaaSnap's `mmap`, which
//! maps anonymous memory and writes one byte per page).
//!
//! The memory comes from the heap, which has never been used there in a fresh VM or a
//! snapshot (it is a zero range: each strategy has to give the guest new pages for it).
//! Each page gets one byte, then every byte is read back; the digest is of what was read.

use crate::util::digest;
use crate::{params, Env, Function};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Marker type of the `mmap` function.
pub struct Mmap;

/// Bytes per page touched.
pub const PAGE: usize = 4096;
/// Most memory a request may ask for.
pub const MAX_MIB: usize = 16 << 10;

/// Request: `{"mib": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// MiB of memory to touch.
    pub mib: usize,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the bytes read back, one per page.
    pub digest: String,
    /// Pages touched.
    pub pages: usize,
}

impl Function for Mmap {
    const NAME: &'static str = "mmap";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        if req.mib == 0 || req.mib > MAX_MIB {
            return Err(format!("mib {} is not in 1..={MAX_MIB}", req.mib));
        }
        let bytes = req.mib << 20;
        let mut memory: Vec<u8> = Vec::new();
        memory.try_reserve_exact(bytes).map_err(|_| format!("cannot get {} MiB of memory in this VM", req.mib))?;
        let pages = bytes / PAGE;
        let spare = &mut memory.spare_capacity_mut()[..bytes];
        for (page, chunk) in spare.chunks_exact_mut(PAGE).enumerate() {
            chunk[0].write((page % 251) as u8 + 1);
        }
        // The writes must reach memory and the reads come from it: nothing may fold them.
        core::hint::black_box(spare.as_mut_ptr());
        let read: Vec<u8> = spare
            .chunks_exact(PAGE)
            // SAFETY: the loop above wrote the first byte of every page.
            .map(|chunk| unsafe { chunk[0].assume_init() })
            .collect();
        Ok(Response { digest: digest([read.as_slice()]), pages })
    }
}
