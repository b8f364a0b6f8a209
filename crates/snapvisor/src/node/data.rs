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
//! ```
//!
//! Files are written under a hidden temporary name (`.NAME.partial-PID`,
//! `.NAME.upload-PID`) and renamed into place; [`crate::node::store::sweep`] removes those
//! of dead processes.

use snapvisor_vmm::pool::format::EXTENT;
use snapvisor_vmm::pool::medium::{self, EmulatedKind, EmulationRecord};
use snapvisor_vmm::pool::{Pool, PoolError};
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

    /// Root of the benchmark's pool.
    pub fn bench_pool_root(&self) -> PathBuf {
        self.root.join("bench-pool")
    }
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
