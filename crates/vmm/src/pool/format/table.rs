//! The metadata slot: the allocation bitmap and the snapshot table, and the rules they
//! obey ([`PoolMeta::check`], run on every read of the committed slot).

use super::index::Index;
use super::{in_range, u64_at, Blob, FormatError, EXTENT, SLOT_HEADER, SLOT_MAGIC, SLOT_SIZE};
use crate::checksum::crc64;
use crate::escape::escape;
use serde::{Deserialize, Serialize};
use snapvisor_abi::{layout, HUGE_PAGE_SIZE};

/// Longest snapshot id, in bytes.
pub const ID_MAX: usize = 128;

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

/// Whether `id` can name a snapshot: 1..=[`ID_MAX`] bytes, no `/`, and nothing a terminal
/// would not show as itself (control, bidirectional or other format characters).
pub fn valid_id(id: &str) -> bool {
    let invisible = |c: char| c != '\\' && crate::escape::needs_escape(c);
    !id.is_empty() && id.len() <= ID_MAX && !id.chars().any(|c| c == '/' || invisible(c))
}

impl SnapshotEntry {
    fn problem(&self, problem: impl Into<String>) -> FormatError {
        FormatError::Entry { id: escape(&self.id), problem: problem.into() }
    }

    /// Checks the entry's own fields against the format (not against other entries).
    fn check(&self, pool_size: u64) -> Result<(), FormatError> {
        if !valid_id(&self.id) {
            return Err(self.problem(format!("the id is not 1..={ID_MAX} visible characters without '/'")));
        }
        if self.function.len() > crate::snapshot::NAME_MAX {
            return Err(self.problem("the function name is too long"));
        }
        if crate::checksum::parse_digest(&self.memory_digest).is_none() {
            return Err(self.problem("the memory digest is not `xxh3:` and 16 hex digits"));
        }
        let mem_size = in_range("guest memory size", self.mem_size, layout::MIN_MEM_SIZE, layout::MAX_MEM_SIZE)?;
        if !mem_size.is_multiple_of(HUGE_PAGE_SIZE) {
            return Err(self.problem("the guest memory size is not a multiple of 2 MiB"));
        }
        let blobs = [
            ("state", self.state, crate::snapshot::STATE_MAX),
            // At most every other page is a separate written range.
            ("index", self.index, Index::encoded_max(mem_size / EXTENT, mem_size / snapvisor_abi::PAGE_SIZE / 2 + 1)),
        ];
        for (what, blob, max) in blobs {
            in_range(what, blob.len, 1, max)?;
            if blob.offset.checked_add(blob.len).is_none_or(|end| end > pool_size) {
                return Err(self.problem(format!("the {what} lies outside the pool")));
            }
        }
        let extents = pool_size / EXTENT;
        if self.extents.is_empty() || self.extents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.problem("its extent list is empty or not strictly ascending"));
        }
        if self.extents[0] == 0 || *self.extents.last().expect("not empty") >= extents {
            return Err(self.problem("it owns the metadata extent or extents outside the pool"));
        }
        Ok(())
    }
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

    /// Extents in use.
    pub fn used(&self, extents: u64) -> u64 {
        (0..extents).filter(|&e| self.is_set(e)).count() as u64
    }

    /// The allocation the snapshot table implies: extent 0 and every extent a snapshot owns.
    pub fn derived(&self, extents: u64) -> Self {
        let mut derived = PoolMeta::empty(extents);
        for &e in self.snapshots.iter().flat_map(|s| &s.extents) {
            derived.set(e, true);
        }
        derived
    }

    /// Checks the table against the format and the bitmap against the table, for a pool
    /// of `pool_size` bytes: valid and unique ids, bounded sizes, blobs inside the pool,
    /// extents ascending, inside the pool and owned by one snapshot, and the bitmap exactly
    /// the extents the table owns (an allocation never trusts a bitmap the table does not
    /// explain).
    pub fn check(&self, pool_size: u64) -> Result<(), FormatError> {
        let extents = pool_size / EXTENT;
        in_range("allocation map words", self.allocated.len() as u64, extents.div_ceil(64), extents.div_ceil(64))?;
        let mut owned = PoolMeta::empty(extents);
        let mut ids = std::collections::HashSet::new();
        for entry in &self.snapshots {
            entry.check(pool_size)?;
            if !ids.insert(entry.id.as_str()) {
                return Err(entry.problem("the id appears twice"));
            }
            for &e in &entry.extents {
                if owned.is_set(e) {
                    return Err(FormatError::Allocation { extent: e, problem: "is owned by two snapshots" });
                }
                owned.set(e, true);
            }
        }
        for (i, (&have, &want)) in self.allocated.iter().zip(&owned.allocated).enumerate() {
            if have != want {
                let bit = (have ^ want).trailing_zeros() as u64;
                let problem = if have & (1 << bit) != 0 {
                    "is marked in use but no snapshot owns it"
                } else {
                    "is owned by a snapshot but marked free"
                };
                return Err(FormatError::Allocation { extent: i as u64 * 64 + bit, problem });
            }
        }
        Ok(())
    }

    /// Encodes a slot (header + body) for generation `generation`.
    pub fn encode_slot(&self, generation: u64) -> Result<Vec<u8>, FormatError> {
        let body = postcard::to_stdvec(self).map_err(|e| FormatError::Decode("the metadata", e))?;
        if SLOT_HEADER + body.len() as u64 > SLOT_SIZE {
            return Err(FormatError::TooLarge {
                what: "the snapshot table and allocation map",
                len: body.len() as u64,
                max: SLOT_SIZE - SLOT_HEADER,
            });
        }
        let mut out = Vec::with_capacity(SLOT_HEADER as usize + body.len());
        out.extend_from_slice(SLOT_MAGIC);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc64(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a slot and checks that it holds `generation` (not the table's rules: see
    /// [`PoolMeta::check`]).
    pub fn decode_slot(slot: &[u8], generation: u64) -> Result<Self, FormatError> {
        if slot.len() < SLOT_HEADER as usize {
            return Err(FormatError::Short { what: "metadata slot", len: slot.len() as u64, need: SLOT_HEADER });
        }
        if &slot[0..8] != SLOT_MAGIC {
            return Err(FormatError::Magic("metadata slot"));
        }
        if u64_at(slot, 8) != generation {
            return Err(FormatError::Generation { found: u64_at(slot, 8), expected: generation });
        }
        let max = (SLOT_SIZE - SLOT_HEADER).min(slot.len() as u64 - SLOT_HEADER);
        let len = in_range("slot body length", u64_at(slot, 16), 0, max)?;
        let body = &slot[SLOT_HEADER as usize..(SLOT_HEADER + len) as usize];
        let (stored, computed) = (u64_at(slot, 24), crc64(body));
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        postcard::from_bytes(body).map_err(|e| FormatError::Decode("the metadata slot body", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, extents: Vec<u64>) -> SnapshotEntry {
        let blob = Blob { offset: extents[0] * EXTENT, len: 100, crc64: 0 };
        SnapshotEntry {
            id: id.into(),
            function: "json".into(),
            mem_size: snapvisor_abi::layout::MIN_MEM_SIZE,
            memory_digest: crate::checksum::digest_string(1),
            imported_unix: 0,
            state: blob,
            index: blob,
            extents,
        }
    }

    fn table(entries: Vec<SnapshotEntry>) -> PoolMeta {
        let mut meta = PoolMeta { snapshots: entries, ..PoolMeta::empty(100) };
        meta.allocated = meta.derived(100).allocated;
        meta
    }

    #[test]
    fn slot_round_trips_and_checks_generation() {
        let mut meta = PoolMeta::empty(100);
        meta.set(42, true);
        let slot = meta.encode_slot(9).unwrap();
        assert_eq!(PoolMeta::decode_slot(&slot, 9).unwrap(), meta);
        assert!(matches!(PoolMeta::decode_slot(&slot, 10), Err(FormatError::Generation { .. })));
        let mut bad = slot.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        assert!(matches!(PoolMeta::decode_slot(&bad, 9), Err(FormatError::Checksum { .. })));
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(PoolMeta::decode_slot(&bad, 9), Err(FormatError::OutOfRange { .. })));
    }

    #[test]
    fn the_bitmap_must_be_what_the_table_owns() {
        let pool = 100 * EXTENT;
        let good = table(vec![entry("a", vec![1, 2]), entry("b", vec![5])]);
        good.check(pool).unwrap();
        // A forged bitmap marking another snapshot's extent free: an import would reuse it.
        let mut freed = good.clone();
        freed.set(5, false);
        assert!(matches!(freed.check(pool), Err(FormatError::Allocation { extent: 5, .. })));
        let mut leaked = good.clone();
        leaked.set(7, true);
        assert!(matches!(leaked.check(pool), Err(FormatError::Allocation { extent: 7, .. })));
        let shared = table(vec![entry("a", vec![1, 2]), entry("b", vec![2])]);
        assert!(matches!(shared.check(pool), Err(FormatError::Allocation { extent: 2, .. })));
    }

    #[test]
    fn entries_are_bounded() {
        let pool = 100 * EXTENT;
        let cases: [fn(&mut SnapshotEntry); 9] = [
            |e| e.id = String::new(),
            |e| e.id = "a/b".into(),
            |e| e.id = "\x1b[2J".into(),
            |e| e.id = "abc\u{202e}def".into(),
            |e| e.mem_size = 1 << 50,
            |e| e.state.len = u64::MAX,
            |e| e.index.offset = u64::MAX,
            |e| e.extents = vec![3, 1],
            |e| e.extents = vec![1, 100],
        ];
        for case in cases {
            let mut e = entry("a", vec![1, 2]);
            case(&mut e);
            assert!(table(vec![e]).check(pool).is_err());
        }
        let twice = table(vec![entry("a", vec![1]), entry("a", vec![2])]);
        assert!(matches!(twice.check(pool), Err(FormatError::Entry { .. })));
    }
}
