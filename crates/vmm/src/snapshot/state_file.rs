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
//! postcard is used for its specified, stable wire format. A state file is a few KiB; more
//! than [`STATE_MAX`] bytes is refused before it is read. A decoded state must speak this
//! guest ABI and carry only the MSRs a snapshot saves ([`SAVED_MSRS`], each once).

use super::{LayoutRecord, SnapshotError, FORMAT_VERSION};
use crate::checksum::crc64;
use crate::vstate::vcpu::{VcpuState, SAVED_MSRS};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8; 8] = b"SNAPVSTA";
const HEADER: usize = 24;
/// Largest state file accepted (the registers, XSAVE area and MSRs take a few KiB).
pub const STATE_MAX: u64 = 1 << 20;

/// The body of `vmstate.bin`.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// Guest ABI version.
    pub abi_version: u32,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Guest layout.
    pub layout: LayoutRecord,
    /// The vCPU.
    pub vcpu: VcpuState,
}

/// Serialises `state` into the state-file format; returns the bytes and their CRC.
pub(crate) fn encode(state: &VmState) -> Result<(Vec<u8>, u64), postcard::Error> {
    let body = postcard::to_stdvec(state)?;
    let mut out = Vec::with_capacity(HEADER + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok((out, crc))
}

/// Checks and decodes a state file; returns the state and its CRC.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(VmState, u64), SnapshotError> {
    let corrupt = |reason: &str| super::error::corrupt(path, reason);
    if bytes.len() < HEADER + 8 {
        return Err(corrupt("shorter than the state-file header"));
    }
    if bytes.len() as u64 > STATE_MAX {
        return Err(SnapshotError::OutOfRange {
            path: path.to_path_buf(),
            what: "state size",
            value: bytes.len() as u64,
            min: (HEADER + 8) as u64,
            max: STATE_MAX,
        });
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
    let computed = crc64(&bytes[..end]);
    if stored != computed {
        return Err(SnapshotError::Checksum { path: path.to_path_buf(), stored, computed });
    }
    let state: VmState =
        postcard::from_bytes(&bytes[HEADER..end]).map_err(|e| corrupt(&format!("body does not decode: {e}")))?;
    super::manifest::check_mem_size(path, state.mem_size)?;
    // Checked here too, not only in a directory's manifest: a pool snapshot has none.
    super::manifest::check_abi(path, state.abi_version)?;
    // Only the MSRs a snapshot saves, each once: a state file cannot set any other.
    let mut seen = Vec::with_capacity(SAVED_MSRS.len());
    for &(index, _) in &state.vcpu.msrs {
        if !SAVED_MSRS.iter().any(|&(saved, _)| saved == index) || seen.contains(&index) {
            return Err(corrupt(&format!("MSR {index:#x} is not one a snapshot saves, or appears twice")));
        }
        seen.push(index);
    }
    Ok((state, stored))
}

#[cfg(test)]
impl VmState {
    /// A state of the smallest guest, all registers zero (tests): what the format holds,
    /// not a guest that runs.
    pub(crate) fn synthetic(abi_version: u32, msrs: Vec<(u32, u64)>) -> VmState {
        let mem_size = snapvisor_abi::layout::MIN_MEM_SIZE;
        VmState {
            abi_version,
            mem_size,
            layout: LayoutRecord {
                mailbox: 0x20_0000,
                image_base: 0x40_0000,
                image_end: 0x40_1000,
                heap_start: 0x60_0000,
                heap_end: mem_size,
                stack_top: 0x20_0000,
            },
            vcpu: VcpuState {
                regs: Default::default(),
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Default::default(),
                debugregs: Default::default(),
                vcpu_events: Default::default(),
                mp_state: Default::default(),
                msrs,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_abi_and_the_saved_msrs_are_accepted() {
        let path = Path::new("vmstate.bin");
        let decode_of = |s: VmState| decode(&encode(&s).unwrap().0, path);
        let abi = snapvisor_abi::ABI_VERSION;
        assert!(decode_of(VmState::synthetic(abi, vec![(0x10, 5), (0xc000_0102, 7)])).is_ok());
        for (bad, why) in [
            (VmState::synthetic(abi + 1, vec![]), "guest ABI version"),
            // IA32_APIC_BASE, not one a snapshot saves; then a saved one twice.
            (VmState::synthetic(abi, vec![(0x1b, 0)]), "MSR 0x1b"),
            (VmState::synthetic(abi, vec![(0x10, 1), (0x10, 2)]), "MSR 0x10"),
        ] {
            let err = decode_of(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }
}
