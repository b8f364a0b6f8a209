//! `vmstate.bin`: magic, format version, body length, postcard body, CRC-64 (Firecracker's shape).
//!
//! ```text
//! 0   8  magic "SNAPVSTA"
//! 8   4  format version (u32 LE)
//! 12  4  reserved, 0
//! 16  8  body length n (u64 LE)
//! 24  n  postcard(VmState)
//! 24+n 8 CRC-64/XZ of bytes 0..24+n (u64 LE)
//! ```
//!
//! postcard is used for its specified, stable wire format.

use super::{SnapshotError, VmState, FORMAT_VERSION};
use std::path::Path;

const MAGIC: &[u8; 8] = b"SNAPVSTA";
const HEADER: usize = 24;
const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// Serialises `state` into the state-file format; returns the bytes and their CRC.
pub(crate) fn encode(state: &VmState) -> Result<(Vec<u8>, u64), postcard::Error> {
    let body = postcard::to_stdvec(state)?;
    let mut out = Vec::with_capacity(HEADER + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = CRC.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok((out, crc))
}

/// Checks and decodes a state file; returns the state and its CRC.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<(VmState, u64), SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() };
    if bytes.len() < HEADER + 8 {
        return Err(corrupt("shorter than the state-file header"));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic (not a snapvisor state file)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version { path: path.to_path_buf(), found: version, expected: FORMAT_VERSION });
    }
    let body_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if Some(bytes.len() as u64) != body_len.checked_add((HEADER + 8) as u64) {
        return Err(corrupt("length field does not match the file size (truncated or extended)"));
    }
    let end = bytes.len() - 8;
    let stored = u64::from_le_bytes(bytes[end..].try_into().expect("8 bytes"));
    let computed = CRC.checksum(&bytes[..end]);
    if stored != computed {
        return Err(SnapshotError::Checksum { path: path.to_path_buf(), stored, computed });
    }
    let state =
        postcard::from_bytes(&bytes[HEADER..end]).map_err(|e| corrupt(&format!("body does not decode: {e}")))?;
    Ok((state, stored))
}
