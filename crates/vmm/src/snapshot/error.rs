//! Why a snapshot could not be written or opened. Every variant names the file.

use crate::files::FileError;
use std::io;
use std::path::{Path, PathBuf};

/// Why a snapshot could not be written or opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file is missing.
    #[error("{}: missing", .0.display())]
    Missing(PathBuf),
    /// A writer's temporary directory (`.NAME.partial-PID`): being written, or left by a
    /// writer that was killed; even when complete, not published.
    #[error("{}: a snapshot still being written (or left by a killed writer), not a snapshot", .0.display())]
    Unpublished(PathBuf),
    /// A file could not be opened, read or written (I/O failed, a special file, a symbolic
    /// link, larger than the format allows).
    #[error(transparent)]
    File(FileError),
    /// The file is not what it should be (bad magic, undecodable body, bad JSON).
    #[error("{}: corrupt: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Checksum mismatch.
    #[error("{}: checksum mismatch (stored {stored:#018x}, computed {computed:#018x})", .path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// A format version this build does not read.
    #[error("{}: format version {found}, this snapvisor reads version {expected}", .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        expected: u32,
    },
    /// A number read from a file outside the range the format allows.
    #[error("{}: {what} {value} is outside the allowed range {min}..={max}", .path.display())]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// The quantity.
        what: &'static str,
        /// Value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Files of the snapshot disagree with each other (e.g. on the memory size).
    #[error("{}: {what} is {found}, but the manifest says {expected}", .path.display())]
    Mismatch {
        /// The file that disagrees with the manifest.
        path: PathBuf,
        /// The quantity.
        what: &'static str,
        /// Value found in the file.
        found: u64,
        /// Value in the manifest.
        expected: u64,
    },
    /// The memory image's contents do not match the manifest's digest.
    #[error("{}: memory digest {computed} does not match the manifest's {expected}", .path.display())]
    Digest {
        /// The memory file.
        path: PathBuf,
        /// Digest in the manifest.
        expected: String,
        /// Digest computed.
        computed: String,
    },
    /// The target directory exists.
    #[error("{}: already exists (pass --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// The target exists and is not a snapshot: never replaced.
    #[error("{}: exists and is not a snapshot (no snapvisor manifest.json); refusing to replace it", .0.display())]
    NotASnapshot(PathBuf),
    /// The VM could not be snapshotted.
    #[error("the VM could not be snapshotted")]
    Vm(#[source] Box<crate::Error>),
}

impl From<FileError> for SnapshotError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Missing(path) => SnapshotError::Missing(path),
            other => SnapshotError::File(other),
        }
    }
}

/// An I/O error on `path` (a missing file becomes [`SnapshotError::Missing`]).
pub(crate) fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let to_file_error = crate::files::io_err(path, what);
    move |source| to_file_error(source).into()
}

/// [`SnapshotError::Corrupt`] for `path`.
pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// Checks that `value` lies in `min..=max`, else [`SnapshotError::OutOfRange`].
pub(crate) fn in_range(path: &Path, what: &'static str, value: u64, min: u64, max: u64) -> Result<u64, SnapshotError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(SnapshotError::OutOfRange { path: path.to_path_buf(), what, value, min, max })
    }
}
