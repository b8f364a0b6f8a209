//! The pool's on-media format (see `docs/pool-format.md`).
//!
//! ```text
//! extent 0 (2 MiB, metadata)
//!   0x0000  superblock: magic, version, uuid, sizes, CRC-64          (written once, by init)
//!   0x1000  commit record: u64 generation g (one atomic 8-byte store)
//!   0x2000  metadata slot 0  ┐ slot g % 2 holds generation g:
//!   ......  metadata slot 1  ┘ allocation bitmap + snapshot table, CRC-64
//! extents 1.. (2 MiB each): snapshot data, indexes, vCPU states
//! ```
//!
//! An update writes generation g+1 into the other slot, persists it, then stores g+1 in
//! the commit record and persists that: the commit record always names a complete slot,
//! so a crash leaves the old or the new state, never a mix; a slot that fails its checksum
//! while the commit record names it is corruption, reported, never silently rolled back.
//!
//! Every decoder here takes bytes and returns a typed [`FormatError`]; every count, length
//! and offset is bounded before it drives an allocation or an access (the decoders are
//! fuzzed: `crate::fuzzing`).

mod index;
mod table;

pub use index::{Index, Run};
pub use table::{valid_id, PoolMeta, SnapshotEntry, ID_MAX};

use crate::checksum::crc64;
use serde::{Deserialize, Serialize};

/// Pool superblock magic.
pub const MAGIC: &[u8; 8] = b"SNAPPOOL";
/// Metadata slot magic.
pub const SLOT_MAGIC: &[u8; 8] = b"POOLMETA";
/// Index magic.
pub const INDEX_MAGIC: &[u8; 8] = b"POOLIDX2";
/// On-media format version.
pub const VERSION: u32 = 2;
/// Allocation unit.
pub const EXTENT: u64 = 2 << 20;
/// Bytes of the superblock.
pub const SUPERBLOCK_SIZE: u64 = 4096;
/// Offset of the commit record.
pub const COMMIT_OFFSET: u64 = 4096;
/// Offset of metadata slot 0.
pub const SLOT0_OFFSET: u64 = 8192;
/// Bytes of one metadata slot.
pub const SLOT_SIZE: u64 = (EXTENT - SLOT0_OFFSET) / 2;
/// Bytes of a slot header.
pub const SLOT_HEADER: u64 = 32;
/// Smallest pool: the metadata extent and one data extent.
pub const MIN_POOL_SIZE: u64 = 2 * EXTENT;
/// Largest pool: 4 TiB (2 Mi extents; the allocation bitmap, 256 KiB, must fit a metadata
/// slot next to the snapshot table).
pub const MAX_POOL_SIZE: u64 = 4 << 40;

/// Offset of metadata slot `slot` (0 or 1).
pub const fn slot_offset(slot: u64) -> u64 {
    SLOT0_OFFSET + slot * SLOT_SIZE
}

/// What is wrong with a structure read from a pool.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("{what} is truncated ({len} bytes, needs {need})")]
    Short {
        /// The structure.
        what: &'static str,
        /// Bytes there.
        len: u64,
        /// Bytes needed.
        need: u64,
    },
    /// Not the structure's magic.
    #[error("bad magic (not a snapvisor {0})")]
    Magic(&'static str),
    /// The stored checksum does not match.
    #[error("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    Checksum {
        /// Stored.
        stored: u64,
        /// Computed.
        computed: u64,
    },
    /// Another format version.
    #[error("format version {found}, this snapvisor reads version {expected}")]
    Version {
        /// Found.
        found: u32,
        /// Supported.
        expected: u32,
    },
    /// The superblock's geometry fields disagree with each other.
    #[error("geometry fields are inconsistent")]
    Geometry,
    /// A slot holding another generation than the commit record names.
    #[error("slot holds generation {found}, the commit record names {expected}")]
    Generation {
        /// Found.
        found: u64,
        /// Named by the commit record.
        expected: u64,
    },
    /// A number outside the range the format allows.
    #[error("{what} {value} is outside the allowed range {min}..={max}")]
    OutOfRange {
        /// The quantity.
        what: &'static str,
        /// Value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A postcard body that does not decode.
    #[error("{0} does not decode")]
    Decode(&'static str, #[source] postcard::Error),
    /// An encoding larger than its area.
    #[error("{what} of {len} bytes does not fit its {max}-byte area")]
    TooLarge {
        /// The structure.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The area.
        max: u64,
    },
    /// An index run that breaks the index's rules.
    #[error("run {run:?} {problem}")]
    Run {
        /// The run.
        run: Run,
        /// Which rule.
        problem: &'static str,
    },
    /// The index's write set breaks its rules (sorted, disjoint, inside memory).
    #[error("written pages {first}+{count} {problem}")]
    Written {
        /// First page of the offending range.
        first: u64,
        /// Its pages.
        count: u64,
        /// Which rule.
        problem: &'static str,
    },
    /// An index that does not cover guest memory exactly.
    #[error("the index covers {found} bytes, the snapshot has {expected}")]
    Coverage {
        /// Bytes covered.
        found: u64,
        /// Guest memory bytes.
        expected: u64,
    },
    /// A snapshot table entry that breaks the table's rules.
    #[error("snapshot `{id}`: {problem}")]
    Entry {
        /// The entry's id (escaped for display).
        id: String,
        /// Which rule.
        problem: String,
    },
    /// The allocation map disagrees with the snapshot table.
    #[error("extent {extent} {problem}")]
    Allocation {
        /// The extent.
        extent: u64,
        /// How.
        problem: &'static str,
    },
}

/// Checks that `value` lies in `min..=max`.
pub(crate) fn in_range(what: &'static str, value: u64, min: u64, max: u64) -> Result<u64, FormatError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(FormatError::OutOfRange { what, value, min, max })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The fixed fields of the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Random identity of the pool.
    pub uuid: [u8; 16],
    /// Bytes of the pool (a multiple of [`EXTENT`]).
    pub size: u64,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
}

impl Superblock {
    /// Number of extents.
    pub fn extents(&self) -> u64 {
        self.size / EXTENT
    }

    /// Encodes the superblock (4 KiB, CRC in the last 8 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SUPERBLOCK_SIZE as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        b[40..48].copy_from_slice(&EXTENT.to_le_bytes());
        b[48..56].copy_from_slice(&self.extents().to_le_bytes());
        b[56..64].copy_from_slice(&SLOT_SIZE.to_le_bytes());
        b[64..72].copy_from_slice(&self.created_unix.to_le_bytes());
        let end = b.len() - 8;
        let crc = crc64(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a superblock.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SUPERBLOCK_SIZE as usize {
            return Err(FormatError::Short { what: "superblock", len: b.len() as u64, need: SUPERBLOCK_SIZE });
        }
        let b = &b[..SUPERBLOCK_SIZE as usize];
        if &b[0..8] != MAGIC {
            return Err(FormatError::Magic("pool"));
        }
        let end = b.len() - 8;
        let (stored, computed) = (u64_at(b, end), crc64(&b[..end]));
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(FormatError::Version { found: version, expected: VERSION });
        }
        let size = in_range("pool size", u64_at(b, 32), MIN_POOL_SIZE, MAX_POOL_SIZE)?;
        if u64_at(b, 40) != EXTENT || u64_at(b, 56) != SLOT_SIZE || size % EXTENT != 0 || u64_at(b, 48) != size / EXTENT
        {
            return Err(FormatError::Geometry);
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock { uuid, size, created_unix: u64_at(b, 64) })
    }

    /// The uuid as text.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }
}

/// A byte range inside the pool with its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// Pool offset.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// CRC-64/XZ of the bytes.
    pub crc64: u64,
}

impl Blob {
    /// The blob of `bytes` stored at `offset`.
    pub fn of(offset: u64, bytes: &[u8]) -> Self {
        Blob { offset, len: bytes.len() as u64, crc64: crc64(bytes) }
    }

    /// Checks the CRC of `bytes` (read from the blob's range).
    pub fn check(&self, bytes: &[u8]) -> Result<(), FormatError> {
        let computed = crc64(bytes);
        if computed != self.crc64 {
            return Err(FormatError::Checksum { stored: self.crc64, computed });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips_and_detects_flips() {
        let sb = Superblock { uuid: [7; 16], size: 64 * EXTENT, created_unix: 5 };
        let mut bytes = sb.encode();
        assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
        bytes[33] ^= 1;
        assert!(matches!(Superblock::decode(&bytes), Err(FormatError::Checksum { .. })));
    }

    #[test]
    fn superblock_sizes_are_bounded() {
        for size in [0, EXTENT, MAX_POOL_SIZE + EXTENT, u64::MAX - EXTENT + 1] {
            let mut bytes = Superblock { uuid: [1; 16], size: 64 * EXTENT, created_unix: 0 }.encode();
            bytes[32..40].copy_from_slice(&size.to_le_bytes());
            bytes[48..56].copy_from_slice(&(size / EXTENT).to_le_bytes());
            let end = bytes.len() - 8;
            let crc = crc64(&bytes[..end]);
            bytes[end..].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(Superblock::decode(&bytes), Err(FormatError::OutOfRange { .. })), "{size}");
        }
    }
}
