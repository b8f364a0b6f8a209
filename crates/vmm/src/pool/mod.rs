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
//! Metadata updates are crash-consistent (see [`format`]): data and index are persisted
//! first, then a new metadata slot, then the commit record.

pub mod format;
mod fsck;
mod import;
mod lease;
pub mod medium;

pub use fsck::FsckReport;
pub use lease::Lease;

use crate::snapshot::{SnapshotError, VmState};
use format::{Blob, Index, PoolMeta, SnapshotEntry, Superblock, COMMIT_OFFSET, CRC, EXTENT, MIN_POOL_SIZE, SLOT_SIZE};
use medium::{Medium, MediumError};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The medium is unusable.
    #[error(transparent)]
    Medium(#[from] MediumError),
    /// I/O on the pool failed.
    #[error("{}: {what}", .path.display())]
    Io {
        /// Pool path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The superblock is not valid.
    #[error("{}: superblock: {reason}", .path.display())]
    Superblock {
        /// Pool path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The metadata slot named by the commit record is not valid.
    #[error("{}: metadata (snapshot table and allocation map) of generation {generation} is corrupt: {reason}", .path.display())]
    Metadata {
        /// Pool path.
        path: PathBuf,
        /// Committed generation.
        generation: u64,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot's index is not valid.
    #[error("{}: index of snapshot `{id}` is corrupt: {reason}", .path.display())]
    Index {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot's stored vCPU state is not valid.
    #[error("{}: vCPU state of snapshot `{id}` is corrupt", .path.display())]
    State {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id.
        id: String,
        /// The cause.
        #[source]
        source: SnapshotError,
    },
    /// No such snapshot.
    #[error("{}: no snapshot `{id}` in the pool", .path.display())]
    NotFound {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id.
        id: String,
    },
    /// A snapshot with this id exists.
    #[error("{}: a snapshot `{id}` is already in the pool", .path.display())]
    Exists {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id.
        id: String,
    },
    /// Not enough free extents.
    #[error("{}: the pool has {free} free extents of 2 MiB, the snapshot needs {needed}", .path.display())]
    Full {
        /// Pool path.
        path: PathBuf,
        /// Extents needed.
        needed: u64,
        /// Extents free.
        free: u64,
    },
    /// The source snapshot could not be read or does not match its manifest.
    #[error("the snapshot to import is not valid")]
    Source(#[from] SnapshotError),
    /// Bad arguments (sizes, ids).
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> PoolError {
    let path = path.to_path_buf();
    move |source| PoolError::Io { path, what, source }
}

/// The pool region mapped shared into the VMM.
struct PoolMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the pool; all accesses are bounds-checked copies;
// metadata updates are serialised by the pool's mutex (threads) and flock (processes), and
// extents being filled are exclusively leased.
unsafe impl Send for PoolMap {}
// SAFETY: see Send.
unsafe impl Sync for PoolMap {}

impl Drop for PoolMap {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The right to update the metadata: the pool's mutex (other threads) and an exclusive
/// `flock` (other processes; flock alone does not separate threads sharing a descriptor).
struct UpdateGuard<'a> {
    file: &'a File,
    _thread: MutexGuard<'a, ()>,
}

impl Drop for UpdateGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the flock taken in `Pool::lock_updates`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// An open pool.
pub struct Pool {
    path: PathBuf,
    file: File,
    medium: Medium,
    map: PoolMap,
    map_sync: bool,
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

/// Kills the process at a named point when `SNAPVISOR_CRASH_AT` names it: the pool's
/// crash-consistency tests use it to stop an import exactly between two persists.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("SNAPVISOR_CRASH_AT").is_ok_and(|v| v == name) {
        // SAFETY: sends SIGKILL to this process, like a power cut would stop it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

impl Pool {
    /// Creates a pool of `size` bytes at `path` (a device, or a file that is created) and
    /// formats it: superblock, empty snapshot table, commit record.
    pub fn create(path: &Path, size: u64) -> Result<Self, PoolError> {
        if size < MIN_POOL_SIZE || !size.is_multiple_of(EXTENT) {
            return Err(PoolError::Invalid(format!(
                "pool size {size} is not a multiple of 2 MiB of at least {MIN_POOL_SIZE} bytes"
            )));
        }
        let is_device = std::fs::metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_char_device()
        });
        if !is_device && path.exists() {
            return Err(PoolError::Invalid(format!("{}: already exists", path.display())));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!is_device)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if !is_device {
            file.set_len(size).map_err(io_err(path, "set length"))?;
        }
        let checked = medium::detect(path).map_err(PoolError::from).and_then(|medium| {
            let actual = device_or_file_size(&file, path)?;
            if actual < size {
                return Err(PoolError::Invalid(format!("{}: has {actual} bytes, fewer than {size}", path.display())));
            }
            Ok(medium)
        });
        let medium = match checked {
            Ok(m) => m,
            Err(e) => {
                if !is_device {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        let (map, map_sync) = map_pool(&file, size as usize, medium, path)?;
        let superblock = Superblock { uuid: random_uuid(), size, created_unix: now_unix() };
        let pool = Pool { path: path.to_path_buf(), file, medium, map, map_sync, superblock, updates: Mutex::new(()) };
        // Format: empty metadata as generation 0 in slot 0, then the commit record, then
        // the superblock last (a pool without a valid superblock is not a pool).
        let slot = PoolMeta::empty(superblock.extents()).encode_slot(0).map_err(PoolError::Invalid)?;
        pool.write_persist(format::slot_offset(0), &slot)?;
        pool.store_commit(0)?;
        pool.write_persist(0, &superblock.encode())?;
        Ok(pool)
    }

    /// Opens an existing pool and checks its superblock and committed metadata.
    ///
    /// Everything is read through the shared mapping (device-dax supports nothing else).
    pub fn open(path: &Path) -> Result<Arc<Self>, PoolError> {
        let medium = medium::detect(path)?;
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path, "open"))?;
        let actual = device_or_file_size(&file, path)?;
        if actual < MIN_POOL_SIZE {
            return Err(PoolError::Superblock { path: path.to_path_buf(), reason: format!("only {actual} bytes") });
        }
        let (map, map_sync) = map_pool(&file, actual as usize, medium, path)?;
        // SAFETY: the mapping is at least MIN_POOL_SIZE bytes, more than a superblock.
        let head = unsafe { std::slice::from_raw_parts(map.ptr, format::SUPERBLOCK_SIZE as usize) };
        let superblock =
            Superblock::decode(head).map_err(|reason| PoolError::Superblock { path: path.to_path_buf(), reason })?;
        if actual < superblock.size {
            return Err(PoolError::Superblock {
                path: path.to_path_buf(),
                reason: format!("records {} bytes, the medium has only {actual}", superblock.size),
            });
        }
        let pool = Pool { path: path.to_path_buf(), file, medium, map, map_sync, superblock, updates: Mutex::new(()) };
        pool.read_meta()?;
        Ok(Arc::new(pool))
    }

    /// Pool path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The medium the pool lives on.
    pub fn medium(&self) -> Medium {
        self.medium
    }

    /// The pool's descriptor (for mapping extents).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    fn slice(&self, offset: u64, len: u64) -> Result<&[u8], PoolError> {
        self.check_range(offset, len)?;
        // SAFETY: the range is inside the live shared mapping (checked above).
        Ok(unsafe { std::slice::from_raw_parts(self.map.ptr.add(offset as usize), len as usize) })
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        if offset.checked_add(len).is_none_or(|end| end > self.map.len as u64) {
            return Err(PoolError::Invalid(format!("range {offset:#x}+{len:#x} is outside the pool")));
        }
        Ok(())
    }

    /// Copies `bytes` to `offset` and makes them durable.
    fn write_persist(&self, offset: u64, bytes: &[u8]) -> Result<(), PoolError> {
        self.check_range(offset, bytes.len() as u64)?;
        // SAFETY: the range is inside the live shared mapping; metadata writers hold the
        // pool lock, and data extents being written are not yet referenced by anyone.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.ptr.add(offset as usize), bytes.len()) };
        self.persist(offset, bytes.len() as u64)
    }

    /// Makes `[offset, offset+len)` of the pool durable: cache-line flushes and a fence on
    /// real persistent memory mapped synchronously, `msync` otherwise.
    fn persist(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check_range(offset, len)?;
        if self.map_sync {
            // SAFETY: the range is inside the live mapping.
            unsafe { flush_cache_lines(self.map.ptr.add(offset as usize), len as usize) };
            return Ok(());
        }
        let page = 4096u64;
        let start = offset & !(page - 1);
        let end = (offset + len).div_ceil(page) * page;
        // SAFETY: a page-aligned range inside the live mapping.
        let rc = unsafe {
            libc::msync(
                self.map.ptr.add(start as usize).cast(),
                (end.min(self.map.len as u64) - start) as usize,
                libc::MS_SYNC,
            )
        };
        if rc != 0 {
            return Err(io_err(&self.path, "msync")(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The commit record, as one atomic 8-byte cell.
    fn commit_record(&self) -> &AtomicU64 {
        // SAFETY: COMMIT_OFFSET is 8-byte aligned inside the mapping (page aligned, larger
        // than the metadata extent), and the cell is only ever accessed atomically.
        unsafe { &*self.map.ptr.add(COMMIT_OFFSET as usize).cast::<AtomicU64>() }
    }

    /// Stores the committed generation with one 8-byte store, then persists it.
    fn store_commit(&self, generation: u64) -> Result<(), PoolError> {
        self.commit_record().store(generation.to_le(), Ordering::Release);
        self.persist(COMMIT_OFFSET, 8)
    }

    /// Reads the committed metadata: (generation, bitmap and snapshot table).
    ///
    /// Readers take no lock: if the generation changes while a slot is read (two commits
    /// may have rewritten it), the read is retried; a slot that fails its checks while the
    /// commit record stays put is corruption.
    pub(crate) fn read_meta(&self) -> Result<(u64, PoolMeta), PoolError> {
        let mut attempts = 0;
        loop {
            let generation = u64::from_le(self.commit_record().load(Ordering::Acquire));
            let slot = self.slice(format::slot_offset(generation % 2), SLOT_SIZE)?;
            let decoded = PoolMeta::decode_slot(slot, generation);
            let stable = u64::from_le(self.commit_record().load(Ordering::Acquire)) == generation;
            let meta = match decoded {
                Err(_) if !stable && attempts < 100 => {
                    attempts += 1;
                    continue;
                }
                Err(reason) => return Err(PoolError::Metadata { path: self.path.clone(), generation, reason }),
                Ok(meta) => meta,
            };
            if meta.allocated.len() as u64 != self.superblock.extents().div_ceil(64) || !meta.is_set(0) {
                return Err(PoolError::Metadata {
                    path: self.path.clone(),
                    generation,
                    reason: "allocation map does not fit the pool".into(),
                });
            }
            return Ok((generation, meta));
        }
    }

    /// Takes the right to update the metadata (threads and processes).
    fn lock_updates(&self) -> Result<UpdateGuard<'_>, PoolError> {
        let thread = self.updates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: flock on an open descriptor; released by UpdateGuard's drop.
        if unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&self.path, "lock")(io::Error::last_os_error()));
        }
        Ok(UpdateGuard { file: &self.file, _thread: thread })
    }

    /// Commits `meta` as generation `generation + 1`: slot, then commit record. `op` names
    /// the operation for the crash-point test hook (`<op>:slot`).
    fn commit(&self, generation: u64, meta: &PoolMeta, op: &str) -> Result<(), PoolError> {
        let next = generation + 1;
        let slot = meta.encode_slot(next).map_err(PoolError::Invalid)?;
        self.write_persist(format::slot_offset(next % 2), &slot)?;
        crash_point(&format!("{op}:slot"));
        self.store_commit(next)
    }

    /// Address of extent `e` in the mapping (checked to be inside it), for filling it
    /// during an import.
    fn extent_ptr(&self, e: u64) -> Result<*mut u8, PoolError> {
        self.check_range(e * EXTENT, EXTENT)?;
        // SAFETY: the offset is inside the mapping (checked above).
        Ok(unsafe { self.map.ptr.add((e * EXTENT) as usize) })
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
        let i = meta
            .snapshots
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| PoolError::NotFound { path: self.path.clone(), id: id.into() })?;
        let entry = meta.snapshots.remove(i);
        for &e in &entry.extents {
            meta.set(e, false);
        }
        self.commit(generation, &meta, "remove")?;
        Ok(entry)
    }

    fn blob(&self, blob: &Blob) -> Result<&[u8], String> {
        let bytes = self.slice(blob.offset, blob.len).map_err(|e| e.to_string())?;
        let crc = CRC.checksum(bytes);
        if crc != blob.crc64 {
            return Err(format!("checksum mismatch (stored {:#018x}, computed {crc:#018x})", blob.crc64));
        }
        Ok(bytes)
    }

    /// Checks a table entry against the pool and decodes its index and state: blobs and
    /// runs lie in extents the snapshot owns, every owned extent is used, checksums match.
    fn load_entry(&self, entry: &SnapshotEntry) -> Result<(Index, VmState), PoolError> {
        let index_err = |reason: String| PoolError::Index { path: self.path.clone(), id: entry.id.clone(), reason };
        let state_path = PathBuf::from(format!("{}[{}]/vmstate", self.path.display(), entry.id));
        let state_err = |source| PoolError::State { path: self.path.clone(), id: entry.id.clone(), source };
        let owned = |first: u64, len: u64| -> Option<Vec<u64>> {
            let end = first.checked_add(len)?;
            let extents: Vec<u64> = (first / EXTENT..end.div_ceil(EXTENT)).collect();
            extents.iter().all(|e| entry.extents.binary_search(e).is_ok()).then_some(extents)
        };
        let index_extents = owned(entry.index.offset, entry.index.len)
            .ok_or_else(|| index_err("the index lies outside the snapshot's extents".into()))?;
        let state_extents = owned(entry.state.offset, entry.state.len).ok_or_else(|| {
            state_err(SnapshotError::Corrupt {
                path: state_path.clone(),
                reason: "outside the snapshot's extents".into(),
            })
        })?;
        let index = Index::decode(self.blob(&entry.index).map_err(index_err)?, entry.mem_size, self.superblock.size)
            .map_err(index_err)?;
        let mut used: Vec<u64> = index_extents.into_iter().chain(state_extents).collect();
        for run in &index.runs {
            if let Some(p) = run.pool {
                let extents = owned(p, run.len)
                    .ok_or_else(|| index_err(format!("run {run:?} points at extents the snapshot does not own")))?;
                used.extend(extents);
            }
        }
        used.sort_unstable();
        used.dedup();
        if used != entry.extents {
            return Err(index_err(format!(
                "the snapshot owns extents {:?} but uses {:?}",
                entry.extents.iter().filter(|e| used.binary_search(e).is_err()).collect::<Vec<_>>(),
                used
            )));
        }
        let state_bytes = self
            .blob(&entry.state)
            .map_err(|reason| state_err(SnapshotError::Corrupt { path: state_path.clone(), reason }))?;
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
        let find = |meta: PoolMeta| {
            meta.snapshots
                .into_iter()
                .find(|s| s.id == id)
                .ok_or_else(|| PoolError::NotFound { path: self.path.clone(), id: id.into() })
        };
        let entry = find(self.read_meta()?.1)?;
        let lease = Lease::open(&self.path, false).map_err(io_err(&self.path, "open a lease"))?;
        lease.share(&entry.extents).map_err(io_err(&self.path, "lease extents"))?;
        // Leased now; if the snapshot was removed (and its extents possibly reused) before
        // the lease was granted, it is no longer the committed entry.
        if find(self.read_meta()?.1)? != entry {
            return Err(PoolError::NotFound { path: self.path.clone(), id: id.into() });
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

fn device_or_file_size(file: &File, path: &Path) -> Result<u64, PoolError> {
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_char_device() {
        return Ok(meta.len());
    }
    // device-dax: /sys/dev/char/MAJ:MIN/size.
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let sys = format!("/sys/dev/char/{}:{}/size", libc::major(rdev), libc::minor(rdev));
    std::fs::read_to_string(&sys)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| PoolError::Invalid(format!("cannot read the size of {} from {sys}", path.display())))
}

fn map_pool(file: &File, len: usize, medium: Medium, path: &Path) -> Result<(PoolMap, bool), PoolError> {
    const MAP_SHARED_VALIDATE: i32 = 0x03;
    const MAP_SYNC: i32 = 0x8_0000;
    let map = |flags: i32| {
        // SAFETY: a new shared mapping of the pool chosen by the kernel; checked below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), 0)
        };
        (p != libc::MAP_FAILED).then_some(p.cast::<u8>())
    };
    // Real persistent memory: synchronous mappings, so flushes alone make stores durable.
    if medium == Medium::FsDax {
        if let Some(ptr) = map(MAP_SHARED_VALIDATE | MAP_SYNC) {
            return Ok((PoolMap { ptr, len }, true));
        }
    }
    let ptr = map(libc::MAP_SHARED).ok_or_else(|| io_err(path, "map the pool")(io::Error::last_os_error()))?;
    Ok((PoolMap { ptr, len }, medium == Medium::DevDax))
}

/// Writes back and orders the cache lines of `[ptr, ptr+len)` (`clwb`, else
/// `clflushopt`, else `clflush`, then `sfence`).
///
/// # Safety
/// The range must be mapped.
unsafe fn flush_cache_lines(ptr: *const u8, len: usize) {
    use std::arch::x86_64::{__cpuid_count, _mm_clflush, _mm_sfence};
    // CPUID.(EAX=7,ECX=0):EBX bit 24 = CLWB, bit 23 = CLFLUSHOPT.
    let ebx = __cpuid_count(7, 0).ebx;
    let (clwb, clflushopt) = (ebx & (1 << 24) != 0, ebx & (1 << 23) != 0);
    let start = ptr as usize & !63;
    let end = ptr as usize + len;
    for line in (start..end).step_by(64) {
        let p = line as *const u8;
        // SAFETY: `p` is inside the mapped range (caller's contract); these instructions
        // only write the line back, they do not change memory contents.
        unsafe {
            if clwb {
                std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags));
            } else if clflushopt {
                std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags));
            } else {
                _mm_clflush(p);
            }
        }
    }
    // SAFETY: sfence only orders stores; SSE is part of the x86-64 baseline.
    unsafe { _mm_sfence() };
}

fn random_uuid() -> [u8; 16] {
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
    fn cache_line_flush_runs_on_ordinary_memory() {
        let buf = vec![1u8; 4096];
        // SAFETY: the buffer is mapped; flushing does not change it.
        unsafe { flush_cache_lines(buf.as_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 1));
    }
}
