//! A restored VM and how one is made: from scratch ([`restore`]) or into a VM shell made
//! ahead ([`restore_into`]), the strategy building its memory, with the time of each phase.

use super::{mem_err, MemoryStrategy, Pager, PagerReport, RestoreError, Shell, SnapshotSource, Trim, Trimmed};
use crate::machine::MicroVm;
use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::Mapping;
use crate::vstate::vm::Vm;
use crate::Error;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Where the time of one restore went.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RestoreTimes {
    /// Making the VM: the KVM VM, its vCPU and its guest-memory slot (all made ahead in a
    /// VM shell, where this is ~0).
    pub vm_create: Duration,
    /// Reading and checking the snapshot's metadata, loading the vCPU state.
    pub state_load: Duration,
    /// Building guest memory (the strategy's mappings and whatever it loads or
    /// pre-faults before resume).
    pub memory_setup: Duration,
}

impl RestoreTimes {
    /// Sum of the parts.
    pub fn total(&self) -> Duration {
        self.vm_create + self.state_load + self.memory_setup
    }
}

/// A restored VM, ready for its request, and the pager serving its faults.
pub struct RestoredVm {
    /// The VM (dropped before the pager).
    pub vm: MicroVm,
    /// The strategy's fault server, if any.
    pub pager: Option<Box<dyn Pager>>,
    /// Bytes loaded or mapped before resume.
    pub prepared_bytes: u64,
    /// What the guest memory depends on (dropped after the VM).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    /// Where the restore's time went.
    pub times: RestoreTimes,
    /// Function the snapshot was taken of.
    pub function: String,
    /// The strategy's fresh huge-page memory (see [`trim`]).
    pub trim: Trim,
}

impl RestoredVm {
    /// The pager's report (zeros without a pager).
    pub fn pager_report(&self) -> PagerReport {
        self.pager.as_ref().map(|p| p.report()).unwrap_or_default()
    }

    /// Invokes the restored guest once. If the pager failed meanwhile (a fault it could not
    /// serve, data that did not match its checksum), the run fails with that cause,
    /// whatever the guest answered (it may have computed from those pages). This waits for
    /// a check the pager still runs.
    pub fn invoke(&mut self, request: &[u8], timeout: std::time::Duration) -> Result<crate::Invocation, Error> {
        let result = self.vm.invoke(request, timeout);
        match self.pager.as_ref().and_then(|p| p.failure()) {
            Some(failure) => {
                let during = result.err().map(Box::new);
                Err(RestoreError::PagerFailed { failure, during }.into())
            }
            None => result,
        }
    }

    /// Gives back the untouched parts of the fresh huge pages the restore mapped (`pass`;
    /// nothing for the other strategies): call between invocations, e.g. before keeping
    /// the VM for the next request. See [`trim`].
    pub fn trim(&mut self) -> Result<Trimmed, Error> {
        if self.trim.is_empty() {
            return Ok(Trimmed::default());
        }
        let memory = self.vm.memory()?;
        Ok(self.trim.run(memory).map_err(mem_err("giving back unused huge-page memory"))?)
    }
}

/// Restores a VM from `source` with `strategy`; the guest is at its `ready` point.
pub fn restore(hv: &Hypervisor, source: &SnapshotSource, strategy: &dyn MemoryStrategy) -> Result<RestoredVm, Error> {
    let start = Instant::now();
    let vm = Vm::create(hv)?;
    restore_in(vm, None, start, source, strategy)
}

/// Restores a VM from `source` with `strategy` into a [`Shell`] made ahead (of the
/// snapshot's memory size): no VM to create and no memory slot to register, only memory to
/// map and state to load.
pub fn restore_into(shell: Shell, source: &SnapshotSource, strategy: &dyn MemoryStrategy) -> Result<RestoredVm, Error> {
    let start = Instant::now();
    let (vm, reservation) = shell.into_parts();
    restore_in(vm, Some(reservation), start, source, strategy)
}

fn restore_in(
    mut vm: Vm,
    reservation: Option<Mapping>,
    start: Instant,
    source: &SnapshotSource,
    strategy: &dyn MemoryStrategy,
) -> Result<RestoredVm, Error> {
    let created = Instant::now();
    let snapshot = source.open()?;
    let opened = Instant::now();
    let mem_size = snapshot.state().mem_size;
    let mapping = match reservation {
        Some(r) if r.len() as u64 == mem_size => r,
        Some(r) => return Err(RestoreError::ShellSize { shell: r.len() as u64, snapshot: mem_size }.into()),
        None => Mapping::reserve(mem_size as usize).map_err(mem_err("reserving guest address space"))?,
    };
    let restored = strategy.restore_memory(&snapshot, mapping)?;
    let mapped = Instant::now();
    // Registers the memory slot, unless a shell registered it ahead: part of making the
    // VM (what a shell holds ready), not of building its memory.
    vm.attach_memory(restored.memory)?;
    let attached = Instant::now();
    vm.vcpu().restore_state(&snapshot.state().vcpu)?;
    let loaded = Instant::now();
    let times = RestoreTimes {
        vm_create: (created - start) + (attached - mapped),
        state_load: (opened - created) + (loaded - attached),
        memory_setup: mapped - opened,
    };
    Ok(RestoredVm {
        vm: MicroVm::restored(vm, snapshot.state().layout),
        pager: restored.pager,
        prepared_bytes: restored.prepared_bytes,
        keep_alive: restored.keep_alive,
        times,
        function: snapshot.function().to_string(),
        trim: restored.trim,
    })
}
