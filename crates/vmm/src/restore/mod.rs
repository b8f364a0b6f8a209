//! SnapStart: restoring a VM from a snapshot with one of several memory strategies.
//!
//! Every strategy implements [`MemoryStrategy`]: it builds the restored guest's memory
//! (how the guest region is mapped) and may start a [`Pager`] that serves the guest's
//! faults while it runs (where a faulting page's contents come from, via a
//! [`PageSource`]); both report what they did. The VM code ([`restore`]) does not know
//! which strategy it runs:
//!
//! | strategy | guest memory | on first touch |
//! |---|---|---|
//! | `lazy` | `MAP_PRIVATE` of the memory file (Firecracker's File backend, "Vanilla") | kernel reads the page (page cache) |
//! | `uffd` | anonymous, registered with userfaultfd (Firecracker's Uffd backend) | handler thread copies it from the file (`UFFDIO_COPY`, zero ranges `UFFDIO_ZEROPAGE`) |
//! | `reap` | like `uffd`, with the recorded working set installed before resume (REAP) | handler thread, for pages outside the set |
//! | `faasnap` | per region: zero ranges anonymous, the loading set from its own file, the rest from the memory file; background paging (FaaSnap) | the kernel, mostly from pages the background thread already read |
//! | `cached` | anonymous, the whole image read in before resume ("DRAM-cached") | nothing to load |
//! | `pass` | the persistent-memory pool's own pages, mapped privately and pre-faulted (see `crate::pool`) | nothing to load; writes copy the page |

mod cached;
mod faasnap;
mod lazy;
pub mod pager;
pub mod pass;
mod reap;
mod record;
mod restored;
mod shell;
pub mod trim;
mod uffd;

use crate::snapshot::{Snapshot, SnapshotError, VmState};
use crate::vstate::memory::{GuestMemory, Mapping};
use crate::Error;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use cached::{check_fits, Cached};
pub use faasnap::Faasnap;
pub use lazy::Lazy;
pub use pager::{PageSource, Pager, PagerReport};
pub use pass::Pass;
pub use reap::Reap;
pub use record::{record, Recorded};
pub use restored::{restore, restore_into, RestoreTimes, RestoredVm};
pub use shell::Shell;
pub use trim::{Trim, Trimmed};
pub use uffd::{Uffd, DEFAULT_CHUNK};

/// The restore strategies snapvisor knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Private file mapping, demand paging by the kernel ("Vanilla" Firecracker).
    Lazy,
    /// userfaultfd demand paging from the file (Lambda-SnapStart-like).
    Uffd,
    /// REAP: the recorded working set prefetched eagerly, the rest by userfaultfd.
    Reap,
    /// FaaSnap: per-region mappings, loading set paged in by a background thread.
    Faasnap,
    /// Whole image read into anonymous memory before resume ("DRAM-cached").
    Cached,
    /// PASS: pool pages mapped directly, pre-faulted, zero-copy.
    Pass,
}

impl Strategy {
    /// Every implemented strategy, in benchmark order.
    pub const ALL: [Strategy; 6] =
        [Strategy::Lazy, Strategy::Uffd, Strategy::Reap, Strategy::Faasnap, Strategy::Cached, Strategy::Pass];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Lazy => "lazy",
            Strategy::Uffd => "uffd",
            Strategy::Reap => "reap",
            Strategy::Faasnap => "faasnap",
            Strategy::Cached => "cached",
            Strategy::Pass => "pass",
        }
    }

    /// Whether the strategy restores from the persistent-memory pool (else from a snapshot directory).
    pub fn uses_pool(self) -> bool {
        self == Strategy::Pass
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name that is not known.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown restore strategy `{0}` (known: lazy, uffd, reap, faasnap, cached, pass)")]
pub struct StrategyParseError(pub String);

impl FromStr for Strategy {
    type Err = StrategyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| StrategyParseError(s.into()))
    }
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The pool could not be read.
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    /// The strategy cannot restore from this kind of source.
    #[error("strategy `{strategy}` restores from {needs}, not from {got}")]
    WrongSource {
        /// Strategy.
        strategy: Strategy,
        /// What it needs.
        needs: &'static str,
        /// What it got.
        got: &'static str,
    },
    /// Setting up guest memory failed.
    #[error("{what} failed")]
    Memory {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A prefetching strategy found no recorded working set.
    #[error("{}: no working set recorded for `{strategy}` (run `snapvisor record --snapshot DIR` first)", .path.display())]
    NoWorkingSet {
        /// Strategy.
        strategy: Strategy,
        /// Where it looked.
        path: PathBuf,
    },
    /// The medium cannot do what the strategy needs.
    #[error("{0}")]
    Unsupported(String),
    /// The host has too little memory for what the strategy must allocate.
    #[error("{what} needs {needed_mib} MiB, but the host has only {available_mib} MiB available")]
    InsufficientMemory {
        /// What needs the memory.
        what: &'static str,
        /// MiB needed.
        needed_mib: u64,
        /// MiB available (`MemAvailable`).
        available_mib: u64,
    },
    /// A shell of another memory size than the snapshot's.
    #[error("a VM shell of {shell} bytes cannot hold a snapshot of {snapshot} bytes of memory")]
    ShellSize {
        /// The shell's memory size.
        shell: u64,
        /// The snapshot's.
        snapshot: u64,
    },
    /// The pager could not serve a fault while the guest ran, or data it checked after
    /// resume did not match its checksum.
    #[error("the pager failed ({failure}); the run is void")]
    PagerFailed {
        /// The handler's error.
        failure: String,
        /// What the run itself reported, if it failed too.
        #[source]
        during: Option<Box<Error>>,
    },
}

/// Shorthand for a memory-setup error.
pub(crate) fn mem_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Memory { what, source }
}

/// Where a restore reads its snapshot from.
#[derive(Clone, Debug)]
pub enum SnapshotSource {
    /// A snapshot directory on a filesystem.
    Dir(PathBuf),
    /// A snapshot imported into a persistent-memory pool, found by its id.
    Pool {
        /// The open pool.
        pool: Arc<crate::pool::Pool>,
        /// Snapshot id in the pool's table.
        id: String,
    },
}

/// A snapshot opened for one restore.
pub enum OpenedSnapshot {
    /// From a directory.
    Dir(Snapshot),
    /// From the pool.
    Pool(crate::pool::PoolSnapshot),
}

impl OpenedSnapshot {
    /// The saved VM state.
    pub fn state(&self) -> &VmState {
        match self {
            OpenedSnapshot::Dir(s) => s.state(),
            OpenedSnapshot::Pool(s) => s.state(),
        }
    }

    /// Function name.
    pub fn function(&self) -> &str {
        match self {
            OpenedSnapshot::Dir(s) => &s.manifest().function,
            OpenedSnapshot::Pool(s) => s.function(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            OpenedSnapshot::Dir(_) => "a snapshot directory",
            OpenedSnapshot::Pool(_) => "a pool snapshot",
        }
    }
}

impl SnapshotSource {
    /// Opens (reads and checks) the snapshot's metadata.
    pub fn open(&self) -> Result<OpenedSnapshot, RestoreError> {
        Ok(match self {
            SnapshotSource::Dir(dir) => OpenedSnapshot::Dir(Snapshot::open(dir)?),
            SnapshotSource::Pool { pool, id } => OpenedSnapshot::Pool(pool.open_snapshot(id)?),
        })
    }
}

/// Guest memory built by a strategy for one VM.
pub struct RestoredMemory {
    /// The guest's RAM.
    pub memory: GuestMemory,
    /// Fault server, if the strategy needs one while the guest runs.
    pub pager: Option<Box<dyn Pager>>,
    /// Bytes the strategy loaded or mapped before resume (read in, or pre-faulted).
    pub prepared_bytes: u64,
    /// What the memory depends on while the VM runs (e.g. the lease on pool extents).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    /// Fresh memory mapped with huge pages, which [`RestoredVm::trim`] may give back in
    /// part after an invocation (empty for every strategy but `pass`).
    pub trim: Trim,
}

/// How a restored guest's memory is brought back: the one thing strategies differ in.
pub trait MemoryStrategy: Send + Sync {
    /// Which strategy this is.
    fn strategy(&self) -> Strategy;
    /// Builds guest memory for one VM restored from `snapshot`, in `mapping`: inaccessible
    /// address space of exactly the snapshot's memory size (a fresh reservation, or the
    /// one a [`Shell`]'s KVM slot already points at), into which the strategy maps the
    /// guest's memory.
    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError>;
}

/// The strategy object for `strategy` with default settings.
pub fn strategy(strategy: Strategy) -> Box<dyn MemoryStrategy> {
    match strategy {
        Strategy::Lazy => Box::new(Lazy),
        Strategy::Uffd => Box::new(Uffd::new(DEFAULT_CHUNK)),
        Strategy::Reap => Box::new(Reap),
        Strategy::Faasnap => Box::new(Faasnap),
        Strategy::Cached => Box::new(Cached),
        Strategy::Pass => Box::new(Pass::default()),
    }
}

/// The `kind` working set of `snapshot`, or [`RestoreError::NoWorkingSet`].
pub(crate) fn open_working_set(
    snapshot: &Snapshot,
    kind: crate::snapshot::working_set::WorkingSetKind,
) -> Result<crate::snapshot::working_set::WorkingSet, RestoreError> {
    use crate::snapshot::working_set::{WorkingSet, WorkingSetKind};
    match WorkingSet::open(snapshot, kind, false) {
        Err(SnapshotError::Missing(path)) => Err(RestoreError::NoWorkingSet {
            strategy: if kind == WorkingSetKind::Reap { Strategy::Reap } else { Strategy::Faasnap },
            path,
        }),
        other => Ok(other?),
    }
}

/// The snapshot directory of `snapshot`, or a [`RestoreError::WrongSource`] for `strategy`.
pub(crate) fn dir_snapshot(strategy: Strategy, snapshot: &OpenedSnapshot) -> Result<&Snapshot, RestoreError> {
    match snapshot {
        OpenedSnapshot::Dir(s) => Ok(s),
        other => Err(RestoreError::WrongSource { strategy, needs: "a snapshot directory", got: other.kind() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        }
    }

    #[test]
    fn unknown_strategies_are_errors() {
        assert_eq!("mmap".parse::<Strategy>(), Err(StrategyParseError("mmap".into())));
        assert_eq!("".parse::<Strategy>(), Err(StrategyParseError(String::new())));
    }
}
