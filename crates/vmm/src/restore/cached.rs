//! `cached`: the whole memory image read into the VM's own anonymous memory before resume
//! ("DRAM-cached"). No fault needs I/O afterwards, at the price of a full private copy per VM.

use super::{dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::vstate::memory::{GuestMemory, Mapping};
use std::os::unix::fs::FileExt;

/// The `cached` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cached;

impl MemoryStrategy for Cached {
    fn strategy(&self) -> Strategy {
        Strategy::Cached
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Cached, snapshot)?;
        let size = snapshot.mem_size() as usize;
        let mapping = Mapping::anonymous(size).map_err(mem_err("allocating guest memory"))?;
        // SAFETY: the mapping is fresh, private to this function until returned, and `size`
        // bytes long; no other reference to it exists while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(mapping.as_ptr(), size) };
        snapshot.memory_file().read_exact_at(bytes, 0).map_err(mem_err("reading the memory image"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory { memory, pager: None, prepared_bytes: size as u64, keep_alive: None })
    }
}
