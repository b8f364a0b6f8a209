//! A KVM VM with one memory slot and one vCPU.
//!
//! Creation is split from attaching memory so that restores can time "VM create" and
//! "memory setup" apart, and so that any [`GuestMemory`] a restore strategy builds can be
//! plugged in without this module knowing how it was made.

use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::{GuestMemory, Mapping};
use crate::vstate::vcpu::{Vcpu, VcpuError};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

/// Why a VM could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM VM ioctl failed.
    #[error("KVM {what} failed")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Setting up the vCPU failed.
    #[error("vCPU setup failed")]
    Vcpu(#[from] VcpuError),
    /// Memory attached elsewhere than the slot registered ahead.
    #[error("guest memory at {addr:#x} ({size} bytes) is not where the VM's slot points ({expected:#x}, {expected_size} bytes)")]
    SlotMismatch {
        /// Slot address.
        expected: u64,
        /// Slot size.
        expected_size: u64,
        /// Memory address.
        addr: u64,
        /// Memory size.
        size: u64,
    },
    /// The VM has no memory attached.
    #[error("the VM has no guest memory attached")]
    NoMemory,
    /// Guest memory that would cover KVM's real-mode TSS on this host.
    #[error(
        "guest memory above {limit:#x} bytes collides with KVM's real-mode TSS on VT-x without unrestricted guest"
    )]
    TooLargeForHost {
        /// Largest guest memory this host allows.
        limit: u64,
    },
}

/// Address of the three pages KVM needs for the TSS of real-mode emulation on VT-x without
/// unrestricted guest (KVM_SET_TSS_ADDR); KVM's identity map goes one page below. Guests on
/// such hosts must stay below it.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A VM: vCPU first, so it is closed before the VM fd and before its memory is unmapped.
pub struct Vm {
    vcpu: Vcpu,
    fd: VmFd,
    memory: Option<GuestMemory>,
    /// Slot 0 registered ahead over a reservation (a shell): its address and size.
    reserved_slot: Option<(u64, u64)>,
    rmode_tss: bool,
}

impl Vm {
    /// Creates a VM and its vCPU (no memory yet).
    pub fn create(hv: &Hypervisor) -> Result<Self, VmError> {
        let fd = hv.kvm().create_vm().map_err(|source| VmError::Kvm { what: "KVM_CREATE_VM", source })?;
        let rmode_tss = hv.needs_rmode_tss();
        if rmode_tss {
            fd.set_tss_address(KVM_TSS_ADDRESS).map_err(|source| VmError::Kvm { what: "KVM_SET_TSS_ADDR", source })?;
        }
        let vcpu_fd = fd.create_vcpu(0).map_err(|source| VmError::Kvm { what: "KVM_CREATE_VCPU", source })?;
        let vcpu = Vcpu::new(hv, vcpu_fd)?;
        Ok(Vm { vcpu, fd, memory: None, reserved_slot: None, rmode_tss })
    }

    /// Registers slot 0 at guest physical 0 over `[addr, addr + size)`.
    ///
    /// # Safety
    /// The range must stay mapped (or reserved) for as long as the VM may use slot 0.
    unsafe fn register_slot(&self, addr: u64, size: u64) -> Result<(), VmError> {
        if self.rmode_tss && size > KVM_TSS_ADDRESS as u64 - 0x1000 {
            return Err(VmError::TooLargeForHost { limit: KVM_TSS_ADDRESS as u64 - 0x1000 });
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size,
            userspace_addr: addr,
        };
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|source| VmError::Kvm { what: "KVM_SET_USER_MEMORY_REGION", source })
    }

    /// Registers slot 0 over `reservation` — inaccessible address space of the guest's
    /// memory size — before any memory is mapped there, so that a later restore only maps
    /// memory into it (KVM resolves a slot's addresses when the guest touches them, and
    /// drops what it resolved when the mapping under them changes).
    ///
    /// # Safety
    /// `reservation` must outlive the VM's use of slot 0: it becomes the mapping of the
    /// memory [`Vm::attach_memory`] attaches next, or outlives this VM.
    pub unsafe fn register_reservation(&mut self, reservation: &Mapping) -> Result<(), VmError> {
        let (addr, size) = (reservation.as_ptr() as u64, reservation.len() as u64);
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.register_slot(addr, size) }?;
        self.reserved_slot = Some((addr, size));
        Ok(())
    }

    /// Makes `memory` the guest's RAM at guest physical 0 (slot 0): registers the slot, or,
    /// where [`Vm::register_reservation`] did, checks that `memory` lies where it points.
    pub fn attach_memory(&mut self, memory: GuestMemory) -> Result<(), VmError> {
        let (addr, size) = (memory.mapping().as_ptr() as u64, memory.size());
        match self.reserved_slot {
            Some(slot) if slot == (addr, size) => {}
            Some((expected, expected_size)) => {
                return Err(VmError::SlotMismatch { expected, expected_size, addr, size });
            }
            // SAFETY: the range is a live mapping owned by `memory`, which this VM keeps
            // until after its fds are closed (field order).
            None => unsafe { self.register_slot(addr, size) }?,
        }
        self.memory = Some(memory);
        Ok(())
    }

    /// The guest's RAM.
    pub fn memory(&self) -> Result<&GuestMemory, VmError> {
        self.memory.as_ref().ok_or(VmError::NoMemory)
    }

    /// The vCPU and the guest RAM together (the run loop needs both).
    pub fn parts(&mut self) -> Result<(&mut Vcpu, &GuestMemory), VmError> {
        let memory = self.memory.as_ref().ok_or(VmError::NoMemory)?;
        Ok((&mut self.vcpu, memory))
    }

    /// The vCPU.
    pub fn vcpu(&self) -> &Vcpu {
        &self.vcpu
    }
}
