//! `uffd`: anonymous guest memory registered with userfaultfd, and a handler thread that
//! serves each missing page from the memory file (Firecracker's Uffd backend; the
//! on-demand loading of Lambda SnapStart).
//!
//! Faults are served in chunks of `chunk` bytes (4 KiB by default, as the baseline does):
//! chunks inside the snapshot's zero ranges get `UFFDIO_ZEROPAGE`, others are read from
//! the file and installed with `UFFDIO_COPY` (see [`pager`](super::pager)).

use super::pager::{registered_uffd, FileSource, UffdPager};
use super::{dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::vstate::memory::{GuestMemory, Mapping};
use snapvisor_abi::{HUGE_PAGE_SIZE, PAGE_SIZE};
use std::sync::Arc;

/// Default fault-serving granularity: one page, like Firecracker's example handler.
pub const DEFAULT_CHUNK: usize = PAGE_SIZE as usize;

/// The `uffd` strategy.
#[derive(Clone, Copy, Debug)]
pub struct Uffd {
    chunk: usize,
    record: bool,
}

impl Uffd {
    /// A `uffd` strategy serving faults in `chunk`-byte pieces (a power of two, 4 KiB..2 MiB).
    pub fn new(chunk: usize) -> Self {
        Uffd { chunk, record: false }
    }

    /// A 4 KiB `uffd` strategy whose pager also records the pages it serves (REAP's record
    /// phase; see [`Pager::recorded_pages`](super::Pager::recorded_pages)).
    pub fn recording() -> Self {
        Uffd { chunk: DEFAULT_CHUNK, record: true }
    }
}

impl MemoryStrategy for Uffd {
    fn strategy(&self) -> Strategy {
        Strategy::Uffd
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Uffd, snapshot)?;
        if !self.chunk.is_power_of_two() || self.chunk < PAGE_SIZE as usize || self.chunk > HUGE_PAGE_SIZE as usize {
            return Err(RestoreError::Unsupported(format!(
                "uffd chunk of {} bytes is not a power of two between 4 KiB and 2 MiB",
                self.chunk
            )));
        }
        let size = snapshot.mem_size() as usize;
        mapping.map_anonymous(0, size).map_err(mem_err("mapping anonymous guest memory"))?;
        let uffd = registered_uffd(&mapping)?;
        let source = FileSource::new(snapshot).map_err(mem_err("duplicating the memory file descriptor"))?;
        let base = mapping.as_ptr() as u64;
        let pager = UffdPager::start(uffd, base, size, self.chunk, Arc::new(source), self.record, None)
            .map_err(mem_err("starting the userfaultfd handler"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory {
            memory,
            pager: Some(Box::new(pager)),
            prepared_bytes: 0,
            keep_alive: None,
            trim: Default::default(),
        })
    }
}
