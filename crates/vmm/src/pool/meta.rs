//! The committed metadata: the commit record, reading the slot it names (checked against
//! the format and the bitmap against the table), and committing a new generation under the
//! update lock.

use super::error::io_err;
use super::format::{self, PoolMeta, COMMIT_OFFSET, SLOT_SIZE};
use super::{crash_point, Pool, PoolError};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::MutexGuard;

/// The right to update the metadata: the pool's mutex (other threads) and an exclusive
/// `flock` (other processes; flock alone does not separate threads sharing a descriptor).
pub(super) struct UpdateGuard<'a> {
    file: Option<&'a File>,
    _thread: MutexGuard<'a, ()>,
}

impl Drop for UpdateGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file {
            // SAFETY: releases the flock taken in `Pool::lock_updates`.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl Pool {
    /// Stores the committed generation with one 8-byte store, then persists it.
    pub(super) fn store_commit(&self, generation: u64) -> Result<(), PoolError> {
        self.region.store_u64(COMMIT_OFFSET, generation);
        self.persist(COMMIT_OFFSET, 8)
    }

    /// The committed generation (the commit record's one 8-byte load).
    pub(crate) fn committed_generation(&self) -> u64 {
        self.region.load_u64(COMMIT_OFFSET)
    }

    /// Reads the committed metadata: (generation, bitmap and snapshot table), checked with
    /// [`PoolMeta::check`].
    ///
    /// Readers take no lock: if the generation changes while a slot is read (two commits
    /// may have rewritten it), the read is retried; a slot that fails its checks while the
    /// commit record stays put is corruption.
    pub(crate) fn read_meta(&self) -> Result<(u64, PoolMeta), PoolError> {
        let mut attempts = 0;
        loop {
            let generation = self.committed_generation();
            let slot = self.slice(format::slot_offset(generation % 2), SLOT_SIZE)?;
            let decoded = PoolMeta::decode_slot(slot, generation).and_then(|meta| {
                // Generations only grow (a restore relies on it); the last one has no next.
                if generation == u64::MAX {
                    return Err(format::FormatError::OutOfRange {
                        what: "generation",
                        value: generation,
                        min: 0,
                        max: u64::MAX - 1,
                    });
                }
                meta.check(self.superblock.size)?;
                Ok(meta)
            });
            let stable = self.committed_generation() == generation;
            return match decoded {
                Err(_) if !stable && attempts < 100 => {
                    attempts += 1;
                    continue;
                }
                Err(source) => Err(PoolError::Metadata { path: self.path.clone(), generation, source }),
                Ok(meta) => Ok((generation, meta)),
            };
        }
    }

    /// Takes the right to update the metadata (threads and processes).
    pub(super) fn lock_updates(&self) -> Result<UpdateGuard<'_>, PoolError> {
        let thread = self.updates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = &self.file {
            // SAFETY: flock on an open descriptor; released by UpdateGuard's drop.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io_err(&self.path, "lock")(io::Error::last_os_error()));
            }
        }
        Ok(UpdateGuard { file: self.file.as_ref(), _thread: thread })
    }

    /// Commits `meta` as generation `generation + 1`: slot, then commit record. `op` names
    /// the operation for the crash-point test hook (`<op>:slot`).
    pub(super) fn commit(&self, generation: u64, meta: &PoolMeta, op: &str) -> Result<(), PoolError> {
        let next = generation + 1;
        let slot = meta.encode_slot(next).map_err(|source| PoolError::TableFull { path: self.path.clone(), source })?;
        self.write_persist(format::slot_offset(next % 2), &slot)?;
        crash_point(op, "slot");
        self.store_commit(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::region::MappedRegion;
    use super::*;

    #[test]
    fn the_last_generation_is_refused_not_wrapped() {
        const SIZE: u64 = 8 * format::EXTENT;
        let pool = Pool::create_in_memory(Box::new(MappedRegion::anonymous(SIZE as usize).unwrap()), SIZE).unwrap();
        let (_, meta) = pool.read_meta().unwrap();
        // A forged but self-consistent commit: a slot of generation u64::MAX, named by the record.
        let slot = meta.encode_slot(u64::MAX).unwrap();
        pool.write_persist(format::slot_offset(u64::MAX % 2), &slot).unwrap();
        pool.store_commit(u64::MAX).unwrap();
        let err = pool.read_meta().unwrap_err();
        assert!(
            matches!(
                err,
                PoolError::Metadata { generation: u64::MAX, source: format::FormatError::OutOfRange { .. }, .. }
            ),
            "{err:?}"
        );
        // So no commit can follow it (it would wrap to 0, and a restore trusts growth).
        assert!(pool.remove("nothing").is_err());
    }
}
