//! What one VM of a run measured, as the command line, the daemon and the benchmark
//! report it.

use super::runner::{ms, VmSample};
use serde::Serialize;
use snapvisor_vmm::metrics::{mib, total_memory};

/// One VM of a run.
#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    /// VM index within the run.
    pub vm: usize,
    /// Restore total.
    pub restore_ms: f64,
    /// KVM VM and vCPU creation (0 with a VM shell made ahead).
    pub vm_create_ms: f64,
    /// Snapshot metadata and vCPU state.
    pub state_load_ms: f64,
    /// Guest memory set up by the strategy (and its slot registered).
    pub memory_setup_ms: f64,
    /// Resume to response.
    pub invoke_ms: f64,
    /// Restore + invoke.
    pub total_ms: f64,
    /// Host page faults (minor + major) of the vCPU thread during the invocation.
    pub host_faults: u64,
    /// Of which major.
    pub host_major_faults: u64,
    /// KVM page faults fixed during the invocation.
    pub kvm_faults: u64,
    /// Faults served by userfaultfd.
    pub uffd_faults: u64,
    /// MiB loaded or pre-faulted before resume.
    pub prepared_mib: f64,
    /// Resident guest memory after the response (private + shared).
    pub rss_mib: f64,
    /// Private guest memory after the response (what the VM wrote or loaded for itself).
    pub private_mib: f64,
    /// Shared (file or pool) guest memory after the response.
    pub shared_mib: f64,
    /// Whether the VM was restored into a VM shell made ahead (then `vm_create_ms` is ~0).
    pub in_shell: bool,
    /// For a VM kept after its SnapStart: its private guest memory once it trimmed its
    /// fresh huge pages (what it holds while it waits for the next request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_private_mib: Option<f64>,
    /// Digest of the response.
    pub digest: String,
}

impl VmReport {
    /// The report of one sample.
    pub fn of(s: &VmSample) -> Self {
        VmReport {
            vm: s.vm,
            restore_ms: ms(s.restore.total()),
            vm_create_ms: ms(s.restore.vm_create),
            state_load_ms: ms(s.restore.state_load),
            memory_setup_ms: ms(s.restore.memory_setup),
            invoke_ms: ms(s.invoke),
            total_ms: ms(s.total()),
            host_faults: s.host_faults.total(),
            host_major_faults: s.host_faults.major,
            kvm_faults: s.kvm.pf_fixed,
            uffd_faults: s.uffd_faults,
            prepared_mib: mib(s.prepared_bytes),
            rss_mib: mib(s.memory.private_bytes + s.memory.shared_bytes),
            private_mib: mib(s.memory.private_bytes),
            shared_mib: mib(s.memory.shared_bytes),
            in_shell: s.in_shell,
            kept_private_mib: s.kept.map(|(_, kept)| mib(kept)),
            digest: s.digest.clone().unwrap_or_default(),
        }
    }
}

/// Median, 99th percentile of the VMs' SnapStart times, and their guest memory (private
/// pages summed, shared pages counted once), MiB.
pub fn summarise(samples: &[VmSample]) -> (f64, f64, f64) {
    let totals: Vec<f64> = samples.iter().map(|s| ms(s.total())).collect();
    let usages: Vec<_> = samples.iter().map(|s| &s.memory).collect();
    (percentile(&totals, 50.0), percentile(&totals, 99.0), mib(total_memory(&usages)))
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 99.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
