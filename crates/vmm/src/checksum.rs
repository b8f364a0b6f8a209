//! The checksums of snapvisor's formats, defined once: CRC-64/XZ over metadata (headers,
//! tables, manifests, records, pool slots) and xxh3-64 over bulk page data (memory images,
//! working-set pages), which it hashes at memory speed.
//!
//! Both detect damage, not forgery: whoever can rewrite a file can recompute them
//! (see `docs/security.md`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// CRC-64/XZ, the checksum of every metadata structure.
pub const CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_XZ);

/// CRC-64/XZ of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// xxh3-64 of `bytes`.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The text form of a memory digest (`xxh3:<16 hex digits>`), as manifests and pool
/// entries store it.
pub fn digest_string(xxh3: u64) -> String {
    format!("xxh3:{xxh3:016x}")
}

/// The value of a digest in text form, or `None` if it is not `xxh3:<16 hex digits>`.
pub fn parse_digest(text: &str) -> Option<u64> {
    let hex = text.strip_prefix("xxh3:")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `xxh3:<hex>` of `bytes`.
pub fn digest_bytes(bytes: &[u8]) -> String {
    digest_string(xxh3(bytes))
}

/// xxh3-64 of `len` bytes of `file` from `offset`, read in 4 MiB pieces.
pub fn xxh3_file(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; (4 << 20).min(len as usize).max(1)];
    let mut done = 0;
    while done < len {
        let n = (buf.len() as u64).min(len - done) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_reject_other_text() {
        assert_eq!(parse_digest(&digest_string(0x0123_4567_89ab_cdef)), Some(0x0123_4567_89ab_cdef));
        for bad in ["", "xxh3:", "xxh3:123", "md5:0123456789abcdef", "xxh3:0123456789abcdeg", "xxh3:+123456789abcdef"] {
            assert_eq!(parse_digest(bad), None, "{bad}");
        }
        assert_eq!(crc64(b"123456789"), 0x995d_c9bb_df19_39fa, "the CRC-64/XZ check value");
    }
}
