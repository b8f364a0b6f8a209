//! `faasnap`: FaaSnap (EuroSys'22) — per-region mappings and concurrent background paging
//! of the recorded loading set.
//!
//! `snapvisor record` ran the function once from a cold page cache and kept, in
//! `ws.faasnap`, the contents of the memory file's pages that were then in the page cache
//! (the loading set, found with `mincore`; zero pages excluded), contiguous. A restore maps
//! guest memory region by region: zero ranges anonymous, the loading set `MAP_PRIVATE`
//! from `ws.faasnap`, every other non-zero page `MAP_PRIVATE` from `memory.img`. The vCPU
//! resumes at once while a background thread reads `ws.faasnap` sequentially into the page
//! cache, so the guest's faults on the loading set mostly find their page already read.
//! That thread also hashes what it reads and checks the set's checksum: a mismatch (or a
//! read error) voids the run (`Pager::failure`), at no cost to the restore.

use super::pager::{SettleOnDrop, Verdict};
use super::{
    dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, Pager, PagerReport, RestoreError, RestoredMemory, Strategy,
};
use crate::snapshot::working_set::{DataCheck, WorkingSetKind};
use crate::snapshot::PageRange;
use crate::vstate::memory::{GuestMemory, Mapping};
use snapvisor_abi::PAGE_SIZE;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The `faasnap` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faasnap;

impl MemoryStrategy for Faasnap {
    fn strategy(&self) -> Strategy {
        Strategy::Faasnap
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Faasnap, snapshot)?;
        let ws = super::open_working_set(snapshot, WorkingSetKind::Faasnap)?;
        let size = snapshot.mem_size();
        // Zero ranges anonymous, the rest from the memory file.
        let mut next = 0;
        let zero = &snapshot.manifest().memory.zero_ranges;
        let map_file = |start: u64, end: u64| -> Result<(), RestoreError> {
            if end > start {
                mapping
                    .map_file(start as usize, (end - start) as usize, snapshot.memory_file().as_fd(), start, false)
                    .map_err(mem_err("mapping the memory file"))?;
            }
            Ok(())
        };
        for r in zero {
            map_file(next, r.start())?;
            mapping
                .map_anonymous(r.start() as usize, (r.count * PAGE_SIZE) as usize)
                .map_err(mem_err("mapping zero ranges"))?;
            next = r.end();
        }
        map_file(next, size)?;
        // The loading set from its own compact file, over the memory file's mappings.
        let mut at = ws.data_offset();
        for r in ws.runs() {
            let len = r.count * PAGE_SIZE;
            mapping
                .map_file(r.start() as usize, len as usize, ws.file().as_fd(), at, false)
                .map_err(mem_err("mapping the loading set"))?;
            at += len;
        }
        let file = ws.file().try_clone().map_err(mem_err("duplicating the loading-set descriptor"))?;
        let prefetcher = Prefetcher::start(file, ws.data_offset(), at, ws.data_check())
            .map_err(mem_err("starting background paging"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory {
            memory,
            pager: Some(Box::new(prefetcher)),
            prepared_bytes: 0,
            keep_alive: None,
            trim: Default::default(),
        })
    }
}

/// Reads `[start, end)` of the loading-set file into the page cache in the background,
/// hashing it for the set's checksum.
struct Prefetcher {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    verdict: Verdict,
    thread: Option<JoinHandle<()>>,
}

impl Prefetcher {
    fn start(file: File, start: u64, end: u64, check: DataCheck) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let verdict = Verdict::default();
        let (s, r, settle) = (stop.clone(), read.clone(), SettleOnDrop(verdict.clone()));
        let thread = std::thread::Builder::new().name("faasnap-prefetch".into()).spawn(move || {
            let verdict = &settle.0;
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut at = start;
            while at < end {
                if s.load(Ordering::Relaxed) {
                    verdict.fail("background paging stopped before the loading set was verified");
                    return;
                }
                let n = (buf.len() as u64).min(end - at) as usize;
                if let Err(e) = file.read_exact_at(&mut buf[..n], at) {
                    verdict.fail(format!("reading the loading set: {e}"));
                    return;
                }
                hasher.update(&buf[..n]);
                r.fetch_add(n as u64, Ordering::Relaxed);
                at += n as u64;
            }
            if let Err(e) = check.check(hasher.digest()) {
                verdict.fail(e.to_string());
            }
        })?;
        Ok(Prefetcher { stop, read, verdict, thread: Some(thread) })
    }
}

impl Pager for Prefetcher {
    fn report(&self) -> PagerReport {
        PagerReport { faults: 0, bytes_copied: self.read.load(Ordering::Relaxed), zero_faults: 0 }
    }

    fn failure(&self) -> Option<String> {
        self.verdict.wait()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pages of `memory` (a mapping of the memory file) that are in the page cache, minus
/// the zero ranges: FaaSnap's loading set.
pub(crate) fn loading_set(memory: &File, mem_size: u64, zero: &[PageRange]) -> std::io::Result<Vec<u64>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a new read-only shared mapping of the file, unmapped below; only mincore uses it.
    let addr = unsafe {
        libc::mmap(std::ptr::null_mut(), mem_size as usize, libc::PROT_READ, libc::MAP_SHARED, memory.as_raw_fd(), 0)
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let pages = (mem_size / PAGE_SIZE) as usize;
    let mut resident = vec![0u8; pages];
    // SAFETY: `resident` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(addr, mem_size as usize, resident.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: unmaps the mapping created above.
    unsafe { libc::munmap(addr, mem_size as usize) };
    if rc != 0 {
        return Err(err);
    }
    Ok((0..pages as u64)
        .filter(|&p| resident[p as usize] & 1 != 0 && !crate::snapshot::ranges_cover(zero, p * PAGE_SIZE, PAGE_SIZE))
        .collect())
}
