//! Why a pool operation failed.

use super::format::FormatError;
use super::medium::MediumError;
use crate::files::FileError;
use crate::snapshot::SnapshotError;
use std::io;
use std::path::{Path, PathBuf};

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The medium is unusable.
    #[error(transparent)]
    Medium(#[from] MediumError),
    /// The pool path is not a regular file or a DAX device.
    #[error(transparent)]
    File(#[from] FileError),
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
    #[error("{}: the superblock is not valid", .path.display())]
    Superblock {
        /// Pool path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// The medium is smaller than the pool.
    #[error("{}: the medium has {actual} bytes, the pool needs {needed}", .path.display())]
    MediumTooSmall {
        /// Pool path.
        path: PathBuf,
        /// Bytes of the medium.
        actual: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The metadata slot named by the commit record is not valid.
    #[error("{}: metadata (snapshot table and allocation map) of generation {generation} is corrupt", .path.display())]
    Metadata {
        /// Pool path.
        path: PathBuf,
        /// Committed generation.
        generation: u64,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// A snapshot's index (or where its blobs lie) is not valid.
    #[error("{}: index of snapshot `{id}` is corrupt", .path.display())]
    Index {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id (escaped).
        id: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// A snapshot's stored vCPU state is not valid.
    #[error("{}: vCPU state of snapshot `{id}` is corrupt", .path.display())]
    State {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id (escaped).
        id: String,
        /// The cause.
        #[source]
        source: SnapshotError,
    },
    /// A snapshot's memory does not match its recorded digest.
    #[error("{}: snapshot `{id}`: memory digest {computed} does not match the recorded {expected}", .path.display())]
    Digest {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id (escaped).
        id: String,
        /// Recorded.
        expected: String,
        /// Computed.
        computed: String,
    },
    /// No such snapshot.
    #[error("{}: no snapshot `{id}` in the pool", .path.display())]
    NotFound {
        /// Pool path.
        path: PathBuf,
        /// Snapshot id (escaped).
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
    /// The new snapshot table does not fit a metadata slot.
    #[error("{}: the snapshot table is full", .path.display())]
    TableFull {
        /// Pool path.
        path: PathBuf,
        /// The encoding's size against the slot's.
        #[source]
        source: FormatError,
    },
    /// The source snapshot could not be read or does not match its manifest.
    #[error("the snapshot to import is not valid")]
    Source(#[from] SnapshotError),
    /// A pool size outside what the format allows.
    #[error("pool size {size} is not a multiple of 2 MiB between {min} and {max} bytes")]
    Size {
        /// Size asked for.
        size: u64,
        /// Smallest.
        min: u64,
        /// Largest.
        max: u64,
    },
    /// A snapshot id that cannot be stored.
    #[error("snapshot id `{0}` must be 1..=128 visible characters without '/'")]
    Id(String),
    /// `pool init` on a path that exists (a file, or a device that holds a pool).
    #[error("{}: already exists", .0.display())]
    AlreadyExists(PathBuf),
    /// The pool is in process memory (tests, fuzzing): no leases, no mappings of its file.
    #[error("{}: an in-memory pool has no file to lease or map", .0.display())]
    InMemory(PathBuf),
}

/// An I/O error on the pool at `path`.
pub(crate) fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> PoolError {
    let path = path.to_path_buf();
    move |source| PoolError::Io { path, what, source }
}
