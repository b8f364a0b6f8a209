//! Importing a snapshot directory into the pool.

use super::format::{valid_id, Blob, Index, Run, SnapshotEntry, EXTENT};
use super::lease::Lease;
use super::{crash_point, io_err, now_unix, Pool, PoolError};
use crate::checksum::digest_string;
use crate::snapshot::recording::Recording;
use crate::snapshot::working_set::{WorkingSet, WorkingSetKind};
use crate::snapshot::{Snapshot, SnapshotError};
use std::os::unix::fs::FileExt;
use std::path::Path;

impl Pool {
    /// Imports the snapshot in `dir` under `id`: its non-zero 2 MiB chunks into extents,
    /// the complete address index and the vCPU state next to them. `progress` gets
    /// (chunks done, chunks total). A recorded write set (`ws.write`, checked against the
    /// snapshot) and the input that recorded it go into the index, for `pass`.
    ///
    /// Free extents are those no snapshot of the committed table owns (the table, checked
    /// against the bitmap on every read, decides; a forged bitmap cannot hand out another
    /// snapshot's extents) and that no running VM still maps. Order of persists: data, then
    /// state and index, then the metadata slot, then the commit record (see
    /// `docs/pool-format.md`). Until the commit, the extents used are free in the committed
    /// metadata, so a crash leaves the old state.
    pub fn import(&self, dir: &Path, id: &str, progress: &mut dyn FnMut(u64, u64)) -> Result<SnapshotEntry, PoolError> {
        if !valid_id(id) {
            return Err(PoolError::Id(crate::escape::escape(id)));
        }
        let snapshot = Snapshot::open(dir)?;
        // The state bytes `Snapshot::open` checked (CRC against the manifest), verbatim.
        let state_bytes = snapshot.state_bytes();
        let mem_size = snapshot.mem_size();
        let chunks = mem_size / EXTENT;
        let data = snapshot.data_chunks();
        let (written, recorded_with) = match WorkingSet::open(&snapshot, WorkingSetKind::Write, true) {
            Ok(set) => (set.runs().to_vec(), Recording::read(dir).map(|r| r.input)),
            Err(SnapshotError::Missing(_)) => (Vec::new(), None),
            Err(e) => return Err(e.into()),
        };
        let index_max = Index::encoded_max(chunks, written.len() as u64);
        let meta_count = (state_bytes.len() as u64 + index_max).div_ceil(EXTENT);

        let _update = self.lock_updates()?;
        let (generation, mut meta) = self.read_meta()?;
        if meta.snapshots.iter().any(|s| s.id == id) {
            return Err(PoolError::Exists { path: self.path.clone(), id: crate::escape::escape(id) });
        }
        let extents = self.superblock.extents();
        let owned = meta.derived(extents);
        let mut usable = Vec::new();
        // Free extents that no running VM still maps (it would hold a shared lease).
        let lease = match &self.file {
            Some(file) => Some(Lease::open(file, true).map_err(io_err(&self.path, "open a lease"))?),
            None => None,
        };
        for e in (1..extents).filter(|&e| !owned.is_set(e)) {
            let free = match &lease {
                Some(lease) => lease.lock(e, 1, true, false).map_err(io_err(&self.path, "lock extent"))?,
                None => true,
            };
            if free {
                usable.push(e);
            }
        }
        let needed = data.len() as u64 + meta_count;
        let full = PoolError::Full { path: self.path.clone(), needed, free: usable.len() as u64 };
        // The state and the index go into contiguous extents; the data into any others.
        let Some(meta_start) =
            usable.windows(meta_count as usize).position(|w| w[w.len() - 1] - w[0] == meta_count - 1)
        else {
            return Err(full);
        };
        let meta_extents: Vec<u64> = usable.drain(meta_start..meta_start + meta_count as usize).collect();
        if usable.len() < data.len() {
            return Err(full);
        }
        let data_extents: Vec<u64> = usable[..data.len()].to_vec();

        // 1. Data: copy each non-zero chunk into its extent, hashing the whole image.
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let zeros = vec![0u8; EXTENT as usize];
        let file = snapshot.memory_file();
        let mut next_data = data.iter().zip(&data_extents).peekable();
        for chunk in 0..chunks {
            match next_data.peek() {
                Some((&c, &extent)) if c == chunk => {
                    // The extent is exclusively ours: we hold the update lock and an exclusive
                    // lease on it, and it is free in the committed metadata.
                    self.check_range(extent * EXTENT, EXTENT)?;
                    self.region
                        .store_with(extent * EXTENT, EXTENT, &mut |dst| {
                            file.read_exact_at(dst, chunk * EXTENT)?;
                            hasher.update(dst);
                            Ok(())
                        })
                        .map_err(crate::snapshot::io_err(&snapshot.memory_path(), "read"))?;
                    self.persist(extent * EXTENT, EXTENT)?;
                    next_data.next();
                }
                _ => hasher.update(&zeros),
            }
            progress(chunk + 1, chunks);
        }
        let digest = digest_string(hasher.digest());
        if digest != snapshot.manifest().memory.digest {
            return Err(SnapshotError::Digest {
                path: snapshot.memory_path(),
                expected: snapshot.manifest().memory.digest.clone(),
                computed: digest,
            }
            .into());
        }

        // 2. State and index, side by side in the snapshot's metadata extent(s).
        let index = Index { written, recorded_with, ..build_index(mem_size, &data, &data_extents) };
        let index_bytes = index.encode();
        let base = meta_extents[0] * EXTENT;
        debug_assert!((state_bytes.len() + index_bytes.len()) as u64 <= meta_count * EXTENT);
        self.write_persist(base, state_bytes)?;
        self.write_persist(base + state_bytes.len() as u64, &index_bytes)?;
        crash_point("import", "data");

        // 3. Commit the new snapshot table and allocation map.
        let mut owned: Vec<u64> = data_extents.iter().chain(&meta_extents).copied().collect();
        owned.sort_unstable();
        for &e in &owned {
            meta.set(e, true);
        }
        let entry = SnapshotEntry {
            id: id.to_string(),
            function: snapshot.manifest().function.clone(),
            mem_size,
            memory_digest: snapshot.manifest().memory.digest.clone(),
            imported_unix: now_unix(),
            state: Blob::of(base, state_bytes),
            index: Blob::of(base + state_bytes.len() as u64, &index_bytes),
            extents: owned,
        };
        meta.snapshots.push(entry.clone());
        self.commit(generation, &meta, "import")?;
        crash_point("import", "commit");
        Ok(entry)
    }
}

/// Builds the index: 2 MiB chunks in `data` go to `extents` (same order), the rest is
/// zero; neighbouring chunks merge into runs.
pub(super) fn build_index(mem_size: u64, data: &[u64], extents: &[u64]) -> Index {
    let mut runs: Vec<Run> = Vec::new();
    let mut next_data = data.iter().zip(extents).peekable();
    for chunk in 0..mem_size / EXTENT {
        let pool = match next_data.peek() {
            Some((&c, &e)) if c == chunk => {
                next_data.next();
                Some(e * EXTENT)
            }
            _ => None,
        };
        let guest = chunk * EXTENT;
        match runs.last_mut() {
            Some(last) if last.pool.is_none() && pool.is_none() => last.len += EXTENT,
            Some(last) if last.pool.is_some_and(|p| Some(p + last.len) == pool) => last.len += EXTENT,
            _ => runs.push(Run { guest, len: EXTENT, pool, flags: 0 }),
        }
    }
    Index { mem_size, runs, written: Vec::new(), recorded_with: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_merges_neighbouring_chunks() {
        // chunks 0,1 data in extents 5,6 (contiguous), chunk 2 zero, chunk 3 data in extent 9.
        let index = build_index(5 * EXTENT, &[0, 1, 3], &[5, 6, 9]);
        assert_eq!(
            index.runs,
            vec![
                Run { guest: 0, len: 2 * EXTENT, pool: Some(5 * EXTENT), flags: 0 },
                Run { guest: 2 * EXTENT, len: EXTENT, pool: None, flags: 0 },
                Run { guest: 3 * EXTENT, len: EXTENT, pool: Some(9 * EXTENT), flags: 0 },
                Run { guest: 4 * EXTENT, len: EXTENT, pool: None, flags: 0 },
            ]
        );
        assert!(index.check(5 * EXTENT, 10 * EXTENT).is_ok());
    }

    #[test]
    fn the_index_bound_holds_for_the_worst_case() {
        // Alternating data and zero chunks with far-apart extents: the most runs, the largest numbers.
        let chunks = 8192u64;
        let data: Vec<u64> = (0..chunks).step_by(2).collect();
        let extents: Vec<u64> = (0..data.len() as u64).map(|i| u64::MAX / EXTENT / 2 - 2 * i).collect();
        let index = build_index(chunks * EXTENT, &data, &extents);
        let written: Vec<_> =
            (0..chunks * 256).map(|i| crate::snapshot::PageRange { first: 2 * i, count: 1 }).collect();
        let label = Some("\u{10ffff}".repeat(crate::snapshot::recording::MAX_LABEL));
        let index = Index { written, recorded_with: label, ..index };
        assert!(index.encode().len() as u64 <= Index::encoded_max(chunks, chunks * 256));
    }
}
