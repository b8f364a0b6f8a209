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
pub mod medium;

use crate::snapshot::{Snapshot, SnapshotError, VmState, STATE};
use format::{
    Blob, Index, PoolMeta, Run, SnapshotEntry, Superblock, COMMIT_OFFSET, CRC, EXTENT, MIN_POOL_SIZE, SLOT_SIZE,
    SUPERBLOCK_SIZE,
};
use medium::{Medium, MediumError};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> PoolError {
    let path = path.to_path_buf();
    move |source| PoolError::Io { path, what, source }
}

/// The pool region mapped shared into the VMM.
struct PoolMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the pool; all accesses are bounds-checked copies, and
// concurrent metadata updates are serialised with flock.
unsafe impl Send for PoolMap {}
// SAFETY: see Send.
unsafe impl Sync for PoolMap {}

impl Drop for PoolMap {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// An exclusive `flock` on the pool for the duration of a metadata update.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn new(file: &'a File, path: &Path) -> Result<Self, PoolError> {
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(path, "lock")(io::Error::last_os_error()));
        }
        Ok(Locked(file))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the lock taken in `new`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
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

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Kills the process at a named point when `SNAPVISOR_CRASH_AT` names it: the pool's
/// crash-consistency tests use it to stop an import exactly between two persists.
fn crash_point(name: &str) {
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
        let medium = match medium::detect(path) {
            Ok(m) => m,
            Err(e) => {
                if !is_device {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e.into());
            }
        };
        let (map, map_sync) = map_pool(&file, size as usize, medium, path)?;
        let superblock = Superblock { uuid: random_uuid(), size, created_unix: now_unix() };
        let pool = Pool { path: path.to_path_buf(), file, medium, map, map_sync, superblock };
        // Format: empty metadata as generation 0 in slot 0, then the commit record, then
        // the superblock last (a pool without a valid superblock is not a pool).
        let slot = PoolMeta::empty(superblock.extents()).encode_slot(0).map_err(PoolError::Invalid)?;
        pool.write_persist(format::slot_offset(0), &slot)?;
        pool.write_persist(COMMIT_OFFSET, &0u64.to_le_bytes())?;
        pool.write_persist(0, &superblock.encode())?;
        Ok(pool)
    }

    /// Opens an existing pool and checks its superblock and committed metadata.
    pub fn open(path: &Path) -> Result<Arc<Self>, PoolError> {
        let medium = medium::detect(path)?;
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path, "open"))?;
        let mut head = vec![0u8; SUPERBLOCK_SIZE as usize];
        file.read_exact_at(&mut head, 0).map_err(io_err(path, "read superblock"))?;
        let superblock =
            Superblock::decode(&head).map_err(|reason| PoolError::Superblock { path: path.to_path_buf(), reason })?;
        let actual = device_or_file_size(&file, path)?;
        if actual < superblock.size {
            return Err(PoolError::Superblock {
                path: path.to_path_buf(),
                reason: format!("records {} bytes, the medium has only {actual}", superblock.size),
            });
        }
        let (map, map_sync) = map_pool(&file, superblock.size as usize, medium, path)?;
        let pool = Pool { path: path.to_path_buf(), file, medium, map, map_sync, superblock };
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

    fn read_commit(&self) -> Result<u64, PoolError> {
        let b = self.slice(COMMIT_OFFSET, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads the committed metadata: (generation, bitmap and snapshot table).
    fn read_meta(&self) -> Result<(u64, PoolMeta), PoolError> {
        let generation = self.read_commit()?;
        let slot = self.slice(format::slot_offset(generation % 2), SLOT_SIZE)?;
        let meta = PoolMeta::decode_slot(slot, generation).map_err(|reason| PoolError::Metadata {
            path: self.path.clone(),
            generation,
            reason,
        })?;
        if meta.allocated.len() as u64 != self.superblock.extents().div_ceil(64) || !meta.is_set(0) {
            return Err(PoolError::Metadata {
                path: self.path.clone(),
                generation,
                reason: "allocation map does not fit the pool".into(),
            });
        }
        Ok((generation, meta))
    }

    /// Commits `meta` as generation `generation + 1`: slot, then commit record.
    fn commit(&self, generation: u64, meta: &PoolMeta) -> Result<(), PoolError> {
        let next = generation + 1;
        let slot = meta.encode_slot(next).map_err(PoolError::Invalid)?;
        self.write_persist(format::slot_offset(next % 2), &slot)?;
        crash_point("import:slot");
        self.write_persist(COMMIT_OFFSET, &next.to_le_bytes())
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

    /// Imports the snapshot in `dir` under `id`: its non-zero 2 MiB chunks into extents,
    /// the complete address index and the vCPU state next to them. `progress` gets
    /// (chunks done, chunks total).
    pub fn import(&self, dir: &Path, id: &str, progress: &mut dyn FnMut(u64, u64)) -> Result<SnapshotEntry, PoolError> {
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
            return Err(PoolError::Invalid(format!(
                "snapshot id {id:?} must be 1..=128 printable characters without '/'"
            )));
        }
        let snapshot = Snapshot::open(dir)?;
        let state_path = dir.join(&snapshot.manifest().state.file);
        let state_bytes = std::fs::read(&state_path).map_err(|source| SnapshotError::Io {
            path: state_path.clone(),
            what: "read",
            source,
        })?;
        let mem_size = snapshot.mem_size();
        if mem_size % EXTENT != 0 {
            return Err(PoolError::Invalid(format!("memory size {mem_size} is not a multiple of 2 MiB")));
        }
        let chunks = mem_size / EXTENT;
        // The 2 MiB chunks that are not entirely zero (the ones `Snapshot::data_chunk_bytes` counts).
        let data: Vec<u64> = (0..chunks).filter(|c| !snapshot.is_zero(c * EXTENT, EXTENT)).collect();

        let _lock = Locked::new(&self.file, &self.path)?;
        let (generation, mut meta) = self.read_meta()?;
        if meta.snapshots.iter().any(|s| s.id == id) {
            return Err(PoolError::Exists { path: self.path.clone(), id: id.into() });
        }
        let extents = self.superblock.extents();
        let free = extents - meta.used(extents);
        let data_extents = meta.find_free(extents, data.len()).ok_or(PoolError::Full {
            path: self.path.clone(),
            needed: data.len() as u64 + 1,
            free,
        })?;
        let index = build_index(mem_size, &data, &data_extents);
        let index_bytes = index.encode().map_err(PoolError::Invalid)?;
        let meta_len = (state_bytes.len() + index_bytes.len()) as u64;
        let mut taken = meta.clone();
        for &e in &data_extents {
            taken.set(e, true);
        }
        let meta_extents = taken.find_free(extents, meta_len.div_ceil(EXTENT) as usize).ok_or(PoolError::Full {
            path: self.path.clone(),
            needed: data.len() as u64 + meta_len.div_ceil(EXTENT),
            free,
        })?;

        // 1. Data: copy each non-zero chunk into its extent, hashing the whole image.
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let zeros = vec![0u8; EXTENT as usize];
        let file = snapshot.memory_file();
        let mut next_data = data.iter().zip(&data_extents).peekable();
        for chunk in 0..chunks {
            match next_data.peek() {
                Some((&c, &extent)) if c == chunk => {
                    let offset = extent * EXTENT;
                    self.check_range(offset, EXTENT)?;
                    // SAFETY: the extent is inside the mapping and free in the committed
                    // metadata, so nothing else reads or writes it.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.add(offset as usize), EXTENT as usize) };
                    file.read_exact_at(dst, chunk * EXTENT).map_err(|source| SnapshotError::Io {
                        path: snapshot.memory_path(),
                        what: "read",
                        source,
                    })?;
                    hasher.update(dst);
                    self.persist(offset, EXTENT)?;
                    next_data.next();
                }
                _ => hasher.update(&zeros),
            }
            progress(chunk + 1, chunks);
        }
        let digest = format!("xxh3:{:016x}", hasher.digest());
        if digest != snapshot.manifest().memory.digest {
            return Err(SnapshotError::Digest {
                path: snapshot.memory_path(),
                expected: snapshot.manifest().memory.digest.clone(),
                computed: digest,
            }
            .into());
        }
        // 2. State and index, side by side in the snapshot's metadata extent(s).
        let base = meta_extents[0] * EXTENT;
        if meta_extents.windows(2).any(|w| w[1] != w[0] + 1) {
            return Err(PoolError::Full { path: self.path.clone(), needed: meta_extents.len() as u64, free: 0 });
        }
        self.write_persist(base, &state_bytes)?;
        self.write_persist(base + state_bytes.len() as u64, &index_bytes)?;
        crash_point("import:data");

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
            state: Blob { offset: base, len: state_bytes.len() as u64, crc64: CRC.checksum(&state_bytes) },
            index: Blob {
                offset: base + state_bytes.len() as u64,
                len: index_bytes.len() as u64,
                crc64: CRC.checksum(&index_bytes),
            },
            extents: owned,
        };
        meta.snapshots.push(entry.clone());
        self.commit(generation, &meta)?;
        crash_point("import:commit");
        Ok(entry)
    }

    /// Removes snapshot `id` from the table and frees its extents.
    pub fn remove(&self, id: &str) -> Result<SnapshotEntry, PoolError> {
        let _lock = Locked::new(&self.file, &self.path)?;
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
        self.commit(generation, &meta)?;
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

    fn load_entry(&self, entry: &SnapshotEntry) -> Result<(Index, VmState), PoolError> {
        let index_err = |reason: String| PoolError::Index { path: self.path.clone(), id: entry.id.clone(), reason };
        let index_bytes = self.blob(&entry.index).map_err(index_err)?;
        let index = Index::decode(index_bytes, entry.mem_size, self.superblock.size).map_err(index_err)?;
        if let Some(run) = index.runs.iter().find(|r| {
            r.pool.is_some_and(|p| (p / EXTENT..(p + r.len) / EXTENT).any(|e| entry.extents.binary_search(&e).is_err()))
        }) {
            return Err(index_err(format!("run {run:?} points at extents the snapshot does not own")));
        }
        let state_err = |source| PoolError::State { path: self.path.clone(), id: entry.id.clone(), source };
        let state_bytes = self
            .blob(&entry.state)
            .map_err(|reason| state_err(SnapshotError::Corrupt { path: self.path.join(STATE), reason }))?;
        let state = crate::snapshot::decode_state(state_bytes, &self.path.join(STATE)).map_err(state_err)?;
        if state.mem_size != entry.mem_size {
            return Err(state_err(SnapshotError::Mismatch {
                path: self.path.join(STATE),
                what: "memory size",
                found: state.mem_size,
                expected: entry.mem_size,
            }));
        }
        Ok((index, state))
    }

    /// Opens snapshot `id` for a restore: table entry, checked index and vCPU state.
    pub fn open_snapshot(self: &Arc<Self>, id: &str) -> Result<PoolSnapshot, PoolError> {
        let (_, meta) = self.read_meta()?;
        let entry = meta
            .snapshots
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| PoolError::NotFound { path: self.path.clone(), id: id.into() })?;
        let (index, state) = self.load_entry(&entry)?;
        Ok(PoolSnapshot { pool: self.clone(), entry, index, state })
    }

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
        let other = self.slice(format::slot_offset((generation + 1) % 2), SLOT_SIZE).ok();
        if generation > 0 {
            match other.map(|s| PoolMeta::decode_slot(s, generation - 1)) {
                Some(Ok(_)) => report.notes.push(format!(
                    "slot {} holds the previous generation {}",
                    (generation + 1) % 2,
                    generation - 1
                )),
                _ => report.notes.push(format!(
                    "slot {} does not hold generation {} (overwritten or torn by an interrupted update; not in use)",
                    (generation + 1) % 2,
                    generation - 1
                )),
            }
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
        let digest = format!("xxh3:{:016x}", hasher.digest());
        if digest != entry.memory_digest {
            return Err(format!("memory digest {digest} does not match the recorded {}", entry.memory_digest));
        }
        Ok(())
    }
}

/// Builds the index: 2 MiB chunks in `data` go to `extents` (same order), the rest is
/// zero; neighbouring chunks merge into runs.
fn build_index(mem_size: u64, data: &[u64], extents: &[u64]) -> Index {
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
    Index { mem_size, runs }
}

/// A pool snapshot opened for a restore.
pub struct PoolSnapshot {
    pool: Arc<Pool>,
    entry: SnapshotEntry,
    index: Index,
    state: VmState,
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
    fn cache_line_flush_runs_on_ordinary_memory() {
        let buf = vec![1u8; 4096];
        // SAFETY: the buffer is mapped; flushing does not change it.
        unsafe { flush_cache_lines(buf.as_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 1));
    }
}
