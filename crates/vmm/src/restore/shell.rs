//! VM shells: a KVM VM with its vCPU and a memory slot registered over reserved,
//! inaccessible address space of a given size, made before any request, so that a
//! SnapStart into it ([`restore_into`](super::restore_into)) only maps the guest's memory
//! and loads its vCPU state.
//!
//! Creating a VM and a vCPU and registering a slot are fixed costs (about 0.4 ms and,
//! for a 1 GiB guest, another 0.3 ms here) that do not depend on the snapshot, so a node
//! can pay them while idle. A shell is used once: a restored guest never reuses another
//! guest's VM (its KVM state, its shadow page tables). What one costs while it waits —
//! KVM's VM and vCPU structures and two descriptors, no guest memory — is measured by the
//! benchmark.

use crate::machine::check_mem_size;
use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::Mapping;
use crate::vstate::vm::Vm;
use crate::Error;

/// A VM made ahead for a guest of one memory size; consumed by one restore.
pub struct Shell {
    // Dropped before the reservation its slot points at.
    vm: Vm,
    reservation: Mapping,
}

impl Shell {
    /// Creates a VM and its vCPU, reserves `mem_size` bytes of address space and registers
    /// the VM's memory slot over them.
    pub fn create(hv: &Hypervisor, mem_size: u64) -> Result<Self, Error> {
        check_mem_size(mem_size)?;
        let mut vm = Vm::create(hv)?;
        let reservation = Mapping::reserve(mem_size as usize).map_err(Error::GuestMemory)?;
        // SAFETY: the reservation outlives the VM's use of the slot: the shell drops the VM
        // first, and a restore turns the reservation into the memory it attaches.
        unsafe { vm.register_reservation(&reservation) }?;
        Ok(Shell { vm, reservation })
    }

    /// Guest memory bytes the shell holds.
    pub fn mem_size(&self) -> u64 {
        self.reservation.len() as u64
    }

    /// The VM and the reservation its slot points at, for a restore.
    pub(super) fn into_parts(self) -> (Vm, Mapping) {
        (self.vm, self.reservation)
    }
}
