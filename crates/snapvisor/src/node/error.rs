//! The node's errors, and the kind of each (what a caller did wrong, what is missing, what
//! the guest did), which the command line turns into a message and the daemon into an HTTP
//! status.

use super::runner::RunError;
use snapvisor_vmm::pool::PoolError;
use snapvisor_vmm::restore::StrategyParseError;
use snapvisor_vmm::snapshot::SnapshotError;
use std::path::PathBuf;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A function name that is neither built in nor registered.
    #[error("no function `{0}`: neither built in nor registered (see `snapvisor functions`)")]
    UnknownFunction(String),
    /// A built-in function has no input of that name.
    #[error("{function} has no input `{input}` (its inputs: A, B, 1..6; `--input-text` or `--input-file` send your own request)")]
    UnknownInput {
        /// Function.
        function: String,
        /// The name asked for.
        input: String,
    },
    /// A strategy name that is not known.
    #[error(transparent)]
    UnknownStrategy(#[from] StrategyParseError),
    /// A guest image or input file could not be read.
    #[error("{}: cannot read", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file the user named cannot be read (missing, not a regular file, too large).
    #[error(transparent)]
    UserFile(#[from] snapvisor_vmm::files::FileError),
    /// An argument outside what the operation accepts.
    #[error("{0}")]
    Invalid(String),
    /// No pool where one was expected.
    #[error("{}: no pool (create one with `snapvisor pool init`)", .0.display())]
    NoPool(PathBuf),
    /// A run failed: the VMM, the guest, or the function.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The VMM failed outside a run.
    #[error(transparent)]
    Vmm(#[from] snapvisor_vmm::Error),
    /// A snapshot could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A pool operation failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Something named does not exist (a snapshot, a warm VM).
    #[error("no {what} `{name}`")]
    Missing {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The operation conflicts with what exists (a built-in name, a busy VM).
    #[error("{0}")]
    Conflict(String),
    /// The node is at a configured limit; trying again later can succeed.
    #[error("{0}")]
    Busy(String),
    /// VMs of one snapshot answered the same request differently.
    #[error("the VMs did not all give the same answer")]
    Inconsistent,
}

/// What kind of failure an error is (for the daemon's status codes and the CLI's hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (unknown name, bad argument, damaged input).
    BadRequest,
    /// Something named does not exist.
    NotFound,
    /// Something of that name exists already.
    Conflict,
    /// The guest or the function failed (it ran, and its failure is the answer).
    Guest,
    /// The node is at a limit (concurrency, warm VMs); the same request can succeed later.
    Busy,
    /// The node failed (I/O, KVM, a bug).
    Internal,
}

impl NodeError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NodeError::UnknownFunction(_) | NodeError::NoPool(_) | NodeError::Missing { .. } => ErrorKind::NotFound,
            NodeError::Conflict(_) => ErrorKind::Conflict,
            NodeError::Busy(_) => ErrorKind::Busy,
            NodeError::UnknownStrategy(_) | NodeError::UnknownInput { .. } | NodeError::Invalid(_) => {
                ErrorKind::BadRequest
            }
            NodeError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            NodeError::File { .. } => ErrorKind::BadRequest,
            NodeError::UserFile(snapvisor_vmm::files::FileError::Missing(_)) => ErrorKind::NotFound,
            NodeError::UserFile(_) => ErrorKind::BadRequest,
            NodeError::Inconsistent => ErrorKind::Guest,
            NodeError::Run(e) => run_kind(e),
            NodeError::Vmm(e) => vmm_kind(e),
            NodeError::Snapshot(e) => snapshot_kind(e),
            NodeError::Pool(e) => pool_kind(e),
        }
    }
}

fn run_kind(e: &RunError) -> ErrorKind {
    match e {
        RunError::Function(_) => ErrorKind::Guest,
        RunError::Vmm(e) => vmm_kind(e),
        RunError::Concurrent { source, .. } => run_kind(source),
        RunError::Panicked => ErrorKind::Internal,
    }
}

fn vmm_kind(e: &snapvisor_vmm::Error) -> ErrorKind {
    use snapvisor_vmm::restore::RestoreError;
    use snapvisor_vmm::Error as Vmm;
    match e {
        Vmm::Vcpu(_) | Vmm::Protocol(_) => ErrorKind::Guest,
        Vmm::Image(_) | Vmm::MemSize { .. } | Vmm::RequestTooLarge { .. } => ErrorKind::BadRequest,
        Vmm::Snapshot(e) | Vmm::Restore(RestoreError::Snapshot(e)) => snapshot_kind(e),
        Vmm::Pool(e) | Vmm::Restore(RestoreError::Pool(e)) => pool_kind(e),
        Vmm::Restore(RestoreError::NoWorkingSet { .. }) => ErrorKind::NotFound,
        Vmm::Restore(RestoreError::WrongSource { .. }) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

fn snapshot_kind(e: &SnapshotError) -> ErrorKind {
    match e {
        SnapshotError::Missing(_) => ErrorKind::NotFound,
        SnapshotError::Exists(_) | SnapshotError::NotASnapshot(_) | SnapshotError::Unpublished(_) => {
            ErrorKind::Conflict
        }
        _ => ErrorKind::Internal,
    }
}

fn pool_kind(e: &PoolError) -> ErrorKind {
    match e {
        PoolError::NotFound { .. } => ErrorKind::NotFound,
        PoolError::Exists { .. } => ErrorKind::Conflict,
        PoolError::Size { .. } | PoolError::Id(_) => ErrorKind::BadRequest,
        PoolError::AlreadyExists(_) => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    }
}
