//! KVM state: the hypervisor handle, VMs, vCPUs, guest memory and KVM counters.

pub mod console;
pub mod exit;
pub mod folios;
pub mod kvm;
pub mod memory;
pub mod stats;
pub mod vcpu;
pub mod vm;
