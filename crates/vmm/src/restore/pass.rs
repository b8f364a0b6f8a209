//! `pass`: guest memory mapped straight onto the persistent-memory pool (PASS).
//!
//! The snapshot's complete address index gives, for every 2 MiB of guest memory, its
//! pool extent or "zero". Pool runs are mapped `MAP_PRIVATE` from the pool itself: reads
//! use the pool's own pages (zero-copy, and shared by every VM of the snapshot), writes
//! copy the page into the VM's private memory, so the pool is never written by a guest.
//! Zero runs are anonymous memory with transparent huge pages. The pool runs are
//! pre-faulted (`MADV_POPULATE_READ`) before resume, so the guest's first read of them
//! finds the host page tables already filled: no host page fault, no data movement.
//!
//! Device-dax cannot be mapped privately; a pool there is refused with a clear error
//! rather than silently written to.

use super::{mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy};
use crate::pool::medium::Medium;
use crate::vstate::memory::{Advice, GuestMemory, Mapping};
use snapvisor_abi::layout;
use std::path::Path;

/// The `pass` strategy.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Pre-fault the pool runs before resume (the PASS design; off only for experiments).
    pub prefault: bool,
}

impl Default for Pass {
    fn default() -> Self {
        Pass { prefault: true }
    }
}

/// Refuses media the kernel cannot map copy-on-write (device-dax): guests would write the pool.
fn require_private_mappings(medium: Medium, path: &Path) -> Result<(), RestoreError> {
    if medium.allows_private_mappings() {
        return Ok(());
    }
    Err(RestoreError::Unsupported(format!(
        "{}: {medium} cannot be mapped copy-on-write, so guests would write the pool; put the pool on a DAX filesystem or use the emulated pool",
        path.display()
    )))
}

impl MemoryStrategy for Pass {
    fn strategy(&self) -> Strategy {
        Strategy::Pass
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot) -> Result<RestoredMemory, RestoreError> {
        let OpenedSnapshot::Pool(snapshot) = snapshot else {
            return Err(RestoreError::WrongSource {
                strategy: Strategy::Pass,
                needs: "a pool snapshot",
                got: "a snapshot directory",
            });
        };
        let pool = snapshot.pool();
        require_private_mappings(pool.medium(), pool.path())?;
        let index = snapshot.index();
        let fd = pool.fd()?;
        let mapping = Mapping::reserve(index.mem_size as usize).map_err(mem_err("reserving guest address space"))?;
        let mut prepared = 0;
        for run in &index.runs {
            let (at, len) = (run.guest as usize, run.len as usize);
            match run.pool {
                Some(offset) => {
                    mapping.map_file(at, len, fd, offset, false).map_err(|e| {
                        if e.raw_os_error() == Some(libc::ENOMEM) && pool.medium().huge_pages() {
                            RestoreError::Unsupported(format!(
                                "{}: not enough free huge pages to reserve copy-on-write room for this VM ({} MiB); initialise the pool with more --cow-mib",
                                pool.path().display(),
                                len >> 20
                            ))
                        } else {
                            RestoreError::Memory { what: "mapping pool extents", source: e }
                        }
                    })?;
                    if self.prefault {
                        mapping.advise(at, len, Advice::PopulateRead).map_err(mem_err("pre-faulting pool extents"))?;
                        prepared += run.len;
                    }
                }
                None => {
                    mapping.map_anonymous(at, len).map_err(mem_err("mapping zero ranges"))?;
                    mapping.advise(at, len, Advice::HugePage).map_err(mem_err("advising huge pages"))?;
                }
            }
        }
        // The mailbox takes a few KiB of small writes per invocation: when it starts out
        // zero, 4 KiB pages (two small faults) cost less than zero-filling a 2 MiB page.
        let mailbox = (layout::MAILBOX as usize, layout::MAILBOX_SIZE as usize);
        if index.runs.iter().any(|r| {
            r.pool.is_none() && r.guest <= layout::MAILBOX && r.guest + r.len >= layout::MAILBOX + layout::MAILBOX_SIZE
        }) {
            mapping
                .advise(mailbox.0, mailbox.1, Advice::NoHugePage)
                .map_err(mem_err("advising small pages for the mailbox"))?;
        }
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        // The VM keeps the lease on its extents: no import may reuse them while it runs.
        Ok(RestoredMemory {
            memory,
            pager: None,
            prepared_bytes: prepared,
            keep_alive: Some(Box::new(snapshot.lease())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_dax_is_refused_with_a_clear_error() {
        let err = require_private_mappings(Medium::DevDax, Path::new("/dev/dax0.0")).unwrap_err();
        assert!(err.to_string().contains("cannot be mapped copy-on-write"), "{err}");
        for ok in [Medium::FsDax, Medium::EmulatedHugetlbfs, Medium::EmulatedTmpfs { huge: true }] {
            assert!(require_private_mappings(ok, Path::new("/p")).is_ok());
        }
    }
}
