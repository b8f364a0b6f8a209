//! `cached`: the whole memory image read into the VM's own anonymous memory before resume
//! ("DRAM-cached"). No fault needs I/O afterwards, at the price of a full private copy per
//! VM — so a snapshot whose memory does not fit the host's available memory is refused
//! before anything is allocated.

use super::{dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::vstate::memory::{Advice, GuestMemory, Mapping};
use std::os::unix::fs::FileExt;

/// The `cached` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cached;

/// `MemAvailable` of `/proc/meminfo`, in bytes (0 if unreadable).
fn available_memory() -> u64 {
    crate::metrics::proc_field("/proc/meminfo", "MemAvailable").map_or(0, |kib| kib.saturating_mul(1024))
}

/// Checks that `needed` bytes for `what` fit in `available` bytes, else
/// [`RestoreError::InsufficientMemory`] naming both figures.
pub fn check_fits(what: &'static str, needed: u64, available: u64) -> Result<(), RestoreError> {
    if needed > available {
        return Err(RestoreError::InsufficientMemory {
            what,
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        });
    }
    Ok(())
}

impl MemoryStrategy for Cached {
    fn strategy(&self) -> Strategy {
        Strategy::Cached
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Cached, snapshot)?;
        let size = snapshot.mem_size() as usize;
        check_fits("a `cached` copy of the guest's memory", size as u64, available_memory())?;
        mapping.map_anonymous(0, size).map_err(mem_err("allocating guest memory"))?;
        mapping.advise(0, size, Advice::HugePage).map_err(mem_err("advising huge pages"))?;
        // SAFETY: the memory was just mapped here, `size` bytes long, and nothing else uses it
        // while the slice lives: the VM's vCPU does not run until the restore returns.
        let bytes = unsafe { std::slice::from_raw_parts_mut(mapping.as_ptr(), size) };
        snapshot.memory_file().read_exact_at(bytes, 0).map_err(mem_err("reading the memory image"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory {
            memory,
            pager: None,
            prepared_bytes: size as u64,
            keep_alive: None,
            trim: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_does_not_fit_is_refused_naming_both_figures() {
        let err = check_fits("a copy", 16 << 30, 3 << 30).unwrap_err();
        assert!(matches!(err, RestoreError::InsufficientMemory { needed_mib: 16384, available_mib: 3072, .. }));
        assert!(err.to_string().contains("16384 MiB") && err.to_string().contains("3072 MiB"), "{err}");
        check_fits("a copy", 1 << 30, 3 << 30).unwrap();
        assert!(available_memory() > 0);
    }
}
