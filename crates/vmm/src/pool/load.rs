//! Opening a pool snapshot for a restore: its table entry, index and vCPU state, checked
//! against the pool, and a shared lease on its extents.

use super::format::{FormatError, Index, PoolMeta, SnapshotEntry, EXTENT};
use super::lease::Lease;
use super::{io_err, Pool, PoolError};
use crate::escape::escape;
use crate::snapshot::{SnapshotError, VmState};
use std::path::PathBuf;
use std::sync::Arc;

impl Pool {
    /// The bytes of a blob, checked to lie in the pool and against its CRC.
    fn blob(&self, blob: &super::format::Blob) -> Result<&[u8], FormatError> {
        let end = blob.offset.saturating_add(blob.len);
        super::format::in_range("blob end", end, 0, self.superblock.size)?;
        let bytes = self.region.bytes(blob.offset, blob.len);
        blob.check(bytes)?;
        Ok(bytes)
    }

    /// Checks a table entry against the pool and decodes its index and state: blobs and
    /// runs lie in extents the snapshot owns, every owned extent is used, checksums match.
    /// (The entry itself was checked by [`PoolMeta::check`] when the table was read.)
    pub(crate) fn load_entry(&self, entry: &SnapshotEntry) -> Result<(Index, VmState), PoolError> {
        let id = escape(&entry.id);
        let index_err = |source| PoolError::Index { path: self.path.clone(), id: id.clone(), source };
        let state_path = PathBuf::from(format!("{}[{id}]/vmstate", self.path.display()));
        let state_err = |source| PoolError::State { path: self.path.clone(), id: id.clone(), source };
        let problem = |problem: &str| FormatError::Entry { id: id.clone(), problem: problem.into() };
        // Which owned extents something lies in; `false` if it lies outside them.
        let mut used = vec![false; entry.extents.len()];
        let mut mark = |offset: u64, len: u64| -> bool {
            let Some(end) = offset.checked_add(len).filter(|&end| end <= self.superblock.size) else { return false };
            (offset / EXTENT..end.div_ceil(EXTENT)).all(|e| match entry.extents.binary_search(&e) {
                Ok(i) => {
                    used[i] = true;
                    true
                }
                Err(_) => false,
            })
        };
        if !mark(entry.index.offset, entry.index.len) {
            return Err(index_err(problem("the index lies outside the snapshot's extents")));
        }
        if !mark(entry.state.offset, entry.state.len) {
            return Err(state_err(crate::snapshot::corrupt(&state_path, "outside the snapshot's extents")));
        }
        let index_bytes = self.blob(&entry.index).map_err(index_err)?;
        let index = Index::decode(index_bytes, entry.mem_size, self.superblock.size).map_err(index_err)?;
        for &run in &index.runs {
            if let Some(p) = run.pool {
                if !mark(p, run.len) {
                    return Err(index_err(FormatError::Run {
                        run,
                        problem: "points at extents the snapshot does not own",
                    }));
                }
            }
        }
        let unused: Vec<u64> = entry.extents.iter().zip(&used).filter(|(_, &u)| !u).map(|(&e, _)| e).collect();
        if !unused.is_empty() {
            let shown: Vec<u64> = unused.iter().copied().take(8).collect();
            return Err(index_err(problem(&format!("owns {} extents it does not use ({shown:?}…)", unused.len()))));
        }
        let state_bytes =
            self.blob(&entry.state).map_err(|e| state_err(crate::snapshot::corrupt(&state_path, e.to_string())))?;
        let state = crate::snapshot::decode_state(state_bytes, &state_path).map_err(state_err)?;
        if state.mem_size != entry.mem_size {
            return Err(state_err(SnapshotError::Mismatch {
                path: state_path,
                what: "memory size",
                found: state.mem_size,
                expected: entry.mem_size,
            }));
        }
        Ok((index, state))
    }

    /// Opens snapshot `id` for a restore: table entry, checked index and vCPU state, and a
    /// shared lease on its extents (see [`Lease`]).
    pub fn open_snapshot(self: &Arc<Self>, id: &str) -> Result<PoolSnapshot, PoolError> {
        let find = |meta: PoolMeta| meta.snapshots.into_iter().find(|s| s.id == id).ok_or_else(|| self.not_found(id));
        let (generation, meta) = self.read_meta()?;
        let entry = find(meta)?;
        let Some(file) = &self.file else {
            return Err(PoolError::InMemory(self.path.clone()));
        };
        let lease = Lease::open(file, false).map_err(io_err(&self.path, "open a lease"))?;
        lease.share(&entry.extents).map_err(io_err(&self.path, "lease extents"))?;
        // Leased now; if the snapshot was removed (and its extents possibly reused) before
        // the lease was granted, it is no longer the committed entry. Generations only
        // grow, so an unchanged one means no commit came between; otherwise look again.
        if self.committed_generation() != generation && find(self.read_meta()?.1)? != entry {
            return Err(self.not_found(id));
        }
        let (index, state) = self.load_entry(&entry)?;
        Ok(PoolSnapshot { pool: self.clone(), entry, index, state, lease: Arc::new(lease) })
    }
}

/// A pool snapshot opened for a restore.
pub struct PoolSnapshot {
    pool: Arc<Pool>,
    entry: SnapshotEntry,
    index: Index,
    state: VmState,
    lease: Arc<Lease>,
}

impl PoolSnapshot {
    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Table entry.
    pub fn entry(&self) -> &SnapshotEntry {
        &self.entry
    }

    /// Function name.
    pub fn function(&self) -> &str {
        &self.entry.function
    }

    /// The complete address index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The vCPU/VM state.
    pub fn state(&self) -> &VmState {
        &self.state
    }

    /// The shared lease on the snapshot's extents: whoever maps them keeps a clone for as
    /// long as the mapping lives, so no import reuses them meanwhile.
    pub fn lease(&self) -> Arc<Lease> {
        self.lease.clone()
    }
}
