//! Serving a restored guest's memory while it runs: the [`Pager`] a strategy may start, the
//! [`PageSource`] a faulting page's contents come from, and the userfaultfd machinery
//! shared by `uffd` and `reap` ([`UffdPager`]).
//!
//! A pager's [`Pager::failure`] voids a run: a fault it could not serve, or data it checked
//! after resume (REAP's working set, FaaSnap's loading set) that did not match its
//! checksum. `RestoredVm::invoke` asks it after every run and returns the error instead of
//! the guest's answer.

mod buf;
mod uffd;

pub(crate) use buf::AlignedBuf;
pub(crate) use uffd::{registered_uffd, UffdPager, Verifier};

use crate::snapshot::{ranges_cover, PageRange, Snapshot};
use serde::Serialize;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

/// What a pager did for one VM.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PagerReport {
    /// Faults served.
    pub faults: u64,
    /// Bytes copied into guest memory (or, for background paging, read ahead).
    pub bytes_copied: u64,
    /// Faults served with zero pages.
    pub zero_faults: u64,
}

/// Serves a restored guest's page faults while it runs (e.g. a userfaultfd handler
/// thread), or pages its memory in the background.
pub trait Pager: Send {
    /// What it did so far.
    fn report(&self) -> PagerReport;
    /// Why the run is void, if it is: a fault it could not serve, or data it checked after
    /// resume that did not match. Waits for a check still running.
    fn failure(&self) -> Option<String>;
    /// The guest pages (4 KiB indices) it served, if it records them (REAP's record phase).
    fn recorded_pages(&self) -> Option<Vec<u64>> {
        None
    }
}

/// Where a faulting page's contents come from.
pub trait PageSource: Send + Sync {
    /// Fills `buf` with guest memory at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Whether `[offset, offset+len)` is known to be all zero.
    fn is_zero(&self, offset: u64, len: u64) -> bool;
}

/// The memory image of a snapshot directory as a page source.
pub(crate) struct FileSource {
    file: File,
    zero_ranges: Vec<PageRange>,
}

impl FileSource {
    /// The memory file and zero ranges of `snapshot`.
    pub(crate) fn new(snapshot: &Snapshot) -> io::Result<Self> {
        Ok(FileSource {
            file: snapshot.memory_file().try_clone()?,
            zero_ranges: snapshot.manifest().memory.zero_ranges.clone(),
        })
    }
}

impl PageSource for FileSource {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn is_zero(&self, offset: u64, len: u64) -> bool {
        ranges_cover(&self.zero_ranges, offset, len)
    }
}

#[derive(Default)]
struct VerdictState {
    settled: bool,
    failure: Option<String>,
}

/// What a pager's thread found: failures as they happen, and whether its checks are done
/// ("settled"). [`Verdict::wait`] blocks until then; the thread settles it when it ends,
/// whatever the reason, so nobody waits for a thread that is gone.
#[derive(Clone, Default)]
pub(crate) struct Verdict(Arc<(Mutex<VerdictState>, Condvar)>);

impl Verdict {
    fn state(&self) -> std::sync::MutexGuard<'_, VerdictState> {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure (the first one is kept).
    pub(crate) fn fail(&self, reason: impl Into<String>) {
        self.state().failure.get_or_insert_with(|| reason.into());
    }

    /// Marks the checks done.
    pub(crate) fn settle(&self) {
        self.state().settled = true;
        self.0 .1.notify_all();
    }

    /// The failure, once the checks are done.
    pub(crate) fn wait(&self) -> Option<String> {
        let mut state = self.state();
        while !state.settled {
            state = self.0 .1.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.failure.clone()
    }
}

/// Settles a verdict when dropped: a pager thread holds one, so that however it ends
/// (returns, fails, panics), waiters are released.
pub(crate) struct SettleOnDrop(pub(crate) Verdict);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the pager thread panicked");
        }
        self.0.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_released_by_a_thread_that_ends_any_way() {
        let verdict = Verdict::default();
        let guard = SettleOnDrop(verdict.clone());
        let thread = std::thread::spawn(move || {
            let _guard = guard;
            panic!("pager thread dies");
        });
        assert!(thread.join().is_err());
        assert_eq!(verdict.wait().as_deref(), Some("the pager thread panicked"));
        let settled = Verdict::default();
        settled.settle();
        assert_eq!(settled.wait(), None);
    }
}
