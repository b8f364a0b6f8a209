//! The node: snapvisor's library API, the one both faces call — the command line
//! (`crate::cli`) and the daemon. It owns the hypervisor handle and the data directory, and
//! turns a request (boot this image, snapshot it, restore that snapshot N times with this
//! strategy, import it into the pool, ...) into VMM calls and a serialisable report.
//!
//! - [`functions`]: guest images (built-in or the user's own ELF) and the requests they get.
//! - [`images`]: the functions a node runs, and user images registered by name.
//! - [`snapshots`]: taking snapshots and recording working sets.
//! - [`catalog`]: the snapshots kept by name (list, show, delete, sweep).
//! - [`invoke`]: fresh runs and SnapStarts (N VMs at once), with their reports.
//! - [`warm`]: the keep-alive set of warm VMs (the daemon's warm invocations, and the VMs
//!   of SnapStarts asked to be kept).
//! - [`warm_vm`]: one warm VM: booted, or restored by a SnapStart and trimmed.
//! - [`shells`]: VM shells the daemon keeps ready for its SnapStarts.
//! - [`pool`]: the persistent-memory pool (init, import, ls, rm, fsck, destroy).
//! - [`runner`]: the measured operations underneath (shared with the benchmark).
//! - [`data`]: where files live (the data directory and its emulated pool).
//! - [`store`]: names, atomic writes and removals in the data directory.

pub mod catalog;
pub mod data;
mod error;
pub mod functions;
pub mod images;
pub mod invoke;
pub mod pool;
pub mod report;
pub mod runner;
pub mod shells;
pub mod snapshots;
pub mod store;
pub mod warm;
pub mod warm_vm;

pub use error::{ErrorKind, NodeError};

use data::DataDir;
use shells::ShellStock;
use snapvisor_vmm::Hypervisor;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Default guest memory of a VM, MiB: 1 GiB, as in the PASS evaluation.
pub const DEFAULT_MEM_MIB: u64 = 1024;
/// Default time a guest may take for its init or one invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One machine's snapvisor: the hypervisor and the data directory.
pub struct Node {
    hv: OnceLock<Arc<Hypervisor>>,
    data: DataDir,
    shells: Option<ShellStock>,
}

impl Node {
    /// A node keeping its files in `data`. `/dev/kvm` is opened (and checked) by the
    /// first operation that runs a VM, so pool maintenance works without it.
    pub fn new(data: DataDir) -> Self {
        Node { hv: OnceLock::new(), data, shells: None }
    }

    /// The same node, keeping up to `per_size` VM shells ready per guest memory size for
    /// its SnapStarts (a long-running node: the daemon).
    pub fn with_shells(self, per_size: usize) -> Self {
        Node { shells: Some(ShellStock::new(per_size)), ..self }
    }

    /// The hypervisor, opened and checked on first use.
    pub fn hypervisor(&self) -> Result<&Hypervisor, NodeError> {
        Ok(self.shared_hypervisor()?)
    }

    /// The hypervisor, for threads that outlive a call.
    fn shared_hypervisor(&self) -> Result<&Arc<Hypervisor>, NodeError> {
        if let Some(hv) = self.hv.get() {
            return Ok(hv);
        }
        let hv = Hypervisor::open().map_err(snapvisor_vmm::Error::from)?;
        Ok(self.hv.get_or_init(|| Arc::new(hv)))
    }

    /// The data directory.
    pub fn data(&self) -> &DataDir {
        &self.data
    }

    /// VM shells ready now (0 without a stock).
    pub fn ready_shells(&self) -> usize {
        self.shells.as_ref().map_or(0, ShellStock::ready)
    }
}

/// Guest memory bytes for `mib` MiB, or an error if the number does not fit.
pub fn mem_size(mib: u64) -> Result<u64, NodeError> {
    mib.checked_mul(1 << 20).ok_or_else(|| NodeError::Invalid(format!("{mib} MiB of guest memory is out of range")))
}
