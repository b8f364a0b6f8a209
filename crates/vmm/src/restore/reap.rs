//! `reap`: REAP (ASPLOS'21) — prefetch a recorded working set eagerly, then page on demand.
//!
//! `snapvisor record` ran the function once with userfaultfd and kept, in `ws.reap`, the
//! contents of every page the invocation faulted on, contiguous. A restore reads that file
//! in one sequential read and installs all its pages with `UFFDIO_COPY` before the vCPU
//! resumes; pages outside the set are served on demand from `memory.img` by a userfaultfd
//! handler, as with `uffd`. The set's checksum is not on this critical path: the handler
//! thread hashes the installed data between faults after resume, and a mismatch voids the
//! run (`Pager::failure`).

use super::pager::{registered_uffd, AlignedBuf, FileSource, UffdPager, Verifier};
use super::uffd::DEFAULT_CHUNK;
use super::{dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::snapshot::working_set::WorkingSetKind;
use crate::vstate::memory::{GuestMemory, Mapping};
use snapvisor_abi::PAGE_SIZE;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The `reap` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reap;

impl MemoryStrategy for Reap {
    fn strategy(&self) -> Strategy {
        Strategy::Reap
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Reap, snapshot)?;
        let ws = super::open_working_set(snapshot, WorkingSetKind::Reap)?;
        let size = snapshot.mem_size() as usize;
        mapping.map_anonymous(0, size).map_err(mem_err("mapping anonymous guest memory"))?;
        let uffd = registered_uffd(&mapping)?;
        // Prefetch: one sequential read of the whole set (at most guest memory: checked on
        // open), then one copy per run.
        let bytes = (ws.pages() * PAGE_SIZE) as usize;
        let mut buf = AlignedBuf::new(bytes).ok_or_else(|| {
            mem_err("allocating the working-set buffer")(std::io::Error::from(std::io::ErrorKind::OutOfMemory))
        })?;
        let data = buf.slice(bytes);
        ws.file().read_exact_at(data, ws.data_offset()).map_err(mem_err("reading the working set"))?;
        let mut at = 0usize;
        for run in ws.runs() {
            let len = (run.count * PAGE_SIZE) as usize;
            uffd.copy(mapping.as_ptr() as u64 + run.start(), data[at..].as_ptr(), len)
                .map_err(mem_err("installing the working set (UFFDIO_COPY)"))?;
            at += len;
        }
        let source = FileSource::new(snapshot).map_err(mem_err("duplicating the memory file descriptor"))?;
        let verify = Verifier::new(buf, bytes, ws.data_check());
        let base = mapping.as_ptr() as u64;
        let pager = UffdPager::start(uffd, base, size, DEFAULT_CHUNK, Arc::new(source), false, Some(verify))
            .map_err(mem_err("starting the userfaultfd handler"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory {
            memory,
            pager: Some(Box::new(pager)),
            prepared_bytes: bytes as u64,
            keep_alive: None,
            trim: Default::default(),
        })
    }
}
