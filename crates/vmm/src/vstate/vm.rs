//! A KVM VM with one memory slot and one vCPU.
//!
//! Creation is split from attaching memory so that restores can time "VM create" and
//! "memory setup" apart, and so that any [`GuestMemory`] a restore strategy builds can be
//! plugged in without this module knowing how it was made.

use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::GuestMemory;
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
        Ok(Vm { vcpu, fd, memory: None, rmode_tss })
    }

    /// Registers `memory` as the guest's RAM at guest physical 0 (slot 0).
    pub fn attach_memory(&mut self, memory: GuestMemory) -> Result<(), VmError> {
        if self.rmode_tss && memory.size() > KVM_TSS_ADDRESS as u64 - 0x1000 {
            return Err(VmError::TooLargeForHost { limit: KVM_TSS_ADDRESS as u64 - 0x1000 });
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: memory.size(),
            userspace_addr: memory.mapping().as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `memory`, which this VM keeps until
        // after its fds are closed (field order).
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|source| VmError::Kvm { what: "KVM_SET_USER_MEMORY_REGION", source })?;
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
