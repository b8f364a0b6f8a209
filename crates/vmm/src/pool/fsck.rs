//! Checking a pool: superblock, committed metadata, every snapshot's extents, state and
//! index, and (deep) every snapshot's memory.

use super::format::{slot_offset, Index, PoolMeta, SnapshotEntry, EXTENT, SLOT_SIZE};
use super::Pool;
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
                report.problems.push(e.to_string());
                return report;
            }
        };
        report.generation = Some(generation);
        let extents = self.superblock.extents();
        report.used_extents = meta.used(extents);
        report.snapshots = meta.snapshots.len();
        if generation > 0 {
            let slot = (generation + 1) % 2;
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
        let mut owner: Vec<Option<&str>> = vec![None; extents as usize];
        owner[0] = Some("(metadata)");
        let mut ids = std::collections::HashSet::new();
        for entry in &meta.snapshots {
            if !ids.insert(&entry.id) {
                report.problems.push(format!("snapshot id `{}` appears twice", entry.id));
            }
            for &e in &entry.extents {
                match owner.get_mut(e as usize) {
                    None => report.problems.push(format!("snapshot `{}` owns extent {e}, outside the pool", entry.id)),
                    Some(Some(other)) => {
                        report.problems.push(format!("extent {e} is owned by both `{other}` and `{}`", entry.id))
                    }
                    Some(slot) => *slot = Some(&entry.id),
                }
                if !meta.is_set(e) {
                    report.problems.push(format!("extent {e} of snapshot `{}` is marked free", entry.id));
                }
            }
            match self.load_entry(entry) {
                Err(e) => report.problems.push(e.to_string()),
                Ok((index, _)) if deep => {
                    if let Err(reason) = self.check_digest(entry, &index) {
                        report.problems.push(format!("snapshot `{}`: {reason}", entry.id));
                    }
                }
                Ok(_) => {}
            }
        }
        for e in 1..extents {
            if meta.is_set(e) && owner[e as usize].is_none() {
                report.problems.push(format!("extent {e} is marked in use but no snapshot owns it"));
            }
        }
        report
    }

    fn check_digest(&self, entry: &SnapshotEntry, index: &Index) -> Result<(), String> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let zeros = vec![0u8; EXTENT as usize];
        for run in &index.runs {
            for at in (0..run.len).step_by(EXTENT as usize) {
                match run.pool {
                    Some(p) => hasher.update(self.slice(p + at, EXTENT).map_err(|e| e.to_string())?),
                    None => hasher.update(&zeros),
                }
            }
        }
        let digest = crate::snapshot::digest_string(hasher.digest());
        if digest != entry.memory_digest {
            return Err(format!("memory digest {digest} does not match the recorded {}", entry.memory_digest));
        }
        Ok(())
    }
}
