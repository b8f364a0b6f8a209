//! The record phase: run the function once per prefetching strategy and keep what it
//! touched, next to the snapshot (`ws.reap`, `ws.faasnap`), with the pages it wrote
//! (`ws.write`, which `pass` uses) and which input ran (`recorded.json`); see
//! `snapshot::working_set` and `snapshot::recording`.

use super::{faasnap, restore, Lazy, SnapshotSource, Uffd};
use crate::snapshot::recording::Recording;
use crate::snapshot::working_set::{runs_of, WorkingSet, WorkingSetKind};
use crate::snapshot::Snapshot;
use crate::{Error, Hypervisor};
use std::path::Path;
use std::time::Duration;

/// What `record` kept.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Pages in REAP's working set (faulted on during the recording invocation).
    pub reap_pages: u64,
    /// Pages in FaaSnap's loading set (in the page cache after the recording invocation).
    pub faasnap_pages: u64,
    /// Pages the recording invocation wrote (the write set).
    pub write_pages: u64,
    /// The two recording invocations' responses (REAP's, then FaaSnap's).
    pub responses: [Vec<u8>; 2],
}

/// Records the working sets of `reap` and `faasnap` for the snapshot in `dir` by invoking
/// it with `request` (called `label` in reports) once for each:
/// - REAP: a `uffd` restore that notes every page its handler serves;
/// - FaaSnap: a `lazy` restore from an evicted page cache, then `mincore` of the memory
///   file: the pages the kernel read (with its readahead), zero pages excluded;
/// - the write set, from the same `lazy` invocation: the guest pages that became private
///   copies (pagemap), i.e. every page the guest or the VMM (delivering the request) wrote.
pub fn record(hv: &Hypervisor, dir: &Path, request: &[u8], label: &str, timeout: Duration) -> Result<Recorded, Error> {
    let source = SnapshotSource::Dir(dir.to_path_buf());
    let mut vm = restore(hv, &source, &Uffd::recording())?;
    let reap_response = vm.invoke(request, timeout)?.response;
    let touched = vm.pager.as_ref().and_then(|p| p.recorded_pages()).unwrap_or_default();
    drop(vm);
    let snapshot = Snapshot::open(dir)?;
    let reap = runs_of(touched);
    WorkingSet::write(&snapshot, WorkingSetKind::Reap, &reap)?;

    snapshot.evict_page_cache()?;
    let mut vm = restore(hv, &source, &Lazy)?;
    let faasnap_response = vm.invoke(request, timeout)?.response;
    let loading =
        faasnap::loading_set(snapshot.memory_file(), snapshot.mem_size(), &snapshot.manifest().memory.zero_ranges)
            .map_err(crate::snapshot::io_err(&snapshot.memory_path(), "mincore"))?;
    let memory = vm.vm.memory()?.mapping();
    let written = crate::metrics::written_pages(memory.as_ptr(), memory.len())
        .map_err(crate::snapshot::io_err(std::path::Path::new("/proc/self/pagemap"), "read"))?;
    drop(vm);
    let loading = runs_of(loading);
    let written = runs_of(written);
    WorkingSet::write(&snapshot, WorkingSetKind::Faasnap, &loading)?;
    WorkingSet::write(&snapshot, WorkingSetKind::Write, &written)?;
    Recording::new(label, request.len() as u64).write(dir)?;
    let pages = |runs: &[crate::snapshot::PageRange]| runs.iter().map(|r| r.count).sum();
    Ok(Recorded {
        reap_pages: pages(&reap),
        faasnap_pages: pages(&loading),
        write_pages: pages(&written),
        responses: [reap_response, faasnap_response],
    })
}
