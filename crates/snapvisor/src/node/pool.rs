//! The persistent-memory pool as the node offers it: create (on a real medium or an
//! emulated one it sets up), import, list, remove, check, destroy.

use super::data;
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::pool::format::SnapshotEntry;
use snapvisor_vmm::pool::medium::{EmulatedKind, EmulationRecord, Medium};
use snapvisor_vmm::pool::{FsckReport, Pool, PoolInfo};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A snapshot imported into the pool.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// The table entry written.
    pub entry: SnapshotEntry,
    /// Time the import took.
    pub ms: f64,
    /// The medium.
    pub medium: Medium,
}

/// A pool check, with the path it was run on.
#[derive(Clone, Debug, Serialize)]
pub struct FsckOutcome {
    /// The pool.
    pub path: PathBuf,
    /// What fsck found (an unopenable pool is one problem).
    #[serde(flatten)]
    pub report: FsckReport,
}

impl Node {
    /// The pool at `path`, or the data directory's default pool.
    pub fn pool_path(&self, path: Option<&Path>) -> PathBuf {
        path.map_or_else(|| self.data().default_pool(), Path::to_path_buf)
    }

    /// Opens the pool at `path` (or the default one).
    pub fn open_pool(&self, path: Option<&Path>) -> Result<Arc<Pool>, NodeError> {
        let path = self.pool_path(path);
        if !path.exists() {
            return Err(NodeError::NoPool(path));
        }
        Ok(Pool::open(&path)?)
    }

    /// Creates a pool of `size` bytes: on `path` (device-dax or a file on a DAX
    /// filesystem), or on an emulated medium under the data directory, with `cow` bytes of
    /// huge pages reserved for the copy-on-write copies of running VMs (hugetlbfs only).
    pub fn pool_init(
        &self,
        path: Option<&Path>,
        size: u64,
        cow: u64,
        kind: EmulatedKind,
    ) -> Result<PoolInfo, NodeError> {
        Ok(data::init_pool(path, &self.data().pool_root(), size, cow, kind)?.info()?)
    }

    /// Imports the snapshot directory `dir` under `id` (default: the directory's name).
    pub fn pool_import(
        &self,
        pool: Option<&Path>,
        dir: &Path,
        id: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ImportReport, NodeError> {
        let pool = self.open_pool(pool)?;
        let id = id.map_or_else(
            || dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            str::to_string,
        );
        let start = Instant::now();
        let entry = pool.import(dir, &id, progress)?;
        Ok(ImportReport { entry, ms: super::runner::ms(start.elapsed()), medium: pool.medium() })
    }

    /// The pool and its snapshot table.
    pub fn pool_info(&self, pool: Option<&Path>) -> Result<PoolInfo, NodeError> {
        Ok(self.open_pool(pool)?.info()?)
    }

    /// Removes snapshot `id` from the pool.
    pub fn pool_remove(&self, pool: Option<&Path>, id: &str) -> Result<SnapshotEntry, NodeError> {
        Ok(self.open_pool(pool)?.remove(id)?)
    }

    /// Checks the pool (with `deep`, every snapshot's memory too). A pool that cannot be
    /// opened is reported as a problem, not as an error.
    pub fn pool_fsck(&self, pool: Option<&Path>, deep: bool) -> FsckOutcome {
        let path = self.pool_path(pool);
        let report = match Pool::open(&path) {
            Ok(pool) => pool.fsck(deep),
            Err(e) => FsckReport { problems: vec![snapvisor_vmm::error_chain(&e)], ..Default::default() },
        };
        FsckOutcome { path, report }
    }

    /// Undoes the data directory's emulated pool (unmount, release huge pages).
    pub fn pool_destroy(&self) -> Result<Option<EmulationRecord>, NodeError> {
        Ok(data::destroy_pool(&self.data().pool_root())?)
    }
}
