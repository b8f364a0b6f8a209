//! The persistent-memory pool that PASS keeps snapshots in, managed by the VMM itself
//! (no filesystem in the data path).
//!
//! A pool is one byte-addressable region — a device-dax device, a file on a DAX
//! filesystem, or (here) an emulated DRAM file — mapped shared into the VMM and divided
//! into 2 MiB extents. [`Pool::import`] copies a snapshot's non-zero memory into extents
//! and stores a *complete address index* ([`format::Index`]: every guest page → pool
//! offset or zero) and the vCPU state next to it; a restore finds all of it by snapshot id
//! in the snapshot table ("VM-snapshot memory match") and maps guest memory straight onto
//! the extents (`crate::restore::pass`).
//!
//! | file | concern |
//! |---|---|
//! | `format/` | the on-media encodings and their checks (superblock, slots, table, index) |
//! | `region.rs` | the persistence layer: stores, flushes, fences ([`region::Region`]) |
//! | `meta.rs` | the commit record, reading and committing metadata, the update lock |
//! | `load.rs` | opening a snapshot for a restore: entry, index, state, lease |
//! | `import.rs`, `fsck.rs` | importing a snapshot directory; checking a pool |
//! | `lease.rs` | byte-range leases between running VMs and imports |
//! | `medium.rs`, `emulation.rs` | what a pool lives on; the emulated medium set up as root |
//!
//! Metadata updates are crash-consistent (see [`format`]): data and index are persisted
//! first, then a new metadata slot, then the commit record; `crash_tests` checks every
//! crash image the recorded persists allow.

mod emulation;
mod error;
pub mod format;
mod fsck;
mod import;
mod lease;
mod load;
pub mod medium;
mod meta;
pub mod region;

#[cfg(test)]
mod crash_tests;

pub use error::PoolError;
pub use fsck::FsckReport;
pub use lease::Lease;
pub use load::PoolSnapshot;

use error::io_err;
use format::{PoolMeta, SnapshotEntry, Superblock, EXTENT, MAX_POOL_SIZE, MIN_POOL_SIZE, SUPERBLOCK_SIZE};
use medium::Medium;
use region::{MappedRegion, Region};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open pool.
pub struct Pool {
    path: PathBuf,
    /// The pool's file or device; `None` for a pool in process memory (tests, fuzzing).
    file: Option<File>,
    medium: Medium,
    region: Box<dyn Region>,
    superblock: Superblock,
    updates: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.path)
            .field("medium", &self.medium)
            .field("size", &self.superblock.size)
            .finish()
    }
}

/// Summary of a pool for `pool ls`.
#[derive(Clone, Debug, Serialize)]
pub struct PoolInfo {
    /// Pool path.
    pub path: PathBuf,
    /// Medium.
    pub medium: Medium,
    /// UUID.
    pub uuid: String,
    /// Bytes.
    pub size: u64,
    /// Extents in use (including the metadata extent).
    pub used_extents: u64,
    /// Extents in total.
    pub extents: u64,
    /// Committed metadata generation.
    pub generation: u64,
    /// The snapshot table.
    pub snapshots: Vec<SnapshotEntry>,
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Kills the process at `<op>:<stage>` when `SNAPVISOR_CRASH_AT` names it: the pool's
/// crash tests stop an import exactly between two persists. Only in builds with the
/// `crash-injection` feature (test builds): a release binary has no such hook.
#[cfg(feature = "crash-injection")]
pub(crate) fn crash_point(op: &str, stage: &str) {
    let named = std::env::var("SNAPVISOR_CRASH_AT").ok();
    if named.is_some_and(|v| v.split_once(':') == Some((op, stage))) {
        // SAFETY: sends SIGKILL to this process, like a power cut would stop it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Without the `crash-injection` feature, crash points do nothing.
#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_op: &str, _stage: &str) {}

/// Opens a pool's file or device (symbolic links followed: the path is the user's) and
/// returns it with its medium and size. Only a regular file on a pool medium or a
/// device-dax character device is accepted.
fn open_medium(path: &Path) -> Result<(File, Medium, u64), PoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(crate::files::io_err(path, "open"))?;
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if !ft.is_file() && !ft.is_char_device() {
        return Err(crate::files::FileError::NotRegular { path: path.into(), kind: "special file" }.into());
    }
    let medium = medium::detect(path)?;
    let size = if ft.is_char_device() { medium::device_size(&meta, path)? } else { meta.len() };
    Ok((file, medium, size))
}

impl Pool {
    /// Creates a pool of `size` bytes at `path` (a device, or a file that is created) and
    /// formats it: superblock, empty snapshot table, commit record. A device that already
    /// holds a pool is refused like an existing file ([`PoolError::AlreadyExists`]): its
    /// snapshots, and any VMM using it, are never formatted away.
    pub fn create(path: &Path, size: u64) -> Result<Self, PoolError> {
        check_size(size)?;
        let is_device = std::fs::metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_char_device()
        });
        if !is_device {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => PoolError::AlreadyExists(path.into()),
                    _ => io_err(path, "create")(e),
                })?
                .set_len(size)
                .map_err(io_err(path, "set length"))?;
        }
        let created = open_medium(path).and_then(|(file, medium, actual)| {
            if actual < size {
                return Err(PoolError::MediumTooSmall { path: path.into(), actual, needed: size });
            }
            let region = map_medium(&file, size, medium, path)?;
            if is_device && holds_pool(&region) {
                return Err(PoolError::AlreadyExists(path.into()));
            }
            Pool::format(path.into(), Some(file), medium, Box::new(region), size)
        });
        if created.is_err() && !is_device {
            let _ = std::fs::remove_file(path);
        }
        created
    }

    /// Opens an existing pool and checks its superblock and committed metadata.
    ///
    /// Everything is read through the shared mapping (device-dax supports nothing else).
    pub fn open(path: &Path) -> Result<Arc<Self>, PoolError> {
        let (file, medium, actual) = open_medium(path)?;
        if actual < MIN_POOL_SIZE {
            return Err(PoolError::MediumTooSmall { path: path.into(), actual, needed: MIN_POOL_SIZE });
        }
        let region = map_medium(&file, actual.min(MAX_POOL_SIZE), medium, path)?;
        Ok(Arc::new(Pool::load(path.into(), Some(file), medium, Box::new(region))?))
    }

    /// Formats a pool of `size` bytes in process memory over `region` (tests, fuzzing): no
    /// file, so no locks between processes and no leases.
    pub fn create_in_memory(region: Box<dyn Region>, size: u64) -> Result<Self, PoolError> {
        check_size(size)?;
        if region.len() < size {
            return Err(PoolError::MediumTooSmall { path: memory_path(), actual: region.len(), needed: size });
        }
        Pool::format(memory_path(), None, Medium::Memory, region, size)
    }

    /// Opens a pool in process memory over `region` (tests, fuzzing).
    pub fn open_in_memory(region: Box<dyn Region>) -> Result<Self, PoolError> {
        if region.len() < MIN_POOL_SIZE {
            return Err(PoolError::MediumTooSmall { path: memory_path(), actual: region.len(), needed: MIN_POOL_SIZE });
        }
        Pool::load(memory_path(), None, Medium::Memory, region)
    }

    fn format(
        path: PathBuf,
        file: Option<File>,
        medium: Medium,
        region: Box<dyn Region>,
        size: u64,
    ) -> Result<Self, PoolError> {
        let superblock = Superblock { uuid: random_uuid(), size, created_unix: now_unix() };
        let pool = Pool { path, file, medium, region, superblock, updates: Mutex::new(()) };
        // Empty metadata as generation 0 in slot 0, then the commit record, then the
        // superblock last (a pool without a valid superblock is not a pool).
        let slot = PoolMeta::empty(superblock.extents())
            .encode_slot(0)
            .map_err(|source| PoolError::TableFull { path: pool.path.clone(), source })?;
        pool.write_persist(format::slot_offset(0), &slot)?;
        pool.store_commit(0)?;
        pool.write_persist(0, &superblock.encode())?;
        Ok(pool)
    }

    fn load(path: PathBuf, file: Option<File>, medium: Medium, region: Box<dyn Region>) -> Result<Self, PoolError> {
        let superblock = Superblock::decode(region.bytes(0, SUPERBLOCK_SIZE))
            .map_err(|source| PoolError::Superblock { path: path.clone(), source })?;
        if region.len() < superblock.size {
            return Err(PoolError::MediumTooSmall { path, actual: region.len(), needed: superblock.size });
        }
        let pool = Pool { path, file, medium, region, superblock, updates: Mutex::new(()) };
        pool.read_meta()?;
        Ok(pool)
    }

    /// Pool path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The medium the pool lives on.
    pub fn medium(&self) -> Medium {
        self.medium
    }

    /// The pool's descriptor (for mapping extents); an in-memory pool has none.
    pub fn fd(&self) -> Result<BorrowedFd<'_>, PoolError> {
        self.file.as_ref().map(|f| f.as_fd()).ok_or_else(|| PoolError::InMemory(self.path.clone()))
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The bytes at `[offset, offset + len)` of the pool.
    fn slice(&self, offset: u64, len: u64) -> Result<&[u8], PoolError> {
        self.check_range(offset, len)?;
        Ok(self.region.bytes(offset, len))
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        if offset.checked_add(len).is_none_or(|end| end > self.superblock.size) {
            return Err(PoolError::Io {
                path: self.path.clone(),
                what: "access the pool",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("range {offset:#x}+{len:#x} is outside the pool"),
                ),
            });
        }
        Ok(())
    }

    /// Stores `bytes` at `offset` and makes them durable.
    fn write_persist(&self, offset: u64, bytes: &[u8]) -> Result<(), PoolError> {
        self.check_range(offset, bytes.len() as u64)?;
        self.region.store(offset, bytes);
        self.persist(offset, bytes.len() as u64)
    }

    /// Makes `[offset, offset + len)` durable: flush, then fence.
    fn persist(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check_range(offset, len)?;
        self.region.flush(offset, len).map_err(io_err(&self.path, "flush"))?;
        self.region.fence().map_err(io_err(&self.path, "fence"))
    }

    /// The pool and its snapshot table.
    pub fn info(&self) -> Result<PoolInfo, PoolError> {
        let (generation, meta) = self.read_meta()?;
        Ok(PoolInfo {
            path: self.path.clone(),
            medium: self.medium,
            uuid: self.superblock.uuid_string(),
            size: self.superblock.size,
            used_extents: meta.used(self.superblock.extents()),
            extents: self.superblock.extents(),
            generation,
            snapshots: meta.snapshots,
        })
    }

    /// Removes snapshot `id` from the table and frees its extents.
    pub fn remove(&self, id: &str) -> Result<SnapshotEntry, PoolError> {
        let _update = self.lock_updates()?;
        let (generation, mut meta) = self.read_meta()?;
        let i = meta.snapshots.iter().position(|s| s.id == id).ok_or_else(|| self.not_found(id))?;
        let entry = meta.snapshots.remove(i);
        for &e in &entry.extents {
            meta.set(e, false);
        }
        self.commit(generation, &meta, "remove")?;
        Ok(entry)
    }

    fn not_found(&self, id: &str) -> PoolError {
        PoolError::NotFound { path: self.path.clone(), id: crate::escape::escape(id) }
    }
}

/// Whether `region` starts with a pool's superblock magic.
fn holds_pool(region: &dyn Region) -> bool {
    region.bytes(0, format::MAGIC.len() as u64) == format::MAGIC
}

fn memory_path() -> PathBuf {
    PathBuf::from("(in-memory pool)")
}

fn check_size(size: u64) -> Result<(), PoolError> {
    if !(MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&size) || !size.is_multiple_of(EXTENT) {
        return Err(PoolError::Size { size, min: MIN_POOL_SIZE, max: MAX_POOL_SIZE });
    }
    Ok(())
}

/// Maps `len` bytes of the pool's medium shared (synchronously on fsdax when possible).
fn map_medium(file: &File, len: u64, medium: Medium, path: &Path) -> Result<MappedRegion, PoolError> {
    MappedRegion::map_file(file, len as usize, medium == Medium::FsDax, medium == Medium::DevDax)
        .map_err(io_err(path, "map the pool"))
}

pub(crate) fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into the buffer.
    let n = unsafe { libc::getrandom(uuid.as_mut_ptr().cast(), uuid.len(), 0) };
    if n != 16 {
        // Fall back on time and pid: uniqueness, not secrecy, is what matters.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        uuid[..8].copy_from_slice(&(t as u64).to_le_bytes());
        uuid[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // variant
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_formatted_pool_is_recognised_so_a_device_is_never_formatted_twice() {
        const SIZE: u64 = 8 * EXTENT;
        let blank = MappedRegion::anonymous(SIZE as usize).unwrap();
        assert!(!holds_pool(&blank));
        let pool = Pool::create_in_memory(Box::new(MappedRegion::anonymous(SIZE as usize).unwrap()), SIZE).unwrap();
        assert!(holds_pool(pool.region.as_ref()));
    }
}
