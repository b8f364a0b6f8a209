//! `lazy`: the memory file mapped `MAP_PRIVATE` (Firecracker's File backend, "Vanilla").
//!
//! Nothing is loaded before resume; each first touch faults into the kernel, which reads
//! the page through the page cache (from disk when cold). Guest writes copy the page, so
//! the file is never modified.

use super::{dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::vstate::memory::{GuestMemory, Mapping};
use std::os::fd::AsFd;

/// The `lazy` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lazy;

impl MemoryStrategy for Lazy {
    fn strategy(&self) -> Strategy {
        Strategy::Lazy
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Lazy, snapshot)?;
        let size = snapshot.mem_size() as usize;
        mapping
            .map_file(0, size, snapshot.memory_file().as_fd(), 0, false)
            .map_err(mem_err("mapping the memory file privately"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory { memory, pager: None, prepared_bytes: 0, keep_alive: None, trim: Default::default() })
    }
}
