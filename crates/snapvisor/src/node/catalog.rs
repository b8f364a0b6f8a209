//! The snapshots a node keeps by name in `DATA_DIR/snapshots/NAME`: listing, showing,
//! deleting (the daemon's `/snapshots` resource; taking and recording are in `snapshots`).

use super::store::{self, check_name};
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::snapshot::working_set::{WorkingSet, WorkingSetKind};
use snapvisor_vmm::snapshot::{Snapshot, SnapshotError};
use std::path::PathBuf;

/// What a snapshot holds.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    /// Its name.
    pub name: String,
    /// Function (or image) it was taken of.
    pub function: String,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Bytes of non-zero pages stored.
    pub data_bytes: u64,
    /// Runs of zero pages.
    pub zero_ranges: usize,
    /// When it was taken, seconds since the Unix epoch.
    pub created_unix: u64,
    /// `xxh3:<hex>` of the guest image it booted.
    pub image_digest: String,
    /// `xxh3:<hex>` of its memory.
    pub memory_digest: String,
    /// Pages of REAP's recorded working set, if recorded.
    pub reap_pages: Option<u64>,
    /// Pages of FaaSnap's recorded loading set, if recorded.
    pub faasnap_pages: Option<u64>,
    /// The input the working sets were recorded with, if recorded.
    pub recorded_with: Option<String>,
}

/// A snapshot directory that could not be read.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotProblem {
    /// Its name.
    pub name: String,
    /// What is wrong, with causes.
    pub problem: String,
}

/// Every snapshot of the data directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotList {
    /// Snapshots that open and check.
    pub snapshots: Vec<SnapshotSummary>,
    /// Directories that do not (a damaged snapshot never hides the others).
    pub problems: Vec<SnapshotProblem>,
}

fn summary(name: &str, snapshot: &Snapshot) -> SnapshotSummary {
    let manifest = snapshot.manifest();
    let pages = |kind| WorkingSet::open(snapshot, kind, false).ok().map(|ws| ws.pages());
    SnapshotSummary {
        name: name.into(),
        function: manifest.function.clone(),
        mem_size: manifest.mem_size,
        data_bytes: manifest.memory.data_pages * snapvisor_abi::PAGE_SIZE,
        zero_ranges: manifest.memory.zero_ranges.len(),
        created_unix: manifest.created_unix,
        image_digest: manifest.image_digest.clone(),
        memory_digest: manifest.memory.digest.clone(),
        reap_pages: pages(WorkingSetKind::Reap),
        faasnap_pages: pages(WorkingSetKind::Faasnap),
        recorded_with: snapvisor_vmm::snapshot::recording::Recording::read(snapshot.dir()).map(|r| r.input),
    }
}

impl Node {
    /// The directory of snapshot `name` (the name checked; the directory may not exist).
    pub fn snapshot_dir(&self, name: &str) -> Result<PathBuf, NodeError> {
        check_name("snapshot", name)?;
        Ok(self.data().snapshot(name))
    }

    /// Every snapshot under the data directory, by name.
    pub fn list_snapshots(&self) -> Result<SnapshotList, NodeError> {
        let dir = self.data().snapshots();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SnapshotList::default()),
            Err(source) => return Err(NodeError::File { path: dir, source }),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_name("snapshot", n).is_ok())
            .collect();
        names.sort();
        let mut list = SnapshotList::default();
        for name in names {
            match Snapshot::open(dir.join(&name)) {
                Ok(snapshot) => list.snapshots.push(summary(&name, &snapshot)),
                Err(e) => list.problems.push(SnapshotProblem { name, problem: snapvisor_vmm::error_chain(&e) }),
            }
        }
        Ok(list)
    }

    /// Snapshot `name`, opened and checked.
    pub fn show_snapshot(&self, name: &str) -> Result<SnapshotSummary, NodeError> {
        let dir = self.snapshot_dir(name)?;
        if !dir.is_dir() {
            return Err(NodeError::Missing { what: "snapshot", name: name.into() });
        }
        Ok(summary(name, &Snapshot::open(&dir)?))
    }

    /// Deletes snapshot `name` (at once from its name; VMs restored from it keep running).
    /// A directory without a manifest is not a snapshot and is left alone.
    pub fn delete_snapshot(&self, name: &str) -> Result<(), NodeError> {
        let dir = self.snapshot_dir(name)?;
        if !dir.is_dir() {
            return Err(NodeError::Missing { what: "snapshot", name: name.into() });
        }
        if !snapvisor_vmm::snapshot::is_snapshot(&dir) {
            return Err(SnapshotError::NotASnapshot(dir).into());
        }
        store::remove_atomic(&self.data().snapshots(), name)
    }

    /// Removes what processes killed half-way left in the data directory (temporary
    /// snapshot directories, uploads, deletions, a daemon's socket being bound); returns
    /// what it removed.
    pub fn sweep(&self) -> Vec<PathBuf> {
        let data = self.data();
        [data.root().to_path_buf(), data.snapshots(), data.images()].iter().flat_map(|dir| store::sweep(dir)).collect()
    }
}
