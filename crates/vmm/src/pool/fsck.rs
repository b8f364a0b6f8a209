//! Checking a pool: superblock, committed metadata (the table's rules and the bitmap
//! against the table), every snapshot's state and index, and (deep) every snapshot's memory.

use super::format::{slot_offset, Index, PoolMeta, SnapshotEntry, EXTENT, SLOT_SIZE};
use super::{Pool, PoolError};
use crate::checksum::digest_string;
use crate::escape::escape;
use serde::Serialize;

/// What `fsck` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsckReport {
    /// Committed generation (if the commit record could be read).
    pub generation: Option<u64>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Extents in use.
    pub used_extents: u64,
    /// Inconsistencies; empty when the pool is clean.
    pub problems: Vec<String>,
    /// Observations that are not errors (e.g. the other slot's state).
    pub notes: Vec<String>,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Pool {
    /// Checks the whole pool; with `deep`, also re-hashes every snapshot's memory.
    pub fn fsck(&self, deep: bool) -> FsckReport {
        let mut report = FsckReport::default();
        let (generation, meta) = match self.read_meta() {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(crate::error_chain(&e));
                return report;
            }
        };
        report.generation = Some(generation);
        report.used_extents = meta.used(self.superblock.extents());
        report.snapshots = meta.snapshots.len();
        if generation > 0 {
            let slot = (generation - 1) % 2;
            let previous =
                self.slice(slot_offset(slot), SLOT_SIZE).ok().map(|s| PoolMeta::decode_slot(s, generation - 1));
            report.notes.push(match previous {
                Some(Ok(_)) => format!("slot {slot} holds the previous generation {}", generation - 1),
                _ => format!(
                    "slot {slot} does not hold generation {} (overwritten or torn by an interrupted update; not in use)",
                    generation - 1
                ),
            });
        }
        for entry in &meta.snapshots {
            let checked = self
                .load_entry(entry)
                .and_then(|(index, _)| if deep { self.check_digest(entry, &index) } else { Ok(()) });
            if let Err(e) = checked {
                report.problems.push(crate::error_chain(&e));
            }
        }
        report
    }

    /// Re-hashes a snapshot's memory through its index and compares the recorded digest.
    pub(crate) fn check_digest(&self, entry: &SnapshotEntry, index: &Index) -> Result<(), PoolError> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let zeros = vec![0u8; EXTENT as usize];
        for run in &index.runs {
            for at in (0..run.len).step_by(EXTENT as usize) {
                match run.pool {
                    Some(p) => hasher.update(self.slice(p + at, EXTENT)?),
                    None => hasher.update(&zeros),
                }
            }
        }
        let computed = digest_string(hasher.digest());
        if computed != entry.memory_digest {
            return Err(PoolError::Digest {
                path: self.path.clone(),
                id: escape(&entry.id),
                expected: entry.memory_digest.clone(),
                computed,
            });
        }
        Ok(())
    }
}
