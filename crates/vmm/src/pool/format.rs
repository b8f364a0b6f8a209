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

use serde::{Deserialize, Serialize};

/// Pool superblock magic.
pub const MAGIC: &[u8; 8] = b"SNAPPOOL";
/// Metadata slot magic.
pub const SLOT_MAGIC: &[u8; 8] = b"POOLMETA";
/// Index magic.
pub const INDEX_MAGIC: &[u8; 8] = b"POOLIDX1";
/// On-media format version.
pub const VERSION: u32 = 1;
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

/// CRC used throughout the pool.
pub const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// Offset of metadata slot `slot` (0 or 1).
pub const fn slot_offset(slot: u64) -> u64 {
    SLOT0_OFFSET + slot * SLOT_SIZE
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
        let crc = CRC.checksum(&b[..end]);
        b[end..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a superblock.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SUPERBLOCK_SIZE as usize {
            return Err("shorter than a superblock".into());
        }
        let b = &b[..SUPERBLOCK_SIZE as usize];
        if &b[0..8] != MAGIC {
            return Err("bad magic (not a snapvisor pool)".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let end = b.len() - 8;
        let (stored, computed) = (u64_at(end), CRC.checksum(&b[..end]));
        if stored != computed {
            return Err(format!("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"));
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("format version {version}, this snapvisor reads version {VERSION}"));
        }
        let size = u64_at(32);
        if u64_at(40) != EXTENT
            || u64_at(56) != SLOT_SIZE
            || size % EXTENT != 0
            || size < MIN_POOL_SIZE
            || u64_at(48) != size / EXTENT
        {
            return Err("geometry fields are inconsistent".into());
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock { uuid, size, created_unix: u64_at(64) })
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

/// One snapshot in the pool's snapshot table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// Name the snapshot is found by (unique in the pool).
    pub id: String,
    /// Function the snapshot was taken of.
    pub function: String,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Digest of the whole memory image (the source snapshot's manifest digest).
    pub memory_digest: String,
    /// Import time, Unix seconds.
    pub imported_unix: u64,
    /// The snapshot's `vmstate.bin`, verbatim.
    pub state: Blob,
    /// The complete address index ([`Index`]).
    pub index: Blob,
    /// Every extent the snapshot owns (data, index, state), ascending.
    pub extents: Vec<u64>,
}

/// The body of a metadata slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMeta {
    /// Allocation bitmap, one bit per extent (bit set = in use; extent 0 is always in use).
    pub allocated: Vec<u64>,
    /// The snapshot table.
    pub snapshots: Vec<SnapshotEntry>,
}

impl PoolMeta {
    /// An empty pool of `extents` extents (only the metadata extent in use).
    pub fn empty(extents: u64) -> Self {
        let mut meta = PoolMeta { allocated: vec![0; extents.div_ceil(64) as usize], snapshots: Vec::new() };
        meta.set(0, true);
        meta
    }

    /// Whether extent `e` is in use.
    pub fn is_set(&self, e: u64) -> bool {
        self.allocated.get((e / 64) as usize).is_some_and(|w| w & (1 << (e % 64)) != 0)
    }

    /// Marks extent `e`.
    pub fn set(&mut self, e: u64, used: bool) {
        if let Some(w) = self.allocated.get_mut((e / 64) as usize) {
            if used {
                *w |= 1 << (e % 64);
            } else {
                *w &= !(1 << (e % 64));
            }
        }
    }

    /// The first `n` free extents below `extents`, or `None` if there are fewer.
    pub fn find_free(&self, extents: u64, n: usize) -> Option<Vec<u64>> {
        let free: Vec<u64> = (1..extents).filter(|&e| !self.is_set(e)).take(n).collect();
        (free.len() == n).then_some(free)
    }

    /// Extents in use.
    pub fn used(&self, extents: u64) -> u64 {
        (0..extents).filter(|&e| self.is_set(e)).count() as u64
    }

    /// Encodes a slot (header + body) for generation `generation`.
    pub fn encode_slot(&self, generation: u64) -> Result<Vec<u8>, String> {
        let body = postcard::to_stdvec(self).map_err(|e| e.to_string())?;
        if SLOT_HEADER + body.len() as u64 > SLOT_SIZE {
            return Err(format!("metadata of {} bytes does not fit a {SLOT_SIZE}-byte slot", body.len()));
        }
        let mut out = Vec::with_capacity(SLOT_HEADER as usize + body.len());
        out.extend_from_slice(SLOT_MAGIC);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&CRC.checksum(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a slot and checks that it holds `generation`.
    pub fn decode_slot(slot: &[u8], generation: u64) -> Result<Self, String> {
        if slot.len() < SLOT_HEADER as usize || &slot[0..8] != SLOT_MAGIC {
            return Err("bad slot magic".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
        if u64_at(8) != generation {
            return Err(format!("slot holds generation {}, the commit record names {generation}", u64_at(8)));
        }
        let len = u64_at(16);
        if len > SLOT_SIZE - SLOT_HEADER || SLOT_HEADER + len > slot.len() as u64 {
            return Err("slot length out of range".into());
        }
        let body = &slot[SLOT_HEADER as usize..(SLOT_HEADER + len) as usize];
        let (stored, computed) = (u64_at(24), CRC.checksum(body));
        if stored != computed {
            return Err(format!("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"));
        }
        postcard::from_bytes(body).map_err(|e| format!("body does not decode: {e}"))
    }
}

/// Run flag: reserved for working-set marks (pages a recorded invocation touched).
pub const RUN_WORKING_SET: u32 = 1;

/// A run of guest pages in the index: either in the pool or all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First guest byte (2 MiB aligned).
    pub guest: u64,
    /// Bytes (a multiple of 2 MiB).
    pub len: u64,
    /// Pool offset of the first byte, or `None` for an all-zero run (mapped anonymous).
    pub pool: Option<u64>,
    /// `RUN_*` flags.
    pub flags: u32,
}

/// The complete address index of a snapshot: runs that cover guest memory from 0 to
/// `mem_size` without gap or overlap, so every guest page has a pool offset or "zero".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Guest memory bytes.
    pub mem_size: u64,
    /// The runs, ascending.
    pub runs: Vec<Run>,
}

impl Index {
    /// Encodes the index (magic + postcard).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = INDEX_MAGIC.to_vec();
        out.extend(postcard::to_stdvec(self).map_err(|e| e.to_string())?);
        Ok(out)
    }

    /// Decodes an index and checks it is complete for `mem_size` and inside a pool of `pool_size`.
    pub fn decode(bytes: &[u8], mem_size: u64, pool_size: u64) -> Result<Self, String> {
        if bytes.len() < 8 || &bytes[..8] != INDEX_MAGIC {
            return Err("bad index magic".into());
        }
        let index: Index = postcard::from_bytes(&bytes[8..]).map_err(|e| format!("index does not decode: {e}"))?;
        index.check(mem_size, pool_size)?;
        Ok(index)
    }

    /// Checks completeness: runs are 2 MiB aligned, contiguous from 0 to `mem_size`, and
    /// pool runs lie inside the pool's data extents.
    pub fn check(&self, mem_size: u64, pool_size: u64) -> Result<(), String> {
        if self.mem_size != mem_size {
            return Err(format!("index covers {} bytes, the snapshot has {mem_size}", self.mem_size));
        }
        let mut next = 0u64;
        for run in &self.runs {
            let end = run.guest.checked_add(run.len).filter(|&end| end <= mem_size);
            if run.guest != next || run.len == 0 || end.is_none() || run.guest % EXTENT != 0 || run.len % EXTENT != 0 {
                return Err(format!("run {run:?} leaves a gap, overlaps, is not 2 MiB aligned or ends past memory"));
            }
            if let Some(at) = run.pool {
                if at % EXTENT != 0 || at < EXTENT || at.checked_add(run.len).is_none_or(|end| end > pool_size) {
                    return Err(format!("run {run:?} points outside the pool's data extents"));
                }
            }
            next += run.len;
        }
        if next != mem_size {
            return Err(format!("runs cover {next} bytes, not the snapshot's {mem_size}"));
        }
        Ok(())
    }

    /// Pool offset of guest page `page` (4 KiB index), or `None` if it is zero.
    pub fn lookup(&self, page: u64) -> Option<u64> {
        let addr = page * snapvisor_abi::PAGE_SIZE;
        let i = self.runs.partition_point(|r| r.guest + r.len <= addr);
        let run = self.runs.get(i)?;
        run.pool.map(|p| p + (addr - run.guest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips_and_detects_flips() {
        let sb = Superblock { uuid: [7; 16], size: 64 * EXTENT, created_unix: 5 };
        let mut bytes = sb.encode();
        assert_eq!(Superblock::decode(&bytes), Ok(sb));
        bytes[33] ^= 1;
        assert!(Superblock::decode(&bytes).unwrap_err().contains("checksum"));
    }

    #[test]
    fn slot_round_trips_and_checks_generation() {
        let mut meta = PoolMeta::empty(100);
        meta.set(42, true);
        let slot = meta.encode_slot(9).unwrap();
        assert_eq!(PoolMeta::decode_slot(&slot, 9).unwrap(), meta);
        assert!(PoolMeta::decode_slot(&slot, 10).is_err());
        let mut bad = slot.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        assert!(PoolMeta::decode_slot(&bad, 9).unwrap_err().contains("checksum"));
    }

    #[test]
    fn index_must_be_complete() {
        let index = Index {
            mem_size: 3 * EXTENT,
            runs: vec![
                Run { guest: 0, len: EXTENT, pool: Some(EXTENT), flags: 0 },
                Run { guest: EXTENT, len: 2 * EXTENT, pool: None, flags: 0 },
            ],
        };
        assert!(index.check(3 * EXTENT, 4 * EXTENT).is_ok());
        assert_eq!(index.lookup(1), Some(EXTENT + 4096));
        assert_eq!(index.lookup(600), None);
        assert!(index.check(4 * EXTENT, 4 * EXTENT).is_err());
        let mut gap = index.clone();
        gap.runs[1].guest += EXTENT;
        assert!(gap.check(3 * EXTENT, 4 * EXTENT).is_err());
        let mut outside = index.clone();
        outside.runs[0].pool = Some(4 * EXTENT);
        assert!(outside.check(3 * EXTENT, 4 * EXTENT).is_err());
        let bytes = index.encode().unwrap();
        assert_eq!(Index::decode(&bytes, 3 * EXTENT, 4 * EXTENT).unwrap(), index);
    }

    #[test]
    fn find_free_skips_used_extents() {
        let mut meta = PoolMeta::empty(8);
        meta.set(1, true);
        meta.set(3, true);
        assert_eq!(meta.find_free(8, 3), Some(vec![2, 4, 5]));
        assert_eq!(meta.find_free(8, 6), None);
        assert_eq!(meta.used(8), 3);
    }
}
