//! Where snapvisor keeps its files: the data directory, and the pool it sets up there.
//!
//! ```text
//! DATA_DIR/
//!   snapshots/<function>/     snapshots taken by `snapshot` (default place) and the benchmark
//!   pool/                     the default pool: emulation.json + mnt/ (hugetlbfs or tmpfs mount)
//!     mnt/snapvisor.pool      the emulated persistent-memory pool
//!   bench-pool/               the benchmark's own pool, set up and torn down by each run
//!   images/<name>.elf         guest images registered with the daemon (`PUT /functions/NAME`)
//!   snapvisor.sock            the daemon's Unix socket (mode 0600)
//!   snapvisor.lock            held (flock) by the running daemon
//!   bench.lock                held (flock) by a running `snapvisor bench`
//! ```
//!
//! Files are written under a hidden temporary name (`.NAME.partial-PID`,
//! `.NAME.upload-PID`) and renamed into place; [`crate::node::store::sweep`] removes those
//! of dead processes.

use snapvisor_vmm::pool::format::EXTENT;
use snapvisor_vmm::pool::medium::{self, EmulatedKind, EmulationRecord};
use snapvisor_vmm::pool::{Pool, PoolError};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of an emulated pool inside its mount.
pub const POOL_FILE: &str = "snapvisor.pool";

/// The data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data directory at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Default place of a function's snapshot.
    pub fn snapshot(&self, function: &str) -> PathBuf {
        self.snapshots().join(function)
    }

    /// Root of the default pool's emulation.
    pub fn pool_root(&self) -> PathBuf {
        self.root.join("pool")
    }

    /// Path of the default pool.
    pub fn default_pool(&self) -> PathBuf {
        self.pool_root().join("mnt").join(POOL_FILE)
    }

    /// Directory of the snapshots taken by name.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Directory of the registered guest images.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Default path of the daemon's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("snapvisor.sock")
    }

    /// The file a running daemon holds locked.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("snapvisor.lock")
    }

    /// The file a running benchmark holds locked (its fixtures, pool and medium are
    /// one run's alone).
    pub fn bench_lock_file(&self) -> PathBuf {
        self.root.join("bench.lock")
    }

    /// Root of the benchmark's pool.
    pub fn bench_pool_root(&self) -> PathBuf {
        self.root.join("bench-pool")
    }

    /// The 64 KiB folio setting a benchmark run changed, to be put back
    /// (`vstate/folios.rs`).
    pub fn bench_folios_record(&self) -> PathBuf {
        self.root.join("bench-folios")
    }
}

/// An exclusive `flock` on a file, held until dropped; the kernel releases it when the
/// process dies, even by `kill -9`.
pub struct FileLock {
    _file: File,
}

/// Takes an exclusive lock on `path` (created if missing, its directory too; a symbolic
/// link there is refused): `Ok(None)` at once if another process holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    Ok(Some(FileLock { _file: file }))
}

/// Creates a pool. With `path`, on that device or file (real or already-mounted medium);
/// without, on an emulated medium set up under `emulation_root` (undone on failure).
pub fn init_pool(
    path: Option<&Path>,
    emulation_root: &Path,
    size: u64,
    cow: u64,
    kind: EmulatedKind,
) -> Result<Arc<Pool>, PoolError> {
    let size = size.div_ceil(EXTENT) * EXTENT;
    if let Some(path) = path {
        Pool::create(path, size)?;
        return Pool::open(path);
    }
    std::fs::create_dir_all(emulation_root).map_err(|source| PoolError::Io {
        path: emulation_root.into(),
        what: "create directory",
        source,
    })?;
    let huge_pages = (size + cow).div_ceil(EXTENT);
    let (mnt, _) = medium::setup_emulation(emulation_root, huge_pages, kind)?;
    let file = mnt.join(POOL_FILE);
    match Pool::create(&file, size).and_then(|_| Pool::open(&file)) {
        Ok(pool) => Ok(pool),
        Err(e) => {
            let _ = medium::teardown_emulation(emulation_root);
            Err(e)
        }
    }
}

/// Undoes an emulated pool under `emulation_root` (unmount, release huge pages).
pub fn destroy_pool(emulation_root: &Path) -> Result<Option<EmulationRecord>, PoolError> {
    Ok(medium::teardown_emulation(emulation_root)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_until_dropped_and_links_are_refused() {
        let dir = std::env::temp_dir().join(format!("snapvisor-lock-{}", std::process::id()));
        let path = dir.join("sub").join("x.lock");
        let held = try_lock(&path).unwrap().expect("free");
        assert!(try_lock(&path).unwrap().is_none(), "held by another open file description");
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
        let link = dir.join("link.lock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(try_lock(&link).is_err(), "a symbolic link is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
