//! snapvisor's VMM: kernel-less KVM microVMs that start serverless functions from
//! memory snapshots.
//!
//! - [`vstate`]: KVM itself: the hypervisor handle, VMs, vCPUs, guest memory, counters.
//! - [`boot`] and [`loader`]: the platform a guest boots into and its ELF image.
//! - [`machine`]: one microVM's life cycle (boot, ready, invoke).
//! - [`snapshot`]: the snapshot directory format (manifest, state file, sparse memory).
//! - [`restore`]: SnapStart, with one [`restore::MemoryStrategy`] per way of bringing memory back.
//! - [`pool`]: the VMM-managed persistent-memory pool of PASS.
//! - [`uffd`]: thin userfaultfd wrappers.
//! - [`metrics`]: host-side page faults and memory of a VM.
//! - [`files`], [`checksum`], [`escape`]: reading untrusted files with bounds, writing
//!   files atomically, the formats' checksums, and making untrusted text safe to show.
//! - [`fuzzing`]: the entry points of the fuzz targets (`fuzz/`), replayed by the tests.
//!
//! `docs/ARCHITECTURE.md` follows a snapshot, a restore and an invocation through them.

pub mod boot;
pub mod checksum;
pub mod escape;
pub mod files;
pub mod fuzzing;
pub mod loader;
pub mod machine;
pub mod metrics;
pub mod pool;
pub mod restore;
pub mod snapshot;
pub mod uffd;
pub mod vstate;

pub use machine::{Invocation, MicroVm, Phase};
pub use vstate::kvm::Hypervisor;

use vstate::memory::OutOfBounds;

/// Errors of the VMM's public operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable hypervisor.
    #[error(transparent)]
    Kvm(#[from] vstate::kvm::KvmError),
    /// VM or vCPU setup failed.
    #[error(transparent)]
    Vm(#[from] vstate::vm::VmError),
    /// The guest misbehaved or failed while running.
    #[error(transparent)]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    /// Guest memory could not be mapped.
    #[error("guest memory could not be mapped")]
    GuestMemory(#[source] std::io::Error),
    /// A host access outside guest memory.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// The guest image was refused.
    #[error("invalid guest image")]
    Image(#[from] loader::ImageError),
    /// Guest memory size outside what the layout supports.
    #[error("guest memory size {size} is not a multiple of 2 MiB between {min} and {max} bytes")]
    MemSize {
        /// Size asked for.
        size: u64,
        /// Smallest.
        min: u64,
        /// Largest.
        max: u64,
    },
    /// A request larger than the mailbox's request area.
    #[error("request of {len} bytes does not fit the mailbox's {max} bytes")]
    RequestTooLarge {
        /// Request length.
        len: usize,
        /// Limit.
        max: u64,
    },
    /// A snapshot could not be written or read.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// A restore failed.
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    /// A pool operation failed.
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    /// The guest broke the request protocol.
    #[error("the guest {0}")]
    Protocol(&'static str),
    /// An operation the VM's phase does not allow.
    #[error("the VM is {actual:?}, the operation needs it {expected:?}")]
    WrongPhase {
        /// Phase needed.
        expected: Phase,
        /// Phase the VM is in.
        actual: Phase,
    },
}

/// An error and its causes on one line (`error: cause: cause`), each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
